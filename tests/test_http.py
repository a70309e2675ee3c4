"""HTTP/1.x parsing and pairing, from bytes built in the test."""

from appliance import synth
from helpers import by_path, run_frames, simple_exchange

req, resp = synth.http_request, synth.http_response


def pairs(frames, **kw):
    recs, p = run_frames(frames, **kw)
    return recs, p


def test_keep_alive_sequence():
    c = synth.Conversation()
    c.handshake()
    for i in range(5):
        c.exchange(req("GET", f"/k{i}"), resp(200, b"r%d" % i))
    c.close()
    recs, p = pairs(c.frames)
    assert [(r["path"], r["responsePayload"]) for r in recs] == [(f"/k{i}", f"r{i}") for i in range(5)]
    assert p.stats()["pairs"] == 5


def test_pipelining_pairs_in_order_across_segment_boundaries():
    c = synth.Conversation(mss=37)  # messages straddle segments everywhere
    c.handshake()
    c.send(True, b"".join(req("GET", f"/p{i}") for i in range(4)))
    c.send(False, b"".join(resp(200, b"body-%d" % i) for i in range(4)))
    c.close()
    recs, _ = pairs(c.frames)
    assert [(r["path"], r["responsePayload"]) for r in recs] == [
        (f"/p{i}", f"body-{i}") for i in range(4)]


def test_chunked_body_with_extensions_and_trailers():
    body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    recs, _ = pairs(simple_exchange(req("GET", "/c"), resp(200, body, [("Transfer-Encoding", "chunked")])))
    assert recs[0]["responsePayload"] == "hello world"
    assert "anomalies" not in recs[0]


def test_chunked_request_body():
    body = synth.chunked(b'{"a":1}' * 30, 50)
    recs, _ = pairs(simple_exchange(req("POST", "/up", body, [("Transfer-Encoding", "chunked")]),
                                    resp(200, b"ok")))
    assert recs[0]["requestPayload"] == '{"a":1}' * 30


def test_close_delimited_body_completes_at_fin():
    c = synth.Conversation()
    c.handshake()
    c.exchange(req("GET", "/old", version="HTTP/1.0"),
               resp(200, b"until close " * 100, version="HTTP/1.0", length=False))
    c.close()
    recs, _ = pairs(c.frames)
    assert recs[0]["responsePayload"] == "until close " * 100
    assert "anomalies" not in recs[0]


def test_100_continue_is_not_the_final_response():
    c = synth.Conversation()
    c.handshake()
    c.send(True, req("POST", "/upload", b"", [("Expect", "100-continue"), ("Content-Length", "4")]))
    c.send(False, resp(100, b"", length=False))
    c.send(True, b"data")
    c.send(False, resp(201, b"stored", reason="Created"))
    c.close()
    recs, p = pairs(c.frames)
    assert [(r["path"], r["statusCode"], r["requestPayload"], r["responsePayload"]) for r in recs] == [
        ("/upload", "201", "data", "stored")]
    assert p.stats()["interim_responses"] == 1


def test_head_204_304_have_no_body_even_with_content_length():
    c = synth.Conversation()
    c.handshake()
    c.exchange(req("HEAD", "/h"), resp(200, b"", [("Content-Length", "5000")]))
    c.exchange(req("DELETE", "/d"), resp(204, b"", [("Content-Length", "0")]))
    c.exchange(req("GET", "/n"), resp(304, b"", [("Content-Length", "77")], reason="Not Modified"))
    c.exchange(req("GET", "/after"), resp(200, b"fine"))
    c.close()
    recs, p = pairs(c.frames)
    assert [(r["path"], r["statusCode"], r["responsePayload"]) for r in recs] == [
        ("/h", "200", ""), ("/d", "204", ""), ("/n", "304", ""), ("/after", "200", "fine")]
    assert p.stats()["orphan_responses"] == 0


def test_websocket_upgrade_pairs_handshake_then_stops_parsing():
    c = synth.Conversation()
    c.handshake()
    c.exchange(req("GET", "/ws", headers=[("Upgrade", "websocket"), ("Connection", "Upgrade")]),
               resp(101, b"", [("Upgrade", "websocket"), ("Connection", "Upgrade")], length=False))
    # frames that contain HTTP-looking text must not become pairs
    c.send(True, b"\x81\x20GET /inside HTTP/1.1\r\nHost: x\r\n\r\n")
    c.send(False, b"\x81\x20HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    c.close()
    recs, p = pairs(c.frames)
    assert [(r["path"], r["statusCode"]) for r in recs] == [("/ws", "101")]
    assert p.stats()["tunnels"] == 1 and p.stats()["orphan_responses"] == 0


def test_connect_pairs_then_tunnel():
    c = synth.Conversation(sport=3128)
    c.handshake()
    c.exchange(req("CONNECT", "api.example.com:443", host="api.example.com:443"),
               resp(200, b"", length=False, reason="Connection established"))
    c.send(True, b"\x16\x03\x01\x02\x00GET / HTTP/1.1\r\n\r\n")
    c.send(False, b"\x16\x03\x03\x00\x30HTTP/1.1 200 OK\r\n\r\n")
    c.close()
    recs, p = pairs(c.frames)
    assert [(r["method"], r["path"], r["statusCode"]) for r in recs] == [
        ("CONNECT", "api.example.com:443", "200")]
    assert p.stats()["tunnels"] == 1


def test_http_09():
    c = synth.Conversation()
    c.handshake()
    c.send(True, b"GET /index.html\r\n")
    c.send(False, b"<html>zero nine</html>\n")
    c.close()
    recs, _ = pairs(c.frames)
    assert [(r["method"], r["path"], r["type"], r["responsePayload"]) for r in recs] == [
        ("GET", "/index.html", "HTTP/0.9", "<html>zero nine</html>\n")]


def test_bare_lf_and_folded_headers():
    request = b"GET /lf HTTP/1.1\nHost: a\nX-Folded: one\n two\n\tthree\n\n"
    response = b"HTTP/1.1 200 OK\nContent-Length: 2\nX-Multi: a\n  b\n\nok"
    recs, _ = pairs(simple_exchange(request, response))
    r = recs[0]
    assert r["path"] == "/lf" and r["responsePayload"] == "ok"
    assert '"X-Folded":"one two three"' in r["requestHeaders"]
    assert '"X-Multi":"a b"' in r["responseHeaders"]


def test_response_captured_before_its_request_still_pairs():
    # the server listens on a high port, the client uses port 80, and the first data
    # packet captured is the server's response (the mirror delivered the request later)
    c = synth.Conversation(client="10.0.0.50", server="10.0.0.5", cport=80, sport=50000)
    c.handshake()
    request = req("GET", "/who")
    server_before = c.sseq  # what the client had received when it sent the request
    pieces_req = c.segments(True, request)
    pieces_resp = c.segments(False, resp(200, b"me"))
    frames = list(c.frames)  # the handshake
    t = c.t + 0.001
    for seq, data in pieces_resp:  # sent after the whole request was received
        frames.append((t, c._frame(c.server, c.client, c.sport, c.cport, seq, c.cseq, 0x18, data)))
        t += 0.001
    for seq, data in pieces_req:
        frames.append((t, c._frame(c.client, c.server, c.cport, c.sport, seq, server_before,
                                   0x18, data)))
        t += 0.001
    recs, p = pairs(frames)
    # the response came before its request in the capture; its ACK says the server had
    # the request, so it waits for it and they pair; roles come from the content
    assert [(r["ip"], r["srcPort"], r["destIp"], r["destPort"], r["statusCode"],
             r["responsePayload"]) for r in recs] == [("10.0.0.50", "80", "10.0.0.5", "50000",
                                                      "200", "me")]
    assert p.stats()["orphan_responses"] == 0


def test_roles_from_content_when_first_packet_is_from_server():
    c = synth.Conversation(client="10.0.0.50", server="10.0.0.5", cport=80, sport=50000)
    c.cseq += 1  # the client's SYN is not in the capture
    c.emit(False, synth.SYN | synth.ACK)  # capture starts at the SYN-ACK
    c.sseq += 1
    c.exchange(req("GET", "/x"), resp(200, b"y"))
    c.close()
    recs, _ = pairs(c.frames)
    assert [(r["ip"], r["srcPort"], r["destIp"], r["destPort"], r["statusCode"]) for r in recs] == [
        ("10.0.0.50", "80", "10.0.0.5", "50000", "200")]


def test_unanswered_requests_are_pending_at_end():
    c = synth.Conversation()
    c.handshake()
    c.exchange(req("GET", "/answered"), resp(200, b"a"))
    c.send(True, req("POST", "/lost", b"payload"))
    recs, p = pairs(c.frames)
    assert [(r["path"], r["is_pending"], r["requestPayload"]) for r in recs] == [
        ("/answered", "false", ""), ("/lost", "true", "payload")]
    assert p.stats()["pending"] == 1


def test_orphan_responses_are_counted_not_emitted():
    c = synth.Conversation()
    c.handshake()
    c.exchange(req("GET", "/one"), resp(200, b"1"))
    c.send(False, resp(200, b"unsolicited"))
    c.close()
    recs, p = pairs(c.frames)
    assert [r["path"] for r in recs] == ["/one"]
    assert p.stats()["orphan_responses"] == 1


def test_a_connection_that_does_not_start_with_http_is_not_http():
    # only HTTP is HTTP: bytes that are not a message start where the stream begins make
    # the connection something else, and nothing of it becomes a record
    c = synth.Conversation()
    c.handshake()
    c.send(True, b"\x00\x01binary junk without structure\r\n")
    c.exchange(req("GET", "/real"), resp(200, b"r"))
    c.close()
    recs, p = pairs(c.frames)
    assert recs == []
    assert p.stats()["not_http"] == {"not_http_bad_request_line": 1}


def test_junk_between_messages_resynchronises_without_pairing_past_it():
    c = synth.Conversation()
    c.handshake()
    c.exchange(req("GET", "/first"), resp(200, b"1"))
    c.send(True, b"\x00\x01binary junk without structure\r\n")
    c.exchange(req("GET", "/after-junk"), resp(200, b"2"))
    c.close()
    recs, p = pairs(c.frames)
    # the junk may have been (or hidden) requests: what follows it is not paired
    assert [(r["path"], r["is_pending"]) for r in recs] == [("/first", "false"),
                                                           ("/after-junk", "true")]
    assert recs[1]["anomalies"] == "unpaired_request_gap"
    assert p.stats()["violations"] == {"bad_request_line": 1}
    assert p.stats()["orphans"] == {"after_request_gap": 1}


def test_content_length_and_transfer_encoding_conflict_prefers_chunked():
    body = b"3\r\nabc\r\n0\r\n\r\n"
    recs, _ = pairs(simple_exchange(
        req("GET", "/te"), resp(200, body, [("Content-Length", "999"), ("Transfer-Encoding", "chunked")])))
    assert recs[0]["responsePayload"] == "abc"


def test_request_time_is_capture_time_of_first_request_byte():
    c = synth.Conversation(t=1_650_000_000.25, mss=10)
    c.handshake()
    first_byte_ts = c.t + c.step
    c.exchange(req("GET", "/t"), resp(200, b"x"))
    c.close()
    recs, _ = pairs(c.frames)
    assert recs[0]["time"] == str(int(first_byte_ts))


def test_many_methods_including_nonstandard():
    c = synth.Conversation()
    c.handshake()
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "QUERY", "PROPFIND", "X-CUSTOM"]
    for m in methods:
        c.exchange(req(m, f"/{m.lower()}"), resp(200, m.encode()))
    c.close()
    recs, _ = pairs(c.frames)
    assert [(r["method"], r["responsePayload"]) for r in recs] == [(m, m) for m in methods]


def test_malformed_status_line_does_not_stop_the_connection():
    c = synth.Conversation()
    c.handshake()
    c.exchange(req("GET", "/bad"), b"HTTP/1.1 abc nonsense\r\n\r\n")
    c.exchange(req("GET", "/good"), resp(200, b"g"))
    c.close()
    recs, _ = pairs(c.frames)
    assert by_path(recs)["/good"]["responsePayload"] == "g"
    assert by_path(recs)["/bad"]["statusCode"] == "0"
    assert "response_bad_status" in by_path(recs)["/bad"]["anomalies"]
