"""Your own camera's folders on disk: frame discovery, intrinsics, depth and label files.

Layout, relative to the TFDS `manual_dir` (any of the three split folders; at least one):

    intrinsics.json                 optional: the camera of every split without its own
    video.json                      optional: {"every": N, "max_frames": M} for every split's
                                    videos without its own (default: every frame)
    {train,val,test}/
      intrinsics.json               the split's camera (overrides the top-level one)
      video.json                    the split's frame step for its videos
      image/<path>.png|.jpg|.jpeg   RGB (grayscale, palette and RGBA are converted), any size
      video/<path>.mp4|.mov|.mkv|.avi  unlabelled only: videos, beside or instead of image/;
                                    frame k of `video/<path>.mp4` is the frame `<path>/<k>`
                                    (k with 6 digits), every `every`-th frame kept
      depth/<path>.png|.npy         labelled only: uint16 PNG of metres x 256 (KITTI devkit)
                                    or float32 .npy of metres; 0 = invalid
      label/<path>.png              labelled, optional: uint8 Cityscapes train ids, 255 =
                                    ignore; when the folder exists, every image needs one

`<path>` may hold subfolders (e.g. `drive_01/000042`); an image and its depth and label share
it. `intrinsics.json` holds fx, fy, cx, cy in pixels of the images it describes, either one
camera for every image of the folder, `{"fx": 721.5, "fy": 721.5, "cx": 609.6, "cy": 172.9}`,
or per image, `{"images": {"drive_01/000042.png": {"fx": ...}, ...}}`, or both (the
top-level camera then serves the images not listed). A video's camera is listed under its
file name (`{"images": {"drive_01.mp4": {...}}}`) or is the folder's.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from damono_jax import video as video_files
from data_prep.common import DataError

SPLITS = ("train", "val", "test")
INTRINSICS_FILE = "intrinsics.json"
IMAGE_DIR, DEPTH_DIR, LABEL_DIR, VIDEO_DIR = "image", "depth", "label", "video"
VIDEO_FILE = "video.json"
VIDEO_KEYS = ("every", "max_frames")
VIDEO_FRAME_NAME = "{index:06d}"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEPTH_SUFFIXES = (".png", ".npy")
LABEL_SUFFIXES = (".png",)
DEPTH_PNG_SCALE = 256.0  # KITTI devkit: metres = uint16 / 256
INTRINSICS_KEYS = ("fx", "fy", "cx", "cy")


@dataclasses.dataclass(frozen=True)
class Frame:
    """One image of a split folder and the files that go with it."""

    name: str  # "<split>/<path>" without suffix: the TFDS key and `name` feature
    image_path: Path
    depth_path: Path | None  # None in the unlabelled config
    label_path: Path | None  # None when the split has no label/ folder
    intrinsics: np.ndarray  # float32 (fx, fy, cx, cy) in pixels


@dataclasses.dataclass(frozen=True)
class Video:
    """One video of a split folder: its kept frames become frames `<name>/<index>`."""

    name: str  # "<split>/<path>" without suffix
    path: Path
    intrinsics: np.ndarray  # float32 (fx, fy, cx, cy) in pixels of its frames
    every: int
    max_frames: int | None

    def frame_name(self, index: int) -> str:
        return f"{self.name}/{VIDEO_FRAME_NAME.format(index=index)}"


def _files_by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """`relative path without suffix -> file` for the files under `folder` with `suffixes`.

    Two files with one stem (`a.png` and `a.npy`) are ambiguous and raise `DataError`.
    """
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.suffix.lower() not in suffixes:
            raise DataError(
                path, f"unexpected file in {folder.name}/: expected {', '.join(suffixes)}"
            )
        stem = path.relative_to(folder).with_suffix("").as_posix()
        if stem in found:
            raise DataError(path, f"two files for one frame: {found[stem].name} and {path.name}")
        found[stem] = path
    return found


def _camera(values: object, path: Path, where: str) -> np.ndarray:
    """float32 (fx, fy, cx, cy) from a JSON object; errors name the file and the key."""
    if not isinstance(values, Mapping):
        raise DataError(path, f"{where}: expected an object with keys {', '.join(INTRINSICS_KEYS)}")
    missing = [key for key in INTRINSICS_KEYS if key not in values]
    if missing:
        raise DataError(path, f"{where}: missing key(s) {', '.join(missing)}")
    unknown = sorted(set(values) - set(INTRINSICS_KEYS) - {"images"})
    if unknown:
        raise DataError(path, f"{where}: unknown key(s) {', '.join(unknown)}")
    camera = []
    for key in INTRINSICS_KEYS:
        value = values[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value
        ):
            raise DataError(path, f"{where}: key {key!r} must be a finite number, got {value!r}")
        if key in ("fx", "fy") and value <= 0:
            raise DataError(path, f"{where}: key {key!r} must be > 0 pixels, got {value!r}")
        camera.append(float(value))
    return np.asarray(camera, np.float32)


@dataclasses.dataclass(frozen=True)
class Intrinsics:
    """A folder's `intrinsics.json`: one camera for all images, per-image cameras, or both."""

    path: Path
    default: np.ndarray | None
    per_image: dict[str, np.ndarray]

    def of(self, relative_image: str) -> np.ndarray | None:
        """The camera of `relative_image` (a path relative to `image/`), if this file has one."""
        return self.per_image.get(relative_image, self.default)


def _read_json_object(path: Path) -> dict:
    """The JSON object in `path`; invalid JSON or another type is a `DataError` naming it."""
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(path, f"line {error.lineno}: invalid JSON ({error.msg})") from error
    if not isinstance(record, dict):
        raise DataError(path, f"expected a JSON object, got {type(record).__name__}")
    return record


def read_intrinsics(path: Path) -> Intrinsics:
    """Parses an `intrinsics.json`; every problem is a `DataError` naming the file."""
    record = _read_json_object(path)
    per_image: dict[str, np.ndarray] = {}
    images = record.get("images", {})
    if not isinstance(images, dict):
        raise DataError(path, "key 'images' must map image paths to cameras")
    for image, values in images.items():
        per_image[image] = _camera(values, path, f"images[{image!r}]")
    default = None
    if set(record) - {"images"}:
        default = _camera(record, path, "top-level camera")
    if default is None and not per_image:
        raise DataError(path, f"holds no camera: expected keys {', '.join(INTRINSICS_KEYS)}")
    return Intrinsics(path, default, per_image)


def _split_intrinsics(root: Path, split_dir: Path) -> list[Intrinsics]:
    """The intrinsics files that apply to `split_dir`, most specific first."""
    candidates = [split_dir / INTRINSICS_FILE, root / INTRINSICS_FILE]
    return [read_intrinsics(path) for path in candidates if path.is_file()]


def available_splits(root: Path) -> list[str]:
    """The split folders present under `root`; none is a `DataError` naming `root`."""
    splits = [split for split in SPLITS if (root / split).is_dir()]
    if not splits:
        entries = sorted(entry.name for entry in root.iterdir())[:10]
        raise DataError(
            root,
            f"no split folder: expected one or more of {', '.join(s + '/' for s in SPLITS)} "
            f"each holding {IMAGE_DIR}/ (found: {entries})",
        )
    return splits


def list_frames(root: Path, split: str, *, labelled: bool) -> list[Frame]:
    """Every frame of `root/split`, checked for matching depth, label and intrinsics files."""
    split_dir = root / split
    image_dir = split_dir / IMAGE_DIR
    video_dir = split_dir / VIDEO_DIR
    if labelled and video_dir.is_dir():
        raise DataError(
            video_dir, "videos are for the unlabelled config (a labelled frame needs its own "
            "depth/ file); put a labelled split's frames into image/"
        )
    if not image_dir.is_dir():
        if video_dir.is_dir():
            return []  # an unlabelled split of videos only (`list_videos`)
        raise DataError(
            image_dir, "directory not found; each split folder holds image/"
            + ("" if labelled else " or video/")
        )
    images = _files_by_stem(image_dir, IMAGE_SUFFIXES)
    if not images and not video_dir.is_dir():
        raise DataError(image_dir, f"no image ({', '.join(IMAGE_SUFFIXES)}) found")
    depths: dict[str, Path] = {}
    labels: dict[str, Path] | None = None
    if labelled:
        depth_dir = split_dir / DEPTH_DIR
        if not depth_dir.is_dir():
            raise DataError(
                depth_dir,
                "directory not found; the labelled config needs a depth per image "
                "(depth/<path>.png uint16 metres x 256, or .npy float32 metres)",
            )
        depths = _files_by_stem(depth_dir, DEPTH_SUFFIXES)
        _check_matching(images, depths, depth_dir, "depth")
        label_dir = split_dir / LABEL_DIR
        if label_dir.is_dir():
            labels = _files_by_stem(label_dir, LABEL_SUFFIXES)
            _check_matching(images, labels, label_dir, "label")
    intrinsics_files = _required_intrinsics(root, split_dir)
    frames = []
    for stem, image_path in images.items():
        relative_image = image_path.relative_to(image_dir).as_posix()
        camera = next(
            (c for c in (f.of(relative_image) for f in intrinsics_files) if c is not None), None
        )
        if camera is None:
            raise DataError(
                image_path,
                "no camera for this image in "
                + " or ".join(str(f.path) for f in intrinsics_files)
                + f" (add it under \"images\": {{\"{relative_image}\": ...}} or give a "
                "top-level camera)",
            )
        frames.append(Frame(
            name=f"{split}/{stem}",
            image_path=image_path,
            depth_path=depths.get(stem),
            label_path=None if labels is None else labels[stem],
            intrinsics=camera,
        ))
    _check_listed_images_exist(intrinsics_files, split_dir)
    return frames


def _required_intrinsics(root: Path, split_dir: Path) -> list[Intrinsics]:
    intrinsics_files = _split_intrinsics(root, split_dir)
    if not intrinsics_files:
        raise DataError(
            split_dir / INTRINSICS_FILE,
            f"file not found (nor {root / INTRINSICS_FILE}); it gives the camera as "
            '{"fx": ..., "fy": ..., "cx": ..., "cy": ...} in pixels',
        )
    return intrinsics_files


def read_video_settings(path: Path) -> tuple[int, int | None]:
    """`(every, max_frames)` of a `video.json`; every problem is a `DataError` naming it."""
    record = _read_json_object(path)
    unknown = sorted(set(record) - set(VIDEO_KEYS))
    if unknown:
        raise DataError(path, f"unknown key(s) {', '.join(unknown)}; expected "
                        f"{', '.join(VIDEO_KEYS)}")
    values = []
    for key, default in (("every", 1), ("max_frames", None)):
        value = record.get(key, default)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise DataError(path, f"key {key!r} must be an integer >= 1, got {value!r}")
        values.append(value)
    return values[0], values[1]


def list_videos(root: Path, split: str) -> list[Video]:
    """Every video of `root/split/video/` (none without that folder), opened to check that
    it is a readable video, with its camera and the frame step of `video.json`."""
    split_dir = root / split
    video_dir = split_dir / VIDEO_DIR
    if not video_dir.is_dir():
        return []
    videos = _files_by_stem(video_dir, video_files.VIDEO_EXTENSIONS)
    if not videos:
        raise DataError(video_dir, f"no video ({', '.join(video_files.VIDEO_EXTENSIONS)}) "
                        "found")
    intrinsics_files = _required_intrinsics(root, split_dir)
    settings = next((path for path in (split_dir / VIDEO_FILE, root / VIDEO_FILE)
                     if path.is_file()), None)
    every, max_frames = (1, None) if settings is None else read_video_settings(settings)
    result = []
    for stem, path in videos.items():
        video_files.probe(path)  # a file that is no readable video fails before any write
        relative = path.relative_to(video_dir).as_posix()
        camera = next(
            (c for c in (f.of(relative) for f in intrinsics_files) if c is not None), None
        )
        if camera is None:
            raise DataError(
                path, "no camera for this video in "
                + " or ".join(str(f.path) for f in intrinsics_files)
                + f" (add it under \"images\": {{\"{relative}\": ...}} or give a top-level "
                "camera)",
            )
        result.append(Video(f"{split}/{stem}", path, camera, every, max_frames))
    _check_listed_images_exist(intrinsics_files, split_dir)
    return result


def check_frame_names(frames: list[Frame], videos: list[Video]) -> None:
    """An image may not take the name of a video's frame (`drive/000000.png` beside
    `drive.mp4`): TFDS keys must be unique."""
    prefixes = {f"{video.name}/": video for video in videos}
    for frame in frames:
        for prefix, video in prefixes.items():
            if frame.name.startswith(prefix):
                raise DataError(frame.image_path, f"its frame name {frame.name} is also the "
                                f"name of a frame of {video.path}; rename one of them")


def _check_matching(images: dict[str, Path], others: dict[str, Path], folder: Path,
                    what: str) -> None:
    """Every image has a file in `folder` and every file there has an image."""
    without = [images[stem] for stem in images if stem not in others]
    if without:
        raise DataError(
            without[0],
            f"no {what} for this image: expected {folder}/"
            f"{without[0].relative_to(folder.parent / IMAGE_DIR).with_suffix('')}"
            f"{'.png or .npy' if what == 'depth' else '.png'}"
            + (f" ({len(without)} images lack one)" if len(without) > 1 else ""),
        )
    orphans = [others[stem] for stem in others if stem not in images]
    if orphans:
        raise DataError(
            orphans[0],
            f"{what} file without an image (expected {folder.parent / IMAGE_DIR}/"
            f"{orphans[0].relative_to(folder).with_suffix('')}.png or .jpg)",
        )


def _check_listed_images_exist(intrinsics_files: list[Intrinsics], split_dir: Path) -> None:
    """A per-image camera of the split's own file must name an existing image or video
    (typos)."""
    own = [f for f in intrinsics_files if f.path.parent == split_dir]
    existing = {
        path.relative_to(folder).as_posix()
        for folder in (split_dir / IMAGE_DIR, split_dir / VIDEO_DIR) if folder.is_dir()
        for path in folder.rglob("*") if path.is_file()
    }
    for intrinsics in own:
        unknown = sorted(set(intrinsics.per_image) - existing)
        if unknown:
            raise DataError(
                intrinsics.path,
                f"images[{unknown[0]!r}]: no such image or video in {split_dir}",
            )


def depth_from_png(depth: np.ndarray) -> np.ndarray:
    """uint16 metres x 256 (0 = invalid) -> float32 metres."""
    return depth.astype(np.float32) / np.float32(DEPTH_PNG_SCALE)


def read_depth_npy(path: Path) -> np.ndarray:
    """A float32 (H, W) or (H, W, 1) `.npy` of metres; NaN, Inf or negative values are errors."""
    try:
        depth = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise DataError(path, f"not a readable .npy file ({error})") from error
    if depth.ndim == 3 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    if depth.ndim != 2:
        raise DataError(path, f"expected a (H, W) depth map, got shape {depth.shape}")
    if depth.dtype not in (np.float32, np.float64, np.float16):
        raise DataError(path, f"expected float32 metres, got dtype {depth.dtype}")
    depth = depth.astype(np.float32)
    bad = ~np.isfinite(depth) | (depth < 0)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataError(
            path,
            f"{int(bad.sum())} pixel(s) are NaN, Inf or negative (first at row {row}, column "
            f"{col}: {depth[row, col]}); write 0 for invalid pixels",
        )
    return depth
