"""Memory caps: eviction happens and is counted, the process stays up; the memory
ceiling is a budget the workers shed to, and a ceiling below the idle footprint is refused
at start-up instead of becoming a restart loop."""

import subprocess
import sys

from appliance import synth
from appliance.broker import free_port
from appliance.demo import send_vxlan
from rt_helpers import consume_all, records


def open_connections(n, net="10.66", body=0, cport=32000):
    frames = []
    for i in range(n):
        c = synth.Conversation(client=f"{net}.{i // 250}.{i % 250 + 1}", server="10.70.0.10",
                               cport=cport + i, sport=8080, t=1_700_000_000.0 + i * 0.01)
        c.handshake()
        if body:
            c.send(True, synth.http_request("POST", f"/upload/{i}", b"",
                                            [("Content-Length", str(body * 2))]))
            c.send(True, b"u" * body)
        else:
            c.send(True, synth.http_request("GET", f"/waiting/{i}"))
        frames += c.frames
    return frames


def test_connection_cap_evicts_counts_and_stays_up(broker, appliance):
    app = appliance(["--mode", "aws", "--kafka", broker.bootstrap, "--workers", "1",
                     "--batch-time", "0.05"], env={"TRAFFIC_MAX_ACTIVE_CONN": "5"})
    send_vxlan(open_connections(20), app.udp, vni=1)
    st = app.wait_status(lambda s: s["totals"]["packets"] == 20 * 4)
    assert st["drops"]["evicted_connection_limit"] == 15
    assert st["memory"]["active_connections"] == 5 and st["memory"]["max_connections"] == 5
    recs = records(consume_all(broker.bootstrap, "akto.api.logs", expect=15, timeout=30))
    assert len(recs) == 15 and all(r["is_pending"] == "true" for r in recs)
    assert app.get("/healthz")[0] == 200
    assert app.terminate() == 0  # and the 5 still held are flushed at exit
    assert len(consume_all(broker.bootstrap, "akto.api.logs", expect=20, timeout=30)) == 20


def test_buffer_cap_evicts_and_counts(broker, appliance):
    app = appliance(["--mode", "aws", "--kafka", broker.bootstrap, "--workers", "1",
                     "--buffer-mb", "1"])
    send_vxlan(open_connections(6, net="10.67", body=300_000), app.udp, vni=1)
    st = app.wait_status(lambda s: s["drops"].get("evicted_buffer_limit", 0) >= 3, timeout=30)
    assert st["memory"]["buffer_bytes"] <= 1 << 20
    assert app.get("/healthz")[0] == 200
    assert app.terminate() == 0


def test_a_ceiling_below_the_idle_footprint_is_refused_in_one_line():
    proc = subprocess.run([sys.executable, "-m", "appliance", "run", "--mode", "aws",
                           "--listen", f"127.0.0.1:{free_port(2)}", "--workers", "2",
                           "--http", f"127.0.0.1:{free_port()}", "--jsonl", "/dev/null",
                           "--mem-restart-mb", "100"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert "AKTO_MEM_THRESH_RESTART" in line and "measured idle" in line and "--workers" in line


def test_the_ceiling_sheds_state_and_the_appliance_stays_up(broker, appliance):
    # room for about 40 MB of traffic state above the idle footprint, then 60 MB of
    # request bodies held by connections that never finish
    app = appliance(["--mode", "aws", "--kafka", broker.bootstrap, "--workers", "1",
                     "--batch-time", "0.05", "--mem-restart-mb", "170"])
    n = 200
    send_vxlan(open_connections(n, net="10.68", body=300_000, cport=40000), app.udp, vni=1,
               pace=0.00002)
    st = app.wait_status(lambda s: s["drops"].get("evicted_memory", 0)
                         + s["drops"].get("evicted_buffer_limit", 0) > 0, timeout=60)
    limit = st["memory"]["limit_bytes"]
    assert limit == 170 << 20
    worker = st["memory"]["workers"][0]
    assert worker["buffer_bytes"] <= worker["allowance_bytes"]
    st = app.wait_status(lambda s: s["totals"]["packets"] > 0 and s["rates"]["packets_per_s"] == 0,
                         timeout=60)
    assert st["memory"]["rss_bytes"] <= limit and app.get("/healthz")[0] == 200
    assert app.terminate() == 0
    log = app.log.read_text()
    assert "exiting for a restart" not in log
    # every connection that got far enough to hold a request comes out as a pending pair,
    # evicted or flushed at the stop
    recs = records(consume_all(broker.bootstrap, "akto.api.logs", timeout=30))
    assert recs and all(r["is_pending"] == "true" for r in recs)
    assert len({r["path"] for r in recs}) == len(recs)
