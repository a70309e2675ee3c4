"""``appliance deprovision gcp``: delete what a deployment owns, in reverse dependency order.

Each resource the deployment can own is read first (by its deterministic name) and deleted
only if its description carries the deployment's marker. The list of deletions is shown and
confirmed before anything is deleted; if a delete fails, the summary says what is already gone,
what is left, and the command that finishes the teardown.
"""

from __future__ import annotations

from provision import exitcodes
from provision.command import NextSteps, confirm
from provision.gcp import plan as P
from provision.gcp import spec as S
from provision.gcp.compute import KINDS, Compute
from provision.gcp.errors import GcpError, step_failure
from provision.gcp.preflight import check_location
from provision.gcp.report import Output


def _read(api: Compute, name: str, out: Output) -> list[dict]:
    names = S.resource_names(name)
    results = []
    for kind, role, label in P.TEARDOWN_ORDER:
        rname = names[role]
        existing = api.get(kind, rname)
        if existing is None:
            results.append({"kind": kind, "name": rname, "label": label, "action": "absent"})
        elif not S.owned_by(existing.get("description"), name):
            owner = S.deployment_of(existing.get("description"))
            out.note(
                f"warning: {label} {rname} exists but was not created by deployment {name!r} "
                f"({'it belongs to ' + repr(owner) if owner else 'foreign resource'}); leaving it alone"
            )
            results.append({"kind": kind, "name": rname, "label": label, "action": "skipped"})
        else:
            results.append({"kind": kind, "name": rname, "label": label, "action": "delete"})
    return results


def _plan_lines(api: Compute, name: str, results: list[dict], dry_run: bool) -> list[str]:
    tail = "; dry run, nothing changed:" if dry_run else ":"
    lines = [f"teardown plan for deployment {name} (project {api.project}, region {api.region}){tail}"]
    for r in results:
        if r["action"] != "absent":
            lines.append(f"  {r['action']:<9} {KINDS[r['kind']].label:<24} {r['name']}")
    if not any(r["action"] == "delete" for r in results):
        lines.append("  nothing to delete")
    return lines


def _document(api: Compute, name: str, results: list[dict], *, dry_run: bool, failure: GcpError | None = None,
              steps: NextSteps | None = None) -> dict:
    doc = {
        "cloud": "gcp",
        "command": "deprovision",
        "deployment": name,
        "project": api.project,
        "region": api.region,
        "dry_run": dry_run,
        "resources": [{k: r[k] for k in ("kind", "name", "action")} for r in results],
    }
    if not dry_run:
        left = [r["name"] for r in results if r["action"] in ("delete", "failed")]
        doc["result"] = {
            "exit_code": failure.code if failure else exitcodes.OK,
            "complete": failure is None,
            "stopped": str(failure) if failure else None,
            "deleted": [r["name"] for r in results if r["action"] == "deleted"],
            "not_deleted": left,
            "next_steps": steps.as_dict() if failure is not None and steps is not None else None,
        }
    return doc


def deprovision(api: Compute, name: str, out: Output, *, dry_run: bool = False, as_json: bool = False,
                assume_yes: bool = False, next_steps: NextSteps | None = None) -> int:
    check_location(api)
    results = _read(api, name, out)
    to_delete = [r for r in results if r["action"] == "delete"]

    if dry_run or not to_delete:
        if as_json:
            out.json(_document(api, name, results, dry_run=dry_run))
        elif dry_run:
            for line in _plan_lines(api, name, results, dry_run=True):
                out.line(line)
        else:
            out.line(f"deployment {name}: nothing to delete in project {api.project}, region {api.region}")
        return exitcodes.OK

    if not as_json:
        for line in _plan_lines(api, name, results, dry_run=False):
            out.line(line)
    elif not assume_yes:
        for line in _plan_lines(api, name, results, dry_run=False):
            out.note(line)
    confirm(f"{len(to_delete)} deletion(s) of deployment {name} in project {api.project}, region {api.region}",
            assume_yes=assume_yes)

    failure: GcpError | None = None
    current: dict = to_delete[0]
    try:
        for r in to_delete:
            current = r
            try:
                api.delete(r["kind"], r["name"])
            except GcpError as err:
                if err.status != 404:  # gone meanwhile: that is what we wanted
                    raise
            r["action"] = "deleted"
    except (KeyboardInterrupt, Exception) as exc:
        failure = step_failure(exc, f"deleting {current['label']} {current['name']}")
    if failure is not None:
        current["action"] = "failed"

    deleted = [r for r in results if r["action"] == "deleted"]
    if as_json:
        out.json(_document(api, name, results, dry_run=False, failure=failure, steps=next_steps))
    elif failure is None:
        out.line(f"deployment {name} removed: {len(deleted)} resources deleted")
    else:
        left = [f"{r['label']} {r['name']}" for r in results if r["action"] in ("delete", "failed")]
        out.line(f"stopped while deleting {current['label']} {current['name']}.")
        out.line("Deleted before the stop: " + ("; ".join(f"{r['label']} {r['name']}" for r in deleted) or "nothing")
                 + ".")
        out.line("Still there: " + "; ".join(left) + ".")
        if next_steps is not None:
            out.line("To finish, run the same command again (it deletes what is left):")
            out.line(f"  {next_steps.finish}")
    if failure is not None:
        raise failure
    return exitcodes.OK
