"""Kubernetes pod metadata for traced processes.

A process's pod is found from its cgroup path (/proc/PID/cgroup names the container id
and the pod UID under every runtime: containerd, CRI-O, Docker; cgroup v1 and v2), then
looked up in the pods of this node, listed through the official `kubernetes` client
(in-cluster config: the DaemonSet's ServiceAccount may only get/list/watch pods) and
cached. The node is NODE_NAME (downward API). A miss refreshes the list, at most once
per `min_refresh` seconds, so a new pod is known within seconds and an unknown process
costs nothing more. With `background=True` (the runtime's workers) the lists run in a
thread of their own: a lookup never waits for the API server, a miss returns None at
once and the caller asks again later.

Akto turns the labels into `x-akto-k8s-<label>` headers: `PodInfo.tag` is the JSON its
`tag` field carries.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("appliance.ebpf.k8s")

# .../pod<uid>/<id>  (cgroupfs driver)  or  ...-pod<uid>.slice/<runtime>-<id>.scope (systemd)
_POD_UID = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")
_CONTAINER = re.compile(r"(?:^|[/-])([0-9a-f]{64})(?:\.scope)?$")


@dataclass(frozen=True)
class CgroupIds:
    pod_uid: str | None
    container_id: str | None


def parse_cgroup(text: str) -> CgroupIds:
    """Pod UID and container id from the contents of /proc/PID/cgroup."""
    pod = cont = None
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        if pod is None and (m := _POD_UID.search(path)):
            pod = m.group(1).replace("_", "-")
        if cont is None and (m := _CONTAINER.search(path)):
            cont = m.group(1)
    return CgroupIds(pod, cont)


def cgroup_of(pid: int) -> CgroupIds:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return parse_cgroup(f.read())
    except OSError:
        return CgroupIds(None, None)


@dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    uid: str
    labels: dict[str, str] = field(default_factory=dict)
    container: str | None = None

    @property
    def tag(self) -> str:
        """Akto's `tag`: the pod's labels as a JSON object string."""
        return json.dumps(self.labels, sort_keys=True, separators=(",", ":"))


@dataclass
class K8sStats:
    lists: int = 0
    list_errors: int = 0
    hits: int = 0
    misses: int = 0


class PodResolver:
    """pid -> PodInfo (None for a process outside any pod, or when the API fails)."""

    def __init__(self, api: Any, node: str, *, min_refresh: float = 5.0,
                 cgroup_reader: Callable[[int], CgroupIds] = cgroup_of,
                 background: bool = False) -> None:
        self.api = api              # kubernetes.client.CoreV1Api
        self.node = node
        self.min_refresh = min_refresh
        self._cgroup = cgroup_reader
        self._by_uid: dict[str, tuple[Any, dict[str, str]]] = {}
        self._by_container: dict[str, PodInfo] = {}
        self._last_list = float("-inf")
        self.stats = K8sStats()
        self._warned = False
        self._wanted: threading.Event | None = None
        if background:
            self._wanted = threading.Event()
            self._wanted.set()  # the first list, at once
            threading.Thread(target=self._refresher, name="pod-metadata", daemon=True).start()

    def _refresher(self) -> None:
        assert self._wanted is not None
        while True:
            self._wanted.wait()
            wait = self._last_list + self.min_refresh - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._wanted.clear()
            self.refresh()

    @classmethod
    def in_cluster(cls, node: str | None = None, **kw: Any) -> PodResolver:
        from kubernetes import client, config
        config.load_incluster_config()
        node = node or os.environ.get("NODE_NAME", "")
        if not node:
            raise ValueError("NODE_NAME is not set: give the DaemonSet's container "
                             "env NODE_NAME from fieldRef spec.nodeName")
        return cls(client.CoreV1Api(), node, **kw)

    def refresh(self) -> None:
        self._last_list = time.monotonic()
        self.stats.lists += 1
        try:
            pods = self.api.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={self.node}")
        except Exception as e:  # ApiException, urllib3 errors: counted, logged once
            self.stats.list_errors += 1
            if not self._warned:
                log.warning("cannot list pods of node %s from the Kubernetes API (%s): "
                            "records carry no pod labels until it answers", self.node,
                            str(e).splitlines()[0])
                self._warned = True
            return
        self._warned = False
        by_uid, by_cont = {}, {}
        for p in pods.items:
            meta = p.metadata
            info = PodInfo(meta.namespace, meta.name, meta.uid, dict(meta.labels or {}))
            by_uid[meta.uid] = info
            statuses = (p.status.container_statuses or []) + (p.status.init_container_statuses or [])
            for cs in statuses:
                if cs.container_id:
                    cid = cs.container_id.split("://", 1)[-1]
                    by_cont[cid] = PodInfo(info.namespace, info.name, info.uid, info.labels, cs.name)
        self._by_uid = by_uid  # type: ignore[assignment]
        self._by_container = by_cont

    def _find(self, ids: CgroupIds) -> PodInfo | None:
        if ids.container_id and ids.container_id in self._by_container:
            return self._by_container[ids.container_id]
        if ids.pod_uid and ids.pod_uid in self._by_uid:
            return self._by_uid[ids.pod_uid]  # type: ignore[return-value]
        return None

    def pod_of(self, pid: int) -> PodInfo | None:
        ids = self._cgroup(pid)
        if ids.pod_uid is None and ids.container_id is None:
            return None  # a host process
        info = self._find(ids)
        if info is None and self._wanted is not None:
            self._wanted.set()  # the refresher lists again (at most every min_refresh)
        elif info is None and time.monotonic() - self._last_list >= self.min_refresh:
            self.refresh()
            info = self._find(ids)
        if info is None:
            self.stats.misses += 1
        else:
            self.stats.hits += 1
        return info
