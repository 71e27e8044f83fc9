"""Folder datasets of your own camera (`depth_folder`, configs `labelled` and `unlabelled`)."""

from data_prep.depth_folder.depth_folder_dataset_builder import Builder

__all__ = ["Builder"]
