"""The training run: `train_and_evaluate(config, workdir)`.

Resumes from the newest complete checkpoint in `workdir/checkpoints` (restored into the
abstract state, so `encoder_init` is not read again), else initialises. Resumes the data stream
at that step, logs with clu (TensorBoard events in `workdir` and the console), evaluates every
`eval_every_steps`, and stops with `NonFiniteLossError` ("step 37: loss term 'depth' is nan")
without saving when a loss becomes NaN or Inf. A second trainer on the same workdir stops at
once with `LockHeldError` naming the first; a dead trainer holds nothing. A newest checkpoint
that does not restore is moved aside and the previous one is used (`checkpointing`). A full
disk stops the run with `DiskFullError` naming the checkpoint (and the newest complete one) or
the workdir.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions

from damono_jax import checkpointing, config_utils, files, locks, schedules
from damono_jax.errors import NonFiniteLossError
from damono_jax.train import monitors, state, step, validation, warm_start

TRAIN_LOCK = ".train.lock.process"


def _checkpoint_meta(config: Any, step_number: int,
                     source_focal_x_normalized: float | None) -> dict[str, Any]:
    return {
        "step": step_number,
        # Global batches consumed; create_train_iterator(..., start_step=...) resumes here.
        "data_position": step_number,
        "config": config.to_dict() if hasattr(config, "to_dict") else dict(config),
        # fx / width of the source camera (its stored intrinsics), for the export's metadata.
        "source_focal_x_normalized": source_focal_x_normalized,
    }


def _json_safe(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {str(k): _json_safe(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [_json_safe(v) for v in tree]
    if isinstance(tree, bool | int | float | str) or tree is None:
        return tree
    return str(tree)


def _initial_state(
    config: Any, model: Any, mesh: Any, checkpointer: checkpointing.TrainCheckpointer
) -> tuple[state.TrainState, int]:
    """big_vision's order: resume > encoder_init > scratch. Returns (state, start step)."""
    restored = checkpointer.restore_latest(state.abstract_train_state(config, model, mesh),
                                           fall_back=True)
    if restored is None:
        return state.create_train_state(config, model, mesh), 0
    start_step = int(restored.meta["data_position"])
    state_step = int(jax.device_get(restored.state.step))
    if state_step != start_step:
        raise ValueError(
            f"{checkpointer.directory}/{restored.step}: state step {state_step} != data "
            f"position {start_step}"
        )
    logging.info("Resumed from %s at step %d.", checkpointer.directory, start_step)
    return restored.state, start_step


def train_and_evaluate(
    config: Any,
    workdir: str,
    *,
    train_iterator_fn: Callable[[Any, int], Iterator[Mapping[str, np.ndarray]]] | None = None,
    eval_dataset_fn: Callable[[Any], Any] | None = None,
) -> state.TrainState:
    """Trains (resuming from `workdir/checkpoints` if possible) and returns the final state.

    `train_iterator_fn(config, start_step)` and `eval_dataset_fn(config)` default to
    `input_pipeline.create_train_iterator` / `create_eval_dataset`; tests pass in-memory ones.
    """
    config_utils.check(config, mode="train", num_devices=jax.device_count())
    warm_start.check_init_from(config)
    return train_checked(config, workdir, train_iterator_fn=train_iterator_fn,
                           eval_dataset_fn=eval_dataset_fn)


def train_checked(
    config: Any,
    workdir: str,
    *,
    train_iterator_fn: Callable[[Any, int], Iterator[Mapping[str, np.ndarray]]] | None = None,
    eval_dataset_fn: Callable[[Any], Any] | None = None,
) -> state.TrainState:
    """`train_and_evaluate` of a config its caller has checked (`config_utils.check`, in
    main.py at its entry)."""
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    # One trainer per workdir (and process index): a restarted job whose old process still
    # runs stops here instead of writing a second trajectory into the same checkpoints.
    lock = os.path.join(workdir, f"{TRAIN_LOCK}{jax.process_index()}")
    # The checkpointer closes on every way out, so a save in flight ends as a complete
    # checkpoint or, on a full disk, as an error naming it (its temporary removed); the
    # summaries' flush on the way out, which fails too, does not hide that error.
    with locks.hold(lock, "trainer"), files.naming_a_full_disk(
            workdir, "the run's logs and summaries"), checkpointing.TrainCheckpointer(
            workdir, config.keep_checkpoints) as checkpointer:
        return _train_and_evaluate(config, workdir, checkpointer, train_iterator_fn,
                                   eval_dataset_fn)


def _train_and_evaluate(
    config: Any,
    workdir: str,
    checkpointer: checkpointing.TrainCheckpointer,
    train_iterator_fn: Callable[[Any, int], Iterator[Mapping[str, np.ndarray]]] | None,
    eval_dataset_fn: Callable[[Any], Any] | None,
) -> state.TrainState:
    source_focal = None
    if train_iterator_fn is None or eval_dataset_fn is None:
        from damono_jax import datasets, input_pipeline  # TF only when it feeds the data

        if train_iterator_fn is None:
            train_iterator_fn = functools.partial(_default_train_iterator, input_pipeline)
            source_focal = datasets.focal_x_normalized(
                config.data.data_dir, config.data.source, config.data.source_split,
                key="config.data.source",
            )
        if eval_dataset_fn is None:
            eval_dataset_fn = functools.partial(default_eval_dataset, input_pipeline)

    writer = metric_writers.create_default_writer(
        workdir, just_logging=jax.process_index() > 0, asynchronous=True
    )
    mesh = state.create_mesh()
    model = state.create_model(config)
    grl_schedule = schedules.grl_schedule(
        config.grl.schedule, num_train_steps=config.num_train_steps, gamma=config.grl.gamma,
        max_scale=config.grl.max_scale, warmup_fraction=config.grl.warmup_fraction,
    )
    train_state, start_step = _initial_state(config, model, mesh, checkpointer)
    if start_step == 0:
        writer.write_hparams(config_utils.flatten_for_hparams(config))

    step_fn = step.make_train_step(config, model, mesh)
    predict_fn = validation.make_predict_fn(model)
    train_iterator = train_iterator_fn(config, start_step)
    report_progress = periodic_actions.ReportProgress(
        num_train_steps=config.num_train_steps, writer=writer,
        every_steps=config.log_every_steps, every_secs=None,
    )
    collapse_monitor = monitors.CollapseMonitor(
        config.grl.collapse_patience, config.log_every_steps
    )
    depth_monitor = monitors.DepthCollapseMonitor(
        config.grl.collapse_patience, config.log_every_steps
    )
    logged_names = monitors.variant_metric_names(config.variant, config.model.output_alignment)
    last_saved = checkpointer.latest_step()
    accumulated: monitors.TrainMetrics | None = None
    pending: tuple[int, dict[str, jax.Array]] | None = None

    def check_pending() -> None:
        nonlocal pending
        if pending is None:
            return
        pending_step, terms = pending
        pending = None
        message = step.first_nonfinite_term(pending_step, jax.device_get(terms))
        if message is not None:
            checkpointer.close()
            writer.flush()
            kept = (
                f"the last good checkpoint (step {last_saved}) in {checkpointer.directory} is "
                "kept" if last_saved is not None else "no checkpoint was saved"
            )
            raise NonFiniteLossError(f"{message}; stopping, {kept}")

    logging.info("Training %s from step %d to %d on %d devices (%d processes).",
                 config.variant, start_step, config.num_train_steps, jax.device_count(),
                 jax.process_count())
    with metric_writers.ensure_flushes(writer):
        for step_number in range(start_step + 1, config.num_train_steps + 1):
            with jax.profiler.StepTraceAnnotation("train", step_num=step_number):
                try:
                    np_batch = next(train_iterator)
                except StopIteration as error:
                    raise RuntimeError(
                        f"step {step_number}: the training data stream ended; it must repeat "
                        "forever"
                    ) from error
                batch = step.shard_batch(np_batch, mesh)
                grl_scale = np.float32(grl_schedule(step_number - 1))
                train_state, step_metrics, terms = step_fn(train_state, batch, grl_scale)
            # Check the previous step while this one runs (one step of latency, no stall).
            check_pending()
            pending = (step_number, terms)
            step_metrics = monitors.TrainMetrics.single_from_model_output(**step_metrics)
            accumulated = (
                step_metrics if accumulated is None else accumulated.merge(step_metrics)
            )
            report_progress(step_number)
            is_last = step_number == config.num_train_steps

            if step_number % config.log_every_steps == 0 or is_last:
                check_pending()
                computed = {k: float(v) for k, v in accumulated.compute().items()}
                accumulated = None
                writer.write_scalars(
                    step_number,
                    {f"train/{k}": v for k, v in computed.items() if k in logged_names},
                )
                depth_monitor.update(step_number, computed["disp_std"], config.model.min_depth,
                                     config.optim.learning_rate)
                if model.use_domain_classifier:
                    collapse_monitor.update(
                        step_number, computed["adv_loss"], computed["domain_acc_source"],
                        computed["domain_acc_target"],
                    )

            if step_number % config.image_log_every_steps == 0 or is_last:
                writer.write_images(
                    step_number,
                    validation.image_summaries(
                        model, train_state, np_batch, min_depth=config.model.min_depth,
                        max_depth=config.model.max_depth, max_gt_depth=config.data.max_depth,
                    ),
                )

            if step_number % config.eval_every_steps == 0 or is_last:
                with report_progress.timed("eval"):
                    eval_metrics = validation.evaluate_on_split(
                        config, predict_fn, train_state, eval_dataset_fn(config)
                    )
                writer.write_scalars(step_number, eval_metrics)

            if step_number % config.checkpoint_every_steps == 0 or is_last:
                check_pending()
                checkpointer.save(
                    step_number, train_state,
                    _json_safe(_checkpoint_meta(config, step_number, source_focal)),
                )
                last_saved = step_number
        check_pending()
    checkpointer.close()
    writer.flush()
    return train_state


def _default_train_iterator(input_pipeline: Any, config: Any, start_step: int) -> Iterator[Any]:
    return input_pipeline.create_train_iterator(
        config.data, batch_size=config.batch_size, seed=config.seed,
        use_target_images=config_utils.uses_target_images(config), start_step=start_step,
    )


def default_eval_dataset(input_pipeline: Any, config: Any) -> Any:
    """The validation examples of `config.data.eval/eval_split` (`num_eval_examples` of them)."""
    max_examples = None if config.num_eval_examples == -1 else config.num_eval_examples
    data = config.data
    return input_pipeline.create_eval_dataset(
        data.data_dir, data.eval, data.eval_split, data.image_size, max_examples
    )
