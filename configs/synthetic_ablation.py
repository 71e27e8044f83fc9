"""Synthetic ablation (`make ablation`): the schedule behind docs/ablation_synthetic.md.

The demo's config (`synthetic.py`) at 64x224 with batch 8 for 150 steps: about 6 minutes a
run on 2 CPU cores, so the 3 variants x 3 seeds of `damono_jax.tools.ablation` take about an
hour. The variant and seed are set per run by the tool; everything else is shared:

    python -m damono_jax.tools.ablation --config=configs/synthetic_ablation.py \
        --workdir=ablation_output --output=docs/ablation_synthetic.md
"""

import ml_collections

from configs import synthetic


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    """The ablation schedule (the variant argument only names the default variant)."""
    config = synthetic.get_config(variant)
    config.data.image_size = (64, 224)  # resized from the builder's 96x320
    config.batch_size = 8
    config.num_train_steps = 150  # learning-rate decay x0.1 at step 113
    config.log_every_steps = 10
    config.image_log_every_steps = 150
    config.eval_every_steps = 150
    config.num_eval_examples = 64
    config.checkpoint_every_steps = 50
    config.keep_checkpoints = 1
    config.grl.collapse_patience = 50
    return config
