"""Socket events -> the core's stream events, per connection and direction.

This is the eBPF counterpart of TCP stream assembly: it turns the typed records of
appliance.ebpf.events into exactly the calls of the core's stream-event contract
(appliance/core/stream.py, core v2):

    data(direction, offset, ts, payload)   bytes [offset, offset+len) of one direction
    gap(direction, offset, nbytes)         bytes moved but not captured; nbytes UNKNOWN (-1)
                                           at offset 0 = "first seen mid-way"
    eof(direction)                         the direction is over
    close()                                (if the consumer has it) the connection is over

Guarantees to the consumer, per direction: offsets are contiguous (every hole becomes
one gap), the first event is gap(d, 0, UNKNOWN) exactly when the stream's beginning was
not seen, nothing follows eof. `ts` is in seconds on the kernel's CLOCK_MONOTONIC;
`to_wall` (given) converts it. No `ack` calls: a socket has no ACK evidence, and the
session pairs by order (SessionConfig.ack_evidence False).

Directions are appliance.ebpf.events.Direction (EGRESS 0 = sent by the traced process,
INGRESS 1 = received); `Connection.open.client_direction` tells the session which is the
client's (HttpSession(client=...)).

A consumer is created lazily, at a connection's first payload event, by the `open`
factory, so connections that never carry bytes cost nothing downstream.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from appliance.ebpf.events import (Close, ConnKey, ConnOpen, Data, Event, Exec, ProcExit,
                                   Truncated)

log = logging.getLogger("appliance.ebpf.streams")

UNKNOWN = -1


class StreamConsumer(Protocol):
    def data(self, direction: int, offset: int, ts: float, payload: bytes) -> None: ...
    def gap(self, direction: int, offset: int, nbytes: int) -> None: ...
    def eof(self, direction: int) -> None: ...


@dataclass
class Connection:
    open: ConnOpen
    consumer: StreamConsumer | None = None
    next_off: list[int] = field(default_factory=lambda: [0, 0])
    ended: list[bool] = field(default_factory=lambda: [False, False])
    tls: bool = False
    last_ts: int = 0


@dataclass
class TrackerStats:
    opened: int = 0
    closed: int = 0
    data_records: int = 0
    data_bytes: int = 0
    truncated_bytes: int = 0      # reported by the kernel (per-call cap, sendfile)
    lost_bytes: int = 0           # offset jumps: records lost in a full ring buffer
    overlap_records: int = 0      # a record behind the expected offset (dropped)
    orphan_records: int = 0       # for a connection never opened nor remembered
    midstream_starts: int = 0
    idle_closed: int = 0
    proc_exits: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class ConnectionTracker:
    """Feeds stream consumers from decoded events.

    `open(conn)` returns the consumer for a new connection (or None to ignore it).
    `tls_ready_ns()`: kernel time of the latest TLS library attach; a TLS connection
    opened before it may have had plaintext nobody saw, so it starts mid-way.
    """

    def __init__(self, open: Callable[[Connection], StreamConsumer | None], *,
                 tls_ready_ns: Callable[[], int] = lambda: 0,
                 to_wall: Callable[[int], float] = lambda ns: ns / 1e9,
                 remember: int = 4096) -> None:
        self._open = open
        self._tls_ready_ns = tls_ready_ns
        self._to_wall = to_wall
        self.conns: dict[ConnKey, Connection] = {}
        self.by_tgid: dict[int, set[ConnKey]] = {}
        # connections closed for idleness: their open record, in case bytes follow
        self._recent: OrderedDict[ConnKey, ConnOpen] = OrderedDict()
        self._remember = remember
        self.stats = TrackerStats()

    # -- input

    def feed(self, ev: Event) -> None:
        if isinstance(ev, Data):
            self._data(ev)
        elif isinstance(ev, ConnOpen):
            self._opened(ev)
        elif isinstance(ev, Truncated):
            self._trunc(ev)
        elif isinstance(ev, Close):
            self._close(ev)
        elif isinstance(ev, ProcExit):
            self.stats.proc_exits += 1
            for key in list(self.by_tgid.get(ev.tgid, ())):
                self._finish(key)
        elif isinstance(ev, Exec):
            pass

    def feed_all(self, events: list[Event]) -> None:
        for ev in events:
            self.feed(ev)

    # -- handlers

    def _opened(self, ev: ConnOpen) -> None:
        old = self.conns.get(ev.key)
        if old is not None:  # the same open re-sent: keep the first
            return
        self.conns[ev.key] = Connection(ev, tls=ev.tls, last_ts=ev.ts)
        self.by_tgid.setdefault(ev.key.tgid, set()).add(ev.key)
        self.stats.opened += 1

    def _conn(self, key: ConnKey) -> Connection | None:
        c = self.conns.get(key)
        if c is None:
            o = self._recent.pop(key, None)
            if o is None:
                self.stats.orphan_records += 1
                return None
            # bytes after an idle close: a new stream on the same connection, mid-way
            self._opened(ConnOpen(o.key, o.ts, o.role, o.tls, False, o.local_ip, o.local_port,
                                  o.remote_ip, o.remote_port, o.comm, o.cgroup))
            c = self.conns[key]
        return c

    def _start(self, c: Connection, ts: int, tls: bool) -> bool:
        """Create the consumer at the first payload event; False if ignored."""
        if c.consumer is not None:
            return True
        c.tls = c.tls or tls
        c.consumer = self._open(c)
        if c.consumer is None:
            return False
        midway = not c.open.from_start or (c.tls and c.open.ts < self._tls_ready_ns())
        if midway:
            self.stats.midstream_starts += 1
            for d in (0, 1):
                c.consumer.gap(d, 0, UNKNOWN)
        return True

    def _advance(self, c: Connection, d: int, offset: int) -> bool:
        """Bring direction d to `offset`: a gap for lost records; False if behind."""
        exp = c.next_off[d]
        if offset < exp:
            self.stats.overlap_records += 1
            return False
        if offset > exp:
            self.stats.lost_bytes += offset - exp
            assert c.consumer is not None
            c.consumer.gap(d, exp, offset - exp)
            c.next_off[d] = offset
        return True

    def _data(self, ev: Data) -> None:
        c = self._conn(ev.key)
        if c is None or not self._start(c, ev.ts, ev.tls):
            return
        d = int(ev.direction)
        if c.ended[d] or not self._advance(c, d, ev.offset):
            return
        assert c.consumer is not None
        c.consumer.data(d, ev.offset, self._to_wall(ev.ts), ev.payload)
        c.next_off[d] = ev.offset + len(ev.payload)
        c.last_ts = ev.ts
        self.stats.data_records += 1
        self.stats.data_bytes += len(ev.payload)

    def _trunc(self, ev: Truncated) -> None:
        c = self._conn(ev.key)
        if c is None or not self._start(c, ev.ts, ev.tls):
            return
        d = int(ev.direction)
        if c.ended[d] or not self._advance(c, d, ev.offset):
            return
        assert c.consumer is not None
        c.consumer.gap(d, ev.offset, ev.nbytes)
        c.next_off[d] = ev.offset + ev.nbytes
        c.last_ts = ev.ts
        self.stats.truncated_bytes += ev.nbytes

    def _close(self, ev: Close) -> None:
        c = self.conns.get(ev.key)
        if c is None:
            self._recent.pop(ev.key, None)
            return
        if c.consumer is not None:
            # records lost at the tail of a direction still end in a gap
            for d, final in ((0, ev.sent), (1, ev.received)):
                if not c.ended[d] and final > c.next_off[d]:
                    self._advance(c, d, final)
        self._finish(ev.key)

    def _finish(self, key: ConnKey) -> None:
        c = self.conns.pop(key, None)
        if c is None:
            return
        keys = self.by_tgid.get(key.tgid)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self.by_tgid[key.tgid]
        self.stats.closed += 1
        if c.consumer is not None:
            for d in (0, 1):
                if not c.ended[d]:
                    c.ended[d] = True
                    c.consumer.eof(d)
            close = getattr(c.consumer, "close", None)
            if close is not None:
                close()

    # -- housekeeping

    def sweep(self, now_ns: int, idle_ns: int) -> list[ConnKey]:
        """Close connections idle for idle_ns (TRAFFIC_INACTIVITY_THRESHOLD); returns
        their keys, so the caller can drop the kernel's entries (Collector.forget)."""
        out = [k for k, c in self.conns.items() if now_ns - c.last_ts >= idle_ns]
        for k in out:
            o = self.conns[k].open
            self._finish(k)
            self.stats.idle_closed += 1
            self._recent[k] = o
            while len(self._recent) > self._remember:
                self._recent.popitem(last=False)
        return out

    def close_all(self) -> None:
        for k in list(self.conns):
            self._finish(k)
