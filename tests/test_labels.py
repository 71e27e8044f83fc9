"""Label tables: Cityscapes labelId -> trainId, names, and the Virtual KITTI mapping."""

import numpy as np
import pytest

from data_prep.common import DataError
from data_prep.label_tables import (
    CITYSCAPES_TRAIN_ID_COLORS,
    CITYSCAPES_TRAIN_ID_NAMES,
    IGNORE_ID,
    NUM_CLASSES,
    VKITTI_CLASS_TO_TRAIN_ID,
    ColorLut,
    cityscapes_label_id_to_train_id_lut,
    cityscapes_label_ids_to_train_ids,
    pack_rgb,
    vkitti_class_name,
)

# Cityscapes labelId 0..33 -> train id, written out by hand from the dataset's label table.
EXPLICIT_CITYSCAPES_LUT = [255, 255, 255, 255, 255, 255, 255, 0, 1, 255, 255, 2, 3, 4, 255, 255,
                           255, 5, 255, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 255, 255, 16, 17, 18]

# Virtual KITTI class -> Cityscapes train id (docs/datasets.md, "Virtual KITTI").
EXPLICIT_VKITTI_TABLE = {
    "Road": 0, "Building": 2, "GuardRail": 4, "Pole": 5, "TrafficLight": 6, "TrafficSign": 7,
    "Tree": 8, "Vegetation": 8, "Terrain": 9, "Sky": 10, "Car": 13, "Van": 13, "Truck": 14,
    "Misc": 255, "Undefined": 255,
}


def test_cityscapes_lut_equals_the_explicit_table():
    lut = cityscapes_label_id_to_train_id_lut()
    assert lut.dtype == np.uint8
    assert lut.tolist() == EXPLICIT_CITYSCAPES_LUT


def test_cityscapes_train_id_names_and_colors():
    assert NUM_CLASSES == 19 and IGNORE_ID == 255
    assert CITYSCAPES_TRAIN_ID_NAMES == (
        "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
        "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
        "bus", "train", "motorcycle", "bicycle",
    )
    assert len(CITYSCAPES_TRAIN_ID_COLORS) == 19
    assert CITYSCAPES_TRAIN_ID_COLORS[0] == (128, 64, 128)  # road
    assert CITYSCAPES_TRAIN_ID_COLORS[13] == (0, 0, 142)  # car


def test_cityscapes_label_ids_map_through_the_lut():
    label_ids = np.arange(34, dtype=np.uint8).reshape(2, 17)
    train_ids = cityscapes_label_ids_to_train_ids(label_ids, "x.png")
    assert train_ids.dtype == np.uint8
    assert train_ids.ravel().tolist() == EXPLICIT_CITYSCAPES_LUT


def test_cityscapes_label_id_out_of_range_names_file_value_and_pixel():
    label_ids = np.full((3, 4), 7, dtype=np.uint8)
    label_ids[2, 1] = 34
    with pytest.raises(DataError, match=r"a_gtFine_labelIds\.png: labelId 34 at pixel "
                                        r"\(row 2, col 1\) is out of range"):
        cityscapes_label_ids_to_train_ids(label_ids, "a_gtFine_labelIds.png")


def test_vkitti_table_equals_the_explicit_table():
    assert dict(VKITTI_CLASS_TO_TRAIN_ID) == EXPLICIT_VKITTI_TABLE
    # Every target is a Cityscapes train id whose name matches the intended class.
    names = {cls: (CITYSCAPES_TRAIN_ID_NAMES[t] if t != 255 else "ignore")
             for cls, t in VKITTI_CLASS_TO_TRAIN_ID.items()}
    assert names["GuardRail"] == "fence" and names["Van"] == "car"
    assert names["Tree"] == names["Vegetation"] == "vegetation"


def test_vkitti_class_name_strips_the_instance_id():
    assert vkitti_class_name("Car:12") == "Car"
    assert vkitti_class_name("Van:0") == "Van"
    assert vkitti_class_name("Road") == "Road"


def test_color_lut_decodes_instances_and_fixed_colors():
    lut = ColorLut({"Road": (100, 60, 100), "Car:0": (200, 200, 200), "Car:7": (10, 20, 30),
                    "Van:1": (1, 1, 1), "GuardRail": (255, 100, 255), "Misc": (80, 80, 80)})
    image = np.array([[[100, 60, 100], [200, 200, 200], [10, 20, 30]],
                      [[1, 1, 1], [255, 100, 255], [80, 80, 80]]], dtype=np.uint8)
    assert lut(image, "s.png").tolist() == [[0, 13, 13], [13, 4, 255]]
    assert pack_rgb(np.array([1, 2, 3], dtype=np.uint8)) == (1 << 16) + (2 << 8) + 3


def test_color_lut_unknown_color_names_file_color_and_pixel():
    lut = ColorLut({"Road": (100, 60, 100), "Sky": (90, 200, 255)}, source="enc.txt")
    image = np.zeros((2, 3, 3), dtype=np.uint8)
    image[:] = (100, 60, 100)
    image[1, 2] = (255, 255, 255)  # above every code: exercises the searchsorted upper edge
    with pytest.raises(DataError, match=r"s\.png: colour \(255, 255, 255\) at pixel "
                                        r"\(row 1, col 2\) is not in the colour table enc\.txt"):
        lut(image, "s.png")


def test_color_lut_rejects_unknown_class_and_conflicting_colors():
    with pytest.raises(DataError, match=r"enc\.txt: unknown class 'Bus' \(entry 'Bus:1'\)"):
        ColorLut({"Bus:1": (1, 2, 3)}, source="enc.txt")
    with pytest.raises(DataError, match=r"colour \(1, 2, 3\) is used by both 'Road' and 'Sky'"):
        ColorLut({"Road": (1, 2, 3), "Sky": (1, 2, 3)}, source="enc.txt")
