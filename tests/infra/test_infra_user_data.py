"""The boot script: rendered text, and a real run of it against a copy-on-write /etc."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from infra_helpers import example

from appliance_infra.config import parse_config
from appliance_infra import HEALTH_PORT, VXLAN_PORT
from appliance_infra.user_data import (
    ENV_FILE,
    UNIT_FILE,
    appliance_environment,
    BOOT_ATTRIBUTE,
    render_boot_environment,
    render_env_file,
    render_unit,
    render_user_data,
)

DISCOVERY = '[{"key":{"eq":"host","ifAbsent":"reject"},"value":{"regex":"^api\\\\..*$"}}]'


@pytest.fixture
def settings():
    raw = example("aws.json")
    raw["appliance"]["extra_environment"] = {
        "AKTO_MODULE_DISCOVERY_CONFIG": DISCOVERY,
        "TRAFFIC_INACTIVITY_THRESHOLD": "30",
        "AKTO_ACCOUNT_ID": "true $HOME `id` \\n",  # a free-form value: taken literally
    }
    return parse_config(raw).appliance


def test_environment_uses_the_runtime_variable_names(settings):
    env = appliance_environment(settings, "aws")
    assert env["APPLIANCE_MODE"] == "aws"
    assert env["AKTO_KAFKA_BROKER_MAL"] == "b-1.msk.internal:9092,b-2.msk.internal:9092"
    assert env["APPLIANCE_KAFKA_TOPIC"] == "akto.api.logs"
    assert env["AKTO_TRAFFIC_BATCH_SIZE"] == "100"
    assert env["AKTO_TRAFFIC_BATCH_TIME_SECS"] == "10"
    assert env["AKTO_MODULE_DISCOVERY_CONFIG"] == DISCOVERY
    assert appliance_environment(settings, "gcp")["APPLIANCE_MODE"] == "gcp"


@pytest.mark.parametrize("mode", ["aws", "gcp"])
def test_the_runtime_reads_the_environment_file_as_intended(settings, tmp_path, mode):
    """Feed the written file to the real runtime's `appliance config --json`."""
    appliance = Path(sys.executable).with_name("appliance")
    if not appliance.exists():
        pytest.skip("the appliance console script is not installed")
    env_file = tmp_path / "appliance.env"
    env_file.write_text(render_env_file(appliance_environment(settings, mode)))
    proc = subprocess.run(
        ["bash", "-c", f'set -a; . "{env_file}"; set +a; exec "{appliance}" config --json'],
        env={"PATH": "/usr/bin:/bin"},  # nothing but the file
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    effective = json.loads(proc.stdout)
    assert effective["APPLIANCE_MODE"] == mode
    assert effective["AKTO_KAFKA_BROKER_MAL"] == settings.kafka_bootstrap_servers
    assert effective["APPLIANCE_KAFKA_TOPIC"] == settings.kafka_topic
    assert effective["AKTO_TRAFFIC_BATCH_SIZE"] == settings.batch_size
    assert effective["AKTO_TRAFFIC_BATCH_TIME_SECS"] == settings.batch_time_secs
    assert effective["AKTO_MODULE_DISCOVERY_CONFIG"] == DISCOVERY
    # The ports the load balancers and security rules are built around are the runtime's.
    assert effective["APPLIANCE_HTTP"] == f"0.0.0.0:{HEALTH_PORT}"
    assert effective["APPLIANCE_LISTEN"] == f"0.0.0.0:{VXLAN_PORT}"
    # The unit's StateDirectory is where the runtime keeps its spool and session map.
    assert "StateDirectory=appliance\n" in render_unit(settings.appliance_bin, "run")
    assert effective["APPLIANCE_SPOOL_DIR"].startswith("/var/lib/appliance/")
    assert effective["APPLIANCE_SESSION_MAP"].startswith("/var/lib/appliance/")


@pytest.mark.parametrize("mode", ["aws", "gcp"])
def test_boot_environment_is_what_appliance_boot_reads(settings, mode):
    """The stacks' user data / appliance-config attribute, through `appliance boot`'s own parser
    and the runtime's validation."""
    from appliance.cloudmeta.envblock import parse_user_data
    from appliance.config import load_settings

    text = render_boot_environment(settings, mode)
    assert not text.startswith("#!")  # data for `appliance boot`, not a script
    env, note = parse_user_data(text.encode(), "user data")
    assert note is None
    assert env == appliance_environment(settings, mode)
    assert load_settings(env=env).mode == mode
    assert BOOT_ATTRIBUTE == "appliance-config"
    with pytest.raises(ValueError, match="mode must be 'aws' or 'gcp'"):
        render_boot_environment(settings, "azure")  # type: ignore[arg-type]


def test_script_starts_appliance_run_and_can_switch_to_boot(settings):
    script = render_user_data(settings, "aws")
    assert script.startswith("#!/bin/bash\n")
    assert "ExecStart=/usr/local/bin/appliance run\n" in script
    assert "systemctl enable mirror-appliance.service\n" in script
    boot = render_user_data(settings, "aws", command="boot")
    assert "ExecStart=/usr/local/bin/appliance boot\n" in boot
    with pytest.raises(ValueError, match="mode must be 'aws' or 'gcp'"):
        render_user_data(settings, "azure")  # type: ignore[arg-type]


def test_script_is_valid_bash(settings, tmp_path):
    path = tmp_path / "user-data.sh"
    path.write_text(render_user_data(settings, "gcp"))
    subprocess.run(["bash", "-n", str(path)], check=True)


def test_unit_passes_systemd_analyze_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / "mirror-appliance.service"
    unit.write_text(render_unit("/bin/true", "run"))  # an executable that exists here
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def run_in_scratch_etc(script: str, tmp_path) -> dict:
    """Run the boot script as root with /etc overlaid by a tmpfs (a private mount namespace), a
    stub systemctl on PATH, then copy what it wrote out for inspection. The host is untouched."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a private mount namespace")
    bin_dir, out = tmp_path / "bin", tmp_path / "out"
    bin_dir.mkdir()
    out.mkdir()
    (bin_dir / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> {out}/systemctl.log\n')
    (bin_dir / "systemctl").chmod(0o755)
    (tmp_path / "user-data.sh").write_text(script)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    wrapper = f"""set -e
mount -t tmpfs tmpfs {scratch}
mkdir {scratch}/upper {scratch}/work
mount -t overlay overlay -o lowerdir=/etc,upperdir={scratch}/upper,workdir={scratch}/work /etc
PATH={bin_dir}:$PATH bash {tmp_path}/user-data.sh
cp {ENV_FILE} {out}/appliance.env
cp {UNIT_FILE} {out}/unit
stat -c %a {ENV_FILE} > {out}/env-mode
ls -A /etc/appliance > {out}/etc-appliance
set -a; . {ENV_FILE}; set +a
env -0 > {out}/sourced-env
"""
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", wrapper],
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        timeout=60,
    )
    if proc.returncode != 0 and "mount" in proc.stderr and "permission denied" in proc.stderr.lower():
        pytest.skip(f"cannot mount in this sandbox: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    sourced = dict(item.split("=", 1) for item in (out / "sourced-env").read_text().split("\0") if "=" in item)
    return {
        "env_text": (out / "appliance.env").read_text(),
        "unit": (out / "unit").read_text(),
        "env_mode": (out / "env-mode").read_text().strip(),
        "etc_appliance": (out / "etc-appliance").read_text().split(),
        "systemctl": (out / "systemctl.log").read_text().splitlines(),
        "sourced": sourced,
    }


def test_boot_script_really_writes_config_and_starts_the_service(settings, tmp_path):
    result = run_in_scratch_etc(render_user_data(settings, "aws"), tmp_path)
    # Values come back byte-for-byte, including JSON quotes, $, backticks and backslashes.
    for key, value in appliance_environment(settings, "aws").items():
        assert result["sourced"][key] == value, key
    assert result["env_mode"] == "600"  # may hold broker credentials via extra_environment
    assert result["etc_appliance"] == ["appliance.env"]  # no temp file left behind
    assert result["unit"] == render_unit(settings.appliance_bin, "run")
    assert result["systemctl"] == ["daemon-reload", "enable mirror-appliance.service", "restart mirror-appliance.service"]


def test_boot_script_is_idempotent(settings, tmp_path):
    """GCE runs startup-script on every boot: running twice gives the same files."""
    script = render_user_data(settings, "gcp")
    result = run_in_scratch_etc(script + "\n" + script.split("\n", 1)[1], tmp_path)
    assert result["sourced"]["APPLIANCE_MODE"] == "gcp"
    assert result["etc_appliance"] == ["appliance.env"]
    assert result["systemctl"].count("restart mirror-appliance.service") == 2
