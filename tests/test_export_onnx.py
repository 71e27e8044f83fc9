"""damono_jax.export_onnx: the ONNX file runs in onnxruntime like the JAX network."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from damono_jax import export
from damono_jax.errors import ExportError
from damono_jax.inference import model as inference_model
from damono_jax.inference import onnx_model
from tests import helpers

INPUT_SIZE = (64, 128)  # not (64, 96): test_predict counts compilations at that size


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory):
    directory = tmp_path_factory.mktemp("onnx") / "export"
    metadata = {
        "model": {"architecture": "DepthNet", "upsample_mode": "bilinear"},
        "input_size": list(INPUT_SIZE), "min_depth": 0.1, "max_depth": 100.0,
        "units": "metres", "class_names": ["road"], "step": 3,
    }
    export.save_export(directory, helpers.random_depth_net_variables(INPUT_SIZE, 4), metadata)
    description = onnx_model.export_onnx(directory)
    return directory, description


def test_onnx_matches_jax_for_other_batches_and_records_its_interface(onnx_export):
    directory, description = onnx_export
    assert sorted(p.name for p in directory.iterdir()) == [
        "metadata.json", "model.onnx", "variables"
    ]
    metadata = json.loads((directory / "metadata.json").read_text())
    assert metadata["onnx"] == description
    assert description["input"]["shape"] == ["batch", *INPUT_SIZE, 3]
    assert description["input"]["layout"] == "NHWC" and description["input"]["range"] == [0, 1]
    assert description["outputs"]["depth"]["units"] == "metres"
    assert description["outputs"]["depth"]["range"] == [0.1, 100.0]
    assert description["parity"]["max_abs_disparity_difference"] <= 1e-4
    model = inference_model.load_export(directory)  # still a valid export
    predict = onnx_model.load_onnx(directory / "model.onnx")
    for batch_size in (1, 3):  # the batch dimension is free
        images = np.random.default_rng(batch_size).random((batch_size, *INPUT_SIZE, 3),
                                                          dtype=np.float32)
        outputs = predict(images)
        assert outputs["disparity"].shape == (batch_size, *INPUT_SIZE)
        assert np.abs(outputs["disparity"] - model.predict_disparity(images)).max() <= 1e-4
        np.testing.assert_allclose(outputs["depth"], model.predict_depth(images), rtol=1e-4)


def test_a_failed_parity_check_writes_nothing(onnx_export):
    directory, _ = onnx_export
    before = (directory / "metadata.json").read_text()
    (directory / "model.onnx").unlink()
    with pytest.raises(ExportError, match=r"model\.onnx: onnxruntime's disparity differs from "
                                          r"JAX's by .* \(> --tolerance=0\); not written"):
        onnx_model.export_onnx(directory, tolerance=0.0, batch_size=1, seed=1)
    assert sorted(p.name for p in directory.iterdir()) == ["metadata.json", "variables"]
    assert (directory / "metadata.json").read_text() == before


def test_cli_names_a_missing_export(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "damono_jax.export_onnx", f"--export={tmp_path / 'none'}"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'none'}: export directory does not exist"
    )
