"""The TFDS feature dictionaries every builder writes (the contract in docs/design.md)."""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds


def camera_features(image_encoding: str | None = None) -> dict[str, tfds.features.FeatureConnector]:
    """Image (uint8 HxWx3), metric depth (float32 HxW, 0 = invalid), intrinsics, name."""
    return {
        "image": tfds.features.Image(
            shape=(None, None, 3), dtype=np.uint8, encoding_format=image_encoding
        ),
        "depth": tfds.features.Tensor(
            shape=(None, None), dtype=np.float32, encoding=tfds.features.Encoding.ZLIB
        ),
        "intrinsics": tfds.features.Tensor(shape=(4,), dtype=np.float32),  # fx, fy, cx, cy
        "name": tfds.features.Text(),
    }


def image_features() -> tfds.features.FeaturesDict:
    """`camera_features` without depth: an unlabelled target (image, intrinsics, name)."""
    return tfds.features.FeaturesDict({
        key: value for key, value in camera_features().items() if key != "depth"
    })


def labelled_features() -> tfds.features.FeaturesDict:
    """`camera_features` plus Cityscapes train-id labels (uint8 HxWx1, 255 = ignore)."""
    return tfds.features.FeaturesDict({
        **camera_features(),
        "label": tfds.features.Image(
            shape=(None, None, 1), dtype=np.uint8, encoding_format="png"
        ),
    })
