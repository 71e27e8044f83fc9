"""The export as ONNX (jax2onnx): written into `EXPORT/model.onnx`, run with onnxruntime.

We convert with jax2onnx 0.13.0, the newest release that installs beside orbax-checkpoint
0.12 (0.13.1 and later pin orbax-checkpoint < 0.11.37). The graph is the export's inference
network at its fixed input size with a free batch dimension.
"""

from __future__ import annotations

import contextlib
import io
import logging as std_logging
import os
from collections.abc import Callable, Iterator
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import jax
import numpy as np
from absl import logging

from damono_jax import files, geometry
from damono_jax.errors import ExportError
from damono_jax.export_format import METADATA_FILE
from damono_jax.inference.model import InferenceModel, load_export

ONNX_FILE = "model.onnx"
OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAMES = ("disparity", "depth")
BATCH_DIM = "batch"
_CONVERTER_LOGGERS = ("jax2onnx", "onnx_ir")


@contextlib.contextmanager
def _quiet_converter() -> Iterator[None]:
    """jax2onnx prints debug lines and plugin-import warnings; they go to the debug log."""
    captured = io.StringIO()
    levels = {name: std_logging.getLogger(name).level for name in _CONVERTER_LOGGERS}
    for name in _CONVERTER_LOGGERS:
        std_logging.getLogger(name).setLevel(std_logging.ERROR)
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            yield
    finally:
        for name, level in levels.items():
            std_logging.getLogger(name).setLevel(level)
        logging.debug("jax2onnx output:\n%s", captured.getvalue())


def onnx_description(model: InferenceModel) -> dict[str, Any]:
    """What `metadata.json["onnx"]` says of the file: input and outputs, layout, range, units."""
    height, width = model.input_size
    return {
        "file": ONNX_FILE,
        "opset": OPSET,
        "converter": f"jax2onnx {package_metadata.version('jax2onnx')}",
        "input": {
            "name": INPUT_NAME, "shape": [BATCH_DIM, height, width, 3], "layout": "NHWC",
            "dtype": "float32", "range": [0.0, 1.0], "channels": "RGB",
            "resize": "resize your image to height x width first (predict.py uses bilinear "
                      "with antialiasing)",
        },
        "outputs": {
            "disparity": {"shape": [BATCH_DIM, height, width], "dtype": "float32",
                          "range": [0.0, 1.0], "meaning": "sigmoid disparity"},
            "depth": {"shape": [BATCH_DIM, height, width], "dtype": "float32",
                      "units": "metres", "range": [model.min_depth, model.max_depth],
                      "meaning": "disp_to_depth of the disparity (Monodepth2)"},
        },
    }


def _disparity_and_depth_fn(model: InferenceModel) -> Callable[[jax.Array], tuple]:
    sigmoid_disparity = model.sigmoid_disparity_fn()
    variables = model.variables

    def disparity_and_depth(images: jax.Array) -> tuple[jax.Array, jax.Array]:
        sigma = sigmoid_disparity(variables, images)
        return sigma, geometry.disp_to_depth(sigma, model.min_depth, model.max_depth)[1]

    return disparity_and_depth


def to_onnx_bytes(model: InferenceModel) -> bytes:
    """The serialized ONNX model of `model` (input `images`, outputs disparity and depth)."""
    height, width = model.input_size
    with _quiet_converter():
        import jax2onnx
        import onnx

        proto = jax2onnx.to_onnx(
            _disparity_and_depth_fn(model), [(BATCH_DIM, height, width, 3)],
            model_name="damono_jax_depth", opset=OPSET, input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
        )
    # jax2onnx 0.13.0 annotates some intermediate shapes in NCHW order; onnxruntime warns and
    # infers them itself, so the annotations are dropped.
    del proto.graph.value_info[:]
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def load_onnx(path: str | os.PathLike) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """An onnxruntime session of `path` as `fn(images float32 NHWC) -> {disparity, depth}`."""
    import onnxruntime

    if not os.path.isfile(path):
        raise ExportError(f"{path}: missing (write it with python -m damono_jax.export_onnx)")
    try:
        session = onnxruntime.InferenceSession(os.fspath(path),
                                               providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        raise ExportError(f"{path}: onnxruntime cannot load it: {error}") from error

    def predict(images: np.ndarray) -> dict[str, np.ndarray]:
        outputs = session.run(list(OUTPUT_NAMES), {INPUT_NAME: np.asarray(images, np.float32)})
        return dict(zip(OUTPUT_NAMES, outputs, strict=True))

    return predict


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
    model = load_export(export_dir)
    serialized = to_onnx_bytes(model)
    path = export_dir / ONNX_FILE
    temporary = export_dir / f".{ONNX_FILE}.check"
    try:
        temporary.write_bytes(serialized)
        images = np.random.default_rng(seed).uniform(
            size=(batch_size, *model.input_size, 3)).astype(np.float32)
        outputs = load_onnx(temporary)(images)
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
        **onnx_description(model),
        "parity": {"max_abs_disparity_difference": disparity_diff,
                   "max_depth_difference_relative": depth_diff,
                   "images": f"{batch_size} uniform random, seed {seed}",
                   "reference": "InferenceModel.predict_disparity (JAX)"},
    }
    metadata = dict(model.metadata)
    metadata["onnx"] = description
    files.atomic_write_json(export_dir / METADATA_FILE, metadata)
    return description
