# Two commands: `make demo` (set up + run the embedded demo) and `make test` (set up + run the tests).
# The virtual environment is (re)built only when pyproject.toml changes.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.iclpt-installed
CORES ?= 2
CONFIG ?= config/demo.yaml
STAMP_RUN = $(BIN)/python -m iclpt.reporting.readme
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: all install demo mini mini-samples mini-pilot mini-readme power readme-tables config-readme test test-fast test-gpu plan bench bench-full clean-demo help
all: help

help:
	@echo "make demo   - create .venv, install, run the whole pipeline on config/demo.yaml (offline)"
	@echo "make mini   - the mini reproduction (config/mini.yaml: SmolLM2, official data subsampled; <= 90 min on 2 CPUs)"
	@echo "make mini-samples - the same on the real samples in ../shared/data"
	@echo "make mini-pilot LR=0.3 - PT alone, one seed, 200 steps: the dev curves behind the mini's lr and steps"
	@echo "make power RUN=results/mini ROWS='64 128 192' SEEDS='3 5 8' - MDE of IPT - PT at other sizes"
	@echo "make readme-tables RUN=results/mini - paste the run's main table and findings into README.md (generated block)"
	@echo "make mini-readme - after make mini-samples: its power table (tables/power.md), then its README block"
	@echo "make test   - create .venv, install, run the full test suite"
	@echo "make test-gpu - the engine's guarantees on a CUDA device + a timed paper-size step (<= 8 min; skips without CUDA)"
	@echo "make plan CONFIG=config/config.yaml - jobs per rule and the GPU model's hours per GPU kind, runs nothing"
	@echo "make plan CONFIG='config/mini.yaml config/mini_samples.yaml' CALIBRATE=1 - hours measured on this device"
	@echo "make bench  - run the benchmarks in benchmarks/ (each <= ~5 min on 2 CPUs); make bench-full: the README table"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "iclpt needs Python >= 3.11, $(PYTHON) is " + sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(STAMP_RUN) start results/demo
	$(OFFLINE) $(BIN)/snakemake --cores $(CORES) --configfile config/demo.yaml
	$(OFFLINE) $(BIN)/snakemake --cores 1 --configfile config/demo.yaml --report results/demo/report.html
	$(STAMP_RUN) end results/demo
	@echo "Tables: results/demo/tables/  Figures: results/demo/figures/  Findings: results/demo/findings.md  Report: results/demo/report.html"

mini: install
	$(STAMP_RUN) start results/mini
	$(OFFLINE) $(BIN)/snakemake --cores $(CORES) --configfile config/mini.yaml
	$(OFFLINE) $(BIN)/snakemake --cores 1 --configfile config/mini.yaml --report results/mini/report.html
	$(STAMP_RUN) end results/mini

mini-samples: install
	$(STAMP_RUN) start results/mini
	$(OFFLINE) $(BIN)/snakemake --cores $(CORES) --configfile config/mini.yaml config/mini_samples.yaml
	$(OFFLINE) $(BIN)/snakemake --cores 1 --configfile config/mini.yaml config/mini_samples.yaml --report results/mini/report.html
	$(STAMP_RUN) end results/mini

# README blocks from a stamped run's files (iclpt.reporting.readme): BLOCK names the README's
# <!-- BEGIN GENERATED ... --> markers, FILES are paths inside RUN pasted verbatim under a provenance line
BLOCK ?= $(notdir $(RUN))
FILES ?= tables/main.md findings.md
config-readme: install
	$(BIN)/python -m iclpt.orchestration.schema_doc config/README.md

readme-tables: install
	$(BIN)/python -m iclpt.reporting.readme splice README.md $(BLOCK) $(RUN) $(FILES)

test: install
	$(OFFLINE) $(BIN)/python -m pytest -ra

test-fast: install
	$(OFFLINE) $(BIN)/python -m pytest -ra -m "not slow and not slurm"

# tests/test_gpu.py: PEFT-equal logits, greedy = generate(), kill-and-resume, the GPU lease, a timed 1.3B-shaped step
test-gpu: install
	$(OFFLINE) $(BIN)/python -m pytest -ra -s -m gpu tests/test_gpu.py

# CONFIG may name several files (merged in order, as snakemake's --configfile); CALIBRATE=1 measures on this device
# (iclpt.orchestration.calibrate: loads/fetches each model, times training steps and decoding batches, job start-up) for a run
# with --cores $(CORES); without it resources.<rule>.gpu_hours_per_job are summed and, where a rule asks for a GPU, the
# GPU model (iclpt.orchestration.calibrate.gpu: FLOPs a job at stated throughputs per GPU kind) is printed.
LR ?= 0.3
mini-pilot: install
	printf 'run: mini-pilot-lr$(LR)\ntrain: {lr: $(LR)}\n' > .mini-pilot-lr$(LR).yaml
	$(OFFLINE) $(BIN)/snakemake --cores $(CORES) --configfile config/mini.yaml config/mini_samples.yaml \
		config/mini_pilot.yaml .mini-pilot-lr$(LR).yaml -- results/mini-pilot-lr$(LR)/tables/training.csv

RUN ?= results/mini
ROWS ?= 64 128 192
SEEDS ?= 3 5 8
KIND ?= ipt_vs_pt
power: install
	$(BIN)/python -m iclpt.reporting.power $(RUN)/tables/comparisons.csv --kind $(KIND) --rows $(ROWS) --seeds $(SEEDS)

# the mini's README block: main table, findings, the power table from its own variances, the PT/IPT dev curves
MINI_ROWS ?= 80 130 160 260
MINI_SEEDS ?= 5 8
mini-readme: install
	$(BIN)/python -m iclpt.reporting.power results/mini/tables/comparisons.csv --kind ipt_vs_pt \
		--rows $(MINI_ROWS) --seeds $(MINI_SEEDS) --out results/mini/tables/power.md
	$(BIN)/python -m iclpt.reporting.readme splice README.md mini results/mini \
		tables/main.md findings.md tables/power.md tables/training.csv

plan: install
	$(BIN)/python workflow/scripts/plan.py $(foreach f,$(CONFIG),--configfile $(f)) \
		$(if $(CALIBRATE),--calibrate --cores $(CORES))

bench: install
	@echo "load average at start: $$(cut -d' ' -f1-3 /proc/loadavg)"
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(OFFLINE) $(BIN)/python $$b || exit 1; done
	@echo "load average at end: $$(cut -d' ' -f1-3 /proc/loadavg)"

# the README's benchmark table: training in bf16 and fp32 with 3 timed steps per set, decoding best of 3
bench-full: install
	@echo "load average at start: $$(cut -d' ' -f1-3 /proc/loadavg)"
	$(OFFLINE) $(BIN)/python benchmarks/bench_train.py --precisions bf16 fp32 --steps 3
	$(OFFLINE) $(BIN)/python benchmarks/bench_decode.py --repeats 3
	$(OFFLINE) $(BIN)/python benchmarks/bench_grouped.py --batch-sizes 16 32 64 128 --repeats 2
	@echo "load average at end: $$(cut -d' ' -f1-3 /proc/loadavg)"

clean-demo:
	rm -rf results/demo
