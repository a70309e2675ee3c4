"""`appliance replay`: capture files through the same pipeline as the runtime.

Inputs like Zeek and tcpdump: ``appliance replay FILE...``, ``appliance replay -r FILE``, and
``-`` for standard input; pcap or pcapng, plain or gzip-compressed (detected by content).

Exit codes (also in the README):
  0  every capture was read to its end
  1  runtime failure (e.g. the output cannot be written; Kafka did not take every pair)
  2  bad arguments
  3  a capture could not be read at all (missing, not a capture, unsupported link type);
     the other captures were still processed
  4  a capture was truncated; the pairs before the cut were written
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from appliance.cli.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, CliError
from appliance.cli.parser import byte_size, method_list, positive_float, positive_int


def register(sub: Any) -> None:
    p = sub.add_parser(
        "replay", help="replay pcap/pcapng captures and write the HTTP pairs",
        description="Replay captures (pcap or pcapng, plain or gzip-compressed; '-' reads "
                    "standard input) through decode, TCP reassembly and HTTP pairing; write "
                    "one JSON object per pair.",
        epilog="Exit status: 0 all read; 1 output or Kafka failure; 2 bad arguments; "
               "3 a capture could not be read; 4 a capture was truncated.")
    p.add_argument("captures", nargs="*", metavar="CAPTURE",
                   help="capture file(s); '-' = standard input")
    p.add_argument("-r", "--read", action="append", default=[], metavar="FILE",
                   help="capture to read, like tcpdump/zeek -r (repeatable; '-' = stdin)")
    p.add_argument("--jsonl", default="-", metavar="OUT",
                   help="write pairs as JSON Lines to OUT ('-' = stdout, the default)")
    p.add_argument("--max-body", type=byte_size, default=1 << 20, metavar="BYTES",
                   help="cap on each decoded body (default 1048576); longer bodies are cut "
                        "and the record's 'anomalies' says so")
    p.add_argument("--idle-timeout", type=positive_float, default=60.0, metavar="S",
                   help="flush connections idle for S seconds of capture time (default 60)")
    p.add_argument("--methods", type=method_list, metavar="M,M",
                   default=method_list(os.environ.get("APPLIANCE_HTTP_METHODS", "")),
                   help="methods beyond the built-in list whose request lines make a "
                        "connection HTTP (default $APPLIANCE_HTTP_METHODS)")
    p.add_argument("--max-outstanding", type=positive_int, metavar="N",
                   default=positive_int(os.environ.get("APPLIANCE_MAX_OUTSTANDING", "128")),
                   help="unanswered requests kept per connection; older ones go out "
                        "unanswered (default 128, or $APPLIANCE_MAX_OUTSTANDING)")
    p.add_argument("--source", default="PCAP", help="value of the record's 'source' key")
    p.add_argument("--account-id", default=os.environ.get("AKTO_ACCOUNT_ID", "1000000"),
                   help="value of 'akto_account_id' (default 1000000)")
    p.add_argument("--quiet", "-q", action="store_true", help="no summary on stderr")
    p.add_argument("--kafka", metavar="BOOTSTRAP",
                   help="produce the pairs to Kafka at BOOTSTRAP (host:port,...) instead of JSONL; "
                        "producer settings come from the environment (see README)")
    p.add_argument("--topic", help="Kafka topic (default akto.api.logs)")
    p.add_argument("--kafka-timeout", type=positive_float, default=30.0, metavar="S",
                   help="with --kafka: wait at most S seconds at the end for Kafka to take every "
                        "pair (default 30); what it did not take is kept and reported")
    p.set_defaults(func=cmd_replay, parser=p)


def inputs_of(args: argparse.Namespace) -> list[str]:
    inputs = [*args.read, *args.captures]
    if not inputs:
        args.parser.error("no capture given: appliance replay FILE... or -r FILE "
                          "('-' reads standard input)")
    if inputs.count("-") > 1:
        args.parser.error("'-' (standard input) can be read only once")
    return inputs


def cmd_replay(args: argparse.Namespace) -> int:
    inputs = inputs_of(args)
    # the pipeline, Kafka and rich load here, not at CLI start-up
    from appliance.core.pipeline import Pipeline, PipelineConfig
    from appliance.format.record import Formatter
    from appliance.replay import finish, replay_files, summary_line

    from appliance.core.http.parser import DEFAULT_METHODS

    pipeline = Pipeline(PipelineConfig(
        max_body=args.max_body, idle_timeout=args.idle_timeout,
        methods=DEFAULT_METHODS + tuple(m for m in args.methods if m not in DEFAULT_METHODS),
        max_outstanding=args.max_outstanding))
    formatter = Formatter(source=args.source, account_id=args.account_id,
                          max_body=args.max_body)
    sink: Any = _kafka_sink(args) if args.kafka else _jsonl_sink(args.jsonl)
    tty = not args.quiet and sys.stderr.isatty()
    started = time.perf_counter()
    progress, done = _progress_bar(inputs) if tty else (None, lambda: None)
    interrupted = False
    try:
        status = replay_files(inputs, pipeline, sink, progress, formatter=formatter)
    except KeyboardInterrupt:
        interrupted = True
        status = EXIT_INTERRUPTED
        finish(pipeline, formatter, sink)  # what was paired so far is still written
    finally:
        done()
    elapsed = time.perf_counter() - started
    if args.kafka:
        sink.close(args.kafka_timeout, tty, interrupted)
    else:
        try:
            sink.close()
        except OSError as exc:
            raise CliError(f"{args.jsonl}: cannot write: {exc.strerror}") from None
    if not args.quiet:
        print(summary_line(pipeline.stats(), elapsed, formatter.stats()), file=sys.stderr)
    if interrupted:
        raise KeyboardInterrupt
    return status


def _jsonl_sink(path: str) -> Any:
    from appliance.sinks.jsonl import JsonlSink

    try:
        return JsonlSink(path)
    except OSError as exc:
        raise CliError(str(exc), EXIT_ERROR) from None


def _kafka_sink(args: argparse.Namespace) -> Any:
    """A KafkaSink for replay, configured like `run` (environment + these flags), with a
    private spool of its own that is removed once Kafka has taken everything."""
    from appliance.cli.delivery import KafkaDelivery, private_spool
    from appliance.config import ConfigError, load_settings
    from appliance.sinks.kafka import KafkaSink

    try:
        settings = load_settings({"kafka_brokers": args.kafka, "kafka_topic": args.topic},
                                 flags={"kafka_brokers": "--kafka", "kafka_topic": "--topic"})
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    spool = private_spool()
    return KafkaDelivery(KafkaSink(settings, spool), spool, settings.kafka_brokers,
                         settings.kafka_topic)


def _progress_bar(inputs: list[str]) -> tuple[Callable[[str, Any], None], Callable[[], None]]:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    total = 0
    for p in inputs:
        try:
            total += os.path.getsize(p) if p != "-" and os.path.isfile(p) else 0
        except OSError:
            pass
    bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                   console=Console(stderr=True), transient=True)
    task = bar.add_task("replay", total=total or None)
    bar.start()
    state: dict[str, Any] = {"done": 0, "path": None, "last": 0}

    def update(path: str, cap: Any) -> None:
        if path != state["path"]:
            state["done"] += state["last"]
            state["path"] = path
        state["last"] = cap.position or 0
        bar.update(task, completed=state["done"] + state["last"],
                   description=os.path.basename(path) if path != "-" else "stdin")

    return update, bar.stop
