"""`--mode=eval` and `--mode=export`: the newest training checkpoint, evaluated or exported.

A checkpoint is restored into `jax.eval_shape` shapes: nothing is initialised, so a run
started from a torchvision `.pth` exports and evaluates after that file is gone.
"""

from __future__ import annotations

import os
from typing import Any

import jax
from absl import logging

from damono_jax import checkpointing, export, files
from damono_jax.inference import saved_model
from damono_jax.train import state, validation


def restore_latest_state(config: Any, workdir: str) -> checkpointing.RestoredCheckpoint:
    """The newest complete checkpoint in `workdir/checkpoints`, a replicated `TrainState`.

    Restored into `state.abstract_train_state`: nothing is initialised and
    `config.model.encoder_init` is not read. Raises FileNotFoundError when the workdir holds
    no complete checkpoint.
    """
    mesh = state.create_mesh()
    abstract = state.abstract_train_state(config, state.create_model(config), mesh)
    with checkpointing.TrainCheckpointer(workdir, config.keep_checkpoints) as checkpointer:
        restored = checkpointer.restore_latest(abstract)
        if restored is None:
            raise FileNotFoundError(
                f"{checkpointer.directory}: no complete checkpoint to restore; train first "
                "with --mode=train"
            )
    return restored


def evaluate_checkpoint(config: Any, workdir: str) -> dict[str, float]:
    """Validation metrics of the newest checkpoint on `config.data.eval/eval_split`.

    Also writes them to `workdir/eval_<dataset>_<split>_step<N>.json` (atomically).
    """
    from damono_jax import input_pipeline
    from damono_jax.train.loop import default_eval_dataset

    restored = restore_latest_state(config, workdir)
    train_state, step = restored.state, restored.step
    model = state.create_model(config)
    results = validation.evaluate_on_split(
        config, validation.make_predict_fn(model), train_state,
        default_eval_dataset(input_pipeline, config),
    )
    name = config.data.eval.replace("/", "_")
    path = os.path.join(os.path.abspath(workdir),
                        f"eval_{name}_{config.data.eval_split}_step{step}.json")
    files.atomic_write_json(path, {"step": step, **results})
    logging.info("Step %d on %s/%s: %s (written to %s)", step, config.data.eval,
                 config.data.eval_split, results, path)
    return results


def export_checkpoint(config: Any, workdir: str) -> str:
    """Exports the newest checkpoint's DepthNet to `workdir/export`, with its SavedModel."""
    restored = restore_latest_state(config, workdir)
    train_state, step = restored.state, restored.step
    source_focal = restored.meta.get("source_focal_x_normalized")
    if source_focal is None:
        logging.warning("%s: checkpoint %d records no source camera; the export's "
                        "train_focal_x_normalized is null (predict --focal will refuse)",
                        workdir, step)
    export_dir = os.path.join(os.path.abspath(workdir), "export")
    export.export_from_train_state(
        config, jax.device_get(train_state.params), jax.device_get(train_state.batch_stats),
        export_dir, step, train_focal_x_normalized=source_focal,
        also_write=saved_model.write_into_export,
    )
    logging.info("Exported step %d to %s.", step, export_dir)
    return export_dir
