"""TCP stream assembly: one direction of a connection, from segments to stream events.

A :class:`TcpStream` turns the segments of one direction into the stream events of
``appliance.core.stream`` (``data`` / ``gap`` / ``ack`` / ``eof``) for a consumer, in
byte order, each ``data`` carrying the capture timestamp of the segment it came from.
It knows nothing of what the bytes mean.

Rules (Zeek's and gopacket's reassemblers agree on them):

- Sequence numbers are mapped to 64-bit stream offsets (offset 0 is the byte after the
  SYN, or the first byte seen when the SYN was not); comparisons are modulo 2**32 around
  the next expected byte, so wrap-around is invisible above this layer.
- First copy wins: a retransmission or overlap never replaces bytes already taken;
  overlaps whose bytes differ are counted (``inconsistent_overlaps``).
- Out-of-order segments are held in offset order (a sorted list and ``bisect``), capped in
  bytes and in segments.
- A hole is skipped (``gap``) only on evidence that the capture lost it — the peer
  acknowledged bytes beyond it, or this side's FIN lies beyond it — and only after a
  grace of both ``grace_packets`` packets of the connection and ``grace_time`` seconds of
  packet time, so data that arrives a few packets late is still used.  Without evidence
  it is skipped after ``gap_timeout`` seconds; at once when a cap is reached or the
  connection ends.
- A direction first seen without its SYN waits the same grace before it fixes its start,
  so an earlier segment arriving next is still taken; it then begins with
  ``gap(d, 0, UNKNOWN)``.  Bytes that arrive from before the start are counted
  (``discarded_before_start``), never silently dropped.  A SYN that arrives late for a
  stream already started joins it (``late_syns``).
- ``ack`` events carry each segment's own acknowledgement (converted to the peer's
  offsets), emitted just before its ``data``; the highest acknowledgement seen
  (``max_ack``, used as evidence for the peer's holes) only moves forward.
"""

from __future__ import annotations

from bisect import bisect_left

from appliance.core.stream import COMPILED, UNKNOWN, Acct, StreamConsumer

MASK = 0xFFFFFFFF
HALF = 0x80000000
WRAP = 0x100000000
_MASK = MASK  # MASK for this module's arithmetic: a C constant when compiled (tcp.pxd)

FIN = 0x01
SYN = 0x02
RST = 0x04
ACK = 0x10

# what one held segment costs beside its payload: the tuple, the bytes object header and
# the list slots; compiled, also the float and int boxed for its timestamp and ACK
# (measured; see tests/test_accounting.py)
SEGMENT_OVERHEAD = 208 if COMPILED else 160


class TcpConfig:
    __slots__ = ("max_held_bytes", "max_held_segments", "grace_packets", "grace_time",
                 "gap_timeout")

    def __init__(self, max_held_bytes: int = 1 << 20, max_held_segments: int = 4096,
                 grace_packets: int = 4, grace_time: float = 0.05,
                 gap_timeout: float = 2.0) -> None:
        self.max_held_bytes = max_held_bytes
        self.max_held_segments = max_held_segments
        self.grace_packets = grace_packets
        self.grace_time = grace_time
        self.gap_timeout = gap_timeout


class TcpStats:
    __slots__ = ("gaps", "gap_bytes", "retransmits", "inconsistent_overlaps", "ooo_segments",
                 "held_cap_skips", "discarded_before_start", "late_syns", "midstream")

    def __init__(self) -> None:
        self.gaps = 0
        self.gap_bytes = 0
        self.retransmits = 0
        self.inconsistent_overlaps = 0
        self.ooo_segments = 0
        self.held_cap_skips = 0
        self.discarded_before_start = 0
        self.late_syns = 0
        self.midstream = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class TcpStream:
    __slots__ = ("d", "consumer", "stats", "cfg", "acct", "peer", "base", "from_syn", "next",
                 "fin", "done", "syn_ack",
                 "max_ack", "emitted_ack", "held_offs", "held", "held_bytes", "hole_ts",
                 "ev_pkt", "ev_ts", "pre", "pre_pkt", "pre_ts", "last_off", "last")

    def __init__(self, direction: int, consumer: StreamConsumer, stats: TcpStats,
                 cfg: TcpConfig, acct: Acct) -> None:
        self.d = direction
        self.consumer = consumer
        self.stats = stats
        self.cfg = cfg
        self.acct = acct
        self.peer: TcpStream | None = None
        self.base = -1  # raw sequence number of offset 0, -1 until the start is fixed
        self.from_syn = False  # the start was fixed by a SYN (not first seen mid-way)
        self.syn_ack = -1  # the ACK on this side's SYN-ACK: where the peer's stream begins
        self.next = 0  # next expected offset
        self.fin = -1  # offset of the FIN, -1 until seen
        self.done = False
        self.max_ack = -1  # highest raw ACK this side sent (evidence for the peer's holes)
        self.emitted_ack = -1  # last ack offset reported to the consumer
        self.held_offs: list[int] = []  # offsets of held segments, sorted
        self.held: list[tuple[int, bytes, float, int]] = []  # (offset, payload, ts, raw ack)
        self.held_bytes = 0
        self.hole_ts = 0.0  # packet time the current hole opened
        self.ev_pkt = -1  # connection packet number when evidence for the hole appeared
        self.ev_ts = 0.0
        # segments of a stream whose start is not fixed yet: (seq, flags, payload, ts, ack)
        self.pre: list[tuple[int, int, bytes, float, int]] | None = None
        self.pre_pkt = 0
        self.pre_ts = 0.0
        # the last segment delivered, to check retransmissions against (accounted: it
        # keeps its bytes alive)
        self.last_off = 0
        self.last = b""

    # -- offsets ----------------------------------------------------------------------------
    def offset(self, seq: int) -> int:
        """The stream offset of a raw sequence number, unwrapped around ``next``."""
        d = (seq - self.base - self.next) & _MASK
        if d >= HALF:
            d -= WRAP
        return self.next + d

    def note_ack(self, ack: int) -> None:
        m = self.max_ack
        if m < 0 or 0 < ((ack - m) & _MASK) < HALF:
            self.max_ack = ack

    # -- segments ---------------------------------------------------------------------------
    def segment(self, ts: float, pkt: int, seq: int, ack: int, flags: int,
                payload: bytes) -> None:
        """One segment of this direction.  ``ack`` is the raw ACK field, or -1 without ACK;
        ``pkt`` counts the connection's packets (the grace is measured in it)."""
        if payload and not flags & 0x03 and self.base >= 0 and not self.held_offs \
                and not self.done and ((seq - self.base) & _MASK) == (self.next & _MASK):
            # the common case, inlined: the next bytes in order, nothing held
            if ack >= 0:
                peer = self.peer
                if peer is not None and peer.base >= 0:
                    a = peer.offset(ack)
                    if a != self.emitted_ack:
                        self.emitted_ack = a
                        self.consumer.ack(self.d, a)
            off = self.next
            n = len(payload)
            self.next = off + n
            self.acct.n += n - len(self.last)
            self.last_off = off
            self.last = payload
            self.consumer.data(self.d, off, ts, payload)
            if self.fin >= 0 and self.next >= self.fin:
                self._eof()
            return
        if self.done:
            if payload:
                self.stats.retransmits += 1
            return
        if flags & SYN and ack >= 0:
            self.syn_ack = ack
        if self.base < 0:
            if flags & SYN:
                self._start(seq + 1, False)
                if self.pre is not None:  # data that overtook its SYN
                    self._replay_pre(pkt)
            else:
                if not payload and not flags & FIN:
                    return
                self._pre_hold(ts, pkt, seq, flags, payload, ack)
                return
        elif flags & SYN:
            self._syn(seq)
            seq = (seq + 1) & _MASK
        n = len(payload)
        off = self.offset(seq)
        if flags & FIN and self.fin < 0:
            self.fin = off + n
        if n:
            nxt = self.next
            if off == nxt:
                self._deliver(off, payload, ts, ack)
                if self.held_offs:
                    self._drain()
            elif off > nxt:
                self._hold(ts, off, payload, ack)
            else:
                end = off + n
                self._check_overlap(off, payload)
                if end > nxt:
                    self._deliver(nxt, payload[nxt - off:], ts, ack)
                    if self.held_offs:
                        self._drain()
                elif off < 0 and self.base >= 0:
                    self.stats.discarded_before_start += n
                else:
                    self.stats.retransmits += 1
        if self.held_offs:
            self.check(ts, pkt)
        elif self.fin >= 0 and self.next >= self.fin:
            self._eof()

    def _syn(self, seq: int) -> None:
        """A SYN for a stream whose start is fixed: a retransmission, or a SYN that arrived
        after data of its own connection (mirrors reorder)."""
        start = (seq + 1) & _MASK
        if start != self.base:
            self.stats.late_syns += 1

    def _start(self, base: int, midstream: bool) -> None:
        self.base = base & _MASK
        self.from_syn = not midstream
        self.next = 0
        if midstream:
            self.stats.midstream += 1
            self.consumer.gap(self.d, 0, UNKNOWN)

    def _pre_hold(self, ts: float, pkt: int, seq: int, flags: int, payload: bytes,
                  ack: int) -> None:
        pre = self.pre
        if pre is None:
            pre = self.pre = []
            self.pre_pkt = pkt
            self.pre_ts = ts
        pre.append((seq, flags, payload, ts, ack))
        n = len(payload) + SEGMENT_OVERHEAD
        self.held_bytes += n
        self.acct.n += n
        self.check(ts, pkt)

    def _fix_start(self, ts: float, pkt: int) -> None:
        """Fix the start of a stream first seen mid-way, then replay what was held."""
        pre = self.pre
        assert pre is not None
        first = pre[0][0]
        for seg in pre:  # the lowest sequence number held, modulo 2**32
            if (seg[0] - first) & _MASK >= HALF:
                first = seg[0]
        peer = self.peer
        if peer is not None and peer.max_ack >= 0:
            # the peer had received up to its ACK: begin there when it lies a little
            # before the lowest byte held (the bytes between are a hole, not history)
            behind = (first - peer.max_ack) & _MASK
            if 0 < behind < (1 << 20):
                first = peer.max_ack
        self.pre = pre
        self._start(first, True)
        self._replay_pre(pkt)

    def _replay_pre(self, pkt: int) -> None:
        pre = self.pre
        assert pre is not None
        self.pre = None
        self.acct.n -= self.held_bytes
        self.held_bytes = 0
        base = self.base
        for seq, flags, payload, ts, ack in sorted(pre, key=lambda s: (s[0] - base) & _MASK):
            self.segment(ts, pkt, seq, ack, flags & ~SYN, payload)
            if self.done:
                break

    def _deliver(self, off: int, payload: bytes, ts: float, ack: int) -> None:
        consumer = self.consumer
        if ack >= 0:
            peer = self.peer
            if peer is not None and peer.base >= 0:
                a = peer.offset(ack)
                if a != self.emitted_ack:
                    self.emitted_ack = a
                    consumer.ack(self.d, a)
        n = len(payload)
        self.next = off + n
        self.acct.n += n - len(self.last)
        self.last_off = off
        self.last = payload
        consumer.data(self.d, off, ts, payload)

    def _check_overlap(self, off: int, payload: bytes) -> None:
        last = self.last
        d = off - self.last_off
        if last and 0 <= d < len(last):
            common = min(len(last) - d, len(payload))
            if last[d:d + common] != payload[:common]:
                self.stats.inconsistent_overlaps += 1

    # -- holes ------------------------------------------------------------------------------
    def _hold(self, ts: float, off: int, payload: bytes, ack: int) -> None:
        offs = self.held_offs
        n = len(payload)
        i = bisect_left(offs, off)
        if i < len(offs) and offs[i] == off:
            old = self.held[i]
            if len(old[1]) < n:  # keep the first copy, extend it with the new tail
                if payload[:len(old[1])] != old[1]:
                    self.stats.inconsistent_overlaps += 1
                grow = n - len(old[1])
                self.held[i] = (off, old[1] + payload[len(old[1]):], old[2], old[3])
                self.held_bytes += grow
                self.acct.n += grow
            else:
                if old[1][:n] != payload:
                    self.stats.inconsistent_overlaps += 1
                self.stats.retransmits += 1
            return
        if not offs:
            self.hole_ts = ts
        offs.insert(i, off)
        self.held.insert(i, (off, payload, ts, ack))
        cost = n + SEGMENT_OVERHEAD
        self.held_bytes += cost
        self.acct.n += cost
        self.stats.ooo_segments += 1

    def check(self, ts: float, pkt: int) -> None:
        """Skip the hole before the held data, or fix a mid-stream start, once the rules
        allow it.  Called for every packet of the connection while something is held."""
        cfg = self.cfg
        if self.pre is not None:
            peer = self.peer
            if peer is not None and peer.syn_ack >= 0:
                # the peer's SYN-ACK says where this stream begins: its SYN was not
                # captured (or comes later), but the start is known exactly
                self._start(peer.syn_ack, False)
                self._replay_pre(pkt)
                return
            # (the peer's ACK is no evidence here: it says what the peer received, and a
            # mirror may still deliver those bytes to us later)
            if ((pkt - self.pre_pkt >= cfg.grace_packets and ts - self.pre_ts >= cfg.grace_time)
                    or self.held_bytes > cfg.max_held_bytes
                    or len(self.pre) > cfg.max_held_segments):
                self._fix_start(ts, pkt)
            return
        if not self.held_offs:
            return
        if (self.held_bytes > cfg.max_held_bytes
                or len(self.held_offs) > cfg.max_held_segments):
            self.stats.held_cap_skips += 1
            self.skip_hole()
            return
        if self.ev_pkt < 0:
            peer = self.peer
            nxt = self.next
            if ((peer is not None and peer.max_ack >= 0 and self.base >= 0
                 and self.offset(peer.max_ack) > nxt) or self.fin > nxt):
                self.ev_pkt = pkt
                self.ev_ts = ts
        if self.ev_pkt >= 0:
            if pkt - self.ev_pkt >= cfg.grace_packets and ts - self.ev_ts >= cfg.grace_time:
                self.skip_hole()
        elif ts - self.hole_ts >= cfg.gap_timeout:
            self.skip_hole()

    def skip_hole(self) -> None:
        """Give up on the hole before the first held segment and carry on after it."""
        offs = self.held_offs
        if not offs:
            return
        first = offs[0]
        missing = first - self.next
        if missing > 0:
            self.stats.gaps += 1
            self.stats.gap_bytes += missing
            self.consumer.gap(self.d, self.next, missing)
            self.next = first
        self._drain()
        if not self.held_offs and self.fin >= 0 and self.next >= self.fin:
            self._eof()

    def _drain(self) -> None:
        """Deliver the held segments that are now in order (or overlap the edge)."""
        offs = self.held_offs
        held = self.held
        i = 0
        count = len(offs)
        released = 0
        while i < count and offs[i] <= self.next:
            off, payload, ts, ack = held[i]
            i += 1
            released += len(payload) + SEGMENT_OVERHEAD
            end = off + len(payload)
            nxt = self.next
            if end <= nxt:
                self.stats.retransmits += 1
                continue
            self._deliver(nxt, payload if off == nxt else payload[nxt - off:], ts, ack)
            if self.done:
                break
        if i:
            del offs[:i]
            del held[:i]
            self.held_bytes -= released
            self.acct.n -= released
            self.ev_pkt = -1
        if offs:
            self.hole_ts = held[0][2] if held[0][2] > self.hole_ts else self.hole_ts

    def _eof(self) -> None:
        if not self.done:
            self.done = True
            self.acct.n -= len(self.last)
            self.last = b""
            self.consumer.eof(self.d)

    def close(self, ts: float) -> None:
        """The connection is over (RST, idle, eviction): flush what is held, then EOF."""
        if self.done:
            return
        if self.pre is not None:
            self._fix_start(ts, self.pre_pkt)
            if self.done:
                return
        while self.held_offs:
            self.skip_hole()
            if self.done:
                return
        if self.fin > self.next and self.base >= 0:
            missing = self.fin - self.next
            self.stats.gaps += 1
            self.stats.gap_bytes += missing
            self.consumer.gap(self.d, self.next, missing)
            self.next = self.fin
        self._eof()
