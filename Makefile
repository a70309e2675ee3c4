# Two commands do all the set-up on a fresh machine:
#   make run   - replay the embedded sample traffic through the appliance and print the pairs
#   make test  - install everything the suite needs and run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# the cdktn CLI and the Node.js >= 22 it runs on, from the npm registry (infra/cdktf/package.json)
CDKTN  := infra/cdktf/node_modules/.installed

.PHONY: run test lint bench clean bpf build cdktn

# The compiled core (setup.py): Cython builds these modules; `make build` rebuilds what
# changed. Without a C compiler the pure-Python core runs, and the build says so.
CORE_SRC := $(wildcard appliance/core/*.py appliance/core/*.pxd appliance/core/http/*.py \
                       appliance/core/http/*.pxd) appliance/format/record.py setup.py
# the core's tests, run a second time on the pure-Python core (the reference build)
CORE_TESTS := tests/test_tcp.py tests/test_http.py tests/test_core_regressions.py \
              tests/test_metamorphic.py tests/test_not_http.py tests/test_h11_differential.py \
              tests/test_accounting.py tests/test_robustness.py tests/test_corpus.py \
              tests/test_bodies_record.py tests/test_filters.py tests/test_decode.py \
              tests/test_compiled_core.py

# eBPF collector objects: CO-RE, compiled ahead of time against the committed type header
# (no kernel headers). Needs clang, llvm and libbpf-dev (scripts/system-deps.sh).
BPF_DIR  := appliance/ebpf/bpf
BPF_OBJ  := $(BPF_DIR)/collector.bpf.o
BPF_ARCH := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')
BPF_CLANG ?= clang

$(VENV)/.base: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[broker]'
	touch $@

$(VENV)/.full: pyproject.toml $(VENV)/.base
	$(PY) -m pip install -q -e '.[all,test]'
	touch $@

build: $(VENV)/.core

# (pip builds it in an isolated environment: the test tools pin packaging below what the
# build's setuptools needs; nothing to do when the installed build is already current)
$(VENV)/.core: $(VENV)/.base $(CORE_SRC)
	$(PY) -c 'import sys, appliance.core as c; sys.exit(not c._compiled_state()[0])' \
	  || $(PY) -m pip install -q --no-deps -e .
	@$(PY) -c 'import appliance.core as c; print("appliance", c.describe())'
	touch $@

run: $(VENV)/.core
	$(PY) -m appliance demo

$(CDKTN): infra/cdktf/package.json infra/cdktf/package-lock.json
	cd infra/cdktf && npm ci --no-audit --no-fund --loglevel=error
	touch $@

cdktn: $(CDKTN)

test: $(VENV)/.full
	bash scripts/system-deps.sh
	$(MAKE) build
	$(MAKE) lint
	$(MAKE) bpf
	$(MAKE) --no-print-directory $(CDKTN)
	$(PY) -m pytest -q
	$(PY) -m pytest -q --core=python $(CORE_TESTS)

# ruff and mypy, configured in pyproject.toml ([tool.ruff], [tool.mypy])
lint: $(VENV)/.full
	$(PY) -m ruff check .
	$(PY) -m mypy

bpf: $(BPF_OBJ)

$(BPF_OBJ): $(BPF_DIR)/collector.bpf.c $(BPF_DIR)/collector.h $(BPF_DIR)/vmlinux_min.h
	$(BPF_CLANG) -g -O2 -Wall -Werror -target bpf -D__TARGET_ARCH_$(BPF_ARCH) -I$(BPF_DIR) -c $< -o $@.tmp
	llvm-strip -g $@.tmp   # DWARF only: the .BTF/.BTF.ext sections CO-RE needs stay
	mv $@.tmp $@

bench: $(VENV)/.core
	$(PY) bench/replay_bench.py
	$(PY) bench/live_bench.py

clean:
	rm -rf $(VENV) build *.egg-info $(BPF_DIR)/*.bpf.o infra/cdktf/node_modules
	find appliance -name '*.so' -delete
	rm -f $(patsubst %.py,%.c,$(filter %.py,$(CORE_SRC)))
