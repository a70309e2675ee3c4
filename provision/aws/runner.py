"""The three commands: provision (once or --watch), status, deprovision.

Imported only when a command runs (it pulls in botocore and rich); ``cli.register`` stays light.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass

from appliance.cli import CliError
from provision.aws import clients as clients_mod
from provision.aws import constants as C
from provision.aws import sessionmap
from provision.aws.apply import apply_plan
from provision.aws.discovery import discover, lookup_enis
from provision.aws.errors import EXIT_DENIED, EXIT_ERROR, EXIT_OK, EXIT_USAGE, AwsFailure
from provision.aws.planner import build_plan, build_teardown_plan
from provision.aws.render import make_console, render_plan, render_status, render_summary
from provision.aws.spec import DeploymentSpec, UsageError, build_spec, validate_name
from provision.aws.state import MirrorState, fetch_state, paginate


@dataclass
class Options:
    dry_run: bool = False
    session_map: str | None = None  # None: do not write


def _cli_error(exc: AwsFailure | UsageError) -> CliError:
    if isinstance(exc, UsageError):
        return CliError(str(exc), EXIT_USAGE)
    return CliError(str(exc), exc.exit_code)


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
        raise CliError("--max-attempts must be at least 1", EXIT_USAGE)
    try:
        return clients_mod.make_clients(args.region, args.profile, args.retry_mode, args.max_attempts)
    except AwsFailure as exc:
        raise _cli_error(exc) from None


def check_nlb_listener(elbv2, arn: str) -> str | None:
    """None if the NLB has a UDP (or TCP_UDP) listener on 4789, else the problem in one line."""
    listeners = paginate(elbv2, "describe_listeners", "Listeners", LoadBalancerArn=arn)
    for listener in listeners:
        if listener.get("Port") == C.VXLAN_PORT and listener.get("Protocol") in ("UDP", "TCP_UDP"):
            return None
    found = ", ".join(f"{l.get('Protocol')}:{l.get('Port')}" for l in listeners) or "none"
    return (f"NLB {arn} has no UDP listener on port {C.VXLAN_PORT} (listeners: {found}), so mirrored VXLAN "
            "traffic would be dropped: add one, or pass --skip-listener-check")


# -- provision ---------------------------------------------------------------------------------


def reconcile_once(spec: DeploymentSpec, clients, opts: Options, console, type_cache: dict | None = None) -> int:
    """Discover, plan, print the plan, apply it (unless dry run), print the summary. Returns the exit code."""
    ec2 = clients.ec2
    try:
        state = fetch_state(ec2, spec.name)
        conflicts = state.vpc_conflicts(spec.vpc)
        if conflicts:
            raise UsageError(f"deployment {spec.name} already has resources in another VPC: "
                             f"{', '.join(conflicts[:3])}; use another --name")
        blockers = []
        if spec.target.kind == "nlb" and spec.check_listener:
            problem = check_nlb_listener(clients.elbv2, spec.target.value)
            if problem:
                blockers.append(problem)
        enis = discover(ec2, spec, state, type_cache)
        known = {e.id for e in enis}
        orphan_ids = sorted({s["NetworkInterfaceId"] for s in state.our_sessions} - known)
        orphans = lookup_enis(ec2, orphan_ids) if orphan_ids else {}
        plan = build_plan(spec, state, enis, {i: orphans.get(i) for i in orphan_ids})
    except (AwsFailure, UsageError) as exc:
        raise _cli_error(exc) from None
    plan.blockers += blockers

    mode = "dry run" if opts.dry_run else "apply"
    title = f"Plan ({mode}) for deployment {spec.name} in {spec.vpc}, region {clients.region or '?'}"
    render_plan(console, plan, title=title, dry_run=opts.dry_run)
    if plan.blockers:
        raise CliError(plan.blockers[0], EXIT_ERROR)
    if opts.dry_run:
        return EXIT_OK
    if not plan.changes:
        console.print("No changes: the deployment already matches.")
        live = [i.info for i in plan.items if i.kind == "session" and i.action == "keep"]
        _write_map(opts.session_map, spec.name, clients.region, spec.vpc, live)
        return EXIT_OK
    result = apply_plan(plan, ec2)
    render_summary(console, result)
    _write_map(opts.session_map, spec.name, clients.region, spec.vpc, result.live_sessions())
    if result.aborted is not None:
        raise CliError(str(result.aborted), result.exit_code)
    return result.exit_code


def watch(spec: DeploymentSpec, clients, opts: Options, console, interval: float,
          max_iterations: int | None = None, sleep=time.sleep) -> int:
    """Reconcile every ``interval`` seconds. Transient errors are reported and retried next round;
    usage and permission errors stop the loop. Returns the last iteration's exit code."""
    type_cache: dict = {}
    iteration = 0
    code = EXIT_OK
    while True:
        iteration += 1
        console.print(f"[bold]reconcile #{iteration}[/bold] at {time.strftime('%Y-%m-%d %H:%M:%S')}")
        try:
            code = reconcile_once(spec, clients, opts, console, type_cache)
        except CliError as exc:
            if exc.code in (EXIT_USAGE, EXIT_DENIED):
                raise
            print(f"appliance: error: {exc}", file=sys.stderr)
            code = exc.code
        if max_iterations is not None and iteration >= max_iterations:
            return code
        console.print(f"next reconcile in {interval:g}s (Ctrl-C to stop)")
        sleep(interval)


def provision(args) -> int:
    try:
        spec = build_spec(args)
    except UsageError as exc:
        raise _cli_error(exc) from None
    if args.interval is not None and args.interval <= 0:
        raise CliError("--interval must be a positive number of seconds", EXIT_USAGE)
    if args.interval is not None and not args.watch:
        raise CliError("--interval only applies with --watch", EXIT_USAGE)
    clients = _clients(args)
    console = make_console()
    opts = Options(dry_run=args.dry_run, session_map=None if args.dry_run else _session_map_path(args))
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


def status(args) -> int:
    try:
        name = validate_name(args.name)
    except UsageError as exc:
        raise _cli_error(exc) from None
    clients = _clients(args)
    try:
        state, rows = collect_status(clients.ec2, name)
    except AwsFailure as exc:
        raise _cli_error(exc) from None
    if getattr(args, "json", False):
        doc = {
            "deployment": name,
            "region": clients.region,
            "sessions": rows,
            "targets": [t["TrafficMirrorTargetId"] for t in state.our_targets],
            "filters": [f["TrafficMirrorFilterId"] for f in state.our_filters],
        }
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        render_status(make_console(), name, rows, state.our_targets, state.our_filters)
    if rows or state.our_targets or state.our_filters:
        _write_map(_session_map_path(args), name, clients.region, None, rows)
    return EXIT_OK


# -- deprovision -------------------------------------------------------------------------------


def deprovision(args) -> int:
    try:
        name = validate_name(args.name)
    except UsageError as exc:
        raise _cli_error(exc) from None
    clients = _clients(args)
    console = make_console()
    try:
        state = fetch_state(clients.ec2, name)
    except AwsFailure as exc:
        raise _cli_error(exc) from None
    plan = build_teardown_plan(state)
    mode = "dry run" if args.dry_run else "apply"
    if not plan.items:
        console.print(f"Nothing to delete: no resources tagged {C.TAG_DEPLOYMENT}={name} in region {clients.region or '?'}.")
        return EXIT_OK
    render_plan(console, plan, title=f"Teardown ({mode}) of deployment {name}, region {clients.region or '?'}",
                dry_run=args.dry_run)
    if args.dry_run:
        return EXIT_OK
    result = apply_plan(plan, clients.ec2)
    render_summary(console, result)
    path = _session_map_path(args)
    if path and result.exit_code == EXIT_OK:
        try:
            sessionmap.remove_if_deployment(path, name)
        except OSError as exc:
            _warn(f"cannot remove session map {path}: {exc.strerror or exc}")
    if result.aborted is not None:
        raise CliError(str(result.aborted), result.exit_code)
    return result.exit_code
