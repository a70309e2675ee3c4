"""Thin layer over google-cloud-compute: clients, waiting on operations, error translation.

Imported only when a GCP command runs (google.cloud.compute_v1 takes a while to import).
Everything goes through the real `google.cloud.compute_v1` REST clients.

Operations. The library's own ExtendedOperation for insert()/delete() polls through an
operations client it builds *without* the caller's client_options, i.e. against the public
endpoint even when another one was configured (google/cloud/compute_v1/services/*/transports/
base.py, `_region_operations_client`). We therefore start mutations with the `*_unary` methods
and wrap the returned Operation in google.api_core's ExtendedOperation ourselves, refreshed by
`RegionOperations.wait` / `GlobalOperations.wait` on a client built with the same endpoint and
credentials. ExtendedOperation then does the polling bookkeeping and maps a failed operation's
httpErrorStatusCode/errors to the usual google.api_core exceptions.
"""

from __future__ import annotations

import builtins
import functools
import json
import os
import re
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

from provision import exitcodes
from provision.errors import debugging, one_line
from provision.gcp import spec as S
from provision.gcp.errors import GcpError


class Kind(NamedTuple):
    key: str
    label: str
    client: str  # google.cloud.compute_v1 client class
    message: str  # google.cloud.compute_v1 resource message
    field: str  # request field naming the resource (and f"{field}_resource" for its body)
    scope: str  # "global" | "region" | "zone"
    collection: str  # REST collection
    perm: str  # IAM permission family: compute.<perm>.<verb>


KINDS: dict[str, Kind] = {
    k.key: k
    for k in (
        Kind("network", "network", "NetworksClient", "Network", "network", "global", "networks", "networks"),
        Kind("subnetwork", "subnet", "SubnetworksClient", "Subnetwork", "subnetwork", "region", "subnetworks", "subnetworks"),
        Kind("instance", "instance", "InstancesClient", "Instance", "instance", "zone", "instances", "instances"),
        Kind("firewall", "firewall rule", "FirewallsClient", "Firewall", "firewall", "global", "firewalls", "firewalls"),
        Kind("instance_template", "instance template", "InstanceTemplatesClient", "InstanceTemplate", "instance_template", "global", "instanceTemplates", "instanceTemplates"),
        Kind("health_check", "health check", "RegionHealthChecksClient", "HealthCheck", "health_check", "region", "healthChecks", "regionHealthChecks"),
        Kind("instance_group_manager", "managed instance group", "RegionInstanceGroupManagersClient", "InstanceGroupManager", "instance_group_manager", "region", "instanceGroupManagers", "instanceGroupManagers"),
        Kind("autoscaler", "autoscaler", "RegionAutoscalersClient", "Autoscaler", "autoscaler", "region", "autoscalers", "autoscalers"),
        Kind("backend_service", "backend service", "RegionBackendServicesClient", "BackendService", "backend_service", "region", "backendServices", "regionBackendServices"),
        Kind("forwarding_rule", "forwarding rule", "ForwardingRulesClient", "ForwardingRule", "forwarding_rule", "region", "forwardingRules", "forwardingRules"),
        Kind("packet_mirroring", "packet mirroring policy", "PacketMirroringsClient", "PacketMirroring", "packet_mirroring", "region", "packetMirrorings", "packetMirrorings"),
    )
}

# IAM permission checked for each client method (the verb part of compute.<perm>.<verb>).
VERBS = {"get": "get", "list": "list", "insert": "create", "delete": "delete", "patch": "update", "update": "update", "get_health": "getHealth"}


def permission(kind: str, method: str) -> str:
    return f"compute.{KINDS[kind].perm}.{VERBS[method]}"


def operation_permission(scope: str) -> str:
    return "compute.globalOperations.get" if scope == "global" else "compute.regionOperations.get"


_QUOTA_REASONS = {"quotaExceeded", "rateLimitExceeded", "userRateLimitExceeded", "QUOTA_EXCEEDED", "RATE_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTED"}
_PERM_RE = re.compile(r"Required '([A-Za-z0-9_.]+)' permission")
_REST_PREFIX = re.compile(r"^(GET|POST|PUT|PATCH|DELETE) \S+: ")


def _field(obj, name):
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _error_entries(exc) -> list[tuple[str, str]]:
    """(reason or code, message) of each error item of an API exception."""
    out = []
    for item in getattr(exc, "errors", None) or ():
        reason = _field(item, "reason") or _field(item, "code") or ""
        message = _field(item, "message") or ""
        out.append((str(reason), str(message)))
    return out


def _best_message(exc) -> str:
    for _, message in _error_entries(exc):
        if message:
            return " ".join(message.split())
    message = getattr(exc, "message", None) or str(exc)
    return " ".join(_REST_PREFIX.sub("", str(message)).split())


_DISABLED_REASONS = {"accessNotConfigured", "SERVICE_DISABLED"}


def translate(exc: BaseException, what: str, perm: str | None = None) -> GcpError:
    """Turn a google.api_core exception into a one-line GcpError with the documented exit code."""
    code = getattr(exc, "code", None)
    code = code if isinstance(code, int) else None
    message = _best_message(exc)
    reasons = {r for r, _ in _error_entries(exc)}
    reason = getattr(exc, "reason", None)
    if reason:
        reasons.add(str(reason))

    def err(text: str, exit_code: int) -> GcpError:
        return GcpError(text, exit_code, status=code)

    if reasons & _DISABLED_REASONS:
        return err(f"the Compute Engine API is not enabled for the project while {what}: {message} "
                   "(enable it: gcloud services enable compute.googleapis.com --project PROJECT)", exitcodes.USAGE)
    if code == 429 or reasons & _QUOTA_REASONS or message.startswith("Quota '"):
        return err(f"quota exceeded while {what}: {message}", exitcodes.QUOTA)
    if code == 401:
        return err(f"not authenticated while {what}: {message}", exitcodes.DENIED)
    if code == 403:
        named = None
        meta = getattr(exc, "metadata", None) or {}
        if isinstance(meta, dict) and meta.get("permission"):
            named = meta["permission"]
        if not named:
            m = _PERM_RE.search(message)
            named = m.group(1) if m else None
        if named:
            return err(
                f"permission denied while {what}: missing IAM permission {named} ({message}); "
                "see provision/gcp/IAM.md",
                exitcodes.DENIED,
            )
        hint = f"; this call needs {perm}" if perm else ""
        return err(f"permission denied while {what}: {message}{hint} (see provision/gcp/IAM.md)", exitcodes.DENIED)
    if code == 404:
        return err(f"not found while {what}: {message}", exitcodes.USAGE)
    if code == 409 or "alreadyExists" in reasons:
        return err(f"already exists while {what}: {message}", exitcodes.CONFLICT)
    if "resourceInUseByAnotherResource" in reasons or "RESOURCE_IN_USE_BY_ANOTHER_RESOURCE" in reasons:
        return err(f"cannot finish {what}: {message}", exitcodes.CONFLICT)
    if code in (400, 412):
        return err(f"the Compute API rejected {what}: {message}", exitcodes.USAGE)
    status = f"HTTP {code}: " if code else ""
    return err(f"{what} failed: {status}{message}", exitcodes.ERROR)


def to_dict(message) -> dict:
    return json.loads(type(message).to_json(message, use_integers_for_enums=False, indent=None))


class Compute:
    """Compute API access for one project/region, with operation waiting and progress."""

    def __init__(
        self,
        project: str,
        region: str,
        endpoint: str | None = None,
        *,
        timeout: float = 900.0,
        poll_interval: float | None = None,
        progress: Callable[[str], None] | None = None,
    ):
        self.project = project
        self.region = region
        self.endpoint = endpoint or None
        self.timeout = timeout
        if poll_interval is None:
            poll_interval = float(os.environ.get("APPLIANCE_GCP_POLL_INTERVAL", "2"))
        self.poll_interval = poll_interval
        self.progress = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._clients: dict[str, object] = {}
        self._credentials = None
        self._mod = None

    # ------------------------------------------------------------------ clients
    @property
    def compute_v1(self):
        if self._mod is None:
            try:
                from google.cloud import compute_v1
            except ImportError:
                raise GcpError(
                    "google-cloud-compute is not installed: pip install 'mirror-appliance[gcp]'", exitcodes.ERROR
                ) from None
            self._mod = compute_v1
        return self._mod

    def _creds(self):
        if self._credentials is None and self.endpoint and self.endpoint.startswith("http://"):
            # A plain-HTTP endpoint is a local emulator or test server: never send a real
            # token over plaintext.
            from google.auth.credentials import AnonymousCredentials

            self._credentials = AnonymousCredentials()
        return self._credentials

    def client(self, name: str):
        if name not in self._clients:
            kwargs: dict = {"transport": "rest", "credentials": self._creds()}
            if self.endpoint:
                kwargs["client_options"] = {"api_endpoint": self.endpoint}
            try:
                self._clients[name] = getattr(self.compute_v1, name)(**kwargs)
            except Exception as exc:  # google.auth.exceptions.DefaultCredentialsError and friends
                if type(exc).__name__ == "DefaultCredentialsError":
                    raise GcpError(
                        "no Google Cloud credentials found: run `gcloud auth application-default login` "
                        "or set GOOGLE_APPLICATION_CREDENTIALS",
                        exitcodes.DENIED,
                    ) from None
                raise
        return self._clients[name]

    # ------------------------------------------------------------------ calls
    def _call(self, what: str, perm: str | None, fn, *args, **kwargs):
        """Run one API call; every exception it raises becomes a one-line GcpError."""
        from google.api_core import exceptions as gexc

        try:
            return fn(*args, **kwargs)
        except gexc.RetryError as exc:
            cause = exc.cause if exc.cause is not None else exc
            if isinstance(cause, gexc.GoogleAPICallError):
                raise translate(cause, what, perm) from None
            raise GcpError(f"{what} failed after retries: {one_line(cause)}", exitcodes.ERROR) from None
        except gexc.GoogleAPICallError as exc:
            raise translate(exc, what, perm) from None
        except gexc.GoogleAPIError as exc:  # api_core errors that are not HTTP answers
            raise GcpError(f"{what} failed: {type(exc).__name__}: {one_line(exc)}", exitcodes.ERROR) from None
        except GcpError:
            raise
        except (KeyboardInterrupt, BrokenPipeError):
            raise
        except Exception as exc:
            failure = self._other_error(exc, what)
            if failure.unexpected and debugging():
                raise
            raise failure from None

    def _other_error(self, exc: Exception, what: str) -> GcpError:
        """Transport and authentication failures (requests, google.auth), and anything else."""
        names = {cls.__name__ for cls in type(exc).__mro__}
        if names & {"ConnectionError", "Timeout", "TransportError", "SSLError", "ChunkedEncodingError"}:
            where = self.endpoint or "https://compute.googleapis.com"
            return GcpError(f"cannot reach the Compute API at {where} while {what}: {one_line(exc)}", exitcodes.ERROR)
        if names & {"DefaultCredentialsError", "RefreshError", "GoogleAuthError"}:
            return GcpError(f"Google Cloud authentication failed while {what}: {one_line(exc)}", exitcodes.DENIED)
        return GcpError(f"unexpected error while {what}: {type(exc).__name__}: {one_line(exc) or '(no message)'} "
                        "(set APPLIANCE_DEBUG=1 for a traceback)", exitcodes.ERROR, unexpected=True)

    def _scope_args(self, kind: Kind, project: str | None, region: str | None, zone: str | None) -> dict:
        args: dict[str, str | None] = {"project": project or self.project}
        if kind.scope == "region":
            args["region"] = region or self.region
        elif kind.scope == "zone":
            args["zone"] = zone
        return args

    def _loc(self, kind: Kind, name: str, project=None, region=None, zone=None) -> str:
        p = project or self.project
        if kind.scope == "global":
            return f"projects/{p}/global/{kind.collection}/{name}"
        if kind.scope == "zone":
            return f"projects/{p}/zones/{zone}/{kind.collection}/{name}"
        return f"projects/{p}/regions/{region or self.region}/{kind.collection}/{name}"

    def get(self, kind_key: str, name: str, *, project=None, region=None, zone=None) -> dict | None:
        """The resource as API JSON, or None when it does not exist."""

        kind = KINDS[kind_key]
        req = self._scope_args(kind, project, region, zone)
        req[kind.field] = name
        what = f"reading {kind.label} {self._loc(kind, name, project, region, zone)}"
        client = self.client(kind.client)
        try:
            return to_dict(self._call(what, permission(kind_key, "get"), self._get_raw, client, req))
        except GcpError as err:
            if err.status == 404:
                return None
            raise

    def get_project(self) -> dict | None:
        """The project, or None when Compute says it does not exist."""
        what = f"reading project {self.project}"
        client = self.client("ProjectsClient")
        try:
            return to_dict(self._call(what, "compute.projects.get", client.get,
                                      request={"project": self.project}, timeout=60))
        except GcpError as err:
            if err.status == 404:
                return None
            raise

    def get_region(self) -> dict | None:
        """The region, or None when the project has no such region (404, or 400 for a bad name)."""
        what = f"reading region {self.region} of project {self.project}"
        client = self.client("RegionsClient")
        try:
            return to_dict(self._call(what, "compute.regions.get", client.get,
                                      request={"project": self.project, "region": self.region}, timeout=60))
        except GcpError as err:
            if err.status in (400, 404):
                return None
            raise

    @staticmethod
    def _get_raw(client, req):
        return client.get(request=req, timeout=60)

    def get_url(self, kind_key: str, url: str) -> dict | None:
        parsed = S.parse_url(url, KINDS[kind_key].collection)
        return self.get(
            kind_key, parsed["name"], project=parsed["project"], region=parsed.get("region"), zone=parsed.get("zone")
        )

    def list(self, kind_key: str) -> builtins.list[dict]:
        kind = KINDS[kind_key]
        req = self._scope_args(kind, None, None, None)
        what = f"listing {kind.collection} in {'/'.join(str(v) for v in req.values())}"
        client = self.client(kind.client)
        return self._call(what, permission(kind_key, "list"), lambda: [to_dict(m) for m in client.list(request=req, timeout=60)])

    def get_health(self, backend_service_url: str, group_url: str) -> builtins.list[dict]:
        parsed = S.parse_url(backend_service_url, "backendServices")
        client = self.client(KINDS["backend_service"].client)
        req = {
            "project": parsed["project"],
            "region": parsed["region"],
            "backend_service": parsed["name"],
            "resource_group_reference_resource": {"group": group_url},
        }
        what = f"reading health of backend service {S.rel(backend_service_url)}"
        res = self._call(what, permission("backend_service", "get_health"), client.get_health, request=req, timeout=60)
        return to_dict(res).get("healthStatus", [])

    # ------------------------------------------------------------------ mutations
    def _message(self, kind: Kind, body: dict):
        return getattr(self.compute_v1, kind.message).from_json(json.dumps(body))

    def _mutate(self, method: str, kind_key: str, name: str, body: dict | None, verb: str):
        kind = KINDS[kind_key]
        req = self._scope_args(kind, None, None, None)
        if method != "insert":
            req[kind.field] = name
        if body is not None:
            req[f"{kind.field}_resource"] = self._message(kind, body)
        client = self.client(kind.client)
        fn = getattr(client, f"{method}_unary")
        what = f"{verb} {kind.label} {name}"
        started = time.monotonic()
        self.progress(f"{verb} {kind.label} {name} ...")
        op = self._call(what, permission(kind_key, method), fn, request=req, timeout=60)
        self.wait(op, what, kind.scope)
        self.progress(f"{verb} {kind.label} {name}: done ({time.monotonic() - started:.1f}s)")

    def insert(self, kind_key: str, body: dict) -> None:
        self._mutate("insert", kind_key, body["name"], body, "creating")

    def patch(self, kind_key: str, name: str, body: dict) -> None:
        self._mutate("patch", kind_key, name, body, "updating")

    def update(self, kind_key: str, name: str, body: dict) -> None:
        self._mutate("update", kind_key, name, body, "replacing")

    def delete(self, kind_key: str, name: str) -> None:
        self._mutate("delete", kind_key, name, None, "deleting")

    # ------------------------------------------------------------------ operations
    def _operation_refresh(self, op, scope: str):
        link = S.rel(getattr(op, "self_link", "") or "")
        parts = link.split("/")
        project = parts[1] if len(parts) > 2 and parts[0] == "projects" else self.project
        if "regions" in parts:
            region = parts[parts.index("regions") + 1]
            scope = "region"
        elif "global" in parts:
            scope, region = "global", None
        else:
            region = self.region
        if scope == "global":
            client = self.client("GlobalOperationsClient")
            req = {"project": project, "operation": op.name}
        else:
            client = self.client("RegionOperationsClient")
            req = {"project": project, "region": region, "operation": op.name}
        # Operations.wait blocks server-side for up to ~2 minutes and returns the operation.
        return functools.partial(client.wait, request=req, timeout=150), operation_permission(scope)

    def wait(self, op, what: str, scope: str) -> None:
        """Wait for a Compute operation, showing progress; raise GcpError if it failed."""
        from google.api_core import exceptions as gexc
        from google.api_core import extended_operation

        refresh, perm = self._operation_refresh(op, scope)

        class _Operation(extended_operation.ExtendedOperation):
            @property
            def error_message(self):
                return self._extended_operation.http_error_message

            @property
            def error_code(self):
                return self._extended_operation.http_error_status_code

        future = _Operation.make(refresh, lambda: None, op)
        started = time.monotonic()
        last_state, last_report = None, started
        while not self._call(f"waiting for {what} (operation {op.name})", perm, future.done):
            now = time.monotonic()
            state = _status_name(future.status)
            pct = getattr(future, "progress", 0) or 0
            if state != last_state or now - last_report >= 10:
                extra = f" {pct}%" if pct else ""
                self.progress(f"  ... {what}: {state}{extra} ({now - started:.0f}s, operation {op.name})")
                last_state, last_report = state, now
            if now - started > self.timeout:
                raise GcpError(
                    f"timed out after {self.timeout:.0f}s waiting for {what} (operation {op.name} is still "
                    f"{state}); it may still finish: re-running the command is safe",
                    exitcodes.ERROR,
                )
            time.sleep(self.poll_interval)
        try:
            future.result(timeout=0)
        except gexc.GoogleAPICallError as exc:
            raise translate(exc, what) from None
        errors = getattr(getattr(future, "error", None), "errors", None)
        if errors:  # failed without an HTTP status: still a failure
            raise translate(gexc.GoogleAPICallError(errors[0].message, errors=list(errors)), what)


def _status_name(status) -> str:
    return getattr(status, "name", None) or str(status)
