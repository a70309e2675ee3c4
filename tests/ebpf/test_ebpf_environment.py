"""Bad environments give one line naming the fix, and the capabilities the collector
asks for are the ones the kernel really requires (measured by dropping each)."""

import json
import ssl  # noqa: F401  (maps libssl into this process: the checker must find one)
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.ebpf import libbpf, preflight
from appliance.ebpf.collector import BPF_OBJECT, Collector, CollectorConfig

ALL = (1 << 41) - 1


def one_line(msg: str) -> str:
    assert "\n" not in msg and "Traceback" not in msg, msg
    return msg


def test_libbpf_missing_names_the_package():
    with pytest.raises(libbpf.LibbpfMissing) as e:
        libbpf._Lib("libbpf-not-here.so.9")
    assert "apt-get install libbpf1" in one_line(str(e.value))


def test_no_btf(monkeypatch, tmp_path):
    monkeypatch.setattr(preflight, "BTF_PATH", str(tmp_path / "no-vmlinux"))
    with pytest.raises(preflight.EnvironmentProblem) as e:
        preflight.check(want_uprobes=False, bpf_object=BPF_OBJECT)
    assert "CONFIG_DEBUG_INFO_BTF" in one_line(str(e.value))


def test_tracefs_missing_and_not_mountable(monkeypatch, tmp_path):
    monkeypatch.setattr(preflight, "missing_caps", lambda *a, **k: [])
    monkeypatch.setattr(preflight, "TRACEFS", (str(tmp_path / "nope"), str(tmp_path / "nope2")))
    with pytest.raises(preflight.EnvironmentProblem) as e:
        preflight.check(want_uprobes=False, bpf_object=BPF_OBJECT)
    assert "mount -t tracefs" in one_line(str(e.value))


def test_own_pid_namespace_is_refused(monkeypatch, tmp_path):
    link = tmp_path / "pid"
    link.symlink_to("pid:[4026532712]")
    assert preflight.nested_pid_namespace(str(link))
    assert not preflight.nested_pid_namespace()  # the suite runs in the host's namespace
    monkeypatch.setattr(preflight, "nested_pid_namespace", lambda: True)
    with pytest.raises(preflight.EnvironmentProblem) as e:
        preflight.check(want_uprobes=False, bpf_object=BPF_OBJECT)
    assert "hostPID: true" in one_line(str(e.value))


@pytest.mark.skipif(not __import__("shutil").which("unshare"), reason="unshare not installed")
def test_own_pid_namespace_is_refused_for_real():
    """`unshare --pid --fork` puts the checker in a PID namespace of its own."""
    r = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-m",
                        "appliance.ebpf", "--no-tls"], capture_output=True, text=True,
                       timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 2 and "hostPID: true" in one_line(r.stderr.strip())


def test_object_not_built(monkeypatch, tmp_path):
    monkeypatch.setattr(preflight, "missing_caps", lambda *a, **k: [])
    with pytest.raises(preflight.EnvironmentProblem) as e:
        preflight.check(want_uprobes=False, bpf_object=tmp_path / "x.bpf.o")
    assert "make bpf" in one_line(str(e.value))


@pytest.mark.parametrize("caps, uprobes, named", [
    (ALL & ~(1 << preflight.CAP_BPF | 1 << preflight.CAP_SYS_ADMIN), False, "CAP_BPF"),
    (ALL & ~(1 << preflight.CAP_PERFMON | 1 << preflight.CAP_SYS_ADMIN), False, "CAP_PERFMON"),
    (ALL & ~(1 << preflight.CAP_SYS_ADMIN), True, "CAP_SYS_ADMIN"),
    (ALL & ~(1 << preflight.CAP_SYS_PTRACE), True, "CAP_SYS_PTRACE"),
])
def test_missing_capability_is_named(caps, uprobes, named):
    missing = preflight.missing_caps(uprobes, caps)
    assert [m for m in missing if m.startswith(named)]
    assert preflight.missing_caps(False, 1 << preflight.CAP_BPF | 1 << preflight.CAP_PERFMON) == [] \
        or preflight.kernel_version() < (5, 11)
    assert preflight.missing_caps(True, 1 << preflight.CAP_SYS_ADMIN | 1 << preflight.CAP_SYS_PTRACE) == [] \
        or preflight.kernel_version() < (5, 11)


def test_bad_config_value_is_one_line():
    with pytest.raises(ValueError) as e:
        Collector(CollectorConfig(ring_bytes=1000)).open()
    assert "power of two" in one_line(str(e.value))


# ---- measured with the real kernel: run the checker under a reduced bounding set

def run_check(caps, *extra):
    r = subprocess.run(["setpriv", f"--bounding-set=-all,{caps}", sys.executable, "-m",
                        "appliance.ebpf", *extra], capture_output=True, text=True, timeout=120,
                       cwd=Path(__file__).resolve().parents[2])
    return r


@pytest.mark.needs_bpf
def test_preflight_names_the_missing_capability_in_one_line():
    r = run_check("+bpf,+perfmon")   # no SYS_ADMIN, no SYS_PTRACE: uprobes impossible
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "CAP_SYS_ADMIN" in r.stderr and "CAP_SYS_PTRACE" in r.stderr


@pytest.mark.needs_bpf
def test_measured_capabilities():
    # syscall tracepoints: CAP_BPF + CAP_PERFMON are enough
    r = run_check("+bpf,+perfmon", "--no-tls")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["programs_attached"] > 20
    # ... and each of them is needed
    for caps in ("+bpf", "+perfmon"):
        r = run_check(caps, "--no-tls", "--no-preflight")
        assert r.returncode == 2 and "not permitted" in r.stderr, (caps, r.stderr)
    # uprobes: the kernel refuses them without CAP_SYS_ADMIN (libssl of this very
    # interpreter is mapped by the checker's parent, pytest)
    r = run_check("+bpf,+perfmon,+sys_ptrace", "--no-preflight")
    tls = json.loads(r.stdout)["tls"]
    assert not tls["files"] and any("Permission denied" in f["reason"] for f in tls["failures"])
    # and /proc/PID/root of other processes needs CAP_SYS_PTRACE
    r = run_check("+bpf,+perfmon,+sys_admin", "--no-preflight")
    tls = json.loads(r.stdout)["tls"]
    assert not tls["files"] and any("cannot open /proc/" in f["reason"] for f in tls["failures"])
    # SYS_ADMIN (which implies BPF and PERFMON) + SYS_PTRACE: everything
    r = run_check("+sys_admin,+sys_ptrace")
    assert r.returncode == 0, r.stderr
    tls = json.loads(r.stdout)["tls"]
    assert tls["files"] and tls["files"][0]["symbols"][:2] == ["SSL_write", "SSL_read"]
