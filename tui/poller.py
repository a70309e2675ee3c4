"""Polling the appliances: one asyncio task per URL reads ``GET /status`` with an
``httpx.AsyncClient`` and sleeps between reads, so a slow or dead appliance never blocks
the keyboard or the other appliances.

The app runs :meth:`Poller.loop` for each URL (as Textual workers) and calls
:meth:`wake_all` / :meth:`set_paused` from its key handlers; after every read the poller
calls ``on_change`` so the screens redraw. A dead appliance costs one failed connect per
retry, the wait doubling from the poll interval up to ``max_backoff``. No Textual here.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Callable

from tui.client import StatusError, fetch_async
from tui.state import ApplianceState, ConsoleState

if TYPE_CHECKING:
    import httpx  # imported when polling starts: `appliance --help` stays light


class Poller:
    def __init__(self, console_state: ConsoleState, on_change: Callable[[], None],
                 token: str | None = None) -> None:
        self.console_state = console_state
        self.on_change = on_change
        self.token = token  # sent as a bearer token to every appliance (APPLIANCE_HTTP_TOKEN)
        self._client: httpx.AsyncClient | None = None
        self._wake: dict[str, asyncio.Event] = {}
        self._unpaused: asyncio.Event | None = None

    async def start(self) -> None:
        """Open the HTTP client (on the running loop)."""
        import httpx

        self._client = httpx.AsyncClient(follow_redirects=True)
        self._unpaused = asyncio.Event()
        self._unpaused.set()
        self._wake = {url: asyncio.Event() for url in self.console_state.urls}

    async def close(self) -> None:
        if self._client is not None:
            try:
                await self._client.aclose()
            except Exception:
                pass
            self._client = None

    async def poll(self, st: ApplianceState) -> None:
        """Read one appliance once and report the change; never raises."""
        assert self._client is not None, "Poller.start() first"
        c = self.console_state
        asked = st.history_wanted(c.clock())
        st.polling = True
        error: StatusError | None = None
        try:
            doc = await fetch_async(self._client, st.url, c.timeout, history=asked,
                                    token=self.token)
        except StatusError as exc:
            error, doc = exc, None
        except Exception as exc:  # e.g. an httpx quirk: show it, keep running
            error, doc = StatusError(f"{exc.__class__.__name__}: {exc}"), None
        finally:
            st.polling = False
        if c.paused:
            return  # what arrives during a pause is not shown: the screen stays frozen
        if doc is not None:
            st.record_ok(doc, c.clock(), asked)
        else:
            assert error is not None
            st.record_error(error.detail, c.clock(), error.kind)
        st.next_attempt = c.clock() + st.retry_delay(c.interval, c.max_backoff)
        self.on_change()

    async def poll_once(self) -> None:
        """Read every appliance once, concurrently (tests, and `r` without loops)."""
        states = self.console_state.states
        await asyncio.gather(*(self.poll(states[u]) for u in self.console_state.urls))

    async def loop(self, url: str) -> None:
        """Poll ``url`` until cancelled."""
        assert self._unpaused is not None, "Poller.start() first"
        st = self.console_state.states[url]
        wake = self._wake[url]
        while True:
            await self._unpaused.wait()
            wake.clear()
            try:
                await self.poll(st)
            except Exception as exc:  # a bug here must not stop this appliance's polling
                st.record_error(f"internal error: {exc.__class__.__name__}: {exc}",
                                self.console_state.clock())
            delay = st.retry_delay(self.console_state.interval, self.console_state.max_backoff)
            try:
                await asyncio.wait_for(wake.wait(), timeout=delay)
            except asyncio.TimeoutError:
                pass

    def set_paused(self, paused: bool) -> None:
        self.console_state.paused = paused
        if self._unpaused is not None:
            if paused:
                self._unpaused.clear()
            else:
                self._unpaused.set()
                self.wake_all()

    def wake_all(self) -> None:
        for event in self._wake.values():
            event.set()
