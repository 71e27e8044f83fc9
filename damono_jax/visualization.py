"""Colour maps for depth/disparity and Cityscapes train-id labels (uint8 RGB images)."""

from __future__ import annotations

import matplotlib
import numpy as np

from damono_jax.labels import IGNORE_LABEL, NUM_CLASSES, train_id_colors, train_id_names

# (256, 3) uint8 lookup table: train ids 0..18 -> Cityscapes colours, others black.
CITYSCAPES_PALETTE = np.zeros((256, 3), dtype=np.uint8)
CITYSCAPES_PALETTE[:NUM_CLASSES] = train_id_colors()
CITYSCAPES_CLASS_NAMES = train_id_names()


def colorize(
    array: np.ndarray,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "magma",
) -> np.ndarray:
    """Maps a 2-D array to a uint8 (H, W, 3) image with a matplotlib colormap.

    Values are normalised linearly from `[vmin, vmax]` to `[0, 1]` and clipped. `vmin`/`vmax`
    default to the min/max of the finite values; pass both to keep one range across frames
    (no flicker in videos). Non-finite values are drawn black.
    """
    array = np.asarray(array, dtype=np.float64)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(f"colorize: expected a 2-D (H, W) array, got shape {array.shape}")
    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError as error:
        raise ValueError(f"colorize: unknown matplotlib colormap {cmap!r}") from error
    finite = np.isfinite(array)
    if vmin is None or vmax is None:
        if not finite.any():
            raise ValueError("colorize: no finite values to derive vmin/vmax from")
        vmin = float(array[finite].min()) if vmin is None else vmin
        vmax = float(array[finite].max()) if vmax is None else vmax
    if not (np.isfinite(vmin) and np.isfinite(vmax)) or vmax < vmin:
        raise ValueError(f"colorize: need finite vmin <= vmax, got vmin={vmin}, vmax={vmax}")
    span = vmax - vmin
    normalized = np.zeros_like(array) if span == 0 else (array - vmin) / span
    normalized = np.clip(np.where(finite, normalized, 0.0), 0.0, 1.0)
    rgb = colormap(normalized, bytes=True)[..., :3]
    rgb[~finite] = 0
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def colorize_labels(labels: np.ndarray) -> np.ndarray:
    """Maps Cityscapes train ids (0..18, 255 = ignore, drawn black) to uint8 (H, W, 3) colours."""
    labels = np.asarray(labels)
    if labels.ndim == 3 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    if labels.ndim != 2:
        raise ValueError(f"colorize_labels: expected a 2-D (H, W) array, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"colorize_labels: expected integer train ids, got dtype {labels.dtype}")
    invalid = ((labels < 0) | (labels >= NUM_CLASSES)) & (labels != IGNORE_LABEL)
    if invalid.any():
        bad = np.unique(labels[invalid])[:5].tolist()
        raise ValueError(
            f"colorize_labels: train ids must be in 0..{NUM_CLASSES - 1} or "
            f"{IGNORE_LABEL}, found {bad}"
        )
    return CITYSCAPES_PALETTE[labels.astype(np.int64)]
