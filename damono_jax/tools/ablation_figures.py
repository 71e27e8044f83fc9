"""The ablation's two pictures (matplotlib): learning curves and the paper's Figure 4."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from damono_jax import evaluation, files

CAP = 80.0


def plot_learning_curves(curves: Mapping[str, Sequence[Sequence[tuple[int, float]]]],
                         path: str, title: str) -> str:
    """Target-val AbsRel against step: the mean over seeds with a +- 1 std band per row.

    `curves` maps a row title to one curve per seed, each a list of (step, value); seeds are
    averaged at the steps they share.
    """
    figure, axes = plt.subplots(figsize=(7.0, 4.2), dpi=110)
    for name, seed_curves in curves.items():
        shared = sorted(set.intersection(*(set(dict(c)) for c in seed_curves)))
        if not shared:
            continue
        values = np.array([[dict(c)[step] for step in shared] for c in seed_curves])
        mean = values.mean(axis=0)
        (line,) = axes.plot(shared, mean, marker="o", markersize=3,
                            label=f"{name} ({len(seed_curves)} seed{'s' * (len(seed_curves) > 1)})")
        if len(seed_curves) > 1:
            std = values.std(axis=0, ddof=1)
            axes.fill_between(shared, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    axes.set_xlabel("training step")
    axes.set_ylabel("target val AbsRel (cap 80 m, median scaling)")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    # Beside the axes, not over the curves (a campaign has up to ten of them).
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    figure.tight_layout()
    save(figure, path, bbox_inches="tight")  # the legend beside the axes
    return path


# Characters per line of a Figure 4 column title (a 2.3-inch column at 7 pt).
TITLE_WRAP_CHARS = 20


def plot_qualitative(images: Sequence[np.ndarray], gt_depths: Sequence[np.ndarray],
                     predictions: Mapping[str, Sequence[np.ndarray]], path: str,
                     title: str) -> str:
    """The paper's Figure 4: one row per image, [input, GT, each model's depth].

    Depth is drawn as inverse depth (near = bright, magma) with ONE colour range per row,
    `[1 / CAP, max(1 / GT)]`, so the columns of a row compare directly; GT holes are black.
    `predictions` hold depth at the GT's size (`median_scaled_depth`, the tables' protocol).
    """
    columns = ["input", "ground truth", *predictions]
    figure, grid = plt.subplots(len(images), len(columns),
                                figsize=(2.3 * len(columns), 0.9 * len(images) + 0.6),
                                dpi=110, squeeze=False)
    colormap = matplotlib.colormaps["magma"].with_extremes(bad="black")
    for row, (image, gt) in enumerate(zip(images, gt_depths, strict=True)):
        valid = (gt > 0) & (gt < CAP)
        gt_disp = np.where(valid, 1.0 / np.where(valid, gt, 1.0), np.nan)
        vmin, vmax = 1.0 / CAP, float(np.nanmax(gt_disp))
        grid[row, 0].imshow(np.clip(image, 0, 1))
        grid[row, 1].imshow(gt_disp, cmap=colormap, vmin=vmin, vmax=vmax)
        for column, depths in enumerate(predictions.values(), start=2):
            grid[row, column].imshow(1.0 / depths[row], cmap=colormap, vmin=vmin, vmax=vmax)
    for column, name in enumerate(columns):
        # Wrapped to the column's width: long run names overlapped their neighbours.
        grid[0, column].set_title(textwrap.fill(name, TITLE_WRAP_CHARS), fontsize=7)
    for axes in grid.flat:
        axes.set_xticks([])
        axes.set_yticks([])
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    save(figure, path)
    return path


def median_scaled_depth(scaled_disparity: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Predicted depth at the GT's size, median scaled to it, as the evaluation computes it.

    The scaled disparity (1 / metres) is resized bilinearly to the GT's size and inverted;
    the ratio is median(GT) / median(prediction) over the GT pixels the 80 m cap keeps.
    """
    depth = 1.0 / evaluation.resize_bilinear(scaled_disparity, *gt.shape)
    valid = evaluation.evaluation_mask(gt, cap=int(CAP), crop="none")
    return depth * float(np.median(gt[valid]) / np.median(depth[valid]))


def save(figure: plt.Figure, path: str, **savefig: object) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        files.atomic_write(path, lambda target: figure.savefig(target, **savefig))
    finally:
        plt.close(figure)
