"""`appliance provision gcp`, `appliance provision gcp status`, `appliance deprovision gcp`.

No google.cloud import here: the library is loaded only when a GCP command runs, so the
`appliance` CLI starts fast and works without the `gcp` extra installed.
"""

from __future__ import annotations

import argparse
import os
import shlex
from typing import Any

from provision import exitcodes
from provision.command import NextSteps, add_approve_flag, add_output_flags, command_line, guarded, wants_json
from provision.gcp.errors import GcpError

ENDPOINT_ENV = "APPLIANCE_GCP_API_ENDPOINT"

EPILOG = exitcodes.epilog() + (
    "\nBefore planning, the project, region and every resource named on the command line are read\n"
    "(a missing one is reported with its flag, exit 2). An apply asks for confirmation unless --yes\n"
    "is given; without a terminal on stdin it refuses rather than wait.\n"
    "see provision/gcp/README.md for examples and provision/gcp/IAM.md for permissions"
)


def _common(p: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    d: dict[str, Any] = {"default": argparse.SUPPRESS} if suppress else {}
    p.add_argument("--project", help="project id (default: $CLOUDSDK_CORE_PROJECT or $GOOGLE_CLOUD_PROJECT)", **d)
    p.add_argument("--region", help="region, e.g. us-central1 (default: $CLOUDSDK_COMPUTE_REGION)", **d)
    add_output_flags(p, suppress=suppress)
    p.add_argument(
        "--timeout", metavar="SECONDS", help="give up waiting for one operation after this long (default 900)", **d
    )
    # Advanced: another Compute endpoint (Private Service Connect, an emulator, the tests).
    # A plain http:// endpoint is used with anonymous credentials. Also $APPLIANCE_GCP_API_ENDPOINT.
    p.add_argument("--api-endpoint", help=argparse.SUPPRESS, **d)


def register(provision_sub, deprovision_sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = provision_sub.add_parser(
        "gcp",
        help="GCP Packet Mirroring: collector load balancer + mirroring policy",
        description=(
            "Create or reconcile a GCP Packet Mirroring deployment: a packet mirroring policy that "
            "sends the traffic of subnets, tagged VMs or instances to a collector internal load "
            "balancer, optionally creating the collector stack (instance template, regional managed "
            "instance group with autoscaler, /healthz health check, internal backend service, "
            "mirroring-collector forwarding rule, firewall rules). Re-running changes nothing."
        ),
        epilog=EPILOG,
        formatter_class=fmt,
    )
    _common(p)
    p.add_argument("--network", help="VPC network name or URL (required)")
    p.add_argument("--name", help="deployment name; prefixes every resource (default: mirror-appliance)")
    src = p.add_argument_group("mirrored sources (at least one)")
    src.add_argument("--subnet", action="append", default=[], help="mirror a subnet (name or URL; repeatable; at most 5)")
    src.add_argument("--tag", action="append", default=[], help="mirror VMs with this network tag (repeatable)")
    src.add_argument("--instance", action="append", default=[], help="mirror a VM, as ZONE/NAME or URL (repeatable; at most 50)")
    flt = p.add_argument_group("filter")
    flt.add_argument("--cidr", action="append", default=[], help="only traffic to/from this range (repeatable)")
    flt.add_argument("--protocol", action="append", default=[], help="tcp, udp, icmp, esp, ah, ipip, sctp or a number (repeatable)")
    flt.add_argument("--direction", default="both", help="ingress, egress or both (default both)")
    flt.add_argument("--priority", default="1000", help="policy priority 0-65535, lower wins (default 1000)")
    col = p.add_argument_group("collector (exactly one of --collector-ilb / --create-collector)")
    col.add_argument("--collector-ilb", metavar="FORWARDING_RULE", help="existing INTERNAL forwarding rule with isMirroringCollector")
    col.add_argument("--create-collector", action="store_true", help="create the appliance collector stack")
    col.add_argument("--image", help="appliance VM image (name, URL or projects/P/global/images/family/F)")
    col.add_argument("--machine-type", default="e2-standard-2", help="collector machine type (default e2-standard-2)")
    col.add_argument("--min", default="1", dest="min_replicas", help="minimum collector instances (default 1)")
    col.add_argument("--max", default="2", dest="max_replicas", help="maximum collector instances (default 2)")
    col.add_argument("--collector-subnet", help="subnet for the load balancer address and collector VMs (default: first --subnet)")
    col.add_argument("--kafka-bootstrap", help="Kafka bootstrap servers HOST:PORT[,...] (AKTO_KAFKA_BROKER_MAL)")
    col.add_argument("--appliance-env", action="append", default=[], metavar="NAME=VALUE", help="extra appliance setting, e.g. AKTO_TRAFFIC_BATCH_SIZE=100 (repeatable)")
    col.add_argument("--health-port", default="8000", help="appliance HTTP port serving /healthz (default 8000)")
    col.add_argument("--service-account", help="service account email for collector VMs (default: none)")
    col.add_argument("--target-cpu", default="0.6", help="autoscaler CPU utilisation target (default 0.6)")
    p.add_argument("--dry-run", action="store_true", help="print the plan; make no changes")
    add_approve_flag(p)
    p.set_defaults(func=_handler(_provision, p))

    sub = p.add_subparsers(dest="gcp_command", metavar="{status}")
    st = sub.add_parser(
        "status",
        help="show a deployment: policy, mirrored resources, collector health",
        description="Show a deployment's packet mirroring policy, mirrored resources and collector "
        "health (backend service getHealth). Without --name, list deployments in the region.",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    _common(st, suppress=True)
    st.add_argument("--name", default=argparse.SUPPRESS, help="deployment name (omit to list deployments)")
    st.set_defaults(func=_handler(_status, st))

    d = deprovision_sub.add_parser(
        "gcp",
        help="delete what a GCP deployment created",
        description="Delete, in reverse dependency order, exactly the resources the deployment created "
        "(policy, forwarding rule, backend service, autoscaler, instance group, instance template, "
        "health check, firewall rules). Resources it did not create are never touched.",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    _common(d)
    d.add_argument("--name", required=True, help="deployment name")
    d.add_argument("--dry-run", action="store_true", help="show what would be deleted; delete nothing")
    add_approve_flag(d)
    d.set_defaults(func=_handler(_deprovision, d))


# ----------------------------------------------------------------------------------- handlers


def _handler(fn, parser: argparse.ArgumentParser):
    """The guarded handler: every failure becomes one line and an exit code (provision.command)."""

    def run(args) -> int:
        return fn(args, parser)

    run.__name__ = run.__qualname__ = fn.__name__
    return guarded(run)


def _int(value, flag: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise GcpError(f"invalid {flag} {value!r}: expected an integer", exitcodes.USAGE) from None


def _float(value, flag: str) -> float:
    try:
        return float(str(value).strip())
    except ValueError:
        raise GcpError(f"invalid {flag} {value!r}: expected a number", exitcodes.USAGE) from None


def _location(args):
    from provision.gcp import spec as S

    project = getattr(args, "project", None) or os.environ.get("CLOUDSDK_CORE_PROJECT") or os.environ.get("GOOGLE_CLOUD_PROJECT")
    region = getattr(args, "region", None) or os.environ.get("CLOUDSDK_COMPUTE_REGION")
    return S.validate_project(project), S.validate_region(region)


def _endpoint(args) -> str | None:
    return getattr(args, "api_endpoint", None) or os.environ.get(ENDPOINT_ENV) or None


def _api(args, project: str, region: str):
    from provision.gcp.compute import Compute

    timeout = getattr(args, "timeout", None)
    timeout = _float(timeout, "--timeout") if timeout is not None else 900.0
    if timeout <= 0:
        raise GcpError(f"invalid --timeout {timeout}: must be positive", exitcodes.USAGE)
    return Compute(project, region, _endpoint(args), timeout=timeout)


def _deprovision_command(project: str, region: str, name: str, args) -> str:
    words = ["appliance", "deprovision", "gcp", "--project", project, "--region", region, "--name", name]
    if getattr(args, "api_endpoint", None):
        words += ["--api-endpoint", args.api_endpoint]
    return shlex.join(words)


def spec_from_args(args):
    """The validated DeploymentSpec of ``appliance provision gcp`` (no API call)."""
    from provision.gcp import spec as S

    project, region = _location(args)
    return S.build_spec(
        project=project,
        region=region,
        network=args.network,
        name=args.name or S.DEFAULT_NAME,
        subnets=args.subnet,
        tags=args.tag,
        instances=args.instance,
        cidrs=args.cidr,
        protocols=args.protocol,
        direction=args.direction,
        priority=_int(args.priority, "--priority"),
        collector_ilb=args.collector_ilb,
        create_collector=args.create_collector,
        image=args.image,
        machine_type=args.machine_type,
        min_replicas=_int(args.min_replicas, "--min"),
        max_replicas=_int(args.max_replicas, "--max"),
        collector_subnet=args.collector_subnet,
        health_port=_int(args.health_port, "--health-port"),
        kafka_bootstrap=args.kafka_bootstrap,
        service_account=args.service_account,
        target_cpu=_float(args.target_cpu, "--target-cpu"),
        appliance_env=args.appliance_env,
    )


def _provision(args, parser) -> int:
    from provision.gcp import provisioner
    from provision.gcp.report import Output

    spec = spec_from_args(args)
    api = _api(args, spec.project, spec.region)
    steps = NextSteps(finish=command_line(["appliance", "provision", "gcp"], parser, args),
                      undo=_deprovision_command(spec.project, spec.region, spec.name, args))
    return provisioner.provision(api, spec, Output(), dry_run=args.dry_run, as_json=wants_json(args),
                                 assume_yes=args.yes, next_steps=steps)


def _status(args, parser) -> int:
    from provision.gcp import spec as S
    from provision.gcp import status
    from provision.gcp.report import Output

    project, region = _location(args)
    name = getattr(args, "name", None)
    if name:
        S.validate_name(name)
    api = _api(args, project, region)
    if not name:
        return status.list_deployments(api, Output(), as_json=wants_json(args))
    return status.status(api, name, Output(), as_json=wants_json(args))


def _deprovision(args, parser) -> int:
    from provision.gcp import spec as S
    from provision.gcp import teardown
    from provision.gcp.report import Output

    project, region = _location(args)
    S.validate_name(args.name)
    api = _api(args, project, region)
    steps = NextSteps(finish=command_line(["appliance", "deprovision", "gcp"], parser, args))
    return teardown.deprovision(api, args.name, Output(), dry_run=args.dry_run, as_json=wants_json(args),
                                assume_yes=args.yes, next_steps=steps)
