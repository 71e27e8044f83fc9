"""Inference-only export: an Orbax checkpoint of DepthNet + JSON metadata, and a TF SavedModel.

Layout of an export directory:

```
export_dir/
  metadata.json     model config, input size, depth range, units, class names, source step
  variables/        Orbax StandardCheckpointer tree {"params": ..., "batch_stats": ...}
  saved_model/      optional TF SavedModel (jax2tf), signature `serving_default`:
                    images float32 (B, H, W, 3) in [0, 1] -> {"disparity", "depth"} (B, H, W)
```

`load_export(export_dir)` rebuilds `DepthNet` from the metadata alone (no training config).
Writes are atomic: everything goes to a temporary sibling directory that is renamed into
place at the end, so an error never leaves a partial export behind.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

import damono_jax
from damono_jax import geometry
from damono_jax.models import DEPTH_NET_PARTS, UPSAMPLE_MODES, DepthNet, depth_net_variables
from damono_jax.visualization import CITYSCAPES_CLASS_NAMES

EXPORT_FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
VARIABLES_DIR = "variables"
SAVED_MODEL_DIR = "saved_model"
INPUT_SIZE_MULTIPLE = 32
REQUIRED_METADATA_KEYS = (
    "model",
    "input_size",
    "min_depth",
    "max_depth",
    "units",
    "class_names",
    "step",
)
# Horizontal focal length divided by image width (fx / W) of the source cameras, so that
# predict.py can rescale depth for another camera (depth scales with the focal length).
# VKITTI: fx 725 at 1242 px (alopezgit/DESC); KITTI: 0.58 (Monodepth2 K); Cityscapes:
# fx 2262.52 at 2048 px, full width kept by the 205:819 row crop; synthetic_driving renders
# with Monodepth2's normalised K (fx = 0.58 W).
SOURCE_FOCAL_X_NORMALIZED = {
    "vkitti": 725.0 / 1242.0,
    "kitti_eigen": 0.58,
    "cityscapes_depth": 2262.52 / 2048.0,
    "synthetic_driving": 0.58,
}


class ExportError(ValueError):
    """An export directory is missing, incomplete or inconsistent."""


# ----------------------------------------------------------------------------- metadata


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_metadata(metadata: Mapping[str, Any], where: str) -> None:
    """Raises ExportError naming `where` and the key when `metadata` breaks the contract."""
    missing = [key for key in REQUIRED_METADATA_KEYS if key not in metadata]
    if missing:
        raise ExportError(f"{where}: missing metadata keys {missing}")
    model = metadata["model"]
    if not isinstance(model, Mapping) or model.get("upsample_mode") not in UPSAMPLE_MODES:
        raise ExportError(
            f"{where}: key 'model' must be a dict with 'upsample_mode' in {UPSAMPLE_MODES}, "
            f"got {model!r}"
        )
    size = metadata["input_size"]
    if (
        not isinstance(size, Sequence)
        or len(size) != 2
        or not all(isinstance(side, int) and side > 0 for side in size)
        or any(side % INPUT_SIZE_MULTIPLE for side in size)
    ):
        raise ExportError(
            f"{where}: key 'input_size' must be [height, width], positive multiples of "
            f"{INPUT_SIZE_MULTIPLE}, got {size!r}"
        )
    min_depth, max_depth = metadata["min_depth"], metadata["max_depth"]
    if not all(_is_number(value) for value in (min_depth, max_depth)):
        raise ExportError(f"{where}: keys 'min_depth'/'max_depth' must be numbers")
    if not 0 < min_depth < max_depth:
        raise ExportError(
            f"{where}: need 0 < min_depth < max_depth, got {min_depth!r}, {max_depth!r}"
        )
    if metadata["units"] != "metres":
        raise ExportError(f"{where}: key 'units' must be 'metres', got {metadata['units']!r}")
    names = metadata["class_names"]
    if not isinstance(names, Sequence) or not all(isinstance(name, str) for name in names):
        raise ExportError(f"{where}: key 'class_names' must be a list of strings")
    step = metadata["step"]
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ExportError(f"{where}: key 'step' must be a non-negative int, got {step!r}")
    focal = metadata.get("train_focal_x_normalized")
    if focal is not None and (not _is_number(focal) or focal <= 0):
        raise ExportError(
            f"{where}: key 'train_focal_x_normalized' must be a positive number or null, "
            f"got {focal!r}"
        )


def build_metadata(
    config: Any, step: int, *, train_focal_x_normalized: float | None = None
) -> dict[str, Any]:
    """Export metadata from a training config (`config.model`, `config.data`) and a step.

    `train_focal_x_normalized` (fx / width of the source camera) defaults to the value known
    for `config.data.source` (None for unknown sources).
    """
    source = str(config.data.source)
    if train_focal_x_normalized is None:
        train_focal_x_normalized = SOURCE_FOCAL_X_NORMALIZED.get(source.split("/")[0])
    num_classes = int(config.model.num_classes)
    if num_classes != len(CITYSCAPES_CLASS_NAMES):
        raise ValueError(
            f"config.model.num_classes: {num_classes} has no class names (expected the "
            f"{len(CITYSCAPES_CLASS_NAMES)} Cityscapes train ids)"
        )
    return {
        "model": {"architecture": "DepthNet", "upsample_mode": str(config.model.upsample_mode)},
        "input_size": [int(side) for side in config.data.image_size],
        "min_depth": float(config.model.min_depth),
        "max_depth": float(config.model.max_depth),
        "units": "metres",
        "class_names": list(CITYSCAPES_CLASS_NAMES),
        "step": int(step),
        "source_dataset": source,
        "target_dataset": str(config.data.target),
        "variant": str(config.variant),
        "train_dtype": str(config.dtype),
        "train_gt_max_depth": float(config.data.max_depth),
        "train_focal_x_normalized": train_focal_x_normalized,
    }


# ----------------------------------------------------------------------------- atomic writes


@contextmanager
def _atomic_directory(target: Path, overwrite: bool) -> Iterator[Path]:
    """Yields a temporary sibling of `target`, renamed onto `target` if the block succeeds."""
    target = Path(target).absolute()
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target}: exists and is not a directory")
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target}: already exists (pass overwrite=True to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    temporary = target.parent / f".{target.name}.tmp-{token}"
    temporary.mkdir()
    try:
        yield temporary
        if target.exists():
            previous = target.parent / f".{target.name}.old-{token}"
            os.rename(target, previous)
            try:
                os.rename(temporary, target)
            except BaseException:
                os.rename(previous, target)  # put the old export back
                raise
            shutil.rmtree(previous)
        else:
            os.rename(temporary, target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _to_host(tree: Any) -> Any:
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


def save_export(
    export_dir: str | os.PathLike,
    variables: Mapping[str, Any],
    metadata: Mapping[str, Any],
    *,
    overwrite: bool = True,
    saved_model: bool = False,
) -> None:
    """Writes an inference-only export: DepthNet `variables` (Orbax) + `metadata.json`.

    Args:
      export_dir: the directory to create (replaced atomically if it exists and `overwrite`).
      variables: `{"params": {encoder, shared_block, depth_decoder}, "batch_stats":
        {"encoder"}}` (full DAMonodepth variables are reduced with `depth_net_variables`).
      metadata: keys `REQUIRED_METADATA_KEYS` (see `build_metadata`); extra keys are kept.
      saved_model: also write `export_dir/saved_model` (TF SavedModel via jax2tf).
    """
    host_variables, record = _checked_export(variables, metadata)
    with _atomic_directory(Path(export_dir), overwrite) as temporary:
        _write_export(temporary, host_variables, record)
        if saved_model:
            export_saved_model(load_export(temporary), temporary / SAVED_MODEL_DIR)


def _checked_export(
    variables: Mapping[str, Any], metadata: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validates an export before anything is written; returns host variables and metadata."""
    _check_metadata(metadata, "save_export(metadata)")
    host_variables = _to_host(depth_net_variables(variables))
    network = DepthNet(upsample_mode=metadata["model"]["upsample_mode"])
    expected = _abstract_variables(network, tuple(metadata["input_size"]))
    _check_same_structure(host_variables, expected, "save_export(variables)")
    record = dict(metadata)
    record["format_version"] = EXPORT_FORMAT_VERSION
    record["damono_jax_version"] = damono_jax.__version__
    record["parameter_count"] = int(
        sum(np.size(leaf) for leaf in jax.tree.leaves(host_variables["params"]))
    )
    return host_variables, record


def _write_export(directory: Path, variables: Any, record: Mapping[str, Any]) -> None:
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(directory / VARIABLES_DIR, variables)
        checkpointer.wait_until_finished()
    (directory / METADATA_FILE).write_text(json.dumps(record, indent=2) + "\n")


def _abstract_variables(network: DepthNet, input_size: tuple[int, int]) -> Any:
    images = jax.ShapeDtypeStruct((1, *input_size, 3), jnp.float32)
    return jax.eval_shape(lambda x: network.init(jax.random.key(0), x), images)


def _check_same_structure(variables: Any, expected: Any, where: str) -> None:
    got = {jax.tree_util.keystr(path): np.shape(leaf)
           for path, leaf in jax.tree_util.tree_leaves_with_path(variables)}
    want = {jax.tree_util.keystr(path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_leaves_with_path(expected)}
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    wrong = sorted(key for key in set(want) & set(got) if want[key] != got[key])
    if missing or extra or wrong:
        details = []
        if missing:
            details.append(f"missing {missing[:3]}")
        if extra:
            details.append(f"unexpected {extra[:3]}")
        if wrong:
            details.append(
                "shape mismatch " + ", ".join(f"{k}: {got[k]} != {want[k]}" for k in wrong[:3])
            )
        raise ExportError(f"{where}: not DepthNet variables: " + "; ".join(details))


def export_from_train_state(
    config: Any,
    params: Mapping[str, Any],
    batch_stats: Mapping[str, Any],
    export_dir: str | os.PathLike,
    step: int,
    *,
    saved_model: bool = True,
    overwrite: bool = True,
    train_focal_x_normalized: float | None = None,
) -> Path:
    """Exports DepthNet from a training state (what `main.py --mode=export` calls).

    Args:
      config: the training config (reads `config.model`, `config.data`, `variant`, `dtype`).
      params: the full DAMonodepth params (or DepthNet's); only encoder, shared_block and
        depth_decoder are kept.
      batch_stats: the model's batch stats (only `encoder` is kept).
      export_dir: e.g. `WORKDIR/export`; replaced atomically if it exists and `overwrite`.
      step: the training step of the source checkpoint (recorded in the metadata).
      saved_model: also write `export_dir/saved_model` (TF SavedModel via jax2tf).
      train_focal_x_normalized: fx / width of the source camera, see `build_metadata`.

    Returns:
      The export directory.
    """
    metadata = build_metadata(config, step, train_focal_x_normalized=train_focal_x_normalized)
    variables = {"params": params, "batch_stats": batch_stats}
    save_export(export_dir, variables, metadata, overwrite=overwrite, saved_model=saved_model)
    return Path(export_dir)


# ----------------------------------------------------------------------------- loading


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
        _check_metadata(metadata, "InferenceModel(metadata)")
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
    _check_metadata(metadata, str(path))
    return metadata


def load_export(export_dir: str | os.PathLike) -> InferenceModel:
    """Loads an export written by `save_export`; needs no training config."""
    export_dir = Path(export_dir).absolute()
    metadata = read_metadata(export_dir)
    variables_path = export_dir / VARIABLES_DIR
    if not variables_path.is_dir():
        raise ExportError(f"{variables_path}: missing (the Orbax variables of the export)")
    network = DepthNet(upsample_mode=metadata["model"]["upsample_mode"])
    abstract = _abstract_variables(network, tuple(metadata["input_size"]))
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            variables = checkpointer.restore(variables_path, abstract)
    except Exception as error:  # Orbax raises many types; re-raise one naming the path.
        raise ExportError(
            f"{variables_path}: cannot restore DepthNet variables: {error}"
        ) from error
    return InferenceModel(metadata, _to_host(variables))


# ----------------------------------------------------------------------------- SavedModel


def export_saved_model(
    model: InferenceModel, output_dir: str | os.PathLike, *, overwrite: bool = True
) -> None:
    """Writes a TF SavedModel of `model` with jax2tf (batch size polymorphic).

    Signature `serving_default(images: float32 (B, H, W, 3) in [0, 1])` at the export's
    input size returns `{"disparity": sigmoid (B, H, W), "depth": metres (B, H, W)}`; the
    same computation is available as the restored object's `predict(images)`.
    """
    import tensorflow as tf  # Imported here: heavy, and only needed for this format.
    from jax.experimental import jax2tf

    tf.config.set_visible_devices([], "GPU")
    height, width = model.input_size
    min_depth, max_depth = model.min_depth, model.max_depth
    sigmoid_disparity = model.sigmoid_disparity_fn()

    def disparity_and_depth(variables: Any, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        sigma = sigmoid_disparity(variables, images)
        return sigma, geometry.disp_to_depth(sigma, min_depth, max_depth)[1]

    converted = jax2tf.convert(
        disparity_and_depth, polymorphic_shapes=[None, f"(b, {height}, {width}, 3)"]
    )
    module = tf.Module()
    module.variables_tree = tf.nest.map_structure(
        lambda value: tf.Variable(value, trainable=False), model.variables
    )
    spec = tf.TensorSpec([None, height, width, 3], tf.float32, name="images")

    @tf.function(autograph=False, input_signature=[spec])
    def predict(images: tf.Tensor) -> dict[str, tf.Tensor]:
        disparity, depth = converted(module.variables_tree, images)
        return {"disparity": disparity, "depth": depth}

    module.predict = predict
    with _atomic_directory(Path(output_dir), overwrite) as temporary:
        tf.saved_model.save(module, str(temporary), signatures={"serving_default": predict})
        (temporary / METADATA_FILE).write_text(json.dumps(model.metadata, indent=2) + "\n")


def load_saved_model(saved_model_dir: str | os.PathLike) -> Callable[[np.ndarray], dict]:
    """Loads a SavedModel written by `export_saved_model`; returns `fn(images) -> dict`."""
    import tensorflow as tf

    path = Path(saved_model_dir)
    if not (path / "saved_model.pb").is_file():
        raise ExportError(f"{path}: missing saved_model.pb (not a SavedModel directory)")
    loaded = tf.saved_model.load(str(path))

    def predict(images: np.ndarray) -> dict[str, np.ndarray]:
        outputs = loaded.predict(tf.constant(np.asarray(images, np.float32)))
        return {name: value.numpy() for name, value in outputs.items()}

    return predict


__all__ = [
    "DEPTH_NET_PARTS",
    "ExportError",
    "InferenceModel",
    "build_metadata",
    "export_from_train_state",
    "export_saved_model",
    "load_export",
    "load_saved_model",
    "prepare_image",
    "read_metadata",
    "save_export",
]
