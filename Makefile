# Quick start: `make demo` (set-up + the main job on bundled data), `make test`.
# `make docs` builds the documentation site into docs/_build/html (warnings are errors).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup demo test lint docs wheel-check bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/vi-entropy reproduce

# The second pass runs the tests marked `x64` (every sampler, both schemes) in float64;
# --require-x64 stops it if JAX did not switch to float64.
test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2 --dist loadgroup --no-loadscope-reorder --durations=15 $(PYTEST_ARGS)
	JAX_ENABLE_X64=1 $(BIN)/python -m pytest -n 2 --dist loadgroup --no-loadscope-reorder -m x64 --require-x64 $(PYTEST_ARGS)

# Tutorials the test suite has just executed (same source, same size) are rendered from
# that run; the others are executed here (smoke-sized; VI_ENTROPY_SMOKE=0 for full size).
docs: setup
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html
	@echo "Documentation: docs/_build/html/index.html"

# Build the sdist and wheel, install the wheel into a fresh virtual environment (pinned
# versions) and run the installed package from outside this checkout (.ci/wheel_check.sh).
wheel-check: setup
	PYTHON=$(BIN)/python bash .ci/wheel_check.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) docs/_build .pytest_cache

# Full CPU benchmarks (~70 min on 2 cores; see docs/benchmarks.md). GPU: bash benchmarks/gpu.sh
bench: setup
	PYTHONPATH=$(CURDIR) $(BIN)/python benchmarks/overhead.py --sizes 10000 --repeats 7
	PYTHONPATH=$(CURDIR) $(BIN)/python benchmarks/overhead.py --sizes 100000 --steps 2 --repeats 3
	PYTHONPATH=$(CURDIR) $(BIN)/python benchmarks/naive.py
	PYTHONPATH=$(CURDIR) $(BIN)/python benchmarks/compilation.py --size 1000
	PYTHONPATH=$(CURDIR) $(BIN)/python benchmarks/scaling.py
	PYTHONPATH=$(CURDIR) $(BIN)/python benchmarks/accuracy_per_cost.py
	PYTHONPATH=$(CURDIR) $(BIN)/python benchmarks/defaults.py
	PYTHONPATH=$(CURDIR) $(BIN)/python benchmarks/choosing_tau.py
