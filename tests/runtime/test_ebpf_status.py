"""eBPF mode's /status rows, built by the supervisor from its workers' reports: one row per
process (its connections spread over workers), per pod, and per-process rates."""

from appliance.runtime.ebpf import ProcessRates, merge_processes, pods_of


def row(pid, **kw):
    base = {"pid": pid, "comm": "app", "connections": 0, "active_connections": 0, "pairs": 0,
            "server_pairs": 0, "bytes_in": 0, "bytes_out": 0, "tls_connections": 0,
            "last_seen": 0.0, "exited": False, "namespace": None, "pod": None, "container": None}
    return {**base, **kw}


def test_a_process_seen_by_two_workers_is_one_row():
    w0 = [row(10, pairs=5, connections=2, bytes_in=100, last_seen=50.0, exited=True),
          row(11, pairs=1, namespace="shop", pod="api-1")]
    w1 = [row(10, pairs=7, connections=3, bytes_in=50, last_seen=60.0,
              namespace="shop", pod="web-1", container="web"),
          row(12, pairs=0, bytes_out=10)]
    rows = merge_processes([w0, w1])
    assert [r["pid"] for r in rows] == [10, 11, 12]  # busiest first
    r10 = rows[0]
    assert (r10["pairs"], r10["connections"], r10["bytes_in"], r10["last_seen"]) == (12, 5, 150, 60.0)
    assert r10["exited"] is False  # still running in one worker's view
    assert (r10["namespace"], r10["pod"], r10["container"]) == ("shop", "web-1", "web")
    assert merge_processes([w0, w1], limit=2)[-1]["pid"] == 11
    assert merge_processes([[{"pid": "x"}], []]) == []


def test_pods_sum_their_processes():
    rows = [row(10, pairs=5, namespace="shop", pod="api-1", active_connections=2, last_seen=5.0),
            row(11, pairs=1, namespace="shop", pod="api-1", bytes_in=7, last_seen=9.0),
            row(12, pairs=9, namespace="shop", pod="web-1"),
            row(13, pairs=100)]  # a host process: no pod row
    pods = pods_of(rows)
    assert [(p["pod"], p["processes"], p["pairs"]) for p in pods] == [("web-1", 1, 9), ("api-1", 2, 6)]
    api = pods[1]
    assert api["active_connections"] == 2 and api["bytes_in"] == 7 and api["last_seen"] == 9.0


def test_process_rates_over_the_window():
    rates = ProcessRates(window=5.0)
    assert rates.annotate([row(10)])[0]["pairs_per_s"] == 0.0  # one observation: no rate
    rates.observe(100.0, [row(10, pairs=10, bytes_in=1000)])
    rates.observe(102.0, [row(10, pairs=30, bytes_in=5000), row(11, pairs=4)])
    got = {r["pid"]: r for r in rates.annotate([row(10), row(11), row(12)])}
    assert got[10]["pairs_per_s"] == 10.0 and got[10]["bytes_per_s"] == 2000.0
    assert got[11]["pairs_per_s"] == 2.0  # new in the window: counted from zero
    assert got[12]["pairs_per_s"] == 0.0
    for t in (104.0, 106.0, 108.0):
        rates.observe(t, [row(10, pairs=30, bytes_in=5000)])
    assert rates.annotate([row(10)])[0]["pairs_per_s"] == 0.0  # idle for the whole window
    assert len(rates.history) <= 4


def test_a_connection_is_found_through_proc_by_pid_and_fd():
    """What a restarted worker uses for connections it never saw opened: /proc/PID/fd and
    /proc/PID/net/tcp{,6} of the process give the socket's endpoints."""
    import os
    import socket

    from appliance.ebpf.events import ConnKey, Role
    from appliance.runtime.ebpf import recover_connection, socket_endpoints

    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        ls = socket.socket(family)
        ls.bind((host, 0))
        ls.listen()
        c = socket.create_connection((host, ls.getsockname()[1]))
        s, _ = ls.accept()
        try:
            lip, lport, rip, rport = socket_endpoints(os.getpid(), c.fileno())
            assert (lport, rport) == (c.getsockname()[1], ls.getsockname()[1])
            assert lip == rip == socket.inet_pton(family, host)
            o = recover_connection(ConnKey(os.getpid(), s.fileno(), 7), 123, False)
            assert o.role == Role.UNKNOWN and not o.from_start and o.ts == 123
            assert (o.local_port, o.remote_port) == (ls.getsockname()[1], c.getsockname()[1])
            assert o.comm and o.netns > 0
        finally:
            for x in (c, s, ls):
                x.close()
    r, w = os.pipe()
    try:
        assert socket_endpoints(os.getpid(), r) is None
        assert recover_connection(ConnKey(os.getpid(), r, 1), 1, False) is None
    finally:
        os.close(r)
        os.close(w)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert socket_endpoints(os.getpid(), udp.fileno()) is None  # not TCP
    finally:
        udp.close()


def test_ipv4_mapped_addresses_come_back_as_ipv4():
    from appliance.runtime.ebpf import _hex_addr

    assert _hex_addr("0100007F:1F90") == (bytes([127, 0, 0, 1]), 8080)
    assert _hex_addr("0000000000000000FFFF00000100007F:0050") == (bytes([127, 0, 0, 1]), 80)
    assert _hex_addr("00000000000000000000000001000000:0050") == (bytes(15) + b"\x01", 80)
