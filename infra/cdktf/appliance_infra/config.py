"""Typed, validated inputs for the infrastructure stacks.

A configuration is a JSON object whose ``cloud`` key selects the model (``aws`` or ``gcp``).
Sources, first match wins:

1. ``APPLIANCE_INFRA_CONFIG``: one or more JSON files separated by ``:`` (os.pathsep).
2. cdktn context key ``applianceInfraConfig`` (e.g. in cdktf.json): a file path, an inline
   configuration object, or a list of either.

Any field can then be overridden from the environment, per cloud, with ``__`` between nested
keys: ``APPLIANCE_INFRA_AWS__AMI_ID=ami-...``, ``APPLIANCE_INFRA_GCP__APPLIANCE__KAFKA_TOPIC=t``.
A value that parses as JSON is used as JSON (numbers, lists, booleans), otherwise as a string.

Every problem is reported as one line naming the source and the setting; unknown keys are
errors so that a typo never silently falls back to a default.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

CONFIG_ENV = "APPLIANCE_INFRA_CONFIG"
CONTEXT_KEY = "applianceInfraConfig"
OVERRIDE_PREFIX = "APPLIANCE_INFRA_{cloud}__"

# Variables the boot script always writes; extra_environment may not redefine them.
MANAGED_ENV = frozenset(
    {
        "APPLIANCE_MODE",
        "APPLIANCE_KAFKA_TOPIC",
        "AKTO_KAFKA_BROKER_MAL",
        "AKTO_TRAFFIC_BATCH_SIZE",
        "AKTO_TRAFFIC_BATCH_TIME_SECS",
    }
)


def runtime_variables() -> frozenset[str]:
    """Every environment variable the appliance runtime reads (appliance/config.py)."""
    from appliance.config import Settings

    return frozenset(
        alias
        for name, field in Settings.model_fields.items()
        for alias in getattr(field.validation_alias, "choices", [])
        if alias != name
    )


class ConfigError(Exception):
    """Invalid or missing configuration. ``str()`` is one line per problem."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


# --------------------------------------------------------------------------- field types


def _matches(pattern: str, what: str) -> Callable[[str], str]:
    regex = re.compile(pattern)

    def check(value: str) -> str:
        if not regex.fullmatch(value):
            raise ValueError(f"must look like {what}, got {value!r}")
        return value

    return check


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a CIDR block such as 10.0.0.0/16 ({exc})") from None


def _not_world(value: str) -> str:
    if ipaddress.ip_network(value).prefixlen == 0:
        raise ValueError(f"{value} opens the appliance to every address; list the real CIDRs")
    return value


def _single_line(value: str) -> str:
    if any(ch in value for ch in "\n\r\0'"):
        raise ValueError("must be one line without single quotes (it is written to a systemd EnvironmentFile)")
    return value


def _bootstrap(value: str) -> str:
    host = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])"
    entry = re.compile(rf"{host}:(\d{{1,5}})")
    servers = [s.strip() for s in value.split(",")]
    for server in servers:
        m = entry.fullmatch(server)
        if not m or not 1 <= int(m.group(1)) <= 65535:
            raise ValueError(f"must be host:port[,host:port...], got {server!r} in {value!r}")
    return ",".join(servers)


Cidr = Annotated[str, AfterValidator(_cidr)]
SourceCidr = Annotated[str, AfterValidator(_cidr), AfterValidator(_not_world)]
Port = Annotated[int, Field(ge=1, le=65535)]
ResourceName = Annotated[
    str, AfterValidator(_matches(r"[a-z][a-z0-9-]{1,18}[a-z0-9]", "mirror-appliance (3-20 of a-z, 0-9, -)"))
]
StackName = Annotated[str, AfterValidator(_matches(r"[A-Za-z][A-Za-z0-9_-]{0,62}", "appliance-aws"))]
TagMap = dict[Annotated[str, Field(min_length=1, max_length=128)], Annotated[str, Field(max_length=256)]]

AwsRegion = Annotated[str, AfterValidator(_matches(r"[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d", "eu-west-1"))]
VpcId = Annotated[str, AfterValidator(_matches(r"vpc-[0-9a-f]{8}(?:[0-9a-f]{9})?", "vpc-0123456789abcdef0"))]
SubnetId = Annotated[str, AfterValidator(_matches(r"subnet-[0-9a-f]{8}(?:[0-9a-f]{9})?", "subnet-0123456789abcdef0"))]
AmiId = Annotated[str, AfterValidator(_matches(r"ami-[0-9a-f]{8}(?:[0-9a-f]{9})?", "ami-0123456789abcdef0"))]
EniId = Annotated[str, AfterValidator(_matches(r"eni-[0-9a-f]{8}(?:[0-9a-f]{9})?", "eni-0123456789abcdef0"))]
InstanceType = Annotated[str, AfterValidator(_matches(r"[a-z][a-z0-9-]*\.[a-z0-9]+", "c6i.large"))]
KmsKeyArn = Annotated[
    str,
    AfterValidator(
        _matches(r"arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key|alias)/[A-Za-z0-9/_-]+", "arn:aws:kms:eu-west-1:123456789012:key/<id>")
    ),
]
IamPolicyArn = Annotated[
    str, AfterValidator(_matches(r"arn:aws[a-z-]*:iam::(\d{12}|aws):policy/[\w+=,.@/-]+", "arn:aws:iam::123456789012:policy/Boundary"))
]
AbsolutePath = Annotated[str, AfterValidator(_matches(r"/[A-Za-z0-9._/-]+", "/usr/local/bin/appliance"))]

GcpProject = Annotated[str, AfterValidator(_matches(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", "my-project-123"))]
GcpRegion = Annotated[str, AfterValidator(_matches(r"[a-z]+-[a-z]+\d+", "europe-west1"))]
GcpZone = Annotated[str, AfterValidator(_matches(r"[a-z]+-[a-z]+\d+-[a-z]", "europe-west1-b"))]
GcpName = Annotated[str, AfterValidator(_matches(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", "a GCE name such as mirrored-web"))]
GcpRef = Annotated[
    str,
    AfterValidator(
        _matches(r"(https://www\.googleapis\.com/compute/v1/)?([a-z0-9/_.-]+/)?[a-z]([-a-z0-9]{0,61}[a-z0-9])?", "a name or a projects/... path")
    ),
]


# --------------------------------------------------------------------------- models


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class ApplianceSettings(_Model):
    """What the boot script writes to /etc/appliance/appliance.env (the runtime's own variables)."""

    kafka_bootstrap_servers: Annotated[str, AfterValidator(_bootstrap)]
    kafka_topic: Annotated[str, AfterValidator(_matches(r"[A-Za-z0-9._-]{1,249}", "akto.api.logs"))] = "akto.api.logs"
    batch_size: int = Field(100, ge=1, le=1_000_000)
    batch_time_secs: float = Field(10, ge=0, le=900)  # the runtime's own bounds
    extra_environment: dict[str, Annotated[str, AfterValidator(_single_line)]] = Field(default_factory=dict)
    appliance_bin: AbsolutePath = "/usr/local/bin/appliance"

    @model_validator(mode="after")
    def _check_extra_environment(self) -> ApplianceSettings:
        for key in self.extra_environment:
            if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", key):
                raise ValueError(f"extra_environment key {key!r} must be an environment variable name (A-Z, 0-9, _)")
            if key in MANAGED_ENV:
                raise ValueError(f"extra_environment must not set {key}; use the dedicated setting instead")
            if key not in runtime_variables():
                raise ValueError(
                    f"extra_environment key {key} is not a variable of the appliance runtime "
                    f"(`appliance config` lists them); `appliance boot` would refuse to start"
                )
        return self

    @property
    def kafka_ports(self) -> list[int]:
        return sorted({int(server.rsplit(":", 1)[1]) for server in self.kafka_bootstrap_servers.split(",")})


class S3BackendSettings(_Model):
    bucket: Annotated[str, AfterValidator(_matches(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", "my-tf-state"))]
    key: Annotated[str, Field(min_length=1)] | None = None  # default: mirror-appliance/<stack_name>.tfstate
    region: AwsRegion | None = None


class GcsBackendSettings(_Model):
    bucket: Annotated[str, AfterValidator(_matches(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]", "my-tf-state"))]
    prefix: Annotated[str, Field(min_length=1)] | None = None  # default: mirror-appliance/<stack_name>


class AwsConfig(_Model):
    """Inputs for the AWS stack (an existing VPC and subnets)."""

    cloud: Literal["aws"]
    stack_name: StackName = "appliance-aws"
    name: ResourceName = "mirror-appliance"
    region: AwsRegion
    vpc_id: VpcId
    subnet_ids: list[SubnetId] = Field(min_length=1)
    nlb_subnet_ids: list[SubnetId] | None = None
    ami_id: AmiId
    instance_type: InstanceType = "c6i.large"
    root_device_name: AbsolutePath | None = None  # default: looked up from the AMI
    root_volume_size_gib: int = Field(16, ge=8, le=1024)
    ebs_kms_key_arn: KmsKeyArn | None = None

    mirrored_cidrs: list[SourceCidr] = Field(min_length=1)
    health_check_cidrs: list[SourceCidr] | None = None
    kafka_cidrs: list[Cidr] | None = None  # egress: may be 0.0.0.0/0 for an internet-hosted Kafka
    kafka_ports: list[Port] | None = None
    https_egress_cidrs: list[Cidr] = Field(default_factory=lambda: ["0.0.0.0/0"])

    min_size: int = Field(2, ge=0, le=100)
    max_size: int = Field(6, ge=1, le=100)
    network_in_target_bytes: int = Field(1_500_000_000, ge=1_000_000)
    health_check_grace_seconds: int = Field(180, ge=0, le=3600)
    deletion_protection: bool = True
    cross_zone_load_balancing: bool = True

    ssm_session_manager: bool = True
    permissions_boundary_arn: IamPolicyArn | None = None

    source_eni_ids: list[EniId] = Field(default_factory=list)
    session_number: int = Field(1, ge=1, le=32766)
    virtual_network_id: int | None = Field(None, ge=0, le=16_777_215)
    mirror_ipv6: bool = False

    appliance: ApplianceSettings
    tags: TagMap = Field(default_factory=dict)
    backend: S3BackendSettings | None = None

    @model_validator(mode="after")
    def _check(self) -> AwsConfig:
        if self.min_size > self.max_size:
            raise ValueError(f"min_size ({self.min_size}) must not exceed max_size ({self.max_size})")
        for field in ("subnet_ids", "nlb_subnet_ids", "source_eni_ids", "mirrored_cidrs"):
            values = getattr(self, field) or []
            if len(set(values)) != len(values):
                raise ValueError(f"{field} lists the same value twice")
        return self

    @property
    def load_balancer_subnet_ids(self) -> list[str]:
        return list(self.nlb_subnet_ids or self.subnet_ids)

    @property
    def egress_kafka_ports(self) -> list[int]:
        return sorted(set(self.kafka_ports)) if self.kafka_ports else self.appliance.kafka_ports


GCP_SA_ROLES = ("roles/logging.logWriter", "roles/monitoring.metricWriter")
GCP_MIRROR_PROTOCOLS = ("tcp", "udp", "icmp", "esp", "ah", "ipip", "sctp")


class GcpConfig(_Model):
    """Inputs for the GCP stack (an existing VPC network and subnetwork)."""

    cloud: Literal["gcp"]
    stack_name: StackName = "appliance-gcp"
    name: ResourceName = "mirror-appliance"
    project: GcpProject
    region: GcpRegion
    network: GcpRef
    subnetwork: GcpRef
    image: GcpRef
    machine_type: Annotated[str, AfterValidator(_matches(r"[a-z0-9]+-[a-z0-9-]+", "n2-standard-2"))] = "n2-standard-2"
    disk_size_gb: int = Field(20, ge=10, le=2048)
    disk_type: Literal["pd-balanced", "pd-ssd", "pd-standard", "hyperdisk-balanced"] = "pd-balanced"
    disk_kms_key_self_link: (
        Annotated[str, AfterValidator(_matches(r"projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+", "projects/p/locations/l/keyRings/r/cryptoKeys/k"))]
        | None
    ) = None
    zones: list[GcpZone] | None = None

    min_replicas: int = Field(2, ge=1, le=100)
    max_replicas: int = Field(6, ge=1, le=100)
    cpu_target: float = Field(0.7, gt=0.05, le=0.95)
    network_in_target_bytes_per_second: int = Field(25_000_000, ge=100_000)

    mirrored_source_ranges: list[SourceCidr] = Field(min_length=1)
    collector_tag: GcpName | None = None
    mirrored_subnetworks: list[GcpRef] = Field(default_factory=list)
    mirrored_tags: list[GcpName] = Field(default_factory=list)
    mirrored_instances: list[GcpRef] = Field(default_factory=list)
    mirror_ip_protocols: list[Literal[GCP_MIRROR_PROTOCOLS]] = Field(default_factory=lambda: ["tcp"], min_length=1)  # type: ignore[valid-type]
    mirror_cidr_ranges: list[Cidr] = Field(default_factory=list)
    mirror_direction: Literal["BOTH", "INGRESS", "EGRESS"] = "BOTH"
    policy_priority: int = Field(1000, ge=0, le=65535)

    service_account_roles: list[Literal[GCP_SA_ROLES]] = Field(default_factory=list)  # type: ignore[valid-type]

    appliance: ApplianceSettings
    labels: dict[
        Annotated[str, AfterValidator(_matches(r"[a-z][a-z0-9_-]{0,62}", "team"))],
        Annotated[str, AfterValidator(_matches(r"[a-z0-9_-]{0,63}", "platform"))],
    ] = Field(default_factory=dict)
    backend: GcsBackendSettings | None = None

    @model_validator(mode="after")
    def _check(self) -> GcpConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) must not exceed max_replicas ({self.max_replicas})")
        if not (self.mirrored_subnetworks or self.mirrored_tags or self.mirrored_instances):
            raise ValueError("set at least one of mirrored_subnetworks, mirrored_tags or mirrored_instances")
        if self.collector_network_tag in self.mirrored_tags:
            raise ValueError(f"mirrored_tags must not include the collector tag {self.collector_network_tag!r}")
        for ref in self.mirrored_instances:
            if "/" not in ref:
                raise ValueError(f"mirrored_instances entry {ref!r} must be ZONE/NAME or a projects/... path")
        return self

    @property
    def collector_network_tag(self) -> str:
        return self.collector_tag or f"{self.name}-collector"

    # Fully qualified references: the packet mirroring API wants URLs, not bare names.
    def _url(self, ref: str, kind: str) -> str:
        base = "https://www.googleapis.com/compute/v1/"
        if ref.startswith("https://"):
            return ref
        if ref.startswith("projects/"):
            return base + ref
        if kind == "networks":
            return f"{base}projects/{self.project}/global/networks/{ref}"
        if kind == "subnetworks":
            return f"{base}projects/{self.project}/regions/{self.region}/subnetworks/{ref}"
        if kind == "instances":
            zone, name = ref.split("/", 1)
            return f"{base}projects/{self.project}/zones/{zone}/instances/{name}"
        if kind == "images":
            return f"{base}projects/{self.project}/global/images/{ref}"
        raise AssertionError(kind)

    @property
    def network_url(self) -> str:
        return self._url(self.network, "networks")

    @property
    def subnetwork_url(self) -> str:
        return self._url(self.subnetwork, "subnetworks")

    @property
    def image_ref(self) -> str:
        return self.image if "/" in self.image else self._url(self.image, "images")

    @property
    def mirrored_subnetwork_urls(self) -> list[str]:
        return [self._url(ref, "subnetworks") for ref in self.mirrored_subnetworks]

    @property
    def mirrored_instance_urls(self) -> list[str]:
        return [self._url(ref, "instances") for ref in self.mirrored_instances]


Config = AwsConfig | GcpConfig
MODELS: dict[str, type[AwsConfig] | type[GcpConfig]] = {"aws": AwsConfig, "gcp": GcpConfig}


# --------------------------------------------------------------------------- loading


def _describe(error: Mapping[str, Any]) -> str:
    loc = ""
    for part in error["loc"]:
        loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
    kind = error["type"]
    if kind == "extra_forbidden":
        msg = "unknown setting (check the spelling against infra/cdktf/README.md)"
    elif kind == "missing":
        msg = "required setting is missing"
    else:
        msg = str(error["msg"]).removeprefix("Value error, ")
        if kind.startswith(("int_", "float_", "bool_", "string_", "list_", "dict_", "literal_")) and "input" in error:
            msg += f" (got {error['input']!r})"
    return f"{loc}: {msg}" if loc else msg


def parse_config(raw: Any, source: str = "configuration") -> Config:
    """Validate one configuration object; raise ConfigError with one line per problem."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: must be a JSON object, got {type(raw).__name__}")
    cloud = raw.get("cloud")
    if cloud not in MODELS:
        raise ConfigError(f"{source}: cloud: must be one of 'aws', 'gcp', got {cloud!r}")
    try:
        return MODELS[cloud].model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([f"{source}: {_describe(err)}" for err in exc.errors()]) from None


def _override_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def apply_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Apply ``APPLIANCE_INFRA_<CLOUD>__KEY[__SUB]`` variables to a raw config for that cloud."""
    cloud = str(raw.get("cloud", "")).upper()
    prefix = OVERRIDE_PREFIX.format(cloud=cloud)
    result = json.loads(json.dumps(raw))
    applied = []
    for name in sorted(environ):
        if not cloud or not name.startswith(prefix):
            continue
        path = [part.lower() for part in name[len(prefix):].split("__")]
        if not all(path):
            raise ConfigError(f"{name}: malformed override name")
        node = result
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{name}: {part} is not an object")
            node = child
        node[path[-1]] = _override_value(environ[name])
        applied.append(name)
    return result, applied


def _read_file(path: str, base_dir: Path) -> Any:
    file = Path(path)
    if not file.is_absolute():
        file = base_dir / file
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration file ({exc.strerror or exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


def resolve_configs(
    context_value: Any = None,
    environ: Mapping[str, str] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> list[Config]:
    """Find, override and validate every configuration; raise ConfigError with all problems."""
    environ = os.environ if environ is None else environ
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    entries: list[tuple[str, Any]] = []
    env_value = environ.get(CONFIG_ENV, "").strip()
    if env_value:
        for path in filter(None, (p.strip() for p in env_value.split(os.pathsep))):
            entries.append((path, _read_file(path, base)))
    elif context_value:
        items = context_value if isinstance(context_value, list) else [context_value]
        for index, item in enumerate(items):
            if isinstance(item, str):
                entries.append((item, _read_file(item, base)))
            else:
                entries.append((f"context {CONTEXT_KEY}[{index}]", item))
    else:
        raise ConfigError(
            f"no configuration: set {CONFIG_ENV}=examples/aws.json (several files separated by '{os.pathsep}') "
            f"or the context key {CONTEXT_KEY} in cdktf.json"
        )

    configs: list[Config] = []
    problems: list[str] = []
    for source, raw in entries:
        try:
            if isinstance(raw, dict):
                raw, applied = apply_overrides(raw, environ)
                if applied:
                    source = f"{source} (with {', '.join(applied)})"
            configs.append(parse_config(raw, source))
        except ConfigError as exc:
            problems.extend(exc.problems)
    names = [c.stack_name for c in configs]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"stack_name {name!r} is used by more than one configuration")
    if problems:
        raise ConfigError(problems)
    return configs
