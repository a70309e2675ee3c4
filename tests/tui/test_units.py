"""The pure parts: number formatting, URL handling, tolerant reading of /status."""

from __future__ import annotations

import pytest
from statusd import NOW, sample_status

from tui import fmt
from tui import model as m
from tui.client import base_url, display_name, status_url


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


def test_state_history_backoff_and_restart():
    st = m.ApplianceState("http://x", history_len=3)
    assert st.connecting and not st.reachable
    for i in range(5):
        st.record_ok(sample_status(rates={"packets_per_s": float(i), "bytes_per_s": 0.0,
                                          "pairs_per_s": 0.0}), now=float(i))
    assert st.series("packets_per_s") == [2.0, 3.0, 4.0]  # bounded
    assert st.reachable and st.name == "ip-10-0-1-5" and st.fetches == 5
    st.record_ok(sample_status(started_at=NOW), now=6.0)  # a restart clears the history
    assert st.series("packets_per_s") == [1000.0]
    delays = []
    for _ in range(8):
        st.record_error("connection refused", now=7.0)
        delays.append(st.retry_delay(1.0, 30.0))
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert not st.reachable and st.status is not None  # the last figures are kept
    st.record_ok(sample_status(), now=8.0)
    assert st.retry_delay(1.0, 30.0) == 1.0
