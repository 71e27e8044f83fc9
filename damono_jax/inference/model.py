"""An export, loaded for prediction: `load_export(export_dir)` -> `InferenceModel`."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from damono_jax import geometry
from damono_jax.export import (
    FINGERPRINT_KEY,
    METADATA_FILE,
    VARIABLES_DIR,
    ExportError,
    abstract_variables,
    check_metadata,
    to_host,
    variables_fingerprint,
)
from damono_jax.models import DepthNet


def _sigmoid_disparity_fn(network: DepthNet) -> Callable[[Any, jax.Array], jax.Array]:
    def sigmoid_disparity(variables: Any, images: jax.Array) -> jax.Array:
        return network.apply(variables, images, train=False)[0][..., 0]

    return sigmoid_disparity


@functools.cache
def _jitted_sigmoid_disparity(network: DepthNet) -> Callable[[Any, jax.Array], jax.Array]:
    """One jitted function per network configuration, so exports share compilations."""
    return jax.jit(_sigmoid_disparity_fn(network))


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
        check_metadata(metadata, "InferenceModel(metadata)")
        self.metadata = dict(metadata)
        self.network = DepthNet(upsample_mode=metadata["model"]["upsample_mode"])
        self.input_size: tuple[int, int] = tuple(metadata["input_size"])
        self.min_depth = float(metadata["min_depth"])
        self.max_depth = float(metadata["max_depth"])
        self.variables = variables
        self._device_variables = jax.device_put(variables)
        self._sigmoid_fn = _jitted_sigmoid_disparity(self.network)

    def sigmoid_disparity_fn(self) -> Callable[[Any, jax.Array], jax.Array]:
        """`fn(variables, images) -> (B, H, W)` sigmoid disparity, pure (for jit/jax2tf)."""
        return _sigmoid_disparity_fn(self.network)

    def _check_images(self, images: Any) -> jax.Array:
        images = jnp.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images: expected float32 NHWC (B, H, W, 3), got {images.shape}")
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


def read_metadata(export_dir: str | os.PathLike) -> dict[str, Any]:
    """Reads and validates `export_dir/metadata.json`; errors name the file and the problem."""
    path = Path(export_dir) / METADATA_FILE
    if not Path(export_dir).is_dir():
        raise ExportError(f"{export_dir}: export directory does not exist")
    if not path.is_file():
        raise ExportError(f"{path}: missing (not an export directory written by save_export)")
    try:
        metadata = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ExportError(
            f"{path}: line {error.lineno}: invalid JSON ({error.msg})"
        ) from error
    if not isinstance(metadata, dict):
        raise ExportError(f"{path}: expected a JSON object, got {type(metadata).__name__}")
    check_metadata(metadata, str(path))
    return metadata


def load_export(export_dir: str | os.PathLike) -> InferenceModel:
    """Loads an export written by `save_export`; needs no training config."""
    export_dir = Path(export_dir).absolute()
    metadata = read_metadata(export_dir)
    variables_path = export_dir / VARIABLES_DIR
    if not variables_path.is_dir():
        raise ExportError(f"{variables_path}: missing (the Orbax variables of the export)")
    network = DepthNet(upsample_mode=metadata["model"]["upsample_mode"])
    abstract = abstract_variables(network, tuple(metadata["input_size"]))
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            variables = checkpointer.restore(variables_path, abstract)
    except Exception as error:  # Orbax raises many types; re-raise one naming the path.
        raise ExportError(
            f"{variables_path}: cannot restore DepthNet variables: {error}"
        ) from error
    variables = to_host(variables)
    expected = metadata.get(FINGERPRINT_KEY)
    if expected is None:
        logging.warning("%s: records no %s (written before fingerprints); its variables are "
                        "not verified", export_dir / METADATA_FILE, FINGERPRINT_KEY)
    elif variables_fingerprint(variables) != expected:
        raise ExportError(
            f"{variables_path}: the variables do not match {FINGERPRINT_KEY} in "
            f"{METADATA_FILE}; the export is corrupt (export it again)"
        )
    return InferenceModel(metadata, variables)


# ----------------------------------------------------------------------------- SavedModel
