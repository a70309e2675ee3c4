"""The console's widgets, each drawn from an :class:`~tui.state.ApplianceState` (and the
:class:`~tui.state.ConsoleState` for the pause state and the clock) handed to ``show()``.

Widgets never do I/O and never reach for the app: a screen builds them with the console
and calls ``show(state)`` whenever the state changed. Every line is cut to the widget's
width, so a narrow terminal loses the end of a line, never the meaning of a figure.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Static

from tui import fmt
from tui import model as m
from tui import render as r
from tui.render import cut, fit_line, line
from tui.series import TOTALS
from tui.state import ApplianceState, ConsoleState

# --------------------------------------------------------------------------------------
# Phrases shared by the screens
# --------------------------------------------------------------------------------------


def freshness(console_state: ConsoleState, st: ApplianceState | None,
              short: bool = False) -> Text:
    """``updated 2s ago · every 1s``, or the pause banner. ``short``: only what matters
    (the age when the figures are late, else the pace)."""
    cs = console_state
    if cs.paused:
        return Text(" ⏸ PAUSED ", style="bold black on yellow")
    every = f"every {cs.interval:g}s"
    if st is None or st.last_ok is None:
        return Text(every, style=r.DIM)
    age = cs.clock() - st.last_ok
    if short:
        late = age > 2 * cs.interval + 1
        return Text(f"updated {fmt.ago(age)}" if late else every, style=r.DIM)
    return Text(f"updated {fmt.ago(age)} · {every}", style=r.DIM)


def problem_text(console_state: ConsoleState, st: ApplianceState) -> Text:
    """``unreachable — retrying in 4s (connection refused)``, or ``not an appliance — …``."""
    out = Text(st.problem or "unreachable", style=r.BAD)
    wait = console_state.retry_in(st)
    if console_state.paused:
        out.append(" — paused", style=r.BAD)
    elif wait is not None:
        out.append(f" — retrying in {wait}s" if wait else " — retrying now", style=r.BAD)
    if st.error:
        out.append(f" ({st.error})", style="red")
    return out


def kafka_text(doc: dict | None) -> Text:
    state = m.text(m.dig(doc, "kafka", "state"))
    return Text("kafka ") + Text(r.kafka_label(state) if state != "disabled" else "disabled",
                                 style=r.kafka_style(state))


# --------------------------------------------------------------------------------------
# Widgets that render straight from an ApplianceState
# --------------------------------------------------------------------------------------


class StateView(Widget):
    """A widget drawn from ``self.state``; ``show(state)`` sets it and repaints."""

    def __init__(self, console_state: ConsoleState, *, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.console_state = console_state
        self.state: ApplianceState | None = None

    def show(self, state: ApplianceState | None) -> None:
        self.state = state
        self.refresh()

    def render(self) -> Text:
        try:
            lines = self.lines(self.content_region.width or self.size.width)
        except Exception as exc:  # a malformed figure must not take the console down
            lines = [Text(f"cannot display: {exc.__class__.__name__}: {exc}", style=r.BAD)]
        return Text("\n").join(lines)

    def lines(self, width: int) -> list[Text]:  # pragma: no cover - abstract
        raise NotImplementedError


class StatusBar(StateView):
    """Two lines: who/what/how long and the Kafka state; then the headline figures."""

    DEFAULT_CSS = "StatusBar { height: 2; padding: 0 1; background: $boost; }"

    def lines(self, width: int) -> list[Text]:
        console_state, st = self.console_state, self.state
        if st is None:
            return [Text(""), Text("")]
        doc = st.status
        right, short = freshness(console_state, st), freshness(console_state, st, short=True)
        if st.connecting:
            return [fit_line(Text(f"… connecting to {st.url}", style="bold"), right, width,
                             short),
                    Text("waiting for the first /status answer", style=r.DIM)]
        if not st.reachable:
            head = Text("✖ ", style=r.BAD) + Text(st.name, style="bold red") + Text("  ")
            first = fit_line(head + problem_text(console_state, st), right, width, short)
            if doc is None:
                return [first, Text(f"{st.url}: no data yet", style=r.DIM)]
            ago = fmt.ago(console_state.clock() - st.last_ok) if st.last_ok is not None else "-"
            return [first, cut(Text(f"figures below are from {ago}, the last successful read",
                                    style="yellow"), width)]
        d = m.dig
        left = line(
            Text("● ", style=r.OK) + Text(st.name, style="bold"),
            Text(str(d(doc, "mode", default="?")), style="bold cyan"),
            kafka_text(doc),
            f"up {fmt.duration(d(doc, 'uptime_s'))}",
            f"{fmt.count(d(doc, 'workers'))} workers",
            Text(f"v{d(doc, 'version', default='?')}", style=r.DIM),
        )
        rates = m.rates(doc)
        t = d(doc, "totals", default={})
        errs = (("malformed", "malformed"), ("gaps", "gaps"), ("orphan_responses", "orphans"),
                ("decode_errors", "decode errors"))
        second = line(
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
        return [fit_line(left, right, width, short), cut(second, width)]


class MemoryView(StateView):
    """RSS, reassembly buffer and connections against their limits; then per worker."""

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
            full = line(Text(f"w{wid}", style="bold"), f"{fmt.size(w.get('rss_bytes')):>9}",
                        f"buf {fmt.size(w.get('buffer_bytes'))}",
                        f"{fmt.count(w.get('active_connections'))} conn",
                        Text(f"pid {w.get('pid', '?')}", style=r.DIM), sep=" ")
            if len(full) > width:
                full = line(Text(f"w{wid}", style="bold"), f"{fmt.size(w.get('rss_bytes')):>9}",
                            f"{fmt.count(w.get('active_connections'))} conn", sep=" ")
            out.append(cut(full, width))
        if len(shown) < len(workers):
            out.append(Text(f"+{len(workers) - len(shown)} more workers", style=r.DIM))
        return out


class KafkaView(StateView):
    """The sink: Kafka state, queue and spool, deliveries; then drops by reason."""

    DEFAULT_CSS = "KafkaView { height: 1fr; }"

    @staticmethod
    def _delivery(k: dict, width: int) -> Text:
        failed, lost = m.num(m.dig(k, "failed")), m.num(m.dig(k, "dropped"))
        text = Text()
        for words in (("delivered", "failed", "lost"), ("sent", "failed", "lost"),
                      ("sent", "fail", "lost"), ("✓", "✗", "lost")):
            text = line(
                f"{words[0]} {fmt.count(m.dig(k, 'delivered'))}".replace("✓ ", "✓"),
                Text(f"{words[1]} {fmt.count(m.dig(k, 'failed'))}".replace("✗ ", "✗"),
                     style=r.WARN if failed else ""),
                Text(f"{words[2]} {fmt.count(m.dig(k, 'dropped'))}",
                     style=r.BAD if lost else ""), sep=" ")
            if len(text) <= width:
                return text
        return cut(text, width)

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
            cut(first, width),
            cut(line(f"queue {fmt.count(m.dig(k, 'queued'))}",
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
            out.append(cut(Text(f" {label}{' ' * pad}{value}"), width))
        if len(shown) < len(drops):
            out.append(Text(f" +{len(drops) - len(shown)} more reasons", style=r.DIM))
        return out


# (metric, label, how to show a value)
PLOTTED = (
    ("packets_per_s", "packets", lambda v: fmt.rate(v)),
    ("bytes_per_s", "bytes", fmt.bits),
    ("pairs_per_s", "pairs", lambda v: fmt.rate(v)),
)


class Bars(Widget):
    """A bar plot of a series from zero up to its peak (Textual's Sparkline scales from
    the window's minimum, which turns a steady rate into a wall of noise)."""

    DEFAULT_CSS = "Bars { height: 1; color: $primary; }"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.values: list[float] = []

    def plot(self, values: list[float]) -> None:
        self.values = values
        self.refresh()

    def render(self) -> Text:
        return Text("\n").join(r.bars(self.values, self.size.width, self.size.height))


class RatePlots(Vertical):
    """Per metric: a label with the current value, the window's average and peak (as fits),
    then the per-second history as bars. ``scope`` is the appliance's totals or one
    session's VNI."""

    DEFAULT_CSS = """
    RatePlots { height: 1fr; }
    RatePlots .plot-label { height: 1; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._shown: tuple = (None, None, TOTALS)

    def compose(self) -> ComposeResult:
        for key, _, _ in PLOTTED:
            yield Static(classes="plot-label", id=f"plot-{key}-label")
            yield Bars(id=f"plot-{key}")

    def on_resize(self) -> None:
        self.show(*self._shown)  # the labels' room changed

    def show(self, state: ApplianceState | None, current: m.Sample | None,
             scope: str = TOTALS) -> None:
        self._shown = (state, current, scope)
        width = self.size.width or 22
        for key, label, show in PLOTTED:
            series = state.series(key, scope) if state else []
            held = series[len(series) - state.plots.held():] if state else []
            now = getattr(current, key) if current is not None else None
            text = Text(f"{label:<8}", style="bold") + Text(show(now) if now is not None
                                                            else "-")
            tails = []
            if held and max(held) > 0:
                tails = [f"avg {show(sum(held) / len(held))}", f"max {show(max(held))}"]
            for n in (2, 1):  # both when they fit, else the peak alone
                tail = "  ".join(tails[-n:])
                gap = max(2, min(4, width - len(text) - len(tail)))
                if tail and len(text) + gap + len(tail) <= width:
                    text.append(" " * gap + tail, style=r.DIM)
                    break
            self.query_one(f"#plot-{key}-label", Static).update(text)
            self.query_one(f"#plot-{key}", Bars).plot(series)


class SessionFacts(StateView):
    """One session's figures: where it comes from, now / average / peak / total per
    metric, last seen, and its share of the appliance."""

    DEFAULT_CSS = "SessionFacts { height: auto; }"

    def __init__(self, console_state: ConsoleState, key: str, **kw: Any) -> None:
        super().__init__(console_state, **kw)
        self.key = key

    def session(self) -> m.Session | None:
        doc = self.state.status if self.state else None
        return next((s for s in m.sessions(doc) if s.key == self.key), None)

    def lines(self, width: int) -> list[Text]:
        st = self.state
        row = self.session()
        if st is None or st.status is None:
            return [Text("no data yet", style=r.DIM)]
        if row is None:
            return [Text("this session is not in the appliance's /status any more "
                         "(Esc: back to the sessions)", style=r.WARN)]
        ids = []
        if row.cloud:
            ids.append(Text(row.cloud, style="bold cyan"))
        for label, value in (("policy", row.policy), ("ENI", row.eni),
                             ("instance", row.instance), ("mirror session", row.session_id)):
            if value:
                ids.append(Text(f"{label} ", style=r.DIM) + Text(value))
        out = []
        for chunk in _wrap(ids, width, max_lines=2):
            out.append(chunk)
        if not ids:
            out.append(Text("source not known (no provisioning session map)", style=r.DIM))
        stale = row.last_seen_ago is not None and row.last_seen_ago >= 60
        share = self._share(row, st.status)
        out.append(cut(line(Text("last seen ", style=r.DIM) +
                            Text(fmt.ago(row.last_seen_ago), style=r.WARN if stale else ""),
                            share), width))
        out.extend(self._table(row, st, width))
        return out

    @staticmethod
    def _share(row: m.Session, doc: dict) -> Text | None:
        rates = m.rates(doc)
        if rates is None or not rates.bytes_per_s or row.bytes_per_s is None:
            return None
        pct = fmt.percent(row.bytes_per_s, rates.bytes_per_s)
        return Text(f"{pct:.0f}% of the appliance's traffic now", style=r.DIM) \
            if pct is not None else None

    def _table(self, row: m.Session, st: ApplianceState, width: int) -> list[Text]:
        span = fmt.span(self.console_state.history_s)
        held = st.plots.held()
        cols = ["", "now", f"avg {span}", f"max {span}", "total"]
        rows = []
        for (key, label, show), total in zip(PLOTTED, (fmt.count(row.packets),
                                                        fmt.size(row.bytes),
                                                        fmt.count(row.pairs)), strict=True):
            series = st.series(key, str(row.vni))[-held:] if held else []
            rows.append([label, show(getattr(row, key)),
                         show(sum(series) / len(series)) if series else "-",
                         show(max(series)) if series else "-", total])
        widths = [max(len(c), *(len(r_[i]) for r_ in rows)) for i, c in enumerate(cols)]
        out = []
        styled: list[tuple[list[str], str]] = [(cols, r.DIM), *((r_, "") for r_ in rows)]
        for cells, style in styled:
            text = Text()
            for i, cell in enumerate(cells):
                if i:
                    text.append("  ")
                text.append(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]),
                            style="bold" if i == 0 and style == "" else style)
            out.append(cut(text, width))
        return out


def _wrap(parts: list[Text], width: int, max_lines: int) -> list[Text]:
    """Parts joined by two spaces, broken between parts onto at most ``max_lines``."""
    lines: list[Text] = []
    current = Text()
    for part in parts:
        if current and len(current) + 2 + len(part) > width:
            lines.append(current)
            current = Text()
        current = line(current, part) if current else part.copy()
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = cut(lines[-1] + Text(" …"), width)
    return [cut(t, width) for t in lines]

