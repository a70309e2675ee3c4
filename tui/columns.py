"""Which table columns fit a terminal's width, whole.

A table wider than the terminal scrolls sideways and cuts the cell at the edge, so
``209k`` reads ``2``: a wrong figure. Instead each column has a priority; the columns that
fit whole are shown, in their order, the others are left out (the details screens show
everything). A column can be flexible: it takes its ``min_width`` with its priority
and grows towards ``width`` with ``grow_priority``. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

CELL_PADDING = 2  # a DataTable cell has one column of padding on each side


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int
    right: bool = False      # right-aligned (numbers)
    priority: float = 0      # lower is shown first
    min_width: int | None = None   # flexible: may shrink to this...
    grow_priority: float = 0       # ...and grows back with this priority


def fit(columns: list[Column], room: int, padding: int = CELL_PADDING) -> list[Column]:
    """The columns that fit whole in ``room`` cells, in their given order, each with the
    width it gets. Columns are taken by priority until one does not fit (a less important
    column never shows while a more important one is missing); flexible columns grow at
    their ``grow_priority``, and into whatever room is left at the end."""
    widths: dict[int, int] = {}
    used = 0
    steps = []
    for i, col in enumerate(columns):
        steps.append((col.priority, i, "take"))
        if col.min_width is not None and col.min_width < col.width:
            steps.append((col.grow_priority, i, "grow"))
    full = False
    for _, i, what in sorted(steps):
        col = columns[i]
        if what == "take" and not full:
            need = (col.min_width or col.width) + padding
            if used + need > room:
                full = True
                continue
            widths[i] = col.min_width or col.width
            used += need
        elif what == "grow" and i in widths:
            extra = min(col.width - widths[i], room - used)
            if extra > 0:
                widths[i] += extra
                used += extra
    return [replace(col, width=widths[i]) for i, col in enumerate(columns) if i in widths]
