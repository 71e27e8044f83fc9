"""Tests for damono_jax.evaluation: the KITTI protocol (metrics, masks, crop, scaling)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from damono_jax import evaluation
from tests.helpers import random_gt


def reference_errors(gt: np.ndarray, pred: np.ndarray) -> list[float]:
    """Independent metrics, written pixel by pixel in plain Python."""
    n = len(gt)
    abs_rel = sum(abs(g - p) / g for g, p in zip(gt, pred, strict=True)) / n
    sq_rel = sum((g - p) ** 2 / g for g, p in zip(gt, pred, strict=True)) / n
    rmse = (sum((g - p) ** 2 for g, p in zip(gt, pred, strict=True)) / n) ** 0.5
    rmse_log = (
        sum((np.log(g) - np.log(p)) ** 2 for g, p in zip(gt, pred, strict=True)) / n
    ) ** 0.5
    ratio = [max(g / p, p / g) for g, p in zip(gt, pred, strict=True)]
    a1, a2, a3 = (sum(r < 1.25**k for r in ratio) / n for k in (1, 2, 3))
    return [abs_rel, sq_rel, rmse, rmse_log, a1, a2, a3]


def torch_resize(disp: np.ndarray, height: int, width: int) -> np.ndarray:
    tensor = torch.from_numpy(np.asarray(disp, np.float32))[None, None]
    resized = torch.nn.functional.interpolate(
        tensor, size=(height, width), mode="bilinear", align_corners=False, antialias=False
    )
    return resized[0, 0].numpy()


def reference_evaluate(gt_depths, pred_disps, min_depth, max_depth, crop, median):
    """Monodepth2's evaluate_depth.py loop re-written with torch resizing."""
    errors, ratios = [], []
    for gt, disp in zip(gt_depths, pred_disps, strict=True):
        h, w = gt.shape
        pred = 1.0 / torch_resize(disp, h, w)
        mask = np.logical_and(gt > min_depth, gt < max_depth)
        if crop:
            c = np.array(
                [0.40810811 * h, 0.99189189 * h, 0.03594771 * w, 0.96405229 * w]
            ).astype(np.int32)
            crop_mask = np.zeros(mask.shape)
            crop_mask[c[0] : c[1], c[2] : c[3]] = 1
            mask = np.logical_and(mask, crop_mask)
        g, p = gt[mask], pred[mask]
        if median:
            ratio = np.median(g) / np.median(p)
            ratios.append(ratio)
            p = p * ratio
        p = np.clip(p, min_depth, max_depth)
        errors.append(reference_errors(g.astype(np.float64), p.astype(np.float64)))
    return np.mean(np.array(errors), axis=0), np.array(ratios)


def test_compute_errors_matches_independent_implementation():
    rng = np.random.default_rng(0)
    gt = rng.uniform(1.0, 80.0, size=500)
    pred = gt * rng.uniform(0.6, 1.6, size=500)
    errors = evaluation.compute_errors(gt, pred)
    assert list(errors) == list(evaluation.METRIC_NAMES)
    np.testing.assert_allclose(
        [errors[name] for name in evaluation.METRIC_NAMES], reference_errors(gt, pred), rtol=1e-10
    )
    assert 0.0 < errors["a1"] < errors["a2"] < errors["a3"] <= 1.0


def test_perfect_prediction_scores_zero_error():
    rng = np.random.default_rng(1)
    gt = random_gt(rng, 40, 120)
    disp = np.where(gt > 0, 1.0 / np.maximum(gt, 1e-6), 1.0).astype(np.float32)
    results = evaluation.evaluate([gt], [disp], cap=80, crop="none", scaling="none")
    assert results["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    assert results["rmse"] == pytest.approx(0.0, abs=1e-4)
    assert results["a1"] == 1.0 and results["a3"] == 1.0
    assert results["ratio_median"] is None and results["num_images"] == 1


def test_median_scaling_makes_a_constant_multiple_perfect():
    rng = np.random.default_rng(2)
    gts = [random_gt(rng, 30, 90), random_gt(rng, 36, 100)]
    factors = [3.0, 0.25]
    disps = [
        np.where(gt > 0, 1.0 / (factor * np.maximum(gt, 1e-6)), 1.0).astype(np.float32)
        for gt, factor in zip(gts, factors, strict=True)
    ]
    scaled = evaluation.evaluate(gts, disps, cap=80, crop="none", scaling="median")
    assert scaled["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    assert scaled["a1"] == 1.0
    ratios = [1 / factor for factor in factors]
    np.testing.assert_allclose(scaled["ratio_median"], np.median(ratios), rtol=1e-6)
    np.testing.assert_allclose(
        scaled["ratio_std"], np.std(np.array(ratios) / np.median(ratios)), rtol=1e-6
    )
    unscaled = evaluation.evaluate(gts, disps, cap=80, crop="none", scaling="none")
    assert unscaled["abs_rel"] > 0.5
    fixed = evaluation.evaluate(gts[:1], disps[:1], cap=80, crop="none", scaling=1 / 3.0)
    assert fixed["abs_rel"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    ("size", "bounds"),
    [
        ((375, 1242), (153, 371, 44, 1197)),
        ((370, 1224), (151, 366, 43, 1180)),
        ((374, 1238), (152, 370, 44, 1193)),
        ((370, 1226), (151, 366, 44, 1181)),
        ((376, 1241), (153, 372, 44, 1196)),
    ],
)
def test_garg_crop_bounds_for_the_five_kitti_sizes(size, bounds):
    assert evaluation.garg_crop_bounds(*size) == bounds
    mask = evaluation.evaluation_mask(np.full(size, 10.0, np.float32), cap=80, crop="garg")
    top, bottom, left, right = bounds
    assert mask.sum() == (bottom - top) * (right - left)
    assert mask[top, left] and mask[bottom - 1, right - 1]
    assert not mask[top - 1, left] and not mask[bottom, left] and not mask[top, right]


def test_cap_masks_are_strict_with_the_right_minimum():
    values = [0.0, 1e-3, 2e-3, 0.5, 1.0, 1.5, 49.9, 50.0, 60.0, 79.9, 80.0, 85.0]
    gt = np.array([values], dtype=np.float64)
    mask80 = evaluation.evaluation_mask(gt, cap=80, crop="none")[0]
    mask50 = evaluation.evaluation_mask(gt, cap=50, crop="none")[0]
    uncapped = evaluation.evaluation_mask(gt, cap=None, crop="none")[0]
    assert [v for v, m in zip(values, mask80, strict=True) if m] == [
        2e-3, 0.5, 1.0, 1.5, 49.9, 50.0, 60.0, 79.9
    ]
    assert [v for v, m in zip(values, mask50, strict=True) if m] == [1.5, 49.9]
    assert [v for v, m in zip(values, uncapped, strict=True) if m] == values[1:]


def test_predictions_are_clamped_to_the_cap_range():
    gt = np.array([[10.0, 20.0, 40.0]], np.float32)
    disp = np.array([[1 / 10.0, 1 / 20.0, 1 / 200.0]], np.float32)  # last pixel 200 m
    results = evaluation.evaluate([gt], [disp], cap=50, crop="none", scaling="none")
    clamped = np.array([10.0, 20.0, 50.0])
    expected = reference_errors(gt[0].astype(np.float64), clamped)
    np.testing.assert_allclose(results["abs_rel"], expected[0], rtol=1e-6)


@pytest.mark.parametrize("target", [(375, 1242), (13, 17), (96, 320)])
def test_resize_bilinear_matches_torch(target):
    disp = np.random.default_rng(3).uniform(0.01, 1.0, size=(48, 160)).astype(np.float32)
    np.testing.assert_allclose(
        evaluation.resize_bilinear(disp, *target), torch_resize(disp, *target), atol=2e-6
    )


@pytest.mark.parametrize(("cap", "limits"), [(80, (1e-3, 80.0)), (50, (1.0, 50.0))])
@pytest.mark.parametrize("scaling", ["median", "none"])
def test_evaluate_matches_monodepth2_loop_on_ragged_inputs(cap, limits, scaling):
    rng = np.random.default_rng(4)
    sizes = [(375, 1242), (370, 1224), (40, 130)]
    gts = [random_gt(rng, h, w, density=0.05) for h, w in sizes]
    disps = [
        rng.uniform(0.02, 0.5, size=(24 + 8 * i, 80)).astype(np.float32) for i in range(3)
    ]
    results = evaluation.evaluate(gts, disps, cap=cap, crop="garg", scaling=scaling)
    expected, ratios = reference_evaluate(gts, disps, *limits, True, scaling == "median")
    got = [results[name] for name in evaluation.METRIC_NAMES]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    assert results["num_images"] == 3 and len(results["per_image"]) == 3
    if scaling == "median":
        assert results["ratio_median"] == pytest.approx(np.median(ratios), rel=1e-6)
        assert results["ratio_std"] == pytest.approx(
            np.std(ratios / np.median(ratios)), rel=1e-5
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cap": 70}, "cap: expected one of [50, 80] or None, got 70"),
        ({"crop": "eigen"}, "crop: expected one of ('garg', 'none'), got 'eigen'"),
        ({"scaling": "mean"}, "scaling: expected 'median', 'none' or a positive number"),
        ({"scaling": -2.0}, "scaling: a fixed factor must be finite and > 0"),
    ],
)
def test_bad_protocol_arguments_are_rejected(kwargs, message):
    gt = np.full((20, 30), 10.0, np.float32)
    with pytest.raises(ValueError, match=re.escape(message)):
        evaluation.evaluate([gt], [np.full((20, 30), 0.1, np.float32)], **kwargs)


def test_bad_inputs_name_the_image():
    gt = np.full((20, 30), 10.0, np.float32)
    good = np.full((20, 30), 0.1, np.float32)
    with pytest.raises(ValueError, match="2 GT maps but 1 predicted"):
        evaluation.evaluate([gt, gt], [good])
    with pytest.raises(ValueError, match=r"pred_disps\[1\]: disparities must be finite and > 0"):
        evaluation.evaluate([gt, gt], [good, np.zeros_like(good)], crop="none")
    with pytest.raises(ValueError, match=r"gt_depths\[0\]: no valid ground-truth pixels"):
        evaluation.evaluate([np.zeros_like(gt)], [good], crop="none")
    evaluator = evaluation.Evaluator(caps=(80,), crop="none")
    evaluator.add(gt, good, "test/frame_0000")
    with pytest.raises(ValueError, match=r"^gt_depths\[1\] \(frame test/frame_0001\): no valid "
                                         r"ground-truth pixels under cap=80, crop=none$"):
        evaluator.add(np.zeros_like(gt), good, "test/frame_0001")
    with pytest.raises(ValueError, match=r"pred_disps\[0\]: expected a 2-D"):
        evaluation.evaluate([gt], [good[None, None]], crop="none")
    with pytest.raises(ValueError, match="no images"):
        evaluation.evaluate([], [])
    with pytest.raises(ValueError, match="gt and pred must be > 0"):
        evaluation.compute_errors(np.array([1.0, 0.0]), np.array([1.0, 1.0]))


def test_streaming_evaluator_matches_evaluate_for_every_cap():
    rng = np.random.default_rng(6)
    gts = [random_gt(rng, 60, 200), random_gt(rng, 50, 150)]
    disps = [rng.uniform(0.02, 0.5, size=(32, 96)).astype(np.float32) for _ in gts]
    evaluator = evaluation.Evaluator(caps=(80, 50, None), crop="garg", gt_source="fixture")
    for index, (gt, disp) in enumerate(zip(gts, disps, strict=True)):
        evaluator.add(gt, disp, name=f"frame{index}")
    assert evaluator.names == ["frame0", "frame1"]
    streamed = evaluator.results()
    for cap in (80, 50, None):
        expected = evaluation.evaluate(gts, disps, cap=cap, crop="garg", gt_source="fixture")
        assert streamed[cap] == expected
    with pytest.raises(ValueError, match="expected distinct caps"):
        evaluation.Evaluator(caps=(80, 80))
