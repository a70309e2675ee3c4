"""``appliance provision aws`` / ``appliance provision aws status`` / ``appliance deprovision aws``.

Only argparse here: boto3, botocore and rich are imported when a command runs, so the CLI
starts fast and works without the ``aws`` extra installed.
"""

from __future__ import annotations

import argparse

from provision import exitcodes
from provision.command import add_approve_flag, add_output_flags, guarded

EXIT_CODES = exitcodes.epilog()

PROVISION_EPILOG = EXIT_CODES + """
examples:
  appliance provision aws --vpc vpc-0a1b2c3d4e5f67890 --name prod --region us-east-1 \\
      --target-nlb arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/mirror/0123456789abcdef --dry-run
  appliance provision aws --vpc vpc-0a1b2c3d4e5f67890 --name prod --tag team=payments --ports 443,8000-8100
  appliance provision aws --vpc vpc-0a1b2c3d4e5f67890 --name prod --yes --watch --interval 60
  appliance provision aws status --name prod --output json
  appliance deprovision aws --name prod

Before planning, every resource named on the command line is looked up (a missing one is
reported with its flag, exit 2). An apply asks for confirmation unless --yes is given; without
a terminal on stdin it refuses rather than wait. See provision/aws/README.md for the IAM policy
and the session map.
"""


def _common(parser: argparse.ArgumentParser, *, sub: bool = False, name_required: bool = False) -> None:
    """Options shared by all three commands. On the ``status`` sub-parser they default to
    SUPPRESS so values given before ``status`` are not overwritten by defaults."""
    d = (lambda v: argparse.SUPPRESS) if sub else (lambda v: v)
    if name_required:
        parser.add_argument("--name", required=True, help="deployment name (required: teardown is never implicit)")
    else:
        parser.add_argument("--name", default=d("appliance"),
                            help="deployment name; tags everything created (default: appliance)")
    parser.add_argument("--region", default=d(None), help="AWS region (default: from the profile / environment)")
    parser.add_argument("--profile", default=d(None), help="AWS named profile")
    parser.add_argument("--retry-mode", choices=("standard", "adaptive"), default=d(None),
                        help="botocore retry mode for throttling (default: $AWS_RETRY_MODE or standard)")
    parser.add_argument("--max-attempts", type=int, default=d(None), metavar="N",
                        help="total attempts per AWS call, including retries (default: $AWS_MAX_ATTEMPTS or 10)")
    parser.add_argument("--session-map", default=d(None), metavar="PATH",
                        help="where to write the VNI -> session map (default: $APPLIANCE_SESSION_MAP or "
                             "/var/lib/appliance/sessions.json)")
    parser.add_argument("--no-session-map", action="store_true", default=d(False),
                        help="do not write (or remove) the session map")
    add_output_flags(parser, suppress=sub)


def register(provision_sub, deprovision_sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = provision_sub.add_parser(
        "aws",
        help="create or reconcile AWS VPC Traffic Mirroring",
        description="Mirror the traffic of a VPC's ENIs to the appliance: discover sources, create or reuse "
                    "the target, the filter and its rules, and one session per ENI. Re-running reconciles.",
        epilog=PROVISION_EPILOG,
        formatter_class=fmt,
    )
    _common(p)
    p.add_argument("--vpc", metavar="VPC_ID", help="VPC whose ENIs are mirrored, e.g. vpc-0a1b2c3d4e5f67890 (required)")

    sel = p.add_argument_group("source selection")
    sel.add_argument("--subnet", action="append", metavar="SUBNET_ID", help="only ENIs in this subnet (repeatable)")
    sel.add_argument("--tag", action="append", metavar="KEY=VALUE",
                     help="only ENIs whose ENI or instance has this tag (repeatable; KEY alone: any value; "
                          "same key repeated: any of the values)")
    sel.add_argument("--instance", action="append", metavar="INSTANCE_ID", help="only ENIs of this instance (repeatable)")
    sel.add_argument("--exclude-tag", action="append", metavar="KEY=VALUE",
                     help="never mirror ENIs whose ENI or instance has this tag (repeatable)")
    sel.add_argument("--exclude-instance", action="append", metavar="INSTANCE_ID", help="never mirror this instance")
    sel.add_argument("--skip-instance-type-check", action="store_true",
                     help="do not skip instance types documented as unsupported; let AWS decide per ENI")

    tgt = p.add_argument_group("target (one of; default on re-run: the deployment's current target)")
    ex = tgt.add_mutually_exclusive_group()
    ex.add_argument("--target-nlb", metavar="ARN", help="network load balancer with a UDP 4789 listener")
    ex.add_argument("--target-eni", metavar="ENI_ID", help="network interface of a collector instance")
    ex.add_argument("--target-id", metavar="TMT_ID", help="existing traffic mirror target (never deleted)")
    tgt.add_argument("--skip-listener-check", action="store_true",
                     help="do not verify that the NLB has a UDP listener on port 4789")

    flt = p.add_argument_group("filter (default: all TCP, both directions, DNS excluded)")
    flt.add_argument("--ports", action="append", metavar="LIST",
                     help="service ports, e.g. 443,8000-8100 (matched as local or remote port; each entry takes 4 of the 10 filter rules)")
    flt.add_argument("--cidr", action="append", metavar="CIDR",
                     help="only traffic with peers in this CIDR (repeatable; default 0.0.0.0/0; ::/0 for IPv6)")
    flt.add_argument("--protocol", action="append", metavar="PROTO",
                     help="tcp (default), udp, all, or an IANA number; repeatable or comma-separated")
    flt.add_argument("--include-dns", action="store_true", help="do not add the reject rules for port 53")

    ses = p.add_argument_group("sessions")
    ses.add_argument("--vni", type=int, metavar="N",
                     help="VXLAN network id for all sessions (default: derived from --name, 1..16777215)")
    ses.add_argument("--vni-mode", choices=("shared", "per-session"), default="shared",
                     help="one VNI for the deployment (default) or a distinct stable VNI per session")
    ses.add_argument("--packet-length", type=int, metavar="BYTES",
                     help="truncate mirrored packets to this many bytes (1-8500; default: whole packet)")

    run = p.add_argument_group("run")
    run.add_argument("--dry-run", action="store_true", help="print the plan; call no mutating API")
    add_approve_flag(run)
    run.add_argument("--watch", action="store_true", help="keep reconciling (new instances are attached); needs --yes")
    run.add_argument("--interval", type=float, metavar="S", help="seconds between reconciles with --watch (default 60)")
    run.add_argument("--max-iterations", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=_handler("provision", p))

    sub = p.add_subparsers(dest="aws_command", metavar="{status}")
    st = sub.add_parser(
        "status",
        help="list the deployment's sessions and write the session map",
        description="List the sessions of a deployment with ENI, instance, VNI and session number, and "
                    "write the VNI -> session map for the runtime.",
        epilog=EXIT_CODES,
        formatter_class=fmt,
    )
    _common(st, sub=True)
    st.set_defaults(func=_handler("status", st))

    d = deprovision_sub.add_parser(
        "aws",
        help="delete what an AWS deployment created",
        description="Delete exactly the resources tagged with the deployment name, in dependency order: "
                    "sessions, filter rules and filter, then a target the deployment created. "
                    "Targets it reused are never deleted.",
        epilog=EXIT_CODES,
        formatter_class=fmt,
    )
    _common(d, name_required=True)
    d.add_argument("--dry-run", action="store_true", help="print what would be deleted; delete nothing")
    add_approve_flag(d)
    d.set_defaults(func=_handler("deprovision", d))


def _handler(command: str, parser: argparse.ArgumentParser):
    """The guarded handler of ``command``; runner (botocore, rich) is imported only when it runs."""

    def run(args) -> int:
        from provision.aws import runner

        return getattr(runner, command)(args, parser)

    run.__name__ = run.__qualname__ = f"_{command}"
    return guarded(run)
