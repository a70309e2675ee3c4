"""GCP stack: resources, key properties and security properties of the synthesized Terraform."""

from __future__ import annotations

import pytest
from infra_helpers import Synth

from appliance_infra.user_data import render_boot_environment

pytest.importorskip("cdktn_provider_google", reason="the infra extra is not installed")

from cdktn import Testing as T  # noqa: E402

from appliance_infra.gcp_stack import GOOGLE_HEALTH_CHECK_RANGES  # noqa: E402

GCP_STACKS = ["appliance-gcp", "gcp-full"]
WORLD = {"0.0.0.0/0", "::/0"}
COMPUTE = "https://www.googleapis.com/compute/v1/projects"


def ref(kind: str, name: str, attr: str) -> str:
    return "${" + f"{kind}.{name}.{attr}" + "}"


@pytest.fixture(scope="module", params=GCP_STACKS)
def any_gcp(request, synthesized) -> Synth:
    return synthesized[request.param]


def test_all_parts_are_present(gcp):
    for kind in (
        "google_service_account",
        "google_compute_instance_template",
        "google_compute_region_instance_group_manager",
        "google_compute_region_autoscaler",
        "google_compute_health_check",
        "google_compute_region_backend_service",
        "google_compute_forwarding_rule",
        "google_compute_firewall",
        "google_compute_packet_mirroring",
    ):
        assert T.to_have_resource(gcp.text, kind), kind
    assert T.to_have_provider_with_properties(
        gcp.text, "google", {"project": "my-mirror-project", "region": "europe-west1"}
    )
    (provider,) = gcp.tf["provider"]["google"]
    assert provider["default_labels"] == {
        "application": "mirror-appliance",
        "managed-by": "cdktn",
        "team": "platform",
        "environment": "staging",
    }


def test_label_keys_are_kept_verbatim(synthesized):
    (provider,) = synthesized["gcp-full"].tf["provider"]["google"]
    assert provider["default_labels"]["cost-center"] == "cc-42"
    assert provider["default_labels"]["managed-by"] == "cdktn"
    tmpl = synthesized["gcp-full"].one("google_compute_instance_template")
    assert tmpl["labels"]["cost-center"] == "cc-42"


# ----------------------------------------------------------------------------- instances


def test_instance_template(gcp):
    assert T.to_have_resource_with_properties(
        gcp.text,
        "google_compute_instance_template",
        {
            "machine_type": "n2-standard-2",
            "can_ip_forward": False,
            "tags": ["mirror-appliance-collector"],
            "disk": [
                {
                    "boot": True,
                    "source_image": "projects/my-mirror-project/global/images/family/mirror-appliance",
                    "disk_type": "pd-balanced",
                }
            ],
            "shielded_instance_config": {
                "enable_secure_boot": True,
                "enable_vtpm": True,
                "enable_integrity_monitoring": True,
            },
            "service_account": {
                "email": ref("google_service_account", "appliance-sa", "email"),
                "scopes": ["cloud-platform"],
            },
            "lifecycle": {"create_before_destroy": True},
        },
    )


def test_instances_have_no_external_address_and_locked_down_metadata(any_gcp):
    tmpl = any_gcp.one("google_compute_instance_template")
    (nic,) = tmpl["network_interface"]
    assert "access_config" not in nic and "ipv6_access_config" not in nic
    assert nic["subnetwork"] == any_gcp.cfg.subnetwork_url
    meta = tmpl["metadata"]
    assert meta["block-project-ssh-keys"] == "true"
    assert meta["enable-oslogin"] == "true"
    assert meta["serial-port-enable"] == "false"
    assert "ssh-keys" not in meta


def test_appliance_config_attribute_configures_the_appliance_for_gcp(any_gcp):
    metadata = any_gcp.one("google_compute_instance_template")["metadata"]
    assert "startup-script" not in metadata  # the image's unit runs `appliance boot`
    script = metadata["appliance-config"]
    assert script == render_boot_environment(any_gcp.cfg.appliance, "gcp")
    assert "APPLIANCE_MODE='gcp'\n" in script
    assert "AKTO_KAFKA_BROKER_MAL='kafka-0.internal:9092,kafka-1.internal:9092'\n" in script
    assert "APPLIANCE_KAFKA_TOPIC='akto.api.logs'\n" in script


def test_disk_encryption_with_customer_key(synthesized):
    (disk,) = synthesized["gcp-full"].one("google_compute_instance_template")["disk"]
    assert disk["disk_encryption_key"] == {
        "kms_key_self_link": "projects/kms-proj/locations/europe-west1/keyRings/ring/cryptoKeys/disk"
    }
    (default_disk,) = synthesized["appliance-gcp"].one("google_compute_instance_template")["disk"]
    assert "disk_encryption_key" not in default_disk  # Google-managed encryption at rest


def test_service_account_roles_are_opt_in_and_limited(synthesized):
    assert not synthesized["appliance-gcp"].resources("google_project_iam_member")
    members = synthesized["gcp-full"].resources("google_project_iam_member").values()
    assert sorted(m["role"] for m in members) == ["roles/logging.logWriter", "roles/monitoring.metricWriter"]
    for m in members:
        assert m["member"] == "serviceAccount:" + ref("google_service_account", "appliance-sa", "email")
    for s in synthesized.stacks.values():
        for kind in ("google_project_iam_binding", "google_project_iam_policy"):
            assert not s.resources(kind)


def test_regional_mig_with_autohealing(gcp):
    mig = gcp.one("google_compute_region_instance_group_manager")
    assert mig["region"] == "europe-west1"
    assert mig["version"] == [
        {"name": "primary", "instance_template": ref("google_compute_instance_template", "instance-template", "self_link_unique")}
    ]
    assert mig["auto_healing_policies"] == {
        "health_check": ref("google_compute_health_check", "healthz", "id"),
        "initial_delay_sec": 180,
    }
    assert mig["update_policy"]["max_unavailable_fixed"] == 0
    assert mig["update_policy"]["max_surge_fixed"] == 4  # >= the zone count of any region
    assert "target_size" not in mig  # the autoscaler owns the size


def test_autoscaler(gcp, synthesized):
    assert T.to_have_resource_with_properties(
        gcp.text,
        "google_compute_region_autoscaler",
        {
            "target": ref("google_compute_region_instance_group_manager", "mig", "id"),
            "autoscaling_policy": {
                "min_replicas": 2,
                "max_replicas": 6,
                "cpu_utilization": {"target": 0.7},
                "metric": [
                    {
                        "name": "compute.googleapis.com/instance/network/received_bytes_count",
                        "type": "DELTA_PER_SECOND",
                        "target": 25_000_000,
                    }
                ],
            },
        },
    )
    full_mig = synthesized["gcp-full"].one("google_compute_region_instance_group_manager")
    assert full_mig["distribution_policy_zones"] == synthesized["gcp-full"].cfg.zones
    assert full_mig["update_policy"]["max_surge_fixed"] == 3  # one per listed zone


def test_health_check_is_http_healthz_8000(gcp):
    assert T.to_have_resource_with_properties(
        gcp.text,
        "google_compute_health_check",
        {"http_health_check": {"port": 8000, "request_path": "/healthz"}},
    )


# ----------------------------------------------------------------------------- collector load balancer


def test_internal_regional_backend_service(gcp):
    backend = gcp.one("google_compute_region_backend_service")
    assert backend["load_balancing_scheme"] == "INTERNAL"
    assert backend["region"] == "europe-west1"
    assert backend["health_checks"] == [ref("google_compute_health_check", "healthz", "id")]
    assert backend["backend"] == [
        {
            "group": ref("google_compute_region_instance_group_manager", "mig", "instance_group"),
            "balancing_mode": "CONNECTION",
        }
    ]


def test_forwarding_rule_is_the_mirroring_collector(gcp):
    assert T.to_have_resource_with_properties(
        gcp.text,
        "google_compute_forwarding_rule",
        {
            "is_mirroring_collector": True,
            "load_balancing_scheme": "INTERNAL",
            "all_ports": True,
            "backend_service": ref("google_compute_region_backend_service", "collector-backend", "id"),
            "network": f"{COMPUTE}/my-mirror-project/global/networks/prod-vpc",
            "subnetwork": f"{COMPUTE}/my-mirror-project/regions/europe-west1/subnetworks/collectors",
        },
    )
    rule = gcp.one("google_compute_forwarding_rule")
    assert "ports" not in rule and "port_range" not in rule


# ----------------------------------------------------------------------------- firewall


def test_firewall_rules_are_narrow(any_gcp):
    tag = any_gcp.cfg.collector_network_tag
    rules = any_gcp.resources("google_compute_firewall")
    assert len(rules) == 2
    for rule in rules.values():
        assert rule["direction"] == "INGRESS"
        assert not WORLD & set(rule["source_ranges"]), rule
        assert rule["target_tags"] == [tag]  # never every instance in the network
        assert "deny" not in rule and "source_tags" not in rule
        for allow in rule["allow"]:
            assert allow["protocol"] != "all"


def test_mirrored_traffic_rule(synthesized):
    gcp = synthesized["appliance-gcp"]
    rule = gcp.resources("google_compute_firewall")["allow-mirrored"]
    assert rule["source_ranges"] == ["10.20.0.0/16"]
    assert rule["allow"] == [{"protocol": "tcp"}]
    full = synthesized["gcp-full"].resources("google_compute_firewall")["allow-mirrored"]
    assert full["allow"] == [{"protocol": "tcp"}, {"protocol": "udp"}]  # follows mirror_ip_protocols


def test_health_check_rule_is_google_ranges_to_port_8000_only(gcp):
    rule = gcp.resources("google_compute_firewall")["allow-health-checks"]
    assert sorted(rule["source_ranges"]) == sorted(GOOGLE_HEALTH_CHECK_RANGES) == ["130.211.0.0/22", "35.191.0.0/16"]
    assert rule["allow"] == [{"protocol": "tcp", "ports": ["8000"]}]


# ----------------------------------------------------------------------------- packet mirroring


def test_packet_mirroring_policy(gcp):
    policy = gcp.one("google_compute_packet_mirroring")
    assert policy["region"] == "europe-west1"
    assert policy["network"] == {"url": f"{COMPUTE}/my-mirror-project/global/networks/prod-vpc"}
    assert policy["collector_ilb"] == {"url": ref("google_compute_forwarding_rule", "collector", "id")}
    assert policy["mirrored_resources"] == {
        "subnetworks": [{"url": f"{COMPUTE}/my-mirror-project/regions/europe-west1/subnetworks/web"}],
        "tags": ["mirrored-api"],
    }
    assert policy["filter"] == {"ip_protocols": ["tcp"], "direction": "BOTH"}


def test_packet_mirroring_over_instances(synthesized):
    policy = synthesized["gcp-full"].one("google_compute_packet_mirroring")
    assert policy["mirrored_resources"] == {
        "instances": [
            {"url": f"{COMPUTE}/my-mirror-project/zones/europe-west1-b/instances/api-1"},
            {"url": f"{COMPUTE}/other/zones/europe-west1-c/instances/api-2"},
        ]
    }
    assert policy["filter"] == {"ip_protocols": ["tcp", "udp"], "cidr_ranges": ["10.20.0.0/16"], "direction": "BOTH"}
    assert policy["network"]["url"] == f"{COMPUTE}/shared-vpc-host/global/networks/shared"


def test_outputs(gcp):
    outputs = gcp.tf["output"]
    assert outputs["forwarding_rule_id"]["value"] == ref("google_compute_forwarding_rule", "collector", "id")
    assert outputs["packet_mirroring_policy_id"]["value"] == ref("google_compute_packet_mirroring", "policy", "id")


def test_state_backend(synthesized):
    assert synthesized["gcp-full"].tf["terraform"]["backend"] == {
        "gcs": {"bucket": "platform-tf-state", "prefix": "mirror-appliance/gcp-full"}  # default: per stack
    }
