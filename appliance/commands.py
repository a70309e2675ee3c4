"""Runtime sub-commands: replay, demo (filled in by the core pipeline)."""

from __future__ import annotations


def register(sub) -> None:
    pass
