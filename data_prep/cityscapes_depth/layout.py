"""Cityscapes on disk: frame discovery, camera files, disparity -> depth, and the row crop.

Layout, relative to the TFDS `manual_dir`, from the
extracted `leftImg8bit_trainvaltest.zip`, `disparity_trainvaltest.zip`,
`camera_trainvaltest.zip` and `gtFine_trainvaltest.zip`:

    leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png    8-bit RGB, 2048x1024
    disparity/<split>/<city>/<city>_<seq>_<frame>_disparity.png        uint16, d = (p - 1) / 256
    camera/<split>/<city>/<city>_<seq>_<frame>_camera.json             baseline, fx, fy, u0, v0
    gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png     8-bit labelIds 0..33
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np

from data_prep.common import DataError, require_dir, require_subdirs

SPLITS = ("train", "val")
NATIVE_HEIGHT = 1024
# Rows kept at the native 2048x1024: a vertically centred 10:3 band whose bottom edge is
# Monodepth's car-hood cut (1024 * 4 / 5 = 819.2). DESC has no Cityscapes crop; this is the
# project's documented choice (datasets.md §3.3).
CROP_TOP, CROP_BOTTOM = 205, 819

EXPECTED = {
    "leftImg8bit": "<split>/<city>/<id>_leftImg8bit.png (from leftImg8bit_trainvaltest.zip)",
    "disparity": "<split>/<city>/<id>_disparity.png (from disparity_trainvaltest.zip)",
    "camera": "<split>/<city>/<id>_camera.json (from camera_trainvaltest.zip)",
    "gtFine": "<split>/<city>/<id>_gtFine_labelIds.png (from gtFine_trainvaltest.zip)",
}

_FRAME = re.compile(r"^([a-z_]+_\d{6}_\d{6})_leftImg8bit\.png$")


@dataclasses.dataclass(frozen=True)
class Frame:
    """One Cityscapes frame and the paths of its four files."""

    name: str  # "<city>_<seq>_<frame>", the TFDS key and `name` feature
    image_path: Path
    disparity_path: Path
    camera_path: Path
    label_path: Path


@dataclasses.dataclass(frozen=True)
class Camera:
    """The values of a `*_camera.json` that depth and intrinsics need."""

    baseline: float
    fx: float
    fy: float
    u0: float
    v0: float


def list_frames(root: Path, split: str) -> list[Frame]:
    """Lists the frames of `split` under `root` (the manual_dir), sorted by name."""
    require_subdirs(root, EXPECTED)
    for folder, what in EXPECTED.items():
        require_dir(root / folder / split, [what.split(" (")[0].replace("<split>/", "", 1)])
    image_root = root / "leftImg8bit" / split
    frames = []
    for city_dir in sorted(p for p in image_root.iterdir() if p.is_dir()):
        for entry in sorted(city_dir.iterdir()):
            match = _FRAME.match(entry.name)
            if not match:
                continue
            name = match.group(1)
            city = city_dir.name
            frames.append(
                Frame(
                    name=name,
                    image_path=entry,
                    disparity_path=root / "disparity" / split / city / f"{name}_disparity.png",
                    camera_path=root / "camera" / split / city / f"{name}_camera.json",
                    label_path=root / "gtFine" / split / city / f"{name}_gtFine_labelIds.png",
                )
            )
    if not frames:
        raise DataError(image_root, "no frames found; expected <city>/<id>_leftImg8bit.png")
    return frames


def read_camera(path: Path) -> Camera:
    """Reads `extrinsic.baseline` and `intrinsic.{fx, fy, u0, v0}` from a camera json."""
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(path, f"not a valid JSON file ({error})") from error
    values = {}
    for group, key in (("extrinsic", "baseline"), ("intrinsic", "fx"), ("intrinsic", "fy"),
                       ("intrinsic", "u0"), ("intrinsic", "v0")):
        section = content.get(group) if isinstance(content, dict) else None
        if not isinstance(section, dict) or key not in section:
            raise DataError(path, f"missing key '{group}.{key}'")
        value = section[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value):
            raise DataError(path, f"key '{group}.{key}' must be a finite number, got {value!r}")
        values[key] = float(value)
    for key in ("baseline", "fx", "fy"):
        if values[key] <= 0:
            raise DataError(path, f"key '{key}' must be positive, got {values[key]}")
    return Camera(**values)


def disparity_to_depth(raw: np.ndarray, baseline: float, fx: float) -> np.ndarray:
    """uint16 disparity PNG values -> float32 metric depth `baseline * fx / d`, 0 = invalid.

    `d = (p - 1) / 256` pixels; p = 0 is invalid by the dataset's definition and p = 1 means
    d = 0 (infinitely far), so both give depth 0. Computed in float64, stored as float32.
    """
    raw = np.asarray(raw, dtype=np.uint16)
    valid = raw > 1
    disparity = (raw[valid].astype(np.float64) - 1.0) / 256.0
    depth = np.zeros(raw.shape, dtype=np.float32)
    depth[valid] = (baseline * fx / disparity).astype(np.float32)
    return depth


def crop_rows(height: int) -> tuple[int, int]:
    """Rows [top, bottom) kept from a frame `height` rows tall: [205, 819) at 1024 rows.

    Other heights (downscaled test fixtures) keep the same fraction, rounded to the nearest
    row.
    """
    top = (CROP_TOP * height + NATIVE_HEIGHT // 2) // NATIVE_HEIGHT
    bottom = (CROP_BOTTOM * height + NATIVE_HEIGHT // 2) // NATIVE_HEIGHT
    return top, bottom
