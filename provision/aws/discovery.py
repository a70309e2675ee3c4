"""Find the ENIs of a VPC that can and should be traffic mirror sources.

Every ENI that is listed but not selected carries the reason it was skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from provision.aws import constants as C
from provision.aws.errors import AwsFailure
from provision.aws.spec import DeploymentSpec, tags_any, tags_match
from provision.aws.state import MirrorState, is_ours, paginate, tags_of

FILTER_CHUNK = 200  # values per EC2 describe filter
TYPES_CHUNK = 100  # DescribeInstanceTypes InstanceTypes per call


@dataclass
class Eni:
    id: str
    subnet: str | None
    vpc: str | None
    interface_type: str
    status: str
    instance_id: str | None = None
    instance_type: str | None = None
    instance_state: str | None = None
    private_ips: list[str] = field(default_factory=list)
    requester_managed: bool = False
    requester_id: str | None = None
    requester: str | None = None  # service label for mirrorable requester-managed ENIs (RDS, ...)
    tags: dict[str, str] = field(default_factory=dict)
    instance_tags: dict[str, str] = field(default_factory=dict)
    selected: bool = False
    reason: str | None = None  # why it is skipped

    def skip(self, reason: str) -> Eni:
        self.selected = False
        self.reason = reason
        return self


def _ips(raw: dict) -> list[str]:
    ips = [p["PrivateIpAddress"] for p in raw.get("PrivateIpAddresses", []) if p.get("PrivateIpAddress")]
    if not ips and raw.get("PrivateIpAddress"):
        ips = [raw["PrivateIpAddress"]]
    ips += [a["Ipv6Address"] for a in raw.get("Ipv6Addresses", []) if a.get("Ipv6Address")]
    return ips


def eni_from_api(raw: dict) -> Eni:
    return Eni(
        id=raw["NetworkInterfaceId"],
        subnet=raw.get("SubnetId"),
        vpc=raw.get("VpcId"),
        interface_type=raw.get("InterfaceType", "interface"),
        status=raw.get("Status", "?"),
        instance_id=(raw.get("Attachment") or {}).get("InstanceId"),
        private_ips=_ips(raw),
        tags=tags_of(raw),
    )


def _requester_service(raw: dict) -> str | None:
    """RDS / ElastiCache for the requester-managed ENIs AWS lets us mirror, else None."""
    requester = raw.get("RequesterId") or ""
    if requester in C.MIRRORABLE_REQUESTERS:
        return C.MIRRORABLE_REQUESTERS[requester]
    description = raw.get("Description") or ""
    for prefix, label in C.MIRRORABLE_DESCRIPTION_PREFIXES.items():
        if description.startswith(prefix):
            return label
    return None


def _chunks(items: list[str], size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def list_vpc_enis(ec2, spec: DeploymentSpec) -> list[dict]:
    filters = [{"Name": "vpc-id", "Values": [spec.vpc]}]
    if spec.subnets:
        filters.append({"Name": "subnet-id", "Values": spec.subnets})
    if spec.instances:
        filters.append({"Name": "attachment.instance-id", "Values": spec.instances})
    return paginate(ec2, "describe_network_interfaces", "NetworkInterfaces", Filters=filters)


def lookup_enis(ec2, eni_ids: list[str]) -> dict[str, dict]:
    """ENIs by id; missing ones are simply absent (a filter, not NetworkInterfaceIds, so no NotFound)."""
    found: dict[str, dict] = {}
    for chunk in _chunks(sorted(set(eni_ids)), FILTER_CHUNK):
        for raw in paginate(ec2, "describe_network_interfaces", "NetworkInterfaces",
                            Filters=[{"Name": "network-interface-id", "Values": chunk}]):
            found[raw["NetworkInterfaceId"]] = raw
    return found


def describe_instances(ec2, instance_ids: list[str]) -> dict[str, dict]:
    found: dict[str, dict] = {}
    for chunk in _chunks(sorted(set(instance_ids)), FILTER_CHUNK):
        for reservation in paginate(ec2, "describe_instances", "Reservations",
                                    Filters=[{"Name": "instance-id", "Values": chunk}]):
            for inst in reservation.get("Instances", []):
                found[inst["InstanceId"]] = inst
    return found


def describe_instance_types(ec2, types: list[str], cache: dict[str, dict | None]) -> dict[str, dict | None]:
    """Hypervisor / bare-metal facts per instance type, cached across watch iterations."""
    missing = sorted({t for t in types if t not in cache})
    for chunk in _chunks(missing, TYPES_CHUNK):
        try:
            infos = paginate(ec2, "describe_instance_types", "InstanceTypes", InstanceTypes=chunk)
        except AwsFailure as exc:
            if exc.aws_code != "InvalidInstanceType":
                raise
            infos = []  # an unknown type: fall back to the documented family lists
        for info in infos:
            cache[info["InstanceType"]] = info
        for t in chunk:
            cache.setdefault(t, None)
    return {t: cache.get(t) for t in types}


def instance_type_problem(instance_type: str, info: dict | None) -> str | None:
    """Why an instance type cannot be a mirror source, or None if it can (see constants.py)."""
    family, _, size = instance_type.partition(".")
    family = family.lower()
    if size == "metal" or (info or {}).get("BareMetal"):
        return f"instance type {instance_type} is bare metal (not supported by Traffic Mirroring)"
    if family in C.NITRO_UNSUPPORTED_FAMILIES:
        return f"instance type {instance_type}: the {family} family is not supported by Traffic Mirroring"
    hypervisor = (info or {}).get("Hypervisor")
    if hypervisor == "xen" and family not in C.XEN_SUPPORTED_FAMILIES:
        return f"instance type {instance_type} is not Nitro-based (xen) and not on the supported non-Nitro list"
    if info is None and family in ("t1", "t2", "m1", "m2", "m3", "c1", "c3", "r3", "i2", "g2", "cr1", "hs1", "cc2"):
        return f"instance type {instance_type} is a previous-generation Xen type (not supported)"
    return None


def discover(ec2, spec: DeploymentSpec, state: MirrorState, type_cache: dict | None = None) -> list[Eni]:
    """List the VPC's ENIs and decide for each whether it is a mirror source, with a reason if not."""
    raw_enis = list_vpc_enis(ec2, spec)
    enis = []
    by_id = {}
    for raw in raw_enis:
        eni = eni_from_api(raw)
        eni.requester_managed = bool(raw.get("RequesterManaged"))
        eni.requester_id = raw.get("RequesterId")
        eni.requester = _requester_service(raw) if eni.requester_managed else None
        enis.append(eni)
        by_id[eni.id] = raw

    instance_ids = [e.instance_id for e in enis if e.instance_id]
    instances = describe_instances(ec2, instance_ids) if instance_ids else {}
    for eni in enis:
        inst = instances.get(eni.instance_id or "")
        if inst:
            eni.instance_type = inst.get("InstanceType")
            eni.instance_state = (inst.get("State") or {}).get("Name")
            eni.instance_tags = tags_of(inst)

    types = sorted({e.instance_type for e in enis if e.instance_type})
    type_info = {}
    if spec.check_instance_types and types:
        type_info = describe_instance_types(ec2, types, type_cache if type_cache is not None else {})

    # ENIs that are mirror targets (ours or anyone's) receive mirrored traffic: never sources.
    target_enis = {t["NetworkInterfaceId"] for t in state.targets if t.get("NetworkInterfaceId")}
    if spec.target.kind == "eni":
        target_enis.add(spec.target.value)
    for eni in enis:
        foreign = [s for s in state.sessions_on(eni.id) if not is_ours(s, state.name)]
        ours = [s for s in state.sessions_on(eni.id) if is_ours(s, state.name)]
        if eni.interface_type != "interface":
            eni.skip(f"interface type {eni.interface_type} cannot be a mirror source")
        elif eni.status != "in-use":
            eni.skip(f"not in use (status {eni.status})")
        elif eni.requester_managed and eni.requester is None:
            eni.skip(f"requester-managed by {eni.requester_id or 'an AWS service'}"
                     " (only RDS and ElastiCache ENIs can be mirrored)")
        elif eni.id in target_enis:
            eni.skip("is a traffic mirror target (the appliance's own ENI)")
        elif eni.tags.get(C.TAG_ROLE) == C.COLLECTOR_ROLE or eni.instance_tags.get(C.TAG_ROLE) == C.COLLECTOR_ROLE:
            eni.skip(f"appliance collector (tag {C.TAG_ROLE}={C.COLLECTOR_ROLE})")
        elif eni.instance_id and eni.instance_id in spec.exclude_instances:
            eni.skip("excluded by --exclude-instance")
        elif spec.exclude_tags and (hit := tags_any(spec.exclude_tags, eni.tags, eni.instance_tags)):
            eni.skip(f"excluded by --exclude-tag {hit}")
        elif spec.tags and not tags_match(spec.tags, eni.tags, eni.instance_tags):
            eni.skip("does not match --tag " + " ".join(
                f"{k}={'|'.join(sorted(v))}" if v else k for k, v in spec.tags.items()))
        elif eni.instance_state in ("shutting-down", "terminated"):
            eni.skip(f"instance {eni.instance_id} is {eni.instance_state}")
        elif spec.check_instance_types and eni.instance_type and (
                problem := instance_type_problem(eni.instance_type, type_info.get(eni.instance_type))):
            eni.skip(problem)
        elif not ours and len(foreign) >= C.MAX_SESSIONS_PER_ENI:
            eni.skip(f"already in {len(foreign)} traffic mirror sessions (limit {C.MAX_SESSIONS_PER_ENI} per ENI)")
        else:
            eni.selected = True
    return sorted(enis, key=lambda e: e.id)
