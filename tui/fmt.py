"""Human-friendly numbers for the console and `appliance status`.

Every function accepts ``None`` (a figure the appliance did not report) and answers "-",
so a reader never has to special-case missing keys.
"""

from __future__ import annotations

import math

DASH = "-"

_SI = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
_IEC = ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB"))


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _short(value: float) -> str:
    """Short mantissa: 0.05, 1.2, 12.3, 123."""
    if value >= 99.95:
        return f"{value:.0f}"
    if value >= 0.995:
        return f"{value:.1f}".rstrip("0").rstrip(".")
    return f"{value:.2f}".rstrip("0").rstrip(".") if value else "0"


def count(value: object) -> str:
    """A count with an SI suffix: 999, 1.2k, 34.5k, 1.2M."""
    v = _finite(value)
    if v is None:
        return DASH
    sign = "-" if v < 0 else ""
    v = abs(v)
    for scale, suffix in _SI:
        if v >= scale * 0.9995:
            return f"{sign}{_short(v / scale)}{suffix}"
    return f"{sign}{v:.0f}" if v >= 10 or v == int(v) else f"{sign}{_short(v)}"


def rate(value: object, unit: str = "/s") -> str:
    """A per-second rate: 0/s, 0.5/s, 40/s, 3.4k/s."""
    v = _finite(value)
    if v is None:
        return DASH
    return f"{count(v)}{unit}"


def bits(bytes_per_s: object) -> str:
    """A byte rate shown the way network people read it: 6.3 Mbit/s, 1.2 Gbit/s."""
    v = _finite(bytes_per_s)
    if v is None:
        return DASH
    v *= 8
    for scale, suffix in _SI:
        if v >= scale * 0.9995:
            return f"{_short(v / scale)} {suffix}bit/s"
    return f"{v:.0f} bit/s"


def size(value: object) -> str:
    """A byte count in IEC units: 512 B, 1.5 KiB, 512 MiB."""
    v = _finite(value)
    if v is None:
        return DASH
    for scale, suffix in _IEC:
        if v >= scale * 0.9995:
            return f"{_short(v / scale)} {suffix}"
    return f"{v:.0f} B"


def duration(seconds: object) -> str:
    """An uptime: 45s, 12m05s, 3h04m, 2d03h."""
    v = _finite(seconds)
    if v is None or v < 0:
        return DASH
    s = int(v)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{s:02d}s"
    return f"{s}s"


def ago(seconds: object) -> str:
    """How long ago: now, 5s ago, 3m ago, 2h ago, 4d ago; '-' when never."""
    v = _finite(seconds)
    if v is None:
        return DASH
    if v < 1:
        return "now"
    if v < 60:
        return f"{int(v)}s ago"
    if v < 3600:
        return f"{int(v // 60)}m ago"
    if v < 86400:
        return f"{int(v // 3600)}h ago"
    return f"{int(v // 86400)}d ago"


def percent(part: object, whole: object) -> float | None:
    p, w = _finite(part), _finite(whole)
    if p is None or not w or w <= 0:
        return None
    return max(0.0, p / w * 100.0)


def pct(part: object, whole: object) -> str:
    value = percent(part, whole)
    return DASH if value is None else f"{value:.0f}%"


def span(seconds: float) -> str:
    """A window length for titles: 90s, 5m, 2h."""
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h"
