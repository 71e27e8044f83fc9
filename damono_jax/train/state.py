"""The train state: model, optimiser, mesh, initialisation and its abstract shapes.

Initialisation follows big_vision's order: a run resumes from its checkpoint when it has one
(restored into `abstract_train_state`, so neither the initialiser, `init_from` nor
`encoder_init` runs), else loads `config.init_from` (`warm_start`, over `encoder_init` where
both have weights), else `config.model.encoder_init`, else starts from scratch.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from damono_jax import models, schedules


class TrainState(train_state.TrainState):
    """Flax train state plus BatchNorm statistics and the RNG key (all checkpointed)."""

    batch_stats: Any
    rng: jax.Array


def resolve_weight_gradient(choice: str, backend: str | None = None) -> str:
    """`config.conv_weight_gradient` with "auto" made concrete for `backend`.

    "auto" is "band" on CPU, where XLA's own weight-gradient convolutions are slow
    (docs/design.md), and "xla" on GPU/TPU, where no faster formulation has been measured.
    """
    if choice != "auto":
        return choice
    backend = backend or jax.default_backend()
    return "band" if backend == "cpu" else "xla"


def create_model(config: Any) -> models.DAMonodepth:
    """The DA-Monodepth model of `config.variant`, compute dtype `config.dtype` and the
    weight-gradient formulation of `config.conv_weight_gradient`."""
    conv = models.conv_module(resolve_weight_gradient(config.conv_weight_gradient))
    return models.DAMonodepth.from_config(config.model, config.variant, config.dtype, conv)


@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
    """The optimiser's constants (`config.optim` and `num_train_steps`), explicit and
    hashable: the key under which the jitted state functions are cached."""

    learning_rate: float
    num_train_steps: int
    decay_at_fraction: float
    decay_factor: float
    b1: float
    b2: float
    discriminator_learning_rate: float | None
    discriminator_lr_decay: bool
    grad_clip_norm: float | None

    @classmethod
    def from_config(cls, config: Any) -> OptimizerSettings:
        optim = config.optim
        return cls(
            learning_rate=float(optim.learning_rate),
            num_train_steps=int(config.num_train_steps),
            decay_at_fraction=float(optim.decay_at_fraction),
            decay_factor=float(optim.decay_factor),
            b1=float(optim.b1),
            b2=float(optim.b2),
            discriminator_learning_rate=(None if optim.discriminator_learning_rate is None
                                         else float(optim.discriminator_learning_rate)),
            discriminator_lr_decay=bool(optim.discriminator_lr_decay),
            grad_clip_norm=None if optim.grad_clip_norm is None else float(optim.grad_clip_norm),
        )

    def learning_rate_schedule(self, base_learning_rate: float | None = None
                               ) -> optax.Schedule:
        """Monodepth2's step decay from `base_learning_rate` (default: the main rate)."""
        base = self.learning_rate if base_learning_rate is None else base_learning_rate
        return schedules.learning_rate_schedule(
            base, num_train_steps=self.num_train_steps,
            decay_at_fraction=self.decay_at_fraction, decay_factor=self.decay_factor,
        )


def create_optimizer(settings: OptimizerSettings) -> optax.GradientTransformation:
    """Adam with Monodepth2's step decay, optional discriminator LR and gradient clipping.

    With `discriminator_learning_rate` set, or `discriminator_lr_decay` False, the
    `domain_classifier*` subtrees get their own Adam (same betas, its own state) through
    `optax.multi_transform`: at `discriminator_learning_rate` (default: the main rate), with
    the main step decay unless `discriminator_lr_decay` is False (then constant).
    """
    lr_schedule = settings.learning_rate_schedule()

    def adam(schedule: optax.Schedule) -> optax.GradientTransformation:
        return optax.adam(schedule, b1=settings.b1, b2=settings.b2)

    discriminator_lr = settings.discriminator_learning_rate
    decay = settings.discriminator_lr_decay
    if discriminator_lr is None and decay:
        tx = adam(lr_schedule)
    else:
        rate = settings.learning_rate if discriminator_lr is None else discriminator_lr
        discriminator_schedule = (
            settings.learning_rate_schedule(rate) if decay else optax.constant_schedule(rate)
        )

        def labels(params: Any) -> Any:
            return traverse_util.path_aware_map(
                lambda path, _: (
                    "discriminator" if path[0].startswith(models.DOMAIN_CLASSIFIER) else "default"
                ),
                params,
            )

        tx = optax.multi_transform(
            {"default": adam(lr_schedule), "discriminator": adam(discriminator_schedule)},
            labels,
        )
    if settings.grad_clip_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(settings.grad_clip_norm), tx)
    return tx


def create_mesh(devices: Any = None) -> Mesh:
    """A 1-D mesh with axis "data" over `devices` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), ("data",))


def initial_variables(
    image_size: tuple[int, int], model: models.DAMonodepth, rng: jax.Array
) -> Any:
    """`model.init` on zero images of `image_size` (params and batch statistics)."""
    height, width = image_size
    source = jnp.zeros((1, height, width, 3), jnp.float32)
    target = source if model.use_domain_classifier else None
    return model.init(rng, source, target, grl_scale=jnp.float32(0.0), train=False)


def load_pretrained_encoder(encoder_init: str, model_config: Any, variables: Any) -> Any:
    """Replaces the encoder weights with the `encoder_init` file unless it is "scratch"."""
    if encoder_init == "scratch":
        return variables
    from damono_jax import pretrained  # torch is imported only when a .pth is loaded

    return pretrained.init_encoder_from_config(variables, model_config)


def _make_state_fn(
    optimizer: OptimizerSettings, model: models.DAMonodepth
) -> Callable[[Any, jax.Array], TrainState]:
    tx = create_optimizer(optimizer)

    def make_state(variables: Any, rng: jax.Array) -> TrainState:
        return TrainState.create(
            apply_fn=model.apply, params=variables["params"], tx=tx,
            batch_stats=variables["batch_stats"], rng=rng,
        )

    return make_state


@functools.lru_cache(maxsize=8)
def _state_initializers(
    image_size: tuple[int, int], optimizer: OptimizerSettings, model: models.DAMonodepth,
    mesh: Mesh,
) -> tuple[Callable[..., Any], Callable[..., TrainState]]:
    """Jitted (variables init, state assembly) for one (image size, optimiser, model, mesh);
    cached so that repeated runs in one process (tests, notebooks, resumes) compile once."""
    replicated = NamedSharding(mesh, P())
    init_variables = jax.jit(
        functools.partial(initial_variables, image_size, model), out_shardings=replicated,
    )
    return init_variables, jax.jit(_make_state_fn(optimizer, model), out_shardings=replicated)


def create_train_state(config: Any, model: models.DAMonodepth, mesh: Mesh) -> TrainState:
    """Initialises the replicated train state on `mesh` (jit with out_shardings, big_vision).

    Built by jit rather than `device_put` of existing arrays, so donating it later never
    deletes a buffer that something else still references. The encoder is loaded from
    `config.model.encoder_init` unless that is "scratch", then whatever `config.init_from`
    holds (`warm_start`).
    """
    init_variables, make_state = _state_initializers(
        tuple(config.data.image_size), OptimizerSettings.from_config(config), model, mesh
    )
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    variables = load_pretrained_encoder(
        config.model.encoder_init, config.model, init_variables(init_rng)
    )
    if config.init_from:
        from damono_jax.train import warm_start

        variables = warm_start.warm_start(config.init_from, jax.device_get(variables)).variables
    return make_state(variables, state_rng)


def abstract_train_state(config: Any, model: models.DAMonodepth, mesh: Mesh) -> TrainState:
    """The train state's shapes, dtypes and (replicated) shardings, computed by
    `jax.eval_shape`: nothing is initialised and `encoder_init` is not read."""
    replicated = NamedSharding(mesh, P())
    make_state = _make_state_fn(OptimizerSettings.from_config(config), model)

    def init(rng: jax.Array) -> TrainState:
        init_rng, state_rng = jax.random.split(rng)
        variables = initial_variables(tuple(config.data.image_size), model, init_rng)
        return make_state(variables, state_rng)

    shapes = jax.eval_shape(init, jax.random.PRNGKey(0))
    return jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=replicated), shapes
    )
