"""The mirroring front end, sans-IO: captured frames in, pairs out.

``Pipeline.feed(ts, linktype, frame)`` takes one captured frame with its capture timestamp;
the batch API takes whole buffers, so that Python runs per batch, not per packet:
``feed_batch(linktype, buf, meta)`` a pcapy-ng ``next_batch`` result (a capture file, a
libpcap handle), ``feed_datagrams(ts, linktype, buf, size, lens)`` a ``recvmmsg`` buffer
(the VXLAN/GENEVE socket); decode -> flow table -> TCP stream assembly ->
HTTP session turn them into :class:`~appliance.core.pair.Pair` objects, which
accumulate until ``take()``.  Time only ever comes from packet timestamps, so a
replayed capture behaves exactly like live traffic (the runtime calls ``sweep`` with
the wall clock when no packets arrive).

Failures are contained at the flow boundary: an exception while handling one
connection's packet drops that connection (``flow_errors``) and keeps its first
traceback per exception type in ``errors`` for the runtime to log; the pipeline lives.

Memory: ``buffered()`` is every byte the core holds (out-of-order segments, parser
buffers, messages, requests waiting for responses, per-connection overhead, pairs not
taken yet), O(1).  The byte budget evicts connections when it is exceeded, and
``shed(target)`` lets the runtime bring it under a lower target on memory pressure.
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from appliance.core.decode import Decoder
from appliance.core.flows import FLOW_OVERHEAD, FlowKey, FlowTable
from appliance.core.http.parser import DEFAULT_METHODS, ParserConfig
from appliance.core.http.session import SessionConfig
from appliance.core.pair import Pair
from appliance.core.tcp import TcpConfig


@dataclass
class PipelineConfig:
    max_body: int = 1 << 20  # body bytes kept per message
    idle_timeout: float = 60.0  # seconds of packet time before an idle connection is flushed
    max_connections: int = 100_000
    buffer_limit: int = 400 << 20  # bytes held by the core, all connections
    max_held_per_direction: int = 1 << 20  # out-of-order bytes held per direction
    max_held_segments: int = 4096  # out-of-order segments held per direction
    grace_packets: int = 4  # a hole waits this many packets of its connection ...
    grace_time: float = 0.05  # ... and this much packet time after evidence of loss
    gap_timeout: float = 2.0  # packet-time seconds a hole without evidence may stay open
    max_outstanding: int = 128  # unanswered requests kept per connection
    methods: tuple[str, ...] = DEFAULT_METHODS  # methods that make a connection HTTP
    vxlan_port: int = 4789
    geneve_port: int = 6081
    sweep_interval: float = 1.0
    ignored_ports: frozenset[int] = field(default_factory=frozenset)  # not reassembled


class Pipeline:
    def __init__(self, config: PipelineConfig | None = None) -> None:
        self.cfg = cfg = config or PipelineConfig()
        self.decoder = Decoder(cfg.vxlan_port, cfg.geneve_port)
        session_cfg = SessionConfig(ParserConfig(max_body=cfg.max_body, methods=cfg.methods),
                                    max_outstanding=cfg.max_outstanding, ack_evidence=True)
        tcp_cfg = TcpConfig(cfg.max_held_per_direction, cfg.max_held_segments,
                            cfg.grace_packets, cfg.grace_time, cfg.gap_timeout)
        self.table = FlowTable(session_cfg, tcp_cfg, cfg.max_connections, cfg.buffer_limit,
                               cfg.idle_timeout)
        self.packets = 0
        self.bytes = 0
        self.tcp_packets = 0
        self.vni_stats: dict[int, list[int]] = {}  # vni -> [packets, bytes]
        self.drops: dict[str, int] = {}  # packets dropped on purpose, by reason
        self.flow_errors = 0
        self.errors: dict[str, str] = {}  # exception type -> its first traceback
        self._ignored = cfg.ignored_ports
        self.next_sweep = 0.0
        self.last_ts = 0.0

    # -- input --------------------------------------------------------------------------------
    def feed(self, ts: float, linktype: int, frame: bytes) -> None:
        self.packets += 1
        self.bytes += len(frame)
        r = self.decoder.decode(ts, linktype, frame)
        if r is not None:
            self._tcp(ts, r, len(frame))
        if ts >= self.next_sweep:
            self.sweep(ts)

    def feed_batch(self, linktype: int, buf: bytes, meta: bytes) -> None:
        """Frames in pcapy-ng ``next_batch`` layout: ``meta`` holds native uint32
        (sec, usec, offset, caplen) per frame, slicing ``buf``."""
        m = memoryview(meta).cast("I")
        decoder = self.decoder
        nbytes = 0
        count = len(m) // 4
        next_sweep = self.next_sweep
        for i in range(0, count * 4, 4):
            off = m[i + 2]
            cap = m[i + 3]
            ts = m[i] + m[i + 1] * 1e-6
            nbytes += cap
            r = decoder.decode_at(ts, linktype, buf, off, off + cap)
            if r is not None:
                self._tcp(ts, r, cap)
            if ts >= next_sweep:
                self.sweep(ts)
                next_sweep = self.next_sweep
        self.packets += count
        self.bytes += nbytes

    def feed_datagrams(self, ts: float, linktype: int, buf: Any, size: int,
                       lens: Sequence[int]) -> None:
        """Datagrams as ``recvmmsg(2)`` leaves them, all received at ``ts``: datagram ``i``
        is ``buf[i * size : i * size + lens[i]]``.  ``buf`` is any buffer (the receive
        buffer itself, e.g. a ctypes array); ``lens`` any sequence of ints (e.g. a
        memoryview of the ``msg_len`` fields), so nothing is built per datagram before
        this call.  Each datagram is copied once, out of a buffer the next receive reuses
        (its payload outlives it: held segments, bodies)."""
        view = memoryview(buf).cast("B")
        decoder = self.decoder
        count = len(lens)
        nbytes = 0
        next_sweep = self.next_sweep
        for i in range(count):
            n = lens[i]
            off = i * size
            nbytes += n
            r = decoder.decode(ts, linktype, bytes(view[off:off + n]))
            if r is not None:
                self._tcp(ts, r, n)
            if ts >= next_sweep:
                self.sweep(ts)
                next_sweep = self.next_sweep
        self.packets += count
        self.bytes += nbytes

    def _tcp(self, ts: float, r: tuple[int, bytes, bytes, int, int, int, int, int, bytes],
             wire_len: int) -> None:
        vni, src, dst, sport, dport, seq, ack, flags, payload = r
        self.tcp_packets += 1
        if self._ignored and (sport in self._ignored or dport in self._ignored):
            self.drops["ignored_port"] = self.drops.get("ignored_port", 0) + 1
            return
        vs = self.vni_stats.get(vni)
        if vs is None:
            vs = self.vni_stats[vni] = [0, 0]
        vs[0] += 1
        vs[1] += wire_len
        try:
            self.table.segment(ts, vni, src, dst, sport, dport, seq, ack, flags, payload)
        except Exception as exc:  # contain it: one connection is lost, not the worker
            self._flow_error(exc)

    def _flow_error(self, exc: Exception) -> None:
        """One connection failed (the flow table already dropped it): count it and keep
        the first traceback of each exception type for the runtime to log."""
        self.flow_errors += 1
        name = type(exc).__name__
        if name not in self.errors:
            self.errors[name] = "".join(traceback.format_exception(exc))

    # -- time and memory ----------------------------------------------------------------------
    def sweep(self, now: float) -> None:
        """Flush idle connections, resolve held segments on packet time, expire fragments
        and enforce the byte budget."""
        self.next_sweep = now + self.cfg.sweep_interval
        if now > self.last_ts:
            self.last_ts = now
        try:
            self.table.sweep(now)
        except Exception as exc:
            self._flow_error(exc)
        self.decoder.frags.expire(now)

    def buffered(self) -> int:
        """Every byte the core holds, O(1)."""
        t = self.table
        return t.bytes_held() + t.out_bytes + self.decoder.frags.bytes

    def shed(self, target_bytes: int) -> int:
        """Evict connections until ``buffered() <= target_bytes`` (see FlowTable.shed: least
        recently active first, a connection holding a large share of the excess before
        them); a target of 0 or less evicts every connection.  What they held is emitted
        (pending requests as unanswered pairs).  Returns how many were evicted (counted
        as evicted "memory")."""
        t = self.table
        extra = t.out_bytes + self.decoder.frags.bytes
        return t.shed(max(0, target_bytes - extra), self.last_ts, "memory")

    def close(self) -> None:
        """End of input: flush every connection."""
        self.table.close_all(self.last_ts)

    def take(self) -> list[Pair]:
        return self.table.take()

    @property
    def out(self) -> list[Pair]:
        return self.table.out

    @property
    def conns(self) -> dict[FlowKey, object]:
        return self.table.flows  # type: ignore[return-value]

    # -- statistics -----------------------------------------------------------------------------
    def vni_figures(self) -> dict[int, list[int]]:
        """Per VNI (mirror session): [packets, bytes, pairs]."""
        pairs = self.table.vni_pairs
        return {vni: [v[0], v[1], pairs.get(vni, 0)] for vni, v in self.vni_stats.items()}

    def stats(self) -> dict[str, object]:
        t = self.table
        h = t.http_stats
        tcp = t.tcp_stats
        d = self.decoder.counts
        return {
            "packets": self.packets,
            "bytes": self.bytes,
            "tcp_packets": self.tcp_packets,
            "connections": t.opened,
            "active_connections": len(t.flows),
            **h.figures(),
            "waited_for_request": h.waits,
            "malformed": d.get("malformed", 0),
            "gaps": tcp.gaps,
            "gap_bytes": tcp.gap_bytes,
            "retransmits": tcp.retransmits,
            "inconsistent_overlaps": tcp.inconsistent_overlaps,
            "out_of_order_segments": tcp.ooo_segments,
            "held_cap_skips": tcp.held_cap_skips,
            "discarded_before_start": tcp.discarded_before_start,
            "late_syns": tcp.late_syns,
            "midstream_directions": tcp.midstream,
            "flow_errors": self.flow_errors,
            "buffered_bytes": self.buffered(),
            "evicted": dict(t.evicted),
            "drops": dict(self.drops),
            "decode": dict(d),
        }


__all__ = ["Pipeline", "PipelineConfig", "Pair", "FLOW_OVERHEAD"]
