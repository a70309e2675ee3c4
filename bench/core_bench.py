"""Core pathologies: inputs that used to blow up, timed (bounded time is shown here, not
asserted in tests).

    python bench/core_bench.py

Prints, for each input, the seconds it takes and what came out:
- 33 KB of alternating request heads and junk lines in one delivery (used to recurse
  until RecursionError);
- 16,000 one-byte segments held out of order, then the connection closed (a dict scanned
  with min() made this 48 s);
- a 120 KB request head at MSS 100 against the same head at MSS 1448 (the head buffer
  used to be re-scanned from the start on every segment: 10x);
- 2,000 IP fragments of one datagram in random order (the cache re-sorted on each);
- one connection pipelining 200,000 requests with no response (the queue was unbounded:
  1.7 GB for a million) — peak ``buffered()`` and the process's peak RSS.
"""

from __future__ import annotations

import random
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from appliance import synth  # noqa: E402
from appliance.core.decode import FragmentCache  # noqa: E402
from appliance.core.pipeline import Pipeline, PipelineConfig  # noqa: E402


def run(frames, cfg=None, sample_every=0):
    p = Pipeline(cfg or PipelineConfig())
    peak = 0
    pairs = 0
    t = time.perf_counter()
    for i, (ts, f) in enumerate(frames):
        p.feed(ts, 1, f)
        if sample_every and i % sample_every == 0:
            peak = max(peak, p.buffered())
            pairs += len(p.take())
    p.close()
    pairs += len(p.take())
    return time.perf_counter() - t, pairs, peak, p


def alternating() -> None:
    c = synth.Conversation(mss=65000)
    c.handshake()
    c.send(True, (b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n" + b"junk line\r\n") * 900)
    c.close()
    dt, pairs, _, p = run(c.frames)
    print(f"33 KB alternating heads/junk, one delivery: {dt * 1000:8.1f} ms, {pairs} records, "
          f"flow errors {p.stats()['flow_errors']}")


def one_byte_segments() -> None:
    c = synth.Conversation()
    c.handshake()
    frames = list(c.frames)
    for i in range(16000, 0, -1):
        frames.append((c.t, c._frame(c.client, c.server, c.cport, c.sport, c.cseq + i, c.sseq,
                                     0x18, b"x")))
    cfg = PipelineConfig(max_held_segments=1 << 20, max_held_per_direction=1 << 30,
                         gap_timeout=1e9)
    dt, _, _, p = run(frames, cfg)
    print(f"16,000 one-byte segments held, then close: {dt * 1000:8.1f} ms "
          f"({p.stats()['out_of_order_segments']} held)")


def big_head() -> None:
    head = synth.http_request("GET", "/big", headers=[(f"X-{i}", "y" * 100) for i in range(1200)])
    times = {}
    for mss in (1448, 100):
        c = synth.Conversation(mss=mss)
        c.handshake().exchange(head, synth.http_response(200, b"ok")).close()
        dt, pairs, _, _ = run(c.frames)
        times[mss] = dt
    print(f"{len(head) // 1000} KB head: MSS 1448 {times[1448] * 1000:7.1f} ms, MSS 100 "
          f"{times[100] * 1000:7.1f} ms ({times[100] / times[1448]:.1f}x for "
          f"{1448 / 100:.1f}x the segments)")


def fragments() -> None:
    payload = bytes(random.Random(1).randrange(256) for _ in range(2000 * 8))
    pieces = synth.fragment_ipv4("10.0.0.1", "10.0.0.2", 17, payload, 8, ident=9)
    random.Random(2).shuffle(pieces)
    cache = FragmentCache({}, max_bytes=1 << 30)
    t = time.perf_counter()
    out = None
    for piece in pieces:
        frag = int.from_bytes(piece[6:8], "big")
        r = cache.add(0.0, (4, b"", b"", 9, 17, 0), (frag & 0x1FFF) << 3, bool(frag & 0x2000),
                      piece[20:])
        out = r if r is not None else out
    dt = time.perf_counter() - t
    print(f"2,000 fragments in random order: {dt * 1000:8.1f} ms, reassembled "
          f"{'ok' if out == payload else 'WRONG'}")


def pipelining_flood(n: int = 200_000) -> None:
    c = synth.Conversation()
    c.handshake()
    req = synth.http_request("POST", "/flood", b"b" * 200)
    for _ in range(n):
        c.send(True, req)
    dt, pairs, peak, p = run(c.frames, sample_every=1000)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"one connection, {n:,} pipelined requests, no response: {dt:6.2f} s, {pairs:,} went "
          f"out unanswered, peak buffered() {peak / 1e6:.2f} MB, process peak RSS {rss:.0f} MB")


if __name__ == "__main__":
    alternating()
    one_byte_segments()
    big_head()
    fragments()
    pipelining_flood()
