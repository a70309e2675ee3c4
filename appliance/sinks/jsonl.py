"""JSON Lines sink: one pair record per line."""

from __future__ import annotations

import sys

from appliance.format.record import encode


class JsonlSink:
    def __init__(self, path: str):
        self.path = path
        if path == "-":
            self.f = sys.stdout.buffer
            self.own = False
        else:
            try:
                self.f = open(path, "wb", buffering=1 << 20)
            except OSError as exc:
                raise OSError(f"{path}: cannot write: {exc.strerror}") from None
            self.own = True
        self.written = 0

    def write(self, records: list[dict]) -> None:
        if records:
            self.f.write(b"".join(encode(r) + b"\n" for r in records))
            self.written += len(records)

    def close(self) -> None:
        if self.own:
            self.f.close()
        else:
            self.f.flush()
