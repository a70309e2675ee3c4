"""One appliance: the status bar, three panels (throughput plots, memory, Kafka and drops)
and the mirror sessions table; Enter on a session opens its details.  An eBPF-mode
appliance has no mirror sessions: the table lists its traced processes instead (with
their Kubernetes namespace and pod)."""

from __future__ import annotations

from dataclasses import replace

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.events import Resize
from textual.widgets import DataTable, Footer, Input, Static

from tui import fmt
from tui import model as m
from tui import render as r
from tui.columns import Column, fit
from tui.screens.base import ViewScreen, fit_cells, highlighted_key, table_room
from tui.screens.session import SessionScreen
from tui.state import ApplianceState, ConsoleState
from tui.widgets import KafkaView, MemoryView, RatePlots, StatusBar

# The sessions table, most telling first: what does not fit whole is left out (the
# session's details screen shows everything). The column sorted on is always shown.
SESSION_COLUMNS = (
    Column("vni", "VNI", 6),
    Column("source", "ENI / policy", 21, min_width=12, grow_priority=4.5),
    Column("packets_per_s", "pkts/s", 7, right=True, priority=1),
    Column("bytes_per_s", "bits/s", 11, right=True),
    Column("pairs_per_s", "pairs/s", 7, right=True, priority=1),
    Column("last_seen", "last seen", 9, right=True, priority=2),
    Column("packets", "packets", 7, right=True, priority=4),
    Column("bytes", "bytes", 9, right=True, priority=4),
    Column("pairs", "pairs", 7, right=True, priority=3),
    Column("instance", "instance", 19, priority=5),
    Column("session_id", "session", 21, priority=6),
)


# eBPF mode: one row per traced process
PROCESS_COLUMNS = (
    Column("pid", "PID", 7),
    Column("comm", "command", 15, min_width=8, grow_priority=4),
    Column("where", "namespace/pod", 30, min_width=12, priority=0.5, grow_priority=4.5),
    Column("pairs_per_s", "pairs/s", 7, right=True, priority=1),
    Column("bytes_per_s", "bits/s", 11, right=True, priority=1.5),
    Column("active_connections", "conns", 6, right=True, priority=2),
    Column("last_seen", "last seen", 9, right=True, priority=2),
    Column("pairs", "pairs", 7, right=True, priority=3),
    Column("bytes", "bytes", 9, right=True, priority=4),
    Column("server_pairs", "served", 7, right=True, priority=5),
    Column("tls_connections", "TLS", 5, right=True, priority=5),
)

# (columns, sort keys, the rows' name, the filter's hint) of each kind of table
KINDS = {
    "sessions": (SESSION_COLUMNS, m.SORT_KEYS, "session",
                 "/ filter: VNI, ENI, instance, session, policy"),
    "processes": (PROCESS_COLUMNS, m.PROCESS_SORT_KEYS, "process",
                  "/ filter: PID, command, namespace, pod"),
}


class SessionTable(DataTable):
    """The sessions table; Enter (or a click) on a row opens the session's details.
    Process rows (eBPF mode) have no details screen: Enter is not offered there."""

    BINDINGS = [Binding("enter", "select_cursor", "Details")]

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "select_cursor" and getattr(self.screen, "kind", "") == "processes":
            return False
        return True


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
    ApplianceScreen.-tall RatePlots Bars { height: 2; }
    ApplianceScreen .panel {
        width: 1fr; height: 100%; border: round $primary 60%; padding: 0 1;
        border-title-color: $text; border-title-style: bold;
    }
    ApplianceScreen #filter-row { height: 1; }
    ApplianceScreen #filter-label { width: auto; padding: 0 1; color: $text-muted; }
    ApplianceScreen #filter { border: none; height: 1; padding: 0; width: 1fr; }
    ApplianceScreen #sort-label { width: auto; padding: 0 1; color: $text-muted; }
    ApplianceScreen #sessions { height: 1fr; scrollbar-size-vertical: 1; }
    ApplianceScreen.-stale #panels, ApplianceScreen.-stale #sessions { opacity: 60%; }
    """

    def __init__(self, console_state: ConsoleState, url: str, *, can_go_back: bool = False) -> None:
        super().__init__(console_state)
        self.url = url
        self.can_go_back = can_go_back
        self.sort_index = 0
        self.descending = m.SORT_KEYS[0][2]
        self.kind = "sessions"
        self._sorts = {kind: (0, keys[0][2]) for kind, (_, keys, _, _) in KINDS.items()}
        self._row_keys: list[str] = []
        self._cell_cache: dict[str, list[str]] = {}
        self._columns_for: tuple | None = None
        self._columns: list[Column] = []

    @property
    def state(self) -> ApplianceState:
        return self.console_state.states[self.url]

    def compose(self) -> ComposeResult:
        yield StatusBar(self.console_state, id="statusbar")
        with Horizontal(id="panels"):
            with Vertical(id="throughput-panel", classes="panel") as p:
                p.border_title = f"Throughput · {fmt.span(self.console_state.history_s)}"
                yield RatePlots(id="throughput")
            with Vertical(id="memory-panel", classes="panel") as p:
                p.border_title = "Memory"
                yield MemoryView(self.console_state, id="memory")
            with Vertical(id="kafka-panel", classes="panel") as p:
                p.border_title = "Kafka · drops"
                yield KafkaView(self.console_state, id="kafka")
        with Horizontal(id="filter-row"):
            yield Static("Sessions", id="filter-label")
            yield Input(placeholder="/ filter: VNI, ENI, instance, session, policy",
                        id="filter")
            yield Static("", id="sort-label")
        yield SessionTable(id="sessions", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.update_view()

    def on_resize(self, event: Resize) -> None:
        # the table's own size is known after this layout: fit its columns then
        self.call_after_refresh(self._update_table)

    # -- drawing --------------------------------------------------------------------
    def update_view(self) -> None:
        st = self.state
        self._set_kind("processes" if m.is_ebpf(st.status) else "sessions")
        self.set_class(not st.reachable and st.status is not None, "-stale")
        self.query_one(StatusBar).show(st)
        self.query_one(RatePlots).show(st, m.rates(st.status) if st.reachable else None)
        self.query_one(MemoryView).show(st)
        self.query_one(KafkaView).show(st)
        self._update_table()

    def _set_kind(self, kind: str) -> None:
        """Sessions or processes: each keeps its own sort."""
        if kind == self.kind:
            return
        self._sorts[self.kind] = (self.sort_index, self.descending)
        self.kind = kind
        self.sort_index, self.descending = self._sorts[kind]
        self._columns_for = None
        self.query_one("#filter-label", Static).update(kind.capitalize())
        self.query_one("#filter", Input).placeholder = KINDS[kind][3]
        self.refresh_bindings()

    @property
    def sort_keys(self) -> tuple[tuple[str, str, bool], ...]:
        return KINDS[self.kind][1]

    def _fitted_columns(self) -> list[Column]:
        """The columns that fit the table whole; the sort column carries ▼/▲."""
        key = self.sort_keys[self.sort_index][0]
        arrow = " ▼" if self.descending else " ▲"
        cols = [replace(c, label=c.label + arrow, width=c.width + 2, priority=-1)
                if c.key == key else c for c in KINDS[self.kind][0]]
        table = self.query_one("#sessions", DataTable)
        return fit(cols, table_room(table, self.size.width or 80))

    @staticmethod
    def _cells(row: m.Session) -> dict[str, Text]:
        def right(value: str, style: str = "") -> Text:
            return Text(value, style=style, justify="right")

        stale = row.last_seen_ago is not None and row.last_seen_ago >= 60
        return {
            "vni": Text(str(row.vni) if row.vni is not None else "?", style="bold"),
            "source": Text(row.source or "-", style="" if row.source else r.DIM),
            "packets_per_s": right(fmt.rate(row.packets_per_s, "")),
            "bytes_per_s": right(fmt.bits(row.bytes_per_s)),
            "pairs_per_s": right(fmt.rate(row.pairs_per_s, "")),
            "last_seen": right(fmt.ago(row.last_seen_ago), r.WARN if stale else ""),
            "packets": right(fmt.count(row.packets)),
            "bytes": right(fmt.size(row.bytes)),
            "pairs": right(fmt.count(row.pairs)),
            "instance": Text(row.instance or "-", style="" if row.instance else r.DIM),
            "session_id": Text(row.session_id or "-", style="" if row.session_id else r.DIM),
        }

    @staticmethod
    def _process_cells(row: m.Process) -> dict[str, Text]:
        def right(value: str, style: str = "") -> Text:
            return Text(value, style=style, justify="right")

        stale = row.last_seen_ago is not None and row.last_seen_ago >= 60
        where = row.where
        return {
            "pid": Text(str(row.pid) if row.pid is not None else "?",
                        style=r.DIM if row.exited else "bold"),
            "comm": Text(row.comm or "-", style=r.DIM if row.exited else ""),
            "where": Text(where or "host", style="" if where else r.DIM),
            "pairs_per_s": right(fmt.rate(row.pairs_per_s, "")),
            "bytes_per_s": right(fmt.bits(row.bytes_per_s)),
            "active_connections": right(fmt.count(row.active_connections)),
            "last_seen": right(fmt.ago(row.last_seen_ago), r.WARN if stale else ""),
            "pairs": right(fmt.count(row.pairs)),
            "bytes": right(fmt.size(row.bytes)),
            "server_pairs": right(fmt.count(row.server_pairs)),
            "tls_connections": right(fmt.count(row.tls_connections)),
        }

    def visible_sessions(self, everything: list[m.Session] | None = None) -> list[m.Session]:
        query = self.query_one("#filter", Input).value
        key = m.SORT_KEYS[self.sort_index][0] if self.kind == "sessions" else "vni"
        if everything is None:
            everything = m.sessions(self.state.status)
        return m.sort_sessions(m.filter_sessions(everything, query), key, self.descending)

    def visible_processes(self, everything: list[m.Process]) -> list[m.Process]:
        query = self.query_one("#filter", Input).value
        key = m.PROCESS_SORT_KEYS[self.sort_index][0]
        return m.sort_processes(m.filter_processes(everything, query), key, self.descending)

    def _update_table(self) -> None:
        table = self.query_one("#sessions", DataTable)
        columns = self._fitted_columns()
        signature = tuple(columns)
        everything: list
        if self.kind == "processes":
            everything = m.processes(self.state.status)
            rows: list = self.visible_processes(everything)
            cells_of = self._process_cells
        else:
            everything = m.sessions(self.state.status)
            rows = self.visible_sessions(everything)
            cells_of = self._cells  # type: ignore[assignment]
        keys = [row.key for row in rows]
        if signature != self._columns_for:
            table.clear(columns=True)
            for col in columns:
                table.add_column(Text(col.label, justify="right" if col.right else "left"),
                                 key=col.key, width=col.width)
            self._columns_for = signature
            self._columns = columns
            self._row_keys = []
        if keys == self._row_keys:
            # same rows in the same order: touch only the cells whose text changed
            for row in rows:
                cells = fit_cells(cells_of(row), columns)
                plain = [cells[c.key].plain + str(cells[c.key].style) for c in columns]
                old = self._cell_cache.get(row.key)
                for i, col in enumerate(columns):
                    if old is None or old[i] != plain[i]:
                        table.update_cell(row.key, col.key, cells[col.key])
                self._cell_cache[row.key] = plain
        else:
            current = highlighted_key(table) if self._row_keys else None
            scroll_y = table.scroll_y
            table.clear()
            self._cell_cache = {}
            for row in rows:
                cells = fit_cells(cells_of(row), columns)
                table.add_row(*(cells[c.key] for c in columns), key=row.key)
                self._cell_cache[row.key] = [cells[c.key].plain + str(cells[c.key].style)
                                             for c in columns]
            self._row_keys = keys
            if current in keys:
                table.move_cursor(row=keys.index(current), animate=False, scroll=False)
            if scroll_y:
                self.call_after_refresh(table.scroll_to, y=scroll_y, animate=False)
        total = len(everything)
        label = self.sort_keys[self.sort_index][1]
        noun = KINDS[self.kind][2]
        counts = f"{len(rows)}/{total}" if len(rows) != total else f"{total}"
        plural = noun + ("es" if noun.endswith("s") else "s") if total != 1 else noun
        self.query_one("#sort-label", Static).update(
            f"{counts} {plural} · sort {label} {'▼' if self.descending else '▲'}")

    # -- actions --------------------------------------------------------------------
    def open_session(self, key: str | None) -> None:
        if self.kind == "sessions" and key is not None and key in self._row_keys:
            self.app.push_screen(SessionScreen(self.console_state, self.url, key))

    @on(DataTable.RowSelected, "#sessions")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self.open_session(event.row_key.value)

    def action_sort(self) -> None:
        self.sort_index = (self.sort_index + 1) % len(self.sort_keys)
        self.descending = self.sort_keys[self.sort_index][2]
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
        for i, (sort_key, _, desc) in enumerate(self.sort_keys):
            if sort_key == key:
                if i == self.sort_index:
                    self.descending = not self.descending
                else:
                    self.sort_index, self.descending = i, desc
                self._update_table()
                return
