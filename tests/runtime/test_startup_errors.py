"""Start-up errors are one line naming the fix (issue 12, deliver 6): missing capture
capabilities, a spool directory that cannot be written, Kafka authentication failure.

Capabilities are really removed (setpriv drops them from the bounding set, so the
appliance runs as root without CAP_NET_RAW / CAP_DAC_OVERRIDE)."""

import os
import shutil
import subprocess
import sys
import time

import pytest

from appliance.broker import free_port, tansu_binary
from conftest import ROOT

needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                                reason="needs root and setpriv (util-linux) to drop capabilities")


def run(args, drop=None, env=None, timeout=60):
    cmd = [sys.executable, "-m", "appliance", "run", "--http", f"127.0.0.1:{free_port()}", *args]
    if drop:
        cmd = ["setpriv", f"--bounding-set={drop}", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                          env={"PATH": os.environ["PATH"], **(env or {})})


def one_line(proc):
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@needs_root
def test_gcp_mode_without_capture_capabilities(tmp_path):
    proc = run(["--mode", "gcp", "--interface", "lo", "--jsonl", str(tmp_path / "o.jsonl")],
               drop="-net_raw,-net_admin")
    assert proc.returncode == 2
    line = one_line(proc)
    assert "CAP_NET_RAW" in line and "NET_ADMIN" not in line and "--cap-add NET_RAW" in line


@needs_root
def test_a_spool_directory_that_cannot_be_written(tmp_path):
    locked = tmp_path / "var-lib"
    locked.mkdir()
    os.chown(locked, 65534, 65534)  # someone else's, as /var/lib/appliance is for a non-root run
    locked.chmod(0o755)
    proc = run(["--mode", "aws", "--listen", f"127.0.0.1:{free_port(2)}", "--kafka",
                "127.0.0.1:9", "--spool-dir", str(locked / "spool")],
               drop="-dac_override,-dac_read_search,-fowner")
    assert proc.returncode == 2
    line = one_line(proc)
    assert "APPLIANCE_SPOOL_DIR" in line and "--spool-dir" in line and "Permission denied" in line
    # and a path that is not a directory at all
    (tmp_path / "file").write_text("")
    proc = run(["--mode", "aws", "--listen", f"127.0.0.1:{free_port(2)}", "--kafka",
                "127.0.0.1:9", "--spool-dir", str(tmp_path / "file" / "spool")])
    assert proc.returncode == 2 and "APPLIANCE_SPOOL_DIR" in one_line(proc)


@pytest.fixture
def auth_broker(tmp_path):
    """Tansu requiring client authentication: our credentials are refused."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = open(tmp_path / "tansu.log", "wb")
    proc = subprocess.Popen([tansu_binary(), "broker", "--listener-url", url,
                             "--advertised-listener-url", url, "--authentication"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)
    log.close()


def test_kafka_authentication_failure_is_logged_once_and_shown_in_status(auth_broker, appliance):
    app = appliance(["--mode", "aws", "--kafka", auth_broker, "--workers", "1",
                     "--log-level", "INFO"],
                    env={"APPLIANCE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                         "APPLIANCE_KAFKA_SASL_MECHANISM": "PLAIN",
                         "APPLIANCE_KAFKA_SASL_USERNAME": "appliance",
                         "APPLIANCE_KAFKA_SASL_PASSWORD": "wrong-pa55"})
    st = app.wait_status(lambda s: s["kafka"]["state"] == "down", timeout=30)
    assert "authentication" in st["kafka"]["reason"].lower() or "SASL" in st["kafka"]["reason"]
    time.sleep(5)  # librdkafka retries (and fails) about twenty times a second meanwhile
    log = app.log.read_text()
    assert log.count("Kafka authentication failed") == 1, log
    assert "APPLIANCE_KAFKA_SASL_PASSWORD" in log and "wrong-pa55" not in log
    assert log.count("WARNING") <= 2, log
    assert app.terminate() == 0
