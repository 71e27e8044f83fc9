"""AdaBN (Li et al., 2016): an export's encoder BatchNorm statistics re-estimated on
target-domain images; the method is described in `damono_jax.adabn`, its command line."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from damono_jax import export
from damono_jax.inference import model as inference_model
from damono_jax.inference import saved_model as saved_model_format
from damono_jax.models.resnet import BN_MOMENTUM, ResNet18Encoder

DEFAULT_BATCH_SIZE = 16


@functools.partial(jax.jit, static_argnums=0)
def _batch_moments(encoder: ResNet18Encoder, params: Any, images: jax.Array) -> Any:
    """Per-layer (mean, biased var) of this batch, as the training-mode forward computes them.

    Flax updates `ra = momentum * ra + (1 - momentum) * batch_stat`; from zero running
    statistics the update is `(1 - momentum) * batch_stat`, which is divided back out.
    """
    zeros = _zero_stats(encoder, images.shape)
    _, updates = encoder.apply(
        {"params": params, "batch_stats": zeros}, images, train=True, mutable=["batch_stats"]
    )
    return jax.tree.map(lambda x: x / (1.0 - BN_MOMENTUM), updates["batch_stats"])


def _zero_stats(encoder: ResNet18Encoder, shape: Sequence[int]) -> Any:
    """Zero running statistics of the encoder's structure (shapes from `eval_shape`)."""
    images = jax.ShapeDtypeStruct(tuple(shape), jnp.float32)
    shapes = jax.eval_shape(encoder.init, jax.random.PRNGKey(0), images)["batch_stats"]
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def reestimate_encoder_stats(
    encoder_params: Mapping[str, Any], image_batches: Iterable[np.ndarray]
) -> dict[str, Any]:
    """The encoder's `batch_stats` pooled over every image of `image_batches`.

    Args:
      encoder_params: `variables["params"]["encoder"]` of a DAMonodepth or DepthNet.
      image_batches: float32 (b, H, W, 3) arrays in [0, 1]; sizes may differ per batch.

    Returns:
      A tree like `variables["batch_stats"]["encoder"]` (`mean`, `var` per BatchNorm).
    """
    encoder = ResNet18Encoder()
    total = 0
    sums: dict[tuple[str, ...], list[np.ndarray]] = {}
    for batch in image_batches:
        batch = np.asarray(batch, np.float32)
        if batch.ndim != 4 or batch.shape[-1] != 3 or batch.shape[0] == 0:
            raise ValueError(f"image_batches: expected (b, H, W, 3) batches, got {batch.shape}")
        moments = traverse_util.flatten_dict(
            jax.device_get(_batch_moments(encoder, encoder_params, jnp.asarray(batch)))
        )
        count = batch.shape[0]
        for path, mean in moments.items():
            if path[-1] != "mean":
                continue
            mean = np.asarray(mean, np.float64)
            square = np.asarray(moments[(*path[:-1], "var")], np.float64) + mean**2
            previous = sums.setdefault(path[:-1], [np.zeros_like(mean), np.zeros_like(mean)])
            previous[0] += count * mean
            previous[1] += count * square
        total += count
    if total == 0:
        raise ValueError("image_batches: no images to estimate BatchNorm statistics from")
    stats = {}
    for layer, (sum_mean, sum_square) in sums.items():
        mean = sum_mean / total
        stats[(*layer, "mean")] = mean.astype(np.float32)
        stats[(*layer, "var")] = np.maximum(sum_square / total - mean**2, 0.0).astype(np.float32)
    return traverse_util.unflatten_dict(stats)


def adapt_variables(variables: Mapping[str, Any], image_batches: Iterable[np.ndarray]
                    ) -> dict[str, Any]:
    """DepthNet/DAMonodepth `variables` with the encoder's statistics from `image_batches`."""
    params = variables["params"]
    stats = reestimate_encoder_stats(params["encoder"], image_batches)
    previous = jax.tree.structure(variables["batch_stats"]["encoder"])
    if jax.tree.structure(stats) != previous:
        raise ValueError("adapt_variables: re-estimated statistics do not match the encoder's")
    return {"params": params, "batch_stats": {**variables["batch_stats"], "encoder": stats}}


def adapt_export(
    export_dir: str | Path,
    data_dir: str | Path,
    dataset: str,
    split: str,
    output_dir: str | Path,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_images: int | None = None,
    saved_model: bool = False,
) -> Path:
    """Writes `output_dir`: the export at `export_dir` with AdaBN statistics of `dataset`.

    The images are `dataset`/`split` of the TFDS `data_dir`, resized to the export's input
    size as the evaluation does. `output_dir` is written atomically and must not exist.
    """
    from damono_jax import input_pipeline

    model = inference_model.load_export(export_dir)
    batches = input_pipeline.create_image_batches(
        str(data_dir), dataset, split, model.input_size, batch_size, max_images
    )
    counted: list[int] = []

    def counting(batches: Iterable[np.ndarray]) -> Iterable[np.ndarray]:
        for batch in batches:
            counted.append(len(batch))
            yield batch

    variables = adapt_variables(model.variables, counting(batches))
    metadata = dict(model.metadata)
    metadata["adabn"] = {
        "dataset": dataset, "split": split, "num_images": int(sum(counted)),
        "batch_size": int(batch_size), "from_export": str(Path(export_dir).absolute()),
    }
    for key in ("format_version", "damono_jax_version", "parameter_count"):
        metadata.pop(key, None)
    also_write = saved_model_format.write_into_export if saved_model else None
    export.save_export(output_dir, variables, metadata, overwrite=False, also_write=also_write)
    return Path(output_dir)
