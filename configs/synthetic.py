"""Synthetic driving (source shading) -> synthetic driving (target shading): the CPU demo.

Sized so the full model trains in a few minutes on 2 CPU cores (150 steps of batch 4 at
64x224). Build the data first (`data_prep.build`,
configs synthetic_driving/source and synthetic_driving/target), then:

    python -m damono_jax.main --config=configs/synthetic.py --workdir=W \
        --config.data.data_dir=DATA
    python -m damono_jax.main --config=configs/synthetic.py:baseline ...   # or :seg, :full
"""

import ml_collections

from configs import default
from damono_jax import config_utils


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    """Tiny schedule on `synthetic_driving`: target val split for validation."""
    config = default.get_config()
    config.variant = config_utils.parse_variant(variant)
    config.data.source = "synthetic_driving/source"
    config.data.source_split = "train"
    config.data.target = "synthetic_driving/target"
    config.data.target_split = "train"
    config.data.eval = "synthetic_driving/target"
    config.data.eval_split = "val"
    # Resized from the builder's 96x320 (less than half the pixels per image); batch 4 (plus
    # 4 target images) keeps the demo's training within a few minutes on 2 cores.
    config.data.image_size = (64, 224)
    config.data.max_depth = 80.0
    config.data.shuffle_buffer = 256
    config.batch_size = 4
    config.num_train_steps = 150  # learning-rate decay x0.1 at step 113
    config.log_every_steps = 10
    config.image_log_every_steps = 75
    config.eval_every_steps = 150
    config.num_eval_examples = 64
    config.checkpoint_every_steps = 25
    config.keep_checkpoints = 2
    config.grl.collapse_patience = 50
    return config
