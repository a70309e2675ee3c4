"""TCP stream assembly, from bytes: order, retransmission, overlap, wrap-around, the gap
policy (evidence plus grace), mid-stream starts, timestamps and ACK events, limits."""

import random

from appliance import synth
from appliance.core.stream import UNKNOWN, Acct, StreamConsumer
from appliance.core.tcp import MASK, TcpConfig, TcpStats, TcpStream
from helpers import run_frames, run_pairs

ACK, PSH, FIN, SYN, RST = synth.ACK, synth.PSH, synth.FIN, synth.SYN, synth.RST


class Recorder(StreamConsumer):
    """A stream consumer that records every event, per direction."""

    def __init__(self):
        self.events = []

    def data(self, d, off, ts, payload):
        self.events.append(("data", d, off, ts, payload))

    def gap(self, d, off, n):
        self.events.append(("gap", d, off, n))

    def ack(self, d, off):
        self.events.append(("ack", d, off))

    def eof(self, d):
        self.events.append(("eof", d))

    def text(self, d=0):
        out = b""
        for e in self.events:
            if e[1] != d:
                continue
            if e[0] == "data":
                assert e[2] == len(out), ("offsets must be contiguous", e[2], len(out))
                out += e[4]
            elif e[0] == "gap" and e[3] != UNKNOWN:
                assert e[2] == len(out)
                out += b"?" * e[3]
        return out

    def kinds(self, kind, d=0):
        return [e for e in self.events if e[0] == kind and e[1] == d]


def pair_of_streams(**cfg):
    rec, st, acct = Recorder(), TcpStats(), Acct()
    c = TcpConfig(**cfg)
    a, b = TcpStream(0, rec, st, c, acct), TcpStream(1, rec, st, c, acct)
    a.peer, b.peer = b, a
    return a, b, rec, st, acct


def test_in_order_and_out_of_order_delivery():
    a, _, rec, st, acct = pair_of_streams()
    a.segment(0.0, 1, 99, -1, SYN, b"")
    a.segment(0.2, 2, 106, -1, ACK, b"world")
    assert rec.text() == b""
    a.segment(0.3, 3, 100, -1, ACK, b"hello ")
    assert rec.text() == b"hello world"
    # nothing held; only the last segment delivered is kept (to check retransmissions)
    assert st.ooo_segments == 1 and a.held_bytes == 0 and acct.n == len(b"world")


def test_each_segment_keeps_its_own_capture_timestamp():
    a, _, rec, _, _ = pair_of_streams()
    a.segment(1.0, 1, 99, -1, SYN, b"")
    a.segment(5.0, 2, 104, -1, ACK, b"late")  # held
    a.segment(7.0, 3, 100, -1, ACK, b"abcd")  # fills the hole
    assert [(e[2], e[3]) for e in rec.kinds("data")] == [(0, 7.0), (4, 5.0)]


def test_ack_events_carry_each_segments_own_acknowledgement_in_peer_offsets():
    a, b, rec, _, _ = pair_of_streams()
    a.segment(0.0, 1, 999, -1, SYN, b"")
    b.segment(0.0, 2, 4999, 1000, SYN | ACK, b"")
    b.note_ack(1000)
    a.segment(0.1, 3, 1000, 5000, ACK, b"GET")  # client had received 0 server bytes
    b.segment(0.2, 4, 5000, 1003, ACK, b"HTTP")  # server had received 3 client bytes
    assert rec.kinds("ack", 0) == [("ack", 0, 0)]
    assert rec.kinds("ack", 1) == [("ack", 1, 3)]
    # an acknowledgement is reported before the data it applies to, and only when it changes
    b.segment(0.3, 5, 5004, 1003, ACK, b"/1.1")
    events = [e[:3] for e in rec.events if e[1] == 1]
    assert events == [("ack", 1, 3), ("data", 1, 0), ("data", 1, 4)]


def test_retransmission_and_overlap_first_copy_wins():
    a, _, rec, st, _ = pair_of_streams()
    a.segment(0, 1, 999, -1, SYN, b"")
    a.segment(0, 2, 1000, -1, ACK, b"abcdef")
    a.segment(0, 3, 1000, -1, ACK, b"abcdef")  # exact retransmission
    a.segment(0, 4, 1003, -1, ACK, b"XYZghi")  # overlaps "def" with different bytes
    assert rec.text() == b"abcdefghi"
    assert st.retransmits == 1 and st.inconsistent_overlaps == 1


def test_overlap_between_held_segments_counted():
    a, _, rec, st, _ = pair_of_streams()
    a.segment(0, 1, 999, -1, SYN, b"")
    a.segment(0, 2, 1000, -1, ACK, b"0123")
    a.segment(0, 3, 1010, -1, ACK, b"abcd")
    a.segment(0, 4, 1010, -1, ACK, b"abXX")  # same start, different bytes: first copy kept
    a.segment(0, 5, 1004, -1, ACK, b"456789")
    assert rec.text() == b"0123456789abcd"
    assert st.inconsistent_overlaps == 1


def test_sequence_wrap_around():
    a, _, rec, _, _ = pair_of_streams()
    start = 0xFFFFFFFF - 5
    a.segment(0, 1, start - 1, -1, SYN, b"")
    a.segment(0, 2, (start + 10) & MASK, -1, ACK, b"KLMNO")  # after the wrap, early
    a.segment(0, 3, start, -1, ACK, b"ABCDEFGHIJ")  # crosses 2**32
    a.segment(0, 4, (start + 15) & MASK, -1, FIN | ACK, b"")
    assert rec.text() == b"ABCDEFGHIJKLMNO"
    assert rec.kinds("eof") == [("eof", 0)]


def test_fin_waits_for_missing_bytes():
    a, _, rec, _, _ = pair_of_streams()
    a.segment(0, 1, 0, -1, SYN, b"")
    a.segment(0, 2, 1, -1, ACK, b"aa")
    a.segment(0, 3, 5, -1, FIN | ACK, b"cc")
    assert rec.kinds("eof") == []
    a.segment(0, 4, 3, -1, ACK, b"bb")
    assert rec.text() == b"aabbcc" and rec.kinds("eof") == [("eof", 0)]


def test_peer_ack_past_a_hole_is_evidence_but_the_late_segment_within_the_grace_is_used():
    # the bug: the hole was skipped as soon as the peer's ACK passed it, so a segment
    # arriving a few packets later was dropped as a retransmission
    a, b, rec, st, _ = pair_of_streams(grace_packets=4, grace_time=0.05)
    a.segment(0.00, 1, 99, -1, SYN, b"")
    b.segment(0.00, 2, 499, 100, SYN | ACK, b"")
    a.segment(0.01, 3, 100, 500, ACK, b"one ")
    a.segment(0.02, 4, 108, 500, ACK, b"three ")  # "two " (104..108) is late
    b.note_ack(114)  # the peer acknowledged everything: evidence the hole was captured late
    a.check(0.03, 5)
    a.check(0.04, 6)
    assert rec.kinds("gap") == []
    a.segment(0.05, 7, 104, 500, ACK, b"two ")  # arrives 4 packets after the evidence
    assert rec.text() == b"one two three " and st.gaps == 0 and st.retransmits == 0


def test_a_hole_is_skipped_only_after_evidence_and_both_graces():
    a, b, rec, st, _ = pair_of_streams(grace_packets=3, grace_time=0.05, gap_timeout=60)
    a.segment(0.0, 1, 99, -1, SYN, b"")
    a.segment(0.0, 2, 100, -1, ACK, b"aaaa")
    a.segment(0.0, 3, 108, -1, ACK, b"cccc")  # bytes 104..108 missing
    a.check(10.0, 50)  # no evidence: nothing happens however long we wait (below timeout)
    assert rec.kinds("gap") == []
    b.note_ack(112)  # the peer received past the hole
    a.check(10.0, 51)  # evidence seen at packet 51
    a.check(10.1, 53)  # enough time, not enough packets
    a.check(10.01, 54)  # enough packets, not enough time since the evidence
    assert rec.kinds("gap") == []
    a.check(10.1, 54)
    assert rec.kinds("gap") == [("gap", 0, 4, 4)]
    assert rec.text() == b"aaaa????cccc" and st.gaps == 1 and st.gap_bytes == 4


def test_a_hole_without_evidence_is_skipped_after_the_timeout():
    a, _, rec, _, _ = pair_of_streams(gap_timeout=2.0)
    a.segment(10.0, 1, 0, -1, SYN, b"")
    a.segment(10.0, 2, 1, -1, ACK, b"a")
    a.segment(10.1, 3, 5, -1, ACK, b"b")
    a.segment(11.0, 4, 6, -1, ACK, b"c")
    assert rec.kinds("gap") == []
    a.segment(12.5, 5, 7, -1, ACK, b"d")
    assert rec.text() == b"a???bcd"


def test_own_fin_beyond_the_hole_is_evidence():
    a, _, rec, _, _ = pair_of_streams(grace_packets=2, grace_time=0.0)
    a.segment(0.0, 1, 0, -1, SYN, b"")
    a.segment(0.0, 2, 1, -1, ACK, b"ab")
    a.segment(0.0, 3, 5, -1, FIN | ACK, b"ef")  # the evidence is seen at packet 3
    a.check(0.0, 4)
    assert rec.kinds("gap") == []
    a.check(0.0, 5)
    assert rec.kinds("gap") == [("gap", 0, 2, 2)] and rec.kinds("eof") == [("eof", 0)]


def test_held_cap_in_bytes_and_in_segments_skips_at_once():
    a, _, rec, st, _ = pair_of_streams(max_held_bytes=100 + 2 * 160)
    a.segment(0, 1, 0, -1, SYN, b"")
    a.segment(0, 2, 1, -1, ACK, b"x" * 10)
    a.segment(0, 3, 21, -1, ACK, b"y" * 60)
    assert rec.kinds("gap") == []
    a.segment(0, 4, 81, -1, ACK, b"z" * 60)  # held 120 + overhead > cap: give up the hole
    assert rec.text() == b"x" * 10 + b"?" * 10 + b"y" * 60 + b"z" * 60
    assert st.held_cap_skips == 1 and a.held_bytes == 0
    b, _, rec2, st2, _ = pair_of_streams(max_held_segments=3)
    b.segment(0, 1, 0, -1, SYN, b"")
    for i in range(4):
        b.segment(0, 2 + i, 10 + 2 * i, -1, ACK, b"s")
    assert st2.held_cap_skips == 1 and rec2.kinds("gap", 0)


def test_max_ack_only_moves_forward_modulo_2_32():
    a, _, _, _, _ = pair_of_streams()
    a.note_ack(0xFFFFFFF0)
    a.note_ack(0xFFFFFF00)  # older: ignored
    assert a.max_ack == 0xFFFFFFF0
    a.note_ack(0x10)  # newer, after the wrap
    assert a.max_ack == 0x10
    a.note_ack(0xFFFFFFF8)  # older than 0x10 modulo 2**32
    assert a.max_ack == 0x10


def test_direction_first_seen_mid_stream_accepts_an_earlier_segment_arriving_next():
    a, _, rec, st, _ = pair_of_streams(grace_packets=3, grace_time=0.0)
    a.segment(1.0, 1, 5010, -1, ACK, b"world")  # no SYN was captured
    a.segment(1.1, 2, 5000, -1, ACK, b"hello, ___")  # an earlier segment arrives next
    a.segment(1.2, 3, 5015, -1, ACK, b"!")
    a.check(1.3, 4)
    assert rec.events[0] == ("gap", 0, 0, UNKNOWN)
    assert rec.text() == b"hello, ___world!" and st.midstream == 1
    # bytes from before the start fixed that way are counted, never silently dropped
    a.segment(1.4, 5, 4990, -1, ACK, b"0123456789")
    assert st.discarded_before_start == 10


def test_the_peers_syn_ack_fixes_the_start_of_a_direction_whose_syn_was_not_captured():
    a, b, rec, st, _ = pair_of_streams(grace_packets=100, grace_time=100)
    b.segment(1.0, 1, 4999, 7000, SYN | ACK, b"")  # acknowledges the client's ISN + 1
    a.segment(1.1, 2, 7004, 5000, ACK, b"tail")
    a.segment(1.2, 3, 7000, 5000, ACK, b"data")
    assert rec.text() == b"datatail" and st.midstream == 0


def test_the_peers_ack_is_not_taken_as_the_start_of_a_stream_first_seen_mid_way():
    # it only says what the peer had received; a mirror may deliver earlier bytes later
    a, b, rec, st, _ = pair_of_streams(grace_packets=3, grace_time=0.0)
    b.note_ack(7010)
    a.segment(1.0, 1, 7010, -1, ACK, b"second")
    a.segment(1.1, 2, 7000, -1, ACK, b"first, and")
    a.check(1.2, 3)
    assert rec.text() == b""  # still within the grace
    a.check(1.3, 4)
    assert rec.text() == b"first, andsecond" and st.midstream == 1


def test_close_flushes_held_segments_with_gaps():
    a, _, rec, st, acct = pair_of_streams()
    a.segment(0, 1, 0, -1, SYN, b"")
    a.segment(0, 2, 1, -1, ACK, b"a")
    a.segment(0, 3, 4, -1, ACK, b"d")
    a.segment(0, 4, 7, -1, ACK, b"g")
    a.close(1.0)
    assert rec.text() == b"a??d??g" and rec.kinds("eof") == [("eof", 0)]
    assert acct.n == 0


def test_random_reordering_and_duplication_reassembles_exactly():
    rng = random.Random(3)
    data = bytes(rng.randrange(256) for _ in range(20000))
    for trial in range(20):
        a, _, rec, st, acct = pair_of_streams(max_held_bytes=1 << 30, max_held_segments=1 << 20,
                                              gap_timeout=1e9)
        isn = rng.randrange(1 << 32)
        a.segment(0, 0, isn, -1, SYN, b"")
        segs = []
        off = 0
        while off < len(data):
            n = rng.randint(1, 1500)
            segs.append(((isn + 1 + off) & MASK, data[off:off + n]))
            off += n
        segs += rng.sample(segs, len(segs) // 4)  # duplicates
        for _ in range(10):  # overlapping re-segmentation of some ranges
            x = rng.randrange(len(data) - 100)
            segs.append(((isn + 1 + x) & MASK, data[x:x + rng.randint(1, 3000)]))
        rng.shuffle(segs)
        for i, (seq, payload) in enumerate(segs):
            a.segment(0, i, seq, -1, ACK, payload)
        assert rec.text() == data, trial
        assert st.inconsistent_overlaps == 0 and rec.kinds("gap") == []
        assert acct.n == len(a.last)


def test_sixteen_thousand_one_byte_segments_close_in_order():
    a, _, rec, _, acct = pair_of_streams(max_held_segments=1 << 20, max_held_bytes=1 << 30)
    a.segment(0, 0, 0, -1, SYN, b"")
    for i in range(16000, 0, -1):  # every segment out of order, last to first, byte 1 lost
        a.segment(0, 16001 - i, i + 1, -1, ACK, bytes([65 + i % 26]))
    a.close(1.0)
    text = rec.text()
    assert len(text) == 16001 and text[0:1] == b"?"
    assert text[1:] == bytes(65 + i % 26 for i in range(1, 16001))
    assert acct.n == 0


# -- connection level, through the pipeline ---------------------------------------------------
REQ = synth.http_request("GET", "/a")
RESP = synth.http_response(200, b"body-a")


def test_syn_fin_rst_lifecycle_and_pending_on_rst():
    c = synth.Conversation()
    c.handshake()
    c.exchange(REQ, RESP)
    c.send(True, synth.http_request("GET", "/never-answered"))
    c.reset(from_client=False)
    recs, p = run_frames(c.frames, close=False)
    assert [(r["path"], r["is_pending"]) for r in recs] == [("/a", "false"),
                                                           ("/never-answered", "true")]
    assert p.stats()["active_connections"] == 0  # RST ended it without waiting for close()


def test_fin_both_ways_ends_connection_without_close():
    c = synth.Conversation()
    c.handshake().exchange(REQ, RESP).close()
    recs, p = run_frames(c.frames, close=False)
    assert len(recs) == 1 and p.stats()["active_connections"] == 0
    assert p.buffered() == 0


def test_connection_first_seen_mid_stream_pairs_and_says_so():
    c = synth.Conversation()
    c.handshake()
    c.exchange(synth.http_request("GET", "/before"), synth.http_response(200, b"x" * 3000))
    cut = len(c.frames) - 1  # capture starts at the last segment of the first response
    c.exchange(REQ, RESP)
    c.close()
    recs, p = run_frames(c.frames[cut:])
    assert [(r["path"], r["statusCode"], r["responsePayload"]) for r in recs] == [
        ("/a", "200", "body-a")]
    assert "midstream" in recs[0]["anomalies"]
    assert p.stats()["orphan_responses"] == 0


def test_a_syn_that_arrives_after_the_first_data_joins_the_connection():
    c = synth.Conversation()
    c.handshake().exchange(REQ, RESP).close()
    frames = list(c.frames)
    frames.insert(4, frames.pop(0))  # the client's SYN is captured after its request
    recs, p = run_frames(frames)
    assert [(r["path"], r["statusCode"]) for r in recs] == [("/a", "200")]
    assert p.stats()["connections"] == 1
    assert "midstream" not in recs[0].get("anomalies", "")


def test_port_reuse_starts_a_new_connection():
    a = synth.Conversation(t=1.0)
    a.handshake().exchange(synth.http_request("GET", "/old"), synth.http_response(200, b"o"))
    # no FIN seen; the same 4-tuple opens again with a new ISN
    b = synth.Conversation(t=2.0, cseq=900000, sseq=700000)
    b.handshake().exchange(synth.http_request("GET", "/new"), synth.http_response(200, b"n")).close()
    recs, p = run_frames(a.frames + b.frames)
    assert [r["path"] for r in recs] == ["/old", "/new"]
    assert p.stats()["connections"] == 2


def test_gap_in_body_keeps_the_rest_of_the_connection():
    c = synth.Conversation()
    c.handshake()
    c.send(True, synth.http_request("GET", "/first"))
    c.send(False, synth.http_response(200, b"B" * 5000), mss=1000)
    lost = len(c.frames) - 3  # lose one segment in the middle of the body
    c.exchange(synth.http_request("GET", "/second"), synth.http_response(200, b"two"))
    c.exchange(synth.http_request("GET", "/third"), synth.http_response(201, b"three"))
    c.close()
    recs, p = run_frames(c.frames[:lost] + c.frames[lost + 1:])
    assert [(r["path"], r["statusCode"]) for r in recs] == [
        ("/first", "200"), ("/second", "200"), ("/third", "201")]
    assert "response_gap" in recs[0]["anomalies"]
    assert recs[1]["responsePayload"] == "two" and recs[2]["responsePayload"] == "three"
    assert p.stats()["gaps"] == 1 and p.stats()["gap_bytes"] == 1000


def test_idle_connections_flush_on_packet_time():
    c = synth.Conversation(t=100.0)
    c.handshake()
    c.send(True, synth.http_request("GET", "/idle"))
    other = synth.Conversation(client="10.0.0.9", cport=40001, t=200.0)
    other.handshake().exchange(REQ, RESP)
    recs, p = run_frames(c.frames + other.frames, close=False, idle_timeout=30.0)
    assert [(r["path"], r["is_pending"]) for r in recs] == [("/idle", "true"), ("/a", "false")]
    assert p.stats()["evicted"]["idle"] == 1


def test_connection_limit_evicts_least_recently_active_and_emits_pending():
    frames = []
    for i in range(5):
        c = synth.Conversation(client=f"10.0.0.{i + 1}", cport=40000 + i, t=10.0 + i)
        c.handshake()
        c.send(True, synth.http_request("GET", f"/c{i}"))
        frames += c.frames
    recs, p = run_frames(frames, close=False, max_connections=3)
    assert [r["path"] for r in recs] == ["/c0", "/c1"]
    assert all(r["is_pending"] == "true" for r in recs)
    assert p.stats()["evicted"]["connection_limit"] == 2
    assert p.stats()["active_connections"] == 3


def test_total_buffer_budget_evicts_and_counts():
    frames = []
    for i in range(4):
        c = synth.Conversation(client=f"10.0.1.{i + 1}", cport=41000 + i, t=10.0 + i * 0.01)
        c.handshake()
        c.send(True, synth.http_request("POST", f"/upload{i}", b"", [("Content-Length", "100000")]))
        c.send(True, b"u" * 50000)
        frames += c.frames
    pairs, p = run_pairs(frames, close=False, buffer_limit=120000)
    assert p.stats()["evicted"]["buffer_limit"] >= 2
    assert p.buffered() - p.table.out_bytes <= 120000
    assert {x.request.target for x in pairs} <= {"/upload0", "/upload1", "/upload2", "/upload3"}
    assert all(x.request.has_flag("incomplete") for x in pairs)
