"""damono_jax.constant_prior: the per-pixel median map behind every table's floor."""

import numpy as np
import pytest

from damono_jax import constant_prior


def test_median_ignores_invalid_pixels_and_fills_pixels_that_never_have_depth():
    maps = [np.array([[1.0, 0.0, 0.0], [4.0, 5.0, 0.0]], np.float32),
            np.array([[3.0, 2.0, 0.0], [6.0, 0.0, 0.0]], np.float32),
            np.array([[2.0, 0.0, 0.0], [8.0, 7.0, 0.0]], np.float32)]
    prior = constant_prior.median_depth_map(maps)
    # Column 2 never has depth anywhere: it takes the median of all 9 valid values (4).
    all_valid = np.median([1, 4, 5, 3, 2, 6, 2, 8, 7])
    np.testing.assert_array_equal(prior, [[2.0, 2.0, all_valid], [6.0, 6.0, all_valid]])
    assert prior.dtype == np.float32


def test_median_rejects_empty_mixed_and_depthless_inputs():
    with pytest.raises(ValueError, match="median_depth_map: no depth maps"):
        constant_prior.median_depth_map([])
    with pytest.raises(ValueError, match=r"several shapes \[\(2, 2\), \(2, 3\)\]"):
        constant_prior.median_depth_map([np.ones((2, 2)), np.ones((2, 3))])
    with pytest.raises(ValueError, match=r"no valid \(> 0\) depth in any map"):
        constant_prior.median_depth_map([np.zeros((2, 2))])
