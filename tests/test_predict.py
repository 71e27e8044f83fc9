"""Tests for damono_jax.predict: files and values end to end, flags and unreadable images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from damono_jax import errors, export, predict
from damono_jax.inference import model as inference_model
from damono_jax.models import DepthNet
from damono_jax.prediction import inputs as prediction_inputs
from damono_jax.prediction import run as prediction
from damono_jax.prediction import writers
from tests import helpers

INPUT_SIZE = (64, 96)
REPO_ROOT = Path(__file__).resolve().parents[1]


def random_depth_net_variables(seed: int = 0) -> dict:
    return helpers.random_depth_net_variables(INPUT_SIZE, seed)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("predict") / "export"
    metadata = {
        "model": {"upsample_mode": "bilinear"},
        "input_size": list(INPUT_SIZE),
        "min_depth": 0.1,
        "max_depth": 100.0,
        "units": "metres",
        "class_names": ["road"],
        "step": 1,
        "train_focal_x_normalized": 0.58,
    }
    export.save_export(directory, random_depth_net_variables(), metadata)
    return directory


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name, size in (("a", (70, 100)), ("b", (70, 100)), ("c", (50, 80)), ("d", (64, 96))):
        pixels = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{name}.png")
    (folder / "notes.txt").write_text("not an image, ignored by the folder listing")
    return folder


def expected_depth(model: inference_model.InferenceModel, path: Path) -> np.ndarray:
    """Independent pipeline: network at input size, torch bilinear resize, inversion."""
    image = np.asarray(Image.open(path).convert("RGB"))
    scaled = model.predict_scaled_disparity(model.prepare_image(image)[None])[0]
    resized = torch.nn.functional.interpolate(
        torch.from_numpy(scaled)[None, None], size=image.shape[:2], mode="bilinear",
        align_corners=False,
    )[0, 0].numpy()
    return 1.0 / resized


def read_ply(path: Path) -> tuple[str, np.ndarray]:
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    dtype = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")]
    return data[:end].decode("ascii"), np.frombuffer(data[end:], dtype=dtype)


def test_predict_folder_writes_consistent_files(export_dir, image_folder, tmp_path):
    jitted = inference_model._jitted_sigmoid_disparity(DepthNet())
    compiled_before = jitted._cache_size()
    output = tmp_path / "out"
    summary = prediction.predict_images(
        export_dir, str(image_folder), output,
        save=[item for item in writers.SAVE_FORMATS if item != "video"], batch_size=3,
        intrinsics=(50.0, 60.0, 40.0, 30.0), progress=False,
    )
    assert jitted._cache_size() == compiled_before + 1  # one compilation for 2 batches
    assert sorted(Path(p).name for p in summary["written"]) == ["a.png", "b.png", "c.png",
                                                               "d.png"]
    assert summary["skipped"] == {}
    model = inference_model.load_export(export_dir)
    first_batch = []
    for name in "abcd":
        source = image_folder / f"{name}.png"
        height, width = np.asarray(Image.open(source)).shape[:2]
        depth = np.load(output / f"{name}.npy")
        assert depth.dtype == np.float32 and depth.shape == (height, width)
        np.testing.assert_allclose(depth, expected_depth(model, source), rtol=1e-5)
        png16 = np.asarray(Image.open(output / f"{name}_depth16.png")).astype(np.float64)
        assert png16.shape == (height, width)
        np.testing.assert_allclose(png16 / 256.0, np.clip(depth, 0, 65535 / 256), atol=1 / 512)
        color = np.asarray(Image.open(output / f"{name}_color.png"))
        assert color.shape == (height, width, 3) and color.dtype == np.uint8
        header, vertices = read_ply(output / f"{name}.ply")
        assert f"element vertex {height * width}" in header
        np.testing.assert_allclose(vertices["z"], depth.ravel(), rtol=1e-6)
        v, u = 7, 5  # row, column of a pixel
        index = v * width + u
        np.testing.assert_allclose(
            vertices["x"][index], (u - 40.0) * depth[v, u] / 50.0, rtol=1e-5
        )
        np.testing.assert_allclose(
            vertices["y"][index], (v - 30.0) * depth[v, u] / 60.0, rtol=1e-5
        )
        if name in "abc":
            first_batch.append(depth.ravel())
    record = json.loads((output / "prediction.json").read_text())
    np.testing.assert_allclose(
        record["color_range"], np.percentile(np.concatenate(first_batch), [5, 95]), rtol=1e-5
    )
    assert not [p for p in output.iterdir() if p.name.startswith(".")]


def test_fixed_colour_range_and_focal_scaling(export_dir, image_folder, tmp_path):
    plain = prediction.predict_images(
        export_dir, [image_folder / "a.png"], tmp_path / "plain", save=("npy", "color"),
        color_range=(1.0, 20.0), batch_size=1, progress=False,
    )
    assert plain["color_range"] == [1.0, 20.0]
    focal = 2 * 0.58 * 100  # twice the training focal length (fx / W = 0.58) at W = 100
    scaled = prediction.predict_images(
        export_dir, [image_folder / "a.png"], tmp_path / "focal", save=("npy",), focal=focal,
        batch_size=1, progress=False,
    )
    assert scaled["focal_scale"] == {str(image_folder / "a.png"): pytest.approx(2.0)}
    np.testing.assert_allclose(
        np.load(tmp_path / "focal" / "a.npy"), 2 * np.load(tmp_path / "plain" / "a.npy"),
        rtol=1e-6,
    )


def test_unreadable_image_stops_or_is_skipped(export_dir, image_folder, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG but not really")
    inputs = [image_folder / "a.png", bad]
    with pytest.raises(errors.PredictError, match=f"{bad}: cannot read image"):
        prediction.predict_images(export_dir, [bad], tmp_path / "first", progress=False)
    assert not (tmp_path / "first").exists()  # --output only once there is something to write
    # Stopped at the second input: the first, already read, is predicted and written, and
    # prediction.json says what was written and what stopped the run.
    with pytest.raises(errors.PredictError, match=f"{bad}: cannot read image"):
        prediction.predict_images(export_dir, inputs, tmp_path / "stop", save=("npy",),
                                  batch_size=4, progress=False)
    assert sorted(p.name for p in (tmp_path / "stop").iterdir()) == ["a.npy", "prediction.json"]
    record = json.loads((tmp_path / "stop" / "prediction.json").read_text())
    assert record["written"] == {str(image_folder / "a.png"): [str(tmp_path / "stop" / "a.npy")]}
    assert record["stopped"]["input"] == str(bad)
    assert record["stopped"]["reason"].startswith(f"{bad}: cannot read image")
    summary = prediction.predict_images(
        export_dir, inputs, tmp_path / "skip", save=("npy",), on_error="skip", batch_size=1,
        progress=False,
    )
    assert list(summary["skipped"]) == [str(bad)]
    assert sorted(p.name for p in (tmp_path / "skip").iterdir()) == ["a.npy", "prediction.json"]


def test_bad_arguments_are_rejected(export_dir, image_folder, tmp_path):
    cases = [
        ({"save": ("jpg",)}, "--save: expected a non-empty subset"),
        ({"on_error": "ignore"}, "--on_error: expected 'stop' or 'skip'"),
        ({"color_range": (5.0, 1.0)}, "--color_range: need 0 < near < far"),
        ({"batch_size": 0}, "--batch_size: must be >= 1"),
        ({"focal": -1.0}, "--focal: must be > 0"),
    ]
    for kwargs, message in cases:
        with pytest.raises(errors.PredictError, match=message):
            prediction.predict_images(export_dir, str(image_folder), tmp_path, **kwargs)
    with pytest.raises(errors.PredictError, match="the glob matches no files"):
        prediction.predict_images(export_dir, str(tmp_path / "*.jpg"), tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(other / "a.jpg")
    with pytest.raises(errors.PredictError, match="same output name 'a'"):
        prediction.predict_images(export_dir, [image_folder / "a.png", other / "a.jpg"], tmp_path)
    with pytest.raises(errors.PredictError, match="expected 4 comma-separated"):
        predict.parse_floats("1,2,3", 4, "intrinsics")
    with pytest.raises(errors.ExportError, match="export directory does not exist"):
        prediction.predict_images(tmp_path / "missing", str(image_folder), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other"]


def test_command_line(export_dir, image_folder, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "JAX_PLATFORMS": "cpu"}
    base = [sys.executable, "-m", "damono_jax.predict", f"--export={export_dir}",
            f"--output={tmp_path / 'cli'}"]
    ok = subprocess.run(
        [*base, f"--input={image_folder / 'c.png'}", "--save=npy,png16",
         "--color_range=1,30"],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300,
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "wrote 1 predictions" in ok.stdout
    assert np.load(tmp_path / "cli" / "c.npy").shape == (50, 80)
    bad = subprocess.run(
        [*base, f"--input={image_folder}", "--intrinsics=1,2"],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300,
    )
    assert bad.returncode == 2
    assert "--intrinsics=1,2: expected 4 comma-separated" in bad.stderr
    # A PredictError raised under `python -m damono_jax.predict` (class of __main__ once,
    # before cli stopped importing predict): exit 1, the error line last, no traceback,
    # no --output folder left behind.
    truncated = tmp_path / "cut" / "cut.png"
    truncated.parent.mkdir()
    truncated.write_bytes((image_folder / "a.png").read_bytes()[:100])
    stopped = subprocess.run(
        [sys.executable, "-m", "damono_jax.predict", f"--export={export_dir}",
         f"--input={truncated.parent}", f"--output={tmp_path / 'stopped'}", "--on_error=stop"],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300,
    )
    assert stopped.returncode == 1, stopped.stderr[-2000:]
    assert stopped.stderr.strip().splitlines()[-1].startswith(f"error: {truncated}: cannot "
                                                              "read image")
    assert "Traceback" not in stopped.stderr
    assert not (tmp_path / "stopped").exists()


def test_a_full_disk_stops_the_run_and_leaves_only_complete_outputs(export_dir, image_folder,
                                                                      tmp_path):
    """Room for the depth of a.png and b.png (7 pages each) and prediction.json, not of c.png
    (4 more pages): exit 1 naming c's file and "no space left"; a and b stay with the record,
    nothing of c (or of d, read after it) is left."""
    with helpers.small_filesystem(tmp_path / "disk", 16 * 4096) as disk:
        output = disk / "out"
        full = subprocess.run(
            [sys.executable, "-m", "damono_jax.predict", f"--export={export_dir}",
             f"--input={image_folder}", f"--output={output}", "--save=npy",
             "--batch_size=4"],
            capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "JAX_PLATFORMS": "cpu"})
        assert full.returncode == 1, full.stderr[-3000:]
        line = f"error: {output / 'c.npy'}: cannot write it: no space left on device"
        assert full.stderr.strip().splitlines()[-1] == line, full.stderr[-3000:]
        assert "Traceback" not in full.stderr
        assert sorted(p.name for p in output.iterdir()) == ["a.npy", "b.npy", "prediction.json"]
        record = json.loads((output / "prediction.json").read_text())
        assert sorted(record["written"]) == [str(image_folder / n) for n in ("a.png", "b.png")]
        assert record["stopped"] == {"input": str(image_folder / "c.png"),
                                     "reason": line.removeprefix("error: ")}
        assert np.load(output / "b.npy").shape == (70, 100)


def test_read_image_scales_16_bit_and_converts_gray_rgba_and_palette(tmp_path):
    gray16 = np.array([[0, 257, 65535], [32896, 1000, 65000]], np.uint16)
    Image.fromarray(gray16).save(tmp_path / "gray16.png")
    image = prediction_inputs.read_image(tmp_path / "gray16.png")
    assert image.shape == (2, 3, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[..., 0], [[0, 1, 255], [128, 4, 253]])  # not clipped
    np.testing.assert_array_equal(image[..., 0], image[..., 2])
    rgb = np.random.default_rng(3).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    Image.fromarray(np.dstack([rgb, np.full((4, 5), 7, np.uint8)])).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(prediction_inputs.read_image(tmp_path / "rgba.png"), rgb)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray8.png")
    np.testing.assert_array_equal(prediction_inputs.read_image(tmp_path / "gray8.png"),
                                  np.repeat(rgb[..., :1], 3, axis=-1))
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    palette = Image.open(tmp_path / "p.png").convert("RGB")
    np.testing.assert_array_equal(prediction_inputs.read_image(tmp_path / "p.png"),
                                  np.asarray(palette))
    Image.fromarray(np.ones((3, 3), np.float32)).save(tmp_path / "float.tiff")
    with pytest.raises(errors.PredictError, match=r"float\.tiff: unsupported image mode 'F'"):
        prediction_inputs.read_image(tmp_path / "float.tiff")


def test_non_finite_output_is_an_error_naming_the_export(export_dir, image_folder, tmp_path):
    model = inference_model.load_export(export_dir)
    variables = jax_tree_with_nan(model.variables)
    broken = tmp_path / "broken_export"
    export.save_export(broken, variables, model.metadata)
    with pytest.raises(errors.PredictError,
                       match=rf"{broken}: the network's output for .*a\.png is NaN or Inf; "
                             r"the export's variables are corrupt or diverged"):
        prediction.predict_images(broken, str(image_folder), tmp_path / "out", save=("npy",))
    assert not (tmp_path / "out" / "a.npy").exists()


def jax_tree_with_nan(variables: dict) -> dict:
    """A copy of DepthNet variables whose depth decoder's output conv bias is NaN."""
    import jax

    def poison(path, leaf):
        leaf = np.array(leaf)
        if "depth_decoder" in jax.tree_util.keystr(path) and "bias" in jax.tree_util.keystr(
                path):
            leaf[...] = np.nan
        return leaf

    return jax.tree_util.tree_map_with_path(poison, variables)
