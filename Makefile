# Set-up is part of every target: a fresh machine needs only `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: 2.13.0 resolves to the local CPU build, never the CUDA wheels
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,temscript,nion]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/emauto demo --out emauto-demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/emauto bench sim --json

clean:
	rm -rf $(VENV) emauto-demo .pytest_cache .mypy_cache .ruff_cache
