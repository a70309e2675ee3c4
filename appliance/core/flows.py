"""The flow table: one entry per TCP connection, least recently active first.

A :class:`Flow` is one connection: its two :class:`~appliance.core.tcp.TcpStream`
directions feeding one :class:`~appliance.core.http.session.HttpSession`, and the
:class:`~appliance.core.stream.Acct` they share.  Both directions share the entry,
keyed by the canonically ordered endpoints plus the VNI (direction 0 is the endpoint
that sorts first), so the table shards across worker processes with no cross-talk as
long as both directions reach the same worker (the runtime's kernel hash ensures it).

:class:`FlowTable` keeps the flows in least-recently-active order and enforces the
limits by eviction from the front: idle connections (packet time), the connection
cap, and the byte budget.  ``held`` is every byte the flows hold plus a fixed cost per
open flow, kept up to date per packet, so reading it is O(1).  Evicted connections
are closed the ordinary way: what they held goes out (unanswered requests as pending).
"""

from __future__ import annotations

from collections import OrderedDict

from appliance.core.http.session import HttpSession, HttpStats, SessionConfig
from appliance.core.pair import Pair
from appliance.core.stream import COMPILED, Acct
from appliance.core.tcp import ACK, FIN, MASK, RST, SYN, TcpConfig, TcpStats, TcpStream

# What one open connection costs with nothing buffered: the Flow, its two streams, the
# session with its two parsers, the request deque, the table entry and the key (measured
# with tracemalloc; tests/test_accounting.py keeps it honest for both builds: compiled
# objects keep their fields as C values, and are smaller)
FLOW_OVERHEAD = 2900 if COMPILED else 3200
SHED_SLACK = 16  # the budget sheds down to budget - budget/16
LRU_PROBE = 64  # least-recently-active evictions before looking for the largest holders


def _held_by(flow: Flow) -> int:
    return flow.acct.n

FlowKey = tuple[int, bytes, int, bytes, int]  # (vni, ip a, port a, ip b, port b), a < b


class Flow:
    __slots__ = ("key", "table", "acct", "tcp", "session", "last", "pkts", "ended")

    def __init__(self, key: FlowKey, table: FlowTable, ts: float) -> None:
        self.key = key
        self.table = table
        self.acct = acct = Acct()
        self.session = session = HttpSession(table.session_cfg, table.http_stats, self.emit, acct)
        t0 = TcpStream(0, session, table.tcp_stats, table.tcp_cfg, acct)
        t1 = TcpStream(1, session, table.tcp_stats, table.tcp_cfg, acct)
        t0.peer = t1
        t1.peer = t0
        self.tcp = (t0, t1)
        self.last = ts
        self.pkts = 0
        self.ended = False  # FIN or RST seen: a SYN on this 4-tuple starts a new connection

    def emit(self, pair: Pair) -> None:
        vni, a, ap, b, bp = self.key
        if self.session.client == 1:
            a, ap, b, bp = b, bp, a, ap
        pair.client_ip = a
        pair.client_port = ap
        pair.server_ip = b
        pair.server_port = bp
        pair.vni = vni
        self.table.emitted(self, pair)

    def close(self, ts: float) -> None:
        """The connection is over: flush both directions (the client's first, so that a
        response waiting for its request can pair), then the session."""
        client = self.session.client
        first = client if client >= 0 else 0
        t = self.tcp
        t[first].close(ts)
        t[1 - first].close(ts)
        self.session.close()

    def done(self) -> bool:
        t0, t1 = self.tcp
        return t0.done and t1.done

    def release(self) -> None:
        """Unlink the parts of a connection that is over (its streams point at each
        other, its session and parsers too), so that reference counting frees it at once
        rather than the cyclic garbage collector, whose passes over every open connection
        cost about a tenth of the core's time when it has cycles to find."""
        t0, t1 = self.tcp
        t0.peer = None
        t1.peer = None
        self.session.detach()


class FlowTable:
    def __init__(self, session_cfg: SessionConfig, tcp_cfg: TcpConfig, max_flows: int,
                 budget: int, idle_timeout: float) -> None:
        self.session_cfg = session_cfg
        self.tcp_cfg = tcp_cfg
        self.http_stats = HttpStats()
        self.tcp_stats = TcpStats()
        self.max_flows = max_flows
        self.budget = budget  # bytes the flows may hold
        self.idle_timeout = idle_timeout
        self.flows: OrderedDict[FlowKey, Flow] = OrderedDict()
        self.holey: set[Flow] = set()  # flows with held segments (checked on packet time)
        self.held = 0  # bytes held by the flows' streams and sessions (sum of their Acct)
        self.out: list[Pair] = []  # pairs emitted, not taken yet
        self.out_bytes = 0
        self.opened = 0
        self.evicted: dict[str, int] = {"idle": 0, "connection_limit": 0, "buffer_limit": 0}
        self.vni_pairs: dict[int, int] = {}

    # -- packets ----------------------------------------------------------------------------
    def segment(self, ts: float, vni: int, src: bytes, dst: bytes, sport: int, dport: int,
                seq: int, ack: int, flags: int, payload: bytes) -> None:
        if src < dst or (src == dst and sport < dport):
            key = (vni, src, sport, dst, dport)
            d = 0
        else:
            key = (vni, dst, dport, src, sport)
            d = 1
        flows = self.flows
        flow = flows.get(key)
        if flow is None:
            if flags & RST or not (payload or flags & SYN):
                return  # a pure ACK, FIN or RST of a connection we do not know
            flow = self._open(key, ts)
        else:
            flows.move_to_end(key)
            if flags & (SYN | ACK) == SYN and self._new_connection(flow, d, seq):
                self.close(flow, ts)
                flow = self._open(key, ts)
        acct = flow.acct
        before = acct.n
        try:  # Flow.segment, inlined: this runs for every packet
            flow.pkts += 1
            pkt = flow.pkts
            flow.last = ts
            t = flow.tcp[d]
            if flags & ACK:
                t.note_ack(ack)
            else:
                ack = -1
            if flags & (FIN | RST):
                flow.ended = True
            t.segment(ts, pkt, seq, ack, flags & ~RST, payload)
            other = flow.tcp[1 - d]
            if other.held_offs or other.pre is not None:
                other.check(ts, pkt)
        except Exception:
            self._forget(flow, before)  # the caller counts and logs it
            raise
        if flags & RST:
            self.held += acct.n - before
            self.close(flow, ts)
            return
        t0, t1 = flow.tcp
        if t0.held_offs or t1.held_offs or t0.pre is not None or t1.pre is not None:
            self.holey.add(flow)
        elif flow in self.holey:
            self.holey.discard(flow)
        self.held += acct.n - before
        if t0.done and t1.done:
            self.close(flow, ts)
        if self.held + len(flows) * FLOW_OVERHEAD > self.budget:
            # a little below the budget, so that a table at its budget sheds in batches
            self.shed(self.budget - self.budget // SHED_SLACK, ts, "buffer_limit", flow)

    def _new_connection(self, flow: Flow, d: int, seq: int) -> bool:
        """A SYN on a known 4-tuple: a retransmission, or the late SYN of a direction first
        seen mid-way (mirrors reorder), joins the connection; any other SYN starts a new
        connection on the reused 4-tuple."""
        t = flow.tcp[d]
        if t.base < 0:
            return False  # the SYN fixes the start of this direction
        start = (seq + 1) & MASK
        if start == t.base:
            return False  # a retransmitted SYN
        if flow.ended or t.from_syn:
            return True
        behind = (t.base - start) & MASK
        return not 0 < behind < LATE_SYN_WINDOW

    def _open(self, key: FlowKey, ts: float) -> Flow:
        flows = self.flows
        if len(flows) >= self.max_flows:
            self.evicted["connection_limit"] += 1
            self.close(next(iter(flows.values())), ts)
        flow = flows[key] = Flow(key, self, ts)
        self.opened += 1
        return flow

    def close(self, flow: Flow, ts: float) -> None:
        if self.flows.get(flow.key) is not flow:
            return
        acct = flow.acct
        before = acct.n
        try:
            flow.close(ts)
        except Exception:
            self._forget(flow, before)
            raise
        self.held += acct.n - before
        # what is left is what the accounting could not see released: keep it honest
        self.held -= acct.n
        acct.n = 0
        del self.flows[flow.key]
        self.holey.discard(flow)
        flow.release()

    def _forget(self, flow: Flow, accounted: int) -> None:
        """Drop a flow that failed, without flushing it (its state cannot be trusted);
        ``accounted`` is what ``held`` counts for it."""
        self.held -= accounted
        if self.flows.get(flow.key) is flow:
            del self.flows[flow.key]
        self.holey.discard(flow)
        flow.release()

    def emitted(self, flow: Flow, pair: Pair) -> None:
        self.out.append(pair)
        self.out_bytes += pair.mem()
        vni = pair.vni
        self.vni_pairs[vni] = self.vni_pairs.get(vni, 0) + 1

    # -- time and memory --------------------------------------------------------------------
    def sweep(self, now: float) -> None:
        """Flush idle connections and give held segments their packet-time deadlines."""
        flows = self.flows
        limit = now - self.idle_timeout
        while flows:
            flow = next(iter(flows.values()))
            if flow.last > limit:
                break
            self.evicted["idle"] += 1
            self.close(flow, now)
        for flow in list(self.holey):
            acct = flow.acct
            before = acct.n
            for t in flow.tcp:
                if t.held_offs or t.pre is not None:
                    t.check(now, flow.pkts)
            self.held += acct.n - before
            t0, t1 = flow.tcp
            if not (t0.held_offs or t1.held_offs or t0.pre is not None or t1.pre is not None):
                self.holey.discard(flow)
        self.enforce_budget(now)

    def bytes_held(self) -> int:
        return self.held + len(self.flows) * FLOW_OVERHEAD

    def enforce_budget(self, now: float) -> None:
        if self.bytes_held() > self.budget:
            self.shed(self.budget - self.budget // SHED_SLACK, now, "buffer_limit")

    def shed(self, target: int, now: float, reason: str = "memory",
             hint: Flow | None = None) -> int:
        """Evict until ``bytes_held() <= target``.  ``hint`` (the connection whose packet
        crossed the budget) goes first when it holds a large share of the excess: one
        connection can dominate (a pipelining flood, an upload).  Then the least recently
        active go, one by one; only when that frees little (the bytes are held further
        back), the connections holding the most are looked for, once.  So a table at its
        budget pays O(evicted), not O(connections), per shed.  Returns how many."""
        flows = self.flows
        evicted = 0
        excess = self.bytes_held() - target
        if excess <= 0:
            return 0
        if hint is not None and hint.acct.n > excess // 4 and flows.get(hint.key) is hint:
            self.close(hint, now)
            evicted += 1
        while flows and self.bytes_held() > target and evicted < LRU_PROBE:
            self.close(next(iter(flows.values())), now)
            evicted += 1
        if flows and self.bytes_held() > target:
            excess = self.bytes_held() - target
            big = [f for f in flows.values() if f.acct.n > excess // 4]
            big.sort(key=_held_by, reverse=True)
            for flow in big:
                if self.bytes_held() <= target:
                    break
                self.close(flow, now)
                evicted += 1
            while flows and self.bytes_held() > target:
                self.close(next(iter(flows.values())), now)
                evicted += 1
        self.evicted[reason] = self.evicted.get(reason, 0) + evicted
        return evicted

    def close_all(self, now: float) -> None:
        flows = self.flows
        while flows:
            self.close(next(iter(flows.values())), now)

    def take(self) -> list[Pair]:
        out = self.out
        self.out = []
        self.out_bytes = 0
        return out


LATE_SYN_WINDOW = 1 << 20  # a SYN this close before a mid-way start is that connection's
__all__ = ["Flow", "FlowTable", "FLOW_OVERHEAD"]
