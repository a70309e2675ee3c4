"""What a GCP deployment is: validated input, resource names, URLs and ownership markers.

Pure Python, no Google imports: the CLI validates input with this module before it loads the
(slow to import) google-cloud-compute library, so bad input fails fast with one line.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field

from provision import exitcodes
from provision.gcp.errors import GcpError

# ---------------------------------------------------------------------------------------------
# API limits of PacketMirroring.mirroredResources, from the Compute API reference
# (https://cloud.google.com/compute/docs/reference/rest/v1/packetMirrorings and the
# google.cloud.compute_v1.types.PacketMirroringMirroredResourceInfo docs):
#   subnetworks: "You may specify a maximum of 5 subnetworks."
#   instances:   "You may specify a maximum of 50 Instances."
#   tags:        no maximum is documented for tags; we do not invent one. Should the API
#                refuse a count, its 400 message is shown verbatim (exit code 2).
# ---------------------------------------------------------------------------------------------
MAX_MIRRORED_SUBNETS = 5
MAX_MIRRORED_INSTANCES = 50

# Google's health-check probers for internal passthrough Network Load Balancers.
HEALTH_CHECK_RANGES = ("35.191.0.0/16", "130.211.0.0/22")

# Packet Mirroring filter protocols: names the API accepts, or an IANA protocol number.
FILTER_PROTOCOLS = ("tcp", "udp", "icmp", "esp", "ah", "ipip", "sctp")
DIRECTIONS = {"ingress": "INGRESS", "egress": "EGRESS", "both": "BOTH"}

MARKER_PREFIX = "mirror-appliance:"
DEFAULT_NAME = "mirror-appliance"
DEFAULT_MACHINE_TYPE = "e2-standard-2"
DEFAULT_HEALTH_PORT = 8000
HEALTH_PATH = "/healthz"

_RFC1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
_PROJECT = re.compile(r"^[a-z][-a-z0-9.:]{4,61}[a-z0-9]$")
_REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
_ZONE = re.compile(r"^([a-z]+-[a-z]+[0-9]+)-[a-z]$")

# Resource suffixes; the longest decides the maximum deployment-name length (names <= 63).
SUFFIXES = {
    "firewall_health": "-allow-health",
    "firewall_mirrored": "-allow-mirrored",
    "health_check": "-hc",
    "instance_template": "-tmpl",
    "instance_group_manager": "-mig",
    "autoscaler": "-as",
    "backend_service": "-bes",
    "forwarding_rule": "-fr",
    "packet_mirroring": "-pm",
}
MAX_NAME_LEN = 63 - max(len(s) for s in SUFFIXES.values())


def bad(message: str) -> GcpError:
    return GcpError(message, exitcodes.USAGE)


# ----------------------------------------------------------------------------- names & markers


def validate_name(name: str) -> str:
    if not name or not _RFC1035.match(name):
        raise bad(
            f"invalid --name {name!r}: a deployment name is lowercase letters, digits and '-', "
            "starting with a letter and not ending with '-' (e.g. prod-mirror)"
        )
    if len(name) > MAX_NAME_LEN:
        raise bad(
            f"invalid --name {name!r}: it is {len(name)} characters; the maximum is {MAX_NAME_LEN} "
            "(resource names derived from it must fit GCP's 63-character limit)"
        )
    return name


def resource_names(name: str) -> dict[str, str]:
    """Deterministic names of everything a deployment may create."""
    return {role: name + suffix for role, suffix in SUFFIXES.items()}


def collector_tag(name: str) -> str:
    """Network tag carried by collector VMs; the firewall rules target only this tag."""
    return f"{name}-collector"


def marker(name: str) -> str:
    return f"{MARKER_PREFIX}{name}"


def description(name: str, what: str) -> str:
    return f"{marker(name)} {what} (managed by `appliance provision gcp`)"


def owned_by(desc: str | None, name: str) -> bool:
    """True when a resource's description says this deployment created it."""
    return desc is not None and desc.split(" ", 1)[0] == marker(name)


def deployment_of(desc: str | None) -> str | None:
    if not desc or not desc.startswith(MARKER_PREFIX):
        return None
    return desc.split(" ", 1)[0][len(MARKER_PREFIX):] or None


# ---------------------------------------------------------------------------------------- URLs


def rel(url: str | None) -> str:
    """Strip a Compute URL to its 'projects/...' form, so full and partial URLs compare equal."""
    if not url:
        return ""
    i = url.find("projects/")
    return url[i:] if i >= 0 else url


def _parts(url: str) -> list[str]:
    return rel(url).split("/")


def _url_form(collection: str) -> str:
    scope = {"networks": "global", "images": "global", "instances": "zones/ZONE"}.get(collection, "regions/REGION")
    return f"projects/PROJECT/{scope}/{collection}/NAME"


def parse_url(url: str, collection: str, flag: str | None = None) -> dict[str, str]:
    """Parse projects/P/(global|regions/R|zones/Z)/COLLECTION/NAME into its parts."""
    p = _parts(url)
    try:
        if p[0] != "projects" or p[-2] != collection:
            raise ValueError
        out = {"project": p[1], "name": p[-1]}
        scope = p[2:-2]
        if scope == ["global"]:
            pass
        elif len(scope) == 2 and scope[0] == "regions":
            out["region"] = scope[1]
        elif len(scope) == 2 and scope[0] == "zones":
            out["zone"] = scope[1]
        else:
            raise ValueError
    except (ValueError, IndexError):
        what = f"invalid {flag} {url!r}" if flag else f"{url!r} is not a {collection} URL"
        raise bad(f"{what}: expected a name or a URL {_url_form(collection)}") from None
    return out


def network_url(project: str, network: str) -> str:
    if "/" in network:
        parsed = parse_url(network, "networks", "--network")
        return f"projects/{parsed['project']}/global/networks/{parsed['name']}"
    _check_rfc1035(network, "--network", "networks")
    return f"projects/{project}/global/networks/{network}"


def subnet_url(project: str, region: str, subnet: str, flag: str = "--subnet") -> str:
    if "/" in subnet:
        parsed = parse_url(subnet, "subnetworks", flag)
        if parsed.get("region") != region:
            raise bad(f"{flag} {subnet!r} is not in region {region}: mirrored subnets must be in the policy's region")
        return f"projects/{parsed['project']}/regions/{region}/subnetworks/{parsed['name']}"
    _check_rfc1035(subnet, flag, "subnetworks")
    return f"projects/{project}/regions/{region}/subnetworks/{subnet}"


def instance_url(project: str, region: str, instance: str) -> str:
    """--instance takes ZONE/NAME or a URL; the zone must be in the policy's region."""
    if instance.count("/") == 1:
        zone, name = instance.split("/")
        project_ = project
    elif "/" in instance:
        parsed = parse_url(instance, "instances", "--instance")
        if "zone" not in parsed:
            raise bad(f"invalid --instance {instance!r}: expected ZONE/NAME or projects/P/zones/ZONE/instances/NAME")
        zone, name, project_ = parsed["zone"], parsed["name"], parsed["project"]
    else:
        raise bad(f"invalid --instance {instance!r}: expected ZONE/NAME (e.g. {region}-a/{instance}) or a URL "
                  "projects/PROJECT/zones/ZONE/instances/NAME")
    m = _ZONE.match(zone)
    if not m:
        raise bad(f"invalid --instance {instance!r}: {zone!r} is not a zone name (e.g. {region}-a)")
    if m.group(1) != region:
        raise bad(f"--instance {instance!r} is in zone {zone}, outside region {region}: mirrored instances must be in the policy's region")
    _check_rfc1035(name, "--instance", "instances")
    return f"projects/{project_}/zones/{zone}/instances/{name}"


def forwarding_rule_url(project: str, region: str, rule: str) -> str:
    if "/" in rule:
        parsed = parse_url(rule, "forwardingRules", "--collector-ilb")
        if "region" not in parsed:
            raise bad(f"--collector-ilb {rule!r} is a global forwarding rule; packet mirroring needs a regional internal one")
        if parsed["region"] != region:
            raise bad(f"--collector-ilb {rule!r} is in region {parsed['region']}, not {region}: the collector must be in the policy's region")
        return f"projects/{parsed['project']}/regions/{region}/forwardingRules/{parsed['name']}"
    _check_rfc1035(rule, "--collector-ilb", "forwardingRules")
    return f"projects/{project}/regions/{region}/forwardingRules/{rule}"


def image_url(project: str, image: str) -> str:
    if "/" in image:
        return rel(image) if "projects/" in image else image
    _check_rfc1035(image, "--image", "images")
    return f"projects/{project}/global/images/{image}"


def _check_rfc1035(value: str, flag: str, collection: str) -> None:
    if not _RFC1035.match(value) or len(value) > 63:
        raise bad(f"invalid {flag} {value!r}: expected a name (lowercase letters, digits and '-', starting with a "
                  f"letter, at most 63 characters) or a URL {_url_form(collection)}")


# ---------------------------------------------------------------------------------- the spec


@dataclass
class CollectorSpec:
    image: str
    machine_type: str = DEFAULT_MACHINE_TYPE
    min_replicas: int = 1
    max_replicas: int = 2
    subnet: str = ""  # URL of the subnet holding the load balancer address and collector NICs
    health_port: int = DEFAULT_HEALTH_PORT
    kafka_bootstrap: str = ""
    service_account: str = ""
    target_cpu: float = 0.6
    appliance_env: dict[str, str] = field(default_factory=dict)


@dataclass
class DeploymentSpec:
    project: str
    region: str
    network: str  # URL
    name: str = DEFAULT_NAME
    subnets: list[str] = field(default_factory=list)  # URLs
    tags: list[str] = field(default_factory=list)
    instances: list[str] = field(default_factory=list)  # URLs
    cidrs: list[str] = field(default_factory=list)
    protocols: list[str] = field(default_factory=list)
    direction: str = "BOTH"
    priority: int = 1000
    collector_ilb: str = ""  # URL of an existing collector forwarding rule
    collector: CollectorSpec | None = None

    @property
    def names(self) -> dict[str, str]:
        return resource_names(self.name)


def validate_project(project: str | None) -> str:
    if not project:
        raise bad("--project is required (or set CLOUDSDK_CORE_PROJECT / GOOGLE_CLOUD_PROJECT)")
    if not _PROJECT.match(project):
        raise bad(f"invalid --project {project!r}: expected a project ID: 6-30 lowercase letters, digits or '-', "
                  "starting with a letter (e.g. my-project-123)")
    return project


def validate_region(region: str | None) -> str:
    if not region:
        raise bad("--region is required (or set CLOUDSDK_COMPUTE_REGION)")
    if not _REGION.match(region):
        raise bad(f"invalid --region {region!r}: expected a region name such as us-central1")
    return region


def _dedupe(values):
    seen, out = set(), []
    for v in values:
        if v not in seen:
            seen.add(v)
            out.append(v)
    return out


def validate_cidr(value: str) -> str:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise bad(f"invalid --cidr {value!r}: {exc} (expected a network such as 10.8.0.0/16)") from None
    return str(net)


def validate_protocol(value: str) -> str:
    v = value.strip().lower()
    if v in FILTER_PROTOCOLS:
        return v
    if v.isdigit() and 0 <= int(v) <= 255:
        return str(int(v))
    raise bad(f"invalid --protocol {value!r}: use one of {', '.join(FILTER_PROTOCOLS)} or an IP protocol number 0-255")


def validate_tag(value: str) -> str:
    if not _RFC1035.match(value) or len(value) > 63:
        raise bad(f"invalid --tag {value!r}: network tags are lowercase letters, digits and '-', 1-63 characters, starting with a letter")
    return value


def parse_env_pairs(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not _ENV_NAME.match(key):
            raise bad(f"invalid --appliance-env {pair!r}: expected NAME=VALUE with an upper-case variable name")
        out[key] = value
    return out


def build_spec(
    *,
    project,
    region,
    network,
    name=DEFAULT_NAME,
    subnets=(),
    tags=(),
    instances=(),
    cidrs=(),
    protocols=(),
    direction="both",
    priority=1000,
    collector_ilb=None,
    create_collector=False,
    image=None,
    machine_type=DEFAULT_MACHINE_TYPE,
    min_replicas=1,
    max_replicas=2,
    collector_subnet=None,
    health_port=DEFAULT_HEALTH_PORT,
    kafka_bootstrap=None,
    service_account=None,
    target_cpu=0.6,
    appliance_env=(),
) -> DeploymentSpec:
    """Validate CLI input into a DeploymentSpec; raise GcpError(exit 2) with one clear line."""
    project = validate_project(project)
    region = validate_region(region)
    name = validate_name(name)
    if not network:
        raise bad("--network is required: the VPC network whose traffic is mirrored "
                  "(a name such as prod-vpc, or projects/PROJECT/global/networks/NAME)")
    net = network_url(project, network)

    subnet_urls = _dedupe(subnet_url(project, region, s) for s in subnets)
    tag_list = _dedupe(validate_tag(t) for t in tags)
    instance_urls = _dedupe(instance_url(project, region, i) for i in instances)
    if not (subnet_urls or tag_list or instance_urls):
        raise bad("nothing to mirror: give at least one --subnet, --tag or --instance")
    if len(subnet_urls) > MAX_MIRRORED_SUBNETS:
        raise bad(
            f"too many mirrored subnets: {len(subnet_urls)} given, the Packet Mirroring API allows "
            f"at most {MAX_MIRRORED_SUBNETS} --subnet per policy"
        )
    if len(instance_urls) > MAX_MIRRORED_INSTANCES:
        raise bad(
            f"too many mirrored instances: {len(instance_urls)} given, the Packet Mirroring API allows "
            f"at most {MAX_MIRRORED_INSTANCES} --instance per policy (use --subnet or --tag for more)"
        )

    cidr_list = _dedupe(validate_cidr(c) for c in cidrs)
    proto_list = _dedupe(validate_protocol(p) for p in protocols)
    dkey = (direction or "both").lower()
    if dkey not in DIRECTIONS:
        raise bad(f"invalid --direction {direction!r}: use ingress, egress or both")
    if not isinstance(priority, int) or not 0 <= priority <= 65535:
        raise bad(f"invalid --priority {priority!r}: must be 0-65535 (lower wins)")

    if bool(collector_ilb) == bool(create_collector):
        raise bad("choose exactly one collector: --collector-ilb FORWARDING_RULE_URL or --create-collector")

    spec = DeploymentSpec(
        project=project,
        region=region,
        network=net,
        name=name,
        subnets=subnet_urls,
        tags=tag_list,
        instances=instance_urls,
        cidrs=cidr_list,
        protocols=proto_list,
        direction=DIRECTIONS[dkey],
        priority=priority,
    )
    if collector_ilb:
        spec.collector_ilb = forwarding_rule_url(project, region, collector_ilb)
        return spec

    if any(ipaddress.ip_network(c).version == 6 for c in cidr_list):
        raise bad(
            "--create-collector does not support IPv6 --cidr filters yet (a GCP firewall rule "
            "cannot mix IPv4 and IPv6 source ranges); use --collector-ilb with your own collector"
        )
    if not image:
        raise bad("--create-collector needs --image (the appliance VM image, e.g. projects/P/global/images/family/mirror-appliance)")
    if not kafka_bootstrap:
        raise bad("--create-collector needs --kafka-bootstrap HOST:PORT[,HOST:PORT] (written to AKTO_KAFKA_BROKER_MAL)")
    for broker in kafka_bootstrap.split(","):
        host, sep, port = broker.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise bad(f"invalid --kafka-bootstrap {kafka_bootstrap!r}: expected HOST:PORT[,HOST:PORT...]")
    if not re.match(r"^[a-z0-9][-a-z0-9]*$", machine_type or ""):
        raise bad(f"invalid --machine-type {machine_type!r}: expected a machine type name such as e2-standard-2")
    if not isinstance(min_replicas, int) or min_replicas < 1:
        raise bad(f"invalid --min {min_replicas!r}: at least 1 collector instance is needed")
    if not isinstance(max_replicas, int) or max_replicas < min_replicas:
        raise bad(f"invalid --max {max_replicas!r}: must be >= --min ({min_replicas})")
    if not isinstance(health_port, int) or not 0 < health_port < 65536:
        raise bad(f"invalid --health-port {health_port!r}: expected a port 1-65535")
    if not 0.0 < float(target_cpu) <= 1.0:
        raise bad(f"invalid --target-cpu {target_cpu!r}: a fraction in (0, 1]")
    if collector_subnet:
        csub = subnet_url(project, region, collector_subnet, "--collector-subnet")
    elif subnet_urls:
        csub = subnet_urls[0]
    else:
        raise bad("--create-collector needs --collector-subnet (the subnet for the load balancer address and collector VMs) when no --subnet is mirrored")
    env = parse_env_pairs(list(appliance_env))
    for key, flag in (("AKTO_KAFKA_BROKER_MAL", "--kafka-bootstrap"), ("AKTO_KAFKA_BROKER_URL", "--kafka-bootstrap"),
                      ("APPLIANCE_HTTP", "--health-port"), ("APPLIANCE_MODE", None)):
        if key in env:
            how = f"set it with {flag}" if flag else "collectors always run in gcp mode"
            raise bad(f"--appliance-env {key} is managed by the provisioner: {how}")
    spec.collector = CollectorSpec(
        image=image_url(project, image),
        machine_type=machine_type,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        subnet=csub,
        health_port=health_port,
        kafka_bootstrap=",".join(b.strip() for b in kafka_bootstrap.split(",")),
        service_account=service_account or "",
        target_cpu=float(target_cpu),
        appliance_env=env,
    )
    return spec


def appliance_config(spec: DeploymentSpec) -> dict[str, str]:
    """The `appliance-config` metadata value: Akto's environment variables, all strings."""
    c = spec.collector
    assert c is not None
    cfg = {
        "AKTO_KAFKA_BROKER_MAL": c.kafka_bootstrap,
        "APPLIANCE_HTTP": f"0.0.0.0:{c.health_port}",  # serves /healthz for the health check
        "APPLIANCE_MODE": "gcp",
        "CAPTURE_ALL": "true",
    }
    cfg.update(c.appliance_env)
    return dict(sorted(cfg.items()))


def appliance_config_json(spec: DeploymentSpec) -> str:
    return json.dumps(appliance_config(spec), sort_keys=True, separators=(",", ":"))
