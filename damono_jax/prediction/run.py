"""The batched prediction loop: `predict_images(export_dir, sources, output_dir)`.

Images are read (`inputs`), resized to the export's input size, batched with padding (one
compilation), and the network's disparity is resized back to each image's own resolution,
bilinearly, then inverted, as in the evaluation. The files written per image are `writers`';
the command line and what each file holds are described in `damono_jax.predict`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from damono_jax import cli, evaluation, files
from damono_jax.errors import PredictError
from damono_jax.inference import batching
from damono_jax.inference import model as inference_model
from damono_jax.prediction import inputs, writers

AUTO_RANGE_PERCENTILES = (5.0, 95.0)


def _check_save(save: Sequence[str]) -> tuple[str, ...]:
    save = tuple(save)
    unknown = [item for item in save if item not in writers.SAVE_FORMATS]
    if unknown or not save:
        raise PredictError(
            f"--save: expected a non-empty subset of {writers.SAVE_FORMATS}, got {save}"
        )
    return save


def predict_images(
    export_dir: str | os.PathLike,
    sources: str | Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    save: Sequence[str] = writers.DEFAULT_SAVE,
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
      sources: an image path, folder or glob, or a list of image paths.
      output_dir: created if needed; files are named after the input file stems.
      save: subset of `writers.SAVE_FORMATS`.
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
    paths = inputs.list_inputs(sources) if isinstance(sources, str) else [Path(p) for p in sources]
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
                    originals.append(inputs.read_image(path))
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
                written[str(path)] = writers.write_outputs(
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
