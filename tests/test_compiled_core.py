"""The compiled core is there where it can be built, and the core that runs says so.

A machine with a C compiler and the Python headers builds the compiled core on install
(setup.py); if it did not, or if a source was edited after the build, this fails rather
than letting the suite pass on the slow twin unnoticed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import appliance.core as core

ROOT = Path(__file__).resolve().parents[1]


def compiler_present() -> bool:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    headers = Path(sysconfig.get_paths()["include"], "Python.h")
    return shutil.which(cc) is not None and headers.exists()


def test_the_compiled_core_is_built_where_a_compiler_is():
    if os.environ.get("APPLIANCE_PURE_PYTHON", "") not in ("", "0"):
        pytest.skip("APPLIANCE_PURE_PYTHON is set: the compiled core is skipped on purpose")
    if not compiler_present():
        pytest.skip("no C compiler or Python headers here: the pure-Python core is expected")
    ok, why = core._compiled_state()
    assert ok, f"a compiler is present but the compiled core is not usable: {why} (run `make build`)"


def test_the_core_that_runs_is_the_one_named():
    from appliance.core import pipeline, tcp
    from appliance.core.http import parser, session
    from appliance.format import record

    modules = (pipeline, tcp, parser, session, record)
    compiled = [not m.__file__.endswith(".py") for m in modules]
    assert compiled == [core.CORE == "cython"] * len(modules), [m.__file__ for m in modules]
    assert tcp.COMPILED is (core.CORE == "cython")


def test_version_and_status_name_the_core():
    out = subprocess.run([sys.executable, "-m", "appliance", "--version"], capture_output=True,
                         text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"core: {core.CORE}" in out.stdout, out.stdout


@pytest.mark.skipif(not core._compiled_state()[0], reason="the compiled core is not built")
def test_both_builds_load_side_by_side():
    other = "python" if core.CORE == "cython" else "cython"
    mods = core.load_core(other)
    assert mods["appliance.core.tcp"].COMPILED is (other == "cython")
    # the modules `import` returns are still the current build's
    from appliance.core import tcp
    from appliance.core.http import session

    assert tcp.COMPILED is (core.CORE == "cython")
    assert session.__file__.endswith(".py") is (core.CORE == "python")
    # and the other build's modules use their own siblings
    p = mods["appliance.core.pipeline"].Pipeline()
    assert type(p.table.tcp_stats).__module__ == "appliance.core.tcp"
    assert type(p.table.tcp_stats) is mods["appliance.core.tcp"].TcpStats
