"""The `appliance` parser and entry point: registers one module per command.

A command module has ``register(sub)``, which adds its parser(s) to the sub-command action
and sets ``func``. Command modules import only the standard library and this package at
module level; what a command needs (pydantic, the runtime, Kafka, rich) is imported when it
runs, so `appliance --help` starts in a few tens of milliseconds instead of most of a second.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from appliance import __version__
from appliance.cli import boot, config, demo, replay, resend, run
from appliance.cli.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CliError
from appliance.cli.parser import CommandParser

COMMANDS = (run, config, replay, resend, demo, boot)
# other packages' commands: register(provision_sub, deprovision_sub) or register(sub); they
# import appliance.cli for CliError, so they are imported here by name, when the parser is built
PROVISION_PLUGINS = ("provision.aws.cli", "provision.gcp.cli")
PLUGINS = ("tui.cli",)


def _plugin(name: str) -> object | None:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            return None  # that package is not installed
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="appliance",
        description="Cloud-native traffic mirroring appliance (Akto-compatible HTTP pairs on Kafka).")
    from appliance.core import describe  # light: says which core build loads, imports none

    parser.add_argument("--version", action="version", version=f"appliance {__version__} ({describe()})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    for command in COMMANDS:
        command.register(sub)
    provision = sub.add_parser("provision", help="create or reconcile cloud traffic mirroring")
    provision_sub = provision.add_subparsers(dest="cloud", metavar="CLOUD", required=True)
    deprovision = sub.add_parser("deprovision", help="remove what a deployment created")
    deprovision_sub = deprovision.add_subparsers(dest="cloud", metavar="CLOUD", required=True)
    for name in PROVISION_PLUGINS:
        module = _plugin(name)
        if module is not None:
            module.register(provision_sub, deprovision_sub)  # type: ignore[attr-defined]
    for name in PLUGINS:
        module = _plugin(name)
        if module is not None:
            module.register(sub)  # type: ignore[attr-defined]
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(func(args) or 0)
    except CliError as exc:
        print(f"appliance: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("appliance: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout closed by e.g. `| head`: not an error worth a traceback; keep the
        # interpreter from failing again when it flushes stdout at exit
        sys.stdout = None
        return EXIT_OK
