"""Fixtures for infra/cdktf: the stacks are synthesized once per test session.

Importing a provider package starts the jsii Node.js runtime and loads a large assembly, so
every test shares one App with five stacks: the two example configurations plus minimal and
fully-optioned variants that exercise the defaults and the optional branches.
"""

from __future__ import annotations

import json

import pytest
from infra_helpers import (
    Synth,
    Synthesized,
    aws_full_raw,
    aws_minimal_raw,
    example,
    gcp_full_raw,
)


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory) -> Synthesized:
    pytest.importorskip("cdktn", reason="the infra extra is not installed (pip install -e '.[infra]')")
    from cdktn import App, Testing

    from appliance_infra import TARGET_VERSIONS, TARGET_VERSIONS_CONTEXT_KEY
    from appliance_infra.app import build_stacks
    from appliance_infra.config import parse_config

    raws = {
        "appliance-aws": example("aws.json"),
        "appliance-gcp": example("gcp.json"),
        "aws-minimal": aws_minimal_raw(),
        "aws-full": aws_full_raw(),
        "gcp-full": gcp_full_raw(),
    }
    configs = [parse_config(raw, name) for name, raw in raws.items()]
    outdir = tmp_path_factory.mktemp("cdktf.out")
    app = App(outdir=str(outdir), context={TARGET_VERSIONS_CONTEXT_KEY: TARGET_VERSIONS})
    stacks = build_stacks(app, configs)
    app.synth()  # writes manifest.json and stacks/<name>/cdk.tf.json, exactly like `cdktn synth`
    result = {}
    for cfg, stack in zip(configs, stacks, strict=True):
        text = Testing.synth(stack, True)  # True: also run the construct validations
        result[cfg.stack_name] = Synth(cfg.stack_name, text, json.loads(text), stack, cfg)
    return Synthesized(outdir, result)


@pytest.fixture(scope="session")
def aws(synthesized) -> Synth:
    return synthesized["appliance-aws"]


@pytest.fixture(scope="session")
def gcp(synthesized) -> Synth:
    return synthesized["appliance-gcp"]
