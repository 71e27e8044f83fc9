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


def test_report_carries_the_floor_and_stage_one_above_the_rows():
    from configs import synthetic_campaign

    config = synthetic_campaign.get_config()
    floor = {name: {"abs_rel": 0.320, "rmse": 7.956, "a1": 0.547}
             for name in ("target", "target_metric", "source")}
    pretrained = [_record("baseline", 0, 0.31), _record("baseline", 1, 0.33)]
    records = [_record("baseline", 0, 0.30), _record("baseline", 1, 0.32),
               _record("full_cdan_strong", 0, 0.29)]
    body = ablation_report.report(
        config, records, ["baseline", "full_cdan_strong"], "python -m ...", 60.0,
        context={"constant_prior": floor, "pretrain": pretrained}, pretrain_steps=750)
    table = [line for line in body.splitlines() if line.startswith("| ")]
    assert table[1].startswith(f"| {ablation_report.FLOOR_TITLE} | – | 0.320 | 7.956 | 0.547 |")
    assert table[2].startswith("| Stage 1: Baseline (source img. + depth) @ 750 steps (every "
                               "row starts here) | 2 | 0.320 ± 0.014 |")
    assert table[3].startswith("| Baseline (source img. + depth) | 2 | 0.310 ± 0.014 |")
    assert table[4].startswith("| + Seg + DA conditioned on the semantic softmax (CDAN) + "
                               "strong aug. | 1 | 0.290 |")
    assert "## Measured: trained-encoder protocol, 750 source-only steps then 250 steps" in body
    assert "| stage 1: baseline | 0 |" in body
