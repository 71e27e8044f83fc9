"""TFDS builder `depth_folder`: images of your own camera, with depth (`labelled`) or without."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from damono_jax import video
from data_prep import features
from data_prep.common import (
    DataError,
    check_same_size,
    manual_dir_of,
    read_rgb,
    read_uint8_gray,
    read_uint16,
    require_valid_depth,
    stored_image,
)
from data_prep.depth_folder import layout
from data_prep.label_tables import IGNORE_ID, NUM_CLASSES

_DESCRIPTION = """\
Images of your own camera from plain folders. `labelled`: each image with metric depth
(float32 metres, 0 = invalid) and, when the split has a label/ folder, Cityscapes train-id
labels (else every pixel 255 = ignore); a source or an evaluation set. `unlabelled`: images
only, from image files or video frames; a target domain. Both store the camera intrinsics
(fx, fy, cx, cy, pixels).
"""

_EXPECTED = {split: "image/ (and depth/, label/ for labelled; or video/ for unlabelled), "
                    "intrinsics.json" for split in layout.SPLITS}

_MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put your frames into manual_dir as
  {train,val,test}/image/<path>.png|.jpg     any of the three splits, at least one
  {train,val,test}/depth/<path>.png|.npy     labelled: uint16 PNG metres x 256, or float32
                                             .npy metres; 0 = invalid
  {train,val,test}/label/<path>.png          labelled, optional: uint8 train ids, 255 = ignore
  {train,val,test}/video/<path>.mp4          unlabelled: videos (.mp4 .mov .mkv .avi),
                                             beside or instead of image/
  {train,val,test}/video.json                optional {"every": N, "max_frames": M}: keep
                                             every Nth frame (default: all)
  {train,val,test}/intrinsics.json           {"fx": ..., "fy": ..., "cx": ..., "cy": ...}
                                             (pixels), or per image or video under
                                             "images"; a manual_dir/intrinsics.json (and
                                             video.json) serves every split
"""


def _read_label(path: Path, image: np.ndarray, image_path: Path) -> np.ndarray:
    """uint8 train ids (H, W) of an 8-bit grayscale or palette PNG, checked against `image`."""
    label = read_uint8_gray(path, palette=True)
    check_same_size(path, label, image_path, image.shape)
    values = np.unique(label)
    bad = values[(values >= NUM_CLASSES) & (values != IGNORE_ID)]
    if bad.size:
        raise DataError(
            path, f"values {bad[:5].tolist()} are not Cityscapes train ids (0..{NUM_CLASSES - 1}"
            f", {IGNORE_ID} = ignore)"
        )
    return label


class Builder(tfds.core.GeneratorBasedBuilder):
    """Your own camera's frames from `{train,val,test}/image/` folders (see `layout`)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(
            name="labelled", description="Images with metric depth and optional train ids."
        ),
        tfds.core.BuilderConfig(name="unlabelled", description="Images only (a target)."),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_DOWNLOAD_INSTRUCTIONS

    @property
    def _labelled(self) -> bool:
        return self.builder_config.name == "labelled"

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=_DESCRIPTION,
            features=(features.labelled_features() if self._labelled
                      else features.image_features()),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = Path(manual_dir_of(dl_manager, _EXPECTED))
        # List and check every split before writing anything.
        frames, videos = {}, {}
        for split in layout.available_splits(root):
            frames[split] = layout.list_frames(root, split, labelled=self._labelled)
            videos[split] = [] if self._labelled else layout.list_videos(root, split)
            layout.check_frame_names(frames[split], videos[split])
            if self._labelled and frames[split][0].label_path is None:
                logging.info("depth_folder: %s/ has no label/ folder; its labels are all %d "
                             "(ignored by the semantic loss)", root / split, IGNORE_ID)
        return {split: self._generate_examples(frames[split], videos[split])
                for split in frames}

    def _generate_examples(self, frames: list[layout.Frame], videos: list[layout.Video]
                           ) -> Iterator[tuple[str, dict]]:
        for frame in frames:
            yield frame.name, self._example(frame)
        for clip in videos:
            for index, image in video.read_frames(clip.path, every=clip.every,
                                                  max_frames=clip.max_frames):
                name = clip.frame_name(index)
                yield name, {"image": image, "intrinsics": clip.intrinsics, "name": name}

    def _example(self, frame: layout.Frame) -> dict:
        image = read_rgb(frame.image_path)
        example = {
            "image": stored_image(frame.image_path, image),
            "intrinsics": frame.intrinsics,
            "name": frame.name,
        }
        if not self._labelled:
            return example
        if frame.depth_path.suffix.lower() == ".npy":
            depth = layout.read_depth_npy(frame.depth_path)
        else:
            depth = layout.depth_from_png(read_uint16(frame.depth_path))
        check_same_size(frame.depth_path, depth, frame.image_path, image.shape)
        require_valid_depth(frame.depth_path, depth, frame.name)
        if frame.label_path is None:
            label = np.full(image.shape[:2], IGNORE_ID, np.uint8)
        else:
            label = _read_label(frame.label_path, image, frame.image_path)
        return {**example, "depth": depth, "label": label[..., None]}
