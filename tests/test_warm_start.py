"""damono_jax.train.warm_start: which weights `config.init_from` loads, and its errors."""

import numpy as np
import pytest

from damono_jax import checkpointing
from damono_jax.errors import CheckpointError, ExportError
from damono_jax.train import warm_start


def _tree(**parts):
    return {name: {"kernel": np.full(shape, value, np.float32)}
            for name, (shape, value) in parts.items()}


def test_merge_loads_shared_leaves_keeps_new_ones_and_names_the_unused():
    fresh = {"params": _tree(encoder=((2, 2), 0.0), semantic_decoder=((3,), 0.0)),
             "batch_stats": {"encoder": {"mean": np.zeros(2, np.float32)}}}
    loaded = {"params": _tree(encoder=((2, 2), 1.0), old_head=((4,), 1.0)),
              "batch_stats": {"encoder": {"mean": np.ones(2, np.float64)}}}
    result = warm_start.merge_variables(fresh, loaded, "run A")
    np.testing.assert_array_equal(result.variables["params"]["encoder"]["kernel"], 1.0)
    np.testing.assert_array_equal(result.variables["params"]["semantic_decoder"]["kernel"], 0.0)
    assert result.variables["batch_stats"]["encoder"]["mean"].dtype == np.float32
    assert result.loaded == ("batch_stats/encoder", "params/encoder")
    assert result.fresh == ("params/semantic_decoder",)
    assert result.ignored == ("params/old_head",)
    assert result.partial == ()


def test_a_shared_leaf_of_another_shape_is_an_error_naming_it():
    fresh = {"params": _tree(encoder=((2, 2), 0.0))}
    loaded = {"params": _tree(encoder=((3, 2), 1.0))}
    with pytest.raises(ValueError, match=r"config.init_from: run A: params/encoder/kernel has "
                                         r"shape \(3, 2\) there but \(2, 2\) in this model"):
        warm_start.merge_variables(fresh, loaded, "run A")


def test_read_variables_from_a_workdir_and_from_one_checkpoint_folder(tmp_path):
    state = {"params": _tree(encoder=((2,), 2.0)), "batch_stats": _tree(encoder=((2,), 3.0)),
             "step": np.int32(5)}
    with checkpointing.TrainCheckpointer(str(tmp_path / "run"), 2) as checkpointer:
        checkpointer.save(4, state, {"step": 4})
        checkpointer.save(5, state, {"step": 5})
    variables, source = warm_start.read_variables(str(tmp_path / "run"))
    assert source == f"checkpoint {tmp_path}/run/checkpoints/5"
    np.testing.assert_array_equal(variables["params"]["encoder"]["kernel"], 2.0)
    np.testing.assert_array_equal(variables["batch_stats"]["encoder"]["kernel"], 3.0)
    _, source = warm_start.read_variables(str(tmp_path / "run" / "checkpoints" / "4"))
    assert source == f"checkpoint {tmp_path}/run/checkpoints/4"


def test_a_folder_that_is_no_run_and_a_run_without_shared_weights_are_errors(tmp_path):
    with pytest.raises(ValueError, match=r"config.init_from: .*/empty is neither an export "
                                         r"\(no metadata.json\), a training workdir"):
        (tmp_path / "empty").mkdir()
        warm_start.read_variables(str(tmp_path / "empty"))
    with checkpointing.TrainCheckpointer(str(tmp_path / "run"), 1) as checkpointer:
        checkpointer.save(1, {"params": _tree(other=((2,), 1.0)), "batch_stats": {}},
                          {"step": 1})
    with pytest.raises(ValueError, match=r"config.init_from: checkpoint .*/run/checkpoints/1 "
                                         r"shares no parameter with this model"):
        warm_start.warm_start(str(tmp_path / "run"), {"params": _tree(encoder=((2,), 0.0))})


def test_read_variables_from_an_export_checks_its_fingerprint(tmp_path):
    import json

    from damono_jax import export, export_format
    from tests import helpers

    variables = helpers.random_depth_net_variables((32, 32))
    metadata = {"model": {"upsample_mode": "bilinear"}, "input_size": [32, 32],
                "min_depth": 1.0, "max_depth": 100.0, "units": "metres",
                "class_names": ["road"], "step": 9, "variant": "baseline"}
    export.save_export(tmp_path / "export", variables, metadata)
    loaded, source = warm_start.read_variables(str(tmp_path / "export"))
    assert source == f"export {tmp_path}/export (step 9)"
    np.testing.assert_array_equal(loaded["params"]["encoder"]["conv1"]["kernel"],
                                  variables["params"]["encoder"]["conv1"]["kernel"])
    path = tmp_path / "export" / export_format.METADATA_FILE
    record = json.loads(path.read_text())
    record[export_format.FINGERPRINT_KEY] = "0" * 64
    path.write_text(json.dumps(record))
    with pytest.raises(ExportError, match=r".*/export/variables: the variables do not match "
                                          r"variables_sha256 in metadata.json.*"
                                          r"\(config.init_from\)$"):
        warm_start.read_variables(str(tmp_path / "export"))


def _checkpoint_with_config(path, config: dict) -> None:
    state = {"params": _tree(encoder=((2,), 2.0)), "batch_stats": {}}
    with checkpointing.TrainCheckpointer(str(path), 1) as checkpointer:
        checkpointer.save(1, state, {"step": 1, "config": config})


def test_init_from_with_other_settings_stops_unless_allowed(tmp_path, caplog):
    from configs import synthetic

    _checkpoint_with_config(tmp_path / "run", {
        "model": {"upsample_mode": "nearest", "discriminator_features": [256, 128]},
        "data": {"image_size": [64, 224]}})
    config = synthetic.get_config("full")
    config.init_from = str(tmp_path / "run")
    with pytest.raises(ValueError) as stopped:
        warm_start.check_init_from(config)
    assert str(stopped.value) == (
        f"config.init_from: checkpoint {tmp_path}/run/checkpoints/1 was trained with "
        "model.upsample_mode='nearest', this run has 'bilinear'; set "
        "--config.init_from_allow_mismatch=True to start from it anyway")
    config.data.image_size = (96, 320)
    with pytest.raises(ValueError, match=r"this run has 'bilinear' \(and 1 more\); set"):
        warm_start.check_init_from(config)
    config.init_from_allow_mismatch = True
    with caplog.at_level("WARNING"):
        warm_start.check_init_from(config)
    warnings = [r.getMessage() for r in caplog.records if "init_from_allow_mismatch" in
                r.getMessage()]
    assert len(warnings) == 2 and "data.image_size=[64, 224], this run has (96, 320)" in (
        warnings[1])
    config.model.upsample_mode, config.data.image_size = "nearest", (64, 224)
    config.init_from_allow_mismatch = False
    warm_start.check_init_from(config)  # the same settings: nothing to say


def test_an_export_records_its_decoder_and_input_size(tmp_path):
    from configs import synthetic
    from damono_jax import export
    from tests import helpers

    metadata = {"model": {"upsample_mode": "nearest"}, "input_size": [32, 32],
                "min_depth": 1.0, "max_depth": 100.0, "units": "metres",
                "class_names": ["road"], "step": 3, "variant": "baseline"}
    export.save_export(tmp_path / "export", helpers.random_depth_net_variables((32, 32)),
                       metadata)
    source = warm_start.read_source(str(tmp_path / "export"))
    assert source.settings == {"model.upsample_mode": "nearest", "data.image_size": [32, 32]}
    config = synthetic.get_config("baseline")
    config.data.image_size = (32, 32)
    assert warm_start.mismatches(source, config) == [
        f"export {tmp_path}/export (step 3) was trained with model.upsample_mode='nearest', "
        "this run has 'bilinear'"]


def test_a_truncated_checkpoint_is_one_line_naming_its_file(tmp_path):
    from tests.helpers import truncate_data_files

    _checkpoint_with_config(tmp_path / "run", {})
    truncate_data_files(tmp_path / "run" / "checkpoints" / "1")
    with pytest.raises(CheckpointError) as refused:
        warm_start.read_source(str(tmp_path / "run"))
    message = str(refused.value)
    assert message.startswith(f"config.init_from: {tmp_path}/run/checkpoints/1: checkpoint "
                              f"does not restore: {tmp_path}/run/checkpoints/1/state/d/")
    assert message.endswith(" is truncated or corrupt (OUT_OF_RANGE)") or message.endswith(
        " is truncated or corrupt (DATA_LOSS)"), message
    assert "\n" not in message and "<bound method" not in message and "pybind" not in message
