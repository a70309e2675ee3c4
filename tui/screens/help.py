"""The help: every key, and where the figures come from."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tui import fmt
from tui import render as r
from tui.state import ConsoleState


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark,enter", "dismiss", "Close")]

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 76; max-width: 100%; height: auto; max-height: 100%;
        border: thick $primary; background: $surface; padding: 0 2;
    }
    """

    def __init__(self, console_state: ConsoleState) -> None:
        super().__init__()
        self.console_state = console_state

    def compose(self) -> ComposeResult:
        c = self.console_state
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
            ("Enter", "open the highlighted appliance (fleet) or session (its details)"),
            ("Esc", "clear the filter; then back: session → appliance → fleet"),
            ("unreachable ↻4s", "no answer; the next retry is in 4s (the wait doubles, up to "
                                f"{c.max_backoff:g}s)"),
            ("not an appliance", "it answered, but not with an appliance's /status (another "
                                 "service on that port?)"),
        ]
        grid = Table.grid(padding=(0, 2))
        grid.add_column(justify="right", style="bold cyan", no_wrap=True)
        grid.add_column()
        for key, what in keys:
            grid.add_row(key, what)
        text = Text()
        text.append("\nFigures come from GET /status on each appliance, polled every "
                    f"{c.interval:g}s (timeout {c.timeout:g}s). An appliance that does not "
                    "answer is shown as unreachable and retried, backing off up to "
                    f"{c.max_backoff:g}s. Rates are the appliance's own, over its last few "
                    f"seconds; the plots show its per-second history over the last "
                    f"{fmt.span(c.history_s)}, full from the first read. bits/s is the "
                    "mirrored traffic's byte rate × 8.\n\n", style=r.DIM)
        text.append("Appliances: ", style="bold")
        text.append(", ".join(c.urls))
        with VerticalScroll():
            yield Static(Text("appliance console · keys", style="bold"), classes="help-title")
            yield Static(grid)
            yield Static(text)
