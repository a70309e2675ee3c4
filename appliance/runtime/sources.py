"""Live capture sources (the I/O edge of the runtime).

AWS mode: UDP sockets bound on the VXLAN port, and on the GENEVE port when enabled (so
the kernel sends no ICMP port-unreachable for mirrored packets), read with recvmmsg.
With N workers, N sockets per port join one
SO_REUSEPORT group and a classic BPF program picks the socket from a *symmetric* hash
of the inner IPv4 or IPv6 connection (src^dst^sport^dport), so both directions of a connection
reach the same worker even though AWS varies the outer UDP source port per direction.
Each tunnel has its program (GENEVE's inner header follows variable-length options).
Other frames go to socket 0 (consistent, if not balanced); IPv4 fragments and IPv6
packets with extension headers hash on addresses only, so all pieces of a flow meet.

GCP mode: libpcap (pcapy-ng) in promiscuous mode on the interface, with a BPF filter
that leaves out the appliance's own SSH, health and Kafka traffic; with N workers the
handles join a PACKET_FANOUT_HASH group (the kernel's flow hash is symmetric).

The worker sees a capture only through the small ``Source`` interface below (descriptors
to wait on, ``read`` that feeds the pipeline, ``discard`` and ``close`` for the stop), and
the supervisor builds one ``SourceSpec`` per worker: in the supervisor for what must
outlive a worker (the UDP sockets, so a restarted worker reads what queued meanwhile),
opened in the worker (``SourceSpec.open``) for the rest.  A new capture front end is one
new module with a spec and a source.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
import time
from typing import Protocol

SO_ATTACH_REUSEPORT_CBPF = 51
SO_RCVBUFFORCE = 33


_MIX = 0x9E3779B1  # Fibonacci hashing multiplier

# classic BPF opcodes used below
LD_W_ABS, LD_H_ABS, LD_B_ABS = 0x20, 0x28, 0x30
LD_W_IND, LD_H_IND, LD_B_IND = 0x40, 0x48, 0x50
LD_MEM, LDX_MEM, LDX_IMM = 0x60, 0x61, 0x01
ST, STX = 0x02, 0x03
ADD_K, ADD_X, AND_K, LSH_K, RSH_K, MUL_K, MOD_K, XOR_X = 0x04, 0x0C, 0x54, 0x64, 0x74, 0x24, 0x94, 0xAC
JA, JEQ_K, JSET_K = 0x05, 0x15, 0x45
RET_K, RET_A, TAX, TXA = 0x06, 0x16, 0x07, 0x87


def _assemble(prog: list) -> bytes:
    """[(label or None, opcode, k, jump-true label, jump-false label)] -> sock_filter[]."""
    where = {ins[0]: i for i, ins in enumerate(prog) if ins[0]}
    out = []
    for i, (_, code, k, jt, jf) in enumerate(prog):
        if code == JA:
            k, jt_off, jf_off = where[jt] - i - 1, 0, 0
        else:
            jt_off = where[jt] - i - 1 if jt else 0
            jf_off = where[jf] - i - 1 if jf else 0
        out.append(struct.pack("HBBI", code, jt_off, jf_off, k & 0xFFFFFFFF))
    return b"".join(out)


def _hash_tail(n: int) -> list:
    """With X = offset of the inner IP header (label "ip" for IPv4, "ip6" for IPv6): a
    symmetric hash of the connection (src^dst^sport^dport; addresses only for IPv4
    fragments and IPv6 extension headers), mixed, modulo n."""
    return [
        ("ip", STX, 2, None, None),          # M2 = ip offset
        (None, LD_W_IND, 12, None, None),    # src
        (None, ST, 0, None, None),
        (None, LD_W_IND, 16, None, None),    # dst
        (None, LDX_MEM, 0, None, None),
        (None, XOR_X, 0, None, None),
        (None, ST, 0, None, None),           # M0 = src ^ dst
        (None, LDX_MEM, 2, None, None),
        (None, LD_H_IND, 6, None, None),     # flags / fragment offset
        (None, JSET_K, 0x3FFF, "fold", None),
        (None, LD_B_IND, 0, None, None),     # version / IHL
        (None, AND_K, 0xF, None, None),
        (None, LSH_K, 2, None, None),
        (None, ADD_X, 0, None, None),
        (None, TAX, 0, None, None),          # X = transport header offset
        (None, LD_H_IND, 0, None, None),     # sport
        (None, ST, 1, None, None),
        (None, LD_H_IND, 2, None, None),     # dport
        (None, LDX_MEM, 1, None, None),
        (None, XOR_X, 0, None, None),
        (None, LDX_MEM, 0, None, None),
        (None, XOR_X, 0, None, None),
        (None, ST, 0, None, None),
        (None, JA, 0, "fold", None),
        # inner IPv6 (X = its offset): xor of the 8 address words, then the ports when
        # the next header is TCP or UDP (extension headers: addresses only)
        ("ip6", STX, 2, None, None),
        (None, LD_W_IND, 8, None, None),
        (None, ST, 0, None, None),
    ] + [ins for off in range(12, 40, 4) for ins in (
        (None, LD_W_IND, off, None, None),
        (None, LDX_MEM, 0, None, None),
        (None, XOR_X, 0, None, None),
        (None, ST, 0, None, None),
        (None, LDX_MEM, 2, None, None),
    )] + [
        (None, LD_B_IND, 6, None, None),     # next header
        (None, JEQ_K, 6, "ports6", None),
        (None, JEQ_K, 17, "ports6", "fold"),
        ("ports6", LD_H_IND, 40, None, None),
        (None, ST, 1, None, None),
        (None, LD_H_IND, 42, None, None),
        (None, LDX_MEM, 1, None, None),
        (None, XOR_X, 0, None, None),
        (None, LDX_MEM, 0, None, None),
        (None, XOR_X, 0, None, None),
        (None, ST, 0, None, None),
        ("fold", LD_MEM, 0, None, None),
        (None, RSH_K, 16, None, None),
        (None, LDX_MEM, 0, None, None),
        (None, XOR_X, 0, None, None),
        (None, MUL_K, _MIX, None, None),
        (None, RSH_K, 16, None, None),
        (None, MOD_K, n, None, None),
        (None, RET_A, 0, None, None),
        ("other", RET_K, 0, None, None),     # not inner IP: socket 0 (consistent)
    ]


def vxlan_shard_program(n: int) -> bytes:
    """cBPF run on the UDP payload: VXLAN header at 0, inner Ethernet at 8."""
    return _assemble([
        (None, LDX_IMM, 22, None, None),           # inner IP at 8 + 14
        (None, LD_H_ABS, 20, None, None),          # inner ethertype
        (None, JEQ_K, 0x0800, "ip", None),
        (None, JEQ_K, 0x86DD, "ip6", "other"),
    ] + _hash_tail(n))


def geneve_shard_program(n: int) -> bytes:
    """cBPF run on the UDP payload: GENEVE header and options, then Ethernet or IPv4."""
    return _assemble([
        (None, LD_B_ABS, 0, None, None),
        (None, AND_K, 0x3F, None, None),
        (None, LSH_K, 2, None, None),
        (None, TAX, 0, None, None),                # X = options length
        (None, LD_H_ABS, 2, None, None),           # protocol type
        (None, JEQ_K, 0x6558, "teb", None),
        (None, ST, 3, None, None),                 # M3 = the IP ethertype
        (None, TXA, 0, None, None),                # inner IP right after the options
        (None, ADD_K, 8, None, None),
        (None, JA, 0, "dispatch", None),
        ("teb", LD_H_IND, 20, None, None),         # inner ethertype at 8 + options + 12
        (None, ST, 3, None, None),
        (None, TXA, 0, None, None),
        (None, ADD_K, 22, None, None),
        ("dispatch", TAX, 0, None, None),
        (None, LD_MEM, 3, None, None),
        (None, JEQ_K, 0x0800, "ip", None),
        (None, JEQ_K, 0x86DD, "ip6", "other"),
    ] + _hash_tail(n))


def _shard_at(b: bytes, ip: int, n: int) -> int:
    a = struct.unpack_from("!I", b, ip + 12)[0] ^ struct.unpack_from("!I", b, ip + 16)[0]
    if not struct.unpack_from("!H", b, ip + 6)[0] & 0x3FFF:
        l4 = ip + (b[ip] & 0xF) * 4
        a ^= struct.unpack_from("!H", b, l4)[0] ^ struct.unpack_from("!H", b, l4 + 2)[0]
    a ^= a >> 16
    return (((a * _MIX) & 0xFFFFFFFF) >> 16) % n


def _shard6_at(b: bytes, ip: int, n: int) -> int:
    a = 0
    for off in range(8, 40, 4):
        a ^= struct.unpack_from("!I", b, ip + off)[0]
    if b[ip + 6] in (6, 17):
        a ^= struct.unpack_from("!H", b, ip + 40)[0] ^ struct.unpack_from("!H", b, ip + 42)[0]
    a ^= a >> 16
    return (((a * _MIX) & 0xFFFFFFFF) >> 16) % n


def _shard_by_type(b: bytes, etype: int, ip: int, n: int) -> int:
    if etype == 0x0800:
        return _shard_at(b, ip, n)
    if etype == 0x86DD:
        return _shard6_at(b, ip, n)
    return 0


def shard_of(vxlan_payload: bytes, n: int) -> int:
    """The socket index the VXLAN program picks (a Python mirror, for tests)."""
    return _shard_by_type(vxlan_payload, struct.unpack_from("!H", vxlan_payload, 20)[0], 22, n)


def geneve_shard_of(payload: bytes, n: int) -> int:
    """The socket index the GENEVE program picks (a Python mirror, for tests)."""
    opt = (payload[0] & 0x3F) * 4
    ptype = struct.unpack_from("!H", payload, 2)[0]
    if ptype == 0x6558:
        etype = struct.unpack_from("!H", payload, 8 + opt + 12)[0]
        return _shard_by_type(payload, etype, 8 + opt + 14, n)
    return _shard_by_type(payload, ptype, 8 + opt, n)


def attach_shard_program(sock: socket.socket, n: int, tunnel: str = "vxlan") -> None:
    prog = (geneve_shard_program if tunnel == "geneve" else vxlan_shard_program)(n)
    buf = ctypes.create_string_buffer(prog)
    fprog = struct.pack("HL", len(prog) // 8, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


def udp_sockets(host: str, port: int, n: int, rcvbuf: int = 32 << 20,
                tunnel: str = "vxlan") -> list[socket.socket]:
    """N sockets in one SO_REUSEPORT group on host:port, sharded symmetrically."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(family, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            for opt in (SO_RCVBUFFORCE, socket.SO_RCVBUF):
                try:
                    s.setsockopt(socket.SOL_SOCKET, opt, rcvbuf)
                    break
                except OSError:
                    continue
            s.bind((host, port))
            s.setblocking(False)
            socks.append(s)
        if n > 1:
            attach_shard_program(socks[0], n, tunnel)
    except OSError:
        for s in socks:
            s.close()
        raise
    return socks


def default_route_interface() -> str:
    try:
        with open("/proc/net/route") as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[1] == "00000000" and int(fields[3], 16) & 2:
                    return fields[0]
    except (OSError, StopIteration, IndexError, ValueError):
        pass
    return ""


def interface_ipv4(ifname: str) -> str | None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        res = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", ifname.encode()[:15]))  # SIOCGIFADDR
        return socket.inet_ntoa(res[20:24])
    except OSError:
        return None
    finally:
        s.close()


def own_traffic_filter(own_ip: str | None, health_port: int, kafka_ports: list[int]) -> str:
    """BPF expression that leaves out the appliance's own SSH, health and Kafka flows."""
    ports = sorted({22, health_port, *kafka_ports})
    port_expr = " or ".join(f"tcp port {p}" for p in ports)
    if own_ip:
        return f"not (host {own_ip} and ({port_expr}))"
    return f"not ({port_expr})"


class CaptureError(Exception):
    """The capture cannot start; the message is one line naming the fix."""


# Measured (tests/deploy/test_docker_image.py): capture, promiscuous mode and the fanout
# group need CAP_NET_RAW only, not CAP_NET_ADMIN
CAP_NET_RAW = 13
CAPTURE_FIX = ("run as root, or grant CAP_NET_RAW (systemd: "
               "deploy/systemd/appliance.service.d/gcp-capture.conf; Docker: --cap-add NET_RAW; "
               "Kubernetes: securityContext.capabilities.add)")

# libpcap's pcap_activate() results
_PCAP_ERRORS = {-1: "generic error", -5: "no such device", -8: "permission denied",
                -9: "interface not up", -11: "no permission for promiscuous mode"}


def missing_capture_caps() -> list[str]:
    """Capabilities live capture needs that this process lacks (empty when it has them)."""
    try:
        with open("/proc/self/status") as f:
            eff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):
        return []
    return [] if eff >> CAP_NET_RAW & 1 else ["CAP_NET_RAW"]


def open_live(interface: str, bpf: str, fanout_group: int | None, snaplen: int = 65535,
              buffer_bytes: int = 64 << 20):
    """A libpcap handle on `interface`; CaptureError (one line naming the fix) when it
    cannot be opened."""
    import pcapy

    missing = missing_capture_caps()
    if missing:
        raise CaptureError(f"capturing on {interface} needs {' and '.join(missing)}: {CAPTURE_FIX}")
    try:
        pc = pcapy.create(interface)
        pc.set_snaplen(snaplen)
        pc.set_promisc(1)
        pc.set_timeout(100)
        pc.set_buffer_size(buffer_bytes)
        rc = pc.activate()
    except pcapy.PcapError as exc:
        raise CaptureError(f"cannot capture on {interface}: {exc}") from None
    if rc is not None and rc < 0:
        what = _PCAP_ERRORS.get(rc, f"libpcap error {rc}")
        fix = (f": {CAPTURE_FIX}" if rc in (-8, -11)
               else f" (ip link set {interface} up)" if rc == -9 else "")
        raise CaptureError(f"cannot capture on {interface}: {what}{fix}")
    try:
        if bpf:
            pc.setfilter(bpf)
        if fanout_group is not None:
            pc.set_fanout(fanout_group)
    except pcapy.PcapError as exc:
        raise CaptureError(f"cannot set up the capture on {interface}: {exc}") from None
    return pc


def fanout_group_id() -> int:
    return os.getpid() & 0xFFFF


class BatchReceiver:
    """recvmmsg(2) through ctypes: up to `batch` datagrams per system call.

    Python's socket module has no recvmmsg; one recv() per mirrored packet costs a
    system call each, which is a measurable share of the per-packet budget.  Falls back
    to recv() where libc lacks recvmmsg.
    """

    def __init__(self, sock: socket.socket, batch: int = 256, size: int = 9216):
        self.sock = sock
        self.batch = batch
        self.size = size
        self.libc = None
        self.lens: memoryview | None = None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            self.recvmmsg = libc.recvmmsg
        except (OSError, AttributeError):
            return

        class iovec(ctypes.Structure):
            _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

        class msghdr(ctypes.Structure):
            _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                        ("iov", ctypes.POINTER(iovec)), ("iovlen", ctypes.c_size_t),
                        ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                        ("flags", ctypes.c_int)]

        class mmsghdr(ctypes.Structure):
            _fields_ = [("hdr", msghdr), ("len", ctypes.c_uint)]

        self.buf = ctypes.create_string_buffer(batch * size)
        self.view = memoryview(self.buf).cast("B")
        self.iovs = (iovec * batch)()
        self.msgs = (mmsghdr * batch)()
        base = ctypes.addressof(self.buf)
        for i in range(batch):
            self.iovs[i].base = base + i * size
            self.iovs[i].len = size
            self.msgs[i].hdr.iov = ctypes.pointer(self.iovs[i])
            self.msgs[i].hdr.iovlen = 1
        self.recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                                  ctypes.c_void_p]
        self.recvmmsg.restype = ctypes.c_int
        self.fd = sock.fileno()
        self.libc = libc

    def discard(self) -> int:
        """Datagrams dropped now without copying them out (the stop's count)."""
        if self.libc is None:
            return len(self.receive())
        n = self.recvmmsg(self.fd, self.msgs, self.batch, socket.MSG_DONTWAIT, None)
        return max(0, n)

    def feed(self, pipeline, linktype: int) -> int:
        """One recvmmsg, handed to the core whole: its batch API reads the datagrams in
        place by the msg_len fields (no bytes object per datagram built here).  Returns
        how many were received."""
        if self.libc is None:
            batch = self.receive()
            now = time.time()
            for data in batch:
                pipeline.feed(now, linktype, data)
            return len(batch)
        n = self.recvmmsg(self.fd, self.msgs, self.batch, socket.MSG_DONTWAIT, None)
        if n <= 0:
            return 0
        lens = self.lens
        if lens is None:  # a view of every msg_len field of the mmsghdr array, made once
            hdr = type(self.msgs[0])
            lens = self.lens = memoryview(self.msgs).cast("B").cast("I")[
                hdr.len.offset // 4::ctypes.sizeof(hdr) // 4]
        pipeline.feed_datagrams(time.time(), linktype, self.view, self.size, lens[:n])
        return n

    def receive(self) -> list[bytes]:
        """Datagrams available now (possibly none), without blocking."""
        if self.libc is None:
            out = []
            for _ in range(self.batch):
                try:
                    out.append(self.sock.recv(65535))
                except (BlockingIOError, InterruptedError):
                    break
            return out
        n = self.recvmmsg(self.fd, self.msgs, self.batch, socket.MSG_DONTWAIT, None)
        if n <= 0:
            return []
        size = self.size
        msgs = self.msgs
        view = self.view
        # copy each datagram out: the buffer is reused by the next call
        return [bytes(view[i * size:i * size + msgs[i].len]) for i in range(n)]


# -- the worker's view of a capture ---------------------------------------------------------

class Source(Protocol):
    """What a worker needs from a capture front end."""

    def fds(self) -> list[int]:
        """Descriptors that become readable when packets wait."""

    def read(self, pipeline) -> int:
        """Feed what is available now (a bounded amount) to `pipeline`; packets read."""

    def discard(self, seconds: float) -> int:
        """At stop: count (and drop) what the kernel still holds, for at most `seconds`."""

    def close(self) -> None:
        """Release the capture (the port, the ring)."""


class SourceSpec(Protocol):
    """Built by the supervisor, opened in the worker process."""

    kind: str

    def keep_fds(self) -> list[int]:
        """Descriptors the worker process must inherit."""

    def open(self) -> Source: ...

    def front_end(self, cfg):
        """The sans-IO stage its source feeds (``Pipeline`` for captured frames; the eBPF
        front end for socket events): take/buffered/shed/sweep/close/stats."""


class _Frames:
    """Sources of captured frames feed the mirroring pipeline."""

    def front_end(self, cfg):
        from appliance.core.pipeline import Pipeline

        return Pipeline(cfg)


class UdpSource:
    """VXLAN/GENEVE datagrams from UDP sockets, read with recvmmsg."""

    ROUNDS = 8  # recvmmsg calls per socket per read(), so ticks keep happening

    def __init__(self, socks):
        self.socks = socks  # [(socket, linktype)]
        self.rx = [(BatchReceiver(sock), lt) for sock, lt in socks]

    def fds(self) -> list[int]:
        return [sock.fileno() for sock, _ in self.socks]

    def read(self, pipeline) -> int:
        n = 0
        for rx, lt in self.rx:
            for _ in range(self.ROUNDS):
                got = rx.feed(pipeline, lt)
                if not got:
                    break
                n += got
        return n

    def discard(self, seconds: float) -> int:
        end = time.monotonic() + seconds
        n = 0
        for rx, _ in self.rx:
            while time.monotonic() < end:
                got = rx.discard()
                if not got:
                    break
                n += got
        return n

    def close(self) -> None:
        for sock, _ in self.socks:
            sock.close()


class UdpSpec(_Frames):
    """The sockets of one worker's shard; the supervisor keeps its own copies open, so
    datagrams queue for a worker that is being restarted instead of being refused."""

    kind = "udp"

    def __init__(self, socks):
        self.socks = socks  # [(socket, linktype)]

    def keep_fds(self) -> list[int]:
        return [sock.fileno() for sock, _ in self.socks]

    def open(self) -> UdpSource:
        return UdpSource(self.socks)


class PcapSource:
    """libpcap in non-blocking mode, read in ``next_batch`` buffers."""

    ROUNDS = 64

    def __init__(self, handle):
        self.handle = handle
        self.linktype = handle.datalink()
        # libpcap's read timeout does not fire on Linux TPACKET_V3 while no packet
        # arrives, so the worker waits on the descriptor and we read without blocking
        handle.setnonblock(1)

    def fds(self) -> list[int]:
        return [self.handle.getfd()]

    def read(self, pipeline) -> int:
        feed = pipeline.feed_batch
        n = 0
        for _ in range(self.ROUNDS):
            buf, meta = self.handle.next_batch(1024)
            if not meta:
                break
            feed(self.linktype, buf, meta)
            n += len(meta) // 16
        return n

    def discard(self, seconds: float) -> int:
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            _, meta = self.handle.next_batch(1024)
            if not meta:
                break
            n += len(meta) // 16
        return n

    def close(self) -> None:
        self.handle.close()


class PcapSpec(_Frames):
    kind = "pcap"

    def __init__(self, interface: str, bpf: str, fanout_group: int | None):
        self.interface = interface
        self.bpf = bpf
        self.fanout_group = fanout_group

    def keep_fds(self) -> list[int]:
        return []

    def open(self) -> PcapSource:
        return PcapSource(open_live(self.interface, self.bpf, self.fanout_group))

