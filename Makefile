# The README's commands. `make demo` is the main job, `make test` the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint typecheck unit e2e bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Python dependencies and the Pulumi toolchain (built once into ~/.cache).
setup: $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	scripts/install-pulumi

# The main job on the embedded default: local file backend, render target.
demo: setup
	$(BIN)/python -m automation.demo

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy

unit:
	$(BIN)/pytest -m "not e2e" -q

e2e:
	$(BIN)/pytest -m e2e -q

test: lint typecheck
	$(BIN)/pytest -q

bench:
	$(BIN)/python scripts/bench_api.py

clean:
	rm -rf .state rendered .pytest_cache .mypy_cache .ruff_cache
