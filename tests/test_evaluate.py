"""Tests for damono_jax.evaluate: an exported model scored on a tiny synthetic TFDS split."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from damono_jax import errors, evaluation, export, input_pipeline
from damono_jax import evaluate as evaluate_cli
from damono_jax.inference import export_evaluation as evaluate
from damono_jax.inference import model as inference_model
from tests import helpers

INPUT_SIZE = (64, 96)
NUM_EXAMPLES = 3
DATASET = "synthetic_driving/target"


def random_depth_net_variables(seed: int = 0) -> dict:
    return helpers.random_depth_net_variables(INPUT_SIZE, seed)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    return helpers.build_tiny_dataset(tmp_path_factory.mktemp("tfds"), DATASET, NUM_EXAMPLES)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> str:
    directory = tmp_path_factory.mktemp("evaluate") / "export"
    metadata = {
        "model": {"upsample_mode": "bilinear"},
        "input_size": list(INPUT_SIZE),
        "min_depth": 0.1,
        "max_depth": 100.0,
        "units": "metres",
        "class_names": ["road"],
        "step": 12,
        "variant": "full",
    }
    export.save_export(directory, random_depth_net_variables(), metadata)
    return os.fspath(directory)


def test_evaluate_export_writes_the_table_json_and_csv(data_dir, export_dir, tmp_path, capsys):
    output = tmp_path / "results"
    result = evaluate.evaluate_export(
        export_dir, data_dir, split="test", dataset=DATASET, output_dir=output, batch_size=2,
        progress=False,
    )
    printed = capsys.readouterr().out
    print(printed)  # the table, visible with `pytest -s`
    assert "cap = 50m" in printed and "cap = 80m" in printed
    assert "DA-Monodepth full @ 12" in printed
    assert f"gt={DATASET}/test | images={NUM_EXAMPLES}" in printed

    # Independent scoring of the same predictions with evaluation.evaluate.
    model = inference_model.load_export(export_dir)
    examples = list(input_pipeline.create_eval_dataset(data_dir, DATASET, "test", INPUT_SIZE))
    images = np.zeros((4, *INPUT_SIZE, 3), np.float32)  # batch 2 twice: no new compilation
    images[:NUM_EXAMPLES] = [example["image"] for example in examples]
    disps = [*model.predict_scaled_disparity(images[:2]), *model.predict_scaled_disparity(
        images[2:])][:NUM_EXAMPLES]
    gts = [e["depth"] for e in examples]
    record = json.loads((output / "results.json").read_text())
    assert record["num_images"] == NUM_EXAMPLES and set(record["results"]) == {"80", "50"}
    assert [entry["name"] for entry in record["per_image"]] == [e["name"] for e in examples]
    for cap in (80, 50):
        # Not KITTI, so no Garg crop by default (evaluation.default_protocol).
        expected = evaluation.evaluate(gts, disps, cap=cap, crop="none", scaling="median")
        for name in evaluation.METRIC_NAMES:
            assert record["results"][str(cap)][name] == pytest.approx(expected[name], rel=1e-5)
        assert record["results"][str(cap)]["ratio_median"] == pytest.approx(
            expected["ratio_median"], rel=1e-5
        )
    with open(output / "results.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["cap"] for row in rows] == ["80", "50"]
    assert float(rows[0]["abs_rel"]) == pytest.approx(record["results"]["80"]["abs_rel"])
    assert result["results"]["80"]["fingerprint"] == record["results"]["80"]["fingerprint"]


def test_protocol_overrides_and_max_examples(data_dir, export_dir, tmp_path, capsys):
    result = evaluate.evaluate_export(
        export_dir, data_dir, split="test", dataset=DATASET, max_examples=2, caps=(None,),
        crop="none", scaling="none", output_dir=tmp_path, batch_size=2, progress=False,
    )
    assert result["num_images"] == 2
    fingerprint = result["results"]["none"]["fingerprint"]
    assert "cap=none (gt>0" in fingerprint and "crop=none" in fingerprint
    assert "scaling=none (metric)" in fingerprint and "images=2" in fingerprint
    assert "gt > 0 (no cap)" in capsys.readouterr().out


def test_default_protocol_per_dataset_and_split():
    assert evaluation.default_protocol("kitti_eigen", "test") == ((80, 50), "garg")
    assert evaluation.default_protocol("kitti_eigen/stereo", "val") == ((80, 50), "garg")
    assert evaluation.default_protocol("kitti_eigen", "eigen_benchmark") == ((None,), "none")
    assert evaluation.default_protocol("synthetic_driving/target", "test") == ((80, 50), "none")
    assert "annotated" in evaluate.gt_description("kitti_eigen", "eigen_benchmark")
    assert "LiDAR" in evaluate.gt_description("kitti_eigen", "test")


def test_bad_arguments_name_the_problem(data_dir, export_dir, tmp_path):
    with pytest.raises(ValueError, match="--split=nope: dataset .* has no such split"):
        evaluate.evaluate_export(export_dir, data_dir, split="nope", dataset=DATASET,
                                 output_dir=tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match="is not built in"):
        evaluate.evaluate_export(export_dir, tmp_path, dataset=DATASET, progress=False)
    with pytest.raises(errors.ExportError, match="export directory does not exist"):
        evaluate.evaluate_export(tmp_path / "missing", data_dir, dataset=DATASET)
    with pytest.raises(ValueError, match="--caps=80,60: each cap must be 50, 80 or none"):
        evaluate_cli.parse_caps("80,60")
    assert evaluate_cli.parse_caps("none,50") == (None, 50)
    with pytest.raises(ValueError, match="--scaling=-1: a fixed factor must be finite and > 0"):
        evaluate_cli.parse_scaling("-1")
    assert evaluate_cli.parse_scaling("5.4") == 5.4
    assert list(tmp_path.iterdir()) == []
