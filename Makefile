# Two commands: `make demo` (set up + run the embedded demo) and `make test` (set up + run the tests).
# The virtual environment is (re)built only when pyproject.toml changes.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.iclpt-installed
CORES ?= 2
CONFIG ?= config/demo.yaml
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: all install demo mini mini-samples test test-fast plan bench clean-demo help
all: help

help:
	@echo "make demo   - create .venv, install, run the whole pipeline on config/demo.yaml (offline)"
	@echo "make mini   - the mini reproduction (config/mini.yaml: SmolLM2, official data subsampled; <= 90 min on 2 CPUs)"
	@echo "make mini-samples - the same on the real samples in ../shared/data"
	@echo "make test   - create .venv, install, run the full test suite"
	@echo "make plan CONFIG=config/config.yaml - jobs per rule and GPU-hour estimate, runs nothing"
	@echo "make bench  - run the benchmarks in benchmarks/"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "iclpt needs Python >= 3.11, $(PYTHON) is " + sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(OFFLINE) $(BIN)/snakemake --cores $(CORES) --configfile config/demo.yaml
	$(OFFLINE) $(BIN)/snakemake --cores 1 --configfile config/demo.yaml --report results/demo/report.html
	@echo "Tables: results/demo/tables/  Figures: results/demo/figures/  Findings: results/demo/findings.md  Report: results/demo/report.html"

mini: install
	$(OFFLINE) $(BIN)/snakemake --cores $(CORES) --configfile config/mini.yaml
	$(OFFLINE) $(BIN)/snakemake --cores 1 --configfile config/mini.yaml --report results/mini/report.html

mini-samples: install
	$(OFFLINE) $(BIN)/snakemake --cores $(CORES) --configfile config/mini.yaml config/mini_samples.yaml
	$(OFFLINE) $(BIN)/snakemake --cores 1 --configfile config/mini.yaml config/mini_samples.yaml --report results/mini/report.html

test: install
	$(OFFLINE) $(BIN)/python -m pytest -ra

test-fast: install
	$(OFFLINE) $(BIN)/python -m pytest -ra -m "not slow and not slurm"

plan: install
	$(BIN)/python workflow/scripts/plan.py --configfile $(CONFIG)

bench: install
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(OFFLINE) $(BIN)/python $$b || exit 1; done

clean-demo:
	rm -rf results/demo
