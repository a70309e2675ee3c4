"""AWS stack: resources, key properties and security properties of the synthesized Terraform."""

from __future__ import annotations

import base64
import json

import pytest
from infra_helpers import Synth

from appliance_infra.user_data import render_boot_environment

pytest.importorskip("cdktn_provider_aws", reason="the infra extra is not installed")

from cdktn import Testing as T  # noqa: E402

from appliance_infra.aws_stack import SSM_CHANNEL_ACTIONS  # noqa: E402

AWS_STACKS = ["appliance-aws", "aws-minimal", "aws-full"]
WORLD = {"0.0.0.0/0", "::/0"}

# Actions that have no resource-level permissions, so "*" is the only valid Resource.
RESOURCE_STAR_ALLOWED = {*SSM_CHANNEL_ACTIONS}


def ref(kind: str, name: str, attr: str) -> str:
    return "${" + f"{kind}.{name}.{attr}" + "}"


@pytest.fixture(scope="module", params=AWS_STACKS)
def any_aws(request, synthesized) -> Synth:
    return synthesized[request.param]


def test_all_parts_are_present(aws):
    for kind in (
        "aws_security_group",
        "aws_vpc_security_group_ingress_rule",
        "aws_vpc_security_group_egress_rule",
        "aws_iam_role",
        "aws_iam_role_policy",
        "aws_iam_instance_profile",
        "aws_launch_template",
        "aws_autoscaling_group",
        "aws_autoscaling_policy",
        "aws_lb",
        "aws_lb_listener",
        "aws_lb_target_group",
        "aws_ec2_traffic_mirror_target",
        "aws_ec2_traffic_mirror_filter",
        "aws_ec2_traffic_mirror_filter_rule",
        "aws_ec2_traffic_mirror_session",
    ):
        assert T.to_have_resource(aws.text, kind), kind
    assert T.to_have_provider_with_properties(aws.text, "aws", {"region": "eu-west-1"})
    assert T.to_have_data_source_with_properties(aws.text, "aws_subnet", {"id": "subnet-0a1b2c3d4e5f60711"})


def test_provider_tags_everything(aws):
    (provider,) = aws.tf["provider"]["aws"]
    assert provider["default_tags"] == [
        {
            "tags": {
                "Application": "mirror-appliance",
                "ManagedBy": "cdktn",
                "Stack": "appliance-aws",
                "Team": "platform",
                "Environment": "staging",
            }
        }
    ]


def test_tag_keys_are_kept_verbatim(synthesized):
    (provider,) = synthesized["aws-full"].tf["provider"]["aws"]
    tags = provider["default_tags"][0]["tags"]
    assert (tags["cost-center"], tags["DataClass"]) == ("cc-42", "internal")
    lt = synthesized["aws-full"].one("aws_launch_template")
    assert lt["tag_specifications"][0]["tags"]["cost-center"] == "cc-42"


# ----------------------------------------------------------------------------- network security


def test_no_world_open_ingress(any_aws):
    for rule in any_aws.resources("aws_vpc_security_group_ingress_rule").values():
        assert rule.get("cidr_ipv4") not in WORLD and rule.get("cidr_ipv6") not in WORLD, rule
        assert "prefix_list_id" not in rule and rule["ip_protocol"] != "-1"
    for sg in any_aws.resources("aws_security_group").values():
        assert "ingress" not in sg  # all rules are separate resources, checked above
    assert not any_aws.resources("aws_security_group_rule")


def test_ingress_is_exactly_vxlan_from_mirrored_sources_and_health_from_nlb_subnets(aws):
    sg_id = ref("aws_security_group", "appliance-sg", "id")
    rules = {
        (r["ip_protocol"], r["from_port"], r["to_port"], r.get("cidr_ipv4") or r.get("cidr_ipv6"))
        for r in aws.resources("aws_vpc_security_group_ingress_rule").values()
        if r["security_group_id"] == sg_id
    }
    assert len(rules) == len(aws.resources("aws_vpc_security_group_ingress_rule"))
    assert rules == {("udp", 4789, 4789, "10.20.0.0/16")} | {
        ("tcp", 8000, 8000, ref("data.aws_subnet", f"nlb-subnet-{i}", "cidr_block")) for i in range(3)
    }
    subnets = {d["id"] for d in aws.tf["data"]["aws_subnet"].values()}
    assert subnets == set(aws.one("aws_lb")["subnets"])


def test_explicit_health_cidrs_and_ipv6_sources(synthesized):
    full = synthesized["aws-full"]
    rules = {
        (r["ip_protocol"], r["from_port"], r.get("cidr_ipv4") or r.get("cidr_ipv6"))
        for r in full.resources("aws_vpc_security_group_ingress_rule").values()
    }
    assert rules == {
        ("udp", 4789, "10.20.0.0/16"),
        ("udp", 4789, "2001:db8:20::/56"),
        ("tcp", 8000, "10.40.1.0/24"),
        ("tcp", 8000, "10.40.2.0/24"),
    }
    assert "aws_subnet" not in full.tf.get("data", {})
    assert full.one("aws_lb")["subnets"] == ["subnet-0f0f0f0f0f0f0f0f1", "subnet-0f0f0f0f0f0f0f0f2"]


def test_egress_is_only_kafka_and_https(synthesized):
    def egress(s):
        return {
            (r["ip_protocol"], r["from_port"], r["to_port"], r.get("cidr_ipv4") or r.get("cidr_ipv6"))
            for r in s.resources("aws_vpc_security_group_egress_rule").values()
        }

    assert egress(synthesized["appliance-aws"]) == {
        ("tcp", 9092, 9092, "10.30.8.0/24"),
        ("tcp", 443, 443, "0.0.0.0/0"),
    }
    # Default Kafka destination: the VPC's CIDR, port from the bootstrap servers.
    minimal = synthesized["aws-minimal"]
    assert egress(minimal) == {
        ("tcp", 9094, 9094, ref("data.aws_vpc", "vpc", "cidr_block")),
        ("tcp", 443, 443, "0.0.0.0/0"),
    }
    assert minimal.tf["data"]["aws_vpc"]["vpc"]["id"] == "vpc-0a1b2c3d4e5f60718"
    assert egress(synthesized["aws-full"]) == {
        ("tcp", 9094, 9094, "10.30.8.0/24"),
        ("tcp", 9096, 9096, "10.30.8.0/24"),
        ("tcp", 443, 443, "10.0.0.0/16"),
    }


# ----------------------------------------------------------------------------- instances


def test_launch_template_requires_imdsv2_and_has_no_public_ip(any_aws):
    assert T.to_have_resource_with_properties(
        any_aws.text,
        "aws_launch_template",
        {"metadata_options": {"http_endpoint": "enabled", "http_tokens": "required", "http_put_response_hop_limit": 1}},
    )
    lt = any_aws.one("aws_launch_template")
    assert lt["metadata_options"]["http_tokens"] == "required"
    # `appliance boot` reads appliance-<variable> tags from IMDS
    assert lt["metadata_options"]["instance_metadata_tags"] == "enabled"
    (nic,) = lt["network_interfaces"]
    assert nic["associate_public_ip_address"] == "false"
    assert nic["security_groups"] == [ref("aws_security_group", "appliance-sg", "id")]
    assert "key_name" not in lt  # no SSH key: access is through SSM Session Manager


def test_every_volume_is_encrypted(any_aws):
    lt = any_aws.one("aws_launch_template")
    assert lt["block_device_mappings"], "the root volume must be declared to force encryption"
    for mapping in lt["block_device_mappings"]:
        assert mapping["ebs"]["encrypted"] == "true", mapping
    assert T.to_have_resource_with_properties(
        any_aws.text, "aws_launch_template", {"block_device_mappings": [{"ebs": {"encrypted": "true"}}]}
    )


def test_customer_managed_ebs_key(synthesized):
    (mapping,) = synthesized["aws-full"].one("aws_launch_template")["block_device_mappings"]
    assert mapping["ebs"]["kms_key_id"].startswith("arn:aws:kms:eu-west-1:123456789012:key/")


def test_collectors_carry_the_role_tag_provisioning_skips(any_aws):
    (lt,) = any_aws.resources("aws_launch_template").values()
    kinds = {spec["resource_type"]: spec["tags"] for spec in lt["tag_specifications"]}
    for kind in ("instance", "network-interface"):
        assert kinds[kind]["appliance:role"] == "collector"
    from provision.aws import constants

    assert (constants.TAG_ROLE, constants.COLLECTOR_ROLE) == ("appliance:role", "collector")


def test_launch_template_key_properties(aws):
    lt = aws.one("aws_launch_template")
    assert lt["image_id"] == "ami-0a1b2c3d4e5f60799"
    assert lt["instance_type"] == "c6i.large"
    assert lt["iam_instance_profile"] == {"arn": ref("aws_iam_instance_profile", "instance-profile", "arn")}
    assert lt["monitoring"] == {"enabled": True}  # 1-minute NetworkIn for the scaling policy
    # The encrypted mapping targets the AMI's real root device, looked up at plan time.
    assert lt["block_device_mappings"][0]["device_name"] == ref("data.aws_ami", "ami", "root_device_name")
    assert aws.tf["data"]["aws_ami"]["ami"]["filter"] == [{"name": "image-id", "values": ["ami-0a1b2c3d4e5f60799"]}]


def test_explicit_root_device_name_skips_the_lookup(synthesized):
    full = synthesized["aws-full"]
    assert full.one("aws_launch_template")["block_device_mappings"][0]["device_name"] == "/dev/sda1"
    assert "aws_ami" not in full.tf.get("data", {})


def test_user_data_configures_the_appliance_for_aws(any_aws):
    user_data = base64.b64decode(any_aws.one("aws_launch_template")["user_data"]).decode()
    assert user_data == render_boot_environment(any_aws.cfg.appliance, "aws")
    assert "APPLIANCE_MODE='aws'\n" in user_data
    assert f"AKTO_KAFKA_BROKER_MAL='{any_aws.cfg.appliance.kafka_bootstrap_servers}'\n" in user_data
    assert "APPLIANCE_KAFKA_TOPIC='akto.api.logs'\n" in user_data
    assert "AKTO_TRAFFIC_BATCH_SIZE='100'\n" in user_data
    assert "AKTO_TRAFFIC_BATCH_TIME_SECS='10'\n" in user_data
    assert "ExecStart" not in user_data and not user_data.startswith("#!")  # the image runs `appliance boot`


# ----------------------------------------------------------------------------- IAM


def policy_statements(s: Synth) -> list[dict]:
    statements = []
    for policy in s.resources("aws_iam_role_policy").values():
        statements += json.loads(policy["policy"])["Statement"]
    return statements


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def test_iam_is_least_privilege(any_aws):
    statements = policy_statements(any_aws)
    for st in statements:
        assert st["Effect"] == "Allow"
        assert not {"NotAction", "NotResource", "Principal"} & st.keys()
        for action in as_list(st["Action"]):
            assert "*" not in action, f"wildcard action {action}"
        if "*" in as_list(st["Resource"]):
            assert set(as_list(st["Action"])) <= RESOURCE_STAR_ALLOWED, st
            assert st["Condition"] == {"StringEquals": {"aws:RequestedRegion": "eu-west-1"}}
    # Only inline, reviewed permissions: no managed policies.
    assert not any_aws.resources("aws_iam_role_policy_attachment")
    assert not any_aws.resources("aws_iam_policy_attachment")
    assert "managed_policy_arns" not in any_aws.one("aws_iam_role")


def test_iam_actions_are_exactly_what_the_runtime_needs(synthesized):
    def actions(name):
        return sorted(a for st in policy_statements(synthesized[name]) for a in as_list(st["Action"]))

    with_ssm = sorted(["ssm:UpdateInstanceInformation", *SSM_CHANNEL_ACTIONS])
    assert actions("appliance-aws") == with_ssm
    assert actions("aws-minimal") == with_ssm
    # ssm_session_manager: false -> the runtime needs no AWS permission at all
    assert actions("aws-full") == []
    assert not synthesized["aws-full"].resources("aws_iam_role_policy")
    (registration,) = [
        st for st in policy_statements(synthesized["appliance-aws"]) if st["Action"] == ["ssm:UpdateInstanceInformation"]
    ]
    assert registration["Resource"] == (
        "arn:${data.aws_partition.partition.partition}:ec2:eu-west-1:"
        "${data.aws_caller_identity.account.account_id}:instance/*"
    )


def test_role_trusts_only_ec2(any_aws):
    role = any_aws.one("aws_iam_role")
    (st,) = json.loads(role["assume_role_policy"])["Statement"]
    assert st == {
        "Sid": "Ec2AssumeRole",
        "Effect": "Allow",
        "Principal": {"Service": "ec2.amazonaws.com"},
        "Action": "sts:AssumeRole",
    }
    assert any_aws.one("aws_iam_instance_profile")["role"] == ref("aws_iam_role", "instance-role", "name")


def test_permissions_boundary(synthesized):
    assert "permissions_boundary" not in synthesized["appliance-aws"].one("aws_iam_role")
    assert (
        synthesized["aws-full"].one("aws_iam_role")["permissions_boundary"]
        == "arn:aws:iam::123456789012:policy/PlatformBoundary"
    )


# ----------------------------------------------------------------------------- scaling and load balancing


def test_autoscaling_group(aws):
    assert T.to_have_resource_with_properties(
        aws.text,
        "aws_autoscaling_group",
        {
            "name": "mirror-appliance",
            "min_size": 2,
            "max_size": 6,
            "health_check_type": "ELB",
            "vpc_zone_identifier": aws.cfg.subnet_ids,
            "target_group_arns": [ref("aws_lb_target_group", "vxlan-targets", "arn")],
            "launch_template": {
                "id": ref("aws_launch_template", "launch-template", "id"),
                "version": ref("aws_launch_template", "launch-template", "latest_version"),
            },
        },
    )
    asg = aws.one("aws_autoscaling_group")
    assert "desired_capacity" not in asg and asg["lifecycle"] == {"ignore_changes": ["desired_capacity"]}
    assert asg["instance_refresh"]["preferences"] == {"min_healthy_percentage": 100, "max_healthy_percentage": 200}


def test_scaling_policy_tracks_network_in(aws):
    assert T.to_have_resource_with_properties(
        aws.text,
        "aws_autoscaling_policy",
        {
            "autoscaling_group_name": ref("aws_autoscaling_group", "asg", "name"),
            "policy_type": "TargetTrackingScaling",
            "target_tracking_configuration": {
                "predefined_metric_specification": {"predefined_metric_type": "ASGAverageNetworkIn"},
                "target_value": 1_500_000_000,
            },
        },
    )


def test_internal_nlb_with_udp_4789_listener(aws):
    assert T.to_have_resource_with_properties(
        aws.text,
        "aws_lb",
        {"internal": True, "load_balancer_type": "network", "enable_deletion_protection": True},
    )
    assert T.to_have_resource_with_properties(
        aws.text,
        "aws_lb_listener",
        {
            "load_balancer_arn": ref("aws_lb", "nlb", "arn"),
            "port": 4789,
            "protocol": "UDP",
            "default_action": [{"type": "forward", "target_group_arn": ref("aws_lb_target_group", "vxlan-targets", "arn")}],
        },
    )
    assert "security_groups" not in aws.one("aws_lb")


def test_target_group_health_checks_healthz(aws):
    tg = aws.one("aws_lb_target_group")
    assert (tg["protocol"], tg["port"], tg["target_type"]) == ("UDP", 4789, "instance")
    assert tg["health_check"] == {
        "enabled": True,
        "protocol": "HTTP",
        "port": "8000",
        "path": "/healthz",
        "matcher": "200",
        "interval": 10,
        "timeout": 5,
        "healthy_threshold": 3,
        "unhealthy_threshold": 3,
    }
    # Both directions of a mirrored connection must reach the same appliance.
    assert tg["stickiness"] == {"type": "source_ip", "enabled": True}


def test_deletion_protection_can_be_turned_off_for_destroy(synthesized):
    assert synthesized["aws-full"].one("aws_lb")["enable_deletion_protection"] is False


# ----------------------------------------------------------------------------- traffic mirroring


def test_mirror_target_is_the_nlb(aws):
    target = aws.one("aws_ec2_traffic_mirror_target")
    assert target["network_load_balancer_arn"] == ref("aws_lb", "nlb", "arn")
    assert target["depends_on"] == ["aws_lb_listener.vxlan-listener"]


def filter_rules(s: Synth, direction: str) -> list[dict]:
    rules = [r for r in s.resources("aws_ec2_traffic_mirror_filter_rule").values() if r["traffic_direction"] == direction]
    return sorted(rules, key=lambda r: r["rule_number"])


@pytest.mark.parametrize("direction", ["ingress", "egress"])
def test_filter_rejects_dns_first_then_accepts_all_tcp(aws, direction):
    rules = filter_rules(aws, direction)
    assert all(r["traffic_mirror_filter_id"] == ref("aws_ec2_traffic_mirror_filter", "mirror-filter", "id") for r in rules)
    *rejects, accept = rules
    assert {"rule_action": "accept", "protocol": 6, "source_cidr_block": "0.0.0.0/0", "destination_cidr_block": "0.0.0.0/0"}.items() <= accept.items()
    assert "destination_port_range" not in accept and "source_port_range" not in accept
    assert len(rejects) == 2
    for reject in rejects:
        assert reject["rule_action"] == "reject" and reject["protocol"] == 6
        assert reject["rule_number"] < accept["rule_number"]
    assert rejects[0]["destination_port_range"] == {"from_port": 53, "to_port": 53}
    assert rejects[1]["source_port_range"] == {"from_port": 53, "to_port": 53}
    assert len(set(r["rule_number"] for r in rules)) == len(rules)


def test_filter_ipv6_rules_and_quota(synthesized):
    for direction in ("ingress", "egress"):
        rules = filter_rules(synthesized["aws-full"], direction)
        v6 = [r for r in rules if r["source_cidr_block"] == "::/0"]
        assert [r["rule_action"] for r in v6] == ["reject", "reject", "accept"]
        assert len(rules) <= 10  # AWS: at most 10 rules per direction per filter
    filt = synthesized["appliance-aws"].one("aws_ec2_traffic_mirror_filter")
    assert "network_services" not in filt  # never mirror Amazon DNS


def test_sessions_for_listed_enis(aws, synthesized):
    sessions = aws.resources("aws_ec2_traffic_mirror_session")
    assert sorted(s["network_interface_id"] for s in sessions.values()) == [
        "eni-0a1b2c3d4e5f60701",
        "eni-0a1b2c3d4e5f60702",
    ]
    for s in sessions.values():
        assert s["traffic_mirror_target_id"] == ref("aws_ec2_traffic_mirror_target", "mirror-target", "id")
        assert s["traffic_mirror_filter_id"] == ref("aws_ec2_traffic_mirror_filter", "mirror-filter", "id")
        assert (s["session_number"], s["virtual_network_id"]) == (1, 4242)
    assert not synthesized["aws-minimal"].resources("aws_ec2_traffic_mirror_session")


def test_outputs(aws):
    outputs = aws.tf["output"]
    assert outputs["traffic_mirror_target_id"]["value"] == ref("aws_ec2_traffic_mirror_target", "mirror-target", "id")
    assert outputs["nlb_dns_name"]["value"] == ref("aws_lb", "nlb", "dns_name")
    assert outputs["asg_name"]["value"] == ref("aws_autoscaling_group", "asg", "name")


def test_state_backend(synthesized):
    assert "local" in synthesized["appliance-aws"].tf["terraform"]["backend"]
    assert synthesized["aws-full"].tf["terraform"]["backend"] == {
        "s3": {
            "bucket": "platform-tf-state",
            "key": "mirror/aws-full.tfstate",
            "region": "eu-west-1",
            "encrypt": True,
            "use_lockfile": True,
        }
    }
