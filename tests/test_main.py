"""Configs, variants, validation errors, and main.py end to end (resume after SIGKILL)."""

import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import cityscapes, default, synthetic, vkitti
from damono_jax import config_utils

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def valid_config():
    config = vkitti.get_config()
    config.data.data_dir = "/data/tfds"
    return config


@pytest.mark.parametrize("module", [vkitti, cityscapes, synthetic])
@pytest.mark.parametrize("variant", ["baseline", "seg", "full"])
def test_configs_and_variants_validate(module, variant):
    config = module.get_config(variant)
    config.data.data_dir = "/data/tfds"
    assert config.variant == variant
    config_utils.validate(config)
    flags = config_utils.variant_flags(variant)
    assert flags["use_semantic"] == (variant != "baseline")
    assert flags["use_domain_classifier"] == (variant == "full")


def test_default_variant_is_full_and_keys_match_default():
    assert vkitti.get_config().variant == "full"
    keys = set(config_utils.flatten_for_hparams(default.get_config()))
    for module in (vkitti, cityscapes, synthetic):
        assert set(config_utils.flatten_for_hparams(module.get_config())) == keys


def test_paper_settings():
    config = vkitti.get_config()
    assert config.data.source == "vkitti/v1" and config.data.target == "kitti_eigen"
    assert config.data.image_size == (192, 640) and config.data.max_depth == 80.0
    assert config.optim.learning_rate == 1e-4 and config.loss.l1_weight == 0.15
    assert cityscapes.get_config().data.source == "cityscapes_depth"
    assert synthetic.get_config().data.image_size == (64, 224)
    assert synthetic.get_config().batch_size == 4


def test_unknown_variant_argument():
    with pytest.raises(ValueError, match=r"unknown variant 'fancy'"):
        vkitti.get_config("fancy")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("data.image_size", (190, 640), r"config\.data\.image_size: \(190, 640\) is not a "
                                        r"multiple of 32"),
        ("data.image_size", (192,), r"config\.data\.image_size: .* not a \(height, width\)"),
        ("data.source", "nyu_depth", r"config\.data\.source: unknown dataset 'nyu_depth'"),
        ("data.source", "vkitti/v3", r"config\.data\.source: dataset 'vkitti/v3' needs one"),
        ("data.target", "kitti_eigen/x", r"config\.data\.target: dataset 'kitti_eigen/x' needs "
                                         r"one of the configs kitti_eigen, kitti_eigen/left"),
        ("data.source", "cityscapes_depth/x", r"config\.data\.source: dataset 'cityscapes_depth' "
                                              r"has no config 'x'"),
        ("data.data_dir", None, r"config\.data\.data_dir: is not set"),
        ("variant", "everything", r"config\.variant: unknown value 'everything'"),
        ("dtype", "float16", r"config\.dtype: unknown value 'float16'"),
        ("loss.l1_weight", 1.5, r"config\.loss\.l1_weight: 1\.5 must be <= 1\.0"),
        ("loss.seg_weight", -0.1, r"config\.loss\.seg_weight: -0\.1 must be >= 0\.0"),
        ("grl.schedule", "linear", r"config\.grl\.schedule: unknown value 'linear'"),
        ("optim.learning_rate", 0.0, r"config\.optim\.learning_rate: 0\.0 must be > 0\.0"),
        ("optim.decay_at_fraction", 1.5, r"config\.optim\.decay_at_fraction: 1\.5 must be"),
        ("num_train_steps", 0, r"config\.num_train_steps: 0 must be positive"),
        ("model.upsample_mode", "cubic", r"config\.model\.upsample_mode: unknown value"),
        ("model.min_depth", 200.0, r"config\.model\.min_depth: 200\.0 must be below"),
        ("data.max_depth", 0.0, r"config\.data\.max_depth: 0\.0 must be > 0\.0"),
    ],
)
def test_invalid_values_name_the_key(key, value, message):
    config = valid_config()
    node = config
    *parents, leaf = key.split(".")
    for parent in parents:
        node = node[parent]
    node[leaf] = value
    with pytest.raises(ValueError, match=message):
        config_utils.validate(config)


def test_data_dir_not_needed_for_export_and_batch_must_split_over_devices():
    config = vkitti.get_config()
    config_utils.validate(config, mode="export")
    config.data.data_dir = "/data"
    with pytest.raises(ValueError, match=r"config\.batch_size: 12 is not divisible by the 8"):
        config_utils.validate(config, num_devices=8)
    config_utils.validate(config, num_devices=4)


def test_target_only_checked_for_full_variant():
    config = vkitti.get_config("seg")
    config.data.data_dir = "/data"
    config.data.target = "unknown_target"
    config_utils.validate(config)
    config.variant = "full"
    with pytest.raises(ValueError, match=r"config\.data\.target: unknown dataset"):
        config_utils.validate(config)


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


def _environment(cache_dir: str) -> dict[str, str]:
    # A shared persistent compilation cache: the restarted process loads the programs the
    # killed one compiled (what a preempted job should do too).
    return dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=cache_dir,
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")


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
    cache_dir = str(tmp_path / "jax_cache")
    env = _environment(cache_dir)
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


def test_main_rejects_invalid_config_naming_the_key(tmp_path):
    command = [sys.executable, "-m", "damono_jax.main", "--config=configs/vkitti.py",
               f"--workdir={tmp_path}", "--config.data.image_size=(190,640)",
               "--config.data.data_dir=/data"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert result.returncode != 0
    assert "config.data.image_size: (190, 640) is not a multiple of 32" in result.stderr


@pytest.mark.parametrize("target", ["kitti_eigen", "kitti_eigen/left", "kitti_eigen/stereo",
                                    "kitti_eigen/custom"])
def test_kitti_eigen_builder_configs_are_accepted(target):
    config = valid_config()
    config.data.target = target
    config.data.eval = target
    config_utils.validate(config)
