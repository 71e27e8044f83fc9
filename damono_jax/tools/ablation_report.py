"""`make ablation`'s report: the markdown tables, the learning curves and Figure 4.

Reads what `tools.ablation` recorded (run.json records and each run's TensorBoard events)
and turns it into the `ablation` section of docs/ablation_synthetic.md.
"""

from __future__ import annotations

import datetime
import glob
import os
import platform
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from damono_jax import config_utils
from damono_jax.tools import markdown

VARIANT_TITLES = {
    "baseline": "Baseline (source img. + depth)",
    "seg": "+ Seg (source labels)",
    "full": "+ Seg + DA (target img.)",
}
# (evaluation name, dataset key in the config, depth scaling); cap 80 m, no crop.
EVALUATIONS = (
    ("target", "target", "median"),
    ("target_metric", "target", "none"),
    ("source", "source", "median"),
)
CAP = "80"
SUMMARY_METRICS = ("abs_rel", "rmse", "a1")
TRAIN_SCALARS = ("train/depth_loss", "train/seg_loss", "train/adv_loss",
                 "train/adv_output_loss", "train/domain_acc_source", "train/domain_acc_target")
EXTRA_TITLES = {
    "full_all_levels": "+ Seg + DA at every encoder level",
    "fda": "Baseline + FDA (source img. in target style)",
    "full_fda": "+ Seg + DA + FDA",
    "full_dsbn": "+ Seg + DA, domain-specific BN statistics",
    "oracle": "Oracle: baseline on target img. + depth",
    "full_fair": "+ Seg + DA, fair game (own constant-lr Adam, GRL warm-up, spectral norm, "
                 "layer3 + layer4)",
    "full_output": "+ Seg + output-space DA (AdaptSegNet)",
    "full_cdan": "+ Seg + DA conditioned on the semantic softmax (CDAN)",
    "seg_mixed_bn": "+ Seg + target img. through the encoder, no reversed gradient "
                    "(BatchNorm control)",
}
# Any variant name + STRONG_SUFFIX: that variant with strong photometric augmentation on
# both streams (`data.augment="strong"`).
STRONG_SUFFIX = "_strong"
STRONG_TITLE = " + strong aug."
FLOOR_TITLE = "Floor: constant prior (per-pixel median of source train depth)"
ADABN_SUFFIX = " + AdaBN"
# Settings added to the config after runs were recorded, with the value that reproduces
# the earlier behaviour: a stored run without the key matches only at this value.
CURVE_TAG = "val/abs_rel"


def variant_title(variant: str) -> str:
    """The table title of a variant (the paper's three, the beyond-paper ones, and any of
    them + "_strong", strong augmentation)."""
    titles = {**VARIANT_TITLES, **EXTRA_TITLES}
    if variant in titles:
        return titles[variant]
    return titles[variant.removesuffix(STRONG_SUFFIX)] + STRONG_TITLE


def logged_scalars(workdir: str, tags: Sequence[str]) -> dict[str, dict[int, float]]:
    """`{tag: {step: value}}` of the scalars `tags` in `workdir`'s TensorBoard events."""
    import tensorflow as tf

    values: dict[str, dict[int, float]] = {}
    for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag not in tags:
                    continue
                number = (
                    float(tf.make_ndarray(value.tensor)) if value.HasField("tensor")
                    else float(value.simple_value)
                )
                values.setdefault(value.tag, {})[int(event.step)] = number
    return values


def last_train_scalars(workdir: str) -> dict[str, float]:
    """The last logged value of each of TRAIN_SCALARS in `workdir`'s TensorBoard events."""
    values = logged_scalars(workdir, TRAIN_SCALARS)
    return {tag.removeprefix("train/"): series[max(series)] for tag, series in values.items()}


def validation_curve(workdir: str) -> list[tuple[int, float]]:
    """`[(step, target val AbsRel)]` logged during training (every `eval_every_steps`)."""
    return sorted(logged_scalars(workdir, (CURVE_TAG,)).get(CURVE_TAG, {}).items())


def mean_std(values: Sequence[float]) -> str:
    """'mean ± sample std' (std with n - 1; only the mean for a single value)."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def summary_rows(records: Sequence[Mapping[str, Any]], variants: Sequence[str]) -> list[list[str]]:
    """One row per variant (and per variant + AdaBN, where scored): mean ± std over seeds."""
    rows = []
    for variant in variants:
        runs = [r for r in records if r["name"] == variant]
        for key, suffix in (("results", ""), ("results_adabn", ADABN_SUFFIX)):
            if not runs or any(key not in r for r in runs):
                continue
            rows.append([variant_title(variant) + suffix, str(len(runs)),
                         *_metric_cells([r[key] for r in runs])])
    return rows


def fixed_row(title: str, results: Mapping[str, Any]) -> list[str]:
    """A summary row for one deterministic predictor (the constant prior): no seeds."""
    return [title, "–", *_metric_cells([results])]


def _metric_cells(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """The SUMMARY_HEADER metric cells: `mean_std` over `results` (one per seed)."""
    cells = []
    for name, _, _ in EVALUATIONS:
        metrics = ("abs_rel",) if name == "target_metric" else SUMMARY_METRICS
        cells += [mean_std([r[name][m] for r in results]) for m in metrics]
    return cells


SUMMARY_HEADER = (
    "variant", "seeds",
    "target AbsRel ↓", "target RMSE ↓", "target δ<1.25 ↑",
    "target AbsRel, no scaling ↓",
    "source AbsRel ↓", "source RMSE ↓", "source δ<1.25 ↑",
)
RUN_HEADER = (
    "variant", "seed", "train s", "target AbsRel", "target RMSE", "target δ<1.25",
    "target AbsRel no scaling", "source AbsRel", "target / source AbsRel + AdaBN",
    "final depth loss", "final seg loss", "final adv loss", "final output adv loss",
    "classifier acc source / target",
)


def run_rows(records: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """One row per run, with the last logged training losses and classifier accuracies."""
    rows = []
    for r in records:
        final = r["final_train"]

        def fmt(key: str, final: Mapping[str, float] = final) -> str:
            return f"{final[key]:.3f}" if key in final else "–"

        accuracy = (
            f"{final['domain_acc_source']:.2f} / {final['domain_acc_target']:.2f}"
            if "domain_acc_source" in final else "–"
        )
        adapted = (
            f"{r['results_adabn']['target']['abs_rel']:.3f} / "
            f"{r['results_adabn']['source']['abs_rel']:.3f}" if "results_adabn" in r else "–"
        )
        rows.append([
            r["name"], str(r["seed"]), f"{r['train_seconds']:.0f}",
            f"{r['results']['target']['abs_rel']:.3f}", f"{r['results']['target']['rmse']:.3f}",
            f"{r['results']['target']['a1']:.3f}",
            f"{r['results']['target_metric']['abs_rel']:.3f}",
            f"{r['results']['source']['abs_rel']:.3f}", adapted,
            fmt("depth_loss"), fmt("seg_loss"), fmt("adv_loss"), fmt("adv_output_loss"),
            accuracy,
        ])
    return rows


def schedule_description(config: Any) -> str:
    """The config values that define the schedule, as one markdown line."""
    keys = ("data.image_size", "batch_size", "num_train_steps", "optim.learning_rate",
            "optim.discriminator_learning_rate", "loss.seg_weight", "loss.adv_weight",
            "grl.schedule", "grl.gamma", "grl.max_scale", "model.discriminator_features",
            "model.encoder_init", "data.augment", "loss.output_adv_weight")
    flat = config_utils.flatten_for_hparams(config)
    return ", ".join(f"`{key}={flat[key]}`" for key in keys)


def report(config: Any, records: Sequence[Mapping[str, Any]], variants: Sequence[str],
           command: str, wall_s: float, figures: Sequence[tuple[str, str]] = (), *,
           context: Mapping[str, Any] | None = None, pretrain_steps: int = 0) -> str:
    """The markdown body of the section: tables, then `figures` as (caption, relative path).

    `context` (from `ablation.run_ablation`) adds the constant prior's row (the floor) and,
    with `pretrain_steps`, stage 1's baseline row of the trained-encoder protocol.
    """
    context = context or {}
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    rows = summary_rows(records, variants)
    if "constant_prior" in context:
        rows.insert(0, fixed_row(FLOOR_TITLE, context["constant_prior"]))
    pretrained = list(context.get("pretrain", ()))
    if pretrained:
        stage1 = summary_rows(pretrained, [pretrained[0]["name"]])[0]
        stage1[0] = f"Stage 1: {stage1[0]} @ {pretrain_steps} steps (every row starts here)"
        rows.insert(1, stage1)
    if pretrain_steps:
        heading = (f"## Measured: trained-encoder protocol, {pretrain_steps} source-only steps "
                   f"then {config.num_train_steps} steps per row")
        protocol = (f"- protocol: stage 1 trains the source-only baseline for {pretrain_steps} "
                    "steps per seed; every row (the baseline included) starts from its "
                    "seed's stage-1 checkpoint (`config.init_from`: the weights it shares; "
                    "new heads and the optimiser start fresh) and trains "
                    f"{config.num_train_steps} more steps in its own variant, lr "
                    f"{config.optim.learning_rate} x{config.optim.decay_factor} at "
                    f"{config.optim.decay_at_fraction:.0%} of those steps")
    else:
        heading = "## Measured: baseline vs +seg vs +seg+DA on synthetic_driving"
        protocol = None
    lines = [
        heading,
        "",
        f"- command: `{command}`",
        f"- date (UTC): {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M}; machine: "
        f"{machine}; jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} "
        f"device(s); this invocation took {wall_s / 60:.0f} min (runs found "
        "finished were read back)",
        f"- schedule: {schedule_description(config)}",
        *([protocol] if protocol else []),
        f"- evaluation: `synthetic_driving/<domain>` test split (200 frames each), cap {CAP} m, "
        "no crop, per-image median scaling (the paper's protocol) unless marked "
        "'no scaling' (metric depth as predicted); mean ± sample std over the seeds. "
        f"'{ADABN_SUFFIX.strip()}' rows: the same runs with the encoder's BatchNorm statistics "
        "re-estimated on the target training images (`damono_jax.adabn`), scored on both "
        "domains. The floor is one depth map for every image, the per-pixel median of the "
        "source training depth (`damono_jax.constant_prior`); a row above it on the target "
        "has learned nothing that transfers.",
        "",
        markdown.markdown_table(SUMMARY_HEADER, rows),
        "",
        "Every run (last logged training values: mean over the last logging window):",
        "",
        markdown.markdown_table(RUN_HEADER, run_rows(
            [{**r, "name": f"stage 1: {r['name']}"} for r in pretrained] + list(records))),
    ]
    for caption, path in figures:
        lines += ["", f"![{caption}]({path})", "", f"*{caption}*"]
    return "\n".join(lines)


# Target test frames of the qualitative figure: fixed before any model was looked at.
FIGURE_TEST_INDICES = (0, 50, 100, 150)


def make_figures(records: Sequence[Mapping[str, Any]], variants: Sequence[str], *,
                 data_dir: str, target: str, num_train_steps: int, figures_dir: str,
                 section: str, relative_to: str, pretrain_steps: int = 0) -> list[tuple[str, str]]:
    """Writes the learning-curve and Figure 4 PNGs; returns (caption, path from the doc).

    Figure 4 shows `target`'s test frames FIGURE_TEST_INDICES from the TFDS `data_dir`.
    """
    from damono_jax import input_pipeline
    from damono_jax.inference import model as inference_model
    from damono_jax.tools import ablation_figures

    figures = []
    curves = {}
    for variant in variants:
        runs = [r for r in records if r["name"] == variant]
        per_seed = [validation_curve(r["run_dir"]) for r in runs]
        if runs and all(per_seed):
            curves[variant_title(variant)] = per_seed
    steps = f"{int(num_train_steps)} steps"
    if pretrain_steps:
        steps += f" after {pretrain_steps} source-only steps"
    if curves:
        path = ablation_figures.plot_learning_curves(
            curves, os.path.join(figures_dir, f"{section}_curves.png"),
            f"synthetic_driving, {steps}: target val AbsRel (mean ± std over seeds)",
        )
        figures.append((f"Learning curves ({steps}): target val AbsRel, mean ± std over "
                        "seeds", os.path.relpath(path, relative_to)))
    first = {v: next(r for r in records if r["name"] == v) for v in variants
             if any(r["name"] == v for r in records)}
    models = {variant_title(v): inference_model.load_export(os.path.join(r["run_dir"], "export"))
              for v, r in first.items()}
    if not models:
        return figures
    input_size = next(iter(models.values())).input_size
    examples = list(input_pipeline.create_eval_dataset(
        data_dir, target, "test", input_size, max(FIGURE_TEST_INDICES) + 1))
    chosen = [examples[i] for i in FIGURE_TEST_INDICES]
    images = np.stack([e["image"] for e in chosen])
    predictions = {
        name: [ablation_figures.median_scaled_depth(disp, e["depth"])
               for disp, e in zip(model.predict_scaled_disparity(images), chosen, strict=True)]
        for name, model in models.items()
    }
    seeds = ", ".join(f"{v} seed {r['seed']}" for v, r in first.items())
    path = ablation_figures.plot_qualitative(
        [e["image"] for e in chosen], [e["depth"] for e in chosen], predictions,
        os.path.join(figures_dir, f"{section}_figure4.png"),
        f"target test frames {list(FIGURE_TEST_INDICES)}; {seeds}; inverse depth, one range "
        "per row, median scaled",
    )
    figures.append((f"Figure 4 on synthetic_driving/target test frames "
                    f"{list(FIGURE_TEST_INDICES)} ({seeds})", os.path.relpath(path, relative_to)))
    return figures
