"""Execute a plan. Per-ENI failures are recorded and the run continues; permission problems,
quotas, unexpected errors, interrupts and failures to create the target or filter stop it
(nothing after them can succeed, or the state is no longer known). Whatever happens, every
item ends with a status, so the summary can say exactly what was changed."""

from __future__ import annotations

from dataclasses import dataclass

from provision import exitcodes
from provision.aws.errors import AwsFailure, aws_errors, iam_action
from provision.aws.planner import NEW_FILTER, NEW_TARGET, Item, Plan

# The EC2 operation behind each planned op (for messages and the JSON plan).
OPERATIONS = {
    "create-target": "CreateTrafficMirrorTarget",
    "create-filter": "CreateTrafficMirrorFilter",
    "create-rule": "CreateTrafficMirrorFilterRule",
    "delete-rule": "DeleteTrafficMirrorFilterRule",
    "delete-filter": "DeleteTrafficMirrorFilter",
    "delete-target": "DeleteTrafficMirrorTarget",
    "create-session": "CreateTrafficMirrorSession",
    "modify-session": "ModifyTrafficMirrorSession",
    "delete-session": "DeleteTrafficMirrorSession",
}


@dataclass
class ApplyResult:
    plan: Plan
    aborted: AwsFailure | None = None

    @property
    def failed(self) -> list[Item]:
        return [i for i in self.plan.items if i.status == "failed"]

    @property
    def exit_code(self) -> int:
        if self.aborted is not None:
            return self.aborted.code
        if any(i.status in ("failed", "blocked") for i in self.plan.items):
            return exitcodes.PARTIAL
        return exitcodes.OK

    @property
    def done(self) -> list[Item]:
        """Changes that were made."""
        return [i for i in self.plan.items if i.op and i.status == "ok"]

    @property
    def undone(self) -> list[Item]:
        """Changes that were planned but not made (failed, blocked or never attempted)."""
        return [i for i in self.plan.items if i.op and i.status != "ok"]

    @property
    def complete(self) -> bool:
        return not self.undone

    def live_sessions(self) -> list[dict]:
        """Sessions of the deployment that exist after the run (for the session map)."""
        out = []
        for item in self.plan.items:
            if item.kind != "session" or not item.info or item.action == "delete":
                continue
            if item.action == "create" and item.status != "ok":
                continue
            out.append(dict(item.info, session_id=item.id))
        return out


def _resolve(params: dict, ctx: dict) -> dict:
    out = dict(params)
    for key, value in params.items():
        if value == NEW_TARGET:
            out[key] = ctx["target"]
        elif value == NEW_FILTER:
            out[key] = ctx["filter"]
    return out


def _run(ec2, item: Item, ctx: dict) -> None:
    params = _resolve(item.params, ctx)
    with aws_errors(iam_action(OPERATIONS.get(item.op or "", item.op or "?"))):
        if item.op == "create-target":
            resp = ec2.create_traffic_mirror_target(**params)
            item.id = ctx["target"] = resp["TrafficMirrorTarget"]["TrafficMirrorTargetId"]
        elif item.op == "create-filter":
            resp = ec2.create_traffic_mirror_filter(**params)
            item.id = ctx["filter"] = resp["TrafficMirrorFilter"]["TrafficMirrorFilterId"]
        elif item.op == "create-rule":
            rule = params["rule"]
            resp = ec2.create_traffic_mirror_filter_rule(**rule.create_params(ctx["filter"]))
            item.id = resp["TrafficMirrorFilterRule"]["TrafficMirrorFilterRuleId"]
        elif item.op == "delete-rule":
            ec2.delete_traffic_mirror_filter_rule(**params)
        elif item.op == "delete-filter":
            ec2.delete_traffic_mirror_filter(**params)
        elif item.op == "delete-target":
            ec2.delete_traffic_mirror_target(**params)
        elif item.op == "create-session":
            resp = ec2.create_traffic_mirror_session(**params)
            item.id = resp["TrafficMirrorSession"]["TrafficMirrorSessionId"]
            item.info["session_id"] = item.id
        elif item.op == "modify-session":
            ec2.modify_traffic_mirror_session(**params)
        elif item.op == "delete-session":
            ec2.delete_traffic_mirror_session(**params)
        else:  # pragma: no cover - planner bug
            raise ValueError(f"unknown operation {item.op}")


def apply_plan(plan: Plan, ec2, progress=None) -> ApplyResult:
    """Run every item with an ``op`` in plan order, recording status and errors on the items.

    Never raises for a failed call: the failure is recorded on its item, and on the result
    when it stops the run (``aborted``). A Ctrl-C stops the run the same way (exit 130), so
    the caller can still report what was done.
    """
    ctx = {"target": plan.target_id, "filter": plan.filter_id}
    result = ApplyResult(plan)
    failed_sessions: set[str] = set()
    for item in plan.items:
        if item.op is None:
            continue
        if result.aborted is not None:
            item.status = "not-run"
            continue
        blockers = [d for d in item.depends if d in failed_sessions]
        if blockers:
            item.status = "blocked"
            item.error = f"still in use: session {', '.join(blockers)} could not be changed"
            continue
        try:
            _run(ec2, item, ctx)
            item.status = "ok"
        except AwsFailure as exc:
            item.status = "failed"
            item.error = str(exc)
            if item.kind == "session" and item.id:
                failed_sessions.add(item.id)
            if exc.fatal or item.op in ("create-target", "create-filter"):
                result.aborted = exc
        except KeyboardInterrupt:
            # The call may or may not have reached AWS: say so rather than guess.
            item.status = "failed"
            item.error = "interrupted during the call: it may or may not have taken effect"
            result.aborted = AwsFailure(f"interrupted during {OPERATIONS.get(item.op, item.op)}",
                                        exitcodes.INTERRUPTED)
        if progress is not None:
            progress(item)
    return result
