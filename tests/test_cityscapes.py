"""Cityscapes depth builder: disparity -> depth numbers, crop, labels, round trip, bad input."""

import json
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_prep.build import build_dataset
from data_prep.cityscapes_depth import layout
from data_prep.common import DataError
from tests.fixtures import write_gray_png
from tests.fixtures.cityscapes import (
    OUT_OF_RANGE_LABEL,
    OUT_OF_RANGE_PIXEL,
    SPECIAL_DISPARITY_RAW,
    write_cityscapes,
)

# Cityscapes labelId 0..33 -> train id, written out by hand from the dataset's label table.
EXPLICIT_LUT = np.array([255, 255, 255, 255, 255, 255, 255, 0, 1, 255, 255, 2, 3, 4, 255, 255,
                         255, 5, 255, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 255, 255, 16, 17, 18],
                        dtype=np.uint8)


def test_disparity_to_depth_numbers():
    raw = np.array([[0, 1, 2, 257, 513, 65535]], dtype=np.uint16)
    depth = layout.disparity_to_depth(raw, baseline=0.2, fx=2000.0)
    assert depth.dtype == np.float32
    # d = (p - 1) / 256: p=2 -> 1/256 px -> 0.2 * 2000 * 256 = 102400 m; p=257 -> 1 px -> 400
    # m; p=513 -> 2 px -> 200 m; p=65535 -> 65534/256 px -> 400 * 256 / 65534 m.
    assert depth.tolist() == [[0.0, 0.0, 102400.0, 400.0, 200.0,
                               float(np.float32(400.0 * 256.0 / 65534.0))]]
    real = layout.disparity_to_depth(np.array([[2561]], dtype=np.uint16), 0.209313, 2262.52)
    assert real[0, 0] == np.float32(0.209313 * 2262.52 / 10.0)  # d = 10 px -> 47.357 m


def test_crop_rows():
    assert layout.crop_rows(1024) == (205, 819)
    assert layout.crop_rows(128) == (26, 102)  # 25.625 -> 26, 102.375 -> 102
    assert layout.crop_rows(512) == (103, 410)  # 102.5 -> 103, 409.5 -> 410 (half up)


def test_read_camera(tmp_path):
    path = tmp_path / "a_camera.json"
    path.write_text(json.dumps({"extrinsic": {"baseline": 0.209313, "pitch": 0.038},
                                "intrinsic": {"fx": 2262.52, "fy": 2265.3017905988554,
                                              "u0": 1096.98, "v0": 513.137}}))
    camera = layout.read_camera(path)
    assert camera == layout.Camera(0.209313, 2262.52, 2265.3017905988554, 1096.98, 513.137)
    path.write_text('{"extrinsic": {"baseline": 0.2}, "intrinsic": {"fx": "2262", "fy": 1, '
                    '"u0": 1, "v0": 1}}')
    with pytest.raises(DataError, match=r"a_camera\.json: key 'intrinsic\.fx' must be a finite "
                                        r"number, got '2262'"):
        layout.read_camera(path)
    path.write_text('{"extrinsic": {"baseline": 0.2}, "intrinsic": {"fx": 0, "fy": 1, '
                    '"u0": 1, "v0": 1}}')
    with pytest.raises(DataError, match=r"key 'fx' must be positive, got 0\.0"):
        layout.read_camera(path)
    path.write_text('{"extrinsic": {"baseline": 0.2,')
    with pytest.raises(DataError, match=r"a_camera\.json: not a valid JSON file"):
        layout.read_camera(path)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The default fixture (3 train, 2 val frames), built once with `build_dataset`."""
    base = tmp_path_factory.mktemp("cityscapes")
    fixture = write_cityscapes(base / "manual")
    summary = build_dataset("cityscapes_depth", data_dir=base / "out", manual_dir=fixture.root)
    builder = tfds.builder("cityscapes_depth", data_dir=os.fspath(base / "out"))
    examples = {
        split: {ex["name"].decode(): ex
                for ex in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))}
        for split in ("train", "val")
    }
    return fixture, summary, examples


def test_built_splits(built):
    fixture, summary, examples = built
    assert {name: s.num_examples for name, s in summary.splits.items()} == {"train": 3, "val": 2}
    assert sorted(examples["train"]) == [
        "aachen_000000_000019", "aachen_000001_000029", "bochum_000000_000019"]
    assert sorted(examples["val"]) == ["frankfurt_000000_000019", "lindau_000000_000019"]
    for split in ("train", "val"):
        assert sorted(examples[split]) == sorted(fixture.frames[split])


def test_built_examples_match_an_independent_reference(built):
    fixture, _, examples = built
    for split in ("train", "val"):
        for name, example in examples[split].items():
            expected = fixture.frames[split][name]
            height, width = expected.label_ids.shape
            top, bottom = 26, 102  # rows [205, 819) of 1024, at 128 rows
            assert (height, width) == (128, 256)
            np.testing.assert_array_equal(example["image"], expected.image[top:bottom])
            assert example["label"].shape == (bottom - top, width, 1)
            np.testing.assert_array_equal(example["label"][..., 0],
                                          EXPLICIT_LUT[expected.label_ids[top:bottom]])
            raw = expected.disparity_raw[top:bottom].astype(np.float64)
            camera = expected.camera
            with np.errstate(divide="ignore"):
                reference = np.where(raw > 1, camera["baseline"] * camera["fx"]
                                     / ((raw - 1.0) / 256.0), 0.0).astype(np.float32)
            assert example["depth"].dtype == np.float32
            np.testing.assert_array_equal(example["depth"], reference)
            np.testing.assert_array_equal(
                example["intrinsics"],
                np.float32([camera["fx"], camera["fy"], camera["u0"], camera["v0"] - top]))


def test_built_special_disparities(built):
    fixture, _, examples = built
    name = "aachen_000000_000019"
    example = examples["train"][name]
    camera = fixture.frames["train"][name].camera
    focal_baseline = camera["baseline"] * camera["fx"]
    row = example["depth"][0, : len(SPECIAL_DISPARITY_RAW)]
    expected = [0.0, 0.0] + [np.float32(focal_baseline / ((p - 1) / 256.0))
                             for p in SPECIAL_DISPARITY_RAW[2:]]
    assert row.tolist() == expected
    assert row[3] == np.float32(focal_baseline)  # p = 257 is exactly one pixel of disparity


def _build_fails(tmp_path, manual_dir):
    out = tmp_path / "out"
    with pytest.raises(DataError) as info:
        build_dataset("cityscapes_depth", data_dir=out, manual_dir=manual_dir)
    assert not out.exists()  # nothing half-written is left
    return str(info.value)


SMALL = {"train": (("aachen", 1),), "val": (("frankfurt", 1),)}


@pytest.mark.parametrize(
    ("corruption", "message"),
    [
        ("truncated_image", r"corrupt or truncated image"),
        ("disparity_not_16bit", r"expected a 16-bit grayscale PNG, got PIL mode L"),
        ("label_out_of_range",
         rf"labelId {OUT_OF_RANGE_LABEL} at pixel \(row {OUT_OF_RANGE_PIXEL[0]}, col "
         rf"{OUT_OF_RANGE_PIXEL[1]}\) is out of range; Cityscapes labelIds are 0\.\.33"),
        ("camera_missing_key", r"missing key 'extrinsic\.baseline'"),
    ],
)
def test_bad_files_raise_naming_the_file(tmp_path, corruption, message):
    fixture = write_cityscapes(tmp_path / "manual", SMALL, corrupt=corruption)
    error = _build_fails(tmp_path, fixture.root)
    assert error.startswith(f"{fixture.corrupt_path}: ")
    assert re.search(message, error), error


def test_missing_subfolder_lists_what_is_expected(tmp_path):
    fixture = write_cityscapes(tmp_path / "manual", SMALL)
    shutil.rmtree(fixture.root / "disparity")
    error = _build_fails(tmp_path, fixture.root)
    assert error.startswith(f"{fixture.root}: missing subfolder(s) disparity; expected in this "
                            "folder: ")
    for name, what in layout.EXPECTED.items():
        assert f"{name}/ holding {what}" in error


def test_missing_split_folder_and_missing_file(tmp_path):
    fixture = write_cityscapes(tmp_path / "manual", SMALL)
    shutil.rmtree(fixture.root / "gtFine" / "val")
    error = _build_fails(tmp_path, fixture.root)
    assert error == (f"{fixture.root / 'gtFine' / 'val'}: directory not found; expected it to "
                     "contain: <city>/<id>_gtFine_labelIds.png")
    fixture = write_cityscapes(tmp_path / "manual", SMALL)
    camera = fixture.root / "camera" / "train" / "aachen" / "aachen_000000_000019_camera.json"
    camera.unlink()
    assert _build_fails(tmp_path, fixture.root) == f"{camera}: file not found"


def test_size_mismatch(tmp_path):
    fixture = write_cityscapes(tmp_path / "manual", SMALL)
    label = fixture.root / "gtFine" / "val" / "frankfurt" / (
        "frankfurt_000000_000019_gtFine_labelIds.png")
    write_gray_png(label, np.zeros((64, 128), dtype=np.uint8))
    error = _build_fails(tmp_path, fixture.root)
    assert error.startswith(f"{label}: size 128x64 does not match the image ")


def test_missing_manual_dir_is_reported(tmp_path):
    error = _build_fails(tmp_path, tmp_path / "nowhere")
    assert error.startswith(f"{tmp_path / 'nowhere'}: manual_dir not found")
    assert "leftImg8bit_trainvaltest.zip" in error
