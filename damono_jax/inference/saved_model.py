"""The export as a TF SavedModel (jax2tf): written into `EXPORT/saved_model`, read back."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from damono_jax import files, geometry
from damono_jax.errors import ExportError
from damono_jax.export_format import METADATA_FILE, SAVED_MODEL_DIR
from damono_jax.inference.model import InferenceModel, load_export


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

    from damono_jax import datasets

    datasets.hide_gpus_from_tf()
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
    with files.atomic_directory(Path(output_dir), overwrite) as temporary:
        tf.saved_model.save(module, str(temporary), signatures={"serving_default": predict})
        (temporary / METADATA_FILE).write_text(json.dumps(model.metadata, indent=2) + "\n")


def write_into_export(export_dir: Path) -> None:
    """Adds `export_dir/saved_model` to an export (`export.save_export(also_write=...)`)."""
    export_saved_model(load_export(export_dir), export_dir / SAVED_MODEL_DIR)


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
