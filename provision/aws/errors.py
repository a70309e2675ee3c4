"""Exit codes and the translation of botocore exceptions into one-line messages.

Exit codes of ``appliance provision aws`` / ``deprovision aws`` / ``provision aws status``:

====  =====================================================================================
0     success (also: dry run, nothing to do)
1     error: an AWS call failed (after retries), the NLB has no UDP 4789 listener, ...
2     usage: bad or conflicting arguments, unknown profile, no region
3     partial failure: the run finished but some per-ENI / per-resource actions failed
4     permission denied (UnauthorizedOperation / AccessDenied) or no/invalid credentials
130   interrupted (Ctrl-C)
====  =====================================================================================
"""

from __future__ import annotations

import re
from contextlib import contextmanager

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_DENIED = 4

PERMISSION_CODES = frozenset(
    {"UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "UnauthorizedAccess", "Forbidden"}
)
CREDENTIAL_CODES = frozenset(
    {
        "AuthFailure", "InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch",
        "ExpiredToken", "ExpiredTokenException", "InvalidAccessKeyId", "MissingAuthenticationToken",
        "OptInRequired",
    }
)
THROTTLE_CODES = frozenset(
    {
        "Throttling", "ThrottlingException", "ThrottledException", "RequestLimitExceeded",
        "RequestThrottled", "RequestThrottledException", "TooManyRequestsException", "SlowDown",
        "EC2ThrottledException", "BandwidthLimitExceeded",
    }
)

# Operations not served by EC2, for naming the IAM action.
_SERVICE_OF_OPERATION = {"DescribeListeners": "elasticloadbalancing"}

_DENIED_ACTION_RE = re.compile(r"perform:?\s+([a-z0-9-]+:[A-Za-z0-9*]+)")
_ENCODED_RE = re.compile(r"\s*Encoded authorization failure message:.*$", re.S)


class AwsFailure(Exception):
    """An AWS call failed. ``exit_code`` is the CLI exit code it maps to."""

    def __init__(self, message: str, exit_code: int, *, code: str | None = None, action: str | None = None):
        super().__init__(message)
        self.exit_code = exit_code
        self.code = code
        self.action = action

    @property
    def fatal(self) -> bool:
        """Permission and credential problems stop a run: every later call would fail the same way."""
        return self.exit_code in (EXIT_DENIED, EXIT_USAGE)


def one_line(text: str, limit: int = 300) -> str:
    text = _ENCODED_RE.sub("", text or "")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def iam_action(operation: str) -> str:
    return f"{_SERVICE_OF_OPERATION.get(operation, 'ec2')}:{operation}"


def translate(exc: BaseException) -> AwsFailure:
    """Map a botocore exception to an :class:`AwsFailure` with a one-line message."""
    from botocore import exceptions as bx

    if isinstance(exc, bx.ClientError):
        err = exc.response.get("Error", {}) or {}
        code = err.get("Code", "Unknown")
        message = one_line(err.get("Message", ""))
        operation = exc.operation_name or "?"
        action = iam_action(operation)
        if code in PERMISSION_CODES:
            found = _DENIED_ACTION_RE.search(err.get("Message", "") or "")
            denied = found.group(1) if found else action
            return AwsFailure(
                f"permission denied: {denied} is not allowed ({code}); grant it, see provision/aws/iam-policy.json",
                EXIT_DENIED, code=code, action=denied,
            )
        if code in CREDENTIAL_CODES:
            return AwsFailure(f"AWS rejected the credentials on {action} ({code}): {message}",
                              EXIT_DENIED, code=code, action=action)
        if code in THROTTLE_CODES:
            attempts = (exc.response.get("ResponseMetadata", {}) or {}).get("RetryAttempts")
            tries = f" after {attempts + 1} attempts" if isinstance(attempts, int) else ""
            return AwsFailure(
                f"throttled by AWS on {action}{tries} ({code}); retry later or raise --max-attempts",
                EXIT_ERROR, code=code, action=action,
            )
        return AwsFailure(f"{action} failed: {code}: {message}".rstrip(": "), EXIT_ERROR, code=code, action=action)
    if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError)):
        return AwsFailure(
            "no AWS credentials found: configure a profile (--profile), environment variables or an instance role",
            EXIT_DENIED,
        )
    if isinstance(exc, bx.ProfileNotFound):
        return AwsFailure(f"unknown AWS profile: {one_line(str(exc))}", EXIT_USAGE)
    if isinstance(exc, bx.NoRegionError):
        return AwsFailure("no AWS region: pass --region or set AWS_REGION / AWS_DEFAULT_REGION", EXIT_USAGE)
    if isinstance(exc, bx.ParamValidationError):
        return AwsFailure(f"invalid request parameters: {one_line(str(exc))}", EXIT_USAGE)
    if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError)):
        return AwsFailure(f"cannot reach AWS: {one_line(str(exc))}", EXIT_ERROR)
    if isinstance(exc, bx.BotoCoreError):
        return AwsFailure(f"AWS SDK error: {one_line(str(exc))}", EXIT_ERROR)
    return AwsFailure(one_line(f"{type(exc).__name__}: {exc}"), EXIT_ERROR)


@contextmanager
def aws_errors():
    """Re-raise botocore exceptions as :class:`AwsFailure`."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc) from exc
