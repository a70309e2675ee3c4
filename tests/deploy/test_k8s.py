"""The Kubernetes DaemonSet: parsed and checked; and checkov over it and the Dockerfile."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from deploy_helpers import DEPLOY, ROOT

from appliance.cloudmeta.names import check_name

MANIFEST = DEPLOY / "k8s" / "daemonset.yaml"
SEED = ROOT.parent / "shared" / "seeds" / "ebpf-traffic-collector.txt"
# The variables on Akto's eBPF collector page (../shared/seeds/ebpf-traffic-collector.txt), kept
# here too so that the test runs where shared/ is absent; checked against the page when present.
SEED_VARIABLES = {
    "AKTO_TRAFFIC_BATCH_TIME_SECS", "AKTO_TRAFFIC_BATCH_SIZE", "AKTO_KAFKA_BROKER_MAL",
    "AKTO_MODULE_DISCOVERY_CONFIG", "TRAFFIC_INACTIVITY_THRESHOLD", "TRAFFIC_MAX_ACTIVE_CONN",
    "TRAFFIC_DISABLE_EGRESS", "AKTO_MEM_THRESH_RESTART", "TRAFFIC_BUFFER_THRESHOLD",
    "AKTO_IGNORE_IP_TRAFFIC", "AKTO_IGNORE_CLOUD_METADATA_CALLS", "CAPTURE_ALL",
    "AKTO_LOG_LEVEL",
}


@pytest.fixture(scope="module")
def docs():
    return {d["kind"]: d for d in yaml.safe_load_all(MANIFEST.read_text()) if d}


@pytest.fixture(scope="module")
def pod(docs):
    return docs["DaemonSet"]["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def container(pod):
    [c] = pod["containers"]
    return c


@pytest.fixture(scope="module")
def env(container):
    names = [e["name"] for e in container["env"]]
    assert len(names) == len(set(names)), "a variable is set twice"
    return {e["name"]: e["value"] for e in container["env"]}


def mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", quantity)
    return float(m.group(1)) * units[m.group(2)]


def cpus(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_objects_names_and_selector(docs):
    assert set(docs) == {"Namespace", "ServiceAccount", "DaemonSet"}
    ns = docs["Namespace"]["metadata"]["name"]
    ds = docs["DaemonSet"]
    assert ds["apiVersion"] == "apps/v1"
    assert ds["metadata"]["namespace"] == docs["ServiceAccount"]["metadata"]["namespace"] == ns
    selector = ds["spec"]["selector"]["matchLabels"]
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
    assert ds["spec"]["updateStrategy"]["type"] == "RollingUpdate"


def test_host_network_capture_without_privileges(pod, container):
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert not pod.get("hostPID") and not pod.get("hostIPC")
    assert not [v for v in pod["volumes"] if "hostPath" in v], "no host mounts (unlike Akto's eBPF pod)"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert {"operator": "Exists"} in pod["tolerations"]  # every node
    sc = container["securityContext"]
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["capabilities"]["add"] == ["NET_RAW"]  # all capture needs (test_docker_image.py)
    assert sc["runAsUser"] == 0  # needed for the capabilities to be effective (no ambient caps)


def test_probes_ask_healthz_on_the_runtime_port(container, env):
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    http_port = int(env["APPLIANCE_HTTP"].rsplit(":", 1)[1])
    assert ports["http"] == http_port
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/healthz" and get["port"] in ("http", http_port), probe
    start = container["startupProbe"]
    assert start["periodSeconds"] * start["failureThreshold"] >= 30  # room to start the workers


def test_resources_and_the_limits_the_runtime_is_told_about(docs, pod, container, env):
    res = container["resources"]
    for kind in ("cpu", "memory"):
        assert kind in res["requests"] and kind in res["limits"]
    assert cpus(res["requests"]["cpu"]) <= cpus(res["limits"]["cpu"])
    assert mebibytes(res["requests"]["memory"]) <= mebibytes(res["limits"]["memory"])
    # the runtime sheds load and restarts itself before the kernel's OOM killer would
    assert int(env["AKTO_MEM_THRESH_RESTART"]) < mebibytes(res["limits"]["memory"])
    assert int(env["APPLIANCE_WORKERS"]) <= max(1, int(cpus(res["limits"]["cpu"])))
    # the spool fits its volume, and lives on a writable one (the root filesystem is read-only)
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    spool_mount = next(p for p in mounts if env["APPLIANCE_SPOOL_DIR"].startswith(p + "/"))
    size = volumes[mounts[spool_mount]]["emptyDir"]["sizeLimit"]
    assert int(env["APPLIANCE_SPOOL_MAX_MB"]) < mebibytes(size)
    assert "/tmp" in mounts
    # SIGTERM flush: the supervisor waits up to 60 s for its workers
    assert pod["terminationGracePeriodSeconds"] > 60


def test_environment_is_akto_s_and_valid_for_the_runtime(container, env):
    if SEED.exists():
        text = SEED.read_text()
        on_page = set(re.findall(r"- name: ([A-Z_]+)", text))  # the manifest's env entries
        on_page |= {"AKTO_LOG_LEVEL"} if "AKTO_LOG_LEVEL" in text else set()  # from its FAQ
        assert on_page == SEED_VARIABLES
    assert SEED_VARIABLES <= set(env)
    for name in env:
        check_name(name, "daemonset.yaml")  # every one is a variable the runtime reads
    from appliance.config import load_settings

    settings = load_settings(env=env)  # the same validation as `appliance run` and `boot`
    assert settings.mode == "gcp" and settings.capture_all is True
    assert settings.ignore_cloud_metadata is True
    assert container["args"] == ["run"]
    image = container["image"]
    assert ":" in image and not image.endswith(":latest")


# Findings accepted, each for a reason; anything else fails the test.
CHECKOV_ACCEPTED = {
    "CKV_K8S_19": "host network: the point of a node collector is to see the node's interfaces",
    "CKV_K8S_25": "NET_RAW is added: AF_PACKET capture (promiscuous mode and fanout need no more)",
    "CKV_K8S_23": "root in the container: without it the added capabilities are not effective",
    "CKV_K8S_40": "same: UID 0 is what makes the added capability effective",
    "CKV_K8S_43": "the manifest cannot know the digest of an image you build; pin it when you push",
    "CKV_K8S_15": "IfNotPresent with a pinned version: nodes restart pods without the registry",
    "CKV2_K8S_6": "NetworkPolicy does not apply to hostNetwork pods",
}
CHECKOV_ACCEPTED_DOCKERFILE = {
    "CKV_DOCKER_7": "FROM ${BASE_IMAGE}: checkov does not resolve the argument, whose default is "
                    "pinned by digest (test_docker.py checks it)",
}


def test_checkov_finds_nothing_else_in_the_manifest_and_the_dockerfile(tmp_path):
    checkov = Path(sys.executable).with_name("checkov")
    if not checkov.exists():
        checkov = Path(shutil.which("checkov") or "checkov")
    proc = subprocess.run([str(checkov), "-f", str(MANIFEST), "-f", str(ROOT / "Dockerfile"),
                           "--quiet", "--compact", "-o", "json"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    reports = json.loads(proc.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    kinds = {r["check_type"] for r in reports}
    assert {"kubernetes", "dockerfile"} <= kinds, proc.stdout[:2000] + proc.stderr[-2000:]
    failed = {(f["check_id"], r["check_type"]) for r in reports for f in r["results"]["failed_checks"]}
    unexpected = {(c, t) for c, t in failed
                  if c not in (CHECKOV_ACCEPTED if t == "kubernetes" else CHECKOV_ACCEPTED_DOCKERFILE)}
    assert not unexpected, unexpected
    for r in reports:
        assert r["summary"]["parsing_errors"] == 0
    assert all(r["summary"]["passed"] > 20 for r in reports)
