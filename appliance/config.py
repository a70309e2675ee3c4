"""Configuration: Akto's environment variable names, plus the appliance's own, validated.

Precedence: CLI flags > environment > defaults.  ``load_settings`` turns every
validation problem into ``ConfigError`` with one line naming the variable (and the
flag, when there is one), e.g.::

    invalid AKTO_TRAFFIC_BATCH_SIZE (--batch-size) = 'ten': must be a whole number

Secrets (SASL password) are masked by ``Settings.display()``.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SECRET_FIELDS = {"kafka_sasl_password", "http_token"}


class ConfigError(Exception):
    pass


def _bool_env(v: Any) -> Any:
    if isinstance(v, str):
        s = v.strip().lower()
        if s in ("1", "true", "yes", "on"):
            return True
        if s in ("0", "false", "no", "off", ""):
            return False
        raise ValueError("must be true or false")
    return v


def parse_discovery_config(text: str) -> list[tuple[str, bool, re.Pattern]]:
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
        except (KeyError, TypeError):
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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True,
                                      validate_default=True)

    # -- capture -----------------------------------------------------------------------
    mode: Literal["aws", "gcp"] = Field("aws", validation_alias=AliasChoices("mode", "APPLIANCE_MODE"))
    listen: str = Field("0.0.0.0:4789", validation_alias=AliasChoices("listen", "APPLIANCE_LISTEN"))
    geneve: bool = Field(False, validation_alias=AliasChoices("geneve", "APPLIANCE_GENEVE"))
    geneve_port: int = Field(6081, ge=1, le=65535,
                             validation_alias=AliasChoices("geneve_port", "APPLIANCE_GENEVE_PORT"))
    interface: str = Field("", validation_alias=AliasChoices("interface", "APPLIANCE_INTERFACE"))
    capture_all: bool = Field(False, validation_alias=AliasChoices("capture_all", "CAPTURE_ALL"))
    workers: int = Field(0, ge=0, le=256, validation_alias=AliasChoices("workers", "APPLIANCE_WORKERS"))
    ignore_ports: str = Field("", validation_alias=AliasChoices("ignore_ports", "APPLIANCE_IGNORE_PORTS"))
    # -- Kafka -------------------------------------------------------------------------
    kafka_brokers: str = Field("", validation_alias=AliasChoices(
        "kafka_brokers", "AKTO_KAFKA_BROKER_MAL", "AKTO_KAFKA_BROKER_URL"))
    kafka_topic: str = Field("akto.api.logs", min_length=1, validation_alias=AliasChoices(
        "kafka_topic", "APPLIANCE_KAFKA_TOPIC", "AKTO_KAFKA_TOPIC_NAME"))
    batch_size: int = Field(100, ge=1, le=1_000_000,
                            validation_alias=AliasChoices("batch_size", "AKTO_TRAFFIC_BATCH_SIZE"))
    batch_time_secs: float = Field(10.0, ge=0, le=900, validation_alias=AliasChoices(
        "batch_time_secs", "AKTO_TRAFFIC_BATCH_TIME_SECS"))
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", validation_alias=AliasChoices("kafka_security_protocol",
                                                   "APPLIANCE_KAFKA_SECURITY_PROTOCOL"))
    kafka_sasl_mechanism: Literal["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "", validation_alias=AliasChoices("kafka_sasl_mechanism", "APPLIANCE_KAFKA_SASL_MECHANISM"))
    kafka_sasl_username: str = Field("", validation_alias=AliasChoices(
        "kafka_sasl_username", "APPLIANCE_KAFKA_SASL_USERNAME"))
    kafka_sasl_password: str = Field("", validation_alias=AliasChoices(
        "kafka_sasl_password", "APPLIANCE_KAFKA_SASL_PASSWORD"))
    kafka_ssl_ca: str = Field("", validation_alias=AliasChoices("kafka_ssl_ca", "APPLIANCE_KAFKA_SSL_CA"))
    queue_max: int = Field(100_000, ge=100, validation_alias=AliasChoices("queue_max", "APPLIANCE_QUEUE_MAX"))
    spool_dir: str = Field("/var/lib/appliance/spool",
                           validation_alias=AliasChoices("spool_dir", "APPLIANCE_SPOOL_DIR"))
    spool_max_mb: int = Field(1024, ge=0, validation_alias=AliasChoices("spool_max_mb", "APPLIANCE_SPOOL_MAX_MB"))
    max_message_bytes: int = Field(1_000_000, ge=10_000, validation_alias=AliasChoices(
        "max_message_bytes", "APPLIANCE_MAX_MESSAGE_BYTES"))
    # -- pairs -------------------------------------------------------------------------
    account_id: str = Field("1000000", validation_alias=AliasChoices("account_id", "AKTO_ACCOUNT_ID"))
    max_body: int = Field(1 << 20, ge=0, validation_alias=AliasChoices("max_body", "APPLIANCE_MAX_BODY"))
    discovery_config: str = Field("", validation_alias=AliasChoices(
        "discovery_config", "AKTO_MODULE_DISCOVERY_CONFIG"))
    ignore_ip_traffic: bool = Field(False, validation_alias=AliasChoices(
        "ignore_ip_traffic", "AKTO_IGNORE_IP_TRAFFIC"))
    ignore_cloud_metadata: bool = Field(False, validation_alias=AliasChoices(
        "ignore_cloud_metadata", "AKTO_IGNORE_CLOUD_METADATA_CALLS"))
    disable_egress: bool = Field(False, validation_alias=AliasChoices(
        "disable_egress", "TRAFFIC_DISABLE_EGRESS"))
    internal_cidrs: str = Field("10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,fc00::/7",
                                validation_alias=AliasChoices("internal_cidrs", "APPLIANCE_INTERNAL_CIDRS"))
    # -- memory and time ---------------------------------------------------------------
    inactivity_secs: float = Field(60.0, gt=0, le=86400, validation_alias=AliasChoices(
        "inactivity_secs", "TRAFFIC_INACTIVITY_THRESHOLD"))
    max_active_conn: int = Field(65536, ge=1, validation_alias=AliasChoices(
        "max_active_conn", "TRAFFIC_MAX_ACTIVE_CONN"))
    buffer_mb: int = Field(400, ge=1, validation_alias=AliasChoices("buffer_mb", "TRAFFIC_BUFFER_THRESHOLD"))
    mem_restart_mb: int = Field(0, ge=0, validation_alias=AliasChoices(
        "mem_restart_mb", "AKTO_MEM_THRESH_RESTART"))
    # -- operations --------------------------------------------------------------------
    http: str = Field("0.0.0.0:8000", validation_alias=AliasChoices("http", "APPLIANCE_HTTP"))
    http_token: str = Field("", validation_alias=AliasChoices("http_token", "APPLIANCE_HTTP_TOKEN"))
    stop_timeout: float = Field(30.0, gt=0, le=3600, validation_alias=AliasChoices(
        "stop_timeout", "APPLIANCE_STOP_TIMEOUT"))
    log_level: Literal["DEBUG", "INFO", "WARN", "ERROR", "OFF"] = Field(
        "WARN", validation_alias=AliasChoices("log_level", "AKTO_LOG_LEVEL"))
    session_map: str = Field("/var/lib/appliance/sessions.json", validation_alias=AliasChoices(
        "session_map", "APPLIANCE_SESSION_MAP"))

    @field_validator("geneve", "capture_all", "ignore_ip_traffic", "ignore_cloud_metadata",
                     "disable_egress", mode="before")
    @classmethod
    def _bools(cls, v):
        return _bool_env(v)

    @field_validator("log_level", "kafka_security_protocol", "kafka_sasl_mechanism", "mode",
                     mode="before")
    @classmethod
    def _upper(cls, v):
        if isinstance(v, str):
            v = v.strip()
            return v.lower() if v.lower() in ("aws", "gcp") else v.upper().replace("WARNING", "WARN")
        return v

    @field_validator("listen", "http")
    @classmethod
    def _check_hostport(cls, v):
        _hostport(v, "address")
        return v

    @field_validator("ignore_ports")
    @classmethod
    def _check_ports(cls, v):
        for p in filter(None, (x.strip() for x in v.split(","))):
            if not p.isdigit() or not 0 < int(p) < 65536:
                raise ValueError(f"'{p}' is not a port (comma-separated list of 1-65535)")
        return v

    @field_validator("discovery_config")
    @classmethod
    def _check_discovery(cls, v):
        parse_discovery_config(v)
        return v

    @field_validator("internal_cidrs")
    @classmethod
    def _check_cidrs(cls, v):
        import ipaddress

        for c in filter(None, (x.strip() for x in v.split(","))):
            try:
                ipaddress.ip_network(c, strict=False)
            except ValueError:
                raise ValueError(f"'{c}' is not a CIDR") from None
        return v

    @field_validator("kafka_brokers")
    @classmethod
    def _check_brokers(cls, v):
        for b in filter(None, (x.strip() for x in v.split(","))):
            _hostport(b.split("://")[-1], "broker")
        return v

    @field_validator("kafka_ssl_ca")
    @classmethod
    def _check_ca(cls, v):
        if v and not os.path.isfile(v):
            raise ValueError("no such file")
        return v

    @model_validator(mode="after")
    def _check_sasl(self):
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
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1

    def kafka_config(self) -> dict:
        """librdkafka settings for the producer."""
        conf = {
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

    def display(self) -> dict:
        out = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name in SECRET_FIELDS and value:
                value = "****"
            out[ENV_NAMES.get(name, name)] = value
        return out


# field -> the environment variable documented for it (first alias)
ENV_NAMES = {}
for _name, _field in Settings.model_fields.items():
    _choices = getattr(_field.validation_alias, "choices", [])
    ENV_NAMES[_name] = next((c for c in _choices if c != _name), _name)

# CLI flag per field (for error messages), filled by the CLI
FLAG_NAMES: dict[str, str] = {}


def load_settings(overrides: dict | None = None, env: dict | None = None) -> Settings:
    """Build settings from `env` (default os.environ) and CLI `overrides` (None values are
    ignored).  Raises ConfigError with one line naming the variable."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    environ = os.environ if env is None else env
    # pydantic-settings reads os.environ; pass the chosen mapping explicitly instead
    values = {}
    for name, field in Settings.model_fields.items():
        for alias in field.validation_alias.choices:
            if alias != name and alias in environ:
                values[name] = environ[alias]
                break
    values.update(overrides)
    try:
        return _Isolated(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = err.get("loc") or ()
        field = str(loc[0]) if loc else ""
        env_name = ENV_NAMES.get(field, field) or "configuration"
        flag = FLAG_NAMES.get(field)
        where = f"{env_name} ({flag})" if flag else env_name
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        if "input" in err and field:
            raise ConfigError(f"invalid {where} = {err['input']!r}: {msg}") from None
        raise ConfigError(f"invalid {where}: {msg}") from None


class _Isolated(Settings):
    """Settings that read nothing from the process environment (values passed in)."""

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings,
                                   dotenv_settings, file_secret_settings):
        return (init_settings,)

