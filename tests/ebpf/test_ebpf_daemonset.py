"""The eBPF DaemonSet manifest: what it grants is exactly what the collector was measured
to need, and it carries Akto's variables."""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy" / "k8s" / "daemonset-ebpf.yaml"
SEED_VARIABLES = {
    "AKTO_TRAFFIC_BATCH_TIME_SECS", "AKTO_TRAFFIC_BATCH_SIZE", "AKTO_KAFKA_BROKER_MAL",
    "AKTO_MODULE_DISCOVERY_CONFIG", "TRAFFIC_INACTIVITY_THRESHOLD", "TRAFFIC_MAX_ACTIVE_CONN",
    "TRAFFIC_DISABLE_EGRESS", "AKTO_MEM_THRESH_RESTART", "TRAFFIC_BUFFER_THRESHOLD",
    "AKTO_IGNORE_IP_TRAFFIC", "AKTO_IGNORE_CLOUD_METADATA_CALLS", "CAPTURE_ALL", "AKTO_LOG_LEVEL",
}


@pytest.fixture(scope="module")
def docs():
    return {d["kind"]: d for d in yaml.safe_load_all(MANIFEST.read_text()) if d}


def test_pod_is_not_privileged_and_has_only_measured_capabilities(docs):
    pod = docs["DaemonSet"]["spec"]["template"]["spec"]
    [c] = pod["containers"]
    sc = c["securityContext"]
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sorted(sc["capabilities"]["add"]) == ["BPF", "PERFMON", "SYS_ADMIN", "SYS_PTRACE"]
    assert pod["hostPID"] is True and pod["hostNetwork"] is True
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/sys/kernel"]["readOnly"] is True
    paths = [v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v]
    assert paths == ["/sys/kernel"]          # no /lib/modules, no host /
    assert c["resources"]["limits"] == {"cpu": "500m", "memory": "1Gi"}


def test_service_account_reads_pods_only(docs):
    [rule] = docs["ClusterRole"]["rules"]
    assert rule == {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
    sa = docs["ServiceAccount"]["metadata"]
    subj = docs["ClusterRoleBinding"]["subjects"][0]
    assert (subj["name"], subj["namespace"]) == (sa["name"], sa["namespace"])
    assert docs["DaemonSet"]["spec"]["template"]["spec"]["serviceAccountName"] == sa["name"]


def test_akto_variables_and_node_name(docs):
    [c] = docs["DaemonSet"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert SEED_VARIABLES <= set(env)
    assert env["APPLIANCE_MODE"]["value"] == "ebpf"
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_environment_is_valid_for_the_runtime(docs):
    """The manifest's variables pass the runtime's own validation: eBPF mode, plain and
    TLS traffic (CAPTURE_ALL true, like Akto's), one worker under a half-core limit, the
    memory ceiling below the container's limit."""
    from appliance.config import load_settings

    [c] = docs["DaemonSet"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    s = load_settings(env=env)
    assert s.mode == "ebpf" and s.ebpf_capture_plain is True and s.ebpf_tls is True
    assert s.worker_count == 1 and s.mem_restart_mb < 1024
    assert s.ebpf_pid_list == [] and c["args"] == ["run"]
