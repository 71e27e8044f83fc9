"""Inference-only export: an Orbax checkpoint of DepthNet + JSON metadata, and a TF SavedModel.

Layout of an export directory:

```
export_dir/
  metadata.json     model config, input size, depth range, units, class names, source step
  variables/        Orbax StandardCheckpointer tree {"params": ..., "batch_stats": ...}
  saved_model/      optional TF SavedModel (jax2tf), signature `serving_default`:
                    images float32 (B, H, W, 3) in [0, 1] -> {"disparity", "depth"} (B, H, W)
```

`inference.model.load_export(export_dir)` rebuilds `DepthNet` from the metadata alone (no
training config); `inference.saved_model` writes and reads the SavedModel.
Writes are atomic: everything goes to a temporary sibling directory that is renamed into
place at the end, so an error never leaves a partial export behind.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

import damono_jax
from damono_jax import files
from damono_jax.errors import ExportError
from damono_jax.labels import train_id_names
from damono_jax.models import UPSAMPLE_MODES, DepthNet, depth_net_variables
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


def build_metadata(
    config: Any, step: int, *, train_focal_x_normalized: float | None = None
) -> dict[str, Any]:
    """Export metadata from a training config (`config.model`, `config.data`) and a step.

    `train_focal_x_normalized` is fx / width of the source camera, from the source dataset's
    stored intrinsics (training records it in its checkpoints); None records null.
    """
    source = str(config.data.source)
    num_classes = int(config.model.num_classes)
    if num_classes != len(train_id_names()):
        raise ValueError(
            f"config.model.num_classes: {num_classes} has no class names (expected the "
            f"{len(train_id_names())} Cityscapes train ids)"
        )
    return {
        "model": {"architecture": "DepthNet", "upsample_mode": str(config.model.upsample_mode)},
        "input_size": [int(side) for side in config.data.image_size],
        "min_depth": float(config.model.min_depth),
        "max_depth": float(config.model.max_depth),
        "units": "metres",
        "class_names": list(train_id_names()),
        "step": int(step),
        "source_dataset": source,
        "target_dataset": str(config.data.target),
        "variant": str(config.variant),
        "train_dtype": str(config.dtype),
        "train_gt_max_depth": float(config.data.max_depth),
        "train_focal_x_normalized": train_focal_x_normalized,
    }


# ----------------------------------------------------------------------------- atomic writes


def to_host(tree: Any) -> Any:
    """Host numpy copies of every leaf of `tree`."""
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
    with files.atomic_directory(Path(export_dir), overwrite) as temporary:
        _write_export(temporary, host_variables, record)
        if saved_model:
            from damono_jax.inference import model
            from damono_jax.inference import saved_model as tf_saved_model

            tf_saved_model.export_saved_model(
                model.load_export(temporary), temporary / SAVED_MODEL_DIR
            )


def _checked_export(
    variables: Mapping[str, Any], metadata: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validates an export before anything is written; returns host variables and metadata."""
    check_metadata(metadata, "save_export(metadata)")
    host_variables = to_host(depth_net_variables(variables))
    network = DepthNet(upsample_mode=metadata["model"]["upsample_mode"])
    expected = abstract_variables(network, tuple(metadata["input_size"]))
    _check_same_structure(host_variables, expected, "save_export(variables)")
    record = dict(metadata)
    record["format_version"] = EXPORT_FORMAT_VERSION
    record["damono_jax_version"] = damono_jax.__version__
    record["parameter_count"] = int(
        sum(np.size(leaf) for leaf in jax.tree.leaves(host_variables["params"]))
    )
    record[FINGERPRINT_KEY] = variables_fingerprint(host_variables)
    return host_variables, record


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


def _write_export(directory: Path, variables: Any, record: Mapping[str, Any]) -> None:
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(directory / VARIABLES_DIR, variables)
        checkpointer.wait_until_finished()
    (directory / METADATA_FILE).write_text(json.dumps(record, indent=2) + "\n")


def abstract_variables(network: DepthNet, input_size: tuple[int, int]) -> Any:
    """DepthNet's variable shapes at `input_size` (`jax.eval_shape`: nothing is computed)."""
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
