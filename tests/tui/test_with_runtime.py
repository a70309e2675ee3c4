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
from pathlib import Path

import pytest
from statusd import free_port, wait_for_text, wait_until
from textual.widgets import DataTable

from appliance import synth
from appliance.demo import wait_healthy
from tui.app import ConsoleApp

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

    asyncio.run(scenario())

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
