"""Synthetic driving world TFDS builder (`synthetic_driving`, configs `source` and `target`).

`world` holds the geometry (scene sampling, ray casting), `appearance` the two domains'
shaders, `render` one example as a pure function of (domain, seed, split, index, size).
"""

from data_prep.synthetic_driving.synthetic_driving_dataset_builder import (
    SyntheticDriving,
    SyntheticDrivingConfig,
)

__all__ = ["SyntheticDriving", "SyntheticDrivingConfig"]
