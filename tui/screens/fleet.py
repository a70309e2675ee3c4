"""The fleet: one line per appliance with its state, rates, Kafka, spool, failures, memory
in % of its limits, sessions and uptime; fleet totals on top, the highlighted appliance's
details (or what is wrong with it) at the bottom. Enter opens an appliance."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.events import Resize
from textual.widgets import DataTable, Footer, Static

from tui import fmt
from tui import model as m
from tui import render as r
from tui.columns import Column, fit
from tui.render import cut, fit_line, line
from tui.screens.appliance import ApplianceScreen
from tui.screens.base import ViewScreen, fit_cells, highlighted_key, table_room
from tui.state import ApplianceState
from tui.widgets import freshness, problem_text

# Most telling first; what does not fit whole is left out (Enter shows everything).
FLEET_COLUMNS = (
    Column("name", "appliance", 18, min_width=12, grow_priority=3.5),
    Column("state", "state", 22),
    Column("pkts", "pkts/s", 6, right=True, priority=1),
    Column("bits", "bits/s", 11, right=True, priority=1),
    Column("pairs", "pairs/s", 7, right=True, priority=1),
    Column("kafka", "kafka", 8, priority=2),
    Column("queue", "queue", 5, right=True, priority=4),
    Column("spool", "spool", 5, right=True, priority=3),
    Column("failed", "failed", 6, right=True, priority=2),
    Column("lost", "lost", 4, right=True, priority=2),
    Column("rss", "RSS", 12, right=True, priority=3),
    Column("buf", "buf", 4, right=True, priority=4),
    Column("conns", "conn", 4, right=True, priority=4),
    Column("drops", "drops", 5, right=True, priority=4),
    Column("sessions", "sess", 4, right=True, priority=5),
    Column("mode", "mode", 6, priority=5),
    Column("up", "uptime", 6, right=True, priority=5),
    Column("workers", "wrk", 3, right=True, priority=6),
    Column("url", "url", 28, priority=7),
)

# what is wrong, in the state column's 22 cells (with "✖ " and " ↻30s")
SHORT = {"incompatible appliance": "incompatible"}


class FleetTable(DataTable):
    """The fleet table; Enter (or a click) on a row opens that appliance."""

    BINDINGS = [Binding("enter", "select_cursor", "Open")]


class FleetScreen(ViewScreen):
    AUTO_FOCUS = "#fleet"

    DEFAULT_CSS = """
    FleetScreen #fleet-bar { height: 2; padding: 0 1; background: $boost; }
    FleetScreen #fleet { height: 1fr; scrollbar-size-vertical: 1; }
    FleetScreen #fleet-detail { height: 2; padding: 0 1; background: $boost; }
    """

    _columns_for: tuple | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="fleet-bar")
        yield FleetTable(id="fleet", cursor_type="row", zebra_stripes=True)
        yield Static(id="fleet-detail")
        yield Footer()

    def on_mount(self) -> None:
        self.update_view()

    def on_resize(self, event: Resize) -> None:
        self.call_after_refresh(self.update_view)

    def _cells(self, st: ApplianceState) -> dict[str, Text]:
        c = self.console_state
        doc = st.status
        d = m.dig
        dim = "" if st.reachable else r.DIM

        def right(value: str, style: str = "") -> Text:
            return Text(value, style=style or dim, justify="right")

        if st.reachable:
            state = Text("● up", style=r.OK)
        elif st.connecting:
            state = Text("… connecting", style=r.DIM)
        else:
            state = Text(f"✖ {SHORT.get(st.problem or '', st.problem)}", style=r.BAD)
            wait = c.retry_in(st)
            if wait is not None:  # seconds to the next retry
                state.append(f" ↻{wait}s", style="red")
        rates = m.rates(doc) if doc else None
        mem = d(doc, "memory", default={})
        rss, limit = d(mem, "rss_bytes"), d(mem, "limit_bytes")
        rss_text = fmt.size(rss) + (f" {fmt.pct(rss, limit):>4}" if m.num(limit) else "")
        buf_pct = fmt.percent(d(mem, "buffer_bytes"), d(mem, "buffer_limit_bytes"))
        conn_pct = fmt.percent(d(mem, "active_connections"), d(mem, "max_connections"))
        rss_pct = fmt.percent(rss, limit)
        k = d(doc, "kafka", default={})
        kstate = m.text(d(k, "state"))
        sessions = d(doc, "sessions", default=[])
        total_drops = sum(v for _, v in m.drops(doc)) if doc else None

        def flagged(value: object, style: str) -> Text:
            return right(fmt.count(value), style if m.num(value) and not dim else "")

        return {
            "name": Text(st.name, style="bold" if st.reachable else ("red" if st.error
                                                                     else r.DIM)),
            "state": state,
            "pkts": right(fmt.rate(rates.packets_per_s, "") if rates else "-"),
            "bits": right(fmt.bits(rates.bytes_per_s) if rates else "-"),
            "pairs": right(fmt.rate(rates.pairs_per_s, "") if rates else "-"),
            "kafka": Text(kstate or "-", style=dim or r.kafka_style(kstate)),
            "queue": right(fmt.count(d(k, "queued"))),
            "spool": flagged(d(k, "spooled"), r.WARN),
            "failed": flagged(d(k, "failed"), r.WARN),
            "lost": flagged(d(k, "dropped"), r.BAD),
            "rss": right(rss_text, r.level_style(rss_pct) if rss_pct is not None and not dim
                         else ""),
            "buf": right(fmt.pct(d(mem, "buffer_bytes"), d(mem, "buffer_limit_bytes")),
                         r.level_style(buf_pct) if buf_pct is not None and not dim else ""),
            "conns": right(fmt.pct(d(mem, "active_connections"), d(mem, "max_connections")),
                           r.level_style(conn_pct) if conn_pct is not None and not dim else ""),
            "drops": flagged(total_drops, r.WARN),
            "sessions": right(str(len(sessions)) if doc and isinstance(sessions, (list, dict))
                              else "-"),
            "mode": Text(str(d(doc, "mode", default="-")), style=dim or "cyan"),
            "up": right(fmt.duration(d(doc, "uptime_s"))),
            "workers": right(fmt.count(d(doc, "workers"))),
            "url": Text(st.url, style=r.DIM),
        }

    def update_view(self) -> None:
        c = self.console_state
        table = self.query_one("#fleet", DataTable)
        columns = fit(list(FLEET_COLUMNS), table_room(table, self.size.width or 80))
        if tuple(columns) != self._columns_for:
            cursor = table.cursor_row if table.row_count else 0
            table.clear(columns=True)
            for col in columns:
                table.add_column(Text(col.label, justify="right" if col.right else "left"),
                                 key=col.key, width=col.width)
            for url in c.urls:
                cells = fit_cells(self._cells(c.states[url]), columns, keep_end=("name", "url"))
                table.add_row(*(cells[col.key] for col in columns), key=url)
            table.move_cursor(row=min(cursor, len(c.urls) - 1), animate=False)
            self._columns_for = tuple(columns)
        else:
            for url in c.urls:
                cells = fit_cells(self._cells(c.states[url]), columns, keep_end=("name", "url"))
                for col in columns:
                    table.update_cell(url, col.key, cells[col.key])
        self._update_bar()
        self._update_detail()

    def _update_bar(self) -> None:
        c = self.console_state
        states = [c.states[u] for u in c.urls]
        up = [s for s in states if s.reachable]
        problems: dict[str, int] = {}
        for s in states:
            if s.problem:
                problems[s.problem] = problems.get(s.problem, 0) + 1
        width = self.size.width - 2 if self.size.width else 78
        counts = Text(f"fleet · {len(states)} appliances · ", style="bold")
        counts.append(f"{len(up)} up", style=r.OK)
        for problem, n in problems.items():
            counts.append(" · ")
            counts.append(f"{n} {problem}", style=r.BAD)
        waiting = sum(1 for s in states if s.connecting)
        if waiting:
            counts.append(f" · {waiting} connecting", style=r.DIM)
        newest = max((s.last_ok for s in states if s.last_ok is not None), default=None)
        latest = next((s for s in states if s.last_ok == newest), None)
        right, short = freshness(c, latest), freshness(c, latest, short=True)
        sums = {"packets_per_s": 0.0, "bytes_per_s": 0.0, "pairs_per_s": 0.0}
        sessions = failed = lost = 0.0
        kafka_down = 0
        for s in up:
            rates = m.rates(s.status)
            if rates:
                for key in sums:
                    sums[key] += getattr(rates, key)
            rows = m.dig(s.status, "sessions", default=[])
            sessions += len(rows) if isinstance(rows, (list, dict)) else 0
            failed += m.num(m.dig(s.status, "kafka", "failed")) or 0
            lost += m.num(m.dig(s.status, "kafka", "dropped")) or 0
            kafka_down += m.dig(s.status, "kafka", "state") == "down"
        parts = (
            Text("total", style="bold"),
            f"{fmt.rate(sums['packets_per_s'], '')} pkts/s",
            fmt.bits(sums["bytes_per_s"]),
            f"{fmt.rate(sums['pairs_per_s'], '')} pairs/s",
            f"{fmt.count(sessions)} sessions",
            Text(f"kafka down on {kafka_down}", style=r.BAD) if kafka_down else None,
            Text(f"failed {fmt.count(failed)}", style=r.WARN) if failed else None,
            Text(f"lost {fmt.count(lost)}", style=r.BAD) if lost else None,
        )
        second = line(*parts)
        if len(second) > width:
            second = line(*parts, sep=" ")
        self.query_one("#fleet-bar", Static).update(
            Text("\n").join([fit_line(counts, right, width, short), cut(second, width)]))

    def _update_detail(self) -> None:
        c = self.console_state
        url = highlighted_key(self.query_one("#fleet", DataTable))
        width = self.size.width - 2 if self.size.width else 78
        if url is None:
            self.query_one("#fleet-detail", Static).update("")
            return
        st = c.states[url]
        first = Text(st.name, style="bold") + Text(f"  {st.url}", style=r.DIM)
        if st.reachable:
            k = m.text(m.dig(st.status, "kafka", "state"))
            second = line(
                f"{m.dig(st.status, 'mode', default='?')}",
                f"v{m.dig(st.status, 'version', default='?')}",
                f"up {fmt.duration(m.dig(st.status, 'uptime_s'))}",
                Text(f"kafka {r.kafka_label(k)}", style=r.kafka_style(k)),
                Text("Enter: details", style=r.DIM))
        elif st.connecting:
            second = Text("connecting…", style=r.DIM)
        else:
            second = problem_text(c, st)
            if st.last_ok is not None:
                second.append(f"  last data {fmt.ago(c.clock() - st.last_ok)}", style=r.DIM)
        self.query_one("#fleet-detail", Static).update(
            Text("\n").join([cut(first, width), cut(second, width)]))

    @on(DataTable.RowHighlighted, "#fleet")
    def _highlight(self) -> None:
        self._update_detail()

    @on(DataTable.RowSelected, "#fleet")
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.open_appliance(event.row_key.value)

    def open_appliance(self, url: str | None) -> None:
        if url in self.console_state.states:
            self.app.push_screen(ApplianceScreen(self.console_state, url, can_go_back=True))
