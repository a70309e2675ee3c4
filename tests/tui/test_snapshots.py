"""SVG snapshots of the main screens (pytest-textual-snapshot).

Deterministic by construction: fixed figures served by real /status endpoints on fixed
local ports (they appear on screen), a fixed injected clock, a fixed terminal size, and
``live=False`` so that no poller or timer runs: the test reads the endpoints itself with
``poll_once()`` before the screenshot. One read is enough for full plots: the document
carries ten minutes of per-second history. Regenerate with
``pytest tests/tui/test_snapshots.py --snapshot-update`` and look at the SVGs.
"""

from __future__ import annotations

import socket
import time

import pytest
from statusd import NOW, StatusServer, sample_ebpf_status, sample_history, sample_status

from tui.app import ConsoleApp

# The URLs appear on screen, so the ports are fixed.  They sit below Linux's ephemeral
# range (32768-60999), so no outgoing connection can hold them.  Another run of these
# tests on the same machine (a second checkout) may hold one for a second or two: wait for
# it; a service that keeps one fails loudly after PORT_WAIT.
PORT_A, PORT_B, PORT_CLOSED, PORT_OTHER, PORT_EBPF = 27311, 27312, 27313, 27314, 27315
PORT_WAIT = 60.0


class Clock:
    def __init__(self, t: float = NOW + 0.6) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def fixed_server(port: int, doc: dict) -> StatusServer:
    deadline = time.monotonic() + PORT_WAIT
    while True:
        try:
            return StatusServer(doc, port=port)
        except OSError as exc:
            if time.monotonic() > deadline:
                pytest.fail(f"snapshot port {port} stayed taken for {PORT_WAIT:g}s: {exc}")
            time.sleep(0.2)


@pytest.fixture
def server_a():
    srv = fixed_server(PORT_A, sample_status())
    yield srv
    srv.close()


@pytest.fixture
def server_b():
    doc = sample_status(hostname="ip-10-0-2-9", mode="gcp", workers=4, uptime_s=86400 * 3 + 7200)
    doc["rates"] = {"packets_per_s": 250000.0, "bytes_per_s": 150_000_000.0,
                    "pairs_per_s": 3200.0}
    doc["kafka"].update(state="down", queued=5000, spooled=120000, spool_bytes=96 << 20,
                        failed=37)
    doc["memory"].update(rss_bytes=470 << 20, buffer_bytes=330 << 20,
                         active_connections=3900)
    doc["history"] = sample_history(doc)
    srv = fixed_server(PORT_B, doc)
    yield srv
    srv.close()


@pytest.fixture
def server_ebpf():
    srv = fixed_server(PORT_EBPF, sample_ebpf_status())
    yield srv
    srv.close()


@pytest.fixture
def server_other():
    """Another service's JSON health check on an appliance's port."""
    srv = fixed_server(PORT_OTHER, {"status": "UP", "components": {"db": {"status": "UP"}}})
    yield srv
    srv.close()


@pytest.fixture
def closed_port():
    """A port that refuses connections: bound (so nothing else can listen there during the
    test) but not listening."""
    deadline = time.monotonic() + PORT_WAIT
    with socket.socket() as s:
        while True:
            try:
                s.bind(("127.0.0.1", PORT_CLOSED))
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    pytest.fail(f"port {PORT_CLOSED} must be closed for this test, and stayed "
                                f"in use for {PORT_WAIT:g}s: {exc}")
                time.sleep(0.2)
        yield f"http://127.0.0.1:{PORT_CLOSED}"


def app_for(*urls: str, clock: Clock | None = None) -> ConsoleApp:
    return ConsoleApp(list(urls), interval=1.0, history_s=300, clock=clock or Clock(),
                      live=False)


async def read_once(pilot) -> None:
    await pilot.app.poll_once()


def test_appliance_120x40(snap_compare, server_a):
    """The appliance screen with history in the plots, sorted by bits/s."""
    app = app_for(server_a.url)
    assert snap_compare(app, terminal_size=(120, 40),
                        run_before=read_once)


def test_appliance_80x24(snap_compare, server_a):
    """The smallest supported terminal."""
    app = app_for(server_a.url)
    assert snap_compare(app, terminal_size=(80, 24),
                        run_before=read_once)


def test_appliance_sorted_and_filtered(snap_compare, server_a):
    """Sorted by total packets, filtered to the AWS sessions."""
    app = app_for(server_a.url)
    assert snap_compare(app, terminal_size=(120, 30),
                        press=["s", "s", "s", "slash", "a", "w", "s", "enter"],
                        run_before=read_once)


def test_appliance_unreachable_80x24(snap_compare, closed_port):
    """An appliance that never answered: red, with the retry countdown and the reason."""
    app = app_for(closed_port)
    assert snap_compare(app, terminal_size=(80, 24),
                        run_before=read_once)


def test_appliance_gone_stale(snap_compare, server_a):
    """Answered, then went away: the last figures stay, dimmed, with their age."""
    clock = Clock()
    app = app_for(server_a.url, clock=clock)

    async def before(pilot):
        await pilot.app.poll_once()
        server_a.close()
        clock.t += 35
        await pilot.app.poll_once()

    assert snap_compare(app, terminal_size=(100, 30), run_before=before)


def test_fleet_120x30(snap_compare, server_a, server_b, closed_port, server_other):
    """Four endpoints: a healthy appliance, a loaded one with Kafka down, an unreachable
    one, and another service's JSON (not an appliance: never "● up")."""
    app = app_for(server_a.url, server_b.url, closed_port, server_other.url)
    assert snap_compare(app, terminal_size=(120, 30),
                        run_before=read_once)


def test_fleet_drill_down(snap_compare, server_a, server_b, closed_port):
    """Enter on the second appliance of the fleet."""
    app = app_for(server_a.url, server_b.url, closed_port)
    assert snap_compare(app, terminal_size=(120, 36), press=["down", "enter"],
                        run_before=read_once)


def test_help_80x24(snap_compare, server_a):
    app = app_for(server_a.url)
    assert snap_compare(app, terminal_size=(80, 24), press=["question_mark"],
                        run_before=read_once)


def test_fleet_80x24(snap_compare, server_a, server_b, closed_port, server_other):
    """The fleet at the smallest supported size: whole columns only."""
    app = app_for(server_a.url, server_b.url, closed_port, server_other.url)
    assert snap_compare(app, terminal_size=(80, 24), run_before=read_once)


def test_session_80x24(snap_compare, server_a):
    """Enter on the busiest session at the smallest supported size: its identifiers,
    figures now / on average / at peak / in total, and its per-second plots."""
    app = app_for(server_a.url)
    assert snap_compare(app, terminal_size=(80, 24), press=["enter"], run_before=read_once)


def test_session_120x40(snap_compare, server_a):
    """The second session's details on a larger terminal."""
    app = app_for(server_a.url)
    assert snap_compare(app, terminal_size=(120, 40), press=["down", "enter"],
                        run_before=read_once)


def test_ebpf_appliance_120x40(snap_compare, server_ebpf):
    """An eBPF-mode appliance: traced processes (with their pods) in place of sessions."""
    app = app_for(server_ebpf.url)
    assert snap_compare(app, terminal_size=(120, 40), run_before=read_once)


def test_ebpf_appliance_80x24_sorted_and_filtered(snap_compare, server_ebpf):
    """The processes table at the smallest size, sorted by PID, filtered to one pod."""
    app = app_for(server_ebpf.url)
    assert snap_compare(app, terminal_size=(80, 24),
                        press=["s", "s", "s", "s", "s", "s", "slash", "s", "h", "o", "p",
                               "enter"],
                        run_before=read_once)
