"""Passive HTTP/1.x parsing and request/response pairing, sans-IO.

Why hand-written rather than httptools (which DESIGN.md measures at ~600k msgs/s):
a passive observer needs things llhttp cannot give through httptools — skipping a
known number of missing bytes inside a body after a capture gap, resynchronising at
the next message boundary, an end-of-stream call for close-delimited bodies, telling
the response parser that the request was HEAD or CONNECT, HTTP/0.9, and the byte
offset where a message ended so that the rest of the stream can be re-parsed.  The
framing below works on whole segments with ``bytes.find``/``re`` and slices bodies
without copying, so it stays well above the per-core pair rates we need.

One ``HttpHalf`` parses one direction; ``HttpConn`` owns both halves, decides from the
content which side is the client, and pairs responses with requests in order.
"""

from __future__ import annotations

import re
from collections import deque

# Half roles
REQ = 1
RESP = 2

# Parser states
IDLE = 0  # between messages
BODY_LEN = 1  # Content-Length body, `remaining` bytes left
CHUNK_SIZE = 2
CHUNK_DATA = 3
CHUNK_END = 4  # CRLF after chunk data
TRAILER = 5
BODY_EOF = 6  # body delimited by connection close
RESYNC = 7  # looking for the next message start
TUNNEL = 8  # not HTTP any more (Upgrade, CONNECT)

MAX_HEADER_BYTES = 128 * 1024
MAX_LINE_BYTES = 4096
MAX_DEFER_BYTES = 64 * 1024  # response bytes held while its request is still missing

_HDR_END = re.compile(rb"\n\r?\n")
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32} ")
_METHODS = (rb"GET|POST|PUT|DELETE|HEAD|OPTIONS|PATCH|CONNECT|TRACE|QUERY|PROPFIND|PROPPATCH|"
            rb"MKCOL|COPY|MOVE|LOCK|UNLOCK|SEARCH|REPORT|MKCALENDAR|PURGE|LINK|UNLINK")
_RESYNC_REQ = re.compile(rb"^(?:" + _METHODS + rb") [^ \r\n]+ HTTP/[01]\.[0-9]\r?$", re.M)
_RESYNC_RESP = re.compile(rb"^HTTP/[01]\.[0-9] [1-5][0-9][0-9](?:[ \r\n]|$)", re.M)
_RESYNC_ANY = re.compile(_RESYNC_REQ.pattern + rb"|" + _RESYNC_RESP.pattern, re.M)

_NO_BODY_STATUS = (204, 304)


class Message:
    """One HTTP message.  ``headers`` keeps every field in wire order, repeats included."""

    __slots__ = ("ts", "method", "target", "version", "status", "reason", "headers", "parts",
                 "stored", "complete", "flags", "te", "encoding",
                 "response")

    def __init__(self, ts: float):
        self.ts = ts
        self.method = ""
        self.target = ""
        self.version = "HTTP/1.1"
        self.status = 0
        self.reason = ""
        self.headers: list = []
        self.parts: list = []
        self.stored = 0  # body bytes kept in `parts`
        self.complete = False
        self.flags: set | None = None  # 'gap', 'truncated', 'incomplete', 'bad_chunk'
        self.te = ""  # transfer-codings other than chunked, e.g. "gzip"
        self.encoding = ""  # content-coding
        self.response: Message | None = None

    def flag(self, name: str) -> None:
        if self.flags is None:
            self.flags = set()
        self.flags.add(name)

    def body(self) -> bytes:
        parts = self.parts
        if not parts:
            return b""
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    def header(self, lname: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return None


class HttpStats:
    __slots__ = ("requests", "responses", "pairs", "pending", "orphan_responses", "interim",
                 "resyncs", "bad_messages", "tunnels", "stored_growth")

    def __init__(self):
        for name in self.__slots__:
            setattr(self, name, 0)


class HttpHalf:
    """Parser for one direction.  Fed in-order bytes by the TCP reassembler."""

    __slots__ = ("conn", "dir", "role", "state", "buf", "buf_ts", "msg", "remaining", "tail",
                 "max_body", "stats", "force")

    def __init__(self, conn: "HttpConn", direction: int, max_body: int, stats: HttpStats):
        self.conn = conn
        self.dir = direction
        self.role = 0
        self.state = IDLE
        self.buf = b""  # unparsed bytes carried to the next segment
        self.buf_ts = 0.0
        self.msg: Message | None = None
        self.remaining = 0
        self.tail = b""  # resync look-behind
        self.max_body = max_body
        self.stats = stats
        self.force = False  # parse held response bytes without waiting for a request

    # -- consumer interface of the TCP reassembler ------------------------------------
    def data(self, ts: float, data: bytes) -> None:
        state = self.state
        # fast path: a body segment that ends inside the body
        if state == BODY_LEN and not self.buf and len(data) < self.remaining:
            self.remaining -= len(data)
            self._body(data)
            return
        if state == TUNNEL:
            return
        if self.buf:
            data = self.buf + data
            ts = self.buf_ts
            self.buf = b""
        self._parse(ts, data)

    def gap(self, ts: float, n: int) -> None:
        state = self.state
        msg = self.msg
        self.buf = b""
        if state == TUNNEL:
            return
        if state == BODY_LEN and n <= self.remaining and msg is not None:
            msg.flag("gap")
            self.remaining -= n
            if self.remaining == 0:
                self._finish()
            return
        if state == BODY_EOF and msg is not None:
            msg.flag("gap")
            return
        if msg is not None:  # a gap in chunk framing or past the end of a body
            msg.flag("gap")
            self._finish()
        self.state = RESYNC
        self.tail = b""  # the byte after a gap may start a message
        self.stats.resyncs += 1

    def retry(self) -> None:
        """Parse the bytes held back (see _start), now that there may be a request."""
        data, ts = self.buf, self.buf_ts
        self.buf = b""
        self._parse(ts, data)

    def eof(self, ts: float) -> None:
        if self.buf and self.state == IDLE:
            if self.role == RESP:
                self.force = True  # no request will come any more
                self.retry()
            else:
                # a request line without its terminating newline, e.g. HTTP/0.9 at close
                self._parse(self.buf_ts, self.buf + b"\n")
        self.buf = b""
        msg = self.msg
        if msg is not None:
            if self.state not in (BODY_EOF, TUNNEL):
                msg.flag("incomplete")
            self._finish()
        self.state = TUNNEL
        self.conn.half_closed(self.dir)

    # -- parsing ----------------------------------------------------------------------
    def _parse(self, ts: float, data: bytes) -> None:
        pos = 0
        n = len(data)
        while pos < n:
            state = self.state
            if state == BODY_LEN or state == CHUNK_DATA:
                take = self.remaining
                if take >= n - pos:
                    take = n - pos
                    self._body(data if pos == 0 else data[pos:])
                else:
                    self._body(data[pos:pos + take])
                pos += take
                self.remaining -= take
                if self.remaining == 0:
                    if state == BODY_LEN:
                        self._finish()
                    else:
                        self.state = CHUNK_END
            elif state == IDLE:
                while pos < n and data[pos] in b"\r\n":
                    pos += 1
                if pos >= n:
                    return
                end = self._start(ts, data, pos)
                if end < 0:
                    if end == -1:  # need more bytes
                        if n - pos > MAX_HEADER_BYTES:
                            self.stats.bad_messages += 1
                            self._enter_resync(data[pos:])
                            return
                        self.buf = data[pos:] if pos else data
                        self.buf_ts = ts
                        return
                    # not a message start: look for the next one
                    self._enter_resync(b"")
                    continue
                pos = end
            elif state == CHUNK_SIZE or state == CHUNK_END or state == TRAILER:
                i = data.find(b"\n", pos)
                if i < 0:
                    if n - pos > MAX_LINE_BYTES:
                        self._bad_chunk()
                        continue
                    self.buf = data[pos:]
                    self.buf_ts = ts
                    return
                line = data[pos:i].strip()
                if state == CHUNK_END:
                    if line:  # missing CRLF after the chunk: lenient, parse as a size line
                        state = self.state = CHUNK_SIZE
                    else:
                        self.state = CHUNK_SIZE
                        pos = i + 1
                        continue
                pos = i + 1
                if state == TRAILER:
                    if not line:
                        self._finish()
                    continue
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                    if size < 0:
                        raise ValueError
                except ValueError:
                    self._bad_chunk()
                    continue
                if size == 0:
                    self.state = TRAILER
                else:
                    self.remaining = size
                    self.state = CHUNK_DATA
            elif state == BODY_EOF:
                self._body(data if pos == 0 else data[pos:])
                return
            elif state == RESYNC:
                self._resync(ts, data[pos:] if pos else data)
                return
            else:  # TUNNEL
                return

    def _bad_chunk(self) -> None:
        msg = self.msg
        if msg is not None:
            msg.flag("bad_chunk")
            self._finish()
        self.stats.bad_messages += 1
        self._enter_resync(b"")

    def _enter_resync(self, seen: bytes) -> None:
        self.state = RESYNC
        self.stats.resyncs += 1
        self.buf = b""
        self.tail = b"\x00"  # not at a line start
        if seen:
            self._scan_tail(seen)

    def _scan_tail(self, window: bytes) -> None:
        i = window.rfind(b"\n")
        if i >= 0 and len(window) - i <= 128:
            self.tail = window[i + 1:]
        else:
            self.tail = b"\x00" + window[-64:]

    def _resync(self, ts: float, data: bytes) -> None:
        tail = self.tail
        window = tail + data if tail else data
        role = self.role
        pat = _RESYNC_REQ if role == REQ else _RESYNC_RESP if role == RESP else _RESYNC_ANY
        # candidates, earliest first: a line start (possibly straddling the previous
        # segment), or the first byte of this segment (segments often start messages)
        m = pat.search(window)
        start = m.start() if m is not None else -1
        if (start < 0 or start > len(tail)) and tail and pat.match(data):
            start = len(tail)
        if start < 0:
            self._scan_tail(window)
            return
        self.state = IDLE
        self.tail = b""
        self._parse(ts, window[start:])

    def _start(self, ts: float, data: bytes, pos: int) -> int:
        """Parse a message head at `pos`.  Returns the offset after it, -1 when more bytes
        are needed, -2 when the bytes are not an HTTP message start."""
        role = self.role
        conn = self.conn
        if role == RESP or (role == 0 and data.startswith(b"HTTP/", pos)):
            expected = conn.expected_request()
            if (expected is None and not self.force and len(data) - pos < MAX_DEFER_BYTES
                    and conn.peer_lagging(self.dir)):
                # nothing to answer yet, but the server has acknowledged client bytes we
                # have not parsed: the request is still on its way through the capture
                # (mirrors reorder across directions).  Wait for it: framing a response
                # needs its request (HEAD, CONNECT, HTTP/0.9).
                return -1
            if expected is not None and expected.version == "HTTP/0.9":
                # HTTP/0.9 response: no status line, body until close
                msg = self._new(ts, RESP)
                msg.version = "HTTP/0.9"
                self.state = BODY_EOF
                return pos
            if not data.startswith(b"HTTP/", pos):
                if len(data) - pos < 5 and b"HTTP/".startswith(data[pos:]):
                    return -1
                return -2
            m = _HDR_END.search(data, pos)
            if m is None:
                return -1
            return self._response_head(ts, data, pos, m.end(), expected)
        # request (or unknown role that does not start with HTTP/)
        i = data.find(b"\n", pos)
        if i < 0:
            if len(data) - pos >= 32 and not _TOKEN.match(data, pos):
                return -2
            return -1
        line = data[pos:i].rstrip(b"\r")
        if not _TOKEN.match(line):
            return -2
        parts = line.split()
        if len(parts) == 2 and not parts[1].startswith(b"HTTP/"):
            # HTTP/0.9 simple request: the line is the whole message
            msg = self._new(ts, REQ)
            msg.method = parts[0].decode("latin-1")
            msg.target = parts[1].decode("latin-1")
            msg.version = "HTTP/0.9"
            conn.on_request_head(self, msg)
            self._finish()
            return i + 1
        if len(parts) < 2 or not parts[-1].startswith(b"HTTP/"):
            return -2
        m = _HDR_END.search(data, i)
        if m is None:
            return -1
        return self._request_head(ts, data, pos, m.end())

    def _new(self, ts: float, role: int) -> Message:
        if self.role != role:
            self.conn.set_role(self.dir, role)
        msg = self.msg = Message(ts)
        return msg

    def _headers(self, msg: Message, block: bytes) -> list:
        lines = block.decode("latin-1").split("\n")
        headers = msg.headers
        for line in lines[1:]:
            if not line or line == "\r":
                continue
            if line[0] in " \t" and headers:  # obs-fold: continuation of the previous value
                headers[-1][1] = headers[-1][1] + " " + line.strip()
                continue
            name, sep, value = line.partition(":")
            if not sep:
                continue
            headers.append([name.strip(), value.strip()])
        return lines

    def _framing(self, msg: Message):
        """Content-Length, transfer codings and flags from the headers."""
        length = None
        chunked = False
        for name, value in msg.headers:
            lname = name.lower()
            if lname == "content-length":
                try:
                    v = int(value.split(",")[0].strip())
                    if v >= 0 and (length is None or v == length):
                        length = v
                    else:
                        msg.flag("bad_length")
                except ValueError:
                    msg.flag("bad_length")
            elif lname == "transfer-encoding":
                codings = [c.strip().lower() for c in value.split(",") if c.strip()]
                for c in codings:
                    if c == "chunked":
                        chunked = True
                    elif c != "identity":
                        msg.te = c if not msg.te else msg.te + "," + c
            elif lname == "content-encoding":
                msg.encoding = value.strip().lower()
        return length, chunked

    def _request_head(self, ts: float, data: bytes, pos: int, end: int) -> int:
        msg = self._new(ts, REQ)
        lines = self._headers(msg, data[pos:end])
        parts = lines[0].strip().split()
        msg.method = parts[0]
        msg.version = parts[-1]
        msg.target = " ".join(parts[1:-1])
        length, chunked = self._framing(msg)
        self.conn.on_request_head(self, msg)
        if msg.method == "CONNECT":
            self._finish()
            self.state = TUNNEL  # the client speaks the tunnelled protocol next
            return end
        if chunked:
            self.state = CHUNK_SIZE
        elif length:
            self.remaining = length
            self.state = BODY_LEN
        else:
            self._finish()
        return end

    def _response_head(self, ts: float, data: bytes, pos: int, end: int, req) -> int:
        msg = self._new(ts, RESP)
        lines = self._headers(msg, data[pos:end])
        status_line = lines[0].strip()
        version, _, rest = status_line.partition(" ")
        code, _, reason = rest.strip().partition(" ")
        msg.version = version
        try:
            msg.status = int(code)
        except ValueError:
            # still a response (it has a head): keep it so pairing stays in step
            self.stats.bad_messages += 1
            msg.flag("bad_status")
        msg.reason = reason.strip()
        length, chunked = self._framing(msg)
        status = msg.status
        method = req.method if req is not None else ""
        if status < 200 or status in _NO_BODY_STATUS or method == "HEAD":
            self._finish()
        elif method == "CONNECT" and status < 300:
            self._finish()
        elif chunked:
            self.state = CHUNK_SIZE
        elif msg.te:
            self.state = BODY_EOF
        elif length is not None:
            if length:
                self.remaining = length
                self.state = BODY_LEN
            else:
                self._finish()
        else:
            self.state = BODY_EOF
        return end

    def _body(self, chunk: bytes) -> None:
        msg = self.msg
        n = len(chunk)
        if msg.stored < self.max_body:
            msg.parts.append(chunk)
            msg.stored += n
            self.stats.stored_growth += n
        elif msg.flags is None or "truncated" not in msg.flags:
            msg.flag("truncated")

    def _finish(self) -> None:
        msg = self.msg
        self.msg = None
        if self.state != TUNNEL:
            self.state = IDLE
        if msg is not None:
            msg.complete = True
            self.conn.on_message(self, msg)

    def buffered(self) -> int:
        msg = self.msg
        return len(self.buf) + (msg.stored if msg is not None else 0)


class HttpConn:
    """Both directions of one connection and the pairing of their messages.

    ``emit(conn, request, response)`` is called for every finished pair (response None
    for a request that was never answered, when the connection ends).
    """

    __slots__ = ("halves", "client", "txns", "answered", "emit", "stats", "closed")

    def __init__(self, emit, max_body: int, stats: HttpStats):
        self.halves = (HttpHalf(self, 0, max_body, stats), HttpHalf(self, 1, max_body, stats))
        self.client = -1  # direction index of the client, -1 until known
        self.txns: deque = deque()  # requests, in order, whose pair is not emitted yet
        self.answered = 0  # how many of txns have a final response
        self.emit = emit
        self.stats = stats
        self.closed = 0  # bit per direction that reached EOF

    def set_role(self, direction: int, role: int) -> None:
        client = direction if role == REQ else 1 - direction
        if self.client == -1:
            self.client = client
            self.halves[client].role = REQ
            self.halves[1 - client].role = RESP
        elif self.client != client:
            # content contradicts the earlier decision: keep the first, count it
            self.stats.bad_messages += 1

    def expected_request(self) -> Message | None:
        txns = self.txns
        if self.answered < len(txns):
            return txns[self.answered]
        return None

    def on_request_head(self, half: HttpHalf, msg: Message) -> None:
        self.stats.requests += 1
        self.txns.append(msg)
        server = self.halves[1 - half.dir]
        if server.buf and server.state == IDLE:
            server.retry()  # a response was waiting for this request

    def peer_lagging(self, direction: int) -> bool:
        """True when `direction` has acknowledged bytes of the other direction that are
        not parsed yet (the pipeline's connection knows the TCP positions; without
        them, never)."""
        return False

    def on_message(self, half: HttpHalf, msg: Message) -> None:
        if half.role == REQ:
            self._flush_ready()
            return
        status = msg.status
        if 100 <= status < 200 and status != 101:
            self.stats.interim += 1
            return
        self.stats.responses += 1
        txns = self.txns
        if self.answered >= len(txns):
            self.stats.orphan_responses += 1
            return
        req = txns[self.answered]
        req.response = msg
        self.answered += 1
        if status == 101 or (req.method == "CONNECT" and 200 <= status < 300):
            self.stats.tunnels += 1
            for h in self.halves:
                h.state = TUNNEL
                h.buf = b""
        elif req.method == "CONNECT":
            client = self.halves[self.client] if self.client >= 0 else None
            if client is not None and client.state == TUNNEL and not (self.closed >> self.client) & 1:
                client.state = IDLE  # refused CONNECT: the client may try again
        self._flush_ready()

    def _flush_ready(self) -> None:
        txns = self.txns
        while txns and txns[0].response is not None and txns[0].complete:
            req = txns.popleft()
            self.answered -= 1
            self.stats.pairs += 1
            self.emit(self, req, req.response)

    def half_closed(self, direction: int) -> None:
        self.closed |= 1 << direction

    def finish(self) -> None:
        """The connection is over: emit everything still held, answered or not."""
        txns = self.txns
        while txns:
            req = txns.popleft()
            if req.response is not None:
                self.stats.pairs += 1
            else:
                self.stats.pending += 1
            self.emit(self, req, req.response)
        self.answered = 0

    def buffered(self) -> int:
        h0, h1 = self.halves
        return h0.buffered() + h1.buffered()
