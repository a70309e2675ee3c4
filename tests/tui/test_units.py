"""The pure parts: number formatting, URL handling, tolerant reading of /status."""

from __future__ import annotations

import pytest
from statusd import NOW, sample_status

from tui import fmt
from tui import model as m
from tui.client import NotAnAppliance, base_url, check_schema, display_name, status_url
from tui.columns import Column, fit
from tui.render import bars
from tui.series import PlotSeries
from tui.state import ApplianceState


@pytest.mark.parametrize("value, text", [
    (0, "0"), (7, "7"), (0.5, "0.5"), (3.333, "3.3"), (999, "999"), (1000, "1k"),
    (4567, "4.6k"), (45678, "45.7k"), (999_600, "1M"), (2.3e9, "2.3G"), (None, "-"),
    ("12", "-"), (True, "-"), (float("nan"), "-"),
])
def test_count(value, text):
    assert fmt.count(value) == text


@pytest.mark.parametrize("value, text", [
    (0, "0 bit/s"), (100, "800 bit/s"), (790_000, "6.3 Mbit/s"), (150_000_000, "1.2 Gbit/s"),
    (125_000, "1 Mbit/s"), (None, "-"),
])
def test_bits(value, text):
    assert fmt.bits(value) == text


@pytest.mark.parametrize("value, text", [
    (0, "0 B"), (512, "512 B"), (1536, "1.5 KiB"), (512 << 20, "512 MiB"),
    (123456789, "118 MiB"), (4_000_000_000, "3.7 GiB"), (None, "-"),
])
def test_size(value, text):
    assert fmt.size(value) == text


def test_durations_and_ages():
    assert [fmt.duration(v) for v in (0, 45, 125, 3 * 3600 + 240, 2 * 86400 + 3 * 3600)] == \
        ["0s", "45s", "2m05s", "3h04m", "2d03h"]
    assert [fmt.ago(v) for v in (None, 0.2, 5, 600, 7200, 90000)] == \
        ["-", "now", "5s ago", "10m ago", "2h ago", "1d ago"]
    assert fmt.rate(3400) == "3.4k/s" and fmt.pct(1, 4) == "25%" and fmt.pct(1, None) == "-"


@pytest.mark.parametrize("given, base", [
    ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
    ("127.0.0.1:8000", "http://127.0.0.1:8000"),
    ("http://h:8000/", "http://h:8000"),
    ("http://h:8000/status", "http://h:8000"),
    ("https://proxy.example/appliance-3/status/", "https://proxy.example/appliance-3"),
])
def test_urls(given, base):
    assert base_url(given) == base
    assert status_url(given) == base + "/status"


@pytest.mark.parametrize("bad", ["", "ftp://h", "http://", "http://h:port"])
def test_bad_urls(bad):
    with pytest.raises(ValueError):
        base_url(bad)


def test_display_name():
    assert display_name("http://10.0.1.5:8000") == "10.0.1.5:8000"
    assert display_name("https://h/x") == "https://h/x"


def test_sessions_are_read_tolerantly():
    doc = {"now": 100.0, "sessions": [
        {"vni": 1, "packets_per_s": 5, "last_seen": 90.0, "eni": "eni-1"},
        {"vni": "2", "packets_per_s": "fast", "last_seen": None, "policy": "pol"},
        {"vni": 1, "eni": ["eni-a", "eni-b"]},  # the same VNI twice: unique row keys
        {"vni": None}, "junk", {"vni": True},
    ]}
    rows = m.sessions(doc)
    assert [r.vni for r in rows] == [1, 2, 1, None, None]
    assert [r.key for r in rows] == ["vni-1", "vni-2", "vni-1#2", "vni-?", "vni-?#2"]
    assert rows[0].last_seen_ago == 10.0 and rows[0].source == "eni-1"
    assert rows[1].packets_per_s is None and rows[1].source == "pol"
    assert rows[2].eni == "eni-a,eni-b"
    assert m.sessions({"sessions": {"7": {"packets": 3}}})[0].vni == 7
    for junk in (None, {}, {"sessions": None}, {"sessions": "x"}, []):
        assert m.sessions(junk) == []


def test_filter_and_sort():
    rows = m.sessions(sample_status())
    assert [r.vni for r in m.filter_sessions(rows, "AWS eni-0777")] == [77]
    assert [r.vni for r in m.filter_sessions(rows, "mirror-web")] == [9]
    assert [r.vni for r in m.filter_sessions(rows, "  ")] == [4242, 77, 9]
    assert [r.vni for r in m.sort_sessions(rows, "packets", True)] == [9, 4242, 77]
    assert [r.vni for r in m.sort_sessions(rows, "last_seen", True)] == [4242, 77, 9]
    assert [r.vni for r in m.sort_sessions(rows, "vni", False)] == [9, 77, 4242]
    # ties (and unknowns) keep VNI order
    idle = m.sessions({"sessions": [{"vni": 3}, {"vni": 1, "bytes_per_s": 0}, {"vni": 2}]})
    assert [r.vni for r in m.sort_sessions(idle, "bytes_per_s", True)] == [1, 2, 3]


def test_processes_are_read_tolerantly_sorted_and_filtered():
    from statusd import sample_ebpf_status

    doc = sample_ebpf_status()
    assert m.is_ebpf(doc) and not m.is_ebpf(sample_status())
    rows = m.processes(doc)
    assert [r.pid for r in rows] == [4100, 4188, 977, 5012]
    assert rows[0].where == "shop/api-7d9f8c6b5-x2kq4" and rows[2].where is None
    assert rows[0].bytes == 33_100_000 and rows[0].last_seen_ago == pytest.approx(0.2)
    assert rows[3].exited and not rows[0].exited
    assert [r.pid for r in m.filter_processes(rows, "shop envoy")] == [4188]
    assert [r.pid for r in m.filter_processes(rows, "python")] == [977]
    assert [r.pid for r in m.sort_processes(rows, "pairs", True)] == [4100, 4188, 977, 5012]
    assert [r.pid for r in m.sort_processes(rows, "pid", False)] == [977, 4100, 4188, 5012]
    assert [r.pid for r in m.sort_processes(rows, "last_seen", True)] == [4100, 4188, 977, 5012]
    junk = {"now": 10, "processes": [{"pid": 1, "pairs": "many", "last_seen": None},
                                     {"pid": 1}, "junk", {"pid": True, "comm": 5}]}
    got = m.processes(junk)
    assert [r.key for r in got] == ["pid-1", "pid-1#2", "pid-?"]
    assert got[0].pairs is None and got[0].bytes is None and got[2].comm == "5"
    for bad in (None, {}, {"processes": None}, {"processes": {"1": {}}}):
        assert m.processes(bad) == []


def test_drops_largest_first_without_zeros():
    assert m.drops(sample_status()) == [("ignored_port", 345), ("filter_cloud_metadata", 12)]
    assert m.drops({"drops": "x"}) == [] and m.drops(None) == []
    assert m.drop_label("evicted_buffer_limit") == "evict: buffer limit"
    assert m.drop_label("something_new") == "something new"


def test_rates_come_from_the_document_or_from_totals():
    doc = sample_status()
    assert m.rates(doc) == m.Sample(1000.0, 800000.0, 40.0)
    older = sample_status(rates={})
    newer = sample_status(rates={}, now=NOW + 2)
    newer["totals"] = dict(older["totals"], packets=older["totals"]["packets"] + 2000,
                           pairs=older["totals"]["pairs"] + 10)
    assert m.rates(newer) is None  # nothing to derive from
    assert m.rates(newer, older) == m.Sample(1000.0, 0.0, 5.0)
    restarted = sample_status(rates={}, now=NOW + 2, started_at=NOW + 1)
    assert m.rates(restarted, older) is None  # counters of another process


def test_state_without_history_samples_per_poll_backs_off_and_restarts():
    """An appliance whose /status has no history: one point per poll, bounded."""
    st = ApplianceState("http://x", poll_samples=3)
    assert st.connecting and not st.reachable
    for i in range(5):
        st.record_ok(sample_status(rates={"packets_per_s": float(i), "bytes_per_s": 0.0,
                                          "pairs_per_s": 0.0}, history=None), now=float(i))
    assert st.plots.per_poll and st.plots.held() == 3
    assert st.series("packets_per_s") == [2.0, 3.0, 4.0]  # bounded
    assert st.reachable and st.name == "ip-10-0-1-5" and st.fetches == 5
    st.record_ok(sample_status(started_at=NOW, history=None), now=6.0)  # a restart
    assert st.series("packets_per_s") == [0.0, 0.0, 1000.0]  # older rates were cleared
    delays = []
    for _ in range(8):
        st.record_error("connection refused", now=7.0)
        delays.append(st.retry_delay(1.0, 30.0))
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert not st.reachable and st.status is not None  # the last figures are kept
    assert st.problem == "unreachable"
    st.record_ok(sample_status(history=None), now=8.0)
    assert st.retry_delay(1.0, 30.0) == 1.0 and st.problem is None
    st.record_error("its JSON has no schema", now=9.0, kind="not an appliance")
    assert st.problem == "not an appliance" and not st.reachable


def hist(end: int, totals: list[float], **sessions: list[float]) -> m.History:
    """A History with the same series for the three metrics."""
    return m.History(end=end, n=len(totals),
                     totals={k: list(totals) for k in m.METRICS},
                     sessions={vni: {k: list(v) for k in m.METRICS}
                               for vni, v in sessions.items()})


def test_plot_series_merge_whole_then_increments():
    p = PlotSeries(5)
    assert p.wanted(0.0, 0.0) == 5  # the first read asks for the whole window
    p.merge(hist(100, [1, 2, 3], s7=[0, 0, 9]), whole=True)
    assert p.end == 100 and p.held() == 3
    assert p.get("packets_per_s") == [0, 0, 1, 2, 3]  # padded in front
    assert p.get("bytes_per_s", "s7") == [0, 0, 0, 0, 9]
    assert p.get("pairs_per_s", "unknown") == [0, 0, 0, 0, 0]
    # a later read repeats the seconds already held: only the new ones are taken
    p.merge(hist(102, [3, 4, 5], s8=[0, 6, 7]), whole=False)
    assert p.end == 102 and p.get("packets_per_s") == [1, 2, 3, 4, 5]
    assert p.get("packets_per_s", "s7") == [0, 0, 9, 0, 0]  # absent: no traffic
    assert p.get("packets_per_s", "s8") == [0, 0, 0, 6, 7]
    assert p.wanted(1.2, 1.5) == 5  # elapsed + lag + margin, at most the window
    assert p.wanted(0.2, 0.5) == 3
    # nothing new, then a read that does not reach back: kept, and the next read is whole
    p.merge(hist(102, [5]), whole=False)
    p.merge(hist(110, [1, 1]), whole=False)
    assert p.end == 102 and p.need_full and p.wanted(0.2, 0.5) == 5
    p.merge(hist(110, [8, 8, 8, 8, 8]), whole=True)
    assert p.get("packets_per_s") == [8] * 5 and not p.need_full
    assert p.scopes() == []  # sessions silent for the whole window are forgotten


def test_plot_series_switches_between_history_and_sampling():
    p = PlotSeries(4)
    p.add_sample(m.Sample(1, 2, 3), {"4": m.Sample(5, 6, 7)})
    p.add_sample(m.Sample(2, 2, 3), {})
    assert p.per_poll and p.wanted(1, 0) is None  # the plain document, no ?history=
    assert p.get("packets_per_s") == [0, 0, 1, 2]
    assert p.get("packets_per_s", "4") == [0, 0, 5, 0]
    p.merge(hist(50, [9, 9]), whole=False)  # the appliance now serves a history
    assert not p.per_poll and p.get("packets_per_s") == [0, 0, 9, 9]


def test_history_is_read_tolerantly():
    doc = sample_status()
    h = m.history(doc)
    assert h is not None and h.n == 600 and h.end == int(NOW) - 1
    assert set(h.sessions) == {"4242", "77"}  # the idle session has no history
    assert h.totals["packets_per_s"][-1] == 1000.0
    ragged = {"history": {"step_s": 1, "end": 10,
                          "totals": {"packets_per_s": [1, 2, 3], "bytes_per_s": ["x"]},
                          "sessions": {"5": {"pairs_per_s": [1, None]}, "6": "junk"}}}
    h = m.history(ragged)
    assert h.n == 3 and h.totals["bytes_per_s"] == [0, 0, 0]
    assert h.totals["pairs_per_s"] == [0, 0, 0]
    assert h.sessions["5"]["pairs_per_s"] == [0, 1, 0] and "6" not in h.sessions
    for junk in (None, {}, {"history": None}, {"history": {"end": "x"}},
                 {"history": {"end": 5, "step_s": 60, "totals": {}}},
                 {"history": {"end": True, "step_s": 1, "totals": {}}}):
        assert m.history(junk) is None


def test_only_an_appliance_document_is_accepted():
    check_schema(sample_status())
    for doc, needle in (({}, 'no "schema": "mirror-appliance/status"'),
                        ({"status": "ok", "version": "1.2"}, "appliance's HTTP port"),
                        ({"schema": "other/thing"}, 'schema "other/thing"'),
                        (dict(sample_status(), schema_version="1"), 'schema_version "1"'),
                        (dict(sample_status(), schema_version=None), "schema_version null")):
        with pytest.raises(NotAnAppliance) as err:
            check_schema(doc)
        assert err.value.kind == "not an appliance" and needle in err.value.detail, \
            err.value.detail
        assert str(err.value).startswith("not an appliance (")
    with pytest.raises(NotAnAppliance) as err:
        check_schema(dict(sample_status(), schema_version=2))
    assert err.value.kind == "incompatible appliance"
    assert "schema version 2, this console reads version 1" in err.value.detail


def test_columns_fit_whole_by_priority():
    cols = [Column("a", "A", 4), Column("src", "source", 20, min_width=8, grow_priority=2.5),
            Column("b", "B", 6, priority=1), Column("c", "C", 6, priority=3),
            Column("d", "D", 3, priority=2)]
    def widths(room):
        return [(c.key, c.width) for c in fit(cols, room, padding=2)]
    assert widths(100) == [("a", 4), ("src", 20), ("b", 6), ("c", 6), ("d", 3)]
    assert widths(40) == [("a", 4), ("src", 19), ("b", 6), ("d", 3)]  # c left out
    assert widths(24) == [("a", 4), ("src", 8), ("b", 6)]
    assert widths(5) == []
    assert sum(c.width + 2 for c in fit(cols, 40, padding=2)) <= 40


def test_bars_start_from_zero():
    assert [t.plain for t in bars([], 4)] == ["▁▁▁▁"]
    assert [t.plain for t in bars([0, 4, 8, 0], 4)] == ["▁▄█▁"]
    assert [t.plain for t in bars([100, 100], 4)] == ["████"]  # steady: full, not noise
    assert [t.plain for t in bars([1, 0, 16, 8], 4, height=2)] == ["  █ ", "▁▁██"]
    # more values than columns: each column shows the peak it covers
    assert [t.plain for t in bars([0, 0, 0, 8, 0, 0, 0, 0], 4)] == ["▁█▁▁"]
    assert [t.plain for t in bars([0.001, 1000], 2)] == ["▁█"]  # tiny but not zero: shown
