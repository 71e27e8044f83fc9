"""The export's on-disk contract, shared by its writer (`export`) and its readers.

Layout of an export directory:

```
export_dir/
  metadata.json     model config, input size, depth range, units, class names, source step
  variables/        Orbax StandardCheckpointer tree {"params": ..., "batch_stats": ...}
  saved_model/      optional TF SavedModel (`inference.saved_model`)
```

This module holds what both sides must agree on: the file names, the metadata keys and
their check, the network the metadata describes and the function it serves, the variables'
shapes and their fingerprint. `read_metadata` and `read_variables` read an export back;
`export.save_export` writes one; `inference.model.load_export` turns one into a model.
"""

from __future__ import annotations

import hashlib
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

from damono_jax.errors import ExportError
from damono_jax.models import UPSAMPLE_MODES, DepthNet
from damono_jax.models.da_monodepth import INPUT_SIZE_MULTIPLE

EXPORT_FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
VARIABLES_DIR = "variables"
SAVED_MODEL_DIR = "saved_model"
FINGERPRINT_KEY = "variables_sha256"
REQUIRED_METADATA_KEYS = (
    "model",
    "input_size",
    "min_depth",
    "max_depth",
    "units",
    "class_names",
    "step",
)


# ----------------------------------------------------------------------------- metadata


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_metadata(metadata: Mapping[str, Any], where: str) -> None:
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


def read_metadata(export_dir: str | os.PathLike) -> dict[str, Any]:
    """Reads and checks `export_dir/metadata.json`; errors name the file and the problem."""
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


# ----------------------------------------------------------------------------- the network


def network(metadata: Mapping[str, Any]) -> DepthNet:
    """The `DepthNet` that checked `metadata` describes."""
    return DepthNet(upsample_mode=metadata["model"]["upsample_mode"])


def sigmoid_disparity_fn(depth_net: DepthNet) -> Callable[[Any, jax.Array], jax.Array]:
    """What an export serves: `fn(variables, images (B, H, W, 3)) -> (B, H, W)` sigmoid
    disparity, pure (for jit, jax2tf and jax2onnx)."""

    def sigmoid_disparity(variables: Any, images: jax.Array) -> jax.Array:
        return depth_net.apply(variables, images, train=False)[0][..., 0]

    return sigmoid_disparity


# ----------------------------------------------------------------------------- variables


def to_host(tree: Any) -> Any:
    """Host numpy copies of every leaf of `tree`."""
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


def abstract_variables(depth_net: DepthNet, input_size: tuple[int, int]) -> Any:
    """DepthNet's variable shapes at `input_size` (`jax.eval_shape`: nothing is computed)."""
    images = jax.ShapeDtypeStruct((1, *input_size, 3), jnp.float32)
    return jax.eval_shape(lambda x: depth_net.init(jax.random.key(0), x), images)


def variables_fingerprint(variables: Any) -> str:
    """sha256 over every leaf's path, dtype, shape and bytes, in path order (hex)."""
    digest = hashlib.sha256()
    leaves = sorted(
        (jax.tree_util.keystr(path), np.ascontiguousarray(leaf))
        for path, leaf in jax.tree_util.tree_leaves_with_path(variables)
    )
    for key, leaf in leaves:
        digest.update(f"{key}|{leaf.dtype.str}|{leaf.shape}|".encode())
        digest.update(leaf.tobytes())
    return digest.hexdigest()


def check_depth_net_variables(variables: Any, metadata: Mapping[str, Any], where: str) -> None:
    """Raises ExportError naming `where` unless `variables` has exactly the leaves and shapes
    of the network that `metadata` describes."""
    expected = abstract_variables(network(metadata), tuple(metadata["input_size"]))
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


def read_variables(export_dir: str | os.PathLike, metadata: Mapping[str, Any]) -> Any:
    """The export's DepthNet variables on the host, checked against its fingerprint.

    `metadata` is `read_metadata(export_dir)`. An export written before fingerprints is
    read with a warning; one whose variables do not match its fingerprint is an error.
    """
    export_dir = Path(export_dir).absolute()
    variables_path = export_dir / VARIABLES_DIR
    if not variables_path.is_dir():
        raise ExportError(f"{variables_path}: missing (the Orbax variables of the export)")
    abstract = abstract_variables(network(metadata), tuple(metadata["input_size"]))
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
    return variables
