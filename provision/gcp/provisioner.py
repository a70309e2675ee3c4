"""``appliance provision gcp``: check, plan, confirm, apply.

check (``preflight``: project, region, network, subnets, instances, collector) -> build the
plan -> for each step get-before-insert: create what is missing, leave what matches alone,
patch/replace the policy, firewall rules and autoscaler when they drifted, refuse to touch
same-named resources another deployment or tool created -> show the plan -> confirm -> apply.
If the apply stops part-way, the summary names what was changed and the exact commands that
finish (the same command) or undo (``appliance deprovision gcp ...``) it.

Status and teardown live in ``status.py`` and ``teardown.py``.
"""

from __future__ import annotations

from provision import exitcodes
from provision.command import NextSteps, confirm
from provision.gcp import plan as P
from provision.gcp import spec as S
from provision.gcp.compute import Compute
from provision.gcp.errors import GcpError, step_failure
from provision.gcp.preflight import gather_facts
from provision.gcp.report import Decision, Output, changed_words, partial_lines, plan_document, plan_lines


def decide(api: Compute, spec: S.DeploymentSpec, step: P.Step) -> Decision:
    existing = api.get(step.kind, step.name)
    if existing is None:
        return Decision(step, "create")
    if not S.owned_by(existing.get("description"), spec.name):
        return Decision(step, "conflict", owner=S.deployment_of(existing.get("description")))
    changed = P.drift(step, existing)
    if not changed:
        return Decision(step, "unchanged")
    if step.on_drift == P.WARN:
        return Decision(step, "drift", changed)
    if step.on_drift == P.PATCH and any(
        P.needs_clear(step.body.get(f), existing.get(f)) for f in changed
    ):
        return Decision(step, "replace", changed)
    return Decision(step, "update", changed)


def _conflict_message(spec: S.DeploymentSpec, d: Decision) -> str:
    who = f"deployment {d.owner!r}" if d.owner else "another tool or person"
    return (
        f"{d.step.what} already exists in project {spec.project} but was created by {who}, "
        f"not deployment {spec.name!r}; choose another --name or remove it"
    )


def _apply_one(api: Compute, spec: S.DeploymentSpec, d: Decision, out: Output) -> str:
    """Carry out one decision; returns the summary bucket it falls in."""
    step = d.step
    if d.action == "create":
        try:
            api.insert(step.kind, step.body)
        except GcpError as err:
            if err.status != 409:
                raise
            # Created concurrently (409): fine if it is ours, else a real conflict.
            again = decide(api, spec, step)
            if again.action == "conflict":
                raise GcpError(_conflict_message(spec, again), exitcodes.CONFLICT) from None
            out.note(f"{step.what} appeared concurrently; keeping it")
            d.status = "unchanged"
            return "unchanged"
        d.status = "ok"
        return "created"
    if d.action == "unchanged":
        out.note(f"{step.what}: exists, unchanged")
        d.status = "unchanged"
        return "unchanged"
    if d.action == "update":
        if step.on_drift == P.UPDATE:
            api.update(step.kind, step.name, step.body)
        else:
            body = {"name": step.name, **{f: step.body[f] for f in d.fields if f in step.body}}
            api.patch(step.kind, step.name, body)
        d.status = "ok"
        return "updated"
    if d.action == "replace":
        out.note(f"{step.what}: {', '.join(d.fields)} must drop entries a patch cannot clear; replacing it")
        api.delete(step.kind, step.name)
        d.status = "deleted"  # until the insert succeeds: the summary must say it is gone
        api.insert(step.kind, step.body)
        d.status = "ok"
        return "updated"
    # drift: reported, left alone
    out.note(
        f"warning: {step.what} differs from the requested configuration in {', '.join(d.fields)}; "
        "it is left unchanged (deprovision and provision again to rebuild it)"
    )
    d.status = "drift"
    return "drifted"


def _changed(decisions: list[Decision]) -> list[str]:
    words = changed_words(decisions)
    words += [f"deleted {d.step.what} (its replacement was not created)" for d in decisions
              if d.action == "replace" and d.status == "deleted"]
    return words


def _result_document(spec: S.DeploymentSpec, decisions: list[Decision], tally: dict[str, int], policy: str,
                     failure: GcpError | None, steps: NextSteps | None) -> dict:
    doc = plan_document(spec, decisions, dry_run=False)
    doc.update(applied=True, policy=policy, **tally)
    doc["result"] = {
        "exit_code": failure.code if failure else exitcodes.OK,
        "complete": failure is None,
        "stopped": str(failure) if failure else None,
        "changed": _changed(decisions),
        "not_changed": [d.step.what for d in decisions if d.is_change and d.status != "ok"],
        "next_steps": steps.as_dict() if failure is not None and steps is not None else None,
    }
    return doc


def provision(api: Compute, spec: S.DeploymentSpec, out: Output, *, dry_run: bool = False, as_json: bool = False,
              assume_yes: bool = False, next_steps: NextSteps | None = None) -> int:
    facts = gather_facts(api, spec)
    steps = P.build_plan(spec, facts)
    decisions = [decide(api, spec, step) for step in steps]
    conflicts = [d for d in decisions if d.action == "conflict"]
    changes = [d for d in decisions if d.is_change]

    # The plan is shown on a dry run, before an apply that changes something, and on conflicts.
    if dry_run or changes or conflicts:
        if not as_json:
            for line in plan_lines(spec, decisions, dry_run=dry_run):
                out.line(line)
        elif dry_run or conflicts:
            out.json(plan_document(spec, decisions, dry_run=dry_run))
        elif not assume_yes:  # JSON on stdout; the person about to confirm reads the plan on stderr
            for line in plan_lines(spec, decisions, dry_run=False):
                out.note(line)
    if dry_run:
        return exitcodes.CONFLICT if conflicts else exitcodes.OK
    if conflicts:
        raise GcpError(_conflict_message(spec, conflicts[0]), exitcodes.CONFLICT)
    if changes:
        confirm(f"{len(changes)} change(s) to deployment {spec.name} in project {spec.project}, region {spec.region}",
                assume_yes=assume_yes)

    tally = {"created": 0, "unchanged": 0, "updated": 0, "drifted": 0}
    failure: GcpError | None = None
    current: Decision = decisions[0]
    try:
        for d in decisions:
            current = d
            tally[_apply_one(api, spec, d, out)] += 1
    except (KeyboardInterrupt, Exception) as exc:
        failure = step_failure(exc, f"applying {current.step.what}")
    if failure is not None:
        for d in decisions:
            if d.status is None:
                d.status = "failed" if d is current else "not-run"

    policy = f"projects/{spec.project}/regions/{spec.region}/packetMirrorings/{spec.names['packet_mirroring']}"
    if as_json:
        out.json(_result_document(spec, decisions, tally, policy, failure, next_steps))
    elif failure is None:
        out.line(
            f"deployment {spec.name} ready: {policy} "
            f"({tally['created']} created, {tally['updated']} updated, {tally['unchanged']} unchanged"
            + (f", {tally['drifted']} drifted" if tally["drifted"] else "")
            + ")"
        )
    else:
        for line in partial_lines(f"applying {current.step.what}", _changed(decisions), next_steps):
            out.line(line)
    if failure is not None:
        raise failure
    return exitcodes.OK

