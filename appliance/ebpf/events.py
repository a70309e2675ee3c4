"""Typed records from the collector's ring buffers (layouts in bpf/collector.h).

One connection is `ConnKey(tgid, fd, conn_id)`: conn_id is the kernel time (ns) when the
collector first saw that fd holding that socket, so a reused fd number is a new key.

Directions are from the traced process's point of view: EGRESS (0) is what it sent,
INGRESS (1) what it received. These are the stream-event directions given to the HTTP
session; `ConnOpen.client_direction` says which one is the client's when the role is known.

Offsets count every byte the socket (or, for TLS, the library) moved in that direction
since the connection was first seen, captured or not. A `Data` record carries bytes
[offset, offset + len(payload)); a `Truncated` record says bytes [offset, offset + nbytes)
were moved but not captured (the per-call cap, or sendfile). A jump in offsets between
consecutive records of a direction means records were lost (full ring buffer).
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from typing import NamedTuple

HDR = struct.Struct("<BBBBIiIQQQQQ")
OPEN_TAIL = struct.Struct("<HHHH16s16s16s")
HDR_SIZE = HDR.size            # 56
OPEN_SIZE = HDR.size + OPEN_TAIL.size  # 112

EV_OPEN, EV_DATA, EV_TRUNC, EV_CLOSE, EV_PROC_EXIT, EV_EXEC = 1, 2, 3, 4, 5, 6
F_TLS, F_FROM_START, F_SOCK_IO = 1, 2, 8
AF_INET, AF_INET6 = 2, 10


class Direction(enum.IntEnum):
    EGRESS = 0
    INGRESS = 1


class Role(enum.IntEnum):
    UNKNOWN = 0
    CLIENT = 1
    SERVER = 2


class ConnKey(NamedTuple):
    tgid: int
    fd: int
    conn_id: int


def _addr(family: int, raw: bytes) -> bytes:
    """Packed address: 4 bytes for IPv4 (and IPv4-mapped IPv6), 16 for IPv6."""
    if family == AF_INET:
        return raw[:4]
    if raw[:12] == b"\0" * 10 + b"\xff\xff":
        return raw[12:16]
    return raw


def addr_text(packed: bytes) -> str:
    return str(ipaddress.ip_address(packed))


class ConnOpen(NamedTuple):
    key: ConnKey
    ts: int                 # kernel ns (CLOCK_MONOTONIC)
    role: Role
    tls: bool               # already known to carry TLS (plaintext will follow)
    from_start: bool        # accept/connect seen: offset 0 is the stream's first byte
    local_ip: bytes         # packed, 4 or 16 bytes
    local_port: int
    remote_ip: bytes
    remote_port: int
    comm: str
    cgroup: int
    netns: int = 0          # network namespace inode (as in /proc/PID/ns/net)

    @property
    def client_direction(self) -> Direction | None:
        """The direction carrying the client's bytes (requests), if the role is known."""
        if self.role == Role.SERVER:
            return Direction.INGRESS
        if self.role == Role.CLIENT:
            return Direction.EGRESS
        return None

    @property
    def client(self) -> tuple[bytes, int] | None:
        if self.role == Role.SERVER:
            return self.remote_ip, self.remote_port
        if self.role == Role.CLIENT:
            return self.local_ip, self.local_port
        return None

    @property
    def server(self) -> tuple[bytes, int] | None:
        if self.role == Role.SERVER:
            return self.local_ip, self.local_port
        if self.role == Role.CLIENT:
            return self.remote_ip, self.remote_port
        return None


class Data(NamedTuple):
    key: ConnKey
    ts: int
    direction: Direction
    offset: int
    payload: bytes
    tls: bool               # plaintext of a TLS library call


class Truncated(NamedTuple):
    key: ConnKey
    ts: int
    direction: Direction
    offset: int
    nbytes: int
    tls: bool


class Close(NamedTuple):
    key: ConnKey
    ts: int
    sent: int               # final EGRESS offset
    received: int           # final INGRESS offset


class ProcExit(NamedTuple):
    tgid: int
    ts: int


class Exec(NamedTuple):
    tgid: int
    ts: int
    comm: str


Event = ConnOpen | Data | Truncated | Close | ProcExit | Exec


_DIRS = (Direction.EGRESS, Direction.INGRESS)
_ROLES = (Role.UNKNOWN, Role.CLIENT, Role.SERVER)
_unpack_hdr = HDR.unpack_from


class DecodeError(ValueError):
    pass


def decode(raw: bytes) -> Event:
    """One ring-buffer record -> its typed event."""
    if len(raw) < HDR_SIZE:
        raise DecodeError(f"record of {len(raw)} bytes is shorter than a header")
    (typ, direction, role, flags, tgid, fd, length, conn_id, ts, offset, extra,
     cgroup) = _unpack_hdr(raw)
    key = ConnKey(tgid, fd, conn_id)
    if typ == EV_DATA:
        if len(raw) < HDR_SIZE + length:
            raise DecodeError(f"data record holds {len(raw) - HDR_SIZE} of {length} bytes")
        return Data(key, ts, _DIRS[direction & 1], offset, raw[HDR_SIZE:HDR_SIZE + length],
                    flags & F_TLS != 0)
    if typ == EV_TRUNC:
        return Truncated(key, ts, _DIRS[direction & 1], offset, extra, flags & F_TLS != 0)
    if typ == EV_CLOSE:
        return Close(key, ts, offset, extra)
    if typ == EV_PROC_EXIT:
        return ProcExit(tgid, ts)
    if typ in (EV_OPEN, EV_EXEC):
        if len(raw) < OPEN_SIZE:
            raise DecodeError(f"open record of {len(raw)} bytes")
        family, lport, rport, _pad, laddr, raddr, comm = OPEN_TAIL.unpack_from(raw, HDR_SIZE)
        name = comm.split(b"\0", 1)[0].decode(errors="replace")
        if typ == EV_EXEC:
            return Exec(tgid, ts, name)
        return ConnOpen(key, ts, _ROLES[role] if role < 3 else Role.UNKNOWN, bool(flags & F_TLS),
                        bool(flags & F_FROM_START), _addr(family, laddr), lport,
                        _addr(family, raddr), rport, name, cgroup, extra)
    raise DecodeError(f"unknown record type {typ}")
