"""TFDS builders for the datasets damono_jax trains and evaluates on.

Importing this package registers every builder, so that
`tfds.builder(NAME, data_dir=...)` finds them.
"""

from data_prep import (
    cityscapes_depth,  # noqa: F401  (registers cityscapes_depth)
    depth_folder,  # noqa: F401  (registers depth_folder)
    kitti_eigen,  # noqa: F401  (registers kitti_eigen)
    synthetic_driving,  # noqa: F401  (registers synthetic_driving)
    vkitti,  # noqa: F401  (registers vkitti)
)
