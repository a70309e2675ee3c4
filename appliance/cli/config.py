"""`appliance config`: the effective configuration (environment + flags), secrets masked."""

from __future__ import annotations

import argparse
import json
from typing import Any

from appliance.cli.flags import add_settings_flags, settings_from_args


def register(sub: Any) -> None:
    c = sub.add_parser("config", help="print the effective configuration (secrets masked)",
                       description="Print every setting's effective value: the environment "
                                   "(Akto's variable names where Akto has one), overridden by "
                                   "the flags given, as `appliance run` would use them.")
    add_settings_flags(c)
    c.add_argument("--json", action="store_true", help="as JSON")
    c.set_defaults(func=cmd_config)


def cmd_config(args: argparse.Namespace) -> int:
    from appliance.config import IGNORED_AKTO_VARIABLES, ignored_variables

    shown = settings_from_args(args).display()
    ignored = {n: IGNORED_AKTO_VARIABLES[n] for n in ignored_variables()}
    if args.json:
        print(json.dumps(shown, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table("variable", "value", title="effective configuration")
    for k, v in shown.items():
        t.add_row(k, str(v))
    console = Console()
    console.print(t)
    for name, why in ignored.items():
        console.print(f"{name} is set and ignored: {why}")
    return 0
