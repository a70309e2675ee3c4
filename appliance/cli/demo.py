"""`appliance demo` (what `make run` runs): embedded sample traffic through the real runtime
and a local Kafka broker; `--offline` replays it without Kafka."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    d = sub.add_parser("demo", help="run the appliance on embedded sample traffic through a "
                                    "local Kafka broker and print the pairs read back")
    d.add_argument("--offline", action="store_true",
                   help="skip Kafka: replay the sample capture and print the pairs")
    d.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from appliance import demo  # the broker, the runtime, sockets: only when it runs

    return demo.run_offline() if args.offline else demo.run_demo()
