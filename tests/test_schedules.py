"""damono_jax.schedules: the DANN GRL scale."""

import math

import numpy as np
import pytest

from damono_jax import schedules
from tests.helpers import tiny_config


def test_grl_schedule_values():
    config = tiny_config(num_train_steps=100)
    schedule = schedules.create_grl_schedule(config)
    assert float(schedule(0)) == 0.0
    expected_half = 2.0 / (1.0 + math.exp(-5.0)) - 1.0
    np.testing.assert_allclose(float(schedule(50)), expected_half, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(100)), 2.0 / (1.0 + math.exp(-10.0)) - 1.0,
                               rtol=1e-6)
    np.testing.assert_allclose(float(schedule(1000)), float(schedule(100)), rtol=1e-6)
    config.grl.schedule = "constant"
    config.grl.max_scale = 0.3
    constant = schedules.create_grl_schedule(config)
    assert float(constant(0)) == pytest.approx(0.3) and float(constant(99)) == pytest.approx(0.3)


def test_grl_warmup_holds_zero_then_runs_the_ramp_over_the_rest():
    config = tiny_config(num_train_steps=100, **{"grl.warmup_fraction": 0.2})
    schedule = schedules.create_grl_schedule(config)
    assert float(schedule(0)) == 0.0 and float(schedule(19)) == 0.0
    assert float(schedule(20)) == 0.0  # the ramp starts at 0
    # Step 60 is half-way through the remaining 80 steps: DANN's value at p = 0.5.
    np.testing.assert_allclose(float(schedule(60)), 2.0 / (1.0 + math.exp(-5.0)) - 1.0,
                               rtol=1e-6)
    np.testing.assert_allclose(float(schedule(100)), 2.0 / (1.0 + math.exp(-10.0)) - 1.0,
                               rtol=1e-6)
    config.grl.schedule = "constant"
    constant = schedules.create_grl_schedule(config)
    assert [float(constant(s)) for s in (0, 19, 20, 99)] == [0.0, 0.0, 1.0, 1.0]
