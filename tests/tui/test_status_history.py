"""The rate history that /status carries (appliance/runtime/history.py): per-second rates
that add up to what was counted, whatever the cadence of the supervisor's aggregation,
bounded in seconds and in sessions."""

from __future__ import annotations

import json
import random

import pytest

from appliance.runtime.history import (
    DEFAULT_MAX_SESSIONS,
    DEFAULT_SECONDS,
    METRICS,
    RateHistory,
    bound_bytes,
    parse_seconds,
)

T0 = 1_763_900_000.0


def feed(h: RateHistory, t: float, packets: float, sessions: dict | None = None) -> None:
    h.observe(t, (packets, packets * 800, packets / 25), sessions or {})


def packets(doc: dict, vni: str | None = None) -> list[float]:
    block = doc["totals"] if vni is None else doc["sessions"][vni]
    return block["packets_per_s"]


def test_fractions_are_carried_into_whole_counts():
    """0.25 pairs a second is one pair every fourth second, not 0 forever."""
    h = RateHistory(seconds=60)
    for i in range(21):
        h.observe(T0 + i, (i * 10, i * 1000, i * 0.25), {})
    pairs = h.document()["totals"]["pairs_per_s"]
    assert sum(pairs) == 5 and set(pairs) == {0, 1}


def test_a_steady_rate_is_steady_whatever_the_cadence():
    """Traffic at 1000 packets/s, observed at random moments (0.05 s to 2.5 s apart, as
    several workers' reports arrive): every published second shows 1000."""
    h = RateHistory(seconds=60)
    rnd = random.Random(7)
    t, count = T0 + 0.37, 0.0
    feed(h, t, count)
    while t < T0 + 120:
        step = rnd.uniform(0.05, 2.5)
        t, count = t + step, count + 1000 * step
        feed(h, t, count, {"4242": (count / 4, count * 200, count / 100)})
    doc = h.document()
    assert doc["step_s"] == 1 and doc["seconds"] == 60
    assert doc["end"] == int(t)  # the second in progress is not published
    assert len(packets(doc)) == 60
    assert packets(doc) == pytest.approx([1000] * 60, rel=1e-4)
    assert doc["totals"]["bytes_per_s"] == pytest.approx([800_000] * 60, rel=1e-4)
    assert doc["totals"]["pairs_per_s"] == pytest.approx([40] * 60, rel=1e-3)
    assert packets(doc, "4242") == pytest.approx([250] * 60, rel=1e-4)


def test_the_seconds_add_up_to_what_was_counted():
    """Bursty traffic: once the last second is published, the seconds hold every packet."""
    h = RateHistory(seconds=600)
    rnd = random.Random(3)
    t, count = T0 + 0.9, 0
    feed(h, t, count)
    for _ in range(200):
        t += rnd.uniform(0.2, 1.7)
        count += rnd.choice((0, 0, 3, 50, 2000))
        feed(h, t, count)
    assert sum(packets(h.document())) <= count
    feed(h, t + 2, count)  # nothing more: the second in progress is published
    # whole counts per second, the fractions carried over: exact up to the last fraction
    seconds = packets(h.document())
    assert all(isinstance(v, int) for v in seconds)
    assert abs(sum(seconds) - count) < 1


def test_a_gap_between_observations_is_spread_over_its_seconds():
    h = RateHistory(seconds=30)
    feed(h, T0 + 0.5, 0)
    feed(h, T0 + 1.5, 100)     # 100 over [0.5, 1.5): 50 in second 0, 50 in second 1
    feed(h, T0 + 5.5, 500)     # 400 over [1.5, 5.5): 100 per second
    feed(h, T0 + 6.5, 600)
    doc = h.document()
    assert doc["end"] == int(T0) + 6
    assert packets(doc) == [50, 100, 100, 100, 100, 100]


def test_bounded_in_seconds_and_queryable_by_length():
    h = RateHistory(seconds=50)
    for i in range(200):
        feed(h, T0 + i, i * 10)
    doc = h.document()
    assert len(packets(doc)) == 50 and set(packets(doc)) == {10}
    assert all(len(doc["totals"][m]) == 50 for m in METRICS)
    assert len(packets(h.document(5))) == 5
    assert packets(h.document(0)) == []
    assert len(packets(h.document(10_000))) == 50
    json.dumps(h.document())  # plain JSON types only


def test_sessions_are_forgotten_after_a_window_of_silence_and_capped():
    h = RateHistory(seconds=20, max_sessions=3)
    feed(h, T0, 0, {"1": (0, 0, 0)})
    feed(h, T0 + 1, 10, {"1": (10, 10, 1)})
    for i in range(2, 25):  # session 1 is silent from here on
        feed(h, T0 + i, 10, {"1": (10, 10, 1)})
    assert "1" not in h.document()["sessions"] and h.session_count() == 0
    # more busy sessions than rings: the least recently active idle one gives its ring up
    base = T0 + 30
    counts = {str(v): [0, 0, 0] for v in range(10, 16)}
    feed(h, base, 10, {k: tuple(c) for k, c in counts.items()})
    for i, vni in enumerate(counts):
        counts[vni] = [5, 5, 1]
        feed(h, base + 1 + i, 10, {k: tuple(c) for k, c in counts.items()})
    feed(h, base + 10, 10, {k: tuple(c) for k, c in counts.items()})
    assert h.session_count() == 3
    assert list(h.document()["sessions"]) == ["13", "14", "15"]
    assert h.document()["dropped_sessions"] == 3
    assert h.nbytes() <= bound_bytes(20, 3)


def test_idle_sessions_are_left_out_of_a_short_query():
    h = RateHistory(seconds=60)
    feed(h, T0, 0, {"7": (0, 0, 0), "8": (0, 0, 0)})
    feed(h, T0 + 1, 10, {"7": (10, 10, 1), "8": (0, 0, 0)})
    for i in range(2, 12):
        feed(h, T0 + i, 10 + i, {"7": (10, 10, 1), "8": (i, i, 0)})
    assert set(h.document()["sessions"]) == {"7", "8"}
    assert set(h.document(5)["sessions"]) == {"8"}  # 7 was silent in the last 5 s


def test_a_counter_going_down_is_a_dip_not_a_spike():
    """A restarted worker's counts leave the sum: nothing counted for that second, and the
    next seconds count from the new baseline (never the whole cumulative value)."""
    h = RateHistory(seconds=60)
    for i in range(5):
        feed(h, T0 + i, 1_000_000 + i * 100)
    feed(h, T0 + 5, 600)  # one of two workers restarted
    for i in range(6, 9):
        feed(h, T0 + i, 600 + (i - 5) * 100)
    assert packets(h.document()) == [100, 100, 100, 100, 0, 100, 100, 100]


def test_a_clock_stepped_back_starts_over():
    h = RateHistory(seconds=60)
    for i in range(10):
        feed(h, T0 + i, i * 100)
    feed(h, T0 - 3600, 1000)
    assert packets(h.document()) == []
    feed(h, T0 - 3599, 1100)
    assert packets(h.document()) == [100]


def test_a_long_stall_costs_one_window():
    h = RateHistory(seconds=30)
    feed(h, T0, 0)
    feed(h, T0 + 10 * 86400, 864_000)  # ten days later (e.g. a suspended VM)
    doc = h.document()
    assert len(packets(doc)) == 30 and packets(doc) == pytest.approx([1.0] * 30)


def test_the_default_bound():
    assert DEFAULT_SECONDS >= 600
    assert bound_bytes() == (1 + DEFAULT_MAX_SESSIONS) * DEFAULT_SECONDS * 3 * 4 == 1_850_400
    h = RateHistory()
    feed(h, T0, 0, {str(v): (0, 0, 0) for v in range(1000)})
    feed(h, T0 + 1.5, 10, {str(v): (1, 1, 1) for v in range(1000)})
    feed(h, T0 + 2.5, 20, {str(v): (2, 2, 2) for v in range(1000)})
    assert h.session_count() == DEFAULT_MAX_SESSIONS
    assert h.nbytes() <= bound_bytes()


@pytest.mark.parametrize("query, seconds", [({}, None), ({"history": ["0"]}, 0),
                                            ({"history": ["600"]}, 600),
                                            ({"history": ["1", " 30 "]}, 30)])
def test_parse_seconds(query, seconds):
    assert parse_seconds(query) == seconds


@pytest.mark.parametrize("bad", ["-1", "x", "1.5", ""])
def test_parse_seconds_refuses(bad):
    with pytest.raises(ValueError, match="whole number of seconds"):
        parse_seconds({"history": [bad]})
