"""Validation during training: metrics on the eval split and TensorBoard image summaries."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from damono_jax import evaluation, geometry, models
from damono_jax.inference import batching
from damono_jax.train.state import TrainState

# Images per image summary.
NUM_SUMMARY_IMAGES = 4
# Images per network call during validation (the last batch is zero-padded).
EVAL_BATCH_SIZE = 8


def local_variables(state: TrainState) -> dict[str, Any]:
    """The state's params and batch stats on this process's first device.

    With several processes the replicated arrays span devices this process cannot address;
    validation and image summaries run on local arrays, so they use the local replica.
    """
    def local(x: Any) -> Any:
        return x.addressable_data(0) if not x.is_fully_addressable else x

    return jax.tree.map(local, {"params": state.params, "batch_stats": state.batch_stats})


def predict_disparity(model: models.DAMonodepth, variables: Any, images: jax.Array) -> jax.Array:
    """Scale-0 sigmoid disparity (B, H, W, 1) of the depth network in inference mode."""
    depth_net = models.DepthNet(upsample_mode=model.upsample_mode, dtype=model.dtype)
    return depth_net.apply(models.depth_net_variables(variables), images, train=False)[0]


def image_summaries(
    model: models.DAMonodepth, state: TrainState, batch: Mapping[str, np.ndarray], *,
    min_depth: float, max_depth: float, max_gt_depth: float,
) -> dict[str, np.ndarray]:
    """uint8 NHWC images: input, predicted disparity, GT disparity, segmentation (if any).

    The GT disparity is `geometry.depth_to_disp` with the model's `min_depth`/`max_depth`
    (`config.model`), over the pixels with `0 < depth <= max_gt_depth` (`config.data`).
    """
    from damono_jax import visualization  # matplotlib only when logging

    count = min(NUM_SUMMARY_IMAGES, batch["source_image"].shape[0])
    images = jnp.asarray(batch["source_image"][:count])
    variables = local_variables(state)
    target = jnp.asarray(batch["target_image"][:count]) if model.use_domain_classifier else None
    outputs = jax.device_get(
        _summary_forward(model, variables, images, target)
    )
    pred_disp = np.asarray(outputs["disp"][0][..., 0], np.float32)
    depth = np.asarray(batch["source_depth"][:count], np.float32)
    if depth.ndim == 4:
        depth = depth[..., 0]
    valid = (depth > 0) & (depth <= max_gt_depth)
    gt_disp = np.where(
        valid, geometry.depth_to_disp(np.where(valid, depth, 1.0), min_depth, max_depth), np.nan
    )
    # One colour range for prediction and GT so they can be compared directly.
    vmax = float(max(np.nanmax(pred_disp), np.nanmax(gt_disp) if valid.any() else 0.0))
    summaries = {
        "input": np.asarray(np.clip(batch["source_image"][:count], 0, 1) * 255, np.uint8),
        "disparity/pred": np.stack([visualization.colorize(d, 0.0, vmax) for d in pred_disp]),
        "disparity/gt": np.stack([visualization.colorize(d, 0.0, vmax) for d in gt_disp]),
    }
    if model.use_semantic:
        pred_labels = np.argmax(outputs["seg_logits"][0], axis=-1)
        labels = np.asarray(batch["source_label"][:count])
        if labels.ndim == 4:
            labels = labels[..., 0]
        summaries["segmentation/pred"] = np.stack(
            [visualization.colorize_labels(lab) for lab in pred_labels]
        )
        summaries["segmentation/gt"] = np.stack(
            [visualization.colorize_labels(lab.astype(np.int32)) for lab in labels]
        )
    if model.use_domain_classifier:
        summaries["target"] = np.asarray(
            np.clip(batch["target_image"][:count], 0, 1) * 255, np.uint8
        )
    return summaries


@functools.partial(jax.jit, static_argnums=0)
def _summary_forward(
    model: models.DAMonodepth, variables: Any, images: jax.Array, target: jax.Array | None
) -> dict[str, Any]:
    return model.apply(variables, images, target, grl_scale=jnp.float32(0.0), train=False)


@functools.lru_cache(maxsize=8)
def make_predict_fn(model: models.DAMonodepth) -> Callable[[Any, jax.Array], jax.Array]:
    """Jitted `predict_disparity(model, variables, images)` (compiled once per image shape)."""
    return jax.jit(functools.partial(predict_disparity, model))


def evaluate_on_split(
    config: Any,
    predict_fn: Callable[[Any, jax.Array], jax.Array],
    state: TrainState,
    eval_examples: Iterable[Mapping[str, Any]],
) -> dict[str, float]:
    """Validation metrics (`evaluation.evaluate`, 80 m cap, median scaling) on the eval split.

    `eval_examples` yields `input_pipeline.create_eval_dataset` examples: `image` (H, W, 3)
    at the training size and `depth` (h, w) ground truth at its native size. Images are run
    in batches of `EVAL_BATCH_SIZE`, the last one padded, so the network compiles once.
    """
    variables = local_variables(state)
    _, crop = evaluation.default_protocol(config.data.eval, config.data.eval_split)
    # Streams: only one batch of ground truth is held at a time (KITTI val is ~1.6 GB).
    evaluator = evaluation.Evaluator(
        caps=(80,), crop=crop, scaling="median",
        gt_source=f"{config.data.eval}/{config.data.eval_split}",
    )

    for batch in batching.batches(eval_examples, EVAL_BATCH_SIZE):
        images = batching.stack_padded([example["image"] for example in batch], EVAL_BATCH_SIZE)
        sigma = np.asarray(jax.device_get(predict_fn(variables, jnp.asarray(images))))
        scaled_disp, _ = geometry.disp_to_depth(
            sigma[: len(batch), ..., 0].astype(np.float64), config.model.min_depth,
            config.model.max_depth,
        )
        for example, disp in zip(batch, scaled_disp, strict=True):
            evaluator.add(np.asarray(example["depth"], np.float32), disp)
    if not evaluator.names:
        raise ValueError(
            f"config.data.eval: {config.data.eval}/{config.data.eval_split} yielded no examples"
        )
    results = evaluator.results()[80]
    return {f"val/{name}": results[name] for name in evaluation.METRIC_NAMES}
