"""Random scenes of the synthetic driving world: a pure function of (seed, split, index)."""

from __future__ import annotations

import numpy as np

from data_prep.synthetic_driving.world import (
    BUILDING,
    CAMERA_HEIGHT,
    CAR,
    POLE,
    SPLIT_CODES,
    VEGETATION,
    GroundLayout,
    Scene,
)

# Ranges of the scene distribution (metres). Both domains sample from exactly this.
LANE_WIDTH_RANGE = (3.0, 3.6)
NUM_LANES_CHOICES = (2, 3, 4)
PARKING_STRIP_WIDTH = 2.3
SIDEWALK_WIDTH_RANGE = (1.5, 4.0)
TERRAIN_WIDTH_RANGE = (0.5, 6.0)
BUILDING_LENGTH_RANGE = (8.0, 35.0)
BUILDING_HEIGHT_RANGE = (5.0, 25.0)
BUILDING_THICKNESS = 15.0
SCENE_FAR_Z = 160.0  # buildings, trees and poles are placed up to here
CAR_FAR_Z = 90.0
CAR_WIDTH_RANGE = (1.6, 2.0)
CAR_LENGTH_RANGE = (3.8, 5.0)
CAR_BODY_HEIGHT_RANGE = (0.75, 1.0)
CAR_TOTAL_HEIGHT_RANGE = (1.35, 1.75)
MIN_EGO_LANE_CAR_Z = 6.0  # nearest car ahead in the camera's own lane


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The geometry random generator of example `index` of `split`: a pure function."""
    if split not in SPLIT_CODES:
        raise ValueError(f"split must be one of {sorted(SPLIT_CODES)}, got {split!r}")
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed} index={index}")
    return np.random.default_rng([seed, SPLIT_CODES[split], index, 0])


class _BoxList:
    """Accumulates boxes with their labels and instance ids."""

    def __init__(self):
        self.boxes: list[tuple[float, ...]] = []
        self.labels: list[int] = []
        self.instances: list[int] = []
        self._next_instance = 0

    def add_object(self, label: int, *boxes: tuple[float, ...]) -> None:
        for box in boxes:
            self.boxes.append(box)
            self.labels.append(label)
            self.instances.append(self._next_instance)
        self._next_instance += 1


def _add_buildings(rng: np.random.Generator, objects: _BoxList, facade_x: float, side: float):
    """Buildings along one side; `side` is -1 (left) or +1 (right), facade at `facade_x`."""
    z = rng.uniform(-30.0, -5.0)
    while z < SCENE_FAR_Z:
        length = rng.uniform(*BUILDING_LENGTH_RANGE)
        height = rng.uniform(*BUILDING_HEIGHT_RANGE)
        inner = facade_x + side * rng.uniform(0.0, 1.5)
        outer = inner + side * BUILDING_THICKNESS
        objects.add_object(
            BUILDING,
            (min(inner, outer), max(inner, outer), CAMERA_HEIGHT - height, CAMERA_HEIGHT,
             z, z + length),
        )
        z += length
        if rng.random() < 0.35:  # a gap, sometimes with a tree in it
            gap = rng.uniform(2.0, 12.0)
            if gap > 4.0 and rng.random() < 0.5:
                _add_tree(rng, objects, facade_x + side * rng.uniform(1.0, 3.0), z + gap / 2)
            z += gap


def _add_tree(rng: np.random.Generator, objects: _BoxList, x: float, z: float) -> None:
    """A tree: trunk and crown boxes, both vegetation (Cityscapes labels trunks so)."""
    trunk = rng.uniform(0.2, 0.4) / 2
    crown_bottom = rng.uniform(1.8, 3.0)
    crown_top = crown_bottom + rng.uniform(2.0, 5.0)
    crown = rng.uniform(1.5, 4.0) / 2
    ground = CAMERA_HEIGHT
    objects.add_object(
        VEGETATION,
        (x - trunk, x + trunk, ground - crown_bottom, ground, z - trunk, z + trunk),
        (x - crown, x + crown, ground - crown_top, ground - crown_bottom, z - crown, z + crown),
    )


def _add_vegetation_side(rng: np.random.Generator, objects: _BoxList, facade_x: float,
                         side: float) -> None:
    """A hedge with a row of trees behind it instead of buildings."""
    hedge_height = rng.uniform(0.8, 2.5)
    inner = facade_x
    outer = facade_x + side * rng.uniform(1.0, 3.0)
    objects.add_object(
        VEGETATION,
        (min(inner, outer), max(inner, outer), CAMERA_HEIGHT - hedge_height, CAMERA_HEIGHT,
         rng.uniform(-20.0, 0.0), SCENE_FAR_Z),
    )
    z = rng.uniform(0.0, 10.0)
    while z < SCENE_FAR_Z:
        _add_tree(rng, objects, outer + side * rng.uniform(1.0, 3.0), z)
        z += rng.uniform(6.0, 15.0)


def _add_poles(rng: np.random.Generator, objects: _BoxList, curb_x: float, side: float,
               sidewalk_width: float) -> None:
    """Poles on a sidewalk, near the curb at `curb_x`."""
    z = rng.uniform(2.0, 25.0)
    while z < SCENE_FAR_Z:
        x = curb_x + side * rng.uniform(0.3, min(0.9, sidewalk_width - 0.3))
        half = rng.uniform(0.15, 0.3) / 2
        height = rng.uniform(4.0, 9.0)
        objects.add_object(
            POLE, (x - half, x + half, CAMERA_HEIGHT - height, CAMERA_HEIGHT, z - half, z + half)
        )
        z += rng.uniform(12.0, 35.0)


def _add_car(rng: np.random.Generator, objects: _BoxList, x_centre: float, z0: float) -> float:
    """A car (body + cabin) with its rear at `z0`; returns its length."""
    half_width = rng.uniform(*CAR_WIDTH_RANGE) / 2
    length = rng.uniform(*CAR_LENGTH_RANGE)
    body_top = CAMERA_HEIGHT - rng.uniform(*CAR_BODY_HEIGHT_RANGE)
    roof = CAMERA_HEIGHT - rng.uniform(*CAR_TOTAL_HEIGHT_RANGE)
    cabin_start = z0 + length * rng.uniform(0.2, 0.35)
    cabin_end = z0 + length * rng.uniform(0.7, 0.85)
    inset = 0.1
    objects.add_object(
        CAR,
        (x_centre - half_width, x_centre + half_width, body_top, CAMERA_HEIGHT, z0, z0 + length),
        (x_centre - half_width + inset, x_centre + half_width - inset, roof, body_top,
         cabin_start, cabin_end),
    )
    return length


def _add_car_row(rng: np.random.Generator, objects: _BoxList, x_centre: float, z_start: float,
                 density: float, jitter: float) -> None:
    """Cars in one lane (or parking strip) from `z_start` on; `density` = P(car per slot)."""
    z = z_start
    while z < CAR_FAR_Z:
        if rng.random() < density:
            z += _add_car(rng, objects, x_centre + rng.uniform(-jitter, jitter), z)
            z += rng.uniform(2.0, 20.0)
        else:
            z += rng.uniform(5.0, 25.0)


def sample_scene(rng: np.random.Generator) -> Scene:
    """Draws one road scene (see the module docstring) from `rng`."""
    num_lanes = int(rng.choice(NUM_LANES_CHOICES))
    lane_width = rng.uniform(*LANE_WIDTH_RANGE)
    ego_lane = int(rng.integers(0, num_lanes))
    lanes_left = -(ego_lane + 0.5) * lane_width + rng.uniform(-0.3, 0.3)
    lanes_right = lanes_left + num_lanes * lane_width
    parking_left = rng.random() < 0.5
    parking_right = rng.random() < 0.5
    road_left = lanes_left - (PARKING_STRIP_WIDTH if parking_left else 0.0)
    road_right = lanes_right + (PARKING_STRIP_WIDTH if parking_right else 0.0)
    sidewalk_widths = rng.uniform(*SIDEWALK_WIDTH_RANGE, size=2)
    sidewalk_left = road_left - sidewalk_widths[0]
    sidewalk_right = road_right + sidewalk_widths[1]
    terrain_widths = np.where(
        rng.random(2) < 0.5, 0.0, rng.uniform(*TERRAIN_WIDTH_RANGE, size=2)
    )
    ground = GroundLayout(road_left, road_right, sidewalk_left, sidewalk_right)

    objects = _BoxList()
    for side, facade_x in ((-1.0, sidewalk_left - terrain_widths[0]),
                           (1.0, sidewalk_right + terrain_widths[1])):
        if rng.random() < 0.75:
            _add_buildings(rng, objects, facade_x, side)
        else:
            _add_vegetation_side(rng, objects, facade_x, side)
    for side, curb_x, width in ((-1.0, road_left, sidewalk_widths[0]),
                                (1.0, road_right, sidewalk_widths[1])):
        if rng.random() < 0.8:
            _add_poles(rng, objects, curb_x, side, width)
    for lane in range(num_lanes):
        x_centre = lanes_left + (lane + 0.5) * lane_width
        if lane == ego_lane:
            start = rng.uniform(MIN_EGO_LANE_CAR_Z, 25.0)
        else:
            start = rng.uniform(-8.0, 15.0)
        _add_car_row(rng, objects, x_centre, start, density=0.6, jitter=0.3)
    if parking_left:
        _add_car_row(rng, objects, lanes_left - PARKING_STRIP_WIDTH / 2, rng.uniform(-8.0, 10.0),
                     density=0.7, jitter=0.1)
    if parking_right:
        _add_car_row(rng, objects, lanes_right + PARKING_STRIP_WIDTH / 2,
                     rng.uniform(-8.0, 10.0), density=0.7, jitter=0.1)
    return Scene(
        ground=ground,
        boxes=np.array(objects.boxes, dtype=np.float64).reshape(-1, 6),
        labels=np.array(objects.labels, dtype=np.uint8),
        instances=np.array(objects.instances, dtype=np.int32),
        lane_lines=lanes_left + lane_width * np.arange(1, num_lanes),
    )
