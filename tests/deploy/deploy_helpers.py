"""Helpers for the deploy tests: a local instance metadata server (AWS IMDSv2 + GCP).

The server behaves like the real services where `appliance boot` depends on it:

* AWS IMDSv2: ``PUT /latest/api/token`` needs ``X-aws-ec2-metadata-token-ttl-seconds``
  (1-21600) and is refused with 403 when the request carries ``X-Forwarded-For``; every
  ``GET`` needs a valid ``X-aws-ec2-metadata-token`` (401 otherwise, as with
  ``http_tokens = required``). ``/latest/user-data`` is 404 without user data;
  ``/latest/meta-data/tags/instance/`` is 404 unless tags are allowed in metadata, and
  lists one key per line.
* GCP: ``/computeMetadata/v1/...`` needs ``Metadata-Flavor: Google`` (403 otherwise), and
  every answer carries ``Metadata-Flavor: Google``; ``?recursive=true`` returns JSON.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

# every variable the runtime reads, so that a test starts from a clean environment
RUNTIME_PREFIXES = ("AKTO_", "TRAFFIC_", "APPLIANCE_", "CAPTURE_ALL", "AWS_EC2_METADATA",
                    "GCE_METADATA")


def clean_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(RUNTIME_PREFIXES)}
    env.update(extra or {})
    return env


class MetadataServer:
    """flavor: 'aws' or 'gcp'. Mutate the attributes to change what it serves."""

    def __init__(self, flavor: str):
        self.flavor = flavor
        self.user_data: bytes | None = None
        self.tags: dict[str, str] | None = {}  # None: tags not allowed in instance metadata
        self.attributes: dict[str, str] = {}
        self.fail_first = 0  # answer 503 to this many requests first
        self.hang = False  # accept but never answer
        self.requests: list[tuple[str, str, dict]] = []
        self.tokens: set[str] = set()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _reply(self, code, body=b"", headers=None):
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _common(self, method):
                with server._lock:
                    server.requests.append((method, self.path, self.headers))  # case-insensitive
                    failing = server.fail_first > 0
                    if failing:
                        server.fail_first -= 1
                if server.hang:
                    time.sleep(30)
                    return False
                if failing:
                    self._reply(503, b"busy\n")
                    return False
                return True

            def do_PUT(self):  # noqa: N802
                if not self._common("PUT"):
                    return
                server._aws_put(self)

            def do_GET(self):  # noqa: N802
                if not self._common("GET"):
                    return
                if server.flavor == "aws":
                    server._aws_get(self)
                else:
                    server._gcp_get(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    # -- AWS ---------------------------------------------------------------------------
    def _aws_put(self, h):
        if self.flavor != "aws" or h.path != "/latest/api/token":
            return self._gcp_or_404(h)
        ttl = h.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
        if h.headers.get("X-Forwarded-For"):
            return h._reply(403, b"Forbidden")
        if not ttl or not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            return h._reply(400, b"Bad Request")
        token = secrets.token_urlsafe(24)
        self.tokens.add(token)
        h._reply(200, token.encode(), {"X-aws-ec2-metadata-token-ttl-seconds": ttl})

    def _aws_get(self, h):
        if h.headers.get("X-aws-ec2-metadata-token") not in self.tokens:
            return h._reply(401, b"Unauthorized")
        path = h.path
        if path == "/latest/user-data":
            if self.user_data is None:
                return h._reply(404, b"Not Found")
            return h._reply(200, self.user_data)
        prefix = "/latest/meta-data/tags/instance"
        if path.startswith(prefix):
            if self.tags is None:
                return h._reply(404, b"Not Found")
            rest = path[len(prefix):].lstrip("/")
            if not rest:
                return h._reply(200, "\n".join(self.tags).encode())
            key = urllib.parse.unquote(rest)
            if key not in self.tags:
                return h._reply(404, b"Not Found")
            return h._reply(200, self.tags[key].encode())
        h._reply(404, b"Not Found")

    # -- GCP ---------------------------------------------------------------------------
    def _gcp_or_404(self, h):
        if self.flavor == "gcp":
            # the GCE metadata server answers anything it does not serve with its header on
            return h._reply(405 if h.command == "PUT" else 404, b"", {"Metadata-Flavor": "Google"})
        h._reply(404, b"Not Found")

    def _gcp_get(self, h):
        flavor = {"Metadata-Flavor": "Google"}
        if not h.path.startswith("/computeMetadata/v1/"):
            return h._reply(404, b"", flavor)
        if h.headers.get("Metadata-Flavor") != "Google" or h.headers.get("X-Forwarded-For"):
            return h._reply(403, b"Missing required header: Metadata-Flavor: Google", flavor)
        parsed = urllib.parse.urlsplit(h.path)
        query = urllib.parse.parse_qs(parsed.query)
        if parsed.path == "/computeMetadata/v1/instance/attributes/":
            if query.get("recursive") == ["true"]:
                return h._reply(200, json.dumps(self.attributes).encode(),
                                {**flavor, "Content-Type": "application/json"})
            return h._reply(200, "".join(k + "\n" for k in self.attributes).encode(), flavor)
        h._reply(404, b"", flavor)

    # -- lifecycle -----------------------------------------------------------------------
    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port_url() -> str:
    """A URL nothing listens on (connection refused at once)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


def appliance_cmd(*args, env=None, timeout=60, python=sys.executable):
    return subprocess.run([python, "-m", "appliance", *args], capture_output=True, text=True,
                          env=clean_env(env), cwd=ROOT, timeout=timeout)


def parse_print_env(text: str) -> tuple[dict, dict]:
    """`appliance boot --print-env` -> ({name: value}, {name: source})."""
    import shlex

    values, sources = {}, {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        assignment, _, source = line.rpartition("  # ")
        name, _, quoted = assignment.partition("=")
        values[name] = shlex.split(quoted)[0] if quoted else ""
        sources[name] = source
    return values, sources
