"""Output of the AWS commands: rich tables for people, one JSON document for scripts.

Text goes to stdout (plan, summary, status); with ``--output json`` stdout carries exactly one
JSON document instead, and anything meant for a person (the plan shown before a prompt) goes
to stderr.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

from rich.console import Console
from rich.table import Table
from rich.text import Text

from provision.aws.apply import OPERATIONS, ApplyResult
from provision.aws.planner import NEW_FILTER, Item, Plan
from provision.command import NextSteps

ACTION_STYLE = {
    "create": "green",
    "update": "yellow",
    "delete": "red",
    "keep": "dim",
    "skip": "magenta",
}
STATUS_STYLE = {"ok": "green", "failed": "bold red", "blocked": "red", "not-run": "yellow"}
PAST = {"create": "created", "update": "updated", "delete": "deleted"}


def make_console(file=None) -> Console:
    out = file or sys.stdout
    is_tty = hasattr(out, "isatty") and out.isatty()
    # Off a terminal (CI logs, pipes) use a wide fixed width so ids are never cut.
    return Console(file=out, width=None if is_tty else 200, highlight=False, soft_wrap=False)


def counts(plan: Plan) -> dict[str, int]:
    c = Counter(i.action for i in plan.items)
    return {a: c.get(a, 0) for a in ("create", "update", "delete", "keep", "skip")}


def count_line(plan: Plan) -> str:
    c = counts(plan)
    return (", ".join(f"{c[a]} to {a}" for a in ("create", "update", "delete"))
            + f", {c['keep']} unchanged, {c['skip']} skipped")


def render_plan(console: Console, plan: Plan, *, title: str, dry_run: bool) -> None:
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("Action", no_wrap=True)
    table.add_column("Resource", no_wrap=True)
    table.add_column("ID", no_wrap=True)
    table.add_column("ENI", no_wrap=True)
    table.add_column("Instance", no_wrap=True)
    table.add_column("Details / reason")
    for item in plan.items:
        detail = Text(item.detail)
        detail.highlight_words(["0.0.0.0/0", "::/0"], style="bold yellow")
        table.add_row(
            Text(item.action, style=ACTION_STYLE.get(item.action, "")),
            item.kind,
            item.id or "-",
            item.eni or "-",
            item.instance or "-",
            detail,
        )
    console.print(table)
    console.print("Plan: " + count_line(plan) + (" (dry run: nothing changed)" if dry_run else ""))
    wide = plan.any_address
    if wide:
        console.print(Text(
            f"any address: {len(wide)} accept rule(s) mirror traffic to and from 0.0.0.0/0 (every peer); "
            "narrow them with --cidr (mirroring opens no network access)", style="bold yellow"))
    for warning in plan.warnings:
        console.print(Text("warning: " + warning, style="yellow"))
    for blocker in plan.blockers:
        console.print(Text("blocked: " + blocker, style="bold red"))


def _describe(item: Item) -> str:
    what = item.kind if item.kind != "rule" else "filter rule"
    ident = item.id if item.id and not item.id.startswith("(") else ""
    target = f" on {item.eni}" if item.kind == "session" and item.eni else ""
    return f"{what} {ident}{target}".replace("  ", " ").strip()


def render_summary(console: Console, result: ApplyResult, *, title: str = "Summary",
                   next_steps: NextSteps | None = None) -> None:
    rows: dict[str, Counter] = {}
    for item in result.plan.items:
        counter = rows.setdefault(item.kind, Counter())
        if item.action in ("keep",):
            counter["unchanged"] += 1
        elif item.action == "skip":
            counter["skipped"] += 1
        elif item.status == "ok":
            counter[PAST[item.action]] += 1
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
    if not result.complete:
        done = result.done
        if done:
            console.print("Changed before the run ended: " + "; ".join(
                f"{PAST[i.action]} {_describe(i)}" for i in done))
        else:
            console.print("Nothing was changed.")
        console.print(f"Not done: {len(result.undone)} planned change(s) (see the table above).")
        if next_steps is not None and done:
            for line in next_steps.lines():
                console.print(line, soft_wrap=True)
        elif next_steps is not None:
            console.print("To try again, run the same command:")
            console.print(f"  {next_steps.finish}", soft_wrap=True)


# -- JSON ---------------------------------------------------------------------------------------


def _params(item: Item, plan: Plan) -> dict | None:
    if not item.op:
        return None
    if item.op == "create-rule":
        return item.params["rule"].create_params(plan.filter_id or NEW_FILTER)
    return item.params


def item_document(item: Item, plan: Plan) -> dict:
    return {
        "action": item.action,
        "kind": item.kind,
        "id": item.id,
        "eni": item.eni,
        "instance": item.instance,
        "detail": item.detail,
        "operation": OPERATIONS.get(item.op) if item.op else None,
        "params": _params(item, plan),
        "status": item.status,
        "error": item.error,
    }


def plan_document(plan: Plan, *, command: str, region: str | None, dry_run: bool,
                  result: ApplyResult | None = None, next_steps: NextSteps | None = None) -> dict:
    """The plan (and, after an apply, what happened) as one JSON-serialisable document."""
    doc: dict = {
        "cloud": "aws",
        "command": command,
        "deployment": plan.name,
        "region": region,
        "vpc": plan.vpc,
        "dry_run": dry_run,
        "applied": result is not None,
        "summary": counts(plan),
        "any_address": list(plan.any_address),
        "warnings": list(plan.warnings),
        "blockers": list(plan.blockers),
        "items": [item_document(i, plan) for i in plan.items],
    }
    if result is not None:
        doc["result"] = {
            "exit_code": result.exit_code,
            "complete": result.complete,
            "stopped": str(result.aborted) if result.aborted is not None else None,
            "changed": [{"action": i.action, "kind": i.kind, "id": i.id, "eni": i.eni} for i in result.done],
            "not_changed": [{"action": i.action, "kind": i.kind, "id": i.id, "eni": i.eni, "status": i.status,
                             "error": i.error} for i in result.undone],
            "next_steps": next_steps.as_dict() if next_steps is not None and not result.complete else None,
        }
    return doc


def print_json(doc: dict, file=None) -> None:
    print(json.dumps(doc, indent=2, sort_keys=True, default=str), file=file or sys.stdout, flush=True)


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
