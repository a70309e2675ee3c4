"""`appliance config`, `replay --kafka` and `resend`, GENEVE, SIGINT, the replay progress bar,
log format and start-up line, Akto's variables."""

import json
import os
import pty
import shlex
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


def test_replay_to_dead_kafka_says_so_keeps_a_private_spool_and_the_resend_command_works(
        tmp_path, broker):
    """Kafka does not answer: one warning line within seconds, exit 1 with every pair counted,
    a spool only this user can read, and the printed command delivers it once Kafka is there."""
    from appliance.broker import free_port

    path = tmp_path / "t.pcap"
    synth.write_pcap(path, synth.sample_frames())
    dead = f"127.0.0.1:{free_port()}"
    env = {**CLEAN, "AKTO_TRAFFIC_BATCH_TIME_SECS": "0.05", "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "replay", str(path), "--kafka", dead,
                             "--kafka-timeout", "3", "-q"], stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=env)
    started = time.monotonic()
    first = proc.stderr.readline()
    while "not answering" not in first:
        first = proc.stderr.readline()
        assert first, "no warning line"
    assert time.monotonic() - started < 10  # said at once, not after the wait
    assert f"Kafka at {dead} is not answering" in first
    rest = proc.stderr.read()
    assert proc.wait(60) == 1
    last = rest.strip().splitlines()[-1]
    assert "did not take every pair" in last and "0 delivered, 8 left in" in last
    assert "Traceback" not in rest
    command = shlex.split(last.split("send them with: ")[1])
    spool = Path(command[2])
    assert spool.parent == tmp_path and stat.S_IMODE(spool.stat().st_mode) == 0o700
    files = [f for f in spool.rglob("*") if f.is_file()]
    assert files and all(stat.S_IMODE(f.stat().st_mode) & 0o077 == 0 for f in files)
    assert command[:2] == ["appliance", "resend"] and command[3:] == ["--kafka", dead, "--topic",
                                                                      "akto.api.logs"]
    command[command.index(dead)] = broker.bootstrap  # the broker is back (at its new address)
    resent = appliance_cmd(*command[1:], env={"AKTO_TRAFFIC_BATCH_TIME_SECS": "0.05"})
    assert resent.returncode == 0, resent.stderr
    assert "resent 8 pairs" in resent.stderr
    recs = records(consume_all(broker.bootstrap, "akto.api.logs", expect=8, timeout=30))
    assert len(recs) == 8 and {r["path"] for r in recs} >= {"/api/users", "/index.html"}
    assert not spool.exists()  # delivered: removed


def test_replay_to_kafka_leaves_no_spool_behind(broker, tmp_path):
    path = tmp_path / "t.pcap"
    synth.write_pcap(path, synth.sample_frames())
    proc = appliance_cmd("replay", str(path), "--kafka", broker.bootstrap, "-q",
                         env={"AKTO_TRAFFIC_BATCH_TIME_SECS": "0.05", "TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert not list(tmp_path.glob("appliance-replay-spool-*"))


def test_replay_to_kafka_shows_its_wait_on_a_terminal(tmp_path):
    from appliance.broker import free_port

    path = tmp_path / "s.pcap"
    synth.write_pcap(path, synth.sample_frames())
    text = run_on_pty(["replay", str(path), "--kafka", f"127.0.0.1:{free_port()}",
                       "--kafka-timeout", "2", "--jsonl", str(tmp_path / "unused")],
                      env={"TMPDIR": str(tmp_path)})
    assert "waiting for Kafka at" in text and "0 delivered, 8 waiting" in text


def run_on_pty(args, env=None):
    """Run the appliance with stderr on a terminal; return what it drew."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "appliance", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=slave, cwd=ROOT,
                            env={**CLEAN, "TERM": "xterm", "COLUMNS": "200", **(env or {})})
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
    os.close(master)
    proc.wait(60)
    return out.decode(errors="replace")


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
    assert "started: mode aws" in text and "Kafka unreachable" in text
    assert "pa55-secret" not in text
    assert '"path"' not in text and "/api/" not in text  # no pair content in the logs


def test_json_logs_and_the_start_up_line_at_the_default_level(appliance, broker):
    """APPLIANCE_LOG_FORMAT=json: every line one JSON object with the text format's fields;
    at the default level (WARN) the log still has the one start-up line."""
    app = appliance(["--mode", "aws", "--kafka", broker.bootstrap, "--workers", "2"],
                    env={"APPLIANCE_LOG_FORMAT": "json", "AKTO_MONGO_CONN": "mongodb://db:27017"})
    assert app.terminate() == 0
    lines = [json.loads(line) for line in app.log.read_text().splitlines()]
    assert lines, "no log line"
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line), line
    start = [line for line in lines if line["logger"] == "appliance.startup"]
    assert len(start) == 1
    from appliance import __version__

    msg = start[0]["message"]
    assert start[0]["level"] == "INFO"
    assert f"appliance {__version__} started: mode aws, 2 workers, Kafka {broker.bootstrap}" in msg
    assert "ignored Akto variables: AKTO_MONGO_CONN" in msg  # accepted, and said


def test_text_start_up_line(appliance, broker):
    app = appliance(["--mode", "aws", "--kafka", broker.bootstrap, "--workers", "1"])
    assert app.terminate() == 0
    text = app.log.read_text().strip().splitlines()
    start = [line for line in text if "appliance.startup" in line]
    assert len(start) == 1 and "started: mode aws, 1 workers" in start[0]
    assert " INFO appliance.startup: " in start[0]


def test_akto_infra_mirroring_mode_gcp_is_honoured(appliance, tmp_path):
    """Akto's deployments set AKTO_INFRA_MIRRORING_MODE=gcp: it selects the gcp mode."""
    out = tmp_path / "pairs.jsonl"
    app = appliance(["--interface", "lo", "--jsonl", str(out), "--workers", "1"],
                    env={"AKTO_INFRA_MIRRORING_MODE": "gcp"})
    status = app.status()
    assert status["mode"] == "gcp"
    import appliance.core

    assert status["core"] == appliance.core.CORE  # which build of the core runs
    assert app.terminate() == 0
    assert "started: mode gcp" in app.log.read_text()
    shown = appliance_cmd("config", "--json", env={"AKTO_INFRA_MIRRORING_MODE": "gcp"})
    assert json.loads(shown.stdout)["APPLIANCE_MODE"] == "gcp"


@pytest.mark.parametrize("args, env, message", [
    (["--workers", "x"], {}, "invalid APPLIANCE_WORKERS (--workers) = 'x': Input should be a valid integer"),
    ([], {"AKTO_KAFKA_BROKER_MAL": "", "AKTO_KAFKA_BROKER_URL": "nohost"},
     "invalid AKTO_KAFKA_BROKER_URL (--kafka) = 'nohost': broker must be HOST:PORT"),
    ([], {"AKTO_INFRA_MIRRORING_MODE": "azure"}, "invalid AKTO_INFRA_MIRRORING_MODE (--mode) = 'azure': must be aws or gcp"),
    (["--log-format", "xml"], {}, "invalid APPLIANCE_LOG_FORMAT (--log-format) = 'xml'"),
], ids=["flag", "fallback-variable", "akto-mode", "log-format"])
def test_configuration_errors_name_the_variable_read_and_the_flag(args, env, message):
    proc = appliance_cmd("run", *args, env={"AKTO_KAFKA_BROKER_MAL": "k:9092", **env})
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(f"appliance: error: {message}"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
