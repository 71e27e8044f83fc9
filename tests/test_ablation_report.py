"""damono_jax.tools.ablation_report: the summary and per-run tables of `make ablation`."""

from damono_jax.tools import ablation_report


def _record(name: str, seed: int, target: float, adabn: float | None = None) -> dict:
    scores = {"abs_rel": target, "rmse": 5.0, "a1": 0.5}
    results = {"target": scores, "target_metric": scores, "source": dict(scores, abs_rel=0.2)}
    record = {"name": name, "variant": name, "seed": seed, "train_seconds": 10.0,
              "results": results, "final_train": {"depth_loss": 0.03}}
    if adabn is not None:
        record["results_adabn"] = {**results, "target": dict(scores, abs_rel=adabn)}
    return record


def test_summary_has_an_adabn_row_per_variant_scored_with_it():
    records = [_record("baseline", 0, 0.30, 0.40), _record("baseline", 1, 0.32, 0.42),
               _record("full", 0, 0.35)]
    rows = ablation_report.summary_rows(records, ["baseline", "full"])
    assert [row[0] for row in rows] == ["Baseline (source img. + depth)",
                                        "Baseline (source img. + depth) + AdaBN",
                                        "+ Seg + DA (target img.)"]
    assert rows[0][2] == "0.310 ± 0.014" and rows[1][2] == "0.410 ± 0.014"
    assert rows[2][1:3] == ["1", "0.350"]
    runs = ablation_report.run_rows(records)
    assert runs[0][8] == "0.400 / 0.200" and runs[2][8] == "–"
