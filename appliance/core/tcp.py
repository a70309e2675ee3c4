"""One direction of a TCP connection: sequence-space reassembly, sans-IO.

In-order bytes are handed straight to the consumer (no copy, no buffering); only
out-of-order segments are held, bounded per direction.  The consumer has three
methods: ``data(ts, bytes)``, ``gap(ts, nbytes)`` and ``eof(ts)``.

Rules (the same as Zeek's and gopacket's reassemblers):
- first copy wins: a retransmission or overlap never replaces bytes already taken;
  overlaps whose bytes differ are counted as ``inconsistent_overlaps``;
- sequence numbers are compared modulo 2**32 (wrap-around);
- a direction first seen mid-stream starts at the first segment seen;
- a hole is skipped (``gap``) when the peer acknowledges bytes beyond it (the capture
  lost them, the peer did not), when the held bytes exceed the per-direction cap,
  when the oldest held segment has waited ``gap_timeout`` seconds of packet time, or
  when the connection ends;
- FIN ends the direction once every byte before it has been delivered.
"""

from __future__ import annotations

MASK = 0xFFFFFFFF
HALF = 0x80000000

# keep this many recently delivered segments to compare retransmissions against
_RECENT = 4


class TcpStats:
    __slots__ = ("gaps", "gap_bytes", "retransmits", "inconsistent_overlaps", "ooo_segments",
                 "held_bytes")

    def __init__(self):
        self.gaps = 0
        self.gap_bytes = 0
        self.retransmits = 0
        self.inconsistent_overlaps = 0
        self.ooo_segments = 0
        self.held_bytes = 0  # bytes currently held out of order, all connections


class TcpHalf:
    __slots__ = ("next", "held", "held_bytes", "held_since", "fin", "done", "consumer",
                 "recent", "recent_i", "stats", "max_held", "gap_timeout", "last_ack")

    def __init__(self, consumer, stats: TcpStats, max_held: int = 1 << 20,
                 gap_timeout: float = 2.0):
        self.next: int | None = None  # next expected sequence number
        self.held: dict[int, bytes] | None = None  # seq -> payload, out of order
        self.held_bytes = 0
        self.held_since = 0.0
        self.fin: int | None = None  # sequence number of FIN
        self.done = False
        self.consumer = consumer
        self.recent: list = [(0, b"")] * _RECENT  # ring of (seq, payload) last delivered
        self.recent_i = 0
        self.stats = stats
        self.max_held = max_held
        self.gap_timeout = gap_timeout
        self.last_ack: int | None = None  # latest ACK this side sent (the peer's position)

    def segment(self, ts: float, seq: int, flags: int, payload: bytes) -> None:
        if self.done:
            if payload:
                self.stats.retransmits += 1
            return
        nxt = self.next
        if nxt is None:
            if flags & 0x02:  # SYN
                seq = (seq + 1) & MASK
            nxt = self.next = seq
        elif flags & 0x02:
            seq = (seq + 1) & MASK  # retransmitted SYN (possibly with data)
        n = len(payload)
        if flags & 0x01:  # FIN
            if self.fin is None:
                self.fin = (seq + n) & MASK
        if n:
            rel = (seq - nxt) & MASK
            if rel == 0:
                self.next = nxt = (nxt + n) & MASK
                self._remember(seq, payload)
                self.consumer.data(ts, payload)
                if self.held:
                    self._drain(ts)
            elif rel < HALF:  # ahead: hold it
                held = self.held
                if held is None:
                    held = self.held = {}
                if not held:
                    self.held_since = ts
                old = held.get(seq)
                if old is None:
                    held[seq] = payload
                    self.held_bytes += n
                    self.stats.held_bytes += n
                    self.stats.ooo_segments += 1
                elif len(old) < n:  # keep the first copy, extend with the new tail
                    if payload[:len(old)] != old:
                        self.stats.inconsistent_overlaps += 1
                    held[seq] = old + payload[len(old):]
                    self.held_bytes += n - len(old)
                    self.stats.held_bytes += n - len(old)
                else:
                    if old[:n] != payload:
                        self.stats.inconsistent_overlaps += 1
                    self.stats.retransmits += 1
                if self.held_bytes > self.max_held or ts - self.held_since > self.gap_timeout:
                    self.skip_gap(ts)
            else:  # behind: retransmission, possibly with new bytes at the end
                behind = (nxt - seq) & MASK
                self._check_overlap(seq, payload)
                if behind < n:
                    tail = payload[behind:]
                    self.next = nxt = (nxt + len(tail)) & MASK
                    self._remember(nxt - len(tail) & MASK, tail)
                    self.consumer.data(ts, tail)
                    if self.held:
                        self._drain(ts)
                else:
                    self.stats.retransmits += 1
        elif self.held and ts - self.held_since > self.gap_timeout:
            self.skip_gap(ts)
        if self.fin is not None and self.next == self.fin and not self.held:
            self.done = True
            self.consumer.eof(ts)

    def _remember(self, seq: int, payload: bytes) -> None:
        # a ring of the last _RECENT segments (no list growth or shifting per packet)
        i = self.recent_i
        self.recent[i] = (seq, payload)
        self.recent_i = (i + 1) % _RECENT

    def _check_overlap(self, seq: int, payload: bytes) -> None:
        for rseq, rdata in self.recent:
            d = (seq - rseq) & MASK
            if rdata and d < len(rdata):
                common = min(len(rdata) - d, len(payload))
                if rdata[d:d + common] != payload[:common]:
                    self.stats.inconsistent_overlaps += 1
                return

    def _drain(self, ts: float) -> None:
        """Deliver held segments that are now in order (or overlap the edge)."""
        held = self.held
        while held:
            nxt = self.next
            seg = held.pop(nxt, None)
            if seg is not None:
                self._release(len(seg))
                self.next = (nxt + len(seg)) & MASK
                self._remember(nxt, seg)
                self.consumer.data(ts, seg)
                continue
            # a held segment that starts before `next` (overlap) is trimmed
            best = None
            for s in held:
                if (s - nxt) & MASK >= HALF:
                    best = s
                    break
            if best is None:
                break
            seg = held.pop(best)
            self._release(len(seg))
            behind = (nxt - best) & MASK
            if behind < len(seg):
                held[nxt] = seg[behind:]
                self.held_bytes += len(seg) - behind
                self.stats.held_bytes += len(seg) - behind
            else:
                self.stats.retransmits += 1
        if held:
            self.held_since = ts

    def _release(self, n: int) -> None:
        self.held_bytes -= n
        self.stats.held_bytes -= n

    def skip_gap(self, ts: float) -> None:
        """Give up on the hole before the earliest held segment and carry on after it."""
        held = self.held
        if not held:
            return
        nxt = self.next
        first = min(held, key=lambda s: (s - nxt) & MASK)
        missing = (first - nxt) & MASK
        if missing and missing < HALF:
            self.stats.gaps += 1
            self.stats.gap_bytes += missing
            self.consumer.gap(ts, missing)
            self.next = first
        self._drain(ts)
        if self.fin is not None and self.next == self.fin and not self.held:
            self.done = True
            self.consumer.eof(ts)

    def acked(self, ts: float, ack: int) -> None:
        """The peer acknowledged up to `ack`.  If that covers the hole before our held
        segments, the peer received bytes the capture lost: skip the hole now rather
        than wait (so pairing with the other direction stays in step)."""
        if self.next is not None and 0 < (ack - self.next) & MASK < HALF:
            self.skip_gap(ts)

    def close(self, ts: float) -> None:
        """The connection is over (RST, idle, eviction): flush what is held, then EOF."""
        if self.done:
            return
        while self.held:
            self.skip_gap(ts)
            if self.done:
                return
        if self.fin is not None and self.next is not None and self.fin != self.next:
            missing = (self.fin - self.next) & MASK
            if missing < HALF:
                self.stats.gaps += 1
                self.stats.gap_bytes += missing
                self.consumer.gap(ts, missing)
        self.done = True
        self.consumer.eof(ts)

