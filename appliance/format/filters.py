"""Pair filters (sans-IO): Akto's traffic filters, each drop counted by reason.

- ``AKTO_MODULE_DISCOVERY_CONFIG``: rules on request headers.  A pair is dropped when
  the header is absent and the rule says ``ifAbsent: reject``, or when it is present and
  its value does not match the regex (searched anywhere in the value, like Go's
  ``regexp.MatchString`` that Akto uses).
- ``AKTO_IGNORE_IP_TRAFFIC``: drop pairs whose ``Host`` is empty or an IP literal.
- ``AKTO_IGNORE_CLOUD_METADATA_CALLS``: drop calls to the instance metadata service
  (169.254.169.254, fd00:ec2::254, metadata.google.internal), by Host or server address.
- ``TRAFFIC_DISABLE_EGRESS``: drop *egress* pairs.  Egress means the server of the
  connection (the side that answered the request, decided from the content) is outside
  the internal networks ``APPLIANCE_INTERNAL_CIDRS`` (default RFC 1918, RFC 6598 and
  ULA ranges): calls the mirrored workloads make out to third-party APIs.  Calls *into*
  the mirrored workloads, from anywhere, are kept.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Any

from appliance.core.pair import Message

Rule = tuple[str, bool, "re.Pattern[str]"]  # header name, reject when absent, value pattern

METADATA_HOSTS = frozenset(("169.254.169.254", "fd00:ec2::254", "metadata.google.internal",
                            "metadata"))
METADATA_IPS = frozenset((bytes([169, 254, 169, 254]),
                          ipaddress.ip_address("fd00:ec2::254").packed))


def _host_only(host: str) -> str:
    host = host.strip()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host[1:]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


class PairFilter:
    """Callable on (request, response, client_ip, server_ip[, server_side]) -> drop
    reason or None; ``server_side``: the pair was observed at the server's end (eBPF)."""

    def __init__(self, discovery_rules: Iterable[Rule] = (), ignore_ip_host: bool = False,
                 ignore_metadata: bool = False, disable_egress: bool = False,
                 internal_cidrs: Iterable[str] = ()) -> None:
        self.rules = list(discovery_rules)
        self.ignore_ip_host = ignore_ip_host
        self.ignore_metadata = ignore_metadata
        self.disable_egress = disable_egress
        self.internal = [ipaddress.ip_network(c, strict=False) for c in internal_cidrs]
        self._internal_cache: dict[bytes, bool] = {}

    @classmethod
    def from_settings(cls, s: Any) -> PairFilter | None:
        from appliance.config import parse_discovery_config

        f = cls(parse_discovery_config(s.discovery_config), s.ignore_ip_traffic,
                s.ignore_cloud_metadata, s.disable_egress,
                [c.strip() for c in s.internal_cidrs.split(",") if c.strip()])
        return f if f.active else None

    @property
    def active(self) -> bool:
        return bool(self.rules or self.ignore_ip_host or self.ignore_metadata or self.disable_egress)

    def is_internal(self, raw_ip: bytes) -> bool:
        hit = self._internal_cache.get(raw_ip)
        if hit is None:
            addr = ipaddress.ip_address(raw_ip)
            hit = any(addr in net for net in self.internal if net.version == addr.version)
            if len(self._internal_cache) > 100_000:
                self._internal_cache.clear()
            self._internal_cache[raw_ip] = hit
        return hit

    def __call__(self, req: Message, resp: Message | None, client_ip: bytes,
                 server_ip: bytes, server_side: bool = False) -> str | None:
        if self.rules:
            for name, reject_absent, pattern in self.rules:
                value = req.header(name)
                if value is None:
                    if reject_absent:
                        return "filter_discovery_config"
                elif not pattern.search(value):
                    return "filter_discovery_config"
        if self.ignore_ip_host or self.ignore_metadata:
            host = _host_only(req.header("host") or "")
            if self.ignore_metadata and (host.lower() in METADATA_HOSTS or server_ip in METADATA_IPS):
                return "filter_cloud_metadata"
            if self.ignore_ip_host and (not host or _is_ip(host)):
                return "filter_ip_host"
        if self.disable_egress and not server_side and not self.is_internal(server_ip):
            return "filter_egress"
        return None
