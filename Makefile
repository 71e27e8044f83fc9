# damono_jax: `make demo` and `make test` set up everything they need from scratch.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-test
RUNTIME_STAMP := $(VENV)/.installed-runtime
PYTEST_ARGS ?=
# Test processes (pytest-xdist): one per core this process may use (`nproc`). Most of the suite's time
# is XLA compilation, which runs on one core per process; the workers share one persistent
# compilation cache (tests/conftest.py). PYTEST_WORKERS=0 runs in this process.
PYTEST_WORKERS ?= $(shell nproc)
DEMO_DIR ?= demo_output
ABLATION_DIR ?= ablation_output
CAMPAIGN_DIR ?= campaign_output
FAMILY_DIR ?= family_output

.PHONY: setup test lint demo ablation ablation-long campaign family gpu-wheels gpu-bench clean
comma := ,

# constraints.txt pins every package to the version the suite passed with (README, Install).
$(RUNTIME_STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -c constraints.txt -e .
	@touch $(RUNTIME_STAMP)

$(STAMP): $(RUNTIME_STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,onnx]'
	@touch $(STAMP)

setup: $(STAMP)

# The embedded default: build the synthetic pair, train the full DA model, export it,
# evaluate on the target test split and predict a few depth maps (about 10 min on 2 cores).
demo: $(RUNTIME_STAMP)
	$(PY) -m damono_jax.tools.demo --config=configs/synthetic.py:full --workdir=$(DEMO_DIR)

# The synthetic miniature of the paper's Table 3: the paper's three rows, the beyond-paper
# variants, their AdaBN rows and the oracle, 3 seeds each, plus the domain probe of the seed-0
# models; writes docs/ablation_synthetic.md and docs/figures/. Finished runs are reused, so a
# killed run can be restarted. `make ablation-long`: the 1,000-step learning curves.
PROBE_RUNS = $(foreach v,baseline seg full full_all_levels full_dsbn fda full_fda oracle,$(v)=$(ABLATION_DIR)/$(v)_seed0/export)
ablation: $(RUNTIME_STAMP)
	$(PY) -m damono_jax.tools.ablation --config=configs/synthetic_ablation.py \
		--workdir=$(ABLATION_DIR) --output=docs/ablation_synthetic.md
	$(PY) -m damono_jax.tools.domain_probe --data_dir=$(ABLATION_DIR)/data \
		--runs=$(subst $(eval) ,$(comma),$(PROBE_RUNS)) --output=docs/ablation_synthetic.md

ablation-long: $(RUNTIME_STAMP)
	$(PY) -m damono_jax.tools.ablation --config=configs/synthetic_ablation.py \
		--config.num_train_steps=1000 --config.eval_every_steps=100 \
		--config.checkpoint_every_steps=100 --config.image_log_every_steps=1000 \
		--variants=baseline,seg,full --seeds=0 --workdir=$(ABLATION_DIR)_long \
		--data_dir=$(ABLATION_DIR)/data --output=docs/ablation_synthetic.md --section=long

# Adaptation campaign, round 2 (docs/adaptation_campaign.md): the trained-encoder protocol,
# 750 source-only steps per seed, then 250 steps of every row from there; 3 seeds, the
# constant-prior floor, the domain probe of every seed-0 model. About 3 hours on 2 cores;
# finished runs are reused, so a killed campaign restarts where it stopped.
# full_strong: `full` (the best adaptation row once the others were measured) with strong
# augmentation, chosen after seeing target numbers (docs/adaptation_campaign.md).
CAMPAIGN_VARIANTS = baseline full seg full_output full_cdan full_fair oracle baseline_strong \
	full_strong
CAMPAIGN_PROBE = stage1_baseline=$(CAMPAIGN_DIR)/pretrain/baseline_seed0/export \
	$(foreach v,$(CAMPAIGN_VARIANTS),$(v)=$(CAMPAIGN_DIR)/$(v)_seed0/export)
campaign: $(RUNTIME_STAMP)
	$(PY) -m damono_jax.tools.ablation --config=configs/synthetic_campaign.py \
		--pretrain_steps=750 --variants=$(subst $(eval) ,$(comma),$(CAMPAIGN_VARIANTS)) \
		--workdir=$(CAMPAIGN_DIR) --adabn=false --output=docs/adaptation_campaign.md \
		--section=campaign
	$(PY) -m damono_jax.tools.domain_probe --data_dir=$(CAMPAIGN_DIR)/data \
		--runs=$(subst $(eval) ,$(comma),$(CAMPAIGN_PROBE)) --output=docs/adaptation_campaign.md

# Adaptation, round 3 (docs/adaptation_family.md): round 2's protocol on the family of
# one-factor targets (palette, texture, lighting, camera) and the round-2 target's BatchNorm
# control; 3 seeds, seed 0 of every row first. Resumable like the campaign.
family: $(RUNTIME_STAMP)
	$(PY) -m damono_jax.tools.family --config=configs/synthetic_campaign.py \
		--workdir=$(FAMILY_DIR) --output=docs/adaptation_family.md

# The GPU check (BENCHMARKS.md, "GPU check"): `make gpu-wheels` here fetches the one wheel the
# GPU machine lacks into .whl/ (80 KB); there, `make gpu-bench GPU_OUT=$$OUT` (or
# `bash benchmarks/gpu/run.sh --out=$$OUT`) installs it and measures, in under 8 minutes.
GPU_WHEELS = ml-collections==1.1.0
GPU_OUT ?= gpu_bench_output
gpu-wheels: $(RUNTIME_STAMP)
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp --platform manylinux2014_x86_64 -d .whl $(GPU_WHEELS)
	@du -sh .whl

gpu-bench:
	bash benchmarks/gpu/run.sh --out=$(GPU_OUT)

test: $(STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check damono_jax data_prep configs tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache $(DEMO_DIR) $(ABLATION_DIR) $(ABLATION_DIR)_long \
		$(CAMPAIGN_DIR) $(FAMILY_DIR)
