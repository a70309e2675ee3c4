"""The short rate history that ``/status`` carries, so a console's plots are full at once.

The supervisor feeds :meth:`RateHistory.observe` with cumulative counters (packets, bytes,
pairs) for the whole appliance and per mirror session, each time it aggregates the
workers' reports. The history turns them into per-second rates: the traffic counted
between two observations is spread evenly over the time between them and added to the
whole-clock-second buckets it overlaps, so the sum of the buckets equals what was counted
(nothing is invented or lost by sampling), whatever the cadence of the observations. A
second is published once an observation from a later second arrives.

Each bucket holds a whole count (packets, bytes or pairs in that second: the rate over
one second), as a uint32; the fraction a spread leaves is carried into the key's next
second, so the counts still add up exactly. Whole counts keep the JSON short and let the
document be built from array slices, not number by number.

Bounded: one ring of ``seconds`` buckets × 3 metrics of uint32 per key (the appliance's
totals and at most ``max_sessions`` sessions). A session with no traffic for the whole
window is forgotten (its rates are all zero, which is what a reader assumes for a session
missing from the history); past ``max_sessions``, the least recently active session is
forgotten and counted in ``dropped_sessions``. With the defaults (600 s, 256 sessions)
the rings hold at most 257 × 600 × 3 × 4 B = 1,850,400 bytes (:func:`bound_bytes`).

Pure: time comes from the caller, no I/O. A lock makes ``document()`` (HTTP threads) safe
against ``observe()`` (the supervisor's loop).
"""

from __future__ import annotations

import math
import threading
from array import array
from collections.abc import Mapping, Sequence

METRICS = ("packets_per_s", "bytes_per_s", "pairs_per_s")
DEFAULT_SECONDS = 600
DEFAULT_MAX_SESSIONS = 256
TOTALS = ""  # the key of the appliance-wide ring
_TYPE = "I"  # uint32: up to 4.29e9 a second (34 Gbit/s of bytes); more saturates
_ITEM = array(_TYPE).itemsize
_MAX = (1 << (8 * _ITEM)) - 1

Counters = Sequence[float]  # cumulative (packets, bytes, pairs)


def bound_bytes(seconds: int = DEFAULT_SECONDS, max_sessions: int = DEFAULT_MAX_SESSIONS) -> int:
    """The most the rings can hold, in bytes (object overheads aside: ~100 B per ring)."""
    return (1 + max_sessions) * seconds * len(METRICS) * _ITEM


def parse_seconds(query: Mapping[str, Sequence[str]]) -> int | None:
    """``?history=N`` (seconds, 0 for none) from a parsed query string; None when absent.

    Raises ValueError with a short reason for anything but a non-negative integer."""
    values = query.get("history")
    if not values:
        return None
    text = values[-1].strip()
    if not text.isdigit():
        raise ValueError(f"history must be a whole number of seconds, not {text!r}")
    return int(text)


def _three(counters: Counters) -> tuple[float, float, float]:
    p, b, q = (list(counters[:3]) + [0, 0, 0])[:3]
    return float(p), float(b), float(q)


class _Ring:
    __slots__ = ("series", "carry", "last_active")

    def __init__(self, seconds: int) -> None:
        # one array per metric, indexed by (unix second % seconds)
        self.series = [array(_TYPE, bytes(seconds * _ITEM)) for _ in METRICS]
        self.carry = [0.0, 0.0, 0.0]  # the fractions not yet in a whole count
        self.last_active = -1  # the last second with traffic


class RateHistory:
    """Per-second rates of the appliance and of each session over the last ``seconds``."""

    def __init__(self, seconds: int = DEFAULT_SECONDS,
                 max_sessions: int = DEFAULT_MAX_SESSIONS) -> None:
        if seconds < 1 or max_sessions < 0:
            raise ValueError("seconds must be at least 1 and max_sessions not negative")
        self.seconds = seconds
        self.max_sessions = max_sessions
        self.dropped_sessions = 0
        self._lock = threading.Lock()
        self._rings: dict[str, _Ring] = {TOTALS: _Ring(seconds)}
        self._t: float | None = None          # time of the previous observation
        self._prev: dict[str, tuple[float, float, float]] = {}
        self._open: dict[str, list[float]] = {}  # traffic so far in the unfinished second
        self._end: int | None = None          # the published seconds end here (exclusive)
        self._published = 0                   # how many seconds are known (≤ seconds)

    # -- feeding --------------------------------------------------------------------
    def observe(self, now: float, totals: Counters,
                sessions: Mapping[str, Counters]) -> None:
        """Cumulative counters as of ``now`` (unix seconds): the appliance's and per session
        (keyed by VNI as a string)."""
        current = {TOTALS: _three(totals)}
        for key, counters in sessions.items():
            current[str(key)] = _three(counters)
        with self._lock:
            if self._t is None or now < self._t or not math.isfinite(now):
                # the first observation is the baseline; a clock stepped backwards starts over
                self._restart(now, current)
                return
            deltas = {}
            for key, values in current.items():
                before = self._prev.get(key, (0.0, 0.0, 0.0))
                # A counter that went down (a worker restarted and its counts left the sum)
                # counts nothing this time and is the new baseline: a dip in the plot,
                # never a spike of everything counted before.
                d = [v - b if v >= b else 0.0 for v, b in zip(values, before, strict=True)]
                if any(d):
                    deltas[key] = d
            self._spread(self._t, now, deltas)
            self._t = now
            # keep the baselines of sessions still in the window, should one be missing from
            # a single aggregation (its counts then resume from where they were)
            kept = {k: v for k, v in self._prev.items() if k in self._rings}
            kept.update(current)
            self._prev = kept

    def _restart(self, now: float, current: dict[str, tuple[float, float, float]]) -> None:
        self._rings = {TOTALS: _Ring(self.seconds)}
        self._open = {}
        self._published = 0
        self._t = now if math.isfinite(now) else None
        self._end = math.floor(now) if self._t is not None else None
        self._prev = current

    def _spread(self, t0: float, t1: float, deltas: dict[str, list[float]]) -> None:
        """Add ``deltas`` (counted between t0 and t1) to the seconds they overlap, evenly,
        and publish every second before t1's."""
        dt = t1 - t0
        last = math.floor(t1)
        # after a long stall only the newest `seconds` matter: the rest would be overwritten
        first = max(math.floor(t0), last - self.seconds)
        for second in range(first, last + 1):
            if dt > 0:
                share = (min(t1, second + 1) - max(t0, second)) / dt
            else:
                share = 1.0 if second == last else 0.0
            if share > 0:
                for key, d in deltas.items():
                    acc = self._open.setdefault(key, [0.0, 0.0, 0.0])
                    for i in range(3):
                        acc[i] += d[i] * share
            if second < last:
                self._publish(second)

    def _publish(self, second: int) -> None:
        """Close ``second``: its buckets get what was accumulated (0 where nothing was)."""
        assert self._end is not None
        if second < self._end:  # already closed (cannot happen with rising time)
            return
        if second - self._end >= self.seconds:  # a long stall: the whole ring is stale
            self._end = second - self.seconds + 1
        while self._end < second:  # seconds nothing was spread over (t0 == t1 edge)
            self._write(self._end, {})
        self._write(second, self._open)
        self._open = {}

    def _write(self, second: int, values: dict[str, list[float]]) -> None:
        slot = second % self.seconds
        for key in values:
            if key not in self._rings:
                self._admit(key, values)
        for key, ring in self._rings.items():
            acc = values.get(key)
            if acc is None and not any(ring.carry):
                for series in ring.series:
                    series[slot] = 0
                continue
            for i, series in enumerate(ring.series):
                exact = (acc[i] if acc is not None else 0.0) + ring.carry[i]
                whole = max(0, int(exact + 0.5))
                ring.carry[i] = exact - whole
                series[slot] = min(whole, _MAX)
            if acc is not None:
                ring.last_active = second
        self._end = second + 1
        self._published = min(self.seconds, self._published + 1)
        # a session idle for the whole window is all zeros: forget it
        horizon = self._end - self.seconds
        for key in [k for k, r in self._rings.items() if k != TOTALS and r.last_active < horizon]:
            del self._rings[key]

    def _admit(self, key: str, busy: Mapping[str, object]) -> None:
        """A ring for a new session; when all are taken, the least recently active session
        that has no traffic in this second gives its ring up, else the newcomer has none."""
        if len(self._rings) - 1 >= self.max_sessions:
            idle = [(r.last_active, k) for k, r in self._rings.items()
                    if k != TOTALS and k not in busy]
            self.dropped_sessions += 1
            if not idle:
                return
            del self._rings[min(idle)[1]]
        self._rings[key] = _Ring(self.seconds)

    # -- reading --------------------------------------------------------------------
    def document(self, seconds: int | None = None) -> dict:
        """The ``history`` object of /status: the last ``seconds`` (default: all kept)
        published seconds, oldest first, for the totals and each session."""
        with self._lock:
            n = self._published if seconds is None else min(max(0, seconds), self._published)
            end = self._end
            totals = self._series(self._rings[TOTALS], n)
            sessions = {}
            for key in sorted((k for k in self._rings if k != TOTALS), key=_vni_order):
                ring = self._rings[key]
                if end is not None and ring.last_active >= end - n:  # else all zeros: left out
                    sessions[key] = self._series(ring, n)
            dropped = self.dropped_sessions
        return {"step_s": 1, "end": end, "seconds": self.seconds, "totals": totals,
                "sessions": sessions, "dropped_sessions": dropped}

    def _series(self, ring: _Ring, n: int) -> dict[str, list[int]]:
        if not n or self._end is None:
            return {m: [] for m in METRICS}
        start, stop = (self._end - n) % self.seconds, self._end % self.seconds
        out = {}
        for m, series in zip(METRICS, ring.series, strict=True):
            if start < stop:
                out[m] = series[start:stop].tolist()
            else:  # the window wraps around the end of the ring
                out[m] = series[start:].tolist() + series[:stop].tolist()
        return out

    def nbytes(self) -> int:
        """Bytes held by the rings right now (≤ :func:`bound_bytes`)."""
        with self._lock:
            return sum(len(s) * _ITEM for r in self._rings.values() for s in r.series)

    def session_count(self) -> int:
        with self._lock:
            return len(self._rings) - 1


def _vni_order(key: str) -> tuple[int, int | str]:
    return (0, int(key)) if key.isdigit() else (1, key)
