"""The target world's camera: how linear radiance becomes an 8-bit image.

White balance and exposure changes, vignetting, optical blur, a random display gamma and
signal-dependent sensor noise. `draw_sensor` draws every random choice of one frame (the
last draws of a target frame); `expose` applies them.
"""

from __future__ import annotations

import dataclasses

import numpy as np


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an (H, W, C) image with reflected borders.

    Hand-written (a few lines of numpy) because scipy is not a dependency of the project.
    """
    radius = max(1, int(np.ceil(3.0 * sigma)))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).astype(image.dtype)
    height, width = image.shape[:2]
    padded = np.pad(image, [(radius, radius), (0, 0), (0, 0)], mode="reflect")
    image = sum(weight * padded[i:i + height] for i, weight in enumerate(kernel))
    padded = np.pad(image, [(0, 0), (radius, radius), (0, 0)], mode="reflect")
    return sum(weight * padded[:, i:i + width] for i, weight in enumerate(kernel))


@dataclasses.dataclass(frozen=True)
class Sensor:
    """The camera of one target frame (every field drawn by `draw_sensor`)."""

    white_balance: np.ndarray  # (3,) per-channel gain around 1
    exposure: float
    vignetting: float  # darkening at the corners
    blur_sigma: float  # pixels
    gamma: float  # display gamma
    shot_noise: float  # variance per unit of signal
    read_noise: float  # standard deviation
    noise: np.ndarray  # (H, W, 3) float32 standard normal


def draw_sensor(rng: np.random.Generator, height: int, width: int) -> Sensor:
    """Draws the camera of one `height` x `width` frame."""
    white_balance = 1.0 + rng.uniform(-0.08, 0.08, size=3)
    exposure = rng.uniform(0.75, 1.3)
    vignetting = rng.uniform(0.2, 0.45)
    blur_sigma = rng.uniform(0.5, 1.1)
    gamma = rng.uniform(1.8, 2.6)
    shot, read = rng.uniform(0.0005, 0.003), rng.uniform(0.005, 0.02)
    noise = rng.standard_normal((height, width, 3), dtype=np.float32)
    return Sensor(white_balance, exposure, vignetting, blur_sigma, gamma, shot, read, noise)


def expose(radiance: np.ndarray, sensor: Sensor) -> np.ndarray:
    """float32 linear radiance (H, W, 3) -> the uint8 image `sensor` records."""
    height, width = radiance.shape[:2]
    rows = (np.arange(height) - (height - 1) / 2) / ((height - 1) / 2)
    cols = (np.arange(width) - (width - 1) / 2) / ((width - 1) / 2)
    radius_sq = (rows[:, None] ** 2 + cols[None, :] ** 2) / 2.0
    vignette = 1.0 - sensor.vignetting * radius_sq
    gain = (sensor.white_balance * sensor.exposure).astype(np.float32)
    radiance = radiance * (gain * vignette[..., None].astype(np.float32))
    radiance = gaussian_blur(radiance, sensor.blur_sigma)
    image = np.power(np.clip(radiance, 0.0, 1.0), np.float32(1.0 / sensor.gamma))
    image += sensor.noise * np.sqrt(np.float32(sensor.shot_noise) * image
                                    + np.float32(sensor.read_noise**2))
    return to_uint8(image)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """An image in [0, 1] (clipped) as uint8, rounded to the nearest level."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
