#!/usr/bin/env python3
"""CDK Terrain app for the mirror appliance fleet (see README.md).

    APPLIANCE_INFRA_CONFIG=examples/aws.json cdktn deploy appliance-aws
    APPLIANCE_INFRA_CONFIG=examples/gcp.json cdktn deploy appliance-gcp

A bad configuration stops synthesis with one line per problem and exit status 2.
"""

from __future__ import annotations

import sys

from cdktn import App

from appliance_infra import TARGET_VERSIONS, TARGET_VERSIONS_CONTEXT_KEY
from appliance_infra.app import build_stacks
from appliance_infra.config import CONTEXT_KEY, ConfigError, resolve_configs


def main() -> int:
    app = App()
    if app.node.try_get_context(TARGET_VERSIONS_CONTEXT_KEY) is None:  # run without the CLI
        app.node.set_context(TARGET_VERSIONS_CONTEXT_KEY, TARGET_VERSIONS)
    try:
        configs = resolve_configs(app.node.try_get_context(CONTEXT_KEY))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"appliance-infra: error: {problem}", file=sys.stderr)
        return 2
    build_stacks(app, configs)
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
