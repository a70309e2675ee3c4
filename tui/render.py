"""Rich rendering shared by the console and `appliance status`: gauges, colours and the
one-shot status report. Only rich (a base dependency) is imported here."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from tui import fmt
from tui import model as m

OK, WARN, BAD, DIM = "green", "yellow", "bold red", "dim"


# --------------------------------------------------------------------------------------
# Text that fits: every line the console draws is cut to its width, never wrapped
# --------------------------------------------------------------------------------------


def line(*parts: Text | str | None, sep: str = "  ") -> Text:
    """The parts joined by ``sep``; None and empty parts are left out."""
    out = Text()
    for part in parts:
        if part is None or part == "":
            continue
        if out:
            out.append(sep)
        out.append(part if isinstance(part, Text) else Text(str(part)))
    return out


def cut(text: Text, width: int) -> Text:
    """``text`` shortened to ``width`` cells with an ellipsis."""
    text = text.copy()
    if len(text) > width:
        text.truncate(max(1, width), overflow="ellipsis")
    return text


def cut_start(text: Text, width: int) -> Text:
    """``text`` shortened to ``width`` cells by its start: ``…0.0.1:27313`` keeps the
    part that tells two similar names apart."""
    if len(text) <= width:
        return text
    width = max(1, width)
    return Text("…", style=text.style) + text[len(text) - width + 1:] if width > 1 else \
        Text("…", style=text.style)


def fit_line(left: Text, right: Text, width: int, shorter: Text | None = None) -> Text:
    """``left`` then ``right`` flush right on one line; when both do not fit, ``shorter``
    replaces ``right`` (if given), then ``left`` is cut."""
    width = max(1, width)
    if shorter is not None and len(left) + 1 + len(right) > width:
        right = shorter
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


BARS = " ▁▂▃▄▅▆▇█"


def bars(values: list[float], width: int, height: int = 1) -> list[Text]:
    """``values`` as ``height`` lines of bars ``width`` wide, from zero (a blank) to the
    peak (a full column). Each column shows the largest value it covers, so a burst is
    never averaged away; with fewer values than columns each value is widened."""
    width, height = max(1, width), max(1, height)
    n = len(values)
    if not n:
        return [Text(" " * width) for _ in range(height - 1)] + [Text("▁" * width, style=DIM)]
    columns = []
    for c in range(width):
        lo, hi = c * n // width, max(c * n // width + 1, (c + 1) * n // width)
        columns.append(max(values[lo:hi]))
    peak = max(columns)
    levels = 8 * height
    filled = [0 if v <= 0 or peak <= 0 else max(1, round(v / peak * levels)) for v in columns]
    out = []
    for row in range(height - 1, -1, -1):  # top line first
        text = Text()
        for level in filled:
            part = min(8, max(0, level - 8 * row))
            if part == 0 and row == 0:
                text.append("▁", style=DIM)  # the baseline: nothing in this column
            else:
                text.append(BARS[part])
        out.append(text)
    return out


def level_style(percent: float | None) -> str:
    if percent is None:
        return DIM
    if percent >= 90:
        return BAD
    if percent >= 70:
        return WARN
    return OK


def kafka_style(state: str | None) -> str:
    return {"up": OK, "down": BAD, "disabled": WARN}.get(state or "", DIM)


def kafka_label(state: str | None) -> str:
    if state == "disabled":
        return "disabled (JSONL/stdout sink)"
    return state or "unknown"


def bar(percent: float | None, width: int) -> Text:
    """A one-line gauge: ``██████░░░░``; grey when the limit is not known."""
    width = max(1, width)
    if percent is None:
        return Text("·" * width, style=DIM)
    filled = min(width, round(min(percent, 100.0) / 100.0 * width))
    if percent > 0 and filled == 0:
        filled = 1  # something is in use: never show an empty gauge
    out = Text("█" * filled, style=level_style(percent))
    out.append("░" * (width - filled), style="grey39")
    return out


def gauge(label: str, used: object, limit: object, width: int,
          show: Callable[[object], str] = fmt.size, label_width: int = 5) -> Text:
    """``RSS  ████░░░░ 118 MiB / 500 MiB``, shortened to fit ``width``."""
    pct = fmt.percent(used, limit)
    head = Text(f"{label:<{label_width}}", style="bold")
    if pct is None:
        tail = Text(f"{show(used)}" + ("" if limit is None else f" / {show(limit)}"))
        if m.num(limit) is None:
            tail.append("  no limit", style=DIM)
        return head + tail
    style = level_style(pct)
    candidates = (
        (Text(" ") + Text(f"{show(used)} / {show(limit)}") + Text(f" {pct:3.0f}%", style=style), 8),
        (Text(" ") + Text(f"{show(used)} / {show(limit)}"), 8),
        (Text(f" {pct:3.0f}% ", style=style) + Text(show(used)), 4),
        (Text(f" {pct:3.0f}%", style=style), 4),
    )
    for tail, min_bar in candidates:
        room = width - len(head) - len(tail)
        if room >= min_bar:
            return head + bar(pct, room) + tail
    return head + Text(f"{pct:.0f}%", style=style)


# --------------------------------------------------------------------------------------
# `appliance status`: the same figures once, for a terminal or a log
# --------------------------------------------------------------------------------------


def _kv(rows: Iterable[tuple[str, RenderableType]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold cyan", no_wrap=True)
    grid.add_column()
    for key, value in rows:
        grid.add_row(key, value)
    return grid


def status_report(doc: dict, url: str, width: int | None = None) -> Group:
    """The whole /status document as a rich renderable, for a console ``width`` wide."""
    d = m.dig
    totals, mem, kafka = d(doc, "totals", default={}), d(doc, "memory", default={}), \
        d(doc, "kafka", default={})
    name = m.text(d(doc, "hostname")) or url
    title = Text(name, style="bold")
    title.append(f"  {url}", style=DIM)

    state = m.text(d(kafka, "state"))
    head = line(
        Text(f"mode {d(doc, 'mode', default='-')}"),
        f"version {d(doc, 'version', default='-')}",
        f"up {fmt.duration(d(doc, 'uptime_s'))}",
        f"{fmt.count(d(doc, 'workers'))} workers",
    )
    kafka_line = Text(kafka_label(state), style=kafka_style(state))
    brokers, topic = m.text(d(kafka, "brokers")), m.text(d(kafka, "topic"))
    if state != "disabled" and (brokers or topic):
        kafka_line.append(f"  {brokers or '?'} → {topic or '?'}", style=DIM)
    kafka_counts = line(
        f"queued {fmt.count(d(kafka, 'queued'))}",
        f"spooled {fmt.count(d(kafka, 'spooled'))} ({fmt.size(d(kafka, 'spool_bytes'))})",
        f"delivered {fmt.count(d(kafka, 'delivered'))}",
        Text(f"failed {fmt.count(d(kafka, 'failed'))}",
             style=WARN if m.num(d(kafka, "failed")) else ""),
        Text(f"dropped {fmt.count(d(kafka, 'dropped'))}",
             style=BAD if m.num(d(kafka, "dropped")) else ""),
    )
    r = m.rates(doc)
    rates = line(
        f"{fmt.rate(r.packets_per_s if r else None, '')} pkts/s",
        fmt.bits(r.bytes_per_s if r else None),
        f"{fmt.rate(r.pairs_per_s if r else None, '')} pairs/s",
    )
    total_line = line(
        f"{fmt.count(d(totals, 'packets'))} packets", fmt.size(d(totals, "bytes")),
        f"{fmt.count(d(totals, 'pairs'))} pairs", f"pending {fmt.count(d(totals, 'pending'))}",
        f"connections {fmt.count(d(totals, 'active_connections'))} active / "
        f"{fmt.count(d(totals, 'connections'))} seen",
    )
    errors = line(*(f"{label} {fmt.count(d(totals, key))}" for key, label in (
        ("malformed", "malformed"), ("gaps", "gaps"), ("orphan_responses", "orphan responses"),
        ("decode_errors", "decode errors"))))
    rss = f"RSS {fmt.size(d(mem, 'rss_bytes'))}"
    if m.num(d(mem, "limit_bytes")):
        rss += (f" / {fmt.size(d(mem, 'limit_bytes'))}"
                f" ({fmt.pct(d(mem, 'rss_bytes'), d(mem, 'limit_bytes'))})")
    else:
        rss += " (no limit)"
    memory = line(
        rss,
        f"buffer {fmt.size(d(mem, 'buffer_bytes'))} / {fmt.size(d(mem, 'buffer_limit_bytes'))}"
        f" ({fmt.pct(d(mem, 'buffer_bytes'), d(mem, 'buffer_limit_bytes'))})",
        f"connections {fmt.count(d(mem, 'active_connections'))} / "
        f"{fmt.count(d(mem, 'max_connections'))}"
        f" ({fmt.pct(d(mem, 'active_connections'), d(mem, 'max_connections'))})",
    )
    drop_rows = m.drops(doc)
    drops = line(*(f"{m.drop_label(k)} {fmt.count(v)}" for k, v in drop_rows)) \
        if drop_rows else Text("none", style=DIM)

    parts: list = [title, _kv([
        ("appliance", head), ("throughput", rates), ("totals", total_line), ("errors", errors),
        ("memory", memory), ("kafka", kafka_line), ("", kafka_counts), ("drops", drops),
    ])]

    workers = m.workers(doc)
    if workers:
        wt = Table(box=box.SIMPLE_HEAD, title="workers", title_justify="left",
                   title_style="bold cyan", pad_edge=False)
        for col in ("id", "pid", "RSS", "buffer", "conns", "packets"):
            wt.add_column(col, justify="right" if col != "id" else "left", no_wrap=True)
        for w in workers:
            wt.add_row(str(w.get("id", "-")), str(w.get("pid", "-")), fmt.size(w.get("rss_bytes")),
                       fmt.size(w.get("buffer_bytes")), fmt.count(w.get("active_connections")),
                       fmt.count(w.get("packets")))
        parts.append(wt)

    if m.is_ebpf(doc):
        parts.extend(ebpf_report(doc, width))
        return Group(*parts)
    rows = m.sort_sessions(m.sessions(doc), "vni", False)
    st = Table(box=box.SIMPLE_HEAD, title=f"sessions ({len(rows)})", title_justify="left",
               title_style="bold cyan", pad_edge=False)
    wide = width is None or width >= 110  # narrow: leave out the totals, keep the source
    st.add_column("VNI", no_wrap=True)
    st.add_column("source", overflow="fold", min_width=12)
    cols = ("pkts/s", "bits/s", "pairs/s", "last seen") + (("packets", "bytes", "pairs")
                                                           if wide else ())
    for col in cols:
        st.add_column(col, justify="right", no_wrap=True)
    for row in rows:
        cells = [str(row.vni if row.vni is not None else "?"), source_text(row),
                 fmt.rate(row.packets_per_s, ""), fmt.bits(row.bytes_per_s),
                 fmt.rate(row.pairs_per_s, ""), fmt.ago(row.last_seen_ago)]
        if wide:
            cells += [fmt.count(row.packets), fmt.size(row.bytes), fmt.count(row.pairs)]
        st.add_row(*cells)
    parts.append(st if rows else Text("sessions: none seen yet", style="bold cyan"))
    return Group(*parts)


def ebpf_report(doc: dict, width: int | None) -> list[RenderableType]:
    """eBPF mode: the kernel side's counters and TLS libraries, then the processes."""
    d = m.dig
    kernel = d(doc, "ebpf", "kernel", default={})
    tls = d(doc, "ebpf", "tls", default={})
    files = tls.get("files") if isinstance(tls, dict) else None
    failures = tls.get("failures") if isinstance(tls, dict) else None
    probe_line = line(
        Text(f"ring lost {fmt.count(d(kernel, 'ring_lost'))}",
             style=WARN if m.num(d(kernel, "ring_lost")) else ""),
        f"truncated {fmt.size(d(kernel, 'truncated_bytes'))}",
        Text(f"TLS unlinked {fmt.count(d(kernel, 'tls_unlinked'))}",
             style=WARN if m.num(d(kernel, "tls_unlinked")) else ""),
        f"TLS libraries {len(files) if isinstance(files, list) else '-'}",
        Text(f"not attached {len(failures)}", style=WARN) if failures else None,
    )
    out: list[RenderableType] = [_kv([("eBPF", probe_line)])]
    rows = m.sort_processes(m.processes(doc), "pairs", True)
    t = Table(box=box.SIMPLE_HEAD, title=f"processes ({len(rows)})", title_justify="left",
              title_style="bold cyan", pad_edge=False)
    wide = width is None or width >= 110
    t.add_column("PID", no_wrap=True, justify="right")
    t.add_column("command", no_wrap=True)
    t.add_column("namespace/pod", overflow="fold", min_width=12)
    cols = ("pairs/s", "conns", "pairs") + (("bytes", "served", "TLS") if wide else ())
    for col in cols:
        t.add_column(col, justify="right", no_wrap=True)
    for row in rows:
        cells = [str(row.pid if row.pid is not None else "?"), row.comm or "-",
                 row.where or "host", fmt.rate(row.pairs_per_s, ""),
                 fmt.count(row.active_connections), fmt.count(row.pairs)]
        if wide:
            cells += [fmt.size(row.bytes), fmt.count(row.server_pairs),
                      fmt.count(row.tls_connections)]
        t.add_row(*cells)
    out.append(t if rows else Text("processes: none traced yet", style="bold cyan"))
    for f in (failures or [])[:5]:
        if isinstance(f, dict):
            out.append(Text(f"TLS library not traced: pid {f.get('pid')} {f.get('path')}: "
                            f"{f.get('reason')}", style=WARN))
    return out


def source_text(row: m.Session) -> str:
    """Where a session's traffic comes from, as much as is known."""
    bits = []
    if row.policy:
        bits.append(f"policy {row.policy}")
    for value in (row.eni, row.instance, row.session_id):
        if value:
            bits.append(value)
    return " ".join(bits) or "-"
