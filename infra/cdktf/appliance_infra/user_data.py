"""What an instance of the appliance image is told at boot.

``render_boot_environment`` is what the stacks use: the runtime's variables as ``KEY='value'``
lines. The appliance image (deploy/packer) ships an enabled systemd unit running
``appliance boot``, which reads them from the instance metadata (EC2 user data through
IMDSv2; the GCE instance attribute ``appliance-config``), validates them and starts the runtime;
``appliance-<variable>`` instance tags / attributes override single variables (deploy/README.md).

``render_user_data`` is the older self-contained boot script (EC2 user data run by cloud-init,
GCE ``startup-script`` run by the guest agent) that writes the environment file and a unit
itself, for an image that has the ``appliance`` command but not the unit.
"""

from __future__ import annotations

from typing import Literal

from appliance_infra.config import ApplianceSettings

ENV_FILE = "/etc/appliance/appliance.env"
UNIT_NAME = "mirror-appliance.service"
UNIT_FILE = f"/etc/systemd/system/{UNIT_NAME}"

Mode = Literal["aws", "gcp"]


def appliance_environment(settings: ApplianceSettings, mode: Mode) -> dict[str, str]:
    """The variables the runtime reads (Akto's names where Akto has one)."""
    env = {
        "APPLIANCE_MODE": mode,
        "AKTO_KAFKA_BROKER_MAL": settings.kafka_bootstrap_servers,
        "APPLIANCE_KAFKA_TOPIC": settings.kafka_topic,
        "AKTO_TRAFFIC_BATCH_SIZE": str(settings.batch_size),
        "AKTO_TRAFFIC_BATCH_TIME_SECS": f"{settings.batch_time_secs:g}",
    }
    env.update(settings.extra_environment)
    return env


def render_env_file(env: dict[str, str]) -> str:
    # systemd EnvironmentFile: a single-quoted value is taken literally up to the next quote.
    # Config validation rejects quotes and newlines in values, so this cannot be broken out of.
    return "".join(f"{key}='{value}'\n" for key, value in env.items())


BOOT_ATTRIBUTE = "appliance-config"  # the GCE instance attribute `appliance boot` reads


def render_boot_environment(settings: ApplianceSettings, mode: Mode) -> str:
    """EC2 user data / the GCE ``appliance-config`` attribute, read by ``appliance boot``."""
    if mode not in ("aws", "gcp"):
        raise ValueError(f"mode must be 'aws' or 'gcp', got {mode!r}")
    header = (f"# mirror-appliance environment (rendered by infra/cdktf, mode={mode}), read by\n"
              f"# `appliance boot`; appliance-<variable> instance {'tags' if mode == 'aws' else 'attributes'}"
              f" override single variables\n")
    return header + render_env_file(appliance_environment(settings, mode))


def render_unit(appliance_bin: str, command: str) -> str:
    return f"""[Unit]
Description=Mirror appliance: mirrored traffic -> HTTP pairs -> Kafka
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
EnvironmentFile={ENV_FILE}
ExecStart={appliance_bin} {command}
Restart=always
RestartSec=2
DynamicUser=yes
StateDirectory=appliance
AmbientCapabilities=CAP_NET_RAW
CapabilityBoundingSet=CAP_NET_RAW
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
LimitNOFILE=1048576

[Install]
WantedBy=multi-user.target
"""


def render_user_data(settings: ApplianceSettings, mode: Mode, command: Literal["run", "boot"] = "run") -> str:
    """Shell script for EC2 user data / GCE startup-script. Idempotent: safe on every boot."""
    if mode not in ("aws", "gcp"):
        raise ValueError(f"mode must be 'aws' or 'gcp', got {mode!r}")
    if command not in ("run", "boot"):
        raise ValueError(f"command must be 'run' or 'boot', got {command!r}")
    env_file = render_env_file(appliance_environment(settings, mode))
    unit = render_unit(settings.appliance_bin, command)
    return f"""#!/bin/bash
# mirror-appliance bootstrap (rendered by infra/cdktf, mode={mode})
set -euo pipefail
umask 077
install -d -m 0755 /etc/appliance
cat > {ENV_FILE}.new <<'APPLIANCE_ENV'
{env_file}APPLIANCE_ENV
chmod 0600 {ENV_FILE}.new
mv -f {ENV_FILE}.new {ENV_FILE}
umask 022
cat > {UNIT_FILE} <<'APPLIANCE_UNIT'
{unit}APPLIANCE_UNIT
systemctl daemon-reload
systemctl enable {UNIT_NAME}
systemctl restart {UNIT_NAME}
"""
