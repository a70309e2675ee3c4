"""An in-memory sink: keeps the records in a list (the offline demo, tests)."""

from __future__ import annotations


class ListSink:
    def __init__(self):
        self.records: list[dict] = []

    def write(self, records: list[dict]) -> None:
        self.records.extend(records)

    def close(self) -> None:
        pass
