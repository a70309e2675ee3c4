"""`python -m appliance.ebpf`: check that this node can run the eBPF collector.

Runs the preflight checks, loads and attaches every program, scans for TLS libraries,
optionally watches for a few seconds, then prints one JSON summary (kernel counters,
libraries attached, failures). Exit 0 when it works, 2 with one line naming the fix when
it does not. `--no-preflight` skips the capability check, to see what the kernel itself
refuses (that is how the needed capabilities were measured).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from appliance.ebpf import preflight
from appliance.ebpf.collector import Collector, CollectorConfig, RingReader
from appliance.ebpf.events import ConnOpen, Data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m appliance.ebpf", description=__doc__.splitlines()[0])
    ap.add_argument("--no-tls", action="store_true", help="syscall probes only, no uprobes")
    ap.add_argument("--watch", type=float, default=0.0, help="seconds to read events for")
    ap.add_argument("--pid", type=int, action="append", default=[], help="trace only these")
    ap.add_argument("--no-preflight", action="store_true")
    args = ap.parse_args(argv)
    cfg = CollectorConfig(tls=not args.no_tls, pids=args.pid, rescan_interval=0)
    if args.no_preflight:
        preflight.missing_caps = lambda *a, **k: []
    try:
        col = Collector(cfg).open()
    except (preflight.EnvironmentProblem, ValueError) as e:
        print(str(e), file=sys.stderr)
        return 2
    try:
        seen = {"connections": 0, "data_records": 0}
        if args.watch > 0:
            reader = RingReader(col.ring_fds[0])
            end = time.monotonic() + args.watch
            while time.monotonic() < end:
                col.poll_control(0)
                for ev in reader.poll(100):
                    if isinstance(ev, ConnOpen):
                        seen["connections"] += 1
                    elif isinstance(ev, Data):
                        seen["data_records"] += 1
            reader.close()
        out = {"programs_attached": len(col.links), "kernel": col.stats(), "seen": seen,
               "tls": col.tls.status() if col.tls else None}
        print(json.dumps(out, indent=2))
    finally:
        col.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
