"""Tests of the synthetic_driving world: analytic depth/labels, determinism, domain gap."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

import data_prep  # noqa: F401  (registers the builders)
from data_prep.synthetic_driving import appearance, render, scenes, world
from data_prep.synthetic_driving import synthetic_driving_dataset_builder as builder_module
from data_prep.synthetic_driving.synthetic_driving_dataset_builder import SyntheticDrivingConfig

HEIGHT, WIDTH = 96, 320
CAMERA = world.Camera.kitti_like(HEIGHT, WIDTH)
EMPTY_ROAD = world.GroundLayout(road_left=-4.0, road_right=3.0, sidewalk_left=-6.5,
                                sidewalk_right=5.0)


def _scene(boxes=(), labels=()) -> world.Scene:
    return world.Scene(ground=EMPTY_ROAD, boxes=np.array(boxes, dtype=np.float64).reshape(-1, 6),
                       labels=np.array(labels, dtype=np.uint8),
                       instances=np.arange(len(labels), dtype=np.int32))


def test_camera_is_monodepth2_kitti_scaled():
    np.testing.assert_allclose(
        CAMERA.intrinsics, [0.58 * 320, 1.92 * 96, 160.0, 48.0], rtol=1e-6
    )


def test_empty_road_depth_rows_and_labels():
    geometry = world.render_geometry(_scene(), CAMERA)
    rows = np.arange(HEIGHT)
    below = rows > CAMERA.cy
    # Ground plane at 1.65 m: depth of row v is fy * h / (v - cy), the same across the row.
    expected_depth = CAMERA.fy * 1.65 / (rows[below] - CAMERA.cy)
    np.testing.assert_allclose(geometry.depth[below], np.repeat(expected_depth[:, None], WIDTH, 1),
                               rtol=1e-6)
    # Horizon row and above: sky, depth 0 (invalid).
    assert np.all(geometry.depth[~below] == 0.0)
    assert np.all(geometry.label[~below] == 10)
    # Row 80: depth 184.32 * 1.65 / 32 = 9.504 m; lateral x = (u - cx) / fx * depth.
    row = 80
    assert geometry.depth[row, 0] == pytest.approx(9.504, rel=1e-6)
    x = (np.arange(WIDTH) - CAMERA.cx) / CAMERA.fx * 9.504
    expected = np.where((x >= -4.0) & (x <= 3.0), 0,
                        np.where((x >= -6.5) & (x <= 5.0), 1, 9))
    np.testing.assert_array_equal(geometry.label[row], expected)
    assert set(np.unique(geometry.label[row])) == {0, 1, 9}


def test_box_front_and_top_faces_have_exact_depth():
    # A car-sized box 10..14 m ahead whose top (y = 0.15) is below the camera (y = 0).
    box = (-1.0, 1.0, 0.15, 1.65, 10.0, 14.0)
    geometry = world.render_geometry(_scene([box], [world.CAR]), CAMERA)
    columns = np.arange(WIDTH)
    rows = np.arange(HEIGHT)
    front_cols = np.abs((columns - CAMERA.cx) / CAMERA.fx * 10.0) <= 1.0
    front_rows = ((rows - CAMERA.cy) / CAMERA.fy * 10.0 >= 0.15) & (
        (rows - CAMERA.cy) / CAMERA.fy * 10.0 <= 1.65
    )
    front = front_rows[:, None] & front_cols[None, :]
    np.testing.assert_array_equal(geometry.depth[front], 10.0)
    assert np.all(geometry.label[front] == world.CAR)
    assert np.all(geometry.face[front] == world.FACE_FRONT)
    # Row 50 looks down 2 / fy: it meets the top plane y = 0.15 at z = 0.15 * fy / 2.
    top_depth = 0.15 * CAMERA.fy / 2.0
    assert 10.0 < top_depth < 14.0
    assert geometry.depth[50, 160] == pytest.approx(top_depth, rel=1e-6)
    assert geometry.label[50, 160] == world.CAR
    assert geometry.face[50, 160] == world.FACE_UP
    # Just beside the box the ray reaches the road at the ground depth of its row.
    outside = int(np.flatnonzero(front_cols)[-1]) + 1
    assert geometry.label[70, outside] == world.ROAD
    assert geometry.depth[70, outside] == pytest.approx(CAMERA.fy * 1.65 / (70 - 48), rel=1e-6)
    # The hit points lie on the surfaces.
    np.testing.assert_allclose(geometry.points[front][:, 2], 10.0)
    np.testing.assert_allclose(geometry.points[50, 160, 1], 0.15, rtol=1e-5)


def test_nearest_box_wins_and_side_faces():
    near = (-0.5, 0.5, -2.0, 1.65, 8.0, 8.3)  # a pole-like box in front of a wall
    wall = (-20.0, 20.0, -10.0, 1.65, 30.0, 31.0)
    side = (4.0, 6.0, -3.0, 1.65, 5.0, 40.0)  # a building face parallel to the road
    geometry = world.render_geometry(
        _scene([wall, near, side], [world.BUILDING, world.POLE, world.BUILDING]), CAMERA
    )
    assert geometry.label[40, 160] == world.POLE
    assert geometry.depth[40, 160] == pytest.approx(8.0)
    assert geometry.label[40, 100] == world.BUILDING
    assert geometry.depth[40, 100] == pytest.approx(30.0)
    # Column 300 looks right at (300 - 160) / fx: the x = 4 face is hit at z = 4 fx / 140.
    side_depth = 4.0 * CAMERA.fx / 140.0
    assert geometry.depth[40, 300] == pytest.approx(side_depth, rel=1e-6)
    assert geometry.face[40, 300] == world.FACE_SIDE
    assert geometry.surface[40, 300] == 3


@pytest.mark.parametrize(
    "box, message",
    [((-1.0, 1.0, -1.0, 1.0, -1.0, 1.0), "contains the camera"),
     ((1.0, 1.0, 0.0, 1.0, 5.0, 6.0), "min >= max")],
)
def test_scene_rejects_bad_boxes(box, message):
    with pytest.raises(ValueError, match=message):
        _scene([box], [world.CAR])


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="split must be one of"):
        scenes.scene_rng(0, "training", 0)
    with pytest.raises(ValueError, match="domain must be one of"):
        render.render_example("real", 0, "train", 0, HEIGHT, WIDTH)
    with pytest.raises(ValueError, match="domain must be one of"):
        SyntheticDrivingConfig(name="bad", domain="real")
    with pytest.raises(ValueError, match="at least 2x2"):
        SyntheticDrivingConfig(name="bad", height=1)


def test_sampled_scenes_ground_depth_and_class_coverage():
    seen = set()
    rows = np.arange(HEIGHT)[:, None] * np.ones((1, WIDTH))
    for index in range(12):
        example = render.render_example("source", 0, "train", index, HEIGHT, WIDTH)
        depth, label = example["depth"], example["label"][..., 0]
        seen.update(np.unique(label).tolist())
        # Depth is valid exactly off the sky, and ground classes lie on the ground plane.
        np.testing.assert_array_equal(depth > 0, label != world.SKY)
        ground = np.isin(label, [world.ROAD, world.SIDEWALK, world.TERRAIN])
        np.testing.assert_allclose(
            depth[ground], CAMERA.fy * 1.65 / (rows[ground] - CAMERA.cy), rtol=1e-6
        )
        assert depth.dtype == np.float32 and example["image"].dtype == np.uint8
        assert example["label"].shape == (HEIGHT, WIDTH, 1)
        assert example["name"] == f"train_{index:06d}"
    assert {0, 1, 2, 5, 10, 13} <= seen
    assert seen <= {0, 1, 2, 5, 8, 9, 10, 13}


def test_examples_are_pure_functions_of_seed_split_index():
    first = render.render_example("target", 3, "val", 7, HEIGHT, WIDTH)
    second = render.render_example("target", 3, "val", 7, HEIGHT, WIDTH)
    for key in ("image", "depth", "label", "intrinsics"):
        assert first[key].tobytes() == second[key].tobytes(), key
    other_index = render.render_example("target", 3, "val", 8, HEIGHT, WIDTH)
    other_split = render.render_example("target", 3, "test", 7, HEIGHT, WIDTH)
    other_seed = render.render_example("target", 4, "val", 7, HEIGHT, WIDTH)
    for other in (other_index, other_split, other_seed):
        assert not np.array_equal(first["depth"], other["depth"])


def test_domains_share_geometry_but_not_appearance():
    saturation = {"source": [], "target": []}
    flat_fraction = {"source": [], "target": []}
    for index in range(6):
        examples = {domain: render.render_example(domain, 0, "test", index, HEIGHT, WIDTH)
                    for domain in ("source", "target")}
        np.testing.assert_array_equal(examples["source"]["depth"], examples["target"]["depth"])
        np.testing.assert_array_equal(examples["source"]["label"], examples["target"]["label"])
        for domain, example in examples.items():
            image = example["image"].astype(np.float64) / 255.0
            saturation[domain].append(np.mean(image.max(-1) - image.min(-1)))
            same_as_left = np.all(image[:, 1:] == image[:, :-1], axis=-1)
            flat_fraction[domain].append(same_as_left.mean())
    # Source: saturated flat colours; target: muted, textured and noisy.
    assert min(saturation["source"]) > 3 * max(saturation["target"])
    assert min(flat_fraction["source"]) > 0.85
    assert max(flat_fraction["target"]) < 0.05


# sha256 of the image bytes of source and target frames, recorded from the renderer before
# its shader was split into factors (ecb8054): the split must not change a byte of either.
# numpy's AVX-512 kernels of power and exp may round differently from its AVX2 ones, so the
# frames are rendered with numpy held to its AVX2 (x86-64-v3) kernels on every host.
FRAME_HASHES = {
    ("source", "test", 0, 96, 320):
        "af243c916ad48190b43a17ce6ed7ec785c07b1a5baecb9dd175712a596c43e0d",
    ("source", "train", 7, 96, 320):
        "6f43623aad42c0bd29c7647f117dbb0d5f8ef902ff9c3793bd15836b7cfe988e",
    ("source", "val", 3, 48, 160):
        "78765848beec9fb38096e4a5ec622da1115ea10ec4acf84feda87efbb99c1e43",
    ("target", "test", 0, 96, 320):
        "ac1b1599447bf8939a5eacd531d461ea1bdbc4008f0e70e34fd352a95261e0bb",
    ("target", "train", 7, 96, 320):
        "e1b3c4aea1dce2975c0d7637089af6636a5e044df015cf92cf3d38ca3ee3201f",
    ("target", "val", 3, 48, 160):
        "9ada5186bb2c8796653a54256519b4fd408885353551c5d48b941fee2ea5ff41",
}
_HASH_SCRIPT = """
import hashlib, sys
from data_prep.synthetic_driving import render
for line in sys.stdin:
    domain, split, index, height, width = line.split()
    image = render.render_example(domain, 0, split, int(index), int(height), int(width))["image"]
    print(hashlib.sha256(image.tobytes()).hexdigest())
"""


def test_source_and_target_frames_are_byte_identical_to_the_recorded_ones():
    cases = list(FRAME_HASHES)
    environment = {**os.environ, "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"}
    result = subprocess.run(
        [sys.executable, "-W", "error::ImportWarning", "-c", _HASH_SCRIPT],
        input="".join(" ".join(map(str, case)) + "\n" for case in cases),
        capture_output=True, text=True, env=environment, check=True,
    )
    assert dict(zip(cases, result.stdout.split(), strict=True)) == FRAME_HASHES


def _chromaticity(image: np.ndarray) -> np.ndarray:
    return image / image.sum(axis=-1, keepdims=True)


def test_each_factor_look_takes_one_factor_of_the_target():
    assert set(render.DOMAINS) == {"source", "target", "target_palette", "target_texture",
                                   "target_lighting", "target_camera"}
    for index in range(3):
        looks = {domain: render.render_example(domain, 0, "test", index, HEIGHT, WIDTH)
                 for domain in render.DOMAINS}
        for example in looks.values():
            np.testing.assert_array_equal(example["depth"], looks["source"]["depth"])
            np.testing.assert_array_equal(example["label"], looks["source"]["label"])
        images = {domain: example["image"].astype(np.float64) for domain, example in
                  looks.items()}
        sky = looks["source"]["label"][..., 0] == world.SKY
        # Palette and texture change surfaces only: the sky is the source's, to the byte.
        for domain in ("target_palette", "target_texture"):
            np.testing.assert_array_equal(images[domain][sky], images["source"][sky])
        # Light and camera change the sky too.
        for domain in ("target_lighting", "target_camera"):
            assert np.abs(images[domain][sky] - images["source"][sky]).mean() > 10
        # Texture modulates brightness only: the source's hue, wherever neither is clipped
        # or too dark for 8 bits to hold the ratio.
        fine = (~sky & (images["source"].min(-1) > 40) & (images["target_texture"].min(-1) > 40)
                & (images["source"].max(-1) < 255) & (images["target_texture"].max(-1) < 255))
        assert fine.mean() > 0.2
        np.testing.assert_allclose(_chromaticity(images["target_texture"][fine]),
                                   _chromaticity(images["source"][fine]), atol=0.02)
        assert np.abs(images["target_texture"][~sky] - images["source"][~sky]).mean() > 5
        # Palette: the target's muted colours, still flat.
        saturation = {d: np.mean(image[~sky].max(-1) - image[~sky].min(-1))
                      for d, image in images.items()}
        assert saturation["target_palette"] < saturation["source"] / 3
        flat = {d: np.mean(np.all(image[:, 1:] == image[:, :-1], axis=-1))
                for d, image in images.items()}
        assert flat["target_palette"] > 0.85 and flat["target_lighting"] > 0.5
        # Only the camera (and the target, which has it) adds noise.
        assert flat["target_camera"] < 0.05 and flat["target"] < 0.05
    with pytest.raises(ValueError, match="unknown appearance factors \\['fog'\\]"):
        appearance.shade(None, None, None, frozenset({"fog"}), None, None)


def test_every_look_is_a_builder_config():
    names = [config.name for config in builder_module.SyntheticDriving.BUILDER_CONFIGS]
    assert names == list(render.DOMAINS)


def _build(data_dir: str, config: str, max_examples: int) -> tfds.core.DatasetBuilder:
    builder = tfds.builder(f"synthetic_driving/{config}", data_dir=data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(max_examples_per_split=max_examples)
    )
    return builder


def _shard_bytes(builder: tfds.core.DatasetBuilder) -> dict[str, bytes]:
    data_dir = os.fspath(builder.data_dir)
    return {
        name: open(os.path.join(data_dir, name), "rb").read()
        for name in sorted(os.listdir(data_dir)) if ".tfrecord" in name
    }


def test_builds_are_byte_identical_and_round_trip(tmp_path):
    first = _build(os.fspath(tmp_path / "a"), "target", max_examples=3)
    second = _build(os.fspath(tmp_path / "b"), "target", max_examples=3)
    first_shards = _shard_bytes(first)
    assert len(first_shards) == 3  # one shard per split
    assert first_shards == _shard_bytes(second)
    assert {split: info.num_examples for split, info in first.info.splits.items()} == {
        "train": 3, "val": 3, "test": 3,
    }
    for example in tfds.as_numpy(first.as_dataset(split="val")):
        name = example["name"].decode()
        index = int(name.split("_")[1])
        expected = render.render_example("target", 0, "val", index, HEIGHT, WIDTH)
        for key in ("image", "depth", "label", "intrinsics"):
            assert example[key].dtype == expected[key].dtype, key
            np.testing.assert_array_equal(example[key], expected[key], err_msg=key)


def test_parallel_rendering_gives_the_serial_examples_in_order():
    count = builder_module.SERIAL_EXAMPLES + 5  # 5 rendered by the worker pool
    serial = list(builder_module.render_examples("target", 3, "val", count, 24, 80,
                                                 processes=1))
    parallel = list(builder_module.render_examples("target", 3, "val", count, 24, 80,
                                                   processes=2))
    assert [e["name"] for e in parallel] == [render.example_name("val", i) for i in range(count)]
    for a, b in zip(serial, parallel, strict=True):
        for key in ("image", "depth", "label", "intrinsics"):
            np.testing.assert_array_equal(a[key], b[key])
    with pytest.raises(ValueError, match="processes must be >= 1, got 0"):
        next(builder_module.render_examples("target", 3, "val", 1, 24, 80, processes=0))
