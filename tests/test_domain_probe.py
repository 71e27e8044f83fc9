"""Tests of the domain probe: chance on one distribution, 1.0 on separable ones."""

from __future__ import annotations

import numpy as np

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
