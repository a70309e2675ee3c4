"""Body decoding, caps and the Akto record shape."""

import base64
import json

import brotli
import pytest

from appliance import synth
from helpers import run_frames, simple_exchange

req, resp = synth.http_request, synth.http_response
TEXT = b'{"users":[' + b",".join(b'{"id":%d,"name":"user%d"}' % (i, i) for i in range(300)) + b"]}"


def one(request, response, **kw):
    recs, p = run_frames(simple_exchange(request, response), **kw)
    assert len(recs) == 1
    return recs[0], p


@pytest.mark.parametrize("coding,encoded", [
    ("gzip", synth.gzip_bytes(TEXT)),
    ("x-gzip", synth.gzip_bytes(TEXT)),
    ("deflate", synth.deflate_bytes(TEXT)),  # zlib-wrapped, as RFC 9110 says
    ("deflate", synth.deflate_bytes(TEXT, raw=True)),  # raw, as many servers send
    ("br", brotli.compress(TEXT)),
], ids=["gzip", "x-gzip", "deflate-zlib", "deflate-raw", "br"])
def test_content_encodings_are_decoded(coding, encoded):
    r, _ = one(req("GET", "/z"), resp(200, encoded, [("Content-Encoding", coding)]))
    assert r["responsePayload"] == TEXT.decode()
    assert "anomalies" not in r


def test_chunked_and_gzip_together():
    body = synth.chunked(synth.gzip_bytes(TEXT), 333)
    r, _ = one(req("GET", "/cz"), resp(200, body, [("Transfer-Encoding", "chunked"),
                                                   ("Content-Encoding", "gzip")]))
    assert r["responsePayload"] == TEXT.decode()


def test_transfer_coding_gzip_chunked():
    body = synth.chunked(synth.gzip_bytes(TEXT), 500)
    r, _ = one(req("GET", "/tz"), resp(200, body, [("Transfer-Encoding", "gzip, chunked")]))
    assert r["responsePayload"] == TEXT.decode()


def test_gzip_request_body():
    r, _ = one(req("POST", "/gz", synth.gzip_bytes(b"name=ada"), [("Content-Encoding", "gzip")]),
               resp(200, b"ok"))
    assert r["requestPayload"] == "name=ada"


def test_decode_error_keeps_the_pair_with_the_raw_body_and_counts():
    bad = b"\x1f\x8b\x08\x00not really gzip at all"
    recs, p = run_frames(simple_exchange(req("GET", "/bad"), resp(200, bad, [("Content-Encoding", "gzip")]))
                         + simple_exchange(req("GET", "/next"), resp(200, b"fine"), cport=40001))
    assert [r["path"] for r in recs] == ["/bad", "/next"]
    r = recs[0]
    assert "response_decode_error" in r["anomalies"]
    assert r["responsePayloadEncoding"] == "base64"
    assert base64.b64decode(r["responsePayload"]) == bad
    assert p.formatter.stats()["decode_errors"] == 1


def test_unsupported_encoding_is_kept_raw_and_marked():
    r, _ = one(req("GET", "/c"), resp(200, b"raw-bytes", [("Content-Encoding", "compress")]))
    assert r["responsePayload"] == "raw-bytes"
    assert "response_unsupported_encoding" in r["anomalies"]


def test_decoded_body_cap_truncates_and_marks():
    big = b"A" * 5000
    r, _ = one(req("GET", "/big"), resp(200, synth.gzip_bytes(big), [("Content-Encoding", "gzip")]),
               max_body=1000)
    assert r["responsePayload"] == "A" * 1000
    assert "response_truncated" in r["anomalies"]
    r, _ = one(req("POST", "/up", b"B" * 3000), resp(200, b"ok"), max_body=1000)
    assert r["requestPayload"] == "B" * 1000 and "request_truncated" in r["anomalies"]


def test_default_cap_is_one_mebibyte():
    big = b"C" * ((1 << 20) + 10)
    r, _ = one(req("GET", "/huge"), resp(200, big))
    assert len(r["responsePayload"]) == 1 << 20
    assert "response_truncated" in r["anomalies"]


def test_binary_body_is_base64_and_marked():
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    r, _ = one(req("GET", "/img"), resp(200, png, [("Content-Type", "image/png")]))
    assert r["responsePayloadEncoding"] == "base64"
    assert base64.b64decode(r["responsePayload"]) == png
    assert "requestPayloadEncoding" not in r


def test_record_keys_and_every_value_is_a_string():
    c = synth.Conversation(client="192.0.2.10", server="198.51.100.7", cport=55555, sport=8443,
                           t=1_700_000_123.9)
    c.handshake()
    c.exchange(req("POST", "/api/v1/orders?x=1", b'{"q":1}', [("Content-Type", "application/json")]),
               resp(201, b'{"ok":true}', [("Content-Type", "application/json")], reason="Created"))
    c.close()
    recs, _ = run_frames(c.frames)
    r = recs[0]
    expected_keys = {"path", "method", "requestHeaders", "responseHeaders", "requestPayload",
                     "responsePayload", "ip", "destIp", "time", "statusCode", "status", "type",
                     "akto_account_id", "akto_vxlan_id", "is_pending", "source", "srcPort",
                     "destPort"}
    assert set(r) == expected_keys
    assert all(isinstance(v, str) for v in r.values())
    assert r["path"] == "/api/v1/orders?x=1" and r["method"] == "POST"
    assert (r["ip"], r["srcPort"], r["destIp"], r["destPort"]) == ("192.0.2.10", "55555",
                                                                  "198.51.100.7", "8443")
    assert (r["statusCode"], r["status"], r["type"]) == ("201", "201 Created", "HTTP/1.1")
    assert r["time"] == "1700000123"
    assert (r["akto_account_id"], r["akto_vxlan_id"], r["is_pending"], r["source"]) == (
        "1000000", "0", "false", "PCAP")
    assert json.loads(r["requestHeaders"])["Content-Type"] == "application/json"
    assert json.loads(r["responsePayload"]) == {"ok": True}


def test_repeated_headers_are_all_kept():
    r, _ = one(req("GET", "/h", headers=[("Accept", "text/html"), ("accept", "application/json")]),
               resp(200, b"x", [("Set-Cookie", "a=1; Expires=Wed, 21 Oct 2015 07:28:00 GMT"),
                                ("Set-Cookie", "b=2"), ("Vary", "Accept"), ("Vary", "Origin")]))
    assert json.loads(r["requestHeaders"])["Accept"] == "text/html, application/json"
    h = json.loads(r["responseHeaders"])
    assert h["Set-Cookie"] == "a=1; Expires=Wed, 21 Oct 2015 07:28:00 GMT\nb=2"
    assert h["Vary"] == "Accept, Origin"


def test_source_and_account_are_configurable():
    r, _ = one(req("GET", "/s"), resp(200, b"s"), source="MIRRORING", account_id="42")
    assert (r["source"], r["akto_account_id"]) == ("MIRRORING", "42")
