"""Live capture sources (the I/O edge of the runtime).

AWS mode: UDP sockets bound on the VXLAN port (so the kernel sends no ICMP
port-unreachable for mirrored packets).  With N workers, N sockets join one
SO_REUSEPORT group and a classic BPF program picks the socket from a *symmetric* hash
of the inner IPv4 connection (src^dst^sport^dport), so both directions of a connection
reach the same worker even though AWS varies the outer UDP source port per direction.
Inner IPv6 and other frames go to socket 0 (consistent, if not balanced); IP fragments
hash on addresses only so that all fragments of a datagram meet.

GCP mode: libpcap (pcapy-ng) in promiscuous mode on the interface, with a BPF filter
that leaves out the appliance's own SSH, health and Kafka traffic; with N workers the
handles join a PACKET_FANOUT_HASH group (the kernel's flow hash is symmetric).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct

SO_ATTACH_REUSEPORT_CBPF = 51
SO_RCVBUFFORCE = 33


_MIX = 0x9E3779B1  # Fibonacci hashing multiplier


def _ins(code, jt, jf, k):
    return struct.pack("HBBI", code, jt, jf, k & 0xFFFFFFFF)


def vxlan_shard_program(n: int) -> bytes:
    """cBPF run on the UDP payload (VXLAN header at offset 0, inner Ethernet at 8)."""
    p = [
        _ins(0x28, 0, 0, 20),        # 0  ldh [20]            inner ethertype
        _ins(0x15, 0, 24, 0x0800),   # 1  jeq IPv4 ? next : ret 0
        _ins(0x20, 0, 0, 34),        # 2  ld [34]             inner src
        _ins(0x07, 0, 0, 0),         # 3  tax
        _ins(0x20, 0, 0, 38),        # 4  ld [38]             inner dst
        _ins(0xAC, 0, 0, 0),         # 5  xor x
        _ins(0x02, 0, 0, 0),         # 6  st M[0]
        _ins(0x28, 0, 0, 28),        # 7  ldh [28]            flags/fragment offset
        _ins(0x45, 9, 0, 0x3FFF),    # 8  jset MF|offset ? fold : next
        _ins(0xB1, 0, 0, 22),        # 9  ldxb 4*([22]&0xf)   IHL
        _ins(0x48, 0, 0, 22),        # 10 ldh [x+22]          sport
        _ins(0x02, 0, 0, 1),         # 11 st M[1]
        _ins(0x48, 0, 0, 24),        # 12 ldh [x+24]          dport
        _ins(0x61, 0, 0, 1),         # 13 ldx M[1]
        _ins(0xAC, 0, 0, 0),         # 14 xor x
        _ins(0x61, 0, 0, 0),         # 15 ldx M[0]
        _ins(0xAC, 0, 0, 0),         # 16 xor x
        _ins(0x02, 0, 0, 0),         # 17 st M[0]
        _ins(0x60, 0, 0, 0),         # 18 fold: ld M[0]
        _ins(0x74, 0, 0, 16),        # 19 rsh #16
        _ins(0x61, 0, 0, 0),         # 20 ldx M[0]
        _ins(0xAC, 0, 0, 0),         # 21 xor x
        _ins(0x24, 0, 0, _MIX),      # 22 mul #golden         mix the bits
        _ins(0x74, 0, 0, 16),        # 23 rsh #16
        _ins(0x94, 0, 0, n),         # 24 mod #n
        _ins(0x16, 0, 0, 0),         # 25 ret a
        _ins(0x06, 0, 0, 0),         # 26 ret #0
    ]
    return b"".join(p)


def shard_of(vxlan_payload: bytes, n: int) -> int:
    """The socket index the BPF program picks (a Python mirror, for tests)."""
    b = vxlan_payload
    if len(b) < 22 or b[20:22] != b"\x08\x00":
        return 0
    a = struct.unpack_from("!I", b, 34)[0] ^ struct.unpack_from("!I", b, 38)[0]
    if not struct.unpack_from("!H", b, 28)[0] & 0x3FFF:
        ihl = (b[22] & 0xF) * 4
        a ^= struct.unpack_from("!H", b, 22 + ihl)[0] ^ struct.unpack_from("!H", b, 24 + ihl)[0]
    a ^= a >> 16
    return (((a * _MIX) & 0xFFFFFFFF) >> 16) % n


def attach_shard_program(sock: socket.socket, n: int) -> None:
    prog = vxlan_shard_program(n)
    buf = ctypes.create_string_buffer(prog)
    fprog = struct.pack("HL", len(prog) // 8, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


def udp_sockets(host: str, port: int, n: int, rcvbuf: int = 32 << 20) -> list[socket.socket]:
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
            attach_shard_program(socks[0], n)
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


def open_live(interface: str, bpf: str, fanout_group: int | None, snaplen: int = 65535,
              buffer_bytes: int = 64 << 20):
    import pcapy

    pc = pcapy.create(interface)
    pc.set_snaplen(snaplen)
    pc.set_promisc(1)
    pc.set_timeout(100)
    pc.set_buffer_size(buffer_bytes)
    pc.activate()
    if bpf:
        pc.setfilter(bpf)
    if fanout_group is not None:
        pc.set_fanout(fanout_group)
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
