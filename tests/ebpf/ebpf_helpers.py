"""Shared pieces of the eBPF probe tests: network namespaces, peer processes, a capture
that turns ring-buffer records into per-connection stream events."""

from __future__ import annotations

import itertools
import json
import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from appliance.ebpf.collector import BPF_OBJECT, Collector, CollectorConfig, RingReader
from appliance.ebpf.events import ConnOpen, Data, Event, Truncated
from appliance.ebpf.ring import DirectRing
from appliance.ebpf.streams import UNKNOWN, Connection, ConnectionTracker

ROOT = Path(__file__).resolve().parents[2]
PEERS = Path(__file__).with_name("peers.py")
_ns_ids = itertools.count()


def bpf_unavailable() -> str | None:
    """Why the probe tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "eBPF probe tests need root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN)"
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        return "kernel has no BTF (/sys/kernel/btf/vmlinux)"
    if not BPF_OBJECT.exists():
        if shutil.which("clang") is None:
            return "clang not installed: run scripts/system-deps.sh (make test does)"
        r = subprocess.run(["make", "-s", "bpf"], cwd=ROOT, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"make bpf failed:\n{r.stdout}{r.stderr}")
    return None


class Netns:
    def __init__(self) -> None:
        self.name = f"apl-ebpf-{os.getpid()}-{next(_ns_ids)}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True)

    def cmd(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False)


class Peer:
    """A process waiting for "go" on stdin, allow-listed before it starts."""

    def __init__(self, argv: list[str], collector: Collector | None, *, wait_line: str | None = None) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        if collector is not None:
            collector.allow_pid(self.proc.pid)
        self.first_line = ""
        if wait_line is not None:
            line = self.proc.stdout.readline()
            if not line.startswith(wait_line):
                self.proc.kill()
                raise RuntimeError(f"peer said {line!r}: {self.proc.stderr.read()}")
            self.first_line = line.strip()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def go(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def wait(self, timeout: float = 30) -> str:
        out, err = self.proc.communicate(timeout=timeout)
        if self.proc.returncode != 0:
            raise RuntimeError(f"peer failed ({self.proc.returncode}): {err}")
        return out

    def terminate(self, timeout: float = 10) -> None:
        """SIGTERM and wait (nginx's master then stops its workers)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def python_peer(ns: Netns | None, *args: str) -> list[str]:
    argv = [sys.executable, str(PEERS), *args]
    return ns.cmd(*argv) if ns else argv


def write_script(path: Path, sends: list[tuple[bytes, int]]) -> str:
    path.write_text(json.dumps([[b.decode("latin-1"), n] for b, n in sends]))
    return str(path)


@dataclass
class Recorded:
    """One connection's stream events, as the HTTP session would receive them."""
    conn: Connection
    calls: list[tuple] = field(default_factory=list)

    def data(self, direction: int, offset: int, ts: float, payload: bytes) -> None:
        self.calls.append(("data", direction, offset, payload))

    def gap(self, direction: int, offset: int, nbytes: int) -> None:
        self.calls.append(("gap", direction, offset, nbytes))

    def eof(self, direction: int) -> None:
        self.calls.append(("eof", direction))

    def close(self) -> None:
        self.calls.append(("close",))

    @property
    def open(self) -> ConnOpen:
        return self.conn.open

    def stream(self, d: int) -> bytes:
        """The direction's bytes; raises if it has a gap."""
        out = bytearray()
        for c in self.calls:
            if c[0] == "data" and c[1] == d:
                assert c[2] == len(out), f"offset {c[2]} after {len(out)} bytes"
                out += c[3]
            elif c[0] == "gap" and c[1] == d:
                raise AssertionError(f"gap in direction {d}: {c}")
        return bytes(out)

    def gaps(self, d: int) -> list[tuple[int, int]]:
        return [(c[2], c[3]) for c in self.calls if c[0] == "gap" and c[1] == d]

    @property
    def closed(self) -> bool:
        return bool(self.calls) and self.calls[-1] == ("close",)


class Capture:
    """A loaded collector (allow-list mode) and a tracker recording every connection.
    `direct`: read the rings from their memory map (appliance.ebpf.ring, what the runtime
    uses) instead of libbpf's consumer."""

    def __init__(self, cfg: CollectorConfig | None = None, direct: bool = False) -> None:
        cfg = cfg or CollectorConfig(only_listed=True, rescan_interval=0)
        self.col = Collector(cfg).open()
        self.readers: list = ([DirectRing(fd, cfg.ring_bytes) for fd in self.col.ring_fds]
                              if direct else [RingReader(fd) for fd in self.col.ring_fds])
        self.events: list[Event] = []
        self.conns: list[Recorded] = []
        self.tracker = ConnectionTracker(self._open, tls_ready_ns=lambda: self.col.tls_ready_ns)

    def _open(self, conn: Connection) -> Recorded:
        r = Recorded(conn)
        self.conns.append(r)
        return r

    def pump(self, timeout_ms: int = 50) -> None:
        self.col.poll_control(0)
        for r in self.readers:
            wait = timeout_ms if len(self.readers) == 1 else 0
            if isinstance(r, DirectRing):
                select.select([r.fileno()], [], [], wait / 1000)
                evs = r.read()
            else:
                evs = r.poll(wait)
            self.events.extend(evs)
            self.tracker.feed_all(evs)

    def until(self, pred: Callable[[], bool], timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.pump()
            if pred():
                return
        raise AssertionError(f"timed out; {len(self.events)} events, {len(self.conns)} connections")

    def of(self, pid: int) -> list[Recorded]:
        return [r for r in self.conns if r.open.key.tgid == pid]

    def close(self) -> None:
        for r in self.readers:
            r.close()
        self.col.close()


def data_events(events: list[Event], pid: int) -> list[Data | Truncated]:
    return [e for e in events if isinstance(e, (Data, Truncated)) and e.key.tgid == pid]


__all__ = ["UNKNOWN", "Capture", "Netns", "Peer", "Recorded", "bpf_unavailable", "python_peer",
           "write_script", "data_events"]
