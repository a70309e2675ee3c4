"""`appliance config`, `replay --kafka`, GENEVE, SIGINT and the replay progress bar."""

import json
import os
import pty
import signal
import subprocess
import sys

from appliance import synth
from rt_helpers import consume_all, records
from traffic import connections, key

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLEAN = {"PATH": os.environ["PATH"]}


def appliance_cmd(*args, env=None):
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True,
                          text=True, cwd=ROOT, env={**CLEAN, **(env or {})}, timeout=120)


def test_config_shows_effective_values_with_secret_masked():
    proc = appliance_cmd("config", "--json", "--batch-size", "7", env={
        "AKTO_KAFKA_BROKER_MAL": "k1:9092,k2:9092", "AKTO_TRAFFIC_BATCH_SIZE": "500",
        "APPLIANCE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "APPLIANCE_KAFKA_SASL_MECHANISM": "PLAIN", "APPLIANCE_KAFKA_SASL_PASSWORD": "hunter2"})
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads(proc.stdout)
    assert cfg["AKTO_KAFKA_BROKER_MAL"] == "k1:9092,k2:9092"
    assert cfg["AKTO_TRAFFIC_BATCH_SIZE"] == 7  # the flag overrides the environment
    assert cfg["APPLIANCE_KAFKA_SASL_PASSWORD"] == "****"
    assert "hunter2" not in proc.stdout + proc.stderr
    table = appliance_cmd("config", env={"APPLIANCE_KAFKA_SASL_PASSWORD": "hunter2"})
    assert table.returncode == 0 and "hunter2" not in table.stdout
    assert "AKTO_KAFKA_BROKER_MAL" in table.stdout


def test_replay_to_kafka(broker, tmp_path):
    frames, expected = connections(5, exchanges=2)
    path = tmp_path / "t.pcap"
    synth.write_pcap(path, frames)
    proc = appliance_cmd("replay", str(path), "--kafka", broker.bootstrap, "-q",
                         env={"AKTO_TRAFFIC_BATCH_TIME_SECS": "0.05"})
    assert proc.returncode == 0, proc.stderr
    recs = records(consume_all(broker.bootstrap, "akto.api.logs", expect=10, timeout=30))
    assert {key(r) for r in recs} == expected and {r["source"] for r in recs} == {"PCAP"}


def test_replay_to_dead_kafka_fails_loudly_without_losing_the_count(tmp_path):
    from appliance.broker import free_port

    path = tmp_path / "t.pcap"
    synth.write_pcap(path, synth.sample_frames())
    proc = appliance_cmd("replay", str(path), "--kafka", f"127.0.0.1:{free_port()}", "-q",
                         env={"AKTO_TRAFFIC_BATCH_TIME_SECS": "0.05"})
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert "did not take every pair" in last and "0 delivered" in last and "Traceback" not in proc.stderr


def test_geneve_and_sigint(broker, appliance):
    import socket

    from appliance.broker import free_port

    gport = free_port(socket.SOCK_DGRAM)
    app = appliance(["--mode", "aws", "--kafka", broker.bootstrap, "--workers", "2", "--geneve",
                     "--batch-time", "0.05"], env={"APPLIANCE_GENEVE_PORT": str(gport)})
    frames, expected = connections(8, exchanges=2, client_net="10.69")
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _, f in frames:
        tx.sendto(synth.geneve(f, 31337, options=b"\x01\x03\x80\x01\0\0\0\x2a"), ("127.0.0.1", gport))
    tx.close()
    recs = records(consume_all(broker.bootstrap, "akto.api.logs", expect=16, timeout=60))
    assert {key(r) for r in recs} == expected
    assert {r["akto_vxlan_id"] for r in recs} == {"31337"}
    app.proc.send_signal(signal.SIGINT)
    assert app.proc.wait(60) == 0


def test_replay_shows_a_progress_bar_on_a_terminal(tmp_path):
    path = tmp_path / "s.pcap"
    synth.write_pcap(path, synth.sample_frames())
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "replay", str(path), "--jsonl",
                             str(tmp_path / "o.jsonl")], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=slave, cwd=ROOT,
                            env={**CLEAN, "TERM": "xterm", "COLUMNS": "100"})
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    assert proc.wait(60) == 0
    text = out.decode(errors="replace")
    assert "\x1b[" in text  # rich drew (and cleared) a live bar
    assert "replay: 24 packets" in text


def test_log_level_controls_output_and_secrets_never_appear(appliance):
    from appliance.broker import free_port

    dead = f"127.0.0.1:{free_port()}"
    env = {"APPLIANCE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
           "APPLIANCE_KAFKA_SASL_MECHANISM": "PLAIN", "APPLIANCE_KAFKA_SASL_USERNAME": "u",
           "APPLIANCE_KAFKA_SASL_PASSWORD": "pa55-secret"}
    quiet = appliance(["--mode", "aws", "--kafka", dead, "--workers", "1", "--log-level", "OFF",
                       "--batch-time", "0.05"], env=env)
    chatty = appliance(["--mode", "aws", "--kafka", dead, "--workers", "1", "--log-level", "INFO",
                        "--batch-time", "0.05"], env=env)
    frames, _ = connections(2, exchanges=1)
    from appliance.demo import send_vxlan

    for app in (quiet, chatty):
        send_vxlan(frames, app.udp, vni=1)
        app.wait_status(lambda s: s["kafka"]["state"] == "down", timeout=30)
        assert app.terminate() == 0
    assert quiet.log.read_text() == ""
    text = chatty.log.read_text()
    assert "running: mode aws" in text and "Kafka unreachable" in text
    assert "pa55-secret" not in text
    assert '"path"' not in text and "/api/" not in text  # no pair content in the logs
