r"""Evaluate an exported model on a TFDS split with the paper's protocol.

```
python -m damono_jax.evaluate --export=WORKDIR/export --data_dir=TFDS_DIR \
    [--split=test|eigen_benchmark] [--dataset=kitti_eigen|synthetic_driving/target] \
    [--output=DIR] [--caps=80,50] [--crop=garg|none] [--scaling=median|none|FACTOR] \
    [--max_examples=N] [--batch_size=8]
```

Default protocol: on `test` (the 697 Eigen frames, LiDAR GT as Monodepth2's
export_gt_depth.py) both caps of the paper's Table 1 (80 m: `1e-3 < gt < 80`; 50 m:
`1 < gt < 50`) with the Garg crop and per-image median scaling. On `eigen_benchmark`
(652 frames, annotated GT) Monodepth2's protocol: `gt > 0`, no crop, no cap (predictions
clamped to [1e-3, 80] m). Pass `--caps`/`--crop` to override; the fingerprint line printed
under each row says exactly what was used. Writes `results.json` and `results.csv`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from damono_jax import cli
from damono_jax.inference import export_evaluation


def parse_caps(text: str) -> tuple[int | None, ...]:
    """`"80,50"` -> (80, 50); `"none"` -> (None,). Errors name the flag."""
    caps: list[int | None] = []
    for part in text.split(","):
        part = part.strip().lower()
        if part == "none":
            caps.append(None)
        elif part in ("50", "80"):
            caps.append(int(part))
        else:
            raise ValueError(f"--caps={text}: each cap must be 50, 80 or none, got {part!r}")
    return tuple(caps)


def parse_scaling(text: str) -> str | float:
    """`"median"`, `"none"` or a positive number."""
    if text in ("median", "none"):
        return text
    try:
        value = float(text)
    except ValueError as error:
        raise ValueError(
            f"--scaling={text}: expected median, none or a positive number"
        ) from error
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"--scaling={text}: a fixed factor must be finite and > 0")
    return value


def main(argv: Sequence[str]) -> None:
    """absl entry point: reads the flags and calls `evaluate_export`."""
    del argv
    from absl import flags

    values = flags.FLAGS
    result = export_evaluation.evaluate_export(
        values.export,
        values.data_dir,
        split=values.split,
        dataset=values.dataset,
        max_examples=values.max_examples,
        caps=parse_caps(values.caps) if values.caps else None,
        crop=values.crop,
        scaling=parse_scaling(values.scaling),
        output_dir=values.output,
        batch_size=values.batch_size,
    )
    print(f"wrote {result['output_dir']}/results.json and results.csv")


def define_flags() -> None:
    """Defines this CLI's absl flags (idempotent)."""
    from absl import flags

    if "export" in flags.FLAGS:
        return
    flags.DEFINE_string("export", None, "Export directory (damono_jax.export).", required=True)
    flags.DEFINE_string("data_dir", None, "TFDS data_dir with the dataset.", required=True)
    flags.DEFINE_string("split", "test", "Split: test, eigen_benchmark, val, ...")
    flags.DEFINE_string("dataset", "kitti_eigen", "TFDS dataset name (name or name/config).")
    flags.DEFINE_string("output", None, "Output folder (default EXPORT/eval_<dataset>_<split>).")
    flags.DEFINE_string("caps", None, "Comma list of 80, 50, none (default: split's protocol).")
    flags.DEFINE_enum("crop", None, ["garg", "none"], "Crop (default: split's protocol).")
    flags.DEFINE_string("scaling", "median", "median, none or a fixed factor.")
    flags.DEFINE_integer("max_examples", None, "Evaluate only the first N examples.")
    flags.DEFINE_integer("batch_size", 8, "Images per network call.")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
