"""The stream-event contract between a capture front end and the HTTP session.

A front end turns what it observes into ordered byte streams, one per direction of a
connection, and reports them to a :class:`StreamConsumer` with four events:

``data(direction, offset, ts, payload)``
    ``payload`` is the stream's bytes ``[offset, offset + len(payload))``, observed at
    ``ts`` (capture or kernel time, seconds).  Offsets are 64-bit byte positions from the
    start of that direction's stream; for one direction they only grow, and every byte
    between two ``data`` events is covered by a ``gap``.
``gap(direction, offset, nbytes)``
    the bytes ``[offset, offset + nbytes)`` exist but were not observed (capture loss,
    a truncated eBPF read).  ``gap(direction, 0, UNKNOWN)`` as the first event of a
    direction means the stream was first seen mid-way: an unknown amount came before
    offset 0 (a connection that existed before the capture or the tracing started).
``ack(direction, offset)``
    mirroring only: the endpoint that sends ``direction`` had received the *other*
    direction's stream up to ``offset`` (exclusive) when it sent the data that follows.
    It is emitted before the ``data`` it applies to, and only when it changed.  This is
    the evidence that lets the HTTP session refuse to pair a response with a request the
    server had not received yet.  Front ends without it (eBPF) never send it; their
    streams are in true order, so pairing by order is sound there.
``eof(direction)``
    the direction ended (FIN, close, eviction); nothing follows.

``direction`` is 0 or 1 and means nothing by itself: the HTTP session decides from the
content which side is the client, unless the front end knows it (eBPF sees ``accept``
and ``connect``) and says so when it creates the session.

The TCP assembly (``appliance.core.tcp``) produces these events and knows nothing of
HTTP; the HTTP session (``appliance.core.http.session``) consumes them and knows nothing
of TCP.  This module is the only thing they share.
"""

from __future__ import annotations

UNKNOWN = -1  # gap length: an unknown number of bytes came before offset 0


def _probe() -> None:
    pass


# True when this module runs compiled (setup.py builds the core with Cython from these
# same files; appliance.core loads either every module compiled or none).  Memory
# accounting constants differ per build: compiled code boxes C values into new objects
# where Python code shares the ones it was given.
COMPILED = type(_probe).__name__ != "function"


class Acct:
    """Bytes held on behalf of one connection, shared by its stream assembly and its
    session so that the connection's footprint is one number (``n``), kept up to date
    by every layer as it takes or releases bytes."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


class StreamConsumer:
    """What consumes the stream events of a connection (the HTTP session; a test's
    recorder).  A base class rather than a Protocol so that the compiled build calls
    these methods directly (stream.pxd); a consumer overrides all four."""

    __slots__ = ()

    def data(self, direction: int, offset: int, ts: float, payload: bytes) -> None:
        raise NotImplementedError

    def gap(self, direction: int, offset: int, nbytes: int) -> None:
        raise NotImplementedError

    def ack(self, direction: int, offset: int) -> None:
        raise NotImplementedError

    def eof(self, direction: int) -> None:
        raise NotImplementedError
