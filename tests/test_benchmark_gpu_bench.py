"""benchmarks/gpu/run.sh --dry_run: the GPU check's script end to end on CPU at 64x64, batch 2.

The same code path as on the GPU machine (wheel install from .whl/ when present, matmul peaks,
train step and twin in both dtypes with the loss check and torch.compile, inference), so the
script cannot break unnoticed between the rare runs on a GPU.
"""

import json
import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_dry_run_writes_the_section_and_the_record(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        # No time budget: the dry run checks that every part runs, and the GPU run's 330 s
        # budget is no bound for a CPU (on a loaded AVX2-only EPYC the dry run took 572 s, and
        # the budget skipped inference).
        ["bash", "benchmarks/gpu/run.sh", f"--out={out}", "--dry_run", "--budget_s=1e9"],
        cwd=REPO_ROOT,
        # Cheaper XLA compilation (as tests/helpers.fast_compilation): the dry run checks the
        # script, its timings mean nothing, and its loss check is forward-only.
        env=dict(os.environ, PYTHON=sys.executable, JAX_PLATFORMS="cpu",
                 JAX_DISABLE_MOST_OPTIMIZATIONS="1"),
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    record = json.loads((out / "gpu_bench.json").read_text())
    assert record["dry_run"] is True and record["skipped"] == []
    # A dry run loads the suite's programs from its cache (a real run compiles cold).
    assert any(note.startswith("compilation cache on at ") for note in record["notes"])
    assert set(record["peaks"]) == {"bfloat16", "float32"}
    assert all(peak["flops_per_s"] > 0 for peak in record["peaks"].values())
    measured = {(row["dtype"], row["batch"], row["variant"]) for row in record["train"]}
    assert measured == {(dtype, 2, variant) for dtype in ("float32", "bfloat16")
                        for variant in ("jax", "torch_eager", "torch_compile")}
    for row in record["train"]:
        assert row["median_s"] > 0 and row["flops"] > 1e9 and 0 < row["mfu"]
    assert [row[2] for row in record["inference_rows"]] == [
        "jax", "torch_eager", "torch_compile"] * 2
    # The goals are defined at 192x640: a dry run measures none of them.
    assert [goal["value"] for goal in record["goals"]] == [None, None, None]
    section = (out / "gpu_bench.md").read_text()
    assert section.startswith("<!-- gpu_bench-cpu:begin -->")
    assert "first-step total loss jax" in section and "Goals:" in section
