"""Appearance of the synthetic driving world: the `source` and `target` shaders.

Both shaders colour the same `world.GeometryBuffers`; they differ the way synthetic and real
images do:

* `shade_source`: one flat, saturated colour per object (per class for the ground and sky),
  a fixed brightness per face orientation, hard edges, no noise.
* `shade_target`: a muted, realistic palette with procedural textures (asphalt grain,
  paving tiles, facade windows, car glass, foliage), a random sun (direction, strength,
  ambient), car shadows, haze, white balance and exposure changes, vignetting, optical blur,
  a random display gamma and signal-dependent sensor noise.

Every random choice comes from the `rng` argument, so an image is a pure function of the
geometry and the generator's seed.
"""

from __future__ import annotations

import colorsys

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


def _pixel_instances(geometry: world.GeometryBuffers, scene: world.Scene) -> np.ndarray:
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
# Flat shading: one brightness per face orientation (no light direction, no texture).
_SOURCE_FACE_BRIGHTNESS = {
    world.FACE_UP: 1.0, world.FACE_SIDE: 0.7, world.FACE_FRONT: 0.85, world.FACE_DOWN: 0.5,
}


def shade_source(geometry: world.GeometryBuffers, scene: world.Scene,
                 rng: np.random.Generator) -> np.ndarray:
    """Flat-shaded, saturated, hard-edged uint8 (H, W, 3) rendering of `geometry`."""
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
    instances = _pixel_instances(geometry, scene)
    on_box = instances >= 0
    image[on_box] = colours[instances[on_box]]
    brightness = np.ones(geometry.face.shape)
    for face, factor in _SOURCE_FACE_BRIGHTNESS.items():
        brightness[(geometry.face == face) & on_box] = factor
    image *= brightness[..., None]
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


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


def _srgb_to_linear(colour: np.ndarray) -> np.ndarray:
    return np.power(np.clip(colour, 0.0, 1.0), 2.2)


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an (H, W, C) image with reflected borders.

    Hand-written (a few lines of numpy) because scipy is not a dependency of the project.
    """
    radius = max(1, int(np.ceil(3.0 * sigma)))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).astype(image.dtype)
    height, width = image.shape[:2]
    padded = np.pad(image, [(radius, radius), (0, 0), (0, 0)], mode="reflect")
    image = sum(weight * padded[i:i + height] for i, weight in enumerate(kernel))
    padded = np.pad(image, [(0, 0), (radius, radius), (0, 0)], mode="reflect")
    return sum(weight * padded[:, i:i + width] for i, weight in enumerate(kernel))


def _normals(geometry: world.GeometryBuffers) -> np.ndarray:
    """Unit surface normals (H, W, 3) facing the camera; zero for sky."""
    normals = np.zeros(geometry.points.shape, dtype=np.float32)
    normals[geometry.face == world.FACE_UP] = (0.0, -1.0, 0.0)
    normals[geometry.face == world.FACE_DOWN] = (0.0, 1.0, 0.0)
    normals[geometry.face == world.FACE_FRONT] = (0.0, 0.0, -1.0)
    side = geometry.face == world.FACE_SIDE
    normals[side, 0] = -np.sign(geometry.points[side, 0])
    return normals


def _target_albedo(geometry: world.GeometryBuffers, scene: world.Scene,
                   rng: np.random.Generator) -> np.ndarray:
    """Textured sRGB albedo (H, W, 3) of every non-sky pixel.

    Textures are evaluated only on the pixels of their class, with per-object parameters
    gathered by instance id, so the cost is one pass over the image whatever the number of
    objects.
    """
    albedo = np.zeros(geometry.points.shape)
    on_ground = geometry.surface == world.SURFACE_GROUND

    # Ground: asphalt with lane paint, paving tiles, grass and dirt.
    ground_points = geometry.points[on_ground]
    x, z = ground_points[:, 0], ground_points[:, 2]
    ground_label = geometry.label[on_ground]
    fine = value_noise(x * 7.0 + 31.0, z * 7.0)
    coarse = value_noise(x * 0.4 + 97.0, z * 0.4)
    ground_albedo = np.zeros((len(x), 3))

    road = ground_label == world.ROAD
    asphalt = rng.uniform(0.26, 0.38) * np.array((1.0, 1.0, 1.04))
    ground_albedo[road] = asphalt * (0.8 + 0.25 * fine[road] + 0.2 * coarse[road])[:, None]
    paint = road & (np.mod(z, 9.0) < 3.0)
    paint &= np.any(np.abs(x[:, None] - scene.lane_lines[None, :]) < 0.06, axis=1)
    wear = value_noise(x[paint] * 3.0, z[paint] * 3.0 + 57.0)
    ground_albedo[paint] = (0.78 * (0.7 + 0.3 * wear))[:, None]

    sidewalk = ground_label == world.SIDEWALK
    tile = rng.uniform(0.4, 0.6)
    paving = _TARGET_BUILDING_ALBEDOS[int(rng.integers(1, 4))] * rng.uniform(0.8, 0.95)
    grout = (np.mod(x, tile) < 0.04) | (np.mod(z, tile) < 0.04)
    ground_albedo[sidewalk] = paving * (0.9 + 0.15 * fine[sidewalk])[:, None]
    ground_albedo[sidewalk & grout] *= 0.6

    terrain = ground_label == world.TERRAIN
    grass, dirt = np.array((0.25, 0.38, 0.12)), np.array((0.42, 0.34, 0.22))
    mix = coarse[terrain][:, None]
    ground_albedo[terrain] = (grass * (1 - mix) + dirt * mix) * (
        0.8 + 0.4 * fine[terrain]
    )[:, None]
    albedo[on_ground] = ground_albedo

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

    car = label == world.CAR
    colour = car_albedo[instance[car]]
    # The cabin is a car's upper box (its bottom is above the ground); sides are glass.
    is_cabin = scene.boxes[box_index[car], 3] < world.CAMERA_HEIGHT - 1e-6
    vertical = face[car] != world.FACE_UP
    colour[is_cabin & vertical] = _GLASS
    colour[(height_above_ground[car] < 0.35) & vertical] = (0.04, 0.04, 0.04)  # wheels
    box_albedo[car] = colour

    pole = label == world.POLE
    box_albedo[pole] = pole_grey[instance[pole]]

    vegetation = label == world.VEGETATION
    leaves = value_noise(
        x[vegetation] * 4.0 + y[vegetation] * 3.0 + 11.0,
        z[vegetation] * 4.0 - y[vegetation] * 3.0,
    )
    green = np.array((0.18, 0.32, 0.10)) * jitter[instance[vegetation]]
    box_albedo[vegetation] = green * (0.6 + 0.8 * leaves)[:, None]
    albedo[on_box] = box_albedo
    return albedo


def shade_target(geometry: world.GeometryBuffers, scene: world.Scene, camera: world.Camera,
                 rng: np.random.Generator) -> np.ndarray:
    """Textured, lit, hazy, blurred and noisy uint8 (H, W, 3) rendering of `geometry`."""
    height, width = geometry.depth.shape
    sky = geometry.surface == world.SURFACE_SKY

    # Sun and sky.
    azimuth = rng.uniform(0.0, 2.0 * np.pi)
    elevation = np.deg2rad(rng.uniform(15.0, 65.0))
    to_sun = np.array((np.cos(elevation) * np.sin(azimuth), -np.sin(elevation),
                       np.cos(elevation) * np.cos(azimuth)))
    sun_strength = rng.uniform(0.45, 1.0)
    ambient = rng.uniform(0.35, 0.6)
    overcast = rng.uniform(0.0, 0.8)
    horizon_colour = np.array((0.78, 0.80, 0.82)) * rng.uniform(0.85, 1.05)
    zenith_colour = (1 - overcast) * np.array((0.30, 0.50, 0.85)) + overcast * horizon_colour

    albedo = _srgb_to_linear(_target_albedo(geometry, scene, rng).astype(np.float32))
    normals = _normals(geometry)
    lambert = np.clip(normals @ to_sun.astype(np.float32), 0.0, None)
    irradiance = ambient + sun_strength * (1.0 - 0.6 * overcast) * lambert

    # Shadows of cars on the ground: the footprint grown towards the sun's side.
    on_ground = geometry.surface == world.SURFACE_GROUND
    car_bodies = scene.boxes[(scene.labels == world.CAR)
                             & (scene.boxes[:, 3] >= world.CAMERA_HEIGHT - 1e-6)]
    if len(car_bodies) and on_ground.any():
        ground_x = geometry.points[on_ground, 0][:, None]
        ground_z = geometry.points[on_ground, 2][:, None]
        spread_x = 0.2 + 0.8 * max(0.0, -to_sun[0]) * np.cos(elevation)
        spread_z = 0.3 + 0.8 * max(0.0, -to_sun[2]) * np.cos(elevation)
        shadowed = (
            (ground_x > car_bodies[None, :, 0] - spread_x)
            & (ground_x < car_bodies[None, :, 1] + spread_x)
            & (ground_z > car_bodies[None, :, 4] - spread_z)
            & (ground_z < car_bodies[None, :, 5] + spread_z)
        ).any(axis=1)
        ground_irradiance = irradiance[on_ground]
        ground_irradiance[shadowed] = ambient * 0.8
        irradiance[on_ground] = ground_irradiance

    radiance = albedo * irradiance[..., None]

    # Sky: gradient from the horizon (row cy) up, with clouds.
    dir_x, dir_y = world.ray_directions(camera)
    sky_rows, sky_cols = np.nonzero(sky)
    up = np.clip(-dir_y[sky_rows], 0.0, None)
    blend = np.clip(up / 0.5, 0.0, 1.0)[:, None]
    sky_colour = horizon_colour * (1 - blend) + zenith_colour * blend
    clouds = value_noise(dir_x[sky_cols] * 6.0 / (up + 0.1) + 200.0, 40.0 / (up + 0.1))
    cloud_amount = np.clip((clouds - (0.7 - 0.5 * overcast)) * 3.0, 0.0, 1.0)[:, None]
    sky_colour = sky_colour * (1 - cloud_amount) + horizon_colour * 1.05 * cloud_amount
    radiance[sky] = _srgb_to_linear(sky_colour)

    # Atmospheric haze towards the horizon colour.
    visibility = rng.uniform(200.0, 800.0)
    haze = (1.0 - np.exp(-geometry.depth / np.float32(visibility)))[..., None]
    haze[sky] = 0.0
    radiance += (_srgb_to_linear(horizon_colour).astype(np.float32) - radiance) * haze

    # Camera: white balance, exposure, vignetting, optics blur, gamma, sensor noise.
    white_balance = 1.0 + rng.uniform(-0.08, 0.08, size=3)
    exposure = rng.uniform(0.75, 1.3)
    rows = (np.arange(height) - (height - 1) / 2) / ((height - 1) / 2)
    cols = (np.arange(width) - (width - 1) / 2) / ((width - 1) / 2)
    radius_sq = (rows[:, None] ** 2 + cols[None, :] ** 2) / 2.0
    vignette = 1.0 - rng.uniform(0.2, 0.45) * radius_sq
    gain = (white_balance * exposure).astype(np.float32)
    radiance *= gain * vignette[..., None].astype(np.float32)
    radiance = _gaussian_blur(radiance, rng.uniform(0.5, 1.1))
    gamma = rng.uniform(1.8, 2.6)
    image = np.power(np.clip(radiance, 0.0, 1.0), np.float32(1.0 / gamma))
    shot, read = rng.uniform(0.0005, 0.003), rng.uniform(0.005, 0.02)
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    image += noise * np.sqrt(np.float32(shot) * image + np.float32(read**2))
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
