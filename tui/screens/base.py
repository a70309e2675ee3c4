"""What every view screen shares: the console it draws from, and a redraw on resume."""

from __future__ import annotations

from rich.text import Text
from textual.screen import Screen
from textual.widgets import DataTable

from tui.columns import Column
from tui.render import cut, cut_start
from tui.state import ConsoleState


class ViewScreen(Screen):
    """A screen that redraws itself from the console's state."""

    def __init__(self, console_state: ConsoleState) -> None:
        super().__init__()
        self.console_state = console_state

    def update_view(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def on_screen_resume(self) -> None:
        self.update_view()


def table_room(table: DataTable, fallback: int) -> int:
    """The cells a table's columns may use: its width less the vertical scrollbar."""
    width = table.size.width or fallback
    return max(10, width - table.styles.scrollbar_size_vertical)


def highlighted_key(table: DataTable) -> str | None:
    """The row key under the cursor, or None."""
    if not table.row_count:
        return None
    try:
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
    except Exception:
        return None


def fit_cells(cells: dict[str, Text], columns: list[Column],
              keep_end: tuple[str, ...] = ()) -> dict[str, Text]:
    """The cells of ``columns``, each cut to its column with an ellipsis (a table crops
    silently). Columns in ``keep_end`` lose their start instead (``…0.0.1:27313``): where
    two names or URLs differ."""
    return {c.key: (cut_start if c.key in keep_end else cut)(cells[c.key], c.width)
            for c in columns}
