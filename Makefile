# The two commands of the README: `make demo` and `make test`.
# Both create .venv with a Python 3.11+ found on PATH (override with PYTHON=/path/to/python).

PYTHON ?= $(shell for candidate in python3.13 python3.12 python3.11 python3; do \
	path=$$(command -v $$candidate) && "$$path" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	2>/dev/null && echo "$$path" && break; done)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck clean

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "error: Python 3.11 or newer not found on PATH; set PYTHON=/path/to/python3.11" >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

demo: $(VENV)/.installed
	$(BIN)/python examples/invoice-sync/demo.py

test: $(VENV)/.installed-dev lint typecheck
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check splice tests examples benchmarks
	$(BIN)/ruff format --check splice tests examples benchmarks

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info
