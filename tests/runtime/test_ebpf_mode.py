"""`appliance run --mode ebpf`: the whole runtime (supervisor, workers, Kafka sink through
a real broker, /status) on real probes, with real peer processes in network namespaces.

- through Tansu: exact pairs, one record per exchange when both ends are traced (the
  server's view), the per-process rows of /status, a clean stop;
- the same exchange seen both ways: tcpdump on the interface + `appliance replay` of that
  pcap give the records the eBPF run gives, apart from source, direction and tag;
- `--pid` / APPLIANCE_EBPF_PIDS: other processes' traffic never appears;
- CAPTURE_ALL=false: only TLS libraries' plaintext, no plain socket traffic;
- the appliance never traces itself (its workers' Kafka traffic) even with no filter;
- a worker killed mid-run is restarted and reads on where its ring stopped;
- bad environments: one line, exit 2.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from appliance.broker import free_port
from rt_helpers import consume_all, records

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ebpf"))
from ebpf_helpers import bpf_unavailable  # noqa: E402

_why = bpf_unavailable()
pytestmark = pytest.mark.skipif(_why is not None or not shutil.which("ip"),
                                reason=_why or "iproute2 not installed")

ROOT = Path(__file__).resolve().parents[2]
PEERS = ROOT / "tests" / "ebpf" / "peers.py"
IGNORED = ("source", "direction", "tag")

SERVER = textwrap.dedent('''
    import json, ssl, sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def log_message(self, *a): pass
        def _reply(self, body):
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        def do_GET(self):
            self._reply({"path": self.path})
        def do_POST(self):
            n = int(self.headers.get("Content-Length", 0))
            self._reply({"path": self.path, "echo": self.rfile.read(n).decode()})
    srv = ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H)
    if len(sys.argv) > 3:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[3], sys.argv[4])
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print("ready", flush=True)
    srv.serve_forever()
''')

# waits for a line on stdin (so that its pid can be traced first), then makes `conns`
# keep-alive connections of `reqs` requests each, alternating GET and POST
CLIENT = textwrap.dedent('''
    import http.client, json, ssl, sys
    host, port, conns, reqs, tag = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    tls = len(sys.argv) > 6
    sys.stdin.readline()
    for c in range(conns):
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            h = http.client.HTTPSConnection(host, port, timeout=10, context=ctx)
        else:
            h = http.client.HTTPConnection(host, port, timeout=10)
        for r in range(reqs):
            if r % 2:
                h.request("POST", f"/{tag}/c{c}/r{r}", body=json.dumps({"n": r}),
                          headers={"Content-Type": "application/json"})
            else:
                h.request("GET", f"/{tag}/c{c}/r{r}?q={r}")
            resp = h.getresponse()
            resp.read()
            assert resp.status == 200
        h.close()
    print("done", flush=True)
''')


def sh(*cmd):
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture
def veth():
    """A network namespace joined to this one by a veth pair: 10.232.x.1 here, .2 there."""
    tag = uuid.uuid4().hex[:6]
    net = 10 + int(tag[:2], 16) % 200
    ns, host_if, ns_if = f"ape{tag}", f"aeh{tag}", f"aen{tag}"
    here, there = f"10.232.{net}.1", f"10.232.{net}.2"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", ns)
        sh("ip", "addr", "add", f"{here}/24", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{there}/24", "dev", ns_if)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield ns, host_if, here, there
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    crt, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(crt)],
                   check=True, capture_output=True)
    return str(crt), str(key)


class Procs:
    """Peer processes started by a test, killed at its end."""

    def __init__(self):
        self.all: list[subprocess.Popen] = []

    def server(self, ns, addr, port, *tls):
        cmd = [sys.executable, "-c", SERVER, addr, str(port), *tls]
        if ns:
            cmd = ["ip", "netns", "exec", ns, *cmd]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.all.append(p)
        line = p.stdout.readline()
        assert line.strip() == "ready", p.stderr.read()
        return p

    def client(self, ns, addr, port, conns, reqs, tag, tls=False):
        cmd = [sys.executable, "-c", CLIENT, addr, str(port), str(conns), str(reqs), tag]
        if tls:
            cmd.append("tls")
        if ns:
            cmd = ["ip", "netns", "exec", ns, *cmd]
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        self.all.append(p)
        return p

    def kill(self):
        for p in self.all:
            if p.poll() is None:
                p.kill()
            p.wait()
            for f in (p.stdin, p.stdout, p.stderr):
                if f:
                    f.close()


@pytest.fixture
def procs():
    p = Procs()
    yield p
    p.kill()


def go(*clients, timeout=60):
    for c in clients:
        c.stdin.write("go\n")
        c.stdin.flush()
    for c in clients:
        out, err = c.communicate(timeout=timeout)
        assert out.strip() == "done", err


def expected_paths(tag, conns, reqs):
    return {("POST" if r % 2 else "GET", f"/{tag}/c{c}/r{r}" + ("" if r % 2 else f"?q={r}"))
            for c in range(conns) for r in range(reqs)}


def read_jsonl(path: Path) -> list[dict]:
    out = []
    for f in sorted(path.parent.glob(path.name + "*")):
        out += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return out


def test_ebpf_mode_through_kafka_one_record_per_exchange(veth, broker, appliance, procs):
    """Client here, server in a namespace, both traced: every exchange once, from the
    server's side (direction 1), with the real addresses and ports."""
    ns, _, here, there = veth
    srv = procs.server(ns, there, 8080)
    cli = procs.client(None, there, 8080, 3, 5, "k")
    app = appliance(["--mode", "ebpf", "--workers", "2", "--kafka", broker.bootstrap,
                     "--batch-time", "0.05", "--pid", str(srv.pid), "--pid", str(cli.pid)])
    go(cli)
    recs = records(consume_all(broker.bootstrap, "akto.api.logs", expect=15, timeout=60))
    assert len(recs) == 15
    assert {(r["method"], r["path"]) for r in recs} == expected_paths("k", 3, 5)
    ports = set()
    for r in recs:
        assert (r["ip"], r["destIp"], r["destPort"]) == (here, there, "8080")
        assert r["direction"] == "1" and r["source"] == "MIRRORING" and r["statusCode"] == "200"
        assert r["akto_vxlan_id"] == "0" and "anomalies" not in r and "tag" not in r
        body = json.loads(r["responsePayload"])
        assert body["path"] == r["path"]
        if r["method"] == "POST":
            assert body["echo"] == r["requestPayload"]
        assert abs(int(r["time"]) - time.time()) < 60
        ports.add(r["srcPort"])
    assert len(ports) == 3  # three keep-alive connections
    st = app.wait_status(lambda s: s["totals"]["pairs"] == 30 and s["drops"].get(
        "duplicate_client_view") == 15)
    assert st["mode"] == "ebpf" and st["sessions"] == []
    rows = {p["pid"]: p for p in st["processes"]}
    assert rows[srv.pid]["server_pairs"] == 15 and rows[srv.pid]["connections"] == 3
    assert rows[cli.pid]["server_pairs"] == 0 and rows[cli.pid]["connections"] == 3
    assert st["ebpf"]["kernel"]["ring_lost"] == 0
    assert st["ebpf"]["config"]["pids"] == [srv.pid, cli.pid]
    _, metrics = app.get("/metrics")
    assert f'pid="{srv.pid}",pod=""}} 15.0'.encode() in metrics
    assert app.terminate() == 0


def test_same_exchange_seen_both_ways(veth, appliance, procs, tmp_path):
    """tcpdump on the interface and the eBPF collector watch the same exchanges: `appliance
    replay` of the pcap and the eBPF run give identical records but source/direction/tag."""
    ns, host_if, here, there = veth
    srv = procs.server(ns, there, 8080)
    cli = procs.client(None, there, 8080, 3, 4, "w")
    out = tmp_path / "ebpf.jsonl"
    app = appliance(["--mode", "ebpf", "--workers", "2", "--jsonl", str(out), "--pid",
                     str(srv.pid), "--pid", str(cli.pid)])
    pcap = tmp_path / "veth.pcap"
    # --immediate-mode: packets are written as they come (libpcap otherwise holds them in
    # a block until its one-second timeout, and a SIGINT before then loses them)
    dump = subprocess.Popen(["tcpdump", "-i", host_if, "-s", "0", "-U", "--immediate-mode",
                             "-w", str(pcap), "tcp port 8080"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = dump.stderr.readline()
        assert "listening on" in line, line + dump.stderr.read()
        # `time` is whole seconds: start just after a second begins, so that the packet
        # time and the kernel time of a request (microseconds apart) fall in one second
        time.sleep(1.02 - time.time() % 1)
        began = time.time()
        go(cli)
        one_second = int(began) == int(time.time())
        time.sleep(0.5)
    finally:
        dump.send_signal(signal.SIGINT)
        summary = dump.stderr.read()
        dump.wait(10)
        dump.stderr.close()
    assert "\n0 packets dropped by kernel" in "\n" + summary, summary
    app.wait_status(lambda s: s["totals"]["pairs"] >= 12)
    assert app.terminate() == 0
    ebpf = read_jsonl(out)
    replayed = subprocess.run([sys.executable, "-m", "appliance", "replay", str(pcap), "--jsonl",
                               str(tmp_path / "pcap.jsonl"), "-q"], capture_output=True, text=True,
                              cwd=ROOT, timeout=120)
    assert replayed.returncode == 0, replayed.stderr
    pcap_recs = read_jsonl(tmp_path / "pcap.jsonl")
    assert len(ebpf) == len(pcap_recs) == 12
    assert {r["direction"] for r in ebpf} == {"1"} and {r["source"] for r in pcap_recs} == {"PCAP"}

    def strip(rs, ignored=IGNORED):
        return sorted((json.dumps({k: v for k, v in r.items() if k not in ignored}, sort_keys=True)
                       for r in rs))

    if one_second:
        assert strip(ebpf) == strip(pcap_recs)
    else:  # the machine was slow: the exchanges spread over a second boundary
        assert strip(ebpf, IGNORED + ("time",)) == strip(pcap_recs, IGNORED + ("time",))
        key = lambda r: (r["srcPort"], r["path"])  # noqa: E731
        for a, b in zip(sorted(ebpf, key=key), sorted(pcap_recs, key=key)):
            assert abs(int(a["time"]) - int(b["time"])) <= 1


def test_pid_filter_other_processes_never_appear(veth, appliance, procs, tmp_path):
    ns, _, here, there = veth
    traced_srv = procs.server(ns, there, 8080)
    other_srv = procs.server(ns, there, 8081)
    traced_cli = procs.client(None, there, 8080, 2, 3, "traced")
    other_cli = procs.client(None, there, 8081, 2, 3, "other")
    out = tmp_path / "p.jsonl"
    app = appliance(["--mode", "ebpf", "--workers", "1", "--jsonl", str(out)],
                    env={"APPLIANCE_EBPF_PIDS": f"{traced_srv.pid}"})
    go(traced_cli, other_cli)
    st = app.wait_status(lambda s: s["totals"]["pairs"] >= 6)
    time.sleep(0.5)
    assert app.terminate() == 0
    recs = read_jsonl(out)
    assert {(r["method"], r["path"]) for r in recs} == expected_paths("traced", 2, 3)
    assert len(recs) == 6
    pids = {p["pid"] for p in st["processes"]}
    assert pids == {traced_srv.pid} and other_srv.pid not in pids and other_cli.pid not in pids


def test_capture_all_false_traces_only_tls_libraries(veth, appliance, procs, tmp_path, cert):
    ns, _, here, there = veth
    plain = procs.server(ns, there, 8080)
    tls = procs.server(ns, there, 8443, *cert)
    c_plain = procs.client(None, there, 8080, 1, 3, "plain")
    c_tls = procs.client(None, there, 8443, 2, 3, "tls", tls=True)
    out = tmp_path / "t.jsonl"
    pids = [plain.pid, tls.pid, c_plain.pid, c_tls.pid]
    app = appliance(["--mode", "ebpf", "--workers", "2", "--jsonl", str(out),
                     *[a for p in pids for a in ("--pid", str(p))]], env={"CAPTURE_ALL": "false"})
    go(c_plain, c_tls)
    st = app.wait_status(lambda s: s["totals"]["pairs"] >= 12)
    time.sleep(0.5)
    assert app.terminate() == 0
    recs = read_jsonl(out)
    assert {(r["method"], r["path"]) for r in recs} == expected_paths("tls", 2, 3)
    assert len(recs) == 6 and {r["direction"] for r in recs} == {"1"}
    assert {r["destPort"] for r in recs} == {"8443"}
    assert st["ebpf"]["config"]["capture_plain"] is False
    assert st["ebpf"]["tls"]["files"], "no TLS library attached"
    rows = {p["pid"]: p for p in st["processes"]}
    assert plain.pid not in rows and c_plain.pid not in rows
    assert rows[tls.pid]["tls_connections"] == 2


def test_never_traces_itself_without_a_filter(broker, appliance, tmp_path):
    """No pid filter: the whole node is traced, but not the appliance's own processes
    (its workers talk to Kafka all the time)."""
    app = appliance(["--mode", "ebpf", "--workers", "2", "--kafka", broker.bootstrap,
                     "--batch-time", "0.05"])
    st = app.wait_status(lambda s: s["kafka"]["state"] == "up" and s["ebpf"]["kernel"]["conns_opened"] > 0,
                         timeout=30)
    time.sleep(1.5)
    st = app.status()
    own = {app.proc.pid, *app.workers()}
    assert own.isdisjoint({p["pid"] for p in st["processes"]})
    assert app.terminate() == 0


def test_killed_worker_restarts_and_reads_on(veth, appliance, tmp_path):
    """kill -9 of the only worker while a keep-alive connection is open: the new worker
    reads the ring on where the old one stopped, finds that connection (whose open record
    the dead worker had) through /proc, and pairs what follows on it, flagged mid-way."""
    ns, _, here, there = veth
    reqs = [(b"GET /before/%d HTTP/1.1\r\nHost: t\r\n\r\n" % i, 1) for i in range(2)]
    reqs += [(b"GET /after/%d HTTP/1.1\r\nHost: t\r\n\r\n" % i, 1) for i in range(3)]
    script = tmp_path / "s.json"
    script.write_text(json.dumps([[b.decode("latin-1"), n] for b, n in reqs]))
    logs = tmp_path / "logs"
    logs.mkdir()
    srv = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(PEERS), "server",
                            "--host", there, "--once", str(logs)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)
    try:
        port = srv.stdout.readline().split()[1]
        cli = subprocess.Popen([sys.executable, str(PEERS), "client", "--host", there, "--port",
                                port, "--script", str(script), "--pause-before", "2", str(logs)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        out = tmp_path / "r.jsonl"
        app = appliance(["--mode", "ebpf", "--workers", "1", "--jsonl", str(out), "--pid",
                         str(srv.pid)])
        for p in (srv, cli):
            p.stdin.write("go\n")
            p.stdin.flush()
        assert cli.stdout.readline().strip() == "paused"
        app.wait_status(lambda s: s["totals"]["pairs"] >= 2)
        [worker] = app.workers()
        os.kill(worker, signal.SIGKILL)
        app.wait_status(lambda s: s["restarts"] == 1
                        and s["memory"]["workers"][0]["state"] == "running")
        cli.stdin.write("go\n")
        cli.stdin.flush()
        assert cli.stdout.readline().strip() == "done"
        cli.wait(30)
        srv.wait(30)
        st = app.wait_status(lambda s: s["totals"]["pairs"] >= 4)
        assert app.terminate() in (0, 1)  # the killed worker lost what it held: 1 says so
    finally:
        for p in (srv, locals().get("cli")):
            if p is not None:
                if p.poll() is None:
                    p.kill()
                p.wait()
                for f in (p.stdin, p.stdout):
                    if f:
                        f.close()
    recs = read_jsonl(out)
    after = sorted(r["path"] for r in recs if r["path"].startswith("/after/"))
    # the first exchange after the kill may have begun before the new worker read on:
    # never a wrong pair, and from then on every exchange
    assert after[-2:] == ["/after/1", "/after/2"]
    for r in recs:
        if r["path"].startswith("/after/"):
            assert r["direction"] == "1" and "midstream" in r.get("anomalies", "")
            assert (r["destIp"], r["destPort"]) == (there, port) and r["ip"] == here
    assert st["totals"]["pairs"] >= 4


HOLDER = textwrap.dedent('''
    import socket, sys
    ls = socket.socket()
    ls.bind((sys.argv[1], int(sys.argv[2])))
    ls.listen(2048)
    print("ready", flush=True)
    held = []
    while True:
        held.append(ls.accept()[0])  # accepted, never read: the data waits in the kernel
''')

UPLOADER = textwrap.dedent('''
    import socket, sys
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    sys.stdin.readline()
    socks = []
    for i in range(n):
        s = socket.create_connection((host, port))
        s.sendall(b"POST /up/%d HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 100000\\r\\n\\r\\n" % i
                  + b"a" * 300)
        socks.append(s)
    print("done", flush=True)
    sys.stdin.readline()
''')


def test_buffer_threshold_evicts_least_recently_active_with_pending_requests(veth, appliance,
                                                                             tmp_path):
    """TRAFFIC_BUFFER_THRESHOLD in eBPF mode: 800 unfinished uploads held by a traced client
    do not fit in 1 MB; the least recently active connections are evicted, their requests
    sent unanswered, and what is held stays inside the budget."""
    ns, _, here, there = veth
    holder = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", HOLDER, there,
                               "8080"], stdout=subprocess.PIPE, text=True)
    up = subprocess.Popen([sys.executable, "-c", UPLOADER, there, "8080", "800"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        out = tmp_path / "b.jsonl"
        app = appliance(["--mode", "ebpf", "--workers", "1", "--jsonl", str(out), "--buffer-mb",
                         "1", "--pid", str(up.pid)])
        up.stdin.write("go\n")
        up.stdin.flush()
        assert up.stdout.readline().strip() == "done"
        st = app.wait_status(lambda s: s["drops"].get("evicted_buffer_limit", 0) > 0
                             and s["totals"]["pending"] > 0)
        assert st["memory"]["buffer_bytes"] <= 1 << 20
        assert 0 < st["totals"]["active_connections"] < 800
        up.stdin.write("bye\n")
        up.stdin.flush()
        up.wait(30)
        assert app.terminate() == 0
        recs = read_jsonl(out)
        assert {r["is_pending"] for r in recs} == {"true"} and len(recs) == 800
        assert {r["path"] for r in recs} == {f"/up/{i}" for i in range(800)}
        assert all(r["direction"] == "2" and r["requestPayload"] == "a" * 300 for r in recs)
    finally:
        for p in (up, holder):
            if p.poll() is None:
                p.kill()
            p.wait()
            for f in (p.stdin, p.stdout):
                if f:
                    f.close()


def run_cli(*args, env=None, caps=None):
    cmd = [sys.executable, "-m", "appliance", "run", "--mode", "ebpf", "--jsonl", "/dev/null",
           "--http", f"127.0.0.1:{free_port()}", *args]
    if caps:
        cmd = ["setpriv", f"--bounding-set=-all,{caps}", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={"PATH": os.environ["PATH"], **(env or {})})


def one_line(r):
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    return r.stderr


def test_bad_environments_are_one_line():
    assert "there is no process 999999" in one_line(run_cli("--pid", "999999"))
    assert "invalid APPLIANCE_EBPF_PIDS (--pid)" in one_line(run_cli("--pid", "x1"))
    err = one_line(run_cli(caps="+bpf,+perfmon"))
    assert "CAP_SYS_ADMIN" in err and "CAP_SYS_PTRACE" in err and "daemonset-ebpf.yaml" in err
    err = one_line(run_cli(caps="+bpf", env={"APPLIANCE_EBPF_TLS": "false"}))
    assert "CAP_PERFMON" in err and "CAP_SYS_ADMIN" not in err
    assert "power of two" in one_line(run_cli(env={"APPLIANCE_EBPF_RING_MB": "3"}))


def test_tls_off_needs_only_bpf_and_perfmon(appliance, tmp_path):
    """Measured: without the TLS uprobes the runtime runs on CAP_BPF + CAP_PERFMON."""
    r = subprocess.Popen(["setpriv", "--bounding-set=-all,+bpf,+perfmon", sys.executable, "-m",
                          "appliance", "run", "--mode", "ebpf", "--jsonl", str(tmp_path / "o"),
                          "--http", f"127.0.0.1:{free_port()}", "--workers", "1"],
                         stderr=subprocess.PIPE, text=True, cwd=ROOT,
                         env={"PATH": os.environ["PATH"], "APPLIANCE_EBPF_TLS": "false",
                              "AKTO_LOG_LEVEL": "INFO"})
    try:
        line = r.stderr.readline()
        while line and "started: mode ebpf" not in line:
            line = r.stderr.readline()
        assert "started: mode ebpf" in line
    finally:
        r.send_signal(signal.SIGTERM)
        assert r.wait(30) == 0
        r.stderr.close()
