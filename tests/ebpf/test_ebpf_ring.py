"""Reading ring buffers from their memory map (appliance.ebpf.ring), what the runtime does.

The record walk is checked on buffers laid out like the kernel's (busy and discarded
records, a record wrapping around the end, coalescing rules), then on real rings: the
streams it yields are exactly what the peers sent, and it frees the ring as it goes."""

from __future__ import annotations

import struct

import pytest

from appliance.ebpf.collector import CollectorConfig
from appliance.ebpf.events import (EV_CLOSE, EV_DATA, EV_OPEN, F_FROM_START, F_TLS, HDR,
                                   OPEN_TAIL, Close, ConnOpen, Data, Direction, Role)
from appliance.ebpf.ring import BUSY, DISCARD, decode_records
from ebpf_helpers import Capture, Peer, python_peer, write_script
from test_ebpf_plain import req, run_pair, truth

PAGE = 4096
SIZE = 4096  # data area of the constructed rings


def hdr(typ, tgid=7, fd=3, conn_id=99, direction=0, flags=F_FROM_START, role=2, ts=1000,
        offset=0, extra=0, dlen=0):
    return HDR.pack(typ, direction, role, flags, tgid, fd, dlen, conn_id, ts, offset, extra, 5)


def data(payload, offset, direction=0, **kw):
    return hdr(EV_DATA, direction=direction, offset=offset, dlen=len(payload), **kw) + payload


def opened(**kw):
    tail = OPEN_TAIL.pack(2, 8080, 41000, 0, bytes([10, 0, 0, 5]) + bytes(12),
                          bytes([10, 0, 0, 3]) + bytes(12), b"nginx".ljust(16, b"\0"))
    return hdr(EV_OPEN, extra=4026531840, **kw) + tail


class Ring:
    """A producer mapping: producer page, then the data area mapped twice."""

    def __init__(self, start: int = 0) -> None:
        self.data = bytearray(SIZE)
        self.cons = self.prod = start

    def put(self, record: bytes, flags: int = 0) -> None:
        rec = struct.pack("<II", len(record) | flags, 0) + record
        rec += bytes(-len(rec) % 8)
        for i, b in enumerate(rec):
            self.data[(self.prod + i) % SIZE] = b
        self.prod += len(rec)

    def buf(self) -> bytes:
        page = struct.pack("<Q", self.prod).ljust(PAGE, b"\0")
        return page + bytes(self.data) * 2

    def read(self, max_records=1 << 30):
        return decode_records(self.buf(), PAGE, SIZE - 1, self.cons, self.prod, max_records)


def test_records_decode_and_contiguous_data_is_joined():
    r = Ring()
    r.put(opened())
    r.put(data(b"GET / HTTP/1.1\r\n", 0, direction=1))
    r.put(data(b"HTTP/1.1 200 OK\r\n", 0))
    r.put(data(b"Content-Length: 2\r\n\r\n", 17))      # follows: joined
    r.put(data(b"ok", 38))                             # follows: joined
    r.put(data(b"more", 50))                           # a hole before it: not joined
    r.put(data(b"x", 54, fd=4))                        # another connection
    r.put(data(b"y", 55, fd=4, flags=F_TLS))           # plaintext now: not joined
    r.put(hdr(EV_CLOSE, offset=54, extra=16))
    events, cons, n, errors = r.read()
    assert (n, errors, cons) == (9, 0, r.prod)
    o, req_, resp, more, x, y, close = events
    assert isinstance(o, ConnOpen) and o.role == Role.SERVER and o.comm == "nginx"
    assert o.local_ip == bytes([10, 0, 0, 5]) and o.remote_port == 41000 and o.netns == 4026531840
    assert req_ == Data(o.key, 1000, Direction.INGRESS, 0, b"GET / HTTP/1.1\r\n", False)
    assert resp.payload == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" and resp.offset == 0
    assert (more.offset, more.payload) == (50, b"more")
    assert (x.key.fd, x.payload, y.payload, y.tls) == (4, b"x", b"y", True)
    assert isinstance(close, Close) and (close.sent, close.received) == (54, 16)


def test_busy_record_stops_the_walk_and_discarded_ones_are_skipped():
    r = Ring()
    r.put(data(b"a", 0))
    r.put(data(b"b", 1), DISCARD)
    r.put(data(b"c", 2))
    stop = r.prod
    r.put(data(b"d", 3), BUSY)
    r.put(data(b"e", 4))
    events, cons, n, _ = r.read()
    assert [e.payload for e in events] == [b"a", b"c"]  # not joined across the discarded one
    assert cons == stop and n == 2


def test_a_record_wrapping_around_the_end_reads_whole():
    r = Ring(start=SIZE - 40)
    r.cons = r.prod
    payload = bytes(range(200))
    r.put(data(payload, 0))
    [ev], cons, n, _ = r.read()
    assert ev.payload == payload and cons == r.prod


def test_short_records_are_counted_not_fatal():
    r = Ring()
    r.put(b"\x02" * 10)
    r.put(data(b"ok", 0))
    events, _, n, errors = r.read()
    assert errors == 1 and [e.payload for e in events] == [b"ok"]


@pytest.fixture(scope="module")
def direct():
    cap = Capture(direct=True)
    yield cap
    cap.close()


@pytest.mark.needs_bpf
def test_real_ring_streams_are_exact(direct, netns, tmp_path):
    body = bytes(range(256)) * 1024   # 256 KiB in 64 KiB writes: 16 KiB records joined
    sends = [(req("/a"), 1), (req("/up", body), 1), (req("/size/300000"), 1), (req("/close"), 1)]
    server, client, srv, cli = run_pair(direct, netns, tmp_path, sends,
                                        client_args=("--write-size", "65536"),
                                        server_args=("--write-size", "65536"))
    s_sent, s_recv = truth(tmp_path, "server0")
    assert server.stream(Direction.INGRESS) == s_recv
    assert server.stream(Direction.EGRESS) == s_sent
    assert client.stream(Direction.EGRESS) == s_recv
    assert client.stream(Direction.INGRESS) == s_sent
    datas = [e for e in direct.events if isinstance(e, Data) and e.key.tgid == srv.pid]
    assert max(len(e.payload) for e in datas) >= 65536  # 16 KiB records were joined
    assert all(r.pending() == 0 for r in direct.readers)  # the ring was freed


@pytest.mark.needs_bpf
def test_real_ring_wraps_many_times_while_read(netns, tmp_path):
    """A 64 KiB ring read while the peers run: it wraps many times over, and every byte
    comes out (or, if the reader fell behind, the loss is counted and shows as gaps)."""
    cap = Capture(CollectorConfig(only_listed=True, rescan_interval=0, ring_bytes=1 << 16),
                  direct=True)
    sends = [(req(f"/size/{3000 + 20 * i}"), 1) for i in range(120)] + [(req("/close"), 1)]
    srv = Peer(python_peer(netns, "server", "--once", str(tmp_path)), cap.col, wait_line="port")
    cli = Peer(python_peer(netns, "client", "--port", srv.first_line.split()[1], "--script",
                           write_script(tmp_path / "s.json", sends), str(tmp_path)), cap.col)
    try:
        srv.go()
        cli.go()
        while cli.proc.poll() is None or srv.proc.poll() is None:
            cap.pump(5)
        cap.until(lambda: all(any(r.closed for r in cap.of(p.pid)) for p in (srv, cli)))
        s_sent, s_recv = truth(tmp_path, "server0")
        [server] = cap.of(srv.pid)
        moved = sum(len(e.payload) for e in cap.events if isinstance(e, Data))
        assert moved > 8 * (1 << 16)  # the ring went round several times
        if cap.col.stats()["ring_lost"] == 0:
            assert server.stream(Direction.INGRESS) == s_recv
            assert server.stream(Direction.EGRESS) == s_sent
        else:  # a full ring is counted and shows as gaps, never as joined bytes
            assert server.gaps(0) or server.gaps(1)
    finally:
        srv.kill()
        cli.kill()
        cap.close()
