# Two commands for a fresh machine: `make run` starts leadpush, `make test` runs the whole suite.
# `run` installs what running needs; `test` (and `venv`, `lint`) add the test tools and the fakes of
# WeChat / WeCom (fakes/, a distribution of their own). Stamp files in .venv/ record what was
# installed, for which pyproject.toml.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test quick venv lint services

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip==26.3

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml fakes/pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]' -e fakes/
	touch $@

venv: $(VENV)/.installed-test

# `make run PORT=9000` (or HOST=0.0.0.0) changes where it listens; LEADPUSH_PORT / LEADPUSH_HOST work too.
run: $(VENV)/.installed-run
	$(BIN)/leadpush serve $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

lint: venv
	$(BIN)/ruff check src tests benchmarks fakes
	$(BIN)/ruff format --check src tests benchmarks fakes
	$(BIN)/lint-imports
	$(BIN)/mypy

test: venv
	bash scripts/test.sh

# The fast tier while working (under a minute): Python tests not marked `slow` (browser, fault, kill -9,
# subprocess, fuzz, exhaustive and long tests), on SQLite only, without the JS kit's suite.
# `make test` (CI) runs everything, on both databases.
quick: venv
	bash scripts/test.sh --quick
