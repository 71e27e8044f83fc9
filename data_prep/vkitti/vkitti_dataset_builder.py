"""TFDS builder `vkitti`: Virtual KITTI 1.3.1 (config `v1`) and 2.0.3 (config `v2`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from data_prep import features
from data_prep.common import (
    DataError,
    check_same_size,
    manual_dir_of,
    read_rgb,
    read_uint16,
    require_valid_depth,
    stored_image,
)
from data_prep.label_tables import ColorLut
from data_prep.vkitti import layout

_DESCRIPTION = """\
Virtual KITTI (1.3.1 and 2.0.3): synthetic clones of five KITTI sequences under ten
variations, at 1242x375. Each example holds the RGB frame, metric depth (float32 metres,
0 = invalid: the 655.35 m far plane), semantic labels mapped to Cityscapes train ids (255 =
ignore) and the camera intrinsics (fx, fy, cx, cy). v2 uses the left camera (Camera_0).
Splits: `val` = 500 frames chosen by a fixed hash of their names (half the frames below
1000), `train` = the rest.
"""

_CITATION = """\
@inproceedings{gaidon2016virtual,
  title={Virtual Worlds as Proxy for Multi-Object Tracking Analysis},
  author={Gaidon, Adrien and Wang, Qiao and Cabon, Yohann and Vig, Eleonora},
  booktitle={CVPR}, year={2016}}
@article{cabon2020vkitti2,
  title={Virtual KITTI 2}, author={Cabon, Yohann and Murray, Naila and Humenberger, Martin},
  journal={arXiv:2001.10773}, year={2020}}
"""


def _expected_listing(expected: dict[str, str]) -> str:
    return "\n".join(f"  {name}/{what.split(' (')[0]}" for name, what in expected.items())


_MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download from https://europe.naverlabs.com/research/computer-vision/proxy-virtual-worlds/ and
extract into manual_dir.
config v1: vkitti_1.3.1_rgb.tar, vkitti_1.3.1_depthgt.tar, vkitti_1.3.1_scenegt.tar, giving
{_expected_listing(layout.V1_EXPECTED)}
config v2: vkitti_2.0.3_rgb.tar, vkitti_2.0.3_depth.tar,
vkitti_2.0.3_classSegmentation.tar, vkitti_2.0.3_textgt.tar.gz, giving
{_expected_listing(layout.V2_EXPECTED)}
"""


class Builder(tfds.core.GeneratorBasedBuilder):
    """Virtual KITTI 1.3.1 / 2.0.3 with depth in metres and Cityscapes train-id labels."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="v1", description="Virtual KITTI 1.3.1"),
        tfds.core.BuilderConfig(name="v2", description="Virtual KITTI 2.0.3, Camera_0"),
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "v1"
    MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_DOWNLOAD_INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=_DESCRIPTION,
            features=features.labelled_features(),
            homepage="https://europe.naverlabs.com/research/computer-vision/"
                     "proxy-virtual-worlds/",
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        if self.builder_config.name == "v1":
            root = Path(manual_dir_of(dl_manager, layout.V1_EXPECTED))
            frames = layout.list_frames_v1(root)
        else:
            root = Path(manual_dir_of(dl_manager, layout.V2_EXPECTED))
            frames = layout.list_frames_v2(root)
        train, val = layout.split_train_val(frames)
        return {"train": self._generate_examples(train), "val": self._generate_examples(val)}

    def _generate_examples(self, frames: list[layout.Frame]) -> Iterator[tuple[str, dict]]:
        color_luts: dict[Path, ColorLut] = {}
        intrinsics_tables: dict[Path, dict[int, np.ndarray]] = {}
        for frame in frames:
            if frame.color_table_path not in color_luts:
                colors = layout.read_color_table(frame.color_table_path)
                color_luts[frame.color_table_path] = ColorLut(
                    colors, source=frame.color_table_path
                )
            yield frame.name, self._example(frame, color_luts[frame.color_table_path],
                                            intrinsics_tables)

    def _example(self, frame: layout.Frame, color_lut: ColorLut,
                 intrinsics_tables: dict[Path, dict[int, np.ndarray]]) -> dict:
        image = read_rgb(frame.rgb_path)
        depth = layout.depth_to_metres(read_uint16(frame.depth_path))
        check_same_size(frame.depth_path, depth, frame.rgb_path, image.shape)
        require_valid_depth(frame.depth_path, depth, frame.name)
        class_colors = read_rgb(frame.class_path)
        check_same_size(frame.class_path, class_colors, frame.rgb_path, image.shape)
        label = color_lut(class_colors, frame.class_path)
        if frame.intrinsics_path is None:
            intrinsics = layout.v1_intrinsics(image.shape[1], image.shape[0])
        else:
            if frame.intrinsics_path not in intrinsics_tables:
                intrinsics_tables[frame.intrinsics_path] = layout.read_intrinsics_v2(
                    frame.intrinsics_path
                )
            table = intrinsics_tables[frame.intrinsics_path]
            if frame.frame_index not in table:
                raise DataError(
                    frame.intrinsics_path,
                    f"no row for frame {frame.frame_index} camera {layout.V2_CAMERA_ID} "
                    f"(needed by {frame.rgb_path})",
                )
            intrinsics = table[frame.frame_index]
        return {
            "image": stored_image(frame.rgb_path, image),
            "depth": depth,
            "label": label[..., None],
            "intrinsics": intrinsics,
            "name": frame.name,
        }
