"""Memory caps: eviction happens and is counted, the process stays up; the memory
ceiling sheds load first and exits with its own code only as a last resort."""

from appliance import synth
from appliance.demo import send_vxlan
from rt_helpers import consume_all, records


def open_connections(n, net="10.66", body=0):
    frames = []
    for i in range(n):
        c = synth.Conversation(client=f"{net}.0.{i + 1}", server="10.70.0.10", cport=32000 + i,
                               sport=8080, t=1_700_000_000.0 + i * 0.01)
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


def test_memory_ceiling_sheds_then_exits_75_after_flushing(broker, appliance):
    app = appliance(["--mode", "aws", "--kafka", broker.bootstrap, "--workers", "1",
                     "--batch-time", "0.05", "--mem-restart-mb", "40"])
    send_vxlan(open_connections(10, net="10.68"), app.udp, vni=1)
    code = app.proc.wait(60)
    log = app.log.read_text()
    assert code == 75, log
    assert "shedding load" in log and "exiting for a restart" in log
    recs = records(consume_all(broker.bootstrap, "akto.api.logs", expect=10, timeout=30))
    assert len(recs) == 10  # the pending requests were flushed before exiting
