"""Waiting for Kafka in the batch commands (`replay --kafka`, `resend`).

A batch job ends by waiting, up to a bound, for Kafka to acknowledge every pair. Nothing is
silent: the moment the broker does not answer, one line says so; while waiting, a terminal
shows a live count and other outputs get a line every 10 s; what Kafka did not take stays in
a private spool (directory 0700, files 0600), reported with the exact command that sends it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from appliance.cli.errors import EXIT_ERROR, EXIT_INTERRUPTED, CliError

PRIVATE_UMASK = 0o077


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class KafkaDelivery:
    """A KafkaSink for one batch job: counts what it was given, warns once when the broker
    does not answer, waits for delivery at the end and reports what is left."""

    DOWN_NOTICE_SECS = 2.0  # a live broker answers well within this

    def __init__(self, sink: Any, spool: str, brokers: str, topic: str,
                 out: Callable[[str], None] = say):
        self.sink = sink
        self.spool = spool
        self.brokers = brokers
        self.topic = topic
        self.say = out
        self.written = 0
        self.warned = False
        self.down_since: float | None = None

    def write(self, records: list[dict[str, Any]]) -> None:
        self.sink.write(records)
        self.written += len(records)
        self._notice()

    def _notice(self) -> None:
        if self.warned:
            return
        if self.sink.stats()["state"] != "down":
            self.down_since = None
            return
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
        elif now - self.down_since >= self.DOWN_NOTICE_SECS:
            self.warned = True
            self.say(f"appliance: warning: Kafka at {self.brokers} is not answering; the pairs "
                     f"wait in {self.spool} while it is retried")

    @contextmanager
    def _showing(self, timeout: float, tty: bool) -> Iterator[None]:
        """While the sink delivers: a live line on a terminal, a line every 10 s elsewhere."""
        stop = threading.Event()
        deadline = time.monotonic() + timeout
        status = None
        if tty:
            from rich.console import Console

            status = Console(stderr=True).status("waiting for Kafka")
            status.start()

        def show() -> None:
            next_line = time.monotonic() + 10.0
            while not stop.wait(0.25):
                self._notice()
                st = self.sink.stats()
                now = time.monotonic()
                line = (f"waiting for Kafka at {self.brokers} ({st['state']}): {st['delivered']} "
                        f"delivered, {st['queued'] + st['spooled']} waiting; up to "
                        f"{max(0.0, deadline - now):.0f}s more (Ctrl-C stops waiting, the pairs "
                        f"stay in the spool)")
                if status is not None:
                    status.update(line)
                elif now >= next_line:
                    self.say(f"appliance: {line}")
                    next_line = now + 10.0

        ticker = threading.Thread(target=show, name="kafka-progress", daemon=True)
        ticker.start()
        try:
            yield
        finally:
            stop.set()
            ticker.join()
            if status is not None:
                status.stop()

    def _wait(self, timeout: float) -> float:
        """Wait up to `timeout` for Kafka to take everything, spool included (a broker that
        is down may come back within it); the time left."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sink.poll()
            st = self.sink.stats()
            if not st["queued"] and not st["spooled"]:
                break
            time.sleep(0.05)
        return max(0.5, deadline - time.monotonic())

    def close(self, timeout: float, tty: bool, interrupted: bool = False) -> None:
        """Deliver within `timeout` (unless interrupted), remove the spool if it is empty, or
        raise CliError naming what is left and the command that sends it."""
        try:
            if interrupted:
                self.sink.close(timeout=1.0)
            else:
                with self._showing(timeout, tty):
                    left = self._wait(timeout)
                    self.sink.close(timeout=left)  # what Kafka does not take is spooled
        except KeyboardInterrupt:
            interrupted = True
            self.sink.close(timeout=1.0)
        st = self.sink.stats()
        if not st["spooled"] and not st["queued"] and not st["dropped"]:
            shutil.rmtree(self.spool, ignore_errors=True)
            if interrupted:
                raise KeyboardInterrupt
            return
        command = resend_command(self.spool, self.brokers, self.topic)
        raise CliError(
            f"Kafka at {self.brokers} did not take every pair: {st['delivered']} delivered, "
            f"{st['spooled']} left in {self.spool}, {st['dropped']} dropped; "
            f"send them with: {command}", EXIT_INTERRUPTED if interrupted else EXIT_ERROR)


def resend_command(spool: str, brokers: str, topic: str) -> str:
    return " ".join(shlex.quote(a) for a in
                    ["appliance", "resend", spool, "--kafka", brokers, "--topic", topic])


def private_spool() -> str:
    """A new spool directory only this user can read (it holds whole requests: headers,
    cookies, tokens); files created from here on are private too."""
    import tempfile

    os.umask(PRIVATE_UMASK)
    return tempfile.mkdtemp(prefix="appliance-replay-spool-")
