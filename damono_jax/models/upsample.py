"""Integer-factor bilinear upsampling written as weighted sums of shifted copies.

Equals `jax.image.resize(x, ..., "linear")` and torch `F.interpolate(mode="bilinear",
align_corners=False)` for integer factors (to float32 rounding), but without the dense
(out x in) interpolation matrices `jax.image.resize` contracts with, so neither the CPU
time nor XLA's FLOP count is spent on multiplying by mostly-zero matrices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _upsample_axis(x: jax.Array, factor: int, axis: int) -> jax.Array:
    """Upsamples `x` by `factor` along `axis` (half-pixel centres, edge samples clamped).

    Output index `factor * i + r` sits at source coordinate `i + d_r`, `d_r = (r + 0.5) /
    factor - 0.5`; it blends `x[i]` with `x[i + 1]` (d_r >= 0) or `x[i - 1]` (d_r < 0).
    """
    if factor == 1:
        return x
    size = x.shape[axis]
    first = jax.lax.slice_in_dim(x, 0, 1, axis=axis)
    last = jax.lax.slice_in_dim(x, size - 1, size, axis=axis)
    previous = jnp.concatenate([first, jax.lax.slice_in_dim(x, 0, size - 1, axis=axis)], axis)
    following = jnp.concatenate([jax.lax.slice_in_dim(x, 1, size, axis=axis), last], axis)
    phases = []
    for phase in range(factor):
        offset = (phase + 0.5) / factor - 0.5
        if offset >= 0:
            phases.append((1.0 - offset) * x + offset * following)
        else:
            phases.append((1.0 + offset) * x - offset * previous)
    stacked = jnp.stack(phases, axis=axis + 1)
    shape = list(x.shape)
    shape[axis] = size * factor
    return stacked.reshape(shape)


def upsample_bilinear(x: jax.Array, factor_h: int, factor_w: int) -> jax.Array:
    """Bilinear upsampling of NHWC `x` by integer factors (`align_corners=False`)."""
    for name, factor in (("factor_h", factor_h), ("factor_w", factor_w)):
        if not isinstance(factor, int) or factor < 1:
            raise ValueError(f"upsample_bilinear: {name} must be a positive int, got {factor!r}")
    return _upsample_axis(_upsample_axis(x, factor_h, 1), factor_w, 2)


def upsample_bilinear_to(x: jax.Array, height: int, width: int) -> jax.Array:
    """Bilinear upsampling of NHWC `x` to (height, width), integer multiples of its size."""
    _, in_height, in_width, _ = x.shape
    if height % in_height or width % in_width:
        raise ValueError(
            f"upsample_bilinear_to: {height}x{width} is not an integer multiple of the input "
            f"{in_height}x{in_width}"
        )
    return upsample_bilinear(x, height // in_height, width // in_width)
