"""Pod metadata through the official kubernetes client against a local API server."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

kubernetes = pytest.importorskip("kubernetes", reason="the k8s extra is not installed")
from kubernetes import client  # noqa: E402

from appliance.ebpf.k8s import CgroupIds, PodResolver, cgroup_of, parse_cgroup  # noqa: E402

UID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
CID = "ab" * 32
CID2 = "cd" * 32


def pod(name, uid, labels, cid):
    return {"metadata": {"name": name, "namespace": "shop", "uid": uid, "labels": labels},
            "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "x"}]},
            "status": {"containerStatuses": [{"name": "app", "containerID": f"containerd://{cid}",
                                              "image": "x", "imageID": "", "ready": True,
                                              "restartCount": 0}]}}


class Api(BaseHTTPRequestHandler):
    pods: list = []
    calls: list = []
    fail = False
    delay = 0.0

    def do_GET(self):
        u = urlparse(self.path)
        Api.calls.append((u.path, parse_qs(u.query)))
        time.sleep(Api.delay)
        if Api.fail:
            self.send_response(503)
            self.end_headers()
            return
        body = json.dumps({"kind": "PodList", "apiVersion": "v1", "metadata": {},
                           "items": Api.pods}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture
def api():
    Api.pods, Api.calls, Api.fail = [pod("web-1", UID, {"app": "web", "tier": "front"}, CID)], [], False
    Api.delay = 0.0
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    cfg = client.Configuration(host=f"http://127.0.0.1:{srv.server_address[1]}")
    yield client.CoreV1Api(client.ApiClient(cfg))
    srv.shutdown()
    srv.server_close()


CGROUPS = {
    # cgroup v2, systemd driver, containerd
    "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
    + UID.replace("-", "_") + ".slice/cri-containerd-" + CID + ".scope\n": (UID, CID),
    # cgroup v1, cgroupfs driver, docker
    "12:memory:/kubepods/besteffort/pod" + UID + "/" + CID + "\n3:cpu:/kubepods/besteffort/pod"
    + UID + "/" + CID + "\n": (UID, CID),
    # CRI-O
    "0::/kubepods.slice/kubepods-pod" + UID.replace("-", "_") + ".slice/crio-" + CID + ".scope\n": (UID, CID),
    # a host process
    "0::/system.slice/sshd.service\n": (None, None),
}


@pytest.mark.parametrize("text", list(CGROUPS))
def test_cgroup_paths(text):
    assert parse_cgroup(text) == CgroupIds(*CGROUPS[text])


def test_this_process_is_not_in_a_pod():
    assert cgroup_of(1 << 30) == CgroupIds(None, None)   # no such pid


def test_pod_of_process_by_container_id_then_cached(api):
    cg = {100: CgroupIds(UID, CID), 200: CgroupIds(None, None), 300: CgroupIds(None, CID2)}
    r = PodResolver(api, "node-1", min_refresh=3600, cgroup_reader=cg.__getitem__)
    info = r.pod_of(100)
    assert (info.namespace, info.name, info.uid, info.container) == ("shop", "web-1", UID, "app")
    assert json.loads(info.tag) == {"app": "web", "tier": "front"}
    assert Api.calls[0][0] == "/api/v1/pods"
    assert Api.calls[0][1]["fieldSelector"] == ["spec.nodeName=node-1"]
    assert r.pod_of(100) is info or r.pod_of(100) == info
    assert r.pod_of(200) is None          # host process: no API call
    assert r.pod_of(300) is None          # unknown container: no refresh before min_refresh
    assert len(Api.calls) == 1
    assert r.stats.hits == 2 and r.stats.misses == 1


def test_new_pod_found_on_refresh(api):
    cg = {300: CgroupIds("11111111-2222-3333-4444-555555555555", CID2)}
    r = PodResolver(api, "node-1", min_refresh=0, cgroup_reader=cg.__getitem__)
    r.refresh()
    assert r.pod_of(300) is None
    Api.pods.append(pod("api-7", "11111111-2222-3333-4444-555555555555", {"app": "api"}, CID2))
    assert r.pod_of(300).name == "api-7"


def test_api_down_is_counted_not_fatal(api, caplog):
    Api.fail = True
    cg = {100: CgroupIds(UID, CID)}
    r = PodResolver(api, "node-1", min_refresh=0, cgroup_reader=cg.__getitem__)
    assert r.pod_of(100) is None and r.pod_of(100) is None
    assert r.stats.list_errors == 2
    warnings = [m for m in caplog.messages if "cannot list pods" in m]
    assert len(warnings) == 1 and "\n" not in warnings[0]


def test_background_lookups_never_wait_for_the_api_server(api):
    """The runtime's workers look pods up from their packet loop: with background=True a
    lookup answers at once (None while the list is not in), the list runs in a thread."""
    Api.delay = 1.0  # a slow API server
    cg = {100: CgroupIds(UID, CID), 300: CgroupIds(None, CID2)}
    r = PodResolver(api, "node-1", min_refresh=0.2, cgroup_reader=cg.__getitem__, background=True)
    t0 = time.monotonic()
    assert r.pod_of(100) is None                 # the first list is still on its way
    assert time.monotonic() - t0 < 0.5
    deadline = time.monotonic() + 10
    while r.pod_of(100) is None:
        assert time.monotonic() < deadline, "the background list never arrived"
        time.sleep(0.05)
    assert r.pod_of(100).name == "web-1"
    # a new pod: the miss asks the thread for a list, and the lookup still does not wait
    Api.pods.append(pod("api-7", "11111111-2222-3333-4444-555555555555", {"app": "api"}, CID2))
    t0 = time.monotonic()
    assert r.pod_of(300) is None and time.monotonic() - t0 < 0.5
    deadline = time.monotonic() + 10
    while r.pod_of(300) is None:
        assert time.monotonic() < deadline, "the new pod was never listed"
        time.sleep(0.05)
    assert r.pod_of(300).name == "api-7"
