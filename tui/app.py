"""`appliance tui`: a live console for one appliance or a fleet of them.

The app wires the parts together and owns the keys that work everywhere:

* :class:`tui.state.ConsoleState` holds the settings and every appliance's state;
* :class:`tui.poller.Poller` reads ``GET /status`` in one asyncio task per URL (run here
  as Textual workers) and calls :meth:`ConsoleApp.redraw` after every read;
* the screens (:mod:`tui.screens`) draw from the state: one URL opens the appliance
  screen, several the fleet (Enter drills down into an appliance, Enter again into a
  session, Esc comes back);
* key handlers never do I/O: they flip state and wake the pollers, so a hanging
  appliance never blocks the keyboard.

``live=False`` (tests, snapshots) starts no pollers or timers: the caller reads with
:meth:`ConsoleApp.poll_once`, and with a fixed ``clock`` the screen is the same every time.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable

from textual.app import App
from textual.binding import Binding
from textual.screen import Screen

from tui.client import DEFAULT_TIMEOUT, display_name
from tui.poller import Poller
from tui.screens import ApplianceScreen, FleetScreen, HelpScreen, ViewScreen
from tui.state import ConsoleState


class ConsoleApp(App[int]):
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
                 live: bool = True, token: str | None = None) -> None:
        super().__init__()
        self.console_state = ConsoleState(urls, interval=interval, timeout=timeout,
                                          history_s=history_s, max_backoff=max_backoff,
                                          clock=clock)
        self.live = live
        self.poller = Poller(self.console_state, on_change=self.redraw, token=token)

    def get_default_screen(self) -> Screen:
        if self.console_state.fleet:
            return FleetScreen(self.console_state)
        return ApplianceScreen(self.console_state, self.console_state.urls[0])

    async def on_mount(self) -> None:
        self.sub_title = ", ".join(display_name(u) for u in self.console_state.urls)
        await self.poller.start()
        if self.live:
            for url in self.console_state.urls:
                self.run_worker(self.poller.loop(url), name=f"poll {url}", group="poll",
                                exit_on_error=False)
            self.set_interval(1.0, self.redraw, name="clock")

    async def on_unmount(self) -> None:
        await self.poller.close()

    async def poll_once(self) -> None:
        """Read every appliance once (tests and snapshots, which run no pollers)."""
        await self.poller.poll_once()

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
            self.push_screen(HelpScreen(self.console_state))

    def action_pause(self) -> None:
        self.poller.set_paused(not self.console_state.paused)
        self.redraw()

    def action_refresh_now(self) -> None:
        if self.console_state.paused:
            self.action_pause()
            return
        if self.live:
            self.poller.wake_all()
        else:
            self.run_worker(self.poller.poll_once(), group="poll", exit_on_error=False)

    def _set_interval(self, value: float) -> None:
        self.console_state.set_interval(value)
        self.poller.wake_all()
        self.notify(f"polling every {self.console_state.interval:g}s", timeout=2)
        self.redraw()

    def action_faster(self) -> None:
        self._set_interval(self.console_state.interval / 2)

    def action_slower(self) -> None:
        self._set_interval(self.console_state.interval * 2)
