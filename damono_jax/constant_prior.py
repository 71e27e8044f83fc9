"""The constant-prior floor: one depth map for every image, from the source's training depth.

The map is the per-pixel median of the source training split's ground truth (invalid pixels,
depth 0, left out; a pixel with no valid value anywhere takes the median of all valid
depths). A model that scores worse on a domain than this map, which never looks at the
image, has learned nothing useful for that domain. Every results table of the adaptation
campaign carries it as its floor (docs/adaptation_campaign.md), and `make demo` prints it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from damono_jax import evaluation

# The floor's source frames: the first N of the split (all of synthetic_driving's 1,000;
# a cap keeps memory bounded on large datasets: N maps of H x W float32).
MAX_SOURCE_EXAMPLES = 2000
# The images themselves are never used; the reader still resizes them, to this small size.
_UNUSED_IMAGE_SIZE = (32, 32)


def median_depth_map(depths: Sequence[np.ndarray]) -> np.ndarray:
    """Per-pixel median over `depths` (equal-shaped (H, W) maps in metres, 0 = invalid).

    Pixels without any valid value take the median of every valid value. Raises ValueError
    when the maps differ in shape or hold no valid depth at all.
    """
    if not depths:
        raise ValueError("median_depth_map: no depth maps")
    shapes = {np.shape(d) for d in depths}
    if len(shapes) != 1:
        raise ValueError(f"median_depth_map: depth maps of several shapes {sorted(shapes)}")
    stack = np.stack([np.asarray(d, np.float32) for d in depths])
    valid = stack > 0
    if not valid.any():
        raise ValueError("median_depth_map: no valid (> 0) depth in any map")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels: filled below
        prior = np.nanmedian(np.where(valid, stack, np.nan), axis=0)
    fill = float(np.median(stack[valid]))
    return np.where(np.isfinite(prior), prior, fill).astype(np.float32)


def source_prior(data_dir: str, dataset: str, split: str = "train",
                 max_examples: int = MAX_SOURCE_EXAMPLES) -> np.ndarray:
    """`median_depth_map` of the first `max_examples` depth maps of `dataset`/`split`; maps
    of another size than the first are resized to it (nearest neighbour)."""
    from damono_jax import input_pipeline

    depths = []
    for example in input_pipeline.create_eval_dataset(
        data_dir, dataset, split, _UNUSED_IMAGE_SIZE, max_examples, key="source dataset"
    ):
        depth = np.asarray(example["depth"], np.float32)
        if depths and depth.shape != depths[0].shape:
            depth = _resize_nearest(depth, depths[0].shape)
        depths.append(depth)
    return median_depth_map(depths)


def _resize_nearest(depth: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    rows = (np.arange(shape[0]) * depth.shape[0] // shape[0]).astype(int)
    columns = (np.arange(shape[1]) * depth.shape[1] // shape[1]).astype(int)
    return depth[rows][:, columns]


def evaluate_prior(prior: np.ndarray, data_dir: str, dataset: str, split: str = "test", *,
                   caps: Sequence[int | None] = (80,), crop: str = "none",
                   scaling: str | float = "median") -> dict[int | None, dict[str, Any]]:
    """Scores `prior` as the prediction for every frame of `dataset`/`split` with the KITTI
    evaluator (`evaluation.Evaluator`; the map is resized bilinearly in disparity to each
    ground truth's size, as a network's output is). Returns `{cap: results}`."""
    from damono_jax import input_pipeline

    evaluator = evaluation.Evaluator(caps=caps, crop=crop, scaling=scaling,
                                     gt_source=f"{dataset}/{split}")
    disparity = 1.0 / prior.astype(np.float64)
    for example in input_pipeline.create_eval_dataset(
        data_dir, dataset, split, _UNUSED_IMAGE_SIZE, key="--dataset"
    ):
        evaluator.add(example["depth"], disparity, example.get("name"))
    return evaluator.results()
