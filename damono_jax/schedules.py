"""Schedules: the GRL scale (DANN) and the learning rate (Monodepth2 step decay), as optax.

Both are `optax.Schedule`s (step -> scalar) and work on Python ints and traced arrays alike.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import optax


def dann_grl_scale(progress: Any, gamma: float = 10.0, max_scale: float = 1.0) -> Any:
    """DANN's `max_scale * (2 / (1 + exp(-gamma * p)) - 1)` for training progress p in [0, 1]."""
    return max_scale * (2.0 / (1.0 + jnp.exp(-gamma * progress)) - 1.0)


def create_grl_schedule(config: Any) -> optax.Schedule:
    """GRL scale as a function of the step: `config.grl.schedule` "dann" or "constant".

    "dann" ramps from 0 to `config.grl.max_scale` over `config.num_train_steps`
    (p = step / num_train_steps, clipped to 1); "constant" is `max_scale` throughout.
    """
    schedule = config.grl.schedule
    max_scale = float(config.grl.max_scale)
    if schedule == "constant":
        return optax.constant_schedule(max_scale)
    if schedule != "dann":
        raise ValueError(f"config.grl.schedule: unknown schedule {schedule!r}; use 'dann' or "
                         "'constant'")
    gamma = float(config.grl.gamma)
    num_steps = float(config.num_train_steps)

    def grl_schedule(step: Any) -> Any:
        progress = jnp.clip(jnp.asarray(step, jnp.float32) / num_steps, 0.0, 1.0)
        return dann_grl_scale(progress, gamma, max_scale).astype(jnp.float32)

    return grl_schedule


def create_learning_rate_schedule(
    base_learning_rate: float, config: Any
) -> optax.Schedule:
    """Monodepth2's step decay: `base` until `decay_at_fraction` of training, then x factor."""
    boundary = int(round(config.optim.decay_at_fraction * config.num_train_steps))
    return optax.piecewise_constant_schedule(
        init_value=base_learning_rate,
        boundaries_and_scales={boundary: float(config.optim.decay_factor)},
    )
