# damono_jax: `make demo` and `make test` set up everything they need from scratch.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-test
RUNTIME_STAMP := $(VENV)/.installed-runtime
PYTEST_ARGS ?=
# Test processes (pytest-xdist). Two keep both of CI's cores busy: most of the suite's time is
# XLA compilation, which runs on one core per process. PYTEST_WORKERS=0 runs in this process.
PYTEST_WORKERS ?= 2
DEMO_DIR ?= demo_output
ABLATION_DIR ?= ablation_output

.PHONY: setup test lint demo ablation clean

$(RUNTIME_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e .
	@touch $(RUNTIME_STAMP)

$(STAMP): $(RUNTIME_STAMP)
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

setup: $(STAMP)

# The embedded default: build the synthetic pair, train the full DA model, export it,
# evaluate on the target test split and predict a few depth maps (about 10 min on 2 cores).
demo: $(RUNTIME_STAMP)
	$(PY) -m damono_jax.tools.demo --config=configs/synthetic.py:full --workdir=$(DEMO_DIR)

# The synthetic miniature of the paper's Table 3: baseline, +seg and +seg+DA, 3 seeds each;
# writes docs/ablation_synthetic.md. Finished runs are reused, so a killed run can be restarted.
ablation: $(RUNTIME_STAMP)
	$(PY) -m damono_jax.tools.ablation --config=configs/synthetic_ablation.py \
		--workdir=$(ABLATION_DIR) --output=docs/ablation_synthetic.md

test: $(STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check damono_jax data_prep configs tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache $(DEMO_DIR) $(ABLATION_DIR)
