"""`appliance boot`: configure the runtime from cloud instance metadata, then start it.

This is what the appliance image's systemd unit runs. It reads the instance's metadata
(appliance/cloudmeta: AWS IMDSv2 user data and tags, or GCP instance attributes), turns it
into the runtime's environment variables, validates them exactly as ``appliance run`` would,
and hands over to ``appliance run`` in the same process. The precedence of the sources is in
appliance/cloudmeta/resolve.py.

Exit status: 1 when no metadata service answers (after a few short retries; a service
manager should retry), 2 when the metadata or the resulting configuration is invalid (a
restart cannot fix it), otherwise that of ``appliance run``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from appliance.cli import run
from appliance.cli.errors import CliError
from appliance.cli.parser import CommandParser, positive_float, positive_int

EXIT_UNREACHABLE = 1
EXIT_INVALID = 2


def register(sub: Any) -> None:
    p = sub.add_parser(
        "boot", help="read configuration from cloud instance metadata and start the runtime",
        description="Read the instance's metadata (AWS IMDSv2 user data and tags, or GCP instance "
                    "attributes), turn it into the runtime's environment variables, validate them "
                    "and start `appliance run`. Precedence: flags after `--` > process environment "
                    "> tags/attributes appliance-<var> > user data / attribute appliance-config > "
                    "APPLIANCE_MODE from the cloud > defaults.",
        epilog="Exit status: 1 metadata unreachable, 2 invalid metadata or configuration, "
               "otherwise that of `appliance run`.")
    p.add_argument("--cloud", choices=["aws", "gcp", "auto"], default=None,
                   help="which metadata service to read (default: $APPLIANCE_BOOT_CLOUD or auto: "
                        "AWS IMDS, then GCP)")
    p.add_argument("--print-env", action="store_true",
                   help="print the resolved variables (secrets masked) with where each came from, "
                        "check them, and exit without starting the runtime")
    p.add_argument("--timeout", type=positive_float, default=2.0, metavar="S",
                   help="timeout of one metadata request in seconds (default 2)")
    p.add_argument("--attempts", type=positive_int, default=3, metavar="N",
                   help="attempts before giving up on an unreachable metadata service (default 3)")
    # test and unusual-network hooks: also AWS_EC2_METADATA_SERVICE_ENDPOINT / GCE_METADATA_HOST,
    # the variables the AWS SDKs and google-auth read
    p.add_argument("--aws-endpoint", help=argparse.SUPPRESS)
    p.add_argument("--gcp-endpoint", help=argparse.SUPPRESS)
    p.add_argument("run_args", nargs="*", metavar="-- RUN-FLAGS",
                   help="flags passed to `appliance run` (they override everything)")
    p.set_defaults(func=cmd_boot)


def cmd_boot(args: argparse.Namespace) -> int:
    # urllib, email, pydantic: only when a boot really runs
    from appliance.cloudmeta import MetadataInvalid, MetadataUnreachable, aws, gcp
    from appliance.cloudmeta.resolve import resolve

    cloud = args.cloud or os.environ.get("APPLIANCE_BOOT_CLOUD", "auto").strip().lower() or "auto"
    if cloud not in ("aws", "gcp", "auto"):
        raise CliError(f"invalid APPLIANCE_BOOT_CLOUD = {cloud!r}: must be aws, gcp or auto",
                       EXIT_INVALID)
    try:
        res = resolve(cloud, aws_endpoint=aws.endpoint(args.aws_endpoint),
                      gcp_endpoint=gcp.endpoint(args.gcp_endpoint), timeout=args.timeout,
                      attempts=args.attempts)
    except MetadataUnreachable as exc:
        raise CliError(str(exc), EXIT_UNREACHABLE) from None
    except MetadataInvalid as exc:
        raise CliError(str(exc), EXIT_INVALID) from None
    if args.print_env:
        sys.stdout.write(res.render())
        sys.stdout.flush()
    try:
        res.validate(args.run_args)
    except MetadataInvalid as exc:
        raise CliError(str(exc), EXIT_INVALID) from None
    if args.print_env:
        return 0
    os.environ.update(res.env)
    for note in res.notes:
        print(f"appliance boot: note: {note}", file=sys.stderr)
    print(f"appliance boot: {res.summary()}; starting appliance run", file=sys.stderr, flush=True)
    return hand_over(args.run_args)


def hand_over(run_args: list[str]) -> int:
    """`appliance run RUN_ARGS` in this process (the environment is already set)."""
    parser = CommandParser(prog="appliance run")
    run.add_arguments(parser)
    return run.cmd_run(parser.parse_args(run_args))
