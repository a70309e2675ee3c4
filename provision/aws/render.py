"""Rich tables for the plan, the end-of-run summary and status."""

from __future__ import annotations

import sys
from collections import Counter

from rich.console import Console
from rich.table import Table
from rich.text import Text

from provision.aws.apply import ApplyResult
from provision.aws.planner import Plan

ACTION_STYLE = {
    "create": "green",
    "update": "yellow",
    "delete": "red",
    "keep": "dim",
    "skip": "magenta",
}
STATUS_STYLE = {"ok": "green", "failed": "bold red", "blocked": "red", "not-run": "yellow"}


def make_console(file=None) -> Console:
    out = file or sys.stdout
    is_tty = hasattr(out, "isatty") and out.isatty()
    # Off a terminal (CI logs, pipes) use a wide fixed width so ids are never cut.
    return Console(file=out, width=None if is_tty else 200, highlight=False, soft_wrap=False)


def render_plan(console: Console, plan: Plan, *, title: str, dry_run: bool) -> None:
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("Action", no_wrap=True)
    table.add_column("Resource", no_wrap=True)
    table.add_column("ID", no_wrap=True)
    table.add_column("ENI", no_wrap=True)
    table.add_column("Instance", no_wrap=True)
    table.add_column("Details / reason")
    for item in plan.items:
        table.add_row(
            Text(item.action, style=ACTION_STYLE.get(item.action, "")),
            item.kind,
            item.id or "-",
            item.eni or "-",
            item.instance or "-",
            item.detail,
        )
    console.print(table)
    counts = Counter(i.action for i in plan.items)
    line = ", ".join(f"{counts.get(a, 0)} to {a}" for a in ("create", "update", "delete")) + \
        f", {counts.get('keep', 0)} unchanged, {counts.get('skip', 0)} skipped"
    console.print("Plan: " + line + (" (dry run: nothing changed)" if dry_run else ""))
    for warning in plan.warnings:
        console.print(Text("warning: " + warning, style="yellow"))
    for blocker in plan.blockers:
        console.print(Text("blocked: " + blocker, style="bold red"))


def render_summary(console: Console, result: ApplyResult, *, title: str = "Summary") -> None:
    rows: dict[str, Counter] = {}
    for item in result.plan.items:
        counter = rows.setdefault(item.kind, Counter())
        if item.action in ("keep",):
            counter["unchanged"] += 1
        elif item.action == "skip":
            counter["skipped"] += 1
        elif item.status == "ok":
            counter[{"create": "created", "update": "updated", "delete": "deleted"}[item.action]] += 1
        elif item.status in ("failed", "blocked"):
            counter["failed"] += 1
        else:
            counter["not run"] += 1
    columns = ["created", "updated", "deleted", "unchanged", "skipped", "failed", "not run"]
    table = Table(title=title, title_justify="left")
    table.add_column("Resource", no_wrap=True)
    for col in columns:
        table.add_column(col, justify="right")
    for kind in ("target", "filter", "rule", "session", "eni"):
        if kind in rows:
            c = rows[kind]
            table.add_row(kind, *[
                Text(str(c.get(col, 0)), style="bold red" if col == "failed" and c.get(col) else "")
                for col in columns
            ])
    console.print(table)
    problems = [i for i in result.plan.items if i.status in ("failed", "blocked")]
    if problems:
        failures = Table(title="Failures", title_justify="left")
        failures.add_column("Action", no_wrap=True)
        failures.add_column("Resource", no_wrap=True)
        failures.add_column("ID / ENI", no_wrap=True)
        failures.add_column("Error")
        for item in problems:
            failures.add_row(item.action, item.kind, item.eni or item.id or "-", item.error or "")
        console.print(failures)
    if result.aborted is not None:
        console.print(Text(f"stopped: {result.aborted}", style="bold red"))


def render_status(console: Console, name: str, rows: list[dict], targets: list[dict], filters: list[dict]) -> None:
    table = Table(title=f"Deployment {name}: traffic mirror sessions", title_justify="left")
    for col in ("Session", "ENI", "Instance", "VNI", "Session #", "Target", "Filter", "ENI state"):
        table.add_column(col, no_wrap=True)
    for row in rows:
        table.add_row(row["session_id"], row["eni"] or "-", row["instance"] or "-", str(row["vni"]),
                      str(row["session_number"]), row["target"] or "-", row["filter"] or "-", row["eni_state"])
    console.print(table)
    for tgt in targets:
        what = tgt.get("NetworkLoadBalancerArn") or tgt.get("NetworkInterfaceId") or tgt.get("GatewayLoadBalancerEndpointId")
        console.print(f"target {tgt['TrafficMirrorTargetId']}: {what}")
    for flt in filters:
        n = len(flt.get("IngressFilterRules", [])) + len(flt.get("EgressFilterRules", []))
        console.print(f"filter {flt['TrafficMirrorFilterId']}: {n} rule(s)")
    console.print(f"{len(rows)} session(s)")
