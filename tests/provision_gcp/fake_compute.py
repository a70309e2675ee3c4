"""A small local implementation of the Compute Engine v1 REST API for the tests.

The real google-cloud-compute REST clients talk to it over HTTP (client_options api_endpoint
http://127.0.0.1:PORT), so the library builds, sends and parses real request/response JSON.

Implemented, for the collections the provisioner uses:
  projects.get and regions.get (the preflight; a project or region that was not seeded is 404),
  insert (POST collection), get (GET item), list (GET collection, paged), delete (DELETE),
  patch (PATCH, JSON merge patch), update (PUT), backendServices getHealth,
  regional and global operations: get (GET) and wait (POST .../wait).
Mutations return RUNNING operations that finish after `polls_before_done` polls; the effect
(create/delete/update) is applied when the operation completes, as in Compute.
Like Compute it checks references on insert (404 for a missing referenced resource), refuses
to delete a resource another resource uses (400 resourceInUseByAnotherResource), answers 409
alreadyExists, and can enforce IAM (403 "Required 'compute.x.y' permission for ...").
Every request is recorded with the IAM permission Compute checks for it.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

BASE = "https://www.googleapis.com/compute/v1/"

# Resource family names in IAM permissions, per scope and REST collection.
REGIONAL_PERM = {"backendServices": "regionBackendServices", "healthChecks": "regionHealthChecks", "operations": "regionOperations"}
GLOBAL_PERM = {"operations": "globalOperations"}


def rel(url: str) -> str:
    i = url.find("projects/")
    return url[i:] if i >= 0 else url


def full(url: str) -> str:
    return BASE + rel(url)


def _fullify(obj):
    """Compute returns references as full URLs; partial 'projects/...' input comes back full."""
    if isinstance(obj, dict):
        return {k: _fullify(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_fullify(v) for v in obj]
    if isinstance(obj, str) and obj.startswith("projects/"):
        return full(obj)
    return obj


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch, as Compute's PATCH methods apply it."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def _walk_urls(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("selfLink", "canonicalUrl", "region", "zone", "kind", "instanceGroup"):
                continue
            yield from _walk_urls(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk_urls(v, path)
    elif isinstance(obj, str) and "projects/" in obj and "/global/images/" not in obj:
        yield path, rel(obj)


@dataclass
class Call:
    method: str
    path: str  # after /compute/v1/
    query: dict
    body: dict | None
    permission: str
    status: int = 0

    @property
    def collection(self) -> str:
        parts = self.path.split("/")
        for p in parts:
            if p in COLLECTIONS:
                return p
        return ""


COLLECTIONS = {
    "projects", "regions",
    "networks", "subnetworks", "instances", "firewalls", "instanceTemplates", "healthChecks",
    "instanceGroupManagers", "instanceGroups", "autoscalers", "backendServices", "forwardingRules",
    "packetMirrorings", "operations",
}

KIND = {
    "projects": "compute#project", "regions": "compute#region",
    "networks": "compute#network", "subnetworks": "compute#subnetwork", "instances": "compute#instance",
    "firewalls": "compute#firewall", "instanceTemplates": "compute#instanceTemplate",
    "healthChecks": "compute#healthCheck", "instanceGroupManagers": "compute#instanceGroupManager",
    "autoscalers": "compute#autoscaler", "backendServices": "compute#backendService",
    "forwardingRules": "compute#forwardingRule", "packetMirrorings": "compute#packetMirroring",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str, reason: str, details=None):
        super().__init__(message)
        self.status, self.message, self.reason, self.details = status, message, reason, details or []

    def body(self):
        err = {"code": self.status, "message": self.message, "errors": [{"message": self.message, "domain": "global", "reason": self.reason}]}
        if self.details:
            err["details"] = self.details
        return {"error": err}


@dataclass
class Fault:
    method: str
    pattern: re.Pattern
    status: int
    body: dict | bytes
    times: int
    in_operation: bool = False  # fail the operation (DONE with error) instead of the request


@dataclass
class Operation:
    data: dict
    polls_left: int
    apply: object  # callable applying the effect
    fault: Fault | None = None


class FakeCompute:
    def __init__(self, project: str = "demo-proj", region: str = "us-central1"):
        self.project, self.region = project, region
        self.store: dict[str, dict] = {}  # rel URL -> resource
        self.ops: dict[str, Operation] = {}  # rel op URL -> op
        self.calls: list[Call] = []
        self.faults: list[Fault] = []
        self.polls_before_done = 2
        self.page_size = 2
        self.granted: set[str] | None = None  # None: no IAM enforcement
        self.iam_error_info = True  # also send a google.rpc.ErrorInfo naming the permission
        self.health: dict[str, list[dict]] = {}  # rel instance group URL -> healthStatus override
        self.hooks: list[list] = []  # [method, pattern, fn(fake, call), times]: run before routing
        self._ids = itertools.count(1000)
        self._lock = threading.RLock()
        self._server = None

    # ------------------------------------------------------------------ lifecycle
    def start(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                # Headers and body go out in separate writes: without NODELAY, Nagle plus
                # delayed ACKs would add ~40 ms to every keep-alive response.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _do(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, payload = fake.handle(self.command, self.path, raw)
                if isinstance(payload, bytes):  # fake.garbage(): not a JSON answer
                    out, ctype = payload, "text/html; charset=UTF-8"
                else:
                    out, ctype = json.dumps(payload).encode(), "application/json; charset=UTF-8"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _do

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def stop(self):
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    # ------------------------------------------------------------------ test helpers
    def seed(self, url: str, resource: dict) -> dict:
        url = rel(url)
        res = dict(resource)
        res.setdefault("name", url.rsplit("/", 1)[1])
        coll = url.split("/")[-2]
        res.setdefault("kind", KIND.get(coll, "compute#resource"))
        res.setdefault("id", str(next(self._ids)))
        res.setdefault("creationTimestamp", "2024-01-01T00:00:00.000-07:00")
        res["selfLink"] = full(url)
        self.store[url] = _fullify(res)
        return self.store[url]

    def fail(self, method: str, pattern: str, status: int, message: str, reason: str, *, details=None, times: int = 1, in_operation: bool = False):
        err = ApiError(status, message, reason, details)
        self.faults.append(Fault(method.upper(), re.compile(pattern), status, err.body(), times, in_operation))

    def fail_operation(self, method: str, pattern: str, errors: list[dict], status: int = 403, status_message: str = "FORBIDDEN", times: int = 1):
        body = {"error": {"errors": errors}, "httpErrorStatusCode": status, "httpErrorMessage": status_message}
        self.faults.append(Fault(method.upper(), re.compile(pattern), status, body, times, True))

    def garbage(self, method: str, pattern: str, status: int, body: bytes, times: int = 1):
        """Answer matching requests with ``body`` as is (an HTML error page from a proxy, a
        truncated answer): what no API client expects."""
        self.faults.append(Fault(method.upper(), re.compile(pattern), status, body, times, False))

    def on(self, method: str, pattern: str, fn, times: int = 1):
        """Run fn(fake, call) before a matching request is served (e.g. to simulate a race)."""
        self.hooks.append([method.upper(), re.compile(pattern), fn, times])

    def mutations(self) -> list[Call]:
        return [c for c in self.calls if c.method in ("POST", "DELETE", "PATCH", "PUT") and not c.path.endswith("/wait") and not c.path.endswith("/getHealth")]

    def inserts(self) -> list[Call]:
        return [c for c in self.calls if c.method == "POST" and c.path.split("/")[-1] in COLLECTIONS]

    def deletes(self) -> list[Call]:
        return [c for c in self.calls if c.method == "DELETE"]

    def op_polls(self) -> list[Call]:
        return [c for c in self.calls if "/operations/" in c.path]

    def permissions(self) -> set[str]:
        return {c.permission for c in self.calls}

    def names(self, collection: str) -> list[str]:
        return sorted(u.rsplit("/", 1)[1] for u in self.store if u.split("/")[-2] == collection)

    def get(self, url: str) -> dict | None:
        return self.store.get(rel(url))

    # ------------------------------------------------------------------ dispatch
    def handle(self, method: str, raw_path: str, raw_body: bytes):
        with self._lock:
            split = urlsplit(raw_path)
            query = {k: v[-1] for k, v in parse_qs(split.query).items()}
            path = split.path
            body = None
            if raw_body:
                try:
                    body = json.loads(raw_body)
                except ValueError:
                    return 400, ApiError(400, "Invalid JSON payload", "parseError").body()
            if not path.startswith("/compute/v1/"):
                call = Call(method, path, query, body, "unknown")
                self.calls.append(call)
                call.status = 404
                return 404, ApiError(404, f"fake: no route {path}", "notFound").body()
            path = path[len("/compute/v1/"):]
            call = Call(method, path, query, body, self._permission(method, path))
            self.calls.append(call)
            try:
                status, payload = self._route(call)
            except ApiError as err:
                status, payload = err.status, err.body()
            call.status = status
            return status, payload

    def _permission(self, method: str, path: str) -> str:
        parts = path.split("/")
        if len(parts) == 2 and parts[0] == "projects" and method == "GET":
            return "compute.projects.get"
        if len(parts) == 4 and parts[0] == "projects" and parts[2] == "regions" and method == "GET":
            return "compute.regions.get"
        if len(parts) < 4 or parts[0] != "projects":
            return "unknown"
        if parts[2] == "global":
            scope, rest = "global", parts[3:]
        elif parts[2] in ("regions", "zones"):
            scope, rest = parts[2], parts[4:]
        else:
            return "unknown"
        if not rest:
            return "unknown"
        coll = rest[0]
        fam = (REGIONAL_PERM if scope == "regions" else GLOBAL_PERM if scope == "global" else {}).get(coll, coll)
        if coll == "operations":
            return f"compute.{fam}.get"
        if len(rest) == 1:
            # autoscalers.patch/update name the target in ?autoscaler= on the collection URL
            verb = {"GET": "list", "POST": "create", "PATCH": "update", "PUT": "update"}.get(method, "unknown")
        elif len(rest) == 2:
            verb = {"GET": "get", "DELETE": "delete", "PATCH": "update", "PUT": "update"}.get(method, "unknown")
        else:
            verb = rest[2]
        return f"compute.{fam}.{verb}"

    def _resource_of(self, call: Call) -> str:
        parts = call.path.split("/")
        if call.method == "POST" and parts[-1] in COLLECTIONS and call.body and call.body.get("name"):
            return call.path + "/" + call.body["name"]
        if len(parts) <= 4:  # projects/P, projects/P/regions/R
            return call.path
        return "/".join(parts[:6] if parts[2] != "global" else parts[:5])

    def _fault(self, call: Call, in_operation: bool) -> Fault | None:
        for f in self.faults:
            if f.times and f.in_operation == in_operation and f.method == call.method and f.pattern.search(call.path):
                f.times -= 1
                return f
        return None

    def _route(self, call: Call):
        if self.granted is not None and call.permission not in self.granted:
            resource = self._resource_of(call)
            details = []
            if self.iam_error_info:
                details = [{
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "IAM_PERMISSION_DENIED",
                    "domain": "iam.googleapis.com",
                    "metadata": {"permission": call.permission, "resource": resource},
                }]
            raise ApiError(403, f"Required '{call.permission}' permission for '{resource}'", "forbidden", details)
        for hook in self.hooks:
            if hook[3] and hook[0] == call.method and hook[1].search(call.path):
                hook[3] -= 1
                hook[2](self, call)
        fault = self._fault(call, in_operation=False)
        if fault:
            return fault.status, fault.body if isinstance(fault.body, bytes) else copy.deepcopy(fault.body)

        parts = call.path.split("/")
        if "operations" in parts:
            return self._operation(call, parts)
        i = max(i for i, p in enumerate(parts) if p in COLLECTIONS)
        coll_url = "/".join(parts[: i + 1])
        rest = parts[i + 1:]
        if not rest:
            if call.method == "GET":
                return 200, self._list(coll_url, call.query)
            if call.method == "POST":
                return 200, self._insert(call, coll_url)
            if call.method in ("PATCH", "PUT") and coll_url.endswith("/autoscalers") and call.query.get("autoscaler"):
                return 200, self._modify(call, f"{coll_url}/{call.query['autoscaler']}")
        elif len(rest) == 1:
            url = f"{coll_url}/{rest[0]}"
            if call.method == "GET":
                res = self.store.get(url)
                if res is None:
                    raise ApiError(404, f"The resource '{url}' was not found", "notFound")
                return 200, copy.deepcopy(res)
            if call.method == "DELETE":
                return 200, self._delete(call, url)
            if call.method in ("PATCH", "PUT"):
                return 200, self._modify(call, url)
        elif len(rest) == 2 and rest[1] == "getHealth" and call.method == "POST":
            return 200, self._get_health(f"{coll_url}/{rest[0]}", call.body or {})
        raise ApiError(404, f"fake: no route {call.method} {call.path}", "notFound")

    # ------------------------------------------------------------------ collections
    def _list(self, coll_url: str, query: dict):
        items = [copy.deepcopy(v) for k, v in sorted(self.store.items()) if k.rsplit("/", 1)[0] == coll_url]
        size = int(query.get("maxResults") or self.page_size)
        start = int(query.get("pageToken") or 0)
        page = items[start: start + size]
        out = {"kind": KIND.get(coll_url.rsplit("/", 1)[1], "compute#resource") + "List", "id": coll_url, "items": page, "selfLink": full(coll_url)}
        if start + size < len(items):
            out["nextPageToken"] = str(start + size)
        return out

    def _check_refs(self, body: dict, skip_prefix: str = ""):
        for _path, url in _walk_urls(body):
            parts = url.split("/")
            if len(parts) < 5:
                continue
            if parts[-2] == "instanceGroups":
                # A regional MIG's instance group exists with the MIG.
                mig = url.replace("/instanceGroups/", "/instanceGroupManagers/")
                if mig not in self.store:
                    raise ApiError(404, f"The resource '{url}' was not found", "notFound")
                continue
            if url not in self.store:
                raise ApiError(404, f"The resource '{url}' was not found", "notFound")

    def _insert(self, call: Call, coll_url: str):
        body = call.body or {}
        name = body.get("name")
        if not name:
            raise ApiError(400, "Invalid value for field 'resource.name': ''. Must be a match of regex '(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'", "invalid")
        url = f"{coll_url}/{name}"
        if url in self.store:
            raise ApiError(409, f"The resource '{url}' already exists", "alreadyExists")
        self._check_refs(body)
        coll = coll_url.rsplit("/", 1)[1]
        if coll == "packetMirrorings":
            fr = self.store.get(rel(body.get("collectorIlb", {}).get("url", "")))
            if not fr or not fr.get("isMirroringCollector"):
                raise ApiError(400, "Invalid value for field 'resource.collectorIlb': the forwarding rule is not a mirroring collector", "invalid")

        def apply():
            res = dict(body)
            parts = url.split("/")
            if parts[2] == "regions":
                res["region"] = full("/".join(parts[:4]))
            if coll == "instanceGroupManagers":
                res["instanceGroup"] = full(url.replace("/instanceGroupManagers/", "/instanceGroups/"))
                res["status"] = {"isStable": True}
            if coll == "autoscalers":
                res["status"] = "ACTIVE"
            if coll == "forwardingRules":
                res["IPAddress"] = "10.30.0.100"
            if coll == "packetMirrorings":
                for key in ("network", "collectorIlb"):
                    if key in res:
                        res[key] = dict(res[key], canonicalUrl=full(res[key]["url"]))
            self.seed(url, res)

        return self._start_op(call, "insert", url, apply)

    def _delete(self, call: Call, url: str):
        if url not in self.store:
            raise ApiError(404, f"The resource '{url}' was not found", "notFound")
        target = url
        if "/instanceGroupManagers/" in url:
            group = url.replace("/instanceGroupManagers/", "/instanceGroups/")
        else:
            group = None
        for other_url, other in self.store.items():
            if other_url == url:
                continue
            for _, ref in _walk_urls(other):
                if ref == target or (group and ref == group):
                    kind = url.split("/")[-2]
                    raise ApiError(400, f"The {kind} resource '{url}' is already being used by '{other_url}'", "resourceInUseByAnotherResource")

        def apply():
            self.store.pop(url, None)

        return self._start_op(call, "delete", url, apply)

    def _modify(self, call: Call, url: str):
        if url not in self.store:
            raise ApiError(404, f"The resource '{url}' was not found", "notFound")
        body = call.body or {}
        if body.get("name") not in (None, url.rsplit("/", 1)[1]):
            raise ApiError(400, "Invalid value for field 'resource.name': cannot be changed", "invalid")
        self._check_refs(body)

        def apply():
            old = self.store[url]
            if call.method == "PATCH":
                new = merge_patch(old, _fullify(body))
            else:
                new = _fullify(dict(body))
                for keep in ("id", "creationTimestamp", "selfLink", "kind", "region"):
                    if keep in old:
                        new[keep] = old[keep]
            self.store[url] = new

        return self._start_op(call, "patch" if call.method == "PATCH" else "update", url, apply)

    def _get_health(self, bes_url: str, body: dict):
        bes = self.store.get(bes_url)
        if bes is None:
            raise ApiError(404, f"The resource '{bes_url}' was not found", "notFound")
        group = rel(body.get("group", ""))
        if group in self.health:
            statuses = self.health[group]
        else:
            mig = self.store.get(group.replace("/instanceGroups/", "/instanceGroupManagers/"), {})
            base = mig.get("baseInstanceName", "vm")
            statuses = [
                {
                    "instance": full(f"projects/{self.project}/zones/{self.region}-a/instances/{base}-{i}"),
                    "ipAddress": f"10.30.0.{10 + i}",
                    "port": 8000,
                    "healthState": "HEALTHY",
                }
                for i in range(int(mig.get("targetSize", 0)))
            ]
        return {"kind": "compute#backendServiceGroupHealth", "healthStatus": copy.deepcopy(statuses)}

    # ------------------------------------------------------------------ operations
    def _start_op(self, call: Call, op_type: str, target: str, apply):
        parts = target.split("/")
        n = next(self._ids)
        if parts[2] == "regions":
            op_url = "/".join(parts[:4]) + f"/operations/operation-{n}"
        else:
            op_url = f"projects/{parts[1]}/global/operations/operation-{n}"
        data = {
            "kind": "compute#operation",
            "id": str(n),
            "name": f"operation-{n}",
            "operationType": op_type,
            "targetLink": full(target),
            "status": "RUNNING",
            "progress": 0,
            "insertTime": "2024-01-01T00:00:00.000-07:00",
            "selfLink": full(op_url),
        }
        if parts[2] == "regions":
            data["region"] = full("/".join(parts[:4]))
        op = Operation(data, self.polls_before_done, apply, self._fault(call, in_operation=True))
        self.ops[op_url] = op
        if op.polls_left <= 0:
            self._finish(op)
        return copy.deepcopy(op.data)

    def _finish(self, op: Operation):
        if op.data["status"] == "DONE":
            return
        op.data["status"] = "DONE"
        op.data["progress"] = 100
        op.data["endTime"] = "2024-01-01T00:00:05.000-07:00"
        if op.fault:
            op.data.update(copy.deepcopy(op.fault.body))
            return
        try:
            op.apply()
        except ApiError as err:
            op.data["error"] = {"errors": [{"code": err.reason, "message": err.message}]}
            op.data["httpErrorStatusCode"] = err.status
            op.data["httpErrorMessage"] = "ERROR"

    def _operation(self, call: Call, parts: list[str]):
        i = parts.index("operations")
        op_url = "/".join(parts[: i + 2])
        op = self.ops.get(op_url)
        if op is None:
            raise ApiError(404, f"The resource '{op_url}' was not found", "notFound")
        wait = len(parts) > i + 2 and parts[i + 2] == "wait"
        if (call.method == "GET" and not wait) or (call.method == "POST" and wait):
            if op.data["status"] != "DONE":
                op.polls_left -= 1
                op.data["progress"] = min(90, op.data["progress"] + 40)
                if op.polls_left <= 0:
                    self._finish(op)
            return 200, copy.deepcopy(op.data)
        raise ApiError(404, f"fake: no route {call.method} {call.path}", "notFound")

    # ------------------------------------------------------------------ default world
    def seed_world(self):
        p, r = self.project, self.region
        self.seed(f"projects/{p}", {"defaultServiceAccount": f"{p}@developer.gserviceaccount.com"})
        self.seed(f"projects/{p}/regions/{r}", {"status": "UP", "zones": [f"projects/{p}/zones/{r}-{z}" for z in "abc"]})
        net = f"projects/{p}/global/networks/prod-vpc"
        self.seed(net, {"autoCreateSubnetworks": False})
        self.seed(f"projects/{p}/global/networks/other-vpc", {"autoCreateSubnetworks": False})
        for name, cidr, network in (("app-a", "10.10.0.0/24", net), ("app-b", "10.20.0.0/24", net), ("collectors", "10.30.0.0/24", net), ("elsewhere", "10.99.0.0/24", f"projects/{p}/global/networks/other-vpc")):
            self.seed(f"projects/{p}/regions/{r}/subnetworks/{name}", {"ipCidrRange": cidr, "network": network, "region": f"projects/{p}/regions/{r}"})
        self.seed(
            f"projects/{p}/zones/{r}-a/instances/web-1",
            {"networkInterfaces": [{"network": net, "subnetwork": f"projects/{p}/regions/{r}/subnetworks/app-a", "networkIP": "10.10.0.5"}], "status": "RUNNING"},
        )
        # A collector someone else runs: internal passthrough, mirroring collector.
        self.seed(f"projects/{p}/regions/{r}/healthChecks/ext-hc", {"type": "TCP", "tcpHealthCheck": {"port": 22}})
        self.seed(
            f"projects/{p}/regions/{r}/backendServices/ext-bes",
            {"loadBalancingScheme": "INTERNAL", "protocol": "TCP", "healthChecks": [f"projects/{p}/regions/{r}/healthChecks/ext-hc"],
             "backends": [{"group": f"projects/{p}/zones/{r}-b/instanceGroups/ids", "balancingMode": "CONNECTION"}]},
        )
        self.health[f"projects/{p}/zones/{r}-b/instanceGroups/ids"] = [
            {"instance": full(f"projects/{p}/zones/{r}-b/instances/ids-1"), "ipAddress": "10.30.0.50", "port": 22, "healthState": "HEALTHY"},
            {"instance": full(f"projects/{p}/zones/{r}-b/instances/ids-2"), "ipAddress": "10.30.0.51", "port": 22, "healthState": "UNHEALTHY"},
        ]
        self.seed(
            f"projects/{p}/regions/{r}/forwardingRules/ext-collector",
            {"loadBalancingScheme": "INTERNAL", "IPProtocol": "TCP", "allPorts": True, "isMirroringCollector": True,
             "backendService": f"projects/{p}/regions/{r}/backendServices/ext-bes", "network": net, "IPAddress": "10.30.0.9"},
        )
        self.seed(
            f"projects/{p}/regions/{r}/forwardingRules/plain-ilb",
            {"loadBalancingScheme": "INTERNAL", "IPProtocol": "TCP", "allPorts": True, "isMirroringCollector": False,
             "backendService": f"projects/{p}/regions/{r}/backendServices/ext-bes", "network": net},
        )
        self.seed(
            f"projects/{p}/regions/{r}/forwardingRules/web-lb",
            {"loadBalancingScheme": "EXTERNAL", "IPProtocol": "TCP", "portRange": "80-80", "target": f"projects/{p}/regions/{r}/targetPools/web"},
        )
        return self
