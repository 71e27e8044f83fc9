"""TFDS builder `synthetic_driving`: procedurally rendered road scenes, configs `source`,
`target` and the one-factor targets.

Every config renders the same scenes (geometry is a pure function of the seed, the split and
the example index); they differ only in appearance: `source` is flat-shaded and saturated,
`target` is textured, lit, hazy, blurred and noisy, and `target_palette`, `target_texture`,
`target_lighting` and `target_camera` are the source with one of the target's four factors
(`appearance.FACTORS`). So `target/test` is `source/test` re-shaded and a gap between source
and target metrics measures appearance alone. Training never pairs them: the input pipeline
shuffles the two streams independently.
"""

from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import os
from collections.abc import Iterator

import tensorflow_datasets as tfds

from data_prep import features
from data_prep.synthetic_driving import render

_DESCRIPTION = """\
A synthetic driving world for CPU demos of DA-Monodepth. Road scenes (road, parking strips,
lane markings, sidewalks, terrain, building facades, trees, poles, cars as boxes, sky) are
ray cast with numpy from a pinhole camera with Monodepth2's normalised KITTI intrinsics
(fx = 0.58 W, fy = 1.92 H, cx = W / 2, cy = H / 2) mounted 1.65 m above the road with a
horizontal optical axis. Every pixel has exact metric z-depth (float32 metres; sky = 0 =
invalid) and a Cityscapes train-id label (road 0, sidewalk 1, building 2, pole 5,
vegetation 8, terrain 9, sky 10, car 13). Config `source`: flat saturated colours and hard
edges. Config `target`: the same scenes with textures, another palette, random sun and
haze, white balance, exposure and gamma changes, blur, vignetting and sensor noise. Configs
`target_palette`, `target_texture`, `target_lighting`, `target_camera`: the source with one
factor of the target (its albedo colours; its textures; its sun, shadows, sky and haze; its
camera), drawn as in the target frame of the same scene. Example i of split s is a pure
function of (seed, s, i).
"""

# The first examples of a split are rendered in the builder's process; the rest by a pool of
# one worker process per available CPU (rendering is pure numpy). Small builds, such as the
# tests' `max_examples_per_split` builds, so never pay the workers' start-up.
SERIAL_EXAMPLES = 64
RENDER_CHUNK_SIZE = 8


def render_processes() -> int:
    """Worker processes for rendering: the CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def render_examples(
    domain: str, seed: int, split: str, count: int, height: int, width: int,
    processes: int | None = None,
) -> Iterator[dict]:
    """Examples 0..count-1 of `split` in order; the same whatever `processes` is.

    `processes` (default `render_processes()`) > 1 renders the examples after the first
    `SERIAL_EXAMPLES` in that many spawned worker processes.
    """
    processes = render_processes() if processes is None else processes
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    render_one = functools.partial(
        render.render_example, domain, seed, split, height=height, width=width
    )
    serial = count if processes == 1 else min(count, SERIAL_EXAMPLES)
    for index in range(serial):
        yield render_one(index)
    if serial == count:
        return
    # "spawn": the builder's process has TensorFlow's threads running, which fork would copy
    # in an undefined state. Leaving the `with` (also when the consumer stops early)
    # terminates the workers.
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        yield from pool.imap(render_one, range(serial, count), chunksize=RENDER_CHUNK_SIZE)


# One config per look (`render.DOMAINS`), named after it.
_LOOK_DESCRIPTIONS = {
    "source": "Flat saturated colours, hard edges (the labelled synthetic domain).",
    "target": "Textures, lighting, haze, blur, vignetting, gamma and sensor noise (the "
              "unlabelled real-looking domain).",
    "target_palette": "The source with the target's albedo colours, flat, and the source's "
                      "shading.",
    "target_texture": "The source's colours modulated by the target's procedural textures.",
    "target_lighting": "The source's colours under the target's sun, ambient light, shadows, "
                       "sky and haze.",
    "target_camera": "The source rendering through the target's camera: white balance, "
                     "exposure, vignetting, blur, gamma and sensor noise.",
}


@dataclasses.dataclass(eq=False)
class SyntheticDrivingConfig(tfds.core.BuilderConfig):
    """A domain, an image size, a seed and split sizes."""

    domain: str = "source"
    height: int = 96
    width: int = 320
    seed: int = 0
    num_train: int = 1000
    num_val: int = 200
    num_test: int = 200

    def __post_init__(self):
        if self.domain not in render.DOMAINS:
            raise ValueError(
                f"synthetic_driving config {self.name!r}: domain must be one of "
                f"{render.DOMAINS}, got {self.domain!r}"
            )
        if self.height < 2 or self.width < 2:
            raise ValueError(
                f"synthetic_driving config {self.name!r}: image size must be at least 2x2, "
                f"got {self.height}x{self.width}"
            )
        for field in ("seed", "num_train", "num_val", "num_test"):
            if getattr(self, field) < 0:
                raise ValueError(
                    f"synthetic_driving config {self.name!r}: {field} must be >= 0, "
                    f"got {getattr(self, field)}"
                )

    @property
    def split_sizes(self) -> dict[str, int]:
        """Number of examples of each split."""
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}


class SyntheticDriving(tfds.core.GeneratorBasedBuilder):
    """Synthetic road scenes with exact depth and Cityscapes train-id labels."""

    VERSION = tfds.core.Version("1.1.0")
    # The one-factor target configs were added at 1.1.0: the `source` and `target` bytes did
    # not change (tests/test_synthetic_driving.py holds their hashes), so no version bump.
    RELEASE_NOTES = {
        "1.0.0": "Initial release (train split of 2000 frames).",
        "1.1.0": "Train split of 1000 frames (the demo's 150 steps of batch 4 read 600); "
                 "rendering in worker processes. Examples 0-999 equal 1.0.0's.",
    }
    BUILDER_CONFIGS = [
        SyntheticDrivingConfig(name=look, domain=look, description=description)
        for look, description in _LOOK_DESCRIPTIONS.items()
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=_DESCRIPTION,
            features=features.labelled_features(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # nothing to download: every example is rendered
        return {
            split: self._generate_examples(split, count)
            for split, count in self.builder_config.split_sizes.items()
        }

    def _generate_examples(self, split: str, count: int) -> Iterator[tuple[str, dict]]:
        config = self.builder_config
        for example in render_examples(
            config.domain, config.seed, split, count, config.height, config.width
        ):
            yield example["name"], example
