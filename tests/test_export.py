"""Tests for damono_jax.export: Orbax export round trip, metadata contract, SavedModel parity."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from configs import default
from damono_jax import errors, export, export_format
from damono_jax.inference import model as inference_model
from damono_jax.inference import saved_model
from damono_jax.models import DAMonodepth
from tests import helpers

INPUT_SIZE = (64, 96)


def random_depth_net_variables(seed: int = 0) -> dict:
    return helpers.random_depth_net_variables(INPUT_SIZE, seed)


def make_metadata(**overrides) -> dict:
    metadata = {
        "model": {"architecture": "DepthNet", "upsample_mode": "bilinear"},
        "input_size": list(INPUT_SIZE),
        "min_depth": 0.1,
        "max_depth": 100.0,
        "units": "metres",
        "class_names": ["road", "car"],
        "step": 7,
        "train_focal_x_normalized": 0.58,
    }
    metadata.update(overrides)
    return metadata


@pytest.fixture(scope="module")
def variables():
    return random_depth_net_variables()


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, variables):
    directory = tmp_path_factory.mktemp("export") / "export"
    export.save_export(directory, variables, make_metadata())
    return directory


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).random((2, *INPUT_SIZE, 3), dtype=np.float32)


def test_export_reload_predict_is_identical(export_dir, variables, images):
    assert sorted(p.name for p in export_dir.iterdir()) == ["metadata.json", "variables"]
    assert not [p for p in export_dir.parent.iterdir() if p.name.startswith(".")]
    model = inference_model.load_export(export_dir)
    assert model.metadata["step"] == 7 and model.metadata["units"] == "metres"
    assert model.metadata["format_version"] == export_format.EXPORT_FORMAT_VERSION
    assert model.input_size == INPUT_SIZE
    for restored, original in zip(
        jax.tree.leaves(model.variables), jax.tree.leaves(variables), strict=True
    ):
        np.testing.assert_array_equal(restored, original)
    disparity = model.predict_disparity(images)
    assert disparity.shape == (2, *INPUT_SIZE) and disparity.dtype == np.float32
    assert np.all((disparity > 0) & (disparity < 1))
    compiled = model.compiled_shapes
    in_memory = inference_model.InferenceModel(make_metadata(), variables)
    np.testing.assert_array_equal(in_memory.predict_disparity(images), disparity)
    depth = model.predict_depth(images * 0.5)
    assert model.compiled_shapes == compiled  # one compilation per input shape
    sigma = model.predict_disparity(images * 0.5)
    np.testing.assert_allclose(depth, 1.0 / (0.01 + (10.0 - 0.01) * sigma), rtol=1e-5)
    np.testing.assert_allclose(
        model.predict_scaled_disparity(images), 1.0 / model.predict_depth(images), rtol=1e-5
    )


def full_model_variables(config) -> dict:
    """Random DAMonodepth ("full" variant) variables, built from `eval_shape`."""
    model = DAMonodepth.from_config(config.model, config.variant)
    images = jax.ShapeDtypeStruct((2, *INPUT_SIZE, 3), np.float32)
    abstract = jax.eval_shape(
        lambda x: model.init(jax.random.key(0), x, x, grl_scale=np.float32(0), train=False),
        images,
    )
    rng = np.random.default_rng(3)

    def fill(path, leaf):
        if "var" in jax.tree_util.keystr(path):
            return np.ones(leaf.shape, np.float32)
        return (0.05 * rng.standard_normal(leaf.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, abstract)


def test_export_from_train_state_and_saved_model_parity(images, tmp_path):
    config = default.get_config()
    config.data.image_size = INPUT_SIZE
    variables = full_model_variables(config)
    assert "domain_classifier" in variables["params"]
    export_dir = export.export_from_train_state(
        config, variables["params"], variables["batch_stats"], tmp_path / "export", step=123,
        train_focal_x_normalized=725 / 1242, also_write=saved_model.write_into_export,
    )
    assert sorted(p.name for p in export_dir.iterdir()) == [
        "metadata.json", "saved_model", "variables"
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["export"]
    model = inference_model.load_export(export_dir)
    metadata = model.metadata
    assert metadata["step"] == 123 and metadata["input_size"] == list(INPUT_SIZE)
    assert (metadata["min_depth"], metadata["max_depth"]) == (1.0, 100.0)
    assert metadata["class_names"][:2] == ["road", "sidewalk"]
    assert len(metadata["class_names"]) == 19
    assert metadata["source_dataset"] == "vkitti/v1"
    assert metadata["train_focal_x_normalized"] == pytest.approx(725 / 1242)
    assert sorted(model.variables["params"]) == ["depth_decoder", "encoder", "shared_block"]

    predict = saved_model.load_saved_model(export_dir / "saved_model")
    expected_disparity = model.predict_disparity(images)
    expected_depth = model.predict_depth(images)
    for batch_size in (2, 1):  # the SavedModel's batch dimension is polymorphic
        outputs = predict(images[:batch_size])
        assert outputs["disparity"].shape == (batch_size, *INPUT_SIZE)
        disparity_diff = np.abs(outputs["disparity"] - expected_disparity[:batch_size]).max()
        assert disparity_diff <= 1e-4
        np.testing.assert_allclose(outputs["depth"], expected_depth[:batch_size], rtol=1e-4)
    saved_metadata = json.loads((export_dir / "saved_model" / "metadata.json").read_text())
    assert saved_metadata["step"] == 123


def test_overwrite_is_atomic_and_can_be_refused(tmp_path, variables):
    target = tmp_path / "export"
    export.save_export(target, variables, make_metadata(step=1))
    export.save_export(target, variables, make_metadata(step=2))
    assert export_format.read_metadata(target)["step"] == 2
    with pytest.raises(FileExistsError, match="already exists"):
        export.save_export(target, variables, make_metadata(step=3), overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_bad_metadata_or_variables_write_nothing(tmp_path, variables):
    target = tmp_path / "export"
    with pytest.raises(errors.ExportError, match=r"missing metadata keys \['units'\]"):
        metadata = make_metadata()
        del metadata["units"]
        export.save_export(target, variables, metadata)
    with pytest.raises(errors.ExportError, match="'input_size' must be .* multiples of 32"):
        export.save_export(target, variables, make_metadata(input_size=[60, 96]))
    with pytest.raises(errors.ExportError, match="need 0 < min_depth < max_depth"):
        export.save_export(target, variables, make_metadata(min_depth=10.0, max_depth=1.0))
    broken = jax.tree.map(lambda x: x, variables)
    broken["params"]["depth_decoder"] = {}
    with pytest.raises(errors.ExportError, match="not DepthNet variables: missing"):
        export.save_export(target, broken, make_metadata())
    with pytest.raises(KeyError, match="variables must have 'params' and 'batch_stats'"):
        export.save_export(target, {"params": variables["params"]}, make_metadata())
    assert list(tmp_path.iterdir()) == []


def test_missing_or_corrupt_exports_name_the_path(tmp_path, export_dir):
    missing = tmp_path / "nowhere"
    with pytest.raises(errors.ExportError, match=f"{missing}: export directory does not exist"):
        inference_model.load_export(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(errors.ExportError, match="metadata.json: missing"):
        inference_model.load_export(empty)
    (empty / "metadata.json").write_text('{"model": {"upsample_mode": "bilinear"},\n "step": }')
    with pytest.raises(errors.ExportError, match="metadata.json: line 2: invalid JSON"):
        inference_model.load_export(empty)
    (empty / "metadata.json").write_text(json.dumps(make_metadata()))
    with pytest.raises(errors.ExportError, match="variables: missing"):
        inference_model.load_export(empty)
    mismatched = tmp_path / "mismatched"
    mismatched.mkdir()
    (mismatched / "variables").symlink_to(Path(export_dir) / "variables")
    (mismatched / "metadata.json").write_text(
        json.dumps(make_metadata(model={"upsample_mode": "nearest"}, input_size=[32, 32]))
    )
    model = inference_model.load_export(mismatched)  # upsampling and size do not change the params
    assert model.input_size == (32, 32)
    (mismatched / "metadata.json").write_text(json.dumps(make_metadata(units="feet")))
    with pytest.raises(errors.ExportError, match="key 'units' must be 'metres', got 'feet'"):
        inference_model.load_export(mismatched)


def test_predict_rejects_bad_images(export_dir):
    model = inference_model.load_export(export_dir)
    with pytest.raises(ValueError, match=r"images: expected NHWC RGB images \(B, H, W, 3\)"):
        model.predict_disparity(np.zeros((64, 96, 3), np.float32))
    with pytest.raises(ValueError, match="expected float32 in"):
        model.predict_disparity(np.zeros((1, 64, 96, 3), np.uint8))
    with pytest.raises(ValueError, match="not a positive multiple of 32"):
        model.predict_disparity(np.zeros((1, 60, 96, 3), np.float32))


def test_prepare_image_resizes_uint8_to_the_input_size():
    image = np.full((375, 1242, 3), 255, np.uint8)
    prepared = inference_model.prepare_image(image, INPUT_SIZE)
    assert prepared.shape == (*INPUT_SIZE, 3) and prepared.dtype == np.float32
    np.testing.assert_allclose(prepared, 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="expected uint8 RGB"):
        inference_model.prepare_image(image.astype(np.float32), INPUT_SIZE)


def test_prepare_image_matches_the_eval_input_pipeline():
    from damono_jax import preprocessing

    image = np.random.default_rng(2).integers(0, 256, size=(75, 250, 3), dtype=np.uint8)
    expected = preprocessing.resize_image(image, INPUT_SIZE).numpy()
    prepared = inference_model.prepare_image(image, INPUT_SIZE)
    np.testing.assert_allclose(prepared, expected, atol=1e-4)


def test_export_records_a_fingerprint_and_load_refuses_other_variables(tmp_path, variables):
    first, second = tmp_path / "first", tmp_path / "second"
    export.save_export(first, variables, make_metadata())
    export.save_export(second, random_depth_net_variables(seed=9), make_metadata())
    metadata = json.loads((first / "metadata.json").read_text())
    assert metadata["variables_sha256"] == export_format.variables_fingerprint(variables)
    assert len(metadata["variables_sha256"]) == 64
    # Same structure and sizes, other bytes: what a corrupted copy looks like to Orbax.
    import shutil

    shutil.rmtree(first / "variables")
    shutil.copytree(second / "variables", first / "variables")
    with pytest.raises(errors.ExportError,
                       match=rf"{first / 'variables'}: the variables do not match "
                             r"variables_sha256 in metadata\.json; the export is corrupt"):
        inference_model.load_export(first)


def test_corrupted_variable_bytes_are_refused(tmp_path, variables):
    export.save_export(tmp_path / "export", variables, make_metadata())
    data_files = [p for p in (tmp_path / "export" / "variables").rglob("*")
                  if p.is_file() and "/d/" in p.as_posix()]
    largest = max(data_files, key=lambda p: p.stat().st_size)
    raw = bytearray(largest.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 64] = bytes(255 - b for b in raw[middle:middle + 64])  # same size
    largest.write_bytes(bytes(raw))
    with pytest.raises(errors.ExportError, match=rf"{tmp_path / 'export' / 'variables'}: "):
        inference_model.load_export(tmp_path / "export")


# TensorStore's callbacks into the failed save's closed event loop (cli's hook logs them
# in a command; pytest reports them as warnings).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_full_disk_names_the_export_and_keeps_the_previous_one(tmp_path, variables,
                                                                   export_dir):
    """A disk with room for one export and a half: replacing it fails with a line naming it
    and "no space left"; the previous export is kept whole and no temporary is left."""
    size = sum(path.stat().st_size for path in export_dir.rglob("*") if path.is_file())
    with helpers.small_filesystem(tmp_path / "disk", size * 3 // 2) as disk:
        target = disk / "export"
        export.save_export(target, variables, make_metadata(step=1))
        with pytest.raises(errors.DiskFullError) as raised:
            export.save_export(target, variables, make_metadata(step=2))
        assert str(raised.value) == (
            f"{target}: cannot write the export: no space left on device")
        assert [path.name for path in disk.iterdir()] == ["export"]
        assert inference_model.load_export(target).metadata["step"] == 1
