"""damono_jax.tools.family and family_report: the registered plan and the tables."""

import pytest

from configs import synthetic_campaign
from damono_jax.tools import ablation, family, family_report


def _run(name: str, target: str, seed: int, abs_rel: float) -> dict:
    scores = {"abs_rel": abs_rel, "rmse": 5.0, "a1": 0.5}
    return {"name": name, "target": target, "seed": seed, "train_seconds": 60.0,
            "run_dir": f"/w/{target}/{name}_seed{seed}",
            "results": {"target": scores, "target_metric": dict(scores, abs_rel=abs_rel + 0.01),
                        "source": dict(scores, abs_rel=0.14)}}


def test_the_control_is_full_without_the_reversed_gradient():
    config = synthetic_campaign.get_config()
    full = ablation.run_config(config, "full", 0)
    control = ablation.run_config(config, "seg_mixed_bn", 0)
    assert control.variant == "full" and control.grl.max_scale == 0.0
    assert full.grl.max_scale == 1.0
    assert ablation.settings_differences(ablation.run_settings(full),
                                         ablation.run_settings(control)) == [
        "grl.max_scale: 1.0 -> 0.0"]


def test_registered_plan():
    assert family.TARGETS[-1] == "target"
    assert all(family.TARGET_ROWS[t] == ("seg_mixed_bn", "full", "oracle")
               for t in family.TARGETS[:4])
    assert family.TARGET_ROWS["target"] == ("seg_mixed_bn",)
    assert family.dataset("target_camera") == "synthetic_driving/target_camera"
    with pytest.raises(ValueError, match="--targets: \\['fog'\\] is not a subset"):
        family.run_family(synthetic_campaign.get_config(), "/nonexistent", [0], ["fog"], 750)
    with pytest.raises(ValueError, match="--pretrain_steps=0: must be >= 1"):
        family.run_family(synthetic_campaign.get_config(), "/nonexistent", [0],
                          ["target"], 0)


def test_gap_closed_and_tables():
    assert family_report.gap_closed(0.30, 0.25, 0.10) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="no gap to close: baseline 0.100 <= oracle 0.200"):
        family_report.gap_closed(0.10, 0.05, 0.20)
    runs = [_run("baseline", "target_camera", 0, 0.30), _run("baseline", "target_camera", 1, 0.32),
            _run("full", "target_camera", 0, 0.26), _run("full", "target_camera", 1, 0.24),
            _run("oracle", "target_camera", 0, 0.15), _run("oracle", "target_camera", 1, 0.15),
            _run("baseline", "target", 0, 0.31)]
    table = family_report.target_table(
        runs, "target_camera",
        {"target": {"abs_rel": 0.32}, "target_metric": {"abs_rel": 0.35},
         "source": {"abs_rel": 0.32}})
    lines = table.splitlines()
    assert lines[2].startswith("| Floor")
    # full: mean 0.25 against baseline 0.31 and oracle 0.15: (0.31 - 0.25) / 0.16 = 38%.
    full = next(line for line in lines if line.startswith("| + Seg + DA (target img.)"))
    assert full.split(" | ")[1:] == ["2", "0.250 ± 0.014", "0.260 (s0) / 0.240 (s1)",
                                     "0.260 ± 0.014", "0.140 ± 0.000", "38% |"]
    summary = family_report.summary_table(runs, ["target_camera", "target"]).splitlines()
    assert summary[2].split(" | ")[1:4] == ["0.310 ± 0.014", "0.150 ± 0.000", "–"]
    assert summary[2].split(" | ")[4] == "38%"
    assert summary[3].split(" | ")[1:] == ["0.310", "–", "–", "–", "– |"]


def test_alignment_table_lists_every_level_and_the_classifier():
    levels = [{"probe_accuracy": 1.0, "probe_log_loss": 0.01 * i, "mmd_ratio": 10.0 * i,
               "mmd_null": 1.0} for i in range(5)]
    aligned = [{"name": "full", "target": "target_camera", "levels": levels,
                "classifier": {"source": 1.0, "target": 0.25}},
               {"name": "stage1", "target": "target_camera", "levels": levels}]
    lines = family_report.alignment_table(aligned, "target_camera").splitlines()
    assert lines[2].split(" | ")[1:] == ["1.00 / 1.00 / 1.00 / 1.00 / 1.00",
                                         "0.000 / 0.010 / 0.020 / 0.030 / 0.040",
                                         "0.0 / 10.0 / 20.0 / 30.0 / 40.0", "– |"]
    assert lines[3].startswith("| + Seg + DA (target img.) |")
    assert lines[3].endswith("| 1.00 / 0.25 |")
    assert "1.00 / 1.00 / 1.00 / 1.00 / 1.00 (about 1 expected" in family_report.null_line(
        aligned)


def test_run_table_lists_each_trained_run_once():
    measured = {"workdir": "/w", "stage1": [_run("stage1", "target", 0, 0.3)],
                "runs": [_run("baseline", "target_camera", 0, 0.3),
                         _run("full", "target_camera", 0, 0.2)]}
    measured["runs"].append(dict(measured["runs"][0], target="target"))  # scored twice
    lines = family_report.run_table(measured).splitlines()
    assert [line.split(" | ")[4] for line in lines[2:]] == [
        "target/stage1_seed0 |", "target_camera/baseline_seed0 |", "target_camera/full_seed0 |"]
    assert lines[4].split(" | ")[1] == "target_camera"
