"""The one error type of the GCP provisioning code (no Google imports).

Exit codes come from :mod:`provision.exitcodes`, shared with AWS.
"""

from __future__ import annotations

from provision import exitcodes
from provision.errors import ProvisionError, debugging, unexpected


class GcpError(ProvisionError):
    """A failure to report as one line, with the exit code to return. ``status`` is the HTTP
    status of the API answer behind it, when there was one (404 lets reads mean "absent")."""

    def __init__(self, message: str, code: int = exitcodes.ERROR, *, status: int | None = None,
                 unexpected: bool = False):
        super().__init__(message, code, unexpected=unexpected)
        self.status = status


def step_failure(exc: BaseException, doing: str) -> GcpError:
    """What a run of steps ends with when step ``doing`` ("applying ...", "deleting ...")
    raised ``exc``: an interruption or an API error as the failure to report, anything else
    as an unexpected error; a broken pipe, and anything under ``--debug``, propagates."""
    if isinstance(exc, KeyboardInterrupt):
        return GcpError(f"interrupted while {doing}", exitcodes.INTERRUPTED)
    if isinstance(exc, GcpError):
        return exc
    if isinstance(exc, BrokenPipeError) or debugging():
        raise exc
    return GcpError(str(unexpected(exc, doing)), exitcodes.ERROR)
