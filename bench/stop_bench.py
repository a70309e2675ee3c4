"""Stop under a continuous flood: how long SIGTERM takes and what it loses.

`appliance run --workers 2` with a Tansu broker receives an endless VXLAN flood of complete
connections (bench/flood.py, no rate cap: the sender takes what a core gives it).  After
--seconds, SIGTERM while the flood goes on.  Printed: the stop time, the pairs delivered
and spooled (from the final line), those read back from the topic (and duplicates among
them), packets left unread in the kernel, the RSS peak of all processes (sampled every
100 ms) before and during the stop.  --broker-down stops the broker first, so the stop
spools everything.

    python bench/stop_bench.py [--seconds 10] [--stop-timeout 30] [--broker-down]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time

from rt_common import MB, Appliance, LocalBroker, Sampler, count_topic, flood_proc


def figure(pattern: str, line: str, default: int = 0) -> int:
    m = re.search(pattern, line)
    return int(m.group(1)) if m else default


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--stop-timeout", type=float, default=30.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--broker-down", action="store_true")
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
