"""Before planning: do the VPC, subnets, instances and the target exist, and can they be used?

Every resource the command line names is looked up with the given credentials. Missing or
unusable ones are reported together, as one line naming each with its flag (exit code 2), so
no plan is ever printed for a VPC or target that is not there. Read-only calls only:
``DescribeVpcs``, ``DescribeSubnets``, ``DescribeInstances``, ``DescribeNetworkInterfaces``,
``elasticloadbalancing:DescribeLoadBalancers`` and ``DescribeListeners``.
"""

from __future__ import annotations

from provision.aws import constants as C
from provision.aws.errors import AwsFailure, aws_errors
from provision.aws.spec import NLB_ARN_RE, DeploymentSpec, UsageError
from provision.aws.state import MirrorState, paginate


def _by_id(ec2, operation: str, key: str, filter_name: str, ids: list[str], id_key: str) -> dict[str, dict]:
    """Describe by a filter rather than by ids: a filter returns what exists without a
    NotFound error, so every missing id can be named at once."""
    found: dict[str, dict] = {}
    if not ids:
        return found
    for item in paginate(ec2, operation, key, Filters=[{"Name": filter_name, "Values": sorted(set(ids))}]):
        if key == "Reservations":
            for inst in item.get("Instances", []):
                found[inst[id_key]] = inst
        else:
            found[item[id_key]] = item
    return found


def _nlb(elbv2, arn: str) -> dict | None:
    try:
        with aws_errors("elasticloadbalancing:DescribeLoadBalancers"):
            resp = elbv2.describe_load_balancers(LoadBalancerArns=[arn])
    except AwsFailure as exc:
        if exc.aws_code in ("LoadBalancerNotFound", "LoadBalancerNotFoundException"):
            return None
        raise
    found = resp.get("LoadBalancers", [])
    return found[0] if found else None


def listener_problem(elbv2, arn: str) -> str | None:
    """None if the NLB has a UDP (or TCP_UDP) listener on 4789, else the problem in one line."""
    listeners = paginate(elbv2, "describe_listeners", "Listeners", LoadBalancerArn=arn)
    for listener in listeners:
        if listener.get("Port") == C.VXLAN_PORT and listener.get("Protocol") in ("UDP", "TCP_UDP"):
            return None
    found = ", ".join(f"{x.get('Protocol')}:{x.get('Port')}" for x in listeners) or "none"
    return (f"--target-nlb {arn} has no UDP listener on port {C.VXLAN_PORT} (listeners: {found}), so mirrored "
            "VXLAN traffic would be dropped: add one, or pass --skip-listener-check")


def check(clients, spec: DeploymentSpec) -> None:
    """Raise :class:`UsageError` naming every referenced resource that is missing or unusable."""
    ec2 = clients.ec2
    region = clients.region or "?"
    missing: list[str] = []
    problems: list[str] = []

    if not _by_id(ec2, "describe_vpcs", "Vpcs", "vpc-id", [spec.vpc], "VpcId"):
        missing.append(f"VPC {spec.vpc} (--vpc)")

    subnets = _by_id(ec2, "describe_subnets", "Subnets", "subnet-id", spec.subnets, "SubnetId")
    for sid in spec.subnets:
        sub = subnets.get(sid)
        if sub is None:
            missing.append(f"subnet {sid} (--subnet)")
        elif sub.get("VpcId") != spec.vpc:
            problems.append(f"--subnet {sid} is in {sub.get('VpcId')}, not in --vpc {spec.vpc}")

    wanted = spec.instances + spec.exclude_instances
    instances = _by_id(ec2, "describe_instances", "Reservations", "instance-id", wanted, "InstanceId")
    for flag, ids in (("--instance", spec.instances), ("--exclude-instance", spec.exclude_instances)):
        for iid in ids:
            inst = instances.get(iid)
            if inst is None:
                missing.append(f"instance {iid} ({flag})")
            elif flag == "--instance" and inst.get("VpcId") and inst.get("VpcId") != spec.vpc:
                problems.append(f"--instance {iid} is in {inst.get('VpcId')}, not in --vpc {spec.vpc}")

    target = spec.target.value or ""
    if spec.target.kind == "eni":
        # A target ENI may be in another VPC (peering, transit gateway): only existence is checked.
        if not _by_id(ec2, "describe_network_interfaces", "NetworkInterfaces", "network-interface-id",
                      [target], "NetworkInterfaceId"):
            missing.append(f"network interface {target} (--target-eni)")
    elif spec.target.kind == "nlb":
        arn = target
        match = NLB_ARN_RE.match(arn)
        if match and clients.region and match.group("region") != clients.region:
            problems.append(f"--target-nlb is in region {match.group('region')}, but the deployment is in "
                            f"{clients.region}: pass --region {match.group('region')} or an NLB of {clients.region}")
        else:
            nlb = _nlb(clients.elbv2, arn)
            if nlb is None:
                missing.append(f"network load balancer {arn} (--target-nlb)")
            elif nlb.get("Type", "network") != "network":
                problems.append(f"--target-nlb {arn} is a {nlb.get('Type')} load balancer; traffic mirroring needs "
                                "a network load balancer")
            elif spec.check_listener and (problem := listener_problem(clients.elbv2, arn)):
                problems.append(problem)

    parts = []
    if missing:
        parts.append(f"not found in {region} with these credentials: " + ", ".join(missing))
    parts += problems
    if parts:
        raise UsageError("; ".join(parts))


def check_target_id(spec: DeploymentSpec, state: MirrorState, region: str | None) -> None:
    """``--target-id`` must name a traffic mirror target that exists (all are in ``state``)."""
    if spec.target.kind != "id":
        return
    if not any(t.get("TrafficMirrorTargetId") == spec.target.value for t in state.targets):
        raise UsageError(f"not found in {region or '?'} with these credentials: "
                         f"traffic mirror target {spec.target.value} (--target-id)")
