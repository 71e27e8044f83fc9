"""Tests of damono_jax.fda (Fourier Domain Adaptation) against a numpy computation."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from damono_jax import fda


def test_window_is_the_symmetric_low_frequency_block():
    window = np.asarray(fda.low_frequency_window(64, 224, 0.05))  # b = floor(3.2) = 3
    assert window.sum() == 25
    assert window[0, 0] and window[2, 2] and window[62, 222] and window[62, 2]
    assert not window[3, 0] and not window[0, 3] and not window[61, 0]
    np.testing.assert_array_equal(window, np.roll(window[::-1, ::-1], (1, 1), axis=(0, 1)))
    assert not np.asarray(fda.low_frequency_window(64, 224, 0.0)).any()
    with pytest.raises(ValueError, match=r"FDA beta: 0.5 is not in \[0, 0.5\)"):
        fda.low_frequency_window(8, 8, 0.5)


def test_source_keeps_its_phase_and_takes_the_target_low_frequency_amplitude():
    rng = np.random.default_rng(0)
    source = rng.uniform(0.3, 0.7, (2, 32, 64, 3)).astype(np.float32)
    target = (rng.uniform(0.4, 0.6, (1, 32, 64, 3)) * [0.9, 1.0, 1.1]).astype(np.float32)
    styled = np.asarray(fda.source_in_target_style(jnp.asarray(source), jnp.asarray(target),
                                                   0.1))
    assert styled.shape == source.shape and styled.dtype == np.float32
    window = np.asarray(fda.low_frequency_window(32, 64, 0.1))[None, :, :, None]
    spectrum = np.fft.fft2(source, axes=(1, 2))
    amplitude = np.where(window, np.abs(np.fft.fft2(target, axes=(1, 2))), np.abs(spectrum))
    expected = np.fft.ifft2(amplitude * np.exp(1j * np.angle(spectrum)), axes=(1, 2)).real
    assert 0.0 < expected.min() and expected.max() < 1.0  # no clipping in this example
    np.testing.assert_allclose(styled, expected, atol=2e-6)
    # DC is in the window: each channel's mean is now the target's (both are positive).
    np.testing.assert_allclose(styled.mean(axis=(1, 2)), np.repeat(target.mean(axis=(1, 2)), 2, 0),
                               rtol=1e-5)


def test_beta_zero_is_the_identity():
    rng = np.random.default_rng(1)
    source = rng.uniform(0, 1, (1, 16, 32, 3)).astype(np.float32)
    target = rng.uniform(0, 1, (1, 16, 32, 3)).astype(np.float32)
    out = fda.source_in_target_style(jnp.asarray(source), jnp.asarray(target), 0.0)
    np.testing.assert_allclose(np.asarray(out), source, atol=2e-6)
    with pytest.raises(ValueError, match="must be \\(B, H, W, C\\) of one size"):
        fda.source_in_target_style(jnp.asarray(source), jnp.asarray(target[:, :8]), 0.1)


def test_fda_reads_the_target_stream_and_its_beta_is_validated():
    from configs import synthetic
    from damono_jax import config_utils

    config = synthetic.get_config("baseline")
    assert not config_utils.uses_target_images(config)
    config.data.fda_beta = 0.05
    assert config_utils.uses_target_images(config)
    config_utils.check(config, mode="export")
    config.data.fda_beta = 0.7
    with pytest.raises(ValueError, match=r"data.fda_beta: 0.7 is not a number in \[0, 0.5\)"):
        config_utils.check(config, mode="export")
