"""Reading a BPF ring buffer straight from its memory map, and decoding as we go.

libbpf's consumer (``ring_buffer__poll``, used by ``collector.RingReader``) calls back into
Python once per record through ctypes: about 1.5 µs a record here, as much as decoding
it, and three records make one plain HTTP exchange.  A BPF ring buffer is designed to be
read from user space without system calls: the kernel maps a consumer page (ours to
write), a producer page and the data pages (mapped twice in a row, so a record that wraps
around the end reads as one contiguous slice).  This module walks the records in that
memory like libbpf's ``ringbuf_process_ring`` does, decodes each header in place with
``struct.unpack_from`` and copies out only the payload.

It also **coalesces**: consecutive data records of one connection and direction whose
offsets follow each other (a ``writev`` of a response head and body, a large write cut
into 16 KiB chunks) become one ``Data`` event, so the HTTP session parses one slice
instead of several.  Nothing is reordered: only neighbours in ring order are joined.

Memory ordering: the producer position and each record's header are read before the
record, and the consumer position is stored after the records it frees were copied.
On x86-64 (total store order) plain loads and stores give exactly the acquire/release
semantics libbpf asks of the compiler; other architectures use libbpf's consumer
(``available()`` says whether this reader may be used).
"""

from __future__ import annotations

import mmap
import platform
import struct

from appliance.ebpf.events import (EV_CLOSE, EV_DATA, EV_EXEC, EV_OPEN, EV_PROC_EXIT,
                                   EV_TRUNC, F_FROM_START, F_TLS, HDR, HDR_SIZE, OPEN_SIZE,
                                   OPEN_TAIL, Close, ConnKey, ConnOpen, Data, Event, Exec,
                                   ProcExit, Role, Truncated, _addr)

BUSY = 1 << 31
DISCARD = 1 << 30
RECORD_HDR = 8
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_ROLES = (Role.UNKNOWN, Role.CLIENT, Role.SERVER)
_new = tuple.__new__


def available() -> bool:
    return platform.machine() in ("x86_64", "AMD64", "i686", "i386")


def decode_records(buf, base: int, mask: int, cons: int, prod: int,
                   max_records: int) -> tuple[list[Event], int, int, int]:
    """The records of ``buf`` (a ring's producer mapping, data at ``base``) between the
    consumer and producer positions: (events, new consumer position, records, errors).
    Data records that continue each other are joined (see the module docstring)."""
    unpack_hdr = HDR.unpack_from
    u32 = _U32.unpack_from
    mk = _new  # the NamedTuples' own __new__ is Python code: 0.2 µs a record each
    out: list[Event] = []
    append = out.append
    errors = 0
    # the data record being coalesced: key, direction, offset, payload parts, ts, tls
    p_key = None
    p_dir = p_off = p_ts = p_end = 0
    p_tls = False
    p_parts: list[bytes] = []
    n = 0
    while cons < prod and n < max_records:
        pos = base + (cons & mask)
        word = u32(buf, pos)[0]
        if word & BUSY:
            break  # being written: the rest follows it
        length = word & 0x3FFFFFFF
        cons += (length + 15) & ~7  # header (8) + record, rounded up to 8
        if word & DISCARD:
            continue
        n += 1
        rec = pos + RECORD_HDR
        if length < HDR_SIZE:
            errors += 1
            continue
        (typ, direction, role, flags, tgid, fd, dlen, conn_id, ts, offset, extra,
         cgroup) = unpack_hdr(buf, rec)
        if typ == EV_DATA:
            if dlen > length - HDR_SIZE:
                errors += 1
                continue
            start = rec + HDR_SIZE
            if (offset == p_end and p_key is not None and conn_id == p_key[2]
                    and fd == p_key[1] and tgid == p_key[0] and direction & 1 == p_dir
                    and (flags & F_TLS != 0) == p_tls):
                p_parts.append(buf[start:start + dlen])
                p_end += dlen
                continue
            if p_key is not None:
                append(mk(Data, (p_key, p_ts, p_dir, p_off,
                                 p_parts[0] if len(p_parts) == 1 else b"".join(p_parts), p_tls)))
            p_key = mk(ConnKey, (tgid, fd, conn_id))
            p_dir, p_off, p_ts, p_tls = direction & 1, offset, ts, flags & F_TLS != 0
            p_parts = [buf[start:start + dlen]]
            p_end = offset + dlen
            continue
        if p_key is not None:
            append(mk(Data, (p_key, p_ts, p_dir, p_off,
                             p_parts[0] if len(p_parts) == 1 else b"".join(p_parts), p_tls)))
            p_key = None
        key = mk(ConnKey, (tgid, fd, conn_id))
        if typ == EV_TRUNC:
            append(Truncated(key, ts, direction & 1, offset, extra, flags & F_TLS != 0))
        elif typ == EV_CLOSE:
            append(Close(key, ts, offset, extra))
        elif typ == EV_OPEN or typ == EV_EXEC:
            if length < OPEN_SIZE:
                errors += 1
                continue
            family, lport, rport, _pad, laddr, raddr, comm = OPEN_TAIL.unpack_from(
                buf, rec + HDR_SIZE)
            name = comm.split(b"\0", 1)[0].decode(errors="replace")
            if typ == EV_EXEC:
                append(Exec(tgid, ts, name))
            else:
                append(ConnOpen(key, ts, _ROLES[role] if role < 3 else Role.UNKNOWN,
                                bool(flags & F_TLS), bool(flags & F_FROM_START),
                                _addr(family, laddr), lport, _addr(family, raddr), rport,
                                name, cgroup, extra))
        elif typ == EV_PROC_EXIT:
            append(ProcExit(tgid, ts))
        else:
            errors += 1
    if p_key is not None:
        append(mk(Data, (p_key, p_ts, p_dir, p_off,
                         p_parts[0] if len(p_parts) == 1 else b"".join(p_parts), p_tls)))
    return out, cons, n, errors


class DirectRing:
    """One ring buffer map, read from its memory map (see the module docstring)."""

    def __init__(self, fd: int, size: int) -> None:
        if size <= 0 or size & (size - 1):
            raise ValueError(f"ring buffer size {size} is not a power of two")
        page = mmap.PAGESIZE
        self.fd = fd
        self.size = size
        self.mask = size - 1
        self._cons = mmap.mmap(fd, page, flags=mmap.MAP_SHARED,
                               prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._prod = mmap.mmap(fd, page + 2 * size, flags=mmap.MAP_SHARED,
                               prot=mmap.PROT_READ, offset=page)
        self._base = page  # the data pages, in the producer mapping
        self.decode_errors = 0
        self.records = 0

    def fileno(self) -> int:
        return self.fd  # a ring buffer map's descriptor is pollable

    def pending(self) -> int:
        """Bytes written by the kernel and not consumed yet."""
        return int(_U64.unpack_from(self._prod, 0)[0] - _U64.unpack_from(self._cons, 0)[0])

    def read(self, max_records: int = 1 << 30) -> list[Event]:
        """Decode what the ring holds now (at most about max_records); frees its space."""
        cons = _U64.unpack_from(self._cons, 0)[0]
        prod = _U64.unpack_from(self._prod, 0)[0]
        if cons >= prod:
            return []
        out, cons, n, errors = decode_records(self._prod, self._base, self.mask, cons, prod,
                                              max_records)
        # everything decoded was copied out: the kernel may reuse the space
        self._cons[0:8] = _U64.pack(cons)
        self.records += n
        self.decode_errors += errors
        return out

    def discard(self) -> int:
        """Free everything the ring holds without decoding it; the number of records."""
        prod_map = self._prod
        cons = _U64.unpack_from(self._cons, 0)[0]
        prod = _U64.unpack_from(prod_map, 0)[0]
        n = 0
        while cons < prod:
            word = _U32.unpack_from(prod_map, self._base + (cons & self.mask))[0]
            if word & BUSY:
                break
            cons += ((word & ~(BUSY | DISCARD)) + RECORD_HDR + 7) & ~7
            n += not word & DISCARD
        self._cons[0:8] = _U64.pack(cons)
        return n

    def close(self) -> None:
        self._prod.close()
        self._cons.close()


__all__ = ["DirectRing", "available"]
