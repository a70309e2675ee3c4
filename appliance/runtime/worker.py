"""One worker process: capture source -> sans-IO pipeline -> sink, plus its statistics.

The loop reads packets in batches, feeds the pipeline, hands finished pairs to the sink
and, once a second, sweeps idle connections on the wall clock (when no packets arrive
the pipeline sees no time pass), checks its memory and reports statistics to the
supervisor.  On the stop event it closes the pipeline (pending pairs are emitted),
then closes the sink (delivered or spooled): nothing received is lost.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import time

from appliance.core import tune_gc
from appliance.core.decode import LINKTYPE_GENEVE_PAYLOAD, LINKTYPE_VXLAN_PAYLOAD
from appliance.core.pipeline import Pipeline, PipelineConfig
from appliance.format.record import Formatter

log = logging.getLogger("appliance.worker")

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes(pid: int | None = None) -> int:
    try:
        with open(f"/proc/{pid or 'self'}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return 0


def pipeline_config(s) -> PipelineConfig:
    return PipelineConfig(
        max_body=s.max_body,
        idle_timeout=s.inactivity_secs, max_connections=max(1, s.max_active_conn // s.worker_count),
        buffer_limit=max(1 << 20, (s.buffer_mb << 20) // s.worker_count),
        vxlan_port=s.listen_addr[1], geneve_port=s.geneve_port, ignored_ports=s.ignored_ports)


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


def make_sink(s, worker_id: int, jsonl: str | None):
    from appliance.sinks.jsonl import JsonlWriter
    from appliance.sinks.kafka import KafkaSink

    if jsonl:
        return JsonlWriter(jsonl if worker_id == 0 or jsonl == "-" else f"{jsonl}.{worker_id}")
    return KafkaSink(s, os.path.join(s.spool_dir, f"worker-{worker_id}"))


class Worker:
    def __init__(self, settings, worker_id: int, stop, shed, report, jsonl: str | None = None):
        self.s = settings
        self.id = worker_id
        self.stop = stop  # multiprocessing.Event
        self.shed = shed  # multiprocessing.Value('i'): 1 = shed load now
        self.report = report  # multiprocessing queue towards the supervisor
        tune_gc()  # this process runs the core: the cyclic GC need not run so often
        self.pipeline = Pipeline(pipeline_config(settings))
        self.formatter = formatter(settings)
        self.sink = make_sink(settings, worker_id, jsonl)
        self.started = time.time()
        self.shed_evictions = 0

    # -- the loops ----------------------------------------------------------------------------
    def run_udp(self, socks) -> None:
        """socks: [(socket, linktype)] this worker reads."""
        import select

        from appliance.runtime.sources import BatchReceiver

        poller = select.poll()
        by_fd = {}
        for sock, lt in socks:
            poller.register(sock.fileno(), select.POLLIN)
            by_fd[sock.fileno()] = (BatchReceiver(sock), lt)
        next_tick = time.monotonic() + 1.0
        while not self.stop.is_set():
            for fd, _ in poller.poll(200):
                rx, lt = by_fd[fd]
                for _ in range(8):  # bounded, so ticks (sweeps, reports) keep happening
                    if not self._receive(rx, lt):
                        break
            self._drain()
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + 1.0
                self._tick()
        # drain what the kernel already queued for us, then finish
        for rx, lt in by_fd.values():
            while self._receive(rx, lt):
                pass
        self._finish()

    def _receive(self, rx, lt: int) -> int:
        """One recvmmsg into the receiver's buffer, handed to the core whole (its batch
        API reads the datagrams in place, by the msg_len fields); returns how many."""
        if rx.libc is None:  # no recvmmsg in this libc: one recv() per datagram
            batch = rx.receive()
            now = time.time()
            for data in batch:
                self.pipeline.feed(now, lt, data)
            return len(batch)
        n = rx.recvmmsg(rx.fd, rx.msgs, rx.batch, socket.MSG_DONTWAIT, None)
        if n <= 0:
            return 0
        lens = getattr(rx, "_lens", None)
        if lens is None:  # a view of every msg_len field of the mmsghdr array, made once
            hdr = type(rx.msgs[0])
            lens = rx._lens = memoryview(rx.msgs).cast("B").cast("I")[
                hdr.len.offset // 4::ctypes.sizeof(hdr) // 4]
        self.pipeline.feed_datagrams(time.time(), lt, rx.view, rx.size, lens[:n])
        return n

    def run_pcap(self, handle) -> None:
        import select

        linktype = handle.datalink()
        feed = self.pipeline.feed_batch
        # libpcap's read timeout does not fire on Linux TPACKET_V3 while no packet
        # arrives, so wait on the descriptor ourselves and read without blocking
        handle.setnonblock(1)
        poller = select.poll()
        poller.register(handle.getfd(), select.POLLIN)
        next_tick = time.monotonic() + 1.0
        while not self.stop.is_set():
            poller.poll(200)
            for _ in range(64):  # bounded, so ticks (sweeps, reports) keep happening
                buf, meta = handle.next_batch(1024)
                if not meta:
                    break
                feed(linktype, buf, meta)
            self._drain()
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + 1.0
                self._tick()
        self._finish()

    # -- helpers ------------------------------------------------------------------------------
    def _drain(self) -> None:
        p = self.pipeline
        if p.out:
            self.sink.write(self.formatter.records(p.take()))
        else:
            self.sink.poll()

    def _tick(self) -> None:
        p = self.pipeline
        p.sweep(max(time.time(), p.last_ts))
        if self.shed is not None and self.shed.value:
            # memory pressure: give back half of what the core holds (pairs emitted)
            self.shed_evictions += p.shed(p.buffered() // 2)
        self._drain()
        self.send_report()

    def send_report(self) -> None:
        p = self.pipeline
        try:
            self.report.put_nowait({
                "id": self.id, "pid": os.getpid(), "time": time.time(),
                "rss_bytes": rss_bytes(), "buffer_bytes": p.buffered(),
                "stats": worker_stats(p, self.formatter),
                "vni": {str(k): v for k, v in p.vni_figures().items()},
                "kafka": self.sink.stats(),
            })
        except Exception:  # a full queue only delays figures; never the capture
            pass

    def _finish(self) -> None:
        self.pipeline.close()
        self._drain()
        self.sink.close()
        self.send_report()


def worker_main(settings, worker_id, stop, shed, report, source, jsonl) -> None:
    """Entry point in the child process.  `source` is ("udp", [(socket, linktype)]) or
    ("pcap", interface, bpf, fanout_group)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor coordinates shutdown
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    from appliance.logs import setup_logging

    setup_logging(settings.log_level, settings.log_format)
    try:
        w = Worker(settings, worker_id, stop, shed, report, jsonl)
        if source[0] == "udp":
            w.send_report()  # capturing: the supervisor reports healthy once all have
            w.run_udp(source[1])
        else:
            from appliance.runtime.sources import open_live

            handle = open_live(source[1], source[2], source[3])
            w.send_report()  # in the fanout group now
            w.run_pcap(handle)
    except Exception as exc:  # reported once, in one line; the supervisor decides
        log.error("worker %d failed: %s: %s", worker_id, type(exc).__name__, exc)
        raise SystemExit(1) from None


UDP_LINKTYPES = {"vxlan": LINKTYPE_VXLAN_PAYLOAD, "geneve": LINKTYPE_GENEVE_PAYLOAD}
