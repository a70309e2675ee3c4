"""``appliance provision gcp status``: a deployment's policy, mirrored resources and collector
health (forwarding rule -> backend service -> getHealth), or the list of deployments."""

from __future__ import annotations

from provision import exitcodes
from provision.gcp import plan as P
from provision.gcp import spec as S
from provision.gcp.compute import Compute
from provision.gcp.errors import GcpError
from provision.gcp.preflight import check_location
from provision.gcp.report import Output


def status(api: Compute, name: str, out: Output, *, as_json: bool = False) -> int:
    check_location(api)
    names = S.resource_names(name)
    pol = api.get("packet_mirroring", names["packet_mirroring"])
    if pol is None or not S.owned_by(pol.get("description"), name):
        if as_json:
            out.json({"cloud": "gcp", "deployment": name, "project": api.project, "region": api.region,
                      "found": False})
        raise GcpError(
            f"no deployment {name!r} in project {api.project}, region {api.region} "
            f"(packet mirroring policy {names['packet_mirroring']} not found)",
            exitcodes.NOT_FOUND,
        )
    report: dict = {
        "cloud": "gcp",
        "deployment": name,
        "project": api.project,
        "region": api.region,
        "found": True,
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
        out.json(report)
        return exitcodes.OK
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
    return exitcodes.OK


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
    check_location(api)
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
        out.json({"cloud": "gcp", "project": api.project, "region": api.region, "deployments": found})
        return exitcodes.OK
    if not found:
        out.line(f"no mirror-appliance deployments in project {api.project}, region {api.region}")
        return exitcodes.OK
    out.line(f"mirror-appliance deployments in project {api.project}, region {api.region}:")
    for d in found:
        out.line(
            f"  {d['deployment']:<20} {'enabled ' if d['enabled'] else 'DISABLED'} "
            f"{d['subnets']} subnets, {d['instances']} instances, {d['tags']} tags -> {d['collector']}"
        )
    return exitcodes.OK
