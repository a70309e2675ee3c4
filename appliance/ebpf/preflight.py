"""Environment checks before loading BPF: each problem is one line naming the fix.

Measured on Linux 6.18 (tests/ebpf/test_capabilities.py): loading and attaching the
syscall/sched tracepoint programs needs CAP_BPF + CAP_PERFMON; attaching uprobes needs
CAP_SYS_ADMIN as well; reading other users' /proc/PID/maps and opening
/proc/PID/root/... needs CAP_SYS_PTRACE (and CAP_DAC_READ_SEARCH for files only their
owner may read). Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK:
CAP_SYS_RESOURCE (or a raised memlock limit) there. CAP_SYS_ADMIN alone implies
CAP_BPF and CAP_PERFMON.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from pathlib import Path

from appliance.ebpf import libbpf

CAP_DAC_READ_SEARCH = 2
CAP_SYS_PTRACE = 19
CAP_SYS_ADMIN = 21
CAP_SYS_RESOURCE = 24
CAP_PERFMON = 38
CAP_BPF = 39

BTF_PATH = "/sys/kernel/btf/vmlinux"
TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


class EnvironmentProblem(RuntimeError):
    """The node cannot run the collector as configured; str() is the one-line fix."""


def effective_caps(pid: str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def kernel_version() -> tuple[int, int]:
    parts = platform.release().split(".")
    try:
        return int(parts[0]), int(parts[1].split("-")[0])
    except (IndexError, ValueError):
        return (0, 0)


def missing_caps(want_uprobes: bool, caps: int | None = None) -> list[str]:
    caps = effective_caps() if caps is None else caps

    def has(c: int) -> bool:
        return bool(caps >> c & 1)

    admin = has(CAP_SYS_ADMIN)
    missing = []
    if not (has(CAP_BPF) or admin):
        missing.append("CAP_BPF (load BPF programs and maps)")
    if not (has(CAP_PERFMON) or admin):
        missing.append("CAP_PERFMON (attach tracepoints, read kernel memory)")
    if want_uprobes and not admin:
        missing.append("CAP_SYS_ADMIN (attach uprobes on TLS libraries)")
    if want_uprobes and not has(CAP_SYS_PTRACE):
        missing.append("CAP_SYS_PTRACE (read other processes' /proc/PID/maps and /proc/PID/root)")
    if kernel_version() < (5, 11) and not has(CAP_SYS_RESOURCE):
        missing.append("CAP_SYS_RESOURCE (kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK)")
    return missing


# the initial PID namespace's inode number, a kernel constant (PROC_PID_INIT_INO)
INIT_PID_NS = "pid:[4026531836]"


def nested_pid_namespace(ns_link: str = "/proc/self/ns/pid") -> bool:
    """True when this process is in a PID namespace of its own (a container without
    hostPID): the kernel's programs see the host's process ids, so the collector could not
    exclude itself nor follow the processes it is told to trace."""
    try:
        return os.readlink(ns_link) != INIT_PID_NS
    except OSError:
        return False


def tracefs_dir() -> str | None:
    for d in TRACEFS:
        if os.path.isdir(os.path.join(d, "events", "syscalls")):
            return d
    return None


def _mount_tracefs() -> str | None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    rc = libc.mount(b"tracefs", TRACEFS[0].encode(), b"tracefs", 0, None)
    if rc != 0:
        return os.strerror(ctypes.get_errno())
    return None


def check(*, want_uprobes: bool, bpf_object: Path) -> None:
    """Raise EnvironmentProblem with the first problem found."""
    try:
        libbpf.lib()
    except libbpf.LibbpfMissing as e:
        raise EnvironmentProblem(f"eBPF: {e}") from None
    if not os.path.exists(BTF_PATH):
        raise EnvironmentProblem(
            f"eBPF: the kernel exposes no BTF ({BTF_PATH} missing): needs Linux >= 5.8 built "
            "with CONFIG_DEBUG_INFO_BTF=y (all major distributions since 2021); in a pod, "
            "mount the host's /sys/kernel read-only")
    if nested_pid_namespace():
        raise EnvironmentProblem(
            "eBPF: the collector runs in a PID namespace of its own, so the process ids it "
            "sees are not the kernel's: run it in the host's (Kubernetes: hostPID: true, as in "
            "deploy/k8s/daemonset-ebpf.yaml; Docker: --pid host)")
    missing = missing_caps(want_uprobes)
    if missing:
        raise EnvironmentProblem("eBPF: missing capabilit" + ("ies " if len(missing) > 1 else "y ")
                                 + "; ".join(missing)
                                 + ": add it to the container's securityContext (see deploy/k8s/daemonset-ebpf.yaml)")
    if tracefs_dir() is None:
        err = _mount_tracefs() if os.path.isdir(TRACEFS[0]) else "no /sys/kernel/tracing directory"
        if err is not None or tracefs_dir() is None:
            raise EnvironmentProblem(
                f"eBPF: tracefs is not mounted at {TRACEFS[0]} and mounting it failed ({err}): "
                "mount it on the host (mount -t tracefs tracefs /sys/kernel/tracing) or give "
                "the pod the host's /sys/kernel")
    if not bpf_object.exists():
        raise EnvironmentProblem(
            f"eBPF: {bpf_object} is not built: run `make bpf` (needs clang, llvm, libbpf-dev: "
            "scripts/system-deps.sh installs them)")
