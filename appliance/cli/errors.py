"""What every command shares: a one-line error with an exit code, and the exit codes."""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1  # runtime failure (clear one-line message on stderr)
EXIT_USAGE = 2  # bad arguments or configuration
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """An error to print as one line on stderr, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR):
        super().__init__(message)
        self.code = code
