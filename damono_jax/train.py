"""DA-Monodepth training: state, the data-parallel jit train step, and the training loop.

One `jax.jit` step over a `Mesh` of all devices with axis "data": parameters, batch statistics
and optimiser state are replicated, every batch array is sharded along its first axis. Under
jit, Flax BatchNorm then computes its statistics over the global batch (no `axis_name`). The
state is donated. The GRL scale is a traced argument, so its schedule never recompiles.

`train_and_evaluate(config, workdir)` is the whole run: it restores the newest complete
checkpoint in `workdir/checkpoints` (if any), resumes the data stream at that step, logs with
clu (TensorBoard events in `workdir` and the console), evaluates every `eval_every_steps`, and
stops with `NonFiniteLossError` ("step 37: loss term 'depth' is nan") without saving when a
loss becomes NaN or Inf.
"""


import functools
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import metric_writers, metrics, periodic_actions
from flax import traverse_util
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from damono_jax import checkpointing, config_utils, fda, geometry, losses, models, schedules

# Loss terms checked for NaN/Inf after every step, in the order they are reported.
CHECKED_TERMS = ("depth", "seg", "adv", "total")
# Within this distance of ln 2 the adversarial loss counts as "classifier at chance".
ADV_LOSS_COLLAPSE_TOLERANCE = 0.01
# The classifier counts as "winning" at this mean domain accuracy.
DOMAIN_ACCURACY_COLLAPSE = 0.99
# Below this mean per-image std of the scale-0 sigmoid disparity the depth output is constant.
DEPTH_COLLAPSE_STD = 1e-5
# Images per image summary.
NUM_SUMMARY_IMAGES = 4
# Images per network call during validation (the last batch is zero-padded).
EVAL_BATCH_SIZE = 8
DOMAIN_CLASSIFIER = "domain_classifier"


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or Inf; training stopped without saving that state."""


class TrainState(train_state.TrainState):
    """Flax train state plus BatchNorm statistics and the RNG key (all checkpointed)."""

    batch_stats: Any
    rng: jax.Array


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
    """Per-step training metrics, averaged over each logging interval.

    `metrics.Std` is deliberately absent: it fails on jax 0.10 (clu 0.0.12 `jnp.clip(a_min=)`).
    """

    loss: metrics.Average.from_output("loss")
    depth_loss: metrics.Average.from_output("depth_loss")
    seg_loss: metrics.Average.from_output("seg_loss")
    adv_loss: metrics.Average.from_output("adv_loss")
    domain_acc_source: metrics.Average.from_output("domain_acc_source")
    domain_acc_target: metrics.Average.from_output("domain_acc_target")
    disp_std: metrics.Average.from_output("disp_std")
    grl_scale: metrics.LastValue.from_output("grl_scale")
    learning_rate: metrics.LastValue.from_output("learning_rate")


def variant_metric_names(variant: str) -> tuple[str, ...]:
    """The metric names that mean something for a variant (others are always 0)."""
    flags = config_utils.variant_flags(variant)
    names = ["loss", "depth_loss", "disp_std", "learning_rate"]
    if flags["use_semantic"]:
        names.append("seg_loss")
    if flags["use_domain_classifier"]:
        names += ["adv_loss", "domain_acc_source", "domain_acc_target", "grl_scale"]
    return tuple(names)


# ----------------------------------------------------------------------------- model, optimiser


def resolve_weight_gradient(config: Any, backend: str | None = None) -> str:
    """`config.conv_weight_gradient`, with "auto" made concrete for `backend`.

    "auto" is "band" on CPU, where XLA's own weight-gradient convolutions are slow
    (BENCHMARKS.md, section "Convolution weight gradients on CPU"), and "xla" on GPU/TPU,
    where no faster formulation has been measured.
    """
    choice = config.conv_weight_gradient
    if choice != "auto":
        return choice
    backend = backend or jax.default_backend()
    return "band" if backend == "cpu" else "xla"


def create_model(config: Any) -> models.DAMonodepth:
    """The DA-Monodepth model of `config.variant`, compute dtype `config.dtype` and the
    weight-gradient formulation of `config.conv_weight_gradient`."""
    return models.DAMonodepth.from_config(
        config.model, config.variant, config.dtype, resolve_weight_gradient(config)
    )


def create_optimizer(config: Any) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Adam with Monodepth2's step decay, optional discriminator LR and gradient clipping.

    Returns the transformation and the main learning-rate schedule (for logging). With
    `config.optim.discriminator_learning_rate` set, the `domain_classifier` subtree gets its
    own Adam (same betas, same step decay) through `optax.multi_transform`.
    """
    lr_schedule = schedules.create_learning_rate_schedule(config.optim.learning_rate, config)

    def adam(schedule: optax.Schedule) -> optax.GradientTransformation:
        return optax.adam(schedule, b1=config.optim.b1, b2=config.optim.b2)

    discriminator_lr = config.optim.discriminator_learning_rate
    if discriminator_lr is None:
        tx = adam(lr_schedule)
    else:
        discriminator_schedule = schedules.create_learning_rate_schedule(discriminator_lr, config)

        def labels(params: Any) -> Any:
            return traverse_util.path_aware_map(
                lambda path, _: (
                    "discriminator" if path[0].startswith(DOMAIN_CLASSIFIER) else "default"
                ),
                params,
            )

        tx = optax.multi_transform(
            {"default": adam(lr_schedule), "discriminator": adam(discriminator_schedule)},
            labels,
        )
    if config.optim.grad_clip_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(config.optim.grad_clip_norm), tx)
    return tx, lr_schedule


def create_mesh(devices: Any = None) -> Mesh:
    """A 1-D mesh with axis "data" over `devices` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), ("data",))


def _init_images(config: Any, model: models.DAMonodepth) -> tuple[jax.Array, jax.Array | None]:
    height, width = config.data.image_size
    source = jnp.zeros((1, height, width, 3), jnp.float32)
    target = source if model.use_domain_classifier else None
    return source, target


def initial_variables(config: Any, model: models.DAMonodepth, rng: jax.Array) -> Any:
    """`model.init` on zero images of the configured size (params and batch statistics)."""
    source, target = _init_images(config, model)
    return model.init(rng, source, target, grl_scale=jnp.float32(0.0), train=False)


def load_pretrained_encoder(config: Any, variables: Any) -> Any:
    """Replaces the encoder weights with `config.model.encoder_init` unless it is "scratch"."""
    if config.model.encoder_init == "scratch":
        return variables
    from damono_jax import pretrained  # noqa: PLC0415 (torch import only when asked for)

    return pretrained.init_encoder_from_config(variables, config.model)


def freeze_config(config: Any) -> ml_collections.FrozenConfigDict:
    """A hashable, immutable copy of `config` (the cache key of the compiled functions)."""
    if isinstance(config, ml_collections.FrozenConfigDict):
        return config
    return ml_collections.FrozenConfigDict(config)


@functools.lru_cache(maxsize=8)
def _state_initializers(
    config: ml_collections.FrozenConfigDict, model: models.DAMonodepth, mesh: Mesh
) -> tuple[Callable[..., Any], Callable[..., TrainState]]:
    """Jitted (variables init, state assembly) for one (config, model, mesh); cached so that
    repeated runs in one process (tests, notebooks, resumes) compile once."""
    replicated = NamedSharding(mesh, P())
    tx, _ = create_optimizer(config)
    init_variables = jax.jit(
        functools.partial(initial_variables, config, model), out_shardings=replicated
    )

    def make_state(variables: Any, rng: jax.Array) -> TrainState:
        return TrainState.create(
            apply_fn=model.apply,
            params=variables["params"],
            tx=tx,
            batch_stats=variables["batch_stats"],
            rng=rng,
        )

    return init_variables, jax.jit(make_state, out_shardings=replicated)


def create_train_state(config: Any, model: models.DAMonodepth, mesh: Mesh) -> TrainState:
    """Initialises the replicated train state on `mesh` (jit with out_shardings, big_vision).

    Built by jit rather than `device_put` of existing arrays, so donating it later never
    deletes a buffer that something else still references. The encoder is loaded from
    `config.model.encoder_init` unless that is "scratch".
    """
    init_variables, make_state = _state_initializers(freeze_config(config), model, mesh)
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    variables = load_pretrained_encoder(config, init_variables(init_rng))
    return make_state(variables, state_rng)


# ----------------------------------------------------------------------------------- train step


def train_step(
    state: TrainState,
    batch: Mapping[str, jax.Array],
    grl_scale: jax.Array,
    *,
    config: Any,
    model: models.DAMonodepth,
    lr_schedule: optax.Schedule,
) -> tuple[TrainState, TrainMetrics, dict[str, jax.Array]]:
    """One optimisation step on a (global) batch.

    Returns the new state, the step's `TrainMetrics` and its raw loss terms (float32 scalars,
    checked for NaN/Inf by the caller).
    """
    step_rng = jax.random.fold_in(state.rng, state.step)
    target_images = batch["target_image"] if model.use_domain_classifier else None
    source_images = batch["source_image"]
    if config.data.fda_beta > 0:
        source_images = fda.source_in_target_style(
            source_images, batch["target_image"], config.data.fda_beta
        )

    def loss_fn(params: Any) -> tuple[jax.Array, tuple[dict[str, jax.Array], Any]]:
        outputs, updates = model.apply(
            {"params": params, "batch_stats": state.batch_stats},
            source_images,
            target_images,
            grl_scale=grl_scale,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": step_rng},
        )
        terms = losses.compute_loss_terms(outputs, batch, config)
        # Per-image spread of the full-resolution disparity: ~0 when the output collapsed.
        disp = outputs["disp"][0].astype(jnp.float32)
        terms["disp_std"] = jax.lax.stop_gradient(jnp.mean(jnp.std(disp, axis=(1, 2, 3))))
        return terms["total"], (terms, updates["batch_stats"])

    grads, (terms, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
    if model.use_semantic:
        grads = models.combine_shared_block_grads(grads, config.model.shared_block_grad)
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    step_metrics = TrainMetrics.single_from_model_output(
        loss=terms["total"],
        depth_loss=terms["depth"],
        seg_loss=terms["seg"],
        adv_loss=terms["adv"],
        domain_acc_source=terms["domain_acc_source"],
        domain_acc_target=terms["domain_acc_target"],
        disp_std=terms["disp_std"],
        grl_scale=jnp.asarray(grl_scale, jnp.float32),
        learning_rate=jnp.asarray(lr_schedule(state.step), jnp.float32),
    )
    return new_state, step_metrics, terms


def make_train_step(
    config: Any, model: models.DAMonodepth, mesh: Mesh
) -> Callable[..., tuple[TrainState, TrainMetrics, dict[str, jax.Array]]]:
    """`train_step` jitted over `mesh`: state replicated and donated, batch sharded on "data".

    Cached per (config, model, mesh), so every call with equal arguments returns the same
    jitted function and its compilation is reused.
    """
    return _make_train_step(freeze_config(config), model, mesh)


@functools.lru_cache(maxsize=8)
def _make_train_step(
    config: ml_collections.FrozenConfigDict, model: models.DAMonodepth, mesh: Mesh
) -> Callable[..., tuple[TrainState, TrainMetrics, dict[str, jax.Array]]]:
    replicated = NamedSharding(mesh, P())
    data = NamedSharding(mesh, P("data"))
    _, lr_schedule = create_optimizer(config)
    return jax.jit(
        functools.partial(train_step, config=config, model=model, lr_schedule=lr_schedule),
        in_shardings=(replicated, data, replicated),
        out_shardings=(replicated, replicated, replicated),
        donate_argnums=0,
    )


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Per-process numpy batch -> global arrays sharded along the batch axis over `mesh`."""
    data = NamedSharding(mesh, P("data"))
    return {
        key: jax.make_array_from_process_local_data(data, np.asarray(value))
        for key, value in batch.items()
    }


def first_nonfinite_term(step: int, terms: Mapping[str, Any]) -> str | None:
    """`"step 37: loss term 'depth' is nan"` for the first NaN/Inf term, else None."""
    for name in CHECKED_TERMS:
        value = float(terms[name])
        if not math.isfinite(value):
            kind = "nan" if math.isnan(value) else "inf"
            return f"step {step}: loss term '{name}' is {kind}"
    return None


# -------------------------------------------------------------------------------- diagnostics


class CollapseMonitor:
    """Warns when the domain classifier sits in one of the two known collapse modes.

    Modes: mean domain accuracy >= 0.99 (the classifier wins, the GRL does nothing useful), or
    the adversarial loss within 0.01 of ln 2 (the classifier is at chance from the start, e.g.
    a GRL scale that is too large). Checked at every logged step on the interval's averages;
    a warning is issued when a mode holds for `patience_steps` steps, i.e. for
    `ceil(patience_steps / log_every_steps)` consecutive logged steps, and once per streak.
    """

    def __init__(self, patience_steps: int, log_every_steps: int):
        self.required_logs = max(1, math.ceil(patience_steps / log_every_steps))
        self._streaks = {"accuracy": 0, "chance": 0}
        self.warnings: list[str] = []

    def update(self, step: int, adv_loss: float, acc_source: float, acc_target: float) -> None:
        """Feeds one logged step's averages; logs (and records) a warning on collapse."""
        accuracy = 0.5 * (acc_source + acc_target)
        conditions = {
            "accuracy": accuracy >= DOMAIN_ACCURACY_COLLAPSE,
            "chance": abs(adv_loss - losses.LN2) <= ADV_LOSS_COLLAPSE_TOLERANCE,
        }
        for mode, holds in conditions.items():
            self._streaks[mode] = self._streaks[mode] + 1 if holds else 0
            if self._streaks[mode] == self.required_logs:
                if mode == "accuracy":
                    message = (
                        f"step {step}: GRL collapse: domain classifier accuracy {accuracy:.3f} "
                        f">= {DOMAIN_ACCURACY_COLLAPSE} (source {acc_source:.3f}, target "
                        f"{acc_target:.3f}) for {self.required_logs} logged steps; the encoder "
                        "is not aligning the domains (try a larger config.grl.max_scale or a "
                        "smaller config.optim.discriminator_learning_rate)"
                    )
                else:
                    message = (
                        f"step {step}: GRL collapse: adversarial loss {adv_loss:.4f} stays at "
                        f"ln 2 = {losses.LN2:.4f} for {self.required_logs} logged steps; the "
                        "domain classifier is at chance (try a smaller config.grl.max_scale or "
                        "a larger config.optim.discriminator_learning_rate)"
                    )
                logging.warning(message)
                self.warnings.append(message)


class DepthCollapseMonitor:
    """Warns when the depth output is constant (every image, every pixel the same disparity).

    The known cause is a sigmoid saturated at 0 or 1: supervised targets squeezed near 0 by a
    too small `config.model.min_depth` (0.1 m collapsed in 40 steps on synthetic_driving) or
    a too large learning rate. Once saturated the gradient vanishes and training cannot
    recover, so the warning comes after `patience_steps` and names what to change.
    """

    def __init__(self, patience_steps: int, log_every_steps: int):
        self.required_logs = max(1, math.ceil(patience_steps / log_every_steps))
        self._streak = 0
        self.warnings: list[str] = []

    def update(self, step: int, disp_std: float, min_depth: float, learning_rate: float) -> None:
        """Feeds one logged step's mean disparity spread; logs (and records) a warning."""
        self._streak = self._streak + 1 if disp_std < DEPTH_COLLAPSE_STD else 0
        if self._streak == self.required_logs:
            message = (
                f"step {step}: depth collapse: the disparity output is constant (mean per-image "
                f"std {disp_std:.2e} < {DEPTH_COLLAPSE_STD:g}) for {self.required_logs} logged "
                "steps; its sigmoid is saturated and cannot recover. Restart with a larger "
                f"config.model.min_depth (now {min_depth:g} m; the supervised targets must not "
                f"sit near sigmoid 0) or a smaller config.optim.learning_rate (now "
                f"{learning_rate:g})"
            )
            logging.warning(message)
            self.warnings.append(message)


def predict_disparity(model: models.DAMonodepth, variables: Any, images: jax.Array) -> jax.Array:
    """Scale-0 sigmoid disparity (B, H, W, 1) of the depth network in inference mode."""
    depth_net = models.DepthNet(upsample_mode=model.upsample_mode, dtype=model.dtype)
    return depth_net.apply(models.depth_net_variables(variables), images, train=False)[0]


def image_summaries(
    config: Any, model: models.DAMonodepth, state: TrainState, batch: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """uint8 NHWC images: input, predicted disparity, GT disparity, segmentation (if any)."""
    from damono_jax import visualization  # noqa: PLC0415 (matplotlib only when logging)

    count = min(NUM_SUMMARY_IMAGES, batch["source_image"].shape[0])
    images = jnp.asarray(batch["source_image"][:count])
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    target = jnp.asarray(batch["target_image"][:count]) if model.use_domain_classifier else None
    outputs = jax.device_get(
        _summary_forward(model, variables, images, target)
    )
    pred_disp = np.asarray(outputs["disp"][0][..., 0], np.float32)
    depth = np.asarray(batch["source_depth"][:count], np.float32)
    if depth.ndim == 4:
        depth = depth[..., 0]
    valid = (depth > 0) & (depth <= config.data.max_depth)
    gt_disp = np.where(
        valid,
        geometry.depth_to_disp(np.where(valid, depth, 1.0), config.model.min_depth,
                               config.model.max_depth),
        np.nan,
    )
    # One colour range for prediction and GT so they can be compared directly.
    vmax = float(max(np.nanmax(pred_disp), np.nanmax(gt_disp) if valid.any() else 0.0))
    summaries = {
        "input": np.asarray(np.clip(batch["source_image"][:count], 0, 1) * 255, np.uint8),
        "disparity/pred": np.stack([visualization.colorize(d, 0.0, vmax) for d in pred_disp]),
        "disparity/gt": np.stack([visualization.colorize(d, 0.0, vmax) for d in gt_disp]),
    }
    if model.use_semantic:
        pred_labels = np.argmax(outputs["seg_logits"][0], axis=-1)
        labels = np.asarray(batch["source_label"][:count])
        if labels.ndim == 4:
            labels = labels[..., 0]
        summaries["segmentation/pred"] = np.stack(
            [visualization.colorize_labels(lab) for lab in pred_labels]
        )
        summaries["segmentation/gt"] = np.stack(
            [visualization.colorize_labels(lab.astype(np.int32)) for lab in labels]
        )
    if model.use_domain_classifier:
        summaries["target"] = np.asarray(
            np.clip(batch["target_image"][:count], 0, 1) * 255, np.uint8
        )
    return summaries


@functools.partial(jax.jit, static_argnums=0)
def _summary_forward(
    model: models.DAMonodepth, variables: Any, images: jax.Array, target: jax.Array | None
) -> dict[str, Any]:
    return model.apply(variables, images, target, grl_scale=jnp.float32(0.0), train=False)


@functools.lru_cache(maxsize=8)
def make_predict_fn(model: models.DAMonodepth) -> Callable[[Any, jax.Array], jax.Array]:
    """Jitted `predict_disparity(model, variables, images)` (compiled once per image shape)."""
    return jax.jit(functools.partial(predict_disparity, model))


def evaluate_on_split(
    config: Any,
    predict_fn: Callable[[Any, jax.Array], jax.Array],
    state: TrainState,
    eval_examples: Iterable[Mapping[str, Any]],
) -> dict[str, float]:
    """Validation metrics (`evaluation.evaluate`, 80 m cap, median scaling) on the eval split.

    `eval_examples` yields `input_pipeline.create_eval_dataset` examples: `image` (H, W, 3)
    at the training size and `depth` (h, w) ground truth at its native size. Images are run
    in batches of `EVAL_BATCH_SIZE`, the last one padded, so the network compiles once.
    """
    from damono_jax import evaluation  # noqa: PLC0415

    variables = {"params": state.params, "batch_stats": state.batch_stats}
    crop = "garg" if config.data.eval.startswith("kitti_eigen") else "none"
    # Streams: only one batch of ground truth is held at a time (KITTI val is ~1.6 GB).
    evaluator = evaluation.Evaluator(
        caps=(80,), crop=crop, scaling="median",
        gt_source=f"{config.data.eval}/{config.data.eval_split}",
    )

    def flush(images: list[np.ndarray], gt_depths: list[np.ndarray]) -> None:
        padded = np.zeros((EVAL_BATCH_SIZE,) + images[0].shape, np.float32)
        padded[: len(images)] = np.stack(images)
        sigma = np.asarray(jax.device_get(predict_fn(variables, jnp.asarray(padded))))
        scaled_disp, _ = geometry.disp_to_depth(
            sigma[: len(images), ..., 0].astype(np.float64), config.model.min_depth,
            config.model.max_depth,
        )
        for gt, disp in zip(gt_depths, scaled_disp, strict=True):
            evaluator.add(gt, disp)

    images: list[np.ndarray] = []
    gt_depths: list[np.ndarray] = []
    for example in eval_examples:
        images.append(np.asarray(example["image"], np.float32))
        gt_depths.append(np.asarray(example["depth"], np.float32))
        if len(images) == EVAL_BATCH_SIZE:
            flush(images, gt_depths)
            images, gt_depths = [], []
    if images:
        flush(images, gt_depths)
    if not evaluator.names:
        raise ValueError(
            f"config.data.eval: {config.data.eval}/{config.data.eval_split} yielded no examples"
        )
    results = evaluator.results()[80]
    return {f"val/{name}": results[name] for name in evaluation.METRIC_NAMES}


# ------------------------------------------------------------------------------------ the loop


def _checkpoint_meta(config: Any, step: int) -> dict[str, Any]:
    return {
        "step": step,
        # Global batches consumed; create_train_iterator(config, start_step=...) resumes here.
        "data_position": step,
        "config": config.to_dict() if hasattr(config, "to_dict") else dict(config),
    }


def _json_safe(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {str(k): _json_safe(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [_json_safe(v) for v in tree]
    if isinstance(tree, bool | int | float | str) or tree is None:
        return tree
    return str(tree)


def train_and_evaluate(
    config: Any,
    workdir: str,
    *,
    train_iterator_fn: Callable[[Any, int], Iterator[Mapping[str, np.ndarray]]] | None = None,
    eval_dataset_fn: Callable[[Any], Any] | None = None,
) -> TrainState:
    """Trains (resuming from `workdir/checkpoints` if possible) and returns the final state.

    `train_iterator_fn(config, start_step)` and `eval_dataset_fn(config)` default to
    `input_pipeline.create_train_iterator` / `create_eval_dataset`; tests pass in-memory ones.
    """
    config_utils.validate(config, mode="train", num_devices=jax.device_count())
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    if train_iterator_fn is None or eval_dataset_fn is None:
        from damono_jax import input_pipeline  # noqa: PLC0415 (TensorFlow only when needed)

        if train_iterator_fn is None:
            train_iterator_fn = functools.partial(_default_train_iterator, input_pipeline)
        if eval_dataset_fn is None:
            eval_dataset_fn = functools.partial(_default_eval_dataset, input_pipeline)

    writer = metric_writers.create_default_writer(
        workdir, just_logging=jax.process_index() > 0, asynchronous=True
    )
    mesh = create_mesh()
    model = create_model(config)
    grl_schedule = schedules.create_grl_schedule(config)
    state = create_train_state(config, model, mesh)
    checkpointer = checkpointing.TrainCheckpointer(workdir, config.keep_checkpoints)
    restored = checkpointer.restore_latest(checkpointing.abstract_like(state))
    start_step = 0
    if restored is not None:
        state = restored.state
        start_step = int(restored.meta["data_position"])
        if int(jax.device_get(state.step)) != start_step:
            raise ValueError(
                f"{checkpointer.directory}/{restored.step}: state step "
                f"{int(jax.device_get(state.step))} != data position {start_step}"
            )
        logging.info("Resumed from %s at step %d.", checkpointer.directory, start_step)
    else:
        writer.write_hparams(config_utils.flatten_for_hparams(config))
    del restored

    step_fn = make_train_step(config, model, mesh)
    predict_fn = make_predict_fn(model)
    train_iterator = train_iterator_fn(config, start_step)
    report_progress = periodic_actions.ReportProgress(
        num_train_steps=config.num_train_steps, writer=writer,
        every_steps=config.log_every_steps, every_secs=None,
    )
    monitor = CollapseMonitor(config.grl.collapse_patience, config.log_every_steps)
    depth_monitor = DepthCollapseMonitor(config.grl.collapse_patience, config.log_every_steps)
    logged_names = variant_metric_names(config.variant)
    last_saved = checkpointer.latest_step()
    accumulated: TrainMetrics | None = None
    pending: tuple[int, dict[str, jax.Array]] | None = None

    def check_pending() -> None:
        nonlocal pending
        if pending is None:
            return
        pending_step, terms = pending
        pending = None
        message = first_nonfinite_term(pending_step, jax.device_get(terms))
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
        for step in range(start_step + 1, config.num_train_steps + 1):
            with jax.profiler.StepTraceAnnotation("train", step_num=step):
                try:
                    np_batch = next(train_iterator)
                except StopIteration as error:
                    raise RuntimeError(
                        f"step {step}: the training data stream ended; it must repeat forever"
                    ) from error
                batch = shard_batch(np_batch, mesh)
                grl_scale = np.float32(grl_schedule(step - 1))
                state, step_metrics, terms = step_fn(state, batch, grl_scale)
            # Check the previous step while this one runs (one step of latency, no stall).
            check_pending()
            pending = (step, terms)
            accumulated = (
                step_metrics if accumulated is None else accumulated.merge(step_metrics)
            )
            report_progress(step)
            is_last = step == config.num_train_steps

            if step % config.log_every_steps == 0 or is_last:
                check_pending()
                computed = {k: float(v) for k, v in accumulated.compute().items()}
                accumulated = None
                writer.write_scalars(
                    step, {f"train/{k}": v for k, v in computed.items() if k in logged_names}
                )
                depth_monitor.update(step, computed["disp_std"], config.model.min_depth,
                                     config.optim.learning_rate)
                if model.use_domain_classifier:
                    monitor.update(step, computed["adv_loss"], computed["domain_acc_source"],
                                   computed["domain_acc_target"])

            if step % config.image_log_every_steps == 0 or is_last:
                writer.write_images(step, image_summaries(config, model, state, np_batch))

            if step % config.eval_every_steps == 0 or is_last:
                with report_progress.timed("eval"):
                    eval_metrics = evaluate_on_split(
                        config, predict_fn, state, eval_dataset_fn(config)
                    )
                writer.write_scalars(step, eval_metrics)

            if step % config.checkpoint_every_steps == 0 or is_last:
                check_pending()
                checkpointer.save(step, state, _json_safe(_checkpoint_meta(config, step)))
                last_saved = step
        check_pending()
    checkpointer.close()
    writer.flush()
    return state


def restore_latest_state(config: Any, workdir: str) -> tuple[TrainState, int]:
    """The newest complete checkpoint in `workdir/checkpoints` as a replicated `TrainState`.

    Raises FileNotFoundError when the workdir holds no complete checkpoint.
    """
    mesh = create_mesh()
    model = create_model(config)
    state = create_train_state(config, model, mesh)
    with checkpointing.TrainCheckpointer(workdir, config.keep_checkpoints) as checkpointer:
        restored = checkpointer.restore_latest(checkpointing.abstract_like(state))
        if restored is None:
            raise FileNotFoundError(
                f"{checkpointer.directory}: no complete checkpoint to restore; train first "
                "with --mode=train"
            )
    return restored.state, restored.step


def evaluate_checkpoint(config: Any, workdir: str) -> dict[str, float]:
    """Validation metrics of the newest checkpoint on `config.data.eval/eval_split`.

    Also writes them to `workdir/eval_<dataset>_<split>_step<N>.json` (atomically).
    """
    from damono_jax import input_pipeline  # noqa: PLC0415

    state, step = restore_latest_state(config, workdir)
    model = create_model(config)
    results = evaluate_on_split(
        config, make_predict_fn(model), state, _default_eval_dataset(input_pipeline, config)
    )
    name = config.data.eval.replace("/", "_")
    path = os.path.join(os.path.abspath(workdir),
                        f"eval_{name}_{config.data.eval_split}_step{step}.json")
    temporary = f"{path}.tmp"
    try:
        with open(temporary, "w") as handle:
            json.dump({"step": step, **results}, handle, indent=2, sort_keys=True)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    logging.info("Step %d on %s/%s: %s (written to %s)", step, config.data.eval,
                 config.data.eval_split, results, path)
    return results


def export_checkpoint(config: Any, workdir: str) -> str:
    """Exports the newest checkpoint's DepthNet to `workdir/export` (`export` module)."""
    from damono_jax import export  # noqa: PLC0415

    state, step = restore_latest_state(config, workdir)
    export_dir = os.path.join(os.path.abspath(workdir), "export")
    export.export_from_train_state(
        config, jax.device_get(state.params), jax.device_get(state.batch_stats), export_dir, step
    )
    logging.info("Exported step %d to %s.", step, export_dir)
    return export_dir


def _default_train_iterator(input_pipeline: Any, config: Any, start_step: int) -> Iterator[Any]:
    return iter(input_pipeline.create_train_iterator(config, start_step=start_step))


def _default_eval_dataset(input_pipeline: Any, config: Any) -> Any:
    max_examples = None if config.num_eval_examples == -1 else config.num_eval_examples
    return input_pipeline.create_eval_dataset(config, max_examples=max_examples)
