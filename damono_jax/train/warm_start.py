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
from damono_jax.errors import CheckpointError, ExportError

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


# Settings that change what the weights mean without changing their shapes (or, for the
# classifier, with a shape error that would come only after the model is built): a source
# trained with other values stops the run unless `config.init_from_allow_mismatch`.
MEANING_SETTINGS = ("model.upsample_mode", "model.discriminator_features", "data.image_size")


@dataclass(frozen=True)
class Source:
    """What `config.init_from` points at: its variables, a description, and the recorded
    values of `MEANING_SETTINGS` (those the source records)."""

    variables: dict[str, Any]
    description: str
    settings: dict[str, Any]


def _dotted(tree: Any, key: str) -> Any:
    """`tree["a"]["b"]` for `key="a.b"` (a dict or a ConfigDict); None when absent."""
    for part in key.split("."):
        try:
            tree = tree[part]
        except (KeyError, TypeError, AttributeError):
            return None
    return tree


def _comparable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list | tuple) else value


def read_source(path: str) -> Source:
    """The run at `path` (module docstring). A path of none of the three kinds is a
    `ValueError` (a usage error); a source whose files do not read is a `CheckpointError` or
    `ExportError` (a data error), each one line naming it."""
    path = os.path.abspath(path)
    if os.path.isfile(os.path.join(path, export_format.METADATA_FILE)):
        return _export_source(path)
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
    except CheckpointError as error:
        raise CheckpointError(f"config.init_from: {error}") from error
    state = restored.state
    config = restored.meta.get("config", {})
    settings = {key: _dotted(config, key) for key in MEANING_SETTINGS}
    return Source(variables={name: state.get(name, {}) for name in COLLECTIONS},
                  description=f"checkpoint {directory}/{restored.step}",
                  settings={k: v for k, v in settings.items() if v is not None})


def _export_source(path: str) -> Source:
    """An export's DepthNet variables, checked against its recorded fingerprint."""
    try:
        metadata = export_format.read_metadata(path)
        variables = export_format.read_variables(path, metadata)
    except ExportError as error:  # a data error (exit 1): its line starts with the file
        raise ExportError(f"{error} (config.init_from)") from error
    settings = {"model.upsample_mode": _dotted(metadata, "model.upsample_mode"),
                "data.image_size": metadata.get("input_size")}
    return Source(variables=dict(variables), description=f"export {path} (step {metadata['step']})",
                  settings={k: v for k, v in settings.items() if v is not None})


def read_variables(path: str) -> tuple[dict[str, Any], str]:
    """`({"params", "batch_stats"}, description)` of the run at `path` (`read_source`)."""
    source = read_source(path)
    return source.variables, source.description


def mismatches(source: Source, config: Any) -> list[str]:
    """`MEANING_SETTINGS` whose value in `config` differs from the source's, in words."""
    return [f"{source.description} was trained with {key}={source.settings[key]!r}, this run "
            f"has {_dotted(config, key)!r}"
            for key in MEANING_SETTINGS
            if key in source.settings
            and _comparable(source.settings[key]) != _comparable(_dotted(config, key))]


def check_init_from(config: Any) -> None:
    """At a training run's entry, before the model is built or the workdir made: reads
    `config.init_from` (its kind and every file) and compares its recorded settings.

    A difference stops the run with one line naming both values, unless
    `config.init_from_allow_mismatch`; then each difference is logged as a warning.
    """
    if not config.init_from:
        return
    source = read_source(config.init_from)
    differences = mismatches(source, config)
    if differences and not config.get("init_from_allow_mismatch", False):
        raise ValueError(f"config.init_from: {differences[0]}"
                         + (f" (and {len(differences) - 1} more)" if len(differences) > 1
                            else "")
                         + "; set --config.init_from_allow_mismatch=True to start from it "
                         "anyway")
    for difference in differences:
        logging.warning("config.init_from: %s (allowed by init_from_allow_mismatch)",
                        difference)


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
