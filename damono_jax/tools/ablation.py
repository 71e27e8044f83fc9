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


def run_config(config: Any, variant: str, seed: int) -> Any:
    """`config` with `variant` and `seed` set (a copy; the shared config is not touched)."""
    if variant not in VARIANT_TITLES:
        raise ValueError(f"--variants: {variant!r} is not one of {sorted(VARIANT_TITLES)}")
    run = copy.deepcopy(config)
    with run.unlocked():
        run.variant = variant
        run.seed = seed
    return run


def last_train_scalars(workdir: str) -> dict[str, float]:
    """The last logged value of each of TRAIN_SCALARS in `workdir`'s TensorBoard events."""
    import tensorflow as tf  # noqa: PLC0415

    values: dict[str, tuple[int, float]] = {}
    for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag not in TRAIN_SCALARS:
                    continue
                number = (
                    float(tf.make_ndarray(value.tensor)) if value.HasField("tensor")
                    else float(value.simple_value)
                )
                if value.tag not in values or event.step >= values[value.tag][0]:
                    values[value.tag] = (event.step, number)
    return {tag.removeprefix("train/"): number for tag, (_, number) in values.items()}


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
    keys = sorted(set(stored) | set(current))
    return [
        f"{key}: {stored.get(key, '<missing>')!r} -> {current.get(key, '<missing>')!r}"
        for key in keys if stored.get(key, "<missing>") != current.get(key, "<missing>")
    ]


def train_and_score(config: Any, run_dir: str) -> dict[str, Any]:
    """Trains one run (resuming), exports it, evaluates both domains; writes run.json."""
    from damono_jax import evaluate, train  # noqa: PLC0415

    record_path = os.path.join(run_dir, "run.json")
    settings = run_settings(config)
    if os.path.exists(record_path):
        with open(record_path) as handle:
            record = json.load(handle)
        differences = settings_differences(record.get("config"), settings)
        if not differences:
            logging.info("Reusing %s.", record_path)
            return record
        raise ValueError(
            f"{record_path}: was trained with other settings ({'; '.join(differences)}); "
            f"use another --workdir or delete {run_dir}"
        )
    start = time.perf_counter()
    train.train_and_evaluate(config, run_dir)
    train_s = time.perf_counter() - start
    export_dir = train.export_checkpoint(config, run_dir)
    results = {}
    for name, stream, scaling in EVALUATIONS:
        dataset = config.data.target if stream == "target" else config.data.source
        evaluated = evaluate.evaluate_export(
            export_dir, config.data.data_dir, split="test", dataset=dataset, caps=(int(CAP),),
            crop="none", scaling=scaling, output_dir=os.path.join(run_dir, f"eval_{name}"),
            progress=False, print_table=False,
        )
        results[name] = evaluated["results"][CAP]
    record = {
        "variant": config.variant,
        "seed": int(config.seed),
        "num_train_steps": int(config.num_train_steps),
        "config": settings,
        "train_seconds": round(train_s, 1),
        "results": results,
        "final_train": last_train_scalars(run_dir),
    }
    _write_json(record_path, record)
    return record


def mean_std(values: Sequence[float]) -> str:
    """'mean ± sample std' (std with n - 1; only the mean for a single value)."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def summary_rows(records: Sequence[Mapping[str, Any]], variants: Sequence[str]) -> list[list[str]]:
    """One row per variant: mean ± std over seeds of every evaluation's summary metrics."""
    rows = []
    for variant in variants:
        runs = [r for r in records if r["variant"] == variant]
        row = [VARIANT_TITLES[variant], str(len(runs))]
        for name, _, _ in EVALUATIONS:
            metrics = ("abs_rel",) if name == "target_metric" else SUMMARY_METRICS
            row += [mean_std([r["results"][name][m] for r in runs]) for m in metrics]
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
    "target AbsRel no scaling", "source AbsRel", "final depth loss", "final seg loss",
    "final adv loss", "classifier acc source / target",
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
        rows.append([
            r["variant"], str(r["seed"]), f"{r['train_seconds']:.0f}",
            f"{r['results']['target']['abs_rel']:.3f}", f"{r['results']['target']['rmse']:.3f}",
            f"{r['results']['target']['a1']:.3f}",
            f"{r['results']['target_metric']['abs_rel']:.3f}",
            f"{r['results']['source']['abs_rel']:.3f}",
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
           command: str, wall_s: float) -> str:
    """The markdown body of the `ablation` section."""
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    return "\n".join([
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
        "'no scaling' (metric depth as predicted); mean ± sample std over the seeds.",
        "",
        markdown.markdown_table(SUMMARY_HEADER, summary_rows(records, variants)),
        "",
        "Every run (last logged training values: mean over the last logging window):",
        "",
        markdown.markdown_table(RUN_HEADER, run_rows(records)),
    ])


def run_ablation(config: Any, workdir: str, variants: Sequence[str], seeds: Sequence[int],
                 data_dir: str | None = None) -> list[dict[str, Any]]:
    """Builds the data if needed and trains + scores every (variant, seed); returns the runs."""
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
    records = []
    total = len(variants) * len(seeds)
    for variant in variants:
        for seed in seeds:
            run_dir = os.path.join(workdir, f"{variant}_seed{seed}")
            print(f"\n=== [{len(records) + 1}/{total}] {variant}, seed {seed}: {run_dir}",
                  flush=True)
            record = train_and_score(run_config(config, variant, seed), run_dir)
            target = record["results"]["target"]
            print(f"    target abs_rel {target['abs_rel']:.3f} rmse {target['rmse']:.3f} "
                  f"a1 {target['a1']:.3f}", flush=True)
            records.append(record)
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
    records = run_ablation(FLAGS.config, FLAGS.workdir, FLAGS.variants, seeds, FLAGS.data_dir)
    command = "python -m damono_jax.tools.ablation " + " ".join(
        arg for arg in sys.argv[1:] if not arg.startswith("--output")
    )
    body = report(FLAGS.config, records, FLAGS.variants, command.strip(),
                  time.perf_counter() - start)
    print("\n" + body)
    if FLAGS.output:
        markdown.write_markdown_section(FLAGS.output, SECTION_ID, body)
        print(f"\nwrote section '{SECTION_ID}' of {FLAGS.output}")


def define_flags() -> None:
    """Defines this CLI's absl flags (only when run as a program: the tools share names)."""
    config_flags.DEFINE_config_file(
        "config", "configs/synthetic_ablation.py", "Training configuration shared by every run.",
        lock_config=True,
    )
    flags.DEFINE_string("workdir", "ablation_output", "Folder for data, runs and results.")
    flags.DEFINE_string("data_dir", None,
                        "TFDS data_dir (default: WORKDIR/data, built if missing).")
    flags.DEFINE_list("variants", ["baseline", "seg", "full"], "Variants to train.")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (config.seed) per variant.")
    flags.DEFINE_string("output", "docs/ablation_synthetic.md", "Markdown file ('' = none).")


if __name__ == "__main__":
    define_flags()
    app.run(main)
