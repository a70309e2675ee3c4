"""Exit codes and the one error type of the GCP provisioning code (no Google imports)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1  # API or runtime failure not covered below (message on stderr)
EXIT_USAGE = 2  # bad arguments, or a referenced resource unsuitable for mirroring (API 400 too)
EXIT_PERMISSION = 3  # 401/403: not authenticated, or a missing IAM permission (named when known)
EXIT_QUOTA = 4  # quota or rate limit exceeded
EXIT_NOT_FOUND = 5  # a referenced resource or the deployment does not exist
EXIT_CONFLICT = 6  # a resource with a deployment's name exists but was not created by it

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_ERROR: "API or runtime failure",
    EXIT_USAGE: "bad arguments, unsuitable referenced resource, or API rejected the request (400)",
    EXIT_PERMISSION: "not authenticated, or missing IAM permission (named when the API says)",
    EXIT_QUOTA: "quota or rate limit exceeded",
    EXIT_NOT_FOUND: "referenced resource or deployment not found",
    EXIT_CONFLICT: "name already taken by a resource this deployment did not create",
}


class GcpError(Exception):
    """A failure to report as one line, with the exit code to return."""

    def __init__(self, message: str, code: int = EXIT_ERROR):
        super().__init__(" ".join(str(message).split()))
        self.code = code
