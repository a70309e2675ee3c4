"""Stop under a continuous flood: how long SIGTERM takes and what it loses.

`appliance run --workers 2` with a Tansu broker receives an endless VXLAN flood of complete
connections (bench/flood.py, no rate cap: the sender takes what a core gives it).  After
--seconds, SIGTERM while the flood goes on.  Printed: the stop time, the pairs delivered
and spooled (from the final line), those read back from the topic (and duplicates among
them), packets left unread in the kernel, the RSS peak of all processes (sampled every
100 ms) before and during the stop.  --broker-down stops the broker first, so the stop
spools everything.  --kill-9 kills the supervisor instead (what the OOM killer does):
printed are how long each worker took to exit, whether the UDP port was free then, and
how many pairs their spools hold.

    python bench/stop_bench.py [--seconds 10] [--stop-timeout 30] [--broker-down | --kill-9]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import sys
import tempfile
import time

from rt_common import MB, Appliance, LocalBroker, Sampler, children, count_topic, flood_proc


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def kill_9(app: Appliance, broker, args) -> int:
    workers = children(app.proc.pid)
    t0 = time.monotonic()
    os.kill(app.proc.pid, signal.SIGKILL)
    app.proc.wait()
    exited = {}
    while len(exited) < len(workers) and time.monotonic() - t0 < 10:
        for w in workers:
            if w not in exited and gone(w):
                exited[w] = time.monotonic() - t0
        time.sleep(0.005)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", app.udp))
        free = True
    except OSError:
        free = False
    s.close()
    from appliance.sinks.spool import Spool, spool_dirs

    held = 0
    for _, path in spool_dirs(app.spool):
        sp = Spool(path, 1 << 40)
        held += len(sp)
        sp.close()
    times = ", ".join(f"{t * 1000:.0f} ms" for t in sorted(exited.values()))
    print(f"kill -9 of the supervisor mid-flood: workers exited after {times} "
          f"({len(workers) - len(exited)} still running after 10 s); UDP port free: {free}; "
          f"{held} pairs in their spools")
    return 0


def figure(pattern: str, line: str, default: int = 0) -> int:
    m = re.search(pattern, line)
    return int(m.group(1)) if m else default


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--stop-timeout", type=float, default=30.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--broker-down", action="store_true")
    ap.add_argument("--kill-9", action="store_true")
    ap.add_argument("--batch-time", default="1")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, LocalBroker(log_path=f"{tmp}/tansu.log") as broker:
        app = Appliance(["--kafka", broker.bootstrap, "--workers", str(args.workers),
                         "--batch-time", args.batch_time],
                        env={"APPLIANCE_STOP_TIMEOUT": str(args.stop_timeout)}, workdir=tmp)
        app.wait_healthy()
        sampler = Sampler(app.proc.pid)
        sampler.start()
        flood = flood_proc(app.udp, "pairs")
        time.sleep(args.seconds)
        before = app.status()
        if args.kill_9:
            kill_9(app, broker, args)
            flood.kill()
            flood.wait()
            sampler.stop()
            return 0
        if args.broker_down:
            broker.stop()
            time.sleep(1)
        t_stop = time.monotonic()
        code, took = app.stop(timeout=args.stop_timeout + 60)
        flood_alive = flood.poll() is None
        flood.kill()
        flood.wait()
        sampler.stop()
        line = app.tail(1).strip()
        delivered = figure(r"(\d+) pairs delivered", line, -1)
        spooled = figure(r"(\d+) spooled", line)
        unread = figure(r"(\d+) packets left unread", line)
        lost = figure(r"(\d+) lost", line, -1)
        read = distinct = 0
        if not args.broker_down:
            read, distinct, _ = count_topic(broker.bootstrap)
        print(f"flood for {args.seconds:.0f}s, {before['rates']['packets_per_s']:,.0f} packets/s "
              f"processed by {args.workers} workers; still flooding at SIGTERM: {flood_alive}")
        print(f"stop: exit {code} in {took:.2f}s (APPLIANCE_STOP_TIMEOUT={args.stop_timeout:g}s)")
        print(f"pairs: {delivered} delivered, {spooled} spooled, {lost} lost; read back {read} "
              f"({read - distinct} duplicates); {unread} packets left unread in the kernel")
        print(f"RSS peak, all processes: {sampler.peak(until=t_stop) / MB:.0f} MB while flooding, "
              f"{sampler.peak(since=t_stop) / MB:.0f} MB during the stop")
        print(f"final line: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
