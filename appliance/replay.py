"""Replay: capture files through the pipeline into a sink (what `appliance replay` and
`appliance demo --offline` run, and what the corpus conformance tests call).

``feed_capture`` is the one place where replay drives the pipeline: batches of packets in,
finished pairs out through the formatter (Akto's filters, then the Akto record) into the
sink. ``replay_files`` walks the inputs, reports the ones that cannot be read, and returns
the worst outcome as the command's exit status.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from appliance.capture.file import CaptureError, CaptureFile, TruncatedCapture
from appliance.core import tune_gc
from appliance.format.record import Formatter

OK = 0
INPUT_ERROR = 3  # a capture could not be read at all (the others were still processed)
TRUNCATED = 4  # a capture was cut; the pairs before the cut were written


class Sink(Protocol):
    def write(self, records: list[dict[str, Any]]) -> None: ...


Progress = Callable[[str, CaptureFile], None]


def _say(line: str) -> None:
    print(line, file=sys.stderr)


def feed_capture(cap: CaptureFile, pipeline: Any, formatter: Formatter, sink: Sink,
                 progress: Progress | None = None) -> None:
    """Every packet of `cap` into the pipeline; finished pairs, formatted, into the sink."""
    feed = pipeline.feed_batch
    for buf, meta in cap.batches():
        feed(cap.linktype, buf, meta)
        if pipeline.out:
            sink.write(formatter.records(pipeline.take()))
        if progress is not None:
            progress(cap.path, cap)


def finish(pipeline: Any, formatter: Formatter, sink: Sink) -> None:
    """End of input: flush every connection (pending requests included) into the sink."""
    pipeline.close()
    sink.write(formatter.records(pipeline.take()))


def replay_files(paths: Sequence[str], pipeline: Any, sink: Sink,
                 progress: Progress | None = None, say: Callable[[str], None] = _say,
                 formatter: Formatter | None = None) -> int:
    """Feed every capture through the pipeline into the sink, as one stream (a rotated
    capture continues across files).  Returns OK, INPUT_ERROR or TRUNCATED (the worst)."""
    if formatter is None:
        formatter = Formatter(max_body=pipeline.cfg.max_body)
    tune_gc()  # this process runs the core: the cyclic GC need not run so often
    status = OK
    for path in paths:
        try:
            cap = CaptureFile(path)
        except CaptureError as exc:
            say(f"appliance: error: {exc}")
            status = max(status, INPUT_ERROR)
            continue
        try:
            feed_capture(cap, pipeline, formatter, sink, progress)
        except TruncatedCapture as exc:
            say(f"appliance: warning: {exc}; pairs before the cut were kept")
            status = max(status, TRUNCATED)
        finally:
            cap.close()
    finish(pipeline, formatter, sink)
    return status


def summary_line(s: dict[str, Any], elapsed: float, f: dict[str, Any] | None = None) -> str:
    """The one-line summary; ``f`` is the formatter's figures (decode errors)."""
    decode_errors = (f or {}).get("decode_errors", 0)
    rate = s["packets"] / elapsed if elapsed > 0 else 0.0
    mbit = s["bytes"] * 8 / elapsed / 1e6 if elapsed > 0 else 0.0
    return (f"replay: {s['packets']} packets, {s['bytes']} bytes, {s['connections']} connections, "
            f"{s['pairs']} pairs, {s['pending']} pending, {s['malformed']} malformed, "
            f"{s['gaps']} gaps, {decode_errors} decode errors, "
            f"{s['orphan_responses']} orphan responses; {elapsed:.2f}s, "
            f"{rate:,.0f} packets/s, {mbit:,.1f} Mbit/s")
