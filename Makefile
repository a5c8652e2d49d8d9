# Two commands do everything on a fresh machine:
#   make        - create the environment if none is active, then run the whole pipeline
#   make test   - create the environment if none is active, then run the lint checks and the test suite
# Extra snakemake arguments: make run ARGS="--configfile presets/smoke.yaml"

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

.PHONY: run test lint env dryrun report clean
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

$(STAMP): requirements.txt pyproject.toml
	@if [ ! -x "$(PY)" ]; then $(PYTHON_SYS) -m venv "$(VENV)"; fi
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

dryrun: $(STAMP)
	$(VENV)/bin/snakemake -n $(ARGS)

report: $(STAMP)
	$(VENV)/bin/snakemake --report results/report.html $(ARGS)

clean:
	rm -rf results logs benchmarks/out .snakemake
