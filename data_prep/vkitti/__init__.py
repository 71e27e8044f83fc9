"""Virtual KITTI 1.3.1 / 2.0.3 TFDS builder (`vkitti`, configs `v1` and `v2`)."""

from data_prep.vkitti.vkitti_dataset_builder import Builder

__all__ = ["Builder"]
