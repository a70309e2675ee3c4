"""The memory ceiling under floods: does AKTO_MEM_THRESH_RESTART hold?

`appliance run --workers 2 --mem-restart-mb 400` with a Tansu broker, the RSS of every one
of its processes sampled every 100 ms (their sum is what the ceiling bounds), under:

- ``million``: one million connections, each a SYN and a partial POST that never ends;
- ``pipeline``: one connection carrying pipelined requests that are never answered.

Printed: the peak of the sum, how many samples were above the ceiling, evictions by
reason, pairs emitted (complete and pending), Kafka delivered/spooled, the exit code of
the SIGTERM that ends the run (and whether the appliance exited on its own, e.g. 75).

    python bench/memory_bench.py million|pipeline [--ceiling-mb 400] [--connections 1000000]
        [--requests 2000000] [--max-conn N] [--rate 40000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from rt_common import MB, Appliance, LocalBroker, Sampler, flood_proc


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=["million", "pipeline"])
    ap.add_argument("--ceiling-mb", type=int, default=400)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--connections", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=2_000_000)
    ap.add_argument("--max-conn", type=int, default=0, help="TRAFFIC_MAX_ACTIVE_CONN (0: default)")
    ap.add_argument("--settle", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=40000,
                    help="datagrams/s (0: as fast as the sender goes; the kernel drops the rest)")
    args = ap.parse_args()
    env = {"TRAFFIC_MAX_ACTIVE_CONN": str(args.max_conn)} if args.max_conn else {}
    with tempfile.TemporaryDirectory() as tmp, LocalBroker(log_path=f"{tmp}/tansu.log") as broker:
        app = Appliance(["--kafka", broker.bootstrap, "--workers", str(args.workers),
                         "--mem-restart-mb", str(args.ceiling_mb), "--batch-time", "1"],
                        env=env, workdir=tmp)
        app.wait_healthy()
        idle = app.status()["memory"]["rss_bytes"]
        sampler = Sampler(app.proc.pid)
        sampler.start()
        t0 = time.monotonic()
        if args.scenario == "million":
            flood = flood_proc(app.udp, "syn-post", count=args.connections, rate=args.rate)
        else:
            flood = flood_proc(app.udp, "pipeline", count=args.requests, rate=args.rate)
        while flood.poll() is None and app.proc.poll() is None:
            time.sleep(0.5)
        sent_for = time.monotonic() - t0
        if flood.poll() is None:
            flood.kill()
        flood.wait()
        time.sleep(args.settle)
        own_exit = app.proc.poll()
        st = app.status() if own_exit is None else {}
        code, took = app.stop() if own_exit is None else (own_exit, 0.0)
        sampler.stop()
        limit = args.ceiling_mb * MB
        above, n = sampler.above(limit)
        print(f"scenario {args.scenario}: {args.workers} workers, ceiling {args.ceiling_mb} MB, "
              f"idle {idle / MB:.0f} MB; flood sent for {sent_for:.1f}s"
              + (f" at {args.rate:,.0f} datagrams/s" if args.rate else " as fast as possible"))
        print(f"RSS of all processes, every 100 ms: peak {sampler.peak() / MB:.0f} MB, "
              f"{above} of {n} samples above the ceiling")
        if st:
            t = st["totals"]
            drops = {k: v for k, v in st["drops"].items() if k.startswith("evicted_") and v}
            k = st["kafka"]
            print(f"packets {t['packets']:,}, connections {t['connections']:,}, pairs emitted "
                  f"{t['pairs'] + t['pending']:,} ({t['pairs']:,} complete, {t['pending']:,} "
                  f"pending) before the stop")
            print(f"evictions: {drops or 'none'}; Kafka delivered {k['delivered']:,}, spooled "
                  f"{k['spooled']:,}, dropped {k['dropped']}")
        print(f"exit {code}" + (" (on its own)" if own_exit is not None else
                                f" after SIGTERM, stop took {took:.1f}s"))
        print(f"final line: {app.tail(1).strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
