# Quick start: `make demo` (set-up + the main job on bundled data), `make test`.
# `make docs` builds the documentation site into docs/_build/html (warnings are errors).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup demo test lint docs bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/python -m vi_entropy.demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

# Tutorials the test suite has just executed (same source, same size) are rendered from
# that run; the others are executed here (smoke-sized; VI_ENTROPY_SMOKE=0 for full size).
docs: setup
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html
	@echo "Documentation: docs/_build/html/index.html"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) docs/_build .pytest_cache
