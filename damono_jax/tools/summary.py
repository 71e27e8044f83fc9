"""Parameter report: trainable parameters per part of DA-Monodepth, and the inference total.

    python -m damono_jax.tools.summary --config=configs/default.py [--config.variant=seg]

Shapes come from `jax.eval_shape` (nothing is compiled or allocated). Parameter counts do not
depend on the image size, so a 64x64 dummy input is used. The inference total is counted on
`DepthNet`'s own parameter tree. BatchNorm running statistics are not trainable and are not
counted (BatchNorm scales and offsets are).
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from damono_jax import config_utils
from damono_jax.models import DAMonodepth, DepthNet

PARTS = ("encoder", "shared_block", "depth_decoder", "semantic_decoder", "domain_classifier")
PAPER_TABLE5_PARAMETERS = 21_500_000  # DA-Monodepth, paper Table 5 ("21.5M")
_DUMMY_SIZE = 64


def _count(tree: Any) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def parameter_counts(config: Any) -> dict[str, int]:
    """Trainable parameter counts of the model `config` trains.

    Returns:
      {part: count} for the parts of `config.variant` (in `PARTS` order), then "total"
      (their sum) and "inference" (the total of `DepthNet`'s own parameter tree).
    """
    model = DAMonodepth.from_config(config.model, config.variant, config.dtype)
    images = jax.ShapeDtypeStruct((1, _DUMMY_SIZE, _DUMMY_SIZE, 3), jnp.float32)
    target = images if model.use_domain_classifier else None
    variables = jax.eval_shape(
        lambda s, t: model.init(jax.random.key(0), s, t, grl_scale=jnp.float32(0)),
        images,
        target,
    )
    counts = {part: _count(variables["params"][part]) for part in PARTS
              if part in variables["params"]}
    counts["total"] = sum(counts.values())
    depth_net = DepthNet.from_config(config.model, config.dtype)
    inference = jax.eval_shape(lambda x: depth_net.init(jax.random.key(0), x), images)
    counts["inference"] = _count(inference["params"])
    return counts


def format_table(counts: dict[str, int], variant: str) -> str:
    """Renders `parameter_counts` as a text table with the paper's Table 5 figure."""
    labels = {
        "total": f"total (training, variant {variant!r})",
        "inference": "DepthNet (inference: encoder + shared + depth)",
    }
    rows = [(labels.get(name, name), count) for name, count in counts.items()]
    rows.append(("paper Table 5 (DA-Monodepth)", PAPER_TABLE5_PARAMETERS))
    width = max(len(label) for label, _ in rows)
    lines = [f"{'part'.ljust(width)}  {'parameters':>12}  {'millions':>8}"]
    for label, count in rows:
        lines.append(f"{label.ljust(width)}  {count:>12,}  {count / 1e6:>7.2f}M")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = flags.FLAGS.config
    if config is None:
        raise app.UsageError("--config is required, e.g. --config=configs/default.py")
    config_utils.check(config, mode="export")  # the entry point validates, once
    print(format_table(parameter_counts(config), config.variant))


def define_flags() -> None:
    """Defines this CLI's absl flags (only when run as a program: the tools share names)."""
    config_flags.DEFINE_config_file(
        "config", None, "Training configuration file (configs/*.py).", lock_config=True
    )


if __name__ == "__main__":
    from damono_jax import cli

    define_flags()
    cli.run(main)
