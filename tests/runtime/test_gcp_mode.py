"""gcp mode: a real HTTP server and client across a veth pair between network namespaces,
captured with libpcap by `appliance run --mode gcp --interface ...`."""

import os
import shutil
import subprocess
import sys
import textwrap
import uuid

import pytest

from rt_helpers import consume_all, records

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                                reason="needs root and iproute2 for network namespaces")

SERVER = textwrap.dedent('''
    import json, sys
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
    ThreadingHTTPServer((sys.argv[1], 8080), H).serve_forever()
''')

CLIENT = textwrap.dedent('''
    import http.client, json, sys
    host, conns, reqs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    for c in range(conns):
        h = http.client.HTTPConnection(host, 8080, timeout=10)
        for r in range(reqs):
            if r % 2:
                h.request("POST", f"/c{c}/r{r}", body=json.dumps({"n": r}),
                          headers={"Content-Type": "application/json"})
            else:
                h.request("GET", f"/c{c}/r{r}?q={r}")
            resp = h.getresponse()
            resp.read()
            assert resp.status == 200
        h.close()
    print("done")
''')


def sh(*cmd):
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture
def netns(tmp_path):
    tag = uuid.uuid4().hex[:6]
    ns, host_if, ns_if = f"apc{tag}", f"aph{tag}", f"apn{tag}"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", ns)
        sh("ip", "addr", "add", "10.231.0.1/24", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", "10.231.0.2/24", "dev", ns_if)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield ns, host_if
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_gcp_mode_captures_keepalive_http_between_namespaces(netns, broker, appliance, tmp_path):
    ns, host_if = netns
    server = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SERVER,
                               "10.231.0.2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        app = appliance(["--mode", "gcp", "--interface", host_if, "--kafka", broker.bootstrap,
                         "--workers", "2", "--batch-time", "0.05"])
        # wait for the server to listen, then run the client from the host side
        for _ in range(50):
            probe = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c",
                                    "import socket; socket.create_connection(('10.231.0.2', 8080), 1)"],
                                   capture_output=True)
            if probe.returncode == 0:
                break
        client = subprocess.run([sys.executable, "-c", CLIENT, "10.231.0.2", "4", "6"],
                                capture_output=True, text=True, timeout=60)
        assert client.stdout.strip() == "done", client.stderr
        expected = 4 * 6
        recs = records(consume_all(broker.bootstrap, "akto.api.logs", expect=expected, timeout=60))
        # every request made appears with its response (the probes' empty connections
        # carry no HTTP and produce nothing)
        assert len(recs) == expected
        got = {(r["method"], r["path"]) for r in recs}
        want = {("POST" if r % 2 else "GET", f"/c{c}/r{r}" + ("" if r % 2 else f"?q={r}"))
                for c in range(4) for r in range(6)}
        assert got == want
        for r in recs:
            assert r["ip"] == "10.231.0.1" and r["destIp"] == "10.231.0.2"
            assert r["destPort"] == "8080" and r["statusCode"] == "200"
            assert r["akto_vxlan_id"] == "0" and r["source"] == "MIRRORING"
            body = __import__("json").loads(r["responsePayload"])
            assert body["path"] == r["path"]
            if r["method"] == "POST":
                assert body["echo"] == r["requestPayload"]
        st = app.wait_status(lambda s: s["totals"]["pairs"] == expected)
        assert st["mode"] == "gcp" and st["totals"]["orphan_responses"] == 0
        assert app.terminate() == 0
    finally:
        server.kill()
        server.wait()
