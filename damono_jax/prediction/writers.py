"""What prediction writes for each image: depth as npy, KITTI PNG16, a colour map, a PLY."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from damono_jax import files, visualization

# "video": `<video stem>_depth.mp4` of each video input (`video.DepthVideoWriter`).
SAVE_FORMATS = ("npy", "png16", "color", "ply", "video")
DEFAULT_SAVE = ("npy", "png16", "color")
PNG16_MAX_DEPTH = 65535.0 / 256.0
# Monodepth2's KITTI normalised intrinsics (fx / W, fy / H, cx / W, cy / H).
DEFAULT_NORMALIZED_INTRINSICS = (0.58, 1.92, 0.5, 0.5)


def default_intrinsics(height: int, width: int) -> tuple[float, float, float, float]:
    """KITTI-like (fx, fy, cx, cy) scaled to an image of `height x width`."""
    fx, fy, cx, cy = DEFAULT_NORMALIZED_INTRINSICS
    return fx * width, fy * height, cx * width, cy * height


def depth_to_png16(depth: np.ndarray) -> np.ndarray:
    """KITTI encoding: uint16 `round(depth * 256)` with depth clipped to [0, 65535/256] m."""
    return np.round(np.clip(depth, 0.0, PNG16_MAX_DEPTH) * 256.0).astype(np.uint16)


def point_cloud(
    depth: np.ndarray, image: np.ndarray, intrinsics: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Back-projects every pixel: returns (N, 3) float32 points and (N, 3) uint8 colours."""
    fx, fy, cx, cy = intrinsics
    height, width = depth.shape
    v, u = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    z = depth.astype(np.float64)
    points = np.stack([(u - cx) * z / fx, (v - cy) * z / fy, z], axis=-1)
    return points.reshape(-1, 3).astype(np.float32), image.reshape(-1, 3)


def write_ply(path: Path, points: np.ndarray, colors: np.ndarray) -> None:
    """Writes a binary little-endian PLY with float x, y, z and uchar red, green, blue."""
    vertex = np.empty(
        len(points),
        dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
               ("red", "u1"), ("green", "u1"), ("blue", "u1")],
    )
    vertex["x"], vertex["y"], vertex["z"] = points[:, 0], points[:, 1], points[:, 2]
    vertex["red"], vertex["green"], vertex["blue"] = colors[:, 0], colors[:, 1], colors[:, 2]
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {len(points)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    with open(path, "wb") as file:
        file.write(header.encode("ascii"))
        file.write(vertex.tobytes())


def colour_map(depth: np.ndarray, color_range: tuple[float, float], cmap: str) -> np.ndarray:
    """uint8 RGB colour map of inverse depth, from 1/far to 1/near of `color_range` (metres)."""
    near, far = color_range
    return visualization.colorize(1.0 / depth, vmin=1.0 / far, vmax=1.0 / near, cmap=cmap)


def write_outputs(
    output_dir: Path,
    stem: str,
    image: np.ndarray,
    depth: np.ndarray,
    save: Sequence[str],
    colour: np.ndarray | None,
    intrinsics: Sequence[float] | None,
) -> list[str]:
    """Writes `save`'s files for one image as `output_dir/stem*` (atomically); returns them.

    `colour` is the image's `colour_map` (needed when "color" is in `save`); the PLY
    back-projects with `intrinsics` of the original image, or KITTI-like defaults.
    """
    written = []
    if "npy" in save:
        path = output_dir / f"{stem}.npy"
        files.atomic_write(path, lambda p: np.save(p, depth.astype(np.float32)))
        written.append(str(path))
    if "png16" in save:
        path = output_dir / f"{stem}_depth16.png"
        encoded = Image.fromarray(depth_to_png16(depth))
        files.atomic_write(path, lambda p: encoded.save(p, format="PNG"))
        written.append(str(path))
    if "color" in save:
        path = output_dir / f"{stem}_color.png"
        files.atomic_write(path, lambda p: Image.fromarray(colour).save(p, format="PNG"))
        written.append(str(path))
    if "ply" in save:
        path = output_dir / f"{stem}.ply"
        camera = intrinsics if intrinsics is not None else default_intrinsics(*depth.shape)
        points, colors = point_cloud(depth, image, camera)
        files.atomic_write(path, lambda p: write_ply(p, points, colors))
        written.append(str(path))
    return written
