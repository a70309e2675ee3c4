"""What the core produces: HTTP messages and the pairs they form.

A :class:`Message` is one HTTP request or response as observed: its head (headers in wire
order, repeats kept), the body bytes kept (up to the body cap), where it lay in its
stream, when it was seen and every irregularity met while parsing it (``flags``, short
tokens such as ``gap`` or ``te_cl_conflict``).

A :class:`Pair` is a request with its response, or with ``None`` when the request went
out unanswered (``is_pending`` in the Akto record).  ``anomalies`` names why a pair is
incomplete or uncertain (for example ``unpaired_request_gap``: a request-side gap before
this request made its pairing ambiguous, so it was not paired).  The front end that owns
the connection fills in the endpoints; ``meta`` is free for it (the eBPF front end puts
the process and pod there).

Nothing here formats records: that is ``appliance.format``.
"""

from __future__ import annotations

# Accounting constants: what CPython really spends beside the payload bytes (measured
# with tracemalloc on 3.11; tests/test_accounting.py keeps them honest).
MESSAGE_OVERHEAD = 480  # the Message object, its header list and strings of the start line
HEADER_OVERHEAD = 170  # one (name, value) tuple with its two str objects
PART_OVERHEAD = 48  # one bytes object in the body part list


class Message:
    __slots__ = ("start", "end", "ts", "ack", "method", "target", "version", "status", "reason",
                 "headers", "parts", "stored", "body_len", "flags", "te", "encoding", "complete",
                 "upgrade", "mem", "peer", "notes")

    def __init__(self, start: int, ts: float, ack: int | None) -> None:
        self.start = start  # stream offset of the first byte
        self.end = -1  # stream offset after the last byte, once complete
        self.ts = ts  # observation time of the first byte
        self.ack = ack  # the sender's acknowledgement of the other stream at the first byte
        self.method = ""
        self.target = ""
        self.version = ""
        self.status = 0
        self.reason = ""
        self.headers: list[tuple[str, str]] = []
        self.parts: list[bytes] = []
        self.stored = 0  # body bytes kept in parts
        self.body_len = 0  # body bytes seen (kept or not, gaps excluded)
        self.flags: list[str] | None = None
        self.te = ""  # transfer codings other than chunked, in the order applied
        self.encoding = ""  # content codings, in the order applied
        self.complete = False
        self.upgrade = False  # a request that proposes a protocol upgrade
        self.mem = MESSAGE_OVERHEAD  # bytes this message holds, as accounted
        # the session's bookkeeping: the message this one is paired with, and pair-level
        # anomalies gathered for the pair
        self.peer: Message | None = None
        self.notes: list[str] | None = None

    def flag(self, name: str) -> None:
        flags = self.flags
        if flags is None:
            self.flags = [name]
        elif name not in flags:
            flags.append(name)

    def note(self, name: str) -> None:
        notes = self.notes
        if notes is None:
            self.notes = [name]
        elif name not in notes:
            notes.append(name)

    def has_flag(self, name: str) -> bool:
        flags = self.flags
        return flags is not None and name in flags

    def body(self) -> bytes:
        parts = self.parts
        if not parts:
            return b""
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    def header(self, lname: str) -> str | None:
        """The first value of a header, by lower-case name."""
        for name, value in self.headers:
            if len(name) == len(lname) and name.lower() == lname:
                return value
        return None

    def __repr__(self) -> str:
        if self.status:
            return f"<Response {self.status} @{self.start}>"
        return f"<Request {self.method} {self.target} @{self.start}>"


class Pair:
    __slots__ = ("request", "response", "anomalies", "client_ip", "client_port", "server_ip",
                 "server_port", "vni", "meta")

    def __init__(self, request: Message, response: Message | None,
                 anomalies: list[str] | None = None) -> None:
        self.request = request
        self.response = response
        self.anomalies = anomalies  # pair-level tokens, or None
        self.client_ip = b""  # packed, 4 or 16 bytes
        self.client_port = 0
        self.server_ip = b""
        self.server_port = 0
        self.vni = 0
        self.meta: object = None

    @property
    def pending(self) -> bool:
        return self.response is None

    def mem(self) -> int:
        resp = self.response
        return self.request.mem + (resp.mem if resp is not None else 0)

    def __repr__(self) -> str:
        return f"<Pair {self.request!r} -> {self.response!r} {self.anomalies or ''}>"
