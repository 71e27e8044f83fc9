"""Virtual KITTI 1 -> KITTI (paper Table 1; Table 3 with the variants).

    python -m damono_jax.main --config=configs/vkitti.py --workdir=W \
        --config.data.data_dir=DATA
    python -m damono_jax.main --config=configs/vkitti.py:baseline ...   # Table 3, row 1
    python -m damono_jax.main --config=configs/vkitti.py:seg ...        # Table 3, row 2
    python -m damono_jax.main --config=configs/vkitti.py:full ...       # Table 3, row 3 (default)
"""

import ml_collections

from configs import default
from damono_jax import config_utils


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    """VKITTI (v1, 80 m cap) source, KITTI Eigen train target, Eigen val during training."""
    config = default.get_config()
    config.variant = config_utils.parse_variant(variant)
    config.data.source = "vkitti/v1"
    config.data.source_split = "train"
    config.data.target = "kitti_eigen"
    config.data.target_split = "train"
    config.data.eval = "kitti_eigen"
    config.data.eval_split = "val"
    config.data.image_size = (192, 640)
    config.data.max_depth = 80.0  # paper §4.2: VKITTI depth capped to 80 m
    # 20 epochs of the 22,600 KITTI Eigen training frames at batch 12 (paper Table 5).
    config.batch_size = 12
    config.num_train_steps = 37_700
    return config
