"""What the /status rate history (appliance/runtime/history.py) costs.

Feeds RateHistory the way the supervisor does (cumulative counters, about once a second,
here with a simulated clock) for 1, 16 and 256 busy sessions over 11 minutes, then
prints: the bytes its rings hold (and the stated bound), the memory tracemalloc sees
allocated by the filled history (rings, baselines, and the simulation's own counters), the
time one observe() takes, and the time and JSON size of the /status "history" object in
full and for a console's incremental read (?history=5).

    python bench/status_history_bench.py
"""

from __future__ import annotations

import json
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from appliance.runtime.history import RateHistory, bound_bytes  # noqa: E402

T0 = 1_763_900_000.25
SECONDS = 660  # eleven minutes: the 600-second rings wrap


def fill(sessions: int) -> tuple[RateHistory, float]:
    h = RateHistory()
    counts = {str(v): [0.0, 0.0, 0.0] for v in range(sessions)}
    total = [0.0, 0.0, 0.0]
    spent = 0.0
    for s in range(SECONDS):
        for key, c in counts.items():
            k = int(key)
            c[0] += 1000 + (s * 7 + k) % 300
            c[1] += 800_000 + (s * 13 + k) % 90_000
            c[2] += 40 + (s + k) % 9
        total = [sum(c[i] for c in counts.values()) for i in range(3)]
        started = time.perf_counter()
        h.observe(T0 + s * 1.0003, total, counts)
        spent += time.perf_counter() - started
    return h, spent / SECONDS


def main() -> None:
    print(f"bound: (1 + 256 sessions) x 600 s x 3 rates x 4 B = {bound_bytes():,} bytes")
    print(f"{'sessions':>8} {'rings B':>10} {'traced B':>10} {'observe':>9} "
          f"{'doc full':>9} {'JSON full':>10} {'doc 5s':>8} {'JSON 5s':>8}")
    for sessions in (1, 16, 256):
        tracemalloc.start()
        kept = fill(sessions)  # measured apart: tracemalloc slows everything down
        traced = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        del kept
        h, per_observe = fill(sessions)
        started = time.perf_counter()
        full = json.dumps(h.document())
        t_full = time.perf_counter() - started
        started = time.perf_counter()
        short = json.dumps(h.document(5))
        t_short = time.perf_counter() - started
        print(f"{sessions:>8} {h.nbytes():>10,} {traced:>10,} {per_observe * 1e6:>7.0f}us "
              f"{t_full * 1e3:>7.1f}ms {len(full):>10,} {t_short * 1e3:>6.2f}ms "
              f"{len(short):>8,}")


if __name__ == "__main__":
    main()
