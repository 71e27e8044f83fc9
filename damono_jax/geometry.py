"""Disparity <-> metric depth, with Monodepth2's definition, shared by training and inference.

The network predicts `sigma` in (0, 1). Monodepth2 maps it linearly to a disparity range:
`scaled = 1 / max_depth + (1 / min_depth - 1 / max_depth) * sigma` and `depth = 1 / scaled`.
The depth loss supervises `sigma` with `depth_to_disp(gt)`, the exact inverse, so predictions
convert back to metres with `disp_to_depth`.
"""

from __future__ import annotations

from typing import Any

Array = Any  # jax.Array or np.ndarray: these functions work on both.


def disp_to_depth(sigma: Array, min_depth: float, max_depth: float) -> tuple[Array, Array]:
    """Returns `(scaled_disp, depth)` for a sigmoid output, like Monodepth2's `disp_to_depth`."""
    min_disp = 1.0 / max_depth
    max_disp = 1.0 / min_depth
    scaled_disp = min_disp + (max_disp - min_disp) * sigma
    return scaled_disp, 1.0 / scaled_disp


def depth_to_disp(depth: Array, min_depth: float, max_depth: float) -> Array:
    """Inverse of `disp_to_depth`: the sigmoid-space disparity `sigma` for a metric depth.

    Depths outside `[min_depth, max_depth]` map outside `[0, 1]`; callers mask invalid
    pixels (depth <= 0) before using the result.
    """
    min_disp = 1.0 / max_depth
    max_disp = 1.0 / min_depth
    return (1.0 / depth - min_disp) / (max_disp - min_disp)
