# CASEMIS Import for Airflow: one entry point for people and CI.
#   make run   - set up, then import the sample files through the DAG (SQLite everywhere)
#   make test  - set up, then lint and run the whole test suite
SHELL := /bin/bash
PY_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SITE := $(shell $(PY_BOOT) -c 'import sys; print(f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages")')
PYTEST_ARGS ?=

.PHONY: venv system-deps run test lint format lock bench clean ui

venv: $(STAMP)

# Reuse .venv while requirements and the lock are unchanged; rebuild it otherwise.
$(STAMP): requirements.txt requirements-dev.txt constraints.txt
	@test -x $(PY) || $(PY_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-dev.txt -c constraints.txt
	@echo "$(CURDIR)/plugins" > $(VENV)/$(SITE)/casemis-plugins.pth
	@touch $(STAMP)

# Debian packages the tests start as real servers (sshd, smbd, chromium).
system-deps:
	@bash scripts/install-system-deps.sh

run: venv
	@bash scripts/run-demo.sh

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: venv system-deps lint
	$(PY) -m pytest $(PYTEST_ARGS)

bench: venv
	$(PY) bench/bench_validate.py
	$(PY) bench/bench_import.py

# Regenerate the fully pinned lock after changing requirements*.txt.
lock:
	rm -rf $(VENV)
	$(PY_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip freeze --exclude-editable > constraints.txt
	@echo "$(CURDIR)/plugins" > $(VENV)/$(SITE)/casemis-plugins.pth
	@touch $(STAMP)

ui: venv
	@bash scripts/airflow-ui.sh

clean:
	rm -rf var test-artifacts .pytest_cache .ruff_cache
