"""damono_jax.main end to end: resume after SIGKILL, invalid configs, eval/export without torch."""

import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------ main.py end to end


@pytest.fixture(scope="module")
def synthetic_data_dir(tmp_path_factory) -> str:
    """synthetic_driving source and target, 8 examples per split."""
    from data_prep import build

    path = str(tmp_path_factory.mktemp("tfds"))
    for name in ("synthetic_driving/source", "synthetic_driving/target"):
        build.build_dataset(name, path, max_examples_per_split=8)
    return path


def _main_command(workdir: str, data_dir: str) -> list[str]:
    overrides = {
        "data.data_dir": data_dir,
        "data.image_size": "(64,64)",
        "data.shuffle_buffer": 8,
        "batch_size": 2,
        "num_train_steps": RESUME_STEPS,
        "checkpoint_every_steps": 4,
        "keep_checkpoints": 5,
        "log_every_steps": 2,
        "image_log_every_steps": RESUME_STEPS,
        "eval_every_steps": RESUME_STEPS,
        "num_eval_examples": 2,
    }
    return [sys.executable, "-m", "damono_jax.main", "--config=configs/synthetic.py:full",
            f"--workdir={workdir}"] + [f"--config.{k}={v}" for k, v in overrides.items()]


def _environment() -> dict[str, str]:
    # The suite's compilation cache (tests/conftest.py, inherited through
    # DAMONO_JAX_COMPILATION_CACHE): the restarted process loads the programs the killed one
    # compiled (what a preempted job should do too). The runs compare a program with itself
    # (resumed against uninterrupted), so they compile with XLA's cheaper options
    # (tests/helpers.fast_compilation says why only such tests may).
    return dict(os.environ, JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="1")


def _final_arrays(workdir: str, step: int) -> dict:
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as manager:
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
    return restored.state, restored.meta


RESUME_STEPS = 8


def test_resume_after_sigkill(tmp_path, synthetic_data_dir):
    """SIGKILL after the first checkpoint; the restart resumes there, follows the same data
    and ends with exactly the parameters of an uninterrupted run."""
    env = _environment()
    workdir = str(tmp_path / "killed")
    command = _main_command(workdir, synthetic_data_dir)
    first_checkpoint = os.path.join(workdir, "checkpoints", "4")
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        while not os.path.isdir(first_checkpoint):
            assert process.poll() is None, process.stdout.read()[-5000:]
            assert time.monotonic() - started < 600, "no checkpoint after 600 s"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        output = process.communicate()[0]
    assert process.returncode == -signal.SIGKILL, output[-3000:]
    killed_after = time.monotonic() - started

    restarted = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                               timeout=600)
    log = restarted.stdout + restarted.stderr
    assert restarted.returncode == 0, log[-5000:]
    resumed = re.search(r"Resumed from .* at step (\d+)\.", log)
    assert resumed, log[-5000:]
    resumed_step = int(resumed.group(1))
    # The newest complete checkpoint when the kill landed (8 = the run had just finished).
    assert resumed_step in (4, 8)
    assert f"Training full from step {resumed_step} to {RESUME_STEPS}" in log

    straight_dir = str(tmp_path / "straight")
    straight = subprocess.run(_main_command(straight_dir, synthetic_data_dir), cwd=REPO_ROOT,
                              env=env, capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, (straight.stdout + straight.stderr)[-5000:]
    total = time.monotonic() - started

    resumed_state, resumed_meta = _final_arrays(workdir, RESUME_STEPS)
    straight_state, straight_meta = _final_arrays(straight_dir, RESUME_STEPS)
    assert resumed_meta["data_position"] == straight_meta["data_position"] == RESUME_STEPS
    assert int(resumed_state["step"]) == RESUME_STEPS
    leaves_resumed = jax.tree.leaves(resumed_state)
    leaves_straight = jax.tree.leaves(straight_state)
    assert len(leaves_resumed) == len(leaves_straight) > 100
    for a, b in zip(leaves_resumed, leaves_straight, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    print(f"resume test: killed after {killed_after:.1f} s (first checkpoint written), resumed "
          f"at step {resumed_step}, total {total:.1f} s")
