"""Geometry of the synthetic driving world: the scene description and vectorised ray casting.

Coordinates are the camera frame in metres: x right, y down, z forward, camera at the
origin, optical axis horizontal. The ground is the plane `y = CAMERA_HEIGHT`. Every other
object is an axis-aligned box. Pixel `(row, col)` looks along the ray
`((col - cx) / fx, (row - cy) / fy, 1)`, i.e. integer pixel coordinates are pixel centres
(OpenCV convention). Because the ray's z component is 1, the ray parameter of a hit is its
depth `z`, which is what we store (KITTI convention: z-depth, not ray length).

Rays that hit nothing (above the horizon and past every box) are sky: depth 0 = invalid, so
that the losses mask them out, label `SKY`.

The ground is split across x into road (plus parking strips), sidewalks and terrain;
objects are building facades, trees (vegetation), poles and cars (a body and a cabin box),
placed by `scenes.sample_scene`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from cityscapesscripts.helpers.labels import name2label

# Cityscapes train ids (from cityscapesscripts' own label table).
ROAD = name2label["road"].trainId  # 0
SIDEWALK = name2label["sidewalk"].trainId  # 1
BUILDING = name2label["building"].trainId  # 2
POLE = name2label["pole"].trainId  # 5
VEGETATION = name2label["vegetation"].trainId  # 8
TERRAIN = name2label["terrain"].trainId  # 9
SKY = name2label["sky"].trainId  # 10
CAR = name2label["car"].trainId  # 13

CAMERA_HEIGHT = 1.65  # metres above the road, KITTI's camera height
# Monodepth2's normalised KITTI intrinsics (KITTIDataset.K): fx = 0.58 W, fy = 1.92 H,
# cx = 0.5 W, cy = 0.5 H. The horizon is the image row cy.
NORMALISED_INTRINSICS = (0.58, 1.92, 0.5, 0.5)

# Surface kinds in `GeometryBuffers.face`: which plane the visible point lies on.
FACE_NONE = -1  # sky
FACE_UP = 0  # ground and box tops (normal -y, pointing up)
FACE_SIDE = 1  # box faces normal to x
FACE_FRONT = 2  # box faces normal to z, facing the camera
FACE_DOWN = 3  # box bottoms seen from below (normal +y)

SURFACE_SKY = -1  # `GeometryBuffers.surface` of sky pixels
SURFACE_GROUND = 0  # ground pixels; box k is surface k + 1

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


@dataclasses.dataclass(frozen=True)
class Camera:
    """A pinhole camera: image size in pixels and intrinsics in pixels."""

    height: int
    width: int
    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def kitti_like(cls, height: int, width: int) -> Camera:
        """Monodepth2's normalised KITTI intrinsics scaled to a `height` x `width` image."""
        if height < 2 or width < 2:
            raise ValueError(f"image size must be at least 2x2 pixels, got {height}x{width}")
        fx, fy, cx, cy = NORMALISED_INTRINSICS
        return cls(height, width, fx * width, fy * height, cx * width, cy * height)

    @property
    def intrinsics(self) -> np.ndarray:
        """float32 (fx, fy, cx, cy), the builder's `intrinsics` feature."""
        return np.array([self.fx, self.fy, self.cx, self.cy], dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class GroundLayout:
    """Lateral layout of the ground plane: x boundaries in metres (left < 0 < right).

    Between `road_left` and `road_right` is road; then sidewalks out to `sidewalk_left` /
    `sidewalk_right`; terrain beyond.
    """

    road_left: float
    road_right: float
    sidewalk_left: float
    sidewalk_right: float

    def __post_init__(self):
        if not self.sidewalk_left <= self.road_left < 0.0 < self.road_right <= self.sidewalk_right:
            raise ValueError(
                "GroundLayout needs sidewalk_left <= road_left < 0 < road_right <= "
                f"sidewalk_right, got {self}"
            )

    def labels_at(self, x: np.ndarray) -> np.ndarray:
        """Cityscapes train id of the ground at lateral positions `x` (uint8)."""
        labels = np.full(x.shape, TERRAIN, dtype=np.uint8)
        labels[(x >= self.sidewalk_left) & (x <= self.sidewalk_right)] = SIDEWALK
        labels[(x >= self.road_left) & (x <= self.road_right)] = ROAD
        return labels


@dataclasses.dataclass(frozen=True)
class Scene:
    """A frame's geometry: the ground layout and axis-aligned boxes.

    `boxes` is float64 (N, 6) of `x0, x1, y0, y1, z0, z1` (min < max on each axis);
    `labels` the boxes' Cityscapes train ids (N,); `instances` groups boxes of one object
    (a car's body and cabin share an instance) for the shaders. `lane_lines` are the x
    positions of the dashed lane dividers painted on the road (appearance only).
    """

    ground: GroundLayout
    boxes: np.ndarray
    labels: np.ndarray
    instances: np.ndarray
    lane_lines: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))

    def __post_init__(self):
        boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 6)
        labels = np.asarray(self.labels, dtype=np.uint8).reshape(-1)
        instances = np.asarray(self.instances, dtype=np.int32).reshape(-1)
        if not len(boxes) == len(labels) == len(instances):
            raise ValueError(
                f"Scene: {len(boxes)} boxes but {len(labels)} labels and "
                f"{len(instances)} instances"
            )
        if np.any(boxes[:, 0::2] >= boxes[:, 1::2]):
            bad = int(np.argmax(np.any(boxes[:, 0::2] >= boxes[:, 1::2], axis=1)))
            raise ValueError(f"Scene: box {bad} {boxes[bad].tolist()} has min >= max")
        inside = np.all((boxes[:, 0::2] < 0.0) & (boxes[:, 1::2] > 0.0), axis=1)
        if np.any(inside):
            bad = int(np.argmax(inside))
            raise ValueError(f"Scene: box {bad} {boxes[bad].tolist()} contains the camera")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "instances", instances)
        object.__setattr__(
            self, "lane_lines", np.asarray(self.lane_lines, dtype=np.float64).reshape(-1)
        )


@dataclasses.dataclass(frozen=True)
class GeometryBuffers:
    """Per-pixel ray-casting result (all (H, W)); `points` is (H, W, 3) in metres."""

    depth: np.ndarray  # float32 z-depth, 0 for sky
    label: np.ndarray  # uint8 Cityscapes train ids
    surface: np.ndarray  # int32: SURFACE_SKY, SURFACE_GROUND or box index + 1
    face: np.ndarray  # int8: FACE_* constant
    points: np.ndarray  # float32 camera-frame hit points (0 for sky)


def ray_directions(camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """x and y components of the pixel rays (z = 1): (W,) per column and (H,) per row."""
    columns = np.arange(camera.width, dtype=np.float64)
    rows = np.arange(camera.height, dtype=np.float64)
    return (columns - camera.cx) / camera.fx, (rows - camera.cy) / camera.fy


def _slab(lower: float, upper: float, direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ray-parameter interval inside `lower <= a * t <= upper` for each direction `a`.

    A zero direction component gives +-inf bounds (IEEE division), which the interval
    logic handles: the slab is all of t when `lower < 0 < upper`, else empty.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        t_lower = lower / direction
        t_upper = upper / direction
    return np.minimum(t_lower, t_upper), np.maximum(t_lower, t_upper)


def render_geometry(scene: Scene, camera: Camera) -> GeometryBuffers:
    """Casts one ray per pixel and keeps the nearest hit (z-buffer).

    The slab test separates: the x slab depends only on the column and the y slab only on
    the row, so we compute (boxes, W) and (boxes, H) intervals in one go, skip boxes whose
    column or row range is empty, and evaluate the full test only on each remaining box's
    screen rectangle.
    """
    dir_x, dir_y = ray_directions(camera)
    height, width = camera.height, camera.width
    depth = np.full((height, width), np.inf)
    label = np.full((height, width), SKY, dtype=np.uint8)
    surface = np.full((height, width), SURFACE_SKY, dtype=np.int32)
    face = np.full((height, width), FACE_NONE, dtype=np.int8)

    # Ground plane y = CAMERA_HEIGHT: rows below the horizon (dir_y > 0) hit it at
    # t = CAMERA_HEIGHT / dir_y, the same depth across the whole row.
    ground_rows = dir_y > 0
    ground_depth = np.where(ground_rows, CAMERA_HEIGHT / np.where(ground_rows, dir_y, 1.0), np.inf)
    depth[:] = ground_depth[:, None]
    ground_mask = np.broadcast_to(ground_rows[:, None], (height, width))
    ground_x = ground_depth[ground_rows, None] * dir_x[None, :]
    label[ground_rows] = scene.ground.labels_at(ground_x)
    surface[ground_mask] = SURFACE_GROUND
    face[ground_mask] = FACE_UP

    boxes = scene.boxes
    if len(boxes):
        # Per-box intervals for every column (x slab intersected with the z slab, whose t
        # bounds are z0, z1) and every row (y slab), all boxes at once: (N, W) and (N, H).
        x_lower, x_upper = _slab(boxes[:, 0:1], boxes[:, 1:2], dir_x[None, :])
        column_lower = np.maximum(x_lower, boxes[:, 4:5])
        column_upper = np.minimum(x_upper, boxes[:, 5:6])
        column_hit = (column_lower <= column_upper) & (column_upper > 0.0)
        y_lower, y_upper = _slab(boxes[:, 2:3], boxes[:, 3:4], dir_y[None, :])
        # A row can only hit if its interval overlaps the box's column intervals.
        latest = np.where(column_hit, column_upper, -np.inf).max(axis=1, keepdims=True)
        earliest = np.where(column_hit, column_lower, np.inf).min(axis=1, keepdims=True)
        row_hit = (y_lower <= latest) & (y_upper >= earliest) & (y_upper > 0.0)
        candidates = np.flatnonzero(column_hit.any(axis=1) & row_hit.any(axis=1))
        # Screen rectangle of each candidate: first and last hit column and row.
        first_col = np.argmax(column_hit, axis=1)
        last_col = width - np.argmax(column_hit[:, ::-1], axis=1)
        first_row = np.argmax(row_hit, axis=1)
        last_row = height - np.argmax(row_hit[:, ::-1], axis=1)
        # Which slab the entry point lies on gives the face: y (top/bottom), x (side) or z.
        column_face = np.where(x_lower >= boxes[:, 4:5], FACE_SIDE, FACE_FRONT).astype(np.int8)
        row_face = np.where(dir_y > 0.0, FACE_UP, FACE_DOWN).astype(np.int8)
    else:
        candidates = np.zeros(0, dtype=np.int64)

    for index in candidates:
        col_slice = slice(first_col[index], last_col[index])
        row_slice = slice(first_row[index], last_row[index])
        c_lower = column_lower[index, col_slice][None, :]
        r_lower = y_lower[index, row_slice][:, None]
        t_near = np.maximum(c_lower, r_lower)
        t_far = np.minimum(column_upper[index, col_slice][None, :],
                           y_upper[index, row_slice][:, None])
        window_depth = depth[row_slice, col_slice]
        hit = (t_near <= t_far) & (t_near > 0.0) & (t_near < window_depth)
        if not hit.any():
            continue
        entry_face = np.where(r_lower >= c_lower, row_face[row_slice][:, None],
                              column_face[index, col_slice][None, :])
        window_depth[hit] = t_near[hit]
        label[row_slice, col_slice][hit] = scene.labels[index]
        surface[row_slice, col_slice][hit] = index + 1
        face[row_slice, col_slice][hit] = entry_face[hit]

    sky = surface == SURFACE_SKY
    depth[sky] = 0.0
    points = np.stack(
        [depth * dir_x[None, :], depth * dir_y[:, None], depth], axis=-1
    ).astype(np.float32)
    return GeometryBuffers(
        depth=depth.astype(np.float32), label=label, surface=surface, face=face, points=points
    )
