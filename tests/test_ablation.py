"""Tests of the ablation tool's bookkeeping (the training itself is covered by test_demo)."""

from __future__ import annotations

import json

import pytest

from configs import synthetic_ablation
from damono_jax.tools import ablation


def test_run_settings_drop_the_data_dir_and_keep_the_schedule():
    config = ablation.run_config(synthetic_ablation.get_config(), "seg", 2)
    config.data.data_dir = "/somewhere"
    settings = ablation.run_settings(config)
    assert "data.data_dir" not in settings
    assert settings["variant"] == "seg"
    assert settings["seed"] == 2
    assert settings["batch_size"] == 4
    assert settings["num_train_steps"] == 150
    assert list(settings) == sorted(settings)


def test_settings_differences_name_each_changed_key():
    stored = {"batch_size": 8, "seed": 0, "optim.learning_rate": 1e-4}
    current = {"batch_size": 4, "seed": 0, "grl.max_scale": 0.1}
    assert ablation.settings_differences(stored, current) == [
        "batch_size: 8 -> 4",
        "grl.max_scale: '<missing>' -> 0.1",
        "optim.learning_rate: 0.0001 -> '<missing>'",
    ]
    assert ablation.settings_differences(current, current) == []
    assert ablation.settings_differences(None, current) == [
        "no config recorded (written by an older version)"
    ]


def test_a_finished_run_with_other_settings_is_refused(tmp_path):
    config = ablation.run_config(synthetic_ablation.get_config(), "full", 0)
    run_dir = tmp_path / "full_seed0"
    run_dir.mkdir()
    stored = dict(ablation.run_settings(config), batch_size=8)
    (run_dir / "run.json").write_text(json.dumps({"config": stored, "results": {}}))
    with pytest.raises(ValueError, match=r"full_seed0/run.json: was trained with other settings "
                                         r"\(batch_size: 8 -> 4\); use another --workdir"):
        ablation.train_and_score(config, str(run_dir))
    same = {"config": ablation.run_settings(config), "results": {"target": {}}}
    (run_dir / "run.json").write_text(json.dumps(same))
    assert ablation.train_and_score(config, str(run_dir)) == same


def test_a_setting_added_later_matches_old_runs_only_at_its_old_behaviour():
    current = {"seed": 0, "model.align_levels": "(4,)"}
    assert ablation.settings_differences({"seed": 0}, current) == []
    changed = {"seed": 0, "model.align_levels": "(0, 1, 2, 3, 4)"}
    assert ablation.settings_differences({"seed": 0}, changed) == [
        "model.align_levels: '(4,)' -> '(0, 1, 2, 3, 4)'"
    ]


def test_a_beyond_paper_variant_is_the_paper_variant_plus_its_overrides():
    config = ablation.run_config(synthetic_ablation.get_config(), "full_all_levels", 1)
    assert config.variant == "full"
    assert tuple(config.model.align_levels) == (0, 1, 2, 3, 4)
    assert config.seed == 1
    assert tuple(synthetic_ablation.get_config().model.align_levels) == (4,)
    with pytest.raises(ValueError, match="'nope' is not one of"):
        ablation.run_config(synthetic_ablation.get_config(), "nope", 0)


def test_the_oracle_trains_on_the_target_domain_and_is_scored_on_both():
    config = ablation.run_config(synthetic_ablation.get_config(), "oracle", 0)
    assert config.variant == "baseline"
    assert config.data.source == "synthetic_driving/target"
    assert config.data.target == "synthetic_driving/target"
    assert "oracle" in ablation.NO_ADABN


def test_round_two_rows_and_the_strong_suffix():
    config = synthetic_ablation.get_config()
    fair = ablation.run_config(config, "full_fair", 0)
    assert (fair.variant, fair.optim.discriminator_lr_decay, fair.grl.warmup_fraction,
            fair.model.discriminator_spectral_norm, tuple(fair.model.align_levels)) == (
        "full", False, ablation.FAIR_WARMUP_FRACTION, True, (3, 4))
    output = ablation.run_config(config, "full_output", 0)
    assert output.model.output_alignment and tuple(output.model.align_levels) == ()
    assert ablation.run_config(config, "full_cdan", 0).model.domain_conditioning == "cdan"
    strong = ablation.run_config(config, "full_cdan_strong", 1, init_from="/runs/pre")
    assert (strong.variant, strong.data.augment, strong.model.domain_conditioning,
            strong.init_from, strong.seed) == ("full", "strong", "cdan", "/runs/pre", 1)
    assert ablation.run_config(config, "baseline", 0).data.augment == "monodepth2"
    with pytest.raises(ValueError, match="'seg_weak' is not one of"):
        ablation.run_config(config, "seg_weak", 0)


def test_runs_recorded_before_the_round_two_settings_still_match():
    """A stage-1 run written before data.augment became a string and the round-2 keys
    existed is the same run as today's defaults, and only those."""
    current = ablation.run_settings(ablation.run_config(synthetic_ablation.get_config(),
                                                        "baseline", 0))
    old_keys = set(current) - set(ablation.ADDED_SETTINGS)
    stored = {key: current[key] for key in old_keys}
    stored["data.augment"] = True
    assert ablation.settings_differences(stored, current) == []
    stored["data.augment"] = False
    assert ablation.settings_differences(stored, current) == [
        "data.augment: 'none' -> 'monodepth2'"]
