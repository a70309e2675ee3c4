"""The eBPF front end, sans-IO: decoded ring-buffer events in, pairs out.

It is to socket events what :class:`appliance.core.pipeline.Pipeline` is to captured
frames, with the same interface for the runtime (``take``, ``buffered``, ``shed``,
``sweep``, ``close``, ``stats``, ``errors``, ``last_ts``, ``cfg``), so the worker, its
memory guard and the formatter work unchanged:

    events ──► ConnectionTracker (streams.py: offsets, gaps, eof per connection)
           ──► one HttpSession per connection (the core's, pairing by order: a socket
               stream is in true order, SessionConfig.ack_evidence False)
           ──► Pair, with the process's real addresses and ports, and a SideInfo (Akto's
               ``direction`` and the pod's labels as ``tag``) in ``Pair.meta``

A connection is keyed by (pid, fd, generation) in the kernel (``ConnKey``).  Its role
comes from ``accept``/``connect``; a connection first seen mid-way gets its client side
from the content (the session decides it) and starts with ``gap(d, 0, UNKNOWN)``.

**Both ends on this node.**  When a client and its server are both traced, the exchange
is seen twice.  The server-side view is kept and the client-side view's pairs are
dropped (counted as ``duplicate_client_view``): a client view is a duplicate of a server
view with the same *client endpoint* (address and port, plus the network namespace for
loopback addresses, which exist in every namespace) that was accepted around the time
the client connected and was still open, or had just closed, when the client's
connection began.  The client endpoint is compared rather than the whole 4-tuple because
a service address translated on the way (kube-proxy DNAT) changes the server's address
and port in the client's view, never the client's.  The kernel puts both views in the
same worker (the ring is chosen by a hash of the client endpoint).  The decision is made
when a pair comes out, not when the connection opens: the client's ``connect`` may be
seen before the server's ``accept``.

**Idleness.**  A connection idle for ``idle_timeout`` that holds something (a request
without its response, a partial message) is ended: what it held goes out (unanswered
requests as pending pairs), and bytes that follow start a new stream mid-way.  An idle
connection holding nothing costs only its overhead and stays, as long as the kernel
still traces it (``alive``), so that a keep-alive connection used every few minutes is
not cut into mid-way streams; ``TRAFFIC_MAX_ACTIVE_CONN`` and the byte budget still evict
the least recently active first.

**Memory.**  ``buffered()`` is every byte the sessions hold (their ``Acct``), a fixed cost
per tracked connection and the pairs not taken yet, kept up to date per event (O(1)).
"""

from __future__ import annotations

import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from appliance.core.http.parser import ParserConfig
from appliance.core.http.session import HttpSession, HttpStats, SessionConfig
from appliance.core.pair import Pair
from appliance.core.pipeline import PipelineConfig
from appliance.core.stream import Acct
from appliance.ebpf.events import (ConnKey, ConnOpen, Data, Direction, Event, ProcExit, Role,
                                   Truncated)
from appliance.ebpf.k8s import PodInfo
from appliance.ebpf.streams import Connection, ConnectionTracker
from appliance.format.record import CLIENT_SIDE, SERVER_SIDE, SideInfo

# What one tracked connection costs with nothing buffered: the tracker's Connection and
# ConnOpen, the View, its HttpSession with two parsers, the dict entries (measured with
# tracemalloc; tests/ebpf/test_ebpf_frontend.py keeps it honest)
CONN_OVERHEAD = 3200
PROCESS_OVERHEAD = 600

INGRESS = int(Direction.INGRESS)

ClientKey = tuple[bytes, int, int]  # client address, port, network namespace (loopback only)


def _loopback(ip: bytes) -> bool:
    if len(ip) == 4:
        return ip[0] == 127
    return ip == b"\0" * 15 + b"\x01"


def view_of(conn: Connection) -> View | None:
    """The consumer the front end gave a connection (None before its first bytes)."""
    return cast("View | None", conn.consumer)


def client_key(o: ConnOpen) -> ClientKey | None:
    """The client's endpoint of a connection whose role is known."""
    c = o.client
    if c is None:
        return None
    ip, port = c
    return ip, port, o.netns if _loopback(ip) else 0


@dataclass
class EbpfOptions:
    dedup: bool = True                  # keep one view of an exchange seen at both ends
    accept_window_ns: int = 10 * 10**9  # accept at most this long after the connect ...
    accept_slack_ns: int = 10**9        # ... or this long before it (other CPU's clock order)
    claim_linger_ns: int = 30 * 10**9   # a closed server view still claims its client endpoint
    max_processes: int = 512            # per-process rows kept (the least active go)
    pod_retry_s: float = 5.0            # a process whose pod is not known yet: look again after


class ProcessFigures:
    """One traced process, for /status."""

    __slots__ = ("pid", "comm", "cgroup", "connections", "pairs", "bytes_in", "bytes_out",
                 "tls", "first_ts", "last_ts", "exited", "pod", "pod_next", "server_pairs")

    def __init__(self, pid: int, comm: str, cgroup: int, ts: float) -> None:
        self.pid = pid
        self.comm = comm
        self.cgroup = cgroup
        self.connections = 0
        self.pairs = 0
        self.server_pairs = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.tls = 0  # connections whose plaintext came from a TLS library
        self.first_ts = ts
        self.last_ts = ts
        self.exited = False
        self.pod: PodInfo | None = None
        self.pod_next = 0.0  # wall time of the next pod lookup (0: now)

    def row(self, active: int) -> dict[str, object]:
        pod = self.pod
        return {"pid": self.pid, "comm": self.comm, "connections": self.connections,
                "active_connections": active, "pairs": self.pairs,
                "server_pairs": self.server_pairs, "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out, "tls_connections": self.tls,
                "last_seen": self.last_ts, "exited": self.exited,
                "namespace": pod.namespace if pod else None, "pod": pod.name if pod else None,
                "container": pod.container if pod else None}


class ViewMeta(SideInfo):
    """``Pair.meta`` of an eBPF pair: Akto's side and tag, and the process."""

    __slots__ = ("pid", "comm")

    def __init__(self, direction: str, tag: str | None, pid: int, comm: str) -> None:
        super().__init__(direction, tag)
        self.pid = pid
        self.comm = comm


class _Claim:
    """A server-side view, by its client endpoint: it makes the client-side view of the
    same connection (if traced too) a duplicate."""

    __slots__ = ("start", "end")

    def __init__(self, start: int) -> None:
        self.start = start
        self.end = 0  # kernel ns of its end; 0 while open


class View:
    """The stream consumer of one connection: its HTTP session, and the accounting of
    what the session holds into the front end's total."""

    __slots__ = ("fe", "conn", "session", "acct", "proc", "meta", "dead", "duplicate",
                 "server_side")

    def __init__(self, fe: EbpfFrontEnd, conn: Connection, proc: ProcessFigures) -> None:
        self.fe = fe
        self.conn = conn
        self.proc = proc
        self.acct = acct = Acct()
        self.session = HttpSession(fe.session_cfg, fe.http_stats, self.emit, acct,
                                   client=conn.open.client_direction)
        self.meta: ViewMeta | None = None
        self.dead = False
        self.duplicate = False
        self.server_side: bool | None = None

    # -- stream events (called by the tracker) -------------------------------------------
    def data(self, direction: int, offset: int, ts: float, payload: bytes) -> None:
        if self.dead:
            return
        acct = self.acct
        before = acct.n
        if direction:
            self.proc.bytes_in += len(payload)
        else:
            self.proc.bytes_out += len(payload)
        try:
            self.session.data(direction, offset, ts, payload)
        except Exception as exc:  # contain it: this connection is lost, not the worker
            self._failed(exc, before)
            return
        self.fe.held += acct.n - before

    def gap(self, direction: int, offset: int, nbytes: int) -> None:
        if self.dead:
            return
        acct = self.acct
        before = acct.n
        self.fe.gaps += 1
        try:
            self.session.gap(direction, offset, nbytes)
        except Exception as exc:
            self._failed(exc, before)
            return
        self.fe.held += acct.n - before

    def eof(self, direction: int) -> None:
        if self.dead:
            return
        acct = self.acct
        before = acct.n
        try:
            self.session.eof(direction)
        except Exception as exc:
            self._failed(exc, before)
            return
        self.fe.held += acct.n - before

    def close(self) -> None:
        if self.dead:
            return
        acct = self.acct
        before = acct.n
        try:
            self.session.close()
        except Exception as exc:
            self._failed(exc, before)
            return
        # what is left is what the accounting could not see released: keep it honest
        self.fe.held -= before
        acct.n = 0
        self.dead = True

    def _failed(self, exc: Exception, accounted: int) -> None:
        """The session raised: its state cannot be trusted; drop it without a flush."""
        self.dead = True
        self.fe.held -= accounted
        self.fe.flow_error(exc)

    # -- pairs ----------------------------------------------------------------------------
    def emit(self, pair: Pair) -> None:
        fe = self.fe
        o = self.conn.open
        server_side = self.server_side
        if server_side is None:
            if o.role != Role.UNKNOWN:
                server_side = o.role == Role.SERVER
            else:  # first seen mid-way: the session decided from the content
                server_side = self.session.client == INGRESS
            self.server_side = server_side
        if not server_side and fe.opts.dedup and (self.duplicate or fe.claimed(self)):
            self.duplicate = True
            fe.drop("duplicate_client_view")
            return
        if server_side:
            pair.client_ip, pair.client_port = o.remote_ip, o.remote_port
            pair.server_ip, pair.server_port = o.local_ip, o.local_port
        else:
            pair.client_ip, pair.client_port = o.local_ip, o.local_port
            pair.server_ip, pair.server_port = o.remote_ip, o.remote_port
        proc = self.proc
        meta = self.meta
        if meta is None or (server_side and meta.tag is None and proc.pod is not None):
            fe.resolve_pod(proc)
            pod = proc.pod
            meta = self.meta = ViewMeta(SERVER_SIDE if server_side else CLIENT_SIDE,
                                        pod.tag if server_side and pod is not None else None,
                                        proc.pid, proc.comm)
        pair.meta = meta
        proc.pairs += 1
        if server_side:
            proc.server_pairs += 1
        fe.out.append(pair)
        fe.out_bytes += pair.mem()
        ts = pair.request.ts
        if ts > fe.last_ts:
            fe.last_ts = ts


class EbpfFrontEnd:
    """Socket events of one worker's ring buffer -> pairs (see the module docstring)."""

    def __init__(self, config: PipelineConfig | None = None, opts: EbpfOptions | None = None,
                 *, tls_ready_ns: Callable[[], int] = lambda: 0,
                 pod_of: Callable[[int], PodInfo | None] | None = None,
                 alive: Callable[[ConnKey], bool] | None = None,
                 recover: Callable[[ConnKey, int, bool], ConnOpen | None] | None = None) -> None:
        self.cfg = cfg = config or PipelineConfig()
        self.opts = opts or EbpfOptions()
        self.session_cfg = SessionConfig(ParserConfig(max_body=cfg.max_body, methods=cfg.methods),
                                         max_outstanding=cfg.max_outstanding, ack_evidence=False)
        self.http_stats = HttpStats()
        self._wall_off = time.time() - time.monotonic()
        self.tracker = ConnectionTracker(self._open_view, tls_ready_ns=tls_ready_ns,
                                         to_wall=self._to_wall, on_end=self._ended)
        self._pod_of = pod_of
        self._alive = alive
        self._recover = recover
        self._unrecoverable: OrderedDict[ConnKey, None] = OrderedDict()
        self.recovered = 0
        self.processes: dict[int, ProcessFigures] = {}
        self.claims: dict[ClientKey, list[_Claim]] = {}
        self._claim_of: dict[ConnKey, _Claim] = {}
        self.held = 0  # bytes the sessions hold (sum of their Acct)
        self.out: list[Pair] = []
        self.out_bytes = 0
        self.records = 0
        self.malformed = 0  # ring records that did not decode (counted by the source)
        self.gaps = 0
        self.drops: dict[str, int] = {}
        self.evicted: dict[str, int] = {"idle": 0, "connection_limit": 0, "buffer_limit": 0}
        self.flow_errors = 0
        self.errors: dict[str, str] = {}
        self.last_ts = 0.0
        self.pod_lookups = 0

    # -- time ---------------------------------------------------------------------------------
    def _to_wall(self, ns: int) -> float:
        return ns * 1e-9 + self._wall_off

    def _to_mono_ns(self, wall: float) -> int:
        return int((wall - self._wall_off) * 1e9)

    # -- input --------------------------------------------------------------------------------
    def feed(self, events: list[Event]) -> None:
        """One batch of events from the ring buffer, in ring order."""
        # kernel time is CLOCK_MONOTONIC: its offset to the wall clock, once per batch
        wall = self._wall_off = time.time() - time.monotonic()
        self.records += len(events)
        tracker = self.tracker
        feed = tracker.feed
        conns = tracker.conns
        tstats = tracker.stats
        for ev in events:
            t = type(ev)
            if type(ev) is Data:
                # the hot path, inlined: the next bytes of a direction whose session runs
                # (anything else, the tracker handles: gaps, starts, reopenings)
                key, ts, d, off, payload, _ = ev
                c = conns.get(key)
                if c is not None:
                    v = cast("View | None", c.consumer)
                    if v is not None and off == c.next_off[d] and not c.ended[d] and not v.dead:
                        conns.move_to_end(key)
                        n = len(payload)
                        acct = v.acct
                        before = acct.n
                        if d:
                            v.proc.bytes_in += n
                        else:
                            v.proc.bytes_out += n
                        try:
                            v.session.data(d, off, ts * 1e-9 + wall, payload)
                        except Exception as exc:  # contain it: the connection, not the worker
                            v._failed(exc, before)
                        else:
                            self.held += acct.n - before
                        c.next_off[d] = off + n
                        c.last_ts = ts
                        tstats.data_records += 1
                        tstats.data_bytes += n
                        continue
                if self._recover is not None and not tracker.knows(key):
                    self._recovering(key, ts, ev.tls)
            elif t is Truncated:
                if self._recover is not None and not tracker.knows(ev.key):  # type: ignore[union-attr]
                    self._recovering(ev.key, ev.ts, ev.tls)  # type: ignore[union-attr]
            elif t is ConnOpen:
                self._opening(ev)  # type: ignore[arg-type]
            elif t is ProcExit:
                proc = self.processes.get(ev.tgid)  # type: ignore[union-attr]
                if proc is not None:
                    proc.exited = True
            feed(ev)
        if self.held + len(tracker.conns) * CONN_OVERHEAD > self.cfg.buffer_limit:
            self.shed(self.cfg.buffer_limit, "buffer_limit")

    def _recovering(self, key: ConnKey, ts: int, tls: bool) -> None:
        """Bytes of a connection never opened here (its open record went to a worker
        that died, or was lost in a full ring): ask where it goes (``recover``, /proc in
        the runtime), once per connection, and start it mid-way."""
        if key in self._unrecoverable:
            return
        o = self._recover(key, ts, tls) if self._recover is not None else None
        if o is None:
            self._unrecoverable[key] = None
            while len(self._unrecoverable) > 4096:
                self._unrecoverable.popitem(last=False)
            return
        self.recovered += 1
        self._opening(o)
        self.tracker.feed(o)

    def _opening(self, o: ConnOpen) -> None:
        tracker = self.tracker
        if o.key in tracker.conns:
            return
        if len(tracker.conns) >= self.cfg.max_connections:
            key = next(iter(tracker.conns))
            if tracker.evict(key):
                self.evicted["connection_limit"] += 1
        pid = o.key.tgid
        proc = self.processes.get(pid)
        ts = self._to_wall(o.ts)
        if proc is None:
            if len(self.processes) >= self.opts.max_processes:
                self._prune_processes()
            proc = self.processes[pid] = ProcessFigures(pid, o.comm, o.cgroup, ts)
        proc.connections += 1
        proc.last_ts = ts
        proc.comm = o.comm
        if o.tls:
            proc.tls += 1
        self._claim(o)

    def _claim(self, o: ConnOpen) -> None:
        """A server-side view claims its client endpoint (see claimed())."""
        if o.role == Role.SERVER and self.opts.dedup and o.key not in self._claim_of:
            ck = client_key(o)
            if ck is not None:
                claim = _Claim(o.ts)
                self.claims.setdefault(ck, []).append(claim)
                self._claim_of[o.key] = claim

    def _open_view(self, conn: Connection) -> View:
        o = conn.open
        # a server view reopened mid-way (after an idle flush or an eviction) claims its
        # client endpoint again, from its first open on
        self._claim(o)
        proc = self.processes.get(o.key.tgid)
        if proc is None:  # opened before a restart of this worker, or pruned
            proc = self.processes[o.key.tgid] = ProcessFigures(o.key.tgid, o.comm, o.cgroup,
                                                               self._to_wall(o.ts))
        if conn.tls and not o.tls:
            proc.tls += 1
        return View(self, conn, proc)

    def _ended(self, conn: Connection) -> None:
        claim = self._claim_of.pop(conn.open.key, None)
        if claim is not None:
            claim.end = max(conn.last_ts, claim.start) or 1
        proc = self.processes.get(conn.open.key.tgid)
        if proc is not None and conn.last_ts:
            proc.last_ts = max(proc.last_ts, self._to_wall(conn.last_ts))

    # -- both ends on this node ---------------------------------------------------------------
    def claimed(self, view: View) -> bool:
        """Is this client-side view's connection also traced at its server?"""
        o = view.conn.open
        ck = client_key(o)
        if ck is None:
            return False
        claims = self.claims.get(ck)
        if not claims:
            return False
        opts = self.opts
        start = o.ts
        for c in claims:
            if (start - opts.accept_slack_ns <= c.start <= start + opts.accept_window_ns
                    and (c.end == 0 or c.end >= start)):
                return True
        return False

    def _expire_claims(self, now_ns: int) -> None:
        limit = now_ns - self.opts.claim_linger_ns
        for ck in list(self.claims):
            keep = [c for c in self.claims[ck] if c.end == 0 or c.end >= limit]
            if keep:
                self.claims[ck] = keep
            else:
                del self.claims[ck]

    # -- pods ---------------------------------------------------------------------------------
    def resolve_pod(self, proc: ProcessFigures) -> None:
        if proc.pod is not None or self._pod_of is None:
            return
        now = time.time()
        if now < proc.pod_next:
            return
        proc.pod_next = now + self.opts.pod_retry_s
        self.pod_lookups += 1
        try:
            proc.pod = self._pod_of(proc.pid)
        except Exception as exc:  # noqa: BLE001 - metadata must never stop the pairs
            self.flow_error(exc)

    # -- results ------------------------------------------------------------------------------
    def take(self) -> list[Pair]:
        out = self.out
        self.out = []
        self.out_bytes = 0
        return out

    def drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def flow_error(self, exc: Exception) -> None:
        self.flow_errors += 1
        name = type(exc).__name__
        if name not in self.errors:
            self.errors[name] = "".join(traceback.format_exception(exc))

    # -- time and memory ----------------------------------------------------------------------
    def _holds_nothing(self, conn: Connection) -> bool:
        view = view_of(conn)
        if view is not None and not view.dead and view.acct.n:
            return False
        return self._alive is None or self._alive(conn.open.key)

    def sweep(self, now: float) -> None:
        """Idle connections (``idle_timeout``, wall clock ``now``), expired claims."""
        now_ns = self._to_mono_ns(now)
        ended = self.tracker.sweep(now_ns, int(self.cfg.idle_timeout * 1e9), self._holds_nothing)
        self.evicted["idle"] += len(ended)
        self._expire_claims(now_ns)
        if now > self.last_ts:
            self.last_ts = now
        if self.held + len(self.tracker.conns) * CONN_OVERHEAD > self.cfg.buffer_limit:
            self.shed(self.cfg.buffer_limit, "buffer_limit")

    def bytes_held(self) -> int:
        return (self.held + len(self.tracker.conns) * CONN_OVERHEAD
                + len(self.processes) * PROCESS_OVERHEAD)

    def buffered(self) -> int:
        """Every byte this front end holds, O(1)."""
        return self.bytes_held() + self.out_bytes

    def shed(self, target_bytes: int, reason: str = "memory") -> int:
        """End connections until ``buffered() <= target_bytes``: a connection holding more
        than a quarter of the excess first, then the least recently active; what they
        held goes out (pending requests as unanswered pairs).  Returns how many."""
        tracker = self.tracker
        conns = tracker.conns
        # pairs already out are handed to the sink by the caller: they count against the
        # target, and what the evicted connections emit is not shed again
        target = max(0, target_bytes - self.out_bytes)
        excess = self.bytes_held() - target
        if excess <= 0:
            return 0
        floor = max(excess // 4, CONN_OVERHEAD)
        big = []
        for k, c in conns.items():
            v = view_of(c)
            if v is not None and v.acct.n > floor:
                big.append((v.acct.n, k))
        big.sort(reverse=True)
        evicted = 0
        for _, k in big:
            if self.bytes_held() <= target:
                break
            evicted += tracker.evict(k)
        while conns and self.bytes_held() > target:
            evicted += tracker.evict(next(iter(conns)))
        self.evicted[reason] = self.evicted.get(reason, 0) + evicted
        return evicted

    def close(self) -> None:
        """End of input: flush every connection."""
        self.tracker.close_all()

    def _prune_processes(self) -> None:
        """Room for a new row: the exited, then the least recently active, without open
        connections, go first."""
        active = self.tracker.by_tgid
        rows = sorted(self.processes.values(), key=lambda p: (not p.exited, p.last_ts))
        for p in rows[:max(1, len(rows) // 8)]:
            if p.pid not in active:
                del self.processes[p.pid]

    # -- statistics ---------------------------------------------------------------------------
    def vni_figures(self) -> dict[int, list[int]]:
        return {}  # no mirror sessions: per-process rows instead (process_rows)

    def process_rows(self, limit: int = 256) -> list[dict[str, object]]:
        """The most active processes (by pairs, then bytes), for /status."""
        by_tgid = self.tracker.by_tgid
        rows = sorted(self.processes.values(),
                      key=lambda p: (p.pairs, p.bytes_in + p.bytes_out), reverse=True)[:limit]
        return [p.row(len(by_tgid.get(p.pid, ()))) for p in rows]

    def stats(self) -> dict[str, object]:
        h = self.http_stats
        t = self.tracker.stats
        return {
            "packets": self.records,
            "bytes": t.data_bytes,
            "connections": t.opened,
            "active_connections": len(self.tracker.conns),
            **h.figures(),
            "malformed": self.malformed,
            "gaps": self.gaps,
            "gap_bytes": t.truncated_bytes + t.lost_bytes,
            "flow_errors": self.flow_errors,
            "buffered_bytes": self.buffered(),
            "evicted": dict(self.evicted),
            "drops": dict(self.drops),
            "ebpf": {**t.as_dict(), "processes": len(self.processes),
                     "pod_lookups": self.pod_lookups, "recovered_connections": self.recovered},
            "processes": self.process_rows(),
        }


__all__ = ["EbpfFrontEnd", "EbpfOptions", "ViewMeta", "ProcessFigures", "CONN_OVERHEAD",
           "client_key"]
