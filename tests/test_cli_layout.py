"""The layout: one module per command, no import cycle, a light CLI start-up."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("appliance", "provision", "tui")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_level_imports(path: Path, modules: set[str]) -> set[str]:
    """Project modules imported when `path` is imported (function bodies excluded)."""
    tree = ast.parse(path.read_text())
    found = set()
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    for node in tree.body:
        stmts = [node]
        if isinstance(node, ast.If):  # e.g. TYPE_CHECKING blocks are not run: skip them
            continue
        for stmt in stmts:
            if isinstance(stmt, ast.Import):
                found |= {a.name for a in stmt.names if a.name in modules}
            elif isinstance(stmt, ast.ImportFrom):
                base = stmt.module or ""
                if stmt.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - stmt.level + 1]
                                    + ([base] if base else []))
                for a in stmt.names:
                    sub = f"{base}.{a.name}"
                    if sub in modules:
                        found.add(sub)  # `from pkg import submodule`
                    elif base in modules:
                        found.add(base)
    found.discard(here)
    return found


def import_graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {module_name(p) for p in files}
    return {module_name(p): module_level_imports(p, modules) for p in files}


def find_cycle(graph):
    state = {}
    stack = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_cycle():
    graph = import_graph()
    # a package's __init__ re-exporting from its own submodules is not a cycle of layers
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not (name.startswith(d + ".") and d in graph)}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_one_module_per_command():
    from appliance.cli import app

    names = {m.__name__.rsplit(".", 1)[1] for m in app.COMMANDS}
    assert names == {"run", "config", "replay", "resend", "demo", "boot"}
    parser = app.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")  # noqa: SLF001 - argparse has no public walk
    assert names <= set(sub.choices)
    assert {"provision", "deprovision", "tui", "status"} <= set(sub.choices)


def test_jsonl_sink_lives_in_one_module():
    from appliance.sinks import jsonl, kafka

    assert not hasattr(kafka, "JsonlWriter")
    assert issubclass(jsonl.JsonlWriter, jsonl.JsonlSink)


def test_help_starts_fast_and_loads_nothing_heavy():
    code = ("import sys, time; t = time.perf_counter(); import appliance.cli as c; c.build_parser(); "
            "print(sorted(m for m in ('pydantic', 'confluent_kafka', 'rich', 'pcapy', "
            "'appliance.core.pipeline', 'appliance.runtime.supervisor') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         check=True).stdout
    assert out.strip() == "[]"
