"""`appliance provision gcp`: request bodies, operation polling, idempotency, dry run, drift."""

from __future__ import annotations

import copy
import json

import pytest
from gcp_helpers import PROJECT, REGION, fake, offline, provision_args, run  # noqa: F401 (fixtures)

P = f"projects/{PROJECT}"
R = f"{P}/regions/{REGION}"
NET = f"{P}/global/networks/prod-vpc"
SOURCES = ("--subnet", "app-a", "--tag", "web", "--instance", f"{REGION}-a/web-1")
FILTER = ("--cidr", "192.168.0.0/16", "--protocol", "tcp", "--direction", "both", "--priority", "900")

INSERT_ORDER = [
    "global/firewalls",
    "global/firewalls",
    "regions/us-central1/healthChecks",
    "global/instanceTemplates",
    "regions/us-central1/instanceGroupManagers",
    "regions/us-central1/autoscalers",
    "regions/us-central1/backendServices",
    "regions/us-central1/forwardingRules",
    "regions/us-central1/packetMirrorings",
]


def bodies(fake):
    return {c.body["name"]: c.body for c in fake.inserts()}


def test_create_collector_sends_expected_bodies_in_dependency_order(run, fake):
    code, out, err = run(*provision_args(*SOURCES, *FILTER))
    assert code == 0, err
    assert [c.path.split("/", 2)[2] for c in fake.inserts()] == INSERT_ORDER
    b = bodies(fake)
    assert list(b) == [
        "demo-allow-health", "demo-allow-mirrored", "demo-hc", "demo-tmpl", "demo-mig",
        "demo-as", "demo-bes", "demo-fr", "demo-pm",
    ]
    for body in b.values():
        assert body["description"].startswith("mirror-appliance:demo ")

    assert b["demo-allow-health"] == {
        "name": "demo-allow-health",
        "description": b["demo-allow-health"]["description"],
        "network": NET,
        "direction": "INGRESS",
        "priority": 1000,
        "sourceRanges": ["35.191.0.0/16", "130.211.0.0/22"],
        "targetTags": ["demo-collector"],
        "allowed": [{"IPProtocol": "tcp", "ports": ["8000"]}],
    }
    fw = b["demo-allow-mirrored"]
    # --cidr narrows the rule to the filter range plus the mirrored subnet, VM and tag.
    assert fw["sourceRanges"] == ["192.168.0.0/16", "10.10.0.0/24", "10.10.0.5/32"]
    assert fw["sourceTags"] == ["web"]
    assert fw["targetTags"] == ["demo-collector"]
    assert fw["allowed"] == [{"IPProtocol": "tcp"}]
    assert fw["direction"] == "INGRESS" and fw["network"] == NET

    assert b["demo-hc"]["type"] == "HTTP"
    assert b["demo-hc"]["httpHealthCheck"] == {"port": 8000, "requestPath": "/healthz"}

    props = b["demo-tmpl"]["properties"]
    assert props["machineType"] == "e2-standard-2"
    assert props["tags"] == {"items": ["demo-collector"]}
    assert props["networkInterfaces"] == [{"network": NET, "subnetwork": f"{R}/subnetworks/collectors"}]
    assert props["disks"][0]["initializeParams"] == {"sourceImage": "projects/appliance-images/global/images/family/mirror-appliance"}
    assert props["disks"][0]["boot"] is True
    assert props["labels"] == {"managed-by": "mirror-appliance", "mirror-appliance-deployment": "demo"}
    meta = {i["key"]: i["value"] for i in props["metadata"]["items"]}
    assert json.loads(meta["appliance-config"]) == {
        "AKTO_KAFKA_BROKER_MAL": "kafka-1.internal:9092,kafka-2.internal:9092",
        "APPLIANCE_HTTP": "0.0.0.0:8000",
        "APPLIANCE_MODE": "gcp",
        "CAPTURE_ALL": "true",
    }
    assert meta["appliance-mode"] == "gcp"
    assert meta["appliance-deployment"] == "demo"
    assert meta["appliance-health-port"] == "8000"
    script = meta["startup-script"]
    # on the appliance image the unit runs `appliance boot`; elsewhere the script does
    assert "exec systemctl restart appliance.service" in script
    assert script.index("systemctl restart") < script.index("exec appliance boot")
    assert "serviceAccounts" not in props

    mig = b["demo-mig"]
    assert mig["instanceTemplate"] == f"{P}/global/instanceTemplates/demo-tmpl"
    assert mig["targetSize"] == 2
    assert mig["baseInstanceName"] == "demo-collector"
    assert mig["autoHealingPolicies"] == [{"healthCheck": f"{R}/healthChecks/demo-hc", "initialDelaySec": 300}]

    asc = b["demo-as"]
    assert asc["target"] == f"{R}/instanceGroupManagers/demo-mig"
    assert asc["autoscalingPolicy"]["minNumReplicas"] == 2
    assert asc["autoscalingPolicy"]["maxNumReplicas"] == 5
    assert asc["autoscalingPolicy"]["cpuUtilization"] == {"utilizationTarget": 0.6}

    bes = b["demo-bes"]
    assert bes["loadBalancingScheme"] == "INTERNAL"
    assert bes["protocol"] == "TCP"
    assert bes["healthChecks"] == [f"{R}/healthChecks/demo-hc"]
    assert bes["backends"] == [{"group": f"{R}/instanceGroups/demo-mig", "balancingMode": "CONNECTION"}]

    fr = b["demo-fr"]
    assert fr["loadBalancingScheme"] == "INTERNAL"
    assert fr["isMirroringCollector"] is True
    assert fr["allPorts"] is True
    assert fr["IPProtocol"] == "TCP"
    assert "ports" not in fr and "portRange" not in fr
    assert fr["backendService"] == f"{R}/backendServices/demo-bes"
    assert fr["subnetwork"] == f"{R}/subnetworks/collectors"

    assert b["demo-pm"] == {
        "name": "demo-pm",
        "description": b["demo-pm"]["description"],
        "network": {"url": NET},
        "priority": 900,
        "collectorIlb": {"url": f"{R}/forwardingRules/demo-fr"},
        "mirroredResources": {
            "subnetworks": [{"url": f"{R}/subnetworks/app-a"}],
            "instances": [{"url": f"{P}/zones/{REGION}-a/instances/web-1"}],
            "tags": ["web"],
        },
        "filter": {"cidrRanges": ["192.168.0.0/16"], "IPProtocols": ["tcp"], "direction": "BOTH"},
        "enable": "TRUE",
    }
    assert "9 created" in out
    assert "creating packet mirroring policy demo-pm ..." in err
    assert fake.get(f"{R}/packetMirrorings/demo-pm")["collectorIlb"]["url"].endswith("/forwardingRules/demo-fr")


@pytest.mark.parametrize("polls", [0, 1, 4])
def test_every_operation_is_polled_to_done_before_the_next_call(run, fake, polls):
    fake.polls_before_done = polls
    code, _, err = run(*provision_args(*SOURCES))
    assert code == 0, err
    calls = fake.calls
    inserts = [i for i, c in enumerate(calls) if c in fake.inserts()]
    assert len(inserts) == 9
    for n, i in enumerate(inserts):
        end = inserts[n + 1] if n + 1 < len(inserts) else len(calls)
        waits = [c for c in calls[i + 1 : end] if c.path.endswith("/wait")]
        assert len(waits) == polls  # exactly until DONE, through Operations.wait
        scope = "global" if "/global/" in calls[i].path else f"regions/{REGION}"
        assert all(f"{P}/{scope}/operations/" in w.path and w.method == "POST" for w in waits)
    if polls > 1:  # still running after the first poll: progress is shown
        assert "  ... creating autoscaler demo-as: RUNNING" in err


def test_rerun_changes_nothing(run, fake):
    assert run(*provision_args(*SOURCES, *FILTER))[0] == 0
    before = copy.deepcopy(fake.store)
    n = len(fake.calls)
    code, out, err = run(*provision_args(*SOURCES, *FILTER))
    assert code == 0, err
    again = fake.calls[n:]
    assert again and all(c.method == "GET" for c in again)
    assert fake.store == before
    assert "0 created, 0 updated, 9 unchanged" in out
    assert "packet mirroring policy demo-pm: exists, unchanged" in err


def test_existing_collector_only_creates_the_policy(run, fake):
    url = f"https://www.googleapis.com/compute/v1/{R}/forwardingRules/ext-collector"
    code, out, err = run(*provision_args("--subnet", "app-b", "--collector-ilb", url, collector=False))
    assert code == 0, err
    assert [c.path for c in fake.mutations()] == [f"{R}/packetMirrorings"]
    body = fake.inserts()[0].body
    assert body["collectorIlb"] == {"url": f"{R}/forwardingRules/ext-collector"}
    assert body["mirroredResources"] == {"subnetworks": [{"url": f"{R}/subnetworks/app-b"}]}
    assert body["filter"] == {"direction": "BOTH"}
    assert any(c.method == "GET" and c.path.endswith("forwardingRules/ext-collector") for c in fake.calls)
    assert "1 created" in out
    # and again: nothing
    n = len(fake.calls)
    assert run(*provision_args("--subnet", "app-b", "--collector-ilb", "ext-collector", collector=False))[0] == 0
    assert all(c.method == "GET" for c in fake.calls[n:])


@pytest.mark.parametrize(
    "collector, code, needle",
    [
        ("plain-ilb", 2, "is not a mirroring collector (isMirroringCollector is false"),
        ("web-lb", 2, "has loadBalancingScheme=EXTERNAL; packet mirroring needs an INTERNAL passthrough"),
        ("missing-ilb", 2, "forwarding rule projects/demo-proj/regions/us-central1/forwardingRules/missing-ilb (--collector-ilb)"),
        (f"{P}/regions/europe-west1/forwardingRules/x", 2, "is in region europe-west1, not us-central1"),
        (f"{P}/global/forwardingRules/x", 2, "is a global forwarding rule"),
    ],
)
def test_unsuitable_collector_is_refused(run, fake, collector, code, needle):
    rc, out, err = run(*provision_args("--tag", "web", "--collector-ilb", collector, collector=False))
    assert rc == code
    assert needle in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert fake.mutations() == []


def test_mirrored_firewall_without_cidr_admits_all_mirrored_traffic(run, fake):
    assert run(*provision_args("--tag", "web", "--protocol", "tcp", "--protocol", "udp"))[0] == 0
    fw = bodies(fake)["demo-allow-mirrored"]
    assert fw["sourceRanges"] == ["0.0.0.0/0"]
    assert "sourceTags" not in fw
    assert fw["allowed"] == [{"IPProtocol": "tcp"}, {"IPProtocol": "udp"}]
    assert bodies(fake)["demo-pm"]["filter"] == {"IPProtocols": ["tcp", "udp"], "direction": "BOTH"}
    # no protocol filter: every protocol
    fake2 = bodies(fake)
    assert fake2["demo-allow-health"]["allowed"] == [{"IPProtocol": "tcp", "ports": ["8000"]}]


def test_service_account_health_port_and_extra_env(run, fake):
    code, _, err = run(*provision_args(
        "--subnet", "app-a", "--health-port", "9100", "--service-account", "collector@demo-proj.iam.gserviceaccount.com",
        "--appliance-env", "AKTO_TRAFFIC_BATCH_SIZE=100", "--appliance-env", "AKTO_LOG_LEVEL=INFO",
        "--machine-type", "n2-standard-4", "--direction", "egress",
    ))
    assert code == 0, err
    b = bodies(fake)
    props = b["demo-tmpl"]["properties"]
    assert props["machineType"] == "n2-standard-4"
    assert props["serviceAccounts"] == [{"email": "collector@demo-proj.iam.gserviceaccount.com", "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}]
    meta = {i["key"]: i["value"] for i in props["metadata"]["items"]}
    assert json.loads(meta["appliance-config"]) == {
        "AKTO_KAFKA_BROKER_MAL": "kafka-1.internal:9092,kafka-2.internal:9092",
        "AKTO_LOG_LEVEL": "INFO",
        "AKTO_TRAFFIC_BATCH_SIZE": "100",
        "APPLIANCE_HTTP": "0.0.0.0:9100",
        "APPLIANCE_MODE": "gcp",
        "CAPTURE_ALL": "true",
    }
    assert meta["appliance-health-port"] == "9100"
    assert b["demo-hc"]["httpHealthCheck"] == {"port": 9100, "requestPath": "/healthz"}
    assert b["demo-allow-health"]["allowed"] == [{"IPProtocol": "tcp", "ports": ["9100"]}]
    assert b["demo-pm"]["filter"]["direction"] == "EGRESS"


def test_dry_run_makes_no_mutating_call_and_plans_exactly_what_is_sent(run, fake):
    code, out, err = run(*provision_args(*SOURCES, *FILTER, "--dry-run", "--json"))
    assert code == 0, err
    assert fake.calls and all(c.method == "GET" for c in fake.calls)
    plan = json.loads(out)
    assert plan["dry_run"] is True
    assert [s["action"] for s in plan["steps"]] == ["create"] * 9
    planned = {s["name"]: s["body"] for s in plan["steps"]}

    code, text, _ = run(*provision_args(*SOURCES, *FILTER, "--dry-run"))
    assert code == 0
    assert "dry run, nothing changed" in text
    assert "create    packet mirroring policy  demo-pm" in text
    assert "filter: direction BOTH; protocols tcp; cidrs 192.168.0.0/16" in text
    assert all(c.method == "GET" for c in fake.calls)

    assert run(*provision_args(*SOURCES, *FILTER))[0] == 0
    assert bodies(fake) == planned

    n = len(fake.calls)
    code, out, _ = run(*provision_args(*SOURCES, *FILTER, "--dry-run", "--json"))
    assert [s["action"] for s in json.loads(out)["steps"]] == ["unchanged"] * 9
    assert all(c.method == "GET" for c in fake.calls[n:])


def test_changed_sources_patch_the_policy_and_replace_the_firewall(run, fake):
    assert run(*provision_args(*SOURCES, *FILTER))[0] == 0
    n = len(fake.calls)
    code, out, err = run(*provision_args(*SOURCES, "--subnet", "app-b", *FILTER))
    assert code == 0, err
    muts = [(c.method, c.path) for c in fake.mutations() if fake.calls.index(c) >= n]
    assert muts == [
        ("PUT", f"{P}/global/firewalls/demo-allow-mirrored"),
        ("PATCH", f"{R}/packetMirrorings/demo-pm"),
    ]
    patch = [c for c in fake.calls[n:] if c.method == "PATCH"][0].body
    assert patch == {
        "name": "demo-pm",
        "mirroredResources": {
            "subnetworks": [{"url": f"{R}/subnetworks/app-a"}, {"url": f"{R}/subnetworks/app-b"}],
            "instances": [{"url": f"{P}/zones/{REGION}-a/instances/web-1"}],
            "tags": ["web"],
        },
    }
    fw = fake.get(f"{P}/global/firewalls/demo-allow-mirrored")
    assert "10.20.0.0/24" in fw["sourceRanges"]
    assert "2 updated, 7 unchanged" in out
    # converged: a third run does nothing
    n = len(fake.calls)
    assert run(*provision_args(*SOURCES, "--subnet", "app-b", *FILTER))[0] == 0
    assert all(c.method == "GET" for c in fake.calls[n:])


def test_dropping_a_source_replaces_the_policy(run, fake):
    assert run(*provision_args("--subnet", "app-a", "--tag", "web"))[0] == 0
    n = len(fake.calls)
    code, out, err = run(*provision_args("--subnet", "app-a"))
    assert code == 0, err
    muts = [(c.method, c.path) for c in fake.mutations() if fake.calls.index(c) >= n]
    assert muts == [("DELETE", f"{R}/packetMirrorings/demo-pm"), ("POST", f"{R}/packetMirrorings")]
    assert "must drop entries a patch cannot clear; replacing it" in err
    assert "tags" not in fake.get(f"{R}/packetMirrorings/demo-pm")["mirroredResources"]


def test_scaling_change_patches_autoscaler_and_template_change_only_warns(run, fake):
    assert run(*provision_args("--subnet", "app-a"))[0] == 0
    n = len(fake.calls)
    code, out, err = run(*provision_args("--subnet", "app-a", "--max", "8", "--machine-type", "n2-standard-8"))
    assert code == 0, err
    muts = [c for c in fake.mutations() if fake.calls.index(c) >= n]
    # RegionAutoscalers.patch names its target in the query: PATCH .../autoscalers?autoscaler=NAME
    assert [(c.method, c.path) for c in muts] == [("PATCH", f"{R}/autoscalers")]
    assert muts[0].query == {"autoscaler": "demo-as"}
    assert muts[0].body["autoscalingPolicy"]["maxNumReplicas"] == 8
    assert "warning: instance template demo-tmpl differs from the requested configuration in properties" in err
    assert "1 drifted" in out
    assert fake.get(f"{R}/autoscalers/demo-as")["autoscalingPolicy"]["maxNumReplicas"] == 8


def test_project_and_region_from_environment(run, fake, monkeypatch):
    monkeypatch.setenv("CLOUDSDK_CORE_PROJECT", PROJECT)
    monkeypatch.setenv("CLOUDSDK_COMPUTE_REGION", REGION)
    code, _, err = run("provision", "gcp", "--network", "prod-vpc", "--tag", "web", "--collector-ilb", "ext-collector")
    assert code == 0, err
    assert fake.inserts()[0].body["name"] == "mirror-appliance-pm"


def test_endpoint_from_environment(run, fake, monkeypatch):
    monkeypatch.setenv("APPLIANCE_GCP_API_ENDPOINT", fake.endpoint)
    code, _, err = run(*provision_args("--tag", "web", "--collector-ilb", "ext-collector", collector=False), endpoint=False)
    assert code == 0, err
    assert len(fake.inserts()) == 1
