"""HTTP/1.x framing of one direction of a connection, sans-IO.

An :class:`HttpParser` turns one direction's stream (``feed`` / ``gap`` / ``eof``, in
stream order) into messages: it finds each message head, parses its fields once
(wire order kept; the framing fields picked out in the same pass), frames the body by
RFC 9112 and hands every step to its session through :class:`Hooks`.  It knows nothing
of TCP, and nothing of pairing beyond asking the session which request a response
answers (a response to HEAD has no body; to CONNECT it opens a tunnel).

Why hand-written rather than llhttp/httptools or h11: a passive observer must skip a
known number of lost bytes inside a body, resynchronise at the next message after a
loss, frame a response only once it knows the request it answers (and wait for it
when the capture delivered the response first), name every irregularity instead of
rejecting the message, and work on bytes it never asked for.  None of those parsers
exposes that; h11's ideas are followed (one framing function, a receive buffer that
remembers how far it searched, a 101 only after an Upgrade proposal).

Strictness (each irregularity is a flag on the message, see ``Message.flags``):

- ``Content-Length``: digits only (``+3``, ``1_0``, ``0x5`` are ``bad_content_length``);
  a list of identical values is accepted; anything else loses the framing.
- ``Transfer-Encoding`` beats ``Content-Length`` (``te_cl_conflict``); values other than
  a list of known codings (``xchunked``, quoted, ``chunked`` not last) are
  ``te_obfuscated``; a field name with whitespace before the colon
  (``Transfer-Encoding : chunked``) is ``header_space_before_colon`` and the field is
  not used for framing.
- chunk sizes: hex digits only, then optional extensions; the CRLF after the data is
  required (``bad_chunk``).
- heads larger than ``max_head`` are parsed line by line without being kept whole:
  framing fields are still honoured, fields beyond the cap are dropped
  (``head_too_large``), so pairing stays in step.

When the framing of a direction is lost (a gap outside a body, a violation), the
parser tells the session (``framing_lost``) and scans for the next message start at a
line start.  Nothing here recurses and nothing re-scans bytes it has searched.
"""

from __future__ import annotations

import re

from appliance.core.pair import HEADER_OVERHEAD, PART_OVERHEAD, Message
from appliance.core.stream import COMPILED, UNKNOWN, Acct, StreamConsumer

# roles
REQUEST = 1
RESPONSE = 2

# states
IDLE = 0  # between messages
BODY_LEN = 1  # Content-Length body, `remaining` bytes left
CHUNK_SIZE = 2  # expecting a chunk-size line
CHUNK_DATA = 3  # `remaining` bytes of chunk data left
CHUNK_CRLF = 4  # expecting the CRLF after chunk data
TRAILER = 5  # trailer fields until an empty line
BODY_EOF = 6  # body delimited by the end of the stream
HEAD_BIG = 7  # inside a head larger than max_head: parsed line by line
RESYNC = 8  # framing lost: looking for the next message start
WAIT = 9  # a response head waits for the session to tell which request it answers
PAUSED = 10  # after CONNECT / Upgrade: bytes wait until the response says what they are
HEAD_SKIP = 11  # inside an over-long field line of a big head
TUNNEL = 12  # not HTTP any more (a switched protocol, a CONNECT tunnel)
DEAD = 13  # the connection is not HTTP, or was given up

NO_REQUEST = None
# response_head's answer when it cannot decide yet (a sentinel Message, never emitted)
WAIT_FOR_REQUEST = Message(-1, 0.0, None)

MAX_LINE = 8192  # a chunk-size or trailer line (or a field line of a big head) past this is bad
MAX_DEFER = 256 * 1024  # bytes a direction may hold while waiting for the other one
# the shortest possible message ("HTTP/1.1 200\r\n\r\n" is 17 bytes, "GET / HTTP/1.0\n\n" 16):
# lost bytes between messages at least this long must have held the start of one
MIN_MESSAGE = 16

_HEAD_END = re.compile(rb"\r?\n\r?\n")  # the end of a head; _head_end finds it faster


def _head_end(data: bytes | bytearray, start: int) -> int:
    """The offset after the first match of ``_HEAD_END`` in ``data[start:]``, or -1.

    Two ``bytes.find`` calls (memchr speed) instead of the regex, which has no literal
    prefix to skip ahead with and so tries a match at every byte of a long head.  Every
    match is anchored on its first LF (the optional CR before it does not move its end),
    so the earliest LF followed by LF or CR LF ends the same match the regex finds."""
    b = data.find(b"\n\r\n", start)  # the usual end (CRLF CRLF), then a bare LF LF before it
    a = data.find(b"\n\n", start, b + 1 if b >= 0 else len(data))
    if a >= 0:
        return a + 2
    if b >= 0:
        return b + 3
    return -1


# RFC 9110 token characters (the same set as _TOKEN), as a table indexed by byte
_TCHAR = bytes(1 if chr(c) in "!#$%&'*+.^_`|~-" or (c < 128 and chr(c).isalnum()) else 0
               for c in range(256))


def _plain_fields(data: bytes, p: int, end: int, cap: int) -> list[tuple[str, str]] | None:
    """The fields of the head block ``data[p:end]`` (field lines, then the empty line) if
    it has the shape ``HttpParser._field_block`` calls plain — every line a token name,
    ``": "``, a value with no whitespace at its ends and no ``":  "`` or ``": \t"`` in
    it, CRLF — and at most ``cap`` of them; else None (``_field_block`` decides).

    The compiled core's fast path: one pass over the bytes, a string made only for each
    name and value.  Written as a byte loop, which compiles to C (see parser.pxd) but
    would be slow in Python, so the pure-Python build does not call it; both builds give
    the same fields (tests/test_core_differential.py)."""
    out: list[tuple[str, str]] = []
    while True:
        if p + 1 < end and data[p] == 13 and data[p + 1] == 10:  # the empty line
            return out if p + 2 == end else None
        q = p
        while q < end and _TCHAR[data[q]]:
            q += 1
        if q == p or q + 2 >= end or data[q] != 58 or data[q + 1] != 32:
            return None
        name_end = q
        q += 2
        v = q
        c = data[q]
        if c == 32 or c == 9:
            return None
        while q < end:
            c = data[q]
            if c == 13 or c == 10:
                break
            if c == 58 and q + 2 < end and data[q + 1] == 32 and (data[q + 2] == 32
                                                                 or data[q + 2] == 9):
                return None
            q += 1
        if q == v or q + 1 >= end or data[q] != 13 or data[q + 1] != 10:
            return None
        c = data[q - 1]
        if c == 32 or c == 9:
            return None
        if len(out) >= cap:
            return None
        out.append((data[p:name_end].decode("latin-1"), data[v:q].decode("latin-1")))
        p = q + 2


_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_DIGITS = re.compile(r"[0-9]{1,18}")
_VERSION = re.compile(rb"HTTP/[0-9]{0,2}(?:\.[0-9]{0,2})?")
_STATUS = re.compile(rb"[0-9]{3}")
_VERSIONS = {b"HTTP/1.1": "HTTP/1.1", b"HTTP/1.0": "HTTP/1.0"}  # the usual ones: _VERSION matches
# field names, one per line: every one a token (no whitespace, no obs-fold)
_TOKEN_LINES = re.compile(r"(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+(?:\n[!#$%&'*+.^_`|~0-9A-Za-z-]+)*)?")
_FRAMING_NAMES = frozenset(("content-length", "transfer-encoding", "content-encoding", "upgrade"))
_CODINGS = frozenset(("chunked", "gzip", "x-gzip", "deflate", "compress", "x-compress",
                      "identity", "br", "zstd"))

DEFAULT_METHODS = (
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY",
    # WebDAV, CalDAV, versioning (RFC 4918, 4791, 3253, 5323, 3744, 5842)
    "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "SEARCH", "REPORT",
    "MKCALENDAR", "MKACTIVITY", "CHECKOUT", "CHECKIN", "UNCHECKOUT", "MERGE", "LABEL",
    "UPDATE", "VERSION-CONTROL", "BASELINE-CONTROL", "MKWORKSPACE", "ORDERPATCH", "ACL",
    "BIND", "UNBIND", "REBIND",
    # caches and link management; Microsoft SCCM clients
    "PURGE", "LINK", "UNLINK", "CCM_POST",
)


def resync_patterns(methods: frozenset[str]) -> tuple[re.Pattern[bytes], re.Pattern[bytes]]:
    """Patterns that match a request line / a status line where they are applied (the
    caller decides which positions may start a message)."""
    alts = b"|".join(re.escape(m.encode("ascii")) for m in sorted(methods, key=len, reverse=True))
    req = re.compile(rb"(?:" + alts + rb") [^ \r\n]* ?HTTP/[0-9]\.[0-9]\r?(?m:$)")
    resp = re.compile(rb"HTTP/[0-9]\.[0-9] [0-9]{3}(?:[ \r]|(?m:$))")
    return req, resp


class Hooks(StreamConsumer):
    """What a parser asks of its session (the session is the stream consumer whose
    parsers these are).  A base class rather than a Protocol so that the compiled build
    calls these methods directly (parser.pxd)."""

    __slots__ = ()

    def start_line(self, p: HttpParser, kind: int, offset: int) -> bool:
        raise NotImplementedError

    def request_head(self, p: HttpParser, msg: Message) -> bool:
        raise NotImplementedError

    def response_head(self, p: HttpParser, msg: Message, force: bool) -> Message | None:
        raise NotImplementedError

    def simple_response(self, p: HttpParser) -> bool:
        raise NotImplementedError

    def message_done(self, p: HttpParser, msg: Message) -> None:
        raise NotImplementedError

    def framing_lost(self, p: HttpParser, reason: str) -> None:
        raise NotImplementedError

    def progress(self, p: HttpParser) -> None:
        raise NotImplementedError


# start-line kinds passed to Hooks.start_line
LINE_REQUEST = 1  # METHOD target HTTP/x.y (known method, or any token once accepted)
LINE_STATUS = 2  # HTTP/x.y ddd reason
LINE_SIMPLE = 3  # METHOD target, no version (HTTP/0.9 if GET and the reply is not HTTP/1.x)
LINE_BAD = 4  # anything else


class ParserConfig:
    __slots__ = ("max_body", "max_head", "max_headers", "methods", "method_names", "at_req",
                 "at_resp", "resync_req", "resync_resp")

    def __init__(self, max_body: int = 1 << 20, max_head: int = 64 * 1024,
                 max_headers: int = 256, methods: tuple[str, ...] = DEFAULT_METHODS) -> None:
        self.max_body = max_body
        self.max_head = max_head
        self.max_headers = max_headers
        self.methods = frozenset(m.upper() for m in methods)
        self.method_names = {m.encode("ascii"): m for m in self.methods}  # known: tokens
        self.at_req, self.at_resp = resync_patterns(self.methods)
        # the same, anywhere at a line start
        self.resync_req = re.compile(b"(?m)^" + self.at_req.pattern)
        self.resync_resp = re.compile(b"(?m)^" + self.at_resp.pattern)


class HttpParser:
    __slots__ = ("hooks", "d", "cfg", "acct", "role", "state", "pos", "buf", "buf_off", "marks",
                 "cur_off", "cur_ts", "cur_ack", "searched", "msg", "remaining",
                 "accepted", "line_start", "cl", "te", "ce", "pause_after", "forcing",
                 "closing", "ended", "violations")

    def __init__(self, hooks: Hooks, direction: int, cfg: ParserConfig, acct: Acct) -> None:
        self.hooks = hooks
        self.d = direction
        self.cfg = cfg
        self.acct = acct
        self.role = 0  # REQUEST or RESPONSE, set by the session once known
        self.state = IDLE
        self.pos = 0  # stream offset after the last byte fed (or skipped)
        self.buf: bytes | bytearray = b""  # bytes not consumed yet, from stream offset buf_off
        self.buf_off = 0
        # (offset, time, acknowledgement) of every fed chunk whose bytes are in buf, so that
        # a message starting anywhere in buf gets the time and ACK of its own segment
        self.marks: list[tuple[int, float, int | None]] = []
        self.cur_off = 0  # stream offset where the bytes fed last began
        self.cur_ts = 0.0
        self.cur_ack: int | None = None
        self.searched = 0  # bytes at the start of buf already searched for a head's end
        self.msg: Message | None = None  # the message being parsed
        self.remaining = 0  # body or chunk bytes still to come
        self.accepted = False  # set by the session once the connection is HTTP
        self.line_start = True  # RESYNC: the next byte begins a line
        self.cl: list[str] | None = None  # framing fields of the head being parsed
        self.te: list[str] | None = None
        self.ce: list[str] | None = None
        self.pause_after = False  # hold what follows this request (CONNECT, Upgrade)
        self.forcing = False  # resume(force): the session must decide at once
        self.closing = False  # parsing the last bytes at the end of the stream
        self.ended = False
        self.violations = 0

    # -- input ------------------------------------------------------------------------------
    def feed(self, off: int, ts: float, ack: int | None, data: bytes) -> None:
        """Bytes ``[off, off + len(data))`` of the stream (``off`` is ``self.pos``)."""
        n = len(data)
        state = self.state
        self.pos = off + n
        if state == BODY_LEN and n < self.remaining and not self.buf:
            self.remaining -= n  # the common case: a segment inside a body
            self._body(data)
            return
        if state >= TUNNEL:
            return
        self.cur_off = off
        self.cur_ts = ts
        self.cur_ack = ack
        buf = self.buf
        if buf:
            self.marks.append((off, ts, ack))
            if state == IDLE and self.searched and len(buf) + n <= self.cfg.max_head \
                    and _head_end(buf[-3:] + data, 0) < 0:
                # still inside a head whose start line is known: append without joining
                # and re-searching (a big head in small segments stays linear)
                if type(buf) is bytes:
                    buf = bytearray(buf)
                buf += data
                self.buf = buf
                self.acct.n += n
                self.searched = len(buf)
                return
        elif self.marks:
            self.marks.clear()
        if state == WAIT or state == PAUSED:
            self._keep(bytes(buf) + data if buf else data, self.buf_off if buf else off)
            if len(self.buf) > MAX_DEFER:
                self.resume(True)
            return
        if buf:
            self.acct.n -= len(buf)
            self.buf = b""
            self._parse(bytes(buf) + data, self.buf_off)
        else:
            self._parse(data, off)

    def gap(self, off: int, nbytes: int) -> None:
        """Bytes ``[off, off + nbytes)`` were not observed; ``UNKNOWN`` at offset 0: the
        stream was first seen mid-way, so look for a message start."""
        if nbytes == UNKNOWN:
            self.state = RESYNC
            self.line_start = True  # a segment often begins a message
            return
        if self.state == WAIT or self.state == PAUSED:
            self.resume(True)
        state = self.state
        self.pos = off + nbytes
        if state >= TUNNEL:
            return
        msg = self.msg
        if msg is not None and (state == BODY_LEN or state == CHUNK_DATA) \
                and nbytes <= self.remaining and not self.buf:
            msg.flag("gap")  # inside a body of known length: the framing holds
            self.remaining -= nbytes
            if self.remaining == 0:
                if state == BODY_LEN:
                    self._finish(off + nbytes)
                else:
                    self.state = CHUNK_CRLF
            return
        if msg is not None and state == BODY_EOF:
            msg.flag("gap")
            return
        if state != RESYNC:
            if msg is not None:  # lost inside a head, the chunk framing, or past a body
                reason = "gap"
                msg.flag("gap")
                if state == HEAD_BIG or state == HEAD_SKIP:
                    self._head_done(msg, off)  # announce it; its framing is lost anyway
                if self.msg is msg:
                    self._finish(off)
            elif self.buf:
                reason = "gap_in_head"  # the start of a message was seen, its head lost
            elif nbytes >= MIN_MESSAGE:
                reason = "gap_between_messages"  # a message began in the lost bytes
            else:
                reason = "gap"
            self._drop_buf()
            self._lose(reason)
        else:
            self._drop_buf()
        self.line_start = True  # the byte after a gap may begin a message

    def end(self) -> None:
        """The direction ended (FIN, close, eviction)."""
        if self.ended:
            return
        if self.state == WAIT or self.state == PAUSED:
            self.resume(True)
        self.ended = True
        if self.state == IDLE and self.buf:
            # unterminated last bytes: a request line at close (HTTP/0.9), or a cut head
            buf = self.buf
            self.acct.n -= len(buf)
            self.buf = b""
            self.closing = True
            self._parse(bytes(buf) + b"\n\n", self.buf_off)
        msg = self.msg
        if msg is not None:
            if self.state != BODY_EOF:
                msg.flag("incomplete")
            if self.state == HEAD_BIG or self.state == HEAD_SKIP:
                self._head_done(msg, self.pos)
            if self.msg is not None:
                self._finish(self.pos)
        self._drop_buf()
        if self.state < TUNNEL:
            self.state = TUNNEL

    def resume(self, force: bool) -> None:
        """Parse what waited (a response head waiting for its request; bytes held after a
        CONNECT or Upgrade request), now that the session knows more.  ``force``: the
        session must decide now, with what it has."""
        state = self.state
        if state != WAIT and state != PAUSED:
            return
        self.state = IDLE
        self.pause_after = False
        buf = self.buf
        if not buf:
            return
        off = self.buf_off
        self.acct.n -= len(buf)
        self.buf = b""
        self.forcing = force
        self.cur_off = off + len(buf) + 1  # every message in buf takes its time from marks
        self._parse(bytes(buf), off)
        self.forcing = False

    def paused(self) -> bool:
        """Holding bytes after a CONNECT or Upgrade request until the response decides."""
        return self.state == PAUSED

    def tunnel(self) -> None:
        """The connection switched protocols: nothing more here is HTTP."""
        self._drop_buf()
        self.msg = None
        self.state = TUNNEL

    def kill(self) -> None:
        """The session gave up on the connection."""
        self._drop_buf()
        self.msg = None
        self.state = DEAD

    # -- the parse loop ---------------------------------------------------------------------
    def _parse(self, data: bytes, base: int) -> None:
        """``data`` begins at stream offset ``base``; whatever is not consumed is kept."""
        p = 0
        n = len(data)
        while p < n:
            state = self.state
            if state == BODY_LEN or state == CHUNK_DATA:
                take = self.remaining
                if take >= n - p:
                    take = n - p
                    self._body(data[p:] if p else data)
                else:
                    self._body(data[p:p + take])
                p += take
                self.remaining -= take
                if self.remaining == 0:
                    if state == BODY_LEN:
                        self._finish(base + p)
                    else:
                        self.state = CHUNK_CRLF
            elif state == IDLE:
                while p < n and (data[p] == 13 or data[p] == 10):
                    p += 1  # empty lines between messages are tolerated (RFC 9112 2.2)
                if p >= n:
                    break
                r = self._head(data, p, base)
                if r < 0:
                    self._keep(data[p:] if p else data, base + p)
                    return
                p = r
            elif state == CHUNK_SIZE or state == CHUNK_CRLF or state == TRAILER:
                i = data.find(b"\n", p)
                if i < 0:
                    if n - p > MAX_LINE:
                        self._bad_chunk(base + p)
                        p += 1
                        continue
                    self._keep(data[p:], base + p)
                    return
                line = data[p:i]
                if line.endswith(b"\r"):
                    line = line[:-1]
                p = i + 1
                if state == CHUNK_CRLF:
                    if line:
                        self._bad_chunk(base + p)  # the CRLF after chunk data is missing
                    else:
                        self.state = CHUNK_SIZE
                elif state == TRAILER:
                    if not line:
                        self._finish(base + p)
                else:
                    self._chunk_size(line, base + p)
            elif state == BODY_EOF:
                self._body(data[p:] if p else data)
                return
            elif state == HEAD_BIG:
                r = self._head_big(data, p, base)
                if r < 0:
                    return
                p = r
            elif state == HEAD_SKIP:
                p = self._head_skip(data, p)
            elif state == RESYNC:
                r = self._resync(data, p, base)
                if r < 0:
                    return
                p = r
            elif state == WAIT or state == PAUSED:
                self._keep(data[p:] if p else data, base + p)
                return
            else:  # TUNNEL, DEAD
                return

    def _keep(self, data: bytes, off: int) -> None:
        """Keep unconsumed bytes for later (an unfinished head, line or held bytes)."""
        marks = self.marks
        if not marks:
            marks.append((self.cur_off, self.cur_ts, self.cur_ack))
        else:
            while len(marks) > 1 and marks[1][0] <= off:
                del marks[0]
        self.acct.n += len(data) - len(self.buf)
        self.buf = data
        self.buf_off = off

    def _drop_buf(self) -> None:
        if self.buf:
            self.acct.n -= len(self.buf)
            self.buf = b""
        self.searched = 0
        self.marks.clear()

    def _at(self, off: int) -> tuple[float, int | None]:
        """Time and acknowledgement of the segment that held stream offset ``off``."""
        if off >= self.cur_off:
            return self.cur_ts, self.cur_ack
        marks = self.marks
        for i in range(len(marks) - 1, -1, -1):
            m = marks[i]
            if m[0] <= off:
                return m[1], m[2]
        if marks:
            return marks[0][1], marks[0][2]
        return self.cur_ts, self.cur_ack

    # -- heads ------------------------------------------------------------------------------
    def _head(self, data: bytes, p: int, base: int) -> int:
        """Parse the message head at ``p``.  Returns the offset after what was consumed,
        or -1 when more bytes are needed (or the response waits: state WAIT)."""
        i = data.find(b"\n", p)
        role = self.role
        if i < 0:
            if len(data) - p > self.cfg.max_head:
                self._violation("line_too_long", base + p)
                return p
            if role == RESPONSE and not data.startswith(b"HTTP/"[:len(data) - p], p) \
                    and self.hooks.simple_response(self):
                return self._simple_response(base + p, p)
            return -1
        line = data[p:i]
        if line.endswith(b"\r"):
            line = line[:-1]
        if role != REQUEST and line.startswith(b"HTTP/"):
            return self._response_head(data, p, i, line, base)
        if role == RESPONSE:
            if self.hooks.simple_response(self):
                return self._simple_response(base + p, p)
            self._violation("bad_status_line", base + p)
            return p
        return self._request_head(data, p, i, line, base)

    def _head_end(self, data: bytes, p: int, i: int) -> int:
        """Offset after the empty line that ends the head at ``p`` (first line ending at
        ``i``); -1 when not there yet; -3 when the head outgrew ``max_head``."""
        start = i
        if p == 0 and self.searched > 3:
            start = max(i, self.searched - 3)  # never search the same bytes twice
        end = _head_end(data, start)
        if end >= 0:
            self.searched = 0
            return end
        if len(data) - p > self.cfg.max_head:
            self.searched = 0
            return -3
        self.searched = len(data) - p
        return -1

    def _request_head(self, data: bytes, p: int, i: int, line: bytes, base: int) -> int:
        parts = line.split()
        np = len(parts)
        kind = LINE_BAD
        method = self.cfg.method_names.get(parts[0]) if np >= 2 else None
        version = _VERSIONS.get(parts[-1]) if np >= 2 else None
        if method is not None and version is not None:
            kind = LINE_REQUEST  # the usual line, known without the regexes
        elif np >= 2 and _TOKEN.fullmatch(parts[0]) is not None \
                and (self.accepted or parts[0].decode("ascii") in self.cfg.methods):
            if _VERSION.fullmatch(parts[-1]) is not None:
                kind = LINE_REQUEST  # "GET HTTP/1.1" has no target: still a request line
            elif np == 2 and parts[0].decode("ascii") in self.cfg.methods:
                kind = LINE_SIMPLE  # no version: only ever with a known method
        if kind == LINE_BAD:
            self._violation("bad_request_line", base + p)
            return p
        if self.role == 0 or not self.accepted:
            if not self.hooks.start_line(self, kind, base + p):
                return p
        if kind == LINE_SIMPLE:
            # no version: a broken HTTP/1.x client if a field line follows in the same
            # bytes, otherwise the whole request (HTTP/0.9 when the reply is a bare body)
            j = i + 1
            k = data.find(b"\n", j)
            follow = data[j:k] if k >= 0 else data[j:]
            if b":" not in follow:
                ts, ack = self._at(base + p)
                msg = Message(base + p, ts, ack)
                msg.method = method if method is not None else parts[0].decode("ascii")
                msg.target = parts[1].decode("latin-1")
                msg.version = "HTTP/0.9"
                self._take(msg)
                self.hooks.request_head(self, msg)
                self._finish(base + j)
                return j
        end = self._head_end(data, p, i)
        if end == -1:
            return -1
        ts, ack = self._at(base + p)
        msg = Message(base + p, ts, ack)
        msg.method = method if method is not None else parts[0].decode("ascii")
        if kind == LINE_SIMPLE:
            msg.target = parts[1].decode("latin-1")
            msg.flag("missing_version")
        else:
            msg.version = version if version is not None else parts[-1].decode("latin-1")
            if np == 3:
                msg.target = parts[1].decode("latin-1")
            elif np > 2:
                msg.target = b" ".join(parts[1:-1]).decode("latin-1")
                if np > 3:
                    msg.flag("space_in_target")
        self.cl = self.te = self.ce = None
        if end == -3:
            self._take(msg)
            return self._enter_head_big(msg, data, i)
        self._head_fields(msg, data, i + 1, end)
        if self.closing and end >= len(data) - 1:
            msg.flag("incomplete")  # the head was cut by the end of the stream
        self._take(msg)
        return self._request_framing(msg, base + end, end)

    def _request_framing(self, msg: Message, end_off: int, end: int) -> int:
        """Frame a request body (RFC 9112 6.3: Transfer-Encoding, then Content-Length)."""
        cl, te = self.cl, self.te
        if not self.hooks.request_head(self, msg):
            self.pause_after = True  # CONNECT / Upgrade: what follows depends on the reply
        if te is not None:
            if cl is not None:
                msg.flag("te_cl_conflict")
            if self._codings(msg, te):
                self.state = CHUNK_SIZE
                return end
            msg.flag("te_not_chunked")  # a request must end with chunked (RFC 9112 6.3)
            self._finish(end_off)
            self._lose("te_not_chunked")
            return end
        if cl is not None:
            length = self._length(msg, cl)
            if length < 0:
                self._finish(end_off)
                self._lose("bad_content_length")
                return end
            if length:
                self.remaining = length
                self.state = BODY_LEN
                return end
        self._finish(end_off)
        return end

    def _response_head(self, data: bytes, p: int, i: int, line: bytes, base: int) -> int:
        parts = line.split(None, 2)
        bad_status = False
        version = _VERSIONS.get(parts[0]) if len(parts) >= 2 else None
        if version is not None and len(parts[1]) == 3 and parts[1].isdigit():
            pass  # the usual line, known without the regexes
        elif len(parts) < 2 or _VERSION.fullmatch(parts[0]) is None \
                or _STATUS.fullmatch(parts[1]) is None:
            if self.role == RESPONSE and self.hooks.simple_response(self):
                return self._simple_response(base + p, p)
            if not (self.accepted and self.role == RESPONSE
                    and _VERSION.fullmatch(parts[0]) is not None):
                self._violation("bad_status_line", base + p)
                return p
            # "HTTP/1.1 abc": a response head with a status we cannot read.  Keep it as a
            # response (status 0, flagged) so that pairing stays in step.
            bad_status = True
        if self.role == 0 or not self.accepted:
            if not self.hooks.start_line(self, LINE_STATUS, base + p):
                return p
        end = self._head_end(data, p, i)
        if end == -1:
            return -1
        ts, ack = self._at(base + p)
        msg = Message(base + p, ts, ack)
        msg.version = version if version is not None else parts[0].decode("latin-1")
        if bad_status:
            msg.flag("bad_status")
            msg.reason = b" ".join(parts[1:]).decode("latin-1").strip()
        else:
            msg.status = int(parts[1])
            msg.reason = parts[2].decode("latin-1").strip() if len(parts) > 2 else ""
        self.cl = self.te = self.ce = None
        if end == -3:
            self._take(msg)
            return self._enter_head_big(msg, data, i)
        self._head_fields(msg, data, i + 1, end)
        if self.closing and end >= len(data) - 1:
            msg.flag("incomplete")
        req = self.hooks.response_head(self, msg, self.forcing or self.closing)
        if req is WAIT_FOR_REQUEST:
            self.state = WAIT
            self.searched = 0
            return -1
        self._take(msg)
        return self._response_framing(msg, req, base + end, end)

    def _response_framing(self, msg: Message, req: Message | None, end_off: int,
                          end: int) -> int:
        """Frame a response body (RFC 9112 6.3), knowing the request it answers."""
        status = msg.status
        method = req.method if req is not None else ""
        cl, te = self.cl, self.te
        if status < 200 or status == 204 or status == 304 or method == "HEAD":
            if te is not None:
                self._codings(msg, te)
            if cl is not None:
                self._length(msg, cl)
            self._finish(end_off)
            return end
        if method == "CONNECT" and status < 300:
            self._finish(end_off)  # the tunnel opens (the session switches both sides)
            return end
        if te is not None:
            if cl is not None:
                msg.flag("te_cl_conflict")
            if self._codings(msg, te):
                self.state = CHUNK_SIZE
            else:
                self.state = BODY_EOF
            return end
        if cl is not None:
            length = self._length(msg, cl)
            if length < 0:
                self._finish(end_off)
                self._lose("bad_content_length")
                return end
            if length:
                self.remaining = length
                self.state = BODY_LEN
            else:
                self._finish(end_off)
            return end
        self.state = BODY_EOF
        return end

    def _simple_response(self, off: int, p: int) -> int:
        """An HTTP/0.9 response: no head; the body runs to the end of the stream."""
        ts, ack = self._at(off)
        msg = Message(off, ts, ack)
        msg.version = "HTTP/0.9"
        self.hooks.response_head(self, msg, True)
        self._take(msg)
        self.state = BODY_EOF
        return p

    def _take(self, msg: Message) -> None:
        self.msg = msg
        self.acct.n += msg.mem

    def _enter_head_big(self, msg: Message, data: bytes, i: int) -> int:
        """The head outgrew max_head: go on line by line without keeping it whole."""
        msg.flag("head_too_large")
        self.state = HEAD_BIG
        return i + 1

    def _head_big(self, data: bytes, p: int, base: int) -> int:
        msg = self.msg
        assert msg is not None
        lines: list[str] = []
        n = len(data)
        while p < n:
            i = data.find(b"\n", p)
            if i < 0:
                break
            line = data[p:i]
            p = i + 1
            if not line or line == b"\r":
                self._fields(msg, lines)
                return self._head_done(msg, base + p, p)
            lines.append(line.decode("latin-1"))
        self._fields(msg, lines)
        if n - p > MAX_LINE:
            # a single field line longer than a line may be: drop it (the message stays,
            # flagged head_too_large) and go on at the next line
            self._drop_buf()
            self.state = HEAD_SKIP
            return n
        self._keep(data[p:], base + p)
        return -1

    def _head_skip(self, data: bytes, p: int) -> int:
        """Inside an over-long field line of a big head: skip to its end."""
        i = data.find(b"\n", p)
        if i < 0:
            return len(data)
        self.state = HEAD_BIG
        return i + 1

    def _head_done(self, msg: Message, end_off: int, end: int = 0) -> int:
        """The end of a head parsed line by line: frame its body."""
        self.state = IDLE
        if msg.status:
            req = self.hooks.response_head(self, msg, True)
            return self._response_framing(msg, req, end_off, end)
        return self._request_framing(msg, end_off, end)

    def _head_fields(self, msg: Message, data: bytes, start: int, end: int) -> None:
        """The field lines ``data[start:end]`` of a whole head (ending with the empty line)."""
        if COMPILED:
            fields = _plain_fields(data, start, end, self.cfg.max_headers)
            if fields is not None:
                msg.headers = fields
                msg.mem += end - start + HEADER_OVERHEAD * len(fields)
                self._framing_fields(msg)
                return
        self._field_block(msg, data[start:end].decode("latin-1"))

    def _field_block(self, msg: Message, block: str) -> None:
        """The field lines of a whole head.  The common case — CRLF lines, each a token
        name, a colon and a value — is checked and split with a handful of C-level
        string operations; anything else goes line by line through ``_fields``, which
        names each irregularity."""
        if block.count("\n") != block.count("\r\n"):
            self._fields(msg, block.split("\n"))  # bare LF somewhere
            return
        lines = block.split("\r\n")
        del lines[-2:]  # the empty line that ends the head
        if len(lines) > self.cfg.max_headers:
            self._fields(msg, lines)
            return
        # "name: value" with exactly one space and no whitespace at the end of a value
        # needs no strip (the usual shape); otherwise split at the colon and strip
        plain = not (":  " in block or ": \t" in block or " \r\n" in block
                     or "\t\r\n" in block)
        parts = [line.split(": ", 1) for line in lines] if plain else []
        if not plain or (parts and min(map(len, parts)) < 2):
            parts = [line.split(":", 1) for line in lines]
            if parts and min(map(len, parts)) < 2:
                self._fields(msg, lines)
                return
            plain = False
        joined = "\n".join([q[0] for q in parts])
        if _TOKEN_LINES.fullmatch(joined) is None:
            self._fields(msg, lines)  # obs-fold, whitespace before a colon, odd names
            return
        if plain:
            msg.headers = list(map(tuple, parts))  # type: ignore[arg-type]
        else:
            msg.headers = [(q[0], q[1].strip()) for q in parts]
        msg.mem += len(block) + HEADER_OVERHEAD * len(parts)
        self._framing_fields(msg)

    def _framing_fields(self, msg: Message) -> None:
        """Pick out the framing fields (Content-Length, Transfer-Encoding, Content-Encoding,
        Upgrade) of a head whose fields are all well-formed."""
        for name, value in msg.headers:
            nl = len(name)
            if nl == 14 or nl == 17 or nl == 16 or nl == 7:
                self._framing_field(msg, name.lower(), value)

    def _framing_field(self, msg: Message, lname: str, value: str) -> None:
        """One field, by its lower-case name: kept if it frames the message."""
        if lname == "content-length":
            if self.cl is None:
                self.cl = [value]
            else:
                self.cl.append(value)
        elif lname == "transfer-encoding":
            if self.te is None:
                self.te = [value]
            else:
                self.te.append(value)
        elif lname == "content-encoding":
            if self.ce is None:
                self.ce = [value]
            else:
                self.ce.append(value)
            msg.encoding = ",".join(self.ce)
        elif lname == "upgrade":
            msg.upgrade = True

    def _fields(self, msg: Message, lines: list[str]) -> None:
        """Parse header field lines once: keep them in wire order and pick out the framing
        fields (Content-Length, Transfer-Encoding, Content-Encoding, Upgrade)."""
        headers = msg.headers
        cap = self.cfg.max_headers
        mem = 0
        for line in lines:
            if not line:
                continue
            if line[-1] == "\r":
                line = line[:-1]
                if not line:
                    continue
            c = line[0]
            if c == " " or c == "\t":
                if headers:  # obs-fold: a continuation of the previous value
                    name, value = headers[-1]
                    headers[-1] = (name, value + " " + line.strip())
                    mem += len(line)
                    msg.flag("obs_fold")
                else:
                    msg.flag("bad_header_line")
                continue
            name, sep, value = line.partition(":")
            if not sep or not name:
                msg.flag("bad_header_line")
                continue
            value = value.strip()
            c = name[-1]
            if c == " " or c == "\t":
                # RFC 9112 5.1: no whitespace between name and colon.  Such a field is
                # invalid and takes no part in framing (a request smuggling vector).
                msg.flag("header_space_before_colon")
                name = name.rstrip()
                lname = name.lower()
                if lname == "transfer-encoding":
                    msg.flag("te_obfuscated")
                elif lname == "content-length":
                    msg.flag("bad_content_length")
            else:
                nl = len(name)
                if nl == 14 or nl == 17 or nl == 16 or nl == 7:
                    self._framing_field(msg, name.lower(), value)
            if len(headers) < cap:
                headers.append((name, value))
                mem += len(name) + len(value) + HEADER_OVERHEAD
            else:
                msg.flag("head_too_large")
        if mem:
            msg.mem += mem
            if msg is self.msg:
                self.acct.n += mem

    def _codings(self, msg: Message, te: list[str]) -> bool:
        """Transfer codings: True when chunked is the final coding.  Other codings are
        kept for decoding; anything else is flagged ``te_obfuscated``."""
        codings = [c.strip().lower() for c in ",".join(te).split(",")]
        codings = [c for c in codings if c]
        chunked = bool(codings) and codings[-1] == "chunked"
        odd = not codings
        last = len(codings) - 1
        for k, c in enumerate(codings):
            if c not in _CODINGS or (c == "chunked" and k != last):
                odd = True
        if odd:
            msg.flag("te_obfuscated")
        rest = [c for c in codings if c != "chunked" and c != "identity"]
        if rest:
            msg.te = ",".join(rest)
        return chunked

    def _length(self, msg: Message, cl: list[str]) -> int:
        """Content-Length: digits only; a list of identical values is accepted (RFC 9110
        8.6); -1 (and ``bad_content_length``) otherwise."""
        if len(cl) == 1:
            v = cl[0]
            if v.isdigit() and v.isascii() and len(v) < 19:
                return int(v)  # the common case: one plain value
        length = -1
        for field in cl:
            for v in field.split(","):
                v = v.strip()
                if _DIGITS.fullmatch(v) is None:
                    msg.flag("bad_content_length")
                    return -1
                value = int(v)
                if length >= 0 and value != length:
                    msg.flag("bad_content_length")
                    return -1
                length = value
        return length

    # -- bodies -----------------------------------------------------------------------------
    def _chunk_size(self, line: bytes, off: int) -> None:
        size = line.split(b";", 1)[0].rstrip(b" \t")
        if _HEX.fullmatch(size) is None:
            self._bad_chunk(off)
            return
        n = int(size, 16)
        if n == 0:
            self.state = TRAILER
        else:
            self.remaining = n
            self.state = CHUNK_DATA

    def _bad_chunk(self, off: int) -> None:
        msg = self.msg
        if msg is not None:
            msg.flag("bad_chunk")
            self._finish(off)
        self._lose("bad_chunk")

    def _body(self, chunk: bytes) -> None:
        msg = self.msg
        if msg is None:
            return
        n = len(chunk)
        msg.body_len += n
        if msg.stored < self.cfg.max_body:
            msg.parts.append(chunk)
            msg.stored += n
            cost = n + PART_OVERHEAD
            msg.mem += cost
            self.acct.n += cost
        elif msg.flags is None or "truncated" not in msg.flags:
            msg.flag("truncated")

    def _finish(self, end_off: int) -> None:
        msg = self.msg
        self.msg = None
        if self.state < RESYNC or self.state == HEAD_SKIP:
            self.state = PAUSED if self.pause_after else IDLE
        if msg is not None:
            msg.complete = True
            msg.end = end_off
            self.hooks.message_done(self, msg)

    # -- losing and finding the framing -----------------------------------------------------
    def _violation(self, reason: str, off: int) -> None:
        """Bytes that are not HTTP where a message should start."""
        self.violations += 1
        msg = self.msg
        if msg is not None:
            msg.flag("incomplete")
            self._finish(off)
        self._lose(reason)
        self.line_start = False  # scan from the next line on

    def _lose(self, reason: str) -> None:
        """The framing of this direction is lost: tell the session, then look for the
        next message start (unless the session gave up on the connection)."""
        self.pause_after = False
        self.state = RESYNC
        self.line_start = True
        self.hooks.framing_lost(self, reason)

    def _resync(self, data: bytes, p: int, base: int) -> int:
        """The offset of the next message start at a line start, or -1 (keeping the
        unfinished last line, which may become one)."""
        cfg = self.cfg
        start = p if self.line_start else p + 1
        found = -1
        if self.role != RESPONSE:
            m = cfg.resync_req.search(data, start)
            if m is not None:
                found = m.start()
        if self.role != REQUEST:
            m = cfg.resync_resp.search(data, start)
            if m is not None and (found < 0 or m.start() < found):
                found = m.start()
        # a segment often begins a message even when the bytes before it do not end a
        # line (the tail of a body): try where the bytes fed last begin
        seg = self.cur_off - base
        if start <= seg < len(data) and (found < 0 or seg < found) \
                and ((self.role != RESPONSE and cfg.at_req.match(data, seg) is not None)
                     or (self.role != REQUEST and cfg.at_resp.match(data, seg) is not None)):
            found = seg
        if found >= 0:
            self.state = IDLE
            self.line_start = True
            return found
        n = len(data)
        k = data.rfind(b"\n", start)
        if k >= 0:
            tail_off = k + 1
        elif self.line_start:
            tail_off = p
        else:
            tail_off = n
        if n - tail_off > MAX_LINE:
            tail_off = n
        self.line_start = tail_off < n or k == n - 1
        self._drop_buf()
        if tail_off < n:
            self._keep(data[tail_off:], base + tail_off)
        if not self.accepted:
            self.hooks.progress(self)
        return -1
