"""Virtual KITTI 1.3.1 and 2.0.3 on disk: frame discovery, text files, depth and labels.

Layouts, relative to the TFDS `manual_dir`:

v1 (1.3.1), the extracted `vkitti_1.3.1_{rgb,depthgt,scenegt}.tar`:
    vkitti_1.3.1_rgb/<world>/<variation>/%05d.png          8-bit RGB
    vkitti_1.3.1_depthgt/<world>/<variation>/%05d.png      16-bit grey, 1 = 1 cm
    vkitti_1.3.1_scenegt/<world>/<variation>/%05d.png      RGB class/instance colours
    vkitti_1.3.1_scenegt/<world>_<variation>_scenegt_rgb_encoding.txt

v2 (2.0.3), camera 0 (left) of the extracted `vkitti_2.0.3_{rgb,depth,classSegmentation,
textgt}.tar`:
    vkitti_2.0.3_rgb/SceneXX/<variation>/frames/rgb/Camera_0/rgb_%05d.jpg
    vkitti_2.0.3_depth/SceneXX/<variation>/frames/depth/Camera_0/depth_%05d.png
    vkitti_2.0.3_classSegmentation/SceneXX/<variation>/frames/classSegmentation/Camera_0/
        classgt_%05d.png
    vkitti_2.0.3_textgt/SceneXX/<variation>/{colors.txt, intrinsic.txt}
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from data_prep.common import DataError, require_dir, require_subdirs

# Far plane of the Virtual KITTI z-buffer: 65535 cm = 655.35 m (sky). Depth at or beyond it
# is stored as 0 (invalid).
FAR_PLANE_RAW = 65535
V1_INTRINSICS = (725.0, 725.0, 620.5, 187.0)  # fx, fy, cx, cy of every 1.3.1 frame
V1_SIZE = (1242, 375)  # (width, height) the 1.3.1 intrinsics belong to
V2_CAMERA_ID = 0  # Camera_0 = left camera

NUM_VAL_FRAMES = 500
SPLIT_SALT = "damono_jax/vkitti/val"

V1_DIRS = {
    "rgb": "vkitti_1.3.1_rgb",
    "depth": "vkitti_1.3.1_depthgt",
    "scenegt": "vkitti_1.3.1_scenegt",
}
V2_DIRS = {
    "rgb": "vkitti_2.0.3_rgb",
    "depth": "vkitti_2.0.3_depth",
    "classgt": "vkitti_2.0.3_classSegmentation",
    "textgt": "vkitti_2.0.3_textgt",
}
V1_EXPECTED = {
    V1_DIRS["rgb"]: "<world>/<variation>/%05d.png (from vkitti_1.3.1_rgb.tar)",
    V1_DIRS["depth"]: "<world>/<variation>/%05d.png (from vkitti_1.3.1_depthgt.tar)",
    V1_DIRS["scenegt"]: "<world>/<variation>/%05d.png and "
    "<world>_<variation>_scenegt_rgb_encoding.txt (from vkitti_1.3.1_scenegt.tar)",
}
V2_EXPECTED = {
    V2_DIRS["rgb"]: "SceneXX/<variation>/frames/rgb/Camera_0/rgb_%05d.jpg "
    "(from vkitti_2.0.3_rgb.tar)",
    V2_DIRS["depth"]: "SceneXX/<variation>/frames/depth/Camera_0/depth_%05d.png "
    "(from vkitti_2.0.3_depth.tar)",
    V2_DIRS["classgt"]: "SceneXX/<variation>/frames/classSegmentation/Camera_0/"
    "classgt_%05d.png (from vkitti_2.0.3_classSegmentation.tar)",
    V2_DIRS["textgt"]: "SceneXX/<variation>/{colors.txt,intrinsic.txt} "
    "(from vkitti_2.0.3_textgt.tar)",
}

_V1_FRAME = re.compile(r"^(\d{5})\.png$")
_V2_FRAME = re.compile(r"^rgb_(\d{5})\.jpg$")


@dataclasses.dataclass(frozen=True)
class Frame:
    """One Virtual KITTI frame: where its files are and how to get its intrinsics."""

    name: str  # "<world>/<variation>/<frame>", the TFDS key and `name` feature
    rgb_path: Path
    depth_path: Path
    class_path: Path
    color_table_path: Path
    intrinsics_path: Path | None  # v2 intrinsic.txt; None for v1 (fixed intrinsics)
    frame_index: int


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_frames_v1(root: Path) -> list[Frame]:
    """Lists every Virtual KITTI 1.3.1 frame under `root` (the manual_dir), sorted by name."""
    require_subdirs(root, V1_EXPECTED)
    rgb_root = root / V1_DIRS["rgb"]
    frames = []
    for world_dir in _subdirs(rgb_root):
        for variation_dir in _subdirs(world_dir):
            world, variation = world_dir.name, variation_dir.name
            encoding = (
                root / V1_DIRS["scenegt"] / f"{world}_{variation}_scenegt_rgb_encoding.txt"
            )
            for entry in sorted(variation_dir.iterdir()):
                match = _V1_FRAME.match(entry.name)
                if not match:
                    continue
                frames.append(
                    Frame(
                        name=f"{world}/{variation}/{match.group(1)}",
                        rgb_path=entry,
                        depth_path=root / V1_DIRS["depth"] / world / variation / entry.name,
                        class_path=root / V1_DIRS["scenegt"] / world / variation / entry.name,
                        color_table_path=encoding,
                        intrinsics_path=None,
                        frame_index=int(match.group(1)),
                    )
                )
    if not frames:
        raise DataError(rgb_root, "no frames found; expected <world>/<variation>/%05d.png")
    return frames


def list_frames_v2(root: Path) -> list[Frame]:
    """Lists every Camera_0 frame of Virtual KITTI 2.0.3 under `root`, sorted by name."""
    require_subdirs(root, V2_EXPECTED)
    rgb_root = root / V2_DIRS["rgb"]
    camera = f"Camera_{V2_CAMERA_ID}"
    frames = []
    for scene_dir in _subdirs(rgb_root):
        for variation_dir in _subdirs(scene_dir):
            scene, variation = scene_dir.name, variation_dir.name
            camera_dir = variation_dir / "frames" / "rgb" / camera
            require_dir(camera_dir, ["rgb_%05d.jpg"])
            text_dir = root / V2_DIRS["textgt"] / scene / variation
            for entry in sorted(camera_dir.iterdir()):
                match = _V2_FRAME.match(entry.name)
                if not match:
                    continue
                index = match.group(1)
                frames.append(
                    Frame(
                        name=f"{scene}/{variation}/{index}",
                        rgb_path=entry,
                        depth_path=root / V2_DIRS["depth"] / scene / variation / "frames"
                        / "depth" / camera / f"depth_{index}.png",
                        class_path=root / V2_DIRS["classgt"] / scene / variation / "frames"
                        / "classSegmentation" / camera / f"classgt_{index}.png",
                        color_table_path=text_dir / "colors.txt",
                        intrinsics_path=text_dir / "intrinsic.txt",
                        frame_index=int(index),
                    )
                )
    if not frames:
        raise DataError(
            rgb_root, f"no frames found; expected SceneXX/<variation>/frames/rgb/{camera}/"
            "rgb_%05d.jpg"
        )
    return frames


def num_val_frames(num_frames: int) -> int:
    """500 validation frames; below 1000 frames (fixtures), half of them (rounded down)."""
    return min(NUM_VAL_FRAMES, num_frames // 2)


def split_train_val(frames: Sequence[Frame]) -> tuple[list[Frame], list[Frame]]:
    """Deterministic train/val split.

    Frames are ranked by the SHA-256 of `SPLIT_SALT + ":" + name`; the `num_val_frames` lowest
    ranks are validation. The rule depends only on frame names, so it is the same on every
    machine and NumPy version (a seeded `Generator.choice` is not guaranteed to be). Both
    splits keep the frames' name order.
    """
    if len(frames) < 2:
        raise DataError(
            frames[0].rgb_path if frames else "<no frames>",
            f"need at least 2 frames to make train and val splits, found {len(frames)}",
        )

    def rank(frame: Frame) -> str:
        return hashlib.sha256(f"{SPLIT_SALT}:{frame.name}".encode()).hexdigest()

    val_names = {f.name for f in sorted(frames, key=rank)[: num_val_frames(len(frames))]}
    ordered = sorted(frames, key=lambda f: f.name)
    train = [f for f in ordered if f.name not in val_names]
    val = [f for f in ordered if f.name in val_names]
    return train, val


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise DataError(path, f"not a UTF-8 text file ({error})") from error


def read_color_table(path: Path) -> dict[str, tuple[int, int, int]]:
    """Parses a v1 `*_scenegt_rgb_encoding.txt` or a v2 `colors.txt`: `{entry: (r, g, b)}`.

    The first line is the header (`Category(:id) r g b` / `Category r g b`); every other
    non-empty line is `Name r g b` or `Name:<instance> r g b`.
    """
    lines = _read_lines(path)
    if not lines or not lines[0].split() or not lines[0].split()[0].startswith("Category"):
        raise DataError(path, "line 1: expected the header 'Category r g b'")
    colors: dict[str, tuple[int, int, int]] = {}
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 4:
            raise DataError(path, f"line {number}: expected 'Name r g b', got {line!r}")
        name, *channels = fields
        try:
            rgb = tuple(int(c) for c in channels)
        except ValueError as error:
            raise DataError(path, f"line {number}: colour is not 3 integers: {line!r}") from error
        if any(not 0 <= c <= 255 for c in rgb):
            raise DataError(path, f"line {number}: colour values must be 0..255: {line!r}")
        if name in colors:
            raise DataError(path, f"line {number}: entry {name!r} appears twice")
        colors[name] = rgb  # type: ignore[assignment]
    if not colors:
        raise DataError(path, "no colour entries after the header")
    return colors


def read_intrinsics_v2(path: Path, camera_id: int = V2_CAMERA_ID) -> dict[int, np.ndarray]:
    """Parses v2 `intrinsic.txt`: `{frame: float32 (fx, fy, cx, cy)}` for `camera_id`.

    Header `frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]`, then one row per frame and camera.
    """
    lines = _read_lines(path)
    if not lines or not lines[0].startswith("frame"):
        raise DataError(path, "line 1: expected the header 'frame cameraID K[0,0] K[1,1] "
                              "K[0,2] K[1,2]'")
    intrinsics: dict[int, np.ndarray] = {}
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise DataError(path, f"line {number}: expected 6 values, got {line!r}")
        try:
            frame, camera = int(fields[0]), int(fields[1])
            values = np.array([float(v) for v in fields[2:]], dtype=np.float32)
        except ValueError as error:
            raise DataError(path, f"line {number}: not numbers: {line!r}") from error
        if camera == camera_id:
            intrinsics[frame] = values
    return intrinsics


def v1_intrinsics(width: int, height: int) -> np.ndarray:
    """float32 (fx, fy, cx, cy) of a 1.3.1 frame of `width` x `height`.

    1.3.1 ships no intrinsics file; every frame is rendered at 1242x375 with `V1_INTRINSICS`,
    which this returns unchanged at that size. Other sizes (downscaled test fixtures) get the
    intrinsics scaled by width / 1242 and height / 375.
    """
    fx, fy, cx, cy = V1_INTRINSICS
    scale_x, scale_y = width / V1_SIZE[0], height / V1_SIZE[1]
    return np.array([fx * scale_x, fy * scale_y, cx * scale_x, cy * scale_y], dtype=np.float32)


def depth_to_metres(raw: np.ndarray) -> np.ndarray:
    """uint16 centimetres -> float32 metres (exactly p / 100 in float32); far plane -> 0."""
    raw = np.asarray(raw, dtype=np.uint16)
    # Both operands are exact in float32, so the IEEE division rounds p / 100 correctly.
    metres = raw.astype(np.float32) / np.float32(100.0)
    metres[raw >= FAR_PLANE_RAW] = 0.0
    return metres
