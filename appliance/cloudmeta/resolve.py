"""The configuration an instance's metadata gives, merged with the process environment.

Where the configuration comes from (highest precedence first)::

    CLI flags after ``--``        appliance boot -- --log-level DEBUG
    the process environment       systemd Environment=/EnvironmentFile=, docker -e, kubectl env
    tags / attributes             AWS instance tag or GCP instance attribute appliance-<variable>
    the environment block         AWS user data, or the GCP instance attribute appliance-config
    boot default                  APPLIANCE_MODE = the cloud the instance runs on
    built-in defaults             appliance/config.py

A tag / attribute ``appliance-<name>`` sets one variable (names.variable_for). An unknown
name in an environment block is an error (it was meant as a setting); an ``appliance-*`` tag
or attribute that names no setting is ignored with a note (organisations tag instances
freely). Akto's variables that the appliance does not use are accepted and noted.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from appliance.cloudmeta import MetadataInvalid, MetadataUnreachable, aws, gcp
from appliance.cloudmeta.envblock import check_value, parse_env_block, parse_user_data
from appliance.cloudmeta.http import Refused, Transient
from appliance.cloudmeta.names import (BLOCK, PREFIX, aliases, check_name, fields, ignored, mask,
                                       quote, variable_for)

# attributes that `appliance provision gcp` writes for people and tools, not settings
INFORMATIONAL = {"appliance-deployment", "appliance-health-port"}


class Resolution:
    """The merged variables, where each came from, and notes for the operator."""

    def __init__(self, cloud: str, endpoint: str):
        self.cloud = cloud
        self.endpoint = endpoint
        self.env: dict[str, str] = {}
        self.sources: dict[str, str] = {}
        self.notes: list[str] = []

    def add(self, label: str, values: dict[str, str]) -> None:
        """A layer that overrides what is there (and the other spellings of the same setting)."""
        known = fields()
        for name, value in values.items():
            if name in ignored():  # Akto's, accepted and unused
                self.notes.append(f"{name} (from {label}) is accepted and not used: {ignored()[name]}")
                continue
            for other in [n for n in self.env if n != name and known[n] == known[name]]:
                if self.sources[other] != label:
                    del self.env[other], self.sources[other]
            self.env[name] = value
            self.sources[name] = label

    def render(self) -> str:
        lines = [f"# appliance boot: {self.summary()}",
                 "# precedence: run flags > environment > tags/attributes > user data/appliance-config"
                 " > boot default > built-in default"]
        lines += [f"# note: {n}" for n in self.notes]
        for name in sorted(self.env):
            lines.append(f"{name}={quote(mask(name, self.env[name]))}  # {self.sources[name]}")
        return "\n".join(lines) + "\n"

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for label in self.sources.values():
            if label.startswith(("aws tag ", "gcp attribute ")) and not label.endswith(BLOCK):
                label = label.rsplit(" ", 1)[0] + "s"
            elif label.startswith("boot default"):
                label = "boot default"
            counts[label] = counts.get(label, 0) + 1
        parts = ", ".join(f"{n} from {k}" for k, n in counts.items()) or "no variables"
        return f"{self.cloud} metadata at {self.endpoint}: {parts}"

    def validate(self, run_args: list[str] | None = None) -> None:
        from appliance.config import ConfigError, load_settings

        try:
            load_settings(env=self.env)  # the values came from metadata: no flag to name
        except ConfigError as exc:
            msg = str(exc)
            name = msg.split()[1] if msg.startswith("invalid ") else ""
            where = self.sources.get(name)
            raise MetadataInvalid(f"{msg} (from {where})" if where else msg) from None
        run_args = run_args or []
        has_brokers = any(self.env.get(n, "").strip() for n in aliases("kafka_brokers"))
        if not has_brokers and not any(a.split("=")[0] in ("--kafka", "--jsonl") for a in run_args):
            raise MetadataInvalid(
                f"no Kafka brokers: set AKTO_KAFKA_BROKER_MAL in {block_name(self.cloud)}, "
                f"as the {attr_kind(self.cloud)} {PREFIX}akto-kafka-broker-mal, or in the environment")


def resolve(cloud: str, *, aws_endpoint: str = aws.ENDPOINT, gcp_endpoint: str = gcp.ENDPOINT,
            timeout: float = 2.0, attempts: int = 3,
            environ: Mapping[str, str] | None = None) -> Resolution:
    """Read the metadata of `cloud` ('aws', 'gcp' or 'auto') and merge it with `environ`."""
    environ = os.environ if environ is None else environ
    candidates = {"aws": [("aws", aws_endpoint)], "gcp": [("gcp", gcp_endpoint)],
                  "auto": [("aws", aws_endpoint), ("gcp", gcp_endpoint)]}[cloud]
    found, endpoint, meta = _fetch_any(candidates, timeout, attempts)
    res = Resolution(found, endpoint)
    block: dict[str, str]
    res.add(f"boot default for {found}", {"APPLIANCE_MODE": found})
    if found == "aws":
        user_data, tags = meta
        if user_data is None:
            res.notes.append("the instance has no user data")
            block = {}
        else:
            block, note = parse_user_data(user_data, "aws user data")
            if note:
                res.notes.append(note)
        res.add("aws user data", block)
        if tags is None:
            res.notes.append("instance tags are not in the instance metadata (launch template: "
                             "instance_metadata_tags = enabled); appliance-* tags are not read")
            tags = {}
        _add_attributes(res, tags, "aws tag")
    else:
        attrs = meta
        key = next((k for k in attrs if k.lower() == BLOCK), None)
        if key is not None:
            if not isinstance(attrs[key], str):
                raise MetadataInvalid(f"gcp attribute {key}: the value must be a string")
            res.add(f"gcp attribute {key}", parse_env_block(attrs[key].encode(), f"gcp attribute {key}"))
        _add_attributes(res, attrs, "gcp attribute")
    known = fields()
    res.add("environment", {k: v for k, v in environ.items() if k in known})
    for name in ignored():
        if environ.get(name, "").strip():
            res.notes.append(f"{name} (from environment) is accepted and not used: {ignored()[name]}")
    return res


def _add_attributes(res: Resolution, attrs: dict[str, str], kind: str) -> None:
    values: dict[str, str] = {}
    labels: dict[str, str] = {}
    for key in sorted(attrs):
        if not key.lower().startswith(PREFIX) or key.lower() in (BLOCK, *INFORMATIONAL):
            continue
        name = variable_for(key)
        source = f"{kind} {key}"
        try:
            check_name(name, source)
        except MetadataInvalid as exc:
            res.notes.append(f"ignored {exc}")
            continue
        value = attrs[key]
        if not isinstance(value, str):
            raise MetadataInvalid(f"{source}: the value must be a string")
        check_value(value, source)
        if name in values:
            raise MetadataInvalid(f"{source} and {labels[name]} both set {name}")
        values[name], labels[name] = value, source
    for name, value in values.items():  # one label per variable, so print-env names the tag
        res.add(labels[name], {name: value})



def block_name(cloud: str) -> str:
    return "the user data" if cloud == "aws" else f"the instance attribute {BLOCK}"


def attr_kind(cloud: str) -> str:
    return "instance tag" if cloud == "aws" else "instance attribute"



def _fetch_any(candidates: list[tuple[str, str]], timeout: float,
               attempts: int) -> tuple[str, str, Any]:
    """Try each (cloud, endpoint) in turn, up to `attempts` rounds with a short backoff."""
    errors: dict[str, str] = {}
    live = list(candidates)
    for attempt in range(attempts):
        for cloud, endpoint in list(live):
            try:
                fetch = aws.fetch if cloud == "aws" else gcp.fetch
                return cloud, endpoint, fetch(endpoint, timeout)
            except Transient as exc:
                errors[cloud] = f"{_label(cloud)} at {endpoint}: {exc}"
            except Refused as exc:
                errors[cloud] = f"{_label(cloud)} at {endpoint}: {exc}"
                live.remove((cloud, endpoint))
        if not live:
            break
        if attempt + 1 < attempts:
            time.sleep(min(0.5 * 2 ** attempt, 4.0))
    tried = f" after {attempts} attempt{'s' if attempts > 1 else ''}" if live else ""
    detail = "; ".join(errors[c] for c, _ in candidates if c in errors)
    what = "no instance metadata service answered" if len(candidates) > 1 else "cannot read instance metadata"
    raise MetadataUnreachable(f"{what}{tried}: {detail}")


def _label(cloud: str) -> str:
    return "AWS IMDS" if cloud == "aws" else "GCP metadata server"

