"""Fourier Domain Adaptation (Yang and Soatto, CVPR 2020): source images in target style.

Each source image keeps its Fourier phase (the scene's structure) and takes the amplitude of
its paired target image at the lowest spatial frequencies (global colour, illumination,
vignetting). The window holds the frequencies `(ky, kx)` with `min(ky, H - ky) < b` and
`min(kx, W - kx) < b`, `b = floor(beta * min(H, W))`, symmetric so that the result stays
real; `beta = 0` leaves the images unchanged. Pure `jax.numpy`, used inside the train step.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def low_frequency_window(height: int, width: int, beta: float) -> jax.Array:
    """(H, W) bool mask of the swapped frequencies (unshifted FFT layout)."""
    if not 0.0 <= beta < 0.5:
        raise ValueError(f"FDA beta: {beta!r} is not in [0, 0.5)")
    half = math.floor(beta * min(height, width))
    rows = jnp.arange(height)
    cols = jnp.arange(width)
    in_rows = jnp.minimum(rows, height - rows) < half
    in_cols = jnp.minimum(cols, width - cols) < half
    return in_rows[:, None] & in_cols[None, :]


def source_in_target_style(source: jax.Array, target: jax.Array, beta: float) -> jax.Array:
    """FDA: (B, H, W, 3) source images with the low-frequency amplitude of `target`.

    `source[i]` takes the amplitude of `target[i % B_t]`; float32 in [0, 1] (clipped).
    """
    if source.ndim != 4 or target.ndim != 4 or source.shape[1:] != target.shape[1:]:
        raise ValueError(
            f"FDA: source {source.shape} and target {target.shape} must be (B, H, W, C) "
            "of one size"
        )
    height, width = source.shape[1:3]
    window = low_frequency_window(height, width, beta)[None, :, :, None]
    pairs = target[jnp.arange(source.shape[0]) % target.shape[0]]
    spectrum = jnp.fft.fft2(source.astype(jnp.float32), axes=(1, 2))
    target_amplitude = jnp.abs(jnp.fft.fft2(pairs.astype(jnp.float32), axes=(1, 2)))
    amplitude = jnp.where(window, target_amplitude, jnp.abs(spectrum))
    styled = jnp.fft.ifft2(amplitude * jnp.exp(1j * jnp.angle(spectrum)), axes=(1, 2)).real
    return jnp.clip(styled, 0.0, 1.0).astype(source.dtype)
