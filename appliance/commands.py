"""Runtime sub-commands: ``replay`` and ``demo``.

Exit codes (also in the README):
  0  every capture was read to its end
  1  runtime failure (e.g. the output cannot be written)
  2  bad arguments
  3  a capture could not be read at all (missing, not a capture, unsupported link type);
     the other captures were still processed
  4  a capture was truncated; the pairs before the cut were written
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

EXIT_INPUT = 3
EXIT_TRUNCATED = 4


def register(sub) -> None:
    p = sub.add_parser("replay", help="replay pcap/pcapng captures and write the HTTP pairs",
                       description="Replay capture files through decode, TCP reassembly and "
                                   "HTTP pairing; write one JSON object per pair.")
    p.add_argument("captures", nargs="+", metavar="CAPTURE", help="pcap or pcapng file(s)")
    p.add_argument("--jsonl", default="-", metavar="OUT",
                   help="write pairs as JSON Lines to OUT ('-' = stdout, the default)")
    p.add_argument("--max-body", type=_size, default=1 << 20, metavar="BYTES",
                   help="cap on each decoded body (default 1048576); longer bodies are cut "
                        "and the record's 'anomalies' says so")
    p.add_argument("--idle-timeout", type=float, default=60.0, metavar="S",
                   help="flush connections idle for S seconds of capture time (default 60)")
    p.add_argument("--source", default="PCAP", help="value of the record's 'source' key")
    p.add_argument("--account-id", default=os.environ.get("AKTO_ACCOUNT_ID", "1000000"),
                   help="value of 'akto_account_id' (default 1000000)")
    p.add_argument("--quiet", "-q", action="store_true", help="no summary on stderr")
    p.set_defaults(func=cmd_replay)

    p.add_argument("--kafka", metavar="BOOTSTRAP",
                   help="produce the pairs to Kafka at BOOTSTRAP (host:port,...) instead of JSONL; "
                        "topic and producer settings come from the environment (see README)")
    p.add_argument("--topic", help="Kafka topic (default akto.api.logs)")

    d = sub.add_parser("demo", help="run the appliance on embedded sample traffic through a "
                                    "local Kafka broker and print the pairs read back")
    d.add_argument("--offline", action="store_true",
                   help="skip Kafka: replay the sample capture and print the pairs")
    d.set_defaults(func=cmd_demo)

    from appliance.runcmd import register as register_run

    register_run(sub)


def _size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(text) from None
    if value <= 0:
        raise ValueError(text)
    return value


def replay_files(paths, pipeline, sink, progress=None, formatter=None):
    """Feed every capture through the pipeline, the formatter (Pair -> Akto record) and into
    the sink.  Returns the worst exit code."""
    from appliance.capture.file import CaptureError, CaptureFile, TruncatedCapture
    from appliance.format.record import Formatter

    if formatter is None:
        formatter = Formatter(max_body=pipeline.cfg.max_body)
    pipeline.formatter = formatter
    status = 0
    feed = pipeline.feed_batch
    for path in paths:
        try:
            cap = CaptureFile(path)
        except CaptureError as exc:
            print(f"appliance: error: {exc}", file=sys.stderr)
            status = max(status, EXIT_INPUT)
            continue
        try:
            for buf, meta in cap.batches():
                feed(cap.linktype, buf, meta)
                if pipeline.out:
                    sink.write(formatter.records(pipeline.take()))
                if progress is not None:
                    progress(path, cap)
        except TruncatedCapture as exc:
            print(f"appliance: warning: {exc}; pairs before the cut were kept", file=sys.stderr)
            status = max(status, EXIT_TRUNCATED)
    pipeline.close()
    sink.write(formatter.records(pipeline.take()))
    return status


def cmd_replay(args) -> int:
    from appliance.cli import CliError
    from appliance.core.pipeline import Pipeline, PipelineConfig
    from appliance.format.record import Formatter
    from appliance.sinks.jsonl import JsonlSink

    cfg = PipelineConfig(max_body=args.max_body, idle_timeout=args.idle_timeout)
    pipeline = Pipeline(cfg)
    formatter = Formatter(source=args.source, account_id=args.account_id, max_body=args.max_body)
    try:
        sink = _kafka_sink(args) if args.kafka else JsonlSink(args.jsonl)
    except OSError as exc:
        raise CliError(str(exc)) from None
    started = time.perf_counter()
    progress, done = _progress_bar(args)
    try:
        status = replay_files(args.captures, pipeline, sink, progress, formatter)
    finally:
        done()
        try:
            sink.close()
        except OSError as exc:
            raise CliError(f"{args.jsonl}: cannot write: {exc.strerror}") from None
    elapsed = time.perf_counter() - started
    if not args.quiet:
        print(summary_line(pipeline.stats(), elapsed, formatter.stats()), file=sys.stderr)
    return status


def _kafka_sink(args):
    """A KafkaSink for replay, configured like `run` (environment + these flags)."""
    from appliance.cli import CliError
    from appliance.config import ConfigError, load_settings
    from appliance.sinks.kafka import KafkaSink

    try:
        settings = load_settings({"kafka_brokers": args.kafka, "kafka_topic": args.topic})
    except ConfigError as exc:
        raise CliError(str(exc), 2) from None
    spool = os.path.join(tempfile.gettempdir(), f"appliance-replay-spool-{os.getpid()}")
    sink = KafkaSink(settings, spool)

    class Flushing:
        """replay is a batch job: wait for delivery at the end and fail loudly if not."""

        def write(self, records):
            sink.write(records)

        def close(self):
            sink.close(timeout=60)
            st = sink.stats()
            if st["spooled"] or st["dropped"]:
                raise CliError(f"Kafka at {args.kafka} did not take every pair: {st['delivered']} "
                               f"delivered, {st['spooled']} left in {spool}, {st['dropped']} dropped")
            if sink.spool.bytes == 0:
                import shutil

                shutil.rmtree(spool, ignore_errors=True)

    return Flushing()


def summary_line(s: dict, elapsed: float, f: dict | None = None) -> str:
    decode_errors = (f or {}).get("decode_errors", 0)
    rate = s["packets"] / elapsed if elapsed > 0 else 0.0
    mbit = s["bytes"] * 8 / elapsed / 1e6 if elapsed > 0 else 0.0
    return (f"replay: {s['packets']} packets, {s['bytes']} bytes, {s['connections']} connections, "
            f"{s['pairs']} pairs, {s['pending']} pending, {s['malformed']} malformed, "
            f"{s['gaps']} gaps, {decode_errors} decode errors, "
            f"{s['orphan_responses']} orphan responses; {elapsed:.2f}s, "
            f"{rate:,.0f} packets/s, {mbit:,.1f} Mbit/s")


def _progress_bar(args):
    if args.quiet or not sys.stderr.isatty():
        return None, lambda: None
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    total = 0
    for p in args.captures:
        try:
            total += os.path.getsize(p)
        except OSError:
            pass
    bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                   console=Console(stderr=True), transient=True)
    task = bar.add_task("replay", total=total or None)
    bar.start()
    state = {"done": 0, "path": None, "last": 0}

    def update(path, cap):
        if path != state["path"]:
            state["done"] += state["last"]
            state["path"] = path
        state["last"] = cap.offset or 0
        bar.update(task, completed=state["done"] + state["last"], description=os.path.basename(path))

    return update, bar.stop


def cmd_demo(args) -> int:
    """Run the embedded sample through the real runtime and a local broker."""
    if args.offline:
        return _demo_offline()
    from appliance.demo import run_demo

    return run_demo()


def _demo_offline() -> int:
    import json

    from appliance.core.pipeline import Pipeline
    from appliance.sinks.memory import ListSink
    from appliance.synth import sample_frames, write_pcap

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "sample.pcap")
        write_pcap(path, sample_frames())
        pipeline = Pipeline()
        sink = ListSink()
        replay_files([path], pipeline, sink)
    for rec in sink.records:
        print(json.dumps(rec, indent=2, ensure_ascii=False))
    print(summary_line(pipeline.stats(), 1.0).split(";")[0], file=sys.stderr)
    return 0
