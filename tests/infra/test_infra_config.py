"""Configuration: typed inputs, sources, overrides and one-line error messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from infra_helpers import CDKTF_DIR, EXAMPLES, aws_minimal_raw, example

from appliance_infra.config import (
    CONFIG_ENV,
    AwsConfig,
    ConfigError,
    GcpConfig,
    parse_config,
    resolve_configs,
)


def problems_for(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "test.json")
    return info.value.problems


def test_examples_are_valid_and_selected_by_cloud():
    configs = resolve_configs(
        environ={CONFIG_ENV: f"examples/aws.json{os.pathsep}examples/gcp.json"}, base_dir=CDKTF_DIR
    )
    assert [type(c) for c in configs] == [AwsConfig, GcpConfig]
    assert [c.stack_name for c in configs] == ["appliance-aws", "appliance-gcp"]


def test_defaults_are_production_sensible():
    cfg = parse_config(aws_minimal_raw())
    assert cfg.instance_type == "c6i.large"
    assert (cfg.min_size, cfg.max_size) == (2, 6)
    assert cfg.deletion_protection is True
    assert cfg.ssm_session_manager is True
    assert cfg.source_eni_ids == []
    assert cfg.appliance.kafka_topic == "akto.api.logs"
    assert (cfg.appliance.batch_size, cfg.appliance.batch_time_secs) == (100, 10)
    assert cfg.load_balancer_subnet_ids == cfg.subnet_ids
    assert cfg.egress_kafka_ports == [9094]  # derived from the bootstrap servers


def test_bad_ami_gives_one_clear_line():
    raw = example("aws.json") | {"ami_id": "ami-xyz"}
    assert problems_for(raw) == ["test.json: ami_id: must look like ami-0123456789abcdef0, got 'ami-xyz'"]


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0"])
def test_world_open_mirrored_source_is_rejected(cidr):
    raw = example("aws.json") | {"mirrored_cidrs": ["10.20.0.0/16", cidr]}
    assert problems_for(raw) == [
        f"test.json: mirrored_cidrs[1]: {cidr} opens the appliance to every address; list the real CIDRs"
    ]


def test_world_open_gcp_source_range_is_rejected():
    raw = example("gcp.json") | {"mirrored_source_ranges": ["0.0.0.0/0"]}
    (problem,) = problems_for(raw)
    assert problem.startswith("test.json: mirrored_source_ranges[0]: 0.0.0.0/0 opens the appliance")


def test_cidr_with_host_bits_is_rejected():
    (problem,) = problems_for(example("aws.json") | {"kafka_cidrs": ["10.30.8.1/24"]})
    assert problem.startswith("test.json: kafka_cidrs[0]: '10.30.8.1/24' is not a CIDR block")


def test_unknown_setting_is_an_error_not_a_silent_default():
    raw = example("aws.json") | {"instance_typ": "m5.large"}
    assert problems_for(raw) == [
        "test.json: instance_typ: unknown setting (check the spelling against infra/cdktf/README.md)"
    ]


def test_every_problem_is_reported_at_once():
    raw = example("aws.json") | {"vpc_id": "vpc-1", "min_size": 9, "max_size": "many"}
    del raw["region"]
    problems = problems_for(raw)
    assert "test.json: region: required setting is missing" in problems
    assert "test.json: vpc_id: must look like vpc-0123456789abcdef0, got 'vpc-1'" in problems
    assert any(p.startswith("test.json: max_size: Input should be a valid integer") for p in problems)
    assert all("\n" not in p for p in problems)


def test_min_above_max_is_rejected():
    assert problems_for(example("aws.json") | {"min_size": 8, "max_size": 4}) == [
        "test.json: min_size (8) must not exceed max_size (4)"
    ]


def test_cloud_must_be_known():
    assert problems_for({"cloud": "azure"}) == ["test.json: cloud: must be one of 'aws', 'gcp', got 'azure'"]


@pytest.mark.parametrize(
    "bootstrap",
    ["kafka", "kafka:0", "kafka:9092,", "kafka:99999", "kafka :9092", "SASL_SSL://kafka:9092"],
)
def test_bad_kafka_bootstrap(bootstrap):
    raw = example("aws.json")
    raw["appliance"] = raw["appliance"] | {"kafka_bootstrap_servers": bootstrap}
    (problem,) = problems_for(raw)
    assert problem.startswith("test.json: appliance.kafka_bootstrap_servers: must be host:port[,host:port...]")


def test_ipv6_kafka_bootstrap_is_accepted():
    raw = example("aws.json")
    raw["appliance"] = raw["appliance"] | {"kafka_bootstrap_servers": "[fd00::1]:9092,10.0.0.5:9093"}
    assert parse_config(raw).appliance.kafka_ports == [9092, 9093]


def test_extra_environment_cannot_break_out_or_override_managed_variables():
    raw = example("aws.json")
    raw["appliance"] = raw["appliance"] | {"extra_environment": {"AKTO_LOG_LEVEL": "INFO'\nrm -rf /"}}
    (problem,) = problems_for(raw)
    assert problem.startswith("test.json: appliance.extra_environment.AKTO_LOG_LEVEL: must be one line")
    raw["appliance"] = raw["appliance"] | {"extra_environment": {"APPLIANCE_MODE": "gcp"}}
    assert problems_for(raw) == [
        "test.json: appliance: extra_environment must not set APPLIANCE_MODE; use the dedicated setting instead"
    ]


def test_extra_environment_names_only_runtime_variables():
    raw = example("aws.json")
    raw["appliance"] = raw["appliance"] | {"extra_environment": {"AKTO_LOG_LEVL": "INFO"}}
    assert problems_for(raw) == [
        "test.json: appliance: extra_environment key AKTO_LOG_LEVL is not a variable of the appliance "
        "runtime (`appliance config` lists them); `appliance boot` would refuse to start"
    ]


def test_gcp_needs_something_to_mirror_and_not_the_collectors():
    raw = example("gcp.json") | {"mirrored_subnetworks": [], "mirrored_tags": []}
    assert problems_for(raw) == [
        "test.json: set at least one of mirrored_subnetworks, mirrored_tags or mirrored_instances"
    ]
    raw = example("gcp.json") | {"mirrored_tags": ["mirror-appliance-collector"]}
    assert problems_for(raw) == [
        "test.json: mirrored_tags must not include the collector tag 'mirror-appliance-collector'"
    ]


def test_gcp_references_are_expanded_to_urls():
    cfg = parse_config(example("gcp.json") | {"mirrored_instances": ["europe-west1-b/api-1"]})
    base = "https://www.googleapis.com/compute/v1/projects/my-mirror-project"
    assert cfg.network_url == f"{base}/global/networks/prod-vpc"
    assert cfg.subnetwork_url == f"{base}/regions/europe-west1/subnetworks/collectors"
    assert cfg.mirrored_subnetwork_urls == [f"{base}/regions/europe-west1/subnetworks/web"]
    assert cfg.mirrored_instance_urls == [f"{base}/zones/europe-west1-b/instances/api-1"]
    assert cfg.image_ref == "projects/my-mirror-project/global/images/family/mirror-appliance"


def test_environment_overrides_per_cloud_with_json_values():
    environ = {
        CONFIG_ENV: str(EXAMPLES / "aws.json") + os.pathsep + str(EXAMPLES / "gcp.json"),
        "APPLIANCE_INFRA_AWS__AMI_ID": "ami-0fedcba9876543210",
        "APPLIANCE_INFRA_AWS__MAX_SIZE": "12",
        "APPLIANCE_INFRA_AWS__APPLIANCE__KAFKA_TOPIC": "mirror.pairs",
        "APPLIANCE_INFRA_GCP__MIRRORED_TAGS": '["api", "web"]',
    }
    aws_cfg, gcp_cfg = resolve_configs(environ=environ)
    assert aws_cfg.ami_id == "ami-0fedcba9876543210"
    assert aws_cfg.max_size == 12
    assert aws_cfg.appliance.kafka_topic == "mirror.pairs"
    assert aws_cfg.appliance.kafka_bootstrap_servers.startswith("b-1.msk.internal")  # untouched sibling
    assert gcp_cfg.mirrored_tags == ["api", "web"]


def test_bad_override_names_the_variable():
    environ = {CONFIG_ENV: str(EXAMPLES / "aws.json"), "APPLIANCE_INFRA_AWS__MIN_SIZE": "lots"}
    with pytest.raises(ConfigError) as info:
        resolve_configs(environ=environ)
    (problem,) = info.value.problems
    assert problem.startswith(f"{EXAMPLES / 'aws.json'} (with APPLIANCE_INFRA_AWS__MIN_SIZE): min_size: ")


def test_context_accepts_paths_and_inline_objects():
    inline = aws_minimal_raw()
    configs = resolve_configs(["examples/gcp.json", inline], environ={}, base_dir=CDKTF_DIR)
    assert [c.stack_name for c in configs] == ["appliance-gcp", "aws-minimal"]


def test_environment_wins_over_context():
    configs = resolve_configs("examples/gcp.json", environ={CONFIG_ENV: "examples/aws.json"}, base_dir=CDKTF_DIR)
    assert [c.cloud for c in configs] == ["aws"]


def test_missing_configuration_says_how_to_provide_one():
    with pytest.raises(ConfigError, match=r"^no configuration: set APPLIANCE_INFRA_CONFIG=examples/aws.json"):
        resolve_configs(None, environ={})


def test_unreadable_and_malformed_files(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"cloud": "aws",\n  "region": }')
    with pytest.raises(ConfigError) as info:
        resolve_configs(environ={CONFIG_ENV: f"{tmp_path / 'nope.json'}{os.pathsep}{broken}"})
    assert str(info.value) == f"{tmp_path / 'nope.json'}: cannot read configuration file (No such file or directory)"
    with pytest.raises(ConfigError) as info:
        resolve_configs(environ={CONFIG_ENV: str(broken)})
    assert str(info.value) == f"{broken}: invalid JSON at line 2 column 13: Expecting value"


def test_duplicate_stack_names_are_rejected():
    path = str(EXAMPLES / "aws.json")
    with pytest.raises(ConfigError, match="stack_name 'appliance-aws' is used by more than one configuration"):
        resolve_configs(environ={CONFIG_ENV: f"{path}{os.pathsep}{path}"})


def test_main_reports_bad_configuration_in_one_line_and_exit_2(tmp_path):
    """The real entry point the CLI runs (`python3 main.py`): no traceback, exit status 2."""
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(example("aws.json") | {"ami_id": "ubuntu"}))
    env = os.environ | {CONFIG_ENV: str(bad), "CDKTF_OUTDIR": str(tmp_path / "out")}
    proc = subprocess.run(
        [sys.executable, "main.py"], cwd=CDKTF_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"appliance-infra: error: {bad}: ami_id: must look like ami-0123456789abcdef0, got 'ubuntu'"
    )
    out = tmp_path / "out"
    assert not (out / "manifest.json").exists() and not any(out.rglob("*.json"))  # nothing synthesized
