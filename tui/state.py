"""What the console holds: per appliance (:class:`ApplianceState`) and for the whole
console (:class:`ConsoleState`: the URLs, the poll settings, pause, the clock).

Mutated only on the UI's event loop, by the poller (reads) and the app (keys); the
widgets and screens only read it. Every "how long ago" goes through ``ConsoleState.clock``, so
a test with a fixed clock renders the same screen every time. No Textual, no I/O.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from tui import model as m
from tui.client import DEFAULT_TIMEOUT, display_name
from tui.series import TOTALS, PlotSeries

UNREACHABLE = "unreachable"


@dataclass
class ApplianceState:
    """Everything the console knows about one URL."""

    url: str
    plot_seconds: int = 300            # the plot window, in seconds of the appliance's history
    poll_samples: int = 300            # its length when sampled per poll (no history served)
    status: dict | None = None         # the last document read successfully
    error: str | None = None           # why the last attempt failed; None when it worked
    error_kind: str = UNREACHABLE      # "unreachable", "not an appliance", ...
    last_ok: float | None = None       # clock() of the last success
    last_attempt: float | None = None
    next_attempt: float | None = None  # clock() of the next scheduled attempt
    failures: int = 0                  # consecutive
    fetches: int = 0                   # successful reads
    polling: bool = False              # a request is in flight
    plots: PlotSeries = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.plots is None:
            self.plots = PlotSeries(self.plot_seconds)

    @property
    def name(self) -> str:
        host = m.text(m.dig(self.status, "hostname"))
        return host or display_name(self.url)

    @property
    def reachable(self) -> bool:
        """It answered the last read with a status document."""
        return self.error is None and self.status is not None

    @property
    def connecting(self) -> bool:
        return self.status is None and self.error is None

    @property
    def problem(self) -> str | None:
        """What is wrong in a word or two ("unreachable", "not an appliance"), or None."""
        return self.error_kind if self.error is not None else None

    def history_wanted(self, now: float) -> int | None:
        """Seconds of rate history the next read should ask for (see PlotSeries.wanted)."""
        if self.last_ok is None:
            return self.plot_seconds
        lag = 0.0
        doc_now, end = m.num(m.dig(self.status, "now")), self.plots.end
        if doc_now is not None and end is not None:
            lag = doc_now - end  # how far the appliance's published seconds lag its clock
        return self.plots.wanted(now - self.last_ok, lag)

    def record_ok(self, doc: dict, now: float, asked: int | None = None) -> None:
        """A document arrived; ``asked`` is the ?history= the read asked for."""
        previous = self.status
        if previous is not None and m.dig(doc, "started_at") != m.dig(previous, "started_at"):
            self.plots.clear()  # the appliance restarted: older rates are another process
        hist = m.history(doc)
        if hist is not None:
            if self.plots.per_poll or self.plots.length != self.plot_seconds:
                self.plots.resize(self.plot_seconds)
            self.plots.merge(hist, whole=asked is None or asked >= self.plots.length)
        else:
            if not self.plots.per_poll:
                self.plots.resize(self.poll_samples)
            self.plots.add_sample(m.rates(doc, previous), m.session_rates(doc))
        self.status = doc
        self.error = None
        self.error_kind = UNREACHABLE
        self.failures = 0
        self.last_ok = now
        self.last_attempt = now
        self.fetches += 1

    def record_error(self, reason: str, now: float, kind: str = UNREACHABLE) -> None:
        self.error = reason
        self.error_kind = kind
        self.failures += 1
        self.last_attempt = now

    def retry_delay(self, interval: float, max_backoff: float) -> float:
        """Poll interval while healthy; doubling from it on consecutive failures."""
        if not self.failures:
            return interval
        return float(min(max_backoff, interval * 2.0 ** min(self.failures - 1, 16)))

    def series(self, metric: str, scope: str = TOTALS) -> list[float]:
        """A plotted series (oldest first, full length): the appliance's or a session's
        (``scope`` is its VNI as a string)."""
        return self.plots.get(metric, scope)


class ConsoleState:
    """The console's settings and the state of every appliance it watches."""

    MIN_INTERVAL, MAX_INTERVAL = 0.2, 60.0

    def __init__(self, urls: Iterable[str], *, interval: float = 1.0,
                 timeout: float = DEFAULT_TIMEOUT, history_s: float = 300.0,
                 max_backoff: float = 30.0, clock: Callable[[], float] = time.time) -> None:
        self.urls: list[str] = list(dict.fromkeys(urls))
        if not self.urls:
            raise ValueError("no appliance URL")
        self.interval = float(interval)
        self.timeout = float(timeout)
        self.history_s = float(history_s)
        self.max_backoff = float(max_backoff)
        self.clock = clock
        self.paused = False
        self.states = {u: ApplianceState(u, plot_seconds=self.plot_seconds,
                                         poll_samples=self.poll_samples) for u in self.urls}

    @property
    def fleet(self) -> bool:
        return len(self.urls) > 1

    @property
    def plot_seconds(self) -> int:
        return max(2, int(round(self.history_s)))

    @property
    def poll_samples(self) -> int:
        return max(2, int(round(self.history_s / self.interval)))

    def set_interval(self, value: float) -> None:
        self.interval = min(self.MAX_INTERVAL, max(self.MIN_INTERVAL, round(value, 2)))
        for st in self.states.values():
            st.poll_samples = self.poll_samples
            if st.plots.per_poll:  # sampled per poll: keep spanning the same minutes
                st.plots.resize(st.poll_samples)
            if st.last_attempt is not None:
                st.next_attempt = st.last_attempt + st.retry_delay(self.interval,
                                                                   self.max_backoff)

    def retry_in(self, st: ApplianceState) -> int | None:
        """Whole seconds to the next attempt, for "retrying in 4s"; None when paused."""
        if self.paused or st.next_attempt is None:
            return None
        return max(0, math.ceil(st.next_attempt - self.clock()))
