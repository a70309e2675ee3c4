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


@dataclass(eq=False)
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
    evicted: int = 0
    proc_exits: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class ConnectionTracker:
    """Feeds stream consumers from decoded events.

    `open(conn)` returns the consumer for a new connection (or None to ignore it).
    `tls_ready_ns()`: kernel time of the latest TLS library attach; a TLS connection
    that began before it may have had plaintext nobody saw, so it starts mid-way.
    `on_end(conn)`: called once for every connection that ends (close, process exit,
    idleness, eviction), after its consumer was closed.

    `conns` is kept in least-recently-active order (a connection moves to the end on
    each payload event), so idle connections and eviction candidates are at the front.
    """

    def __init__(self, open: Callable[[Connection], StreamConsumer | None], *,
                 tls_ready_ns: Callable[[], int] = lambda: 0,
                 to_wall: Callable[[int], float] = lambda ns: ns / 1e9,
                 on_end: Callable[[Connection], None] | None = None,
                 remember: int = 4096) -> None:
        self._open = open
        self._tls_ready_ns = tls_ready_ns
        self.to_wall = to_wall
        self._on_end = on_end
        self.conns: OrderedDict[ConnKey, Connection] = OrderedDict()
        self.by_tgid: dict[int, set[ConnKey]] = {}
        # connections closed for idleness or evicted: their open record, in case bytes follow
        self._recent: OrderedDict[ConnKey, ConnOpen] = OrderedDict()
        self._remember = remember
        self.stats = TrackerStats()

    # -- input

    def feed(self, ev: Event) -> None:
        t = type(ev)
        if t is Data:
            self._data(ev)  # type: ignore[arg-type]
        elif t is ConnOpen:
            self._opened(ev)  # type: ignore[arg-type]
        elif t is Truncated:
            self._trunc(ev)  # type: ignore[arg-type]
        elif t is Close:
            self._close(ev)  # type: ignore[arg-type]
        elif t is ProcExit:
            self.stats.proc_exits += 1
            for key in list(self.by_tgid.get(ev.tgid, ())):  # type: ignore[union-attr]
                self._finish(key)
        elif t is Exec:
            pass

    def knows(self, key: ConnKey) -> bool:
        """Is this connection open here, or remembered after an idle close/eviction?"""
        return key in self.conns or key in self._recent

    def feed_all(self, events: list[Event]) -> None:
        feed = self.feed
        for ev in events:
            feed(ev)

    # -- handlers

    def _opened(self, ev: ConnOpen) -> None:
        if ev.key in self.conns:  # the same open re-sent: keep the first
            return
        self._recent.pop(ev.key, None)
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
            # bytes after an idle close or an eviction: the rest of the connection, as a
            # new stream first seen mid-way (what the consumer held is gone)
            self._opened(o._replace(from_start=False))
            c = self.conns[key]
        else:
            self.conns.move_to_end(key)
        return c

    def _start(self, c: Connection, ts: int, tls: bool) -> bool:
        """Create the consumer at the first payload event; False if ignored."""
        if c.consumer is not None:
            return True
        c.tls = c.tls or tls
        c.consumer = self._open(c)
        if c.consumer is None:
            return False
        # conn_id is the kernel time the connection was first seen (its accept/connect)
        midway = not c.open.from_start or (c.tls and c.open.key.conn_id < self._tls_ready_ns())
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
        if c is None or (c.consumer is None and not self._start(c, ev.ts, ev.tls)):
            return
        d = ev.direction
        off = ev.offset
        if c.ended[d] or (off != c.next_off[d] and not self._advance(c, d, off)):
            return
        payload = ev.payload
        c.consumer.data(d, off, self.to_wall(ev.ts), payload)  # type: ignore[union-attr]
        c.next_off[d] = off + len(payload)
        c.last_ts = ev.ts
        st = self.stats
        st.data_records += 1
        st.data_bytes += len(payload)

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

    def _finish(self, key: ConnKey) -> Connection | None:
        c = self.conns.pop(key, None)
        if c is None:
            return None
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
        if self._on_end is not None:
            self._on_end(c)
        return c

    def _forget(self, key: ConnKey) -> bool:
        """End a connection the kernel still traces; bytes that follow reopen it mid-way."""
        c = self._finish(key)
        if c is None:
            return False
        self._recent[key] = c.open
        while len(self._recent) > self._remember:
            self._recent.popitem(last=False)
        return True

    # -- housekeeping

    def sweep(self, now_ns: int, idle_ns: int,
              keep: Callable[[Connection], bool] | None = None) -> list[ConnKey]:
        """End the connections idle for idle_ns (TRAFFIC_INACTIVITY_THRESHOLD), except
        those `keep(conn)` wants kept (they move to the back); returns the keys ended."""
        out: list[ConnKey] = []
        conns = self.conns
        limit = now_ns - idle_ns
        kept: set[ConnKey] = set()
        while conns:
            k, c = next(iter(conns.items()))
            if c.last_ts > limit or k in kept:
                break
            if keep is not None and keep(c):
                kept.add(k)
                conns.move_to_end(k)
                continue
            self._forget(k)
            self.stats.idle_closed += 1
            out.append(k)
        return out

    def evict(self, key: ConnKey) -> bool:
        """End one connection now (a limit was reached): what its consumer held goes out;
        bytes that follow reopen it mid-way."""
        if self._forget(key):
            self.stats.evicted += 1
            return True
        return False

    def close_all(self) -> None:
        for k in list(self.conns):
            self._finish(k)
