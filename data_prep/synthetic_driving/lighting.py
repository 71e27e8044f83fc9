"""How light falls on the synthetic driving world.

* `flat_shading`: the `source` world's light: one fixed brightness per face orientation, no
  light direction, no shadow, no sky gradient, no haze. Works on sRGB colours.
* `draw_sun_and_sky`, `draw_haze` and `light`: the `target` world's light: a random sun
  (direction, strength) and ambient light, car shadows on the ground, a sky gradient with
  clouds and an overcast amount, and atmospheric haze towards the horizon colour. Works on
  linear radiance.

Every random choice comes from a `rng` argument, so an image is a pure function of the
geometry and the generator's seed.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from data_prep.synthetic_driving import materials, world

# Flat shading: one brightness per face orientation (no light direction, no texture).
_SOURCE_FACE_BRIGHTNESS = {
    world.FACE_UP: 1.0, world.FACE_SIDE: 0.7, world.FACE_FRONT: 0.85, world.FACE_DOWN: 0.5,
}


def srgb_to_linear(colour: np.ndarray) -> np.ndarray:
    """Display sRGB in [0, 1] to linear radiance (a 2.2 power law)."""
    return np.power(np.clip(colour, 0.0, 1.0), 2.2)


def linear_to_srgb(radiance: np.ndarray) -> np.ndarray:
    """The inverse of `srgb_to_linear`: linear radiance to display sRGB, clipped to [0, 1]."""
    return np.power(np.clip(radiance, 0.0, 1.0), np.float32(1.0 / 2.2))


def flat_shading(colours: np.ndarray, geometry: world.GeometryBuffers) -> np.ndarray:
    """`colours` (sRGB, H x W x 3) with the source's brightness per box face applied."""
    on_box = geometry.surface > world.SURFACE_GROUND
    brightness = np.ones(geometry.face.shape)
    for face, factor in _SOURCE_FACE_BRIGHTNESS.items():
        brightness[(geometry.face == face) & on_box] = factor
    return colours * brightness[..., None]


@dataclasses.dataclass(frozen=True)
class SunAndSky:
    """The target's random light of one frame (every field drawn by `draw_sun_and_sky`)."""

    to_sun: np.ndarray  # unit vector towards the sun, camera frame
    elevation: float  # radians above the horizon
    sun_strength: float
    ambient: float
    overcast: float  # 0 = clear, 0.8 = mostly overcast
    horizon_colour: np.ndarray  # sRGB
    zenith_colour: np.ndarray  # sRGB


def draw_sun_and_sky(rng: np.random.Generator) -> SunAndSky:
    """Draws the sun, the ambient light and the sky colours (the first draws of a target
    frame)."""
    azimuth = rng.uniform(0.0, 2.0 * np.pi)
    elevation = np.deg2rad(rng.uniform(15.0, 65.0))
    to_sun = np.array((np.cos(elevation) * np.sin(azimuth), -np.sin(elevation),
                       np.cos(elevation) * np.cos(azimuth)))
    sun_strength = rng.uniform(0.45, 1.0)
    ambient = rng.uniform(0.35, 0.6)
    overcast = rng.uniform(0.0, 0.8)
    horizon_colour = np.array((0.78, 0.80, 0.82)) * rng.uniform(0.85, 1.05)
    zenith_colour = (1 - overcast) * np.array((0.30, 0.50, 0.85)) + overcast * horizon_colour
    return SunAndSky(to_sun, elevation, sun_strength, ambient, overcast, horizon_colour,
                     zenith_colour)


def draw_haze(rng: np.random.Generator) -> float:
    """The visibility distance in metres (drawn after the target's materials)."""
    return rng.uniform(200.0, 800.0)


def _normals(geometry: world.GeometryBuffers) -> np.ndarray:
    """Unit surface normals (H, W, 3) facing the camera; zero for sky."""
    normals = np.zeros(geometry.points.shape, dtype=np.float32)
    normals[geometry.face == world.FACE_UP] = (0.0, -1.0, 0.0)
    normals[geometry.face == world.FACE_DOWN] = (0.0, 1.0, 0.0)
    normals[geometry.face == world.FACE_FRONT] = (0.0, 0.0, -1.0)
    side = geometry.face == world.FACE_SIDE
    normals[side, 0] = -np.sign(geometry.points[side, 0])
    return normals


def light(albedo: np.ndarray, geometry: world.GeometryBuffers, scene: world.Scene,
          camera: world.Camera, sun: SunAndSky, visibility: float) -> np.ndarray:
    """Linear radiance (H, W, 3) of linear `albedo` under the target's sun, sky and haze."""
    sky = geometry.surface == world.SURFACE_SKY
    normals = _normals(geometry)
    lambert = np.clip(normals @ sun.to_sun.astype(np.float32), 0.0, None)
    irradiance = sun.ambient + sun.sun_strength * (1.0 - 0.6 * sun.overcast) * lambert

    # Shadows of cars on the ground: the footprint grown towards the sun's side.
    on_ground = geometry.surface == world.SURFACE_GROUND
    car_bodies = scene.boxes[(scene.labels == world.CAR)
                             & (scene.boxes[:, 3] >= world.CAMERA_HEIGHT - 1e-6)]
    if len(car_bodies) and on_ground.any():
        ground_x = geometry.points[on_ground, 0][:, None]
        ground_z = geometry.points[on_ground, 2][:, None]
        spread_x = 0.2 + 0.8 * max(0.0, -sun.to_sun[0]) * np.cos(sun.elevation)
        spread_z = 0.3 + 0.8 * max(0.0, -sun.to_sun[2]) * np.cos(sun.elevation)
        shadowed = (
            (ground_x > car_bodies[None, :, 0] - spread_x)
            & (ground_x < car_bodies[None, :, 1] + spread_x)
            & (ground_z > car_bodies[None, :, 4] - spread_z)
            & (ground_z < car_bodies[None, :, 5] + spread_z)
        ).any(axis=1)
        ground_irradiance = irradiance[on_ground]
        ground_irradiance[shadowed] = sun.ambient * 0.8
        irradiance[on_ground] = ground_irradiance

    radiance = albedo * irradiance[..., None]

    # Sky: gradient from the horizon (row cy) up, with clouds.
    dir_x, dir_y = world.ray_directions(camera)
    sky_rows, sky_cols = np.nonzero(sky)
    up = np.clip(-dir_y[sky_rows], 0.0, None)
    blend = np.clip(up / 0.5, 0.0, 1.0)[:, None]
    sky_colour = sun.horizon_colour * (1 - blend) + sun.zenith_colour * blend
    clouds = materials.value_noise(dir_x[sky_cols] * 6.0 / (up + 0.1) + 200.0,
                                   40.0 / (up + 0.1))
    cloud_amount = np.clip((clouds - (0.7 - 0.5 * sun.overcast)) * 3.0, 0.0, 1.0)[:, None]
    sky_colour = sky_colour * (1 - cloud_amount) + sun.horizon_colour * 1.05 * cloud_amount
    radiance[sky] = srgb_to_linear(sky_colour)

    # Atmospheric haze towards the horizon colour.
    haze = (1.0 - np.exp(-geometry.depth / np.float32(visibility)))[..., None]
    haze[sky] = 0.0
    radiance += (srgb_to_linear(sun.horizon_colour).astype(np.float32) - radiance) * haze
    return radiance
