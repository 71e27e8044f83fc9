"""KITTI raw readers and Monodepth2's LiDAR ground-truth projection, with strict errors.

`generate_depth_map` reproduces nianticlabs/monodepth2 `kitti_utils.generate_depth_map`
(the function `export_gt_depth.py` uses to make `splits/eigen/gt_depths.npz`) value for value,
vectorised with numpy:

* `P = P_rect_0{cam} @ R_rect_00 (4x4) @ [R|T]_velo->cam`; image shape from `S_rect_02`
  (also for cam 3);
* only LiDAR points with forward `x >= 0` are kept (there is no camera-z test);
* pixel = `np.round(p / p_z) - 1` (round half to even, 1-based MATLAB convention);
* `vel_depth=True` stores the LiDAR forward `x`, else the rectified camera z;
* duplicates: the last point written to a pixel wins, then for every *buggy* linear index
  `v * (W - 1) + u - 1` (Monodepth2's `sub2ind`) that occurs more than once, the pixel of
  the group's first point receives the group's minimum depth. For points sharing one pixel
  this keeps the closest one. We replicate the quirk that the buggy index also groups
  (v, W - 1) with (v + 1, 0), so that our maps equal `gt_depths.npz` bit for bit; it only
  touches the first and last image columns, which the Garg crop excludes;
* negative depths become 0; 0 means "no LiDAR point".
"""

from __future__ import annotations

import os

import numpy as np

from data_prep.common import DataError, numbered_lines

CAM_TO_CAM = "calib_cam_to_cam.txt"
VELO_TO_CAM = "calib_velo_to_cam.txt"
_NUMERIC_CHARS = frozenset("0123456789.e+- ")


def read_calib_file(path: str | os.PathLike) -> dict[str, np.ndarray | str]:
    """Reads a KITTI calibration file into {key: float64 array, or str for non-numbers}.

    Like Monodepth2, values made only of "0123456789.e+- " become float arrays and others
    (`calib_time: 09-Jan-2012 13:57:47`) stay strings. Trailing blank lines are ignored;
    other blank lines, lines without ':',
    duplicate keys and unparsable numbers raise `DataError` naming the file and line.
    """
    if not os.path.isfile(path):
        raise DataError(path, "calibration file not found")
    data: dict[str, np.ndarray | str] = {}
    with open(path, encoding="utf-8", errors="strict") as handle:
        try:
            text = handle.read()
        except UnicodeDecodeError as error:
            raise DataError(path, f"not a text file ({error})") from error
    for number, line in numbered_lines(text):
        if not line.strip():
            raise DataError(path, f"line {number}: blank line (KITTI calib files have none)")
        key, separator, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if not separator or not key:
            raise DataError(path, f"line {number}: expected 'key: values', got {line!r}")
        if key in data:
            raise DataError(path, f"line {number}: duplicate key {key!r}")
        if value and set(value) <= _NUMERIC_CHARS:
            try:
                data[key] = np.array([float(item) for item in value.split()], dtype=np.float64)
            except ValueError as error:
                raise DataError(path, f"line {number}: bad number in {key!r} ({error})") from error
        else:
            data[key] = value
    return data


def calib_values(
    calib: dict[str, np.ndarray | str], key: str, size: int, path: str | os.PathLike
) -> np.ndarray:
    """Returns `calib[key]` as a float64 array of `size` values, or raises `DataError`."""
    if key not in calib:
        raise DataError(path, f"missing key {key!r}")
    value = calib[key]
    if isinstance(value, str) or value.shape != (size,):
        shown = value if isinstance(value, str) else f"{value.size} values"
        raise DataError(path, f"key {key!r} must hold {size} numbers, got {shown!r}")
    return value


def image_shape(calib_dir: str | os.PathLike) -> tuple[int, int]:
    """(H, W) of the rectified images of a date, from `S_rect_02` in calib_cam_to_cam.txt."""
    path = os.path.join(calib_dir, CAM_TO_CAM)
    width, height = calib_values(read_calib_file(path), "S_rect_02", 2, path)
    if width != int(width) or height != int(height) or width < 1 or height < 1:
        raise DataError(path, f"S_rect_02 must be two positive integers, got {width} {height}")
    return int(height), int(width)


def intrinsics(calib_dir: str | os.PathLike, cam: int = 2) -> np.ndarray:
    """float32 (fx, fy, cx, cy) of rectified camera `cam` (2 left, 3 right) from P_rect_0{cam}."""
    _check_cam(cam)
    path = os.path.join(calib_dir, CAM_TO_CAM)
    projection = calib_values(read_calib_file(path), f"P_rect_0{cam}", 12, path).reshape(3, 4)
    return np.array(
        [projection[0, 0], projection[1, 1], projection[0, 2], projection[1, 2]],
        dtype=np.float32,
    )


def load_velodyne_points(path: str | os.PathLike) -> np.ndarray:
    """Reads a velodyne .bin as float32 (N, 4) homogeneous points (x fwd, y left, z up, 1).

    As in Monodepth2 the reflectance column is replaced by 1. A size that is not a multiple
    of 16 bytes (4 float32 per point) raises `DataError`.
    """
    if not os.path.isfile(path):
        raise DataError(path, "velodyne file not found")
    size = os.path.getsize(path)
    if size % 16:
        raise DataError(
            path, f"size {size} bytes is not a multiple of 16 (4 float32 per point); truncated?"
        )
    points = np.fromfile(path, dtype="<f4").astype(np.float32).reshape(-1, 4)
    points[:, 3] = 1.0
    return points


def velo_to_image_projection(calib_dir: str | os.PathLike, cam: int = 2) -> np.ndarray:
    """The (3, 4) float64 matrix `P_rect_0{cam} @ R_rect_00 @ [R|T]` from velodyne to image."""
    _check_cam(cam)
    cam_path = os.path.join(calib_dir, CAM_TO_CAM)
    velo_path = os.path.join(calib_dir, VELO_TO_CAM)
    cam_to_cam = read_calib_file(cam_path)
    velo_to_cam = read_calib_file(velo_path)
    velo_to_cam_matrix = np.eye(4)
    velo_to_cam_matrix[:3, :3] = calib_values(velo_to_cam, "R", 9, velo_path).reshape(3, 3)
    velo_to_cam_matrix[:3, 3] = calib_values(velo_to_cam, "T", 3, velo_path)
    rectification = np.eye(4)
    rectification[:3, :3] = calib_values(cam_to_cam, "R_rect_00", 9, cam_path).reshape(3, 3)
    projection = calib_values(cam_to_cam, f"P_rect_0{cam}", 12, cam_path).reshape(3, 4)
    return projection @ rectification @ velo_to_cam_matrix


def project_points_to_depth(
    points: np.ndarray,
    projection: np.ndarray,
    shape: tuple[int, int],
    vel_depth: bool = True,
) -> np.ndarray:
    """Monodepth2's projection of homogeneous velodyne `points` (N, 4) to a float32 (H, W) map.

    See the module docstring for the exact rules (rounding, duplicates, sub2ind quirk).
    """
    height, width = shape
    points = points[points[:, 0] >= 0]
    projected = (projection @ points.T).T  # float64, like np.dot(float64, float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        projected[:, :2] = projected[:, :2] / projected[:, 2:3]
    if vel_depth:
        projected[:, 2] = points[:, 0]
    u = np.round(projected[:, 0]) - 1
    v = np.round(projected[:, 1]) - 1
    with np.errstate(invalid="ignore"):
        inside = (u >= 0) & (v >= 0) & (u < width) & (v < height)
    u = u[inside].astype(np.int64)
    v = v[inside].astype(np.int64)
    values = projected[inside, 2]

    depth = np.zeros((height, width), dtype=np.float64)
    # 1. Plain assignment, last write wins: keep each pixel's last point (explicitly, rather
    #    than relying on numpy's unspecified order for repeated fancy-index assignment).
    pixel_index = v * width + u
    reversed_unique, reversed_first = np.unique(pixel_index[::-1], return_index=True)
    last = len(pixel_index) - 1 - reversed_first
    depth.flat[reversed_unique] = values[last]
    # 2. Monodepth2's duplicate pass over its (buggy) sub2ind index v*(W-1) + u - 1: each
    #    index seen more than once sets the pixel of its first point to the group minimum.
    buggy_index = v * (width - 1) + u - 1
    order = np.argsort(buggy_index, kind="stable")
    sorted_index = buggy_index[order]
    if len(sorted_index):
        starts = np.flatnonzero(np.r_[True, sorted_index[1:] != sorted_index[:-1]])
        counts = np.diff(np.r_[starts, len(sorted_index)])
        group_min = np.minimum.reduceat(values[order], starts)
        first_point = order[starts]  # stable sort: the group's first point in file order
        duplicated = counts > 1
        depth[v[first_point[duplicated]], u[first_point[duplicated]]] = group_min[duplicated]
    depth[depth < 0] = 0
    return depth.astype(np.float32)


def generate_depth_map(
    calib_dir: str | os.PathLike,
    velo_path: str | os.PathLike,
    cam: int = 2,
    vel_depth: bool = True,
) -> np.ndarray:
    """Sparse LiDAR depth (float32, H x W of S_rect_02, 0 = none) exactly as Monodepth2 exports.

    `cam` 2 projects with P_rect_02 (left), 3 with P_rect_03 (right). Errors in the calib or
    velodyne files raise `DataError` naming the file and the problem.
    """
    projection = velo_to_image_projection(calib_dir, cam)
    shape = image_shape(calib_dir)
    points = load_velodyne_points(velo_path)
    return project_points_to_depth(points, projection, shape, vel_depth=vel_depth)


def stereo_baseline(calib_dir: str | os.PathLike) -> float:
    """Metres between cameras 2 and 3: `P3[0,3]/-P3[0,0] - P2[0,3]/-P2[0,0]` (DESC `get_fb`)."""
    path = os.path.join(calib_dir, CAM_TO_CAM)
    calib = read_calib_file(path)
    left = calib_values(calib, "P_rect_02", 12, path).reshape(3, 4)
    right = calib_values(calib, "P_rect_03", 12, path).reshape(3, 4)
    return float(right[0, 3] / -right[0, 0] - left[0, 3] / -left[0, 0])


def _check_cam(cam: int) -> None:
    if cam not in (2, 3):
        raise ValueError(f"cam must be 2 (left colour) or 3 (right colour), got {cam}")
