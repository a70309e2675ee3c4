"""The three commands: provision (once or --watch), status, deprovision.

Imported only when a command runs (it pulls in botocore and rich); ``cli.register`` stays light.
Every failure is raised as a :class:`provision.errors.ProvisionError` (``AwsFailure``,
``UsageError``); the CLI's guard prints it as one line with its exit code.

Order of a provision run: validate the arguments → check that what they name exists
(``preflight``) → read the deployment → discover ENIs → plan → show the plan → confirm → apply
→ summary (with the exact commands to finish or undo when the apply stopped part-way).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import dataclass

from provision import exitcodes
from provision.aws import clients as clients_mod
from provision.aws import constants as C
from provision.aws import preflight, sessionmap
from provision.aws.apply import apply_plan
from provision.aws.discovery import discover, lookup_enis
from provision.aws.planner import Plan, build_plan, build_teardown_plan
from provision.aws.render import (
    make_console,
    plan_document,
    print_json,
    render_plan,
    render_status,
    render_summary,
)
from provision.aws.spec import DeploymentSpec, UsageError, build_spec, validate_name, validate_region
from provision.aws.state import MirrorState, fetch_state
from provision.command import NextSteps, command_line, confirm, wants_json
from provision.errors import ProvisionError


@dataclass
class Options:
    dry_run: bool = False
    session_map: str | None = None  # None: do not write
    assume_yes: bool = False
    as_json: bool = False
    json_lines: bool = False  # --watch with JSON: one compact document per round
    next_steps: NextSteps | None = None


def _warn(message: str) -> None:
    print(f"appliance: warning: {message}", file=sys.stderr)


def _session_map_path(args) -> str | None:
    if getattr(args, "no_session_map", False):
        return None
    return sessionmap.resolve_path(getattr(args, "session_map", None))


def _write_map(path: str | None, name: str, region: str | None, vpc: str | None, sessions: list[dict]) -> None:
    if not path:
        return
    try:
        sessionmap.write(path, sessionmap.build(name, region, vpc, sessions))
    except OSError as exc:
        _warn(f"cannot write session map {path}: {exc.strerror or exc} "
              f"(set --session-map, {C.SESSION_MAP_ENV}, or --no-session-map)")


def _clients(args):
    if args.max_attempts is not None and args.max_attempts < 1:
        raise UsageError(f"invalid --max-attempts {args.max_attempts}: must be at least 1")
    if args.region:
        validate_region(args.region)
    return clients_mod.make_clients(args.region, args.profile, args.retry_mode, args.max_attempts)


def _show_plan(plan: Plan, opts: Options, console, title: str, *, prompting: bool) -> None:
    """Text: the plan on stdout. JSON: stdout is kept for the document; the table goes to
    stderr only when a person is about to be asked to confirm it."""
    if not opts.as_json:
        render_plan(console, plan, title=title, dry_run=opts.dry_run)
    elif prompting:
        render_plan(make_console(sys.stderr), plan, title=title, dry_run=opts.dry_run)


def _print_doc(doc: dict, opts: Options) -> None:
    if opts.json_lines:
        import json

        print(json.dumps(doc, sort_keys=True, default=str), flush=True)
    else:
        print_json(doc)


def undo_command(name: str, region: str | None, profile: str | None) -> str:
    words = ["appliance", "deprovision", "aws", "--name", name]
    if region:
        words += ["--region", region]
    if profile:
        words += ["--profile", profile]
    return shlex.join(words)


# -- provision ---------------------------------------------------------------------------------


def reconcile_once(spec: DeploymentSpec, clients, opts: Options, console, type_cache: dict | None = None) -> int:
    """Check, discover, plan, show the plan, confirm and apply it (unless dry run), show the
    summary. Returns the exit code; raises ProvisionError for a run that cannot go on."""
    ec2 = clients.ec2
    preflight.check(clients, spec)
    state = fetch_state(ec2, spec.name)
    conflicts = state.vpc_conflicts(spec.vpc)
    if conflicts:
        raise UsageError(f"deployment {spec.name} already has resources in another VPC: "
                         f"{', '.join(conflicts[:3])}; use another --name")
    preflight.check_target_id(spec, state, clients.region)
    enis = discover(ec2, spec, state, type_cache)
    known = {e.id for e in enis}
    orphan_ids = sorted({s["NetworkInterfaceId"] for s in state.our_sessions} - known)
    orphans = lookup_enis(ec2, orphan_ids) if orphan_ids else {}
    plan = build_plan(spec, state, enis, {i: orphans.get(i) for i in orphan_ids})

    region = clients.region or "?"
    mode = "dry run" if opts.dry_run else "apply"
    title = f"Plan ({mode}) for deployment {spec.name} in {spec.vpc}, region {region}"
    prompting = bool(plan.changes) and not opts.dry_run and not opts.assume_yes and not plan.blockers
    _show_plan(plan, opts, console, title, prompting=prompting)
    if plan.blockers:
        raise ProvisionError(plan.blockers[0], exitcodes.ERROR)
    if opts.dry_run or not plan.changes:
        if opts.as_json:
            _print_doc(plan_document(plan, command="provision", region=clients.region, dry_run=opts.dry_run), opts)
        if not opts.dry_run:
            if not opts.as_json:
                console.print("No changes: the deployment already matches.")
            live = [i.info for i in plan.items if i.kind == "session" and i.action == "keep"]
            _write_map(opts.session_map, spec.name, clients.region, spec.vpc, live)
        return exitcodes.OK

    confirm(f"{len(plan.changes)} change(s) to deployment {spec.name} in {region}", assume_yes=opts.assume_yes)
    result = apply_plan(plan, ec2)
    if opts.as_json:
        _print_doc(plan_document(plan, command="provision", region=clients.region, dry_run=False, result=result,
                                 next_steps=opts.next_steps), opts)
    else:
        render_summary(console, result, next_steps=opts.next_steps)
    _write_map(opts.session_map, spec.name, clients.region, spec.vpc, result.live_sessions())
    if result.aborted is not None:
        raise result.aborted
    return result.exit_code


def watch(spec: DeploymentSpec, clients, opts: Options, console, interval: float,
          max_iterations: int | None = None, sleep=time.sleep) -> int:
    """Reconcile every ``interval`` seconds. Transient errors are reported and retried next round;
    usage and permission errors and interrupts stop the loop. Returns the last round's exit code."""
    type_cache: dict = {}
    iteration = 0
    code = exitcodes.OK
    say = make_console(sys.stderr) if opts.as_json else console
    while True:
        iteration += 1
        say.print(f"[bold]reconcile #{iteration}[/bold] at {time.strftime('%Y-%m-%d %H:%M:%S')}")
        try:
            code = reconcile_once(spec, clients, opts, console, type_cache)
        except ProvisionError as exc:
            if exc.code in (exitcodes.USAGE, exitcodes.DENIED, exitcodes.INTERRUPTED):
                raise
            print(f"appliance: error: {exc}", file=sys.stderr)
            code = exc.code
        if max_iterations is not None and iteration >= max_iterations:
            return code
        say.print(f"next reconcile in {interval:g}s (Ctrl-C to stop)")
        sleep(interval)


def provision(args, parser: argparse.ArgumentParser | None = None) -> int:
    spec = build_spec(args)
    if args.interval is not None and args.interval <= 0:
        raise UsageError(f"invalid --interval {args.interval:g}: must be a positive number of seconds")
    if args.interval is not None and not args.watch:
        raise UsageError("--interval only applies with --watch")
    yes = bool(getattr(args, "yes", False))
    if args.watch and not args.dry_run and not yes:
        raise UsageError("--watch applies changes every round without asking: add --yes (or --dry-run to only plan)")
    clients = _clients(args)
    console = make_console()
    finish = (command_line(["appliance", "provision", "aws"], parser, args) if parser is not None
              else "the same command")
    opts = Options(
        dry_run=args.dry_run,
        session_map=None if args.dry_run else _session_map_path(args),
        assume_yes=yes,
        as_json=wants_json(args),
        json_lines=wants_json(args) and args.watch,
        next_steps=NextSteps(finish=finish, undo=undo_command(spec.name, clients.region, args.profile)),
    )
    if args.watch:
        return watch(spec, clients, opts, console, interval=args.interval or 60.0,
                     max_iterations=args.max_iterations)
    return reconcile_once(spec, clients, opts, console)


# -- status ------------------------------------------------------------------------------------


def collect_status(ec2, name: str) -> tuple[MirrorState, list[dict]]:
    state = fetch_state(ec2, name)
    sessions = sorted(state.our_sessions, key=lambda s: (s.get("NetworkInterfaceId", ""), s["TrafficMirrorSessionId"]))
    enis = lookup_enis(ec2, [s["NetworkInterfaceId"] for s in sessions]) if sessions else {}
    rows = []
    for s in sessions:
        raw = enis.get(s["NetworkInterfaceId"])
        ips = []
        if raw:
            ips = [p["PrivateIpAddress"] for p in raw.get("PrivateIpAddresses", []) if p.get("PrivateIpAddress")]
            if not ips and raw.get("PrivateIpAddress"):
                ips = [raw["PrivateIpAddress"]]
            ips += [a["Ipv6Address"] for a in raw.get("Ipv6Addresses", []) if a.get("Ipv6Address")]
        rows.append({
            "session_id": s["TrafficMirrorSessionId"],
            "eni": s.get("NetworkInterfaceId"),
            "instance": ((raw or {}).get("Attachment") or {}).get("InstanceId"),
            "vni": s.get("VirtualNetworkId"),
            "session_number": s.get("SessionNumber"),
            "target": s.get("TrafficMirrorTargetId"),
            "filter": s.get("TrafficMirrorFilterId"),
            "packet_length": s.get("PacketLength"),
            "eni_state": (raw or {}).get("Status", "missing") if raw else "missing",
            "private_ips": ips,
        })
    return state, rows


def status(args, parser: argparse.ArgumentParser | None = None) -> int:
    name = validate_name(args.name)
    clients = _clients(args)
    state, rows = collect_status(clients.ec2, name)
    found = bool(rows or state.our_targets or state.our_filters)
    if wants_json(args):
        print_json({
            "cloud": "aws",
            "deployment": name,
            "region": clients.region,
            "found": found,
            "sessions": rows,
            "targets": [t["TrafficMirrorTargetId"] for t in state.our_targets],
            "filters": [f["TrafficMirrorFilterId"] for f in state.our_filters],
        })
    elif found:
        render_status(make_console(), name, rows, state.our_targets, state.our_filters)
    if not found:
        raise ProvisionError(f"no deployment {name!r} in region {clients.region or '?'}: nothing is tagged "
                             f"{C.TAG_DEPLOYMENT}={name} (check --name, --region and --profile)", exitcodes.NOT_FOUND)
    _write_map(_session_map_path(args), name, clients.region, None, rows)
    return exitcodes.OK


# -- deprovision -------------------------------------------------------------------------------


def deprovision(args, parser: argparse.ArgumentParser | None = None) -> int:
    name = validate_name(args.name)
    clients = _clients(args)
    console = make_console()
    as_json = wants_json(args)
    yes = bool(getattr(args, "yes", False))
    state = fetch_state(clients.ec2, name)
    plan = build_teardown_plan(state)
    region = clients.region or "?"
    opts = Options(dry_run=args.dry_run, assume_yes=yes, as_json=as_json)
    changes = plan.changes
    if not changes:
        if as_json:
            print_json(plan_document(plan, command="deprovision", region=clients.region, dry_run=args.dry_run))
        elif not plan.items:
            console.print(f"Nothing to delete: no resources tagged {C.TAG_DEPLOYMENT}={name} in region {region}.")
        else:
            render_plan(console, plan, title=f"Teardown of deployment {name}, region {region}", dry_run=args.dry_run)
            console.print("Nothing to delete: what remains is used by other deployments.")
        return exitcodes.OK
    mode = "dry run" if args.dry_run else "apply"
    _show_plan(plan, opts, console, f"Teardown ({mode}) of deployment {name}, region {region}",
               prompting=not args.dry_run and not yes)
    if args.dry_run:
        if as_json:
            print_json(plan_document(plan, command="deprovision", region=clients.region, dry_run=True))
        return exitcodes.OK
    confirm(f"{len(changes)} deletion(s) of deployment {name} in {region}", assume_yes=yes)
    result = apply_plan(plan, clients.ec2)
    finish = (command_line(["appliance", "deprovision", "aws"], parser, args) if parser is not None
              else undo_command(name, clients.region, args.profile))
    steps = NextSteps(finish=finish)
    if as_json:
        print_json(plan_document(plan, command="deprovision", region=clients.region, dry_run=False, result=result,
                                 next_steps=steps))
    else:
        render_summary(console, result, next_steps=steps)
    path = _session_map_path(args)
    if path and result.exit_code == exitcodes.OK:
        try:
            sessionmap.remove_if_deployment(path, name)
        except OSError as exc:
            _warn(f"cannot remove session map {path}: {exc.strerror or exc}")
    if result.aborted is not None:
        raise result.aborted
    return result.exit_code
