"""A real /status endpoint whose figures the test controls, and a sample document.

Imported by conftest.py and the tests (pytest puts this folder on sys.path)."""

from __future__ import annotations

import copy
import json
import math
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from appliance.runtime.statusdoc import SCHEMA, SCHEMA_VERSION

NOW = 1763900123.4  # the fixed "now" of the sample document and of the injected clock
METRICS = ("packets_per_s", "bytes_per_s", "pairs_per_s")


def wave(rates: dict, n: int, phase: float = 0.0) -> dict:
    """``n`` seconds of per-second rates that swing around ``rates`` (deterministic), the
    last one equal to them."""
    out = {}
    for key in METRICS:
        base = rates.get(key, 0.0)
        out[key] = [round(base * (0.75 + 0.25 * math.sin((i - n + 1) / 23.0 + phase)
                                  + 0.1 * math.sin((i - n + 1) / 3.1)), 2)
                    for i in range(n)]
        if n:
            out[key][-1] = base
    return out


def sample_history(doc: dict, n: int = 600) -> dict:
    """A /status ``history`` for ``doc``: its totals and busy sessions, ``n`` seconds."""
    end = int(doc["now"]) - 1
    sessions = {}
    for i, row in enumerate(doc.get("sessions") or []):
        if isinstance(row, dict) and row.get("bytes_per_s"):
            sessions[str(row["vni"])] = wave(row, n, phase=1.0 + i)
    return {"step_s": 1, "end": end, "seconds": 600, "totals": wave(doc["rates"], n),
            "sessions": sessions, "dropped_sessions": 0}


def sample_status(**overrides) -> dict:
    """The docs/status.md example, with three sessions: two busy AWS ones and an idle GCP
    one with the largest totals, so that each sort column gives a different order; and ten
    minutes of per-second history (override ``history`` to change or drop it)."""
    doc = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "version": "0.1.0",
        "mode": "aws",
        "hostname": "ip-10-0-1-5",
        "started_at": NOW - 123.4,
        "now": NOW,
        "uptime_s": 123.4,
        "workers": 2,
        "totals": {"packets": 123456, "bytes": 98765432, "pairs": 4567, "pending": 12,
                   "connections": 890, "active_connections": 45, "malformed": 3, "gaps": 1,
                   "orphan_responses": 0, "decode_errors": 0},
        "rates": {"packets_per_s": 1000.0, "bytes_per_s": 800000.0, "pairs_per_s": 40.0},
        "sessions": [
            {"vni": 4242, "packets": 120000, "bytes": 96000000, "pairs": 4500,
             "packets_per_s": 990.0, "bytes_per_s": 790000.0, "pairs_per_s": 39.0,
             "last_seen": NOW - 0.3, "cloud": "aws", "session_id": "tms-0123456789abcdef0",
             "eni": "eni-0abc", "instance": "i-0def", "policy": None},
            {"vni": 77, "packets": 3400, "bytes": 2700000, "pairs": 60,
             "packets_per_s": 10.0, "bytes_per_s": 10000.0, "pairs_per_s": 1.0,
             "last_seen": NOW - 5, "cloud": "aws", "session_id": "tms-0fedcba9876543210",
             "eni": "eni-0777", "instance": "i-0777", "policy": None},
            {"vni": 9, "packets": 5000000, "bytes": 4000000000, "pairs": 250000,
             "packets_per_s": 0.0, "bytes_per_s": 0.0, "pairs_per_s": 0.0,
             "last_seen": NOW - 600, "cloud": "gcp", "session_id": None, "eni": None,
             "instance": None, "policy": "mirror-web-tier"},
        ],
        "memory": {"rss_bytes": 123456789, "limit_bytes": 524288000, "buffer_bytes": 1048576,
                   "buffer_limit_bytes": 419430400, "active_connections": 45,
                   "max_connections": 4096,
                   "workers": [
                       {"id": 0, "pid": 1234, "rss_bytes": 60000000, "buffer_bytes": 524288,
                        "active_connections": 22, "packets": 61000},
                       {"id": 1, "pid": 1235, "rss_bytes": 58000000, "buffer_bytes": 524288,
                        "active_connections": 23, "packets": 62456},
                   ]},
        "kafka": {"state": "up", "brokers": "b-1.msk:9092", "topic": "akto.api.logs",
                  "queued": 10, "spooled": 0, "spool_bytes": 0, "delivered": 4550,
                  "failed": 0, "dropped": 0},
        "drops": {"filter_discovery_config": 0, "filter_ip_host": 0,
                  "filter_cloud_metadata": 12, "filter_egress": 0, "ignored_port": 345,
                  "evicted_connection_limit": 0, "evicted_buffer_limit": 0},
    }
    doc.update(overrides)
    if "history" not in overrides:
        doc["history"] = sample_history(doc)
    return doc


def sample_ebpf_status(**overrides) -> dict:
    """An eBPF-mode document: no mirror sessions; traced processes (two in a pod, one on
    the host, one that exited), the kernel side's counters and TLS libraries."""
    doc = sample_status(mode="ebpf", hostname="node-a1", sessions=[], history=None)
    doc["drops"] = {"duplicate_client_view": 310, "filter_egress": 4}
    doc["processes"] = [
        {"pid": 4100, "comm": "nginx", "connections": 420, "active_connections": 12,
         "pairs": 3900, "server_pairs": 3900, "bytes_in": 2_100_000, "bytes_out": 31_000_000,
         "tls_connections": 420, "last_seen": NOW - 0.2, "exited": False,
         "namespace": "shop", "pod": "api-7d9f8c6b5-x2kq4", "container": "nginx",
         "pairs_per_s": 35.0, "bytes_per_s": 600_000.0},
        {"pid": 4188, "comm": "envoy", "connections": 330, "active_connections": 20,
         "pairs": 610, "server_pairs": 0, "bytes_in": 900_000, "bytes_out": 400_000,
         "tls_connections": 0, "last_seen": NOW - 1.5, "exited": False,
         "namespace": "shop", "pod": "api-7d9f8c6b5-x2kq4", "container": "istio-proxy",
         "pairs_per_s": 4.0, "bytes_per_s": 9_000.0},
        {"pid": 977, "comm": "python3", "connections": 40, "active_connections": 1,
         "pairs": 57, "server_pairs": 57, "bytes_in": 30_000, "bytes_out": 80_000,
         "tls_connections": 0, "last_seen": NOW - 30, "exited": False,
         "namespace": None, "pod": None, "container": None,
         "pairs_per_s": 1.0, "bytes_per_s": 1_000.0},
        {"pid": 5012, "comm": "curl", "connections": 1, "active_connections": 0,
         "pairs": 1, "server_pairs": 0, "bytes_in": 900, "bytes_out": 80,
         "tls_connections": 1, "last_seen": NOW - 400, "exited": True,
         "namespace": None, "pod": None, "container": None,
         "pairs_per_s": 0.0, "bytes_per_s": 0.0},
    ]
    doc["pods"] = [{"namespace": "shop", "pod": "api-7d9f8c6b5-x2kq4", "processes": 2,
                    "connections": 750, "active_connections": 32, "pairs": 4510,
                    "bytes_in": 3_000_000, "bytes_out": 31_400_000, "last_seen": NOW - 0.2}]
    doc["ebpf"] = {"kernel": {"ring_lost": 0, "tls_unlinked": 2, "cipher_bytes": 9_000_000,
                              "truncated_bytes": 65536, "conns_opened": 791,
                              "conn_table_full": 0, "iov_short": 0, "execs_seen": 12,
                              "tls_files_attached": 1, "tls_attach_failures": 1},
                   "config": {"rings": 2, "ring_bytes": 8 << 20, "max_call_bytes": 262144,
                              "capture_plain": True, "tls": True, "pids": []},
                   "tls": {"files": [{"library": "openssl",
                                      "path": "/usr/lib/x86_64-linux-gnu/libssl.so.3",
                                      "inode": 1234, "symbols": ["SSL_write", "SSL_read"],
                                      "pids": [4100]}],
                           "failures": [{"pid": 6001, "path": "/opt/app/libssl.so.1.1 (deleted)",
                                         "reason": "library file was deleted after the process "
                                                   "mapped it (upgraded on disk): restart the "
                                                   "process to trace it"}],
                           "scans": 3}}
    doc.update(overrides)
    if "history" not in overrides:
        doc["history"] = sample_history(doc)
    return doc


def cut_history(doc: dict, seconds: int | None) -> dict:
    """What the runtime answers to ``?history=N``: only the last N seconds."""
    hist = doc.get("history") if isinstance(doc, dict) else None
    if seconds is None or not isinstance(hist, dict) or not isinstance(hist.get("totals"), dict):
        return doc  # nothing to cut (or a deliberately malformed history: served as is)
    out = dict(doc)
    keep = (lambda v: v[len(v) - seconds:]) if seconds else (lambda v: [])
    out["history"] = dict(hist, totals={k: keep(v) for k, v in hist["totals"].items()},
                          sessions={s: {k: keep(v) for k, v in b.items()}
                                    for s, b in hist["sessions"].items()})
    return out


class StatusServer:
    """A stdlib ThreadingHTTPServer on 127.0.0.1 serving ``self.doc`` at /status.

    ``doc`` may be replaced at any time; ``requests`` counts the /status reads and
    ``queries`` keeps their ``?history=`` values. ``?history=N`` cuts the document's
    history like the runtime does. A ``port`` can be given to (re)open on a known port,
    for the unreachable-then-back test.
    """

    def __init__(self, doc: dict | None = None, port: int = 0) -> None:
        self.doc = copy.deepcopy(doc) if doc is not None else sample_status()
        self.requests = 0
        self.queries: list[int | None] = []
        self.token: str | None = None  # when set, /status wants "Authorization: Bearer <it>"
        self.status_code = 200
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802
                path, _, query = self.path.partition("?")
                if path != "/status":
                    self.send_error(404)
                    return
                if server.token and self.headers.get("Authorization") != f"Bearer {server.token}":
                    self.send_error(401, "unauthorized")
                    return
                asked = urllib.parse.parse_qs(query).get("history")
                seconds = int(asked[-1]) if asked else None
                with server._lock:
                    server.requests += 1
                    server.queries.append(seconds)
                    body = json.dumps(cut_history(server.doc, seconds)).encode()
                    code = server.status_code
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the console went away mid-answer (test over)

        class Server(ThreadingHTTPServer):
            allow_reuse_address = True  # reopen on a just-closed port (recovery test)
            daemon_threads = True

        self.httpd = Server(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def set(self, doc: dict) -> None:
        with self._lock:
            self.doc = copy.deepcopy(doc)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def free_port() -> int:
    """A port nothing listens on (bound then released)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def screen_text(app) -> str:
    """What the terminal shows right now, as plain text (one line per row)."""
    strips = app.screen._compositor.render_strips()
    return "\n".join(strip.text for strip in strips)


async def wait_until(pilot, predicate, timeout: float = 5.0, what: str = "condition") -> None:
    """Let the app run until ``predicate()`` holds; fail with the screen if it never does."""
    deadline = time.monotonic() + timeout
    while True:
        await pilot.pause(0.02)
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; screen:\n{screen_text(pilot.app)}")


async def wait_for_text(pilot, *needles: str, timeout: float = 5.0) -> str:
    """Wait until every needle is on screen; return the screen."""
    await wait_until(pilot, lambda: all(n in screen_text(pilot.app) for n in needles),
                     timeout, what=f"{needles!r} on screen")
    return screen_text(pilot.app)
