"""Synthetic ablation (`make ablation`): the schedule behind docs/ablation_synthetic.md.

The demo's schedule (`synthetic.py`: 64x224, batch 4, 150 steps) with fewer image summaries
and checkpoints, and validation on the whole target val split every 25 steps (the learning
curves of the doc); none of these changes the trained weights, so the ablation's `full`
seed-0 run is the model `make demo` trains. The variant and seed are set per run by
`damono_jax.tools.ablation`:

    python -m damono_jax.tools.ablation --config=configs/synthetic_ablation.py \
        --workdir=ablation_output --output=docs/ablation_synthetic.md
"""

import ml_collections

from configs import synthetic


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    """The demo's schedule with image summaries only at the end."""
    config = synthetic.get_config(variant)
    config.image_log_every_steps = 150
    config.eval_every_steps = 25
    config.num_eval_examples = -1
    config.checkpoint_every_steps = 50
    config.keep_checkpoints = 1
    return config
