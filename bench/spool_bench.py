"""An outage, then the broker returns: the spool's drain, memory and duplicates.

`appliance run --workers 2 --mem-restart-mb 400` with a Tansu broker that is stopped while
--connections complete connections arrive (every pair is spooled), then started again.
Printed: pairs spooled, the RSS peak of all processes before and while the spool drains
(sampled every 100 ms), the drain time, and what the topic holds afterwards (duplicates).
Then a second run: kill -9 of every process mid-drain, restart, and the duplicates that
costs.

    python bench/spool_bench.py [--connections 50000] [--batch-time 10] [--no-crash]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from rt_common import MB, Appliance, LocalBroker, Sampler, count_topic, flood_proc


def wait(pred, timeout, step=0.5):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=50_000)
    ap.add_argument("--ceiling-mb", type=int, default=400)
    ap.add_argument("--batch-time", default="10", help="AKTO_TRAFFIC_BATCH_TIME_SECS (linger)")
    ap.add_argument("--no-crash", action="store_true", help="only the drain")
    args = ap.parse_args()
    n = args.connections
    for crash in (False,) if args.no_crash else (False, True):
        with tempfile.TemporaryDirectory() as tmp, \
                LocalBroker(log_path=f"{tmp}/tansu.log") as broker:
            common = ["--kafka", broker.bootstrap, "--workers", "2",
                      "--batch-time", args.batch_time,
                      "--mem-restart-mb", str(args.ceiling_mb)]
            app = Appliance(common, workdir=tmp)
            app.wait_healthy()
            sampler = Sampler(app.proc.pid)
            sampler.start()
            broker.stop()
            flood = flood_proc(app.udp, "pairs", count=n, rate=30000)
            flood.wait()
            st = wait(lambda app=app: (s := app.status())["totals"]["pairs"] >= n * 0.99
                      and s["kafka"]["queued"] == 0 and s, 300)
            time.sleep(2)
            st = app.status()
            emitted = st["totals"]["pairs"]
            spooled = st["kafka"]["spooled"]
            t_back = time.monotonic()
            broker.start()
            if crash:
                wait(lambda app=app, spooled=spooled:
                     app.status()["kafka"]["delivered"] > spooled // 3, 300, 0.05)
                app.kill()
                sampler.stop()
                app = Appliance(common, workdir=tmp)
                app.wait_healthy()
                sampler2 = Sampler(app.proc.pid)
                sampler2.start()
            wait(lambda app=app: app.status()["kafka"]["spooled"] == 0, 600)
            drained = time.monotonic() - t_back
            code, _ = app.stop()
            (sampler2 if crash else sampler).stop()
            read, distinct, _ = count_topic(broker.bootstrap)
            what = "kill -9 of every process mid-drain, then a restart" if crash else "drain"
            print(f"[{what}] {emitted} pairs emitted during the outage, {spooled} spooled; "
                  f"broker back: spool empty after {drained:.1f}s; exit {code}")
            if not crash:
                print(f"  RSS peak of all processes: {sampler.peak(until=t_back) / MB:.0f} MB "
                      f"during the outage, {sampler.peak(since=t_back) / MB:.0f} MB while draining "
                      f"(ceiling {args.ceiling_mb} MB)")
            print(f"  topic: {read} messages, {distinct} distinct pairs: "
                  f"{read - distinct} duplicates, {emitted - distinct} missing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
