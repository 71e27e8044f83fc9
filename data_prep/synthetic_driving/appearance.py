"""Appearance of the synthetic driving world: the source and target looks, and every mix of
their four factors.

The target differs from the source in four factors, each one module's job:

* `palette` (`materials`): realistic, muted albedo colours instead of flat saturated ones;
* `texture` (`materials`): procedural textures (asphalt grain, paving grout, windows, car
  glass and wheels, foliage);
* `lighting` (`lighting`): a random sun, ambient light, car shadows, a sky gradient with
  clouds, and haze, instead of one fixed brightness per face orientation;
* `camera` (`sensor`): white balance, exposure, vignetting, blur, a random gamma and sensor
  noise, instead of a perfect display.

`shade` renders any subset of them on the source. With no factor it is the `source` look,
with all four the `target` look, byte for byte as before the factors were separated. A
factor's random choices come from the target's generator, drawn in the target's order
whatever the subset, so the factor a config takes is exactly the one of the target frame of
the same scene; the rest comes from the source's generator, as in the source frame.
"""

from __future__ import annotations

import numpy as np

from data_prep.synthetic_driving import lighting, materials, sensor, world

FACTORS = ("palette", "texture", "lighting", "camera")
# Every look the builder renders: name -> the target factors it takes.
LOOKS: dict[str, frozenset[str]] = {
    "source": frozenset(),
    "target": frozenset(FACTORS),
    **{f"target_{factor}": frozenset({factor}) for factor in FACTORS},
}


def shade(geometry: world.GeometryBuffers, scene: world.Scene, camera: world.Camera,
          factors: frozenset[str], source_rng: np.random.Generator,
          target_rng: np.random.Generator) -> np.ndarray:
    """uint8 (H, W, 3) rendering of `geometry` with the target's `factors`, the source's rest.

    `source_rng` and `target_rng` are the generators of the source and target frames of this
    scene; `target_rng` is not drawn from when `factors` is empty.
    """
    unknown = set(factors) - set(FACTORS)
    if unknown:
        raise ValueError(f"unknown appearance factors {sorted(unknown)}; known: {FACTORS}")
    colours = materials.source_colours(geometry, scene, source_rng)
    if not factors:
        return sensor.to_uint8(lighting.flat_shading(colours, geometry))

    # Every target draw, in the target's order, so that each factor is the target frame's.
    sun = lighting.draw_sun_and_sky(target_rng)
    albedo = materials.target_albedo(geometry, scene, target_rng)
    visibility = lighting.draw_haze(target_rng)
    camera_draws = sensor.draw_sensor(target_rng, camera.height, camera.width)

    not_sky = geometry.surface != world.SURFACE_SKY
    if "palette" in factors:
        colours[not_sky] = (albedo.textured if "texture" in factors else albedo.flat)[not_sky]
    elif "texture" in factors:
        colours[not_sky] *= materials.texture_modulation(albedo)[not_sky][:, None]
    if "lighting" in factors:
        # The sky's colour is the light's: `light` replaces it.
        radiance = lighting.light(lighting.srgb_to_linear(colours.astype(np.float32)),
                                  geometry, scene, camera, sun, visibility)
        if "camera" not in factors:
            return sensor.to_uint8(lighting.linear_to_srgb(radiance))
    else:
        image = lighting.flat_shading(colours, geometry)
        if "camera" not in factors:
            return sensor.to_uint8(image)
        radiance = lighting.srgb_to_linear(image.astype(np.float32))
    return sensor.expose(radiance, camera_draws)
