r"""Metric depth for your own images with an exported model.

```
python -m damono_jax.predict --export=WORKDIR/export --input=IMAGE|FOLDER|GLOB \
    --output=OUT [--save=npy,png16,color,ply] [--batch_size=4] [--color_range=near,far] \
    [--intrinsics=fx,fy,cx,cy] [--focal=fx] [--on_error=stop|skip]
```

For each image `NAME.ext` it writes, at the image's own resolution (the network output is
resized back as a disparity, bilinearly, then inverted, as in the evaluation):

- `NAME.npy`: float32 depth in metres;
- `NAME_depth16.png`: KITTI-style uint16 PNG, `round(depth * 256)`, depth clipped to
  `[0, 65535 / 256]` m (read back with `png / 256`);
- `NAME_color.png`: magma colour map of inverse depth, ONE range for the whole run
  (`--color_range` in metres, or the 5th/95th depth percentiles of the first batch), so a
  folder of video frames does not flicker;
- `NAME.ply`: coloured point cloud (OpenCV camera frame: x right, y down, z forward, metres)
  from `--intrinsics` of the original image, or KITTI-like defaults scaled to its size
  (fx = 0.58 W, fy = 1.92 H, cx = W / 2, cy = H / 2, Monodepth2's normalised K).

`prediction.json` in the output folder records the export, the colour range, the focal
scaling and the intrinsics used. The model is trained with metric source depth, so outputs are
metres for a camera like the training one; `--focal` (fx in pixels of the original image)
rescales depth by `(fx / W) / train_focal_x_normalized` for another camera.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from damono_jax import cli, evaluation, files, visualization
from damono_jax.errors import PredictError
from damono_jax.inference import batching
from damono_jax.inference import model as inference_model

SAVE_FORMATS = ("npy", "png16", "color", "ply")
DEFAULT_SAVE = ("npy", "png16", "color")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
PNG16_MAX_DEPTH = 65535.0 / 256.0
# Monodepth2's KITTI normalised intrinsics (fx / W, fy / H, cx / W, cy / H).
DEFAULT_NORMALIZED_INTRINSICS = (0.58, 1.92, 0.5, 0.5)
AUTO_RANGE_PERCENTILES = (5.0, 95.0)


def list_inputs(pattern: str) -> list[Path]:
    """Expands an image path, a folder (its images, sorted, not recursive) or a glob."""
    path = Path(pattern)
    if path.is_file():
        return [path]
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not images:
            raise PredictError(f"{path}: folder has no images ({', '.join(IMAGE_EXTENSIONS)})")
        return images
    matches = sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_file())
    if not matches:
        raise PredictError(f"--input={pattern}: no such file or folder, and the glob matches "
                           "no files")
    return matches


# PIL modes read as they are (8-bit), and 16-bit grayscale modes scaled to 8 bits.
_EIGHT_BIT_MODES = ("RGB", "RGBA", "RGBX", "L", "LA", "P", "PA", "CMYK", "YCbCr", "1")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def read_image(path: Path) -> np.ndarray:
    """Reads an image file as uint8 RGB (H, W, 3); errors name the file.

    8-bit colour, grayscale, palette and RGBA images are converted to RGB (alpha dropped);
    16-bit grayscale is scaled to 8 bits (`round(v / 257)`, so 65535 -> 255), not clipped.
    Other modes (32-bit integer or float) are refused.
    """
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in _SIXTEEN_BIT_MODES:
                gray = np.asarray(image).astype(np.float64)
                gray8 = np.round(gray / 257.0).astype(np.uint8)
                return np.repeat(gray8[..., None], 3, axis=-1)
            if image.mode not in _EIGHT_BIT_MODES:
                raise PredictError(
                    f"{path}: unsupported image mode {image.mode!r} (expected 8-bit RGB, RGBA, "
                    "grayscale or palette, or 16-bit grayscale)"
                )
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except PredictError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise PredictError(f"{path}: cannot read image: {error}") from error


def parse_floats(text: str, count: int, flag: str) -> tuple[float, ...]:
    """Parses `count` comma-separated finite floats; errors name the flag."""
    parts = [part.strip() for part in text.split(",")]
    try:
        values = tuple(float(part) for part in parts)
    except ValueError as error:
        raise PredictError(f"--{flag}={text}: expected {count} comma-separated numbers") from error
    if len(values) != count or not all(np.isfinite(values)):
        raise PredictError(f"--{flag}={text}: expected {count} comma-separated finite numbers")
    return values


def default_intrinsics(height: int, width: int) -> tuple[float, float, float, float]:
    """KITTI-like (fx, fy, cx, cy) scaled to an image of `height x width`."""
    fx, fy, cx, cy = DEFAULT_NORMALIZED_INTRINSICS
    return fx * width, fy * height, cx * width, cy * height


def depth_to_png16(depth: np.ndarray) -> np.ndarray:
    """KITTI encoding: uint16 `round(depth * 256)` with depth clipped to [0, 65535/256] m."""
    return np.round(np.clip(depth, 0.0, PNG16_MAX_DEPTH) * 256.0).astype(np.uint16)


def point_cloud(
    depth: np.ndarray, image: np.ndarray, intrinsics: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Back-projects every pixel: returns (N, 3) float32 points and (N, 3) uint8 colours."""
    fx, fy, cx, cy = intrinsics
    height, width = depth.shape
    v, u = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    z = depth.astype(np.float64)
    points = np.stack([(u - cx) * z / fx, (v - cy) * z / fy, z], axis=-1)
    return points.reshape(-1, 3).astype(np.float32), image.reshape(-1, 3)


def write_ply(path: Path, points: np.ndarray, colors: np.ndarray) -> None:
    """Writes a binary little-endian PLY with float x, y, z and uchar red, green, blue."""
    vertex = np.empty(
        len(points),
        dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
               ("red", "u1"), ("green", "u1"), ("blue", "u1")],
    )
    vertex["x"], vertex["y"], vertex["z"] = points[:, 0], points[:, 1], points[:, 2]
    vertex["red"], vertex["green"], vertex["blue"] = colors[:, 0], colors[:, 1], colors[:, 2]
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {len(points)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    with open(path, "wb") as file:
        file.write(header.encode("ascii"))
        file.write(vertex.tobytes())


def _check_save(save: Sequence[str]) -> tuple[str, ...]:
    save = tuple(save)
    unknown = [item for item in save if item not in SAVE_FORMATS]
    if unknown or not save:
        raise PredictError(f"--save: expected a non-empty subset of {SAVE_FORMATS}, got {save}")
    return save


def predict_images(
    export_dir: str | os.PathLike,
    inputs: str | Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    save: Sequence[str] = DEFAULT_SAVE,
    batch_size: int = 4,
    color_range: tuple[float, float] | None = None,
    intrinsics: tuple[float, float, float, float] | None = None,
    focal: float | None = None,
    on_error: str = "stop",
    cmap: str = "magma",
    progress: bool = True,
) -> dict[str, Any]:
    """Predicts metric depth for images and writes the requested files.

    Args:
      export_dir: an export written by `damono_jax.export.save_export`.
      inputs: an image path, folder or glob, or a list of image paths.
      output_dir: created if needed; files are named after the input file stems.
      save: subset of `SAVE_FORMATS`.
      batch_size: images per network call (the last batch is padded: one compilation).
      color_range: `(near, far)` metres for the colour map; None = 5th/95th depth
        percentiles of the first batch. Either way one range is used for every image.
      intrinsics: `(fx, fy, cx, cy)` of the original images for the PLY; None = KITTI-like.
      focal: fx (pixels, original image) of the user's camera; rescales depth by
        `(focal / W) / metadata["train_focal_x_normalized"]`. None = no rescaling.
      on_error: "stop" raises on an unreadable image; "skip" logs it and goes on.
      cmap: matplotlib colormap of the colour PNGs.
      progress: show a progress bar.

    Returns:
      A summary: `written` (input -> list of files), `skipped` (input -> reason),
      `color_range`, `focal_scale`, and the rest of what `prediction.json` records.
    """
    save = _check_save(save)
    if on_error not in ("stop", "skip"):
        raise PredictError(f"--on_error: expected 'stop' or 'skip', got {on_error!r}")
    if batch_size < 1:
        raise PredictError(f"--batch_size: must be >= 1, got {batch_size}")
    if color_range is not None and not 0 < color_range[0] < color_range[1]:
        raise PredictError(f"--color_range: need 0 < near < far metres, got {color_range}")
    if intrinsics is not None and (intrinsics[0] <= 0 or intrinsics[1] <= 0):
        raise PredictError(f"--intrinsics: fx and fy must be > 0, got {intrinsics}")
    if focal is not None and focal <= 0:
        raise PredictError(f"--focal: must be > 0 pixels, got {focal}")
    paths = list_inputs(inputs) if isinstance(inputs, str) else [Path(p) for p in inputs]
    if not paths:
        raise PredictError("no input images")
    stems: dict[str, Path] = {}
    for path in paths:
        if path.stem in stems:
            raise PredictError(
                f"{path}: same output name '{path.stem}' as {stems[path.stem]}; "
                "predict them into different --output folders"
            )
        stems[path.stem] = path
    cli.require_folder_or_absent(output_dir, "--output")
    model = inference_model.load_export(export_dir)
    train_focal = model.metadata.get("train_focal_x_normalized")
    if focal is not None and train_focal is None:
        raise PredictError(
            f"--focal: {export_dir} records no train_focal_x_normalized, so depth cannot be "
            "rescaled to another focal length"
        )
    # --output is created only once there is something to write, so a run that stops on
    # its first input leaves nothing behind.
    output_dir = Path(output_dir)

    written: dict[str, list[str]] = {}
    skipped: dict[str, str] = {}
    focal_scales: dict[str, float] = {}
    # The bar closes before an error propagates, so that the error line is the last line.
    with tqdm(total=len(paths), desc="predict", unit="img", disable=not progress) as bar:
        for start in range(0, len(paths), batch_size):
            batch_paths, originals = [], []
            for path in paths[start : start + batch_size]:
                try:
                    originals.append(read_image(path))
                    batch_paths.append(path)
                except PredictError as error:
                    if on_error == "stop":
                        raise
                    logging.warning("skipping %s", error)
                    skipped[str(path)] = str(error)
                    bar.update(1)
            if not batch_paths:
                continue
            network_inputs = batching.stack_padded(
                [model.prepare_image(image) for image in originals], batch_size
            )
            scaled_disparity = model.predict_scaled_disparity(network_inputs)
            finite = np.isfinite(scaled_disparity[: len(batch_paths)]).all(axis=(1, 2))
            if not finite.all():
                raise PredictError(
                    f"{export_dir}: the network's output for {batch_paths[int(np.argmin(finite))]} "
                    "is NaN or Inf; the export's variables are corrupt or diverged"
                )
            depths = []
            for index, image in enumerate(originals):
                height, width = image.shape[:2]
                disparity = evaluation.resize_bilinear(scaled_disparity[index], height, width)
                depth = (1.0 / disparity).astype(np.float32)
                scale = 1.0 if focal is None else (focal / width) / train_focal
                focal_scales[str(batch_paths[index])] = scale
                depths.append(depth * np.float32(scale))
            if color_range is None:
                pixels = np.concatenate([depth.ravel() for depth in depths])
                near, far = np.percentile(pixels, AUTO_RANGE_PERCENTILES)
                color_range = (float(near), float(max(far, near * (1 + 1e-6))))
            output_dir.mkdir(parents=True, exist_ok=True)
            for path, image, depth in zip(batch_paths, originals, depths, strict=True):
                written[str(path)] = _write_outputs(
                    output_dir, path.stem, image, depth, save, color_range, intrinsics, cmap
                )
                bar.update(1)

    summary = {
        "export": str(Path(export_dir).absolute()),
        "units": "metres",
        "save": list(save),
        "color_range": list(color_range) if color_range is not None else None,
        "color_map": f"{cmap} of inverse depth, 1/far..1/near",
        "png16": "uint16 round(depth * 256), depth clipped to [0, 255.996] m",
        "focal": focal,
        "train_focal_x_normalized": train_focal,
        "focal_scale": focal_scales,
        "intrinsics": list(intrinsics) if intrinsics is not None else "kitti-like default",
        "written": written,
        "skipped": skipped,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    files.atomic_write(
        output_dir / "prediction.json",
        lambda p: p.write_text(json.dumps(summary, indent=2) + "\n"),
    )
    return summary


def _write_outputs(
    output_dir: Path,
    stem: str,
    image: np.ndarray,
    depth: np.ndarray,
    save: Sequence[str],
    color_range: tuple[float, float],
    intrinsics: Sequence[float] | None,
    cmap: str,
) -> list[str]:
    written = []
    if "npy" in save:
        path = output_dir / f"{stem}.npy"
        files.atomic_write(path, lambda p: np.save(p, depth.astype(np.float32)))
        written.append(str(path))
    if "png16" in save:
        path = output_dir / f"{stem}_depth16.png"
        encoded = Image.fromarray(depth_to_png16(depth))
        files.atomic_write(path, lambda p: encoded.save(p, format="PNG"))
        written.append(str(path))
    if "color" in save:
        path = output_dir / f"{stem}_color.png"
        near, far = color_range
        rgb = visualization.colorize(1.0 / depth, vmin=1.0 / far, vmax=1.0 / near, cmap=cmap)
        files.atomic_write(path, lambda p: Image.fromarray(rgb).save(p, format="PNG"))
        written.append(str(path))
    if "ply" in save:
        path = output_dir / f"{stem}.ply"
        camera = intrinsics if intrinsics is not None else default_intrinsics(*depth.shape)
        points, colors = point_cloud(depth, image, camera)
        files.atomic_write(path, lambda p: write_ply(p, points, colors))
        written.append(str(path))
    return written


def main(argv: Sequence[str]) -> None:
    """absl entry point: reads the flags below and calls `predict_images`."""
    del argv
    from absl import flags

    values = flags.FLAGS
    save = tuple(item.strip() for item in values.save.split(",") if item.strip())
    color_range = None
    if values.color_range:
        color_range = parse_floats(values.color_range, 2, "color_range")
    intrinsics = None
    if values.intrinsics:
        intrinsics = parse_floats(values.intrinsics, 4, "intrinsics")
    summary = predict_images(
        values.export,
        values.input,
        values.output,
        save=save,
        batch_size=values.batch_size,
        color_range=color_range,
        intrinsics=intrinsics,
        focal=values.focal,
        on_error=values.on_error,
        cmap=values.cmap,
    )
    print(
        f"wrote {len(summary['written'])} predictions to {values.output} "
        f"(skipped {len(summary['skipped'])}); colour range {summary['color_range']} m"
    )


def define_flags() -> None:
    """Defines this CLI's absl flags (idempotent)."""
    from absl import flags

    if "export" in flags.FLAGS:
        return
    flags.DEFINE_string("export", None, "Export directory (damono_jax.export).", required=True)
    flags.DEFINE_string("input", None, "Image file, folder or glob.", required=True)
    flags.DEFINE_string("output", None, "Output folder.", required=True)
    flags.DEFINE_string("save", ",".join(DEFAULT_SAVE), f"Comma list of {SAVE_FORMATS}.")
    flags.DEFINE_integer("batch_size", 4, "Images per network call.")
    flags.DEFINE_string("color_range", None, "near,far metres of the colour map (default: "
                        "5th/95th percentiles of the first batch).")
    flags.DEFINE_string("intrinsics", None, "fx,fy,cx,cy of the original images (PLY).")
    flags.DEFINE_float("focal", None, "fx of your camera (pixels, original image) to rescale "
                       "depth from the training camera.")
    flags.DEFINE_enum("on_error", "stop", ["stop", "skip"], "Unreadable image: stop or skip.")
    flags.DEFINE_string("cmap", "magma", "Matplotlib colormap of the colour PNGs.")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
