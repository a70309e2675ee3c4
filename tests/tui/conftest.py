"""Fixtures for the console tests: real HTTP servers on 127.0.0.1, nothing mocked."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# `tests/` may be on sys.path (pytest's rootdir-less import mode), where `tests/tui` would
# shadow the real `tui` package as a namespace package when the repo root is not on the
# path (the package is installed in editable mode through a finder). Put the root first.
ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from statusd import StatusServer, free_port, sample_status  # noqa: E402


@pytest.fixture
def server():
    srv = StatusServer()
    yield srv
    srv.close()


@pytest.fixture
def server2():
    doc = sample_status(hostname="ip-10-0-2-9", mode="gcp",
                        rates={"packets_per_s": 2000.0, "bytes_per_s": 125000000.0,
                               "pairs_per_s": 80.0})
    doc["kafka"]["state"] = "down"
    doc["kafka"]["failed"] = 7
    srv = StatusServer(doc)
    yield srv
    srv.close()


@pytest.fixture
def closed_url():
    return f"http://127.0.0.1:{free_port()}"
