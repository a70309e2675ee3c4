"""Reading an appliance's ``/status`` document tolerantly.

docs/status.md is the contract (the client has already checked its schema marker), but
within a schema version fields come and go: every accessor here ignores unknown keys,
treats a missing or mistyped figure as "not known" (``None``) and never raises.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

# Sort keys for the sessions table, in the order `s` cycles through them.
# (key, label, descending by default)
SORT_KEYS: tuple[tuple[str, str, bool], ...] = (
    ("bytes_per_s", "bits/s", True),
    ("packets_per_s", "pkts/s", True),
    ("pairs_per_s", "pairs/s", True),
    ("packets", "packets", True),
    ("bytes", "bytes", True),
    ("pairs", "pairs", True),
    ("last_seen", "last seen", True),
    ("vni", "VNI", False),
)

# The eBPF mode's processes table (sort keys in the order `s` cycles through them).
PROCESS_SORT_KEYS: tuple[tuple[str, str, bool], ...] = (
    ("pairs_per_s", "pairs/s", True),
    ("bytes_per_s", "bits/s", True),
    ("pairs", "pairs", True),
    ("bytes", "bytes", True),
    ("active_connections", "connections", True),
    ("last_seen", "last seen", True),
    ("pid", "PID", False),
)

# Short names for the drop reasons of docs/status.md; unknown reasons are shown as sent.
DROP_LABELS = {
    "filter_discovery_config": "discovery config",
    "filter_ip_host": "ip/host filter",
    "filter_cloud_metadata": "cloud metadata",
    "filter_egress": "egress filter",
    "ignored_port": "ignored port",
    "evicted_connection_limit": "evict: conn limit",
    "evicted_buffer_limit": "evict: buffer limit",
    "duplicate_client_view": "seen at both ends",
}


def num(value: object) -> float | None:
    """A finite number, or None (bools, strings, NaN and null are 'not known')."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def dig(doc: object, *keys: str, default: Any = None) -> Any:
    """doc[k1][k2]... or ``default`` when any level is missing or not a dict."""
    cur = doc
    for key in keys:
        if not isinstance(cur, dict) or key not in cur:
            return default
        cur = cur[key]
    return default if cur is None else cur


def text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value if v is not None)
    value = str(value).strip()
    return value or None


def drop_label(reason: str) -> str:
    return DROP_LABELS.get(reason, reason.replace("_", " "))


class _Sortable:
    """What session and process rows share: a sortable value per column."""

    last_seen_ago: float | None

    def sort_value(self, key: str) -> float:
        if key == "last_seen":  # most recent first when descending
            return -self.last_seen_ago if self.last_seen_ago is not None else -math.inf
        value = getattr(self, key)
        return float(value) if value is not None else -math.inf


def _ago(now: float | None, row: dict) -> float | None:
    """Seconds since the row's ``last_seen`` (None when unknown)."""
    last = num(row.get("last_seen"))
    return max(0.0, now - last) if (now is not None and last is not None and last > 0) else None


@dataclass
class Session(_Sortable):
    """One row of the sessions table."""

    vni: int | None
    packets: float | None
    bytes: float | None
    pairs: float | None
    packets_per_s: float | None
    bytes_per_s: float | None
    pairs_per_s: float | None
    last_seen_ago: float | None  # seconds before the document's "now"
    cloud: str | None
    session_id: str | None
    eni: str | None
    instance: str | None
    policy: str | None
    key: str = ""  # unique row key: vni-<VNI>, with #n for a VNI reported twice


    @property
    def source(self) -> str | None:
        """The mirror source in one phrase: the ENI on AWS, the policy on GCP."""
        return self.eni or self.policy or self.session_id

    def haystack(self) -> str:
        parts = [str(self.vni) if self.vni is not None else "", self.cloud, self.session_id,
                 self.eni, self.instance, self.policy]
        return " ".join(p for p in parts if p).lower()



def sessions(doc: dict | None) -> list[Session]:
    rows = dig(doc, "sessions", default=[])
    if isinstance(rows, dict):  # tolerate {"4242": {...}}
        rows = [dict(v, vni=v.get("vni", k)) for k, v in rows.items() if isinstance(v, dict)]
    if not isinstance(rows, list):
        return []
    now = num(dig(doc, "now"))
    out = []
    seen: dict[str, int] = {}
    for row in rows:
        if not isinstance(row, dict):
            continue
        vni = row.get("vni")
        try:
            vni = int(vni) if vni is not None and not isinstance(vni, bool) else None
        except (TypeError, ValueError):
            vni = None
        out.append(Session(
            vni=vni,
            packets=num(row.get("packets")), bytes=num(row.get("bytes")),
            pairs=num(row.get("pairs")),
            packets_per_s=num(row.get("packets_per_s")), bytes_per_s=num(row.get("bytes_per_s")),
            pairs_per_s=num(row.get("pairs_per_s")),
            last_seen_ago=_ago(now, row),
            cloud=text(row.get("cloud")), session_id=text(row.get("session_id")),
            eni=text(row.get("eni")), instance=text(row.get("instance")),
            policy=text(row.get("policy")),
        ))
        out[-1].key = _unique_key(seen, f"vni-{vni}" if vni is not None else "vni-?")
    return out


def filter_sessions(rows: list[Session], query: str) -> list[Session]:
    return _filter_rows(rows, query)


def sort_sessions(rows: list[Session], key: str, descending: bool) -> list[Session]:
    return _sort_rows(rows, key, descending, lambda r: r.vni)


def is_ebpf(doc: dict | None) -> bool:
    """An eBPF-mode appliance: per-process rows instead of mirror sessions."""
    return dig(doc, "mode") == "ebpf" or isinstance(dig(doc, "processes"), list)


@dataclass
class Process(_Sortable):
    """One row of the eBPF mode's processes table."""

    pid: int | None
    comm: str | None
    namespace: str | None
    pod: str | None
    container: str | None
    connections: float | None
    active_connections: float | None
    pairs: float | None
    server_pairs: float | None
    bytes: float | None
    tls_connections: float | None
    pairs_per_s: float | None
    bytes_per_s: float | None
    last_seen_ago: float | None
    exited: bool = False
    key: str = ""

    @property
    def where(self) -> str | None:
        """namespace/pod, or None for a process outside Kubernetes."""
        if self.pod is None:
            return None
        return f"{self.namespace}/{self.pod}" if self.namespace else self.pod

    def haystack(self) -> str:
        parts = [str(self.pid) if self.pid is not None else "", self.comm, self.namespace,
                 self.pod, self.container]
        return " ".join(p for p in parts if p).lower()



def processes(doc: dict | None) -> list[Process]:
    rows = dig(doc, "processes", default=[])
    if not isinstance(rows, list):
        return []
    now = num(dig(doc, "now"))
    out = []
    seen: dict[str, int] = {}
    for row in rows:
        if not isinstance(row, dict):
            continue
        pid = row.get("pid")
        pid = pid if isinstance(pid, int) and not isinstance(pid, bool) else None
        b_in, b_out = num(row.get("bytes_in")), num(row.get("bytes_out"))
        out.append(Process(
            pid=pid, comm=text(row.get("comm")), namespace=text(row.get("namespace")),
            pod=text(row.get("pod")), container=text(row.get("container")),
            connections=num(row.get("connections")),
            active_connections=num(row.get("active_connections")),
            pairs=num(row.get("pairs")), server_pairs=num(row.get("server_pairs")),
            bytes=(b_in or 0.0) + (b_out or 0.0) if b_in is not None or b_out is not None else None,
            tls_connections=num(row.get("tls_connections")),
            pairs_per_s=num(row.get("pairs_per_s")), bytes_per_s=num(row.get("bytes_per_s")),
            last_seen_ago=_ago(now, row), exited=row.get("exited") is True))
        out[-1].key = _unique_key(seen, f"pid-{pid}" if pid is not None else "pid-?")
    return out


def filter_processes(rows: list[Process], query: str) -> list[Process]:
    return _filter_rows(rows, query)


def sort_processes(rows: list[Process], key: str, descending: bool) -> list[Process]:
    return _sort_rows(rows, key, descending, lambda r: r.pid)


# -- what session rows and process rows share ----------------------------------------------
class _Row(Protocol):
    key: str

    def haystack(self) -> str: ...

    def sort_value(self, key: str) -> float: ...


RowT = TypeVar("RowT", bound=_Row)


def _unique_key(seen: dict[str, int], key: str) -> str:
    """A row key unique in its table: ``key``, then ``key#2``... for a repeated one."""
    seen[key] = seen.get(key, 0) + 1
    return key if seen[key] == 1 else f"{key}#{seen[key]}"


def _filter_rows(rows: list[RowT], query: str) -> list[RowT]:
    """Every whitespace-separated word of ``query`` must appear (case-insensitive)."""
    words = query.lower().split()
    if not words:
        return list(rows)
    return [r for r in rows if all(w in r.haystack() for w in words)]


def _sort_rows(rows: list[RowT], key: str, descending: bool,
               ident: Callable[[RowT], int | None]) -> list[RowT]:
    # Ties (e.g. many idle rows at 0/s) always come out in identifier order (VNI, pid), so
    # rows do not jump around between refreshes.
    by_ident = sorted(rows, key=lambda r: (ident(r) is None, ident(r) or 0))
    return sorted(by_ident, key=lambda r: r.sort_value(key), reverse=descending)


def drops(doc: dict | None) -> list[tuple[str, float]]:
    """(reason, count) with the largest first; zero counts left out."""
    raw = dig(doc, "drops", default={})
    if not isinstance(raw, dict):
        return []
    out = [(str(k), v) for k, v in ((k, num(v)) for k, v in raw.items()) if v]
    return sorted(out, key=lambda kv: (-kv[1], kv[0]))


def workers(doc: dict | None) -> list[dict]:
    rows = dig(doc, "memory", "workers", default=[])
    return [w for w in rows if isinstance(w, dict)] if isinstance(rows, list) else []


@dataclass
class Sample:
    packets_per_s: float
    bytes_per_s: float
    pairs_per_s: float


def rates(doc: dict | None, previous: dict | None = None) -> Sample | None:
    """The document's rates; when it has none, derived from the totals of the previous
    document (same appliance, same start) and the two ``now`` stamps."""
    r = dig(doc, "rates", default={})
    values = [num(dig(r, k)) for k in ("packets_per_s", "bytes_per_s", "pairs_per_s")]
    if all(v is not None for v in values):
        return Sample(*values)  # type: ignore[arg-type]
    if previous is None or dig(doc, "started_at") != dig(previous, "started_at"):
        return None
    t1, t0 = num(dig(doc, "now")), num(dig(previous, "now"))
    if t1 is None or t0 is None or t1 <= t0:
        return None
    derived: list[float] = []
    for i, k in enumerate(("packets", "bytes", "pairs")):
        value = values[i]
        if value is not None:
            derived.append(value)
            continue
        a, b = num(dig(doc, "totals", k)), num(dig(previous, "totals", k))
        derived.append(max(0.0, (a - b) / (t1 - t0)) if a is not None and b is not None else 0.0)
    return Sample(*derived)


METRICS = ("packets_per_s", "bytes_per_s", "pairs_per_s")


@dataclass
class History:
    """The document's per-second rates: ``n`` samples per series, the last ending at the
    unix second ``end``. ``sessions`` is keyed by VNI as a string; every series has
    exactly ``n`` values (missing or mistyped samples read as 0)."""

    end: int
    n: int
    totals: dict[str, list[float]]
    sessions: dict[str, dict[str, list[float]]]


def _samples(block: object, n: int | None = None) -> dict[str, list[float]] | None:
    if not isinstance(block, dict):
        return None
    out = {}
    for key in METRICS:
        values = block.get(key)
        out[key] = [num(v) or 0.0 for v in values] if isinstance(values, list) else []
    if n is not None:  # one length for all: pad at the front (before a session was seen)
        out = {k: ([0.0] * (n - len(v)) + v)[-n:] if n else [] for k, v in out.items()}
    return out


def history(doc: dict | None) -> History | None:
    """The ``history`` object, or None when there is none (or not per second)."""
    raw = dig(doc, "history")
    end = dig(raw, "end")
    if not isinstance(raw, dict) or isinstance(end, bool) or not isinstance(end, int):
        return None
    if num(dig(raw, "step_s")) != 1:
        return None
    totals = _samples(raw.get("totals"))
    if totals is None:
        return None
    n = max(len(v) for v in totals.values())
    totals = _samples(raw.get("totals"), n) or {}
    sessions = {}
    rows = raw.get("sessions")
    for key, block in (rows.items() if isinstance(rows, dict) else ()):
        series = _samples(block, n)
        if series is not None:
            sessions[str(key)] = series
    return History(end=end, n=n, totals=totals, sessions=sessions)


def session_rates(doc: dict | None) -> dict[str, Sample]:
    """The current rates of each session, keyed by VNI as a string (what the history uses)."""
    out = {}
    for row in sessions(doc):
        if row.vni is not None and row.key == f"vni-{row.vni}":
            out[str(row.vni)] = Sample(row.packets_per_s or 0.0, row.bytes_per_s or 0.0,
                                       row.pairs_per_s or 0.0)
    return out
