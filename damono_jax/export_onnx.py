"""Write an export's network as ONNX and check it against JAX.

    python -m damono_jax.export_onnx --export=WORKDIR/export [--batch_size=2] [--tolerance=1e-4]

Writes `EXPORT/model.onnx` (input `images` float32 NHWC in [0, 1] at the export's input size,
any batch; outputs `disparity` (sigmoid) and `depth` (metres)), runs it in onnxruntime on a
seeded random batch, and refuses to keep it when its disparity differs from JAX's by more than
`--tolerance`. Records the input, the outputs and the measured difference under `"onnx"` in
`EXPORT/metadata.json`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from damono_jax import files
from damono_jax.errors import ExportError
from damono_jax.export_format import METADATA_FILE
from damono_jax.inference import model as inference_model
from damono_jax.inference import onnx_model

PARITY_TOLERANCE = 1e-4


def export_onnx(export_dir: str | os.PathLike, *, batch_size: int = 2,
                tolerance: float = PARITY_TOLERANCE, seed: int = 0) -> dict[str, Any]:
    """Writes `export_dir/model.onnx` and its description in `metadata.json`; returns it.

    Raises `ExportError` (nothing written) when onnxruntime's disparity or depth differs from
    JAX's by more than `tolerance` (disparity, absolute) on `batch_size` random images.
    """
    if batch_size < 1:
        raise ValueError(f"--batch_size: must be >= 1, got {batch_size}")
    export_dir = Path(export_dir).absolute()
    model = inference_model.load_export(export_dir)
    serialized = onnx_model.to_onnx_bytes(model)
    path = export_dir / onnx_model.ONNX_FILE
    temporary = export_dir / f".{onnx_model.ONNX_FILE}.check"
    try:
        temporary.write_bytes(serialized)
        images = np.random.default_rng(seed).uniform(
            size=(batch_size, *model.input_size, 3)).astype(np.float32)
        outputs = onnx_model.load_onnx(temporary)(images)
        disparity_diff = float(np.abs(outputs["disparity"] - model.predict_disparity(images)).max())
        depth = model.predict_depth(images)
        depth_diff = float(np.abs(outputs["depth"] - depth).max() / np.abs(depth).max())
        if not disparity_diff <= tolerance:
            raise ExportError(
                f"{path}: onnxruntime's disparity differs from JAX's by {disparity_diff:.3g} "
                f"(> --tolerance={tolerance:g}); not written"
            )
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    description = {
        **onnx_model.onnx_description(model),
        "parity": {"max_abs_disparity_difference": disparity_diff,
                   "max_depth_difference_relative": depth_diff,
                   "images": f"{batch_size} uniform random, seed {seed}",
                   "reference": "InferenceModel.predict_disparity (JAX)"},
    }
    metadata = dict(model.metadata)
    metadata["onnx"] = description
    files.atomic_write_json(export_dir / METADATA_FILE, metadata)
    return description


def main(argv: Sequence[str]) -> None:
    """absl entry point; see the module docstring."""
    from absl import flags

    from damono_jax import cli

    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments {list(argv[1:])}")
    values = flags.FLAGS
    description = export_onnx(values.export, batch_size=values.batch_size,
                              tolerance=values.tolerance)
    parity = description["parity"]["max_abs_disparity_difference"]
    print(f"wrote {Path(values.export) / description['file']} ({description['converter']}, "
          f"opset {description['opset']}); max |disparity - JAX| = {parity:.3g}")


def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("export", None, "Export directory (damono_jax.export).", required=True)
    flags.DEFINE_integer("batch_size", 2, "Random images of the parity check.")
    flags.DEFINE_float("tolerance", PARITY_TOLERANCE, "Largest accepted |disparity - JAX|.")


if __name__ == "__main__":
    from damono_jax import cli

    _define_flags()
    cli.run(main)
