"""The one error type every provisioning command reports: one line and an exit code."""

from __future__ import annotations

import os

from provision import exitcodes

DEBUG_ENV = "APPLIANCE_DEBUG"


class ProvisionError(Exception):
    """A failure to print as one line (``appliance: error: ...``) with an exit code from
    :mod:`provision.exitcodes`. The message is collapsed to a single line."""

    def __init__(self, message: str, code: int = exitcodes.ERROR, *, unexpected: bool = False):
        super().__init__(" ".join(str(message).split()))
        self.code = code
        self.unexpected = unexpected  # from an exception no code path anticipates


def one_line(text: object, limit: int = 300) -> str:
    """Whitespace collapsed, cut to ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def debugging() -> bool:
    """``APPLIANCE_DEBUG`` set: let unexpected exceptions through, for their traceback."""
    return bool(os.environ.get(DEBUG_ENV))


def unexpected(exc: BaseException, what: str = "") -> ProvisionError:
    """An exception the code has no specific handling for, as one line.

    The type is kept in the message: it is what a bug report needs. ``APPLIANCE_DEBUG=1``
    makes the commands re-raise instead, for a traceback.
    """
    where = f" while {what}" if what else ""
    detail = one_line(exc) or "(no message)"
    return ProvisionError(
        f"unexpected error{where}: {type(exc).__name__}: {detail} "
        "(set APPLIANCE_DEBUG=1 for a traceback)",
        exitcodes.ERROR,
        unexpected=True,
    )
