"""TLS libraries: where they are on the node, and attaching their uprobes.

Discovery reads `/proc/PID/maps` of every process, keeps the executable mappings whose
file name matches a known library, and opens each through `/proc/PID/root/<path>`, so a
library inside a container's mount namespace is found without the container's
filesystem being mounted anywhere else. Files are de-duplicated by (device, inode): one
uprobe on a file covers every process mapping it, in any container.

A library is a `TlsLibrary`: a file-name pattern and a list of `Probe`s (symbol ->
entry program, return program). OpenSSL 1.1.1/3.x is the first. BoringSSL (statically
linked in Envoy/Chromium-based binaries: match the executable, symbols like SSL_read
exist, but no `_ex` variants in old builds), GnuTLS (`gnutls_record_recv/send`, same
shape: session, buffer, size -> count) and Go's crypto/tls (`crypto/tls.(*Conn).Read/Write`
in the executable, Go's register ABI, uretprobes unusable on goroutine stacks: return
instructions found by disassembly) are additions to LIBRARIES with their own entry
programs; the socket linking and the return path stay the same.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field

from appliance.ebpf.libbpf import BpfObject, LibbpfError, Link

log = logging.getLogger("appliance.ebpf.tls")


@dataclass(frozen=True)
class Probe:
    symbol: str
    entry: str          # BPF program name run at the symbol's entry
    ret: str            # BPF program name run at its return
    required: bool = True  # a library lacking it cannot be traced (e.g. SSL_read)


@dataclass(frozen=True)
class TlsLibrary:
    name: str
    file_pattern: re.Pattern[str]
    probes: tuple[Probe, ...]


OPENSSL = TlsLibrary(
    "openssl",
    re.compile(r"^libssl\.so(\.[0-9a-z]+)*$"),
    (
        Probe("SSL_write", "ssl_write_enter", "ssl_return"),
        Probe("SSL_read", "ssl_read_enter", "ssl_return"),
        # 1.1.1 and 3.x; absent from 1.1.0 and 1.0.2, whose SSL_read/SSL_write suffice
        Probe("SSL_write_ex", "ssl_write_ex_enter", "ssl_return", required=False),
        Probe("SSL_read_ex", "ssl_read_ex_enter", "ssl_return", required=False),
    ),
)

LIBRARIES: tuple[TlsLibrary, ...] = (OPENSSL,)


@dataclass
class AttachedFile:
    library: str
    path: str                     # as the first process that mapped it sees it
    via: str                      # the path we opened: /proc/PID/root/<path>
    dev_ino: tuple[int, int]
    attached_ns: int              # CLOCK_MONOTONIC, comparable with kernel timestamps
    symbols: list[str] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    pids: set[int] = field(default_factory=set)


@dataclass
class Failure:
    pid: int
    path: str
    reason: str


def mapped_files(pid: int) -> set[str]:
    """Paths of the executable file mappings of a process (empty if it is gone)."""
    out: set[str] = set()
    try:
        with open(f"/proc/{pid}/maps", "rb") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6 and b"x" in parts[1] and parts[5].startswith(b"/"):
                    out.add(parts[5].rstrip(b"\n").decode(errors="surrogateescape"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return out


def all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


class TlsAttacher:
    """Finds TLS libraries in running processes and attaches the collector's uprobes."""

    def __init__(self, obj: BpfObject, libraries: tuple[TlsLibrary, ...] = LIBRARIES,
                 self_pid: int | None = None) -> None:
        self.obj = obj
        self.libraries = libraries
        self.self_pid = os.getpid() if self_pid is None else self_pid
        self.files: dict[tuple[int, int], AttachedFile] = {}
        self.failures: dict[tuple[int, int] | tuple[int, str], Failure] = {}
        self.scans = 0
        self.last_attach_ns = 0

    def _match(self, path: str) -> TlsLibrary | None:
        base = os.path.basename(path)
        for lib in self.libraries:
            if lib.file_pattern.match(base):
                return lib
        return None

    def scan_all(self) -> int:
        """Every process on the node; returns the number of files newly attached."""
        self.scans += 1
        return sum(self.scan_pid(pid) for pid in all_pids())

    def scan_pid(self, pid: int) -> int:
        if pid == self.self_pid:
            return 0
        new = 0
        for path in mapped_files(pid):
            lib = self._match(path)
            if lib is None:
                continue
            if path.endswith(" (deleted)"):
                self._fail(pid, path, "library file was deleted after the process mapped it "
                           "(upgraded on disk): restart the process to trace it")
                continue
            via = f"/proc/{pid}/root{path}"
            try:
                st = os.stat(via)
            except OSError as e:
                self._fail(pid, path, f"cannot open {via}: {e.strerror}")
                continue
            key = (st.st_dev, st.st_ino)
            known = self.files.get(key)
            if known is not None:
                known.pids.add(pid)
                continue
            if key in self.failures:
                continue
            try:
                af = self._attach(lib, path, via, key)
            except LibbpfError as e:
                self.failures[key] = Failure(pid, path, str(e))
                log.warning("TLS library %s of pid %d not traced: %s", path, pid, e)
                continue
            af.pids.add(pid)
            self.files[key] = af
            new += 1
        return new

    def _fail(self, pid: int, path: str, reason: str) -> None:
        k = (pid, path)
        if k not in self.failures:
            self.failures[k] = Failure(pid, path, reason)
            log.warning("TLS library %s of pid %d not traced: %s", path, pid, reason)

    def _attach(self, lib: TlsLibrary, path: str, via: str, key: tuple[int, int]) -> AttachedFile:
        af = AttachedFile(lib.name, path, via, key, 0)
        try:
            for p in lib.probes:
                try:
                    # return probe first: an entry without its return would leak state
                    af.links.append(self.obj.program(p.ret).attach_uprobe(via, p.symbol, retprobe=True))
                    af.links.append(self.obj.program(p.entry).attach_uprobe(via, p.symbol, retprobe=False))
                    af.symbols.append(p.symbol)
                except LibbpfError:
                    if p.required:
                        raise
        except LibbpfError:
            for link in af.links:
                link.destroy()
            raise
        af.attached_ns = time.monotonic_ns()
        self.last_attach_ns = af.attached_ns
        log.info("tracing %s (%s) in %s: %s", lib.name, path, via, ", ".join(af.symbols))
        return af

    def detach_all(self) -> None:
        for af in self.files.values():
            for link in af.links:
                link.destroy()
        self.files.clear()

    def status(self) -> dict[str, object]:
        return {
            "files": [{"library": f.library, "path": f.path, "inode": f.dev_ino[1],
                       "symbols": f.symbols, "pids": sorted(f.pids)} for f in self.files.values()],
            "failures": [{"pid": f.pid, "path": f.path, "reason": f.reason}
                         for f in self.failures.values()],
            "scans": self.scans,
        }
