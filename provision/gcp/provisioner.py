"""Provision, inspect and tear down a GCP Packet Mirroring deployment.

provision: read facts (network, subnets, instances, collector) -> build the plan -> for each
step get-before-insert: create what is missing, leave what matches alone, patch/replace the
policy, firewall rules and autoscaler when they drifted, refuse to touch same-named resources
another deployment or tool created. status: the policy, its mirrored resources, the collector
chain (forwarding rule -> backend service -> getHealth). deprovision: delete what the
deployment owns in reverse dependency order.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import TextIO

from provision.gcp import plan as P
from provision.gcp import spec as S
from provision.gcp.compute import KINDS, Compute
from provision.gcp.errors import (
    EXIT_CONFLICT,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    GcpError,
)


@dataclass
class Output:
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)

    def line(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def note(self, text: str) -> None:
        print(text, file=self.err, flush=True)


# ------------------------------------------------------------------------------------ facts


def gather_facts(api: Compute, spec: S.DeploymentSpec) -> P.Facts:
    facts = P.Facts()
    net = S.parse_url(spec.network, "networks")
    if api.get("network", net["name"], project=net["project"]) is None:
        raise GcpError(f"network {net['name']!r} not found in project {net['project']}", EXIT_NOT_FOUND)

    subnets = list(spec.subnets)
    if spec.collector and spec.collector.subnet not in subnets:
        subnets.append(spec.collector.subnet)
    for url in subnets:
        sub = api.get_url("subnetwork", url)
        if sub is None:
            raise GcpError(f"subnet {S.rel(url)} not found", EXIT_NOT_FOUND)
        if S.rel(sub.get("network")) != spec.network:
            raise GcpError(
                f"subnet {S.rel(url)} belongs to network {S.rel(sub.get('network'))}, not {spec.network}",
                EXIT_USAGE,
            )
        facts.subnet_ranges[url] = [sub["ipCidrRange"]] if sub.get("ipCidrRange") else []

    for url in spec.instances:
        inst = api.get_url("instance", url)
        if inst is None:
            raise GcpError(f"instance {S.rel(url)} not found", EXIT_NOT_FOUND)
        nics = [n for n in inst.get("networkInterfaces", []) if S.rel(n.get("network")) == spec.network]
        if not nics:
            raise GcpError(f"instance {S.rel(url)} has no network interface in {spec.network}", EXIT_USAGE)
        if nics[0].get("networkIP"):
            facts.instance_ips[url] = nics[0]["networkIP"]

    if spec.collector_ilb:
        verify_collector(api, spec)
    return facts


def verify_collector(api: Compute, spec: S.DeploymentSpec) -> dict:
    """An existing collector must be a regional INTERNAL passthrough rule with isMirroringCollector."""
    url = spec.collector_ilb
    fr = api.get_url("forwarding_rule", url)
    if fr is None:
        raise GcpError(f"collector forwarding rule {S.rel(url)} not found", EXIT_NOT_FOUND)
    scheme = fr.get("loadBalancingScheme", "")
    if scheme != "INTERNAL":
        raise GcpError(
            f"collector {S.rel(url)} has loadBalancingScheme={scheme or 'unset'}; packet mirroring needs an "
            "INTERNAL passthrough Network Load Balancer forwarding rule",
            EXIT_USAGE,
        )
    if not fr.get("backendService"):
        raise GcpError(
            f"collector {S.rel(url)} has no backend service: it is not an internal passthrough load balancer",
            EXIT_USAGE,
        )
    if not fr.get("isMirroringCollector"):
        raise GcpError(
            f"collector {S.rel(url)} is not a mirroring collector (isMirroringCollector is false; "
            "it can only be set when the forwarding rule is created)",
            EXIT_USAGE,
        )
    if fr.get("network") and S.rel(fr["network"]) != spec.network:
        raise GcpError(
            f"collector {S.rel(url)} is in network {S.rel(fr['network'])}, not {spec.network}", EXIT_USAGE
        )
    return fr


# -------------------------------------------------------------------------------- provision


@dataclass
class Decision:
    step: P.Step
    action: str  # create | unchanged | update | replace | drift | conflict
    fields: list[str] = field(default_factory=list)
    owner: str | None = None


def decide(api: Compute, spec: S.DeploymentSpec, step: P.Step) -> Decision:
    existing = api.get(step.kind, step.name)
    if existing is None:
        return Decision(step, "create")
    if not S.owned_by(existing.get("description"), spec.name):
        return Decision(step, "conflict", owner=S.deployment_of(existing.get("description")))
    changed = P.drift(step, existing)
    if not changed:
        return Decision(step, "unchanged")
    if step.on_drift == P.WARN:
        return Decision(step, "drift", changed)
    if step.on_drift == P.PATCH and any(
        P.needs_clear(step.body.get(f), existing.get(f)) for f in changed
    ):
        return Decision(step, "replace", changed)
    return Decision(step, "update", changed)


def _conflict_message(spec: S.DeploymentSpec, d: Decision) -> str:
    who = f"deployment {d.owner!r}" if d.owner else "another tool or person"
    return (
        f"{d.step.what} already exists in project {spec.project} but was created by {who}, "
        f"not deployment {spec.name!r}; choose another --name or remove it"
    )


def provision(api: Compute, spec: S.DeploymentSpec, out: Output, *, dry_run: bool = False, as_json: bool = False) -> int:
    facts = gather_facts(api, spec)
    steps = P.build_plan(spec, facts)
    decisions = [decide(api, spec, step) for step in steps]

    if dry_run:
        _print_plan(spec, decisions, out, as_json)
        return EXIT_CONFLICT if any(d.action == "conflict" for d in decisions) else EXIT_OK

    for d in decisions:
        if d.action == "conflict":
            raise GcpError(_conflict_message(spec, d), EXIT_CONFLICT)

    counts = {"created": 0, "unchanged": 0, "updated": 0, "drifted": 0}
    for d in decisions:
        step = d.step
        if d.action == "create":
            try:
                api.insert(step.kind, step.body)
                counts["created"] += 1
            except GcpError as err:
                if err.code != EXIT_CONFLICT:
                    raise
                # Created concurrently (409): fine if it is ours, else a real conflict.
                again = decide(api, spec, step)
                if again.action == "conflict":
                    raise GcpError(_conflict_message(spec, again), EXIT_CONFLICT) from None
                out.note(f"{step.what} appeared concurrently; keeping it")
                counts["unchanged"] += 1
        elif d.action == "unchanged":
            out.note(f"{step.what}: exists, unchanged")
            counts["unchanged"] += 1
        elif d.action == "update":
            if step.on_drift == P.UPDATE:
                api.update(step.kind, step.name, step.body)
            else:
                body = {"name": step.name, **{f: step.body[f] for f in d.fields if f in step.body}}
                api.patch(step.kind, step.name, body)
            counts["updated"] += 1
        elif d.action == "replace":
            out.note(f"{step.what}: {', '.join(d.fields)} must drop entries a patch cannot clear; replacing it")
            api.delete(step.kind, step.name)
            api.insert(step.kind, step.body)
            counts["updated"] += 1
        elif d.action == "drift":
            out.note(
                f"warning: {step.what} differs from the requested configuration in {', '.join(d.fields)}; "
                "it is left unchanged (deprovision and provision again to rebuild it)"
            )
            counts["drifted"] += 1

    policy = f"projects/{spec.project}/regions/{spec.region}/packetMirrorings/{spec.names['packet_mirroring']}"
    summary = {
        "deployment": spec.name,
        "project": spec.project,
        "region": spec.region,
        "policy": policy,
        **counts,
    }
    if as_json:
        out.line(json.dumps(summary, indent=2, sort_keys=True))
    else:
        out.line(
            f"deployment {spec.name} ready: {policy} "
            f"({counts['created']} created, {counts['updated']} updated, {counts['unchanged']} unchanged"
            + (f", {counts['drifted']} drifted" if counts["drifted"] else "")
            + ")"
        )
    return EXIT_OK


def _print_plan(spec: S.DeploymentSpec, decisions: list[Decision], out: Output, as_json: bool) -> None:
    if as_json:
        out.line(
            json.dumps(
                {
                    "deployment": spec.name,
                    "project": spec.project,
                    "region": spec.region,
                    "dry_run": True,
                    "steps": [
                        {
                            "action": d.action,
                            "kind": d.step.kind,
                            "name": d.step.name,
                            "fields": d.fields,
                            "owner": d.owner,
                            "body": d.step.body,
                        }
                        for d in decisions
                    ],
                },
                indent=2,
                sort_keys=True,
            )
        )
        return
    out.line(f"plan for deployment {spec.name} (project {spec.project}, region {spec.region}); dry run, nothing changed:")
    for d in decisions:
        detail = ""
        if d.fields:
            detail = f"  [{', '.join(d.fields)}]"
        if d.action == "conflict":
            detail = f"  [exists, created by {d.owner or 'someone else'}]"
        out.line(f"  {d.action:<9} {d.step.label:<24} {d.step.name}{detail}")
    policy = decisions[-1].step.body
    mr = policy["mirroredResources"]
    out.line("  mirrored: " + "; ".join(
        f"{k} {', '.join(S.rel(x['url']) if isinstance(x, dict) else x for x in v)}" for k, v in mr.items()
    ))
    f = policy["filter"]
    out.line(
        f"  filter: direction {f['direction']}; protocols {', '.join(f.get('IPProtocols', [])) or 'all'}; "
        f"cidrs {', '.join(f.get('cidrRanges', [])) or 'all'}"
    )
    out.line(f"  collector: {S.rel(policy['collectorIlb']['url'])}")


# ----------------------------------------------------------------------------------- status


def status(api: Compute, name: str, out: Output, *, as_json: bool = False) -> int:
    names = S.resource_names(name)
    pol = api.get("packet_mirroring", names["packet_mirroring"])
    if pol is None or not S.owned_by(pol.get("description"), name):
        raise GcpError(
            f"no deployment {name!r} in project {api.project}, region {api.region} "
            f"(packet mirroring policy {names['packet_mirroring']} not found)",
            EXIT_NOT_FOUND,
        )
    report: dict = {
        "deployment": name,
        "project": api.project,
        "region": api.region,
        "policy": {
            "name": pol["name"],
            "enabled": pol.get("enable", "TRUE") == "TRUE",
            "priority": pol.get("priority", 1000),
            "network": S.rel(pol.get("network", {}).get("url")),
            "collector": S.rel(pol.get("collectorIlb", {}).get("url")),
            "mirrored": {
                "subnets": [S.rel(x["url"]) for x in pol.get("mirroredResources", {}).get("subnetworks", [])],
                "instances": [S.rel(x["url"]) for x in pol.get("mirroredResources", {}).get("instances", [])],
                "tags": list(pol.get("mirroredResources", {}).get("tags", [])),
            },
            "filter": {
                "direction": pol.get("filter", {}).get("direction", "BOTH"),
                "protocols": pol.get("filter", {}).get("IPProtocols", []),
                "cidrs": pol.get("filter", {}).get("cidrRanges", []),
            },
        },
        "collector": collector_health(api, pol.get("collectorIlb", {}).get("url", "")),
        "owned_resources": [],
    }
    for kind, role, label in P.TEARDOWN_ORDER:
        res = api.get(kind, names[role])
        if res is not None and S.owned_by(res.get("description"), name):
            item = {"kind": kind, "label": label, "name": res["name"]}
            if kind == "autoscaler":
                pol_ = res.get("autoscalingPolicy", {})
                item.update(
                    min=pol_.get("minNumReplicas"), max=pol_.get("maxNumReplicas"), status=res.get("status", "")
                )
            if kind == "instance_group_manager":
                item.update(target_size=res.get("targetSize"), stable=res.get("status", {}).get("isStable"))
            report["owned_resources"].append(item)

    if as_json:
        out.line(json.dumps(report, indent=2, sort_keys=True))
        return EXIT_OK
    p = report["policy"]
    out.line(f"deployment {name} (project {api.project}, region {api.region})")
    out.line(f"policy {p['name']}: {'enabled' if p['enabled'] else 'DISABLED'}, priority {p['priority']}")
    out.line(f"  network:   {p['network']}")
    out.line(f"  collector: {p['collector']}")
    m = p["mirrored"]
    out.line(f"  mirrored subnets:   {', '.join(m['subnets']) or '-'}")
    out.line(f"  mirrored instances: {', '.join(m['instances']) or '-'}")
    out.line(f"  mirrored tags:      {', '.join(m['tags']) or '-'}")
    f = p["filter"]
    out.line(
        f"  filter: direction {f['direction']}; protocols {', '.join(f['protocols']) or 'all'}; "
        f"cidrs {', '.join(f['cidrs']) or 'all'}"
    )
    c = report["collector"]
    if c.get("error"):
        out.line(f"collector: {c['error']}")
    else:
        out.line(
            f"collector {c['forwarding_rule']}: {c.get('ip_address') or '-'}, "
            f"{'all ports' if c.get('all_ports') else 'some ports'}, mirroring collector: {c.get('is_mirroring_collector')}"
        )
        out.line(f"  backend service {c.get('backend_service') or '-'}: {c['healthy']}/{c['total']} healthy")
        for b in c["backends"]:
            out.line(f"    {b['health_state']:<9} {b['instance']} {b.get('ip_address', '')}")
    if report["owned_resources"]:
        out.line("created by this deployment:")
        for item in report["owned_resources"]:
            extra = ""
            if item["kind"] == "autoscaler":
                extra = f" (min {item['min']}, max {item['max']}, {item['status'] or 'status unknown'})"
            if item["kind"] == "instance_group_manager":
                extra = f" (target size {item['target_size']}, stable {item['stable']})"
            out.line(f"  {item['label']:<24} {item['name']}{extra}")
    return EXIT_OK


def collector_health(api: Compute, fr_url: str) -> dict:
    """Follow the collector forwarding rule to its backend service and ask for backend health."""
    info: dict = {"forwarding_rule": S.rel(fr_url), "backends": [], "healthy": 0, "total": 0}
    if not fr_url:
        info["error"] = "the policy has no collector"
        return info
    fr = api.get_url("forwarding_rule", fr_url)
    if fr is None:
        info["error"] = f"collector forwarding rule {S.rel(fr_url)} not found"
        return info
    info.update(
        ip_address=fr.get("IPAddress", ""),
        all_ports=bool(fr.get("allPorts")),
        is_mirroring_collector=bool(fr.get("isMirroringCollector")),
        backend_service=S.rel(fr.get("backendService")),
    )
    bes_url = fr.get("backendService")
    if not bes_url:
        return info
    bes = api.get_url("backend_service", bes_url)
    if bes is None:
        info["error"] = f"backend service {S.rel(bes_url)} not found"
        return info
    for backend in bes.get("backends", []):
        for hs in api.get_health(bes_url, backend["group"]):
            state = hs.get("healthState", "UNKNOWN")
            info["backends"].append(
                {
                    "group": S.rel(backend["group"]),
                    "instance": S.rel(hs.get("instance")),
                    "ip_address": hs.get("ipAddress", ""),
                    "health_state": state,
                }
            )
            info["total"] += 1
            info["healthy"] += state == "HEALTHY"
    return info


def list_deployments(api: Compute, out: Output, *, as_json: bool = False) -> int:
    found = []
    for pol in api.list("packet_mirroring"):
        dep = S.deployment_of(pol.get("description"))
        if dep and pol.get("name") == S.resource_names(dep)["packet_mirroring"]:
            mr = pol.get("mirroredResources", {})
            found.append(
                {
                    "deployment": dep,
                    "policy": pol["name"],
                    "enabled": pol.get("enable", "TRUE") == "TRUE",
                    "collector": S.rel(pol.get("collectorIlb", {}).get("url")),
                    "subnets": len(mr.get("subnetworks", [])),
                    "instances": len(mr.get("instances", [])),
                    "tags": len(mr.get("tags", [])),
                }
            )
    if as_json:
        out.line(json.dumps({"project": api.project, "region": api.region, "deployments": found}, indent=2, sort_keys=True))
        return EXIT_OK
    if not found:
        out.line(f"no mirror-appliance deployments in project {api.project}, region {api.region}")
        return EXIT_OK
    out.line(f"mirror-appliance deployments in project {api.project}, region {api.region}:")
    for d in found:
        out.line(
            f"  {d['deployment']:<20} {'enabled ' if d['enabled'] else 'DISABLED'} "
            f"{d['subnets']} subnets, {d['instances']} instances, {d['tags']} tags -> {d['collector']}"
        )
    return EXIT_OK


# ------------------------------------------------------------------------------ deprovision


def deprovision(api: Compute, name: str, out: Output, *, dry_run: bool = False, as_json: bool = False) -> int:
    names = S.resource_names(name)
    results = []
    for kind, role, label in P.TEARDOWN_ORDER:
        rname = names[role]
        existing = api.get(kind, rname)
        if existing is None:
            results.append({"kind": kind, "name": rname, "action": "absent"})
            continue
        if not S.owned_by(existing.get("description"), name):
            owner = S.deployment_of(existing.get("description"))
            out.note(
                f"warning: {label} {rname} exists but was not created by deployment {name!r} "
                f"({'it belongs to ' + repr(owner) if owner else 'foreign resource'}); leaving it alone"
            )
            results.append({"kind": kind, "name": rname, "action": "skipped"})
            continue
        if dry_run:
            results.append({"kind": kind, "name": rname, "action": "delete"})
            continue
        try:
            api.delete(kind, rname)
        except GcpError as err:
            if err.code != EXIT_NOT_FOUND:
                raise
        results.append({"kind": kind, "name": rname, "action": "deleted"})

    if as_json:
        out.line(json.dumps({"deployment": name, "dry_run": dry_run, "resources": results}, indent=2, sort_keys=True))
        return EXIT_OK
    acted = [r for r in results if r["action"] in ("deleted", "delete")]
    if dry_run:
        out.line(f"teardown plan for deployment {name} (project {api.project}, region {api.region}); dry run, nothing changed:")
        for r in results:
            if r["action"] != "absent":
                out.line(f"  {'delete' if r['action'] == 'delete' else r['action']:<9} {KINDS[r['kind']].label:<24} {r['name']}")
        if not acted:
            out.line("  nothing to delete")
        return EXIT_OK
    if not acted:
        out.line(f"deployment {name}: nothing to delete in project {api.project}, region {api.region}")
    else:
        out.line(f"deployment {name} removed: {len(acted)} resources deleted")
    return EXIT_OK
