"""The demo's picture: what the model learned on the source and what it does on the target.

One column per domain: a test image, above the model's predicted depth, above the ground
truth. The frame is the source test frame whose AbsRel is the median of the split (a typical
frame, neither the best nor the worst), and the target column shows the frame of the same
name: on the synthetic pair, the same scene in the target's look. Depth is drawn as inverse
depth (near = bright, magma), with one colour range per column, `[1 / 80 m, 95th percentile
of 1 / ground truth]`, shared by the prediction and the ground truth so they compare
directly; ground-truth holes (sky) are black. The prediction is median-scaled to the ground
truth, as the evaluation scores it (`ablation_figures.median_scaled_depth`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib
import numpy as np

from damono_jax import evaluation
from damono_jax.tools import ablation_figures

CAP = ablation_figures.CAP


def median_frame(per_image: list[dict[str, Any]], cap: int = int(CAP)) -> str:
    """The name of the frame whose AbsRel is the median of `per_image` (an evaluation's
    `results.json` "per_image" list; the lower middle one of an even count)."""
    ranked = sorted(per_image, key=lambda record: (record[f"cap_{cap}"]["abs_rel"],
                                                   record["name"]))
    return ranked[(len(ranked) - 1) // 2]["name"]


def test_example(data_dir: str, dataset: str, image_size: tuple[int, int],
                 name: str) -> dict[str, Any]:
    """The example `name` of `dataset`'s test split (else its first), image at `image_size`."""
    from damono_jax import input_pipeline

    first = None
    for example in input_pipeline.create_eval_dataset(data_dir, dataset, "test", image_size,
                                                      key="--dataset"):
        first = example if first is None else first
        if example.get("name") == name:
            return example
    if first is None:
        raise ValueError(f"--dataset={dataset}: its test split is empty")
    return first


def plot_showcase(panels: Mapping[str, Mapping[str, Any]], path: str, title: str) -> str:
    """Writes the picture; `panels` maps a column title to `image` (float, [0, 1]), `gt`
    (metres, 0 = none) and `depth` (median-scaled prediction at the ground truth's size)."""
    plt = ablation_figures.plt
    figure, grid = plt.subplots(3, len(panels), figsize=(4.2 * len(panels), 4.3), dpi=120,
                                squeeze=False)
    colormap = matplotlib.colormaps["magma"].with_extremes(bad="black")
    for column, (name, panel) in enumerate(panels.items()):
        gt, depth = np.asarray(panel["gt"]), np.asarray(panel["depth"])
        valid = evaluation.evaluation_mask(gt, cap=int(CAP), crop="none")
        gt_disparity = np.where(valid, 1.0 / np.where(valid, gt, 1.0), np.nan)
        vmin, vmax = 1.0 / CAP, float(np.nanpercentile(gt_disparity, 95))
        abs_rel = evaluation.compute_errors(
            gt[valid], np.clip(depth[valid], *evaluation.clamp_range(int(CAP))))["abs_rel"]
        grid[0, column].imshow(np.clip(panel["image"], 0, 1))
        grid[0, column].set_title(name, fontsize=8)
        grid[1, column].imshow(1.0 / depth, cmap=colormap, vmin=vmin, vmax=vmax)
        grid[1, column].set_title(f"predicted depth (this image: AbsRel {abs_rel:.3f})",
                                  fontsize=7)
        grid[2, column].imshow(gt_disparity, cmap=colormap, vmin=vmin, vmax=vmax)
        grid[2, column].set_title("ground truth", fontsize=7)
    for axes in grid.flat:
        axes.set_xticks([])
        axes.set_yticks([])
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    ablation_figures.save(figure, path, bbox_inches="tight")
    return path


def write_showcase(model: Any, data_dir: str, datasets: Mapping[str, str],
                   scores: Mapping[str, tuple[float, float]], name: str, path: str,
                   title: str) -> str:
    """The picture for an `InferenceModel`: `datasets` maps a domain to its dataset,
    `scores` a domain to its (model, floor) test AbsRel, printed over its column; `name` is
    the test frame shown (`median_frame`)."""
    panels = {}
    for domain, dataset in datasets.items():
        example = test_example(data_dir, dataset, model.input_size, name)
        scaled = model.predict_scaled_disparity(example["image"][None])[0]
        depth = ablation_figures.median_scaled_depth(scaled, example["depth"])
        model_abs_rel, floor = scores[domain]
        column = (f"{domain}: {dataset} test, frame {example.get('name', '?')}\n"
                  f"test-split AbsRel {model_abs_rel:.3f}, constant floor {floor:.3f}")
        panels[column] = {"image": example["image"], "gt": example["depth"], "depth": depth}
    return plot_showcase(panels, path, title)
