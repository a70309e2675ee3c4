"""Build the stacks for a list of validated configurations."""

from __future__ import annotations

from constructs import Construct

from appliance_infra.config import AwsConfig, Config, GcpConfig


def build_stacks(app: Construct, configs: list[Config]) -> list[Construct]:
    """One stack per configuration, named by its ``stack_name`` (``cdktn deploy <stack_name>``).

    Provider packages are imported here, lazily, so that configuration errors are reported
    before the slow provider import.
    """
    stacks: list[Construct] = []
    for cfg in configs:
        if isinstance(cfg, AwsConfig):
            from appliance_infra.aws_stack import ApplianceAwsStack

            stacks.append(ApplianceAwsStack(app, cfg))
        elif isinstance(cfg, GcpConfig):
            from appliance_infra.gcp_stack import ApplianceGcpStack

            stacks.append(ApplianceGcpStack(app, cfg))
        else:  # pragma: no cover - the config models are a closed set
            raise TypeError(f"unsupported configuration {type(cfg).__name__}")
    return stacks
