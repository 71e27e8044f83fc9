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
    """VKITTI (v1, 80 m cap) source, KITTI Eigen train target, Eigen val during training:
    `default.py` is this setting (192x640, batch 12, 37,700 steps = 20 epochs of the 22,600
    KITTI Eigen training frames, paper Table 5); only the variant is chosen here."""
    config = default.get_config()
    config.variant = config_utils.parse_variant(variant)
    return config
