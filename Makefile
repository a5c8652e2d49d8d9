# Two commands do everything on a fresh machine:
#   make        - create the environment if none is active, then run the whole pipeline
#   make test   - create the environment if none is active, then run the lint checks and the test suite
# Extra snakemake arguments: make run ARGS="--configfile presets/smoke.yaml"
# The environment is installed from requirements.lock (exact versions; `make lock` refreshes it
# from the ranges in pyproject.toml). `make env-slurm` adds the SLURM executor plugin
# (requirements-slurm.lock); `make test-slurm` runs tests/cluster/slurm_smoke.sh (root, Debian).

SHELL := /bin/bash
PYTHON_SYS ?= python3
ifdef VIRTUAL_ENV
VENV := $(VIRTUAL_ENV)
else
VENV := .venv
endif
PY := $(VENV)/bin/python
STAMP := $(VENV)/.speechmerge-installed
ARGS ?=

.PHONY: run test lint env env-slurm lock test-slurm test-install mergekit-env dryrun report results clean
.DEFAULT_GOAL := run

run: $(STAMP)
	$(VENV)/bin/snakemake --cores all $(ARGS)

test: lint $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup -q

# Code style and workflow checks (part of `make test`): ruff lint and format, snakemake --lint, snakefmt.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/snakemake --lint --configfile presets/smoke.yaml
	$(VENV)/bin/snakefmt --check Snakefile rules

env: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@if [ ! -x "$(PY)" ]; then $(PYTHON_SYS) -m venv "$(VENV)"; fi
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

env-slurm: $(STAMP)
	$(PY) -m pip install -q -r requirements-slurm.lock

# Resolve pyproject.toml's ranges (with the test and slurm extras) in a new virtualenv and pin
# what was installed: requirements.lock (the environment of `make` and `make test`) and
# requirements-slurm.lock (what the slurm extra adds). The CPU build of torch installs as
# 2.13.0+cpu; the lock pins torch==2.13.0, which that build satisfies.
LOCK_VENV := .lock-venv
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON_SYS) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install -q --upgrade pip
	$(LOCK_VENV)/bin/pip install -q -e ".[test]"
	( echo "# Exact versions of the tested environment: make lock (from pyproject.toml), Python $$($(LOCK_VENV)/bin/python -c 'import platform; print(platform.python_version())')"; \
	  $(LOCK_VENV)/bin/pip freeze --exclude-editable | LC_ALL=C sort -f \
	  | sed 's/^torch==2\.13\.0+cpu$$/torch==2.13.0/' ) > requirements.lock
	$(LOCK_VENV)/bin/pip install -q -e ".[slurm]"
	( echo "# What the slurm extra adds to requirements.lock (make env-slurm): make lock"; \
	  $(LOCK_VENV)/bin/pip freeze --exclude-editable | LC_ALL=C sort -f \
	  | sed 's/^torch==2\.13\.0+cpu$$/torch==2.13.0/' | grep -vxF -f requirements.lock ) > requirements-slurm.lock
	rm -rf $(LOCK_VENV)

test-slurm: env-slurm
	VENV="$(VENV)" tests/cluster/slurm_smoke.sh

# A non-editable install into a new virtualenv, and the smoke preset run from another directory.
test-install:
	tests/install/non_editable.sh
# A separate venv with mergekit 0.1.5 for benchmarks/mergekit_bench.py (git-ignored).
mergekit-env:
	bash benchmarks/mergekit_setup.sh .venv-mergekit

dryrun: $(STAMP)
	$(VENV)/bin/snakemake -n $(ARGS)

report: $(STAMP)
	$(VENV)/bin/snakemake --report results/report.html $(ARGS)

# docs/results.md's tables, from the reports of the run in results/ (after `make`).
results: $(STAMP)
	$(VENV)/bin/python -m speechmerge.report.results_doc --reports results/report --out docs/results.md

clean:
	rm -rf results logs benchmarks/out .snakemake
