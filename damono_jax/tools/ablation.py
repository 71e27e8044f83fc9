"""The synthetic miniature of the paper's Table 3: `make ablation`.

    python -m damono_jax.tools.ablation --config=configs/synthetic_ablation.py \
        --workdir=ablation_output --output=docs/ablation_synthetic.md

Builds the `synthetic_driving` source/target pair (reused when present), then trains every
variant (baseline, +seg, +seg+DA) with every seed, exports each model and scores it with the
KITTI evaluator on the test split of both domains. Each finished run leaves
`WORKDIR/<variant>_seed<k>/run.json`; a killed ablation restarts where it stopped (finished
runs are read back, an unfinished one resumes from its last checkpoint). The summary (mean
and sample standard deviation over the seeds, and every run) replaces the `ablation`
section of `--output`; text outside that section is kept.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import glob
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from damono_jax import config_utils
from damono_jax.tools import markdown

FLAGS = flags.FLAGS
SECTION_ID = "ablation"
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
                 "train/domain_acc_source", "train/domain_acc_target")


@dataclasses.dataclass(frozen=True)
class SameAs:
    """An override that copies another setting of the run's config ("data.target")."""

    key: str


# FDA_BETA is the middle of the values Yang and Soatto (2020) report (0.01, 0.05, 0.09),
# fixed before any FDA run.
FDA_BETA = 0.05
# Variants beyond the paper: name -> (the paper's variant they extend, config overrides).
EXTRA_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "full_all_levels": ("full", {"model.align_levels": (0, 1, 2, 3, 4)}),
    "fda": ("baseline", {"data.fda_beta": FDA_BETA}),
    "full_fda": ("full", {"data.fda_beta": FDA_BETA}),
    "full_dsbn": ("full", {"model.domain_specific_bn": True}),
    # Not adaptation: the baseline trained on the TARGET's labels, the bound DA aims at.
    "oracle": ("baseline", {"data.source": SameAs("data.target")}),
}
# Rows without an AdaBN row (the oracle's statistics are already the target's).
NO_ADABN = ("oracle",)
EXTRA_TITLES = {
    "full_all_levels": "+ Seg + DA at every encoder level",
    "fda": "Baseline + FDA (source img. in target style)",
    "full_fda": "+ Seg + DA + FDA",
    "full_dsbn": "+ Seg + DA, domain-specific BN statistics",
    "oracle": "Oracle: baseline on target img. + depth",
}
ADABN_SUFFIX = " + AdaBN"
# Settings added to the config after runs were recorded, with the value that reproduces
# the earlier behaviour: a stored run without the key matches only at this value.
ADDED_SETTINGS = {"model.align_levels": "(4,)", "data.fda_beta": 0.0,
                  "model.domain_specific_bn": False}
CURVE_TAG = "val/abs_rel"


def variant_title(variant: str) -> str:
    """The table title of a variant (the paper's three, then the beyond-paper ones)."""
    return {**VARIANT_TITLES, **EXTRA_TITLES}[variant]


def run_config(config: Any, variant: str, seed: int) -> Any:
    """`config` with `variant` (and its overrides) and `seed` set (a copy)."""
    if variant not in VARIANT_TITLES and variant not in EXTRA_VARIANTS:
        raise ValueError(
            f"--variants: {variant!r} is not one of "
            f"{sorted(VARIANT_TITLES) + sorted(EXTRA_VARIANTS)}"
        )
    base, overrides = EXTRA_VARIANTS.get(variant, (variant, {}))
    run = copy.deepcopy(config)
    with run.unlocked():
        run.variant = base
        run.seed = seed
        for key, value in overrides.items():
            if isinstance(value, SameAs):
                value = _node(run, value.key)[value.key.rsplit(".", 1)[-1]]
            _node(run, key)[key.rsplit(".", 1)[-1]] = value
    return run


def _node(config: Any, key: str) -> Any:
    """The ConfigDict holding the dotted `key` ("data.source" -> config.data)."""
    node = config
    for parent in key.split(".")[:-1]:
        node = node[parent]
    return node


def logged_scalars(workdir: str, tags: Sequence[str]) -> dict[str, dict[int, float]]:
    """`{tag: {step: value}}` of the scalars `tags` in `workdir`'s TensorBoard events."""
    import tensorflow as tf  # noqa: PLC0415

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


def _write_json(path: str, record: Mapping[str, Any]) -> None:
    temporary = f"{path}.tmp"
    with open(temporary, "w") as handle:
        json.dump(record, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(temporary, path)


# Settings that do not change the trained weights (where the data lives).
IGNORED_SETTINGS = ("data.data_dir",)


def run_settings(config: Any) -> dict[str, Any]:
    """The run's flattened config (`config_utils.flatten_for_hparams`) as stored in run.json."""
    flat = config_utils.flatten_for_hparams(config)
    return {key: flat[key] for key in sorted(flat) if key not in IGNORED_SETTINGS}


def settings_differences(stored: Mapping[str, Any] | None, current: Mapping[str, Any]
                         ) -> list[str]:
    """`"key: stored -> current"` for each setting that differs (all of them if none stored)."""
    if stored is None:
        return ["no config recorded (written by an older version)"]
    stored = {**{k: v for k, v in ADDED_SETTINGS.items() if k in current}, **stored}
    keys = sorted(set(stored) | set(current))
    return [
        f"{key}: {stored.get(key, '<missing>')!r} -> {current.get(key, '<missing>')!r}"
        for key in keys if stored.get(key, "<missing>") != current.get(key, "<missing>")
    ]


def score_export(export_dir: str, data_dir: str, domains: Mapping[str, str],
                 output_prefix: str) -> dict[str, Any]:
    """Every EVALUATIONS entry of an export (test splits, cap 80 m, no crop).

    `domains` names the TFDS datasets of "source" and "target": the ablation's pair, also
    for a run (the oracle) that trains on other data.
    """
    from damono_jax import evaluate  # noqa: PLC0415

    results = {}
    for name, stream, scaling in EVALUATIONS:
        evaluated = evaluate.evaluate_export(
            export_dir, data_dir, split="test", dataset=domains[stream], caps=(int(CAP),),
            crop="none", scaling=scaling, output_dir=f"{output_prefix}_{name}",
            progress=False, print_table=False,
        )
        results[name] = evaluated["results"][CAP]
    return results


def adabn_results(config: Any, run_dir: str, domains: Mapping[str, str]) -> dict[str, Any]:
    """Scores of the run's export after AdaBN on the target training images.

    The adapted export (`run_dir/export_adabn`, reused when present) has the encoder's
    BatchNorm statistics of `domains["target"]`/`config.data.target_split` and is scored on
    both domains' test splits, as one model deployed on the target camera would be.
    """
    from damono_jax import adabn  # noqa: PLC0415

    adapted = os.path.join(run_dir, "export_adabn")
    if not os.path.isdir(adapted):
        adabn.adapt_export(os.path.join(run_dir, "export"), config.data.data_dir,
                           domains["target"], config.data.target_split, adapted)
    return score_export(adapted, config.data.data_dir, domains,
                        os.path.join(run_dir, "eval_adabn"))


def train_and_score(config: Any, run_dir: str, *, adabn: bool = False,
                    domains: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Trains one run (resuming), exports it, evaluates both domains; writes run.json.

    `domains` ("source", "target" datasets to score on) defaults to the run's own. With
    `adabn`, the record also holds `results_adabn` (`adabn_results`), added to a reused
    record that lacks it.
    """
    from damono_jax import train  # noqa: PLC0415

    domains = domains or {"source": config.data.source, "target": config.data.target}
    record_path = os.path.join(run_dir, "run.json")
    settings = run_settings(config)
    if os.path.exists(record_path):
        with open(record_path) as handle:
            record = json.load(handle)
        differences = settings_differences(record.get("config"), settings)
        if differences:
            raise ValueError(
                f"{record_path}: was trained with other settings ({'; '.join(differences)}); "
                f"use another --workdir or delete {run_dir}"
            )
        logging.info("Reusing %s.", record_path)
        if adabn and "results_adabn" not in record:
            record["results_adabn"] = adabn_results(config, run_dir, domains)
            _write_json(record_path, record)
        return record
    start = time.perf_counter()
    train.train_and_evaluate(config, run_dir)
    train_s = time.perf_counter() - start
    export_dir = train.export_checkpoint(config, run_dir)
    record = {
        "variant": config.variant,
        "seed": int(config.seed),
        "num_train_steps": int(config.num_train_steps),
        "config": settings,
        "train_seconds": round(train_s, 1),
        "results": score_export(export_dir, config.data.data_dir, domains,
                                os.path.join(run_dir, "eval")),
        "final_train": last_train_scalars(run_dir),
    }
    if adabn:
        record["results_adabn"] = adabn_results(config, run_dir, domains)
    _write_json(record_path, record)
    return record


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
            row = [variant_title(variant) + suffix, str(len(runs))]
            for name, _, _ in EVALUATIONS:
                metrics = ("abs_rel",) if name == "target_metric" else SUMMARY_METRICS
                row += [mean_std([r[key][name][m] for r in runs]) for m in metrics]
            rows.append(row)
    return rows


SUMMARY_HEADER = (
    "variant", "seeds",
    "target AbsRel ↓", "target RMSE ↓", "target δ<1.25 ↑",
    "target AbsRel, no scaling ↓",
    "source AbsRel ↓", "source RMSE ↓", "source δ<1.25 ↑",
)
RUN_HEADER = (
    "variant", "seed", "train s", "target AbsRel", "target RMSE", "target δ<1.25",
    "target AbsRel no scaling", "source AbsRel", "target / source AbsRel + AdaBN",
    "final depth loss", "final seg loss", "final adv loss", "classifier acc source / target",
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
            fmt("depth_loss"), fmt("seg_loss"), fmt("adv_loss"), accuracy,
        ])
    return rows


def schedule_description(config: Any) -> str:
    """The config values that define the schedule, as one markdown line."""
    keys = ("data.image_size", "batch_size", "num_train_steps", "optim.learning_rate",
            "optim.discriminator_learning_rate", "loss.seg_weight", "loss.adv_weight",
            "grl.schedule", "grl.gamma", "grl.max_scale", "model.discriminator_features",
            "model.encoder_init")
    flat = config_utils.flatten_for_hparams(config)
    return ", ".join(f"`{key}={flat[key]}`" for key in keys)


def report(config: Any, records: Sequence[Mapping[str, Any]], variants: Sequence[str],
           command: str, wall_s: float, figures: Sequence[tuple[str, str]] = ()) -> str:
    """The markdown body of the section: tables, then `figures` as (caption, relative path)."""
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    lines = [
        "## Measured: baseline vs +seg vs +seg+DA on synthetic_driving",
        "",
        f"- command: `{command}`",
        f"- date (UTC): {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M}; machine: "
        f"{machine}; jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} "
        f"device(s); this invocation took {wall_s / 60:.0f} min (runs found "
        "finished were read back)",
        f"- schedule: {schedule_description(config)}",
        f"- evaluation: `synthetic_driving/<domain>` test split (200 frames each), cap {CAP} m, "
        "no crop, per-image median scaling (the paper's protocol) unless marked "
        "'no scaling' (metric depth as predicted); mean ± sample std over the seeds. "
        f"'{ADABN_SUFFIX.strip()}' rows: the same runs with the encoder's BatchNorm statistics "
        "re-estimated on the target training images (`damono_jax.adabn`), scored on both "
        "domains.",
        "",
        markdown.markdown_table(SUMMARY_HEADER, summary_rows(records, variants)),
        "",
        "Every run (last logged training values: mean over the last logging window):",
        "",
        markdown.markdown_table(RUN_HEADER, run_rows(records)),
    ]
    for caption, path in figures:
        lines += ["", f"![{caption}]({path})", "", f"*{caption}*"]
    return "\n".join(lines)


# Target test frames of the qualitative figure: fixed before any model was looked at.
FIGURE_TEST_INDICES = (0, 50, 100, 150)


def make_figures(records: Sequence[Mapping[str, Any]], variants: Sequence[str], *,
                 data_dir: str, target: str, num_train_steps: int, figures_dir: str,
                 section: str, relative_to: str) -> list[tuple[str, str]]:
    """Writes the learning-curve and Figure 4 PNGs; returns (caption, path from the doc).

    Figure 4 shows `target`'s test frames FIGURE_TEST_INDICES from the TFDS `data_dir`.
    """
    from damono_jax import export, input_pipeline  # noqa: PLC0415
    from damono_jax.tools import ablation_figures  # noqa: PLC0415

    figures = []
    curves = {}
    for variant in variants:
        runs = [r for r in records if r["name"] == variant]
        per_seed = [validation_curve(r["run_dir"]) for r in runs]
        if runs and all(per_seed):
            curves[variant_title(variant)] = per_seed
    steps = int(num_train_steps)
    if curves:
        path = ablation_figures.plot_learning_curves(
            curves, os.path.join(figures_dir, f"{section}_curves.png"),
            f"synthetic_driving, {steps} steps: target val AbsRel (mean ± std over seeds)",
        )
        figures.append((f"Learning curves ({steps} steps): target val AbsRel, mean ± std over "
                        "seeds", os.path.relpath(path, relative_to)))
    first = {v: next(r for r in records if r["name"] == v) for v in variants
             if any(r["name"] == v for r in records)}
    models = {variant_title(v): export.load_export(os.path.join(r["run_dir"], "export"))
              for v, r in first.items()}
    if not models:
        return figures
    input_size = next(iter(models.values())).input_size
    test_config = input_pipeline.eval_config(data_dir, target, "test", input_size)
    examples = list(input_pipeline.create_eval_dataset(
        test_config, "test", max(FIGURE_TEST_INDICES) + 1))
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


def run_ablation(config: Any, workdir: str, variants: Sequence[str], seeds: Sequence[int],
                 data_dir: str | None = None, *, adabn: bool = False) -> list[dict[str, Any]]:
    """Builds the data if needed and trains + scores every (variant, seed); returns the runs.

    Each returned record also has `name` (the variant as named here) and `run_dir`.
    """
    from data_prep import build  # noqa: PLC0415

    if not variants or not seeds:
        raise ValueError("--variants and --seeds must each name at least one value")
    for variant in variants:
        run_config(config, variant, 0)  # fails early on an unknown variant
    workdir = os.path.abspath(workdir)
    config = copy.deepcopy(config)
    with config.unlocked():
        config.data.data_dir = os.path.abspath(data_dir or os.path.join(workdir, "data"))
    for name in sorted({config.data.source, config.data.target}):
        print(build.build_dataset(name, config.data.data_dir), flush=True)
    domains = {"source": config.data.source, "target": config.data.target}
    records = []
    total = len(variants) * len(seeds)
    for variant in variants:
        for seed in seeds:
            run_dir = os.path.join(workdir, f"{variant}_seed{seed}")
            print(f"\n=== [{len(records) + 1}/{total}] {variant}, seed {seed}: {run_dir}",
                  flush=True)
            record = train_and_score(run_config(config, variant, seed), run_dir,
                                     adabn=adabn and variant not in NO_ADABN, domains=domains)
            target = record["results"]["target"]
            print(f"    target abs_rel {target['abs_rel']:.3f} rmse {target['rmse']:.3f} "
                  f"a1 {target['a1']:.3f}", flush=True)
            records.append({**record, "name": variant, "run_dir": run_dir})
    return records


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    import tensorflow as tf  # noqa: PLC0415

    tf.config.set_visible_devices([], "GPU")
    try:
        seeds = [int(seed) for seed in FLAGS.seeds]
    except ValueError as error:
        raise app.UsageError(f"--seeds={','.join(FLAGS.seeds)}: expected integers") from error
    start = time.perf_counter()
    data_dir = os.path.abspath(FLAGS.data_dir or os.path.join(FLAGS.workdir, "data"))
    records = run_ablation(FLAGS.config, FLAGS.workdir, FLAGS.variants, seeds, data_dir,
                           adabn=FLAGS.adabn)
    command = "python -m damono_jax.tools.ablation " + " ".join(
        arg for arg in sys.argv[1:] if not arg.startswith("--output")
    )
    figures = []
    if FLAGS.output and FLAGS.figures_dir:
        figures = make_figures(
            records, FLAGS.variants, data_dir=data_dir, target=FLAGS.config.data.target,
            num_train_steps=FLAGS.config.num_train_steps, figures_dir=FLAGS.figures_dir,
            section=FLAGS.section, relative_to=os.path.dirname(os.path.abspath(FLAGS.output)),
        )
    body = report(FLAGS.config, records, FLAGS.variants, command.strip(),
                  time.perf_counter() - start, figures)
    print("\n" + body)
    if FLAGS.output:
        markdown.write_markdown_section(FLAGS.output, FLAGS.section, body)
        print(f"\nwrote section '{FLAGS.section}' of {FLAGS.output}")


def define_flags() -> None:
    """Defines this CLI's absl flags (only when run as a program: the tools share names)."""
    config_flags.DEFINE_config_file(
        "config", "configs/synthetic_ablation.py", "Training configuration shared by every run.",
        lock_config=True,
    )
    flags.DEFINE_string("workdir", "ablation_output", "Folder for data, runs and results.")
    flags.DEFINE_string("data_dir", None,
                        "TFDS data_dir (default: WORKDIR/data, built if missing).")
    flags.DEFINE_list("variants", [*VARIANT_TITLES, *EXTRA_VARIANTS],
                      f"Variants to train: {', '.join(VARIANT_TITLES)} (the paper's) or "
                      f"{', '.join(EXTRA_VARIANTS)}.")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (config.seed) per variant.")
    flags.DEFINE_bool("adabn", True, "Also score every run after AdaBN on the target images.")
    flags.DEFINE_string("output", "docs/ablation_synthetic.md", "Markdown file ('' = none).")
    flags.DEFINE_string("section", SECTION_ID, "Generated section of --output to replace.")
    flags.DEFINE_string("figures_dir", "docs/figures",
                        "Where the PNG figures go ('' = none); linked from --output.")


if __name__ == "__main__":
    define_flags()
    app.run(main)
