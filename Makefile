# ZIP recovery study. `make help` lists the targets; `make all` reproduces the study.
# Stages are real file targets: a stage reruns only when its code, its upstream outputs or
# its own blocks of params.yaml change (tracked by .stamps/<stage>.params).

SHELL := /bin/bash
.DEFAULT_GOAL := help
PARAMS ?= params.yaml
# Recipes read the params path from the environment ("$$ZIP_PARAMS"), never spliced in.
export ZIP_PARAMS := $(value PARAMS)
unexport PARAMS
WORKERS ?=
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 5000
DASHBOARD_PORT ?= 8080
# Every value a user sets reaches the programs as data: verbatim ($(value ...): no make
# expansion) in an exported ZIP_* variable that recipes use only as "$$ZIP_..." (so no shell
# reads it as code either); `unexport` keeps make from expanding the originals when it exports
# command-line values itself.
unexport WORKERS PORT DASHBOARD_PORT
export ZIP_WORKERS := $(value WORKERS)
export ZIP_PORT := $(value PORT)
export ZIP_DASHBOARD_PORT := $(value DASHBOARD_PORT)
# One id per `make` call: every stage it runs nests its MLflow runs under one invocation run.
export ZIP_INVOCATION := $(shell date -u +%Y%m%dT%H%M%S)-$(shell od -An -N3 -tx1 /dev/urandom | tr -d ' \n')

# The module files each stage imports, read from the import graph (`pipeline/modules.py`,
# standard library only): a stage reruns when its code changes, and only then.
stage_modules = $(shell $(PYTHON) -m pipeline.modules $(1))
WORKERS_ARG = $${ZIP_WORKERS:+--workers="$$ZIP_WORKERS"}

.PHONY: help install all data sweep report tune fit-counts ui dashboard services services-stop test lint format bench clean FORCE

# (the ports are shown as set: awk reads them from the environment and pastes them, as data)
help: ## list the targets
	@awk 'function put(text, name, value, i) { i = index(text, name); \
		return i ? substr(text, 1, i - 1) value substr(text, i + length(name)) : text } \
		BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / { \
		text = put(put($$2, "$$(PORT)", ENVIRON["ZIP_PORT"]), \
		           "$$(DASHBOARD_PORT)", ENVIRON["ZIP_DASHBOARD_PORT"]); \
		printf "  make %-15s %s\n", $$1, text }' $(MAKEFILE_LIST)
	@echo "  variables: PARAMS=path/to/params.yaml  WORKERS=N  PORT=N  DASHBOARD_PORT=N  FILE=... COLUMN=... or FORMULA=... [FAMILY=... WHERE=... WEIGHTS=... JSON=1 NO_MLFLOW=1] (fit-counts)"

install: $(VENV)/.installed ## create .venv and install pinned dependencies

$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

.stamps/%.params: FORCE | $(VENV)/.installed
	@mkdir -p .stamps
	@$(PY) -m pipeline.config --params "$$ZIP_PARAMS" --stamp $* > $@.tmp || { rm -f $@.tmp; exit 2; }
	@cmp -s $@.tmp $@ && rm -f $@.tmp || mv -f $@.tmp $@

data/summary.parquet: .stamps/generate.params $(call stage_modules,generate)
	$(PY) -m pipeline.generate --params "$$ZIP_PARAMS"

data/fits.parquet: .stamps/sweep.params data/summary.parquet $(call stage_modules,sweep)
	$(PY) -m pipeline.sweep --params "$$ZIP_PARAMS" $(WORKERS_ARG)

reports/recovery.parquet: .stamps/aggregate.params data/fits.parquet $(call stage_modules,aggregate)
	$(PY) -m pipeline.aggregate --params "$$ZIP_PARAMS"

data: data/summary.parquet ## simulate the datasets (+ exact MLE per dataset)
sweep: data/fits.parquet ## fit every dataset x init x learning rate (Optuna grid), log to MLflow
report: reports/recovery.parquet ## aggregate recovery statistics with polars into reports/

all: report ## the whole study: install, data, sweep, report
	@echo "report:  reports/recovery.md"
	@echo "browse:  make ui   (MLflow)   make dashboard   (Optuna)"

tune: data/summary.parquet ## Optuna TPE search over learning rate and optimizer (resumes)
	$(PY) -m pipeline.sweep --params "$$ZIP_PARAMS" --tune $(WORKERS_ARG)

# fit-counts takes user text (a path, a column name or a formula, a SQL condition with its own
# quotes), so make never splices it into the command line: each value goes verbatim
# ($(value ...): no make expansion either) into an exported variable that the recipe uses only
# as "$$ZIP_..." (and as `--opt=value`, `-- FILE`, so a value starting with '-' is not read as
# an option). COLUMN or FORMULA: the program refuses both at once, in one line.
# `unexport` keeps make from expanding command-line values when it exports them itself.
unexport FILE COLUMN FORMULA WHERE WEIGHTS JSON FAMILY NO_MLFLOW
fit-counts: export ZIP_FILE := $(value FILE)
fit-counts: export ZIP_COLUMN := $(value COLUMN)
fit-counts: export ZIP_FORMULA := $(value FORMULA)
fit-counts: export ZIP_WHERE := $(value WHERE)
fit-counts: export ZIP_WEIGHTS := $(value WEIGHTS)
fit-counts: export ZIP_JSON := $(value JSON)
fit-counts: export ZIP_FAMILY := $(value FAMILY)
fit-counts: export ZIP_NO_MLFLOW := $(value NO_MLFLOW)
fit-counts: $(VENV)/.installed ## compare count models on your counts: FILE=path COLUMN=name or FORMULA="y ~ x | z" [FAMILY=all|zip|zinb|...]
	@test -n "$$ZIP_FILE" && test -n "$$ZIP_COLUMN$$ZIP_FORMULA" || { echo "usage: make fit-counts FILE=path COLUMN=name [WHERE=... WEIGHTS=...]  or  make fit-counts FILE=path FORMULA='y ~ count regressors | zero regressors'" >&2; exit 2; }
	@$(PY) -m pipeline.fit_counts $${ZIP_COLUMN:+--column="$$ZIP_COLUMN"} \
		$${ZIP_FORMULA:+--formula="$$ZIP_FORMULA"} --params="$$ZIP_PARAMS" \
		$${ZIP_WHERE:+--where="$$ZIP_WHERE"} $${ZIP_WEIGHTS:+--weights="$$ZIP_WEIGHTS"} \
		$${ZIP_FAMILY:+--family="$$ZIP_FAMILY"} \
		$${ZIP_JSON:+--json} $${ZIP_NO_MLFLOW:+--no-mlflow} -- "$$ZIP_FILE"

ui: $(VENV)/.installed ## browse the MLflow runs at http://127.0.0.1:$(PORT)
	@mkdir -p mlruns
	@$(PY) -m pipeline.ui --port="$$ZIP_PORT"

dashboard: $(VENV)/.installed ## browse the Optuna studies at http://127.0.0.1:$(DASHBOARD_PORT)
	@$(PY) -m pipeline.dashboard --params="$$ZIP_PARAMS" --port="$$ZIP_DASHBOARD_PORT"

# Workers on several machines: a throwaway PostgreSQL + MLflow server (README "Scaling out").
# SERVICES_HOST: the address(es) they listen on (default loopback only); ALLOW: a network (CIDR)
# whose workers may connect. Passed through the environment, never spliced into the recipe.
unexport SERVICES_HOST ALLOW
services: export ZIP_SERVICES_HOST := $(value SERVICES_HOST)
services: export ZIP_ALLOW := $(value ALLOW)
services: $(VENV)/.installed ## start PostgreSQL + an MLflow server for workers [SERVICES_HOST=addr ALLOW=cidr]
	@$(PY) -m pipeline.services start --host="$${ZIP_SERVICES_HOST:-127.0.0.1}" $${ZIP_ALLOW:+--allow="$$ZIP_ALLOW"}

services-stop: $(VENV)/.installed ## stop the services and delete their data
	@$(PY) -m pipeline.services stop

test: $(VENV)/.installed ## run the test suite
	$(VENV)/bin/pytest -q -n 2 --dist loadfile

lint: $(VENV)/.installed ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.installed ## ruff format and autofix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(VENV)/.installed ## run the benchmarks (by hand; numbers go to benchmarks/README.md)
	$(PY) benchmarks/bench_engine.py

clean: ## remove generated data, reports, stamps and the tracking store
	rm -rf data reports .stamps mlruns/mlflow.db mlruns/mlflow.db-wal mlruns/mlflow.db-shm mlruns/artifacts mlruns/optuna.log

FORCE:
