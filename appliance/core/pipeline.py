"""The sans-IO pipeline: packets in, pair records out.

``Pipeline.feed(ts, linktype, frame)`` / ``feed_batch(linktype, buf, meta)`` take
captured frames with their capture timestamps; finished pair records accumulate in
``Pipeline.out`` (take them with ``take()``).  Time only ever comes from packet
timestamps, so a replayed capture behaves exactly like live traffic.

The connection table is an ``OrderedDict`` in least-recently-active order: idle
connections are flushed from its front on packet time, and the connection limit and
the buffer budget evict from its front too (emitting what those connections held).
Both directions of a connection share one entry, keyed by the canonically ordered
endpoints plus the VNI, so the table shards across worker processes with no
cross-talk as long as both directions reach the same worker: the runtime ensures that
with a symmetric hash in the kernel (runtime/sources.py).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from appliance.core.decode import Decoder, TCP_RST, TCP_SYN, TCP_ACK
from appliance.core.http import HttpConn, HttpStats
from appliance.core.record import build_record
from appliance.core.tcp import HALF, MASK, TcpHalf, TcpStats


@dataclass
class PipelineConfig:
    source: str = "PCAP"  # "MIRRORING" for live traffic
    account_id: str = "1000000"
    max_body: int = 1 << 20  # decoded body cap per message (bytes)
    idle_timeout: float = 60.0  # seconds of packet time before an idle connection is flushed
    max_connections: int = 100_000
    buffer_limit: int = 400 << 20  # total reassembly/body bytes held, all connections
    max_held_per_direction: int = 1 << 20  # out-of-order bytes held per direction
    gap_timeout: float = 2.0  # packet-time seconds a hole may stay open before it is skipped
    vxlan_port: int = 4789
    geneve_port: int = 6081
    sweep_interval: float = 1.0
    pair_filter: object = None  # callable(req, resp, client_ip, server_ip) -> reason | None
    ignored_ports: frozenset = frozenset()  # TCP ports whose packets are not reassembled


class Conn(HttpConn):
    __slots__ = ("key", "tcp", "last")

    def __init__(self, key, ts: float, emit, cfg: PipelineConfig, http_stats, tcp_stats):
        HttpConn.__init__(self, emit, cfg.max_body, http_stats)
        self.key = key
        self.last = ts
        h0, h1 = self.halves
        self.tcp = (TcpHalf(h0, tcp_stats, cfg.max_held_per_direction, cfg.gap_timeout),
                    TcpHalf(h1, tcp_stats, cfg.max_held_per_direction, cfg.gap_timeout))

    def buffered(self) -> int:
        t0, t1 = self.tcp
        return HttpConn.buffered(self) + t0.held_bytes + t1.held_bytes

    def peer_lagging(self, direction: int) -> bool:
        ack, nxt = self.tcp[direction].last_ack, self.tcp[1 - direction].next
        return ack is not None and nxt is not None and 0 < (ack - nxt) & MASK < HALF


class Pipeline:
    def __init__(self, config: PipelineConfig | None = None):
        self.cfg = cfg = config or PipelineConfig()
        self.decoder = Decoder(cfg.vxlan_port, cfg.geneve_port)
        self.tcp_stats = TcpStats()
        self.http_stats = HttpStats()
        self.conns: OrderedDict = OrderedDict()
        self.out: list[dict] = []
        self.packets = 0
        self.bytes = 0
        self.tcp_packets = 0
        self.connections = 0
        self.evicted = {"idle": 0, "connection_limit": 0, "buffer_limit": 0}
        self.vni_stats: dict[int, list] = {}  # vni -> [packets, bytes, pairs]
        self.anomalies: dict[str, int] = {}  # record anomaly token -> count
        self.drops: dict[str, int] = {}  # pairs or packets dropped on purpose, by reason
        self._ignored = self.cfg.ignored_ports
        self.next_sweep = 0.0
        self.last_ts = 0.0
        self.last_buffered = 0  # buffered bytes at the last measurement
        self._emit = self._emit_pair

    # -- input --------------------------------------------------------------------------
    def feed(self, ts: float, linktype: int, frame: bytes) -> None:
        self.packets += 1
        self.bytes += len(frame)
        r = self.decoder.decode(ts, linktype, frame)
        if r is not None:
            self._tcp(ts, r, len(frame))
        if ts >= self.next_sweep:
            self.sweep(ts)

    def feed_batch(self, linktype: int, buf: bytes, meta) -> None:
        """Frames in pcapy-ng ``next_batch`` layout: ``meta`` holds native uint32
        (sec, usec, offset, caplen) per frame, slicing ``buf``."""
        m = memoryview(meta).cast("I")
        decode = self.decoder.decode
        tcp = self._tcp
        nbytes = 0
        count = len(m) // 4
        ts = self.last_ts
        next_sweep = self.next_sweep
        for i in range(0, count * 4, 4):
            off = m[i + 2]
            cap = m[i + 3]
            ts = m[i] + m[i + 1] * 1e-6
            nbytes += cap
            r = decode(ts, linktype, buf[off:off + cap])
            if r is not None:
                tcp(ts, r, cap)
            if ts >= next_sweep:
                self.sweep(ts)
                next_sweep = self.next_sweep
        self.packets += count
        self.bytes += nbytes

    def _tcp(self, ts: float, r, wire_len: int) -> None:
        vni, src, dst, sport, dport, seq, ack, flags, payload = r
        self.tcp_packets += 1
        if self._ignored and (sport in self._ignored or dport in self._ignored):
            self.drops["ignored_port"] = self.drops.get("ignored_port", 0) + 1
            return
        vs = self.vni_stats.get(vni)
        if vs is None:
            vs = self.vni_stats[vni] = [0, 0, 0]
        vs[0] += 1
        vs[1] += wire_len
        if src < dst or (src == dst and sport < dport):
            key = (vni, src, sport, dst, dport)
            d = 0
        else:
            key = (vni, dst, dport, src, sport)
            d = 1
        conns = self.conns
        conn = conns.get(key)
        if conn is None:
            if flags & TCP_RST or not (payload or flags & TCP_SYN):
                return  # nothing to reassemble yet (pure ACK / FIN / RST of an unknown flow)
            conn = self._open(key, ts)
        else:
            conns.move_to_end(key)
            if flags & (TCP_SYN | TCP_ACK) == TCP_SYN:
                half = conn.tcp[d]
                if half.next is not None and (seq + 1) & MASK != half.next:
                    # a new connection on a reused 4-tuple: finish the old one first
                    self._close(key, conn, ts)
                    conn = self._open(key, ts)
        conn.last = ts
        if flags & TCP_RST:
            # data on a RST segment is delivered first, then the connection ends
            if payload:
                conn.tcp[d].segment(ts, seq, flags & ~TCP_RST, payload)
            self._close(key, conn, ts)
            return
        half = conn.tcp[d]
        if flags & TCP_ACK:
            half.last_ack = ack
            other = conn.tcp[1 - d]
            if other.held:
                other.acked(ts, ack)
        half.segment(ts, seq, flags, payload)
        if conn.closed == 3:
            self._close(key, conn, ts)

    def _open(self, key, ts: float) -> Conn:
        conns = self.conns
        if len(conns) >= self.cfg.max_connections:
            old_key, old = next(iter(conns.items()))
            self.evicted["connection_limit"] += 1
            self._close(old_key, old, ts)
        conn = conns[key] = Conn(key, ts, self._emit, self.cfg, self.http_stats, self.tcp_stats)
        self.connections += 1
        return conn

    def _close(self, key, conn: Conn, ts: float) -> None:
        # the client side first: responses held back for their request can then pair
        client = conn.client if conn.client >= 0 else 0
        conn.tcp[client].close(ts)
        conn.tcp[1 - client].close(ts)
        conn.finish()
        if self.conns.get(key) is conn:
            del self.conns[key]

    def _emit_pair(self, conn: Conn, req, resp) -> None:
        vni, a, ap, b, bp = conn.key
        if conn.client == 1:
            a, ap, b, bp = b, bp, a, ap
        cfg = self.cfg
        if cfg.pair_filter is not None:
            reason = cfg.pair_filter(req, resp, a, b)
            if reason is not None:
                self.drops[reason] = self.drops.get(reason, 0) + 1
                return
        rec = build_record(req, resp, a, ap, b, bp, vni, cfg.source, cfg.account_id,
                           cfg.max_body)
        anomalies = rec.get("anomalies")
        if anomalies:
            counts = self.anomalies
            for token in anomalies.split(","):
                counts[token] = counts.get(token, 0) + 1
        self.out.append(rec)
        vs = self.vni_stats.get(vni)
        if vs is not None:
            vs[2] += 1

    # -- time and memory ------------------------------------------------------------------
    def sweep(self, now: float) -> None:
        """Flush idle connections, expire fragments and enforce the buffer budget."""
        self.next_sweep = now + self.cfg.sweep_interval
        self.last_ts = now
        conns = self.conns
        limit = now - self.cfg.idle_timeout
        while conns:
            key, conn = next(iter(conns.items()))
            if conn.last > limit:
                break
            self.evicted["idle"] += 1
            self._close(key, conn, now)
        self.decoder.frags.expire(now)
        # Body bytes only grow between sweeps, so the total can exceed the budget only
        # if the last measured total plus the growth since does: measure only then.
        budget = self.cfg.buffer_limit
        h = self.http_stats
        if self.last_buffered + h.stored_growth + self.tcp_stats.held_bytes > budget:
            total = self.buffered()
            while conns and total > budget:
                key, conn = next(iter(conns.items()))
                total -= conn.buffered()
                self.evicted["buffer_limit"] += 1
                self._close(key, conn, now)
            self.last_buffered = total
            h.stored_growth = 0

    def buffered(self) -> int:
        return sum(c.buffered() for c in self.conns.values())

    def shed(self, target_bytes: int) -> int:
        """Evict least-recently-active connections until what they hold (buffered()) is
        at most `target_bytes`; when one connection holds more than half of it, that one
        goes first; a target of 0 or less evicts every connection.  What they held is
        emitted (pending requests as unanswered pairs).  Returns the number evicted
        (counted as evicted "memory")."""
        conns = self.conns
        sizes = {key: conn.buffered() for key, conn in conns.items()}
        total = sum(sizes.values())
        evicted = 0
        if sizes and total > max(target_bytes, 0):
            key = max(sizes, key=sizes.__getitem__)
            if sizes[key] * 2 > total:
                total -= sizes[key]
                evicted += 1
                self._close(key, conns[key], self.last_ts)
        while conns and (total > target_bytes or target_bytes <= 0):
            key, conn = next(iter(conns.items()))
            total -= sizes.get(key, 0)
            evicted += 1
            self._close(key, conn, self.last_ts)
        if evicted:
            self.evicted["memory"] = self.evicted.get("memory", 0) + evicted
        return evicted

    def close(self) -> None:
        """End of input: flush every connection."""
        conns = self.conns
        while conns:
            key, conn = next(iter(conns.items()))
            self._close(key, conn, self.last_ts)

    def take(self) -> list[dict]:
        out = self.out
        self.out = []
        return out

    # -- statistics ---------------------------------------------------------------------
    def stats(self) -> dict:
        h = self.http_stats
        t = self.tcp_stats
        d = self.decoder.counts
        return {
            "packets": self.packets,
            "bytes": self.bytes,
            "tcp_packets": self.tcp_packets,
            "connections": self.connections,
            "active_connections": len(self.conns),
            "pairs": h.pairs,
            "pending": h.pending,
            "requests": h.requests,
            "responses": h.responses,
            "orphan_responses": h.orphan_responses,
            "interim_responses": h.interim,
            "resyncs": h.resyncs,
            "bad_messages": h.bad_messages,
            "tunnels": h.tunnels,
            "malformed": d.get("malformed", 0),
            "gaps": t.gaps,
            "gap_bytes": t.gap_bytes,
            "retransmits": t.retransmits,
            "inconsistent_overlaps": t.inconsistent_overlaps,
            "out_of_order_segments": t.ooo_segments,
            "decode_errors": sum(v for k, v in self.anomalies.items() if k.endswith("decode_error")),
            "anomalies": dict(self.anomalies),
            "evicted": dict(self.evicted),
            "drops": dict(self.drops),
            "decode": dict(d),
        }
