# Observatory — every workflow is one make target. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= observatory.yaml
PYTEST_ARGS ?=

.PHONY: help venv infra-up infra-down infra-status migrate demo test test-faults test-unit lint format eval bench clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  make %-13s %s\n", $$1, $$2}'

NATIVE_SOURCES := setup.py schemas/native/Cargo.toml schemas/native/Cargo.lock $(wildcard schemas/native/src/*.rs)

$(STAMP): pyproject.toml $(NATIVE_SOURCES)
	@echo "[make] creating $(VENV) and installing observatory (first time takes a minute)…"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip > $(VENV)/install.log 2>&1 || (cat $(VENV)/install.log; exit 1)
	@$(BIN)/python -m pip install -e ".[dev,bench]" >> $(VENV)/install.log 2>&1 || (tail -50 $(VENV)/install.log; exit 1)
	@touch $(STAMP)

venv: $(STAMP) ## create .venv and install the package with dev tools

infra-up: ## install (cached) and start Kafka + TimescaleDB on 127.0.0.1
	@bash infra/up.sh

infra-down: ## stop what infra-up started
	@bash infra/down.sh

infra-status: ## show whether Kafka and TimescaleDB are running
	@bash infra/status.sh

migrate: venv infra-up ## apply the SQL migrations
	@$(BIN)/observatory migrate --config $(CONFIG)

demo: venv ## set up everything, run the pipeline on simulated traffic with incidents, show the results (KEEP=1 keeps the services up)
	@$(BIN)/python -m observatory.flows.demo --config $(CONFIG)

test: venv infra-up ## set up everything and run the whole test suite against the real services
	@$(BIN)/python -m pytest $(PYTEST_ARGS)

test-faults: venv ## the fault suite at full load: own Kafka + PostgreSQL (ports 9192, 5533), stopped and restarted mid-run
	@OBSERVATORY_FAULTS_SCALE=full $(BIN)/python -m pytest tests/faults $(PYTEST_ARGS)

test-unit: venv ## only the tests that need no services
	@$(BIN)/python -m pytest -m "not integration" $(PYTEST_ARGS)

lint: venv ## ruff lint + format check
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .

format: venv ## apply ruff formatting and safe fixes
	@$(BIN)/ruff format .
	@$(BIN)/ruff check --fix .

eval: venv infra-up ## detector precision/recall on labelled incidents, end to end
	@$(BIN)/python -m observatory.flows.evaluate

bench: venv infra-up ## run the benchmarks; prints a table and writes bench/results.json
	@$(BIN)/python -m bench.run

clean: ## remove the virtualenv and caches (keeps .infra downloads)
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis demo-out
