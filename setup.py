"""Build of the compiled core (everything else about the package is in pyproject.toml).

The hot modules of ``appliance/core`` (and the record formatter) are plain Python, the
readable reference.  Here Cython compiles *the same files* in its pure-Python mode, with
the ``.pxd`` file beside each module declaring C types for its classes and hot locals
(the way aiohttp, yarl and multidict ship a compiled hot path with a Python twin).  The
``.py`` files stay in the package: they are the fallback and the reference the tests
compare the compiled core against (``APPLIANCE_CORE=python`` selects them at run time).

Without a C compiler (or without Cython) the package installs with the pure-Python core
and says so in one line; ``APPLIANCE_PURE_PYTHON=1`` skips the compiled core on purpose.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

# module sources compiled, in dependency order (each has a .pxd beside it, or none)
COMPILED = [
    "appliance/core/stream.py",
    "appliance/core/pair.py",
    "appliance/core/decode.py",
    "appliance/core/tcp.py",
    "appliance/core/http/parser.py",
    "appliance/core/http/session.py",
    "appliance/core/flows.py",
    "appliance/core/pipeline.py",
    "appliance/format/record.py",
]

DIRECTIVES = {
    "language_level": 3,
    # types come from the .pxd files only: the annotations are for mypy, and Cython reading
    # them (``float`` as a C double, ``bytes`` rejecting a bytearray) could change behaviour
    "annotation_typing": False,
    # bounds stay checked: a malformed packet raises as it does in Python (and the flow
    # boundary contains it) instead of reading past a buffer
    "wraparound": True,  # negative indexes keep their Python meaning
    "cdivision": False,  # Python's // and % on negative numbers
    "infer_types": None,  # safe inference only: no C overflow where Python has big ints
    "binding": False,
    "embedsignature": False,
}


def _warn(reason: str) -> None:
    print(f"mirror-appliance: warning: compiled core not built ({reason}); "
          "installing the pure-Python core, about half as fast (install gcc and the "
          "Python headers, then reinstall)", file=sys.stderr)


class OptionalBuildExt(build_ext):
    """Build the compiled core if the machine can; never fail the install over it.  The
    first failure says why in one line and stops the rest (appliance.core uses the
    compiled modules only when every one of them is built)."""

    failed = False

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler, no headers: the pure-Python core remains
            self._fail(exc)

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]
        if self.failed:
            return
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        if not self.failed:
            self.failed = True
            first = str(exc).splitlines()[0] if str(exc) else ""
            _warn(f"{type(exc).__name__}: {first}")


def extensions() -> list:  # type: ignore[type-arg]
    if os.environ.get("APPLIANCE_PURE_PYTHON", "") not in ("", "0"):
        print("mirror-appliance: APPLIANCE_PURE_PYTHON set: pure-Python core only", file=sys.stderr)
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        _warn("Cython is not installed")
        return []
    return cythonize(COMPILED, compiler_directives=DIRECTIVES, quiet=True)


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
