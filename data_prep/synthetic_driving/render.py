"""One synthetic driving example as a pure function of (seed, split, index, domain, size).

A domain is one of `appearance.LOOKS`: `source`, `target`, or the source with one factor of
the target (`target_palette`, `target_texture`, `target_lighting`, `target_camera`).
"""

from __future__ import annotations

import numpy as np

from data_prep.synthetic_driving import appearance, scenes, world

DOMAINS = tuple(appearance.LOOKS)
# The looks with a random generator of their own; the factor looks mix these two.
_STREAMS = {"source": 1, "target": 2}


def appearance_rng(seed: int, split: str, index: int, look: str) -> np.random.Generator:
    """The shading random generator of the `look` ("source" or "target") of one example;
    independent of the geometry's."""
    # scene_rng validates split, seed and index; its stream number is 0.
    scenes.scene_rng(seed, split, index)
    return np.random.default_rng([seed, world.SPLIT_CODES[split], index, _STREAMS[look]])


def example_name(split: str, index: int) -> str:
    """The `name` feature of example `index` of `split`, e.g. "train_000042"."""
    return f"{split}_{index:06d}"


def render_example(domain: str, seed: int, split: str, index: int, height: int,
                   width: int) -> dict[str, np.ndarray | str]:
    """Renders example `index` of `split` in `domain` at `height` x `width` pixels.

    Returns the builder's features: "image" uint8 (H, W, 3), "depth" float32 (H, W) metres
    (0 = sky), "label" uint8 (H, W, 1) Cityscapes train ids, "intrinsics" float32
    (fx, fy, cx, cy) and "name". The geometry (depth, label) depends only on
    (seed, split, index, size), so every domain renders the same scenes.
    """
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    camera = world.Camera.kitti_like(height, width)
    scene = scenes.sample_scene(scenes.scene_rng(seed, split, index))
    geometry = world.render_geometry(scene, camera)
    image = appearance.shade(
        geometry, scene, camera, appearance.LOOKS[domain],
        source_rng=appearance_rng(seed, split, index, "source"),
        target_rng=appearance_rng(seed, split, index, "target"),
    )
    return {
        "image": image,
        "depth": geometry.depth,
        "label": geometry.label[..., None],
        "intrinsics": camera.intrinsics,
        "name": example_name(split, index),
    }
