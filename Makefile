# Builds every environment from nothing and runs the main job or the tests.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
MEMBERS := chgnet-0.2.0 chgnet-0.3.0 chgnet-r2scan sevennet-0-11jul2024 sevennet-0-22may2024 sevennet-l3i5

.PHONY: setup demo test test-fast benchmarks clean

setup: $(VENV)/.installed

# torch==2.13.0 first: the CPU build (a bare or looser torch requirement pulls a multi-GB CUDA build).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: setup
	$(BIN)/uq-flows score examples/structures $(addprefix --member ,$(MEMBERS)) --out scored.extxyz

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

benchmarks: setup
	$(BIN)/python benchmarks/uncertainty.py

clean:
	rm -rf $(VENV) .pytest_cache scored.extxyz
