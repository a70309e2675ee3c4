"""The console's modules: one job each, layered, no import cycle.

client → model → series → state → poller (no Textual: the pollers and the model are
usable and testable without a terminal); render, columns (pure); widgets → screens → app.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TUI = ROOT / "tui"

# modules that must not import Textual (nor, through it, anything that draws)
NO_TEXTUAL = {"tui.client", "tui.model", "tui.series", "tui.state", "tui.poller",
              "tui.columns", "tui.fmt", "tui.render"}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in TUI.rglob("*.py")}
    return {name: {m for m in imports(path, top_level_only=False) if m in modules}
            for name, path in modules.items()}


def test_no_import_cycle():
    g = graph()
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(g[node]):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep] if dep in path else [node, dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node, [node])


def test_layers():
    g = graph()
    for name, deps in g.items():
        if name not in ("tui.app", "tui.cli"):  # the command starts the app
            assert "tui.app" not in deps, f"{name} imports the app: pass it what it needs"
        if name.startswith(("tui.widgets", "tui.state", "tui.series", "tui.model",
                            "tui.poller", "tui.client")):
            assert not any(d.startswith("tui.screens") for d in deps), (name, deps)
    for name in NO_TEXTUAL:
        path = TUI / (name.split(".", 1)[1].replace(".", "/") + ".py")
        found = {m for m in imports(path, top_level_only=False)
                 if m.split(".")[0] in ("textual",)}
        assert not found, f"{name} imports {found}"


def test_app_module_is_only_the_app():
    """The split of the old 980-line tui/app.py (widgets, screens, app, pollers) stays."""
    tree = ast.parse((TUI / "app.py").read_text())
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    assert classes == ["ConsoleApp"]
