"""TFDS builder `cityscapes_depth`: Cityscapes frames with metric depth and train-id labels."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from data_prep import features
from data_prep.cityscapes_depth import layout
from data_prep.common import (
    check_same_size,
    manual_dir_of,
    read_rgb,
    read_uint8_gray,
    read_uint16,
    require_valid_depth,
)
from data_prep.label_tables import cityscapes_label_ids_to_train_ids

_DESCRIPTION = """\
Cityscapes (gtFine train 2975 / val 500) with metric depth from the shipped disparity maps
(depth = baseline * fx / d, d = (p - 1) / 256, p <= 1 invalid = 0), computed at full
resolution, and gtFine labelIds mapped to the 19 Cityscapes train ids (255 = ignore). Every
map keeps full width and rows [205, 819) of the 2048x1024 frame; the intrinsics
(fx, fy, u0, v0 - 205) describe that crop.
"""

_CITATION = """\
@inproceedings{cordts2016cityscapes,
  title={The Cityscapes Dataset for Semantic Urban Scene Understanding},
  author={Cordts, Marius and Omran, Mohamed and Ramos, Sebastian and Rehfeld, Timo and
          Enzweiler, Markus and Benenson, Rodrigo and Franke, Uwe and Roth, Stefan and
          Schiele, Bernt},
  booktitle={CVPR}, year={2016}}
"""

_MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download from https://www.cityscapes-dataset.com/downloads/ (login required) and extract into
manual_dir: leftImg8bit_trainvaltest.zip, disparity_trainvaltest.zip,
camera_trainvaltest.zip, gtFine_trainvaltest.zip, giving
  leftImg8bit/{train,val}/<city>/<id>_leftImg8bit.png
  disparity/{train,val}/<city>/<id>_disparity.png
  camera/{train,val}/<city>/<id>_camera.json
  gtFine/{train,val}/<city>/<id>_gtFine_labelIds.png
"""


class Builder(tfds.core.GeneratorBasedBuilder):
    """Cityscapes with metric depth from disparity and Cityscapes train-id labels."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_DOWNLOAD_INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=_DESCRIPTION,
            features=features.labelled_features(),
            homepage="https://www.cityscapes-dataset.com/",
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = Path(manual_dir_of(dl_manager, layout.EXPECTED))
        # List every split before writing anything, so a missing folder fails fast.
        frames = {split: layout.list_frames(root, split) for split in layout.SPLITS}
        return {split: self._generate_examples(frames[split]) for split in layout.SPLITS}

    def _generate_examples(self, frames: list[layout.Frame]) -> Iterator[tuple[str, dict]]:
        for frame in frames:
            yield frame.name, self._example(frame)

    def _example(self, frame: layout.Frame) -> dict:
        image = read_rgb(frame.image_path)
        disparity = read_uint16(frame.disparity_path)
        check_same_size(frame.disparity_path, disparity, frame.image_path, image.shape)
        label_ids = read_uint8_gray(frame.label_path)
        check_same_size(frame.label_path, label_ids, frame.image_path, image.shape)
        train_ids = cityscapes_label_ids_to_train_ids(label_ids, frame.label_path)
        camera = layout.read_camera(frame.camera_path)
        # Depth at full resolution first, then the same row crop for every map.
        depth = layout.disparity_to_depth(disparity, camera.baseline, camera.fx)
        top, bottom = layout.crop_rows(image.shape[0])
        require_valid_depth(frame.disparity_path, depth[top:bottom], frame.name)
        return {
            "image": image[top:bottom],
            "depth": depth[top:bottom],
            "label": train_ids[top:bottom, :, None],
            "intrinsics": np.array([camera.fx, camera.fy, camera.u0, camera.v0 - top],
                                   dtype=np.float32),
            "name": frame.name,
        }
