"""damono_jax.cli: user errors of every tool end in one `error:` line, exit 2 or 1, nothing
written; tracebacks only with --verbose."""

from __future__ import annotations

import functools
import logging as std_logging
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from absl import flags

from damono_jax import checkpointing, cli, locks
from damono_jax.errors import DiskFullError, ExportError
from data_prep.common import DataError

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("error", "status"), [
    (ValueError("config.data.image_size: (190, 640) is not a multiple of 32"), 2),
    (ValueError("--focal: must be > 0 pixels, got -1"), 2),
    (cli.UsageError("usage: python -m data_prep.build NAME"), 2),
    (flags.IllegalFlagValueError("bad"), 2),
    (DataError("a.png", "corrupt"), 1),
    (DataError("--manual_dir", "kitti_eigen needs its source files"), 2),
    (ExportError("export: missing"), 1),
    (checkpointing.CheckpointError("ckpt/3: checkpoint does not restore"), 1),
    (locks.LockHeldError("another trainer holds w/.train.lock.process0"), 1),
    (FileNotFoundError("config.data.source: not built"), 1),
    (DiskFullError("out/a.npy", "it"), 1),
    (OSError(28, "No space left on device", "w/events"), 1),  # a write nothing named
    (RuntimeError("ResourceExhaustedError: w/x.tfrecord; No space left on device"), 1),
    (ValueError("operands could not be broadcast"), None),  # a bug keeps its traceback
    (KeyError("x"), None),
])
def test_exit_status_of_usage_data_and_other_errors(error, status):
    assert cli.exit_status(error) == status


def test_a_full_disk_is_one_line_and_the_libraries_accounts_of_it_stay_off_the_console():
    assert cli._message(OSError(28, "No space left on device", "w/events")) == (
        "w/events: no space left on device")
    assert cli._message(RuntimeError("Failed writing: x; No space left on device\nmore")) == (
        "no space left on device (Failed writing: x; No space left on device)")
    assert cli._message(DiskFullError("o/a.npy", "it")) == (
        "o/a.npy: cannot write it: no space left on device")
    quiet = cli._QuietLibraries()

    def record(path: str, message: str, level: int = std_logging.ERROR):
        return std_logging.LogRecord("absl", level, path, 1, message, None, None)

    orbax = "/venv/site-packages/orbax/checkpoint/future.py"
    assert not quiet.filter(record(orbax, "write failed: No space left on device "
                                          "[os_error_code='28']"))
    assert not quiet.filter(record("/lib/asyncio/base_events.py", "Task exception was never "
                                   "retrieved: [os_error_code='28']"))
    assert quiet.filter(record(orbax, "a save failed: permission denied"))
    assert quiet.filter(record("/repo/damono_jax/predict.py", "No space left on device",
                               std_logging.WARNING))  # the project's own lines stay
    shown = []
    hook = functools.partial(cli._closed_event_loop, shown.append)
    hook(types.SimpleNamespace(exc_value=RuntimeError("Event loop is closed")))
    assert shown == []
    other = types.SimpleNamespace(exc_value=RuntimeError("something else"))
    hook(other)
    assert shown == [other]


def test_a_log_file_on_a_full_disk_says_so_once_and_stops(tmp_path, monkeypatch):
    class FullDisk:
        def write(self, text):
            raise OSError(28, "No space left on device")

        def flush(self):
            pass

    handler = cli._LogFile(tmp_path / "log.txt")
    handler.stream.close()
    handler.stream = FullDisk()
    warnings = []
    monkeypatch.setattr(cli.absl_logging, "warning", lambda *args: warnings.append(args))
    for index in range(3):
        handler.handle(std_logging.LogRecord("absl", std_logging.INFO, "x.py", 1, f"line {index}",
                                             None, None))
    assert handler.stopped and len(warnings) == 1
    assert warnings[0][0] % warnings[0][1:] == (
        f"{tmp_path / 'log.txt'}: the log file stops here ([Errno 28] No space left on device)")


def _cases(tmp_path: Path) -> dict[str, tuple[list[str], int, str]]:
    """name -> (command after `python -m`, exit status, exact last stderr line)."""
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    empty = tmp_path / "empty_data"
    unparsable = tmp_path / "unparsable.py"
    unparsable.write_text("import ml_collections\ndef get_config()\n    return None\n")
    unimportable = tmp_path / "unimportable.py"
    unimportable.write_text("import ml_collections\nimport no_such_module_xyz\n")
    main = ["damono_jax.main", "--config=configs/synthetic.py"]
    return {
        "config_key_typo": (
            [*main, f"--workdir={tmp_path / 'w1'}", "--config.bach_size=4"], 2,
            'error: --config.bach_size: no such config key (Did you mean "batch_size" '
            'instead of "bach_size"?)'),
        "variant_typo": (
            ["damono_jax.main", "--config=configs/synthetic.py:fulll",
             f"--workdir={tmp_path / 'w5'}"], 2,
            "error: flag --config=configs/synthetic.py:fulll: Error whilst parsing config "
            "file: ValueError: config argument: unknown variant 'fulll'; use one of baseline, "
            "seg, full"),
        "config_file_missing": (
            ["damono_jax.main", "--config=configs/nope.py", f"--workdir={tmp_path / 'w6'}"], 2,
            "error: --config=configs/nope.py: cannot read the config file ([Errno 2] No such "
            "file or directory: 'configs/nope.py')"),
        # With an override, ml_collections loads the file while the flags are parsed.
        "config_file_missing_with_override": (
            ["damono_jax.main", "--config=configs/nope.py", "--config.batch_size=2",
             f"--workdir={tmp_path / 'w7'}"], 2,
            "error: --config=configs/nope.py: cannot read the config file ([Errno 2] No such "
            "file or directory: 'configs/nope.py')"),
        "config_file_does_not_parse": (
            ["damono_jax.main", f"--config={unparsable}", f"--workdir={tmp_path / 'w8'}"], 2,
            f"error: --config={unparsable}: the config file does not parse ({unparsable}, "
            "line 2: expected ':')"),
        "config_file_does_not_parse_with_override": (
            ["damono_jax.main", f"--config={unparsable}", "--config.batch_size=2",
             f"--workdir={tmp_path / 'w9'}"], 2,
            f"error: --config={unparsable}: the config file does not parse ({unparsable}, "
            "line 2: expected ':')"),
        "config_file_does_not_import_with_override": (
            ["damono_jax.main", f"--config={unimportable}", "--config.batch_size=2",
             f"--workdir={tmp_path / 'w10'}"], 2,
            f"error: --config={unimportable}: the config file fails (line 2): "
            "ModuleNotFoundError: No module named 'no_such_module_xyz'"),
        "bad_image_size": (
            [*main, f"--workdir={tmp_path / 'w2'}", "--config.data.image_size=(190,640)"], 2,
            "error: config.data.image_size: (190, 640) is not a multiple of 32"),
        "workdir_is_a_file": (
            [*main, f"--workdir={afile}"], 2,
            f"error: --workdir={afile}: exists and is not a folder"),
        "dataset_not_built": (
            [*main, f"--workdir={tmp_path / 'w3'}", f"--config.data.data_dir={empty}"], 1,
            f"error: config.data.source: dataset 'synthetic_driving/source' is not built in "
            f"{empty} (no {empty}/synthetic_driving/source/1.1.0/dataset_info.json); build it "
            f"with: python -m data_prep.build synthetic_driving/source --data_dir={empty}"),
        "export_without_workdir": (
            [*main, f"--workdir={tmp_path / 'w4'}", "--mode=export"], 2,
            f"error: --workdir={tmp_path / 'w4'}: no such folder (train first with "
            "--mode=train)"),
        "predict_missing_input": (
            [*main, f"--workdir={tmp_path}", "--mode=predict",
             f"--input={tmp_path / 'none'}", f"--output={tmp_path / 'out'}"], 2,
            f"error: --input={tmp_path / 'none'}: no such file or folder, and the glob matches "
            "no files"),
        "evaluate_output_is_a_file": (
            ["damono_jax.evaluate", f"--export={tmp_path}", f"--data_dir={empty}",
             f"--output={afile}"], 2,
            f"error: --output={afile}: exists and is not a folder"),
        # An --output that cannot be created is named before the export or data is read.
        "evaluate_output_under_a_file": (
            ["damono_jax.evaluate", f"--export={tmp_path / 'none'}", f"--data_dir={empty}",
             f"--output={afile}/ev"], 2,
            f"error: --output={afile}/ev: cannot create it ({afile} is a file)"),
        "predict_output_under_a_file": (
            ["damono_jax.predict", f"--export={tmp_path / 'none'}", f"--input={afile}",
             f"--output={afile}/out"], 2,
            f"error: --output={afile}/out: cannot create it ({afile} is a file)"),
        "adabn_output_under_a_file": (
            ["damono_jax.adabn", f"--export={tmp_path / 'none'}", f"--data_dir={empty}",
             "--dataset=synthetic_driving/target", f"--output={afile}/adapted"], 2,
            f"error: --output={afile}/adapted: cannot create it ({afile} is a file)"),
        "predict_missing_export": (
            ["damono_jax.predict", f"--export={tmp_path / 'none'}", f"--input={afile}",
             f"--output={tmp_path / 'out'}"], 1,
            f"error: {tmp_path / 'none'}: export directory does not exist"),
        "build_unknown_dataset": (
            ["data_prep.build", "kitti_eigne", f"--data_dir={tmp_path / 'd'}"], 2,
            "error: unknown dataset 'kitti_eigne'; data_prep registers: cityscapes_depth, "
            "depth_folder, kitti_eigen, synthetic_driving, vkitti"),
    }


def test_user_errors_end_in_one_line_with_their_status_and_write_nothing(tmp_path):
    cases = _cases(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    commands = {**{name: case[0] for name, case in cases.items()},
                "verbose": [*cases["bad_image_size"][0], "--verbose"]}
    processes = {  # concurrently: each spends its few seconds importing JAX and TensorFlow
        name: subprocess.Popen([sys.executable, "-m", *command], cwd=REPO_ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, command in commands.items()
    }
    results = {name: (process.wait(timeout=300), process.communicate()[1])
               for name, process in processes.items()}
    for name, (_, status, line) in cases.items():
        code, stderr = results[name]
        assert (code, stderr.strip().splitlines()[-1]) == (status, line), (name, stderr[-3000:])
        assert "Traceback" not in stderr, name
    code, stderr = results["verbose"]
    assert code == 2 and "Traceback (most recent call last)" in stderr
    assert stderr.strip().splitlines()[-1] == cases["bad_image_size"][2]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_an_output_folder_that_cannot_be_created_is_named_before_any_work(tmp_path):
    """As a user without write permission (`nobody`, when the tests run as root)."""
    import shutil
    import tempfile

    if os.geteuid() == 0 and not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: cannot drop the write permission")
    prefix = (["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
              if os.geteuid() == 0 else [])
    env = dict(os.environ, JAX_PLATFORMS="cpu", DAMONO_JAX_COMPILATION_CACHE="off")
    probe = subprocess.run([*prefix, sys.executable, "-c", "import damono_jax.cli"],
                           cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"the unprivileged user cannot import the project here: "
                    f"{probe.stderr.strip().splitlines()[-1:]}")
    shared = Path(tempfile.mkdtemp(prefix="read_only_"))
    try:
        shared.chmod(0o755)
        read_only = shared / "parent"
        read_only.mkdir(mode=0o555)
        read_only.chmod(0o555)  # whatever the umask
        commands = {
            "evaluate": ["damono_jax.evaluate", f"--export={shared / 'none'}",
                         f"--data_dir={shared}", f"--output={read_only}/ev"],
            "predict": ["damono_jax.predict", f"--export={shared / 'none'}",
                        f"--input={shared}", f"--output={read_only}/out", "--save=video"],
        }
        for name, command in commands.items():
            result = subprocess.run([*prefix, sys.executable, "-m", *command], cwd=REPO_ROOT,
                                    env=env, capture_output=True, text=True, timeout=300)
            flag_value = command[-2] if name == "predict" else command[-1]
            assert (result.returncode, result.stderr.strip().splitlines()[-1]) == (
                2, f"error: {flag_value}: cannot create it (permission denied)"), name
        assert list(read_only.iterdir()) == []
    finally:
        (shared / "parent").chmod(0o755)
        shutil.rmtree(shared)


def test_a_bad_init_from_is_named_before_the_model_is_built_and_leaves_no_workdir(tmp_path):
    from tests.helpers import truncate_data_files

    with checkpointing.TrainCheckpointer(str(tmp_path / "run"), 1) as checkpointer:
        checkpointer.save(1, {"params": {"w": np.ones((64, 64), np.float32)}}, {"step": 1})
    truncate_data_files(tmp_path / "run" / "checkpoints" / "1")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    main = [sys.executable, "-m", "damono_jax.main", "--config=configs/synthetic.py:full",
            f"--config.data.data_dir={tmp_path / 'no_data'}"]
    commands = {
        "not a run": [*main, f"--workdir={tmp_path / 'w1'}", "--config.init_from=README.md"],
        "truncated": [*main, f"--workdir={tmp_path / 'w2'}",
                      f"--config.init_from={tmp_path / 'run'}"],
    }
    processes = {name: subprocess.Popen(command, cwd=REPO_ROOT, env=env, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for name, command in commands.items()}
    results = {name: (process.wait(timeout=300), process.communicate()[1])
               for name, process in processes.items()}
    code, stderr = results["not a run"]
    assert (code, stderr.strip().splitlines()[-1]) == (
        2, f"error: config.init_from: {REPO_ROOT}/README.md is neither an export (no "
           "metadata.json), a training workdir (no checkpoints/) nor a checkpoint folder")
    code, stderr = results["truncated"]
    line = stderr.strip().splitlines()[-1]
    assert code == 1, stderr[-2000:]
    assert line.startswith(f"error: config.init_from: {tmp_path}/run/checkpoints/1: checkpoint "
                           f"does not restore: {tmp_path}/run/checkpoints/1/state/d/"), line
    assert " is truncated or corrupt (" in line and "<bound method" not in line
    assert "Traceback" not in stderr
    # Named before the dataset is looked at (no_data is not built) and before any workdir.
    assert not (tmp_path / "w1").exists() and not (tmp_path / "w2").exists()
