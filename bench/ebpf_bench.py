"""eBPF collector cost and speed: nginx under wrk, plain HTTP and HTTPS.

    sudo .venv/bin/python bench/ebpf_bench.py [--seconds 4] [--connections 10] [--skip-cpu]

1. CPU per request of nginx (one worker, a 1 KiB page, keep-alive), in three modes:
     none       no probes loaded
     untraced   every probe attached (syscall tracepoints, libssl uprobes), nginx not on
                the allow-list: what every other process of a node pays
     traced     nginx traced, and the collector pairing what it sends: the runtime's ring
                reader (appliance.ebpf.ring) -> EbpfFrontEnd (the core's HTTP session) ->
                Akto records, in a thread of this process
   nginx's CPU (user + system, where the probes run) per request, and the collector's.

2. Drain rate: nginx traced into a large ring while nothing reads it, then the ring is
   read in one go, single-threaded, and timed in CPU seconds: pairs/s per core from a
   real ring to pairs, and to Akto records (JSON-encoded, as the sink receives them);
   and the same with libbpf's per-record callback consumer, for comparison.

Needs root, nginx, wrk and openssl (apt-get install nginx-light wrk openssl), `make bpf`.
The machine's other load shows in the figures: run it on a quiet machine, twice.
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

from appliance.core.pipeline import PipelineConfig  # noqa: E402
from appliance.ebpf.collector import Collector, CollectorConfig, RingReader  # noqa: E402
from appliance.ebpf.frontend import EbpfFrontEnd  # noqa: E402
from appliance.ebpf.ring import DirectRing  # noqa: E402
from appliance.format.record import Formatter, encode  # noqa: E402

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
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
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


def wrk(url: str, seconds: float, conns: int) -> int:
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", url],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if "requests in" in line:
            return int(line.split()[0])
    raise RuntimeError(out)


class Pairing(threading.Thread):
    """The runtime's worker path, in a thread: ring -> front end -> Akto records."""

    def __init__(self, col: Collector, size: int) -> None:
        super().__init__(daemon=True)
        self.ring = DirectRing(col.ring_fds[0], size)
        self.fe = EbpfFrontEnd(PipelineConfig(max_connections=100_000))
        self.fmt = Formatter(source="MIRRORING")
        self.pairs = 0
        self.cpu = 0.0
        self.stop = threading.Event()

    def _round(self) -> int:
        evs = self.ring.read(4096)
        if evs:
            self.fe.feed(evs)
            for rec in self.fmt.records(self.fe.take()):
                encode(rec)
                self.pairs += 1
        return len(evs)

    def run(self) -> None:
        import select

        t0 = time.thread_time()
        while not self.stop.is_set():
            if not self._round():
                select.select([self.ring.fileno()], [], [], 0.05)
        while self._round():
            pass
        self.cpu = time.thread_time() - t0


def drain_rate(col: Collector, size: int, direct: bool) -> dict:
    """Read a full ring as the runtime's worker does, batch by batch (read, pair, format,
    encode, let go), timing each stage in CPU seconds."""
    fe = EbpfFrontEnd(PipelineConfig(max_connections=100_000))
    fmt = Formatter(source="MIRRORING")
    clock = time.process_time
    t_read = t_pair = t_rec = 0.0
    n = records = 0
    if direct:
        ring = DirectRing(col.ring_fds[0], size)

        def read() -> list:
            return ring.read(4096)
    else:
        reader = RingReader(col.ring_fds[0])
        pending: list = []

        def read() -> list:
            # libbpf's consumer takes everything at once; hand it out in batches
            nonlocal pending
            if not pending:
                pending = reader.drain()
            out, pending = pending[:4096], pending[4096:]
            return out
    while True:
        t0 = clock()
        evs = read()
        t1 = clock()
        if not evs:
            break
        fe.feed(evs)
        pairs = fe.take()
        t2 = clock()
        for rec in fmt.records(pairs):
            encode(rec)
        t3 = clock()
        t_read += t1 - t0
        t_pair += t2 - t1
        t_rec += t3 - t2
        n += len(pairs)
    if direct:
        records = ring.records
        ring.close()
    else:
        reader.close()
    return {"reader": "memory map" if direct else "libbpf callback", "records": records,
            "pairs": n, "read_us_per_pair": t_read / max(n, 1) * 1e6,
            "pair_us": t_pair / max(n, 1) * 1e6, "record_us": t_rec / max(n, 1) * 1e6,
            "pairs_per_cpu_s": n / max(t_read + t_pair, 1e-9),
            "records_per_cpu_s": n / max(t_read + t_pair + t_rec, 1e-9)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--connections", type=int, default=10)
    ap.add_argument("--skip-cpu", action="store_true", help="only the drain rate")
    ap.add_argument("--drain-seconds", type=float, default=1.0)
    args = ap.parse_args()
    for tool in ("nginx", "wrk", "openssl"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install nginx-light wrk openssl")
    from appliance import core

    print(f"core: {getattr(core, 'CORE', 'python')}")
    d = Path(tempfile.mkdtemp(prefix="ebpf-bench-"))
    (d / "www").mkdir()
    (d / "www" / "index.html").write_bytes(b"x" * 1024)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-keyout", str(d / "key.pem"), "-out",
                    str(d / "cert.pem")], check=True, capture_output=True)
    plain, tls = 18180, 18543
    (d / "nginx.conf").write_text(CONF.format(d=d, plain=plain, tls=tls))
    ngx = subprocess.Popen(["nginx", "-c", str(d / "nginx.conf")])
    urls = (("http", f"http://127.0.0.1:{plain}/"), ("https", f"https://127.0.0.1:{tls}/"))
    try:
        worker = worker_pid(ngx.pid)
        results = []
        if not args.skip_cpu:
            for mode in ("none", "untraced", "traced"):
                col = None
                size = 64 << 20
                if mode != "none":
                    col = Collector(CollectorConfig(only_listed=True, rescan_interval=0,
                                                    ring_bytes=size)).open()
                    if mode == "traced":
                        col.allow_pid(worker)
                for proto, url in urls:
                    pairing = Pairing(col, size) if col is not None and mode == "traced" else None
                    if pairing:
                        pairing.start()
                    c0 = cpu_of(worker)
                    lost0 = col.stats()["ring_lost"] if col is not None else 0
                    n = wrk(url, args.seconds, args.connections)
                    c1 = cpu_of(worker)
                    row = {"mode": mode, "proto": proto, "requests": n, "rps": n / args.seconds,
                           "nginx_us_per_req": (c1 - c0) / n * 1e6}
                    if pairing:
                        pairing.stop.set()
                        pairing.join()
                        row.update(collector_us_per_req=pairing.cpu / n * 1e6,
                                   pairs=pairing.pairs, lost=col.stats()["ring_lost"] - lost0)
                    results.append(row)
                    print(row, flush=True)
                if col is not None:
                    col.close()
            base = {r["proto"]: r["nginx_us_per_req"] for r in results if r["mode"] == "none"}
            print("\nnginx CPU per request (µs), and added over no probes:")
            for r in results:
                extra = (f"  collector {r['collector_us_per_req']:.1f} µs/req, "
                         f"{r['pairs']} pairs, ring lost {r['lost']}"
                         if "collector_us_per_req" in r else "")
                print(f"  {r['mode']:9} {r['proto']:5} {r['nginx_us_per_req']:7.1f}  "
                      f"(+{r['nginx_us_per_req'] - base[r['proto']]:.1f})  "
                      f"{r['rps']:.0f} req/s{extra}")
        print("\ndrain rate, from a ring filled while nothing read it (CPU seconds):")
        for proto, url in urls:
            for direct in (True, False):
                size = 512 << 20
                col = Collector(CollectorConfig(only_listed=True, rescan_interval=0,
                                                ring_bytes=size)).open()
                try:
                    col.allow_pid(worker)
                    n = wrk(url, args.drain_seconds, args.connections)
                    lost = col.stats()["ring_lost"]
                    r = drain_rate(col, size, direct)
                finally:
                    col.close()
                print(f"  {proto:5} {r['reader']:16} {n} requests (ring lost {lost}), "
                      f"{r['pairs']} pairs; µs per pair: read {r['read_us_per_pair']:.1f}, "
                      f"pair {r['pair_us']:.1f}, record {r['record_us']:.1f} -> "
                      f"{r['pairs_per_cpu_s'] / 1e3:.1f}k pairs/s per core, "
                      f"{r['records_per_cpu_s'] / 1e3:.1f}k Akto records/s per core", flush=True)
    finally:
        ngx.terminate()
        ngx.wait()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
