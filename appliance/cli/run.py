"""`appliance run`: the runtime on live mirrored traffic."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from appliance.cli.errors import EXIT_USAGE, CliError
from appliance.cli.flags import add_settings_flags, settings_from_args


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run the appliance on live mirrored or traced traffic",
                       description="Capture mirrored traffic (aws: VXLAN on UDP 4789; gcp: all "
                                   "ports on a NIC) or trace this node's sockets and TLS "
                                   "libraries (ebpf), pair HTTP and produce every pair to Kafka.")
    add_arguments(p)
    p.set_defaults(func=cmd_run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_settings_flags(p)
    p.add_argument("--jsonl", metavar="OUT", help="write pairs as JSON Lines instead of Kafka "
                                                  "(worker N>0 writes OUT.N)")


def cmd_run(args: argparse.Namespace) -> int:
    # the runtime, pydantic and librdkafka load here, not at CLI start-up
    from appliance.logs import setup_logging
    from appliance.runtime.supervisor import StartError, Supervisor

    s = settings_from_args(args)
    if not s.kafka_brokers and not args.jsonl:
        raise CliError("no Kafka brokers: set AKTO_KAFKA_BROKER_MAL (or --kafka), "
                       "or use --jsonl to write pairs to a file", EXIT_USAGE)
    setup_logging(s.log_level, s.log_format)
    if not args.jsonl:
        check_kafka_settings(s)
    sup = Supervisor(s, jsonl=args.jsonl)
    try:
        sup.start()
    except StartError as exc:
        raise CliError(str(exc), exc.code) from None
    log_startup(s, len(sup.slots), args.jsonl)
    code: int = sup.run()
    if code == 0 and sys.stderr.isatty():
        t = sup.totals()
        print(f"appliance: stopped; {t['packets']} packets, {t['pairs']} pairs, "
              f"{t['pending']} pending", file=sys.stderr)
    return code


def check_kafka_settings(s: Any) -> None:
    """Let librdkafka check the settings once, here, rather than in every worker."""
    from confluent_kafka import KafkaException, Producer

    from appliance.sinks.kafka import LibrdkafkaLog

    try:
        Producer({**s.kafka_config(), "logger": LibrdkafkaLog()})
    except KafkaException as exc:
        raise CliError(f"invalid Kafka settings: {exc.args[0].str()}", EXIT_USAGE) from None


def log_startup(s: Any, workers: int, jsonl: str | None) -> None:
    """The one start-up line, shown at the default log level."""
    from appliance import __version__
    from appliance.config import ignored_variables
    from appliance.logs import startup

    output = f"JSONL {jsonl}" if jsonl else f"Kafka {s.kafka_brokers} topic {s.kafka_topic}"
    ignored = ignored_variables()
    note = f"; ignored Akto variables: {', '.join(ignored)} (see README)" if ignored else ""
    startup("appliance %s started: mode %s, %d workers, %s, http %s%s", __version__, s.mode,
            workers, output, s.http, note)
