"""The persistent compilation cache (damono_jax/compile_cache.py) that every command turns on."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from damono_jax import cli, compile_cache

REPO_ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ in process


def test_default_folder_follows_xdg_cache_home(monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere/cache")
    assert compile_cache.default_dir() == "/somewhere/cache/damono_jax/jax_cache"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", "/home/someone")
    assert compile_cache.default_dir() == "/home/someone/.cache/damono_jax/jax_cache"


def test_flag_wins_over_the_environment_and_off_turns_it_off(monkeypatch, tmp_path):
    monkeypatch.setenv(compile_cache.ENV_VAR, str(tmp_path / "from_env"))
    assert compile_cache.resolve(str(tmp_path / "from_flag")) == str(tmp_path / "from_flag")
    assert compile_cache.resolve(None) == str(tmp_path / "from_env")
    assert compile_cache.resolve("off") is None
    assert compile_cache.resolve("OFF") is None
    monkeypatch.setenv(compile_cache.ENV_VAR, "off")
    assert compile_cache.resolve(None) is None
    assert compile_cache.resolve(str(tmp_path / "x")) == str(tmp_path / "x")


def test_the_tfds_dtype_warning_is_dropped_and_other_warnings_are_kept():
    def record(pathname: str, message: str, level: int = logging.WARNING) -> logging.LogRecord:
        return logging.LogRecord("absl", level, pathname, 72, message, None, None)

    quiet = cli._QuietLibraries()
    tfds_feature = "/venv/site-packages/tensorflow_datasets/core/features/feature.py"
    assert not quiet.filter(record(tfds_feature, "`FeatureConnector.dtype` is deprecated. "
                                                 "Please change your code ..."))
    assert quiet.filter(record(tfds_feature, "Some other TFDS warning"))
    assert quiet.filter(record("/repo/damono_jax/x.py", "`FeatureConnector.dtype` is deprecated"))
    assert not quiet.filter(record(tfds_feature, "an INFO line", logging.INFO))


# ---------------------------------------------------------------------- from the command line


def _probe(output: Path, *flags: str, model: bool = False,
           wait: bool = True) -> subprocess.Popen | subprocess.CompletedProcess:
    command = [sys.executable, "-m", "tests.compile_cache_probe", f"--output={output}",
               *(["--model"] if model else []), *flags]
    env = {k: v for k, v in os.environ.items()
           if k not in (compile_cache.ENV_VAR, "JAX_COMPILATION_CACHE_DIR")}
    env["JAX_PLATFORMS"] = "cpu"
    if wait:
        return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                              timeout=600)
    return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finished(process: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _outputs(result: subprocess.CompletedProcess, output: Path) -> dict:
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(output.read_text())


def test_train_step_and_prediction_are_bit_identical_with_without_and_from_the_cache(tmp_path):
    cache = tmp_path / "cache"
    # The run without a cache and the one that fills it run side by side.
    off = _probe(tmp_path / "off.json", "--compilation_cache=off", model=True, wait=False)
    cold = _probe(tmp_path / "cold.json", f"--compilation_cache={cache}", model=True,
                  wait=False)
    off, cold = _finished(off), _finished(cold)
    warm = _probe(tmp_path / "warm.json", f"--compilation_cache={cache}", model=True)
    results = {name: _outputs(result, tmp_path / f"{name}.json")
               for name, result in (("off", off), ("cold", cold), ("warm", warm))}

    for name in ("cold", "warm"):
        for output in ("train_step", "prediction"):
            assert results[name][output] == results["off"][output], (name, output)
    assert results["off"]["cache"] is None and "compilation cache: off" in off.stderr
    assert (results["off"]["read"], results["off"]["written"]) == (0, 0)
    # The cold run compiles the train step, the prediction and the set-up's programs ...
    assert results["cold"]["read"] == 0 and results["cold"]["written"] >= 3
    assert compile_cache.entries(str(cache)) == results["cold"]["written"]
    # ... and the second process reads every one of them and compiles none.
    assert (results["warm"]["read"], results["warm"]["written"]) == (
        results["cold"]["written"], 0)
    assert (f"compilation cache: {cache} ({results['cold']['written']} programs"
            in warm.stderr)
    assert (f"compilation cache: {results['cold']['written']} programs read from it, "
            "0 compiled and written to it") in warm.stderr


def test_a_corrupt_cache_costs_a_warning_and_a_compile(tmp_path):
    cache = tmp_path / "cache"
    first = _outputs(_probe(tmp_path / "first.json", f"--compilation_cache={cache}"),
                     tmp_path / "first.json")
    entries = [path for path in cache.iterdir() if path.name.endswith("-cache")]
    assert len(entries) == first["written"] >= 1
    for path in entries:
        path.write_bytes(b"not a compiled program" * 10)

    result = _probe(tmp_path / "second.json", f"--compilation_cache={cache}")
    second = _outputs(result, tmp_path / "second.json")
    assert second["small"] == first["small"]
    assert second["read"] == 0
    assert "Error reading persistent compilation cache entry" in result.stderr


@pytest.mark.parametrize("kind", ["a file", "a read-only folder"])
def test_a_cache_folder_that_cannot_be_written_costs_a_warning_line(tmp_path, kind):
    if kind == "a file":
        cache = tmp_path / "cache"
        cache.write_text("a file where the folder should be")
        target = cache / "sub"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into a read-only folder")
        cache = tmp_path / "read_only"
        cache.mkdir()
        cache.chmod(0o500)
        target = cache
    reference = _outputs(_probe(tmp_path / "off.json", "--compilation_cache=off"),
                         tmp_path / "off.json")
    result = _probe(tmp_path / "out.json", f"--compilation_cache={target}")
    outputs = _outputs(result, tmp_path / "out.json")
    assert outputs["small"] == reference["small"]
    assert outputs["cache"] is None
    warnings = [line for line in result.stderr.splitlines() if "compilation cache:" in line
                and "cannot write" in line]
    assert len(warnings) == 1 and warnings[0].startswith("W") and str(target) in warnings[0]
