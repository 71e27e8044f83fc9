"""The data-parallel jit train step.

One `jax.jit` step over a `Mesh` of all devices with axis "data": parameters, batch statistics
and optimiser state are replicated, every batch array is sharded along its first axis. Under
jit, Flax BatchNorm then computes its statistics over the global batch (no `axis_name`). The
state is donated. The GRL scale is a traced argument, so its schedule never recompiles.
The step takes its constants as a hashable `StepSettings`, built from the config at the
entry (`StepSettings.from_config`), never the config itself.

This module imports without TensorFlow, TFDS and clu: the step runs wherever jax, flax and
optax do (tests/test_train_step.py checks it).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from damono_jax import fda, losses, models
from damono_jax.train.state import OptimizerSettings, TrainState

# Loss terms checked for NaN/Inf after every step, in the order they are reported.
CHECKED_TERMS = ("depth", "seg", "adv", "adv_output", "total")
# What the step reports per step (float32 scalars), averaged by the loop over a log interval;
# `grl_scale` and `learning_rate` are reported as their last value.
STEP_METRICS = (
    "loss", "depth_loss", "seg_loss", "adv_loss", "adv_output_loss", "domain_acc_source",
    "domain_acc_target",
    "disp_std", "grl_scale", "learning_rate",
)


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """The train step's constants: the loss, FDA's beta (0 = off), how the shared block's
    gradients combine (`models.combine_shared_block_grads`) and the optimiser (for the
    reported learning rate). Hashable: the cache key of the jitted step."""

    loss: losses.LossSettings
    fda_beta: float
    shared_block_grad: str
    optimizer: OptimizerSettings

    @classmethod
    def from_config(cls, config: Any) -> StepSettings:
        return cls(
            loss=losses.LossSettings.from_config(config),
            fda_beta=float(config.data.fda_beta),
            shared_block_grad=str(config.model.shared_block_grad),
            optimizer=OptimizerSettings.from_config(config),
        )


def train_step(
    state: TrainState,
    batch: Mapping[str, jax.Array],
    grl_scale: jax.Array,
    *,
    settings: StepSettings,
    model: models.DAMonodepth,
) -> tuple[TrainState, dict[str, jax.Array], dict[str, jax.Array]]:
    """One optimisation step on a (global) batch.

    Returns the new state, the step's metrics (`STEP_METRICS`) and its raw loss terms (float32
    scalars, checked for NaN/Inf by the caller).
    """
    step_rng = jax.random.fold_in(state.rng, state.step)
    target_images = batch["target_image"] if model.use_domain_classifier else None
    source_images = batch["source_image"]
    if settings.fda_beta > 0:
        source_images = fda.source_in_target_style(
            source_images, batch["target_image"], settings.fda_beta
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
        terms = losses.compute_loss_terms(outputs, batch, settings.loss)
        # Per-image spread of the full-resolution disparity: ~0 when the output collapsed.
        disp = outputs["disp"][0].astype(jnp.float32)
        terms["disp_std"] = jax.lax.stop_gradient(jnp.mean(jnp.std(disp, axis=(1, 2, 3))))
        return terms["total"], (terms, updates["batch_stats"])

    grads, (terms, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
    if model.use_semantic:
        grads = models.combine_shared_block_grads(grads, settings.shared_block_grad)
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    step_metrics = {
        "loss": terms["total"],
        "depth_loss": terms["depth"],
        "seg_loss": terms["seg"],
        "adv_loss": terms["adv"],
        "adv_output_loss": terms["adv_output"],
        "domain_acc_source": terms["domain_acc_source"],
        "domain_acc_target": terms["domain_acc_target"],
        "disp_std": terms["disp_std"],
        "grl_scale": jnp.asarray(grl_scale, jnp.float32),
        "learning_rate": jnp.asarray(
            settings.optimizer.learning_rate_schedule()(state.step), jnp.float32
        ),
    }
    return new_state, step_metrics, terms


def make_train_step(
    config: Any, model: models.DAMonodepth, mesh: Mesh
) -> Callable[..., tuple[TrainState, dict[str, jax.Array], dict[str, jax.Array]]]:
    """`train_step` jitted over `mesh`: state replicated and donated, batch sharded on "data".

    Cached per (`StepSettings`, model, mesh), so every call with equal arguments returns the
    same jitted function and its compilation is reused.
    """
    return _make_train_step(StepSettings.from_config(config), model, mesh)


@functools.lru_cache(maxsize=8)
def _make_train_step(
    settings: StepSettings, model: models.DAMonodepth, mesh: Mesh
) -> Callable[..., tuple[TrainState, dict[str, jax.Array], dict[str, jax.Array]]]:
    replicated = NamedSharding(mesh, P())
    data = NamedSharding(mesh, P("data"))
    return jax.jit(
        functools.partial(train_step, settings=settings, model=model),
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
