"""Configuration: Akto's environment variable names, plus the appliance's own, validated.

``Settings`` is a pydantic-settings model used as designed: each field names the environment
variables it is read from (``validation_alias``; the first name is the documented one, later
names are fallbacks, e.g. ``AKTO_KAFKA_BROKER_MAL`` then ``AKTO_KAFKA_BROKER_URL``), the
environment source reads them, and values passed to the constructor (the CLI flags) take
precedence over the environment. An empty variable counts as unset, as in Akto's collector.

``load_settings`` turns a validation problem into ``ConfigError``: one line naming the
variable that was read (and the flag, when there is one), e.g.::

    invalid AKTO_TRAFFIC_BATCH_SIZE (--batch-size) = 'ten': Input should be a valid integer

Secrets (SASL password) are masked by ``Settings.display()``.

Adding a setting is one field here (and, if it has a flag, one row in appliance/cli/flags.py).
Adding a capture mode is one entry in appliance/modes.py (plus its source in the runtime).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource,
                               SettingsConfigDict)
from pydantic_settings.sources.utils import parse_env_vars

from appliance.modes import MODES

SECRET_FIELDS = {"kafka_sasl_password", "http_token"}
_METHOD_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

# Variables Akto's collectors read that this appliance deliberately does not use, and why.
# They are accepted (an environment copied from Akto's deployment works unchanged) and named
# on the start-up line and by `appliance config`, never silently dropped.
IGNORED_AKTO_VARIABLES: dict[str, str] = {
    "AKTO_MONGO_CONN": "no database: traffic figures are on /metrics and /status, and the "
                       "header filter comes from AKTO_MODULE_DISCOVERY_CONFIG",
    "AKTO_DISABLE_ON_DB": "no database to depend on",
    "AKTO_BYTES_IN_THRESHOLD": "Akto's collector stops capturing for a while above it; memory "
                               "is bounded by TRAFFIC_BUFFER_THRESHOLD and AKTO_MEM_THRESH_RESTART "
                               "instead, without dropping traffic",
}


class ConfigError(Exception):
    """A configuration problem, as one line naming the variable (and flag)."""


def _bool_env(v: Any) -> Any:
    if isinstance(v, str):
        s = v.strip().lower()
        if s in ("1", "true", "yes", "on"):
            return True
        if s in ("0", "false", "no", "off", ""):
            return False
        raise ValueError("must be true or false")
    return v


def parse_discovery_config(text: str | None) -> list[tuple[str, bool, re.Pattern[str]]]:
    """[(header name lower-cased, reject when absent, compiled regex)]."""
    if text is None or not str(text).strip():
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(data, list):
        raise ValueError("must be a JSON list of rules")
    rules = []
    for i, item in enumerate(data):
        try:
            header = item["key"]["eq"]
            if_absent = item["key"].get("ifAbsent", "reject")
            regex = item["value"]["regex"]
        except (KeyError, TypeError, AttributeError):
            raise ValueError(f'rule {i}: expected {{"key":{{"eq":HEADER,"ifAbsent":"reject"|"accept"}},'
                             f'"value":{{"regex":RE}}}}') from None
        if if_absent not in ("reject", "accept"):
            raise ValueError(f"rule {i}: ifAbsent must be 'reject' or 'accept'")
        if not isinstance(header, str) or not isinstance(regex, str):
            raise ValueError(f"rule {i}: header and regex must be strings")
        try:
            pattern = re.compile(regex)
        except re.error as exc:
            raise ValueError(f"rule {i}: bad regex: {exc}") from None
        rules.append((header.lower(), if_absent == "reject", pattern))
    return rules


def _hostport(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        raise ValueError(f"{what} must be HOST:PORT")
    try:
        p = int(port)
    except ValueError:
        raise ValueError(f"{what} port must be a number") from None
    if not 0 < p < 65536:
        raise ValueError(f"{what} port must be 1-65535")
    return host.strip("[]") or "0.0.0.0", p


def env(default: Any, *names: str, **constraints: Any) -> Any:
    """A field read from the environment variables `names` (the first found wins)."""
    return Field(default, validation_alias=AliasChoices(*names), **constraints)


# The environment a Settings() call reads: None = the process environment. load_settings()
# sets it for one call, so `appliance boot` can validate what it resolved before exporting it.
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("appliance_settings_environ",
                                                            default=None)


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]):
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty,
                              self.env_parse_none_str)


class Settings(BaseSettings):
    # only the variable names are read (a shell variable named `mode` or `workers` is not a
    # setting); constructor values are given by variable name too (load_settings maps flags)
    model_config = SettingsConfigDict(case_sensitive=True, env_ignore_empty=True,
                                      extra="ignore", populate_by_name=False,
                                      validate_default=True)

    # -- capture -----------------------------------------------------------------------
    mode: str = env("aws", "APPLIANCE_MODE", "AKTO_INFRA_MIRRORING_MODE")
    listen: str = env("0.0.0.0:4789", "APPLIANCE_LISTEN")
    geneve: bool = env(False, "APPLIANCE_GENEVE")
    geneve_port: int = env(6081, "APPLIANCE_GENEVE_PORT", ge=1, le=65535)
    interface: str = env("", "APPLIANCE_INTERFACE")
    capture_all: bool = env(False, "CAPTURE_ALL")
    workers: int = env(0, "APPLIANCE_WORKERS", ge=0, le=256)
    ignore_ports: str = env("", "APPLIANCE_IGNORE_PORTS")
    # -- eBPF (mode ebpf) --------------------------------------------------------------
    ebpf_pids: str = env("", "APPLIANCE_EBPF_PIDS")  # only these processes (and children)
    ebpf_tls: bool = env(True, "APPLIANCE_EBPF_TLS")  # uprobes on TLS libraries
    ebpf_call_bytes: int = env(256 << 10, "APPLIANCE_EBPF_CALL_BYTES", ge=1, le=256 << 10)
    ebpf_ring_mb: int = env(8, "APPLIANCE_EBPF_RING_MB", ge=1, le=1024)
    # -- Kafka -------------------------------------------------------------------------
    kafka_brokers: str = env("", "AKTO_KAFKA_BROKER_MAL", "AKTO_KAFKA_BROKER_URL")
    kafka_topic: str = env("akto.api.logs", "APPLIANCE_KAFKA_TOPIC", "AKTO_KAFKA_TOPIC_NAME",
                           min_length=1)
    batch_size: int = env(100, "AKTO_TRAFFIC_BATCH_SIZE", ge=1, le=1_000_000)
    batch_time_secs: float = env(10.0, "AKTO_TRAFFIC_BATCH_TIME_SECS", ge=0, le=900)
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = env(
        "PLAINTEXT", "APPLIANCE_KAFKA_SECURITY_PROTOCOL")
    kafka_sasl_mechanism: Literal["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = env(
        "", "APPLIANCE_KAFKA_SASL_MECHANISM")
    kafka_sasl_username: str = env("", "APPLIANCE_KAFKA_SASL_USERNAME")
    kafka_sasl_password: str = env("", "APPLIANCE_KAFKA_SASL_PASSWORD")
    kafka_ssl_ca: str = env("", "APPLIANCE_KAFKA_SSL_CA")
    queue_max: int = env(100_000, "APPLIANCE_QUEUE_MAX", ge=100)
    spool_dir: str = env("/var/lib/appliance/spool", "APPLIANCE_SPOOL_DIR")
    spool_max_mb: int = env(1024, "APPLIANCE_SPOOL_MAX_MB", ge=0)
    max_message_bytes: int = env(1_000_000, "APPLIANCE_MAX_MESSAGE_BYTES", ge=10_000)
    # -- pairs -------------------------------------------------------------------------
    account_id: str = env("1000000", "AKTO_ACCOUNT_ID")
    max_body: int = env(1 << 20, "APPLIANCE_MAX_BODY", ge=0)
    # methods beyond the built-in list (appliance/core/http/parser.py) whose request lines
    # make a connection HTTP; any method is parsed once a connection is HTTP
    http_methods: str = env("", "APPLIANCE_HTTP_METHODS")
    max_outstanding: int = env(128, "APPLIANCE_MAX_OUTSTANDING", ge=1, le=1_000_000)
    discovery_config: str = env("", "AKTO_MODULE_DISCOVERY_CONFIG")
    ignore_ip_traffic: bool = env(False, "AKTO_IGNORE_IP_TRAFFIC")
    ignore_cloud_metadata: bool = env(False, "AKTO_IGNORE_CLOUD_METADATA_CALLS")
    disable_egress: bool = env(False, "TRAFFIC_DISABLE_EGRESS")
    internal_cidrs: str = env("10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,fc00::/7",
                              "APPLIANCE_INTERNAL_CIDRS")
    # -- memory and time ---------------------------------------------------------------
    inactivity_secs: float = env(60.0, "TRAFFIC_INACTIVITY_THRESHOLD", gt=0, le=86400)
    max_active_conn: int = env(65536, "TRAFFIC_MAX_ACTIVE_CONN", ge=1)
    buffer_mb: int = env(400, "TRAFFIC_BUFFER_THRESHOLD", ge=1)
    mem_restart_mb: int = env(0, "AKTO_MEM_THRESH_RESTART", ge=0)
    # -- operations --------------------------------------------------------------------
    http: str = env("0.0.0.0:8000", "APPLIANCE_HTTP")
    http_token: str = env("", "APPLIANCE_HTTP_TOKEN")
    stop_timeout: float = env(30.0, "APPLIANCE_STOP_TIMEOUT", gt=0, le=3600)
    log_level: Literal["DEBUG", "INFO", "WARN", "ERROR", "OFF"] = env("WARN", "AKTO_LOG_LEVEL")
    log_format: Literal["text", "json"] = env("text", "APPLIANCE_LOG_FORMAT")
    session_map: str = env("/var/lib/appliance/sessions.json", "APPLIANCE_SESSION_MAP")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        # flags (constructor values) > environment; no .env file, no secrets directory
        environ = _ENVIRON.get()
        if environ is not None:
            env_settings = _MappingEnvSource(settings_cls, environ)
        return (init_settings, env_settings)

    @field_validator("geneve", "capture_all", "ignore_ip_traffic", "ignore_cloud_metadata",
                     "disable_egress", "ebpf_tls", mode="before")
    @classmethod
    def _bools(cls, v: Any) -> Any:
        return _bool_env(v)

    @field_validator("log_level", "kafka_security_protocol", "kafka_sasl_mechanism",
                     mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        if isinstance(v, str):
            return v.strip().upper().replace("WARNING", "WARN")
        return v

    @field_validator("mode", "log_format", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("mode")
    @classmethod
    def _check_mode(cls, v: str) -> str:
        if v not in MODES:
            raise ValueError("must be " + " or ".join(MODES))
        return v

    @field_validator("listen", "http")
    @classmethod
    def _check_hostport(cls, v: str) -> str:
        _hostport(v, "address")
        return v

    @field_validator("ignore_ports")
    @classmethod
    def _check_ports(cls, v: str) -> str:
        for p in filter(None, (x.strip() for x in v.split(","))):
            if not p.isdigit() or not 0 < int(p) < 65536:
                raise ValueError(f"'{p}' is not a port (comma-separated list of 1-65535)")
        return v

    @field_validator("ebpf_pids", mode="before")
    @classmethod
    def _check_pids(cls, v: Any) -> Any:
        if isinstance(v, (list, tuple)):  # --pid, repeated
            v = ",".join(str(x) for x in v)
        if isinstance(v, str):
            for p in filter(None, (x.strip() for x in v.split(","))):
                if not p.isdigit() or int(p) <= 0:
                    raise ValueError(f"'{p}' is not a process id (comma-separated list)")
        return v

    @field_validator("ebpf_ring_mb")
    @classmethod
    def _check_ring(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError("must be a power of two (1, 2, 4, ... MB)")
        return v

    @field_validator("http_methods")
    @classmethod
    def _check_methods(cls, v: str) -> str:
        for m in filter(None, (x.strip() for x in v.split(","))):
            if not _METHOD_TOKEN.fullmatch(m):
                raise ValueError(f"'{m}' is not a method name (comma-separated HTTP tokens)")
        return v

    @property
    def methods(self) -> tuple[str, ...]:
        """Every method that makes a connection HTTP: the built-in ones and the extra ones."""
        from appliance.core.http.parser import DEFAULT_METHODS

        extra = [m.strip().upper() for m in self.http_methods.split(",") if m.strip()]
        return DEFAULT_METHODS + tuple(m for m in extra if m not in DEFAULT_METHODS)

    @field_validator("discovery_config")
    @classmethod
    def _check_discovery(cls, v: str) -> str:
        parse_discovery_config(v)
        return v

    @field_validator("internal_cidrs")
    @classmethod
    def _check_cidrs(cls, v: str) -> str:
        for c in filter(None, (x.strip() for x in v.split(","))):
            try:
                ipaddress.ip_network(c, strict=False)
            except ValueError:
                raise ValueError(f"'{c}' is not a CIDR") from None
        return v

    @field_validator("kafka_brokers")
    @classmethod
    def _check_brokers(cls, v: str) -> str:
        for b in filter(None, (x.strip() for x in v.split(","))):
            _hostport(b.split("://")[-1], "broker")
        return v

    @field_validator("kafka_ssl_ca")
    @classmethod
    def _check_ca(cls, v: str) -> str:
        if v and not os.path.isfile(v):
            raise ValueError("no such file")
        return v

    @model_validator(mode="after")
    def _check_sasl(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL") and not self.kafka_sasl_mechanism:
            raise ValueError("APPLIANCE_KAFKA_SASL_MECHANISM is required with SASL")
        return self

    # -- derived -----------------------------------------------------------------------
    @property
    def listen_addr(self) -> tuple[str, int]:
        return _hostport(self.listen, "APPLIANCE_LISTEN")

    @property
    def http_addr(self) -> tuple[str, int]:
        return _hostport(self.http, "APPLIANCE_HTTP")

    @property
    def ignored_ports(self) -> frozenset[int]:
        return frozenset(int(p) for p in self.ignore_ports.split(",") if p.strip())

    @property
    def ebpf_pid_list(self) -> list[int]:
        return [int(p) for p in self.ebpf_pids.split(",") if p.strip()]

    @property
    def ebpf_capture_plain(self) -> bool:
        """eBPF mode: trace plain socket data too (CAPTURE_ALL, true unless set false, as in
        Akto's eBPF DaemonSet); false traces only the TLS libraries' plaintext."""
        return self.capture_all if "capture_all" in self.model_fields_set else True

    @property
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1

    def kafka_config(self) -> dict[str, Any]:
        """librdkafka settings for the producer."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.kafka_brokers,
            "acks": "all",
            "enable.idempotence": True,
            "compression.type": "lz4",
            "linger.ms": int(self.batch_time_secs * 1000),
            "batch.num.messages": self.batch_size,
            "queue.buffering.max.messages": self.queue_max,
            "message.max.bytes": max(self.max_message_bytes + 65536, 1_000_000),
            # never time a message out: the sink spools what does not fit instead (and a
            # finite timeout below linger.ms made AKTO_TRAFFIC_BATCH_TIME_SECS >= 30 invalid)
            "message.timeout.ms": 0,
            "security.protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            conf["sasl.mechanism"] = self.kafka_sasl_mechanism
            conf["sasl.username"] = self.kafka_sasl_username
            conf["sasl.password"] = self.kafka_sasl_password
        if self.kafka_ssl_ca:
            conf["ssl.ca.location"] = self.kafka_ssl_ca
        return conf

    def display(self) -> dict[str, Any]:
        """Variable name -> effective value, secrets masked."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name in SECRET_FIELDS and value:
                value = "****"
            out[ENV_NAMES[name]] = value
        return out


def _aliases(name: str) -> list[str]:
    alias = Settings.model_fields[name].validation_alias
    return [str(c) for c in alias.choices] if isinstance(alias, AliasChoices) else [name]


# field -> every variable it is read from, the documented one first
ALIASES: dict[str, list[str]] = {name: _aliases(name) for name in Settings.model_fields}
# field -> the variable documented for it
ENV_NAMES: dict[str, str] = {name: names[0] for name, names in ALIASES.items()}
# variable -> field (fallback names included)
VARIABLES: dict[str, str] = {v: name for name, names in ALIASES.items() for v in names}


def ignored_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """Akto variables set (non-empty) in `environ` that this appliance does not use."""
    environ = os.environ if environ is None else environ
    return [n for n in IGNORED_AKTO_VARIABLES if environ.get(n, "").strip()]


@contextmanager
def _reading(environ: Mapping[str, str] | None) -> Iterator[None]:
    token = _ENVIRON.set(environ)
    try:
        yield
    finally:
        _ENVIRON.reset(token)


def load_settings(overrides: Mapping[str, Any] | None = None,
                  env: Mapping[str, str] | None = None,
                  flags: Mapping[str, str] | None = None) -> Settings:
    """Settings from `env` (default: the process environment) and `overrides` by field name
    (the CLI flags; None values are ignored).  `flags` maps a field to the flag that sets
    it, for the error message.  Raises ConfigError with one line naming the variable."""
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = set(given) - set(ENV_NAMES)
    if unknown:
        raise TypeError(f"not settings fields: {', '.join(sorted(unknown))}")
    try:
        with _reading(env):
            return Settings(**{ENV_NAMES[k]: v for k, v in given.items()})
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, given, os.environ if env is None else env,
                                    flags or {})) from None


def _one_line(exc: ValidationError, given: Mapping[str, Any], environ: Mapping[str, str],
              flags: Mapping[str, str]) -> str:
    err = exc.errors()[0]
    loc = err.get("loc") or ()
    key = str(loc[0]) if loc else ""
    field = VARIABLES.get(key, key if key in Settings.model_fields else "")
    if not field:
        return f"invalid configuration: {_message(err)}"
    variable = ENV_NAMES[field]
    if field not in given:  # name the variable that was read (e.g. a fallback name)
        variable = next((n for n in ALIASES[field] if str(environ.get(n, "")).strip()), variable)
    flag = flags.get(field)
    where = f"{variable} ({flag})" if flag else variable
    if "input" in err:
        return f"invalid {where} = {err['input']!r}: {_message(err)}"
    return f"invalid {where}: {_message(err)}"


def _message(err: Any) -> str:
    return str(err.get("msg", "invalid")).removeprefix("Value error, ")
