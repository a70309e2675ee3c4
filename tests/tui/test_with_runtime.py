"""The console and `appliance status` against the real runtime (`appliance run`), fed with
VXLAN traffic on a local UDP port: the contract of docs/status.md end to end."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from statusd import free_port, wait_for_text, wait_until
from textual.widgets import DataTable

from appliance import synth
from appliance.demo import wait_healthy
from tui.app import ConsoleApp
from tui.client import fetch
from tui.screens import SessionScreen

ROOT = Path(__file__).resolve().parents[2]


def _udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def runtime(tmp_path):
    http, udp = free_port(), _udp_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AKTO_", "TRAFFIC_", "APPLIANCE_", "CAPTURE_ALL"))}
    log = open(tmp_path / "appliance.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "run", "--mode", "aws", "--workers", "1",
         "--listen", f"127.0.0.1:{udp}", "--http", f"127.0.0.1:{http}",
         "--jsonl", str(tmp_path / "pairs.jsonl"), "--spool-dir", str(tmp_path / "spool")],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{http}"
    try:
        wait_healthy(url, proc)
    except RuntimeError as exc:
        raise AssertionError(f"{exc}: {(tmp_path / 'appliance.log').read_text()}") from None
    yield url, udp
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log.close()


def send_traffic(udp: int, vni: int, connections: int = 5) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(connections):
            c = synth.Conversation(client=f"10.60.0.{i + 1}", server="10.70.0.10",
                                   cport=30000 + i, sport=8080, t=1_700_000_000.0 + i)
            c.handshake()
            c.exchange(synth.http_request("GET", f"/api/{i}", b""),
                       synth.http_response(200, b'{"ok":true}',
                                           [("Content-Type", "application/json")]))
            c.close()
            for _, frame in c.frames:
                s.sendto(synth.vxlan(frame, vni), ("127.0.0.1", udp))


def test_console_and_status_read_the_real_runtime(runtime):
    url, udp = runtime
    send_traffic(udp, 4242)

    async def scenario():
        app = ConsoleApp([url], interval=0.25)
        async with app.run_test(size=(120, 40)) as pilot:
            text = await wait_for_text(pilot, "● ", "aws", "1 workers", "kafka disabled")
            table = app.screen.query_one("#sessions", DataTable)
            await wait_until(pilot, lambda: table.row_count == 1, timeout=15,
                             what="the VNI 4242 session")
            row = [str(c) for c in table.get_row("vni-4242")]
            assert row[0] == "4242"
            await wait_until(pilot, lambda: str(table.get_row("vni-4242")[8]) == "5",
                             timeout=15, what="five pairs for VNI 4242")
            send_traffic(udp, 77, connections=2)
            await wait_until(pilot, lambda: table.row_count == 2, timeout=15,
                             what="a second session")
            assert "unreachable" not in text
            # the plots come from the appliance's per-second history: once the seconds
            # with the traffic are published, they hold every packet the totals count
            st = app.console_state.states[url]

            def plotted_all() -> bool:
                total = (st.status or {}).get("totals", {}).get("packets")
                return bool(total) and round(sum(st.series("packets_per_s"))) == total

            await wait_until(pilot, plotted_all, timeout=15, what="the traffic in the plots")
            assert max(st.series("bytes_per_s", "4242")) > 0
            assert max(st.series("bytes_per_s", "77")) > 0
            # drill down into the session
            table.move_cursor(row=[str(table.get_row_at(i)[0]) for i in range(2)].index("77"))
            await pilot.press("enter")
            await wait_until(pilot, lambda: isinstance(app.screen, SessionScreen),
                             what="the session screen")
            await wait_for_text(pilot, "Session · VNI 77", "max ")

    asyncio.run(scenario())

    # the document says what it is, and its history is bounded and can be cut short
    doc = fetch(url)
    assert doc["schema"] == "mirror-appliance/status" and doc["schema_version"] == 1
    hist = doc["history"]
    assert hist["step_s"] == 1 and hist["seconds"] >= 600 and set(hist["sessions"]) <= {
        "4242", "77"}
    n = len(hist["totals"]["packets_per_s"])
    assert 0 < n <= hist["seconds"] and hist["end"] <= doc["now"]
    assert all(len(v) == n for block in (hist["totals"], *hist["sessions"].values())
               for v in block.values())
    assert round(sum(hist["totals"]["pairs_per_s"])) == doc["totals"]["pairs"] == 7
    short = fetch(url, history=2)["history"]
    assert all(len(v) <= 2 for v in short["totals"].values())
    assert all(len(v) == 0 for v in fetch(url, history=0)["history"]["totals"].values())
    try:
        urllib.request.urlopen(f"{url}/status?history=soon", timeout=5)
        raise AssertionError("a bad ?history= must be refused")
    except urllib.error.HTTPError as exc:
        assert exc.code == 400 and b"whole number of seconds" in exc.read()

    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="160")
    proc = subprocess.run([sys.executable, "-m", "appliance", "status", "--url", url, "--json"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert {s["vni"] for s in doc["sessions"]} == {4242, 77}
    proc = subprocess.run([sys.executable, "-m", "appliance", "status", "--url", url],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "sessions (2)" in proc.stdout and "4242" in proc.stdout
