"""The GPU check in one prepared run: matmul peaks, the train step, the PyTorch twin, inference.

    bash benchmarks/gpu/run.sh --out=$OUT          # on the GPU machine (`make gpu-bench`)
    bash benchmarks/gpu/run.sh --out=DIR --dry_run # on CPU: 64x64, batch 2 (the test suite)

In this order, side by side in one process (`benchmarks.timing`'s protocol: warm-up, then
the variants interleaved round-robin, median of >= 20 calls):

1. the bf16 and f32 matmul peaks (a large `jnp.dot`, fastest of the timed calls);
2. the real train step (`benchmarks.train_step.JaxStep`: full variant, donated state) at
   each batch size and dtype, with XLA's FLOP count, MFU against the matmul peak of its dtype,
   XLA's memory analysis of the compiled step and the compile time; next to it the PyTorch
   twin (`tests/torch_twin.py`), eager and `torch.compile`, whose first-step loss must match
   JAX's (same weights, same batch) before it is timed;
3. inference (`benchmarks.inference.run`: DepthNet vs the twin, parity-checked) per batch.

Writes `gpu_bench.md` (a BENCHMARKS.md section) and `gpu_bench.json` into `--out`. Items
that would start after `--budget_s` seconds are skipped and listed, so the run ends inside
the device's time limit.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import inference, timing, train_step

SECTION_ID = "gpu_bench"
# First-step total loss of the twin vs JAX (relative): float32 differs by summation order
# and TF32, bfloat16 by the rounding of every activation.
LOSS_TOLERANCE = {"float32": 1e-3, "bfloat16": 3e-2}
# The goals, checked where their shapes were measured.
GOALS = (
    ("JAX train step >= 2x the twin's eager images/s (batch 12, 192x640)", 2.0),
    ("MFU >= 35% in bfloat16 at batch 12 against the measured bf16 peak", 0.35),
    ("inference at batch 16 >= 1.5x the twin's eager images/s", 1.5),
)
TRAIN_HEADER = (
    "dtype", "batch", "variant", "median ms", "min ms", "IQR/median", "img/s", "JAX/this img/s",
    "GFLOP/step (XLA)", "MFU", "compile s", "XLA memory (args+out+temp)",
)


@dataclasses.dataclass
class Report:
    """Everything the run measured, in the order it was measured."""

    peaks: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    train: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    inference_rows: list[list[str]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)


def _timed(make: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = make()
    return value, time.perf_counter() - start


def _relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def train_measurements(
    dtype: str, batch: int, image_size: tuple[int, int], peak_flops: float, *,
    num_steps: int, torch_compile: bool, compile_backend: str, smoke: bool,
) -> tuple[list[dict[str, Any]], list[str]]:
    """One (dtype, batch): JAX and the twin, loss-checked, timed side by side."""
    config = train_step.benchmark_config(batch, image_size, dtype)
    jax_step, compile_s = _timed(lambda: train_step.JaxStep(config))
    memory = jax_step.compiled.memory_analysis()
    memory_bytes = int(memory.argument_size_in_bytes + memory.output_size_in_bytes
                       + memory.temp_size_in_bytes)
    jax_step()  # the first step: its loss terms are the reference
    steps: dict[str, Callable[[], None]] = {"jax": jax_step}
    compile_times = {"jax": compile_s}
    notes = []
    twins = {"torch_eager": False, **({"torch_compile": True} if torch_compile else {})}
    for name, compiled in twins.items():
        try:
            twin = train_step.TorchStep(config, jax_step, compiled, compile_backend)
            _, compile_times[name] = _timed(twin)  # first step (torch.compile compiles here)
        except Exception as error:
            notes.append(f"{dtype} b{batch}: {name} failed, not timed "
                         f"({type(error).__name__}: {str(error).splitlines()[0][:200]})")
            print(traceback.format_exc(), file=sys.stderr)
            continue
        difference = _relative(twin.first_terms["total"], jax_step.first_terms["total"])
        notes.append(f"{dtype} b{batch}: first-step total loss jax "
                     f"{jax_step.first_terms['total']:.6f}, {name} "
                     f"{twin.first_terms['total']:.6f} (relative {difference:.1e})")
        if difference > LOSS_TOLERANCE[dtype]:
            notes.append(f"{dtype} b{batch}: {name} NOT timed: its first-step loss differs "
                         f"from JAX's by {difference:.1e} > {LOSS_TOLERANCE[dtype]:g}")
            continue
        steps[name] = twin
    times = timing.time_interleaved(steps, num_warmup=1, num_steps=num_steps, smoke=smoke)
    device_peak = timing.jax_device_peak_memory_bytes()  # None on CPU
    if device_peak is not None:
        notes.append(f"{dtype} b{batch}: JAX device allocator peak so far in the run "
                     f"{timing.format_bytes(device_peak)}")
    jax_rate = batch / times["jax"].median_s
    rows = []
    for name, result in times.items():
        rate = batch / result.median_s
        rows.append({
            "dtype": dtype, "batch": batch, "variant": name, "median_s": result.median_s,
            "min_s": result.min_s, "spread": result.spread, "images_per_s": rate,
            "jax_over_this": jax_rate / rate, "flops": jax_step.flops,
            "mfu": timing.model_flops_utilisation(jax_step.flops, result.median_s, peak_flops),
            "compile_s": compile_times[name],
            "xla_memory_bytes": memory_bytes if name == "jax" else None,
        })
    return rows, notes


def _train_cells(row: dict[str, Any]) -> list[str]:
    memory = row["xla_memory_bytes"]
    return [row["dtype"], str(row["batch"]), row["variant"], f"{row['median_s'] * 1e3:.1f}",
            f"{row['min_s'] * 1e3:.1f}", f"{row['spread']:.2f}", f"{row['images_per_s']:.1f}",
            f"{row['jax_over_this']:.2f}", f"{row['flops'] / 1e9:.1f}",
            f"{100 * row['mfu']:.1f}%", f"{row['compile_s']:.1f}",
            timing.format_bytes(memory) if memory is not None else ""]


def goal_results(report: Report, image_size: tuple[int, int],
                 inference_rates: dict[tuple[int, str], float]) -> list[dict[str, Any]]:
    """Each goal: measured value and pass, or why it was not measured."""
    def find(dtype: str, batch: int, variant: str) -> dict[str, Any] | None:
        return next((r for r in report.train if (r["dtype"], r["batch"], r["variant"])
                     == (dtype, batch, variant)), None)

    paper_size = image_size == (192, 640)
    results = []
    for (text, bound), kind in zip(GOALS, ("speedup", "mfu", "inference"), strict=True):
        value = None
        if kind == "speedup" and paper_size:
            jax_rows = [find(d, 12, "torch_eager") for d in ("float32", "bfloat16")]
            values = [r["jax_over_this"] for r in jax_rows if r is not None]
            value = max(values) if values else None
        elif kind == "mfu" and paper_size:
            row = find("bfloat16", 12, "jax")
            value = row["mfu"] if row else None
        elif kind == "inference" and paper_size:
            jax_rate, torch_rate = inference_rates.get((16, "jax")), inference_rates.get(
                (16, "torch_eager"))
            value = jax_rate / torch_rate if jax_rate and torch_rate else None
        results.append({
            "goal": text, "bound": bound, "value": value,
            "met": None if value is None else value >= bound,
        })
    return results


def run(args: argparse.Namespace) -> tuple[Report, list[dict[str, Any]]]:
    """Measures everything within the budget; returns the report and the goal results."""
    started = time.perf_counter()
    report = Report()
    for dtype in ("bfloat16", "float32"):
        peak = timing.measure_matmul_peak(dtype, size=args.matmul_size)
        report.peaks[dtype] = {"size": peak.size, "flops_per_s": peak.flops_per_s,
                               "median_s": peak.median_s}
        print(f"matmul peak {dtype} {peak.size}^3: {peak.flops_per_s / 1e12:.1f} TFLOP/s",
              flush=True)
    for dtype in args.dtypes:
        for batch in args.batch_sizes:
            item = f"train step {dtype} batch {batch}"
            if time.perf_counter() - started > args.budget_s:
                report.skipped.append(item)
                continue
            rows, notes = train_measurements(
                dtype, batch, args.image_size, report.peaks[dtype]["flops_per_s"],
                num_steps=args.num_steps,
                torch_compile=args.torch_compile and batch in args.torch_compile_batches,
                compile_backend=args.torch_compile_backend, smoke=args.dry_run,
            )
            report.train += rows
            report.notes += notes
            for row in rows:
                print(" | ".join(_train_cells(row)), flush=True)
    inference_rates: dict[tuple[int, str], float] = {}
    if time.perf_counter() - started > args.budget_s:
        report.skipped.append("inference")
    else:
        height, width = args.image_size
        results = inference.run(
            inference.random_model(height, width), height, width, args.inference_batch_sizes,
            args.num_steps, torch_compile=args.torch_compile,
            torch_compile_backend=args.torch_compile_backend,
        )
        report.inference_rows = results.rows
        report.notes += results.notes
        for row in results.rows:
            if len(row) > 6 and row[6]:
                inference_rates[(int(row[0]), row[2])] = float(row[6])
    return report, goal_results(report, args.image_size, inference_rates)


def write(out: Path, report: Report, goals: list[dict[str, Any]], command: str,
          args: argparse.Namespace, wall_s: float) -> None:
    """`gpu_bench.md` (a BENCHMARKS.md section) and `gpu_bench.json` into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    backend = jax.default_backend()
    height, width = args.image_size
    body = timing.report_header(
        f"GPU check ({backend.upper()}): train step, PyTorch twin and inference at "
        f"{height}x{width}", command, timing.machine_description(),
        "Dry run on CPU at a tiny size: the numbers test the script, not the hardware."
        if args.dry_run else None,
    )
    body += ["", f"Wall time of the whole run: {wall_s:.0f} s.", ""]
    body += [f"- matmul peak {dtype}: {peak['flops_per_s'] / 1e12:.2f} TFLOP/s "
             f"({peak['size']}^3, fastest of {timing.MIN_TIMED_STEPS})"
             for dtype, peak in report.peaks.items()]
    body += ["", "Train step (full variant; img/s counts source images, each step also "
             "reads as many target images; MFU against the matmul peak of the step's dtype):",
             "", timing.markdown_table(TRAIN_HEADER, [_train_cells(r) for r in report.train])]
    if report.inference_rows:
        body += ["", "Inference (DepthNet, random weights):", "",
                 timing.markdown_table(inference.HEADER, report.inference_rows)]
    body += ["", "Goals:", ""]
    for goal in goals:
        state = ("not measured (not this size, or skipped)" if goal["value"] is None
                 else f"{goal['value']:.2f}: {'met' if goal['met'] else 'NOT met'}")
        body.append(f"- {goal['goal']}: {state}")
    body += [""] + [f"- {note}" for note in report.notes]
    if report.skipped:
        body.append(f"- skipped after the {args.budget_s:.0f} s budget: "
                    + ", ".join(report.skipped))
    timing.write_markdown_section(out / "gpu_bench.md", f"{SECTION_ID}-{backend}",
                                  "\n".join(body))
    record = {"command": command, "machine": timing.machine_description(),
              "wall_s": wall_s, "dry_run": args.dry_run, **dataclasses.asdict(report),
              "goals": goals}
    (out / "gpu_bench.json").write_text(json.dumps(record, indent=2) + "\n")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for gpu_bench.md and .json")
    parser.add_argument("--dry_run", action="store_true",
                        help="CPU smoke run: 64x64, batch 2, 2 timed calls, small matmul, the "
                             "compilation cache on (a real run compiles cold)")
    parser.add_argument("--budget_s", type=float, default=330.0,
                        help="no item starts after this many seconds")
    args = parser.parse_args(argv)
    args.dtypes = ("float32", "bfloat16")
    args.torch_compile = True
    if args.dry_run:
        args.image_size, args.batch_sizes, args.inference_batch_sizes = (64, 64), (2,), (1, 2)
        args.num_steps, args.matmul_size = 2, 256
        args.torch_compile_batches = (2,)
        # Dynamo's tracing without Inductor's C++ build: the compile path runs in seconds.
        args.torch_compile_backend = "eager"
    else:
        args.image_size, args.batch_sizes, args.inference_batch_sizes = (
            (192, 640), (12, 8, 24), (1, 16, 64))
        args.num_steps, args.matmul_size = timing.MIN_TIMED_STEPS, None
        args.torch_compile_batches = (12,)
        args.torch_compile_backend = "inductor"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    command = "bash benchmarks/gpu/run.sh " + shlex.join(
        sys.argv[1:] if argv is None else list(argv))
    args = parse_args(argv)
    cache_note = timing.smoke_compilation() if args.dry_run else timing.cold_compilation()
    started = time.perf_counter()
    report, goals = run(args)
    report.notes.append(cache_note)
    write(Path(args.out), report, goals, command, args, time.perf_counter() - started)
    print(f"wrote {Path(args.out) / 'gpu_bench.md'} and gpu_bench.json", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
