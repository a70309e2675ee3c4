"""What a deployment should look like: parsed, validated options and the filter rules they imply.

Pure code: no boto3, no I/O. Everything here raises :class:`UsageError` on bad input.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass, field

from provision import exitcodes
from provision.aws import constants as C
from provision.errors import ProvisionError


class UsageError(ProvisionError):
    """Bad command-line input (exit code 2)."""

    def __init__(self, message: str):
        super().__init__(message, exitcodes.USAGE)


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def _resource_id(prefix: str) -> re.Pattern:
    # EC2 ids are the prefix plus 8 (before 2018) or 17 lowercase hex digits.
    return re.compile(rf"^{prefix}-(?:[0-9a-f]{{8}}|[0-9a-f]{{17}})$")


VPC_RE = _resource_id("vpc")
SUBNET_RE = _resource_id("subnet")
INSTANCE_RE = _resource_id("i")
ENI_RE = _resource_id("eni")
TARGET_RE = _resource_id("tmt")
NLB_ARN_RE = re.compile(
    r"^arn:aws[a-z-]*:elasticloadbalancing:(?P<region>[a-z0-9-]+):\d{12}:loadbalancer/net/[^/]+/[0-9a-f]+$")
REGION_RE = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d{1,2}$")

# What each id flag expects, as shown in its error message.
EXAMPLE_HEX = "0a1b2c3d4e5f67890"
ID_FORMATS: dict[str, tuple[re.Pattern, str]] = {
    "--vpc": (VPC_RE, f"vpc- and 8 or 17 lowercase hex digits, e.g. vpc-{EXAMPLE_HEX}"),
    "--subnet": (SUBNET_RE, f"subnet- and 8 or 17 lowercase hex digits, e.g. subnet-{EXAMPLE_HEX}"),
    "--instance": (INSTANCE_RE, f"i- and 8 or 17 lowercase hex digits, e.g. i-{EXAMPLE_HEX}"),
    "--exclude-instance": (INSTANCE_RE, f"i- and 8 or 17 lowercase hex digits, e.g. i-{EXAMPLE_HEX}"),
    "--target-eni": (ENI_RE, f"eni- and 8 or 17 lowercase hex digits, e.g. eni-{EXAMPLE_HEX}"),
    "--target-id": (TARGET_RE, f"tmt- and 8 or 17 lowercase hex digits, e.g. tmt-{EXAMPLE_HEX}"),
    "--target-nlb": (NLB_ARN_RE, "a network load balancer ARN, e.g. arn:aws:elasticloadbalancing:us-east-1:"
                                 "123456789012:loadbalancer/net/mirror/0123456789abcdef"),
}

PROTOCOL_NAMES = {"tcp": C.PROTO_TCP, "udp": C.PROTO_UDP}
PROTOCOL_LABELS = {C.PROTO_TCP: "tcp", C.PROTO_UDP: "udp", None: "all"}


def validate_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise UsageError(
            f"invalid --name {name!r}: use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def validate_region(region: str, source: str = "--region") -> str:
    if not REGION_RE.match(region or ""):
        raise UsageError(f"invalid {source} {region!r}: expected an AWS region code such as us-east-1")
    return region


def check_id(flag: str, value: str) -> str:
    """``value`` if it has the format ``flag`` expects, else a usage error naming both."""
    pattern, expected = ID_FORMATS[flag]
    if not pattern.match(value):
        raise UsageError(f"invalid {flag} {value!r}: expected {expected}")
    return value


def split_list(values: list[str] | None) -> list[str]:
    """Flatten repeatable, comma-separated option values; keep order, drop duplicates."""
    out: list[str] = []
    for value in values or []:
        for part in value.split(","):
            part = part.strip()
            if part and part not in out:
                out.append(part)
    return out


def default_vni(name: str) -> int:
    """A stable VNI in 1..16777215 derived from the deployment name (SHA-256, first 4 bytes)."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % C.VNI_MAX + 1


def per_session_vni(name: str, eni_id: str, taken: set[int]) -> int:
    """A stable per-ENI VNI, probing upward past VNIs already used by this deployment."""
    vni = default_vni(f"{name}/{eni_id}")
    while vni in taken:
        vni = vni % C.VNI_MAX + 1
    return vni


def parse_tags(values: list[str] | None, flag: str) -> dict[str, set[str] | None]:
    """``KEY=VALUE`` (repeat a key to accept several values) or ``KEY`` (any value)."""
    tags: dict[str, set[str] | None] = {}
    for raw in values or []:
        key, sep, value = raw.partition("=")
        key = key.strip()
        if not key:
            raise UsageError(f"invalid {flag} {raw!r}: expected KEY=VALUE or KEY")
        if not sep:
            tags[key] = None  # any value
            continue
        existing = tags.get(key, set())
        if existing is None:
            continue
        existing.add(value)
        tags[key] = existing
    return tags


def tags_match(selector: dict[str, set[str] | None], *tag_maps: dict[str, str]) -> bool:
    """Every selector key must be satisfied by one of the tag maps (ENI tags, instance tags)."""
    for key, values in selector.items():
        if not any(key in tags and (values is None or tags[key] in values) for tags in tag_maps):
            return False
    return True


def tags_any(selector: dict[str, set[str] | None], *tag_maps: dict[str, str]) -> str | None:
    """The first selector entry matched by any tag map, as ``KEY=VALUE`` text, else None."""
    for key, values in selector.items():
        for tags in tag_maps:
            if key in tags and (values is None or tags[key] in values):
                return f"{key}={tags[key]}"
    return None


def parse_ports(values: list[str] | None) -> list[tuple[int, int]] | None:
    """``80,443,8000-8100`` -> merged, sorted ranges. None means all ports."""
    parts = split_list(values)
    if not parts:
        return None
    ranges = []
    for part in parts:
        lo_s, sep, hi_s = part.partition("-")
        try:
            lo = int(lo_s)
            hi = int(hi_s) if sep else lo
        except ValueError:
            raise UsageError(f"invalid --ports entry {part!r}: expected a port or a range, "
                             "e.g. 443 or 8000-8100 (comma-separated)") from None
        if not (0 <= lo <= 65535 and 0 <= hi <= 65535) or lo > hi:
            raise UsageError(f"invalid --ports entry {part!r}: ports are 0-65535 and a range is low-high, "
                             "e.g. 8000-8100")
        ranges.append((lo, hi))
    ranges.sort()
    merged = [ranges[0]]
    for lo, hi in ranges[1:]:
        plo, phi = merged[-1]
        if lo <= phi + 1:
            merged[-1] = (plo, max(phi, hi))
        else:
            merged.append((lo, hi))
    return merged


def parse_protocols(values: list[str] | None) -> list[int] | None:
    """``tcp``, ``udp``, ``all`` or an IANA number. None means every protocol."""
    parts = [p.lower() for p in split_list(values)] or ["tcp"]
    if "all" in parts:
        if len(parts) > 1:
            raise UsageError("--protocol all cannot be combined with other protocols")
        return None
    out: list[int] = []
    for part in parts:
        if part in PROTOCOL_NAMES:
            num = PROTOCOL_NAMES[part]
        else:
            try:
                num = int(part)
            except ValueError:
                raise UsageError(f"invalid --protocol {part!r}: use tcp, udp, all or a protocol number") from None
            if not 0 < num < 256:
                raise UsageError(f"invalid --protocol {part!r}: protocol numbers are 1-255")
        if num not in out:
            out.append(num)
    return sorted(out)


def parse_cidrs(values: list[str] | None) -> list[str]:
    parts = split_list(values) or ["0.0.0.0/0"]
    out = []
    for part in parts:
        try:
            net = ipaddress.ip_network(part, strict=False)
        except ValueError:
            raise UsageError(f"invalid --cidr {part!r}: expected an IPv4 or IPv6 CIDR, e.g. 10.0.0.0/8 or "
                             "2001:db8::/32") from None
        text = str(net)
        if text not in out:
            out.append(text)
    return out


ANY_CIDRS = frozenset({"0.0.0.0/0", "::/0"})


def any_cidr(cidr: str) -> str:
    return "::/0" if ":" in cidr else "0.0.0.0/0"


@dataclass(frozen=True)
class Rule:
    """One traffic mirror filter rule. Equality (``key``) ignores the description."""

    direction: str  # "ingress" | "egress"
    number: int
    action: str  # "accept" | "reject"
    protocol: int | None
    dst_ports: tuple[int, int] | None
    src_ports: tuple[int, int] | None
    dst_cidr: str
    src_cidr: str
    description: str = field(default="", compare=False)
    rule_id: str | None = field(default=None, compare=False)

    @property
    def peer_cidr(self) -> str:
        """The far end of the mirrored traffic (the local end is the mirrored ENI itself)."""
        return self.src_cidr if self.direction == "ingress" else self.dst_cidr

    @property
    def any_address(self) -> bool:
        return self.peer_cidr in ANY_CIDRS

    def key(self) -> tuple:
        return (
            self.direction, self.number, self.action, self.protocol,
            self.dst_ports, self.src_ports, self.dst_cidr, self.src_cidr,
        )

    def summary(self) -> str:
        proto = PROTOCOL_LABELS.get(self.protocol, str(self.protocol))
        # Addresses always shown: 0.0.0.0/0 (any address) must be visible in every plan.
        parts = [f"{self.direction} #{self.number} {self.action} {proto} {self.src_cidr} -> {self.dst_cidr}"]
        if self.src_ports:
            parts.append("src port " + _ports_text(self.src_ports))
        if self.dst_ports:
            parts.append("dst port " + _ports_text(self.dst_ports))
        return " ".join(parts)

    def create_params(self, filter_id: str) -> dict:
        params: dict = {
            "TrafficMirrorFilterId": filter_id,
            "TrafficDirection": self.direction,
            "RuleNumber": self.number,
            "RuleAction": self.action,
            "DestinationCidrBlock": self.dst_cidr,
            "SourceCidrBlock": self.src_cidr,
            "Description": self.description,
        }
        if self.protocol is not None:
            params["Protocol"] = self.protocol
        if self.dst_ports:
            params["DestinationPortRange"] = {"FromPort": self.dst_ports[0], "ToPort": self.dst_ports[1]}
        if self.src_ports:
            params["SourcePortRange"] = {"FromPort": self.src_ports[0], "ToPort": self.src_ports[1]}
        return params

    @classmethod
    def from_api(cls, data: dict) -> Rule:
        def ports(value):
            if not value or value.get("FromPort") is None:
                return None
            return (int(value["FromPort"]), int(value.get("ToPort", value["FromPort"])))

        protocol = data.get("Protocol")
        return cls(
            direction=data["TrafficDirection"],
            number=int(data["RuleNumber"]),
            action=data["RuleAction"],
            protocol=int(protocol) if protocol else None,
            dst_ports=ports(data.get("DestinationPortRange")),
            src_ports=ports(data.get("SourcePortRange")),
            dst_cidr=data.get("DestinationCidrBlock", "0.0.0.0/0"),
            src_cidr=data.get("SourceCidrBlock", "0.0.0.0/0"),
            description=data.get("Description", ""),
            rule_id=data.get("TrafficMirrorFilterRuleId"),
        )


def _ports_text(ports: tuple[int, int]) -> str:
    return str(ports[0]) if ports[0] == ports[1] else f"{ports[0]}-{ports[1]}"


@dataclass(frozen=True)
class FilterSpec:
    protocols: list[int] | None = None  # None: all protocols
    ports: list[tuple[int, int]] | None = None  # None: all ports
    cidrs: tuple[str, ...] = ("0.0.0.0/0",)
    include_dns: bool = False

    def summary(self) -> str:
        protos = "all protocols" if self.protocols is None else "/".join(
            PROTOCOL_LABELS.get(p, str(p)) for p in self.protocols
        )
        ports = "all ports" if self.ports is None else "ports " + ",".join(_ports_text(p) for p in self.ports)
        dns = "DNS included" if self.include_dns else "DNS excluded"
        return f"{protos}, {ports}, peers {','.join(self.cidrs)}, both directions, {dns}"


REJECT_BASE = 100
ACCEPT_BASE = 200
RULE_STEP = 10


def desired_rules(spec: FilterSpec, name: str) -> list[Rule]:
    """The filter rules for a spec, rejects first (lower numbers are evaluated first).

    A traffic mirror filter mirrors nothing that no rule accepts, so DNS only needs explicit
    reject rules for the protocols and ports that the accept rules would otherwise let
    through. DNS is rejected in both roles (the source as DNS client: destination port 53;
    as DNS server: source port 53) and both directions.
    """
    if spec.ports is not None and spec.protocols is None:
        raise UsageError("--ports needs --protocol tcp and/or udp (port ranges only exist for TCP and UDP)")
    if spec.ports is not None and any(p not in (C.PROTO_TCP, C.PROTO_UDP) for p in spec.protocols or []):
        raise UsageError("--ports can only be combined with --protocol tcp and/or udp")

    families = []
    for cidr in spec.cidrs:
        fam = any_cidr(cidr)
        if fam not in families:
            families.append(fam)

    dns_protocols: list[int] = []
    if not spec.include_dns:
        candidates = [C.PROTO_TCP, C.PROTO_UDP] if spec.protocols is None else spec.protocols
        port_hits_dns = spec.ports is None or any(lo <= C.DNS_PORT <= hi for lo, hi in spec.ports)
        if port_hits_dns:
            dns_protocols = [p for p in candidates if p in (C.PROTO_TCP, C.PROTO_UDP)]

    rules: list[Rule] = []
    tag = f"appliance:{name}"
    for direction in ("ingress", "egress"):
        number = REJECT_BASE
        for fam in families:
            for proto in dns_protocols:
                label = PROTOCOL_LABELS[proto]
                for dst, src, role in (((53, 53), None, "dst"), (None, (53, 53), "src")):
                    rules.append(Rule(direction, number, "reject", proto, dst, src, fam, fam,
                                      description=f"{tag} reject DNS {label} {role} port 53"))
                    number += RULE_STEP
        number = ACCEPT_BASE
        protocols: list[int | None] = list(spec.protocols) if spec.protocols else [None]
        for protocol in protocols:
            label = PROTOCOL_LABELS.get(protocol, str(protocol))
            for peer in spec.cidrs:
                local = any_cidr(peer)
                src_cidr, dst_cidr = (peer, local) if direction == "ingress" else (local, peer)
                port_ranges: list[tuple[int, int] | None] = list(spec.ports) if spec.ports else [None]
                for ports in port_ranges:
                    variants: list[tuple[tuple[int, int] | None, tuple[int, int] | None, str]]
                    if ports is None:
                        variants = [(None, None, "")]
                    else:
                        # local service port (ingress dst / egress src) and remote service
                        # port (egress dst / ingress src): both sides of each connection.
                        variants = [(ports, None, " dst port " + _ports_text(ports)),
                                    (None, ports, " src port " + _ports_text(ports))]
                    for dst, src, text in variants:
                        rules.append(Rule(direction, number, "accept", protocol, dst, src, dst_cidr, src_cidr,
                                          description=f"{tag} accept {label}{text}"))
                        number += RULE_STEP
    if len(rules) > C.MAX_RULES_PER_FILTER:
        raise UsageError(
            f"the filter would need {len(rules)} rules but AWS allows {C.MAX_RULES_PER_FILTER} per filter: "
            "use fewer --ports (a range such as 8000-8100 is one entry), fewer --cidr, fewer protocols, or --include-dns"
        )
    return rules


@dataclass
class TargetSpec:
    kind: str | None  # "nlb" | "eni" | "id" | None (reuse the deployment's current target)
    value: str | None = None

    def label(self) -> str:
        if self.kind is None:
            return "current target"
        return {"nlb": "NLB", "eni": "ENI", "id": "target"}[self.kind] + f" {self.value}"


@dataclass
class DeploymentSpec:
    name: str
    vpc: str
    target: TargetSpec
    filter: FilterSpec
    vni: int
    vni_mode: str = "shared"  # "shared" | "per-session"
    packet_length: int | None = None
    subnets: list[str] = field(default_factory=list)
    instances: list[str] = field(default_factory=list)
    tags: dict[str, set[str] | None] = field(default_factory=dict)
    exclude_tags: dict[str, set[str] | None] = field(default_factory=dict)
    exclude_instances: list[str] = field(default_factory=list)
    check_instance_types: bool = True
    check_listener: bool = True

    @property
    def rules(self) -> list[Rule]:
        return desired_rules(self.filter, self.name)


def build_spec(args) -> DeploymentSpec:
    """Validate the argparse namespace of ``appliance provision aws``."""
    name = validate_name(args.name)
    if not args.vpc:
        raise UsageError(f"--vpc is required: the VPC whose ENIs are mirrored ({ID_FORMATS['--vpc'][1]})")
    vpc = check_id("--vpc", args.vpc)
    subnets = [check_id("--subnet", s) for s in split_list(args.subnet)]
    instances = [check_id("--instance", i) for i in split_list(args.instance)]
    exclude_instances = [check_id("--exclude-instance", i) for i in split_list(args.exclude_instance)]

    targets = [(k, v) for k, v in (("nlb", args.target_nlb), ("eni", args.target_eni), ("id", args.target_id)) if v]
    if len(targets) > 1:
        raise UsageError("use only one of --target-nlb, --target-eni, --target-id")
    if targets:
        kind, value = targets[0]
        flag = {"nlb": "--target-nlb", "eni": "--target-eni", "id": "--target-id"}[kind]
        target = TargetSpec(kind, check_id(flag, value))
    else:
        target = TargetSpec(None)

    if args.vni is not None and args.vni_mode == "per-session":
        raise UsageError("--vni sets the one VNI of --vni-mode shared; per-session VNIs are derived from the name and ENI")
    if args.vni is None:
        vni = default_vni(name)
    else:
        vni = args.vni
        if not C.VNI_MIN <= vni <= C.VNI_MAX:
            raise UsageError(f"--vni must be between {C.VNI_MIN} and {C.VNI_MAX}")
    if args.packet_length is not None and not 1 <= args.packet_length <= C.PACKET_LENGTH_MAX:
        raise UsageError(f"--packet-length must be between 1 and {C.PACKET_LENGTH_MAX} bytes")

    filter_spec = FilterSpec(
        protocols=parse_protocols(args.protocol),
        ports=parse_ports(args.ports),
        cidrs=tuple(parse_cidrs(args.cidr)),
        include_dns=bool(args.include_dns),
    )
    spec = DeploymentSpec(
        name=name,
        vpc=vpc,
        target=target,
        filter=filter_spec,
        vni=vni,
        vni_mode=args.vni_mode,
        packet_length=args.packet_length,
        subnets=subnets,
        instances=instances,
        tags=parse_tags(args.tag, "--tag"),
        exclude_tags=parse_tags(args.exclude_tag, "--exclude-tag"),
        exclude_instances=exclude_instances,
        check_instance_types=not args.skip_instance_type_check,
        check_listener=not args.skip_listener_check,
    )
    desired_rules(spec.filter, spec.name)  # validate the rule budget now, before any API call
    return spec
