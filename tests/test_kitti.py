"""KITTI raw: Monodepth2-exact LiDAR projection, calib/velodyne readers, kitti_eigen builder."""

from __future__ import annotations

import math
import os
import shutil
import struct

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from data_prep import kitti
from data_prep.build import build_dataset
from data_prep.common import DataError, stored_image
from data_prep.kitti_eigen.kitti_eigen_dataset_builder import (
    CUSTOM_SPLITS_DIR,
    parse_split_file,
    standard_frames,
)
from tests.fixtures import kitti as kitti_fixture
from tests.fixtures import (
    overwrite_with_garbage,
    random_rgb,
    truncate_file,
    write_gray_png,
    write_rgb_png,
    write_text_lines,
)

DRIVE_26 = "2011_09_26/2011_09_26_drive_0002_sync"
DRIVE_28 = "2011_09_28/2011_09_28_drive_0001_sync"


# ----------------------------------------------------------- independent reference (loops)
def _reference_read_calib(path: str) -> dict[str, list[float]]:
    values = {}
    with open(path) as handle:
        for line in handle:
            key, rest = line.split(":", 1)
            try:
                values[key] = [float(item) for item in rest.split()]
            except ValueError:
                pass  # calib_time
    return values


def _reference_matmul(a: list[list[float]], b: list[list[float]]) -> list[list[float]]:
    return [[sum(a[i][k] * b[k][j] for k in range(len(b))) for j in range(len(b[0]))]
            for i in range(len(a))]


def _reference_depth_map(calib_dir: str, velo_path: str, cam: int, vel_depth: bool):
    """Monodepth2's generate_depth_map written with plain Python loops and dicts."""
    cam_to_cam = _reference_read_calib(os.path.join(calib_dir, "calib_cam_to_cam.txt"))
    velo_to_cam = _reference_read_calib(os.path.join(calib_dir, "calib_velo_to_cam.txt"))
    width, height = (int(value) for value in cam_to_cam["S_rect_02"])
    rotation, translation = velo_to_cam["R"], velo_to_cam["T"]
    tv = [rotation[3 * i:3 * i + 3] + [translation[i]] for i in range(3)] + [[0, 0, 0, 1]]
    r_rect = cam_to_cam["R_rect_00"]
    rect = [r_rect[3 * i:3 * i + 3] + [0.0] for i in range(3)] + [[0, 0, 0, 1]]
    p_rect = cam_to_cam[f"P_rect_0{cam}"]
    projection = _reference_matmul(
        _reference_matmul([p_rect[4 * i:4 * i + 4] for i in range(3)], rect), tv
    )
    with open(velo_path, "rb") as handle:
        raw = handle.read()
    floats = struct.unpack(f"<{len(raw) // 4}f", raw)
    kept = []  # (u, v, depth) in file order
    for n in range(len(floats) // 4):
        x, y, z = floats[4 * n:4 * n + 3]
        if not x >= 0:
            continue
        image = [sum(row[k] * value for k, value in enumerate((x, y, z, 1.0)))
                 for row in projection]
        if image[2] == 0 or math.isnan(image[2]):
            continue  # numpy gives inf/nan here, which the bounds test rejects
        u = round(image[0] / image[2]) - 1  # Python's round is half-to-even too
        v = round(image[1] / image[2]) - 1
        depth = x if vel_depth else image[2]
        if 0 <= u < width and 0 <= v < height:
            kept.append((u, v, depth))
    depth_map = [[0.0] * width for _ in range(height)]
    for u, v, depth in kept:
        depth_map[v][u] = depth  # last write wins
    groups: dict[int, list[tuple[int, int, float]]] = {}
    for u, v, depth in kept:
        groups.setdefault(v * (width - 1) + u - 1, []).append((u, v, depth))  # MD2's sub2ind
    for members in groups.values():
        if len(members) > 1:
            u, v, _ = members[0]
            depth_map[v][u] = min(member[2] for member in members)
    return np.array([[max(value, 0.0) for value in row] for row in depth_map], np.float32)


# ------------------------------------------------------------------------ crafted scene
# A calibration in which every product is exact in binary floating point: image point
# u = 4 - 2 y / x, v = 2 - 2 z / x for a velodyne point (x, y, z), image 8 x 5.
EXACT_CALIBRATION = kitti_fixture.Calibration(
    width=8,
    height=5,
    p_rect_02=np.array([[2.0, 0, 4, 0], [0, 2, 2, 0], [0, 0, 1, 0]]),
    p_rect_03=np.array([[2.0, 0, 4, -1], [0, 2, 2, 0], [0, 0, 1, 0]]),
    r_rect_00=np.eye(3),
    velo_r=np.array([[0.0, -1, 0], [0, 0, -1], [1, 0, 0]]),
    velo_t=np.zeros(3),
)


def _exact_point(image_u: float, image_v: float, x: float) -> list[float]:
    return [x, (4 - image_u) * x / 2, (2 - image_v) * x / 2, 0.0]


# (1-based image u, v, forward x) -> where it must land, computed by hand below.
CRAFTED_POINTS = [
    (2.5, 1.0, 2.0),  # u 2.5 rounds to 2 (half to even) -> col 1, row 0
    (3.5, 1.0, 4.0),  # u 3.5 rounds to 4 -> col 3, row 0
    (5.0, 1.5, 2.0),  # v 1.5 rounds to 2 -> row 1, col 4
    (6.0, 2.5, 8.0),  # v 2.5 rounds to 2 -> row 1, col 5
    (1.0, 4.0, 6.0),  # row 3 col 0: duplicates, nearest (3.0) must win
    (1.0, 4.0, 3.0),
    (1.0, 4.0, 5.0),
    (8.5, 5.0, 2.0),  # u 8.5 rounds to 8 -> col 7 (inside an 8-wide image), row 4
    (9.5, 3.0, 2.0),  # u 9.5 rounds to 10 -> col 9: outside
    (0.5, 3.0, 2.0),  # u 0.5 rounds to 0 -> col -1: outside
    (3.0, 5.5, 2.0),  # v 5.5 rounds to 6 -> row 5: outside
    (3.0, 3.0, -2.0),  # behind the sensor (x < 0) on an in-frame ray: dropped
    (8.0, 2.0, 7.0),  # row 1 col 7 and row 2 col 0 share MD2's buggy sub2ind index 13:
    (1.0, 3.0, 4.0),  # row 1 col 7 gets min(7, 4) = 4, row 2 col 0 keeps 4
]
CRAFTED_EXPECTED = {(0, 1): 2.0, (0, 3): 4.0, (1, 4): 2.0, (1, 5): 8.0, (3, 0): 3.0,
                    (4, 7): 2.0, (1, 7): 4.0, (2, 0): 4.0}


def _write_crafted(tmp_path, points) -> tuple[str, str]:
    calib_dir = tmp_path / "2011_09_26"
    kitti_fixture.write_calibration(calib_dir, EXACT_CALIBRATION)
    velo_path = tmp_path / "scan.bin"
    np.asarray(points, dtype=np.float32).tofile(velo_path)
    return str(calib_dir), str(velo_path)


def test_crafted_scene_rounding_duplicates_bounds_and_sub2ind(tmp_path):
    points = [_exact_point(u, v, x) for u, v, x in CRAFTED_POINTS]
    points += [[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]  # x = 0: camera z = 0 -> inf / nan
    calib_dir, velo_path = _write_crafted(tmp_path, points)
    depth = kitti.generate_depth_map(calib_dir, velo_path)
    expected = np.zeros((5, 8), np.float32)
    for (row, col), value in CRAFTED_EXPECTED.items():
        expected[row, col] = value
    assert depth.dtype == np.float32 and depth.shape == (5, 8)
    np.testing.assert_array_equal(depth, expected)
    np.testing.assert_array_equal(depth, _reference_depth_map(calib_dir, velo_path, 2, True))


def test_crafted_scene_matches_reference_for_right_camera_and_camera_depth(tmp_path):
    points = [_exact_point(u, v, x) for u, v, x in CRAFTED_POINTS]
    calib_dir, velo_path = _write_crafted(tmp_path, points)
    for cam in (2, 3):
        for vel_depth in (True, False):
            np.testing.assert_array_equal(
                kitti.generate_depth_map(calib_dir, velo_path, cam=cam, vel_depth=vel_depth),
                _reference_depth_map(calib_dir, velo_path, cam, vel_depth),
            )


def test_random_scene_with_many_collisions_matches_reference(tmp_path):
    rng = np.random.default_rng(3)
    points = np.stack(
        [rng.uniform(-3, 20, 400), rng.uniform(-12, 12, 400), rng.uniform(-6, 6, 400),
         np.zeros(400)], axis=1,
    )
    calib_dir, velo_path = _write_crafted(tmp_path, points)
    depth = kitti.generate_depth_map(calib_dir, velo_path)
    assert (depth > 0).sum() > 20  # 400 points on 40 pixels: plenty of duplicates
    np.testing.assert_array_equal(depth, _reference_depth_map(calib_dir, velo_path, 2, True))


def test_fixture_scene_gives_the_known_depth_with_real_calibration(tmp_path):
    lines = [f"{DRIVE_26} 5 l", f"{DRIVE_28} 7 l"]
    fixture = kitti_fixture.write_kitti_raw(tmp_path, lines)
    for line in lines:
        folder, index, _ = line.split()
        frame = fixture.frames[f"{folder} {int(index):010d} l"]
        calib_dir = str(tmp_path / folder.split("/")[0])
        velo_path = str(tmp_path / folder / "velodyne_points" / "data" / f"{int(index):010d}.bin")
        depth = kitti.generate_depth_map(calib_dir, velo_path, cam=2, vel_depth=True)
        assert depth.shape == frame.image.shape[:2]
        np.testing.assert_array_equal(depth, frame.expected_depth)
        np.testing.assert_array_equal(depth, _reference_depth_map(calib_dir, velo_path, 2, True))
        for cam in (2, 3):  # camera z differs in the last bits between loops and BLAS
            np.testing.assert_allclose(
                kitti.generate_depth_map(calib_dir, velo_path, cam=cam, vel_depth=False),
                _reference_depth_map(calib_dir, velo_path, cam, False), rtol=1e-6,
            )
    assert {(c.width, c.height) for c in fixture.calibrations.values()} == {(124, 38), (122, 37)}


def test_read_calib_file_values_and_intrinsics(tmp_path):
    calib = kitti_fixture.scaled_calibration("2011_09_26")
    kitti_fixture.write_calibration(tmp_path, calib)
    values = kitti.read_calib_file(tmp_path / "calib_cam_to_cam.txt")
    assert values["calib_time"] == "09-Jan-2012 13:57:47"
    np.testing.assert_array_equal(values["S_rect_02"], [124.0, 38.0])
    assert len(values) == 34 and values["P_rect_02"].shape == (12,)
    np.testing.assert_array_equal(
        kitti.intrinsics(tmp_path, 2), np.float32([72.15377, 72.15377, 60.95593, 17.2854])
    )
    assert kitti.image_shape(tmp_path) == (38, 124)
    assert kitti.stereo_baseline(tmp_path) == pytest.approx(0.54, abs=1e-6)


def test_trailing_blank_lines_are_accepted_in_calib_and_split_files(tmp_path):
    calib = kitti_fixture.scaled_calibration("2011_09_26")
    kitti_fixture.write_calibration(tmp_path, calib)
    path = tmp_path / "calib_cam_to_cam.txt"
    expected = kitti.read_calib_file(path)
    path.write_text(path.read_text() + "\n \r\n\n")
    values = kitti.read_calib_file(path)
    assert values.keys() == expected.keys()
    np.testing.assert_array_equal(values["P_rect_02"], expected["P_rect_02"])
    split = tmp_path / "train_files.txt"
    split.write_text("2011_09_26/2011_09_26_drive_0002_sync 5 l\n\n\n")
    (frame,) = parse_split_file(split)
    assert (frame.folder, frame.index, frame.side) == (
        "2011_09_26/2011_09_26_drive_0002_sync", 5, "l")


# ----------------------------------------------------------------- reader bad inputs
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda lines: lines[:3] + [""] + lines[3:], r"calib_cam_to_cam.txt: line 4: blank line"),
        (lambda lines: lines[:5] + ["S_rect_02 124 38"] + lines[5:],
         r"calib_cam_to_cam.txt: line 6: expected 'key: values'"),
        (lambda lines: [line for line in lines if not line.startswith("P_rect_02")],
         r"calib_cam_to_cam.txt: missing key 'P_rect_02'"),
        (lambda lines: [line for line in lines if not line.startswith("S_rect_02")],
         r"calib_cam_to_cam.txt: missing key 'S_rect_02'"),
        (lambda lines: [line.replace("1.240000e+02 ", "") if line.startswith("S_rect_02")
                        else line for line in lines],
         r"key 'S_rect_02' must hold 2 numbers, got '1 values'"),
        (lambda lines: lines + ["R_rect_00: 1 2 3"], r"line 35: duplicate key 'R_rect_00'"),
    ],
)
def test_bad_cam_to_cam_file(tmp_path, edit, message):
    calib = kitti_fixture.scaled_calibration("2011_09_26")
    kitti_fixture.write_calibration(tmp_path, calib)
    path = tmp_path / "calib_cam_to_cam.txt"
    lines = edit(path.read_text().splitlines())
    path.write_text("\n".join(lines) + "\n")
    np.zeros((3, 4), np.float32).tofile(tmp_path / "scan.bin")
    with pytest.raises(DataError, match=message) as info:
        kitti.generate_depth_map(tmp_path, tmp_path / "scan.bin")
    assert info.value.path == str(path)


def test_velo_to_cam_missing_key_is_named(tmp_path):
    kitti_fixture.write_calibration(tmp_path, kitti_fixture.scaled_calibration("2011_09_26"))
    path = tmp_path / "calib_velo_to_cam.txt"
    path.write_text("".join(line for line in path.read_text().splitlines(keepends=True)
                            if not line.startswith("T:")))
    np.zeros((3, 4), np.float32).tofile(tmp_path / "scan.bin")
    with pytest.raises(DataError, match=r"calib_velo_to_cam.txt: missing key 'T'"):
        kitti.generate_depth_map(tmp_path, tmp_path / "scan.bin")


def test_velodyne_size_not_multiple_of_16(tmp_path):
    path = tmp_path / "0000000000.bin"
    np.zeros((5, 4), np.float32).tofile(path)
    assert kitti.load_velodyne_points(path).shape == (5, 4)
    truncate_file(path, keep_bytes=5 * 16 - 4)
    with pytest.raises(DataError, match=r"0000000000.bin: size 76 bytes is not a multiple of 16"):
        kitti.load_velodyne_points(path)
    with pytest.raises(DataError, match=r"missing.bin: velodyne file not found"):
        kitti.load_velodyne_points(tmp_path / "missing.bin")


def test_split_file_parsing_errors(tmp_path):
    path = tmp_path / "test_files.txt"
    cases = [
        (f"{DRIVE_26} 5", r"line 1: expected 'date/drive frame side'"),
        (f"{DRIVE_26} 5 l\n{DRIVE_26} five l", r"line 2: frame 'five' is not a number"),
        (f"{DRIVE_26} 5 x", r"line 1: side 'x' is not 'l' or 'r'"),
        ("2011_09_26/drive_0002 5 l", r"line 1: folder '2011_09_26/drive_0002' is not"),
        (f"{DRIVE_26} 5 l\n{DRIVE_26} 0000000005 l", r"line 2: duplicate of line 1"),
    ]
    for text, message in cases:
        path.write_text(text + "\n")
        with pytest.raises(DataError, match=message):
            parse_split_file(path)


def test_packaged_split_counts():
    assert len(standard_frames("train", ("l",))) == 22_600
    assert len(standard_frames("train")) == 45_200
    assert len(standard_frames("val", ("l",))) == 888
    assert len(standard_frames("test")) == 697
    assert len(standard_frames("eigen_benchmark")) == 652
    assert standard_frames("test")[0].name == f"{DRIVE_26} 0000000069 l"


# ------------------------------------------------------------------------ the builder
CUSTOM_TRAIN = [f"{DRIVE_26} 5 l", f"{DRIVE_26} 5 r", f"{DRIVE_28} 7 l"]
CUSTOM_TEST = [f"{DRIVE_28} 7 l", f"{DRIVE_26} 5 l"]
CUSTOM_BENCHMARK = [f"{DRIVE_26} 5 l"]


def _write_custom(root):
    return kitti_fixture.write_kitti_raw(
        root,
        CUSTOM_TRAIN,
        annotated=CUSTOM_BENCHMARK,
        split_lists={"train": CUSTOM_TRAIN, "test": CUSTOM_TEST,
                     "eigen_benchmark": CUSTOM_BENCHMARK},
    )


@pytest.fixture(scope="module")
def custom_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("kitti_custom")
    fixture = _write_custom(root / "raw")
    summary = build_dataset("kitti_eigen/custom", root / "out", manual_dir=root / "raw")
    return fixture, summary, root / "out"


def test_custom_build_round_trips_images_depth_and_intrinsics(custom_build):
    fixture, summary, out = custom_build
    assert {name: split.num_examples for name, split in summary.splits.items()} == {
        "train": 3, "test": 2, "eigen_benchmark": 1}
    builder = tfds.builder("kitti_eigen/custom", data_dir=out)
    for split, lines in (("train", CUSTOM_TRAIN), ("test", CUSTOM_TEST),
                         ("eigen_benchmark", CUSTOM_BENCHMARK)):
        examples = list(tfds.as_numpy(builder.as_dataset(split=split)))
        names = [example["name"].decode() for example in examples]
        assert names == [f"{line.split()[0]} {int(line.split()[1]):010d} {line.split()[2]}"
                         for line in lines]  # file order is kept
        for example, name in zip(examples, names, strict=True):
            frame = fixture.frames[name]
            np.testing.assert_array_equal(example["image"], frame.image)
            assert example["depth"].dtype == np.float32
            if split == "eigen_benchmark":
                np.testing.assert_array_equal(example["depth"], frame.annotated_depth)
            elif name.endswith(" l"):
                np.testing.assert_array_equal(example["depth"], frame.expected_depth)
            else:
                folder, index, _ = name.split()
                np.testing.assert_array_equal(example["depth"], kitti.generate_depth_map(
                    os.path.join(fixture.root, folder.split("/")[0]),
                    os.path.join(fixture.root, folder, "velodyne_points", "data", index + ".bin"),
                    cam=3))
            np.testing.assert_array_equal(example["intrinsics"], frame.intrinsics)
    right = fixture.frames[f"{DRIVE_26} 0000000005 r"].intrinsics
    left = fixture.frames[f"{DRIVE_26} 0000000005 l"].intrinsics
    np.testing.assert_array_equal(right, left)  # P_rect_03 differs only in its translation


def test_standard_config_uses_packaged_lists(tmp_path):
    firsts = {split: standard_frames(split, ("l",))[0] for split in
              ("train", "val", "test", "eigen_benchmark")}
    lines = [f"{frame.folder} {frame.index} {frame.side}" for frame in firsts.values()]
    fixture = kitti_fixture.write_kitti_raw(tmp_path / "raw", lines, annotated=lines[-1:])
    summary = build_dataset("kitti_eigen", tmp_path / "out", manual_dir=tmp_path / "raw",
                            max_examples_per_split=1)
    assert summary.config == "left"
    assert {name: split.num_examples for name, split in summary.splits.items()} == {
        "train": 1, "val": 1, "test": 1, "eigen_benchmark": 1}
    builder = tfds.builder("kitti_eigen", data_dir=tmp_path / "out")
    for split, frame in firsts.items():
        (example,) = tfds.as_numpy(builder.as_dataset(split=split))
        assert example["name"].decode() == frame.name
        expected = fixture.frames[frame.name]
        reference = expected.annotated_depth if split == "eigen_benchmark" else (
            expected.expected_depth)
        np.testing.assert_array_equal(example["depth"], reference)


def test_standard_config_without_annotated_depth_has_no_eigen_benchmark(tmp_path):
    lines = [f"{frame.folder} {frame.index} {frame.side}" for frame in
             (standard_frames(split, ("r",))[0] for split in ("train", "val"))]
    lines.append(f"{standard_frames('test')[0].folder} {standard_frames('test')[0].index} l")
    kitti_fixture.write_kitti_raw(tmp_path / "raw", lines)
    summary = build_dataset("kitti_eigen/stereo", tmp_path / "out", manual_dir=tmp_path / "raw",
                            max_examples_per_split=1)
    assert sorted(summary.splits) == ["test", "train", "val"]
    builder = tfds.builder("kitti_eigen/stereo", data_dir=tmp_path / "out")
    (example,) = tfds.as_numpy(builder.as_dataset(split="train"))
    assert example["name"].decode() == standard_frames("train")[0].name  # an "r" line
    assert example["name"].decode().endswith(" r")


def test_only_8_bit_rgb_pngs_and_jpegs_are_stored_as_they_are(tmp_path):
    image = random_rgb(1, 6, 10)
    write_rgb_png(tmp_path / "rgb.png", image)
    assert stored_image(tmp_path / "rgb.png", image) == (tmp_path / "rgb.png").read_bytes()
    Image.fromarray(image).save(tmp_path / "rgb.jpg")
    assert stored_image(tmp_path / "rgb.jpg", image) == (tmp_path / "rgb.jpg").read_bytes()
    Image.fromarray(np.dstack([image, image[..., :1]])).save(tmp_path / "rgba.png")
    write_gray_png(tmp_path / "gray.png", image[..., 0])
    for name in ("rgba.png", "gray.png"):
        assert stored_image(tmp_path / name, image) is image


# ----------------------------------------------------------- builder bad inputs (+ cleanup)
def _bad_case(root, case):
    """Damages a fresh custom fixture under root/raw; returns the expected message regex."""
    raw = root / "raw"
    _write_custom(raw)
    image = raw / DRIVE_26 / "image_02" / "data" / "0000000005.png"
    if case == "truncated_png":
        truncate_file(image)
        return rf"{image}: corrupt or truncated image"
    if case == "png_end_cut":  # PIL decodes it; TensorFlow, which reads the dataset, not
        truncate_file(image, os.path.getsize(image) - 12)
        return rf"{image}: TensorFlow's PNG decoder rejects it \(.*\); the file is probably"
    if case == "velodyne_empty":
        truncate_file(raw / DRIVE_26 / "velodyne_points" / "data" / "0000000005.bin", 0)
        return (r"0000000005.bin: frame 2011_09_26/2011_09_26_drive_0002_sync 0000000005 l "
                r"\(listed at "
                r".*train_files.txt:1\): no valid depth pixel")
    if case == "garbage_png":
        overwrite_with_garbage(image)
        return rf"{image}: corrupt or truncated image"
    if case == "velodyne_size":
        truncate_file(raw / DRIVE_26 / "velodyne_points" / "data" / "0000000005.bin", 100)
        return r"0000000005.bin: size 100 bytes is not a multiple of 16"
    if case == "calib_missing_key":
        path = raw / "2011_09_26" / "calib_cam_to_cam.txt"
        path.write_text("".join(line for line in path.read_text().splitlines(keepends=True)
                                if not line.startswith("R_rect_00")))
        return rf"{path}: missing key 'R_rect_00'"
    if case == "image_size":
        write_rgb_png(image, random_rgb(0, 38, 123))
        return rf"{image}: image is 123x38 but S_rect_02 in .*calib_cam_to_cam.txt is 124x38"
    if case == "listed_frame_absent":
        os.remove(image)
        return rf"{image}: file not found \(frame listed at .*train_files.txt:1\)"
    if case == "drive_folder_absent":
        shutil.rmtree(raw / DRIVE_28)
        return (rf"{raw / DRIVE_28}: drive folder not found \(listed at .*train_files.txt:3\); "
                r"expected it to contain: image_02/data/, image_03/data/, velodyne_points/data/")
    if case == "date_folder_absent":
        shutil.rmtree(raw / "2011_09_28")
        return (rf"{raw / '2011_09_28'}: date folder not found \(listed at "
                r".*train_files.txt:3\); expected it to contain: "
                r"calib_cam_to_cam.txt, calib_velo_to_cam.txt, <date>_drive_NNNN_sync/")
    if case == "no_date_folders":
        shutil.rmtree(raw / "2011_09_26")
        shutil.rmtree(raw / "2011_09_28")
        return rf"{raw}: no KITTI date folder \(e.g. 2011_09_26/\) found; expected manual_dir/"
    if case == "no_custom_lists":
        shutil.rmtree(raw / CUSTOM_SPLITS_DIR)
        return (rf"{raw / CUSTOM_SPLITS_DIR}: directory not found; config 'custom' expects one "
                r"or more of: train_files.txt, val_files.txt, test_files.txt")
    if case == "annotated_not_16_bit":
        path = raw / DRIVE_26 / "proj_depth" / "groundtruth" / "image_02" / "0000000005.png"
        write_gray_png(path, np.zeros((38, 124), np.uint8))
        return rf"{path}: expected a 16-bit grayscale PNG, got PIL mode L"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    ["truncated_png", "png_end_cut", "velodyne_empty", "garbage_png", "velodyne_size",
     "calib_missing_key", "image_size",
     "listed_frame_absent", "drive_folder_absent", "date_folder_absent", "no_date_folders",
     "no_custom_lists", "annotated_not_16_bit"],
)
def test_bad_input_fails_with_message_and_leaves_no_dataset(tmp_path, case):
    message = _bad_case(tmp_path, case)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("was here before")
    with pytest.raises(DataError, match=message):
        build_dataset("kitti_eigen/custom", out, manual_dir=tmp_path / "raw")
    assert sorted(os.listdir(out)) == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "was here before"


def test_blank_line_in_calib_file_names_the_line(tmp_path):
    raw = tmp_path / "raw"
    _write_custom(raw)
    path = raw / "2011_09_28" / "calib_velo_to_cam.txt"
    lines = path.read_text().splitlines()
    write_text_lines(path, lines[:2])
    with open(path, "a") as handle:
        handle.write("\n" + "\n".join(lines[2:]) + "\n")
    with pytest.raises(DataError, match=rf"{path}: line 3: blank line"):
        build_dataset("kitti_eigen/custom", tmp_path / "out", manual_dir=raw)
    assert not (tmp_path / "out").exists()
