"""The runtime's HTTP endpoint: /healthz, /metrics (Prometheus), /status (JSON).

Served from a thread of the supervisor with the stdlib server: it answers a handful of
requests a minute (health checks, scrapes, the TUI), so it needs no framework.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from appliance.runtime.history import parse_seconds


def make_server(host: str, port: int, status_fn, healthy_fn, metrics_fn) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        server_version = "appliance"

        def log_message(self, *args):  # access logs would drown the real ones
            pass

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802
            path, _, query = self.path.partition("?")
            try:
                if path == "/healthz":
                    ok, why = healthy_fn()
                    self._send(200 if ok else 503, (why + "\n").encode(), "text/plain")
                elif path == "/status":
                    try:  # ?history=N: only the last N seconds of rate history
                        seconds = parse_seconds(urllib.parse.parse_qs(query))
                    except ValueError as exc:
                        self._send(400, f"{exc}\n".encode(), "text/plain")
                        return
                    self._send(200, json.dumps(status_fn(seconds)).encode(), "application/json")
                elif path == "/metrics":
                    body, ctype = metrics_fn()
                    self._send(200, body, ctype)
                else:
                    self._send(404, b"not found\n", "text/plain")
            except (BrokenPipeError, ConnectionResetError):
                pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                         name="http", daemon=True)
    t.start()
    return t
