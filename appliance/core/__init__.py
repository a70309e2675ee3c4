"""The core, in two builds of the same source: compiled and pure Python.

The modules listed in :data:`MODULES` are plain Python: the readable reference.  When the
package was installed on a machine with a C compiler, ``setup.py`` also compiled them
with Cython in its pure-Python mode (the ``.pxd`` beside each module declares C types for
its classes and hot locals), and the compiled modules load in their place.  Both builds
behave identically (``tests/test_core_differential.py`` feeds both the same random
captures; the core tests run against both, ``pytest --core=python``).

Which one runs is decided here, once, before any of them is imported:

- ``APPLIANCE_CORE=python``: the pure-Python modules, even where compiled ones exist;
- ``APPLIANCE_CORE=cython``: the compiled modules, or an ImportError saying why not;
- unset: the compiled modules when every one of them is built and (in a source
  checkout) newer than its sources, otherwise the pure-Python ones.

:data:`CORE` names the build that runs (``"cython"`` or ``"python"``) and :data:`REASON`
says why, for ``appliance --version``, ``/status`` and the start-up line.
"""

from __future__ import annotations

import gc
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Sequence

# compiled by setup.py (in this order: each imports only modules before it)
MODULES = (
    "appliance.core.stream",
    "appliance.core.pair",
    "appliance.core.decode",
    "appliance.core.tcp",
    "appliance.core.http.parser",
    "appliance.core.http.session",
    "appliance.core.flows",
    "appliance.core.pipeline",
    "appliance.format.record",
)

_ROOT = Path(__file__).resolve().parents[2]


def _source(name: str) -> Path:
    return _ROOT.joinpath(*name.split(".")).with_suffix(".py")


def _compiled(name: str) -> Path | None:
    src = _source(name)
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = src.with_suffix(suffix)
        if path.exists():
            return path
    return None


def _compiled_state() -> tuple[bool, str]:
    """(every module compiled and current, why not)."""
    missing = [n for n in MODULES if _compiled(n) is None]
    if missing:
        if len(missing) == len(MODULES):
            return False, "compiled core not built"
        return False, "compiled core incomplete (" + ", ".join(m.rsplit(".", 1)[1] for m in missing) + ")"
    if (_ROOT / ".git").exists():  # a source checkout: an edited module needs a rebuild
        for n in MODULES:
            so = _compiled(n)
            assert so is not None
            built = so.stat().st_mtime
            src = _source(n)
            for dep in (src, src.with_suffix(".pxd")):
                if dep.exists() and dep.stat().st_mtime > built:
                    return False, f"compiled core older than {dep.name} (run `make build`)"
    return True, "compiled with Cython"


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Loads the core's modules from their ``.py`` files, never from a compiled build."""

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES:
            return None
        src = str(_source(fullname))
        return importlib.util.spec_from_file_location(
            fullname, src, loader=importlib.machinery.SourceFileLoader(fullname, src))


class _CompiledFinder(importlib.abc.MetaPathFinder):
    """Loads the core's modules from their compiled build only."""

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES:
            return None
        so = _compiled(fullname)
        if so is None:
            raise ImportError(f"{fullname}: the compiled core is not built")
        return importlib.util.spec_from_file_location(
            fullname, str(so), loader=importlib.machinery.ExtensionFileLoader(fullname, str(so)))


def _select() -> tuple[str, str]:
    want = os.environ.get("APPLIANCE_CORE", "").strip().lower()
    ok, why = _compiled_state()
    if want == "python":
        return "python", "APPLIANCE_CORE=python"
    if want in ("cython", "compiled"):
        if not ok:
            raise ImportError(f"APPLIANCE_CORE={want}, but {why}")
        return "cython", why
    if want:
        raise ImportError(f"APPLIANCE_CORE={want!r}: expected 'cython' or 'python'")
    return ("cython", why) if ok else ("python", why)


CORE, REASON = _select()
if CORE == "python":
    sys.meta_path.insert(0, _SourceFinder())


def tune_gc() -> None:
    """Run the cyclic garbage collector about a hundred times less often than CPython's
    default (every 700 container allocations), for a process whose main work is the core.

    The core makes and frees several container objects per packet; its pairs and closed
    connections form no reference cycles (they are freed by reference counting), so the
    collector's frequent passes find nothing but cost about a tenth of the CPU time.
    Called by the processes that run the core (worker, replay), not on import."""
    gc.set_threshold(100_000, 20, 10)


def describe() -> str:
    """One phrase for --version, /status and the start-up line."""
    if CORE == "cython":
        return "core: cython (compiled)"
    return f"core: python ({REASON})"


def load_core(kind: str) -> dict[str, ModuleType]:
    """The core's modules in build ``kind`` ("cython" or "python"), by module name.

    For the current build, the loaded modules; for the other one, a second, complete
    set loaded beside them (each module bound to its own build's siblings), for tests
    that run both cores in one process.  The current modules stay what ``import``
    returns."""
    if kind == CORE:
        return {n: importlib.import_module(n) for n in MODULES}
    finder: importlib.abc.MetaPathFinder = _SourceFinder() if kind == "python" else _CompiledFinder()
    saved = {n: sys.modules.pop(n) for n in MODULES if n in sys.modules}
    ours = [f for f in sys.meta_path if isinstance(f, _SourceFinder)]
    for f in ours:
        sys.meta_path.remove(f)
    sys.meta_path.insert(0, finder)
    try:
        mods = {n: importlib.import_module(n) for n in MODULES}
    finally:
        sys.meta_path.remove(finder)
        for f in ours:
            sys.meta_path.insert(0, f)
        for n in MODULES:
            sys.modules.pop(n, None)
        sys.modules.update(saved)
        for n, mod in saved.items():  # `from package import module` must see the current build
            parent, _, child = n.rpartition(".")
            setattr(sys.modules[parent], child, mod)
        for n in MODULES:
            if n not in saved and n in mods:
                parent, _, child = n.rpartition(".")
                if getattr(sys.modules.get(parent), child, None) is mods[n]:
                    delattr(sys.modules[parent], child)
    return mods
