"""Compare replayed pairs with the Zeek http.log rows of ../shared/corpus (shared by the
conformance test and the README table generator)."""

from __future__ import annotations

import json
import os
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


def replay(capture: Path):
    """(records, pipeline, exit status) of replaying one capture."""
    from appliance.replay import replay_files
    from appliance.core.pipeline import Pipeline
    from appliance.format.record import Formatter
    from appliance.sinks.memory import ListSink

    sink = ListSink()
    pipeline = Pipeline()
    status = replay_files([str(capture)], pipeline, sink, formatter=Formatter())
    return sink.records, pipeline, status


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
    recs = [r for r in replay(capture_for(expected))[0] if r["is_pending"] == "false"]
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
    """(row, rec, side, want, got) where a text body's decoded length differs from Zeek's."""
    out = []
    for row, rec in matched:
        for side, zkey in (("request", "request_body_len"), ("response", "response_body_len")):
            want = row.get(zkey)
            if (want is None or rec.get(side + "PayloadEncoding")
                    or side + "_truncated" in rec.get("anomalies", "")):
                continue
            got = len(rec[side + "Payload"].encode("utf-8"))
            if str(got) != str(want):
                out.append((row, rec, side, want, got))
    return out


def table() -> str:
    lines = ["| capture | Zeek rows with request and response | our pairs | matched | body lengths checked |",
             "|---|---:|---:|---:|---:|"]
    tot = [0, 0, 0, 0]
    for e in expected_files():
        rows, recs, matched, missing, extra = compare(e)
        checked = sum(1 for row, rec in matched for k in ("request_body_len", "response_body_len")
                      if row.get(k) is not None)
        name = e.name[: -len(".jsonl")].replace("__", "/").split("/Traces/")[-1]
        lines.append(f"| {name} | {len(rows)} | {len(recs)} | {len(matched)} | {checked} |")
        for i, v in enumerate((len(rows), len(recs), len(matched), checked)):
            tot[i] += v
    lines.append(f"| **total** | {tot[0]} | {tot[1]} | {tot[2]} | {tot[3]} |")
    lines.append("")
    lines.append(f"Recall {tot[2] / tot[0]:.3f}, precision {tot[2] / tot[1]:.3f}.")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    print(table())
