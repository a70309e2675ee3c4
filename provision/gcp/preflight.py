"""Before planning: do the project, region, network, subnets, instances and the collector exist,
and can they be used, with the credentials at hand?

Missing or unusable resources are reported together, as one line naming each with its flag
(exit code 2), so no plan is ever shown for a network or collector that is not there. Only
GET calls. The facts read on the way (subnet ranges, instance addresses) feed the planner.
"""

from __future__ import annotations

from provision import exitcodes
from provision.gcp import plan as P
from provision.gcp import spec as S
from provision.gcp.compute import Compute
from provision.gcp.errors import GcpError


def _usage(message: str) -> GcpError:
    return GcpError(message, exitcodes.USAGE)


def check_location(api: Compute) -> None:
    """The project and the region exist and are readable (every command starts here, so a
    typo in --project or --region is never mistaken for "no deployment" or "nothing to delete")."""
    if api.get_project() is None:
        raise _usage(f"not found with these credentials: project {api.project} (--project)")
    if api.get_region() is None:
        raise _usage(f"not found with these credentials: region {api.region} in project {api.project} (--region)")


def gather_facts(api: Compute, spec: S.DeploymentSpec) -> P.Facts:
    """Check everything the spec names; return what the planner needs to know about it."""
    check_location(api)
    facts = P.Facts()
    missing: list[str] = []
    problems: list[str] = []

    net = S.parse_url(spec.network, "networks", "--network")
    if api.get("network", net["name"], project=net["project"]) is None:
        missing.append(f"network {S.rel(spec.network)} (--network)")

    sources = [(url, "--subnet") for url in spec.subnets]
    if spec.collector and spec.collector.subnet not in spec.subnets:
        sources.append((spec.collector.subnet, "--collector-subnet"))
    for url, flag in sources:
        sub = api.get_url("subnetwork", url)
        if sub is None:
            missing.append(f"subnet {S.rel(url)} ({flag})")
            continue
        if S.rel(sub.get("network")) != spec.network:
            problems.append(f"{flag} {S.rel(url)} belongs to network {S.rel(sub.get('network'))}, "
                            f"not --network {spec.network}")
        facts.subnet_ranges[url] = [sub["ipCidrRange"]] if sub.get("ipCidrRange") else []

    for url in spec.instances:
        inst = api.get_url("instance", url)
        if inst is None:
            missing.append(f"instance {S.rel(url)} (--instance)")
            continue
        nics = [n for n in inst.get("networkInterfaces", []) if S.rel(n.get("network")) == spec.network]
        if not nics:
            problems.append(f"--instance {S.rel(url)} has no network interface in --network {spec.network}")
        elif nics[0].get("networkIP"):
            facts.instance_ips[url] = nics[0]["networkIP"]

    if spec.collector_ilb:
        fr = api.get_url("forwarding_rule", spec.collector_ilb)
        if fr is None:
            missing.append(f"forwarding rule {S.rel(spec.collector_ilb)} (--collector-ilb)")
        else:
            problem = collector_problem(spec, fr)
            if problem:
                problems.append(problem)

    parts = []
    if missing:
        parts.append(f"not found in project {spec.project} with these credentials: " + ", ".join(missing))
    parts += problems
    if parts:
        raise _usage("; ".join(parts))
    return facts


def collector_problem(spec: S.DeploymentSpec, fr: dict) -> str | None:
    """An existing collector must be a regional INTERNAL passthrough rule with isMirroringCollector."""
    url = S.rel(spec.collector_ilb)
    scheme = fr.get("loadBalancingScheme", "")
    if scheme != "INTERNAL":
        return (f"--collector-ilb {url} has loadBalancingScheme={scheme or 'unset'}; packet mirroring needs an "
                "INTERNAL passthrough Network Load Balancer forwarding rule")
    if not fr.get("backendService"):
        return f"--collector-ilb {url} has no backend service: it is not an internal passthrough load balancer"
    if not fr.get("isMirroringCollector"):
        return (f"--collector-ilb {url} is not a mirroring collector (isMirroringCollector is false; "
                "it can only be set when the forwarding rule is created)")
    if fr.get("network") and S.rel(fr["network"]) != spec.network:
        return f"--collector-ilb {url} is in network {S.rel(fr['network'])}, not --network {spec.network}"
    return None
