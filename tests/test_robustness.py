"""Properties of the incremental parser: segmentation never changes the pairs, and no
byte stream makes the pipeline raise."""

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance import synth
from helpers import run_frames

req, resp = synth.http_request, synth.http_response

MESSAGES = [
    (req("GET", "/a?x=1", headers=[("Accept", "*/*")]), resp(200, b'{"a":1}')),
    (req("POST", "/b", b"x" * 700), resp(201, synth.chunked(b"y" * 900, 100),
                                         [("Transfer-Encoding", "chunked")], reason="Created")),
    (req("GET", "/c", headers=[("Accept-Encoding", "gzip")]),
     resp(200, synth.gzip_bytes(b"z" * 3000), [("Content-Encoding", "gzip")])),
    (req("HEAD", "/d"), resp(200, b"", [("Content-Length", "1234")])),
    (b"GET /e HTTP/1.1\nHost: h\nX-F: a\n b\n\n", b"HTTP/1.1 304 Not Modified\n\n"),
]


def conversation(mss):
    c = synth.Conversation(mss=mss)
    c.handshake()
    for rq, rs in MESSAGES:
        c.exchange(rq, rs)
    c.send(True, req("GET", "/pipelined/1") + req("GET", "/pipelined/2"))
    c.send(False, resp(200, b"p1") + resp(200, b"p2"))
    c.close()
    return c.frames


def summary(recs):
    return [(r["method"], r["path"], r["statusCode"], r["requestPayload"], r["responsePayload"],
             r["requestHeaders"], r["responseHeaders"], r.get("anomalies")) for r in recs]


def test_segmentation_never_changes_the_pairs():
    reference, _ = run_frames(conversation(1448))
    assert len(reference) == 7
    for mss in (1, 2, 3, 7, 64, 500):
        recs, _ = run_frames(conversation(mss))
        assert summary(recs) == summary(reference), mss


def test_reordering_within_and_across_directions_changes_nothing():
    frames = conversation(100)
    reference, _ = run_frames(frames)
    rng = random.Random(11)
    for _ in range(30):
        shuffled = list(frames)
        # swap neighbours (local reordering, as mirrors produce), keep timestamps in order
        for i in range(3, len(shuffled) - 4, 3):
            if rng.random() < 0.5:
                shuffled[i], shuffled[i + 1] = shuffled[i + 1], shuffled[i]
        times = sorted(t for t, _ in shuffled)
        shuffled = [(t, f) for t, (_, f) in zip(times, shuffled)]
        recs, p = run_frames(shuffled)
        assert summary(recs) == summary(reference)
        assert p.stats()["gaps"] == 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=300)), max_size=25),
       st.integers(min_value=1, max_value=50))
def test_arbitrary_streams_never_raise(chunks, mss):
    c = synth.Conversation(mss=mss)
    c.handshake()
    for from_client, data in chunks:
        if data:
            c.send(from_client, data)
    recs, p = run_frames(c.frames)
    s = p.stats()
    assert s["pairs"] + s["pending"] == len(recs)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([b"GET / HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n", b"HTTP/1.1 200 OK\r\n",
                                 b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n", b"abc",
                                 b"5\r\nhello\r\n", b"0\r\n\r\n", b"HTTP/1.1 100 Continue\r\n\r\n",
                                 b"\x00\xff", b"GET /x\r\n", b"Upgrade: websocket\r\n"]),
                max_size=30), st.booleans())
def test_http_shaped_fragments_never_raise(pieces, swap):
    c = synth.Conversation(mss=11)
    c.handshake()
    data = b"".join(pieces)
    c.send(not swap, data[: len(data) // 2])
    c.send(swap, data[len(data) // 2:])
    run_frames(c.frames)
