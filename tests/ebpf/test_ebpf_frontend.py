"""The eBPF front end, sans-IO: socket events built in code -> pairs -> Akto records.

What the kernel delivers is tested with real probes elsewhere (test_ebpf_plain.py, ...);
here the events are constructed so that every rule of the front end is exercised exactly:
addresses and Akto's direction/tag per side, one record when both ends are traced
(also through a translated service address), idleness, eviction, accounting, egress."""

from __future__ import annotations

import gc
import json
import time
import tracemalloc

import pytest

from appliance.core.pipeline import PipelineConfig
from appliance.ebpf.events import Close, ConnKey, ConnOpen, Data, ProcExit, Role, Truncated
from appliance.ebpf.frontend import CONN_OVERHEAD, EbpfFrontEnd, EbpfOptions, ViewMeta
from appliance.ebpf.k8s import PodInfo
from appliance.format.filters import PairFilter
from appliance.format.record import Formatter, SideInfo

CLIENT = bytes([10, 244, 1, 3])
SERVER = bytes([10, 244, 1, 5])
SERVICE = bytes([10, 96, 0, 10])
PUBLIC = bytes([93, 184, 216, 34])
LO = bytes([127, 0, 0, 1])
NS_A, NS_B = 4026532001, 4026532002
REQ = b"GET /api/items?id=1 HTTP/1.1\r\nHost: shop\r\nAccept: */*\r\n\r\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"id\": 1.0}"


class Clock:
    """Kernel time (CLOCK_MONOTONIC ns) of the events being built."""

    def __init__(self) -> None:
        self.ns = time.monotonic_ns() - 10 * 10**9

    def __call__(self, step_us: int = 100) -> int:
        self.ns += step_us * 1000
        return self.ns


class Conn:
    """One traced end of a connection: builds its events in kernel order."""

    fds = iter(range(100, 10**6))

    def __init__(self, clock: Clock, pid: int, role: Role, local: tuple[bytes, int],
                 remote: tuple[bytes, int], netns: int = NS_A, comm: str = "app",
                 from_start: bool = True) -> None:
        self.clock = clock
        ts = clock()
        self.key = ConnKey(pid, next(self.fds), ts)
        self.off = [0, 0]
        self.open = ConnOpen(self.key, ts, role, False, from_start, local[0], local[1],
                             remote[0], remote[1], comm, 7, netns)

    def send(self, payload: bytes) -> Data:  # EGRESS: what this process wrote
        ev = Data(self.key, self.clock(), 0, self.off[0], payload, False)
        self.off[0] += len(payload)
        return ev

    def recv(self, payload: bytes) -> Data:  # INGRESS: what it read
        ev = Data(self.key, self.clock(), 1, self.off[1], payload, False)
        self.off[1] += len(payload)
        return ev

    def close(self) -> Close:
        return Close(self.key, self.clock(), self.off[0], self.off[1])


def records(fe: EbpfFrontEnd, formatter: Formatter | None = None) -> list[dict[str, str]]:
    f = formatter or Formatter(source="MIRRORING")
    return f.records(fe.take())


def server_view(clock, pid=1, client=(CLIENT, 41000), server=(SERVER, 8080), **kw):
    return Conn(clock, pid, Role.SERVER, server, client, **kw)


def client_view(clock, pid=2, client=(CLIENT, 41000), server=(SERVICE, 80), **kw):
    return Conn(clock, pid, Role.CLIENT, client, server, **kw)


def test_server_side_view_record():
    clock = Clock()
    fe = EbpfFrontEnd()
    s = server_view(clock, comm="api")
    req = s.recv(REQ)
    fe.feed([s.open, req, s.send(RESP), s.close()])
    [pair] = fe.take()
    assert isinstance(pair.meta, ViewMeta) and pair.meta.pid == 1 and pair.meta.comm == "api"
    [rec] = Formatter(source="MIRRORING").records([pair])
    assert (rec["ip"], rec["srcPort"], rec["destIp"], rec["destPort"]) == \
        ("10.244.1.3", "41000", "10.244.1.5", "8080")
    assert rec["direction"] == "1" and "tag" not in rec and rec["source"] == "MIRRORING"
    assert rec["path"] == "/api/items?id=1" and rec["statusCode"] == "200"
    assert rec["responsePayload"] == '{"id": 1.0}' and rec["is_pending"] == "false"
    # time: the kernel timestamp of the request's first byte, on the wall clock
    wall = req.ts / 1e9 + (time.time() - time.monotonic())
    assert abs(int(rec["time"]) - wall) <= 1
    assert fe.buffered() < 2000 and fe.held == 0


def test_client_side_view_alone_is_direction_2():
    clock = Clock()
    fe = EbpfFrontEnd()
    c = client_view(clock, server=(PUBLIC, 443))
    fe.feed([c.open, c.send(REQ), c.recv(RESP), c.close()])
    [rec] = records(fe)
    assert rec["direction"] == "2"
    assert (rec["ip"], rec["srcPort"], rec["destIp"], rec["destPort"]) == \
        ("10.244.1.3", "41000", "93.184.216.34", "443")


@pytest.mark.parametrize("server_addr", [(CLIENT, 0), (SERVER, 8080)], ids=["same-tuple", "dnat"])
def test_both_ends_traced_one_record_from_the_server(server_addr):
    """Client pod -> service address (DNAT) -> server pod on the same node: the connect
    is seen first, both views carry the exchange; the server's view is the one sent."""
    clock = Clock()
    fe = EbpfFrontEnd()
    if server_addr[1] == 0:  # no translation: the client's view is the reversed 4-tuple
        c = client_view(clock, server=(SERVER, 8080))
    else:
        c = client_view(clock, server=(SERVICE, 80))
    s = server_view(clock)
    fe.feed([c.open, s.open, c.send(REQ), s.recv(REQ), s.send(RESP), c.recv(RESP)])
    fe.feed([s.close(), c.close()])
    recs = records(fe)
    assert [r["direction"] for r in recs] == ["1"]
    assert recs[0]["destIp"] == "10.244.1.5" and recs[0]["destPort"] == "8080"
    assert fe.stats()["drops"] == {"duplicate_client_view": 1}


def test_server_closes_first_client_reads_after():
    """The server writes, closes, and only then does the client read the response: the
    closed server view still claims the client endpoint."""
    clock = Clock()
    fe = EbpfFrontEnd()
    c = client_view(clock)
    s = server_view(clock)
    fe.feed([c.open, c.send(REQ), s.open, s.recv(REQ), s.send(RESP), s.close()])
    fe.feed([c.recv(RESP), c.close()])
    assert [r["direction"] for r in records(fe)] == ["1"]


def test_client_port_reused_later_is_not_a_duplicate():
    """The same client address and port, reused for a connection to an outside server
    after the traced server's connection ended: its pairs are kept."""
    clock = Clock()
    fe = EbpfFrontEnd(opts=EbpfOptions(claim_linger_ns=60 * 10**9))
    c = client_view(clock)
    s = server_view(clock)
    fe.feed([c.open, s.open, c.send(REQ), s.recv(REQ), s.send(RESP), c.recv(RESP),
             s.close(), c.close()])
    clock(2_000_000)  # two seconds later
    c2 = client_view(clock, pid=3, server=(PUBLIC, 443))
    fe.feed([c2.open, c2.send(REQ), c2.recv(RESP), c2.close()])
    recs = records(fe)
    assert sorted((r["direction"], r["destIp"]) for r in recs) == \
        [("1", "10.244.1.5"), ("2", "93.184.216.34")]


def test_loopback_in_other_namespaces_is_not_a_duplicate():
    """127.0.0.1:41000 in two pods is two endpoints: the network namespace tells them apart."""
    clock = Clock()
    fe = EbpfFrontEnd()
    c = client_view(clock, client=(LO, 41000), server=(LO, 9000), netns=NS_A)
    s = server_view(clock, client=(LO, 41000), server=(LO, 9000), netns=NS_B)
    fe.feed([c.open, s.open, c.send(REQ), s.recv(REQ), s.send(RESP), c.recv(RESP),
             c.close(), s.close()])
    assert sorted(r["direction"] for r in records(fe)) == ["1", "2"]
    # the same namespace: one exchange
    c = client_view(clock, client=(LO, 42000), server=(LO, 9000), netns=NS_A)
    s = server_view(clock, client=(LO, 42000), server=(LO, 9000), netns=NS_A)
    fe.feed([c.open, s.open, c.send(REQ), s.recv(REQ), s.send(RESP), c.recv(RESP),
             c.close(), s.close()])
    assert [r["direction"] for r in records(fe)] == ["1"]


def test_long_poll_both_ends_idle_flushed_then_resumed_still_one_record():
    """A request left pending past the idle threshold at both ends is flushed once (the
    server's view), and after the long-poll's answer the next exchange of the same
    connection, long after the claim's linger, is still sent once."""
    clock = Clock()
    fe = EbpfFrontEnd(PipelineConfig(idle_timeout=3.0),
                      EbpfOptions(claim_linger_ns=10 * 10**9))
    c, s = client_view(clock), server_view(clock)
    fe.feed([c.open, s.open, c.send(REQ), s.recv(REQ)])
    fe.sweep(time.time() + 30)           # both idle, holding the request: flushed
    assert [(r["direction"], r["is_pending"]) for r in records(fe)] == [("1", "true")]
    fe.sweep(time.time() + 100)          # the first claim's linger is long over
    clock(60_000_000)                    # a minute later: the answer, then the next request
    fe.feed([s.send(RESP), c.recv(RESP), c.send(REQ), s.recv(REQ), s.send(RESP), c.recv(RESP)])
    fe.feed([s.close(), c.close()])
    assert [r["direction"] for r in records(fe)] == ["1"]


def test_dedup_off_keeps_both():
    clock = Clock()
    fe = EbpfFrontEnd(opts=EbpfOptions(dedup=False))
    c, s = client_view(clock), server_view(clock)
    fe.feed([c.open, s.open, c.send(REQ), s.recv(REQ), s.send(RESP), c.recv(RESP),
             c.close(), s.close()])
    assert sorted(r["direction"] for r in records(fe)) == ["1", "2"]


def test_first_seen_midway_roles_from_the_content():
    """No accept/connect seen: the session finds the client from the bytes; the process
    that received the request is the server side."""
    clock = Clock()
    fe = EbpfFrontEnd()
    u = Conn(clock, 5, Role.UNKNOWN, (SERVER, 8080), (CLIENT, 41000), from_start=False)
    fe.feed([u.open, u.recv(REQ), u.send(RESP), u.close()])
    [rec] = records(fe)
    assert rec["direction"] == "1" and rec["ip"] == "10.244.1.3" and rec["destPort"] == "8080"
    assert "midstream" in rec["anomalies"]
    u = Conn(clock, 6, Role.UNKNOWN, (CLIENT, 41001), (SERVER, 8080), from_start=False)
    fe.feed([u.open, u.send(REQ), u.recv(RESP), u.close()])
    [rec] = records(fe)
    assert rec["direction"] == "2" and rec["ip"] == "10.244.1.3" and rec["srcPort"] == "41001"


def test_truncated_call_is_a_gap_flagged_not_a_wrong_body():
    clock = Clock()
    fe = EbpfFrontEnd()
    s = server_view(clock)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
    body = b"x" * 100000
    evs = [s.open, s.recv(REQ), s.send(head + body[:4096])]
    evs.append(Truncated(s.key, clock(), 0, s.off[0], len(body) - 4096, False))
    s.off[0] += len(body) - 4096
    evs += [s.recv(REQ), s.send(RESP), s.close()]
    fe.feed(evs)
    first, second = records(fe)
    assert "response_gap" in first["anomalies"] and first["statusCode"] == "200"
    assert second["responsePayload"] == '{"id": 1.0}' and "anomalies" not in second


def test_idle_connection_holding_a_request_flushes_it_then_resumes_midway():
    clock = Clock()
    fe = EbpfFrontEnd(PipelineConfig(idle_timeout=3.0))
    s = server_view(clock)
    fe.feed([s.open, s.recv(REQ)])
    later = time.time() + 20
    fe.sweep(later)
    [rec] = records(fe)
    assert rec["is_pending"] == "true" and fe.evicted["idle"] == 1
    fe.feed([s.send(RESP), s.recv(REQ), s.send(RESP), s.close()])
    recs = records(fe)
    # the late response answers a request we flushed: never paired with the next one
    assert [r["is_pending"] for r in recs] == ["false"]
    assert "midstream" in recs[0]["anomalies"]


def test_idle_connection_holding_nothing_stays_while_the_kernel_traces_it():
    """A keep-alive connection used every few minutes is one stream, not many mid-way
    starts, as long as the kernel still has it; once it does not, it ends."""
    clock = Clock()
    alive = {"yes": True}
    fe = EbpfFrontEnd(PipelineConfig(idle_timeout=3.0), alive=lambda key: alive["yes"])
    s = server_view(clock)
    fe.feed([s.open, s.recv(REQ), s.send(RESP)])
    assert len(records(fe)) == 1
    fe.sweep(time.time() + 60)
    assert fe.stats()["active_connections"] == 1 and fe.evicted["idle"] == 0
    fe.feed([s.recv(REQ), s.send(RESP)])
    [rec] = records(fe)
    assert "anomalies" not in rec  # not mid-way: the stream went on
    alive["yes"] = False
    fe.sweep(time.time() + 120)
    assert fe.stats()["active_connections"] == 0 and fe.evicted["idle"] == 1


def test_connection_limit_evicts_least_recently_active_with_its_pending_request():
    clock = Clock()
    fe = EbpfFrontEnd(PipelineConfig(max_connections=2))
    a, b = server_view(clock, client=(CLIENT, 1)), server_view(clock, client=(CLIENT, 2))
    fe.feed([a.open, a.recv(REQ), b.open, b.recv(REQ), b.send(RESP)])
    c = server_view(clock, client=(CLIENT, 3))
    fe.feed([c.open])
    recs = records(fe)
    assert sorted((r["srcPort"], r["is_pending"]) for r in recs) == [("1", "true"), ("2", "false")]
    assert fe.evicted["connection_limit"] == 1 and fe.stats()["active_connections"] == 2


def test_process_exit_ends_its_connections():
    clock = Clock()
    fe = EbpfFrontEnd()
    s = server_view(clock, pid=9)
    fe.feed([s.open, s.recv(REQ), ProcExit(9, clock())])
    [rec] = records(fe)
    assert rec["is_pending"] == "true"
    assert fe.stats()["active_connections"] == 0
    assert fe.process_rows()[0]["exited"] is True


def test_buffered_is_truthful_and_shed_gives_everything_back():
    clock = Clock()
    fe = EbpfFrontEnd(PipelineConfig(max_outstanding=10_000))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    evs = []
    for i in range(2000):
        s = server_view(clock, pid=10 + i % 5, client=(CLIENT, 10000 + i))
        evs += [s.open, s.recv(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
                               + b"a" * 300)]
    fe.feed(evs)
    del evs
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    real = sum(s.size_diff for s in after.compare_to(before, "filename"))
    accounted = fe.buffered()
    assert real > 1_000_000
    assert 0.85 * real <= accounted <= 1.15 * real, (real, accounted)
    assert fe.shed(0) == 2000
    assert len(fe.take()) == 2000 and fe.held == 0
    assert fe.buffered() == len(fe.processes) * 600


def test_conn_overhead_is_measured():
    """CONN_OVERHEAD is what an idle tracked connection really costs (within 15 %)."""
    clock = Clock()
    fe = EbpfFrontEnd(PipelineConfig(max_connections=100_000))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    evs = []
    for i in range(3000):
        s = server_view(clock, pid=1, client=(CLIENT, 10000 + i))
        evs += [s.open, s.recv(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), s.send(RESP)]
    fe.feed(evs)
    fe.take()
    del evs, s
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    real = sum(x.size_diff for x in after.compare_to(before, "filename")) / 3000
    assert 0.85 * real <= CONN_OVERHEAD <= 1.15 * real, real


def test_egress_filter_drops_client_views_to_outside_servers_only():
    clock = Clock()
    fe = EbpfFrontEnd()
    flt = PairFilter(disable_egress=True, internal_cidrs=["10.0.0.0/8"])
    f = Formatter(source="MIRRORING", pair_filter=flt)
    out = client_view(clock, pid=20, server=(PUBLIC, 443))
    inside = client_view(clock, pid=21, client=(CLIENT, 50000), server=(SERVICE, 80))
    # a server on this node with a public address (hostNetwork): calls *into* it are kept
    public_srv = server_view(clock, pid=22, client=(PUBLIC, 1234), server=(bytes([52, 1, 2, 3]), 443))
    for c in (out, inside):
        fe.feed([c.open, c.send(REQ), c.recv(RESP), c.close()])
    fe.feed([public_srv.open, public_srv.recv(REQ), public_srv.send(RESP), public_srv.close()])
    recs = f.records(fe.take())
    assert sorted((r["direction"], r["destIp"]) for r in recs) == \
        [("1", "52.1.2.3"), ("2", "10.96.0.10")]
    assert f.stats()["drops"] == {"filter_egress": 1}


def test_tag_is_the_server_pods_labels_and_client_views_carry_none():
    clock = Clock()
    pods = {1: PodInfo("shop", "api-7d9", "uid-1", {"app": "api", "tier": "backend"}, "api"),
            2: PodInfo("shop", "web-1", "uid-2", {"app": "web"}, "web")}
    fe = EbpfFrontEnd(pod_of=pods.get)
    s = server_view(clock, pid=1)
    fe.feed([s.open, s.recv(REQ), s.send(RESP), s.close()])
    c = client_view(clock, pid=2, client=(CLIENT, 52000), server=(PUBLIC, 443))
    fe.feed([c.open, c.send(REQ), c.recv(RESP), c.close()])
    recs = {r["direction"]: r for r in records(fe)}
    assert json.loads(recs["1"]["tag"]) == {"app": "api", "tier": "backend"}
    assert "tag" not in recs["2"]
    rows = {r["pid"]: r for r in fe.process_rows()}
    assert rows[1]["namespace"] == "shop" and rows[1]["pod"] == "api-7d9"
    assert rows[1]["server_pairs"] == 1 and rows[2]["pairs"] == 1


def test_mirrored_pairs_carry_no_direction():
    from appliance.core.pair import Message, Pair

    p = Pair(Message(0, 1.0, None), None)
    p.request.method, p.request.target, p.request.version = "GET", "/", "HTTP/1.1"
    p.client_ip = p.server_ip = bytes(4)
    [rec] = Formatter().records([p])
    assert "direction" not in rec and "tag" not in rec
    p.meta = SideInfo("2")
    [rec] = Formatter().records([p])
    assert rec["direction"] == "2" and "tag" not in rec


def test_a_failing_session_loses_its_connection_not_the_front_end(monkeypatch):
    # the bug is planted in front of each connection's session (the compiled core's classes
    # cannot be patched, so both builds are tested the same way)
    from appliance.ebpf import frontend

    class Failing:
        def __init__(self, session):
            self.session = session

        def data(self, d, off, ts, payload):
            if b"boom" in payload:
                raise RuntimeError("boom")
            return self.session.data(d, off, ts, payload)

        def __getattr__(self, name):
            return getattr(self.session, name)

    real_init = frontend.View.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self.session = Failing(self.session)

    monkeypatch.setattr(frontend.View, "__init__", init)
    clock = Clock()
    fe = EbpfFrontEnd()
    bad = server_view(clock, pid=30)
    good = server_view(clock, pid=31, client=(CLIENT, 5))
    fe.feed([bad.open, good.open, bad.recv(b"GET /boom HTTP/1.1\r\n\r\n"), good.recv(REQ),
             good.send(RESP), bad.close(), good.close()])
    assert [r["srcPort"] for r in records(fe)] == ["5"]
    assert fe.flow_errors == 1 and "RuntimeError" in fe.errors and fe.held == 0
