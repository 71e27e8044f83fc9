"""benchmarks/xla_flags.py at 64x96: the child's output, the result check, failing flags.

Speed is never asserted; the child's result line, the comparison with the default's check
values and the error rows of settings XLA refuses are.
"""

import json

import pytest

from benchmarks import xla_flags

IMAGE_SIZE = (64, 96)


@pytest.fixture(scope="module")
def child_result():
    """One in-process child run (DepthNet inference at 64x96, no reference)."""
    return xla_flags.run_child("inference", IMAGE_SIZE, 1, 20, reference=None)


def test_child_result_line_round_trips(child_result, capsys):
    assert "error" not in child_result
    assert len(child_result["times_s"]) == 20
    assert all(t > 0 for t in child_result["times_s"])
    assert set(child_result["check"]) == {"disparity mean", "disparity std"}
    # Random DepthNet weights: a sigmoid disparity strictly inside (0, 1), varying.
    assert 0.0 < child_result["check"]["disparity mean"] < 1.0
    assert child_result["check"]["disparity std"] > 0.0
    assert 0.5 < child_result["gflops"] < 1.0  # ~0.73 GFLOPs at 64x96, as in inference tests
    print("noise before")
    print(xla_flags.RESULT_PREFIX + json.dumps(child_result))
    parsed = xla_flags.parse_child_output(capsys.readouterr().out)
    assert parsed == {"inference": json.loads(json.dumps(child_result))}


def test_parse_child_output_rejects_bad_lines():
    assert xla_flags.parse_child_output("nothing here\n") == {}
    with pytest.raises(ValueError, match="bad result line"):
        xla_flags.parse_child_output(xla_flags.RESULT_PREFIX + "{not json")
    with pytest.raises(ValueError, match="without 'what'"):
        xla_flags.parse_child_output(xla_flags.RESULT_PREFIX + '{"times_s": []}')
    line = xla_flags.RESULT_PREFIX + '{"what": "inference"}'
    with pytest.raises(ValueError, match="two results for 'inference'"):
        xla_flags.parse_child_output(f"{line}\n{line}\n")


def test_check_against_the_default(child_result):
    check = child_result["check"]
    # A default whose mean is 1e-3 relative away: the same child now reports a mismatch.
    fake = dict(check, **{"disparity mean": check["disparity mean"] * 1.001})
    assert xla_flags.compare_check_values(check, check) == 0.0
    with pytest.raises(xla_flags.CheckMismatch, match=r"disparity mean .* \(rel 1\.0e-03\)"):
        xla_flags.compare_check_values(check, fake)
    differs = xla_flags.run_child("inference", IMAGE_SIZE, 1, 20, reference=fake)
    assert "results differ from the default's by more than 0.0001" in differs["check_error"]
    with pytest.raises(xla_flags.CheckMismatch, match="nan"):
        xla_flags.compare_check_values({"loss total": float("nan")}, {"loss total": 1.0})
    with pytest.raises(xla_flags.CheckMismatch, match="keys"):
        xla_flags.compare_check_values({"a": 1.0}, {"b": 1.0})

    # The table spells the mismatch out next to the timing.
    default = xla_flags.Outcome(xla_flags.SETTINGS[0], "inference", [[0.2, 0.2]], [1.0])
    fast = xla_flags.Outcome(
        xla_flags.SETTINGS_BY_NAME["fast_math"], "inference", [[0.1, 0.1]], [1.0],
        check_errors=[differs["check_error"]],
    )  # fmt: skip
    rows = xla_flags.table_rows(
        {("default", "inference"): default, ("fast_math", "inference"): fast}, ["inference"]
    )
    assert [row[:2] for row in rows] == [["inference", "default"], ["inference", "fast_math"]]
    assert all(len(row) == len(xla_flags.HEADER) for row in rows)
    assert rows[0][5:] == ["1.00", "1.0", "reference"]
    assert rows[1][3:6] == ["100.0", "100.0", "2.00"]
    assert rows[1][7].startswith("DIFFERENT: results differ")


def test_refused_flags_give_error_rows():
    bad = xla_flags.Setting("bad", "--xla_cpu_no_such_flag=1", "not an XLA flag")
    results = xla_flags.launch_child(bad, ["train_step", "inference"], IMAGE_SIZE, 1, 20, {})
    for what in ("train_step", "inference"):
        assert set(results[what]) == {"what", "error"}
        assert "exit code 1" in results[what]["error"]
        assert "Unknown flag in XLA_FLAGS: --xla_cpu_no_such_flag=1" in results[what]["error"]
    outcomes = {
        ("default", "inference"): xla_flags.Outcome(
            xla_flags.SETTINGS[0], "inference", [[0.2] * 20], [1.0]
        ),
        ("bad", "inference"): xla_flags.Outcome(
            bad, "inference", error=results["inference"]["error"]
        ),
    }
    row = xla_flags.table_rows(outcomes, ["inference"])[1]
    assert row[:3] == ["inference", "bad", "`--xla_cpu_no_such_flag=1`"]
    assert row[3].startswith("failed: exit code 1: parse_flags_from_env.cc:")


def test_error_line_prefers_xla_then_python_errors():
    stderr = (
        "E1125 11:21:59.518879   15982 debug_options_flags.cc:145] Illegal value for --x 'Y'\n"
        "F1125 11:21:59.518918   15982 parse_flags_from_env.cc:220] Check failed: ...\n"
        "usage: ...\n"
    )
    assert xla_flags.error_line(stderr) == "debug_options_flags.cc:145] Illegal value for --x 'Y'"
    traceback = "Traceback (most recent call last):\n  File x\njax.errors.JaxRuntimeError: boom\n"
    assert xla_flags.error_line(traceback) == "jax.errors.JaxRuntimeError: boom"
    assert xla_flags.error_line("") == "(no output on stderr)"


def test_cli_errors_name_the_flag(capsys):
    for argv, message in [
        (["--settings=default,nope"], "--settings: unknown ['nope']"),
        (["--image_size=65,96"], "--image_size=65,96: both sides must be positive multiples"),
        (["--what=training"], "--what=training: unknown ['training']"),
        (["--num_steps=5"], "--num_steps=5: the timing protocol needs >= 20"),
    ]:
        with pytest.raises(SystemExit):
            xla_flags.parse_args(argv)
        assert message in capsys.readouterr().err
    args = xla_flags.parse_args(["--settings=fast_math,default,fast_math"])
    assert [s.name for s in args.settings] == ["default", "fast_math"]
