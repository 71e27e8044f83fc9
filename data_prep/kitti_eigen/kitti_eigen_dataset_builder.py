"""`kitti_eigen`: KITTI raw frames of the Eigen split with LiDAR (or annotated) depth.

Configs:
  left (default)  train = the 22,600 Eigen-full left frames, val = 888 left frames;
  stereo          train = 45,200 (left + right), val = 1,776;
  custom          split lists read from `<manual_dir>/kitti_eigen_splits/<split>_files.txt`
                  (any of train/val/test/eigen_benchmark; one split per file present), for
                  users who hold only part of KITTI, and for tests.
Every config has `test` (697 Eigen test frames, LiDAR GT exactly as Monodepth2's
export_gt_depth.py) and, when `proj_depth/groundtruth` is present, `eigen_benchmark` (652
frames, annotated depth png / 256). Train/val depth is the same LiDAR projection
(`vel_depth=True`; P_rect_03 for right frames) so val metrics match the test protocol.

Examples keep the order of the split files (`disable_shuffling`), so test example i is line i
of `splits/eigen/test_files.txt`, i.e. `gt_depths.npz[i]`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import os
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from data_prep import features, kitti
from data_prep.common import (
    DataError,
    numbered_lines,
    read_rgb,
    read_uint16,
    require_valid_depth,
    stored_image,
)

SPLIT_NAMES = ("train", "val", "test", "eigen_benchmark")
CUSTOM_SPLITS_DIR = "kitti_eigen_splits"
# Package data (damono_jax/splits/): the split files of nianticlabs/monodepth2.
STANDARD_SPLIT_FILES = {
    "train": "eigen_full/train_files.txt",
    "val": "eigen_full/val_files.txt",
    "test": "eigen/test_files.txt",
    "eigen_benchmark": "eigen_benchmark/test_files.txt",
}
VERSION = tfds.core.Version("1.0.0")
_SIDE_TO_CAM = {"l": 2, "r": 3}
_DATE_LAYOUT = [
    kitti.CAM_TO_CAM,
    kitti.VELO_TO_CAM,
    "<date>_drive_NNNN_sync/ (from the *_sync.zip archives)",
]
_DRIVE_LAYOUT = ["image_02/data/", "image_03/data/", "velodyne_points/data/"]


@dataclasses.dataclass(frozen=True)
class Frame:
    """One line of a split file: `date/drive frame side`."""

    folder: str  # "2011_09_26/2011_09_26_drive_0002_sync"
    index: int
    side: str  # "l" or "r"
    source: str  # "<split file>:<line>" for error messages

    @property
    def date(self) -> str:
        return self.folder.split("/")[0]

    @property
    def cam(self) -> int:
        return _SIDE_TO_CAM[self.side]

    @property
    def name(self) -> str:
        return f"{self.folder} {self.index:010d} {self.side}"


def parse_split_file(path: str | os.PathLike, text: str | None = None) -> list[Frame]:
    """Parses a Monodepth2 split file ("date/drive frame side" per line) into `Frame`s."""
    path = os.fspath(path)
    if text is None:
        if not os.path.isfile(path):
            raise DataError(path, "split file not found")
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    frames = []
    seen: dict[str, int] = {}
    for number, line in numbered_lines(text):
        fields = line.split()
        if len(fields) != 3:
            raise DataError(
                path, f"line {number}: expected 'date/drive frame side', got {line!r}"
            )
        folder, index_text, side = fields
        parts = folder.split("/")
        if len(parts) != 2 or not parts[1].startswith(parts[0] + "_drive_"):
            raise DataError(
                path, f"line {number}: folder {folder!r} is not '<date>/<date>_drive_NNNN_sync'"
            )
        if not index_text.isdigit():
            raise DataError(path, f"line {number}: frame {index_text!r} is not a number")
        if side not in _SIDE_TO_CAM:
            raise DataError(path, f"line {number}: side {side!r} is not 'l' or 'r'")
        frame = Frame(folder, int(index_text), side, f"{path}:{number}")
        if frame.name in seen:
            raise DataError(path, f"line {number}: duplicate of line {seen[frame.name]}")
        seen[frame.name] = number
        frames.append(frame)
    if not frames:
        raise DataError(path, "split file lists no frames")
    return frames


def standard_split_path(split: str) -> str:
    """Path of the packaged split file (damono_jax/splits/...) behind a standard split."""
    resource = importlib.resources.files("damono_jax") / "splits" / STANDARD_SPLIT_FILES[split]
    return os.fspath(resource)


@functools.cache
def _standard_frames(split: str) -> tuple[Frame, ...]:
    return tuple(parse_split_file(standard_split_path(split)))


def standard_frames(split: str, sides: tuple[str, ...] = ("l", "r")) -> list[Frame]:
    """Frames of a packaged split, keeping only `sides`, in file order."""
    return [frame for frame in _standard_frames(split) if frame.side in sides]


class KittiEigenConfig(tfds.core.BuilderConfig):
    """Which frames go into train/val, and where the split lists come from."""

    def __init__(self, *, train_sides: tuple[str, ...], custom: bool = False, **kwargs):
        super().__init__(version=VERSION, **kwargs)
        self.train_sides = train_sides
        self.custom = custom


class Builder(tfds.core.GeneratorBasedBuilder):
    """KITTI raw (Eigen split) images, LiDAR / annotated depth and intrinsics."""

    VERSION = VERSION
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        KittiEigenConfig(
            name="left",
            description="Eigen-full left frames for train (22,600) and val (888).",
            train_sides=("l",),
        ),
        KittiEigenConfig(
            name="stereo",
            description="Eigen-full left and right frames for train (45,200) and val (1,776).",
            train_sides=("l", "r"),
        ),
        KittiEigenConfig(
            name="custom",
            description=(
                f"Split lists read from <manual_dir>/{CUSTOM_SPLITS_DIR}/<split>_files.txt "
                "(same line format as Monodepth2's split files)."
            ),
            train_sides=("l", "r"),
            custom=True,
        ),
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "left"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
Download the KITTI raw archives listed in damono_jax/splits/kitti_raw_archives.txt (the
<date>_calib.zip files and the <date>_drive_NNNN_sync.zip files) and extract them all into
manual_dir, giving manual_dir/<date>/calib_cam_to_cam.txt, calib_velo_to_cam.txt and
manual_dir/<date>/<date>_drive_NNNN_sync/{image_02,image_03,velodyne_points}/data/.
For eigen_benchmark, merge data_depth_annotated.zip's
{train,val}/<drive>/proj_depth/groundtruth/image_02/ into manual_dir/<date>/<drive>/.
Config 'custom' also reads manual_dir/kitti_eigen_splits/{train,val,test,eigen_benchmark}_files.txt.
"""

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(features.camera_features(image_encoding="png")),
            disable_shuffling=True,
            homepage="https://www.cvlibs.net/datasets/kitti/raw_data.php",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = os.fspath(dl_manager.manual_dir)
        _check_root(root)
        config = self.builder_config
        if config.custom:
            frames_by_split = _custom_frames(root)
        else:
            frames_by_split = {
                "train": standard_frames("train", config.train_sides),
                "val": standard_frames("val", config.train_sides),
                "test": standard_frames("test"),
            }
            benchmark = standard_frames("eigen_benchmark")
            if _any_annotated_depth(root, benchmark):
                frames_by_split["eigen_benchmark"] = benchmark
            else:
                logging.info(
                    "kitti_eigen: no <date>/<drive>/proj_depth/groundtruth under %s; "
                    "skipping the eigen_benchmark split",
                    root,
                )
        calibrations = _CalibrationCache(root)
        return {
            split: self._generate_examples(root, frames, split, calibrations)
            for split, frames in frames_by_split.items()
        }

    def _generate_examples(
        self, root: str, frames: list[Frame], split: str, calibrations: _CalibrationCache
    ) -> Iterator[tuple[str, dict]]:
        for frame in frames:
            yield frame.name, _make_example(root, frame, split, calibrations)


@dataclasses.dataclass(frozen=True)
class _DateCalibration:
    shape: tuple[int, int]  # (H, W) from S_rect_02
    projections: dict[int, np.ndarray]  # cam -> (3, 4) velodyne-to-image
    intrinsics: dict[int, np.ndarray]  # cam -> (fx, fy, cx, cy)
    cam_to_cam_path: str


class _CalibrationCache:
    """Reads each date's calibration once."""

    def __init__(self, root: str):
        self.root = root
        self._by_date: dict[str, _DateCalibration] = {}

    def get(self, date: str, source: str) -> _DateCalibration:
        """The calibration of `date`; `source` (split file:line) goes into errors."""
        if date not in self._by_date:
            date_dir = os.path.join(self.root, date)
            if not os.path.isdir(date_dir):
                raise DataError(
                    date_dir, f"date folder not found (listed at {source}); expected it to "
                    "contain: " + ", ".join(_DATE_LAYOUT),
                )
            self._by_date[date] = _DateCalibration(
                shape=kitti.image_shape(date_dir),
                projections={cam: kitti.velo_to_image_projection(date_dir, cam) for cam in (2, 3)},
                intrinsics={cam: kitti.intrinsics(date_dir, cam) for cam in (2, 3)},
                cam_to_cam_path=os.path.join(date_dir, kitti.CAM_TO_CAM),
            )
        return self._by_date[date]


def frame_paths(root: str | os.PathLike, frame: Frame) -> dict[str, str]:
    """Where a frame's image, velodyne scan and annotated depth live under `root`."""
    drive_dir = os.path.join(os.fspath(root), frame.folder)
    file_stem = f"{frame.index:010d}"
    return {
        "drive": drive_dir,
        "image": os.path.join(drive_dir, f"image_0{frame.cam}", "data", file_stem + ".png"),
        "velodyne": os.path.join(drive_dir, "velodyne_points", "data", file_stem + ".bin"),
        "annotated_depth": os.path.join(
            drive_dir, "proj_depth", "groundtruth", f"image_0{frame.cam}", file_stem + ".png"
        ),
    }


def _make_example(
    root: str, frame: Frame, split: str, calibrations: _CalibrationCache
) -> dict:
    calibration = calibrations.get(frame.date, frame.source)
    paths = frame_paths(root, frame)
    if not os.path.isdir(paths["drive"]):
        raise DataError(
            paths["drive"],
            f"drive folder not found (listed at {frame.source}); expected it to contain: "
            + ", ".join(_DRIVE_LAYOUT),
        )
    depth_key = "annotated_depth" if split == "eigen_benchmark" else "velodyne"
    for key in ("image", depth_key):
        if not os.path.isfile(paths[key]):
            raise DataError(paths[key], f"file not found (frame listed at {frame.source})")
    image = read_rgb(paths["image"])
    height, width = calibration.shape
    if image.shape[:2] != (height, width):
        raise DataError(
            paths["image"],
            f"image is {image.shape[1]}x{image.shape[0]} but S_rect_02 in "
            f"{calibration.cam_to_cam_path} is {width}x{height}",
        )
    if split == "eigen_benchmark":
        depth = read_uint16(paths["annotated_depth"]).astype(np.float32) / np.float32(256.0)
        if depth.shape != (height, width):
            raise DataError(
                paths["annotated_depth"],
                f"depth map is {depth.shape[1]}x{depth.shape[0]}, image is {width}x{height}",
            )
    else:
        points = kitti.load_velodyne_points(paths["velodyne"])
        depth = kitti.project_points_to_depth(
            points, calibration.projections[frame.cam], calibration.shape, vel_depth=True
        )
    require_valid_depth(paths[depth_key], depth, f"{frame.name} (listed at {frame.source})")
    return {
        # KITTI's own 8-bit RGB PNG bytes are stored as they are (decoding them gives exactly
        # `image`); re-encoding with TF's PNG encoder costs ~1 s per full-size frame.
        "image": stored_image(paths["image"], image),
        "depth": depth,
        "intrinsics": calibration.intrinsics[frame.cam],
        "name": frame.name,
    }


def _check_root(root: str) -> None:
    """The manual_dir must hold at least one KITTI date folder."""
    entries = sorted(os.listdir(root)) if os.path.isdir(root) else []
    dates = [entry for entry in entries if _looks_like_date(entry)]
    if not dates:
        raise DataError(
            root,
            "no KITTI date folder (e.g. 2011_09_26/) found; expected manual_dir/<date>/ "
            "holding " + ", ".join(_DATE_LAYOUT) + f"; found: {entries[:10]}",
        )


def _looks_like_date(name: str) -> bool:
    parts = name.split("_")
    return len(parts) == 3 and all(part.isdigit() for part in parts) and len(parts[0]) == 4


def _any_annotated_depth(root: str, frames: list[Frame]) -> bool:
    folders = {frame.folder for frame in frames}
    return any(
        os.path.isdir(os.path.join(root, folder, "proj_depth", "groundtruth"))
        for folder in folders
    )


def _custom_frames(root: str) -> dict[str, list[Frame]]:
    splits_dir = os.path.join(root, CUSTOM_SPLITS_DIR)
    expected = [f"{split}_files.txt" for split in SPLIT_NAMES]
    if not os.path.isdir(splits_dir):
        raise DataError(
            splits_dir,
            "directory not found; config 'custom' expects one or more of: " + ", ".join(expected),
        )
    frames_by_split = {}
    for split in SPLIT_NAMES:
        path = os.path.join(splits_dir, f"{split}_files.txt")
        if os.path.exists(path):
            frames_by_split[split] = parse_split_file(path)
    if not frames_by_split:
        raise DataError(
            splits_dir, "no split file found; config 'custom' expects one or more of: "
            + ", ".join(expected),
        )
    return frames_by_split
