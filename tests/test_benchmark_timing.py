"""Tests of the shared benchmark report helpers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import timing


def test_report_header_lists_note_command_and_machine_without_omitted_facts():
    machine = {"cpu": "AMD EPYC", "cores usable": "2", "XLA_FLAGS": "--x=1"}
    lines = timing.report_header("Train step (CPU)", "python -m benchmarks.train_step",
                                 machine, "A note.", omit=("XLA_FLAGS",))
    assert lines == [
        "## Train step (CPU)", "",
        "A note.", "",
        "Command: `python -m benchmarks.train_step`", "",
        "- cpu: AMD EPYC", "- cores usable: 2",
    ]
    assert timing.report_header("T", "c", {"cpu": "x"}) == [
        "## T", "", "Command: `c`", "", "- cpu: x",
    ]


def test_time_interleaved_protocol_and_errors():
    calls = []
    result = timing.time_interleaved(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
        num_warmup=1,
        num_steps=20,
    )
    assert calls[:4] == ["a", "b", "a", "b"] and len(calls) == 42
    assert len(result["a"].times_s) == 20 and result["a"].median_s >= 0
    with pytest.raises(ValueError, match="num_steps=5; the protocol needs >= 20"):
        timing.time_interleaved({"a": lambda: None}, num_steps=5)
    smoke = timing.time_interleaved({"a": lambda: None}, num_warmup=1, num_steps=2, smoke=True)
    assert len(smoke["a"].times_s) == 2
    with pytest.raises(ValueError, match=r"num_steps=0; .* \(>= 1 for a smoke run\)"):
        timing.time_interleaved({"a": lambda: None}, num_steps=0, smoke=True)
    with pytest.raises(ValueError, match="`steps` is empty"):
        timing.time_interleaved({})


def test_xla_flops_counts_a_matmul():
    compiled = jax.jit(lambda a, b: a @ b).lower(jnp.ones((8, 16)), jnp.ones((16, 4))).compile()
    assert timing.xla_flops(compiled) == pytest.approx(2 * 8 * 16 * 4)
    assert timing.model_flops_utilisation(100.0, 2.0, 100.0) == pytest.approx(0.5)


def test_host_peak_memory_sees_a_large_allocation():
    timing.reset_host_peak_memory()
    before = timing.host_current_memory_bytes()
    block = np.ones(64 << 20, np.uint8)  # 64 MiB, touched
    assert timing.host_peak_memory_bytes() - before >= 60 << 20
    del block
