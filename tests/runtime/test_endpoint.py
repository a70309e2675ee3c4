"""The HTTP endpoint: bearer token for /status and /metrics, open /healthz, and a
slowloris that neither stops capture nor grows threads (issue 12, deliver 5)."""

import resource
import socket
import subprocess
import time
import urllib.error
import urllib.request

from appliance.demo import send_vxlan
from rt_helpers import consume_all, records
from traffic import connections, key


def get(url, token=None):
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def test_token_protects_status_and_metrics_not_healthz(appliance, broker):
    app = appliance(["--mode", "aws", "--kafka", broker.bootstrap, "--workers", "1"],
                    env={"APPLIANCE_HTTP_TOKEN": "s3cr3t-t0ken"})
    for path in ("/status", "/metrics"):
        code, body, headers = get(app.url + path)
        assert code == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        assert b"kafka" not in body and b"appliance_" not in body
        assert get(app.url + path, token="wrong")[0] == 401
        assert get(app.url + path, token="s3cr3t-t0ken")[0] == 200
    assert get(app.url + "/healthz")[:2] == (200, b"ok\n")
    # a real listen backlog (the stdlib server had 5: connect stalls under bursts)
    ss = subprocess.run(["ss", "-Hltn", f"sport = :{app.http_port}"], capture_output=True,
                        text=True, check=True).stdout.split()
    assert int(ss[2]) >= 1024, ss
    assert get(app.url + "/nothing-here", token="s3cr3t-t0ken")[0] == 404
    assert "s3cr3t-t0ken" not in app.log.read_text()
    assert app.terminate() == 0


def threads(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("Threads:")))


def test_slowloris_neither_stops_capture_nor_grows_threads(appliance, broker):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    app = appliance(["--mode", "aws", "--kafka", broker.bootstrap, "--workers", "1",
                     "--batch-time", "0.05"])
    pid = app.proc.pid
    before = threads(pid)
    host, port = app.url[7:].rsplit(":", 1)
    slow = []
    try:
        for _ in range(2000):  # each sends half a request head, then nothing
            s = socket.create_connection((host, int(port)), timeout=5)
            s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n")
            slow.append(s)
        assert threads(pid) == before  # one event loop, no thread per connection
        # health checks still get an answer, and capture goes on
        t0 = time.monotonic()
        assert get(app.url + "/healthz")[0] == 200
        assert time.monotonic() - t0 < 5
        frames, expected = connections(20, exchanges=2, client_net="10.95")
        send_vxlan(frames, app.udp, vni=41)
        recs = records(consume_all(broker.bootstrap, "akto.api.logs", expect=len(expected),
                                   timeout=60))
        assert {key(r) for r in recs} == expected
        assert threads(pid) == before
    finally:
        for s in slow:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert app.terminate() == 0
