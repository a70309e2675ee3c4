"""Helpers for runtime tests (imported by name; fixtures live in conftest.py)."""

import json
import os
import time

from appliance.broker import consume_all  # noqa: F401 - re-exported for the tests


def records(msgs):
    return [json.loads(m.value()) for m in msgs]


def state(pid):
    """The process state letter (R, S, Z, ...), or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2]


def alive(pid):
    """Running (a zombie has exited: the suite's subreaper collects it later)."""
    return state(pid) not in (None, "Z")


def children(pid):
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                out.append(int(name))
    return out


def wait_gone(pids, timeout):
    """Wait until none of `pids` runs; returns the seconds it took (None: still running)."""
    t0 = time.monotonic()
    while any(alive(p) for p in pids):
        if time.monotonic() - t0 > timeout:
            return None
        time.sleep(0.02)
    for p in pids:  # collect zombies re-parented to the test process
        try:
            os.waitpid(p, os.WNOHANG)
        except ChildProcessError:
            pass
    return time.monotonic() - t0
