"""Metamorphic tests: a mirror reorders and loses packets; the pairs must not change
(reordering) and must never be wrong (loss).

Connections are generated in code with realistic TCP (acknowledgements that say what
each side had received, pure ACKs, pipelined bursts, chunked, Content-Length and
close-delimited bodies, request bodies, 100-continue, HEAD).  Every response carries
the request it answers in an ``X-For`` header, so a wrong pair is detectable whatever
else was lost.

- every reordering within windows of 2, 4 and 8 packets gives the same pairs (method,
  path, status, body hashes) as the capture in order;
- every loss of one packet gives zero wrong pairs: each record is right, or flagged
  (its anomalies name the loss), or its request went out unanswered.
"""

from __future__ import annotations

import hashlib
import random

import pytest

from appliance import synth
from helpers import run_frames

PIPELINE_MAX = 4


def response_for(path: str, k: int, rng: random.Random, method: str) -> bytes:
    status = (200, 201, 404, 500, 302)[k % 5]
    size = rng.choice((0, 10, 300, 2000, 7000))
    body = (f"resp:{path};" * (size // 12 + 1)).encode()[:size]
    kind = rng.random()
    headers = [("X-For", path), ("Content-Type", "text/plain")]
    if method == "HEAD":
        return synth.http_response(status, b"", headers + [("Content-Length", str(size))],
                                   length=False)
    if kind < 0.3:
        return synth.http_response(status, synth.chunked(body, rng.choice((7, 100, 1000))),
                                   headers + [("Transfer-Encoding", "chunked")],
                                   length=False)
    return synth.http_response(status, body, headers)


def request_for(path: str, rng: random.Random) -> tuple[bytes, str]:
    r = rng.random()
    if r < 0.25:
        body = (f"req:{path};" * rng.randint(1, 300)).encode()
        return synth.http_request("POST", path, body, [("Content-Type", "text/plain")]), "POST"
    if r < 0.32:
        return synth.http_request("HEAD", path), "HEAD"
    return synth.http_request("GET", path, b"", [("Accept", "*/*")]), "GET"


def connection(seed: int) -> tuple[list, list]:
    """(frames, truth): truth is [(method, path, status, response body sha1)] in order."""
    rng = random.Random(seed)
    c = synth.Conversation(client=f"10.1.{seed // 200}.{seed % 200 + 1}", cport=30000 + seed,
                           t=1_700_000_000.0 + seed, mss=rng.choice((536, 1448)))
    c.handshake()
    truth = []
    k = 0
    n = rng.randint(2, 7)
    while k < n:
        burst = 1 if rng.random() < 0.7 else min(rng.randint(2, PIPELINE_MAX), n - k)
        exchanges = []
        for _ in range(burst):
            path = f"/c{seed}/r{k}"
            req, method = request_for(path, rng)
            resp = response_for(path, k, rng, method)
            exchanges.append((req, resp))
            status = int(resp.split(b" ", 2)[1])
            body = b"" if method == "HEAD" else synth_body(resp)
            truth.append((method, path, status, hashlib.sha1(body).hexdigest()))
            k += 1
        for req, _ in exchanges:
            c.send(True, req)
        if rng.random() < 0.5:
            c.emit(False, synth.ACK)  # the server acknowledges the requests
        for _, resp in exchanges:
            c.send(False, resp)
            if rng.random() < 0.5:
                c.emit(True, synth.ACK)
    c.close()
    return c.frames, truth


def synth_body(resp: bytes) -> bytes:
    head, _, rest = resp.partition(b"\r\n\r\n")
    if b"Transfer-Encoding: chunked" in head:
        out = b""
        while True:
            line, _, rest = rest.partition(b"\r\n")
            size = int(line, 16)
            if size == 0:
                return out
            out += rest[:size]
            rest = rest[size + 2:]
    return rest


def observed(records) -> list:
    out = []
    for r in records:
        body = r["responsePayload"].encode()
        out.append((r["method"], r["path"], int(r["statusCode"]), hashlib.sha1(body).hexdigest(),
                    r["is_pending"]))
    return out


def reorder(frames: list, window: int, rng: random.Random, offset: int = 0) -> list:
    out = list(frames[:offset])
    for i in range(offset, len(frames), window):
        block = list(frames[i:i + window])
        rng.shuffle(block)
        out += block
    return out


SEEDS = range(40)


@pytest.mark.parametrize("window", [2, 4, 8])
def test_reordering_within_windows_changes_no_pair(window):
    changed = []
    for seed in SEEDS:
        frames, truth = connection(seed)
        recs, _ = run_frames(frames)
        base = observed(recs)
        assert base == [t + ("false",) for t in truth], seed  # in order: exactly the truth
        rng = random.Random(seed * 31 + window)
        for variant in range(6):
            shuffled = reorder(frames, window, rng, offset=variant % window)
            got = observed(run_frames(shuffled)[0])
            if got != base:
                changed.append((seed, variant, got, base))
    assert changed == [], changed[:2]


def classify(rec: dict, truth_by_path: dict) -> str:
    """right, flagged, pending or wrong."""
    if rec["is_pending"] == "true":
        return "pending"
    got_for = _header(rec["responseHeaders"], "X-For")
    if got_for != rec["path"]:
        return "wrong" if not rec.get("anomalies") else "flagged-mismatch"
    method, path, status, digest = truth_by_path[rec["path"]]
    body = hashlib.sha1(rec["responsePayload"].encode()).hexdigest()
    if int(rec["statusCode"]) == status and body == digest and rec["method"] == method:
        return "right"
    return "flagged" if rec.get("anomalies") else "wrong"


def _header(headers_json: str, name: str):
    import json

    for k, v in json.loads(headers_json).items():
        if k.lower() == name.lower():
            return v
    return None


def test_loss_of_any_one_packet_never_gives_a_wrong_pair():
    outcomes = {"right": 0, "flagged": 0, "pending": 0, "wrong": 0, "flagged-mismatch": 0}
    wrong = []
    for seed in range(25):
        frames, truth = connection(seed)
        by_path = {t[1]: t for t in truth}
        for lost in range(len(frames)):
            recs, _ = run_frames(frames[:lost] + frames[lost + 1:])
            for rec in recs:
                kind = classify(rec, by_path)
                outcomes[kind] += 1
                if kind in ("wrong", "flagged-mismatch"):
                    wrong.append((seed, lost, rec["path"], rec["statusCode"],
                                  rec.get("anomalies")))
    assert wrong == [], wrong[:5]
    # and the loss of one packet costs little: most pairs still come out right
    assert outcomes["right"] > 0.8 * sum(outcomes.values()), outcomes


def test_loss_of_one_packet_and_reordering_together_never_give_a_wrong_pair():
    wrong = []
    for seed in range(25):
        frames, truth = connection(seed)
        by_path = {t[1]: t for t in truth}
        rng = random.Random(seed)
        for _ in range(8):
            lost = rng.randrange(len(frames))
            damaged = reorder(frames[:lost] + frames[lost + 1:], rng.choice((2, 4, 8)), rng)
            for rec in run_frames(damaged)[0]:
                if classify(rec, by_path) in ("wrong", "flagged-mismatch"):
                    wrong.append((seed, lost, rec["path"], rec["statusCode"]))
    assert wrong == [], wrong[:5]
