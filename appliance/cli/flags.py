"""The flags that set runtime settings: shared by `run`, `config` and `boot -- ...`.

Each flag overrides the environment variable of its settings field (appliance/config.py);
values are validated by the settings, so an error names the variable and the flag:
``invalid APPLIANCE_WORKERS (--workers) = 'x': Input should be a valid integer``.
"""

from __future__ import annotations

import argparse
from typing import Any

from appliance.cli.errors import EXIT_USAGE, CliError
from appliance.modes import MODES

# (flag, settings field, argparse keywords); a new setting with a flag is one row here
SETTINGS_FLAGS: list[tuple[str, str, dict[str, Any]]] = [
    ("--mode", "mode", {}),  # choices and help from appliance/modes.py
    ("--listen", "listen", {"metavar": "HOST:PORT", "help": "VXLAN UDP address (aws mode, default 0.0.0.0:4789)"}),
    ("--geneve", "geneve", {"action": "store_const", "const": True, "help": "also receive GENEVE on UDP 6081"}),
    ("--interface", "interface", {"help": "NIC to capture (gcp mode; default: the default route's)"}),
    ("--capture-all", "capture_all", {"action": "store_const", "const": True, "help": "capture every interface"}),
    ("--pid", "ebpf_pids", {"metavar": "PID", "action": "append", "help": "ebpf mode: trace only this process and its children (repeatable)"}),
    ("--workers", "workers", {"metavar": "N", "help": "worker processes (default: CPU count)"}),
    ("--kafka", "kafka_brokers", {"metavar": "BOOTSTRAP", "help": "Kafka bootstrap servers"}),
    ("--topic", "kafka_topic", {"help": "Kafka topic (default akto.api.logs)"}),
    ("--batch-size", "batch_size", {"metavar": "N", "help": "producer batch size in messages"}),
    ("--batch-time", "batch_time_secs", {"metavar": "S", "help": "producer linger in seconds"}),
    ("--spool-dir", "spool_dir", {"metavar": "DIR", "help": "on-disk spool for undeliverable pairs"}),
    ("--spool-max-mb", "spool_max_mb", {"metavar": "MB", "help": "spool size cap in MB"}),
    ("--http", "http", {"metavar": "HOST:PORT", "help": "health/metrics/status address (default 0.0.0.0:8000)"}),
    ("--inactivity", "inactivity_secs", {"metavar": "S", "help": "idle connection flush, seconds"}),
    ("--max-conn", "max_active_conn", {"metavar": "N", "help": "connections kept in memory"}),
    ("--buffer-mb", "buffer_mb", {"metavar": "MB", "help": "reassembly buffer cap, MB"}),
    ("--mem-restart-mb", "mem_restart_mb", {"metavar": "MB", "help": "process memory ceiling, MB (0 = none)"}),
    ("--ignore-ports", "ignore_ports", {"metavar": "P,P", "help": "TCP ports not to reassemble"}),
    ("--log-level", "log_level", {"help": "DEBUG, INFO, WARN, ERROR or OFF"}),
    ("--log-format", "log_format", {"help": "text or json (one JSON object per line)"}),
]
FLAGS: dict[str, str] = {field: flag for flag, field, _ in SETTINGS_FLAGS}


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (each overrides its environment variable)")
    for flag, field, kw in SETTINGS_FLAGS:
        if field == "mode":
            kw = {**kw, "choices": list(MODES),
                  "help": "; ".join(f"{m}: {what}" for m, what in MODES.items())}
        group.add_argument(flag, dest=field, default=None, **kw)


def settings_from_args(args: argparse.Namespace) -> Any:
    """The validated settings: environment, overridden by the flags given."""
    from appliance.config import ConfigError, load_settings  # pydantic: not at CLI start-up

    overrides = {field: getattr(args, field, None) for field in FLAGS}
    try:
        return load_settings(overrides, flags=FLAGS)
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
