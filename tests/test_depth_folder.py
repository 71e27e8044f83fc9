"""data_prep `depth_folder`: your own camera's folders, built exactly, bad files named."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_prep.build import build_dataset
from data_prep.common import DataError
from tests.helpers import make_folder, save_png


def _examples(data_dir: Path, name: str, split: str) -> dict[str, dict]:
    builder = tfds.builder(name, data_dir=data_dir)
    return {example["name"].decode(): example
            for example in tfds.as_numpy(builder.as_dataset(split=split))}


def test_labelled_and_unlabelled_folders_round_trip_exactly(tmp_path):
    expected = make_folder(tmp_path / "src", labelled=True, splits={"train": 3, "val": 2})
    make_folder(tmp_path / "tgt", labelled=False, splits={"train": 2})
    summary = build_dataset("depth_folder/labelled", tmp_path / "data", tmp_path / "src")
    assert {split: s.num_examples for split, s in summary.splits.items()} == {
        "train": 3, "val": 2}
    build_dataset("depth_folder/unlabelled", tmp_path / "data", tmp_path / "tgt")
    labelled = tfds.builder("depth_folder/labelled", data_dir=tmp_path / "data")
    assert sorted(labelled.info.features) == ["depth", "image", "intrinsics", "label", "name"]
    unlabelled = tfds.builder("depth_folder/unlabelled", data_dir=tmp_path / "data")
    assert sorted(unlabelled.info.features) == ["image", "intrinsics", "name"]
    for split in ("train", "val"):
        for name, example in _examples(tmp_path / "data", "depth_folder/labelled",
                                       split).items():
            want = expected[name]
            np.testing.assert_array_equal(example["image"], want["image"])
            np.testing.assert_array_equal(example["depth"], want["depth"])  # png and npy
            np.testing.assert_array_equal(example["label"][..., 0], want["label"])
            np.testing.assert_array_equal(example["intrinsics"], [60.0, 60.0, 48.0, 24.0])
    target = _examples(tmp_path / "data", "depth_folder/unlabelled", "train")
    assert sorted(target) == ["train/frame_0000", "train/frame_0001"]


def test_subfolders_per_image_intrinsics_and_no_label_folder(tmp_path):
    root = tmp_path / "src"
    make_folder(root, labelled=True, splits={"test": 2})
    for sub in ("image", "depth", "label"):  # move frame_0001 into a drive subfolder
        (moved,) = (root / "test" / sub).glob("frame_0001.*")
        (root / "test" / sub / "drive_a").mkdir()
        moved.rename(root / "test" / sub / "drive_a" / moved.name)
    os.remove(root / "test" / "intrinsics.json")
    camera = {"fx": 10.0, "fy": 11.0, "cx": 5.0, "cy": 6.0}
    (root / "intrinsics.json").write_text(json.dumps(
        {"fx": 1.0, "fy": 2.0, "cx": 3.0, "cy": 4.0, "images": {"drive_a/frame_0001.png": camera}}
    ))
    for path in (root / "test" / "label").rglob("*.png"):
        path.unlink()
    for path in sorted((root / "test" / "label").rglob("*"), reverse=True):
        path.rmdir()
    (root / "test" / "label").rmdir()
    build_dataset("depth_folder/labelled", tmp_path / "data", root)
    examples = _examples(tmp_path / "data", "depth_folder/labelled", "test")
    assert sorted(examples) == ["test/drive_a/frame_0001", "test/frame_0000"]
    np.testing.assert_array_equal(examples["test/frame_0000"]["intrinsics"], [1, 2, 3, 4])
    np.testing.assert_array_equal(examples["test/drive_a/frame_0001"]["intrinsics"],
                                  [10, 11, 5, 6])
    assert (examples["test/frame_0000"]["label"] == 255).all()


def _corrupt_depth_not_16_bit(root: Path) -> str:
    save_png(root / "train/depth/frame_0000.png", np.ones((48, 96), np.uint8))
    return r"train/depth/frame_0000\.png: expected a 16-bit grayscale PNG, got PIL mode L"


def _corrupt_depth_size(root: Path) -> str:
    save_png(root / "train/depth/frame_0000.png", np.ones((40, 96), np.uint16))
    return (r"train/depth/frame_0000\.png: size 96x40 does not match the image "
            r".*train/image/frame_0000\.png \(96x48\)")


def _corrupt_no_intrinsics(root: Path) -> str:
    (root / "train/intrinsics.json").unlink()
    return (r"train/intrinsics\.json: file not found \(nor .*/src/intrinsics\.json\); it gives "
            r"the camera as")


def _corrupt_image_without_depth(root: Path) -> str:
    (root / "train/depth/frame_0001.npy").unlink()
    return (r"train/image/frame_0001\.png: no depth for this image: expected "
            r".*train/depth/frame_0001\.png or \.npy")


def _corrupt_depth_without_image(root: Path) -> str:
    np.save(root / "train/depth/frame_0009.npy", np.ones((48, 96), np.float32))
    return r"train/depth/frame_0009\.npy: depth file without an image"


def _corrupt_npy_nan(root: Path) -> str:
    depth = np.ones((48, 128), np.float32)
    depth[3, 4] = np.nan
    np.save(root / "train/depth/frame_0001.npy", depth)
    return (r"train/depth/frame_0001\.npy: 1 pixel\(s\) are NaN, Inf or negative \(first at "
            r"row 3, column 4: nan\); write 0 for invalid pixels")


def _corrupt_all_invalid(root: Path) -> str:
    save_png(root / "train/depth/frame_0000.png", np.zeros((48, 96), np.uint16))
    return r"train/depth/frame_0000\.png: frame train/frame_0000: no valid depth pixel"


def _corrupt_label_value(root: Path) -> str:
    save_png(root / "train/label/frame_0000.png", np.full((48, 96), 40, np.uint8))
    return r"train/label/frame_0000\.png: values \[40\] are not Cityscapes train ids"


def _corrupt_bad_intrinsics(root: Path) -> str:
    (root / "train/intrinsics.json").write_text('{"fx": 60, "fy": 60, "cx": 1}')
    return r"train/intrinsics\.json: top-level camera: missing key\(s\) cy"


def _corrupt_truncated_image(root: Path) -> str:
    path = root / "train/image/frame_0000.png"
    path.write_bytes(path.read_bytes()[:200])
    return r"train/image/frame_0000\.png: corrupt or truncated image"


def _corrupt_truncated_label(root: Path) -> str:
    path = root / "train/label/frame_0001.png"
    path.write_bytes(path.read_bytes()[:100])
    return r"train/label/frame_0001\.png: corrupt or truncated image"


def _corrupt_stray_file(root: Path) -> str:
    (root / "train/image/notes.txt").write_text("hello")
    return r"train/image/notes\.txt: unexpected file in image/: expected \.png, \.jpg, \.jpeg"


@pytest.mark.parametrize("corrupt", [
    _corrupt_depth_not_16_bit, _corrupt_depth_size, _corrupt_no_intrinsics,
    _corrupt_image_without_depth, _corrupt_depth_without_image, _corrupt_npy_nan,
    _corrupt_all_invalid, _corrupt_label_value, _corrupt_bad_intrinsics,
    _corrupt_truncated_image, _corrupt_truncated_label, _corrupt_stray_file,
], ids=lambda corrupt: corrupt.__name__.removeprefix("_corrupt_"))
def test_bad_files_are_named_and_nothing_is_left_behind(tmp_path, corrupt):
    root = tmp_path / "src"
    make_folder(root, labelled=True, splits={"train": 2})
    message = corrupt(root)
    (tmp_path / "data").mkdir()
    with pytest.raises(DataError, match=message):
        build_dataset("depth_folder/labelled", tmp_path / "data", root)
    assert os.listdir(tmp_path / "data") == []


def test_empty_or_split_less_manual_dir(tmp_path):
    (tmp_path / "src" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match=r"src: no split folder: expected one or more of "
                                        r"train/, val/, test/ each holding image/"):
        build_dataset("depth_folder/unlabelled", tmp_path / "data", tmp_path / "src")


def _gradient_frames(count: int, height: int = 48, width: int = 96) -> list[np.ndarray]:
    """Smooth moving gradients: what H.264 encodes well, each frame different."""
    rows, cols = np.mgrid[0:height, 0:width]
    return [np.stack([(cols * 2 + 9 * k) % 256, (rows * 4 + 5 * k) % 256,
                      np.full_like(rows, 20 * k % 256)], axis=-1).astype(np.uint8)
            for k in range(count)]


def test_unlabelled_videos_become_frames_with_their_step_and_camera(tmp_path):
    from tests.helpers import decoded_frames, write_video

    root = tmp_path / "footage"
    write_video(root / "train" / "video" / "drive.mp4", _gradient_frames(12))
    write_video(root / "train" / "video" / "day2" / "clip.mkv", _gradient_frames(3))
    save_png(root / "train" / "image" / "still.png", _gradient_frames(1)[0])
    (root / "train" / "intrinsics.json").write_text(json.dumps({
        "fx": 50.0, "fy": 50.0, "cx": 48.0, "cy": 24.0,
        "images": {"drive.mp4": {"fx": 70.0, "fy": 70.0, "cx": 47.0, "cy": 23.0}}}))
    (root / "video.json").write_text(json.dumps({"every": 5}))
    make_folder(root, labelled=False, splits={"test": 1})  # a split of images only
    summary = build_dataset("depth_folder/unlabelled", tmp_path / "data", root)
    assert {split: s.num_examples for split, s in summary.splits.items()} == {
        "train": 3 + 1 + 1, "test": 1}
    examples = _examples(tmp_path / "data", "depth_folder/unlabelled", "train")
    assert sorted(examples) == ["train/day2/clip/000000", "train/drive/000000",
                                "train/drive/000005", "train/drive/000010", "train/still"]
    decoded = decoded_frames(root / "train" / "video" / "drive.mp4")
    for index in (0, 5, 10):  # stored losslessly as decoded
        np.testing.assert_array_equal(examples[f"train/drive/{index:06d}"]["image"],
                                      decoded[index])
    np.testing.assert_allclose(examples["train/drive/000005"]["intrinsics"], [70, 70, 47, 23])
    np.testing.assert_allclose(examples["train/day2/clip/000000"]["intrinsics"],
                               [50, 50, 48, 24])


def test_bad_videos_and_video_settings_are_named(tmp_path):
    from tests.helpers import write_video

    def footage(name: str, video: str = "drive.mp4", frames: int = 4,
                options: dict[str, str] | None = None) -> Path:
        root = tmp_path / name
        write_video(root / "train" / "video" / video, _gradient_frames(frames), options=options)
        (root / "train" / "intrinsics.json").write_text(
            json.dumps({"fx": 50.0, "fy": 50.0, "cx": 48.0, "cy": 24.0}))
        return root

    cut = footage("cut")
    drive = cut / "train" / "video" / "drive.mp4"
    drive.write_bytes(drive.read_bytes()[:1500])
    step = footage("step")
    (step / "train" / "video.json").write_text(json.dumps({"every": 0}))
    typo = footage("typo")
    (typo / "video.json").write_text(json.dumps({"evry": 2}))
    clash = footage("clash")
    # Cut to 70%: an mp4 with its index first still says 12 frames, an mkv 1.2 s.
    fast = footage("fast", frames=12, options={"movflags": "faststart"})
    fast_drive = fast / "train" / "video" / "drive.mp4"
    fast_drive.write_bytes(fast_drive.read_bytes()[: fast_drive.stat().st_size * 7 // 10])
    mkv = footage("mkv", video="drive.mkv", frames=12)
    mkv_drive = mkv / "train" / "video" / "drive.mkv"
    mkv_drive.write_bytes(mkv_drive.read_bytes()[: mkv_drive.stat().st_size * 7 // 10])
    save_png(clash / "train" / "image" / "drive" / "000000.png", _gradient_frames(1)[0])
    cases = [
        (cut, "depth_folder/unlabelled", f"{drive}: cannot read video"),
        (fast, "depth_folder/unlabelled",
         rf"{fast_drive}: cannot read video: it ends after frame \d+ of 12 \(truncated\?\)"),
        (mkv, "depth_folder/unlabelled",
         rf"{mkv_drive}: cannot read video: it ends after frame \d+ of about 12 "),
        (step, "depth_folder/unlabelled",
         f"{step / 'train' / 'video.json'}: key 'every' must be an integer >= 1, got 0"),
        (typo, "depth_folder/unlabelled", f"{typo / 'video.json'}: unknown key\\(s\\) evry"),
        (clash, "depth_folder/unlabelled", "its frame name train/drive/000000 is also the name "
                                           "of a frame of"),
        (footage("labelled"), "depth_folder/labelled",
         "video: videos are for the unlabelled config"),
    ]
    for root, name, message in cases:
        data = tmp_path / f"data_{root.name}"
        data.mkdir()
        with pytest.raises(DataError, match=message):
            build_dataset(name, data, root)
        assert os.listdir(data) == [], root.name
