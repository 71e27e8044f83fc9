"""Semantic label tables: Cityscapes train ids and the Virtual KITTI -> Cityscapes mapping.

Every dataset's labels are stored in the Cityscapes train-id space: 19 classes (0..18) plus
`IGNORE_ID` (255). Cityscapes tables come from `cityscapesscripts.helpers.labels`, the
dataset's own definition; the Virtual KITTI mapping is the table in
docs/datasets.md, "Virtual KITTI" (GuardRail -> fence, Van -> car, Tree and Vegetation ->
vegetation, Misc and Undefined -> ignore).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
from cityscapesscripts.helpers import labels as cityscapes_labels

from damono_jax import labels
from data_prep.common import DataError

IGNORE_ID = labels.IGNORE_LABEL
NUM_CLASSES = labels.NUM_CLASSES

# Cityscapes labelIds that occur in gtFine `*_labelIds.png` files (0..33; "license plate" has
# id -1 and never appears in a PNG).
MAX_CITYSCAPES_LABEL_ID = 33

# Names and RGB colours of the 19 Cityscapes train ids, indexed by train id.
CITYSCAPES_TRAIN_ID_NAMES: tuple[str, ...] = labels.train_id_names()
CITYSCAPES_TRAIN_ID_COLORS: tuple[tuple[int, int, int], ...] = labels.train_id_colors()

# Virtual KITTI class (the name before any ":<instance>" suffix) -> Cityscapes train id.
# Shared by Virtual KITTI 1.3.1 (scenegt encoding files) and 2.0.3 (colors.txt).
VKITTI_CLASS_TO_TRAIN_ID: Mapping[str, int] = {
    "Road": 0,
    "Building": 2,
    "GuardRail": 4,  # Cityscapes "guard rail" is ignored (255); fence is the nearest kept class.
    "Pole": 5,
    "TrafficLight": 6,
    "TrafficSign": 7,
    "Tree": 8,
    "Vegetation": 8,
    "Terrain": 9,
    "Sky": 10,
    "Car": 13,
    "Van": 13,  # Cityscapes "caravan" is ignored (255); car is the nearest kept class.
    "Truck": 14,
    "Misc": IGNORE_ID,
    "Undefined": IGNORE_ID,  # Virtual KITTI 2 only.
}


def cityscapes_label_id_to_train_id_lut() -> np.ndarray:
    """Returns the uint8 lookup table `lut[label_id] = train_id` for label ids 0..33."""
    lut = np.full(MAX_CITYSCAPES_LABEL_ID + 1, IGNORE_ID, dtype=np.uint8)
    for label in cityscapes_labels.labels:
        if 0 <= label.id <= MAX_CITYSCAPES_LABEL_ID:
            lut[label.id] = label.trainId if 0 <= label.trainId < NUM_CLASSES else IGNORE_ID
    return lut


_CITYSCAPES_LUT = cityscapes_label_id_to_train_id_lut()


def cityscapes_label_ids_to_train_ids(
    label_ids: np.ndarray, path: str | os.PathLike
) -> np.ndarray:
    """Maps a gtFine labelIds array to train ids; an id above 33 raises `DataError` for `path`."""
    label_ids = np.asarray(label_ids)
    out_of_range = label_ids > MAX_CITYSCAPES_LABEL_ID
    if out_of_range.any():
        row, col = (int(i) for i in np.argwhere(out_of_range)[0])
        raise DataError(
            path,
            f"labelId {int(label_ids[row, col])} at pixel (row {row}, col {col}) is out of "
            f"range; Cityscapes labelIds are 0..{MAX_CITYSCAPES_LABEL_ID}",
        )
    return _CITYSCAPES_LUT[label_ids]


def vkitti_class_name(entry: str) -> str:
    """Returns the class of an encoding-file entry: `"Car:3"` -> `"Car"`, `"Road"` -> `"Road"`."""
    return entry.split(":", 1)[0]


def pack_rgb(image: np.ndarray) -> np.ndarray:
    """Packs uint8 (..., 3) RGB into int32 codes `r << 16 | g << 8 | b`."""
    image = np.asarray(image, dtype=np.int32)
    return (image[..., 0] << 16) | (image[..., 1] << 8) | image[..., 2]


class ColorLut:
    """Maps RGB colours of a class-coloured image to Cityscapes train ids.

    Built from `{entry name: (r, g, b)}` as read from a Virtual KITTI encoding file or
    colors.txt. Uses a sorted table and `np.searchsorted` instead of a dense 2**24 table,
    which would cost 16 MiB per scene for at most a few hundred colours.
    """

    def __init__(
        self,
        colors: Mapping[str, tuple[int, int, int]],
        class_to_train_id: Mapping[str, int] = VKITTI_CLASS_TO_TRAIN_ID,
        source: str | os.PathLike = "<colour table>",
    ):
        train_id_by_code: dict[int, int] = {}
        entry_by_code: dict[int, str] = {}
        for entry, (red, green, blue) in colors.items():
            class_name = vkitti_class_name(entry)
            if class_name not in class_to_train_id:
                known = ", ".join(sorted(class_to_train_id))
                raise DataError(source, f"unknown class {class_name!r} (entry {entry!r}); "
                                        f"known classes: {known}")
            code = (red << 16) | (green << 8) | blue
            train_id = class_to_train_id[class_name]
            if code in train_id_by_code and train_id_by_code[code] != train_id:
                raise DataError(
                    source,
                    f"colour ({red}, {green}, {blue}) is used by both {entry_by_code[code]!r} "
                    f"and {entry!r}, which map to different train ids",
                )
            train_id_by_code[code] = train_id
            entry_by_code[code] = entry
        if not train_id_by_code:
            raise DataError(source, "colour table has no entries")
        codes = np.array(sorted(train_id_by_code), dtype=np.int32)
        self.source = os.fspath(source)
        self.codes = codes
        self.train_ids = np.array([train_id_by_code[c] for c in codes], dtype=np.uint8)

    def __call__(self, image: np.ndarray, path: str | os.PathLike) -> np.ndarray:
        """Maps uint8 (H, W, 3) `image` (read from `path`) to uint8 (H, W) train ids.

        A colour missing from the table raises `DataError` naming `path`, the colour and the
        first pixel that has it.
        """
        packed = pack_rgb(image)
        index = np.searchsorted(self.codes, packed)
        index = np.minimum(index, len(self.codes) - 1)
        unknown = self.codes[index] != packed
        if unknown.any():
            row, col = (int(i) for i in np.argwhere(unknown)[0])
            color = tuple(int(c) for c in image[row, col])
            raise DataError(
                path,
                f"colour {color} at pixel (row {row}, col {col}) is not in the colour "
                f"table {self.source}",
            )
        return self.train_ids[index]
