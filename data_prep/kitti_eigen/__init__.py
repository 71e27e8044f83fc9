"""TFDS builder `kitti_eigen` (importing this package registers it)."""

from data_prep.kitti_eigen.kitti_eigen_dataset_builder import Builder, KittiEigenConfig

__all__ = ["Builder", "KittiEigenConfig"]
