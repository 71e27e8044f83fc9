"""Cityscapes metric-depth TFDS builder (`cityscapes_depth`)."""

from data_prep.cityscapes_depth.cityscapes_depth_dataset_builder import Builder

__all__ = ["Builder"]
