"""Tests of the domain probe: chance on one distribution, 1.0 on separable ones."""

from __future__ import annotations

import numpy as np
import pytest

from damono_jax.models import ResNet18Encoder
from damono_jax.tools import domain_probe
from tests import helpers


def test_probe_accuracy_is_chance_for_one_distribution_and_one_for_separable_ones():
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(100), np.zeros(100)]
    same = [rng.normal(size=(200, 8)) for _ in range(2)]
    chance = domain_probe.fit_probe(same[0], labels, same[1], labels)
    assert 0.35 <= chance <= 0.65
    shifted = [x + 3.0 * labels[:, None] for x in same]
    assert domain_probe.fit_probe(shifted[0], labels, shifted[1], labels) == 1.0


def test_pooled_features_are_the_spatial_means_of_the_five_levels():
    variables = helpers.random_depth_net_variables((64, 96))
    images = np.random.default_rng(1).uniform(0, 1, (3, 64, 96, 3)).astype(np.float32)
    features = domain_probe.pooled_features(variables, [images[:2], images[2:]])
    assert [f.shape for f in features] == [(3, 64), (3, 64), (3, 128), (3, 256), (3, 512)]
    encoder = ResNet18Encoder()
    direct = encoder.apply({"params": variables["params"]["encoder"],
                            "batch_stats": variables["batch_stats"]["encoder"]}, images)
    np.testing.assert_allclose(features[4], np.asarray(direct[4]).mean(axis=(1, 2)),
                               rtol=1e-4, atol=1e-5)


def test_probe_log_loss_moves_where_the_accuracy_is_saturated():
    from damono_jax.tools import alignment

    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(100), np.zeros(100)]
    same = [rng.normal(size=(200, 8)) for _ in range(2)]
    accuracy, log_loss = domain_probe.probe_scores(same[0], labels, same[1], labels)
    assert 0.35 <= accuracy <= 0.65 and abs(log_loss - alignment.CHANCE_LOG_LOSS) < 0.1
    near, far = ([x + shift * labels[:, None] for x in same] for shift in (3.0, 6.0))
    near_scores = domain_probe.probe_scores(near[0], labels, near[1], labels)
    far_scores = domain_probe.probe_scores(far[0], labels, far[1], labels)
    assert near_scores[0] == far_scores[0] == 1.0
    assert far_scores[1] < near_scores[1] < 0.1


def test_mmd_ratio_is_about_one_for_one_distribution_and_grows_with_the_shift():
    from damono_jax.tools import alignment

    rng = np.random.default_rng(0)
    halves = [rng.normal(size=(100, 16)) for _ in range(4)]
    # mmd2 of a set with itself is 0, and it is symmetric.
    assert alignment.mmd2(halves[0], halves[0], 1.0) == 0.0
    assert alignment.mmd2(halves[0], halves[1], 2.0) == pytest.approx(
        alignment.mmd2(halves[1], halves[0], 2.0), rel=1e-12)  # float64 sums in another order
    # Two more samples of the same distribution: about 1, with the spread of one split (200
    # draws: median 1.00, 95% of them in 0.48-2.19).
    nulls = []
    for seed in range(20):
        generator = np.random.default_rng(seed)
        sets = [generator.normal(size=(100, 16)) for _ in range(4)]
        nulls.append(alignment.mmd_ratio(sets[0], sets[1], sets[2], sets[3]))
    assert 0.8 < np.median(nulls) < 1.25 and max(nulls) < 3
    ratios = [alignment.mmd_ratio(halves[0], halves[2] + shift, halves[0], halves[1])
              for shift in (0.5, 1.0, 2.0)]
    assert 3 < ratios[0] < ratios[1] < ratios[2]
    with pytest.raises(ValueError, match="the reference sets are the same sample"):
        alignment.mmd_ratio(halves[0], halves[1], halves[2], halves[2])
    # 4 points at the corners of a unit square: pairwise distances 1 (x4) and sqrt 2 (x2).
    square = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    assert alignment.median_bandwidth(square[:2], square[2:]) == 1.0
