"""Decode stage, from bytes: link layers, VLAN/MPLS, IPv4/IPv6, fragments, tunnels."""

import struct

import pytest

from appliance import synth
from appliance.core.decode import Decoder
from helpers import run_frames, simple_exchange

REQ = synth.http_request("GET", "/v1/ping")
RESP = synth.http_response(200, b"pong")


def tcp_frame(payload=b"hello", v6=False, **kw):
    src, dst = ("2001:db8::1", "2001:db8::2") if v6 else ("10.0.0.1", "10.0.0.2")
    seg = synth.tcp(40000, 80, 1000, 1, synth.PSH | synth.ACK, payload)
    return synth.ip_packet(src, dst, 6, seg)


def test_ethernet_ipv4_tcp_fields():
    d = Decoder()
    frame = synth.ethernet(tcp_frame(b"abc"), 0x0800)
    vni, src, dst, sport, dport, seq, ack, flags, payload = d.decode(0.0, 1, frame)
    assert (vni, src, dst, sport, dport, seq, ack) == (0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]),
                                                       40000, 80, 1000, 1)
    assert flags == synth.PSH | synth.ACK
    assert payload == b"abc"


def test_padding_is_trimmed_by_ip_length():
    d = Decoder()
    frame = synth.ethernet(tcp_frame(b"x"), 0x0800, pad_to=80)
    assert len(frame) == 80
    assert d.decode(0.0, 1, frame)[8] == b"x"


@pytest.mark.parametrize("vlans", [((0x8100, 10),), ((0x88A8, 100), (0x8100, 10)),
                                   ((0x9100, 7), (0x8100, 8))])
def test_vlan_tags(vlans):
    frame = synth.ethernet(tcp_frame(b"v"), 0x0800, vlans=vlans)
    assert Decoder().decode(0.0, 1, frame)[8] == b"v"


def test_mpls_label_stack():
    labels = struct.pack("!I", (100 << 12) | 0xFF) + struct.pack("!I", (200 << 12) | 0x1FF)
    frame = synth.ethernet(labels + tcp_frame(b"m"), 0x8847)
    assert Decoder().decode(0.0, 1, frame)[8] == b"m"


def test_ipv6_with_extension_headers():
    seg = synth.tcp(40000, 80, 1000, 1, synth.ACK, b"six")
    hop = bytes([60, 0]) + b"\x01\x04\0\0\0\0"  # hop-by-hop -> dest opts, PadN
    dst_opts = bytes([6, 0]) + b"\x01\x04\0\0\0\0"  # dest opts -> TCP
    pkt = synth.ipv6("2001:db8::1", "2001:db8::2", 0, seg, ext=hop + dst_opts)
    r = Decoder().decode(0.0, 1, synth.ethernet(pkt, 0x86DD))
    assert r[8] == b"six" and len(r[1]) == 16


def test_ipv4_fragments_out_of_order_are_reassembled():
    seg = synth.tcp(40000, 80, 1000, 1, synth.ACK, b"F" * 100 + b"G" * 100)
    frags = synth.fragment_ipv4("10.0.0.1", "10.0.0.2", 6, seg, 64, ident=77)
    assert len(frags) == 4
    d = Decoder()
    results = [d.decode(0.0, 101, f) for f in reversed(frags)]
    assert results[:3] == [None, None, None]
    assert results[3][8] == b"F" * 100 + b"G" * 100
    assert d.counts["fragments_reassembled"] == 1


def test_ipv6_fragments_are_reassembled():
    seg = synth.tcp(40000, 80, 1000, 1, synth.ACK, b"H" * 150)
    first, second = seg[:88], seg[88:]
    f1 = synth.ipv6("2001:db8::1", "2001:db8::2", 44, first,
                    ext=b"")[:40] + struct.pack("!BBHI", 6, 0, (0 << 3) | 1, 9) + first
    f2 = synth.ipv6("2001:db8::1", "2001:db8::2", 44, second,
                    ext=b"")[:40] + struct.pack("!BBHI", 6, 0, (88 // 8) << 3, 9) + second
    # fix payload lengths (the helper computed them without the fragment header)
    f1 = f1[:4] + struct.pack("!H", len(f1) - 40) + f1[6:]
    f2 = f2[:4] + struct.pack("!H", len(f2) - 40) + f2[6:]
    d = Decoder()
    assert d.decode(0.0, 101, f2) is None
    assert d.decode(0.0, 101, f1)[8] == b"H" * 150


def test_ipv6_atomic_fragment_passes_through():
    seg = synth.tcp(40000, 80, 1000, 1, synth.ACK, b"atomic")
    pkt = synth.ipv6("2001:db8::1", "2001:db8::2", 44, seg, ext=struct.pack("!BBHI", 6, 0, 0, 5))
    assert Decoder().decode(0.0, 229, pkt)[8] == b"atomic"


def test_vxlan_vni_is_kept_and_lands_in_the_record():
    frames = [(ts, synth.wrap_vxlan(f, 5569041)) for ts, f in simple_exchange(REQ, RESP)]
    recs, _ = run_frames(frames)
    assert len(recs) == 1
    assert recs[0]["akto_vxlan_id"] == "5569041"
    assert recs[0]["path"] == "/v1/ping" and recs[0]["responsePayload"] == "pong"


def test_geneve_with_options_is_decapsulated():
    opts = struct.pack("!HBB", 0x0103, 0x80, 1) + b"\0\0\0\x2a"  # one 4-byte option
    frames = []
    for ts, f in simple_exchange(REQ, RESP):
        outer = synth.ipv4("10.9.0.1", "10.9.0.2", 17, synth.udp(50000, 6081, synth.geneve(f, 77, opts)))
        frames.append((ts, synth.ethernet(outer, 0x0800)))
    recs, _ = run_frames(frames)
    assert [r["akto_vxlan_id"] for r in recs] == ["77"]


def test_geneve_carrying_ip_directly():
    frames = []
    for ts, f in simple_exchange(REQ, RESP):
        inner_ip = f[14:]
        outer = synth.ipv4("10.9.0.1", "10.9.0.2", 17,
                           synth.udp(50000, 6081, synth.geneve(inner_ip, 5, ethertype=0x0800)))
        frames.append((ts, synth.ethernet(outer, 0x0800)))
    recs, _ = run_frames(frames)
    assert [r["statusCode"] for r in recs] == ["200"]


@pytest.mark.parametrize("link", ["raw", "sll", "sll2", "null"])
def test_link_types(link):
    frames = simple_exchange(REQ, RESP, link=link)
    recs, _ = run_frames(frames, linktype=synth.LINKTYPES[link])
    assert [(r["method"], r["statusCode"]) for r in recs] == [("GET", "200")]


def test_ipv6_connection_addresses_in_record():
    frames = simple_exchange(REQ, RESP, client="2001:db8::10", server="2001:db8::20")
    recs, _ = run_frames(frames)
    assert recs[0]["ip"] == "2001:db8::10" and recs[0]["destIp"] == "2001:db8::20"


@pytest.mark.parametrize("frame,reason", [
    (b"\x02\0\0\0\0\x01\x02\0", "malformed_link"),
    (synth.ethernet(b"\x45\0\0", 0x0800), "malformed_ip"),
    (synth.ethernet(b"\x47\x00\x00\x0a" + b"\0" * 27, 0x0800), "malformed_ip"),  # total < IHL
    (synth.ethernet(synth.ipv4("10.0.0.1", "10.0.0.2", 6, b"\0" * 10), 0x0800), "malformed_tcp"),
    (synth.ethernet(synth.ipv4("10.0.0.1", "10.0.0.2", 6,
                               synth.tcp(1, 2, 0, 0, 0x10)[:12] + b"\xf0\x10" + b"\0" * 6), 0x0800),
     "malformed_tcp"),
    (synth.ethernet(synth.ipv4("10.0.0.1", "10.0.0.2", 17, synth.udp(1, 4789, b"\0" * 8 + b"x")),
                    0x0800), "malformed_vxlan"),
])
def test_malformed_packets_are_counted_not_raised(frame, reason):
    d = Decoder()
    assert d.decode(0.0, 1, frame) is None
    assert d.counts[reason] == 1
    assert d.counts["malformed"] == 1


def test_garbage_frames_never_raise():
    import random

    rng = random.Random(5)
    d = Decoder()
    base = synth.wrap_vxlan(synth.ethernet(tcp_frame(b"payload" * 20), 0x0800), 9)
    for _ in range(3000):
        b = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        cut = rng.randint(0, len(b))
        for lt in (1, 101, 113, 276, 0):
            d.decode(0.0, lt, bytes(b[:cut]))


def test_non_tcp_is_counted():
    frame = synth.ethernet(synth.ipv4("10.0.0.1", "10.0.0.2", 17, synth.udp(5353, 53, b"dns")), 0x0800)
    d = Decoder()
    assert d.decode(0.0, 1, frame) is None
    assert d.counts["not_tcp"] == 1


def test_fast_paths_agree_with_the_general_decoder():
    """The inlined Ethernet/IPv4/TCP path (plain, VXLAN-wrapped, and VXLAN socket payload)
    must give exactly what the general layered decoder gives."""
    from appliance.core.decode import LINKTYPE_VXLAN_PAYLOAD

    d = Decoder()
    c = synth.Conversation(client="10.1.2.3", server="10.9.8.7", cport=5555, sport=8080)
    c.handshake().exchange(REQ, synth.http_response(200, b"x" * 3000)).close()
    for _, f in c.frames:
        padded = f + b"\0" * 20  # trailing padding must be trimmed identically
        assert d.decode(0.0, 1, padded) == d._ether(0.0, padded, 0, 0, 0)
        wrapped = synth.wrap_vxlan(f, 123456)
        assert d.decode(0.0, 1, wrapped) == d._ether(0.0, wrapped, 0, 0, 0)
        assert d.decode(0.0, 1, wrapped)[0] == 123456
        payload = synth.vxlan(f, 99)
        assert d.decode(0.0, LINKTYPE_VXLAN_PAYLOAD, payload) == d._vxlan(0.0, payload, 0, len(payload), 0, 0)
