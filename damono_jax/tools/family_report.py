"""`make family`'s report: one table per target of the family and the summary table.

Reads what `tools.family.run_family` returns (the run.json records and the shared rows'
scores per target) and turns it into the `family` section of docs/adaptation_family.md.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import jax

from damono_jax.tools import markdown
from damono_jax.tools.ablation_report import CAP, FLOOR_TITLE, mean_std, variant_title

# Rows of every target's table, in order (the floor comes first, from the constant prior).
ROWS = ("baseline", "seg_mixed_bn", "full", "baseline_strong", "oracle")
# Rows whose share of the baseline -> oracle gap the summary shows.
GAP_ROWS = ("seg_mixed_bn", "full", "baseline_strong")
TARGET_TITLES = {
    "target_palette": "palette (the target's albedo colours, flat)",
    "target_texture": "texture (the target's procedural textures on the source's colours)",
    "target_lighting": "lighting (the target's sun, ambient, shadows, sky and haze)",
    "target_camera": "camera (the target's white balance, exposure, vignetting, blur, "
                     "gamma and noise)",
    "target": "round-2 target (all four factors)",
}
TABLE_HEADER = ("row", "seeds", "target AbsRel ↓", "per seed", "target AbsRel, no scaling ↓",
                "source AbsRel ↓", "gap closed")


def _abs_rel(runs: Sequence[Mapping[str, Any]], name: str) -> list[float]:
    return [r["results"][name]["abs_rel"] for r in runs]


def gap_closed(baseline: float, row: float, oracle: float) -> float:
    """The share of the baseline -> oracle gap in target AbsRel that `row` closes."""
    if baseline <= oracle:
        raise ValueError(f"no gap to close: baseline {baseline:.3f} <= oracle {oracle:.3f}")
    return (baseline - row) / (baseline - oracle)


def _rows_of(runs: Sequence[Mapping[str, Any]], target: str) -> dict[str, list[dict]]:
    of_target = [r for r in runs if r["target"] == target]
    return {row: sorted((r for r in of_target if r["name"] == row), key=lambda r: r["seed"])
            for row in ROWS if any(r["name"] == row for r in of_target)}


def _gap(rows: Mapping[str, Sequence[Mapping[str, Any]]], row: str) -> float | None:
    if "baseline" not in rows or "oracle" not in rows or row not in rows:
        return None
    mean = {name: statistics.mean(_abs_rel(rows[name], "target"))
            for name in ("baseline", row, "oracle")}
    return gap_closed(mean["baseline"], mean[row], mean["oracle"])


def target_table(runs: Sequence[Mapping[str, Any]], target: str,
                 floor: Mapping[str, Any]) -> str:
    """The table of one target: the floor, then every row measured so far."""
    rows = _rows_of(runs, target)
    cells = [[FLOOR_TITLE, "–", f"{floor['target']['abs_rel']:.3f}", "–",
              f"{floor['target_metric']['abs_rel']:.3f}", f"{floor['source']['abs_rel']:.3f}",
              "–"]]
    for row, of_row in rows.items():
        gap = _gap(rows, row)
        cells.append([
            variant_title(row), str(len(of_row)), mean_std(_abs_rel(of_row, "target")),
            " / ".join(f"{r['results']['target']['abs_rel']:.3f} (s{r['seed']})"
                       for r in of_row),
            mean_std(_abs_rel(of_row, "target_metric")), mean_std(_abs_rel(of_row, "source")),
            "–" if gap is None or row in ("baseline", "oracle") else f"{gap:.0%}",
        ])
    return markdown.markdown_table(TABLE_HEADER, cells)


def summary_table(runs: Sequence[Mapping[str, Any]], targets: Sequence[str]) -> str:
    """Targets x rows: the baseline's target AbsRel and each row's share of the gap."""
    header = ("target", "baseline AbsRel", "oracle AbsRel",
              *(f"{variant_title(row)}: gap closed" for row in GAP_ROWS))
    cells = []
    for target in targets:
        rows = _rows_of(runs, target)
        means = {row: mean_std(_abs_rel(rows[row], "target")) if row in rows else "–"
                 for row in ("baseline", "oracle")}
        gaps = [_gap(rows, row) for row in GAP_ROWS]
        cells.append([TARGET_TITLES[target], means["baseline"], means["oracle"],
                      *("–" if gap is None else f"{gap:.0%}" for gap in gaps)])
    return markdown.markdown_table(header, cells)


ALIGNMENT_ROWS = ("stage1", *ROWS)
ALIGNMENT_HEADER = ("model (seed 0)", "probe accuracy", "probe log-loss (chance 0.693)",
                    "MMD ratio", "classifier accuracy source / target")


def _row_title(name: str) -> str:
    return "Stage 1: baseline (every row starts here)" if name == "stage1" else variant_title(name)


def alignment_table(aligned: Sequence[Mapping[str, Any]], target: str) -> str:
    """Per model of `target`: the alignment measures at every level (conv1 / layer1 / layer2
    / layer3 / layer4), and the trained classifier's accuracy where there is one."""
    from damono_jax.tools import alignment

    of_target = {a["name"]: a for a in aligned if a["target"] == target}
    cells = []
    for name in ALIGNMENT_ROWS:
        if name not in of_target:
            continue
        record = of_target[name]
        classifier = record.get("classifier")
        cells.append([
            _row_title(name), alignment.format_levels(record["levels"], "probe_accuracy"),
            alignment.format_levels(record["levels"], "probe_log_loss", 3),
            alignment.format_levels(record["levels"], "mmd_ratio", 1),
            f"{classifier['source']:.2f} / {classifier['target']:.2f}" if classifier else "–",
        ])
    return markdown.markdown_table(ALIGNMENT_HEADER, cells)


def null_line(aligned: Sequence[Mapping[str, Any]]) -> str | None:
    """The MMD ratio's null check on the stage-1 encoder (source val halves), per level."""
    from damono_jax.tools import alignment

    stage1 = next((a for a in aligned if a["name"] == "stage1"), None)
    if stage1 is None:
        return None
    return ("- the MMD ratio's null check, stage-1 encoder (source val even against odd "
            "frames, over source test even against odd), per level: "
            f"{alignment.format_levels(stage1['levels'], 'mmd_null')} (about 1 expected; "
            "for 100 + 100 Gaussian samples 95% of such ratios fall in 0.48-2.19)")


def run_table(measured: Mapping[str, Any]) -> str:
    """Every trained run once, with its training time."""
    seen, cells = set(), []
    for r in [*measured["stage1"], *measured["runs"]]:
        if r["run_dir"] in seen:
            continue
        seen.add(r["run_dir"])
        cells.append([r["name"], r.get("target", "–") if r["name"] not in (
            "stage1", "baseline", "baseline_strong") else "(none)", str(r["seed"]),
            f"{r['train_seconds']:.0f}", os.path.relpath(r["run_dir"], measured["workdir"])])
    return markdown.markdown_table(("row", "target it trains on", "seed", "train s",
                                    "run (in the workdir)"),
                                   cells)


def report(measured: Mapping[str, Any], targets: Sequence[str], command: str,
           wall_s: float) -> str:
    """The markdown body of the `family` section."""
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    lines = [
        "## Measured: the family of one-factor targets",
        "",
        f"- command: `{command}`",
        f"- date (UTC): {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M}; machine: "
        f"{machine}; jax {jax.__version__}, {jax.device_count()} "
        f"{jax.devices()[0].platform} device(s); this invocation took {wall_s / 60:.0f} min "
        "(runs found finished were read back)",
        f"- evaluation: each target's test split (200 frames), cap {CAP} m, no crop, "
        "per-image median scaling unless marked 'no scaling'; mean ± sample std over the "
        "seeds; 'gap closed' = (baseline - row) / (baseline - oracle) of the mean target "
        "AbsRel, on that target. The floor is the constant prior (per-pixel median of the "
        "source training depth).",
        "",
        "### Summary: share of each target's baseline → oracle gap closed",
        "",
        summary_table(measured["runs"], targets),
    ]
    aligned = measured.get("alignment", [])
    for target in targets:
        lines += ["", f"### {TARGET_TITLES[target]}: `synthetic_driving/{target}`", "",
                  target_table(measured["runs"], target, measured["floors"][target])]
        if any(a["target"] == target for a in aligned):
            lines += ["", "Alignment (per encoder level, conv1 / layer1 / layer2 / layer3 / "
                      "layer4; `damono_jax.tools.alignment`):", "",
                      alignment_table(aligned, target)]
    null = null_line(aligned)
    if null:
        lines += ["", null]
    lines += ["", "### Every run", "", run_table(measured)]
    return "\n".join(lines)
