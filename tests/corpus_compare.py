"""Compare replayed pairs with the Zeek http.log rows of ../shared/corpus (shared by the
conformance test and the README table generator)."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

CORPUS = Path(os.environ.get("APPLIANCE_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "corpus"))

KEYS = (("id.orig_h", "ip"), ("id.orig_p", "srcPort"), ("id.resp_h", "destIp"),
        ("id.resp_p", "destPort"), ("method", "method"), ("uri", "path"),
        ("status_code", "statusCode"))


def expected_files():
    return sorted((CORPUS / "expected").glob("*.jsonl"))


def capture_for(expected: Path) -> Path:
    rel = expected.name[: -len(".jsonl")].replace("__", "/")
    return CORPUS / "pcaps" / rel


def replay(capture: Path) -> list[dict]:
    from appliance.commands import replay_files
    from appliance.core.pipeline import Pipeline

    class Sink:
        def __init__(self):
            self.records = []

        def write(self, recs):
            self.records.extend(recs)

    sink = Sink()
    replay_files([str(capture)], Pipeline(), sink)
    return sink.records


def _norm(key: str, value) -> str:
    text = "" if value is None else str(value)
    # Zeek logs the URI percent-decoded; the record keeps it as sent on the wire
    return unquote(text) if key == "path" else text


def row_key(row: dict):
    return tuple((ours, _norm(ours, row.get(z))) for z, ours in KEYS if z in row)


def matches(rec: dict, key) -> bool:
    return all(_norm(k, rec.get(k)) == v for k, v in key)


def compare(expected: Path):
    """Return (rows, pairs, matched list of (row, rec), unmatched rows, unmatched pairs)."""
    rows = [json.loads(line) for line in expected.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("method") and r.get("status_code") not in (None, "")]
    recs = [r for r in replay(capture_for(expected)) if r["is_pending"] == "false"]
    free = list(recs)
    matched, missing = [], []
    for row in rows:
        key = row_key(row)
        hit = next((rec for rec in free if matches(rec, key)), None)
        if hit is None:
            missing.append(row)
        else:
            free.remove(hit)
            matched.append((row, hit))
    return rows, recs, matched, missing, free


def body_len_mismatches(matched):
    out = []
    for row, rec in matched:
        want = row.get("response_body_len")
        if want is None or rec.get("responsePayloadEncoding") or "response_truncated" in rec.get("anomalies", ""):
            continue
        got = len(rec["responsePayload"].encode("utf-8"))
        if str(got) != str(want):
            out.append((row, rec, got))
    return out
