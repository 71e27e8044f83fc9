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
    """Cityscapes (cropped, 640x192) source, KITTI Eigen train target, Eigen val in training."""
    config = default.get_config()
    config.variant = config_utils.parse_variant(variant)
    config.data.source = "cityscapes_depth"
    config.data.source_split = "train"
    config.data.target = "kitti_eigen"
    config.data.target_split = "train"
    config.data.eval = "kitti_eigen"
    config.data.eval_split = "val"
    config.data.image_size = (192, 640)
    config.data.max_depth = 80.0
    config.batch_size = 12
    config.num_train_steps = 37_700  # same schedule as the VKITTI runs (paper Table 5)
    return config
