# Two commands do all the set-up on a fresh machine:
#   make run   - replay the embedded sample traffic through the appliance and print the pairs
#   make test  - install everything the suite needs and run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# the cdktn CLI and the Node.js >= 22 it runs on, from the npm registry (infra/cdktf/package.json)
CDKTN  := infra/cdktf/node_modules/.installed

.PHONY: run test lint bench clean bpf cdktn

# eBPF collector objects: CO-RE, compiled ahead of time against the committed type header
# (no kernel headers). Needs clang, llvm and libbpf-dev (scripts/system-deps.sh).
BPF_DIR  := appliance/ebpf/bpf
BPF_OBJ  := $(BPF_DIR)/collector.bpf.o
BPF_ARCH := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')
BPF_CLANG ?= clang

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
	$(MAKE) lint
	$(MAKE) bpf
	$(MAKE) --no-print-directory $(CDKTN)
	$(PY) -m pytest -q

# ruff and mypy, configured in pyproject.toml ([tool.ruff], [tool.mypy])
lint: $(VENV)/.full
	$(PY) -m ruff check .
	$(PY) -m mypy

bpf: $(BPF_OBJ)

$(BPF_OBJ): $(BPF_DIR)/collector.bpf.c $(BPF_DIR)/collector.h $(BPF_DIR)/vmlinux_min.h
	$(BPF_CLANG) -g -O2 -Wall -Werror -target bpf -D__TARGET_ARCH_$(BPF_ARCH) -I$(BPF_DIR) -c $< -o $@.tmp
	llvm-strip -g $@.tmp   # DWARF only: the .BTF/.BTF.ext sections CO-RE needs stay
	mv $@.tmp $@

bench: $(VENV)/.base
	$(PY) bench/replay_bench.py

clean:
	rm -rf $(VENV) build *.egg-info $(BPF_DIR)/*.bpf.o infra/cdktf/node_modules
