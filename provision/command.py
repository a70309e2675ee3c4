"""Plumbing shared by the AWS and GCP provisioning commands.

* the ``--output text|json`` and ``--yes``/``--auto-approve`` flags;
* the confirmation prompt before an apply (and the refusal when nobody can answer it);
* the guard that turns every exception of a command into one ``appliance: error:`` line and an
  exit code from :mod:`provision.exitcodes` (never a traceback);
* the exact commands that finish or undo a partial apply.

No cloud SDK is imported here: ``register`` functions use it while the CLI starts.
"""

from __future__ import annotations

import argparse
import functools
import shlex
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any

from provision import exitcodes
from provision.errors import ProvisionError, debugging, unexpected


# -- flags ---------------------------------------------------------------------------------------


def add_output_flags(parser: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    """``-o/--output text|json`` and its shorthand ``--json``. With ``suppress`` (a sub-command
    parser) an unset flag leaves the value given before the sub-command alone."""
    default: Any = argparse.SUPPRESS if suppress else "text"
    parser.add_argument("-o", "--output", choices=("text", "json"), default=default,
                        help="text (default) or json: the plan, the result or the status as one JSON "
                             "document on stdout (progress and prompts go to stderr)")
    parser.add_argument("--json", dest="output", action="store_const", const="json", default=default,
                        help="same as --output json")


def add_approve_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-y", "--yes", "--auto-approve", dest="yes", action="store_true",
                        help="apply without asking for confirmation (required when stdin is not a terminal)")


def wants_json(args: argparse.Namespace) -> bool:
    return getattr(args, "output", "text") == "json"


# -- confirmation --------------------------------------------------------------------------------


def _interactive(stream: Any) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def confirm(what: str, *, assume_yes: bool, stdin: IO[str] | None = None, prompt: IO[str] | None = None) -> None:
    """Ask before changing anything. Returns to go ahead; raises :class:`ProvisionError` when
    the answer is not yes, or when stdin is not a terminal and ``--yes`` was not given (a
    script must say so explicitly rather than hang on a prompt nobody sees).

    ``what`` completes "Apply ...?", e.g. "3 changes to deployment prod".
    """
    if assume_yes:
        return
    stdin = sys.stdin if stdin is None else stdin
    prompt = sys.stderr if prompt is None else prompt
    if not _interactive(stdin):
        raise ProvisionError(
            f"not applying {what}: stdin is not a terminal, so nobody can confirm; "
            "pass --yes (or --auto-approve) to apply, or --dry-run to only plan",
            exitcodes.USAGE,
        )
    prompt.write(f"Apply {what}? [y/N] ")
    prompt.flush()
    try:
        answer = stdin.readline()
    except (OSError, ValueError):
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        if not answer.endswith("\n"):
            prompt.write("\n")
        raise ProvisionError(f"not applied: {what} declined at the prompt; nothing was changed", exitcodes.ERROR)


# -- the error guard -----------------------------------------------------------------------------


def report(err: ProvisionError, stream: IO[str] | None = None) -> int:
    print(f"appliance: error: {err}", file=stream or sys.stderr, flush=True)
    return err.code


def guarded(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Wrap a command handler: every exception becomes one line on stderr and an exit code.

    KeyboardInterrupt and BrokenPipeError go on to ``appliance.cli.main``, which handles
    them for every command. ``APPLIANCE_DEBUG=1`` re-raises unexpected exceptions.
    """

    @functools.wraps(fn)
    def handler(args: argparse.Namespace) -> int:
        try:
            return int(fn(args) or 0)
        except ProvisionError as err:
            return report(err)
        except (KeyboardInterrupt, BrokenPipeError):
            raise
        except Exception as exc:
            if debugging():
                raise
            return report(unexpected(exc))

    return handler


# -- finishing or undoing a partial apply --------------------------------------------------------


def _long_flag(action: argparse.Action) -> str:
    longs = [o for o in action.option_strings if o.startswith("--")]
    return longs[0] if longs else action.option_strings[0]


def command_line(prefix: Iterable[str], parser: argparse.ArgumentParser, args: argparse.Namespace,
                 *, drop: Iterable[str] = ("dry_run",)) -> str:
    """The command that reproduces ``args`` for ``parser``: every option whose value differs
    from its default, in the parser's order, shell-quoted. Options in ``drop`` (dests) are left
    out. Built from the parser rather than from ``sys.argv`` so it is exact however the CLI was
    invoked (``python -m appliance``, an entry point, a test)."""
    words = list(prefix)
    skip = set(drop)
    done: set[str] = set()
    # argparse has no public list of a parser's options; ``_actions`` has been stable since 2.7.
    for action in parser._actions:
        if not action.option_strings or action.dest in skip or action.dest in done or action.dest == "help":
            continue
        value = getattr(args, action.dest, None)
        if value is None or value is argparse.SUPPRESS or value == action.default:
            continue
        done.add(action.dest)
        flag = _long_flag(action)
        if isinstance(action, argparse._StoreTrueAction):
            words.append(flag)
        elif isinstance(action, argparse._StoreConstAction):
            words.append(flag)
        elif isinstance(action, argparse._AppendAction):
            for item in value:
                words += [flag, str(item)]
        else:
            words += [flag, str(value)]
    return shlex.join(words)


@dataclass
class NextSteps:
    """What to run after a partial apply: the same command again (it keeps what exists and
    does the rest), and, for a provision, the deprovision that removes what it created."""

    finish: str
    undo: str | None = None

    def lines(self) -> list[str]:
        out = [
            "To finish, run the same command again (it keeps what exists and does the rest):",
            f"  {self.finish}",
        ]
        if self.undo:
            out += ["To undo, remove everything this deployment created:", f"  {self.undo}"]
        return out

    def as_dict(self) -> dict[str, str | None]:
        return {"finish": self.finish, "undo": self.undo}
