"""Suite-wide hooks.

**Which core.** ``pytest --core=python`` (the pure-Python reference) or ``--core=cython``
(the compiled build); by default whatever the package loads (the compiled core where it is
built).  The choice goes through the environment (APPLIANCE_CORE, read once by
appliance.core), so the processes the tests start run the same core.  ``make test`` runs the
whole suite on the default core, then the core's tests again on the pure-Python one.

**No leftovers.** The run fails if any process it started is still alive at the end.

At session start pytest becomes a *child subreaper* (``PR_SET_CHILD_SUBREAPER``): a
process the suite started whose parent exits is re-parented to pytest instead of init, so
at the end "started by the suite" is exactly "a descendant of pytest", orphans included
(an appliance worker whose supervisor was killed, a daemon that forked into the
background).  At session end, after a short grace for processes that are just exiting,
every descendant still alive is listed and the run fails (the leftovers are then killed,
so that one leak does not hold ports for the next run).
"""

from __future__ import annotations

import ctypes
import os
import signal
import time

import pytest

PR_SET_CHILD_SUBREAPER = 36
GRACE_SECS = 5.0
_leaks: list[str] = []


def pytest_addoption(parser):
    parser.addoption("--core", choices=("cython", "python"), default=None,
                     help="run against this build of the core (default: what the package loads)")


def pytest_configure(config):
    core = config.getoption("--core")
    if core:
        os.environ["APPLIANCE_CORE"] = core


def pytest_report_header(config):
    import appliance.core

    return f"appliance {appliance.core.describe()}"


def pytest_sessionstart(session):
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _processes() -> dict[int, tuple[int, str, str]]:
    """pid -> (ppid, state, command line) for every process we can see."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2:].split()
        out[int(name)] = (int(rest[1]), rest[0], cmd or stat[stat.index("(") + 1:stat.rindex(")")])
    return out


def descendants_alive(root: int) -> dict[int, str]:
    procs = _processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    found = {}
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        ppid, state, cmd = procs[pid]
        if state != "Z":
            found[pid] = cmd
        stack.extend(children.get(pid, []))
    return found


def _reap_zombies() -> None:
    """Orphans re-parented to us become our zombies when they exit: collect them (only
    those; a Popen's own child is left to its Popen)."""
    me = os.getpid()
    for pid, (ppid, state, _) in _processes().items():
        if ppid == me and state == "Z":
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def _stop_interpreter_helpers() -> None:
    """Helpers a library keeps for the life of the interpreter and stops itself at exit
    (after this check would run): stop them now, the way they would be stopped then.
    jsii (CDK Terrain synthesis in tests/infra) runs its kernel as a node process."""
    import gc
    import sys

    if "jsii._kernel.providers.process" in sys.modules:
        for obj in gc.get_objects():
            if type(obj).__name__ == "_NodeProcess" and type(obj).__module__.startswith("jsii"):
                try:
                    obj.stop()
                except (OSError, ValueError):
                    pass


def pytest_sessionfinish(session, exitstatus):
    _stop_interpreter_helpers()
    me = os.getpid()
    deadline = time.monotonic() + GRACE_SECS
    left = descendants_alive(me)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        _reap_zombies()
        left = descendants_alive(me)
    if not left:
        return
    _leaks[:] = [f"pid {pid}: {cmd[:200]}" for pid, cmd in sorted(left.items())]
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _leaks:
        terminalreporter.section("processes the suite started and left running", sep="=",
                                 red=True, bold=True)
        for line in _leaks:
            terminalreporter.write_line(line)
        terminalreporter.write_line("(killed now; fix the test that started them)")
