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


def grl_schedule(schedule: str, *, num_train_steps: int, gamma: float, max_scale: float,
                 warmup_fraction: float = 0.0) -> optax.Schedule:
    """The GRL scale as a function of the step (`config.grl`; `config_utils` checks it).

    "dann" ramps from 0 to `max_scale` over `num_train_steps` (p = step / num_train_steps,
    clipped to 1); "constant" is `max_scale` throughout. With `warmup_fraction` w > 0 the
    scale is 0 for the first w of training, and the schedule runs over the rest (DANN's ramp
    on p' = (p - w) / (1 - w); "constant" jumps to `max_scale` at w).
    """
    if schedule not in ("dann", "constant"):
        raise ValueError(f"config.grl.schedule: unknown schedule {schedule!r}; use 'dann' or "
                         "'constant'")
    num_steps = float(num_train_steps)
    warmup = float(warmup_fraction)

    def scale_at(step: Any) -> Any:
        progress = jnp.clip(jnp.asarray(step, jnp.float32) / num_steps, 0.0, 1.0)
        ramp = jnp.clip((progress - warmup) / (1.0 - warmup), 0.0, 1.0)
        scale = max_scale if schedule == "constant" else dann_grl_scale(ramp, gamma, max_scale)
        return jnp.where(progress < warmup, 0.0, scale).astype(jnp.float32)

    return scale_at


def learning_rate_schedule(base_learning_rate: float, *, num_train_steps: int,
                           decay_at_fraction: float, decay_factor: float) -> optax.Schedule:
    """Monodepth2's step decay: `base` until `decay_at_fraction` of training, then x factor."""
    boundary = int(round(decay_at_fraction * num_train_steps))
    return optax.piecewise_constant_schedule(
        init_value=base_learning_rate, boundaries_and_scales={boundary: float(decay_factor)},
    )
