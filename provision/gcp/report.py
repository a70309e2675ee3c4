"""Output of the GCP commands: plans, results and partial-apply summaries, as text or JSON.

Text goes to stdout; with ``--output json`` stdout carries exactly one JSON document, and the
text plan goes to stderr only when a person is about to confirm it. Every firewall source or
mirroring filter that covers any address (``0.0.0.0/0``, ``::/0``) is called out on its own
line, in both forms.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import TextIO

from provision.command import NextSteps
from provision.gcp import plan as P
from provision.gcp import spec as S

ANY = ("0.0.0.0/0", "::/0")
CHANGES = ("create", "update", "replace")
PAST = {"create": "created", "update": "updated", "replace": "replaced", "delete": "deleted"}


@dataclass
class Output:
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)

    def line(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def note(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    def json(self, doc: dict) -> None:
        print(json.dumps(doc, indent=2, sort_keys=True), file=self.out, flush=True)


@dataclass
class Decision:
    step: P.Step
    action: str  # create | unchanged | update | replace | drift | conflict
    fields: list[str] = field(default_factory=list)
    owner: str | None = None
    status: str | None = None  # after an apply: ok | unchanged | drift | failed | not-run

    @property
    def is_change(self) -> bool:
        return self.action in CHANGES


# -- any address -------------------------------------------------------------------------------


def _firewall_scope(body: dict) -> str:
    tags = ", ".join(body.get("targetTags", [])) or "every VM in the network"
    allowed = []
    for rule in body.get("allowed", []):
        ports = ",".join(rule.get("ports", []))
        allowed.append(f"{rule.get('IPProtocol')}{':' + ports if ports else ''}")
    return f"to tag {tags}: {', '.join(allowed) or 'nothing'}"


def any_address(decisions: list[Decision]) -> list[str]:
    """Every firewall rule and mirroring filter of the plan that covers any address, in words."""
    out = []
    for d in decisions:
        if d.action == "conflict":
            continue
        body = d.step.body
        if d.step.kind == "firewall":
            wide = [r for r in body.get("sourceRanges", []) if r in ANY]
            if wide:
                out.append(f"firewall rule {d.step.name} admits ingress from {', '.join(wide)} (any address) "
                           f"{_firewall_scope(body)}; narrow it with --cidr")
        elif d.step.kind == "packet_mirroring":
            cidrs = body.get("filter", {}).get("cidrRanges", [])
            wide = [c for c in cidrs if c in ANY]
            if not cidrs:
                out.append(f"packet mirroring policy {d.step.name} mirrors traffic to and from any address "
                           "(no --cidr: 0.0.0.0/0); narrow it with --cidr")
            elif wide:
                out.append(f"packet mirroring policy {d.step.name} mirrors traffic to and from {', '.join(wide)} "
                           "(any address); narrow it with --cidr")
    return out


# -- plans -------------------------------------------------------------------------------------


def counts(decisions: list[Decision]) -> dict[str, int]:
    keys = ("create", "update", "replace", "unchanged", "drift", "conflict")
    return {k: sum(1 for d in decisions if d.action == k) for k in keys}


def _detail(d: Decision) -> str:
    parts = []
    if d.action == "conflict":
        parts.append(f"[exists, created by {d.owner or 'someone else'}]")
    elif d.fields:
        parts.append(f"[{', '.join(d.fields)}]")
    if d.step.kind == "firewall":
        sources = ", ".join(f"{r} (ANY ADDRESS)" if r in ANY else r for r in d.step.body.get("sourceRanges", []))
        parts.append(f"from {sources} {_firewall_scope(d.step.body)}")
    return ("  " + "  ".join(parts)) if parts else ""


def plan_lines(spec: S.DeploymentSpec, decisions: list[Decision], *, dry_run: bool) -> list[str]:
    tail = "; dry run, nothing changed:" if dry_run else ":"
    lines = [f"plan for deployment {spec.name} (project {spec.project}, region {spec.region}){tail}"]
    for d in decisions:
        lines.append(f"  {d.action:<9} {d.step.label:<24} {d.step.name}{_detail(d)}")
    policy = decisions[-1].step.body
    mr = policy["mirroredResources"]
    lines.append("  mirrored: " + "; ".join(
        f"{k} {', '.join(S.rel(x['url']) if isinstance(x, dict) else x for x in v)}" for k, v in mr.items()
    ))
    f = policy["filter"]
    lines.append(
        f"  filter: direction {f['direction']}; protocols {', '.join(f.get('IPProtocols', [])) or 'all'}; "
        f"cidrs {', '.join(f.get('cidrRanges', [])) or 'all (0.0.0.0/0)'}"
    )
    lines.append(f"  collector: {S.rel(policy['collectorIlb']['url'])}")
    for text in any_address(decisions):
        lines.append(f"  ! ANY ADDRESS: {text}")
    c = counts(decisions)
    lines.append(f"Plan: {c['create']} to create, {c['update'] + c['replace']} to update, {c['unchanged']} unchanged, "
                 f"{c['drift']} drifted (left alone), {c['conflict']} conflict(s)")
    return lines


def step_document(d: Decision) -> dict:
    return {"action": d.action, "kind": d.step.kind, "name": d.step.name, "fields": d.fields, "owner": d.owner,
            "body": d.step.body, "status": d.status}


def plan_document(spec: S.DeploymentSpec, decisions: list[Decision], *, dry_run: bool) -> dict:
    return {
        "cloud": "gcp",
        "command": "provision",
        "deployment": spec.name,
        "project": spec.project,
        "region": spec.region,
        "dry_run": dry_run,
        "applied": False,
        "summary": counts(decisions),
        "any_address": any_address(decisions),
        "steps": [step_document(d) for d in decisions],
    }


# -- after an apply ----------------------------------------------------------------------------


def changed_words(decisions: list[Decision]) -> list[str]:
    return [f"{PAST[d.action]} {d.step.what}" for d in decisions if d.is_change and d.status == "ok"]


def partial_lines(stopped_at: str, changed: list[str], steps: NextSteps | None) -> list[str]:
    lines = [f"stopped while {stopped_at}."]
    if changed:
        lines.append("Changed before the stop: " + "; ".join(changed) + ".")
        if steps is not None:
            lines += steps.lines()
    else:
        lines.append("Nothing was changed.")
        if steps is not None:
            lines += ["To try again, run the same command:", f"  {steps.finish}"]
    return lines
