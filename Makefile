# The README's commands. `make demo` is the main job, `make test` the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup setup-kube demo test lint typecheck unit e2e kube bench clean kube-sim

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Python dependencies and the Pulumi toolchain (built once into ~/.cache).
setup: $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	scripts/install-pulumi

# The local Kubernetes control plane the kube tests run against (built once
# into ~/.cache, like the Pulumi toolchain).
setup-kube: setup
	scripts/install-kube-sim

# The main job on the embedded default: local file backend, render target.
demo: setup
	$(BIN)/python -m automation.demo

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy

# Tests on the local control plane run in a loopback-only network namespace
# (unshare -n needs root, as CI has; elsewhere `unshare -rn` does the same).
IN_NETNS := unshare -n sh -c 'ip link set lo up && exec "$$0" "$$@"'

unit:
	$(BIN)/pytest -m "not e2e and not kube" -q -n 2

e2e:
	$(BIN)/pytest -m e2e -q -n 2

kube:
	$(IN_NETNS) $(BIN)/pytest -m kube -q tests/kube

test: setup-kube lint typecheck
	$(BIN)/pytest -q -n 2 -m "not kube"
	$(IN_NETNS) $(BIN)/pytest -m kube -q tests/kube

# A local Kubernetes control plane to try things against, in a loopback-only
# network namespace; it prints its kubeconfig and how to use it. Ctrl-C stops it.
kube-sim: setup-kube
	$(IN_NETNS) $(BIN)/python -m tests.kube.sim up

bench:
	$(BIN)/python scripts/bench_api.py

clean:
	rm -rf .state rendered .pytest_cache .mypy_cache .ruff_cache
