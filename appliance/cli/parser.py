"""argparse, with the conventions every command follows.

* A bad flag is reported by the command it was given to, with that command's usage
  (``appliance run --foo`` prints ``run``'s usage, not the top level's).
* Flags are never abbreviated: the flag in an error is the flag that was typed, and adding
  a flag never breaks a script that abbreviated another.
* Typed values (``positive_int``, ``positive_float``, ``byte_size``) explain what they expect
  and echo the value, e.g. ``argument --max-body: '-5' is not a positive number of bytes``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any


class CommandParser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None,
                         ) -> tuple[argparse.Namespace, list[str]]:
        ns, extras = super().parse_known_args(args, namespace)
        if extras:
            # here, not in the parent parser: the usage shown is this command's
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return ns, extras


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not more than 0")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds more than 0")
    return value


def method_list(text: str) -> tuple[str, ...]:
    """A comma-separated list of HTTP method names (tokens), upper-cased."""
    out = []
    for m in filter(None, (x.strip() for x in text.split(","))):
        if not all(c.isalnum() or c in "!#$%&'*+.^_`|~-" for c in m) or not m.isascii():
            raise argparse.ArgumentTypeError(f"{m!r} is not a method name")
        out.append(m.upper())
    return tuple(out)


def byte_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of bytes")
    return value
