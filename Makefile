# Ketter — `make` lists the targets. Everything runs from ./.venv, built by
# `make install` from pyproject.toml + constraints.txt (idempotent: it only
# reinstalls when one of them changed).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Ops targets use the installed Ketter when there is one, else the checkout's.
KETTER ?= $(shell test -x /opt/ketter/bin/ketter && echo /opt/ketter/bin/ketter || echo $(VENV)/bin/ketter)
CONFIG ?= $(or $(KETTER_CONFIG),/etc/ketter/ketter.yaml)
DEMO_CONFIG := configs/demo.yaml
PYTEST_ARGS ?=
# `make wheelhouse` writes here; deploy/install.sh --wheelhouse reads it.
WHEELHOUSE ?= dist/wheelhouse

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast lint format bench bench-watcher bench-api bench-history clean \
        status history requeue-failed requeue audit-verify health wheelhouse

help: ## list the targets
	@echo "Ketter make targets:"
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "} {printf "  make %-16s %s\n", $$1, $$2}'
	@echo "Ops targets take CONFIG=/path/to/ketter.yaml (default $(CONFIG))."

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Ketter needs Python 3.11+"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install Ketter with its test tools

run: install ## run the demo: watcher + workers on configs/demo.yaml, all under ./var/demo/
	@mkdir -p var/demo/ingest/outbox var/demo/dub/inbox var/demo/dub/outbox var/demo/qc/inbox
	@$(VENV)/bin/ketter --config $(DEMO_CONFIG) config check 2>&1 | grep -v '^warning: .*root filesystem' || true
	@$(VENV)/bin/ketter --config $(DEMO_CONFIG) db upgrade
	@test -n "$$(ls -A var/demo/ingest/outbox)" || { \
	  mkdir -p var/demo/ingest/outbox/REEL_01 && \
	  head -c 8388608 /dev/urandom > var/demo/ingest/outbox/REEL_01/picture.mxf && \
	  head -c 2097152 /dev/urandom > var/demo/ingest/outbox/REEL_01/audio_en.wav && \
	  head -c 1048576 /dev/urandom > var/demo/dub/outbox/mix_fr.wav && \
	  echo "Dropped sample media into var/demo/ingest/outbox and var/demo/dub/outbox."; }
	$(VENV)/bin/ketter --config $(DEMO_CONFIG) run

test: install ## run the whole test suite
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install ## run the suite without the slow tests
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: install ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check ketter tests benchmarks
	$(VENV)/bin/ruff format --check ketter benchmarks
	$(VENV)/bin/mypy

format: install ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix ketter tests benchmarks
	$(VENV)/bin/ruff format ketter benchmarks

bench: install ## benchmarks against cp/rsync/rclone, local and share→share (docs/performance.md)
	$(PY) benchmarks/run.py
	$(PY) benchmarks/shares.py
	$(PY) benchmarks/goals.py

bench-watcher: install ## watcher and end-to-end benchmark (docs/performance-watcher.md)
	$(PY) benchmarks/watcher.py

bench-history: install ## P6: the commands, files/s, WAL and RSS on 1,000,000 jobs (docs/performance-watcher.md)
	$(PY) benchmarks/history.py $(BENCH_ARGS)

bench-api: install ## the HTTP API on 1,000,000 jobs, with wrk (docs/performance.md)
	$(PY) benchmarks/api.py $(BENCH_ARGS)

status: ## job counts per state and route, paused routes, heartbeats
	$(KETTER) --config $(CONFIG) status

history: ## the last 50 jobs from the job_history view
	$(KETTER) --config $(CONFIG) jobs --limit 50

requeue-failed: ## re-queue every failed job (narrow with ROUTE=name, SINCE=2h)
	$(KETTER) --config $(CONFIG) requeue --failed $(if $(ROUTE),--route '$(ROUTE)') \
	  $(if $(SINCE),--since '$(SINCE)')

requeue: ## re-queue jobs by id: make requeue JOB=42 (or JOB="42 43")
	@test -n "$(JOB)" || { echo 'usage: make requeue JOB=<id> [CONFIG=...]' >&2; exit 2; }
	$(KETTER) --config $(CONFIG) requeue $(JOB)

audit-verify: ## check the audit chain (log files against the job store); exit 1 on a break
	$(KETTER) --config $(CONFIG) audit verify

health: ## exit 0 when watcher, workers, routes and free space are healthy
	$(KETTER) --config $(CONFIG) health

wheelhouse: install ## every wheel Ketter needs, for deploy/install.sh (into WHEELHOUSE=dist/wheelhouse)
	rm -rf $(WHEELHOUSE) && mkdir -p $(WHEELHOUSE)
	$(PY) -m pip wheel --quiet --disable-pip-version-check --no-build-isolation \
	  -c constraints.txt -w $(WHEELHOUSE) .
	cp constraints.txt $(WHEELHOUSE)/
	@ls $(WHEELHOUSE)/*.whl | wc -l | xargs echo "wheels in $(WHEELHOUSE):"
	@echo "Take it to the node with deploy/ configs/ docs/, then: sudo deploy/install.sh --wheelhouse DIR"

clean: ## remove the venv and the demo's state
	rm -rf $(VENV) var build *.egg-info
