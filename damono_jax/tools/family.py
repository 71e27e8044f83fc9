"""Adaptation, round 3: the campaign over the family of one-factor targets: `make family`.

    python -m damono_jax.tools.family --config=configs/synthetic_campaign.py \
        --workdir=family_output --output=docs/adaptation_family.md

Round 2's trained-encoder protocol (`tools.ablation --pretrain_steps`), on every target of
`TARGETS` (docs/adaptation_family.md, "Registered"):

* stage 1, the source-only baseline for `--pretrain_steps` steps per seed, is shared by
  every row and target (`WORKDIR/pretrain/baseline_seed<k>`);
* the rows that never read a target image (`SHARED_ROWS`: the baseline and the baseline with
  strong augmentation) train once per seed (`WORKDIR/<row>_seed<k>`) and are scored on every
  target (`scores/<target>.json` in the run folder);
* the rows that do (`TARGET_ROWS`: the BatchNorm control, the paper's `full`, the oracle)
  train per target and seed (`WORKDIR/<target>/<row>_seed<k>`).

Seeds run in the outer loop, so seed 0 of every row and target comes first and a partial
campaign already shows the whole picture. Every finished run is read back and an unfinished
one resumes from its last checkpoint, so a killed campaign restarts where it stopped. The
tables (`tools.family_report`) replace the `family` section of `--output`.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from absl import app, flags, logging
from ml_collections import config_flags

from damono_jax import files
from damono_jax.tools import ablation, markdown

FLAGS = flags.FLAGS
SECTION_ID = "family"
DATASET = "synthetic_driving"
SOURCE = f"{DATASET}/source"
# Registered targets, in the order they are trained: the four one-factor looks, then the
# round-2 target (which already has every row but the BatchNorm control).
TARGETS = ("target_palette", "target_texture", "target_lighting", "target_camera", "target")
SHARED_ROWS = ("baseline", "baseline_strong")
TARGET_ROWS = {
    **{target: ("seg_mixed_bn", "full", "oracle") for target in TARGETS[:4]},
    "target": ("seg_mixed_bn",),
}
# Stage 1 trains with round 2's config, whose target is the round-2 one (it reads it only to
# log validation curves), so round 2's stage-1 checkpoints are reusable as they are.
STAGE1_TARGET = "target"
SCORES_SUBDIR = "scores"
ALIGNMENT_SUBDIR = "alignment"
# The alignment measure (`tools.alignment`) is taken of every model of this seed.
ALIGNMENT_SEED = 0
# Rows with a trained feature classifier, whose own held-out accuracy is measured too.
CLASSIFIER_ROWS = ("seg_mixed_bn", "full")


def dataset(look: str) -> str:
    """The TFDS name of a look ("target_palette" -> "synthetic_driving/target_palette")."""
    return f"{DATASET}/{look}"


def _with_target(config: Any, target: str) -> Any:
    config = copy.deepcopy(config)
    with config.unlocked():
        config.data.source = SOURCE
        config.data.target = dataset(target)
    return config


def shared_scores(run_dir: str, data_dir: str, target: str) -> dict[str, Any]:
    """A shared row's scores on `target` (ablation.EVALUATIONS), cached in its run folder."""
    path = os.path.join(run_dir, SCORES_SUBDIR, f"{target}.json")
    if os.path.exists(path):
        with open(path) as handle:
            return json.load(handle)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    results = ablation.score_export(
        os.path.join(run_dir, "export"), data_dir,
        {"source": SOURCE, "target": dataset(target)},
        os.path.join(run_dir, SCORES_SUBDIR, f"eval_{target}"),
    )
    files.atomic_write_json(path, results)
    return results


def alignment_record(config: Any, name: str, run_dir: str, data_dir: str, target: str
                     ) -> dict[str, Any]:
    """The alignment measure of one model (`run_dir`, trained as row `name` with `config`)
    between the source and `target`, cached in the run folder."""
    from damono_jax.tools import alignment, domain_probe

    path = os.path.join(run_dir, ALIGNMENT_SUBDIR, f"{target}.json")
    if os.path.exists(path):
        with open(path) as handle:
            return json.load(handle)
    features = domain_probe.export_features(os.path.join(run_dir, "export"), data_dir, SOURCE,
                                         dataset(target))
    record = {"levels": alignment.level_measures(features)}
    if name in CLASSIFIER_ROWS:
        record["classifier"] = alignment.classifier_accuracy(config, run_dir, data_dir,
                                                             SOURCE, dataset(target))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    files.atomic_write_json(path, record)
    return record


def run_family(config: Any, workdir: str, seeds: Sequence[int], targets: Sequence[str],
               pretrain_steps: int, data_dir: str | None = None, *, train: bool = True
               ) -> dict[str, Any]:
    """Builds the looks if needed, then trains and scores every registered run.

    With `train` False, nothing is trained: the runs not finished yet are left out (a
    report of a campaign under way).

    Returns `{"floors": {target: EVALUATIONS}, "stage1": [records], "runs": [records],
    "alignment": [{"name", "target", "run_dir", "levels", "classifier"?}], "workdir"}`; each
    run record
    has `name` (its row), `target`, `seed` and `run_dir`, and a shared row has one record per
    target (its scores on that target in `results`). The alignment measure is taken of
    stage 1 and every row at seed ALIGNMENT_SEED, once that seed's runs are finished.
    """
    from data_prep import build

    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise ValueError(f"--targets: {unknown or targets} is not a subset of {TARGETS}")
    if not seeds:
        raise ValueError("--seeds must name at least one seed")
    if pretrain_steps < 1:
        raise ValueError(f"--pretrain_steps={pretrain_steps}: must be >= 1")
    workdir = os.path.abspath(workdir)
    config = copy.deepcopy(config)
    with config.unlocked():
        config.data.data_dir = os.path.abspath(data_dir or os.path.join(workdir, "data"))
    data_dir = config.data.data_dir
    for look in ("source", STAGE1_TARGET, *targets):
        print(build.build_dataset(dataset(look), data_dir), flush=True)
    for target in targets:
        os.makedirs(os.path.join(workdir, target), exist_ok=True)
    floors = {
        target: ablation.constant_prior_results(
            _with_target(config, target), os.path.join(workdir, target),
            {"source": SOURCE, "target": dataset(target)})
        for target in targets
    }
    base = _with_target(config, STAGE1_TARGET)

    def finished(run_config: Any, run_dir: str, **kwargs) -> dict[str, Any] | None:
        """The run's record: trained (or resumed) if needed, or None when `train` is False
        and it has not finished."""
        if not train and not os.path.exists(os.path.join(run_dir, "run.json")):
            return None
        return ablation.train_and_score(run_config, run_dir, **kwargs)

    stage1, runs, aligned = [], [], []
    for seed in seeds:
        run_dir = ablation.pretrain_dir(workdir, seed)
        stage1_config = ablation.run_config(base, ablation.PRETRAIN_VARIANT, seed)
        with stage1_config.unlocked():
            stage1_config.num_train_steps = pretrain_steps
        print(f"\n=== stage 1, seed {seed}: {run_dir}", flush=True)
        record = finished(stage1_config, run_dir)
        if record is None:
            continue
        stage1.append({**record, "name": "stage1", "seed": seed, "run_dir": run_dir})
        models = [(run_dir, "stage1", target, base) for target in targets]
        for row in SHARED_ROWS:
            run_dir = os.path.join(workdir, f"{row}_seed{seed}")
            print(f"\n=== {row}, seed {seed} (scored on every target): {run_dir}", flush=True)
            record = finished(ablation.run_config(base, row, seed, stage1[-1]["run_dir"]),
                              run_dir)
            for target in targets if record else ():
                runs.append({**record, "name": row, "target": target, "run_dir": run_dir,
                             "results": shared_scores(run_dir, data_dir, target)})
                models.append((run_dir, row, target, base))
        for target in targets:
            for row in TARGET_ROWS[target]:
                run_dir = os.path.join(workdir, target, f"{row}_seed{seed}")
                print(f"\n=== {target}: {row}, seed {seed}: {run_dir}", flush=True)
                row_config = ablation.run_config(_with_target(config, target), row, seed,
                                                 stage1[-1]["run_dir"])
                record = finished(row_config, run_dir,
                                  domains={"source": SOURCE, "target": dataset(target)})
                if record is None:
                    continue
                print(f"    target abs_rel {record['results']['target']['abs_rel']:.3f}, "
                      f"source {record['results']['source']['abs_rel']:.3f}", flush=True)
                runs.append({**record, "name": row, "target": target, "run_dir": run_dir})
                models.append((run_dir, row, target, row_config))
        if seed != ALIGNMENT_SEED:
            continue
        print(f"\n=== alignment of every finished seed-{seed} model", flush=True)
        for run_dir, name, target, run_config in models:
            record = alignment_record(run_config, name, run_dir, data_dir, target)
            aligned.append({**record, "name": name, "target": target, "run_dir": run_dir})
    return {"floors": floors, "stage1": stage1, "runs": runs, "alignment": aligned,
            "workdir": workdir}


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from damono_jax import datasets
    from damono_jax.tools import family_report

    datasets.hide_gpus_from_tf()
    try:
        seeds = [int(seed) for seed in FLAGS.seeds]
    except ValueError as error:
        raise app.UsageError(f"--seeds={','.join(FLAGS.seeds)}: expected integers") from error
    start = time.perf_counter()
    measured = run_family(FLAGS.config, FLAGS.workdir, seeds, FLAGS.targets,
                          FLAGS.pretrain_steps, FLAGS.data_dir, train=FLAGS.train)
    command = "python -m damono_jax.tools.family " + " ".join(
        arg for arg in sys.argv[1:] if not arg.startswith("--output"))
    body = family_report.report(measured, FLAGS.targets, command.strip(),
                                time.perf_counter() - start)
    print("\n" + body)
    if FLAGS.output:
        markdown.write_markdown_section(FLAGS.output, SECTION_ID, body)
        logging.info("wrote section '%s' of %s", SECTION_ID, FLAGS.output)


def define_flags() -> None:
    """Defines this CLI's absl flags (only when run as a program: the tools share names)."""
    config_flags.DEFINE_config_file(
        "config", "configs/synthetic_campaign.py", "Stage 2's configuration, every row.",
        lock_config=True,
    )
    flags.DEFINE_string("workdir", "family_output", "Folder for data, runs and results.")
    flags.DEFINE_string("data_dir", None,
                        "TFDS data_dir (default: WORKDIR/data, built if missing).")
    flags.DEFINE_list("targets", list(TARGETS), "Targets of the family to run.")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (config.seed), the outer loop.")
    flags.DEFINE_integer("pretrain_steps", 750, "Stage 1's source-only steps per seed.")
    flags.DEFINE_string("output", "docs/adaptation_family.md", "Markdown file ('' = none).")
    flags.DEFINE_bool("train", True, "False: train nothing, report the runs finished so far "
                      "(their alignment measure is taken if missing).")


if __name__ == "__main__":
    from damono_jax import cli

    define_flags()
    cli.run(main)
