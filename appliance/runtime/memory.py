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

Enforcement, in the worker loop (``MemoryGuard.check``): over the state cap (the budget
at first), shed down to 90 % of it; and, as a backstop for whatever the accounting misses,
on the RSS itself: past 75 % of the room halve the state and the cap (again only after RSS
grew by another twentieth of the room: freed memory is reused before the heap grows, so RSS
does not fall after shedding and must not re-trigger), past 90 % shed everything (again
every half second while RSS stays there).  Shedding goes in eighths, each handed to the
sink before the next, then freed heap pages go back to the kernel (``malloc_trim``).

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


def _malloc_trim():
    """glibc's malloc_trim(0): give freed heap pages back to the kernel (after shedding,
    so that RSS follows what is really held); None where there is no glibc."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


class MemoryGuard:
    """Keeps one worker's memory inside its allowance.

    ``cap`` is the most accounted state (``buffered()``) the worker keeps: the state budget
    at first, lowered when RSS shows that the accounting under-counts (half of what was
    held when RSS crossed the soft line), raised again by a tenth every ``RECOVER_SECS``
    while RSS stays well below it.  Shedding goes in eighths, handing the records of each
    eighth to the sink before the next, so evicting many connections never builds one big
    burst of records; afterwards freed heap pages go back to the kernel.
    """

    CHECK_SECS = 0.02  # RSS reads (a few microseconds each)
    MAX_STATE_SECS = 0.5  # longest interval between two looks at the accounted state
    HARD_SECS = 0.5
    RECOVER_SECS = 10.0

    def __init__(self, allowance: int, idle: int):
        self.allowance = allowance
        self.idle = idle
        room = max(0, allowance - idle)
        self.room = room
        self.budget = int(room * STATE_SHARE)
        self.cap = self.budget
        self.min_cap = max(MB, self.budget // 64)
        self.soft = idle + int(room * SOFT)
        self.hard = idle + int(room * HARD)
        self.step = max(MB, room // 20)
        self.last_shed_rss = 0
        self.next_rss = 0.0
        self.next_state = 0.0
        self.next_recover = 0.0
        self.next_hard = 0.0
        self.peak = 0
        self.sheds = 0
        self.trim = _malloc_trim() if allowance else None

    def check(self, pipeline, hand_over=None, now: float | None = None) -> int:
        """Shed when over a budget; returns connections evicted.  `hand_over()` passes
        the records of evicted connections to the sink."""
        if not self.allowance:
            return 0
        now = time.monotonic() if now is None else now
        evicted = 0
        held = None
        if now >= self.next_state:
            t0 = time.perf_counter()
            held = pipeline.buffered()
            # buffered() is O(1) in the v2 core; where it is not, check less often
            self.next_state = now + min(self.MAX_STATE_SECS,
                                        max(self.CHECK_SECS, (time.perf_counter() - t0) * 50))
            if held > self.cap:
                evicted += self._shed(pipeline, hand_over, held, int(self.cap * 0.9))
        if now >= self.next_rss:
            self.next_rss = now + self.CHECK_SECS
            rss = rss_bytes()
            self.peak = max(self.peak, rss)
            if rss >= self.hard and now >= self.next_hard:
                # near the allowance: everything goes, again every HARD_SECS while RSS
                # stays up here (freed memory is reused first, so it cannot creep on)
                self.next_hard = now + self.HARD_SECS
                held = pipeline.buffered() if held is None else held
                self.cap = max(self.min_cap, min(self.cap, held // 4))
                evicted += self._shed(pipeline, hand_over, held, 0)
                self.last_shed_rss = rss_bytes()
            elif self.soft <= rss < self.hard and rss >= self.last_shed_rss + self.step:
                # past the soft line and still growing: keep half of what is held from
                # now on (nothing to shed by the accounting, yet memory grows: it misses
                # what holds the memory, so give back everything)
                held = pipeline.buffered() if held is None else held
                self.cap = max(self.min_cap, min(self.cap, held // 2))
                evicted += (self._shed(pipeline, hand_over, held, self.cap)
                            or self._shed(pipeline, hand_over, held, 0))
                self.last_shed_rss = rss_bytes()
            elif rss < self.soft - self.step:
                self.last_shed_rss = 0
                if self.cap < self.budget and now >= self.next_recover:
                    self.next_recover = now + self.RECOVER_SECS
                    self.cap = min(self.budget, int(self.cap * 1.1) + 1)
        return evicted

    def _shed(self, pipeline, hand_over, held: int, target: int) -> int:
        self.sheds += 1
        evicted = 0
        chunk = max(held // 8, 64 << 10)
        while True:
            goal = max(target, held - chunk)
            if target <= 0 and held - chunk <= 0:
                goal = 0
            n = pipeline.shed(goal)
            evicted += n
            if hand_over is not None:
                hand_over()
            if goal <= target or not n:
                break
            held = pipeline.buffered()
        if self.trim is not None:
            self.trim(0)
        return evicted

    def shed_all(self, pipeline, hand_over=None) -> int:
        return self._shed(pipeline, hand_over, pipeline.buffered(), 0)

    def figures(self) -> dict:
        return {"allowance_bytes": self.allowance, "idle_bytes": self.idle,
                "state_budget_bytes": self.budget, "state_cap_bytes": self.cap,
                "peak_rss_bytes": self.peak, "sheds": self.sheds}
