"""The synthetic miniature of the paper's Table 3: `make ablation`.

    python -m damono_jax.tools.ablation --config=configs/synthetic_ablation.py \
        --workdir=ablation_output --output=docs/ablation_synthetic.md

Builds the `synthetic_driving` source/target pair (reused when present), then trains every
variant (baseline, +seg, +seg+DA) with every seed, exports each model and scores it with the
KITTI evaluator on the test split of both domains. Each finished run leaves
`WORKDIR/<variant>_seed<k>/run.json`; a killed ablation restarts where it stopped (finished
runs are read back, an unfinished one resumes from its last checkpoint). The summary (mean
and sample standard deviation over the seeds, and every run) replaces the `ablation`
section of `--output`; text outside that section is kept. Every table carries the constant
prior (`damono_jax.constant_prior`, the floor), scored once per workdir.

The trained-encoder protocol (`--pretrain_steps=N`): for each seed, stage 1 trains the
source-only baseline for N steps (`WORKDIR/pretrain/baseline_seed<k>`, scored like any run);
every row of the table then starts from its seed's stage-1 checkpoint (`config.init_from`)
and trains `config.num_train_steps` more steps in its own variant, the baseline row
included:

    python -m damono_jax.tools.ablation --config=configs/synthetic_campaign.py \
        --pretrain_steps=750 --variants=baseline,seg,full,full_fair,... --workdir=campaign \
        --output=docs/adaptation_campaign.md
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from absl import app, flags, logging
from ml_collections import config_flags

from damono_jax import config_utils, files
from damono_jax.tools import markdown
from damono_jax.tools.ablation_report import (
    CAP,
    EVALUATIONS,
    STRONG_SUFFIX,
    VARIANT_TITLES,
    last_train_scalars,
    make_figures,
    report,
)

FLAGS = flags.FLAGS
SECTION_ID = "ablation"
@dataclasses.dataclass(frozen=True)
class SameAs:
    """An override that copies another setting of the run's config ("data.target")."""

    key: str


# FDA_BETA is the middle of the values Yang and Soatto (2020) report (0.01, 0.05, 0.09),
# fixed before any FDA run.
FDA_BETA = 0.05
# The fair game's GRL warm-up: lambda = 0 for the first 20% of training (where the paper's
# ramp already reaches 0.76), fixed before any run of it.
FAIR_WARMUP_FRACTION = 0.2
# Variants beyond the paper: name -> (the paper's variant they extend, config overrides).
EXTRA_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "full_all_levels": ("full", {"model.align_levels": (0, 1, 2, 3, 4)}),
    "fda": ("baseline", {"data.fda_beta": FDA_BETA}),
    "full_fda": ("full", {"data.fda_beta": FDA_BETA}),
    "full_dsbn": ("full", {"model.domain_specific_bn": True}),
    # The paper's model with the game made fair: the classifiers' own Adam at a constant
    # rate, a GRL warm-up, spectral normalisation, and classifiers on layer3 and layer4.
    "full_fair": ("full", {"optim.discriminator_lr_decay": False,
                           "grl.warmup_fraction": FAIR_WARMUP_FRACTION,
                           "model.discriminator_spectral_norm": True,
                           "model.align_levels": (3, 4)}),
    # Output-space alignment alone (AdaptSegNet): no feature classifier.
    "full_output": ("full", {"model.output_alignment": True, "model.align_levels": ()}),
    # The bottleneck classifier conditioned on the semantic softmax (CDAN, randomized).
    "full_cdan": ("full", {"model.domain_conditioning": "cdan"}),
    # The BatchNorm control of `full`: the same batches through the encoder in training mode
    # ([source; target], so its statistics mix both domains) and the same classifier, trained
    # as in `full`, but the reversed gradient scaled to 0: the encoder never sees the game.
    "seg_mixed_bn": ("full", {"grl.max_scale": 0.0}),
    # Not adaptation: the baseline trained on the TARGET's labels, the bound DA aims at.
    "oracle": ("baseline", {"data.source": SameAs("data.target")}),
}
# `make ablation`'s rows (docs/ablation_synthetic.md): the variants that existed then.
DEFAULT_VARIANTS = ("baseline", "seg", "full", "full_all_levels", "fda", "full_fda",
                    "full_dsbn", "oracle")
# Rows without an AdaBN row (the oracle's statistics are already the target's).
NO_ADABN = ("oracle",)
# Settings added to the config after runs were recorded, with the value that reproduces the
# earlier behaviour: a stored run without the key matches only at this value.
ADDED_SETTINGS = {"model.align_levels": "(4,)", "data.fda_beta": 0.0,
                  "model.domain_specific_bn": False, "init_from": "",
                  "grl.warmup_fraction": 0.0, "optim.discriminator_lr_decay": True,
                  "model.discriminator_spectral_norm": False, "model.output_alignment": False,
                  "model.output_discriminator_features": "(64, 128, 256, 512)",
                  "model.domain_conditioning": "none", "model.cdan_features": 1024,
                  "loss.output_adv_weight": 0.001, "init_from_allow_mismatch": False}
# Stored values of a setting whose type changed, with what they mean now.
RENAMED_VALUES = {("data.augment", True): "monodepth2", ("data.augment", False): "none"}
# Stage 1 of the trained-encoder protocol: WORKDIR/PRETRAIN_SUBDIR/baseline_seed<k>.
PRETRAIN_SUBDIR = "pretrain"
PRETRAIN_VARIANT = "baseline"
# The constant prior's scores, computed once per workdir.
CONSTANT_PRIOR_FILE = "constant_prior.json"


def known_variant(variant: str) -> bool:
    """Whether `variant` names a row: the paper's, a beyond-paper one, or one + "_strong"."""
    base = variant.removesuffix(STRONG_SUFFIX)
    return base in VARIANT_TITLES or base in EXTRA_VARIANTS


def run_config(config: Any, variant: str, seed: int, init_from: str = "") -> Any:
    """`config` with `variant` (and its overrides), `seed` and `init_from` set (a copy)."""
    if not known_variant(variant):
        raise ValueError(
            f"--variants: {variant!r} is not one of "
            f"{sorted(VARIANT_TITLES) + sorted(EXTRA_VARIANTS)} (optionally + "
            f"{STRONG_SUFFIX!r})"
        )
    name = variant.removesuffix(STRONG_SUFFIX)
    base, overrides = EXTRA_VARIANTS.get(name, (name, {}))
    overrides = dict(overrides)
    if variant.endswith(STRONG_SUFFIX):
        overrides["data.augment"] = "strong"
    if init_from:
        overrides["init_from"] = init_from
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
    stored = {k: RENAMED_VALUES.get((k, v), v) if isinstance(v, bool) else v
              for k, v in stored.items()}
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
    from damono_jax.inference import export_evaluation

    results = {}
    for name, stream, scaling in EVALUATIONS:
        evaluated = export_evaluation.evaluate_export(
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
    from damono_jax.inference import adabn

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
    from damono_jax.train import latest_checkpoint, loop

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
            files.atomic_write_json(record_path, record)
        return record
    start = time.perf_counter()
    loop.train_and_evaluate(config, run_dir)
    train_s = time.perf_counter() - start
    export_dir = latest_checkpoint.export_checkpoint(config, run_dir)
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
    files.atomic_write_json(record_path, record)
    return record


def constant_prior_results(config: Any, workdir: str, domains: Mapping[str, str]
                           ) -> dict[str, Any]:
    """The constant prior's EVALUATIONS (`damono_jax.constant_prior`), cached in
    `workdir/constant_prior.json` (recomputed when the source or data folder differs)."""
    from damono_jax import constant_prior

    path = os.path.join(workdir, CONSTANT_PRIOR_FILE)
    key = {"source": config.data.source, "source_split": config.data.source_split,
           "data_dir": config.data.data_dir, "domains": dict(domains)}
    if os.path.exists(path):
        with open(path) as handle:
            record = json.load(handle)
        if record.get("key") == key:
            return record["results"]
    prior = constant_prior.source_prior(config.data.data_dir, config.data.source,
                                        config.data.source_split)
    results = {}
    for name, stream, scaling in EVALUATIONS:
        scored = constant_prior.evaluate_prior(prior, config.data.data_dir, domains[stream],
                                               "test", caps=(int(CAP),), scaling=scaling)
        results[name] = {k: v for k, v in scored[int(CAP)].items() if k != "per_image"}
    files.atomic_write_json(path, {"key": key, "results": results})
    return results


def pretrain_dir(workdir: str, seed: int) -> str:
    """Stage 1's run folder of `seed` (the trained-encoder protocol)."""
    return os.path.join(workdir, PRETRAIN_SUBDIR, f"{PRETRAIN_VARIANT}_seed{seed}")


def run_ablation(config: Any, workdir: str, variants: Sequence[str], seeds: Sequence[int],
                 data_dir: str | None = None, *, adabn: bool = False,
                 pretrain_steps: int = 0) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Builds the data if needed and trains + scores every (variant, seed).

    With `pretrain_steps` > 0, stage 1 first trains the source-only baseline for that many
    steps per seed, and every row starts from it (module docstring). Returns the rows' run
    records (each with `name`, the variant as named here, and `run_dir`) and a dict with
    `constant_prior` (its EVALUATIONS) and `pretrain` (stage 1's records, [] without it).
    """
    from data_prep import build

    if not variants or not seeds:
        raise ValueError("--variants and --seeds must each name at least one value")
    if pretrain_steps < 0:
        raise ValueError(f"--pretrain_steps={pretrain_steps}: must be >= 0")
    for variant in variants:
        run_config(config, variant, 0)  # fails early on an unknown variant
    workdir = os.path.abspath(workdir)
    config = copy.deepcopy(config)
    with config.unlocked():
        config.data.data_dir = os.path.abspath(data_dir or os.path.join(workdir, "data"))
    for name in sorted({config.data.source, config.data.target}):
        print(build.build_dataset(name, config.data.data_dir), flush=True)
    domains = {"source": config.data.source, "target": config.data.target}
    floor = constant_prior_results(config, workdir, domains)
    target_floor = floor["target"]["abs_rel"]
    print(f"constant prior (per-pixel median of the source training depth): target abs_rel "
          f"{target_floor:.3f}", flush=True)
    pretrained = []
    for seed in seeds if pretrain_steps else ():
        run_dir = pretrain_dir(workdir, seed)
        stage1 = run_config(config, PRETRAIN_VARIANT, seed)
        with stage1.unlocked():
            stage1.num_train_steps = pretrain_steps
        print(f"\n=== stage 1, seed {seed}: {PRETRAIN_VARIANT} for {pretrain_steps} steps: "
              f"{run_dir}", flush=True)
        record = train_and_score(stage1, run_dir, domains=domains)
        pretrained.append({**record, "name": PRETRAIN_VARIANT, "run_dir": run_dir})
    records = []
    total = len(variants) * len(seeds)
    for variant in variants:
        for seed in seeds:
            run_dir = os.path.join(workdir, f"{variant}_seed{seed}")
            init_from = pretrain_dir(workdir, seed) if pretrain_steps else ""
            print(f"\n=== [{len(records) + 1}/{total}] {variant}, seed {seed}: {run_dir}",
                  flush=True)
            record = train_and_score(run_config(config, variant, seed, init_from), run_dir,
                                     adabn=adabn and variant not in NO_ADABN, domains=domains)
            target = record["results"]["target"]
            below = "below" if target["abs_rel"] < target_floor else "NOT below"
            print(f"    target abs_rel {target['abs_rel']:.3f} rmse {target['rmse']:.3f} "
                  f"a1 {target['a1']:.3f} ({below} the constant prior {target_floor:.3f})",
                  flush=True)
            records.append({**record, "name": variant, "run_dir": run_dir})
    return records, {"constant_prior": floor, "pretrain": pretrained}


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from damono_jax import datasets

    datasets.hide_gpus_from_tf()
    try:
        seeds = [int(seed) for seed in FLAGS.seeds]
    except ValueError as error:
        raise app.UsageError(f"--seeds={','.join(FLAGS.seeds)}: expected integers") from error
    start = time.perf_counter()
    data_dir = os.path.abspath(FLAGS.data_dir or os.path.join(FLAGS.workdir, "data"))
    records, context = run_ablation(FLAGS.config, FLAGS.workdir, FLAGS.variants, seeds,
                                    data_dir, adabn=FLAGS.adabn,
                                    pretrain_steps=FLAGS.pretrain_steps)
    command = "python -m damono_jax.tools.ablation " + " ".join(
        arg for arg in sys.argv[1:] if not arg.startswith("--output")
    )
    figures = []
    if FLAGS.output and FLAGS.figures_dir:
        figures = make_figures(
            records, FLAGS.variants, data_dir=data_dir, target=FLAGS.config.data.target,
            num_train_steps=FLAGS.config.num_train_steps, figures_dir=FLAGS.figures_dir,
            section=FLAGS.section, relative_to=os.path.dirname(os.path.abspath(FLAGS.output)),
            pretrain_steps=FLAGS.pretrain_steps,
        )
    body = report(FLAGS.config, records, FLAGS.variants, command.strip(),
                  time.perf_counter() - start, figures, context=context,
                  pretrain_steps=FLAGS.pretrain_steps)
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
    flags.DEFINE_list("variants", list(DEFAULT_VARIANTS),
                      f"Variants to train: {', '.join(VARIANT_TITLES)} (the paper's) or "
                      f"{', '.join(EXTRA_VARIANTS)}, each optionally + '{STRONG_SUFFIX}' "
                      "(strong augmentation).")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (config.seed) per variant.")
    flags.DEFINE_integer("pretrain_steps", 0,
                         "Trained-encoder protocol: source-only baseline steps per seed that "
                         "every row starts from (0 = every row from scratch).")
    flags.DEFINE_bool("adabn", True, "Also score every run after AdaBN on the target images.")
    flags.DEFINE_string("output", "docs/ablation_synthetic.md", "Markdown file ('' = none).")
    flags.DEFINE_string("section", SECTION_ID, "Generated section of --output to replace.")
    flags.DEFINE_string("figures_dir", "docs/figures",
                        "Where the PNG figures go ('' = none); linked from --output.")


if __name__ == "__main__":
    from damono_jax import cli

    define_flags()
    cli.run(main)
