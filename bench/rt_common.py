"""What the runtime benchmarks share: a Tansu broker, `appliance run` as a subprocess, an
RSS sampler over every process of it, /status, and reading the topic back."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.broker import LocalBroker, free_port  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1 << 20


def rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return 0


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


class Sampler(threading.Thread):
    """Sum of the RSS of a process and its children, every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []  # (time, total, processes)
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.is_set():
            pids = [self.pid, *children(self.pid)]
            total = sum(rss(p) for p in pids)
            if total:
                self.samples.append((time.monotonic(), total, len(pids)))
            self.stopped.wait(self.interval)

    def stop(self):
        self.stopped.set()
        self.join()

    def peak(self, since: float = 0.0, until: float = 1e18) -> int:
        return max((t for ts, t, _ in self.samples if since <= ts <= until), default=0)

    def above(self, limit: int) -> tuple[int, int]:
        return sum(1 for _, t, _ in self.samples if t > limit), len(self.samples)


class Appliance:
    def __init__(self, args: list[str], env: dict | None = None, log: str | None = None,
                 workdir: str | None = None):
        self.udp = free_port(socket.SOCK_DGRAM)
        self.http = free_port()
        self.url = f"http://127.0.0.1:{self.http}"
        self.workdir = workdir or "/tmp"
        self.log_path = log or os.path.join(self.workdir, "appliance.log")
        self.spool = os.path.join(self.workdir, "spool")
        cmd = [sys.executable, "-m", "appliance", "run", "--mode", "aws", "--listen",
               f"127.0.0.1:{self.udp}", "--http", f"127.0.0.1:{self.http}", "--spool-dir",
               self.spool, "--log-level", "INFO", *args]
        full_env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("AKTO_", "TRAFFIC_", "APPLIANCE_"))}
        full_env.update(env or {})
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.DEVNULL,
                                     stderr=self.logf)

    def wait_healthy(self, timeout: float = 60) -> Appliance:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"appliance exited {self.proc.returncode}: {self.tail()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit("appliance never healthy: " + self.tail())

    def status(self) -> dict:
        with urllib.request.urlopen(self.url + "/status", timeout=5) as r:
            return json.load(r)

    def stop(self, timeout: float = 120) -> tuple[int, float]:
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - t0

    def kill(self) -> None:
        for pid in [self.proc.pid, *children(self.proc.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()

    def tail(self, n: int = 5) -> str:
        self.logf.flush()
        with open(self.log_path, errors="replace") as f:
            return "".join(f.readlines()[-n:])


def flood_proc(port: int, kind: str, count: int = 0, rate: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "bench" / "flood.py"), "--port",
                             str(port), "--kind", kind, "--count", str(count), "--rate",
                             str(rate)], stderr=subprocess.DEVNULL)


def count_topic(bootstrap: str, topic: str = "akto.api.logs", idle: float = 5.0,
                timeout: float = 600) -> tuple[int, int, list]:
    """(messages, distinct paths+ports, records) read back from the beginning."""
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient

    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    if topic not in md.topics:
        return 0, 0, []
    parts = list(md.topics[topic].partitions)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    n = 0
    keys = set()
    recs = []
    last = time.time()
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and time.time() - last < idle:
            batch = c.consume(10000, 0.5)
            for m in batch:
                if m.error():
                    continue
                n += 1
                rec = json.loads(m.value())
                keys.add((rec["ip"], rec["srcPort"], rec["path"]))
                if len(recs) < 100000:
                    recs.append(rec)
            if batch:
                last = time.time()
    finally:
        c.close()
    return n, len(keys), recs


__all__ = ["Appliance", "LocalBroker", "MB", "Sampler", "count_topic", "flood_proc", "free_port"]
