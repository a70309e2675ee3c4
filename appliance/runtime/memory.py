"""The memory ceiling (``AKTO_MEM_THRESH_RESTART``) turned into per-worker budgets.

The ceiling covers every process of the appliance (the sum of their RSS, which counts
pages shared after fork once per process: conservative).  The supervisor keeps a margin
for itself and splits the rest evenly: each worker gets an *allowance*.  A worker
measures its own idle footprint once its capture and sink are open; the difference is
its *room* for traffic, split into

- a budget for the core's accounted state (``Pipeline.buffered()``): half the room, so
  that evicting a connection (which turns what it held into records) never needs more
  than the other half;
- a byte budget for the Kafka producer's queue (and the spool drain, which reads only
  into that queue): a fifth of the room;
- the rest is slack for the interpreter.

Enforcement, in the worker loop (``MemoryGuard.check``): over the state budget, shed
down to 80 % of it; and, as a backstop for whatever the accounting misses, on the RSS
itself: past 75 % of the room shed half of the state, past 90 % shed everything, each
again only after RSS grew by another twentieth of the room (freed memory is reused
before the heap grows, so RSS does not fall after shedding and must not re-trigger).

A ceiling that leaves a worker less than ``MIN_ROOM`` is refused at start-up, with one
line; exit 75 remains for the case where shedding everything still leaves the total above
the ceiling (the supervisor's last resort).
"""

from __future__ import annotations

import os
import time

PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1 << 20
MIN_ROOM = 24 * MB  # per worker, above its idle footprint
STATE_SHARE = 0.5
KAFKA_SHARE = 0.2
SOFT, HARD = 0.75, 0.90


def rss_bytes(pid: int | None = None) -> int:
    try:
        with open(f"/proc/{pid or 'self'}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return 0


def supervisor_margin(ceiling: int) -> int:
    """What the supervisor keeps for itself beyond its current RSS (status documents,
    HTTP connections, history)."""
    return max(16 * MB, ceiling // 20)


def worker_allowance(ceiling: int, supervisor_rss: int, workers: int) -> int:
    if not ceiling:
        return 0
    return max(0, (ceiling - supervisor_rss - supervisor_margin(ceiling)) // max(1, workers))


def kafka_budget(allowance: int, rss_now: int) -> int | None:
    """Bytes the producer queue may hold (None: the sink's default, no ceiling set)."""
    if not allowance:
        return None
    return max(4 * MB, int((allowance - rss_now) * KAFKA_SHARE))


def refusal(ceiling: int, supervisor_rss: int, idle: dict[int, int]) -> str | None:
    """One line when the ceiling cannot hold the measured idle footprint, else None."""
    if not ceiling or not idle:
        return None
    n = len(idle)
    allowance = worker_allowance(ceiling, supervisor_rss, n)
    if all(allowance - rss >= MIN_ROOM for rss in idle.values()):
        return None
    footprint = supervisor_rss + sum(idle.values())
    need = supervisor_rss + supervisor_margin(ceiling) + n * (max(idle.values()) + MIN_ROOM)
    return (f"AKTO_MEM_THRESH_RESTART (--mem-restart-mb) = {ceiling // MB} MB is below what "
            f"{n} worker(s) need: {footprint // MB} MB measured idle, plus {MIN_ROOM // MB} MB "
            f"per worker for traffic and a margin; set at least {-(-need // MB)} MB or run "
            f"fewer workers (--workers)")


class MemoryGuard:
    CHECK_SECS = 0.02  # RSS reads (a few microseconds each)

    def __init__(self, allowance: int, idle: int):
        self.allowance = allowance
        self.idle = idle
        room = max(0, allowance - idle)
        self.room = room
        self.budget = int(room * STATE_SHARE)
        self.soft = idle + int(room * SOFT)
        self.hard = idle + int(room * HARD)
        self.step = max(MB, room // 20)
        self.last_shed_rss = 0
        self.next_rss = 0.0
        self.next_state = 0.0
        self.peak = 0
        self.sheds = 0

    def check(self, pipeline, now: float | None = None) -> int:
        """Shed when over a budget; returns connections evicted."""
        if not self.allowance:
            return 0
        now = time.monotonic() if now is None else now
        evicted = 0
        if now >= self.next_state:
            t0 = time.perf_counter()
            held = pipeline.buffered()
            # buffered() is O(1) in the v2 core; where it is not, check less often
            self.next_state = now + max(self.CHECK_SECS, (time.perf_counter() - t0) * 50)
            if held > self.budget:
                evicted += pipeline.shed(int(self.budget * 0.8))
                self.sheds += 1
        if now >= self.next_rss:
            self.next_rss = now + self.CHECK_SECS
            rss = rss_bytes()
            self.peak = max(self.peak, rss)
            if rss >= self.soft and rss >= self.last_shed_rss + self.step:
                self.last_shed_rss = rss
                self.sheds += 1
                if rss >= self.hard:
                    evicted += pipeline.shed(0)
                else:
                    n = pipeline.shed(pipeline.buffered() // 2)
                    # nothing to shed by the accounting, yet memory grows: the accounting
                    # misses what holds it, so give back everything
                    evicted += n or pipeline.shed(0)
            elif rss < self.soft - self.step:
                self.last_shed_rss = 0
        return evicted

    def shed_all(self, pipeline) -> int:
        self.sheds += 1
        return pipeline.shed(0)

    def figures(self) -> dict:
        return {"allowance_bytes": self.allowance, "idle_bytes": self.idle,
                "state_budget_bytes": self.budget, "peak_rss_bytes": self.peak,
                "sheds": self.sheds}
