"""The runtime's HTTP endpoint: /healthz, /metrics (Prometheus), /status (JSON).

An asyncio server on the supervisor's event loop, with h11 (python-hyper's sans-IO
HTTP/1.1) doing the parsing.  Why not the stdlib's ThreadingHTTPServer: a thread per
connection with no deadline let 2,000 slowloris connections make 2,000 threads, and its
listen backlog of 5 stalled connects.  Why not prometheus-client's server: it is the same
threaded server.  Here a connection costs a coroutine, not a thread, and:

- the request head must arrive within ``HEAD_TIMEOUT`` seconds in all (not per read) and
  fit ``MAX_HEAD`` bytes; a response must be written within ``WRITE_TIMEOUT``;
- at most ``MAX_CONNECTIONS`` connections are open: a new one closes the oldest that has
  not finished sending its request, so health checks get through a slowloris;
- the listen backlog is ``BACKLOG``;
- one request per connection (``Connection: close``).

``/healthz`` is always open (load balancers' health checks).  With ``APPLIANCE_HTTP_TOKEN``
set, ``/status`` and ``/metrics`` require ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import socket
from collections import OrderedDict

import h11

log = logging.getLogger("appliance.http")

HEAD_TIMEOUT = 10.0
WRITE_TIMEOUT = 10.0
MAX_HEAD = 16 << 10
MAX_CONNECTIONS = 512
BACKLOG = 1024


def bind(host: str, port: int) -> socket.socket:
    """The listening socket (bound before anything else starts, so a taken port is one
    clear error at start-up)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class HttpEndpoint:
    """routes: path -> (callable taking the query string and returning (status, body,
    content type), protected)."""

    def __init__(self, sock: socket.socket, routes: dict, token: str = ""):
        self.sock = sock
        self.routes = routes
        self.token = token.encode() if token else b""
        self.server: asyncio.AbstractServer | None = None
        self.waiting: OrderedDict = OrderedDict()  # connections still sending their head
        self.open = 0
        self.served = 0
        self.shed = 0

    async def start(self) -> None:
        # asyncio listens again with its own backlog (100 by default): pass ours
        self.server = await asyncio.start_server(self._connection, sock=self.sock,
                                                 limit=MAX_HEAD, backlog=BACKLOG)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for task in list(self.waiting):
                task.cancel()
            try:
                await asyncio.wait_for(self.server.wait_closed(), 2.0)
            except (TimeoutError, Exception):  # noqa: BLE001 - closing anyway
                pass
            self.server = None

    def figures(self) -> dict:
        return {"open": self.open, "served": self.served, "shed": self.shed}

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        task = asyncio.current_task()
        self.open += 1
        if len(self.waiting) >= MAX_CONNECTIONS:
            oldest, _ = self.waiting.popitem(last=False)
            oldest.cancel()
            self.shed += 1
        self.waiting[task] = None
        try:
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
            try:
                async with asyncio.timeout(HEAD_TIMEOUT):
                    request = await self._read_head(conn, reader)
            except (TimeoutError, h11.RemoteProtocolError, ConnectionError):
                request = None
            self.waiting.pop(task, None)
            if request is None:
                return
            status, body, ctype = self._answer(request)
            headers = [("Content-Type", ctype), ("Content-Length", str(len(body))),
                       ("Connection", "close"), ("Cache-Control", "no-store")]
            if status == 401:
                headers.append(("WWW-Authenticate", 'Bearer realm="appliance"'))
            data = conn.send(h11.Response(status_code=status, headers=headers))
            if request.method != b"HEAD":
                data += conn.send(h11.Data(data=body))
            data += conn.send(h11.EndOfMessage())
            writer.write(data)
            async with asyncio.timeout(WRITE_TIMEOUT):
                await writer.drain()
            self.served += 1
        except (TimeoutError, ConnectionError, asyncio.CancelledError):
            pass
        except Exception:  # noqa: BLE001 - one bad request must not take the endpoint down
            log.error("HTTP endpoint error", exc_info=True)
        finally:
            self.waiting.pop(task, None)
            self.open -= 1
            writer.transport.abort()

    async def _read_head(self, conn: h11.Connection, reader: asyncio.StreamReader):
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(4096)
                conn.receive_data(data)
                if not data and conn.their_state is h11.IDLE:
                    return None
                continue
            if isinstance(event, h11.Request):
                return event
            if isinstance(event, h11.ConnectionClosed):
                return None

    def _answer(self, request: h11.Request) -> tuple[int, bytes, str]:
        if request.method not in (b"GET", b"HEAD"):
            return 405, b"method not allowed\n", "text/plain"
        path, _, query = request.target.decode("ascii", "replace").partition("?")
        route = self.routes.get(path)
        if route is None:
            return 404, b"not found\n", "text/plain"
        handler, protected = route
        if protected and self.token and not self._authorized(request):
            return 401, b"unauthorized: send Authorization: Bearer <APPLIANCE_HTTP_TOKEN>\n", \
                "text/plain"
        return handler(query)

    def _authorized(self, request: h11.Request) -> bool:
        for name, value in request.headers:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.token):
                    return True
        return False
