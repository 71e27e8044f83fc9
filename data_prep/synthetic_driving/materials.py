"""Surface colours of the synthetic driving world, before any light falls on them.

* `source_colours`: one flat, saturated sRGB colour per object (per class for the ground and
  the sky) and white lane paint: the `source` palette.
* `target_albedo`: the `target` materials, as two images of the same draws:
  `flat`, one realistic, muted colour per object (brick, concrete, car paint, asphalt,
  paving, grass, ...), and `textured`, the same colours with the procedural textures on
  them (asphalt grain, worn lane paint, paving tiles and grout, facade windows, car glass and
  wheels, foliage).
* `texture_modulation`: the textures alone, as the brightness of `textured` relative to
  `flat` per pixel, so that they can be laid on another palette.

Every random choice comes from the `rng` argument, in a fixed order, so a colour image is a
pure function of the geometry and the generator's seed.
"""

from __future__ import annotations

import colorsys
import dataclasses

import matplotlib.colors
import numpy as np

from data_prep.synthetic_driving import world

# A fixed lattice of random values for procedural textures (value noise). Fixed seed: the
# texture is part of the world's definition, not of any frame.
_NOISE_LATTICE = np.random.default_rng(20240607).random(256 * 256).astype(np.float32)


def value_noise(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Smooth noise in [0, 1] at continuous lattice coordinates (u, v), period 256."""
    u0 = np.floor(u)
    v0 = np.floor(v)
    fu = u - u0
    fv = v - v0
    fu = fu * fu * (3.0 - 2.0 * fu)  # smoothstep: continuous derivative across cells
    fv = fv * fv * (3.0 - 2.0 * fv)
    i0 = (u0.astype(np.int64) & 255) << 8
    j0 = v0.astype(np.int64) & 255
    i1 = (i0 + 256) & 0xFF00
    j1 = (j0 + 1) & 255
    lattice = _NOISE_LATTICE
    top = lattice[i0 | j0] * (1.0 - fu) + lattice[i1 | j0] * fu
    bottom = lattice[i0 | j1] * (1.0 - fu) + lattice[i1 | j1] * fu
    return top * (1.0 - fv) + bottom * fv


def _hsv(hue: float, saturation: float, value: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, saturation, value))


def _object_classes(scene: world.Scene) -> np.ndarray:
    """Label of each instance id (instances are numbered 0..n-1)."""
    num_instances = int(scene.instances.max()) + 1 if len(scene.instances) else 0
    classes = np.zeros(num_instances, dtype=np.uint8)
    classes[scene.instances] = scene.labels
    return classes


def pixel_instances(geometry: world.GeometryBuffers, scene: world.Scene) -> np.ndarray:
    """Instance id of every box pixel, -1 elsewhere."""
    instances = np.full(geometry.surface.shape, -1, dtype=np.int32)
    on_box = geometry.surface > world.SURFACE_GROUND
    instances[on_box] = scene.instances[geometry.surface[on_box] - 1]
    return instances


def _lane_paint(points: np.ndarray, scene: world.Scene, on_road: np.ndarray,
                line_width: float) -> np.ndarray:
    """Road pixels on a dashed lane divider (3 m paint, 6 m gap)."""
    x, z = points[..., 0], points[..., 2]
    paint = np.zeros(x.shape, dtype=bool)
    dashes = np.mod(z, 9.0) < 3.0
    for line_x in scene.lane_lines:
        paint |= np.abs(x - line_x) < line_width / 2
    return paint & dashes & on_road


# ------------------------------------------------------------------------------- source

# Flat, saturated class colours as HSV (hue range, saturation, value).
_SOURCE_GROUND = {
    world.ROAD: ((0.70, 0.80), 0.55, 0.50),
    world.SIDEWALK: ((0.85, 0.95), 0.70, 0.85),
    world.TERRAIN: ((0.22, 0.30), 0.80, 0.75),
}
_SOURCE_OBJECT_HUES = {
    world.BUILDING: ((0.0, 0.12), (0.5, 0.65)),
    world.POLE: ((0.12, 0.18),),
    world.VEGETATION: ((0.28, 0.38),),
    world.CAR: ((0.0, 1.0),),
}
_SOURCE_SKY_HUE = (0.55, 0.60)


def source_colours(geometry: world.GeometryBuffers, scene: world.Scene,
                   rng: np.random.Generator) -> np.ndarray:
    """float64 sRGB (H, W, 3) in [0, 1]: the source palette of every pixel, the sky's too."""
    image = np.zeros(geometry.depth.shape + (3,))
    sky_colour = _hsv(rng.uniform(*_SOURCE_SKY_HUE), 0.75, 1.0)
    image[geometry.surface == world.SURFACE_SKY] = sky_colour
    on_ground = geometry.surface == world.SURFACE_GROUND
    for label, (hue_range, saturation, value) in _SOURCE_GROUND.items():
        image[on_ground & (geometry.label == label)] = _hsv(
            rng.uniform(*hue_range), saturation, value
        )
    paint = _lane_paint(geometry.points, scene, on_ground & (geometry.label == world.ROAD), 0.15)
    image[paint] = (1.0, 1.0, 1.0)

    classes = _object_classes(scene)
    hue = np.zeros(len(classes))
    for label, hue_ranges in _SOURCE_OBJECT_HUES.items():
        of_class = classes == label
        count = int(of_class.sum())
        ranges = np.array(hue_ranges)[rng.integers(0, len(hue_ranges), count)]
        hue[of_class] = rng.uniform(ranges[:, 0], ranges[:, 1])
    hsv = np.stack(
        [hue, rng.uniform(0.65, 0.95, len(classes)), rng.uniform(0.65, 0.95, len(classes))],
        axis=-1,
    )
    colours = matplotlib.colors.hsv_to_rgb(hsv)
    instances = pixel_instances(geometry, scene)
    on_box = instances >= 0
    image[on_box] = colours[instances[on_box]]
    return image


# ------------------------------------------------------------------------------- target

# Realistic albedos (sRGB in [0, 1]); per-object choices get a small random jitter.
_TARGET_BUILDING_ALBEDOS = np.array([
    (0.55, 0.30, 0.25),  # brick
    (0.75, 0.68, 0.55),  # sandstone
    (0.60, 0.60, 0.58),  # concrete
    (0.82, 0.80, 0.76),  # white plaster
    (0.38, 0.35, 0.33),  # dark render
])
_TARGET_CAR_ALBEDOS = np.array([
    (0.85, 0.85, 0.85), (0.08, 0.08, 0.09), (0.62, 0.63, 0.65), (0.40, 0.40, 0.42),
    (0.12, 0.18, 0.38), (0.55, 0.08, 0.08), (0.30, 0.36, 0.30),
])
_GLASS = np.array((0.10, 0.12, 0.15))
_LANE_PAINT = 0.78
_GRASS, _DIRT = np.array((0.25, 0.38, 0.12)), np.array((0.42, 0.34, 0.22))
_LEAVES = np.array((0.18, 0.32, 0.10))
# A texture's noise (in [0, 1]) at its mean: the flat colour is the textured one's mean level.
_MEAN_NOISE = 0.5


@dataclasses.dataclass(frozen=True)
class TargetAlbedo:
    """sRGB (H, W, 3) in [0, 1] of every non-sky pixel (0 on the sky), of the same draws."""

    flat: np.ndarray  # one colour per object (per ground class): the target palette
    textured: np.ndarray  # the palette with the procedural textures: the target's materials


def target_albedo(geometry: world.GeometryBuffers, scene: world.Scene,
                  rng: np.random.Generator) -> TargetAlbedo:
    """The target's flat and textured albedo of every non-sky pixel.

    Textures are evaluated only on the pixels of their class, with per-object parameters
    gathered by instance id, so the cost is one pass over the image whatever the number of
    objects. `flat` is `textured` with every noise at its mean and without the patterns that
    are details of an object (paving grout, windows, car glass and wheels).
    """
    textured = np.zeros(geometry.points.shape)
    flat = np.zeros(geometry.points.shape)
    on_ground = geometry.surface == world.SURFACE_GROUND

    # Ground: asphalt with lane paint, paving tiles, grass and dirt.
    ground_points = geometry.points[on_ground]
    x, z = ground_points[:, 0], ground_points[:, 2]
    ground_label = geometry.label[on_ground]
    fine = value_noise(x * 7.0 + 31.0, z * 7.0)
    coarse = value_noise(x * 0.4 + 97.0, z * 0.4)
    ground_albedo = np.zeros((len(x), 3))
    ground_flat = np.zeros((len(x), 3))

    road = ground_label == world.ROAD
    asphalt = rng.uniform(0.26, 0.38) * np.array((1.0, 1.0, 1.04))
    ground_albedo[road] = asphalt * (0.8 + 0.25 * fine[road] + 0.2 * coarse[road])[:, None]
    ground_flat[road] = asphalt * (0.8 + 0.45 * _MEAN_NOISE)
    paint = road & (np.mod(z, 9.0) < 3.0)
    paint &= np.any(np.abs(x[:, None] - scene.lane_lines[None, :]) < 0.06, axis=1)
    wear = value_noise(x[paint] * 3.0, z[paint] * 3.0 + 57.0)
    ground_albedo[paint] = (_LANE_PAINT * (0.7 + 0.3 * wear))[:, None]
    ground_flat[paint] = _LANE_PAINT * (0.7 + 0.3 * _MEAN_NOISE)

    sidewalk = ground_label == world.SIDEWALK
    tile = rng.uniform(0.4, 0.6)
    paving = _TARGET_BUILDING_ALBEDOS[int(rng.integers(1, 4))] * rng.uniform(0.8, 0.95)
    grout = (np.mod(x, tile) < 0.04) | (np.mod(z, tile) < 0.04)
    ground_albedo[sidewalk] = paving * (0.9 + 0.15 * fine[sidewalk])[:, None]
    ground_albedo[sidewalk & grout] *= 0.6
    ground_flat[sidewalk] = paving * (0.9 + 0.15 * _MEAN_NOISE)

    terrain = ground_label == world.TERRAIN
    mix = coarse[terrain][:, None]
    ground_albedo[terrain] = (_GRASS * (1 - mix) + _DIRT * mix) * (
        0.8 + 0.4 * fine[terrain]
    )[:, None]
    ground_flat[terrain] = (_GRASS * (1 - _MEAN_NOISE) + _DIRT * _MEAN_NOISE) * (
        0.8 + 0.4 * _MEAN_NOISE
    )
    textured[on_ground] = ground_albedo
    flat[on_ground] = ground_flat

    # Objects: per-instance parameters, drawn for every instance in a fixed order.
    classes = _object_classes(scene)
    num_instances = len(classes)
    jitter = rng.uniform(0.9, 1.1, size=(num_instances, 3))
    building_albedo = _TARGET_BUILDING_ALBEDOS[
        rng.integers(0, len(_TARGET_BUILDING_ALBEDOS), num_instances)
    ] * jitter
    car_albedo = _TARGET_CAR_ALBEDOS[rng.integers(0, len(_TARGET_CAR_ALBEDOS), num_instances)]
    car_albedo = car_albedo * jitter
    floor_height = rng.uniform(3.0, 3.6, num_instances)
    window_spacing = rng.uniform(2.2, 3.2, num_instances)
    pole_grey = rng.uniform(0.25, 0.4, num_instances)[:, None] * jitter

    on_box = geometry.surface > world.SURFACE_GROUND
    box_index = geometry.surface[on_box] - 1
    instance = scene.instances[box_index]
    label = scene.labels[box_index]
    face = geometry.face[on_box]
    points = geometry.points[on_box]
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    height_above_ground = world.CAMERA_HEIGHT - y
    box_albedo = np.zeros((len(x), 3))
    box_flat = np.zeros((len(x), 3))

    building = label == world.BUILDING
    ids = instance[building]
    floor = floor_height[ids]
    spacing = window_spacing[ids]
    hag = height_above_ground[building]
    along = np.where(face[building] == world.FACE_SIDE, z[building], x[building])
    level = np.mod(hag, floor)
    column = np.mod(along, spacing)
    in_window = (
        (level > 0.35 * floor) & (level < 0.8 * floor)
        & (column > 0.25 * spacing) & (column < 0.75 * spacing)
        & (hag > 2.5) & (face[building] != world.FACE_UP)
    )
    window_tint = value_noise(
        np.floor(along[in_window] / spacing[in_window]) * 3.7 + ids[in_window],
        np.floor(hag[in_window] / floor[in_window]) * 5.3,
    )
    grain = 0.9 + 0.2 * value_noise(
        (x[building] + z[building]) * 2.0, y[building] * 2.0 + ids * 13.0
    )
    colour = building_albedo[ids] * grain[:, None]
    colour[in_window] = _GLASS * (0.8 + 2.0 * window_tint)[:, None]
    box_albedo[building] = colour
    box_flat[building] = building_albedo[ids] * (0.9 + 0.2 * _MEAN_NOISE)

    car = label == world.CAR
    colour = car_albedo[instance[car]]
    box_flat[car] = colour
    # The cabin is a car's upper box (its bottom is above the ground); sides are glass.
    is_cabin = scene.boxes[box_index[car], 3] < world.CAMERA_HEIGHT - 1e-6
    vertical = face[car] != world.FACE_UP
    colour[is_cabin & vertical] = _GLASS
    colour[(height_above_ground[car] < 0.35) & vertical] = (0.04, 0.04, 0.04)  # wheels
    box_albedo[car] = colour

    pole = label == world.POLE
    box_albedo[pole] = pole_grey[instance[pole]]
    box_flat[pole] = pole_grey[instance[pole]]

    vegetation = label == world.VEGETATION
    leaves = value_noise(
        x[vegetation] * 4.0 + y[vegetation] * 3.0 + 11.0,
        z[vegetation] * 4.0 - y[vegetation] * 3.0,
    )
    green = _LEAVES * jitter[instance[vegetation]]
    box_albedo[vegetation] = green * (0.6 + 0.8 * leaves)[:, None]
    box_flat[vegetation] = green * (0.6 + 0.8 * _MEAN_NOISE)
    textured[on_box] = box_albedo
    flat[on_box] = box_flat
    return TargetAlbedo(flat=flat, textured=textured)


def texture_modulation(albedo: TargetAlbedo) -> np.ndarray:
    """(H, W) brightness of the textured albedo relative to the flat one (1 on the sky).

    The textures without the target's colours: multiplying another palette by it lays the
    target's grain, grout, windows, glass, wheels and foliage on that palette's objects.
    """
    flat = albedo.flat.mean(axis=-1)
    textured = albedo.textured.mean(axis=-1)
    return np.divide(textured, flat, out=np.ones_like(flat), where=flat > 0)
