"""`appliance tui`: a live console for one appliance or a fleet of them.

Design
------
* One asyncio task per URL (a Textual worker) polls ``GET /status`` with an
  ``httpx.AsyncClient`` and sleeps between polls; event handlers never do I/O, they only
  flip state and wake the pollers. A dead appliance costs one failed connect per retry,
  with the retry delay doubling from the poll interval up to ``max_backoff``.
* Everything displayed is derived from :class:`tui.model.ApplianceState`, and every
  "how long ago" that is not in the document itself goes through the injected ``clock``,
  so a test with a fixed clock and ``live=False`` renders the same screen every time.
* Single URL: the appliance screen. Several URLs: the fleet screen, Enter drills down
  into one appliance, Escape comes back.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from typing import Callable, Iterable

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Input, Sparkline, Static

from tui import fmt
from tui import model as m
from tui import render as r
from tui.client import DEFAULT_TIMEOUT, StatusError, display_name, fetch_async


def _fit(left: Text, right: Text, width: int) -> Text:
    """``left`` then ``right`` flush right on one line; ``left`` is cut first."""
    width = max(1, width)
    right = right.copy()
    if len(right) >= width:
        right.truncate(width, overflow="ellipsis")
        return right
    room = width - len(right) - 1
    left = left.copy()
    if len(left) > room:
        left.truncate(room, overflow="ellipsis")
    left.append(" " * (width - len(left) - len(right)))
    return left + right


def _line(*parts: Text | str | None, sep: str = "  ") -> Text:
    out = Text()
    for part in parts:
        if part is None or part == "":
            continue
        if out:
            out.append(sep)
        out.append(part if isinstance(part, Text) else Text(part))
    return out


def _cut(text: Text, width: int) -> Text:
    text = text.copy()
    if len(text) > width:
        text.truncate(max(1, width), overflow="ellipsis")
    return text


# --------------------------------------------------------------------------------------
# Widgets that render straight from an ApplianceState
# --------------------------------------------------------------------------------------


class StateView(Widget):
    """A widget drawn from ``self.state``; ``show(state)`` sets it and repaints."""

    state: m.ApplianceState | None = None

    def show(self, state: m.ApplianceState | None) -> None:
        self.state = state
        self.refresh()

    @property
    def console_app(self) -> "ConsoleApp":
        return self.app  # type: ignore[return-value]

    def render(self) -> Text:
        try:
            lines = self.lines(self.content_region.width or self.size.width)
        except Exception as exc:  # a malformed figure must not take the console down
            lines = [Text(f"cannot display: {exc.__class__.__name__}: {exc}", style=r.BAD)]
        return Text("\n").join(lines)

    def lines(self, width: int) -> list[Text]:  # pragma: no cover - abstract
        raise NotImplementedError


def _fresh_right(app: "ConsoleApp", st: m.ApplianceState | None) -> Text:
    if app.paused:
        return Text(" ⏸ PAUSED ", style="bold black on yellow")
    if st is None or st.last_ok is None:
        return Text(f"every {app.interval:g}s", style=r.DIM)
    return Text(f"updated {fmt.ago(app.clock() - st.last_ok)} · every {app.interval:g}s",
                style=r.DIM)


def unreachable_text(app: "ConsoleApp", st: m.ApplianceState) -> Text:
    """``unreachable — retrying in 4s (connection refused)``."""
    out = Text("unreachable", style=r.BAD)
    if app.paused:
        out.append(" — paused", style=r.BAD)
    elif st.next_attempt is not None:
        wait = max(0, math.ceil(st.next_attempt - app.clock()))
        out.append(f" — retrying in {wait}s" if wait else " — retrying now", style=r.BAD)
    if st.error:
        out.append(f" ({st.error})", style="red")
    return out


class StatusBar(StateView):
    """Two lines: who/what/how long and the Kafka state; then the headline figures."""

    DEFAULT_CSS = "StatusBar { height: 2; padding: 0 1; background: $boost; }"

    def lines(self, width: int) -> list[Text]:
        app, st = self.console_app, self.state
        if st is None:
            return [Text(""), Text("")]
        doc = st.status
        right = _fresh_right(app, st)
        if st.connecting:
            return [_fit(Text(f"… connecting to {st.url}", style="bold"), right, width),
                    Text("waiting for the first /status answer", style=r.DIM)]
        if not st.reachable:
            head = Text("✖ ", style=r.BAD) + Text(st.name, style="bold red") + Text("  ")
            first = _fit(head + unreachable_text(app, st), right, width)
            if doc is None:
                return [first, Text(f"{st.url}: no data yet", style=r.DIM)]
            ago = fmt.ago(app.clock() - st.last_ok) if st.last_ok is not None else "-"
            return [first, _cut(Text(f"figures below are from {ago}, the last successful read",
                                     style="yellow"), width)]
        d = m.dig
        kafka_state = m.text(d(doc, "kafka", "state"))
        kafka = Text("kafka ") + Text(r.kafka_label(kafka_state) if kafka_state != "disabled"
                                      else "disabled", style=r.kafka_style(kafka_state))
        left = _line(
            Text("● ", style=r.OK) + Text(st.name, style="bold"),
            Text(str(d(doc, "mode", default="?")), style="bold cyan"),
            kafka,
            f"up {fmt.duration(d(doc, 'uptime_s'))}",
            f"{fmt.count(d(doc, 'workers'))} workers",
            Text(f"v{d(doc, 'version', default='?')}", style=r.DIM),
        )
        rates = m.rates(doc)
        t = d(doc, "totals", default={})
        errs = [(k, lbl) for k, lbl in (("malformed", "malformed"), ("gaps", "gaps"),
                                         ("orphan_responses", "orphans"),
                                         ("decode_errors", "decode errors"))]
        second = _line(
            Text(f"{fmt.rate(rates.packets_per_s if rates else None, '')} pkts/s", style="bold"),
            Text(fmt.bits(rates.bytes_per_s if rates else None), style="bold"),
            Text(f"{fmt.rate(rates.pairs_per_s if rates else None, '')} pairs/s", style="bold"),
            f"conns {fmt.count(d(t, 'active_connections'))} "
            f"({fmt.count(d(t, 'connections'))} seen)",
            f"pending {fmt.count(d(t, 'pending'))}",
            *(Text(f"{lbl} {fmt.count(d(t, k))}", style=r.WARN if m.num(d(t, k)) else r.DIM)
              for k, lbl in errs),
            sep=" │ " if width >= 100 else "  ",
        )
        return [_fit(left, right, width), _cut(second, width)]


class MemoryView(StateView):
    DEFAULT_CSS = "MemoryView { height: 1fr; }"

    def lines(self, width: int) -> list[Text]:
        doc = self.state.status if self.state else None
        if doc is None:
            return [Text("no data", style=r.DIM)]
        mem = m.dig(doc, "memory", default={})
        out = [
            r.gauge("RSS", m.dig(mem, "rss_bytes"), m.dig(mem, "limit_bytes"), width),
            r.gauge("buf", m.dig(mem, "buffer_bytes"), m.dig(mem, "buffer_limit_bytes"), width),
            r.gauge("conn", m.dig(mem, "active_connections"), m.dig(mem, "max_connections"),
                    width, show=fmt.count),
        ]
        workers = m.workers(doc)
        room = max(0, self.size.height - len(out))
        shown = workers if len(workers) <= room else workers[: max(0, room - 1)]
        for w in shown:
            wid = w.get("id", "?")
            full = _line(Text(f"w{wid}", style="bold"), f"{fmt.size(w.get('rss_bytes')):>9}",
                         f"buf {fmt.size(w.get('buffer_bytes'))}",
                         f"{fmt.count(w.get('active_connections'))} conn",
                         Text(f"pid {w.get('pid', '?')}", style=r.DIM), sep=" ")
            if len(full) > width:
                full = _line(Text(f"w{wid}", style="bold"), f"{fmt.size(w.get('rss_bytes')):>9}",
                             f"{fmt.count(w.get('active_connections'))} conn", sep=" ")
            out.append(_cut(full, width))
        if len(shown) < len(workers):
            out.append(Text(f"+{len(workers) - len(shown)} more workers", style=r.DIM))
        return out


class KafkaView(StateView):
    DEFAULT_CSS = "KafkaView { height: 1fr; }"

    @staticmethod
    def _delivery(k: dict, width: int) -> Text:
        failed, lost = m.num(m.dig(k, "failed")), m.num(m.dig(k, "dropped"))
        for words in (("delivered", "failed", "lost"), ("sent", "failed", "lost"),
                      ("sent", "fail", "lost"), ("✓", "✗", "lost")):
            line = _line(
                f"{words[0]} {fmt.count(m.dig(k, 'delivered'))}".replace("✓ ", "✓"),
                Text(f"{words[1]} {fmt.count(m.dig(k, 'failed'))}".replace("✗ ", "✗"),
                     style=r.WARN if failed else ""),
                Text(f"{words[2]} {fmt.count(m.dig(k, 'dropped'))}",
                     style=r.BAD if lost else ""), sep=" ")
            if len(line) <= width:
                return line
        return _cut(line, width)

    def lines(self, width: int) -> list[Text]:
        doc = self.state.status if self.state else None
        if doc is None:
            return [Text("no data", style=r.DIM)]
        k = m.dig(doc, "kafka", default={})
        state = m.text(m.dig(k, "state"))
        first = Text("● ", style=r.kafka_style(state)) + Text(
            r.kafka_label(state), style=r.kafka_style(state))
        brokers, topic = m.text(m.dig(k, "brokers")), m.text(m.dig(k, "topic"))
        if state != "disabled" and (brokers or topic):
            first.append(f" {topic or '?'} @ {brokers or '?'}", style=r.DIM)
        num = m.num
        out = [
            _cut(first, width),
            _cut(_line(f"queue {fmt.count(m.dig(k, 'queued'))}",
                       Text(f"spool {fmt.count(m.dig(k, 'spooled'))}",
                            style=r.WARN if num(m.dig(k, "spooled")) else ""),
                       Text(f"({fmt.size(m.dig(k, 'spool_bytes'))})", style=r.DIM), sep=" "),
                 width),
            self._delivery(k, width),
        ]
        drops = m.drops(doc)
        total = sum(v for _, v in drops)
        out.append(Text("drops ", style="bold") + (Text(fmt.count(total), style=r.WARN)
                                                    if total else Text("none", style=r.DIM)))
        room = max(0, self.size.height - len(out))
        shown = drops if len(drops) <= room else drops[: max(0, room - 1)]
        for reason, n in shown:
            value = fmt.count(n)
            label = m.drop_label(reason)
            pad = max(1, width - len(label) - len(value) - 1)
            out.append(_cut(Text(f" {label}{' ' * pad}{value}"), width))
        if len(shown) < len(drops):
            out.append(Text(f" +{len(drops) - len(shown)} more reasons", style=r.DIM))
        return out


THROUGHPUT = (
    ("packets_per_s", "packets", lambda v: fmt.rate(v)),
    ("bytes_per_s", "bytes", fmt.bits),
    ("pairs_per_s", "pairs", lambda v: fmt.rate(v)),
)


class ThroughputView(Vertical):
    """Per metric: a label with the current and peak value, then a Sparkline."""

    DEFAULT_CSS = """
    ThroughputView { height: 1fr; }
    ThroughputView .tp-label { height: 1; text-wrap: nowrap; text-overflow: ellipsis; }
    ThroughputView Sparkline { height: 1; }
    """

    def compose(self) -> ComposeResult:
        for key, _, _ in THROUGHPUT:
            yield Static(id=f"tp-{key}-label", classes="tp-label")
            yield Sparkline([], id=f"tp-{key}")

    def show(self, state: m.ApplianceState | None) -> None:
        width = self.size.width or 22
        for key, label, show in THROUGHPUT:
            series = state.series(key) if state else []
            now = series[-1] if series and state and state.reachable else None
            peak = max(series) if series else None
            text = Text(f"{label:<8}", style="bold") + Text(show(now) if now is not None else "-")
            if peak:
                tail = f"max {show(peak)}"
                gap = max(2, min(4, width - len(text) - len(tail)))
                if len(text) + gap + len(tail) <= width:
                    text.append(" " * gap + tail, style=r.DIM)
            self.query_one(f"#tp-{key}-label", Static).update(text)
            spark = self.query_one(f"#tp-{key}", Sparkline)
            size = state.history.maxlen if state else 0
            data = [0.0] * (size - len(series)) + series
            if data and min(data) > 0:
                data[0] = 0.0  # bars are drawn from zero, not from the window's minimum
            spark.data = data


# --------------------------------------------------------------------------------------
# Screens
# --------------------------------------------------------------------------------------


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark,enter", "dismiss", "Close")]

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 76; max-width: 100%; height: auto; max-height: 100%;
        border: thick $primary; background: $surface; padding: 0 2;
    }
    """

    def compose(self) -> ComposeResult:
        app: ConsoleApp = self.app  # type: ignore[assignment]
        keys = [
            ("q", "quit"),
            ("?", "this help (Esc closes it)"),
            ("p", "pause / resume polling; the screen freezes while paused"),
            ("r", "refresh now (also retries unreachable appliances at once)"),
            ("+ / -", "poll faster / slower"),
            ("s / S", "sessions: next sort column / reverse the order"),
            ("/", "sessions: filter (VNI, ENI, instance, session, policy); "
                  "Enter keeps it, Esc clears it"),
            ("↑ ↓ PgUp PgDn", "move in the tables"),
            ("Enter", "fleet: open the highlighted appliance"),
            ("Esc", "clear the filter; then, from an appliance, back to the fleet"),
            ("unreachable ↻4s", "no answer; the next retry is in 4s (the wait doubles, up to "
                                f"{app.max_backoff:g}s)"),
        ]
        grid = Table.grid(padding=(0, 2))
        grid.add_column(justify="right", style="bold cyan", no_wrap=True)
        grid.add_column()
        for key, what in keys:
            grid.add_row(key, what)
        text = Text()
        text.append("\nFigures come from GET /status on each appliance, polled every "
                    f"{app.interval:g}s (timeout {app.timeout:g}s). An appliance that does not "
                    "answer is shown as unreachable and retried, backing off up to "
                    f"{app.max_backoff:g}s. Rates are the appliance's own, over its last few "
                    f"seconds; the plots keep the last {fmt.span(app.history_s)}. bits/s is the "
                    "mirrored traffic's byte rate × 8.\n\n", style=r.DIM)
        text.append("Appliances: ", style="bold")
        text.append(", ".join(app.urls))
        with VerticalScroll():
            yield Static(Text("appliance console · keys", style="bold"), classes="help-title")
            yield Static(grid)
            yield Static(text)


class ViewScreen(Screen):
    """A screen that redraws itself from the app's states."""

    def update_view(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def on_screen_resume(self) -> None:
        self.update_view()


class ApplianceScreen(ViewScreen):
    AUTO_FOCUS = "#sessions"

    BINDINGS = [
        Binding("escape", "clear_filter", "Clear filter"),
        Binding("escape", "back", "Back"),
        Binding("slash", "filter", "Filter"),
        Binding("s", "sort", "Sort"),
        Binding("S", "reverse", "Reverse", show=False),
    ]

    DEFAULT_CSS = """
    ApplianceScreen #panels { height: 8; }
    ApplianceScreen.-tall #panels { height: 11; }
    ApplianceScreen.-tall ThroughputView Sparkline { height: 2; }
    ApplianceScreen .panel {
        width: 1fr; height: 100%; border: round $primary 60%; padding: 0 1;
        border-title-color: $text; border-title-style: bold;
    }
    ApplianceScreen #throughput-panel { width: 1fr; }
    ApplianceScreen #memory-panel { width: 1fr; }
    ApplianceScreen #kafka-panel { width: 1fr; }
    ApplianceScreen #filter-row { height: 1; }
    ApplianceScreen #filter-label { width: auto; padding: 0 1; color: $text-muted; }
    ApplianceScreen #filter { border: none; height: 1; padding: 0; width: 1fr; }
    ApplianceScreen #sort-label { width: auto; padding: 0 1; color: $text-muted; }
    ApplianceScreen #sessions { height: 1fr; }
    ApplianceScreen.-stale #panels, ApplianceScreen.-stale #sessions { opacity: 60%; }
    """

    def __init__(self, url: str, *, can_go_back: bool = False) -> None:
        super().__init__()
        self.url = url
        self.can_go_back = can_go_back
        self.sort_index = 0
        self.descending = m.SORT_KEYS[0][2]
        self._row_keys: list[str] = []
        self._cell_cache: dict[str, list[str]] = {}
        self._columns_for: tuple | None = None

    @property
    def console_app(self) -> "ConsoleApp":
        return self.app  # type: ignore[return-value]

    @property
    def state(self) -> m.ApplianceState:
        return self.console_app.states[self.url]

    def compose(self) -> ComposeResult:
        yield StatusBar(id="statusbar")
        with Horizontal(id="panels"):
            with Vertical(id="throughput-panel", classes="panel") as p:
                p.border_title = f"Throughput · {fmt.span(self.console_app.history_s)}"
                yield ThroughputView(id="throughput")
            with Vertical(id="memory-panel", classes="panel") as p:
                p.border_title = "Memory"
                yield MemoryView(id="memory")
            with Vertical(id="kafka-panel", classes="panel") as p:
                p.border_title = "Kafka · drops"
                yield KafkaView(id="kafka")
        with Horizontal(id="filter-row"):
            yield Static("Sessions", id="filter-label")
            yield Input(placeholder="/ filter: VNI, ENI, instance, session, policy",
                        id="filter")
            yield Static("", id="sort-label")
        yield DataTable(id="sessions", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.update_view()

    # -- drawing --------------------------------------------------------------------
    def update_view(self) -> None:
        st = self.state
        self.set_class(not st.reachable and st.status is not None, "-stale")
        self.query_one(StatusBar).show(st)
        self.query_one(ThroughputView).show(st)
        self.query_one(MemoryView).show(st)
        self.query_one(KafkaView).show(st)
        self._update_table()

    def _columns(self) -> list[tuple[str, str, int, bool]]:
        """(key, label, width, right-aligned); the sort column carries ▼/▲."""
        cols = [("vni", "VNI", 6, False), ("source", "ENI / policy", 21, False),
                ("packets_per_s", "pkts/s", 7, True), ("bytes_per_s", "bits/s", 11, True),
                ("pairs_per_s", "pairs/s", 7, True), ("last_seen", "last seen", 9, True),
                ("packets", "packets", 7, True), ("bytes", "bytes", 9, True),
                ("pairs", "pairs", 7, True), ("instance", "instance", 19, False),
                ("session_id", "session", 21, False)]
        key = m.SORT_KEYS[self.sort_index][0]
        arrow = " ▼" if self.descending else " ▲"
        return [(k, lbl + arrow if k == key else lbl, w + 2 if k == key else w, right)
                for k, lbl, w, right in cols]

    def _cells(self, row: m.Session) -> list[Text]:
        def right(value: str, style: str = "") -> Text:
            return Text(value, style=style, justify="right")

        stale = row.last_seen_ago is not None and row.last_seen_ago >= 60
        return [
            Text(str(row.vni) if row.vni is not None else "?", style="bold"),
            Text(row.source or "-", style="" if row.source else r.DIM),
            right(fmt.rate(row.packets_per_s, "")),
            right(fmt.bits(row.bytes_per_s)),
            right(fmt.rate(row.pairs_per_s, "")),
            right(fmt.ago(row.last_seen_ago), r.WARN if stale else ""),
            right(fmt.count(row.packets)),
            right(fmt.size(row.bytes)),
            right(fmt.count(row.pairs)),
            Text(row.instance or "-", style="" if row.instance else r.DIM),
            Text(row.session_id or "-", style="" if row.session_id else r.DIM),
        ]

    def visible_sessions(self, everything: list[m.Session] | None = None) -> list[m.Session]:
        query = self.query_one("#filter", Input).value
        key = m.SORT_KEYS[self.sort_index][0]
        if everything is None:
            everything = m.sessions(self.state.status)
        return m.sort_sessions(m.filter_sessions(everything, query), key, self.descending)

    def _update_table(self) -> None:
        table = self.query_one("#sessions", DataTable)
        columns = self._columns()
        signature = tuple(columns)
        everything = m.sessions(self.state.status)
        rows = self.visible_sessions(everything)
        keys = [row.key for row in rows]
        if signature != self._columns_for:
            table.clear(columns=True)
            for key, label, width, right in columns:
                table.add_column(Text(label, justify="right" if right else "left"),
                                 key=key, width=width)
            self._columns_for = signature
            self._row_keys = []
        if keys == self._row_keys:
            # same rows in the same order: touch only the cells whose text changed
            for row in rows:
                cells = self._cells(row)
                plain = [c.plain + c.style.__str__() for c in cells]
                old = self._cell_cache.get(row.key)
                for i, ((col, *_), cell) in enumerate(zip(columns, cells)):
                    if old is None or old[i] != plain[i]:
                        table.update_cell(row.key, col, cell)
                self._cell_cache[row.key] = plain
        else:
            current = None
            if table.row_count and self._row_keys:
                idx = min(table.cursor_row, len(self._row_keys) - 1)
                current = self._row_keys[idx] if idx >= 0 else None
            scroll_y = table.scroll_y
            table.clear()
            self._cell_cache = {}
            for row in rows:
                cells = self._cells(row)
                table.add_row(*cells, key=row.key)
                self._cell_cache[row.key] = [c.plain + c.style.__str__() for c in cells]
            self._row_keys = keys
            if current in keys:
                table.move_cursor(row=keys.index(current), animate=False, scroll=False)
            if scroll_y:
                self.call_after_refresh(table.scroll_to, y=scroll_y, animate=False)
        total = len(everything)
        label = m.SORT_KEYS[self.sort_index][1]
        counts = f"{len(rows)}/{total}" if len(rows) != total else f"{total}"
        self.query_one("#sort-label", Static).update(
            f"{counts} session{'s' if total != 1 else ''} · sort {label} "
            f"{'▼' if self.descending else '▲'}")

    # -- actions --------------------------------------------------------------------
    def action_sort(self) -> None:
        self.sort_index = (self.sort_index + 1) % len(m.SORT_KEYS)
        self.descending = m.SORT_KEYS[self.sort_index][2]
        self._update_table()

    def action_reverse(self) -> None:
        self.descending = not self.descending
        self._update_table()

    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_clear_filter(self) -> None:
        self.query_one("#filter", Input).value = ""
        self.query_one("#sessions", DataTable).focus()

    def action_back(self) -> None:
        self.app.pop_screen()

    def _filtering(self) -> bool:
        try:
            box = self.query_one("#filter", Input)
        except Exception:
            return False
        return bool(box.value or box.has_focus)

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        # Esc clears the filter first; once there is none, it goes back to the fleet.
        if action == "clear_filter":
            return self._filtering()
        if action == "back":
            return self.can_go_back and not self._filtering()
        return True

    @on(Input.Changed, "#filter")
    def _filter_changed(self) -> None:
        self._update_table()
        self.refresh_bindings()

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self.query_one("#sessions", DataTable).focus()

    @on(DataTable.HeaderSelected, "#sessions")
    def _header_clicked(self, event: DataTable.HeaderSelected) -> None:
        key = event.column_key.value
        for i, (sort_key, _, desc) in enumerate(m.SORT_KEYS):
            if sort_key == key:
                if i == self.sort_index:
                    self.descending = not self.descending
                else:
                    self.sort_index, self.descending = i, desc
                self._update_table()
                return


FLEET_COLUMNS = (  # most telling first: the table scrolls sideways on narrow terminals
    ("name", "appliance", 18, False), ("state", "state", 18, False),
    ("pkts", "pkts/s", 6, True), ("bits", "bits/s", 11, True), ("pairs", "pairs/s", 7, True),
    ("kafka", "kafka", 8, False), ("queue", "queue", 5, True), ("spool", "spool", 5, True),
    ("failed", "failed", 6, True), ("lost", "lost", 4, True), ("rss", "RSS", 12, True),
    ("buf", "buf", 4, True), ("conns", "conn", 4, True), ("drops", "drops", 5, True),
    ("sessions", "sess", 4, True), ("mode", "mode", 6, False), ("up", "uptime", 6, True),
    ("workers", "wrk", 3, True), ("url", "url", 28, False),
)


class FleetScreen(ViewScreen):
    AUTO_FOCUS = "#fleet"

    BINDINGS = [Binding("enter", "open", "Open", show=True)]

    DEFAULT_CSS = """
    FleetScreen #fleet-bar { height: 2; padding: 0 1; background: $boost; }
    FleetScreen #fleet { height: 1fr; }
    FleetScreen #fleet-detail { height: 2; padding: 0 1; background: $boost; }
    """

    @property
    def console_app(self) -> "ConsoleApp":
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Static(id="fleet-bar")
        yield DataTable(id="fleet", cursor_type="row", zebra_stripes=True)
        yield Static(id="fleet-detail")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#fleet", DataTable)
        for key, label, width, right in FLEET_COLUMNS:
            table.add_column(Text(label, justify="right" if right else "left"), key=key,
                             width=width)
        for url in self.console_app.urls:
            table.add_row(*self._cells(self.console_app.states[url]), key=url)
        self.update_view()

    def _cells(self, st: m.ApplianceState) -> list[Text]:
        app = self.console_app
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
            state = Text("✖ unreachable", style=r.BAD)
            if not app.paused and st.next_attempt is not None:  # seconds to the next retry
                wait = max(0, math.ceil(st.next_attempt - app.clock()))
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

        def flagged(value, style) -> Text:
            return right(fmt.count(value), style if m.num(value) and not dim else "")

        cells = {
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
        return [cells[key] for key, *_ in FLEET_COLUMNS]

    def update_view(self) -> None:
        app = self.console_app
        table = self.query_one("#fleet", DataTable)
        for url in app.urls:
            st = app.states[url]
            for (col, *_), cell in zip(FLEET_COLUMNS, self._cells(st)):
                table.update_cell(url, col, cell)
        self._update_bar()
        self._update_detail()

    def _update_bar(self) -> None:
        app = self.console_app
        states = [app.states[u] for u in app.urls]
        up = [s for s in states if s.reachable]
        down = [s for s in states if not s.reachable and not s.connecting]
        width = self.size.width - 2 if self.size.width else 78
        counts = Text(f"fleet · {len(states)} appliances · ", style="bold")
        counts.append(f"{len(up)} up", style=r.OK)
        if down:
            counts.append(" · ")
            counts.append(f"{len(down)} unreachable", style=r.BAD)
        waiting = len(states) - len(up) - len(down)
        if waiting:
            counts.append(f" · {waiting} connecting", style=r.DIM)
        newest = max((s.last_ok for s in states if s.last_ok is not None), default=None)
        if app.paused:
            right = Text(" ⏸ PAUSED ", style="bold black on yellow")
        elif newest is None:
            right = Text(f"every {app.interval:g}s", style=r.DIM)
        else:
            right = Text(f"updated {fmt.ago(app.clock() - newest)} · every {app.interval:g}s",
                         style=r.DIM)
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
        second = _line(
            Text("total", style="bold"),
            f"{fmt.rate(sums['packets_per_s'], '')} pkts/s",
            fmt.bits(sums["bytes_per_s"]),
            f"{fmt.rate(sums['pairs_per_s'], '')} pairs/s",
            f"{fmt.count(sessions)} sessions",
            Text(f"kafka down on {kafka_down}", style=r.BAD) if kafka_down else None,
            Text(f"failed {fmt.count(failed)}", style=r.WARN) if failed else None,
            Text(f"lost {fmt.count(lost)}", style=r.BAD) if lost else None,
        )
        self.query_one("#fleet-bar", Static).update(
            Text("\n").join([_fit(counts, right, width), _cut(second, width)]))

    def _highlighted(self) -> str | None:
        table = self.query_one("#fleet", DataTable)
        if not table.row_count:
            return None
        try:
            return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:
            return None

    def _update_detail(self) -> None:
        app = self.console_app
        url = self._highlighted()
        width = self.size.width - 2 if self.size.width else 78
        if url is None:
            self.query_one("#fleet-detail", Static).update("")
            return
        st = app.states[url]
        first = Text(st.name, style="bold") + Text(f"  {st.url}", style=r.DIM)
        if st.reachable:
            k = m.text(m.dig(st.status, "kafka", "state"))
            second = _line(
                f"{m.dig(st.status, 'mode', default='?')}",
                f"v{m.dig(st.status, 'version', default='?')}",
                f"up {fmt.duration(m.dig(st.status, 'uptime_s'))}",
                Text(f"kafka {r.kafka_label(k)}", style=r.kafka_style(k)),
                Text("Enter: details", style=r.DIM))
        elif st.connecting:
            second = Text("connecting…", style=r.DIM)
        else:
            second = unreachable_text(app, st)
            if st.last_ok is not None:
                second.append(f"  last data {fmt.ago(app.clock() - st.last_ok)}", style=r.DIM)
        self.query_one("#fleet-detail", Static).update(
            Text("\n").join([_cut(first, width), _cut(second, width)]))

    @on(DataTable.RowHighlighted, "#fleet")
    def _highlight(self) -> None:
        self._update_detail()

    @on(DataTable.RowSelected, "#fleet")
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.console_app.open_appliance(event.row_key.value)

    def action_open(self) -> None:
        url = self._highlighted()
        if url:
            self.console_app.open_appliance(url)


# --------------------------------------------------------------------------------------
# The app
# --------------------------------------------------------------------------------------


class ConsoleApp(App[int]):
    """The live console. ``live=False`` (tests, snapshots) starts no timers or pollers:
    the caller drives reads with :meth:`poll_once`."""

    TITLE = "appliance console"
    ENABLE_COMMAND_PALETTE = False
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]

    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("p", "pause", "Pause"),
        Binding("r", "refresh_now", "Refresh"),
        Binding("plus,equals_sign", "faster", "Faster", show=False),
        Binding("minus", "slower", "Slower", show=False),
    ]

    CSS = """
    Screen { background: $background; }
    Footer { background: $boost; }
    """

    def __init__(self, urls: Iterable[str], *, interval: float = 1.0,
                 timeout: float = DEFAULT_TIMEOUT, history_s: float = 300.0,
                 max_backoff: float = 30.0, clock: Callable[[], float] = time.time,
                 live: bool = True) -> None:
        super().__init__()
        self.urls: list[str] = list(dict.fromkeys(urls))
        if not self.urls:
            raise ValueError("no appliance URL")
        self.interval = float(interval)
        self.timeout = float(timeout)
        self.history_s = float(history_s)
        self.max_backoff = float(max_backoff)
        self.clock = clock
        self.live = live
        self.paused = False
        samples = max(2, int(round(history_s / max(self.interval, 0.05))))
        self.states = {u: m.ApplianceState(u, history_len=samples) for u in self.urls}
        self._client = None
        self._wake: dict[str, asyncio.Event] = {}
        self._unpaused: asyncio.Event | None = None

    # -- screens --------------------------------------------------------------------
    @property
    def fleet(self) -> bool:
        return len(self.urls) > 1

    def get_default_screen(self) -> Screen:
        if self.fleet:
            return FleetScreen()
        return ApplianceScreen(self.urls[0])

    def open_appliance(self, url: str) -> None:
        if url in self.states:
            self.push_screen(ApplianceScreen(url, can_go_back=True))

    def on_mount(self) -> None:
        import httpx

        self.sub_title = ", ".join(display_name(u) for u in self.urls)
        self._client = httpx.AsyncClient(follow_redirects=True)
        self._unpaused = asyncio.Event()
        self._unpaused.set()
        if self.live:
            for url in self.urls:
                self._wake[url] = asyncio.Event()
                self.run_worker(self._poll_loop(self.states[url]), name=f"poll {url}",
                                group="poll", exit_on_error=False)
            self.set_interval(1.0, self.redraw, name="clock")

    async def on_unmount(self) -> None:
        if self._client is not None:
            try:
                await self._client.aclose()
            except Exception:
                pass

    # -- polling --------------------------------------------------------------------
    async def poll(self, st: m.ApplianceState) -> None:
        """Read one appliance once and redraw; never raises."""
        assert self._client is not None
        st.polling = True
        try:
            doc = await fetch_async(self._client, st.url, self.timeout)
        except StatusError as exc:
            reason = str(exc)
            doc = None
        except Exception as exc:  # e.g. an httpx quirk: show it, keep running
            reason = f"{exc.__class__.__name__}: {exc}"
            doc = None
        finally:
            st.polling = False
        if self.paused:
            return  # what arrives during a pause is not shown: the screen stays frozen
        if doc is not None:
            st.record_ok(doc, self.clock())
        else:
            st.record_error(reason, self.clock())
        st.next_attempt = self.clock() + st.retry_delay(self.interval, self.max_backoff)
        self.redraw()

    async def poll_once(self) -> None:
        """Read every appliance once, concurrently (tests and `r` without pollers)."""
        await asyncio.gather(*(self.poll(self.states[u]) for u in self.urls))

    async def _poll_loop(self, st: m.ApplianceState) -> None:
        assert self._unpaused is not None
        wake = self._wake[st.url]
        while True:
            await self._unpaused.wait()
            wake.clear()
            try:
                await self.poll(st)
            except Exception as exc:  # a bug here must not stop this appliance's polling
                st.record_error(f"internal error: {exc.__class__.__name__}: {exc}", self.clock())
            delay = st.retry_delay(self.interval, self.max_backoff)
            try:
                await asyncio.wait_for(wake.wait(), timeout=delay)
            except asyncio.TimeoutError:
                pass

    def redraw(self) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, ViewScreen) and screen.is_mounted:
                try:
                    screen.update_view()
                except Exception as exc:  # drawing must never stop the console
                    self.log.error(f"redraw failed: {exc!r}")

    # -- actions --------------------------------------------------------------------
    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_pause(self) -> None:
        self.paused = not self.paused
        if self._unpaused is not None:
            if self.paused:
                self._unpaused.clear()
            else:
                self._unpaused.set()
                self._wake_all()
        self.redraw()

    def action_refresh_now(self) -> None:
        if self.paused:
            self.action_pause()
            return
        if self.live:
            self._wake_all()
        else:
            self.run_worker(self.poll_once(), group="poll", exit_on_error=False)

    def _wake_all(self) -> None:
        for event in self._wake.values():
            event.set()

    def _set_interval(self, value: float) -> None:
        self.interval = min(60.0, max(0.2, round(value, 2)))
        samples = max(2, int(round(self.history_s / self.interval)))
        for st in self.states.values():
            # keep the plots spanning the same minutes at the new pace
            st.history = deque(st.history, maxlen=samples)
            if st.last_attempt is not None:
                st.next_attempt = st.last_attempt + st.retry_delay(self.interval,
                                                                   self.max_backoff)
        self._wake_all()
        self.notify(f"polling every {self.interval:g}s", timeout=2)
        self.redraw()

    def action_faster(self) -> None:
        self._set_interval(self.interval / 2)

    def action_slower(self) -> None:
        self._set_interval(self.interval * 2)
