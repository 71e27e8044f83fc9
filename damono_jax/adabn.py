r"""AdaBN: the encoder's BatchNorm statistics re-estimated on target-domain images.

```
python -m damono_jax.adabn --export=W/export --data_dir=DATA \
    --dataset=synthetic_driving/target --split=train --output=W/export_adabn \
    [--batch_size=16] [--max_images=N]
```

Li et al., "Revisiting Batch Normalization for Practical Domain Adaptation" (2016): the
weights are kept and every BatchNorm layer's running mean and variance are replaced by the
statistics of its input over unlabelled images of the target domain. The encoder runs in
training mode, so each layer sees inputs normalised with the current batch's statistics (as
PyTorch's `reset_running_stats()` with `momentum=None` does); the per-batch statistics are
pooled exactly over all images: `mean = E_b[mean_b]`, `var = E_b[var_b + mean_b**2] - mean**2`,
batches weighted by their size. The result is a new export (`metadata["adabn"]` records the
images used) that `evaluate` and `predict` read like any other.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from damono_jax import cli
from damono_jax.inference import adabn

FLAGS = flags.FLAGS


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.batch_size < 1:
        raise app.UsageError(f"--batch_size={FLAGS.batch_size}: must be >= 1")
    if FLAGS.max_images is not None and FLAGS.max_images < 1:
        raise app.UsageError(f"--max_images={FLAGS.max_images}: must be >= 1")
    cli.require_folder_or_absent(FLAGS.output, "--output")  # before the export is read
    output = adabn.adapt_export(
        FLAGS.export, FLAGS.data_dir, FLAGS.dataset, FLAGS.split, FLAGS.output,
        batch_size=FLAGS.batch_size, max_images=FLAGS.max_images,
        saved_model=FLAGS.saved_model,
    )
    print(f"wrote {output} (encoder BatchNorm statistics of {FLAGS.dataset}/{FLAGS.split})")


def define_flags() -> None:
    """Defines this CLI's absl flags (only when run as a program)."""
    flags.DEFINE_string("export", None, "Export directory to adapt.", required=True)
    flags.DEFINE_string("data_dir", None, "TFDS data_dir of the target dataset.", required=True)
    flags.DEFINE_string("dataset", None, "Target TFDS dataset, e.g. kitti_eigen.", required=True)
    flags.DEFINE_string("split", "train", "Split whose images give the statistics.")
    flags.DEFINE_string("output", None, "New export directory (must not exist).", required=True)
    flags.DEFINE_integer("batch_size", adabn.DEFAULT_BATCH_SIZE, "Images per training-mode pass.")
    flags.DEFINE_integer("max_images", None, "Use only the first N images (default: all).")
    flags.DEFINE_bool("saved_model", True, "Also write the TF SavedModel.")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
