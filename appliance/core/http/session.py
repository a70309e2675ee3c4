"""The HTTP session: both directions of one connection, from stream events to pairs.

An :class:`HttpSession` consumes the stream events of ``appliance.core.stream``
(``data`` / ``gap`` / ``ack`` / ``eof``) for the two directions of a connection, runs an
:class:`~appliance.core.http.parser.HttpParser` on each, decides whether the connection
is HTTP at all, pairs every response with the request it answers and hands out
:class:`~appliance.core.pair.Pair` objects.  It imports nothing from TCP: the mirroring
front end (TCP assembly) and the eBPF front end (socket calls) feed it the same way.

**Detection.**  A connection becomes HTTP on a request line with a known method, a
target and an ``HTTP/x.y`` version, or on a status line.  A request line without a
version is only tentative: the connection is HTTP if the server answers with a status
line, or — for ``GET`` only, the request being the first bytes of a stream the server
had not spoken on — if the server answers with a bare body (HTTP/0.9); a tentative
connection's pairs are held until that is settled, so FTP, SMTP, IMAP or Redis
sessions never produce a record.  Anything else where a message must start ends the
parsing of the connection (``not_http`` by reason).

**Pairing by evidence.**  Every request knows where it starts in the client stream
and how much of the server stream the client had received (its ``ack``); every
response knows how much of the client stream the server had received when it started
(its ``ack``).  A response answers the first unanswered request, provided

- the server had received that request's first byte (``request.start < response.ack``),
- the client had not yet received the response when it sent the request
  (``request.ack <= response.start``);

otherwise it answers a request we never saw, and is an orphan (counted by reason).
When the capture delivered a response before the request bytes the server had
acknowledged, the response waits for them (bounded).  After a *request-side* loss
outside a body (lost bytes that may have held requests), the number of requests in
the hole is unknowable, so every later request of the connection goes out unanswered
(``unpaired_request_gap``) and the responses past the known requests are orphans: a
wrong pair is worse than a lost one.  After a *response-side* loss, the responses lost
are at least ``server_skip`` (one, when the lost bytes began at a message boundary);
the next response is paired only when the evidence leaves exactly one candidate, and
the requests it skips over go out unanswered (``unpaired_response_gap``).  Without ACK
evidence (eBPF streams, which are in true order) pairing is by order.

A connection first seen mid-way pairs from the first request seen, with the same
evidence checks, and its pairs carry ``midstream`` (requests sent before the capture
began cannot be excluded with certainty).

**Memory.**  Every byte the session holds is in its connection's ``Acct``: parser
buffers, messages being parsed, requests waiting for their response.  Requests
beyond ``max_outstanding`` without a response go out unanswered at once, oldest
first (``too_many_outstanding``); only their number is kept, so that the responses that
answer them later are recognised (orphans, ``request_already_out``) and the rest still
pair in order.  A connection therefore holds at most ``max_outstanding`` requests
however long it pipelines (a one-sided capture, a flood).
"""

from __future__ import annotations

from collections import deque
from typing import Callable, cast

from appliance.core.http.parser import (
    LINE_SIMPLE, LINE_STATUS, REQUEST, RESPONSE, WAIT, WAIT_FOR_REQUEST, Hooks, HttpParser,
    ParserConfig,
)
from appliance.core.pair import Message, Pair
from appliance.core.stream import UNKNOWN, Acct

# session states
DETECT = 0  # nothing decided yet
HTTP = 1
TENTATIVE = 2  # a version-less request line: HTTP only if the reply says so
NOT_HTTP = 3  # given up: no records from here on

# a request's peer when its response was lost in a response-side gap
LOST = Message(-1, 0.0, None)


class SessionConfig:
    __slots__ = ("parser", "max_outstanding", "ack_evidence", "detect_limit")

    def __init__(self, parser: ParserConfig | None = None, max_outstanding: int = 128,
                 ack_evidence: bool = True, detect_limit: int = 1 << 20) -> None:
        self.parser = parser if parser is not None else ParserConfig()
        self.max_outstanding = max_outstanding  # unanswered requests kept per connection
        self.ack_evidence = ack_evidence  # False: streams in true order (eBPF)
        self.detect_limit = detect_limit  # bytes scanned for a first message start


class HttpStats:
    """Counters shared by every session of a front end (a worker)."""

    __slots__ = ("requests", "responses", "pairs", "pending", "interim", "tunnels", "waits",
                 "resyncs", "orphans", "violations", "not_http", "connections_http")

    def __init__(self) -> None:
        self.requests = 0
        self.responses = 0
        self.pairs = 0  # pairs with a response
        self.pending = 0  # requests that went out unanswered
        self.interim = 0  # 1xx responses (skipped)
        self.tunnels = 0
        self.waits = 0  # responses that waited for their request's bytes
        self.resyncs = 0
        self.orphans: dict[str, int] = {}  # responses paired with nothing, by reason
        self.violations: dict[str, int] = {}  # framing lost, by reason
        self.not_http: dict[str, int] = {}  # connections given up, by reason
        self.connections_http = 0

    @property
    def orphan_responses(self) -> int:
        return sum(self.orphans.values())

    def figures(self) -> dict[str, object]:
        """The counters under the names every front end's ``stats()`` reports."""
        return {
            "http_connections": self.connections_http,
            "pairs": self.pairs,
            "pending": self.pending,
            "requests": self.requests,
            "responses": self.responses,
            "orphan_responses": self.orphan_responses,
            "orphans": dict(self.orphans),
            "interim_responses": self.interim,
            "resyncs": self.resyncs,
            "violations": dict(self.violations),
            "not_http": dict(self.not_http),
            "tunnels": self.tunnels,
        }


def _discard(pair: Pair) -> None:
    """The ``emit`` of a detached session (it has nothing left to emit)."""


def _count(counts: dict[str, int], reason: str) -> None:
    counts[reason] = counts.get(reason, 0) + 1


class HttpSession(Hooks):
    __slots__ = ("cfg", "stats", "emit", "acct", "parsers", "client", "state", "reqs", "a",
                 "client_desync", "server_zone", "server_skip", "last_ack", "midstream",
                 "held", "lone", "waiting", "switch", "forgotten", "eof_pending", "confirm")

    def __init__(self, cfg: SessionConfig, stats: HttpStats, emit: Callable[[Pair], None],
                 acct: Acct | None = None, client: int | None = None) -> None:
        self.cfg = cfg
        self.stats = stats
        self.emit = emit
        self.acct = acct if acct is not None else Acct()
        pc = cfg.parser
        self.parsers = (HttpParser(self, 0, pc, self.acct), HttpParser(self, 1, pc, self.acct))
        self.client = -1
        self.state = DETECT
        self.reqs: deque[Message] = deque()  # requests in order, until they go out
        self.a = 0  # reqs[a] is the first request without a response
        self.client_desync = False  # a request-side loss: later requests cannot pair
        self.server_zone = False  # a response-side loss: responses lost, count unknown
        self.server_skip = 0  # responses certainly lost in the server zone
        self.last_ack: list[int | None] = [None, None]  # the latest `ack` of each direction
        self.midstream = 0  # bit per direction first seen mid-way
        self.held: list[Pair] | None = None  # pairs of a tentative connection
        self.lone: Message | None = None  # an unpairable request being parsed
        self.waiting = False  # the server parser waits for client bytes
        self.switch = False  # the response being parsed switches protocols
        self.forgotten = 0  # oldest unanswered requests that already went out
        self.eof_pending = 0  # bit per direction whose end waits for a pairing decision
        self.confirm = 0  # TENTATIVE: REQUEST or RESPONSE, whose start line settles it
        if client is not None:
            self._roles(client)

    # -- stream events ----------------------------------------------------------------------
    def data(self, direction: int, offset: int, ts: float, payload: bytes) -> None:
        if self.state == NOT_HTTP:
            return
        self.parsers[direction].feed(offset, ts, self.last_ack[direction], payload)
        if self.waiting and direction == self.client:
            self._retry(False)

    def gap(self, direction: int, offset: int, nbytes: int) -> None:
        if self.state == NOT_HTTP:
            return
        if nbytes == UNKNOWN:
            self.midstream |= 1 << direction
            if direction != self.client and self.client >= 0:
                self.server_zone = True
        self.parsers[direction].gap(offset, nbytes)
        if self.waiting and direction == self.client:
            self._retry(False)

    def ack(self, direction: int, offset: int) -> None:
        self.last_ack[direction] = offset

    def eof(self, direction: int) -> None:
        if self.state == NOT_HTTP:
            return
        p = self.parsers[direction]
        if p.state == WAIT:
            # the server finished, but its last response still waits for client bytes
            # that are on their way (held by the TCP assembly): end it once decided
            self.eof_pending |= 1 << direction
            return
        p.end()
        if self.waiting:
            self._retry(direction == self.client)

    def close(self) -> None:
        """The connection is over: flush everything, answered or not."""
        p0, p1 = self.parsers
        if self.state != NOT_HTTP:
            client = self.client if self.client >= 0 else 0
            self.parsers[client].end()  # the client first: a waiting response can pair
            self.parsers[1 - client].end()
            if self.waiting:
                self._retry(True)
        reqs = self.reqs
        while reqs:
            req = reqs.popleft()
            peer = req.peer
            if peer is None or peer is LOST:
                self._out(req, None, "unpaired_response_gap" if peer is LOST else None)
            else:
                self._out(req, peer, None)
        self.a = 0
        if self.lone is not None:
            self._out(self.lone, None, "unpaired_request_gap")
            self.lone = None
        if self.state == TENTATIVE:
            self._settle_tentative()
        p0.kill()
        p1.kill()

    def buffered(self) -> int:
        return self.acct.n

    def detach(self) -> None:
        """After ``close``: drop the references that form cycles (the parsers point back
        at their session, the owner's ``emit`` at the owner), so the session is freed
        by reference counting.  Nothing may be fed to it afterwards."""
        self.emit = _discard
        for p in self.parsers:
            p.hooks = cast(Hooks, None)

    # -- parser hooks -------------------------------------------------------------------------
    def start_line(self, p: HttpParser, kind: int, offset: int) -> bool:
        """A parser met a start line (at stream ``offset``) before the connection was
        settled as HTTP.  False: the connection is not HTTP."""
        state = self.state
        if state == DETECT and self.midstream & (1 << p.d):
            # found by scanning a stream first seen mid-way (a mail body, an IMAP literal
            # may quote HTTP): like Zeek's DPD, the other direction must confirm with the
            # complementary start line before anything goes out
            if kind == LINE_SIMPLE:
                return False
            self._roles(1 - p.d if kind == LINE_STATUS else p.d)
            self._tentative(REQUEST if kind == LINE_STATUS else RESPONSE)
            return True
        if kind == LINE_STATUS:
            if self.client < 0:
                self._roles(1 - p.d)
            if state == DETECT or (state == TENTATIVE and self.confirm == RESPONSE
                                   and p.d != self.client):
                self._accept()
            return True
        if self.client < 0:
            self._roles(p.d)
        if kind == LINE_SIMPLE:
            if state == DETECT:
                server = self.parsers[1 - p.d]
                if (offset > 0 or self.midstream or server.pos > 0
                        or p.cur_ack not in (None, 0)):
                    self._not_http("simple_request_not_first")
                    return False
                self._tentative(RESPONSE)
            return True
        if state == DETECT or (state == TENTATIVE and self.confirm == REQUEST
                               and p.d == self.client):
            self._accept()
        return True

    def _tentative(self, confirm: int) -> None:
        """Hold everything until the other side confirms (``confirm``: the role whose
        start line settles it)."""
        self.state = TENTATIVE
        self.confirm = confirm
        self.held = []

    def request_head(self, p: HttpParser, msg: Message) -> bool:
        """A request head was parsed.  False: hold what follows until the response."""
        self.stats.requests += 1
        if self.client_desync:
            self.lone = msg  # it goes out unanswered once complete
            return True
        self.reqs.append(msg)
        if len(self.reqs) - self.a > self.cfg.max_outstanding:
            self._too_many()
        return not (msg.method == "CONNECT" or msg.upgrade)

    def response_head(self, p: HttpParser, msg: Message, force: bool) -> Message | None:
        """Which request a response answers: the request, None (an orphan or an interim
        response), or WAIT_FOR_REQUEST when the client bytes it depends on are not in."""
        status = msg.status
        if 100 <= status < 200 and status != 101:
            self.stats.interim += 1
            return None
        if self.state == TENTATIVE and self.confirm == RESPONSE and msg.version != "HTTP/0.9":
            self._accept()  # the server speaks HTTP/1.x
        req = self._place(msg, force)
        if req is WAIT_FOR_REQUEST:
            if not self.waiting:
                self.stats.waits += 1
            self.waiting = True
            return req
        self.waiting = False
        if status == 101:
            if req is not None and req.upgrade:
                self.switch = True
            else:
                # 101 without an Upgrade proposal: not a protocol switch (RFC 9110 15.2.2);
                # treat it as interim and keep parsing
                self.stats.interim += 1
                if req is not None:
                    req.note("unexpected_101")
                    self._unplace(req)
                return None
        elif req is not None and req.method == "CONNECT" and status < 300:
            self.switch = True
        return req

    def simple_response(self, p: HttpParser) -> bool:
        """May the server's bytes be an HTTP/0.9 response (no status line)?"""
        reqs = self.reqs
        i = self.a + self.server_skip
        if i >= len(reqs):
            return False
        req = reqs[i]
        return req.version == "HTTP/0.9" and req.method == "GET"

    def message_done(self, p: HttpParser, msg: Message) -> None:
        if p.role == REQUEST:
            if msg is self.lone:
                self.lone = None
                self._out(msg, None, "unpaired_request_gap")
            elif self.reqs and self.reqs[0].peer is not None:
                self._flush()
            return
        self.stats.responses += 1
        if msg.peer is None:
            self.acct.n -= msg.mem  # interim or orphan: nothing keeps it
        else:
            self._flush()
        if self.switch:
            self.switch = False
            self.stats.tunnels += 1
            for q in self.parsers:
                q.tunnel()
        else:
            client = self.parsers[self.client]
            if client.paused():  # after CONNECT / Upgrade: not switching
                client.resume(False)

    def framing_lost(self, p: HttpParser, reason: str) -> None:
        """A parser lost its framing (a loss outside a body, or bytes that are not HTTP)."""
        if self.state == DETECT or self.state == TENTATIVE:
            self._not_http(reason if reason.startswith("gap") else "not_http_" + reason)
            return
        self.stats.resyncs += 1
        _count(self.stats.violations, reason)
        if p.role == REQUEST:
            self.client_desync = True
        else:
            self.server_zone = True
            if reason == "gap_between_messages" or reason == "gap_in_head":
                self.server_skip += 1

    def progress(self, p: HttpParser) -> None:
        """A parser scanned bytes without finding a message start (not yet HTTP)."""
        if p.pos > self.cfg.detect_limit and self.state != HTTP:
            self._not_http("no_message_start")

    # -- pairing ------------------------------------------------------------------------------
    def _place(self, resp: Message, force: bool) -> Message | None:
        cfg = self.cfg
        reqs = self.reqs
        ack = resp.ack
        evidence = cfg.ack_evidence
        if evidence and not force:
            cp = self.parsers[self.client]
            if not cp.ended:
                if ack is None:
                    if self.a + self.server_skip >= len(reqs):
                        return WAIT_FOR_REQUEST  # the client's side is not in yet
                elif cp.pos < ack or (cp.buf and cp.state == 0 and cp.buf_off < ack):
                    return WAIT_FOR_REQUEST  # the server had client bytes we have not
        if self.forgotten:
            # the oldest unanswered requests already went out (too many outstanding):
            # this response, and the ones certainly lost before it, answer them
            take = min(self.server_skip, self.forgotten - 1)
            self.forgotten -= 1 + take
            self.server_skip -= take
            self._orphan(resp, "request_already_out")
            return None
        lo = self.a + self.server_skip
        if lo >= len(reqs):
            self._orphan(resp, "after_request_gap" if self.client_desync else "no_request")
            return None
        hi = len(reqs) - 1
        if evidence and ack is not None:
            while hi >= lo and reqs[hi].start >= ack:
                hi -= 1
            start = resp.start
            while hi >= lo and reqs[hi].ack is not None and reqs[hi].ack > start:  # type: ignore[operator]
                hi -= 1
        if self.server_zone:
            if hi < lo:
                self._orphan(resp, "no_request_after_gap")
                return None
            if hi > lo:
                # as many candidates as the lost responses could be: pair none of them
                self._orphan(resp, "ambiguous_after_gap")
                self._lose_until(lo + 1)
                return None
            self._lose_until(lo)
            self.server_zone = False
            self.server_skip = 0
        elif hi < lo:
            req = reqs[lo]
            self._orphan(resp, "before_request" if ack is not None and req.start >= ack
                         else "seen_by_client_first")
            return None
        req = reqs[self.a]
        self.a += 1
        req.peer = resp
        resp.peer = req
        return req

    def _unplace(self, req: Message) -> None:
        """Undo the pairing of the request just placed (a 101 that switched nothing)."""
        peer = req.peer
        req.peer = None
        if peer is not None:
            peer.peer = None
        self.a -= 1

    def _lose_until(self, index: int) -> None:
        """Requests before ``index`` had their responses lost: they go out unanswered."""
        reqs = self.reqs
        while self.a < index and self.a < len(reqs):
            reqs[self.a].peer = LOST
            self.a += 1
        self.server_skip = 0
        self._flush()

    def _orphan(self, resp: Message, reason: str) -> None:
        _count(self.stats.orphans, reason)

    def _retry(self, force: bool) -> None:
        self.waiting = False
        server = self.parsers[1 - self.client] if self.client >= 0 else None
        if server is not None and server.state == WAIT:
            server.resume(force)
            if server.state != WAIT and self.eof_pending & (1 << server.d):
                self.eof_pending &= ~(1 << server.d)
                server.end()

    def _flush(self) -> None:
        """Emit the pairs at the front that are complete, in request order."""
        reqs = self.reqs
        while reqs:
            req = reqs[0]
            peer = req.peer
            if peer is None:
                break
            if not req.complete:
                break
            if peer is LOST:
                reqs.popleft()
                self.a -= 1
                self._out(req, None, "unpaired_response_gap")
                continue
            if not peer.complete:
                break
            reqs.popleft()
            self.a -= 1
            self._out(req, peer, None)

    def _too_many(self) -> None:
        """More unanswered requests than allowed: the oldest goes out unanswered now."""
        reqs = self.reqs
        a = self.a
        if a < len(reqs) and reqs[a].complete:
            req = reqs[a]
            del reqs[a]
            self.forgotten += 1
            self._out(req, None, "too_many_outstanding")

    def _out(self, req: Message, resp: Message | None, note: str | None) -> None:
        """A pair leaves the session."""
        if note is not None:
            req.note(note)
        if self.midstream & (1 << self.client if self.client >= 0 else 1):
            req.note("midstream")
        notes = req.notes
        pair = Pair(req, resp, list(notes) if notes else None)
        # the pairing bookkeeping ends here: unlinked, request and response form no
        # reference cycle, so they are freed as soon as the pair is, not by the cyclic GC
        req.peer = None
        if resp is not None:
            resp.peer = None
        self.acct.n -= pair.mem()
        stats = self.stats
        if resp is None:
            stats.pending += 1
        else:
            stats.pairs += 1
        held = self.held
        if held is not None and self.state == TENTATIVE:
            held.append(pair)
        else:
            self.emit(pair)

    # -- detection ----------------------------------------------------------------------------
    def _roles(self, client: int) -> None:
        self.client = client
        self.parsers[client].role = REQUEST
        self.parsers[1 - client].role = RESPONSE
        if self.midstream & (1 << (1 - client)):
            self.server_zone = True

    def _accept(self) -> None:
        if self.state != HTTP:
            self.state = HTTP
            self.stats.connections_http += 1
            for p in self.parsers:
                p.accepted = True
            held = self.held
            self.held = None
            if held:
                for pair in held:
                    self.emit(pair)

    def _settle_tentative(self) -> None:
        """At close: a version-less GET answered by a bare body, and nothing else, was
        HTTP/0.9; anything else was some other protocol."""
        held = self.held or []
        self.held = None
        if (len(held) == 1 and held[0].response is not None
                and held[0].response.version == "HTTP/0.9"
                and held[0].request.method == "GET"
                and self.parsers[self.client].violations == 0):
            self.state = HTTP
            self.stats.connections_http += 1
            self.emit(held[0])
            return
        self.stats.pairs -= sum(1 for x in held if x.response is not None)
        self.stats.pending -= sum(1 for x in held if x.response is None)
        self.state = NOT_HTTP
        _count(self.stats.not_http, "tentative_not_confirmed")

    def _not_http(self, reason: str) -> None:
        """Not HTTP (or given up before it was): nothing from this connection goes out."""
        if self.state == NOT_HTTP:
            return
        held = self.held
        if held:
            self.stats.pairs -= sum(1 for x in held if x.response is not None)
            self.stats.pending -= sum(1 for x in held if x.response is None)
        self.held = None
        self.state = NOT_HTTP
        _count(self.stats.not_http, reason)
        self._release()

    def _release(self) -> None:
        """Drop everything held (accounting follows ownership: requests own their paired
        response; an orphan response being parsed is owned by its parser)."""
        acct = self.acct
        for p in self.parsers:
            msg = p.msg
            if msg is not None and p.role != REQUEST and msg.peer is None \
                    and msg is not self.lone:
                acct.n -= msg.mem
            p.kill()
        reqs = self.reqs
        while reqs:
            req = reqs.popleft()
            acct.n -= req.mem
            peer = req.peer
            if peer is not None and peer is not LOST:
                acct.n -= peer.mem
        self.a = 0
        if self.lone is not None:
            self.acct.n -= self.lone.mem
            self.lone = None


__all__ = ["HttpSession", "HttpStats", "SessionConfig", "LOST", "WAIT"]
