"""Tests for damono_jax.adabn: BatchNorm statistics re-estimated on target images."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from damono_jax import export, input_pipeline
from damono_jax.inference import adabn
from damono_jax.inference import model as inference_model
from damono_jax.models import resnet
from tests import helpers

INPUT_SIZE = (64, 96)
NUM_EXAMPLES = 5
DATASET = "synthetic_driving/target"


def _conv1_output(params: dict, images: np.ndarray) -> np.ndarray:
    """The encoder's first convolution by hand (its input normalisation, 7x7/2, pad 3)."""
    x = (images - resnet.MONODEPTH2_INPUT_MEAN) / resnet.MONODEPTH2_INPUT_STD
    return np.asarray(jax.lax.conv_general_dilated(
        x, params["encoder"]["conv1"]["kernel"], (2, 2), ((3, 3), (3, 3)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    ), np.float64)


def test_first_layer_statistics_equal_a_hand_computation_pooled_over_batches():
    variables = helpers.random_depth_net_variables(INPUT_SIZE)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (5, *INPUT_SIZE, 3)).astype(np.float32)
    # Batches of 3 and 2: the pooled statistics are those of all 5 images.
    stats = adabn.reestimate_encoder_stats(variables["params"]["encoder"],
                                           [images[:3], images[3:]])
    features = _conv1_output(variables["params"], images)
    np.testing.assert_allclose(stats["bn1"]["mean"], features.mean(axis=(0, 1, 2)),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats["bn1"]["var"], features.var(axis=(0, 1, 2)),
                               rtol=1e-4, atol=1e-5)
    assert stats["bn1"]["mean"].shape == (64,) and stats["bn1"]["mean"].dtype == np.float32


def test_deeper_layers_pool_per_batch_moments_exactly():
    """var = E_b[var_b + mean_b^2] - mean^2: one batch's moments from a training-mode pass."""
    variables = helpers.random_depth_net_variables(INPUT_SIZE)
    params = variables["params"]["encoder"]
    rng = np.random.default_rng(1)
    first, second = (rng.uniform(0, 1, (n, *INPUT_SIZE, 3)).astype(np.float32) for n in (2, 3))
    one = [adabn.reestimate_encoder_stats(params, [b])["layer4_1"]["bn2"] for b in (first, second)]
    pooled = adabn.reestimate_encoder_stats(params, [first, second])["layer4_1"]["bn2"]
    mean = (2 * one[0]["mean"] + 3 * one[1]["mean"]) / 5
    square = sum(w * (m["var"] + m["mean"] ** 2) for w, m in zip((2, 3), one, strict=True)) / 5
    np.testing.assert_allclose(pooled["mean"], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled["var"], square - mean**2, rtol=1e-4, atol=1e-6)
    # The two batches differ, so pooling is not a no-op.
    assert np.abs(one[0]["mean"] - one[1]["mean"]).max() > 1e-3


def test_adapt_variables_keeps_the_weights_and_replaces_every_statistic():
    variables = helpers.random_depth_net_variables(INPUT_SIZE)
    images = np.random.default_rng(2).uniform(0, 1, (4, *INPUT_SIZE, 3)).astype(np.float32)
    adapted = adabn.adapt_variables(variables, [images])
    assert adapted["params"] is variables["params"]
    old = jax.tree.leaves(variables["batch_stats"])
    new = jax.tree.leaves(adapted["batch_stats"])
    assert len(old) == len(new) == 40  # 20 BatchNorm layers x (mean, var)
    assert all(a.shape == b.shape and not np.allclose(a, b) for a, b in zip(old, new, strict=True))


def test_empty_or_malformed_batches_are_errors():
    params = helpers.random_depth_net_variables(INPUT_SIZE)["params"]["encoder"]
    with pytest.raises(ValueError, match="no images"):
        adabn.reestimate_encoder_stats(params, [])
    with pytest.raises(ValueError, match=r"expected \(b, H, W, 3\) batches, got \(2, 64, 96\)"):
        adabn.reestimate_encoder_stats(params, [np.zeros((2, *INPUT_SIZE), np.float32)])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    return helpers.build_tiny_dataset(tmp_path_factory.mktemp("tfds"), DATASET, NUM_EXAMPLES)


def test_adapt_export_writes_a_new_export_with_target_statistics(data_dir, tmp_path):
    source = tmp_path / "export"
    metadata = {"model": {"upsample_mode": "bilinear"}, "input_size": list(INPUT_SIZE),
                "min_depth": 1.0, "max_depth": 100.0, "units": "metres",
                "class_names": ["road"], "step": 3, "variant": "baseline"}
    export.save_export(source, helpers.random_depth_net_variables(INPUT_SIZE), metadata)
    adapted_dir = adabn.adapt_export(source, data_dir, DATASET, "train", tmp_path / "adapted",
                                     batch_size=2)
    adapted = inference_model.load_export(adapted_dir)
    record = json.loads((adapted_dir / "metadata.json").read_text())["adabn"]
    assert record["num_images"] == NUM_EXAMPLES and record["split"] == "train"
    assert record["batch_size"] == 2 and record["dataset"] == DATASET
    batches = list(input_pipeline.create_image_batches(data_dir, DATASET, "train", INPUT_SIZE, 2))
    assert [len(b) for b in batches] == [2, 2, 1]
    original = inference_model.load_export(source)
    expected = adabn.reestimate_encoder_stats(original.variables["params"]["encoder"], batches)
    np.testing.assert_allclose(adapted.variables["batch_stats"]["encoder"]["bn1"]["var"],
                               expected["bn1"]["var"], rtol=1e-6)
    images = np.concatenate(batches)[:2]
    assert not np.allclose(adapted.predict_disparity(images), original.predict_disparity(images))
    with pytest.raises(FileExistsError, match="already exists"):
        adabn.adapt_export(source, data_dir, DATASET, "train", adapted_dir)
    with pytest.raises(ValueError, match="has no split 'nope'"):
        adabn.adapt_export(source, data_dir, DATASET, "nope", tmp_path / "other")
    assert not (tmp_path / "other").exists()
