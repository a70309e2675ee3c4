"""eBPF collector cost: CPU per request of nginx under wrk, plain HTTP and HTTPS.

    sudo .venv/bin/python bench/ebpf_bench.py [--seconds 5] [--connections 10]

Modes, each for plain HTTP and HTTPS (keep-alive, a 1 KiB page):
  none        no probes loaded
  untraced    every probe loaded and attached (syscall tracepoints, libssl uprobes), the
              collector in allow-list mode with nginx not listed: what every other process
              on a node pays
  traced      nginx traced; the collector drains its ring buffer into the stream tracker
              (pairing through the core's HTTP session is phase 2: see HANDOFF.md)

Prints nginx worker CPU per request (user+system, where the probes run) and the
collector's own CPU per request while draining, and its drain rate in records per CPU
second. Needs root, nginx, wrk (apt-get install nginx-light wrk) and `make bpf`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.ebpf.collector import Collector, CollectorConfig, RingReader  # noqa: E402
from appliance.ebpf.streams import ConnectionTracker  # noqa: E402

CONF = """
worker_processes 1;
daemon off;
user root;
error_log {d}/error.log;
pid {d}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile off;
    keepalive_requests 1000000;
    server {{ listen 127.0.0.1:{plain}; root {d}/www; }}
    server {{
        listen 127.0.0.1:{tls} ssl;
        ssl_certificate {d}/cert.pem;
        ssl_certificate_key {d}/key.pem;
        root {d}/www;
    }}
}}
"""


def cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_pid(master: int) -> int:
    for _ in range(100):
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == master:
                            return int(d)
                except (OSError, ValueError):
                    pass
        time.sleep(0.05)
    raise RuntimeError("nginx worker not found")


def wrk(url: str, seconds: int, conns: int) -> int:
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", url],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if "requests in" in line:
            return int(line.split()[0])
    raise RuntimeError(out)


class Drain(threading.Thread):
    def __init__(self, col: Collector) -> None:
        super().__init__(daemon=True)
        self.reader = RingReader(col.ring_fds[0])
        self.tracker = ConnectionTracker(lambda c: _Null())
        self.records = 0
        self.cpu = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        t0 = time.thread_time()
        while not self.stop.is_set():
            evs = self.reader.poll(50)
            self.records += len(evs)
            self.tracker.feed_all(evs)
        evs = self.reader.drain()
        self.records += len(evs)
        self.tracker.feed_all(evs)
        self.cpu = time.thread_time() - t0


class _Null:
    def data(self, d: int, off: int, ts: float, payload: bytes) -> None: ...
    def gap(self, d: int, off: int, n: int) -> None: ...
    def eof(self, d: int) -> None: ...


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=10)
    args = ap.parse_args()
    for tool in ("nginx", "wrk", "openssl"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install nginx-light wrk openssl")
    d = Path(tempfile.mkdtemp(prefix="ebpf-bench-"))
    (d / "www").mkdir()
    (d / "www" / "index.html").write_bytes(b"x" * 1024)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-keyout", str(d / "key.pem"), "-out",
                    str(d / "cert.pem")], check=True, capture_output=True)
    plain, tls = 18180, 18543
    (d / "nginx.conf").write_text(CONF.format(d=d, plain=plain, tls=tls))
    ngx = subprocess.Popen(["nginx", "-c", str(d / "nginx.conf")])
    try:
        worker = worker_pid(ngx.pid)
        results = []
        for mode in ("none", "untraced", "traced"):
            col = None
            if mode != "none":
                col = Collector(CollectorConfig(only_listed=True, rescan_interval=0,
                                                ring_bytes=64 << 20)).open()
                if mode == "traced":
                    col.allow_pid(worker)
            for name, url in (("http", f"http://127.0.0.1:{plain}/"),
                              ("https", f"https://127.0.0.1:{tls}/")):
                drain = Drain(col) if col is not None else None
                if drain:
                    drain.start()
                c0 = cpu_of(worker)
                n = wrk(url, args.seconds, args.connections)
                c1 = cpu_of(worker)
                if drain:
                    drain.stop.set()
                    drain.join()
                us = (c1 - c0) / n * 1e6
                row = {"mode": mode, "proto": name, "requests": n, "rps": n / args.seconds,
                       "nginx_us_per_req": us}
                if drain and mode == "traced":
                    row["collector_us_per_req"] = drain.cpu / n * 1e6
                    row["records_per_cpu_s"] = drain.records / drain.cpu if drain.cpu else 0
                    row["records"] = drain.records
                    row["lost"] = col.stats()["ring_lost"]
                results.append(row)
                print(row, flush=True)
            if col is not None:
                col.close()
        base = {r["proto"]: r["nginx_us_per_req"] for r in results if r["mode"] == "none"}
        print("\nnginx CPU per request (us), and added over no probes:")
        for r in results:
            extra = (f"  collector {r['collector_us_per_req']:.1f} us/req, "
                     f"{r['records_per_cpu_s'] / 1e3:.0f}k records/CPU-s, lost {r['lost']}"
                     if "collector_us_per_req" in r else "")
            print(f"  {r['mode']:9} {r['proto']:5} {r['nginx_us_per_req']:7.1f}  "
                  f"(+{r['nginx_us_per_req'] - base[r['proto']]:.1f})  {r['rps']:.0f} req/s{extra}")
    finally:
        ngx.terminate()
        ngx.wait()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
