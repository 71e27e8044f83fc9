"""Writes inference-only exports: DepthNet's variables (Orbax) + `metadata.json`.

The format is `export_format`'s. Writes are atomic: everything goes to a temporary sibling
directory that is renamed into place at the end, so an error never leaves a partial export
behind (a full disk ends in `DiskFullError` naming the export). Other formats of the same
network (`inference.saved_model`, the TF SavedModel) are written into that temporary directory
by the caller's `also_write`, so they are part of the same atomic write.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

import damono_jax
from damono_jax import files
from damono_jax.export_format import (
    EXPORT_FORMAT_VERSION,
    FINGERPRINT_KEY,
    METADATA_FILE,
    VARIABLES_DIR,
    check_depth_net_variables,
    check_metadata,
    to_host,
    variables_fingerprint,
)
from damono_jax.labels import train_id_names
from damono_jax.models import depth_net_variables

# Writes one more format into a temporary export directory that already holds
# `metadata.json` and `variables/` (e.g. `inference.saved_model.write_into_export`).
AlsoWrite = Callable[[Path], None]


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


def save_export(
    export_dir: str | os.PathLike,
    variables: Mapping[str, Any],
    metadata: Mapping[str, Any],
    *,
    overwrite: bool = True,
    also_write: AlsoWrite | None = None,
) -> None:
    """Writes an inference-only export: DepthNet `variables` (Orbax) + `metadata.json`.

    Args:
      export_dir: the directory to create (replaced atomically if it exists and `overwrite`).
      variables: `{"params": {encoder, shared_block, depth_decoder}, "batch_stats":
        {"encoder"}}` (full DAMonodepth variables are reduced with `depth_net_variables`).
      metadata: keys `REQUIRED_METADATA_KEYS` (see `build_metadata`); extra keys are kept.
      also_write: called with the temporary directory once the export is in it, to add
        another format (`inference.saved_model.write_into_export`) to the same atomic write.
    """
    host_variables, record = _checked_export(variables, metadata)
    with files.naming_a_full_disk(export_dir, "the export"), files.atomic_directory(
            Path(export_dir), overwrite) as temporary:
        _write_export(temporary, host_variables, record)
        if also_write is not None:
            also_write(temporary)


def _checked_export(
    variables: Mapping[str, Any], metadata: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validates an export before anything is written; returns host variables and metadata."""
    check_metadata(metadata, "save_export(metadata)")
    host_variables = to_host(depth_net_variables(variables))
    check_depth_net_variables(host_variables, metadata, "save_export(variables)")
    record = dict(metadata)
    record["format_version"] = EXPORT_FORMAT_VERSION
    record["damono_jax_version"] = damono_jax.__version__
    record["parameter_count"] = int(
        sum(np.size(leaf) for leaf in jax.tree.leaves(host_variables["params"]))
    )
    record[FINGERPRINT_KEY] = variables_fingerprint(host_variables)
    return host_variables, record


def _write_export(directory: Path, variables: Any, record: Mapping[str, Any]) -> None:
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(directory / VARIABLES_DIR, variables)
        checkpointer.wait_until_finished()
    (directory / METADATA_FILE).write_text(json.dumps(record, indent=2) + "\n")


def export_from_train_state(
    config: Any,
    params: Mapping[str, Any],
    batch_stats: Mapping[str, Any],
    export_dir: str | os.PathLike,
    step: int,
    *,
    overwrite: bool = True,
    train_focal_x_normalized: float | None = None,
    also_write: AlsoWrite | None = None,
) -> Path:
    """Exports DepthNet from a training state (what `main.py --mode=export` calls).

    Args:
      config: the training config (reads `config.model`, `config.data`, `variant`, `dtype`).
      params: the full DAMonodepth params (or DepthNet's); only encoder, shared_block and
        depth_decoder are kept.
      batch_stats: the model's batch stats (only `encoder` is kept).
      export_dir: e.g. `WORKDIR/export`; replaced atomically if it exists and `overwrite`.
      step: the training step of the source checkpoint (recorded in the metadata).
      train_focal_x_normalized: fx / width of the source camera, see `build_metadata`.
      also_write: another format written into the same atomic write, see `save_export`.

    Returns:
      The export directory.
    """
    metadata = build_metadata(config, step, train_focal_x_normalized=train_focal_x_normalized)
    variables = {"params": params, "batch_stats": batch_stats}
    save_export(export_dir, variables, metadata, overwrite=overwrite, also_write=also_write)
    return Path(export_dir)
