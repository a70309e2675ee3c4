"""Plain HTTP between two processes in a network namespace, captured by the real probes:
both ends' views must be exactly the bytes each process sent and received."""

import pytest

from appliance.ebpf.events import Data, Direction, Role, Truncated
from appliance.ebpf.collector import CollectorConfig
from ebpf_helpers import Capture, Peer, python_peer, write_script, data_events

pytestmark = pytest.mark.needs_bpf

LO = b"\x7f\x00\x00\x01"


def req(target, body=b"", extra=b""):
    head = b"%s %s HTTP/1.1\r\nHost: t\r\n" % (b"POST" if body else b"GET", target.encode())
    if body:
        head += b"Content-Length: %d\r\n" % len(body)
    return head + extra + b"\r\n" + body


def run_pair(capture, netns, tmp_path, sends, *, client_args=(), server_args=()):
    """A server and a client in `netns`; returns (server_view, client_view, server, client)."""
    srv = Peer(python_peer(netns, "server", "--once", *server_args, str(tmp_path)), capture.col,
               wait_line="port")
    port = srv.first_line.split()[1]
    script = write_script(tmp_path / "script.json", sends)
    cli = Peer(python_peer(netns, "client", "--port", port, "--script", script, *client_args,
                           str(tmp_path)), capture.col)
    srv.go()
    cli.go()
    try:
        cli.wait()
        srv.wait()
        capture.until(lambda: len(capture.of(srv.pid)) == 1 and capture.of(srv.pid)[0].closed
                      and len(capture.of(cli.pid)) == 1 and capture.of(cli.pid)[0].closed)
    finally:
        srv.kill()
        cli.kill()
    return capture.of(srv.pid)[0], capture.of(cli.pid)[0], srv, cli


def truth(tmp_path, name):
    return (tmp_path / f"{name}.sent").read_bytes(), (tmp_path / f"{name}.recv").read_bytes()


def test_keepalive_and_pipelining_exact_streams(capture, netns, tmp_path):
    sends = [(req("/a"), 1), (req("/b", b"x" * 300), 1),
             (req("/size/5000") + req("/c") + req("/size/10"), 3),   # pipelined in one write
             (req("/close"), 1)]
    server, client, srv, cli = run_pair(capture, netns, tmp_path, sends)
    s_sent, s_recv = truth(tmp_path, "server0")
    c_sent, c_recv = truth(tmp_path, "client")
    assert c_sent == b"".join(b for b, _ in sends)

    # server side: accept seen, roles and addresses, then exactly the bytes moved
    o = server.open
    assert o.role == Role.SERVER and o.from_start and not o.tls
    assert o.client_direction == Direction.INGRESS
    assert o.local_ip == LO and o.remote_ip == LO
    assert o.server == (LO, int(srv.first_line.split()[1]))
    assert server.stream(Direction.INGRESS) == s_recv == c_sent
    assert server.stream(Direction.EGRESS) == s_sent == c_recv
    # client side: connect seen, the same 4-tuple reversed
    oc = client.open
    assert oc.role == Role.CLIENT and oc.from_start
    assert oc.client_direction == Direction.EGRESS
    assert (oc.local_ip, oc.local_port) == o.client and (oc.remote_ip, oc.remote_port) == o.server
    assert client.stream(Direction.EGRESS) == c_sent
    assert client.stream(Direction.INGRESS) == c_recv
    # no UNKNOWN start, both directions end, then the connection closes
    for view in (server, client):
        assert view.calls[-3:] == [("eof", 0), ("eof", 1), ("close",)]
        assert not view.gaps(0) and not view.gaps(1)
    # kernel timestamps are monotonic per direction
    evs = data_events(capture.events, srv.pid)
    for d in (0, 1):
        ts = [e.ts for e in evs if e.direction == d]
        assert ts == sorted(ts) and ts


def test_one_megabyte_body_across_many_chunks(capture, netns, tmp_path):
    body = bytes(range(256)) * 4096   # 1 MiB
    sends = [(req("/upload", body), 1), (req("/size/1048576"), 1)]
    # both peers write in 64 KiB calls, under the per-call cap (256 KiB by default)
    server, client, srv, cli = run_pair(capture, netns, tmp_path, sends,
                                        client_args=("--write-size", "65536"),
                                        server_args=("--write-size", "65536"))
    s_sent, s_recv = truth(tmp_path, "server0")
    assert server.stream(Direction.INGRESS) == s_recv
    assert body in s_recv
    assert server.stream(Direction.EGRESS) == s_sent
    assert client.stream(Direction.EGRESS) == s_recv
    assert client.stream(Direction.INGRESS) == s_sent
    recs = [e for e in data_events(capture.events, srv.pid) if isinstance(e, Data)]
    assert max(len(e.payload) for e in recs) == 16384      # chunked at CHUNK_SIZE
    assert len([e for e in recs if e.direction == Direction.INGRESS]) >= 64


def test_body_over_per_call_cap_is_a_counted_gap(netns, tmp_path):
    cap = Capture(CollectorConfig(only_listed=True, rescan_interval=0, max_call_bytes=4096))
    try:
        sends = [(req("/size/100000"), 1), (req("/b"), 1)]
        server, client, srv, cli = run_pair(cap, netns, tmp_path, sends,
                                            server_args=("--one-write",))
        s_sent, _ = truth(tmp_path, "server0")
        view = server
        # each send() call: its first 4096 bytes, then a gap for the rest of that call
        got = bytearray()
        pos = 0
        for c in view.calls:
            if c[0] not in ("data", "gap") or c[1] != Direction.EGRESS:
                continue
            kind, _, off, x = c
            assert off == pos
            if kind == "data":
                assert x == s_sent[off:off + len(x)]
                got += x
                pos += len(x)
            else:
                assert x > 0
                pos += x
        assert pos == len(s_sent)                      # nothing lost silently
        gaps = view.gaps(Direction.EGRESS)
        assert gaps and sum(n for _, n in gaps) == len(s_sent) - len(got)
        trunc = [e for e in data_events(cap.events, srv.pid) if isinstance(e, Truncated)]
        assert sum(e.nbytes for e in trunc) == sum(n for _, n in gaps)
        # the tail request after the big response is still exact
        last = [c for c in view.calls if c[0] == "data" and c[1] == Direction.EGRESS][-1]
        assert last[3].startswith(b"HTTP/1.1 200 OK") and s_sent.endswith(last[3])
        assert last[2] + len(last[3]) == len(s_sent)
        assert cap.col.stats()["truncated_bytes"] >= sum(n for _, n in gaps)
    finally:
        cap.close()


def test_connection_first_seen_midway_starts_with_unknown_gap(capture, netns, tmp_path):
    """Tracing starts after the connection did: no accept/connect seen, so the stream
    starts with gap(d, 0, UNKNOWN) and then exactly the bytes moved from then on."""
    from ebpf_helpers import UNKNOWN
    sends = [(req("/first"), 1), (req("/second"), 1), (req("/close"), 1)]
    srv = Peer(python_peer(netns, "server", "--once", str(tmp_path)), None, wait_line="port")
    port = srv.first_line.split()[1]
    cli = Peer(python_peer(netns, "client", "--port", port, "--pause-before", "1", "--script",
                           write_script(tmp_path / "s.json", sends), str(tmp_path)), None)
    try:
        srv.go()
        cli.go()
        assert cli.proc.stdout.readline().strip() == "paused"
        capture.col.allow_pid(srv.pid)
        capture.col.allow_pid(cli.pid)
        cli.go()
        cli.wait()
        srv.wait()
        capture.until(lambda: any(r.closed for r in capture.of(srv.pid))
                      and any(r.closed for r in capture.of(cli.pid)))
    finally:
        srv.kill()
        cli.kill()
    s_sent, s_recv = truth(tmp_path, "server0")
    first_req = req("/first")
    first_resp_len = s_sent.index(b"HTTP/1.1", 1)
    for view, out, inp in ((capture.of(srv.pid)[0], s_sent[first_resp_len:], s_recv[len(first_req):]),
                           (capture.of(cli.pid)[0], s_recv[len(first_req):], s_sent[first_resp_len:])):
        assert not view.open.from_start and view.open.role == Role.UNKNOWN
        assert view.open.client_direction is None
        assert view.calls[:2] == [("gap", 0, 0, UNKNOWN), ("gap", 1, 0, UNKNOWN)]
        body = [c for c in view.calls[2:] if c[0] == "data"]
        assert all(c[0] in ("data", "eof", "close") for c in view.calls[2:])
        got = {d: b"".join(c[3] for c in body if c[1] == d) for d in (0, 1)}
        # a suffix of what really moved (a read already blocked in the kernel when tracing
        # began is not seen: that is part of the unknown amount before offset 0)
        for d, truth_ in ((Direction.EGRESS, out), (Direction.INGRESS, inp)):
            assert got[d] and truth_.endswith(got[d])
        assert got[Direction.EGRESS if view is capture.of(cli.pid)[0] else Direction.INGRESS] \
            .endswith(req("/close"))


def test_iovec_entries_share_records(capture, netns, tmp_path):
    """A response written by one sendmsg() of two iovec entries (head, body), like nginx's
    writev: the entries are packed into the same 16 KiB records, every byte exact."""
    sends = [(req("/size/100"), 1), (req("/size/40000"), 1), (req("/close"), 1)]
    server, client, srv, cli = run_pair(capture, netns, tmp_path, sends,
                                        server_args=("--sendmsg",))
    s_sent, _ = truth(tmp_path, "server0")
    assert server.stream(Direction.EGRESS) == s_sent
    egress = [e for e in data_events(capture.events, srv.pid)
              if isinstance(e, Data) and e.direction == Direction.EGRESS]
    small, *big, close = egress
    head = s_sent[:s_sent.index(b"\r\n\r\n") + 4]
    assert small.payload == s_sent[:len(head) + 100]  # head and body: one record
    assert [len(e.payload) for e in big[:-1]] == [16384] * (len(big) - 1)  # full records
    assert sum(len(e.payload) for e in big) == len(s_sent) - len(small.payload) - len(close.payload)
