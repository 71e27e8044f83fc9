"""Smoke run of the embedded demo: build, train, export, evaluate and predict in one call.

Tiny everywhere (8 frames per split, 32x96 images, batch 2, 2 train steps) so the whole
chain runs in well under a minute on 2 CPU cores; the numbers are not meant to be good,
only finite and consistent between what `run_demo` returns and what it writes.
"""

import json
import math
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from configs import synthetic
from damono_jax.tools import demo
from tests.helpers import fast_compilation  # noqa: F401 (autouse fixture)

MAX_EXAMPLES = 8
IMAGE_SIZE = (32, 96)
NUM_PREDICT = 2


def smoke_config():
    config = synthetic.get_config("full")
    config.data.image_size = IMAGE_SIZE
    config.data.shuffle_buffer = MAX_EXAMPLES
    config.batch_size = 2
    config.num_train_steps = 2
    config.log_every_steps = 1
    config.image_log_every_steps = 2
    config.eval_every_steps = 2
    config.num_eval_examples = 2
    config.checkpoint_every_steps = 2
    config.keep_checkpoints = 1
    config.grl.collapse_patience = 2
    return config


def test_demo_builds_trains_exports_evaluates_and_predicts(tmp_path, capsys):
    everything = demo.run_demo(
        smoke_config(), str(tmp_path), num_predict_images=NUM_PREDICT,
        max_examples_per_split=MAX_EXAMPLES,
    )
    printed = capsys.readouterr().out
    assert set(everything) == {"source", "target"}
    returned = everything["target"]

    for number, title in enumerate(
        ["Build the synthetic", "Train the 'full' model (2 steps)", "Export the inference",
         "Evaluate on the test splits of the source and the target",
         "Predict metric depth for a few target images; draw the showcase"], start=1,
    ):
        assert f"=== [{number}/5] {title}" in printed
    assert "--max_examples_per_split=8" in printed
    assert printed.rstrip().endswith(demo.ABLATION_FINDING)

    # Both datasets were built with 8 frames in each split.
    for domain in ("source", "target"):
        sizes = {
            split: info.num_examples
            for split, info in tfds.builder(
                f"synthetic_driving/{domain}", data_dir=tmp_path / "data"
            ).info.splits.items()
        }
        assert sizes == {"train": MAX_EXAMPLES, "val": MAX_EXAMPLES, "test": MAX_EXAMPLES}

    # Evaluation: the KITTI caps on all 8 target test frames, finite, saved as returned.
    assert returned["num_images"] == MAX_EXAMPLES
    assert returned["step"] == 2
    assert set(returned["results"]) == {"80", "50"}
    for cap, metrics in returned["results"].items():
        for name in ("abs_rel", "rmse", "a1"):
            assert math.isfinite(metrics[name]), (cap, name, metrics[name])
        assert metrics["abs_rel"] > 0 and metrics["rmse"] > 0
        assert 0 <= metrics["a1"] <= 1
        assert metrics["protocol"]["crop"] == "none"
    eval_dir = tmp_path / "eval_target_test"
    assert returned["output_dir"] == str(eval_dir)
    saved = json.loads((eval_dir / "results.json").read_text())
    assert saved == {k: v for k, v in returned.items() if k not in ("table", "output_dir")}
    assert (eval_dir / "results.csv").is_file()

    # Export: metadata for the configured input size and the last step.
    metadata = json.loads((tmp_path / "full" / "export" / "metadata.json").read_text())
    assert metadata["input_size"] == list(IMAGE_SIZE)
    assert metadata["step"] == 2

    # Prediction: one depth .npy, 16-bit PNG and colour PNG per sample image.
    samples = sorted(os.listdir(tmp_path / "sample_images"))
    assert len(samples) == NUM_PREDICT
    stems = [name.removesuffix(".png") for name in samples]
    predictions = tmp_path / "predictions"
    expected = {"prediction.json"}
    for stem in stems:
        expected |= {f"{stem}.npy", f"{stem}_depth16.png", f"{stem}_color.png"}
    assert set(os.listdir(predictions)) == expected
    for stem in stems:
        depth = np.load(predictions / f"{stem}.npy")
        height, width = Image.open(tmp_path / "sample_images" / f"{stem}.png").size[::-1]
        assert depth.shape == (height, width)
        assert depth.dtype == np.float32
        assert np.all(np.isfinite(depth)) and np.all(depth > 0)
    assert f"predicted depth:    {predictions / (stems[0] + '_color.png')}" in printed

    # The showcase: one picture, two domains over three rows of panels.
    showcase = Image.open(tmp_path / "showcase.png")
    assert showcase.mode in ("RGB", "RGBA") and showcase.size[0] > showcase.size[1] > 300
    assert f"what it learned:    {tmp_path / 'showcase.png'}" in printed

    # The floor: the per-pixel median of the 8 source training depth maps, scored on the 8
    # test frames of each domain exactly as evaluation.evaluate scores a constant prediction.
    from damono_jax import constant_prior, evaluation, input_pipeline

    data_dir = str(tmp_path / "data")
    train = [e["depth"] for e in input_pipeline.create_eval_dataset(
        data_dir, "synthetic_driving/source", "train", (32, 32))]
    prior = constant_prior.median_depth_map(train)
    scores = {}
    for domain in ("source", "target"):
        assert (tmp_path / f"eval_{domain}_test" / "results.json").is_file()
        gts = [e["depth"] for e in input_pipeline.create_eval_dataset(
            data_dir, f"synthetic_driving/{domain}", "test", (32, 32))]
        floor = evaluation.evaluate(gts, [1.0 / prior] * len(gts), cap=80,
                                    crop="none")["abs_rel"]
        scores[domain] = (everything[domain]["results"]["80"]["abs_rel"], floor)
        assert demo.floor_comparison(domain, *scores[domain]) in printed
    assert demo.closing_lines(scores, 2) in printed


def test_floor_comparison_and_the_closing_lines_say_what_was_learned_and_what_transfers():
    assert demo.floor_comparison("source", 0.25, 0.32) == (
        "    source test AbsRel (cap 80 m): model 0.250, constant floor 0.320 (the per-pixel "
        "median of the source training depth, one map for every image)")
    lines = demo.closing_lines({"source": (0.221, 0.320), "target": (0.391, 0.322)},
                               150).splitlines()
    assert lines == [
        "The model learned the scenes it was trained on: on the source it is better than the "
        "constant floor (AbsRel 0.221 against 0.320).",
        "It does not yet transfer to the target at 150 steps from scratch: AbsRel 0.391, WORSE "
        "than the constant floor (0.322).",
        "What adapts, and by how much: docs/adaptation_campaign.md and "
        "docs/adaptation_family.md.",
    ]
    lines = demo.closing_lines({"source": (0.33, 0.32), "target": (0.30, 0.32)}, 2)
    assert lines.splitlines()[:2] == [
        "The model has not learned the source yet: AbsRel 0.330, no better than the constant "
        "floor (0.320).",
        "On the target it beats the floor too (AbsRel 0.300 against 0.320).",
    ]


def test_demo_rejects_a_bad_max_examples_per_split(tmp_path):
    with pytest.raises(ValueError, match=r"--max_examples_per_split: must be >= 1, got 0"):
        demo.run_demo(smoke_config(), str(tmp_path), max_examples_per_split=0)
    assert not (tmp_path / "data").exists()


def test_the_showcase_frame_is_the_source_median():
    from damono_jax.tools import showcase

    per_image = [{"name": name, "cap_80": {"abs_rel": value}}
                 for name, value in (("a", 0.5), ("b", 0.1), ("c", 0.3), ("d", 0.2))]
    assert showcase.median_frame(per_image) == "d"  # 0.1 0.2 | 0.3 0.5: the lower middle
    assert showcase.median_frame(per_image[:3]) == "c"
