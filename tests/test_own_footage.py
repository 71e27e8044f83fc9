"""README, "Your own footage": its three commands run on folders made here, then export,
ONNX, evaluate and predict on the result."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import make_folder

REPO_ROOT = Path(__file__).resolve().parent.parent
FX, WIDTHS = 60.0, (96, 128)  # both folders: one camera, images of two widths


def readme_commands() -> list[str]:
    """The fenced block after the `own-footage-commands` marker in README.md."""
    text = (REPO_ROOT / "README.md").read_text()
    match = re.search(r"<!-- own-footage-commands.*?-->\n```bash\n(.*?)```", text, re.DOTALL)
    assert match, "README.md lost its own-footage-commands block"
    return [line for line in match.group(1).splitlines() if line.strip()]


TRAIN_OVERRIDES = {  # tiny: the commands are checked, not the model
    "data.image_size": "(64,96)", "data.shuffle_buffer": 8, "batch_size": 2,
    "num_train_steps": 2, "checkpoint_every_steps": 2, "log_every_steps": 1,
    "image_log_every_steps": 2, "eval_every_steps": 2, "num_eval_examples": 2,
}


# Runs damono_jax.main with `torch` made unimportable (sys.modules[name] = None).
_WITHOUT_TORCH = (
    "import runpy, sys; sys.modules['torch'] = None; sys.argv = ['main'] + sys.argv[1:]; "
    "runpy.run_module('damono_jax.main', run_name='__main__')"
)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """The README's commands, training from a torchvision .pth that is then deleted; export
    and eval run where `import torch` fails: a checkpoint is restored into abstract shapes and
    `encoder_init` is never read again."""
    import torch

    from tests import helpers

    root = tmp_path_factory.mktemp("own_footage")
    pth = root / "resnet18.pth"
    torch.save(helpers.random_resnet18_state(), pth)
    make_folder(root / "my_source", labelled=True, splits={"train": 4, "val": 2},
                fx=FX, widths=WIDTHS)
    make_folder(root / "my_footage", labelled=False, splits={"test": 2}, fx=FX, widths=WIDTHS)
    # The footage's train split is one dashcam video (every 2nd of its 8 frames kept).
    rng = np.random.default_rng(1)
    helpers.write_video(root / "my_footage" / "train" / "video" / "drive.mp4",
                        [rng.integers(0, 256, (48, 96, 3), dtype=np.uint8) for _ in range(8)])
    (root / "my_footage" / "train" / "video.json").write_text(json.dumps({"every": 2}))
    (root / "my_footage" / "train" / "intrinsics.json").write_text(
        json.dumps({"fx": FX, "fy": FX, "cx": 48.0, "cy": 24.0}))
    (root / "configs").symlink_to(REPO_ROOT / "configs")  # the commands name configs/custom.py
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="1")
    commands = readme_commands()
    assert len(commands) == 3 and commands[2].startswith("python -m damono_jax.main")
    commands[2] += "".join(f" --config.{key}={value}" for key, value in TRAIN_OVERRIDES.items())
    commands[2] += f" --config.model.encoder_init={pth}"
    for index, command in enumerate([*commands, commands[2] + " --mode=export",
                                     commands[2] + " --mode=eval"]):
        argv = shlex.split(command)
        assert argv[0] == "python"
        if index == 3:  # after training: no .pth, no torch
            pth.unlink()
        if index >= 3:
            argv = ["python", "-c", _WITHOUT_TORCH, *argv[3:]]  # after `-m damono_jax.main`
        result = subprocess.run([sys.executable, *argv[1:]], cwd=root, env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, (command, (result.stdout + result.stderr)[-4000:])
        # The libraries' INFO lines stay off the console (damono_jax.cli) ...
        assert "_NonBlockingMetadataStore" not in result.stderr, command
    # ... and go to the run's log file, with the project's own lines.
    log = (root / "runs" / "mine" / "log.txt").read_text()
    assert "_NonBlockingMetadataStore" in log and "Training full from step 0" in log
    return root


def test_the_readme_commands_train_on_the_folders_and_record_the_source_camera(trained_run):
    run = trained_run / "runs" / "mine"
    assert (run / "checkpoints" / "2").is_dir()
    metadata = json.loads((run / "export" / "metadata.json").read_text())
    assert metadata["source_dataset"] == "depth_folder/labelled"
    assert metadata["target_dataset"] == "depth_folder/unlabelled"
    assert metadata["variant"] == "full" and metadata["step"] == 2
    evaluated = json.loads((run / "eval_depth_folder_labelled_val_step2.json").read_text())
    assert evaluated["step"] == 2 and np.isfinite(evaluated["val/abs_rel"])
    # The median of fx / W over the stored source frames (widths 96 and 128 alternate).
    assert metadata["train_focal_x_normalized"] == pytest.approx(
        np.median([FX / WIDTHS[i % 2] for i in range(4)]), rel=1e-6
    )
    # The target's train split came from the video alone: frames 0, 2, 4, 6.
    import tensorflow_datasets as tfds

    target = tfds.builder("depth_folder/unlabelled", data_dir=str(trained_run / "data"))
    assert target.info.splits["train"].num_examples == 4


def test_the_readme_video_command_gives_a_depth_video_of_the_drive(trained_run):
    """README, "Your own footage": the dashcam mp4 in, its side-by-side depth video out."""
    text = (REPO_ROOT / "README.md").read_text()
    match = re.search(r"<!-- own-footage-video: .*?-->\n```bash\n(.*?)```", text, re.DOTALL)
    assert match, "README.md lost its own-footage-video block"
    argv = shlex.split(match.group(1).strip())
    assert argv[:3] == ["python", "-m", "damono_jax.predict"]
    result = subprocess.run(
        [sys.executable, *argv[1:]], cwd=trained_run, capture_output=True, text=True,
        env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    from damono_jax import video
    from tests.helpers import decoded_frames

    depth_video = trained_run / "out_video" / "drive_depth.mp4"
    info = video.probe(depth_video)
    assert (info.height, info.width, info.fps) == (48, 2 * 96, 10)
    assert len(decoded_frames(depth_video)) == 8
    record = json.loads((trained_run / "out_video" / "prediction.json").read_text())
    assert record["videos"][str(Path("my_footage/train/video/drive.mp4"))]["frames_kept"] == 8


def test_export_onnx_evaluate_and_predict_with_focal(trained_run, tmp_path):
    from damono_jax.inference import export_evaluation, onnx_model
    from damono_jax.prediction import run as prediction
    from data_prep import build

    export_dir = trained_run / "runs" / "mine" / "export"
    description = onnx_model.export_onnx(export_dir)
    print("ONNX parity, max |disparity - JAX|:",
          description["parity"]["max_abs_disparity_difference"])
    assert description["parity"]["max_abs_disparity_difference"] <= 1e-4

    make_folder(tmp_path / "eval_folder", labelled=True, splits={"test": 2}, fx=FX,
                widths=WIDTHS)
    build.build_dataset("depth_folder/labelled", tmp_path / "data_eval",
                        manual_dir=tmp_path / "eval_folder")
    results = export_evaluation.evaluate_export(export_dir, tmp_path / "data_eval", split="test",
                                       dataset="depth_folder/labelled",
                                       output_dir=tmp_path / "eval")
    assert np.isfinite(results["results"]["80"]["abs_rel"])

    frames = trained_run / "my_footage" / "test" / "image"
    record = prediction.predict_images(export_dir, str(frames), tmp_path / "out", save=("npy",),
                                    focal=2 * FX)
    image = sorted(frames.glob("*.png"))[0]
    width = Image.open(image).width
    scale = (2 * FX / width) / json.loads((export_dir / "metadata.json").read_text())[
        "train_focal_x_normalized"]
    assert record["focal_scale"][str(image)] == pytest.approx(scale, rel=1e-6)
