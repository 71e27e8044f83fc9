"""benchmarks/inference.py at a tiny size: the JAX / PyTorch-twin table and the parity check.

Speed is never asserted (2 timed calls on a shared machine); the table's layout, the JAX
reference ratio, the twin's parity with JAX and the failure paths are.
"""

import re

import numpy as np
import pytest
import torch

from benchmarks import inference

HEIGHT, WIDTH = 64, 96
BATCH_SIZES = (1,)


@pytest.fixture(scope="module")
def model():
    return inference.random_model(HEIGHT, WIDTH)


def test_run_times_jax_and_the_twin_side_by_side(model, monkeypatch):
    real_fn = inference.twin_disparity_fn

    def failing_compile(twin, compile=False, backend="inductor"):
        if not compile:
            return real_fn(twin)

        def fn(images):
            raise RuntimeError("inductor exploded\nsecond line")

        return fn

    monkeypatch.setattr(inference, "twin_disparity_fn", failing_compile)
    results = inference.run(
        model, HEIGHT, WIDTH, BATCH_SIZES, num_steps=2, torch_compile=True
    )
    header = list(inference.HEADER)
    column = {name: header.index(name) for name in header}
    assert all(len(row) == len(header) for row in results.rows)
    assert [(row[0], row[2]) for row in results.rows] == [
        (str(b), v) for b in BATCH_SIZES for v in ("jax", "torch_eager", "torch_compile")
    ]
    for batch in BATCH_SIZES:
        jax_row, eager_row, compile_row = (r for r in results.rows if r[0] == str(batch))
        assert jax_row[column["JAX/this img/s"]] == "1.00"
        assert float(eager_row[column["JAX/this img/s"]]) > 0
        assert jax_row[column["input"]] == f"{HEIGHT}x{WIDTH}"
        # The same network on both sides: one XLA FLOP count, ~0.73 GFLOPs at 64x96.
        gflops = float(jax_row[column["GFLOPs/image (XLA)"]])
        assert eager_row[column["GFLOPs/image (XLA)"]] == jax_row[column["GFLOPs/image (XLA)"]]
        assert 0.5 < gflops < 1.0
        assert compile_row[column["median ms/call"]] == "failed (see notes)"
    assert set(results.max_abs_diff) == {"torch_eager"}
    assert results.max_abs_diff["torch_eager"] <= inference.PARITY_TOLERANCE
    assert any(
        "torch_compile failed, not timed (RuntimeError: inductor exploded)" in note
        for note in results.notes
    )


def test_parity_check_rejects_a_corrupted_twin(model):
    images = np.random.default_rng(3).random((1, HEIGHT, WIDTH, 3), dtype=np.float32)
    jax_disparity = model.predict_disparity(images)
    twin = inference.make_twin(model)
    fn = inference.twin_disparity_fn(twin)
    torch_images = inference.to_torch_images(images)
    assert inference.check_parity("twin", jax_disparity, fn, torch_images) <= 1e-4
    # A typical weight-mapping bug: one kernel with its spatial axes swapped.
    with torch.no_grad():
        weight = twin.encoder.layer1[0].conv1.weight
        weight.copy_(weight.transpose(2, 3).clone())
    with pytest.raises(
        inference.ParityError,
        match=r"parity check: twin disparity differs from JAX's by max abs .* > 0.0001",
    ):
        inference.check_parity("twin", jax_disparity, fn, torch_images)
    with pytest.raises(inference.ParityError, match=r"has shape \(1, 64, 96\), JAX \(64, 96\)"):
        inference.check_parity("twin", jax_disparity[0], fn, torch_images)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--num_steps=3"], "--num_steps=3: the protocol needs >= 20 calls to write --output="),
        (["--num_steps=1", "--output="], "--num_steps=1: need >= 2"),
        (["--height=100"], "--height=100: must be a positive multiple of 32"),
        (["--batch_sizes=1,0"], "--batch_sizes=.*must be >= 1"),
    ],
)
def test_bad_flags_are_named(argv, message, capsys):
    with pytest.raises(SystemExit):
        inference.parse_args(argv)
    assert re.search(message, capsys.readouterr().err)
