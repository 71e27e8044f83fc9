"""Write an export's network as ONNX and check it against JAX.

    python -m damono_jax.export_onnx --export=WORKDIR/export [--batch_size=2] [--tolerance=1e-4]

Writes `EXPORT/model.onnx` (input `images` float32 NHWC in [0, 1] at the export's input size,
any batch; outputs `disparity` (sigmoid) and `depth` (metres)), runs it in onnxruntime on a
seeded random batch, and refuses to keep it when its disparity differs from JAX's by more than
`--tolerance`. Records the input, the outputs and the measured difference under `"onnx"` in
`EXPORT/metadata.json`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from damono_jax.inference import onnx_model


def main(argv: Sequence[str]) -> None:
    """absl entry point; see the module docstring."""
    from absl import flags

    from damono_jax import cli

    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments {list(argv[1:])}")
    values = flags.FLAGS
    # model.onnx is written into the export: a folder this process can write into.
    cli.require_folder_or_absent(values.export, "--export")
    description = onnx_model.export_onnx(values.export, batch_size=values.batch_size,
                              tolerance=values.tolerance)
    parity = description["parity"]["max_abs_disparity_difference"]
    print(f"wrote {Path(values.export) / description['file']} ({description['converter']}, "
          f"opset {description['opset']}); max |disparity - JAX| = {parity:.3g}")


def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("export", None, "Export directory (damono_jax.export).", required=True)
    flags.DEFINE_integer("batch_size", 2, "Random images of the parity check.")
    flags.DEFINE_float("tolerance", onnx_model.PARITY_TOLERANCE,
                       "Largest accepted |disparity - JAX|.")


if __name__ == "__main__":
    from damono_jax import cli

    _define_flags()
    cli.run(main)
