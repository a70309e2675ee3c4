"""`appliance demo` (what `make run` runs): the real runtime, end to end, on one machine.

Starts a local Kafka-protocol broker (Tansu), starts `appliance run --mode aws` on
loopback ports, sends the embedded sample traffic to it as VXLAN datagrams (as AWS
traffic mirroring would), reads the pairs back from Kafka and prints them, then stops
everything with SIGTERM (which flushes pending pairs).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from appliance import synth
from appliance.broker import LocalBroker, consume_all, free_port

VNI = 4242


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"appliance exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("appliance did not become healthy")


def get_status(url: str) -> dict:
    with urllib.request.urlopen(url + "/status", timeout=2) as r:
        return json.load(r)


def wait_status(url: str, predicate, timeout: float = 10.0) -> dict:
    """Poll /status until predicate(status) holds (workers report once a second)."""
    deadline = time.time() + timeout
    st = get_status(url)
    while not predicate(st) and time.time() < deadline:
        time.sleep(0.2)
        st = get_status(url)
    return st


def send_vxlan(frames, port: int, vni: int = VNI, host: str = "127.0.0.1", pace: float = 0.0):
    """Send inner frames as VXLAN datagrams.  Each direction of a connection uses its own
    UDP source port, as AWS does (it hashes the inner flow into the outer source port)."""
    socks: dict[bytes, socket.socket] = {}
    try:
        for _, frame in frames:
            key = frame[26:38]  # inner IPv4 src+dst+ports: one socket per direction
            s = socks.get(key)
            if s is None:
                s = socks[key] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.sendto(synth.vxlan(frame, vni), (host, port))
            if pace:
                time.sleep(pace)
    finally:
        for s in socks.values():
            s.close()


def run_demo() -> int:
    frames = synth.sample_frames()
    with tempfile.TemporaryDirectory() as tmp, LocalBroker(log_path=os.path.join(tmp, "tansu.log")) as broker:
        udp, http = free_port(socket.SOCK_DGRAM), free_port()
        cmd = [sys.executable, "-m", "appliance", "run", "--mode", "aws", "--listen",
               f"127.0.0.1:{udp}", "--http", f"127.0.0.1:{http}", "--kafka", broker.bootstrap,
               "--workers", "2", "--spool-dir", os.path.join(tmp, "spool"), "--batch-time", "0.05"]
        print(f"demo: broker {broker.bootstrap}; appliance on udp/{udp}, http://127.0.0.1:{http}",
              file=sys.stderr)
        proc = subprocess.Popen(cmd)
        try:
            wait_healthy(f"http://127.0.0.1:{http}", proc)
            send_vxlan(frames, udp)
            msgs = consume_all(broker.bootstrap, "akto.api.logs", expect=8, timeout=30)
            status = wait_status(f"http://127.0.0.1:{http}", lambda st: st["totals"]["pairs"] >= 8)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        for m in msgs:
            print(json.dumps(json.loads(m.value()), indent=2, ensure_ascii=False))
        t = status["totals"]
        print(f"demo: {len(msgs)} pairs read back from Kafka topic akto.api.logs; appliance saw "
              f"{t['packets']} packets on VNI {VNI}, {t['pairs']} pairs", file=sys.stderr)
        return 0 if len(msgs) == 8 and proc.returncode == 0 else 1


def run_offline() -> int:
    """The sample capture replayed in-process (no broker, no runtime): the pairs on stdout."""
    from appliance.core.pipeline import Pipeline
    from appliance.format.record import Formatter
    from appliance.replay import replay_files, summary_line
    from appliance.sinks.memory import ListSink

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "sample.pcap")
        synth.write_pcap(path, synth.sample_frames())
        pipeline = Pipeline()
        formatter = Formatter()
        sink = ListSink()
        replay_files([path], pipeline, sink, formatter=formatter)
    for rec in sink.records:
        print(json.dumps(rec, indent=2, ensure_ascii=False))
    print(summary_line(pipeline.stats(), 1.0, formatter.stats()).split(";")[0], file=sys.stderr)
    return 0
