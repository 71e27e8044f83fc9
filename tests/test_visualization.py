"""Tests for damono_jax.visualization (depth colour maps and Cityscapes label colours)."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

from damono_jax import visualization


def test_colorize_uses_the_matplotlib_colormap_and_range():
    array = np.array([[0.0, 5.0, 10.0, 20.0]])
    rgb = visualization.colorize(array, vmin=0.0, vmax=10.0)
    assert rgb.shape == (1, 4, 3) and rgb.dtype == np.uint8
    expected = matplotlib.colormaps["magma"](np.array([0.0, 0.5, 1.0, 1.0]), bytes=True)[:, :3]
    np.testing.assert_array_equal(rgb[0], expected)
    auto = visualization.colorize(array, cmap="viridis")
    np.testing.assert_array_equal(
        auto[0, [0, 3]], matplotlib.colormaps["viridis"]([0.0, 1.0], bytes=True)[:, :3]
    )


def test_colorize_draws_non_finite_values_black_and_handles_flat_input():
    rgb = visualization.colorize(np.array([[1.0, np.nan, np.inf]]))
    np.testing.assert_array_equal(rgb[0, 1:], 0)
    flat = visualization.colorize(np.full((2, 2, 1), 3.0))
    assert flat.shape == (2, 2, 3) and len(np.unique(flat.reshape(-1, 3), axis=0)) == 1


def test_colorize_rejects_bad_inputs():
    with pytest.raises(ValueError, match="expected a 2-D"):
        visualization.colorize(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="unknown matplotlib colormap 'nope'"):
        visualization.colorize(np.zeros((2, 2)), cmap="nope")
    with pytest.raises(ValueError, match="need finite vmin <= vmax"):
        visualization.colorize(np.zeros((2, 2)), vmin=2.0, vmax=1.0)
    with pytest.raises(ValueError, match="no finite values"):
        visualization.colorize(np.full((2, 2), np.nan))


def test_colorize_labels_uses_the_cityscapes_palette():
    labels = np.array([[0, 10, 13, 255]], dtype=np.uint8)
    rgb = visualization.colorize_labels(labels)
    np.testing.assert_array_equal(
        rgb[0], [[128, 64, 128], [70, 130, 180], [0, 0, 142], [0, 0, 0]]
    )
    assert visualization.CITYSCAPES_CLASS_NAMES[0] == "road"
    assert len(visualization.CITYSCAPES_CLASS_NAMES) == 19
    with pytest.raises(ValueError, match=r"train ids must be in 0..18 or 255, found \[19\]"):
        visualization.colorize_labels(np.array([[19]], dtype=np.int32))
    with pytest.raises(ValueError, match="expected integer train ids"):
        visualization.colorize_labels(np.zeros((2, 2), np.float32))
