"""The series the console plots for one appliance: per-second rates of the whole appliance
and of each session, merged from the ``history`` of successive /status reads.

The first read brings the whole plot window, so the plots are full from the first frame;
later reads ask only for the seconds since (``?history=N``) and append them. An appliance
whose document has no history (or not per second) is sampled instead: one point per poll
from the document's current rates, so the plots still move, at the poll's pace.

Every series has the same length, aligned on the same seconds; a session that appears
later is 0 before it (it had no traffic), and one that has been 0 for the whole window is
forgotten. Pure: no I/O, no clock, no Textual.
"""

from __future__ import annotations

from collections import deque

from tui.model import METRICS, History, Sample

TOTALS = ""  # the scope of the appliance-wide series; sessions are VNIs as strings


class PlotSeries:
    def __init__(self, length: int) -> None:
        self.length = max(2, int(length))
        self.end: int | None = None  # appliance mode: the unix second the samples end at
        self.per_poll = False        # True while sampled from the current rates instead
        self.need_full = True        # the next read should bring the whole window
        self._data: dict[tuple[str, str], deque[float]] = {}

    # -- feeding --------------------------------------------------------------------
    def clear(self) -> None:
        self.end = None
        self.need_full = True
        self._data = {}

    def resize(self, length: int) -> None:
        """Keep the newest ``length`` samples (the window or the poll pace changed)."""
        self.length = max(2, int(length))
        self._data = {k: deque(v, maxlen=self.length) for k, v in self._data.items()}
        self.need_full = True

    def merge(self, hist: History, whole: bool) -> None:
        """Take in the seconds of ``hist``: all of them when the read asked for the whole
        window (``whole``), else those newer than what is held."""
        start = hist.end - hist.n
        if whole or self.per_poll or self.end is None:
            self.per_poll = False
            self._data = {}
            self._append(hist.totals, hist.sessions, 0, fresh=True)
            self.end = hist.end
            self.need_full = not whole  # e.g. a short read just after a restart
            return
        if start > self.end:
            # a short read that does not reach back to what is held (it came late): keep
            # the plot as it is and ask for the whole window next time
            self.need_full = True
            return
        if hist.end <= self.end:
            return  # nothing new (or the appliance's clock went back: ignore it)
        self._append(hist.totals, hist.sessions, self.end - start, fresh=False)
        self.end = hist.end

    def add_sample(self, totals: Sample | None, sessions: dict[str, Sample]) -> None:
        """One point per poll from the current rates (a document without history)."""
        if not self.per_poll:
            self._data = {}
            self.end = None
            self.per_poll = True
        if totals is None:
            return
        self._append({m: [getattr(totals, m)] for m in METRICS},
                     {k: {m: [getattr(s, m)] for m in METRICS} for k, s in sessions.items()},
                     0, fresh=not self._data)

    def _append(self, totals: dict[str, list[float]],
                sessions: dict[str, dict[str, list[float]]], skip: int, fresh: bool) -> None:
        held = 0 if fresh else len(self._data.get((TOTALS, METRICS[0]), ()))
        blocks = {TOTALS: totals, **sessions}
        count = max(0, len(totals[METRICS[0]]) - skip)
        scopes = set(blocks) | {scope for scope, _ in self._data}
        for scope in scopes:
            block = blocks.get(scope)
            for metric in METRICS:
                key = (scope, metric)
                series = self._data.get(key)
                if series is None:
                    if block is None:
                        continue
                    series = self._data[key] = deque([0.0] * min(held, self.length),
                                                      maxlen=self.length)
                values = block[metric][skip:] if block is not None else [0.0] * count
                series.extend(values)
        # a session at 0 for the whole window has nothing to show
        for scope in {s for s, _ in self._data if s != TOTALS}:
            if not any(any(self._data[(scope, m)]) for m in METRICS):
                for m in METRICS:
                    del self._data[(scope, m)]

    # -- reading --------------------------------------------------------------------
    def get(self, metric: str, scope: str = TOTALS) -> list[float]:
        """The series, oldest first, padded at the front with 0 to the full length (before
        the appliance started, or the session appeared, nothing was counted)."""
        series = self._data.get((scope, metric))
        held = len(self._data.get((TOTALS, metric), ()))
        values = list(series) if series is not None else [0.0] * held
        return [0.0] * (self.length - len(values)) + values

    def held(self) -> int:
        """How many samples are known (the rest of :meth:`get` is padding)."""
        return len(self._data.get((TOTALS, METRICS[0]), ()))

    def scopes(self) -> list[str]:
        return sorted({s for s, _ in self._data if s != TOTALS})

    def wanted(self, seconds_since_read: float, lag: float) -> int | None:
        """How many seconds of history the next read should ask for: the whole window the
        first time (or after a gap), else what has elapsed since the last read plus the
        appliance's publishing lag and a margin. None (sampling per poll): the document as
        it comes, to notice when it starts carrying a history."""
        if self.per_poll:
            return None
        if self.need_full or self.end is None:
            return self.length
        return max(1, min(self.length, int(seconds_since_read + max(0.0, lag)) + 3))
