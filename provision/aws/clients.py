"""boto3 client construction with botocore's own retry handling for throttling.

``make_clients`` is the single place clients are built, so tests replace it with a function
returning real clients that carry a ``botocore.stub.Stubber`` (or run under moto).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_RETRY_MODE = "standard"
DEFAULT_MAX_ATTEMPTS = 10


@dataclass
class Clients:
    ec2: Any
    _elbv2_factory: Callable[[], Any] | None = None
    _elbv2: Any = field(default=None, repr=False)
    region: str | None = None

    @property
    def elbv2(self):
        if self._elbv2 is None:
            if self._elbv2_factory is None:
                raise RuntimeError("no elbv2 client available")
            self._elbv2 = self._elbv2_factory()
        return self._elbv2


def retry_config(retry_mode: str | None, max_attempts: int | None):
    """botocore Config: standard/adaptive retries (exponential backoff with jitter on throttling).

    Flags win over ``AWS_RETRY_MODE`` / ``AWS_MAX_ATTEMPTS``, which win over our defaults.
    """
    from botocore.config import Config

    from appliance import __version__

    mode = retry_mode or os.environ.get("AWS_RETRY_MODE") or DEFAULT_RETRY_MODE
    attempts = max_attempts
    if attempts is None:
        env = os.environ.get("AWS_MAX_ATTEMPTS")
        attempts = int(env) if env and env.isdigit() and int(env) > 0 else DEFAULT_MAX_ATTEMPTS
    return Config(
        retries={"mode": mode, "total_max_attempts": attempts},
        user_agent_extra=f"mirror-appliance/{__version__}",
        connect_timeout=10,
        read_timeout=30,
    )


def make_clients(region: str | None, profile: str | None, retry_mode: str | None = None,
                 max_attempts: int | None = None) -> Clients:
    import boto3

    from provision.aws.errors import aws_errors
    from provision.aws.spec import validate_region

    with aws_errors("creating the AWS session"):
        session = boto3.Session(profile_name=profile, region_name=region)
        if not session.region_name:
            from botocore.exceptions import NoRegionError

            raise NoRegionError()
    if not region:
        validate_region(session.region_name, "AWS region (from AWS_REGION, AWS_DEFAULT_REGION or the profile)")
    with aws_errors("creating the EC2 client"):
        config = retry_config(retry_mode, max_attempts)
        ec2 = session.client("ec2", config=config)
    return Clients(ec2=ec2, _elbv2_factory=lambda: session.client("elbv2", config=config),
                   region=session.region_name)
