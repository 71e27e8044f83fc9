"""damono_jax.schedules: the DANN GRL scale and the learning-rate step decay."""

import math

import numpy as np
import pytest

from damono_jax import schedules


def test_grl_schedule_values():
    schedule = schedules.grl_schedule("dann", num_train_steps=100, gamma=10.0, max_scale=1.0)
    assert float(schedule(0)) == 0.0
    expected_half = 2.0 / (1.0 + math.exp(-5.0)) - 1.0
    np.testing.assert_allclose(float(schedule(50)), expected_half, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(100)), 2.0 / (1.0 + math.exp(-10.0)) - 1.0,
                               rtol=1e-6)
    np.testing.assert_allclose(float(schedule(1000)), float(schedule(100)), rtol=1e-6)
    constant = schedules.grl_schedule("constant", num_train_steps=100, gamma=10.0,
                                      max_scale=0.3)
    assert float(constant(0)) == pytest.approx(0.3) and float(constant(99)) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="config.grl.schedule: unknown schedule 'linear'"):
        schedules.grl_schedule("linear", num_train_steps=100, gamma=10.0, max_scale=1.0)


def test_grl_warmup_holds_zero_then_runs_the_ramp_over_the_rest():
    settings = {"num_train_steps": 100, "gamma": 10.0, "max_scale": 1.0, "warmup_fraction": 0.2}
    schedule = schedules.grl_schedule("dann", **settings)
    assert float(schedule(0)) == 0.0 and float(schedule(19)) == 0.0
    assert float(schedule(20)) == 0.0  # the ramp starts at 0
    # Step 60 is half-way through the remaining 80 steps: DANN's value at p = 0.5.
    np.testing.assert_allclose(float(schedule(60)), 2.0 / (1.0 + math.exp(-5.0)) - 1.0,
                               rtol=1e-6)
    np.testing.assert_allclose(float(schedule(100)), 2.0 / (1.0 + math.exp(-10.0)) - 1.0,
                               rtol=1e-6)
    constant = schedules.grl_schedule("constant", **settings)
    assert [float(constant(s)) for s in (0, 19, 20, 99)] == [0.0, 0.0, 1.0, 1.0]


def test_learning_rate_decays_once_at_its_fraction():
    schedule = schedules.learning_rate_schedule(
        1e-4, num_train_steps=250, decay_at_fraction=0.75, decay_factor=0.1)
    # round(0.75 * 250) = 188: the campaign's stage 2 decays there.
    assert [float(schedule(s)) for s in (0, 187)] == pytest.approx([1e-4, 1e-4])
    assert [float(schedule(s)) for s in (188, 249)] == pytest.approx([1e-5, 1e-5])
