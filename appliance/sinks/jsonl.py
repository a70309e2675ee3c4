"""JSON Lines sink: one pair record per line, to a file or stdout.

It has the sink interface the runtime and replay share with ``KafkaSink``: ``write``,
``poll``, ``stats`` and ``close``. ``JsonlWriter`` is the runtime's flavour (``run --jsonl``):
it flushes every batch as it is written, so a reader following the file sees pairs live.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from appliance.format.record import encode


class JsonlSink:
    flush_each_write = False

    def __init__(self, path: str):
        self.path = path
        self.f: IO[bytes]
        if path == "-":
            self.f = sys.stdout.buffer
            self.own = False
        else:
            try:
                self.f = open(path, "wb", buffering=1 << 20)  # noqa: SIM115 - closed in close()
            except OSError as exc:
                raise OSError(f"{path}: cannot write: {exc.strerror}") from None
            self.own = True
        self.written = 0
        self.state = "disabled"  # no broker: for /status, like KafkaSink.state

    def write(self, records: list[dict[str, Any]]) -> None:
        if records:
            self.f.write(b"".join(encode(r) + b"\n" for r in records))
            self.written += len(records)
            if self.flush_each_write:
                self.f.flush()

    def poll(self) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {"state": "disabled", "brokers": "", "topic": "", "queued": 0, "spooled": 0,
                "spool_bytes": 0, "delivered": self.written, "failed": 0, "dropped": 0}

    def close(self, timeout: float = 0) -> None:
        if self.own:
            self.f.close()
        else:
            self.f.flush()


class JsonlWriter(JsonlSink):
    """The runtime's JSONL sink (`run --jsonl`): each batch is flushed when written."""

    flush_each_write = True
