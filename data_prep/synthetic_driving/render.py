"""One synthetic driving example as a pure function of (seed, split, index, domain, size)."""

from __future__ import annotations

import numpy as np

from data_prep.synthetic_driving import appearance, scenes, world

DOMAINS = ("source", "target")


def appearance_rng(seed: int, split: str, index: int, domain: str) -> np.random.Generator:
    """The shading random generator of one example; independent of the geometry's."""
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    # scene_rng validates split, seed and index; its stream number is 0, ours 1 + domain.
    scenes.scene_rng(seed, split, index)
    return np.random.default_rng(
        [seed, world.SPLIT_CODES[split], index, 1 + DOMAINS.index(domain)]
    )


def example_name(split: str, index: int) -> str:
    """The `name` feature of example `index` of `split`, e.g. "train_000042"."""
    return f"{split}_{index:06d}"


def render_example(domain: str, seed: int, split: str, index: int, height: int,
                   width: int) -> dict[str, np.ndarray | str]:
    """Renders example `index` of `split` in `domain` at `height` x `width` pixels.

    Returns the builder's features: "image" uint8 (H, W, 3), "depth" float32 (H, W) metres
    (0 = sky), "label" uint8 (H, W, 1) Cityscapes train ids, "intrinsics" float32
    (fx, fy, cx, cy) and "name". The geometry (depth, label) depends only on
    (seed, split, index, size), so the two domains render the same scenes.
    """
    camera = world.Camera.kitti_like(height, width)
    scene = scenes.sample_scene(scenes.scene_rng(seed, split, index))
    geometry = world.render_geometry(scene, camera)
    rng = appearance_rng(seed, split, index, domain)
    if domain == "source":
        image = appearance.shade_source(geometry, scene, rng)
    else:
        image = appearance.shade_target(geometry, scene, camera, rng)
    return {
        "image": image,
        "depth": geometry.depth,
        "label": geometry.label[..., None],
        "intrinsics": camera.intrinsics,
        "name": example_name(split, index),
    }
