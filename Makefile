# lifeloop — `make demo` to see it, `make test` to prove it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test coverage test-quick bench lint install services browser clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# `lifeloop demo` migrates the store itself; it prints the console login first in its guide.
demo: $(STAMP)
	$(BIN)/lifeloop demo

# Makes sure PostgreSQL is running and Chromium installed, then runs every test on SQLite and PostgreSQL.
test: $(STAMP) services browser
	$(BIN)/pytest -n 2 -m "not spark" --durations=25 $(COVERAGE) $(PYTEST_ARGS)
	@# Spark tests in one process: one Spark session (≈15 s to start) for the whole run.
	$(BIN)/pytest -m spark $(COVERAGE_SPARK) $(PYTEST_ARGS) || [ $$? -eq 5 ]

# The same run with branch coverage (a third slower: the tracer sees every line), reported at the end.
coverage:
	$(MAKE) test COVERAGE="--cov --cov-report=" \
		COVERAGE_SPARK="--cov --cov-append --cov-report=term:skip-covered --cov-report=xml"

test-quick: $(STAMP) services
	$(BIN)/pytest -n 2 -m "not spark and not slow" $(PYTEST_ARGS)

services:
	@bash scripts/ensure-postgres.sh

browser:
	@bash scripts/ensure-browser.sh

bench: $(STAMP) services
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	@mkdir -p bench/results
	@for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .mypy_cache coverage.xml .coverage
