"""The stop: bounded, lossless, honest about its exit code (issue 12, deliver 1)."""

import json
import os
import re
import signal
import subprocess
import sys

from appliance.broker import free_port
from appliance.demo import send_vxlan
from conftest import ROOT
from rt_helpers import consume_all, records
from traffic import connections


def test_sigterm_under_a_continuous_flood_stops_in_time_and_loses_nothing(broker, appliance):
    app = appliance(["--mode", "aws", "--kafka", broker.bootstrap, "--workers", "2",
                     "--batch-time", "1", "--log-level", "INFO"],
                    env={"APPLIANCE_STOP_TIMEOUT": "20"})
    flood = subprocess.Popen([sys.executable, os.path.join(ROOT, "bench", "flood.py"),
                              "--port", str(app.udp), "--kind", "pairs"])
    try:
        app.wait_status(lambda s: s["kafka"]["delivered"] > 1000, timeout=60)
        app.proc.send_signal(signal.SIGTERM)
        code = app.proc.wait(60)  # the flood goes on: reading "until empty" would never end
        assert flood.poll() is None
    finally:
        flood.kill()
        flood.wait()
    log = app.log.read_text()
    assert code == 0, log
    line = log.strip().splitlines()[-1]
    m = re.search(r"stopped in [\d.]+s: (\d+) pairs delivered, (?:(\d+) spooled in \S+, )?"
                  r"(?:(\d+) packets left unread in the kernel, )?0 lost", line)
    assert m, line
    delivered = int(m.group(1))
    assert m.group(2) is None  # the broker was up: everything was delivered
    recs = records(consume_all(broker.bootstrap, "akto.api.logs", expect=delivered, timeout=120))
    assert len(recs) == delivered
    paths = [r["path"] for r in recs]
    assert len(set(paths)) == len(paths)  # no duplicates
    for r in recs:  # each pair is right: the response names its request's connection
        if r["is_pending"] == "false":
            assert r["responsePayload"] == r["path"].rsplit("/", 1)[1]


def test_a_stop_that_loses_pairs_exits_1_with_the_counts(appliance):
    frames, expected = connections(10, exchanges=2, client_net="10.91")
    app = appliance(["--mode", "aws", "--kafka", f"127.0.0.1:{free_port()}", "--workers", "1",
                     "--batch-time", "0.05"], env={"APPLIANCE_SPOOL_MAX_MB": "0"})
    send_vxlan(frames, app.udp, vni=1)
    app.wait_status(lambda s: s["totals"]["pairs"] == len(expected))
    assert app.terminate() == 1
    last = app.log.read_text().strip().splitlines()[-1]
    assert "with loss" in last and f"{len(expected)} lost" in last


def test_a_dead_broker_stops_at_once_with_everything_spooled(appliance, tmp_path):
    frames, expected = connections(10, exchanges=2, client_net="10.92")
    app = appliance(["--mode", "aws", "--kafka", f"127.0.0.1:{free_port()}", "--workers", "2",
                     "--batch-time", "0.05", "--log-level", "INFO"])
    send_vxlan(frames, app.udp, vni=1)
    app.wait_status(lambda s: s["totals"]["pairs"] == len(expected))
    assert app.terminate() == 0
    last = app.log.read_text().strip().splitlines()[-1]
    assert f"{len(expected)} spooled in {app.spool}" in last and "0 lost" in last
    from appliance.sinks.spool import Spool

    n = 0
    for d in sorted(app.spool.iterdir()):
        sp = Spool(str(d), 1 << 30)
        n += len([json.loads(v) for _, _, v in sp.read(1000)])
        sp.close()
    assert n == len(expected)


def test_a_worker_that_cannot_stop_is_killed_at_the_deadline_and_the_exit_says_so(broker,
                                                                                  appliance):
    app = appliance(["--mode", "aws", "--kafka", broker.bootstrap, "--workers", "2"],
                    env={"APPLIANCE_STOP_TIMEOUT": "3"})
    frozen = app.workers()[0]
    os.kill(frozen, signal.SIGSTOP)  # it will not see the SIGTERM
    app.proc.send_signal(signal.SIGTERM)
    assert app.proc.wait(30) == 1
    last = app.log.read_text().strip().splitlines()[-1]
    assert "with loss" in last and "did not stop within APPLIANCE_STOP_TIMEOUT=3s" in last
    from rt_helpers import wait_gone

    assert wait_gone([frozen], 5) is not None
