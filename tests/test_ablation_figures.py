"""Tests of the ablation's figures: PNGs of the expected layout and the median scaling."""

from __future__ import annotations

import numpy as np
from PIL import Image

from damono_jax import evaluation
from damono_jax.tools import ablation_figures


def test_median_scaled_depth_matches_the_evaluation_protocol():
    rng = np.random.default_rng(0)
    gt = rng.uniform(2, 90, (12, 20)).astype(np.float32)
    gt[0, :5] = 0.0
    scaled_disparity = rng.uniform(0.02, 0.5, (8, 16)).astype(np.float32)
    depth = ablation_figures.median_scaled_depth(scaled_disparity, gt)
    assert depth.shape == gt.shape
    valid = (gt > 1e-3) & (gt < 80)
    unscaled = 1.0 / evaluation.resize_bilinear(scaled_disparity, 12, 20)
    ratio = np.median(gt[valid]) / np.median(unscaled[valid])
    np.testing.assert_allclose(depth, unscaled * ratio, rtol=1e-6)
    np.testing.assert_allclose(np.median(depth[valid]), np.median(gt[valid]), rtol=1e-6)


def test_figures_are_written_as_pngs(tmp_path):
    curves = {"a": [[(25, 0.5), (50, 0.4)], [(25, 0.6), (50, 0.45)]], "b": [[(25, 0.3)]]}
    path = ablation_figures.plot_learning_curves(curves, str(tmp_path / "c.png"), "t")
    short_width, height = Image.open(path).size
    assert 700 < short_width < 900 and 400 < height < 500
    # The legend stands beside the axes (not over the curves): a long label widens the PNG.
    long = {"a" * 80: curves["a"]}
    long_path = ablation_figures.plot_learning_curves(long, str(tmp_path / "long.png"), "t")
    assert Image.open(long_path).size[0] > short_width + 300
    (tmp_path / "long.png").unlink()
    rng = np.random.default_rng(1)
    images = [rng.uniform(0, 1, (16, 32, 3)) for _ in range(2)]
    gts = [rng.uniform(2, 60, (24, 48)) for _ in range(2)]
    predictions = {"m1": gts, "m2": [g * 1.1 for g in gts]}
    path = ablation_figures.plot_qualitative(images, gts, predictions, str(tmp_path / "q.png"),
                                             "t")
    width, height = Image.open(path).size
    assert width == round(2.3 * 4 * 110) and height == round((0.9 * 2 + 0.6) * 110)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "q.png"]
