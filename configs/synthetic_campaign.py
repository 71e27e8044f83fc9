"""Adaptation campaign, round 2 (docs/adaptation_campaign.md): the trained-encoder protocol.

The ablation's 64x224, batch-4 schedule, with every setting of the campaign fixed here before
any run. Stage 1 trains the source-only baseline for 750 steps per seed; every row of the
table then starts from its seed's stage-1 checkpoint (`config.init_from`, set by
`damono_jax.tools.ablation --pretrain_steps`) and trains `num_train_steps` more steps in its
own variant with a fresh optimiser (lr 1e-4, x0.1 at 75% of the stage):

    python -m damono_jax.tools.ablation --config=configs/synthetic_campaign.py \
        --pretrain_steps=750 --workdir=campaign --output=docs/adaptation_campaign.md

(`make campaign` runs it with the registered rows.) 750 + 250 = 1,000 steps in all, sized
from the measured step times (about 0.5 s a baseline step, 1-1.5 s an adaptation step at
batch 4 + 4 on 2 cores) so that 8 rows x 3 seeds fit in about 3 hours of CPU.
"""

import ml_collections

from configs import synthetic_ablation


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    """The ablation's schedule at 250 steps (stage 2), validation every 50 steps."""
    config = synthetic_ablation.get_config(variant)
    config.num_train_steps = 250
    config.eval_every_steps = 50
    config.checkpoint_every_steps = 50
    config.image_log_every_steps = 1000
    return config
