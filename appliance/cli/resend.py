"""`appliance resend`: deliver to Kafka what a spool holds (e.g. what `replay --kafka` could
not deliver; it prints this command with the right arguments)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from appliance.cli.errors import EXIT_USAGE, CliError
from appliance.cli.parser import positive_float


def register(sub: Any) -> None:
    p = sub.add_parser("resend", help="send the pairs a spool holds to Kafka",
                       description="Send to Kafka, in order, the pairs a spool directory holds "
                                   "(what `appliance replay --kafka` left when Kafka did not "
                                   "take everything). Use it on a spool no running appliance "
                                   "uses. The directory is removed once everything is delivered.")
    p.add_argument("spool", metavar="SPOOL_DIR", help="the spool directory")
    p.add_argument("--kafka", metavar="BOOTSTRAP",
                   help="Kafka bootstrap servers (default: AKTO_KAFKA_BROKER_MAL)")
    p.add_argument("--topic", help="Kafka topic (default akto.api.logs)")
    p.add_argument("--kafka-timeout", type=positive_float, default=60.0, metavar="S",
                   help="wait at most S seconds for Kafka to take everything (default 60)")
    p.set_defaults(func=cmd_resend)


def cmd_resend(args: argparse.Namespace) -> int:
    if not os.path.isdir(args.spool):
        raise CliError(f"{args.spool}: no such spool directory", EXIT_USAGE)
    from appliance.cli.delivery import KafkaDelivery, say
    from appliance.config import ConfigError, load_settings
    from appliance.sinks.kafka import KafkaSink

    try:
        settings = load_settings({"kafka_brokers": args.kafka, "kafka_topic": args.topic},
                                 flags={"kafka_brokers": "--kafka", "kafka_topic": "--topic"})
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    if not settings.kafka_brokers:
        raise CliError("no Kafka brokers: use --kafka or set AKTO_KAFKA_BROKER_MAL", EXIT_USAGE)
    os.umask(0o077)
    sink = KafkaSink(settings, args.spool)
    total = sink.stats()["spooled"]
    delivery = KafkaDelivery(sink, args.spool, settings.kafka_brokers, settings.kafka_topic)
    delivery.close(args.kafka_timeout, sys.stderr.isatty())
    say(f"appliance: resent {total} pairs to {settings.kafka_topic} at {settings.kafka_brokers}")
    return 0
