"""Virtual KITTI 1.3.1 / 2.0.3 builder: exact round trips, colour decoding, splits, bad input."""

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_prep.build import build_dataset
from data_prep.common import DataError, read_rgb
from data_prep.label_tables import ColorLut
from data_prep.vkitti import layout
from tests.fixtures import write_text_lines, write_uint16_png
from tests.fixtures.vkitti import (
    SPECIAL_DEPTH_RAW,
    UNKNOWN_COLOR,
    UNKNOWN_COLOR_PIXEL,
    write_vkitti,
)


def _expected_metres(raw: np.ndarray) -> np.ndarray:
    """Independent reference: float64 p / 100 rounded to float32; the far plane is 0."""
    metres = (raw.astype(np.float64) / 100.0).astype(np.float32)
    metres[raw == 65535] = 0.0
    return metres


def test_depth_to_metres_is_exact_for_every_uint16():
    raw = np.arange(65536, dtype=np.uint32).astype(np.uint16).reshape(256, 256)
    metres = layout.depth_to_metres(raw)
    assert metres.dtype == np.float32
    np.testing.assert_array_equal(metres, _expected_metres(raw))
    assert metres[0, 1] == np.float32(0.01) and metres[0, 100] == np.float32(1.0)
    assert metres[255, 254] == np.float32(655.34) and metres[255, 255] == 0.0


def test_v1_intrinsics_are_fixed_at_native_size():
    np.testing.assert_array_equal(layout.v1_intrinsics(1242, 375), [725.0, 725.0, 620.5, 187.0])
    np.testing.assert_allclose(layout.v1_intrinsics(621, 375 * 2),
                               [362.5, 1450.0, 310.25, 374.0])


def test_split_rule_counts_and_determinism():
    assert layout.num_val_frames(21260) == 500
    assert layout.num_val_frames(1000) == 500
    assert layout.num_val_frames(9) == 4
    frames = [layout.Frame(f"0001/clone/{i:05d}", Path(f"{i}.png"), Path(), Path(), Path(),
                           None, i) for i in range(1200)]
    train, val = layout.split_train_val(frames)
    train_again, val_again = layout.split_train_val(frames[::-1])
    assert len(val) == 500 and len(train) == 700
    assert [f.name for f in val] == [f.name for f in val_again]
    assert [f.name for f in train] == [f.name for f in train_again]
    assert not {f.name for f in train} & {f.name for f in val}
    assert [f.name for f in val] == sorted(f.name for f in val)
    with pytest.raises(DataError, match="need at least 2 frames"):
        layout.split_train_val(frames[:1])


def test_read_color_table_v1_with_instances(tmp_path):
    path = tmp_path / "0001_clone_scenegt_rgb_encoding.txt"
    write_text_lines(path, ["Category(:id) r g b", "Road 100 60 100", "Car:0 200 200 200",
                            "Car:1 12 34 56", "Van:0 7 8 9"])
    colors = layout.read_color_table(path)
    assert colors == {"Road": (100, 60, 100), "Car:0": (200, 200, 200), "Car:1": (12, 34, 56),
                      "Van:0": (7, 8, 9)}


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["Road 100 60 100"], r"line 1: expected the header"),
        (["Category r g b", "Road 100 60"], r"line 2: expected 'Name r g b'"),
        (["Category r g b", "Road 100 60 x"], r"line 2: colour is not 3 integers"),
        (["Category r g b", "Road 100 60 256"], r"line 2: colour values must be 0..255"),
        (["Category r g b", "Sky 1 2 3", "Sky 1 2 3"], r"line 3: entry 'Sky' appears twice"),
    ],
)
def test_read_color_table_errors_name_file_and_line(tmp_path, lines, message):
    path = tmp_path / "colors.txt"
    write_text_lines(path, lines)
    with pytest.raises(DataError, match=rf"colors\.txt: {message}"):
        layout.read_color_table(path)


def test_read_intrinsics_v2_keeps_camera_0(tmp_path):
    path = tmp_path / "intrinsic.txt"
    write_text_lines(path, ["frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]",
                            "0 0 725.0087 725.0087 620.5 187", "0 1 725.0087 725.0087 621.5 187",
                            "1 0 700 701 600 180"])
    table = layout.read_intrinsics_v2(path)
    assert sorted(table) == [0, 1]
    np.testing.assert_array_equal(table[0], np.float32([725.0087, 725.0087, 620.5, 187]))
    np.testing.assert_array_equal(table[1], np.float32([700, 701, 600, 180]))
    write_text_lines(path, ["frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]", "0 0 725 725 620"])
    with pytest.raises(DataError, match=r"intrinsic\.txt: line 2: expected 6 values"):
        layout.read_intrinsics_v2(path)


@pytest.fixture(scope="module", params=["v1", "v2"])
def built(request, tmp_path_factory):
    """A fixture tree per version, built once with `build_dataset`."""
    version = request.param
    base = tmp_path_factory.mktemp(f"vkitti_{version}")
    fixture = write_vkitti(base / "manual", version)
    summary = build_dataset(f"vkitti/{version}", data_dir=base / "out", manual_dir=fixture.root)
    builder = tfds.builder(f"vkitti/{version}", data_dir=os.fspath(base / "out"))
    examples = {
        split: {ex["name"].decode(): ex
                for ex in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))}
        for split in ("train", "val")
    }
    return fixture, summary, examples


def test_built_splits_follow_the_rule(built):
    fixture, summary, examples = built
    assert len(fixture.frames) == 8
    assert {name: s.num_examples for name, s in summary.splits.items()} == {"train": 4, "val": 4}
    frames = [layout.Frame(name, Path(), Path(), Path(), Path(), None, 0)
              for name in fixture.frames]
    train, val = layout.split_train_val(frames)
    assert sorted(examples["train"]) == [f.name for f in train]
    assert sorted(examples["val"]) == [f.name for f in val]


def test_built_examples_round_trip_exactly(built):
    fixture, _, examples = built
    for split in ("train", "val"):
        for name, example in examples[split].items():
            expected = fixture.frames[name]
            height, width = expected.depth_raw.shape
            assert example["depth"].dtype == np.float32
            assert example["depth"].shape == (height, width)
            np.testing.assert_array_equal(example["depth"], _expected_metres(expected.depth_raw))
            assert example["label"].dtype == np.uint8
            assert example["label"].shape == (height, width, 1)
            np.testing.assert_array_equal(example["label"][..., 0], expected.label)
            assert example["intrinsics"].dtype == np.float32
            np.testing.assert_array_equal(example["intrinsics"], expected.intrinsics)
            assert example["image"].shape == (height, width, 3)
            if fixture.version == "v1":  # PNG: lossless
                np.testing.assert_array_equal(example["image"], expected.image)
            else:  # the JPEG bytes are stored as shipped; TF's and PIL's decoders may differ
                difference = np.abs(example["image"].astype(int) - expected.image)
                assert difference.mean() < 3.0


def test_built_depth_special_values(built):
    _, _, examples = built
    example = next(iter(examples["train"].values()))
    first_row = example["depth"][0, : len(SPECIAL_DEPTH_RAW)]
    assert first_row.tolist() == [
        0.0, np.float32(0.01), np.float32(0.03), np.float32(0.07), np.float32(0.99), 1.0,
        np.float32(2.57), np.float32(10.01), np.float32(123.45), np.float32(655.34), 0.0,
    ]
    assert np.all(example["depth"][1:5] == 0.0)  # the sky band (65535 = far plane) is invalid


def test_v1_labels_use_each_scenes_own_instance_colours(tmp_path):
    fixture = write_vkitti(tmp_path, "v1", num_frames=1)
    scenegt = fixture.root / "vkitti_1.3.1_scenegt"
    tables = {path.name.split("_scenegt")[0]: layout.read_color_table(path)
              for path in sorted(scenegt.glob("*_scenegt_rgb_encoding.txt"))}
    assert sorted(tables) == ["0001_clone", "0001_fog", "0002_clone", "0002_fog"]
    assert len({table["Car:0"] for table in tables.values()}) == 4
    class_png = scenegt / "0001" / "clone" / "00000.png"
    colours = read_rgb(class_png)
    own = ColorLut(tables["0001_clone"])(colours, class_png)
    np.testing.assert_array_equal(own, fixture.frames["0001/clone/00000"].label)
    assert {0, 4, 13, 255}.issubset(set(np.unique(own).tolist()))
    with pytest.raises(DataError, match=r"is not in the colour table"):
        ColorLut(tables["0002_fog"])(colours, class_png)  # another scene's instance colours


def _build_fails(tmp_path, version, manual_dir):
    out = tmp_path / "out"
    with pytest.raises(DataError) as info:
        build_dataset(f"vkitti/{version}", data_dir=out, manual_dir=manual_dir)
    assert not out.exists()  # nothing half-written is left
    return str(info.value)


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize(
    ("corruption", "message"),
    [
        ("truncated_rgb", r"corrupt or truncated image"),
        ("depth_not_16bit", r"expected a 16-bit grayscale PNG, got PIL mode L"),
        ("unknown_color",
         rf"colour \({', '.join(map(str, UNKNOWN_COLOR))}\) at pixel \(row "
         rf"{UNKNOWN_COLOR_PIXEL[0]}, col {UNKNOWN_COLOR_PIXEL[1]}\) is not in the colour table"),
    ],
)
def test_bad_files_raise_naming_the_file(tmp_path, version, corruption, message):
    fixture = write_vkitti(tmp_path / "manual", version, num_frames=1,
                           variations=("clone",), corrupt=corruption)
    error = _build_fails(tmp_path, version, fixture.root)
    assert error.startswith(f"{fixture.corrupt_path}: ")
    assert re.search(message, error), error


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_missing_subfolder_lists_what_is_expected(tmp_path, version):
    fixture = write_vkitti(tmp_path / "manual", version, num_frames=1, variations=("clone",))
    missing = "vkitti_1.3.1_depthgt" if version == "v1" else "vkitti_2.0.3_textgt"
    shutil.rmtree(fixture.root / missing)
    error = _build_fails(tmp_path, version, fixture.root)
    assert error.startswith(f"{fixture.root}: missing subfolder(s) {missing}; expected in this "
                            "folder: ")
    expected = layout.V1_EXPECTED if version == "v1" else layout.V2_EXPECTED
    for name, what in expected.items():
        assert f"{name}/ holding {what}" in error


def test_missing_manual_dir_is_reported(tmp_path):
    error = _build_fails(tmp_path, "v1", tmp_path / "nowhere")
    assert error.startswith(f"{tmp_path / 'nowhere'}: manual_dir not found")
    assert "vkitti_1.3.1_rgb" in error


def test_missing_depth_file_and_size_mismatch(tmp_path):
    fixture = write_vkitti(tmp_path / "manual", "v1", num_frames=1, variations=("clone",))
    depth = fixture.root / "vkitti_1.3.1_depthgt" / "0001" / "clone" / "00000.png"
    depth.unlink()
    assert _build_fails(tmp_path, "v1", fixture.root) == f"{depth}: file not found"
    write_uint16_png(depth, np.ones((5, 7), dtype=np.uint16))
    error = _build_fails(tmp_path, "v1", fixture.root)
    assert error.startswith(f"{depth}: size 7x5 does not match the image ")


def test_v2_missing_intrinsics_row(tmp_path):
    fixture = write_vkitti(tmp_path / "manual", "v2", num_frames=1, variations=("clone",))
    path = fixture.root / "vkitti_2.0.3_textgt" / "Scene01" / "clone" / "intrinsic.txt"
    write_text_lines(path, ["frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]",
                            "0 1 72 73 62 19"])
    error = _build_fails(tmp_path, "v2", fixture.root)
    assert error.startswith(f"{path}: no row for frame 0 camera 0")


def test_builder_used_directly_reports_a_missing_manual_dir(tmp_path):
    builder = tfds.builder("vkitti/v2", data_dir=os.fspath(tmp_path / "out"))
    config = tfds.download.DownloadConfig(manual_dir=os.fspath(tmp_path / "nowhere"))
    with pytest.raises(DataError) as info:
        builder.download_and_prepare(download_config=config)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'nowhere'}: manual_dir does not exist or is empty; "
                              "expected in it: vkitti_2.0.3_rgb/ holding ")
    assert "vkitti_2.0.3_textgt/ holding " in message
