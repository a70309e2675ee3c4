"""The desired resources of a deployment, as Compute REST JSON bodies, in creation order.

Pure functions of the validated spec plus a few facts read from the project (subnet ranges,
instance addresses), so the plan printed by --dry-run is exactly what provisioning sends.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from provision.gcp import spec as S

# How drift on an existing resource is handled: "patch" sends the changed fields (JSON merge
# patch), "update" replaces the resource (PUT), "warn" only reports it (immutable or risky to
# change in place: templates, instance groups, load balancer wiring).
PATCH, UPDATE, WARN = "patch", "update", "warn"


@dataclass
class Step:
    kind: str  # key of provision.gcp.compute.KINDS
    name: str
    body: dict
    compare: tuple[str, ...]  # top-level fields compared with an existing resource
    on_drift: str = WARN
    label: str = ""
    # Fields compared strictly: an entry present on the resource but not requested is drift
    # (other fields tolerate server-side defaults the API adds).
    strict: tuple[str, ...] = ()

    @property
    def what(self) -> str:
        return f"{self.label} {self.name}"


@dataclass
class Facts:
    """What the planner needs to know about existing resources."""

    subnet_ranges: dict[str, list[str]] = field(default_factory=dict)  # subnet URL -> CIDRs
    instance_ips: dict[str, str] = field(default_factory=dict)  # instance URL -> internal IP


STARTUP_SCRIPT = """#!/bin/bash
# mirror-appliance collector bootstrap, written by `appliance provision gcp`.
# `appliance boot` reads the instance attributes appliance-mode, appliance-config,
# appliance-health-port and appliance-deployment from the metadata server.
set -euo pipefail
# The appliance image (deploy/packer) runs `appliance boot` from its systemd unit: restart
# it so it reads these attributes, rather than start a second runtime on the same ports.
if systemctl cat appliance.service >/dev/null 2>&1; then
  exec systemctl restart appliance.service
fi
if command -v appliance >/dev/null 2>&1; then
  exec appliance boot
fi
echo "mirror-appliance: the 'appliance' command is not installed on this image" >&2
exit 1
"""


def _url(spec: S.DeploymentSpec, collection: str, name: str, scope: str = "region") -> str:
    where = "global" if scope == "global" else f"regions/{spec.region}"
    return f"projects/{spec.project}/{where}/{collection}/{name}"


def resource_urls(spec: S.DeploymentSpec) -> dict[str, str]:
    n = spec.names
    return {
        "health_check": _url(spec, "healthChecks", n["health_check"]),
        "instance_template": _url(spec, "instanceTemplates", n["instance_template"], "global"),
        "instance_group_manager": _url(spec, "instanceGroupManagers", n["instance_group_manager"]),
        # A regional MIG's instance group has the MIG's name.
        "instance_group": _url(spec, "instanceGroups", n["instance_group_manager"]),
        "backend_service": _url(spec, "backendServices", n["backend_service"]),
        "forwarding_rule": _url(spec, "forwardingRules", n["forwarding_rule"]),
    }


def mirrored_source_ranges(spec: S.DeploymentSpec, facts: Facts) -> list[str]:
    """Where mirrored packets can come from, as seen by the collector's ingress firewall.

    Mirrored packets keep their original addresses. Without a --cidr filter the far end of a
    mirrored flow can be any address, so only 0.0.0.0/0 admits all of it. With --cidr the
    packets are between the mirrored VMs and those ranges, so the rule is narrowed to them.
    """
    if not spec.cidrs:
        return ["0.0.0.0/0"]
    ranges = list(spec.cidrs)
    for url in spec.subnets:
        ranges.extend(facts.subnet_ranges.get(url, []))
    for url in spec.instances:
        ip = facts.instance_ips.get(url)
        if ip:
            ranges.append(f"{ip}/32")
    return S._dedupe(ranges)


def policy_body(spec: S.DeploymentSpec, collector_url: str) -> dict:
    mirrored: dict = {}
    if spec.subnets:
        mirrored["subnetworks"] = [{"url": u} for u in spec.subnets]
    if spec.instances:
        mirrored["instances"] = [{"url": u} for u in spec.instances]
    if spec.tags:
        mirrored["tags"] = list(spec.tags)
    filt: dict = {"direction": spec.direction}
    if spec.cidrs:
        filt["cidrRanges"] = list(spec.cidrs)
    if spec.protocols:
        filt["IPProtocols"] = list(spec.protocols)
    return {
        "name": spec.names["packet_mirroring"],
        "description": S.description(spec.name, "packet mirroring policy"),
        "network": {"url": spec.network},
        "priority": spec.priority,
        "collectorIlb": {"url": collector_url},
        "mirroredResources": mirrored,
        "filter": filt,
        "enable": "TRUE",
    }


def build_plan(spec: S.DeploymentSpec, facts: Facts | None = None) -> list[Step]:
    facts = facts or Facts()
    n = spec.names
    steps: list[Step] = []
    if spec.collector is None:
        steps.append(_policy_step(spec, spec.collector_ilb))
        return steps

    c = spec.collector
    urls = resource_urls(spec)
    tag = S.collector_tag(spec.name)

    steps.append(
        Step(
            "firewall",
            n["firewall_health"],
            {
                "name": n["firewall_health"],
                "description": S.description(spec.name, "allow Google health checks to the collectors' health port"),
                "network": spec.network,
                "direction": "INGRESS",
                "priority": 1000,
                "sourceRanges": list(S.HEALTH_CHECK_RANGES),
                "targetTags": [tag],
                "allowed": [{"IPProtocol": "tcp", "ports": [str(c.health_port)]}],
            },
            ("network", "direction", "sourceRanges", "sourceTags", "targetTags", "allowed"),
            UPDATE,
            "firewall rule",
        )
    )
    mirrored_fw = {
        "name": n["firewall_mirrored"],
        "description": S.description(spec.name, "admit mirrored traffic to the collectors"),
        "network": spec.network,
        "direction": "INGRESS",
        "priority": 1000,
        "sourceRanges": mirrored_source_ranges(spec, facts),
        "targetTags": [tag],
        "allowed": [{"IPProtocol": p} for p in spec.protocols] or [{"IPProtocol": "all"}],
    }
    if spec.cidrs and spec.tags:
        mirrored_fw["sourceTags"] = list(spec.tags)
    steps.append(
        Step(
            "firewall",
            n["firewall_mirrored"],
            mirrored_fw,
            ("network", "direction", "sourceRanges", "sourceTags", "targetTags", "allowed"),
            UPDATE,
            "firewall rule",
        )
    )
    steps.append(
        Step(
            "health_check",
            n["health_check"],
            {
                "name": n["health_check"],
                "description": S.description(spec.name, f"appliance HTTP {S.HEALTH_PATH} check"),
                "type": "HTTP",
                "httpHealthCheck": {"port": c.health_port, "requestPath": S.HEALTH_PATH},
                "checkIntervalSec": 10,
                "timeoutSec": 5,
                "healthyThreshold": 2,
                "unhealthyThreshold": 3,
            },
            ("type", "httpHealthCheck"),
            WARN,
            "health check",
        )
    )
    labels = {"managed-by": "mirror-appliance", "mirror-appliance-deployment": spec.name}
    metadata = [
        {"key": "appliance-mode", "value": "gcp"},
        {"key": "appliance-deployment", "value": spec.name},
        {"key": "appliance-health-port", "value": str(c.health_port)},
        {"key": "appliance-config", "value": S.appliance_config_json(spec)},
        {"key": "enable-oslogin", "value": "TRUE"},
        {"key": "startup-script", "value": STARTUP_SCRIPT},
    ]
    properties: dict = {
        "machineType": c.machine_type,
        "tags": {"items": [tag]},
        "labels": labels,
        "canIpForward": False,
        "disks": [
            {
                "boot": True,
                "autoDelete": True,
                "type": "PERSISTENT",
                "initializeParams": {"sourceImage": c.image},
            }
        ],
        # No accessConfigs: collectors get no external address.
        "networkInterfaces": [{"network": spec.network, "subnetwork": c.subnet}],
        "metadata": {"items": metadata},
    }
    if c.service_account:
        properties["serviceAccounts"] = [
            {"email": c.service_account, "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}
        ]
    steps.append(
        Step(
            "instance_template",
            n["instance_template"],
            {
                "name": n["instance_template"],
                "description": S.description(spec.name, "collector instance template"),
                "properties": properties,
            },
            ("properties",),
            WARN,
            "instance template",
        )
    )
    steps.append(
        Step(
            "instance_group_manager",
            n["instance_group_manager"],
            {
                "name": n["instance_group_manager"],
                "description": S.description(spec.name, "collector instance group"),
                "baseInstanceName": f"{spec.name}-collector",
                "instanceTemplate": urls["instance_template"],
                "targetSize": c.min_replicas,
                "autoHealingPolicies": [{"healthCheck": urls["health_check"], "initialDelaySec": 300}],
            },
            ("baseInstanceName", "instanceTemplate", "autoHealingPolicies"),
            WARN,
            "managed instance group",
        )
    )
    steps.append(
        Step(
            "autoscaler",
            n["autoscaler"],
            {
                "name": n["autoscaler"],
                "description": S.description(spec.name, "collector autoscaler"),
                "target": urls["instance_group_manager"],
                "autoscalingPolicy": {
                    "mode": "ON",
                    "minNumReplicas": c.min_replicas,
                    "maxNumReplicas": c.max_replicas,
                    "coolDownPeriodSec": 90,
                    "cpuUtilization": {"utilizationTarget": c.target_cpu},
                },
            },
            ("target", "autoscalingPolicy"),
            PATCH,
            "autoscaler",
        )
    )
    steps.append(
        Step(
            "backend_service",
            n["backend_service"],
            {
                "name": n["backend_service"],
                "description": S.description(spec.name, "collector backend service (internal passthrough)"),
                "loadBalancingScheme": "INTERNAL",
                "protocol": "TCP",
                "network": spec.network,
                "healthChecks": [urls["health_check"]],
                "backends": [{"group": urls["instance_group"], "balancingMode": "CONNECTION"}],
            },
            ("loadBalancingScheme", "protocol", "network", "healthChecks", "backends"),
            WARN,
            "backend service",
        )
    )
    steps.append(
        Step(
            "forwarding_rule",
            n["forwarding_rule"],
            {
                "name": n["forwarding_rule"],
                "description": S.description(spec.name, "packet mirroring collector"),
                "loadBalancingScheme": "INTERNAL",
                "backendService": urls["backend_service"],
                "IPProtocol": "TCP",
                "allPorts": True,
                "isMirroringCollector": True,
                "network": spec.network,
                "subnetwork": c.subnet,
            },
            ("loadBalancingScheme", "backendService", "allPorts", "isMirroringCollector", "network", "subnetwork"),
            WARN,
            "forwarding rule",
        )
    )
    steps.append(_policy_step(spec, urls["forwarding_rule"]))
    return steps


def _policy_step(spec: S.DeploymentSpec, collector_url: str) -> Step:
    return Step(
        "packet_mirroring",
        spec.names["packet_mirroring"],
        policy_body(spec, collector_url),
        ("network", "priority", "collectorIlb", "mirroredResources", "filter", "enable"),
        PATCH,
        "packet mirroring policy",
        strict=("mirroredResources", "filter"),
    )


# Teardown: reverse dependency order. Everything a deployment can own, by deterministic name.
TEARDOWN_ORDER = (
    ("packet_mirroring", "packet_mirroring", "packet mirroring policy"),
    ("forwarding_rule", "forwarding_rule", "forwarding rule"),
    ("backend_service", "backend_service", "backend service"),
    ("autoscaler", "autoscaler", "autoscaler"),
    ("instance_group_manager", "instance_group_manager", "managed instance group"),
    ("instance_template", "instance_template", "instance template"),
    ("health_check", "health_check", "health check"),
    ("firewall", "firewall_mirrored", "firewall rule"),
    ("firewall", "firewall_health", "firewall rule"),
)


# ------------------------------------------------------------------------------ comparison


def _num(v):
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def matches(desired, existing) -> bool:
    """True when `existing` (API JSON) already has everything `desired` asks for."""
    if isinstance(desired, dict):
        if not isinstance(existing, dict):
            return not desired and existing in (None, {}, [])
        return all(
            matches(v, existing.get(k)) if k in existing else _empty(v)
            for k, v in desired.items()
        )
    if isinstance(desired, list):
        existing = existing or []
        if not isinstance(existing, list) or len(existing) != len(desired):
            return False
        pool = list(existing)
        for item in desired:
            for i, cand in enumerate(pool):
                if matches(item, cand):
                    del pool[i]
                    break
            else:
                return False
        return True
    if isinstance(desired, bool) or isinstance(existing, bool):
        return desired == existing
    if isinstance(desired, str) and isinstance(existing, str):
        if "projects/" in desired or "projects/" in existing:
            return S.rel(desired) == S.rel(existing)
        return desired == existing
    a, b = _num(desired), _num(existing)
    if a is not None and b is not None:
        return abs(a - b) < 1e-9
    return desired == existing


def _empty(v) -> bool:
    return v in (None, "", [], {}) or v is False


def drift(step: Step, existing: dict) -> list[str]:
    """Top-level fields of the step whose existing value differs from the desired one."""
    out = []
    for f in step.compare:
        want = step.body.get(f)
        have = existing.get(f)
        if want is None:
            if not _empty(have):
                out.append(f)
            continue
        if not matches(want, have) or (f in step.strict and needs_clear(want, have)):
            out.append(f)
    return out


def needs_clear(desired, existing) -> bool:
    """True when a merge patch cannot express the change (a list or key must become empty)."""
    if isinstance(desired, dict) and isinstance(existing, dict):
        for k, v in existing.items():
            if k == "canonicalUrl":
                continue
            if k not in desired:
                if not _empty(v):
                    return True
            elif needs_clear(desired[k], v):
                return True
    return False


def dumps(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
