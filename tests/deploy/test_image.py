"""The machine image: systemd unit (systemd-analyze), cloud-init user data (cloud-init's own
schema), the Packer template (parsed) and its install script (run for real in a sandbox)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from deploy_helpers import DEPLOY

from appliance import cli
from appliance.cli import boot
from appliance.cloudmeta.envblock import parse_env_block

UNIT = DEPLOY / "systemd" / "appliance.service"
GCP_DROPIN = DEPLOY / "systemd" / "appliance.service.d" / "gcp-capture.conf"
CLOUD_INIT = {c: DEPLOY / "cloud-init" / f"{c}-user-data.yaml" for c in ("aws", "gcp")}
PACKER = DEPLOY / "packer" / "appliance.pkr.hcl"
INSTALL = DEPLOY / "packer" / "install.sh"
APPLIANCE_BIN = Path(sys.executable).with_name("appliance")
NET_CAPS = {"CAP_NET_RAW"}  # all capture needs (measured in test_docker_image.py)


def unit_directives(text: str) -> dict[str, list[str]]:
    """{'Section.Key': [values in order]} from a unit file or drop-in."""
    out: dict[str, list[str]] = {}
    section = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def tool(name: str) -> str:
    """Installed by scripts/system-deps.sh: a test that needs it must run, never skip."""
    path = shutil.which(name)
    assert path, f"{name} is missing: run `bash scripts/system-deps.sh` (make test does)"
    return path


def staged_unit(tmp_path: Path, with_gcp: bool) -> Path:
    """The unit with ExecStart pointing at this environment's `appliance` (so verify can check
    that the command exists), and the gcp drop-in beside it when asked."""
    assert APPLIANCE_BIN.exists()
    unit = tmp_path / "appliance.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/appliance", str(APPLIANCE_BIN)))
    if with_gcp:
        (tmp_path / "appliance.service.d").mkdir()
        shutil.copy(GCP_DROPIN, tmp_path / "appliance.service.d" / GCP_DROPIN.name)
    return unit


# ----------------------------------------------------------------------------- systemd


def test_unit_passes_systemd_analyze_verify(tmp_path):
    unit = staged_unit(tmp_path, with_gcp=False)
    proc = subprocess.run([tool("systemd-analyze"), "verify", str(unit)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr


def security(unit: Path) -> tuple[float, str]:
    proc = subprocess.run([tool("systemd-analyze"), "security", "--offline=yes", str(unit)],
                          capture_output=True, text=True, timeout=60)
    assert "Unknown key" not in proc.stderr and "Invalid" not in proc.stderr, proc.stderr
    score = re.search(r"Overall exposure level for appliance\.service: (\d+\.\d)", proc.stdout)
    assert score, proc.stdout[-2000:] + proc.stderr
    return float(score.group(1)), proc.stdout


def test_aws_mode_unit_has_no_capabilities_and_a_low_exposure(tmp_path):
    score, report = security(staged_unit(tmp_path, with_gcp=False))
    assert score <= 2.0, report
    assert "✓ CapabilityBoundingSet=~CAP_NET_ADMIN" in report
    assert "✓ CapabilityBoundingSet=~CAP_NET_(BIND_SERVICE|BROADCAST|RAW)" in report
    assert "✓ RestrictAddressFamilies=~AF_PACKET" in report
    assert "✓ NoNewPrivileges=" in report and "✓ User=/DynamicUser=" in report


def test_gcp_drop_in_adds_exactly_net_raw(tmp_path):
    """systemd merges the drop-in into the empty bounding set: exactly CAP_NET_RAW."""
    score, report = security(staged_unit(tmp_path, with_gcp=True))
    assert score <= 2.5, report
    assert "✓ CapabilityBoundingSet=~CAP_NET_ADMIN" in report
    assert "✗ CapabilityBoundingSet=~CAP_NET_(BIND_SERVICE|BROADCAST|RAW)" in report
    assert "✗ RestrictAddressFamilies=~AF_PACKET" in report
    # everything else stays denied
    for cap in ("CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_(DAC_*", "CAP_SYS_MODULE", "CAP_BPF"):
        assert f"✓ CapabilityBoundingSet=~{cap}" in report, cap
    dropin = unit_directives(GCP_DROPIN.read_text())
    assert set(dropin) == {"Service.CapabilityBoundingSet", "Service.AmbientCapabilities",
                           "Service.RestrictAddressFamilies"}
    assert set(dropin["Service.CapabilityBoundingSet"][0].split()) == NET_CAPS
    assert set(dropin["Service.AmbientCapabilities"][0].split()) == NET_CAPS


def test_unit_restart_policy_hardening_and_paths():
    d = unit_directives(UNIT.read_text())
    one = {k: v[-1] for k, v in d.items()}
    assert one["Service.ExecStart"] == "/usr/local/bin/appliance boot"
    assert one["Service.EnvironmentFile"] == "-/etc/appliance/appliance.env"
    assert one["Service.Restart"] == "on-failure"
    # invalid configuration exits 2 (boot and run alike): restarting cannot fix it
    assert one["Service.RestartPreventExitStatus"].split() == [str(boot.EXIT_INVALID)] == [str(cli.EXIT_USAGE)]
    assert boot.EXIT_UNREACHABLE != boot.EXIT_INVALID  # unreachable metadata is retried
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "DynamicUser": "yes", "StateDirectory": "appliance",
                       "CapabilityBoundingSet": "", "AmbientCapabilities": ""}.items():
        assert one[f"Service.{key}"] == value, key
    assert int(one["Service.LimitNOFILE"]) >= 65536
    assert "network-online.target" in one["Unit.After"] and one["Install.WantedBy"] == "multi-user.target"
    # the runtime keeps its spool and session map in the StateDirectory (all else is read-only)
    from appliance.config import Settings

    for field in ("spool_dir", "session_map"):
        assert Settings.model_fields[field].default.startswith("/var/lib/appliance/")
    # the supervisor waits up to 60 s for the workers to flush: systemd must wait longer
    assert int(one["Service.TimeoutStopSec"]) > 60 and one["Service.KillMode"] == "mixed"


# ----------------------------------------------------------------------------- cloud-init


@pytest.mark.parametrize("cloud", ["aws", "gcp"])
def test_cloud_init_user_data_is_valid_for_cloud_init(cloud):
    proc = subprocess.run([tool("cloud-init"), "schema", "--config-file", str(CLOUD_INIT[cloud])],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Valid cloud-config" in proc.stdout
    assert "deprecat" not in (proc.stdout + proc.stderr).lower()


def test_the_schema_check_really_rejects_bad_user_data(tmp_path):
    """Control: the same validator fails a broken copy (so the test above means something)."""
    doc = yaml.safe_load(CLOUD_INIT["aws"].read_text())
    doc["write_files"][0]["permissions"] = 384  # 0600 as a YAML integer: cloud-init wants a string
    doc["runcmd"] = "systemctl enable appliance"
    bad = tmp_path / "bad.yaml"
    bad.write_text("#cloud-config\n" + yaml.safe_dump(doc))
    proc = subprocess.run([tool("cloud-init"), "schema", "--config-file", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "permissions" in proc.stdout + proc.stderr


@pytest.mark.parametrize("cloud", ["aws", "gcp"])
def test_cloud_init_installs_the_same_unit_and_a_valid_environment(cloud):
    text = CLOUD_INIT[cloud].read_text()
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    files = {f["path"]: f for f in doc["write_files"]}
    assert files["/etc/systemd/system/appliance.service"]["content"] == UNIT.read_text()
    dropin = "/etc/systemd/system/appliance.service.d/gcp-capture.conf"
    if cloud == "gcp":
        assert files[dropin]["content"] == GCP_DROPIN.read_text()
    else:
        assert dropin not in files  # aws mode needs no capability
    assert files["/etc/systemd/system/appliance.service.d/10-cloud.conf"]["content"] == (
        f"[Service]\nEnvironment=APPLIANCE_BOOT_CLOUD={cloud}\n")
    env_file = files["/etc/appliance/appliance.env"]
    assert env_file["permissions"] == "0600"
    # the same parser and validation as `appliance boot`
    env = parse_env_block(env_file["content"].encode(), "appliance.env")
    assert env["APPLIANCE_MODE"] == cloud
    from appliance.config import load_settings

    settings = load_settings(env=env)
    assert settings.mode == cloud and settings.kafka_brokers
    # systemd EnvironmentFile syntax too: every value single-quoted
    for line in env_file["content"].splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[A-Z_]+='[^']*'", line), line
    runcmd = [" ".join(c) if isinstance(c, list) else c for c in doc["runcmd"]]
    assert runcmd[-1] == "systemctl enable --now appliance.service"
    assert any("/opt/appliance/bin/appliance /usr/local/bin/appliance" in c for c in runcmd)
    assert "python3-venv" in doc["packages"]


# ----------------------------------------------------------------------------- Packer


@pytest.fixture(scope="module")
def packer():
    import hcl2  # python-hcl2, which checkov (test extra) brings

    with open(PACKER) as f:
        return _unwrap(hcl2.load(f))


def _unwrap(node):
    """Older python-hcl2 releases wrap every attribute value in a one-element list; newer ones
    do not. Blocks stay lists of dicts either way."""
    if isinstance(node, dict):
        return {k: _unwrap(v[0] if _wrapped(k, v) else v) for k, v in node.items()}
    if isinstance(node, list):
        return [_unwrap(v) for v in node]
    return node


def _wrapped(key, value) -> bool:
    blocks = {"packer", "required_plugins", "variable", "validation", "locals", "source", "build",
              "provisioner", "post-processor", "source_ami_filter", "metadata_options"}
    return isinstance(value, list) and len(value) == 1 and key not in blocks and _OLD_HCL2


def _old_hcl2() -> bool:
    import hcl2

    return isinstance(hcl2.loads('a = "b"\n')["a"], list)


_OLD_HCL2 = _old_hcl2()


def test_packer_builds_an_ami_and_a_gce_image_from_debian(packer):
    sources = {}
    for block in packer["source"]:
        for kind, named in block.items():
            for name, body in named.items():
                sources[f"{kind}.{name}"] = body
    ami, gce = sources["amazon-ebs.debian"], sources["googlecompute.debian"]
    flt = ami["source_ami_filter"][0]
    assert flt["owners"] == ["136693071363"]  # Debian's own AWS account
    assert flt["filters"]["name"].startswith("debian-12-") and flt["most_recent"] is True
    assert ami["encrypt_boot"] is True and ami["imds_support"] == "v2.0"
    assert ami["metadata_options"][0]["http_tokens"] == "required"
    assert gce["source_image_family"] == "debian-12" and gce["source_image_project_id"] == ["debian-cloud"]
    assert gce["image_family"] == "mirror-appliance"
    [build] = packer["build"]
    assert set(build["sources"]) == {"source.amazon-ebs.debian", "source.googlecompute.debian"}
    plugins = packer["packer"][0]["required_plugins"][0]
    assert plugins["amazon"]["source"] == "github.com/hashicorp/amazon"
    assert plugins["googlecompute"]["source"] == "github.com/hashicorp/googlecompute"


def test_packer_uploads_existing_files_and_runs_install_sh_per_cloud(packer):
    [build] = packer["build"]
    provisioners = [(kind, body) for p in build["provisioner"] for kind, body in p.items()]
    [upload] = [body for kind, body in provisioners if kind == "file"]
    systemd_dir = DEPLOY / "systemd"
    for src in upload["sources"]:
        if "var.wheel" in src:
            continue
        path = Path(src.replace("${local.systemd}", str(systemd_dir)))
        assert path.is_file(), src
    [install] = [body for kind, body in provisioners if kind == "shell" and "script" in body]
    assert install["script"] == "${path.root}/install.sh" and INSTALL.is_file()
    env = " ".join(install["environment_vars"])
    assert 'APPLIANCE_CLOUD=${source.type == "amazon-ebs" ? "aws" : "gcp"}' in env
    assert "sudo" in install["execute_command"]


def test_install_sh_rejects_bad_input(tmp_path):
    for env, message in [({"APPLIANCE_CLOUD": "azure"}, "APPLIANCE_CLOUD must be aws or gcp"),
                         ({"APPLIANCE_CLOUD": "aws", "APPLIANCE_STAGE": str(tmp_path)},
                          "expected one mirror_appliance-*.whl")]:
        proc = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True,
                              env={"PATH": os.environ["PATH"], **env}, timeout=30)
        assert proc.returncode == 2 and message in proc.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    from deploy_helpers import ROOT

    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(ROOT), "-w", str(dist)],
                   check=True, capture_output=True, timeout=300, cwd=dist)
    [whl] = dist.glob("mirror_appliance-*.whl")
    return whl


@pytest.mark.parametrize("cloud", ["aws", "gcp"])
def test_install_sh_builds_the_image_in_a_sandbox(cloud, wheel, tmp_path):
    """Run install.sh as Packer would, as root, with /etc, /opt, /usr/local and /var/lib/apt
    overlaid by a tmpfs in a private mount namespace (the host is untouched) and apt-get,
    systemctl and cloud-init stubbed; then verify the installed unit against the installed
    binary and run it."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.fail("needs root and unshare (the test machines have both)")
    stage = tmp_path / "stage"
    stage.mkdir()
    shutil.copy(wheel, stage)
    shutil.copy(UNIT, stage)
    shutil.copy(GCP_DROPIN, stage)
    stubs, out, scratch = tmp_path / "stubs", tmp_path / "out", tmp_path / "scratch"
    for d in (stubs, out, scratch):
        d.mkdir()
    for name in ("apt-get", "systemctl", "cloud-init"):
        (stubs / name).write_text(f'#!/bin/sh\necho "{name} $*" >> {out}/calls.log\n')
        (stubs / name).chmod(0o755)
    base_python = getattr(sys, "_base_executable", sys.executable)
    (stubs / "python3").symlink_to(base_python)
    overlays = "\n".join(
        f"mkdir -p {scratch}/{i}/u {scratch}/{i}/w && mount -t overlay overlay "
        f"-o lowerdir={d},upperdir={scratch}/{i}/u,workdir={scratch}/{i}/w {d}"
        for i, d in enumerate(["/etc", "/opt", "/usr/local", "/var/lib/apt"]))
    script = f"""set -e
mount -t tmpfs tmpfs {scratch}
{overlays}
APPLIANCE_CLOUD={cloud} APPLIANCE_STAGE={stage} PATH={stubs}:$PATH bash {INSTALL} > {out}/install.log 2>&1 \
  || {{ cat {out}/install.log >&2; exit 1; }}
/usr/local/bin/appliance --version > {out}/version
readlink -f /usr/local/bin/appliance > {out}/target
cp -r /etc/systemd/system/appliance.service /etc/systemd/system/appliance.service.d {out}/
ls /etc/appliance > {out}/etc-appliance
cat /etc/sysctl.d/60-appliance.conf > {out}/sysctl 2>/dev/null || true
systemd-analyze verify /etc/systemd/system/appliance.service > {out}/verify 2>&1
test ! -e {stage}
"""
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
                          capture_output=True, text=True, timeout=600,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                               "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:] + (out / "verify").read_text() \
        if (out / "verify").exists() else proc.stderr[-4000:]
    from appliance import __version__

    import appliance.core

    # the image runs the core build the wheel carries (compiled where it was built with a compiler)
    assert (out / "version").read_text().strip().startswith(
        f"appliance {__version__} (core: {appliance.core.CORE}")
    assert (out / "target").read_text().strip() == "/opt/appliance/bin/appliance"
    assert (out / "verify").read_text() == ""  # the real unit, against the installed binary
    assert (out / "appliance.service").read_text() == UNIT.read_text()
    dropins = sorted(p.name for p in (out / "appliance.service.d").iterdir())
    assert dropins == (["10-cloud.conf", "gcp-capture.conf"] if cloud == "gcp" else ["10-cloud.conf"])
    assert f"APPLIANCE_BOOT_CLOUD={cloud}" in (out / "appliance.service.d" / "10-cloud.conf").read_text()
    assert (out / "etc-appliance").read_text() == ""  # configured by metadata, not baked
    assert ("rmem_max" in (out / "sysctl").read_text()) == (cloud == "aws")
    calls = (out / "calls.log").read_text().splitlines()
    assert "systemctl enable appliance.service" in calls
    assert any(c.startswith("apt-get install") and "python3-venv" in c for c in calls)
    assert "cloud-init clean --logs" in calls
