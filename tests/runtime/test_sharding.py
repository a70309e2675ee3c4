"""Worker sharding: the kernel picks the socket with our cBPF program, symmetrically."""

import time

from appliance import synth
import pytest

from appliance.runtime.sources import geneve_shard_of, shard_of, udp_sockets
from traffic import connections


def _drain(sock):
    out = []
    while True:
        try:
            out.append(sock.recv(65535))
        except BlockingIOError:
            return out


def v6_frames(n):
    frames = []
    for i in range(n):
        c = synth.Conversation(client=f"2001:db8::{i + 1:x}", server="2001:db8:ffff::10",
                               cport=40000 + i, sport=443)
        c.handshake().exchange(synth.http_request("GET", "/"), synth.http_response(200, b"x"))
        frames += c.frames
    return frames


OPTS = b"\x01\x03\x80\x01\0\0\0\x2a"  # one 8-byte GENEVE option


@pytest.mark.parametrize("tunnel,wrap,mirror", [
    ("vxlan", lambda f: synth.vxlan(f, 3), shard_of),
    ("geneve", lambda f: synth.geneve(f, 3, options=OPTS), geneve_shard_of),
    ("geneve", lambda f: synth.geneve(f[14:], 3, ethertype=0x0800), geneve_shard_of),
    ("vxlan", lambda f: synth.vxlan(f, 3), shard_of),
    ("geneve", lambda f: synth.geneve(f[14:], 3, options=OPTS, ethertype=0x86DD), geneve_shard_of),
], ids=["vxlan", "geneve-ethernet-with-options", "geneve-ipv4", "vxlan-ipv6", "geneve-ipv6"])
def test_kernel_choice_matches_symmetric_hash(tunnel, wrap, mirror, request):
    import socket

    v6 = "ipv6" in request.node.callspec.id
    n = 3
    socks = udp_sockets("127.0.0.1", 0, 1)  # find a free port
    port = socks[0].getsockname()[1]
    socks[0].close()
    socks = udp_sockets("127.0.0.1", port, n, tunnel=tunnel)
    try:
        frames = v6_frames(60) if v6 else connections(60, exchanges=1)[0]
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sent = [wrap(f) for _, f in frames]
        for d in sent:
            tx.sendto(d, ("127.0.0.1", port))
        tx.close()
        time.sleep(0.3)
        got = [_drain(s) for s in socks]
        assert sum(map(len, got)) == len(sent)
        for i, datagrams in enumerate(got):
            assert datagrams, f"socket {i} got nothing: sharding is not spreading"
            assert all(mirror(d, n) == i for d in datagrams)
        # and the mirror is symmetric: both directions of each connection on one socket
        by_conn = {}
        for _, f in frames:
            if v6:
                a, b = f[22:38] + f[54:56], f[38:54] + f[56:58]
            else:
                a, b = f[26:30] + f[34:36], f[30:34] + f[36:38]
            by_conn.setdefault(min(a, b) + max(a, b), set()).add(mirror(wrap(f), n))
        assert all(len(v) == 1 for v in by_conn.values())
    finally:
        for s in socks:
            s.close()


def test_both_directions_share_a_shard_and_fragments_hash_on_addresses():
    c = synth.Conversation(client="192.0.2.7", server="198.51.100.9", cport=51000, sport=443)
    c.handshake().exchange(synth.http_request("GET", "/"), synth.http_response(200, b"x"))
    shards = {shard_of(synth.vxlan(f, 1), 7) for _, f in c.frames}
    assert len(shards) == 1
    frag = synth.fragment_ipv4("192.0.2.7", "198.51.100.9", 6, b"z" * 64, 16, ident=3)
    fs = {shard_of(synth.vxlan(synth.ethernet(f, 0x0800), 1), 7) for f in frag}
    assert len(frag) == 4 and len(fs) == 1


def test_batch_receiver_reads_many_datagrams_per_call():
    import socket

    from appliance.runtime.sources import BatchReceiver

    rx_sock = udp_sockets("127.0.0.1", 0, 1)[0]
    port = rx_sock.getsockname()[1]
    rx = BatchReceiver(rx_sock, batch=64)
    assert rx.libc is not None  # recvmmsg is available on Linux
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = [bytes([i]) * (100 + i * 37) for i in range(150)]
    for d in sent:
        tx.sendto(d, ("127.0.0.1", port))
    time.sleep(0.2)
    got = []
    calls = 0
    while True:
        batch = rx.receive()
        if not batch:
            break
        calls += 1
        got += batch
    assert got == sent and calls == 3
    assert rx.receive() == []
    tx.close()
    rx_sock.close()
