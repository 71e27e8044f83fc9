"""Cityscapes -> KITTI (paper Table 2; Table 4 with the variants).

    python -m damono_jax.main --config=configs/cityscapes.py --workdir=W \
        --config.data.data_dir=DATA
    python -m damono_jax.main --config=configs/cityscapes.py:baseline ...   # Table 4, row 1
    python -m damono_jax.main --config=configs/cityscapes.py:seg ...        # Table 4, row 2
    python -m damono_jax.main --config=configs/cityscapes.py:full ...       # Table 4, row 3
"""

import ml_collections

from configs import default
from damono_jax import config_utils


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    """Cityscapes (cropped, 640x192) source; the rest is `default.py`'s VKITTI setting (KITTI
    Eigen train target, Eigen val in training, the same schedule, paper Table 5)."""
    config = default.get_config()
    config.variant = config_utils.parse_variant(variant)
    config.data.source = "cityscapes_depth"
    return config
