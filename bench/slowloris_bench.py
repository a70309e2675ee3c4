"""The HTTP endpoint under a slowloris, and connect bursts (the listen backlog).

Opens --connections connections to `appliance run`'s endpoint that each send half a
request head and then nothing, and meanwhile asks /healthz once a second.  Printed: the
supervisor's threads before and during, /healthz latencies, how many slow connections the
server closed (its head deadline and connection cap), and the time to open 1,000
connections at once and get 1,000 answers.

    python bench/slowloris_bench.py [--connections 2000] [--seconds 15]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import resource
import socket
import sys
import tempfile
import time
import urllib.request

from rt_common import Appliance


def threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("Threads:")))


def health(url: str) -> float:
    t0 = time.monotonic()
    with urllib.request.urlopen(url + "/healthz", timeout=10) as r:
        r.read()
    return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=15.0)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, args.connections + 2000))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    with tempfile.TemporaryDirectory() as tmp:
        app = Appliance(["--jsonl", f"{tmp}/pairs.jsonl", "--workers", "1"], workdir=tmp)
        app.wait_healthy()
        pid = app.proc.pid
        before = threads(pid)
        host, port = "127.0.0.1", app.http
        t0 = time.monotonic()
        slow = []
        for _ in range(args.connections):
            s = socket.create_connection((host, port), timeout=10)
            s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n")
            slow.append(s)
        opened = time.monotonic() - t0
        during = threads(pid)
        lat = []
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            lat.append(health(app.url))
            time.sleep(1)
        closed = 0
        for s in slow:
            s.setblocking(False)
            try:
                if s.recv(1) == b"":
                    closed += 1
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
            s.close()
        # a burst of connects: 1,000 requests at once
        t1 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(100) as ex:
            burst = list(ex.map(lambda _: health(app.url), range(1000)))
        burst_time = time.monotonic() - t1
        code, _ = app.stop()
        lat.sort()
        print(f"{args.connections} slowloris connections opened in {opened:.2f}s; supervisor "
              f"threads {before} before, {during} during")
        median = lat[len(lat) // 2] * 1000
        print(f"/healthz during the slowloris: {len(lat)} asks, median {median:.1f} ms, "
              f"max {lat[-1] * 1000:.1f} ms")
        print(f"slow connections closed by the server after {args.seconds:.0f}s: {closed}")
        print(f"1,000 concurrent /healthz: all answered in {burst_time:.2f}s, slowest "
              f"{max(burst) * 1000:.0f} ms; exit {code}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
