"""One worker process: capture source -> sans-IO pipeline -> records -> sink.

The loop waits on the source's descriptors (and a signal wake-up pipe), feeds what is
there to the pipeline in bounded amounts, hands finished pair records to the sink, keeps
memory inside its budget (``memory.MemoryGuard``) and, once a second, sweeps idle
connections on the wall clock (when no packets arrive the pipeline sees no time pass) and
reports to the supervisor.

Stop (SIGTERM from the supervisor; signal handlers only set flags):
  1. stop reading at once: what the kernel still holds is not ours yet; it is counted
     (``unread``) and dropped, and the capture is closed;
  2. flush every connection (pending requests become pairs with ``is_pending`` true) and
     hand every record to the sink;
  3. close the sink within the stop deadline (``APPLIANCE_STOP_TIMEOUT``): deliver what it
     can, spool the rest, fsync;
  4. a final report with the counts, and exit 0 only when no pair was lost.

Supervisor death (``PR_SET_PDEATHSIG`` delivers SIGUSR1; the loop also compares its parent
pid, for the race at fork time; a report to a closed socket says the same): close the
capture first (the port is free at once), flush every connection straight to the spool and
exit, without waiting on Kafka or on anyone reading reports.

Worker processes are forked from the supervisor (``spawn``) and leave with ``os._exit``:
no inherited descriptor beyond their own, no exit-time finalizer that could wait on a
supervisor that is gone.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import select
import signal
import socket
import sys
import time

from appliance.core import tune_gc
from appliance.core.decode import LINKTYPE_GENEVE_PAYLOAD, LINKTYPE_VXLAN_PAYLOAD
from appliance.core.pipeline import Pipeline, PipelineConfig
from appliance.format.record import Formatter
from appliance.runtime import channel
from appliance.runtime.memory import MemoryGuard, kafka_budget, rss_bytes

log = logging.getLogger("appliance.worker")

UDP_LINKTYPES = {"vxlan": LINKTYPE_VXLAN_PAYLOAD, "geneve": LINKTYPE_GENEVE_PAYLOAD}

EXIT_OK = 0
EXIT_CRASH = 1
EXIT_CONFIG = 2
EXIT_LOSS = 3
FINAL_RESERVE = 1.5  # seconds of the stop deadline kept for purge, fsync and the report
WRITE_SLICE = 2000  # records per sink.write at the stop
PR_SET_PDEATHSIG = 1
SIG_ORPHAN = signal.SIGUSR1  # our parent died (PR_SET_PDEATHSIG)
SIG_SHED = signal.SIGUSR2  # the supervisor is over the ceiling: give back everything
HANDLED = {signal.SIGTERM, signal.SIGINT, SIG_ORPHAN, SIG_SHED, signal.SIGCHLD}

__all__ = ["UDP_LINKTYPES", "rss_bytes", "spawn", "Worker", "pipeline_config"]


def pipeline_config(s, state_budget: int = 0) -> PipelineConfig:
    buffer_limit = max(1 << 20, (s.buffer_mb << 20) // s.worker_count)
    if state_budget:
        buffer_limit = max(1 << 20, min(buffer_limit, state_budget))
    return PipelineConfig(
        max_body=s.max_body, idle_timeout=s.inactivity_secs,
        max_connections=max(1, s.max_active_conn // s.worker_count),
        buffer_limit=buffer_limit, vxlan_port=s.listen_addr[1], geneve_port=s.geneve_port,
        ignored_ports=s.ignored_ports, methods=s.methods, max_outstanding=s.max_outstanding)


def formatter(s) -> Formatter:
    """The stage between the core and the sink: Akto's filters, then the Akto record."""
    from appliance.format.filters import PairFilter

    return Formatter(source="MIRRORING", account_id=s.account_id, max_body=s.max_body,
                     pair_filter=PairFilter.from_settings(s))


def worker_stats(p: Pipeline, f: Formatter) -> dict:
    """The pipeline's figures with the formatting stage's drops and anomalies merged in."""
    st = p.stats()
    fs = f.stats()
    drops = dict(st["drops"])
    for reason, n in fs["drops"].items():
        drops[reason] = drops.get(reason, 0) + n
    st["drops"] = drops
    st["anomalies"] = fs["anomalies"]
    st["decode_errors"] = fs["decode_errors"]
    return st


def make_sink(s, worker_id: int, jsonl: str | None, queue_bytes: int | None = None,
              adopt: tuple[str, ...] = ()):
    if jsonl:
        from appliance.sinks.jsonl import JsonlWriter

        return JsonlWriter(jsonl if worker_id == 0 or jsonl == "-" else f"{jsonl}.{worker_id}")
    from appliance.sinks.kafka import KafkaSink

    # a worker of an earlier appliance may still hold this spool for a moment (it flushes
    # and exits within a second of its supervisor's death): wait for it
    return KafkaSink(s, os.path.join(s.spool_dir, f"worker-{worker_id}"), queue_bytes=queue_bytes,
                     adopt=adopt, lock_timeout=5.0, drain_at_close=False)


class Flags:
    """Set by signal handlers, read by the loop; nothing else happens in a handler."""

    stop = 0.0  # monotonic time the stop was asked for
    orphaned = False
    shed_all = False


class Worker:
    def __init__(self, settings, worker_id: int, spec, sender: channel.Sender, *,
                 jsonl: str | None = None, allowance: int = 0, parent: int = 0,
                 adopt: tuple[str, ...] = (), flags: type[Flags] = Flags):
        self.s = settings
        self.id = worker_id
        self.spec = spec
        self.sender = sender
        self.parent = parent
        self.flags = flags
        self.stop_timeout = float(getattr(settings, "stop_timeout", 30.0))
        self.sink = make_sink(settings, worker_id, jsonl, kafka_budget(allowance, rss_bytes()),
                              adopt)
        self.source = spec.open()
        tune_gc()  # this process runs the core: the cyclic GC need not run so often
        self.pipeline = spec.front_end(pipeline_config(settings))
        self.formatter = formatter(settings)
        self.errors_logged: set[str] = set()
        idle = rss_bytes()
        self.guard = MemoryGuard(allowance, idle)
        if self.guard.budget:  # the core's byte budget within the worker's allowance
            self.pipeline = self.spec.front_end(pipeline_config(settings, self.guard.budget))
        self.idle = idle
        self.emitted = 0
        self.started = time.time()

    # -- the loop ---------------------------------------------------------------------------
    def run(self, wake_fd: int | None = None) -> int:
        flags = self.flags
        source = self.source
        poller = select.poll()
        for fd in source.fds():
            poller.register(fd, select.POLLIN)
        if wake_fd is not None:
            poller.register(wake_fd, select.POLLIN)
        next_tick = time.monotonic() + 1.0
        while not flags.stop and not flags.orphaned:
            if self.parent and os.getppid() != self.parent:
                flags.orphaned = True
                break
            poller.poll(200)
            if wake_fd is not None:
                _drain_fd(wake_fd)
            source.read(self.pipeline)
            self._hand_over()
            now = time.monotonic()
            if flags.shed_all:
                flags.shed_all = False
                self.guard.shed_all(self.pipeline, self._hand_over)
            else:
                self.guard.check(self.pipeline, self._hand_over, now)
            if now >= next_tick:
                next_tick = now + 1.0
                self._tick()
        return self.finish()

    def _records(self) -> list[dict]:
        """Finished pairs as Akto records: the one place the pipeline's output is taken."""
        return self.formatter.records(self.pipeline.take())

    def _hand_over(self) -> None:
        records = self._records()
        if records:
            self.emitted += len(records)
            self.sink.write(records)
        else:
            self.sink.poll()

    def _tick(self) -> None:
        p = self.pipeline
        p.sweep(max(time.time(), p.last_ts))
        self._hand_over()
        self._log_flow_errors()
        self.report()

    def _log_flow_errors(self) -> None:
        """A connection whose handling raised was dropped by the core (``flow_errors``);
        log the first traceback of each kind of exception, once."""
        for name, trace in self.pipeline.errors.items():
            if name not in self.errors_logged:
                self.errors_logged.add(name)
                log.error("worker %d: a connection was dropped after an error in the core "
                          "(counted as flow_errors; later ones of this kind are only "
                          "counted):\n%s", self.id, trace.rstrip())

    # -- reports ----------------------------------------------------------------------------
    def figures(self) -> dict:
        p = self.pipeline
        return {
            "id": self.id, "pid": os.getpid(), "time": time.time(),
            "rss_bytes": rss_bytes(), "buffer_bytes": p.buffered(),
            "stats": worker_stats(p, self.formatter),
            "vni": {str(k): v for k, v in p.vni_figures().items()},
            "kafka": self.sink.stats(), "memory": self.guard.figures(), "emitted": self.emitted,
        }

    def report(self, **extra) -> None:
        try:
            self.sender.send({**self.figures(), **extra})
        except channel.PeerGone:
            self.flags.orphaned = True

    # -- the stop ---------------------------------------------------------------------------
    def finish(self) -> int:
        """Stop reading, flush every connection, close the sink; the exit code."""
        orphaned = self.flags.orphaned
        began = self.flags.stop or time.monotonic()
        unread = 0
        if not orphaned:
            unread = self.source.discard(0.1)
        self.source.close()
        p = self.pipeline
        p.close()
        records = self._records()
        self.emitted += len(records)
        for i in range(0, len(records), WRITE_SLICE):
            self.sink.write(records[i:i + WRITE_SLICE])
        del records
        timeout = 0.0 if orphaned else max(0.0, began + self.stop_timeout - FINAL_RESERVE
                                           - time.monotonic())
        self.sink.close(timeout)
        k = self.sink.stats()
        lost = k["dropped"] + k["queued"]
        if orphaned:
            log.warning("worker %d: supervisor gone; %d pairs flushed to the spool, exiting",
                        self.id, k["spooled"])
        else:
            final = {**self.figures(), "final": True, "unread": unread, "lost": lost,
                     "stop_secs": time.monotonic() - began}
            try:
                self.sender.send(final, wait=1.0)
            except channel.PeerGone:
                pass
        return EXIT_LOSS if lost else EXIT_OK

    def emergency_close(self) -> None:
        """After a crash: flush what we still can to the sink, briefly."""
        try:
            self.source.close()
        except Exception:  # noqa: BLE001
            pass
        try:
            self.pipeline.close()
            records = self._records()
            self.emitted += len(records)
            self.sink.write(records)
        except Exception:  # noqa: BLE001 - the state that raised may raise again
            log.error("worker %d: could not flush its connections after the failure", self.id)
        try:
            self.sink.close(2.0)
        except Exception as exc:  # noqa: BLE001 - the sink may be what failed
            log.error("worker %d: could not close its sink after the failure: %s", self.id, exc)


def _drain_fd(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except (BlockingIOError, InterruptedError):
        pass


# -- process creation ---------------------------------------------------------------------------

def spawn(settings, worker_id: int, spec, *, jsonl: str | None, allowance: int,
          adopt: tuple[str, ...]) -> tuple[int, socket.socket]:
    """Fork a worker; returns (pid, the supervisor's end of its report channel).

    Called from the supervisor's single thread.  Signals are blocked across the fork so
    that none reaches the child before it has its own handlers (the supervisor's event
    loop writes signals to a wake-up pipe the child shares until it resets it).
    """
    ours, theirs = channel.pair()
    keep = {0, 1, 2, theirs.fileno(), *spec.keep_fds()}
    parent = os.getpid()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
    gc.freeze()  # the child never collects the supervisor's objects (nor closes their fds)
    try:
        pid = os.fork()
    except OSError:
        gc.unfreeze()
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        ours.close()
        theirs.close()
        raise
    if pid == 0:  # the child: never returns
        code = EXIT_CRASH
        try:
            code = _child(settings, worker_id, spec, theirs, keep, parent, jsonl, allowance, adopt)
        except BaseException:  # noqa: BLE001 - logged in _child; nothing may escape a fork
            pass
        finally:
            try:
                logging.shutdown()
                sys.stderr.flush()
            finally:
                os._exit(code)
    gc.unfreeze()
    signal.pthread_sigmask(signal.SIG_SETMASK, old)
    theirs.close()
    return pid, ours


def _close_inherited(keep: set[int]) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _set_pdeathsig(sig: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # the loop's parent check still notices, within 200 ms


def _child(settings, worker_id, spec, sock, keep, parent, jsonl, allowance, adopt) -> int:
    # 1. nothing of the supervisor's: signals, descriptors (ports), the event loop's pipe
    signal.set_wakeup_fd(-1)
    _close_inherited(keep)
    flags = Flags

    def on_term(signum, frame):
        if not flags.stop:
            flags.stop = time.monotonic()

    def on_orphan(signum, frame):
        flags.orphaned = True

    def on_shed(signum, frame):
        flags.shed_all = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C: the supervisor decides
    signal.signal(SIG_ORPHAN, on_orphan)
    signal.signal(SIG_SHED, on_shed)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    _set_pdeathsig(SIG_ORPHAN)
    if os.getppid() != parent:
        flags.orphaned = True  # the supervisor died before PR_SET_PDEATHSIG took effect
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())

    from appliance.logs import setup_logging

    setup_logging(settings.log_level, settings.log_format)
    sender = channel.Sender(sock)
    try:
        w = Worker(settings, worker_id, spec, sender, jsonl=jsonl, allowance=allowance,
                   parent=parent, adopt=adopt, flags=flags)
    except Exception as exc:  # noqa: BLE001 - one line for the supervisor to show
        code, line = _start_failure(exc, settings, jsonl)
        try:
            sender.send({"id": worker_id, "pid": os.getpid(), "error": line, "code": code},
                        wait=1.0)
        except channel.PeerGone:
            pass
        if code == EXIT_CRASH:
            log.error("worker %d failed to start: %s", worker_id, line, exc_info=True)
        return code
    try:
        sender.send({**w.figures(), "ready": True, "idle_bytes": w.idle}, wait=1.0)
    except channel.PeerGone:
        flags.orphaned = True
    try:
        return w.run(wake_r)
    except Exception:  # noqa: BLE001 - logged with its traceback; the supervisor restarts us
        log.error("worker %d failed; flushing what it holds and exiting for a restart",
                  worker_id, exc_info=True)
        w.emergency_close()
        return EXIT_CRASH


def _start_failure(exc: Exception, settings, jsonl: str | None) -> tuple[int, str]:
    from appliance.runtime.sources import CaptureError
    from appliance.sinks.spool import SpoolBusy

    if isinstance(exc, CaptureError):
        return EXIT_CONFIG, str(exc)
    if jsonl and isinstance(exc, OSError):
        return EXIT_CONFIG, str(exc)
    if isinstance(exc, SpoolBusy):
        return EXIT_CRASH, f"{exc}; is another appliance running with this APPLIANCE_SPOOL_DIR?"
    if isinstance(exc, PermissionError) or (isinstance(exc, OSError) and exc.filename):
        return EXIT_CONFIG, (f"cannot use the spool directory {settings.spool_dir}: "
                             f"{exc.strerror or exc}; set APPLIANCE_SPOOL_DIR (--spool-dir) to a "
                             f"writable directory")
    return EXIT_CRASH, f"{type(exc).__name__}: {exc}"
