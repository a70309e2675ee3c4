"""`appliance tui` and `appliance status`.

Nothing heavy is imported here at module level: `appliance --help` must stay fast and work
without the ``tui`` extra. `status` needs only the standard library and rich (a base
dependency); `tui` imports Textual and httpx when it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from tui.client import DEFAULT_TIMEOUT, DEFAULT_URL, TOKEN_ENV

EXIT_UNREACHABLE = 1


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser(
        "tui", help="live console: sessions, throughput, memory, Kafka (one appliance or a fleet)",
        description="Watch one or more running appliances live. Reads GET /status on each; "
                    "with several --url a fleet view opens first (Enter drills down). "
                    f"Press ? inside for the keys. {TOKEN_ENV}, when set, is sent as a "
                    "bearer token (for appliances that protect /status).")
    t.add_argument("--url", action="append", metavar="URL",
                   help=f"appliance HTTP endpoint (default {DEFAULT_URL}); repeat for a fleet")
    t.add_argument("--interval", type=_positive, default=1.0, metavar="S",
                   help="seconds between polls of each appliance (default 1, minimum 0.2)")
    t.add_argument("--timeout", type=_positive, default=DEFAULT_TIMEOUT, metavar="S",
                   help=f"per-request timeout in seconds (default {DEFAULT_TIMEOUT:g})")
    t.add_argument("--history", type=_positive, default=300.0, metavar="S",
                   help="seconds of throughput history in the plots (default 300)")
    t.set_defaults(func=cmd_tui)

    s = sub.add_parser(
        "status", help="print an appliance's status once (table, or JSON for scripts)",
        description="Read GET /status once and print it as a table, or as JSON with --json. "
                    "Exit status 1 with one line on stderr when the appliance cannot be read "
                    f"or what answers is not an appliance. {TOKEN_ENV}, when set, is sent as "
                    "a bearer token (for appliances that protect /status).")
    s.add_argument("--url", default=DEFAULT_URL, metavar="URL",
                   help=f"appliance HTTP endpoint (default {DEFAULT_URL})")
    s.add_argument("--json", action="store_true",
                   help="print the /status document as JSON (as served, for jq and scripts)")
    s.add_argument("--timeout", type=_positive, default=DEFAULT_TIMEOUT, metavar="S",
                   help=f"request timeout in seconds (default {DEFAULT_TIMEOUT:g})")
    s.set_defaults(func=cmd_status)


def _cli_error(message: str, code: int) -> Exception:
    from appliance.cli import CliError

    return CliError(message, code)


def _normalise(urls: list[str]) -> list[str]:
    from tui.client import base_url

    out = []
    for url in urls:
        try:
            out.append(base_url(url))
        except ValueError as exc:
            raise _cli_error(f"--url: {exc}", 2) from None
    return list(dict.fromkeys(out))


def cmd_status(args: argparse.Namespace) -> int:
    from tui.client import StatusError, fetch

    (url,) = _normalise([args.url])
    try:
        # the tables do not show the rate history: do not fetch it (--json: as served)
        doc = fetch(url, timeout=args.timeout, history=None if args.json else 0,
                    token=os.environ.get(TOKEN_ENV) or None)
    except StatusError as exc:
        raise _cli_error(f"cannot read {url}/status: {exc}", EXIT_UNREACHABLE) from None
    if args.json:
        json.dump(doc, sys.stdout, indent=2, sort_keys=False)
        sys.stdout.write("\n")
        sys.stdout.flush()
        return 0
    from rich.console import Console

    from tui.render import status_report

    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # piped into a file or a pager: do not squeeze the tables to 80 columns
        console = Console(highlight=False, width=160)
    console.print(status_report(doc, url, console.width))
    return 0


def cmd_tui(args: argparse.Namespace) -> int:
    urls = _normalise(args.url or [DEFAULT_URL])
    # Textual draws on stderr and reads keys from stdin.
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise _cli_error("`appliance tui` needs a terminal; use `appliance status [--json]` "
                         "in scripts", 2)
    try:
        from tui.app import ConsoleApp
    except ImportError as exc:
        raise _cli_error(f"the console needs the 'tui' extra ({exc.name} is missing): "
                         "pip install 'mirror-appliance[tui]'", 2) from None
    app = ConsoleApp(urls, interval=max(0.2, args.interval), timeout=args.timeout,
                     history_s=args.history, token=os.environ.get(TOKEN_ENV) or None)
    app.run()
    return app.return_code or 0
