"""benchmarks/profile_step.py: XLA's cost and memory analysis of the train step, and a trace."""

import glob
import os

import pytest

from benchmarks import profile_step, train_step
from tests.helpers import fast_compilation  # noqa: F401 (autouse fixture: no numerics here)


def test_profile_reports_xla_analyses_and_writes_a_trace(tmp_path):
    config = train_step.benchmark_config(1, (64, 96), "float32")
    trace_dir = str(tmp_path / "trace")
    result = profile_step.profile(config, 2, trace_dir, smoke=True)
    assert result.flops > 1e9  # the full model at 64x96: a few GFLOP per step
    assert result.bytes_accessed > 1e7
    assert result.argument_bytes > 4 * 20e6  # params + Adam moments of ~25 M parameters
    assert result.median_step_s > 0 and result.compile_s > 0
    rows = dict(profile_step.markdown_rows(result))
    assert rows["FLOPs per step (XLA cost analysis)"] == f"{result.flops / 1e9:.2f} G"
    assert glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)


def test_bad_flags_are_named(capsys):
    with pytest.raises(SystemExit):
        profile_step.main(["--image_size=190,640"])
    assert "--image_size=190,640: both sides must be multiples of 32" in capsys.readouterr().err
