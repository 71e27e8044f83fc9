"""damono_jax.schedules: the DANN GRL scale."""

import math

import numpy as np
import pytest

from damono_jax import schedules
from tests.test_train_step import tiny_config


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
