"""`appliance run` and `appliance config`."""

from __future__ import annotations

import json
import sys

from appliance.config import FLAG_NAMES, ConfigError, load_settings

# flag -> settings field; every flag overrides the environment variable of its field
RUN_FLAGS = [
    ("--mode", "mode", {"choices": ["aws", "gcp"], "help": "aws: VXLAN on UDP; gcp: capture a NIC"}),
    ("--listen", "listen", {"metavar": "HOST:PORT", "help": "VXLAN UDP address (aws mode, default 0.0.0.0:4789)"}),
    ("--geneve", "geneve", {"action": "store_const", "const": True, "help": "also receive GENEVE on UDP 6081"}),
    ("--interface", "interface", {"help": "NIC to capture (gcp mode; default: the default route's)"}),
    ("--capture-all", "capture_all", {"action": "store_const", "const": True, "help": "capture every interface"}),
    ("--workers", "workers", {"type": int, "help": "worker processes (default: CPU count)"}),
    ("--kafka", "kafka_brokers", {"metavar": "BOOTSTRAP", "help": "Kafka bootstrap servers"}),
    ("--topic", "kafka_topic", {"help": "Kafka topic (default akto.api.logs)"}),
    ("--batch-size", "batch_size", {"help": "producer batch size in messages"}),
    ("--batch-time", "batch_time_secs", {"help": "producer linger in seconds"}),
    ("--spool-dir", "spool_dir", {"help": "on-disk spool for undeliverable pairs"}),
    ("--spool-max-mb", "spool_max_mb", {"help": "spool size cap in MB"}),
    ("--http", "http", {"metavar": "HOST:PORT", "help": "health/metrics/status address (default 0.0.0.0:8000)"}),
    ("--inactivity", "inactivity_secs", {"help": "idle connection flush, seconds"}),
    ("--max-conn", "max_active_conn", {"help": "connections kept in memory"}),
    ("--buffer-mb", "buffer_mb", {"help": "reassembly buffer cap, MB"}),
    ("--mem-restart-mb", "mem_restart_mb", {"help": "process memory ceiling, MB (0 = none)"}),
    ("--ignore-ports", "ignore_ports", {"metavar": "P,P", "help": "TCP ports not to reassemble"}),
    ("--log-level", "log_level", {"help": "DEBUG, INFO, WARN, ERROR or OFF"}),
]
for _flag, _field, _ in RUN_FLAGS:
    FLAG_NAMES[_field] = _flag


def register(sub) -> None:
    p = sub.add_parser("run", help="run the appliance on live mirrored traffic",
                       description="Capture mirrored traffic (aws: VXLAN on UDP 4789; gcp: all "
                                   "ports on a NIC), pair HTTP and produce every pair to Kafka.")
    for flag, field, kw in RUN_FLAGS:
        p.add_argument(flag, dest=field, default=None, **kw)
    p.add_argument("--jsonl", metavar="OUT", help="write pairs as JSON Lines instead of Kafka "
                                                  "(worker N>0 writes OUT.N)")
    p.set_defaults(func=cmd_run)

    c = sub.add_parser("config", help="print the effective configuration (secrets masked)")
    for flag, field, kw in RUN_FLAGS:
        c.add_argument(flag, dest=field, default=None, **kw)
    c.add_argument("--json", action="store_true", help="as JSON")
    c.set_defaults(func=cmd_config)


def _settings(args):
    from appliance.cli import CliError

    overrides = {field: getattr(args, field, None) for _, field, _ in RUN_FLAGS}
    try:
        return load_settings(overrides)
    except ConfigError as exc:
        raise CliError(str(exc), 2) from None


def cmd_config(args) -> int:
    s = _settings(args)
    shown = s.display()
    if args.json:
        print(json.dumps(shown, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table("variable", "value", title="effective configuration")
    for k, v in shown.items():
        t.add_row(k, str(v))
    Console().print(t)
    return 0


def cmd_run(args) -> int:
    from appliance.cli import CliError
    from appliance.logs import setup_logging
    from appliance.runtime.supervisor import StartError, Supervisor

    s = _settings(args)
    if not s.kafka_brokers and not args.jsonl:
        raise CliError("no Kafka brokers: set AKTO_KAFKA_BROKER_MAL (or --kafka), "
                       "or use --jsonl to write pairs to a file", 2)
    setup_logging(s.log_level)
    if not args.jsonl:
        # let librdkafka check the settings once, here, rather than in every worker
        from confluent_kafka import KafkaException, Producer

        from appliance.sinks.kafka import LibrdkafkaLog

        try:
            Producer({**s.kafka_config(), "logger": LibrdkafkaLog()})
        except KafkaException as exc:
            raise CliError(f"invalid Kafka settings: {exc.args[0].str()}", 2) from None
    sup = Supervisor(s, jsonl=args.jsonl)
    try:
        sup.start()
    except StartError as exc:
        raise CliError(str(exc), exc.code) from None
    code = sup.run()
    if code == 0 and sys.stderr.isatty():
        t = sup.totals()
        print(f"appliance: stopped; {t['packets']} packets, {t['pairs']} pairs, "
              f"{t['pending']} pending", file=sys.stderr)
    return code
