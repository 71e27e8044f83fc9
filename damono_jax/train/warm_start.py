"""`config.init_from`: start a run from the weights of another run.

The source is a training workdir (its newest checkpoint), one checkpoint folder
(`WORKDIR/checkpoints/<step>`) or an export (`save_export`). Every parameter and BatchNorm
statistic that the new model has and the source has too is copied; the rest keeps its fresh
initialisation, so heads the source lacks (the semantic decoder, the domain classifiers of
an adaptation run after a source-only one) start anew. The optimiser always starts anew. A
leaf with the same path and another shape is an error, not a silent re-initialisation.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from absl import logging
from flax import traverse_util

from damono_jax import checkpointing, export_format
from damono_jax.errors import ExportError

COLLECTIONS = ("params", "batch_stats")


@dataclass(frozen=True)
class WarmStart:
    """What `merge_variables` did: the merged variables and, per top-level subtree
    (`params/encoder`, ...), where it came from."""

    variables: dict[str, Any]
    loaded: tuple[str, ...]
    fresh: tuple[str, ...]
    partial: tuple[str, ...]
    ignored: tuple[str, ...]
    source: str


def read_variables(path: str) -> tuple[dict[str, Any], str]:
    """`({"params", "batch_stats"}, description)` of the run at `path` (module docstring)."""
    path = os.path.abspath(path)
    if os.path.isfile(os.path.join(path, export_format.METADATA_FILE)):
        return _export_variables(path)
    if os.path.isdir(os.path.join(path, checkpointing.CHECKPOINT_SUBDIR)):
        directory, step = os.path.join(path, checkpointing.CHECKPOINT_SUBDIR), None
    elif os.path.isdir(os.path.join(path, "state")) and os.path.basename(path).isdigit():
        directory, step = os.path.dirname(path), int(os.path.basename(path))
    elif os.path.basename(path) == checkpointing.CHECKPOINT_SUBDIR and os.path.isdir(path):
        directory, step = path, None
    else:
        raise ValueError(
            f"config.init_from: {path} is neither an export (no {export_format.METADATA_FILE}), a "
            f"training workdir (no {checkpointing.CHECKPOINT_SUBDIR}/) nor a checkpoint folder"
        )
    try:
        restored = checkpointing.read_raw(directory, step)
    except checkpointing.CheckpointError as error:
        raise ValueError(f"config.init_from: {error}") from error
    state = restored.state
    variables = {name: state.get(name, {}) for name in COLLECTIONS}
    return variables, f"checkpoint {directory}/{restored.step}"


def _export_variables(path: str) -> tuple[dict[str, Any], str]:
    """An export's DepthNet variables, checked against its recorded fingerprint."""
    try:
        metadata = export_format.read_metadata(path)
        variables = export_format.read_variables(path, metadata)
    except ExportError as error:
        raise ValueError(f"config.init_from: {error}") from error
    return dict(variables), f"export {path} (step {metadata['step']})"


def merge_variables(fresh: Mapping[str, Any], loaded: Mapping[str, Any], source: str
                    ) -> WarmStart:
    """`fresh` with every leaf that `loaded` has at the same path (same shape) replaced."""
    merged: dict[str, Any] = {}
    loaded_parts: set[str] = set()
    fresh_parts: set[str] = set()
    ignored_parts: set[str] = set()
    for collection in fresh:
        fresh_flat = traverse_util.flatten_dict(dict(fresh[collection]))
        source_flat = (traverse_util.flatten_dict(dict(loaded[collection]))
                       if collection in loaded and loaded[collection] else {})
        out = {}
        for key, leaf in fresh_flat.items():
            part = f"{collection}/{key[0]}"
            if key not in source_flat:
                out[key] = leaf
                fresh_parts.add(part)
                continue
            value = np.asarray(source_flat[key])
            if value.shape != tuple(np.shape(leaf)):
                raise ValueError(
                    f"config.init_from: {source}: {collection}/{'/'.join(map(str, key))} has "
                    f"shape {value.shape} there but {tuple(np.shape(leaf))} in this model"
                )
            out[key] = value.astype(np.asarray(leaf).dtype)
            loaded_parts.add(part)
        for key in source_flat:
            if key not in fresh_flat:
                ignored_parts.add(f"{collection}/{key[0]}")
        merged[collection] = traverse_util.unflatten_dict(out)
    return WarmStart(
        variables=merged,
        loaded=tuple(sorted(loaded_parts - fresh_parts)),
        fresh=tuple(sorted(fresh_parts - loaded_parts)),
        partial=tuple(sorted(loaded_parts & fresh_parts)),
        ignored=tuple(sorted(ignored_parts - loaded_parts - fresh_parts)),
        source=source,
    )


def warm_start(path: str, fresh: Mapping[str, Any]) -> WarmStart:
    """Reads `path` and merges it into `fresh`; logs which subtrees came from where."""
    loaded, source = read_variables(path)
    result = merge_variables(fresh, loaded, source)
    if not result.loaded:
        raise ValueError(f"config.init_from: {source} shares no parameter with this model")
    logging.info("init_from %s: loaded %s; initialised fresh %s; partly loaded %s; not used "
                 "%s", source, ", ".join(result.loaded), ", ".join(result.fresh) or "nothing",
                 ", ".join(result.partial) or "nothing", ", ".join(result.ignored) or "nothing")
    return result
