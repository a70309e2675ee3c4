"""Differential: the compiled core and the pure-Python core are the same program.

Both builds are loaded side by side (``appliance.core.load_core``) and fed the same
random captures — generated connections (pipelining, chunked, Content-Length, HEAD,
100-continue, close-delimited bodies), then damaged the way mirrors damage them (packets
lost, reordered within windows, duplicated, cut short), with non-HTTP conversations, IP
fragments and garbage frames mixed in, plain or VXLAN-wrapped — in the same batches
(pcapy-ng ``next_batch`` layout), single packets and recvmmsg-style datagram buffers.
After every batch the pairs each core emitted, formatted into Akto records by its own
build of the formatter, must be identical, and so must every statistic at the end.
"""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import appliance.core as core
from appliance import synth
from test_metamorphic import connection, reorder

pytestmark = pytest.mark.skipif(not core._compiled_state()[0],
                                reason=f"only one core here: {core._compiled_state()[1]}")


@pytest.fixture(scope="module")
def cores():
    return core.load_core("cython"), core.load_core("python")


def non_http(seed: int) -> list:
    rng = random.Random(seed)
    c = synth.Conversation(client=f"10.7.0.{seed % 200 + 1}", cport=40000 + seed, sport=21,
                           t=1_700_000_000.5 + seed)
    c.handshake()
    for line in (b"220 ready\r\n", b"USER anonymous\r\n", b"331 ok\r\n", b"PASS secret\r\n",
                 b"GET /x HTTP/1.1\r\n\r\n", b"230 in\r\n"):
        c.send(line[:1].isdigit() is False or rng.random() < 0.1, line)
    c.close()
    return c.frames


def garbage(rng: random.Random, n: int) -> list:
    out = []
    for i in range(n):
        size = rng.choice((0, 1, 13, 20, 34, 54, 60, 100))
        frame = bytes(rng.randrange(256) for _ in range(size))
        if rng.random() < 0.5 and size >= 34:  # plausible Ethernet/IPv4 with random rest
            frame = b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02\x08\x00\x45" + frame[15:]
        out.append((1_700_000_000.0 + i * 0.001, frame))
    return out


def fragments(seed: int) -> list:
    body = bytes(random.Random(seed).randrange(256) for _ in range(3000))
    pieces = synth.fragment_ipv4("10.0.9.1", "10.0.9.2", 6, synth.tcp(1234, 80, 1, 0, 0x18, body),
                                 600, ident=seed)
    return [(1_700_000_000.0 + k * 1e-4, synth.ethernet(p, 0x0800)) for k, p in enumerate(pieces)]


def capture(seeds: list[int], damage: dict, rng: random.Random) -> list:
    frames: list = []
    for s in seeds:
        frames += connection(s)[0]
    if damage["non_http"]:
        frames += non_http(seeds[0])
    if damage["fragments"]:
        frag = fragments(seeds[0])
        rng.shuffle(frag)
        frames += frag
    frames.sort(key=lambda f: f[0])
    if damage["lose"]:
        for _ in range(damage["lose"]):
            if frames:
                del frames[rng.randrange(len(frames))]
    if damage["dup"]:
        for _ in range(damage["dup"]):
            k = rng.randrange(len(frames))
            frames.insert(k + rng.randrange(1, 4), frames[k])
    if damage["window"] > 1:
        frames = reorder(frames, damage["window"], rng, rng.randrange(damage["window"]))
    if damage["garbage"]:
        for f in garbage(rng, damage["garbage"]):
            frames.insert(rng.randrange(len(frames) + 1), f)
    if damage["cut"]:
        frames = frames[:max(1, len(frames) * damage["cut"] // 10)]
    if damage["vxlan"]:
        frames = [(ts, synth.wrap_vxlan(f, 4242)) for ts, f in frames]
    return frames


def batch_layout(frames: list) -> tuple[bytes, bytes]:
    """pcapy-ng next_batch layout: the frames back to back, and (sec, usec, off, len) each."""
    buf = bytearray()
    meta = bytearray()
    for ts, f in frames:
        sec = int(ts)
        meta += struct.pack("=IIII", sec, int(round((ts - sec) * 1e6)), len(buf), len(f))
        buf += f
    return bytes(buf), bytes(meta)


def run(mods: dict, frames: list, mode: str, batch: int, max_connections: int) -> tuple:
    pipeline_mod = mods["appliance.core.pipeline"]
    record_mod = mods["appliance.format.record"]
    p = pipeline_mod.Pipeline(pipeline_mod.PipelineConfig(
        max_connections=max_connections, max_held_segments=64, max_outstanding=3))
    fmt = record_mod.Formatter(max_body=5000)
    steps = []
    for i in range(0, len(frames), batch):
        chunk = frames[i:i + batch]
        if mode == "batch":
            buf, meta = batch_layout(chunk)
            p.feed_batch(1, buf, meta)
        elif mode == "datagrams":
            size = 2048
            buf = bytearray(size * len(chunk))
            lens = []
            for k, (_, f) in enumerate(chunk):
                f = f[:size]
                buf[k * size:k * size + len(f)] = f
                lens.append(len(f))
            p.feed_datagrams(chunk[-1][0], 1, buf, size, lens)
        else:
            for ts, f in chunk:
                p.feed(ts, 1, f)
        steps.append([record_mod.encode(r) for r in fmt.records(p.take())])
    p.close()
    steps.append([record_mod.encode(r) for r in fmt.records(p.take())])
    stats = p.stats()
    return steps, stats, fmt.stats(), p.buffered()


damages = st.fixed_dictionaries({
    "lose": st.integers(0, 3), "dup": st.integers(0, 2), "window": st.sampled_from((1, 2, 4, 8)),
    "garbage": st.integers(0, 3), "cut": st.sampled_from((0, 0, 0, 5, 9)),
    "non_http": st.booleans(), "fragments": st.booleans(), "vxlan": st.booleans(),
})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seeds=st.lists(st.integers(0, 400), min_size=1, max_size=3, unique=True),
       damage=damages, seed=st.integers(0, 2**16),
       mode=st.sampled_from(("batch", "single", "datagrams")),
       batch=st.sampled_from((1, 7, 64)), max_connections=st.sampled_from((2, 1000)))
def test_both_cores_give_identical_pairs_and_statistics(cores, seeds, damage, seed, mode, batch,
                                                        max_connections):
    frames = capture(seeds, damage, random.Random(seed))
    compiled = run(cores[0], frames, mode, batch, max_connections)
    pure = run(cores[1], frames, mode, batch, max_connections)
    assert compiled[0] == pure[0]  # the same records, emitted at the same moments
    assert compiled[1] == pure[1]  # every pipeline statistic
    assert compiled[2] == pure[2]  # the formatter's
    assert compiled[3] == pure[3]  # and what is still held once closed (IP fragments)


def test_the_two_cores_really_are_two_builds(cores):
    compiled, pure = cores
    assert compiled["appliance.core.tcp"].COMPILED is True
    assert pure["appliance.core.tcp"].COMPILED is False
    assert pure["appliance.core.pipeline"].__file__.endswith(".py")
    assert not compiled["appliance.core.pipeline"].__file__.endswith(".py")


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=40).map(lambda b: b.translate(bytes.maketrans(b"abcdefgh", b"\r\n\r\n\r\nxy"))),
       st.integers(0, 45))
def test_the_head_end_search_agrees_with_its_regex(data, start):
    from appliance.core.http import parser

    m = parser._HEAD_END.search(data, start)
    assert parser._head_end(data, start) == (m.end() if m is not None else -1)


# field lines built from the characters that decide how a head is parsed
_field_chars = st.sampled_from([b"a", b"B", b"-", b":", b" ", b"\t", b"\r", b"\n", b"\r\n", b"x",
                                b"\xa0", b"\x85", b"\x0b", b"(", b"0", b"Content-Length",
                                b"Transfer-Encoding", b"chunked", b"Upgrade", b"5"])
_field_line = st.one_of(
    st.tuples(st.sampled_from([b"Host", b"X-A", b"Content-Length", b"Transfer-Encoding",
                               b"Content-Encoding", b"Upgrade", b"X\xa0", b"Bad Name", b""]),
              st.sampled_from([b": ", b":", b":  ", b": \t", b" : ", b"\t:"]),
              st.lists(_field_chars, max_size=6).map(b"".join),
              st.sampled_from([b"\r\n", b"\n", b" \r\n", b"\t\r\n"])).map(b"".join),
    st.lists(_field_chars, max_size=8).map(b"".join).map(lambda b: b + b"\r\n"))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request_fields=st.lists(_field_line, max_size=8), response_fields=st.lists(_field_line, max_size=8),
       body=st.sampled_from([b"", b"hello", b"5\r\nhello\r\n0\r\n\r\n"]),
       max_headers=st.sampled_from((3, 256)))
def test_both_cores_parse_any_head_alike(cores, request_fields, response_fields, body, max_headers):
    c = synth.Conversation()
    c.handshake()
    c.send(True, b"POST /x HTTP/1.1\r\n" + b"".join(request_fields) + b"\r\n" + body)
    c.send(False, b"HTTP/1.1 200 OK\r\n" + b"".join(response_fields) + b"\r\n" + body)
    c.close()
    got = []
    for mods in cores:
        pipeline_mod = mods["appliance.core.pipeline"]
        parser_mod = mods["appliance.core.http.parser"]
        p = pipeline_mod.Pipeline()
        pc = parser_mod.ParserConfig(max_headers=max_headers)
        p.table.session_cfg.parser = pc
        heads = []
        for ts, f in c.frames:
            p.feed(ts, 1, f)
        p.close()
        for pair in p.take():
            for m in (pair.request, pair.response):
                if m is not None:
                    heads.append((m.headers, m.flags, m.te, m.encoding, m.upgrade, m.mem,
                                  m.body(), m.status, m.method, m.target))
        got.append((heads, p.stats()))
    assert got[0] == got[1]
