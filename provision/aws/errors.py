"""The translation of botocore (and any other) exceptions into one-line :class:`AwsFailure`s.

Exit codes come from :mod:`provision.exitcodes`, shared with GCP.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from provision import exitcodes
from provision.errors import ProvisionError, debugging, one_line, unexpected

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
# Account-level quotas that stop a whole run (per-ENI limits such as
# TrafficMirrorSourcesPerTargetLimitExceeded are per-item failures, see apply.py).
QUOTA_CODES = frozenset(
    {"TrafficMirrorTargetLimitExceeded", "TrafficMirrorFilterLimitExceeded", "TrafficMirrorSessionLimitExceeded",
     "TrafficMirrorFilterRuleLimitExceeded", "ResourceLimitExceeded"}
)

# Operations not served by EC2, for naming the IAM action.
_SERVICE_OF_OPERATION = {"DescribeListeners": "elasticloadbalancing", "DescribeLoadBalancers": "elasticloadbalancing"}

_DENIED_ACTION_RE = re.compile(r"perform:?\s+([a-z0-9-]+:[A-Za-z0-9*]+)")
_ENCODED_RE = re.compile(r"\s*Encoded authorization failure message:.*$", re.S)


class AwsFailure(ProvisionError):
    """An AWS call failed. ``code`` is the exit code it maps to; ``aws_code`` the AWS error code."""

    def __init__(self, message: str, code: int, *, aws_code: str | None = None, action: str | None = None,
                 unexpected: bool = False):
        super().__init__(message, code, unexpected=unexpected)
        self.aws_code = aws_code
        self.action = action

    @property
    def exit_code(self) -> int:
        return self.code

    @property
    def fatal(self) -> bool:
        """Stop a run: every later call would fail the same way (permissions, credentials,
        usage, account quotas), or the state is unknown (unexpected errors, interrupts)."""
        return self.code != exitcodes.ERROR or self.aws_code is None


_TAG_RE = re.compile(r"<[^>]*>")
_BODY_RE = re.compile(r"b'(.*)'\s*$", re.S)


def _body_excerpt(text: str) -> str:
    """The readable part of the body botocore quotes in a ResponseParserError."""
    found = _BODY_RE.search(text)
    body = found.group(1).encode().decode("unicode_escape", "replace") if found else text
    return one_line(_TAG_RE.sub(" ", body), 160) or "(empty)"


def iam_action(operation: str) -> str:
    return f"{_SERVICE_OF_OPERATION.get(operation, 'ec2')}:{operation}"


def _clean(text: str | None) -> str:
    return one_line(_ENCODED_RE.sub("", text or ""))


def translate(exc: BaseException, what: str | None = None) -> AwsFailure:
    """Map an exception raised by a boto3 call to an :class:`AwsFailure` with a one-line message.

    ``what`` names the call (``ec2:CreateTrafficMirrorFilterRule``) for exceptions that do not
    carry the operation themselves (connection and parse errors, anything unexpected).
    """
    from botocore import exceptions as bx
    from botocore.parsers import ResponseParserError

    if isinstance(exc, AwsFailure):
        return exc
    if isinstance(exc, bx.ClientError):
        err = exc.response.get("Error", {}) or {}
        code = err.get("Code", "Unknown")
        message = _clean(err.get("Message", ""))
        operation = exc.operation_name or "?"
        action = iam_action(operation)
        if code in PERMISSION_CODES:
            found = _DENIED_ACTION_RE.search(err.get("Message", "") or "")
            denied = found.group(1) if found else action
            return AwsFailure(
                f"permission denied: {denied} is not allowed ({code}); grant it, see provision/aws/iam-policy.json",
                exitcodes.DENIED, aws_code=code, action=denied,
            )
        if code in CREDENTIAL_CODES:
            return AwsFailure(f"AWS rejected the credentials on {action} ({code}): {message}",
                              exitcodes.DENIED, aws_code=code, action=action)
        if code in THROTTLE_CODES:
            attempts = (exc.response.get("ResponseMetadata", {}) or {}).get("RetryAttempts")
            tries = f" after {attempts + 1} attempts" if isinstance(attempts, int) else ""
            return AwsFailure(
                f"throttled by AWS on {action}{tries} ({code}); retry later or raise --max-attempts",
                exitcodes.QUOTA, aws_code=code, action=action,
            )
        if code in QUOTA_CODES:
            return AwsFailure(f"quota exceeded on {action}: {code}: {message}; raise the quota in Service Quotas "
                              "or remove unused traffic mirror resources",
                              exitcodes.QUOTA, aws_code=code, action=action)
        return AwsFailure(f"{action} failed: {code}: {message}".rstrip(": "), exitcodes.ERROR,
                          aws_code=code, action=action)
    on = f" on {what}" if what else ""
    if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError)):
        return AwsFailure(
            "no AWS credentials found: configure a profile (--profile), environment variables or an instance role",
            exitcodes.DENIED,
        )
    if isinstance(exc, bx.ProfileNotFound):
        return AwsFailure(f"unknown AWS profile: {one_line(exc)}", exitcodes.USAGE)
    if isinstance(exc, bx.NoRegionError):
        return AwsFailure("no AWS region: pass --region or set AWS_REGION / AWS_DEFAULT_REGION", exitcodes.USAGE)
    if isinstance(exc, bx.ParamValidationError):
        return AwsFailure(f"invalid request parameters{on}: {one_line(exc)}", exitcodes.USAGE)
    if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError,
                        bx.ConnectionClosedError)):
        return AwsFailure(f"cannot reach AWS{on}: {one_line(exc)}; check the network, the proxy and --region",
                          exitcodes.ERROR)
    if isinstance(exc, ResponseParserError):
        # Not a BotoCoreError: e.g. an HTML error page from a proxy, or an emulator's 500.
        return AwsFailure(f"the endpoint answered{on} with something that is not an AWS API response: "
                          f"{_body_excerpt(str(exc))}", exitcodes.ERROR)
    if isinstance(exc, bx.BotoCoreError):
        return AwsFailure(f"AWS SDK error{on}: {one_line(exc)}", exitcodes.ERROR)
    generic = unexpected(exc, f"calling {what}" if what else "")
    return AwsFailure(str(generic), generic.code, unexpected=True)


@contextmanager
def aws_errors(what: str | None = None) -> Iterator[None]:
    """Re-raise any exception of the block (a boto3 call) as an :class:`AwsFailure`."""
    try:
        yield
    except AwsFailure:
        raise
    except (KeyboardInterrupt, BrokenPipeError):
        raise
    except Exception as exc:
        failure = translate(exc, what)
        if failure.unexpected and debugging():
            raise
        raise failure from exc
