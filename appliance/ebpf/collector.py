"""The eBPF collector's control side: load, configure, attach, filter, read.

    cfg = CollectorConfig(rings=2, pids=[1234])
    with Collector(cfg) as col:             # preflight, load, attach tracepoints, scan TLS libs
        readers = [RingReader(fd) for fd in col.ring_fds]   # one per worker (fds survive fork)
        while ...:
            col.poll_control()              # exec notifications -> TLS library rescans
            for ev in readers[0].poll(100): # typed events (appliance.ebpf.events)
                ...

`Collector` belongs to one process (the supervisor); `RingReader` can be built in a forked
worker from an inherited ring fd. Everything the kernel side counts is in `stats()`.
"""

from __future__ import annotations

import heapq
import logging
import os
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from appliance.ebpf import libbpf, preflight
from appliance.ebpf.events import DecodeError, Event, Exec, decode
from appliance.ebpf.tlslibs import LIBRARIES, TlsAttacher, TlsLibrary

log = logging.getLogger("appliance.ebpf")

BPF_OBJECT = Path(__file__).parent / "bpf" / "collector.bpf.o"

CHUNK_SIZE = 16384
MAX_CHUNKS = 16
MAX_CALL_BYTES = CHUNK_SIZE * MAX_CHUNKS
MAX_RINGS = 64

# struct collector_cfg (bpf/collector.h)
CFG = struct.Struct("<IIIBBBB")

STAT_NAMES = ("ring_lost", "tls_unlinked", "cipher_bytes", "truncated_bytes", "conns_opened",
              "conn_table_full", "iov_short")

# rescans of a process after it calls exec: the dynamic loader maps linked libraries
# within milliseconds; later dlopen()s (Python's `import ssl`) are caught by the
# periodic full rescan
EXEC_RESCAN_DELAYS = (0.05, 0.3, 1.5)


@dataclass
class CollectorConfig:
    rings: int = 1                      # one per worker
    ring_bytes: int = 8 << 20           # per ring; power of two, multiple of the page size
    max_call_bytes: int = 256 << 10     # per-call capture cap (<= 256 KiB)
    capture_plain: bool = True          # CAPTURE_ALL: False traces only TLS library calls
    tls: bool = True                    # attach uprobes on TLS libraries
    only_listed: bool = False           # trace only allow-listed pids/cgroups, even if none yet
    pids: list[int] = field(default_factory=list)     # allow-list (with their children)
    cgroups: list[int] = field(default_factory=list)  # allow-list by cgroup v2 id
    max_conns: int = 65536              # kernel connection table (LRU)
    rescan_interval: float = 30.0       # full /proc rescan for TLS libraries; 0 = never
    bpf_object: Path = BPF_OBJECT
    libraries: tuple[TlsLibrary, ...] = LIBRARIES

    def validate(self) -> None:
        if not 1 <= self.rings <= MAX_RINGS:
            raise ValueError(f"rings must be 1..{MAX_RINGS}, not {self.rings}")
        rb = self.ring_bytes
        if rb < 4096 or rb & (rb - 1):
            raise ValueError(f"ring_bytes must be a power of two >= 4096, not {rb}")
        if not 1 <= self.max_call_bytes <= MAX_CALL_BYTES:
            raise ValueError(f"max_call_bytes must be 1..{MAX_CALL_BYTES}, not {self.max_call_bytes}")


class RingReader:
    """Reads one worker's ring buffer and decodes its records."""

    def __init__(self, fd: int) -> None:
        self._raw: list[bytes] = []
        self.decode_errors = 0
        self._rb = libbpf.RingBuffer(fd, self._raw.append)

    def _take(self) -> list[Event]:
        out: list[Event] = []
        for raw in self._raw:
            try:
                out.append(decode(raw))
            except DecodeError as e:
                self.decode_errors += 1
                log.warning("undecodable ring record: %s", e)
        self._raw.clear()
        return out

    def poll(self, timeout_ms: int) -> list[Event]:
        self._rb.poll(timeout_ms)
        return self._take()

    def drain(self) -> list[Event]:
        self._rb.consume()
        return self._take()

    def discard(self) -> int:
        """Consume what the ring holds without decoding it; the number of records."""
        n = self._rb.consume()
        self._raw.clear()
        return n

    @property
    def epoll_fd(self) -> int:
        return self._rb.epoll_fd

    def close(self) -> None:
        self._rb.free()


class Collector:
    def __init__(self, cfg: CollectorConfig | None = None) -> None:
        self.cfg = cfg or CollectorConfig()
        self.obj: libbpf.BpfObject | None = None
        self.links: list[libbpf.Link] = []
        self.ring_fds: list[int] = []
        self.tls: TlsAttacher | None = None
        self._ctl: RingReader | None = None
        self._rescans: list[tuple[float, int]] = []  # (due monotonic, pid) heap
        self._next_full_scan = 0.0
        self.execs_seen = 0

    # -- lifecycle

    def open(self) -> Collector:
        cfg = self.cfg
        cfg.validate()
        preflight.check(want_uprobes=cfg.tls, bpf_object=cfg.bpf_object)
        try:
            self._load()
        except libbpf.LibbpfError as e:
            self.close()
            raise preflight.EnvironmentProblem(f"eBPF: {e}") from None
        return self

    def _load(self) -> None:
        cfg = self.cfg
        obj = self.obj = libbpf.BpfObject(str(cfg.bpf_object))
        rodata = obj.map(".rodata.cfg")
        blob = CFG.pack(os.getpid(), cfg.rings, cfg.max_call_bytes,
                        1 if (cfg.only_listed or cfg.pids or cfg.cgroups) else 0, 1 if cfg.capture_plain else 0,
                        1 if cfg.tls else 0, 0)
        if rodata.value_size != len(blob):
            raise libbpf.LibbpfError(
                f"{cfg.bpf_object} was built from another collector.h (config is "
                f"{rodata.value_size} bytes, expected {len(blob)}): rebuild it with `make bpf`", 22)
        rodata.set_initial_value(blob)
        for i in range(cfg.rings):
            self.ring_fds.append(libbpf.map_create_ringbuf(f"appl_ring{i}", cfg.ring_bytes))
        obj.map("rings").set_inner_map_fd(self.ring_fds[0])
        obj.map("conns").set_max_entries(cfg.max_conns)
        obj.map("scratch").set_max_entries(libbpf.possible_cpus())  # one record per CPU
        obj.map("ssl_fd").set_max_entries(cfg.max_conns)
        obj.load()

        outer = obj.map("rings").fd
        for i, fd in enumerate(self.ring_fds):
            libbpf.map_update(outer, struct.pack("<I", i), struct.pack("<i", fd))
        for name in ("emit_tp", "emit_uprobe"):
            libbpf.map_update(obj.map(f"{name}_progs").fd, struct.pack("<I", 0),
                              struct.pack("<i", obj.program(name).fd))
        for pid in cfg.pids:
            self.allow_pid(pid)
        for cg in cfg.cgroups:
            libbpf.map_update(obj.map("allow_cgroup").fd, struct.pack("<Q", cg), b"\x01")

        for prog in obj.programs():
            if prog.section.startswith("tracepoint/"):
                self.links.append(prog.attach())
        self._ctl = RingReader(obj.map("ctl_ring").fd)
        if cfg.tls:
            self.tls = TlsAttacher(obj, cfg.libraries)
            self.tls.scan_all()
            self._next_full_scan = time.monotonic() + cfg.rescan_interval

    def close(self) -> None:
        if self.tls is not None:
            self.tls.detach_all()
        for link in self.links:
            link.destroy()
        self.links.clear()
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None
        for fd in self.ring_fds:
            os.close(fd)
        self.ring_fds.clear()
        if self.obj is not None:
            self.obj.close()
            self.obj = None

    def __enter__(self) -> Collector:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- filters

    def allow_pid(self, pid: int) -> None:
        """Trace this process (and the children it forks from now on). Only effective
        when the collector was opened with a pid or cgroup allow-list."""
        assert self.obj is not None
        libbpf.map_update(self.obj.map("allow_tgid").fd, struct.pack("<I", pid), b"\x01")

    def disallow_pid(self, pid: int) -> None:
        assert self.obj is not None
        libbpf.map_delete(self.obj.map("allow_tgid").fd, struct.pack("<I", pid))

    def deny_pid(self, pid: int) -> None:
        """Never trace this process nor its future children (the collector's workers:
        their Kafka traffic must not be captured)."""
        assert self.obj is not None
        libbpf.map_update(self.obj.map("deny_tgid").fd, struct.pack("<I", pid), b"\x01")

    def forget(self, tgid: int, fd: int) -> None:
        """Drop the kernel's state of one connection (user space closed it on idleness)."""
        assert self.obj is not None
        libbpf.map_delete(self.obj.map("conns").fd, struct.pack("<Ii", tgid, fd))

    # -- control

    def poll_control(self, timeout_ms: int = 0) -> int:
        """Handle exec notifications and due library rescans; returns files attached."""
        if self._ctl is None or self.tls is None:
            return 0
        now = time.monotonic()
        for ev in self._ctl.poll(timeout_ms):
            if isinstance(ev, Exec):
                self.execs_seen += 1
                for d in EXEC_RESCAN_DELAYS:
                    heapq.heappush(self._rescans, (now + d, ev.tgid))
        attached = 0
        now = time.monotonic()
        while self._rescans and self._rescans[0][0] <= now:
            _, pid = heapq.heappop(self._rescans)
            attached += self.tls.scan_pid(pid)
        if self.cfg.rescan_interval and now >= self._next_full_scan:
            attached += self.tls.scan_all()
            self._next_full_scan = now + self.cfg.rescan_interval
        return attached

    def rescan(self, pids: Iterable[int] | None = None) -> int:
        assert self.tls is not None
        if pids is None:
            return self.tls.scan_all()
        return sum(self.tls.scan_pid(p) for p in pids)

    @property
    def tls_ready_ns(self) -> int:
        """Kernel-clock time of the latest TLS library attach (0: none)."""
        return self.tls.last_attach_ns if self.tls else 0

    def stats(self) -> dict[str, int]:
        assert self.obj is not None
        ncpu = libbpf.possible_cpus()
        fd = self.obj.map("stats").fd
        out = {}
        for i, name in enumerate(STAT_NAMES):
            raw = libbpf.map_lookup(fd, struct.pack("<I", i), 8 * ncpu)
            out[name] = sum(struct.unpack(f"<{ncpu}Q", raw)) if raw else 0
        out["execs_seen"] = self.execs_seen
        if self.tls is not None:
            out["tls_files_attached"] = len(self.tls.files)
            out["tls_attach_failures"] = len(self.tls.failures)
        return out
