# Two commands for a fresh machine: `make run` starts leadpush, `make test` runs the whole suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test venv lint services

$(BIN)/leadpush: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip==26.3
	$(BIN)/pip install -q -e '.[test]'
	touch $(BIN)/leadpush

venv: $(BIN)/leadpush

run: venv
	$(BIN)/leadpush serve

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: venv
	bash scripts/test.sh
