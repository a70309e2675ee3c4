"""aws mode end to end: VXLAN datagrams on a real UDP socket -> Kafka (Tansu)."""


from appliance.demo import send_vxlan
from rt_helpers import consume_all, records
from traffic import connections, key


def test_vxlan_pairs_arrive_in_kafka_exactly_with_vni(broker, appliance, tmp_path):
    from provision.aws import sessionmap

    frames, expected = connections(40, exchanges=3)
    smap = tmp_path / "sessions.json"
    sessionmap.write(str(smap), sessionmap.build("prod", "us-east-1", "vpc-1", [
        {"session_id": "tms-0777", "vni": 777, "eni": "eni-0777", "instance": "i-0777",
         "session_number": 1, "private_ips": []}]))
    app = appliance(["--mode", "aws", "--kafka", broker.bootstrap, "--workers", "2",
                     "--batch-time", "0.05"], env={"APPLIANCE_SESSION_MAP": str(smap)})
    send_vxlan(frames, app.udp, vni=777)
    msgs = consume_all(broker.bootstrap, "akto.api.logs", expect=len(expected), timeout=60)
    recs = records(msgs)
    assert len(recs) == len(expected) == 120
    assert {key(r) for r in recs} == expected
    assert {r["akto_vxlan_id"] for r in recs} == {"777"}
    assert {r["source"] for r in recs} == {"MIRRORING"}
    assert all(r["is_pending"] == "false" for r in recs)
    # message key groups a connection's pairs on one partition
    assert all(m.key() == f"{r['ip']}:{r['srcPort']}>{r['destIp']}:{r['destPort']}".encode()
               for m, r in zip(msgs, recs))
    st = app.wait_status(lambda s: s["totals"]["pairs"] == 120 and s["kafka"]["delivered"] == 120)
    assert st["totals"]["orphan_responses"] == 0 and st["totals"]["pending"] == 0
    # both workers got connections: the symmetric shard hash spread them, and since every
    # pair is complete, both directions of each connection met in one worker
    workers = st["memory"]["workers"]
    assert len(workers) == 2 and all(w["packets"] > 0 for w in workers)
    sess = {s["vni"]: s for s in st["sessions"]}
    assert sess[777]["pairs"] == 120 and sess[777]["packets"] == len(frames)
    assert (sess[777]["session_id"], sess[777]["eni"], sess[777]["instance"]) == (
        "tms-0777", "eni-0777", "i-0777")
    assert st["kafka"]["state"] == "up" and st["kafka"]["dropped"] == 0
    code, body = app.get("/metrics")
    text = body.decode()
    assert 'appliance_pairs_total 120.0' in text
    assert 'appliance_session_pairs_total{vni="777"} 120.0' in text
    assert app.terminate() == 0


def test_healthz_and_config_errors_are_one_line(appliance, tmp_path):
    import subprocess
    import sys

    for env, var in [({"AKTO_TRAFFIC_BATCH_SIZE": "many"}, "AKTO_TRAFFIC_BATCH_SIZE"),
                     ({"TRAFFIC_MAX_ACTIVE_CONN": "0"}, "TRAFFIC_MAX_ACTIVE_CONN"),
                     ({"AKTO_MODULE_DISCOVERY_CONFIG": "{not json"}, "AKTO_MODULE_DISCOVERY_CONFIG"),
                     ({"AKTO_LOG_LEVEL": "CHATTY"}, "AKTO_LOG_LEVEL"),
                     ({"TRAFFIC_DISABLE_EGRESS": "perhaps"}, "TRAFFIC_DISABLE_EGRESS"),
                     ({"AKTO_KAFKA_BROKER_MAL": "no-port-here"}, "AKTO_KAFKA_BROKER_MAL"),
                     ({"APPLIANCE_HTTP": "0.0.0.0:70000"}, "APPLIANCE_HTTP")]:
        env = {"AKTO_KAFKA_BROKER_MAL": "127.0.0.1:9", **env}
        proc = subprocess.run([sys.executable, "-m", "appliance", "run"], capture_output=True,
                              text=True, env={"PATH": "/usr/bin:/bin", **env}, timeout=60)
        assert proc.returncode == 2, (env, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and var in lines[0] and "Traceback" not in proc.stderr, proc.stderr


def test_no_broker_configured_is_one_line():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "appliance", "run"], capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert proc.returncode == 2 and "AKTO_KAFKA_BROKER_MAL" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_sigterm_mid_traffic_loses_nothing(broker, appliance):
    from appliance import synth

    done, expected_done = connections(10, exchanges=2, client_net="10.61")
    # ten connections still open at SIGTERM: one answered exchange, then a request in flight
    open_frames, expected_open, pending = [], set(), set()
    for i in range(10):
        c = synth.Conversation(client=f"10.62.0.{i + 1}", server="10.70.0.10", cport=31000 + i,
                               sport=8080, t=1_700_000_050.0 + i * 0.001)
        c.handshake()
        c.exchange(synth.http_request("GET", f"/open/{i}"), synth.http_response(200, b"o%d" % i))
        c.send(True, synth.http_request("POST", f"/in-flight/{i}", b"x" * 10))
        open_frames += c.frames
        expected_open.add((c.client, str(c.cport), f"/open/{i}", "200", f"o{i}"))
        pending.add((c.client, str(c.cport), f"/in-flight/{i}"))
    app = appliance(["--mode", "aws", "--kafka", broker.bootstrap, "--workers", "2",
                     "--batch-time", "5"])  # long linger: pairs are still queued at SIGTERM
    send_vxlan(done + open_frames, app.udp, vni=9)
    app.wait_status(lambda s: s["totals"]["packets"] == len(done) + len(open_frames))
    assert app.terminate() == 0
    total = len(expected_done) + len(expected_open) + len(pending)
    recs = records(consume_all(broker.bootstrap, "akto.api.logs", expect=total, timeout=60))
    assert len(recs) == total == 40
    complete = {key(r) for r in recs if r["is_pending"] == "false"}
    assert complete == expected_done | expected_open
    assert {(r["ip"], r["srcPort"], r["path"]) for r in recs if r["is_pending"] == "true"} == pending
