"""Your own data: a labelled source folder -> your camera's unlabelled footage.

Build both with `data_prep.build` (docs/datasets.md, "Your own camera"), then:

    python -m damono_jax.main --config=configs/custom.py --workdir=W \
        --config.data.data_dir=DATA
    python -m damono_jax.main --config=configs/custom.py:baseline ...   # or :seg, :full

Validation during training uses the source's `val` split (depth_folder/labelled); evaluate
on a labelled folder of your own camera afterwards with `damono_jax.evaluate`. Any source
builder works in place of the folder, e.g. `--config.data.source=vkitti/v1`.
"""

import ml_collections

from configs import default
from damono_jax import config_utils


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    """depth_folder/labelled (train, val) source, depth_folder/unlabelled (train) target."""
    config = default.get_config()
    config.variant = config_utils.parse_variant(variant)
    config.data.source = "depth_folder/labelled"
    config.data.source_split = "train"
    config.data.target = "depth_folder/unlabelled"
    config.data.target_split = "train"
    config.data.eval = "depth_folder/labelled"
    config.data.eval_split = "val"
    # (height, width), multiples of 32: choose the aspect ratio of your footage.
    config.data.image_size = (192, 640)
    config.data.max_depth = 80.0
    # About 20 epochs (the paper's schedule) of a 12,000-frame target at batch 12; set it
    # to 20 * frames / batch_size for your footage.
    config.batch_size = 12
    config.num_train_steps = 20_000
    return config
