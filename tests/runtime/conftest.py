"""Real parts for runtime tests: a Tansu broker, the appliance as a subprocess."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from appliance.broker import LocalBroker, free_port
from rt_helpers import children, wait_gone

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def broker(tmp_path):
    b = LocalBroker(log_path=str(tmp_path / "tansu.log"))
    b.start()
    yield b
    b.stop()


class Appliance:
    count = 0
    def __init__(self, tmp_path, args, env=None):
        self.udp = free_port(socket.SOCK_DGRAM)
        self.http_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        Appliance.count += 1
        self.log = tmp_path / f"appliance-{Appliance.count}.log"
        self.spool = tmp_path / f"spool-{Appliance.count}"
        cmd = [sys.executable, "-m", "appliance", "run", "--http", f"127.0.0.1:{self.http_port}",
               "--spool-dir", str(self.spool), *args]
        if "--listen" not in args and "gcp" not in args:
            cmd += ["--listen", f"127.0.0.1:{self.udp}"]
        full_env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("AKTO_", "TRAFFIC_", "APPLIANCE_", "CAPTURE_ALL"))}
        full_env.update(env or {})
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(self.log, "wb"),
                                     cwd=ROOT, env=full_env)

    def wait_healthy(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("appliance never healthy: " + self.log.read_text())

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=3) as r:
            return r.status, r.read()

    def status(self):
        return json.loads(self.get("/status")[1])

    def wait_status(self, predicate, timeout=20):
        deadline = time.time() + timeout
        st = self.status()
        while not predicate(st):
            assert time.time() < deadline, json.dumps(st)[:2000]
            time.sleep(0.25)
            st = self.status()
        return st

    def terminate(self, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def workers(self):
        return children(self.proc.pid)

    def kill(self):
        """kill -9 the supervisor and every worker (a crash, not a stop)."""
        pids = self.workers()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_gone(pids, 10)

    def cleanup(self):
        pids = self.workers()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        wait_gone(pids, 10)
        if self.proc.stdout:
            self.proc.stdout.close()


@pytest.fixture
def appliance(tmp_path):
    started = []

    def start(args, env=None, healthy=True):
        a = Appliance(tmp_path, args, env)
        started.append(a)
        return a.wait_healthy() if healthy else a

    yield start
    for a in started:
        a.cleanup()

