"""Failure containment: a worker that dies is restarted, its spool adopted, and the
appliance stays up; spools of worker indexes beyond the current count are adopted."""

import os
import signal
import subprocess
import sys

from appliance.demo import send_vxlan
from rt_helpers import alive, children, consume_all, records, wait_gone
from traffic import connections, key


def test_sigkill_of_a_worker_mid_traffic_restarts_it_and_traffic_still_pairs(broker, appliance):
    first, exp1 = connections(30, exchanges=2, client_net="10.81")
    app = appliance(["--mode", "aws", "--kafka", broker.bootstrap, "--workers", "2",
                     "--batch-time", "0.05"])
    send_vxlan(first, app.udp, vni=21)
    got = records(consume_all(broker.bootstrap, "akto.api.logs", expect=len(exp1), timeout=60))
    assert {key(r) for r in got} == exp1
    st = app.wait_status(lambda s: s["totals"]["pairs"] == len(exp1))  # reported, then killed
    victim = st["memory"]["workers"][0]["pid"]
    os.kill(victim, signal.SIGKILL)
    assert wait_gone([victim], 5) is not None
    st = app.wait_status(lambda s: s["restarts"] == 1 and all(
        w["state"] == "running" and w["pid"] != victim for w in s["memory"]["workers"]),
        timeout=10)
    assert app.get("/healthz")[0] == 200
    # the rest of the traffic still becomes pairs, on both workers
    second, exp2 = connections(30, exchanges=2, client_net="10.82")
    send_vxlan(second, app.udp, vni=21)
    got = records(consume_all(broker.bootstrap, "akto.api.logs", expect=len(exp1) + len(exp2),
                              timeout=60))
    assert exp2 <= {key(r) for r in got}
    st = app.wait_status(lambda s: s["totals"]["pairs"] == len(exp1) + len(exp2))
    assert all(w["packets"] > 0 for w in st["memory"]["workers"])
    # totals never went backwards across the restart
    assert st["totals"]["packets"] == len(first) + len(second)
    # a killed worker loses what it held in memory: the stop says so, and exits 1
    assert app.terminate() == 1
    log = app.log.read_text()
    assert f"worker 0 (pid {victim}) killed by signal 9" in log
    assert "with loss" in log.splitlines()[-1] and "worker 0 killed by signal 9" in log


def test_an_exception_in_a_worker_is_logged_with_its_traceback_and_contained(appliance):
    # /dev/full: opening works, every write fails with ENOSPC, inside the worker loop
    frames, _ = connections(2, exchanges=1, client_net="10.83")
    app = appliance(["--mode", "aws", "--workers", "2", "--jsonl", "/dev/full"])
    send_vxlan(frames * 50, app.udp, vni=1)
    st = app.wait_status(lambda s: s["restarts"] >= 1, timeout=30)
    assert app.proc.poll() is None  # the appliance stays up
    log = app.log.read_text()
    assert "Traceback (most recent call last)" in log and "No space left on device" in log
    assert "failed; flushing what it holds and exiting for a restart" in log
    assert st["workers"] == 2
    app.terminate()


def _spool_with_pairs(tmp_path, appliance, workers, n):
    """A dead broker: every pair of `n` connections ends up in the spools of `workers`."""
    from appliance.broker import free_port

    frames, expected = connections(n, exchanges=2, client_net="10.84")
    dead = f"127.0.0.1:{free_port()}"
    app = appliance(["--mode", "aws", "--kafka", dead, "--workers", str(workers),
                     "--batch-time", "0.05"])
    send_vxlan(frames, app.udp, vni=22)
    app.wait_status(lambda s: s["kafka"]["spooled"] == len(expected), timeout=30)
    assert app.terminate() == 0
    return app.spool, expected


def test_spools_of_workers_beyond_the_current_count_are_adopted(tmp_path, broker, appliance):
    spool, expected = _spool_with_pairs(tmp_path, appliance, 3, 30)
    dirs = sorted(p.name for p in spool.iterdir())
    assert dirs == ["worker-0", "worker-1", "worker-2"]
    app = appliance(["--mode", "aws", "--kafka", broker.bootstrap, "--workers", "1",
                     "--batch-time", "0.05", "--spool-dir", str(spool)])
    recs = records(consume_all(broker.bootstrap, "akto.api.logs", expect=len(expected),
                               timeout=60))
    assert len(recs) == len(expected) and {key(r) for r in recs} == expected
    app.wait_status(lambda s: s["kafka"]["spooled"] == 0)
    assert sorted(p.name for p in spool.iterdir()) == ["worker-0"]  # adopted ones removed
    assert app.terminate() == 0


def test_restarted_worker_adopts_its_spool(tmp_path, broker, appliance):
    """kill -9 of a worker while the broker is down: its replacement opens the same spool
    (the lock died with the old process) and delivers it when the broker is back."""
    frames, expected = connections(20, exchanges=2, client_net="10.85")
    broker.stop()
    app = appliance(["--mode", "aws", "--kafka", broker.bootstrap, "--workers", "1",
                     "--batch-time", "0.05"])
    send_vxlan(frames, app.udp, vni=23)
    st = app.wait_status(lambda s: s["kafka"]["spooled"] == len(expected), timeout=30)
    victim = st["memory"]["workers"][0]["pid"]
    os.kill(victim, signal.SIGKILL)
    app.wait_status(lambda s: s["restarts"] == 1 and s["memory"]["workers"][0]["state"]
                    == "running", timeout=10)
    broker.start()
    recs = records(consume_all(broker.bootstrap, "akto.api.logs", expect=len(expected),
                               timeout=90))
    assert len(recs) == len(expected) and {key(r) for r in recs} == expected
    app.wait_status(lambda s: s["kafka"]["spooled"] == 0 and s["kafka"]["state"] == "up",
                    timeout=30)
    app.terminate()


def test_port_in_use_is_one_line_and_nothing_is_left_running(broker, appliance):
    first = appliance(["--mode", "aws", "--kafka", broker.bootstrap, "--workers", "1"])
    second = appliance(["--mode", "aws", "--kafka", broker.bootstrap, "--http", first.url[7:]],
                       healthy=False)
    code = second.proc.wait(30)
    err = second.log.read_text()
    assert code == 1 and "cannot serve HTTP" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    # and a start-up failure after the workers were forked leaves none of them behind
    from appliance.broker import free_port

    before = set(children(os.getpid()))
    third = subprocess.run([sys.executable, "-m", "appliance", "run", "--mode", "aws",
                            "--listen", f"127.0.0.1:{first.udp}", "--workers", "2",
                            "--http", f"127.0.0.1:{free_port()}", "--kafka", broker.bootstrap,
                            "--spool-dir", str(first.spool) + "-third", "--mem-restart-mb", "60"],
                           capture_output=True, text=True, timeout=60)
    assert third.returncode == 2 and "AKTO_MEM_THRESH_RESTART" in third.stderr
    assert len(third.stderr.strip().splitlines()) == 1, third.stderr
    assert [p for p in children(os.getpid()) if p not in before and alive(p)] == []
