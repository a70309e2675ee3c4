# Two commands do all the set-up on a fresh machine:
#   make run   - replay the embedded sample traffic through the appliance and print the pairs
#   make test  - install everything the suite needs and run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: run test lint bench clean

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[broker]'
	touch $@

$(VENV)/.full: pyproject.toml $(VENV)/.base
	$(PY) -m pip install -q -e '.[all,test]'
	touch $@

run: $(VENV)/.base
	$(PY) -m appliance demo

test: $(VENV)/.full
	bash scripts/system-deps.sh
	$(MAKE) lint
	$(PY) -m pytest -q

# ruff and mypy, configured in pyproject.toml ([tool.ruff], [tool.mypy])
lint: $(VENV)/.full
	$(PY) -m ruff check .
	$(PY) -m mypy

bench: $(VENV)/.base
	$(PY) bench/replay_bench.py

clean:
	rm -rf $(VENV) build *.egg-info
