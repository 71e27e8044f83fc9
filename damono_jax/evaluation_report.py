"""The evaluation's output: the paper's Table 1 layout for the console, and CSV rows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from damono_jax.evaluation import METRIC_NAMES, METRIC_TITLES


def _cap_title(cap: int | None) -> str:
    return "gt > 0 (no cap)" if cap is None else f"cap = {cap}m"


def format_table(results_by_cap: Mapping[int | None, Mapping[str, Any]], method: str) -> str:
    """Formats results in the layout of the paper's Table 1: one block per cap (50 m first).

    Each block is preceded by its scale-ratio line (median scaling only) and followed by the
    protocol fingerprint.
    """
    name_width = max(len(method), 16)
    column_width = 10
    lower = "Lower is better".center(column_width * 4)
    higher = "Higher is better".center(column_width * 3)
    lines = [f"{'':<{name_width}} {lower}{higher}"]
    lines.append(
        f"{'Method':<{name_width}} " + "".join(f"{t:>{column_width}}" for t in METRIC_TITLES)
    )
    rule = "-" * (name_width + 1 + column_width * len(METRIC_TITLES))
    ordered = sorted(results_by_cap, key=lambda cap: (cap is None, cap if cap is not None else 0))
    for cap in ordered:
        results = results_by_cap[cap]
        lines.append(rule)
        lines.append(_cap_title(cap))
        values = "".join(f"{results[name]:>{column_width}.3f}" for name in METRIC_NAMES)
        lines.append(f"{method:<{name_width}} {values}")
        if results.get("ratio_median") is not None:
            lines.append(
                f"  scaling ratios | med: {results['ratio_median']:0.3f} | "
                f"std: {results['ratio_std']:0.3f}"
            )
        lines.append(f"  {results['fingerprint']}")
    lines.append(rule)
    return "\n".join(lines)


def results_csv_rows(
    results_by_cap: Mapping[int | None, Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """One flat row per cap (metrics, ratio statistics, protocol) for a CSV file."""
    rows = []
    for cap, results in results_by_cap.items():
        protocol = results["protocol"]
        row: dict[str, Any] = {"cap": "none" if cap is None else cap}
        row.update({name: results[name] for name in METRIC_NAMES})
        row["ratio_median"] = results["ratio_median"]
        row["ratio_std"] = results["ratio_std"]
        row["crop"] = protocol["crop"]
        row["scaling"] = protocol["scaling"]
        row["gt_source"] = protocol["gt_source"]
        row["num_images"] = results["num_images"]
        rows.append(row)
    return rows
