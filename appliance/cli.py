"""The `appliance` command line.

Each area registers its own sub-commands so that the packages stay independent:
``provision.aws.cli.register``, ``provision.gcp.cli.register`` (provision / deprovision),
``tui.cli.register`` (tui / status). A ``register`` function must not import heavy SDKs at
module level: the CLI has to start fast and work without optional extras installed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from appliance import __version__

EXIT_OK = 0
EXIT_ERROR = 1  # runtime failure (clear one-line message on stderr)
EXIT_USAGE = 2  # bad arguments or configuration
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """An error to print as one line on stderr, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR):
        super().__init__(message)
        self.code = code


def _optional_register(module: str, *args) -> None:
    if importlib.util.find_spec(module) is None:
        return
    importlib.import_module(module).register(*args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="appliance",
        description="Cloud-native traffic mirroring appliance (Akto-compatible HTTP pairs on Kafka).",
    )
    parser.add_argument("--version", action="version", version=f"appliance {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    from appliance import commands

    commands.register(sub)

    provision = sub.add_parser("provision", help="create or reconcile cloud traffic mirroring")
    provision_sub = provision.add_subparsers(dest="cloud", metavar="CLOUD", required=True)
    deprovision = sub.add_parser("deprovision", help="remove what a deployment created")
    deprovision_sub = deprovision.add_subparsers(dest="cloud", metavar="CLOUD", required=True)
    _optional_register("provision.aws.cli", provision_sub, deprovision_sub)
    _optional_register("provision.gcp.cli", provision_sub, deprovision_sub)
    _optional_register("tui.cli", sub)
    _optional_register("appliance.boot", sub)
    return parser


def main(argv: list[str] | None = None) -> int:
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
        # stdout closed by e.g. `| head`: not an error worth a traceback.
        try:
            sys.stdout = None  # type: ignore[assignment]
        finally:
            return EXIT_OK
