"""The console driven by Textual's pilot against real /status endpoints on 127.0.0.1.

Every test runs the app live (its own pollers, a short interval) and changes the figures
the server answers with, then waits for the screen to show them: nothing in the HTTP path
is mocked.
"""

from __future__ import annotations

import asyncio
import copy
import socket

from statusd import (
    NOW,
    StatusServer,
    free_port,
    sample_status,
    screen_text,
    wait_for_text,
    wait_until,
)
from textual.widgets import DataTable, Input

from tui import fmt
from tui.app import ConsoleApp
from tui.screens import ApplianceScreen, FleetScreen, HelpScreen, SessionScreen

SIZE = (120, 40)
WIDE = (160, 40)  # every column of the sessions table fits


def run(coro) -> None:
    asyncio.run(coro)


def vnis(app) -> list[str]:
    table = app.screen.query_one("#sessions", DataTable)
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


def row_text(app, vni: int) -> str:
    table = app.screen.query_one("#sessions", DataTable)
    return " | ".join(str(c) for c in table.get_row(f"vni-{vni}"))


def live_app(*urls, **kw) -> ConsoleApp:
    kw.setdefault("interval", 0.1)
    kw.setdefault("max_backoff", 0.3)
    kw.setdefault("timeout", 2.0)
    return ConsoleApp(list(urls), **kw)


def test_shows_the_figures_and_follows_changes(server):
    async def scenario():
        app = live_app(server.url)
        async with app.run_test(size=WIDE) as pilot:
            text = await wait_for_text(pilot, "ip-10-0-1-5")
            # header: mode, uptime, workers, Kafka state; then the headline rates
            for needle in ("aws", "kafka up", "up 2m03s", "2 workers", "v0.1.0",
                           "1k pkts/s", "6.4 Mbit/s", "40 pairs/s", "conns 45 (890 seen)",
                           "pending 12", "malformed 3"):
                assert needle in text, needle
            # sessions: one row per VNI with the AWS identifiers and human numbers
            assert vnis(app) == ["4242", "77", "9"]
            row = row_text(app, 4242)
            for needle in ("eni-0abc", "990", "6.3 Mbit/s", "39", "now", "120k", "91.6 MiB",
                           "4.5k", "i-0def", "tms-0123456789abcdef0"):
                assert needle in row, (needle, row)
            assert "mirror-web-tier" in row_text(app, 9)
            assert "10m ago" in row_text(app, 9)
            # memory, Kafka and drops panels
            for needle in ("118 MiB / 500 MiB", "24%", "1 MiB / 400 MiB", "45 / 4.1k",
                           "w0", "57.2 MiB", "w1", "queue 10", "delivered 4.5k", "failed 0",
                           "drops 357", "ignored port", "345", "cloud metadata",
                           "akto.api.logs @ b-1.msk:9092"):
                assert needle in text, needle

            doc = sample_status()
            doc["rates"] = {"packets_per_s": 5000.0, "bytes_per_s": 150_000_000.0,
                            "pairs_per_s": 250.0}
            doc["uptime_s"] = 3 * 3600 + 4 * 60
            doc["kafka"].update(state="down", failed=9, spooled=1200, spool_bytes=3 << 20)
            doc["memory"]["buffer_bytes"] = 400 << 20  # at the limit
            doc["sessions"].append({"vni": 5, "packets": 10, "bytes": 5000, "pairs": 1,
                                    "packets_per_s": 2.0, "bytes_per_s": 20_000_000.0,
                                    "pairs_per_s": 0.5, "last_seen": NOW,
                                    "eni": "eni-0555", "instance": "i-0555"})
            server.set(doc)
            text = await wait_for_text(pilot, "5k pkts/s", "1.2 Gbit/s", "kafka down")
            for needle in ("250 pairs/s", "up 3h04m", "failed 9", "spool 1.2k", "3 MiB",
                           "400 MiB / 400 MiB", "100%"):
                assert needle in text, needle
            # the new session is the busiest in bits/s: first in the default order
            assert vnis(app) == ["5", "4242", "77", "9"]
            assert "eni-0555" in row_text(app, 5)
            assert "4 sessions" in text

    run(scenario())


def test_sort_cycles_through_columns_and_reverses(server):
    async def scenario():
        app = live_app(server.url)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: len(vnis(app)) == 3, what="three sessions")
            assert vnis(app) == ["4242", "77", "9"]  # bits/s, busiest first
            assert "sort bits/s ▼" in screen_text(app)
            await pilot.press("S")
            await pilot.pause()
            assert vnis(app) == ["9", "77", "4242"]
            assert "sort bits/s ▲" in screen_text(app)
            await pilot.press("s", "s", "s")  # pkts/s, pairs/s, packets
            await pilot.pause()
            assert "sort packets ▼" in screen_text(app)
            assert vnis(app) == ["9", "4242", "77"]  # the idle session has the largest total
            await pilot.press("s", "s", "s", "s")  # bytes, pairs, last seen, VNI
            await pilot.pause()
            assert "sort VNI ▲" in screen_text(app)
            assert vnis(app) == ["9", "77", "4242"]
            await pilot.press("s")  # and round again
            await pilot.pause()
            assert "sort bits/s ▼" in screen_text(app)
            # clicking a column header sorts by it; clicking it again reverses
            await pilot.click("#sessions", offset=(2, 0))  # the VNI header
            await pilot.pause()
            assert "sort VNI ▲" in screen_text(app)
            assert vnis(app) == ["9", "77", "4242"]
            await pilot.click("#sessions", offset=(2, 0))
            await pilot.pause()
            assert vnis(app) == ["4242", "77", "9"] and "sort VNI ▼" in screen_text(app)
            await pilot.press("s")
            await pilot.pause()
            assert "sort bits/s ▼" in screen_text(app)
            # the order holds across refreshes
            requests = server.requests
            await wait_until(pilot, lambda: server.requests > requests + 2, what="more polls")
            assert vnis(app) == ["4242", "77", "9"]

    run(scenario())


def test_filter_narrows_the_sessions(server):
    async def scenario():
        app = live_app(server.url, interval=0.3)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: len(vnis(app)) == 3, what="three sessions")
            await pilot.press("slash")
            box = app.screen.query_one("#filter", Input)
            assert box.has_focus
            await pilot.press(*"eni-0777")
            await pilot.pause()
            assert vnis(app) == ["77"]
            assert "1/3 sessions" in screen_text(app)
            # keys that are bindings elsewhere are text in the filter box
            box.value = ""
            await pilot.press("q", "p", "s")
            await pilot.pause()
            assert app.is_running and not app.console_state.paused and box.value == "qps"
            assert vnis(app) == []
            box.value = ""
            await pilot.press(*"gcp")
            await pilot.pause()
            assert vnis(app) == ["9"]  # matched on the cloud
            box.value = ""
            await pilot.press(*"AWS i-0def")  # several words, case-insensitive: all must match
            await pilot.pause()
            assert vnis(app) == ["4242"]
            # the filter survives refreshes
            requests = server.requests
            await wait_until(pilot, lambda: server.requests > requests + 2, what="more polls")
            assert vnis(app) == ["4242"]
            await pilot.press("enter")  # keep the filter, back to the table
            assert app.screen.query_one("#sessions", DataTable).has_focus
            assert vnis(app) == ["4242"]
            await pilot.press("escape")  # Esc clears it
            await pilot.pause()
            assert box.value == ""
            assert vnis(app) == ["4242", "77", "9"]
            assert app.is_running

    run(scenario())


def test_pause_stops_updates_and_resume_catches_up(server):
    async def scenario():
        app = live_app(server.url)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for_text(pilot, "1k pkts/s")
            await pilot.press("p")
            await pilot.pause()
            assert "PAUSED" in screen_text(app)
            st = app.console_state.states[server.url]
            # a poll already in flight lands, and is ignored
            await wait_until(pilot, lambda: not st.polling, what="no poll in flight")
            requests = server.requests
            fetches = app.console_state.states[server.url].fetches
            doc = sample_status()
            doc["rates"]["packets_per_s"] = 7777.0
            server.set(doc)
            await pilot.pause(0.8)  # eight poll intervals
            assert server.requests == requests, "no polling while paused"
            assert app.console_state.states[server.url].fetches == fetches
            text = screen_text(app)
            assert "1k pkts/s" in text and "7.8k" not in text
            await pilot.press("p")
            text = await wait_for_text(pilot, "7.8k pkts/s")
            assert "PAUSED" not in text

    run(scenario())


def test_refresh_now_does_not_wait_for_the_interval(server):
    async def scenario():
        app = live_app(server.url, interval=30.0)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for_text(pilot, "1k pkts/s", "every 30s")
            doc = sample_status()
            doc["rates"]["packets_per_s"] = 4200.0
            server.set(doc)
            await pilot.press("r")
            await wait_for_text(pilot, "4.2k pkts/s", timeout=3)

    run(scenario())


def test_unreachable_is_shown_retried_and_recovers():
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    async def scenario():
        app = live_app(url)
        async with app.run_test(size=SIZE) as pilot:
            text = await wait_for_text(pilot, "unreachable", "connection refused")
            assert "retrying in" in text or "retrying now" in text
            assert f"127.0.0.1:{port}" in text
            assert "no data yet" in text
            failures = app.console_state.states[url].failures
            await wait_until(pilot, lambda: app.console_state.states[url].failures >= failures + 2,
                             what="retries")
            assert app.is_running
            # keys still work while it keeps failing
            await pilot.press("question_mark")
            await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
            await pilot.press("escape")
            await pilot.pause()
            srv = StatusServer(sample_status(), port=port)
            try:
                text = await wait_for_text(pilot, "● ip-10-0-1-5", "1k pkts/s", timeout=5)
                assert "unreachable" not in text
                assert vnis(app) == ["4242", "77", "9"]
            finally:
                srv.close()

    run(scenario())


def test_appliance_going_away_keeps_its_last_figures(server):
    async def scenario():
        app = live_app(server.url)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for_text(pilot, "1k pkts/s")
            server.close()
            text = await wait_for_text(pilot, "unreachable", "figures below are from")
            assert "ip-10-0-1-5" in text  # still named after its hostname
            assert vnis(app) == ["4242", "77", "9"]  # last known sessions stay visible
            assert app.screen.has_class("-stale")
            assert app.is_running

    run(scenario())


def test_errors_and_odd_documents_never_crash(server):
    async def scenario():
        app = live_app(server.url)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for_text(pilot, "1k pkts/s")
            server.status_code = 503
            await wait_for_text(pilot, "unreachable", "HTTP 503")
            server.status_code = 200
            server.set(["not", "an", "object"])
            await wait_for_text(pilot, "not an appliance", "JSON but not an object")
            # a newer runtime of the same schema: missing sections, wrong types, extra keys
            server.set({"schema": "mirror-appliance/status", "schema_version": 1,
                        "mode": "replay", "hostname": "old-box", "uptime_s": "soon",
                        "sessions": [{"vni": "x"}, {"vni": 12, "packets_per_s": None,
                                                    "eni": ["eni-a", "eni-b"]}, 7],
                        "memory": None, "kafka": "weird", "drops": {"new_reason": 3},
                        "totals": {"packets": True}, "future": {"key": 1},
                        "history": {"step_s": 1, "end": "later", "totals": 3}})
            text = await wait_for_text(pilot, "old-box", "replay")
            assert "new reason" in text
            assert "unreachable" not in text
            assert "12" in vnis(app)
            assert "eni-a,eni-b" in row_text(app, 12)
            assert app.is_running

    run(scenario())


def test_slow_appliance_does_not_block_the_keyboard():
    """A server that accepts the connection and never answers: the poll is pending for
    its whole timeout, and keys must still be handled at once."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # never accept(): the request just hangs
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"

        async def scenario():
            app = live_app(url, timeout=2.0)
            st = app.console_state.states[url]
            async with app.run_test(size=SIZE) as pilot:
                await wait_until(pilot, lambda: st.polling, what="the first poll")
                assert "connecting" in screen_text(app)
                await pilot.press("question_mark")
                await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen),
                                 timeout=1.0, what="help while a poll hangs")
                assert st.polling and st.connecting  # the request is still pending
                await pilot.press("escape")
                await wait_for_text(pilot, "timed out after 2s", timeout=5)

        run(scenario())


def test_fleet_view_and_drill_down(server, server2):
    closed = f"http://127.0.0.1:{free_port()}"

    async def scenario():
        app = live_app(server.url, server2.url, closed)
        async with app.run_test(size=SIZE) as pilot:
            assert isinstance(app.screen, FleetScreen)
            text = await wait_for_text(pilot, "ip-10-0-1-5", "ip-10-0-2-9", "unreachable")
            assert "3 appliances" in text and "2 up" in text and "1 unreachable" in text
            assert "3k pkts/s" in text  # 1k + 2k across the fleet
            assert "kafka down on 1" in text and "failed 7" in text
            table = app.screen.query_one("#fleet", DataTable)
            assert table.row_count == 3
            row2 = " | ".join(str(c) for c in table.get_row(server2.url))
            for needle in ("ip-10-0-2-9", "● up", "2k", "1 Gbit/s", "80", "down", "7"):
                assert needle in row2, (needle, row2)
            row3 = " | ".join(str(c) for c in table.get_row(closed))
            assert "unreachable ↻" in row3  # with the seconds to the next retry

            # drill down into the second appliance
            await pilot.press("down", "enter")
            await wait_until(pilot, lambda: isinstance(app.screen, ApplianceScreen),
                             what="appliance screen")
            assert app.screen.url == server2.url
            text = await wait_for_text(pilot, "● ip-10-0-2-9", "kafka down", "2k pkts/s")
            assert "Back" in text  # Esc is offered in the footer
            doc = copy.deepcopy(server2.doc)
            doc["rates"]["packets_per_s"] = 9100.0
            server2.set(doc)
            await wait_for_text(pilot, "9.1k pkts/s")
            # Esc first clears a filter, and only then goes back
            await pilot.press("slash", "4", "2")
            await wait_for_text(pilot, "Clear filter")
            assert vnis(app) == ["4242"]
            await pilot.press("escape")
            await pilot.pause()
            assert isinstance(app.screen, ApplianceScreen) and len(vnis(app)) == 3
            await wait_for_text(pilot, "Back")
            await pilot.press("escape")
            await wait_until(pilot, lambda: isinstance(app.screen, FleetScreen), what="fleet")
            await wait_for_text(pilot, "10.1k pkts/s")  # fleet total follows too

            # and into the unreachable one
            await pilot.press("down", "enter")
            await wait_until(pilot, lambda: isinstance(app.screen, ApplianceScreen),
                             what="appliance screen")
            assert app.screen.url == closed
            await wait_for_text(pilot, "unreachable", "connection refused")

    run(scenario())


def test_help_interval_keys_and_quit(server):
    async def scenario():
        app = live_app(server.url, interval=1.0)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for_text(pilot, "ip-10-0-1-5")
            await pilot.press("question_mark")
            await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
            text = screen_text(app)
            for needle in ("pause", "refresh", "filter", "sort", "quit"):
                assert needle in text, needle
            await pilot.press("escape")
            await pilot.pause()
            assert isinstance(app.screen, ApplianceScreen)
            await pilot.press("minus")
            assert app.console_state.interval == 2.0
            await pilot.press("plus", "plus")
            assert app.console_state.interval == 0.5
            await wait_for_text(pilot, "every 0.5s")
            await pilot.press("q")
            await pilot.pause()
            assert not app.is_running
        assert app.return_code == 0

    run(scenario())


def test_fits_80x24(server):
    async def scenario():
        app = live_app(server.url)
        async with app.run_test(size=(80, 24)) as pilot:
            text = await wait_for_text(pilot, "ip-10-0-1-5", "Quit")  # the footer comes last
            lines = text.splitlines()
            assert len(lines) == 24 and all(len(line) <= 80 for line in lines)
            for needle in ("1k pkts/s", "Throughput", "Memory", "Kafka", "RSS", "queue 10",
                           "VNI", "4242", "eni-0abc", "bits/s", "Quit", "Help", "Pause"):
                assert needle in text, needle

    run(scenario())


def test_plots_are_full_from_the_first_read_then_read_incrementally(server):
    """The first read asks for the whole plot window of per-second history; later reads
    ask only for the seconds since, and append what is new."""
    async def scenario():
        app = live_app(server.url, history_s=300)
        st = app.console_state.states[server.url]
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: st.fetches >= 1, what="the first read")
            assert server.queries[0] == 300
            assert st.plots.held() == 300  # full at once: no waiting for samples
            history = server.doc["history"]["totals"]["packets_per_s"]
            assert st.series("packets_per_s") == history[-300:]
            assert st.series("packets_per_s", "4242") == \
                server.doc["history"]["sessions"]["4242"]["packets_per_s"][-300:]
            peak = fmt.rate(max(history[-300:]))
            await wait_for_text(pilot, f"max {peak}")
            await wait_until(pilot, lambda: len(server.queries) >= 4, what="more reads")
            assert all(q is not None and q <= 10 for q in server.queries[1:]), server.queries
            # three new seconds are published: they are appended, the oldest drop out
            doc = copy.deepcopy(server.doc)
            hist = doc["history"]
            hist["end"] += 3
            for block in (hist["totals"], *hist["sessions"].values()):
                for key in block:
                    block[key] = block[key][3:] + [9000.0, 9000.0, 9000.0]
            server.set(doc)
            await wait_until(pilot, lambda: st.series("packets_per_s")[-3:] == [9000.0] * 3,
                             what="the new seconds")
            assert st.series("packets_per_s")[:-3] == history[-297:]
            assert st.plots.held() == 300
            await wait_for_text(pilot, "max 9k/s")
            # a restart (another started_at) starts the plots over, with a whole window
            reads = len(server.queries)
            server.set(sample_status(started_at=NOW + 5))
            await wait_until(pilot, lambda: 300 in server.queries[reads + 1:],
                             what="a whole window after the restart")

    run(scenario())


def test_a_json_endpoint_that_is_not_an_appliance_says_so(server):
    """`{}` or another service's JSON is not an appliance with every figure `-`."""
    async def scenario():
        server.set({"status": "UP", "components": {"db": {"status": "UP"}}})
        app = live_app(server.url)
        async with app.run_test(size=SIZE) as pilot:
            text = await wait_for_text(pilot, "not an appliance")
            assert '"schema": "mirror-appliance/status"' in text
            assert "●" not in text and "no data yet" in text
            server.set(sample_status())  # the appliance comes up on that port
            text = await wait_for_text(pilot, "● ip-10-0-1-5", "1k pkts/s")
            assert "not an appliance" not in text
            server.set({})  # and something else takes the port over
            text = await wait_for_text(pilot, "not an appliance", "figures below are from")
            assert app.screen.has_class("-stale")

    run(scenario())


def test_fleet_never_shows_a_non_appliance_as_up(server, server2):
    other = StatusServer({"status": "ok", "version": "2.4.1"})
    newer = StatusServer(dict(sample_status(hostname="future"), schema_version=2))

    async def scenario():
        app = live_app(server.url, other.url, newer.url, server2.url)
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one("#fleet", DataTable)
            text = await wait_for_text(pilot, "ip-10-0-1-5", "ip-10-0-2-9",
                                       "1 not an appliance", "1 incompatible appliance")
            assert "4 appliances" in text and "2 up" in text
            row = " | ".join(str(c) for c in table.get_row(other.url))
            assert "✖ not an appliance" in row and "● up" not in row, row
            row = " | ".join(str(c) for c in table.get_row(newer.url))
            assert "✖ incompatible" in row and "● up" not in row, row
            assert "3k pkts/s" in text  # the fleet total counts the real appliances only
            await pilot.press("down")  # the details line says why
            await wait_for_text(pilot, "is this an appliance's")
            await pilot.press("down")
            await wait_for_text(pilot, "schema version 2, this console reads version 1")

    try:
        run(scenario())
    finally:
        other.close()
        newer.close()


def test_session_details(server):
    async def scenario():
        app = live_app(server.url)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: len(vnis(app)) == 3, what="three sessions")
            await wait_for_text(pilot, "Details")  # offered in the footer
            await pilot.press("down", "enter")  # the second row: VNI 77
            await wait_until(pilot, lambda: isinstance(app.screen, SessionScreen),
                             what="the session screen")
            text = await wait_for_text(pilot, "Session · VNI 77")
            for needle in ("aws", "ENI eni-0777", "instance i-0777",
                           "mirror session tms-0fedcba9876543210", "last seen 5s ago",
                           "10/s", "80 kbit/s", "1/s", "3.4k", "2.6 MiB", "60",
                           "1% of the appliance's traffic now", "Per second · 5m",
                           "● ip-10-0-1-5"):
                assert needle in text, needle
            history = server.doc["history"]["sessions"]["77"]["bytes_per_s"][-300:]
            assert f"max {fmt.bits(max(history))}" in text
            assert f"avg {fmt.bits(sum(history) / 300)}" in text
            # the figures follow the appliance
            doc = copy.deepcopy(server.doc)
            doc["sessions"][1].update(packets_per_s=4400.0, packets=99000)
            server.set(doc)
            await wait_for_text(pilot, "4.4k/s", "99k")
            # a session that is gone says so
            doc["sessions"].pop(1)
            server.set(doc)
            await wait_for_text(pilot, "not in the appliance's /status any more")
            await pilot.press("escape")
            await wait_until(pilot, lambda: isinstance(app.screen, ApplianceScreen),
                             what="back to the appliance")
            assert vnis(app) == ["4242", "9"]

    run(scenario())


def test_narrow_sessions_table_shows_whole_figures(server):
    """At 80 columns the table leaves columns out rather than cutting the one at the edge
    (`250k` must not read `2`); the session's details show the rest."""
    async def scenario():
        app = live_app(server.url)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_until(pilot, lambda: len(vnis(app)) == 3, what="three sessions")
            table = app.screen.query_one("#sessions", DataTable)
            await wait_until(pilot, lambda: table.max_scroll_x == 0, what="no sideways scroll")
            shown = [c.key.value for c in table.columns.values()]
            assert shown[:6] == ["vni", "source", "packets_per_s", "bytes_per_s", "pairs_per_s",
                                 "last_seen"], shown
            assert sum(c.get_render_width(table) for c in table.columns.values()) <= 79
            text = screen_text(app)
            row9 = next(line for line in text.splitlines() if " 9 " in line[:8])
            assert "250k" in row9  # the total pairs of VNI 9, whole
            # sorting by a column that was left out brings it in
            await pilot.press("s", "s", "s")  # packets
            await pilot.pause()
            shown = [c.key.value for c in table.columns.values()]
            assert "packets" in shown and "sort packets ▼" in screen_text(app)
            assert table.max_scroll_x == 0
            await pilot.press("enter")  # the top row: VNI 9, the largest total
            text = await wait_for_text(pilot, "Session · VNI 9")
            for needle in ("gcp", "policy mirror-web-tier", "5M", "3.7 GiB", "250k",
                           "10m ago"):
                assert needle in text, needle
            assert all(len(line) <= 80 for line in text.splitlines())

    run(scenario())


def test_console_sends_the_token(server):
    server.token = "s3cret-token"

    async def scenario():
        app = live_app(server.url, token="s3cret-token")
        async with app.run_test(size=SIZE) as pilot:
            await wait_for_text(pilot, "● ip-10-0-1-5", "1k pkts/s")
        app = live_app(server.url)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for_text(pilot, "HTTP 401", "APPLIANCE_HTTP_TOKEN")

    run(scenario())
