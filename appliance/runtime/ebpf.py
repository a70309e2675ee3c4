"""The eBPF capture source of the runtime (``appliance run --mode ebpf``).

The supervisor owns the kernel side (``open_collector``): it loads and attaches the
programs once, creates one ring buffer per worker, excludes itself *and every process
it forks* from tracing (the workers' Kafka traffic must never be captured: the kernel
propagates the exclusion at fork, so there is no window), rescans TLS libraries when
processes start (``Collector.poll_control``, from its loop) and publishes the kernel
time of the latest library attach in a page shared with the workers.

Each worker inherits its ring's descriptor (``EbpfSpec.keep_fds``) and reads it
(``EbpfSource``) into an :class:`~appliance.ebpf.frontend.EbpfFrontEnd`
(``EbpfSpec.front_end``).  A restarted worker reads on where its predecessor stopped:
the ring lives in the kernel and keeps filling meanwhile.
"""

from __future__ import annotations

import logging
import mmap
from collections import deque
import os
import struct
import time

from appliance.core.pipeline import PipelineConfig
from appliance.ebpf import libbpf, preflight, ring
from appliance.ebpf.collector import Collector, CollectorConfig, RingReader
from appliance.ebpf.ring import DirectRing
from appliance.ebpf.events import ConnKey, ConnOpen, Role
from appliance.ebpf.frontend import EbpfFrontEnd, EbpfOptions
from appliance.runtime.sources import CaptureError

log = logging.getLogger("appliance.ebpf")

_U64 = struct.Struct("<Q")
_CONN_KEY = struct.Struct("<Ii")
CONN_STATE_SIZE = 40  # struct conn_state (bpf/collector.bpf.c): sk, conn_id, off[2], ring, ...


class SharedClock:
    """One u64 in an anonymous shared page, written by the supervisor and read by the
    forked workers: the kernel time of the latest TLS library attach (a TLS connection
    opened before it may have had plaintext nobody saw)."""

    def __init__(self) -> None:
        self._m = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_SHARED)

    def set(self, ns: int) -> None:
        self._m[0:8] = _U64.pack(ns)

    def get(self) -> int:
        return int(_U64.unpack_from(self._m, 0)[0])


def collector_config(s, workers: int) -> CollectorConfig:
    pids = s.ebpf_pid_list
    return CollectorConfig(rings=workers, ring_bytes=s.ebpf_ring_mb << 20,
                           max_call_bytes=s.ebpf_call_bytes, capture_plain=s.ebpf_capture_plain,
                           tls=s.ebpf_tls, only_listed=bool(pids), pids=pids,
                           max_conns=max(4096, s.max_active_conn))


def open_collector(s, workers: int) -> Collector:
    """Load and attach; raises ``preflight.EnvironmentProblem`` (one line) when the node
    or the configuration cannot run it."""
    for pid in s.ebpf_pid_list:
        if not os.path.exists(f"/proc/{pid}"):
            raise preflight.EnvironmentProblem(
                f"APPLIANCE_EBPF_PIDS (--pid): there is no process {pid} to trace")
    col = Collector(collector_config(s, workers))
    try:
        col.open()
    except ValueError as exc:
        raise preflight.EnvironmentProblem(f"eBPF: {exc}") from None
    try:
        # the supervisor is excluded by the programs themselves; excluding it here too
        # makes the kernel exclude every process it forks, from the fork on
        col.deny_pid(os.getpid())
    except libbpf.LibbpfError as exc:
        col.close()
        raise preflight.EnvironmentProblem(f"eBPF: cannot exclude the collector itself: {exc}") from None
    return col


class EbpfSource:
    """One worker's ring buffer, read into its front end: from its memory map
    (``appliance.ebpf.ring``) on x86-64, through libbpf's consumer elsewhere."""

    BATCH = 4096  # records per read(): the worker's ticks and memory checks keep running

    def __init__(self, ring_fd: int, ring_bytes: int, direct: bool | None = None) -> None:
        self.reader: DirectRing | RingReader
        if direct is None:
            direct = ring.available()
        try:
            if direct:
                self.reader = DirectRing(ring_fd, ring_bytes)
            else:
                self.reader = RingReader(ring_fd)
        except (OSError, ValueError, libbpf.LibbpfError, libbpf.LibbpfMissing) as exc:
            raise CaptureError(f"cannot read the eBPF ring buffer: {exc}") from None

    def fds(self) -> list[int]:
        r = self.reader
        return [r.fileno()] if isinstance(r, DirectRing) else [r.epoll_fd]

    def read(self, front_end: EbpfFrontEnd) -> int:
        r = self.reader
        events = r.read(self.BATCH) if isinstance(r, DirectRing) else r.drain()
        if r.decode_errors:
            front_end.malformed += r.decode_errors
            r.decode_errors = 0
        if events:
            front_end.feed(events)
        return len(events)

    def discard(self, seconds: float) -> int:
        """At the stop: what the ring still holds is counted and dropped."""
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            got = self.reader.discard()
            if not got:
                break
            n += got
        return n

    def close(self) -> None:
        self.reader.close()


class EbpfSpec:
    """What one worker needs: its ring, the kernel's connection table (to tell a
    connection that is merely idle from one whose close was missed), the shared clock
    and the pod resolver's settings."""

    kind = "ebpf"

    def __init__(self, ring_fd: int, ring_bytes: int, conns_fd: int, clock: SharedClock,
                 opts: EbpfOptions, pods: bool) -> None:
        self.ring_fd = ring_fd
        self.ring_bytes = ring_bytes
        self.conns_fd = conns_fd
        self.clock = clock
        self.opts = opts
        self.pods = pods

    def keep_fds(self) -> list[int]:
        return [self.ring_fd, self.conns_fd]

    def open(self) -> EbpfSource:
        return EbpfSource(self.ring_fd, self.ring_bytes)

    def front_end(self, cfg: PipelineConfig) -> EbpfFrontEnd:
        pod_of = None
        if self.pods:
            from appliance.ebpf.k8s import PodResolver

            try:
                pod_of = PodResolver.in_cluster(background=True).pod_of
            except Exception as exc:  # noqa: BLE001 - pods are optional: one warning
                log.warning("no pod metadata (tag) for the records: %s",
                            str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return EbpfFrontEnd(cfg, self.opts, tls_ready_ns=self.clock.get, pod_of=pod_of,
                            alive=self.alive, recover=recover_connection)

    def alive(self, key: ConnKey) -> bool:
        """Does the kernel still trace this connection (same fd, same generation)?"""
        raw = libbpf.map_lookup(self.conns_fd, _CONN_KEY.pack(key.tgid, key.fd), CONN_STATE_SIZE)
        return raw is not None and _U64.unpack_from(raw, 8)[0] == key.conn_id


def _hex_addr(text: str) -> tuple[bytes, int]:
    """One /proc/net/tcp{,6} endpoint: address words in host byte order, port in hex."""
    addr, port = text.split(":")
    raw = bytes.fromhex(addr)
    # each 32-bit word is printed as the host-order integer: reverse its bytes back
    packed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    if len(packed) == 16 and packed[:12] == b"\0" * 10 + b"\xff\xff":
        packed = packed[12:]  # IPv4-mapped, as the kernel's records give it
    return packed, int(port, 16)


def socket_endpoints(pid: int, fd: int) -> tuple[bytes, int, bytes, int] | None:
    """(local ip, port, remote ip, port) of a process's TCP socket, from /proc (in the
    process's network namespace), or None."""
    try:
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None
    if not target.startswith("socket:["):
        return None
    inode = target[8:-1]
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) > 9 and fields[9] == inode:
                        lip, lport = _hex_addr(fields[1])
                        rip, rport = _hex_addr(fields[2])
                        return lip, lport, rip, rport
        except OSError:
            continue
    return None


def recover_connection(key: ConnKey, ts: int, tls: bool) -> ConnOpen | None:
    """The open record of a connection this worker never saw opened (a restarted worker
    reads on where its predecessor stopped): what /proc says of the socket, its role not
    known (the session decides it), its beginning not seen."""
    ends = socket_endpoints(key.tgid, key.fd)
    if ends is None:
        return None
    try:
        with open(f"/proc/{key.tgid}/comm") as f:
            comm = f.read().strip()
        netns = int(os.readlink(f"/proc/{key.tgid}/ns/net").split("[")[1].rstrip("]"))
    except (OSError, IndexError, ValueError):
        comm, netns = "", 0
    lip, lport, rip, rport = ends
    return ConnOpen(key, ts, Role.UNKNOWN, tls, False, lip, lport, rip, rport, comm, 0, netns)


def in_kubernetes() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def specs(s, collector: Collector, clock: SharedClock) -> list[EbpfSpec]:
    assert collector.obj is not None
    conns_fd = collector.obj.map("conns").fd
    opts = EbpfOptions()
    pods = in_kubernetes()
    size = collector.cfg.ring_bytes
    return [EbpfSpec(fd, size, conns_fd, clock, opts, pods) for fd in collector.ring_fds]


def status(collector: Collector | None) -> dict:
    """The kernel side's figures for /status: counters, TLS libraries, failures."""
    if collector is None or collector.obj is None:
        return {}
    out: dict = {"kernel": collector.stats()}
    cfg = collector.cfg
    out["config"] = {"rings": cfg.rings, "ring_bytes": cfg.ring_bytes,
                     "max_call_bytes": cfg.max_call_bytes, "capture_plain": cfg.capture_plain,
                     "tls": cfg.tls, "pids": list(cfg.pids)}
    if collector.tls is not None:
        out["tls"] = collector.tls.status()
    return out


def merge_processes(reports: list[list[dict]], limit: int = 256) -> list[dict]:
    """Per-process rows of every worker, one row per process (a process's connections
    spread over workers)."""
    merged: dict[int, dict] = {}
    sums = ("connections", "active_connections", "pairs", "server_pairs", "bytes_in",
            "bytes_out", "tls_connections")
    for rows in reports:
        for row in rows:
            pid = row.get("pid")
            if not isinstance(pid, int):
                continue
            acc = merged.get(pid)
            if acc is None:
                merged[pid] = dict(row)
                continue
            for k in sums:
                acc[k] = acc.get(k, 0) + row.get(k, 0)
            acc["last_seen"] = max(acc.get("last_seen") or 0, row.get("last_seen") or 0)
            acc["exited"] = acc.get("exited", False) and row.get("exited", False)
            for k in ("namespace", "pod", "container"):
                if acc.get(k) is None and row.get(k) is not None:
                    acc[k] = row[k]
    rows = sorted(merged.values(), key=lambda r: (r.get("pairs", 0),
                                                  r.get("bytes_in", 0) + r.get("bytes_out", 0)),
                  reverse=True)
    return rows[:limit]


class ProcessRates:
    """Per-process pairs/s and bytes/s over the last few seconds, from the cumulative
    per-process rows (the supervisor observes them once a second)."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self.history: deque[tuple[float, dict[int, tuple[int, int]]]] = deque()

    def observe(self, now: float, rows: list[dict]) -> None:
        snap = {r["pid"]: (r.get("pairs", 0), r.get("bytes_in", 0) + r.get("bytes_out", 0))
                for r in rows if isinstance(r.get("pid"), int)}
        self.history.append((now, snap))
        while len(self.history) > 2 and now - self.history[0][0] > self.window:
            self.history.popleft()

    def annotate(self, rows: list[dict]) -> list[dict]:
        """The rows with ``pairs_per_s`` and ``bytes_per_s`` (0 for a process not seen at
        the start of the window: its counts are from its first interval)."""
        if len(self.history) < 2:
            return [{**r, "pairs_per_s": 0.0, "bytes_per_s": 0.0} for r in rows]
        (t0, old), (t1, new) = self.history[0], self.history[-1]
        dt = max(t1 - t0, 1e-6)
        out = []
        for r in rows:
            pid = r.get("pid")
            a, b = old.get(pid, (0, 0)), new.get(pid, (0, 0))
            out.append({**r, "pairs_per_s": max(0, b[0] - a[0]) / dt,
                        "bytes_per_s": max(0, b[1] - a[1]) / dt})
        return out


def pods_of(processes: list[dict]) -> list[dict]:
    """Per-pod rows (namespace/pod) from the per-process rows."""
    out: dict[tuple[str, str], dict] = {}
    for r in processes:
        if r.get("pod") is None:
            continue
        key = (str(r.get("namespace")), str(r["pod"]))
        acc = out.setdefault(key, {"namespace": key[0], "pod": key[1], "processes": 0,
                                   "connections": 0, "active_connections": 0, "pairs": 0,
                                   "bytes_in": 0, "bytes_out": 0, "last_seen": 0.0})
        acc["processes"] += 1
        for k in ("connections", "active_connections", "pairs", "bytes_in", "bytes_out"):
            acc[k] += r.get(k, 0)
        acc["last_seen"] = max(acc["last_seen"], r.get("last_seen") or 0)
    return sorted(out.values(), key=lambda r: r["pairs"], reverse=True)


__all__ = ["EbpfSource", "EbpfSpec", "SharedClock", "open_collector", "specs", "status",
           "merge_processes", "pods_of", "collector_config", "ProcessRates"]
