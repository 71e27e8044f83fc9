"""Alignment measures that can move: how different source and target look to a trained model.

Round 2's domain probe (`tools.domain_probe`) said 1.00 at every level for every model,
the oracle included: its accuracy is saturated. Per encoder level, on each image's
spatially averaged features (inference-mode BatchNorm), this module adds

* the probe's held-out **log-loss** beside its accuracy (chance: ln 2 = 0.693 nats), which
  keeps moving when the accuracy is stuck at 1.00;
* the **MMD ratio**: the squared maximum mean discrepancy between source and target (Gaussian
  kernel, biased V-statistic, so never negative; bandwidth = the median pairwise distance;
  features standardised with the source's mean and std), divided by the same statistic
  between two disjoint halves of the source. About 1: the target is no further from the
  source than the source from itself;
* the trained **domain classifier's own held-out accuracy** on both domains' test images
  (`classifier_accuracy`, for a run that has one).

Sets, fixed before any run (docs/adaptation_family.md): source test frames with even index
against target test frames with odd index (other scenes: the looks share their geometry
frame for frame), over source even against source odd. The null check: the source val
split's even against odd frames, over the same denominator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from damono_jax.tools import domain_probe

CHANCE_LOG_LOSS = math.log(2.0)


def median_bandwidth(*sets: np.ndarray) -> float:
    """The median pairwise Euclidean distance over the union of `sets` (distinct pairs)."""
    points = np.concatenate(sets).astype(np.float64)
    squared = _squared_distances(points, points)
    distances = np.sqrt(squared[np.triu_indices(len(points), k=1)])
    bandwidth = float(np.median(distances))
    if not bandwidth > 0:
        raise ValueError("median_bandwidth: the points coincide (median distance 0)")
    return bandwidth


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(squared, 0.0)


def mmd2(x: np.ndarray, y: np.ndarray, bandwidth: float) -> float:
    """Biased (V-statistic) squared MMD of samples `x` and `y` with a Gaussian kernel
    exp(-d^2 / (2 bandwidth^2)); >= 0, and 0 only for identical empirical distributions."""
    x, y = x.astype(np.float64), y.astype(np.float64)

    def kernel(a, b):
        return np.exp(-_squared_distances(a, b) / (2.0 * bandwidth**2)).mean()

    return float(kernel(x, x) + kernel(y, y) - 2.0 * kernel(x, y))


def mmd_ratio(x: np.ndarray, y: np.ndarray, reference_x: np.ndarray,
              reference_y: np.ndarray) -> float:
    """mmd2(x, y) / mmd2(reference_x, reference_y): one bandwidth (the median distance over
    all four sets) and one standardisation (the reference sets' mean and std)."""
    reference = np.concatenate([reference_x, reference_y]).astype(np.float64)
    mean, std = reference.mean(0), reference.std(0) + 1e-6
    x, y, reference_x, reference_y = ((s.astype(np.float64) - mean) / std
                                      for s in (x, y, reference_x, reference_y))
    bandwidth = median_bandwidth(x, y, reference_x, reference_y)
    reference = mmd2(reference_x, reference_y, bandwidth)
    if reference <= 0:
        raise ValueError("mmd_ratio: the reference sets are the same sample (MMD^2 0)")
    return mmd2(x, y, bandwidth) / reference


def level_measures(features: dict[tuple[str, str], list[np.ndarray]]) -> list[dict[str, float]]:
    """Per level: probe accuracy and log-loss, MMD ratio and its null.

    `features[(domain, split)]` ("source"/"target", "val"/"test") is the list of per-level
    (N, C) pooled features; frames in split order.
    """
    measures = []
    for level in range(len(features[("source", "test")])):
        def of(domain, split, level=level):
            return features[(domain, split)][level]

        train = np.concatenate([of("source", "val"), of("target", "val")])
        test = np.concatenate([of("source", "test"), of("target", "test")])
        train_y = np.r_[np.ones(len(of("source", "val"))), np.zeros(len(of("target", "val")))]
        test_y = np.r_[np.ones(len(of("source", "test"))), np.zeros(len(of("target", "test")))]
        accuracy, log_loss = domain_probe.probe_scores(train, train_y, test, test_y)
        source_test, source_val = of("source", "test"), of("source", "val")
        measures.append({
            "probe_accuracy": accuracy,
            "probe_log_loss": log_loss,
            "mmd_ratio": mmd_ratio(source_test[0::2], of("target", "test")[1::2],
                                   source_test[0::2], source_test[1::2]),
            "mmd_null": mmd_ratio(source_val[0::2], source_val[1::2],
                                  source_test[0::2], source_test[1::2]),
        })
    return measures


def classifier_accuracy(config: Any, run_dir: str, data_dir: str, source: str,
                        target: str) -> dict[str, float]:
    """The trained feature classifier's patch accuracy on both domains' test splits.

    Restores the newest checkpoint of `run_dir` (trained with `config`) and runs the whole
    network in inference mode on source and target test images, batch by batch; returns
    `{"source": share of source patches called source, "target": ... target}` (mean over
    the classifiers of every aligned level).
    """
    import jax

    from damono_jax import input_pipeline, losses
    from damono_jax.train import latest_checkpoint, state

    restored = latest_checkpoint.restore_latest_state(config, run_dir)
    model = state.create_model(config)
    variables = jax.device_get({"params": restored.state.params,
                                "batch_stats": restored.state.batch_stats})
    apply = jax.jit(lambda v, s, t: model.apply(v, s, t, grl_scale=0.0, train=False))
    size = tuple(config.data.image_size)
    batches = [list(input_pipeline.create_image_batches(data_dir, dataset, "test", size,
                                                        domain_probe.BATCH_SIZE))
               for dataset in (source, target)]
    hits = {"source": [], "target": []}
    for source_batch, target_batch in zip(*batches, strict=True):
        logits = apply(variables, source_batch, target_batch)["domain_logits"]
        for level in logits.values():
            accuracy = losses.domain_accuracy(level["source"], level["target"])
            hits["source"].append(float(accuracy[0]) * len(source_batch))
            hits["target"].append(float(accuracy[1]) * len(target_batch))
    count = sum(len(b) for b in batches[0]) * len(logits)
    return {domain: sum(values) / count for domain, values in hits.items()}


def format_levels(measures: Sequence[dict[str, float]], key: str, digits: int = 2) -> str:
    """One cell: the values of `key` at every level, "conv1 / layer1 / ... / layer4"."""
    return " / ".join(f"{m[key]:.{digits}f}" for m in measures)
