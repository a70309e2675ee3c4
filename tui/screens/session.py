"""One mirror session's details: where its traffic comes from, its figures now, on
average, at peak and in total, its share of the appliance, and its per-second plots."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Footer

from tui import fmt
from tui import model as m
from tui.screens.base import ViewScreen
from tui.state import ApplianceState, ConsoleState
from tui.widgets import RatePlots, SessionFacts, StatusBar


class SessionScreen(ViewScreen):
    BINDINGS = [Binding("escape", "back", "Back")]

    DEFAULT_CSS = """
    SessionScreen .panel {
        height: auto; border: round $primary 60%; padding: 0 1;
        border-title-color: $text; border-title-style: bold;
    }
    SessionScreen #session-plots-panel { height: 1fr; min-height: 8; }
    SessionScreen RatePlots Bars { height: 1fr; }
    SessionScreen.-stale .panel { opacity: 60%; }
    """

    def __init__(self, console_state: ConsoleState, url: str, key: str) -> None:
        super().__init__(console_state)
        self.url = url
        self.key = key  # the sessions table's row key: vni-<VNI>

    @property
    def state(self) -> ApplianceState:
        return self.console_state.states[self.url]

    def session(self) -> m.Session | None:
        return next((s for s in m.sessions(self.state.status) if s.key == self.key), None)

    def compose(self) -> ComposeResult:
        yield StatusBar(self.console_state, id="statusbar")
        with Vertical(id="session-panel", classes="panel") as p:
            p.border_title = f"Session · VNI {self.key.removeprefix('vni-')}"
            yield SessionFacts(self.console_state, self.key, id="facts")
        with Vertical(id="session-plots-panel", classes="panel") as p:
            p.border_title = f"Per second · {fmt.span(self.console_state.history_s)}"
            yield RatePlots(id="session-plots")
        yield Footer()

    def on_mount(self) -> None:
        self.update_view()

    def update_view(self) -> None:
        st = self.state
        self.set_class(not st.reachable and st.status is not None, "-stale")
        self.query_one(StatusBar).show(st)
        self.query_one(SessionFacts).show(st)
        row = self.session()
        current = None
        if row is not None and st.reachable:
            current = m.Sample(row.packets_per_s or 0.0, row.bytes_per_s or 0.0,
                               row.pairs_per_s or 0.0)
        scope = str(row.vni) if row is not None and row.vni is not None else "-"
        self.query_one(RatePlots).show(st, current, scope=scope)

    def action_back(self) -> None:
        self.app.pop_screen()
