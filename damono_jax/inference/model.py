"""An export, loaded for prediction: `load_export(export_dir)` -> `InferenceModel`."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from damono_jax import export_format, geometry
from damono_jax.models import DepthNet


@functools.cache
def _jitted_sigmoid_disparity(network: DepthNet) -> Callable[[Any, jax.Array], jax.Array]:
    """One jitted function per network configuration, so exports share compilations."""
    return jax.jit(export_format.sigmoid_disparity_fn(network))


class InferenceModel:
    """An exported DepthNet ready for prediction. Compiles once per input shape (jit cache).

    Attributes:
      metadata: the export's metadata dict.
      variables: host copies of the DepthNet variables.
      network: the rebuilt `DepthNet`.
      input_size: `(height, width)` the network was trained at.
      min_depth, max_depth: the `disp_to_depth` range.
    """

    def __init__(self, metadata: Mapping[str, Any], variables: Mapping[str, Any]):
        export_format.check_metadata(metadata, "InferenceModel(metadata)")
        self.metadata = dict(metadata)
        self.network = export_format.network(metadata)
        self.input_size: tuple[int, int] = tuple(metadata["input_size"])
        self.min_depth = float(metadata["min_depth"])
        self.max_depth = float(metadata["max_depth"])
        self.variables = variables
        self._device_variables = jax.device_put(variables)
        self._sigmoid_fn = _jitted_sigmoid_disparity(self.network)

    def sigmoid_disparity_fn(self) -> Callable[[Any, jax.Array], jax.Array]:
        """`fn(variables, images) -> (B, H, W)` sigmoid disparity, pure (for jit/jax2tf)."""
        return export_format.sigmoid_disparity_fn(self.network)

    def _check_images(self, images: Any) -> jax.Array:
        """The dtype is checked here (jit would cast); the shape by the network itself."""
        images = jnp.asarray(images)
        if images.dtype != jnp.float32:
            raise ValueError(f"images: expected float32 in [0, 1], got dtype {images.dtype}")
        return images

    def predict_disparity(self, images: Any) -> np.ndarray:
        """Sigmoid disparity (B, H, W) in (0, 1) for float32 NHWC images in [0, 1].

        H and W must be multiples of 32; use `prepare_image` to resize to `input_size`.
        """
        return np.asarray(self._sigmoid_fn(self._device_variables, self._check_images(images)))

    def predict_scaled_disparity(self, images: Any) -> np.ndarray:
        """Scaled disparity `1 / depth` (B, H, W), Monodepth2's evaluation quantity."""
        sigma = self.predict_disparity(images)
        return np.asarray(geometry.disp_to_depth(sigma, self.min_depth, self.max_depth)[0])

    def predict_depth(self, images: Any) -> np.ndarray:
        """Metric depth (B, H, W) in metres, via `geometry.disp_to_depth`."""
        sigma = self.predict_disparity(images)
        return np.asarray(geometry.disp_to_depth(sigma, self.min_depth, self.max_depth)[1])

    def prepare_image(self, image: np.ndarray) -> np.ndarray:
        """uint8 (H, W, 3) RGB -> float32 (h, w, 3) in [0, 1] at `input_size` (antialiased)."""
        return prepare_image(image, self.input_size)

    @property
    def compiled_shapes(self) -> int:
        """How many input shapes have been compiled so far (shared by equal networks)."""
        return self._sigmoid_fn._cache_size()


def prepare_image(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """uint8 (H, W, 3) RGB -> float32 (size[0], size[1], 3) in [0, 1].

    Resizes with `jax.image.resize(method="linear", antialias=True)` (bilinear with an
    antialiasing kernel when shrinking), then clips to [0, 1].
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"prepare_image: expected uint8 RGB (H, W, 3), got {image.dtype} {image.shape}"
        )
    height, width = int(size[0]), int(size[1])
    as_float = image.astype(np.float32) / 255.0
    if image.shape[:2] == (height, width):
        return as_float
    resized = jax.image.resize(as_float, (height, width, 3), method="linear", antialias=True)
    return np.clip(np.asarray(resized), 0.0, 1.0)


def load_export(export_dir: str | os.PathLike) -> InferenceModel:
    """Loads an export written by `export.save_export`; needs no training config."""
    metadata = export_format.read_metadata(export_dir)
    return InferenceModel(metadata, export_format.read_variables(export_dir, metadata))
