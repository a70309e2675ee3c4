"""The supervisor: starts the workers, restarts a worker that dies, serves /healthz
/metrics /status, watches the memory ceiling and coordinates a bounded, lossless stop.

One thread, one asyncio event loop: the HTTP endpoint, the workers' reports (a socket
each), signals (SIGTERM/SIGINT/SIGCHLD only set flags or wake the loop) and timers.  Being
single-threaded is what makes forking a replacement worker at any time safe.

Exit codes of ``appliance run``:
  0   stopped by SIGTERM/SIGINT, and every pair was delivered to Kafka or spooled
  1   runtime failure (the capture or the HTTP port could not be opened), or pairs were
      lost (spool full, a worker killed at the stop deadline or by a signal): one line
      with the counts
  2   bad configuration, including a memory ceiling below the measured idle footprint,
      a spool directory that cannot be written and missing capture capabilities
  75  AKTO_MEM_THRESH_RESTART still exceeded after every worker shed everything it held
      (everything was flushed first); the service manager restarts the process
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import time
import urllib.parse
from collections import deque

import appliance.core as core
from appliance import __version__
from appliance.runtime import channel, memory
from appliance.runtime.history import RateHistory, parse_seconds
from appliance.runtime.memory import rss_bytes
from appliance.runtime.statusdoc import SCHEMA, SCHEMA_VERSION
from appliance.runtime.worker import SIG_SHED, UDP_LINKTYPES, spawn

log = logging.getLogger("appliance.supervisor")

EXIT_FAILURE = 1
EXIT_CONFIG_ERROR = 2
EXIT_MEMORY = 75
RATE_WINDOW = 5.0
READY_TIMEOUT = 60.0
OVER_CEILING_SECS = 5.0  # above the ceiling this long after shedding everything: exit 75
QUICK_DEATH_SECS = 10.0  # a worker that dies sooner than this after its start backs off
MAX_BACKOFF = 30.0
STALE_SECS = 5.0
COUNTERS = ("packets", "bytes", "pairs", "pending", "connections", "malformed", "gaps",
            "orphan_responses", "decode_errors")


class StartError(Exception):
    """Start-up failed; one line for the operator, and the exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILURE):
        super().__init__(message)
        self.code = code


def load_session_map(path: str) -> dict:
    """VNI -> {cloud, session_id, eni, instance, policy} from the map that
    `appliance provision` writes (schema in provision/aws/sessionmap.py).  Several
    sessions may share one VNI (the default on AWS): their ids, ENIs and instances are
    listed comma-separated.  A missing or unreadable map just means "not known"."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    cloud = data.get("cloud")
    sessions = data.get("sessions") if isinstance(data.get("sessions"), dict) else {}
    by_vni = data.get("by_vni") if isinstance(data.get("by_vni"), dict) else {}
    out = {}
    for vni, ids in by_vni.items():
        infos = [sessions[i] for i in ids if isinstance(sessions.get(i), dict)]
        if not infos:
            continue

        def joined(field):
            values = [str(i[field]) for i in infos if i.get(field)]
            return ",".join(values) or None

        out[str(vni)] = {"cloud": cloud, "session_id": joined("session_id"),
                         "eni": joined("eni"), "instance": joined("instance"),
                         "policy": data.get("policy")}
    if not out and data.get("policy"):
        out["0"] = {"cloud": cloud, "policy": data.get("policy")}
    return out


class StopFlag:
    """``set()`` asks for a stop (the old Event interface, for callers of start())."""

    def __init__(self):
        self.when = 0.0

    def set(self) -> None:
        if not self.when:
            self.when = time.monotonic()

    def is_set(self) -> bool:
        return bool(self.when)


class Slot:
    """One worker position (index); its process changes across restarts."""

    def __init__(self, wid: int, spec):
        self.id = wid
        self.spec = spec
        self.pid = 0
        self.sock: socket.socket | None = None
        self.started = 0.0
        self.ready = False
        self.idle = 0
        self.error: tuple[int, str] | None = None
        self.final: dict | None = None
        self.exit: int | None = None  # exit code, or -signal
        self.restarts = 0
        self.quick_deaths = 0
        self.restart_at = 0.0
        self.killed = False

    @property
    def alive(self) -> bool:
        return self.pid != 0 and self.exit is None


def _describe(status: int) -> str:
    return f"killed by signal {-status}" if status < 0 else f"exited with code {status}"


class Supervisor:
    def __init__(self, settings, jsonl: str | None = None):
        self.s = settings
        self.jsonl = jsonl
        self.stop = StopFlag()
        self.stop_timeout = float(getattr(settings, "stop_timeout", 30.0))
        self.slots: list[Slot] = []
        self.latest: dict[int, dict] = {}
        self.retired = {"totals": {k: 0 for k in COUNTERS}, "vni": {}, "kafka": {},
                        "drops": {}}
        self.started = time.time()
        self.history: deque = deque()  # (time, packets, bytes, pairs, {vni: (p, b, pairs)})
        self.rates = {"packets_per_s": 0.0, "bytes_per_s": 0.0, "pairs_per_s": 0.0}
        self.vni_rates: dict[str, dict] = {}
        self.vni_last_seen: dict[str, tuple[int, float]] = {}
        self.rate_history = RateHistory()  # per-second rates for /status "history"
        self.sessions = load_session_map(settings.session_map)
        self.exit_code = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.http = None
        self.http_sock: socket.socket | None = None
        self.specs: list = []
        self.allowance = 0
        self.ceiling = settings.mem_restart_mb << 20
        self.over_since = 0.0
        self.last_shed_signal = 0.0
        self.peak_rss = 0
        self.wake: asyncio.Event | None = None
        self.stopping = False
        self.running = False  # start-up finished: a worker that dies now is restarted
        self.unclean: list[str] = []  # worker deaths that lost what they held
        self.collector = None  # ebpf mode: the kernel side (appliance/runtime/ebpf.py)
        self.ebpf_clock = None
        self.process_rates = None

    # -- start ----------------------------------------------------------------------------
    def _specs(self) -> list:
        s = self.s
        n = s.worker_count
        if s.mode == "ebpf":
            return self._ebpf_specs(n)
        if s.mode == "aws":
            from appliance.runtime.sources import UdpSpec, udp_sockets

            host, port = s.listen_addr
            groups = []
            try:
                groups.append((udp_sockets(host, port, n), UDP_LINKTYPES["vxlan"]))
                if s.geneve:
                    groups.append((udp_sockets(host, s.geneve_port, n, tunnel="geneve"),
                                   UDP_LINKTYPES["geneve"]))
            except OSError as exc:
                for g in groups:
                    for sock in g[0]:
                        sock.close()
                raise StartError(f"cannot bind UDP {host}:{port}: {exc.strerror}") from None
            return [UdpSpec([(g[0][i], g[1]) for g in groups]) for i in range(n)]
        from appliance.runtime.sources import (CaptureError, PcapSpec, default_route_interface,
                                               fanout_group_id, interface_ipv4, open_live,
                                               own_traffic_filter)

        iface = "any" if s.capture_all else (s.interface or default_route_interface())
        if not iface:
            raise StartError("no --interface given and no default route to pick one from", 2)
        if iface != "any" and not os.path.exists(f"/sys/class/net/{iface}"):
            raise StartError(f"interface {iface!r} does not exist (APPLIANCE_INTERFACE, "
                             f"--interface)", 2)
        kafka_ports = []
        for b in s.kafka_brokers.split(","):
            if ":" in b:
                try:
                    kafka_ports.append(int(b.rsplit(":", 1)[1]))
                except ValueError:
                    pass
        own_ip = interface_ipv4(iface) if iface != "any" else None
        bpf = own_traffic_filter(own_ip, s.http_addr[1], kafka_ports)
        try:  # fail here, in one line, rather than in every worker
            open_live(iface, bpf, None).close()
        except CaptureError as exc:
            raise StartError(str(exc), 2) from None
        group = fanout_group_id() if n > 1 else None
        return [PcapSpec(iface, bpf, group) for _ in range(n)]

    def _ebpf_specs(self, n: int) -> list:
        from appliance.ebpf.preflight import EnvironmentProblem
        from appliance.runtime import ebpf

        try:
            self.collector = ebpf.open_collector(self.s, n)
        except EnvironmentProblem as exc:
            raise StartError(str(exc), EXIT_CONFIG_ERROR) from None
        self.ebpf_clock = ebpf.SharedClock()
        self.ebpf_clock.set(self.collector.tls_ready_ns)
        self.process_rates = ebpf.ProcessRates(RATE_WINDOW)
        return ebpf.specs(self.s, self.collector, self.ebpf_clock)

    def _processes(self) -> list:
        from appliance.runtime import ebpf

        return ebpf.merge_processes([rep.get("stats", {}).get("processes", [])
                                     for rep in list(self.latest.values())])

    def _poll_collector(self) -> None:
        """ebpf mode: process starts -> TLS library rescans; the workers learn when a
        library was last attached."""
        col = self.collector
        if col is None:
            return
        try:
            if col.poll_control(0):
                self.ebpf_clock.set(col.tls_ready_ns)
        except Exception:  # noqa: BLE001 - a rescan must not stop the supervisor
            log.exception("TLS library rescan failed")

    def _check_spool_dir(self) -> None:
        if self.jsonl:
            return
        from appliance.sinks.spool import make_private_dir

        path = self.s.spool_dir
        fix = "set APPLIANCE_SPOOL_DIR (--spool-dir) to a writable directory"
        try:
            make_private_dir(path)
            probe = os.path.join(path, f".probe-{os.getpid()}")
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise StartError(f"cannot write the spool directory {path}: "
                             f"{exc.strerror or exc}; {fix}", EXIT_CONFIG_ERROR) from None

    def start(self) -> None:
        """Check, bind, fork the workers and wait until each has its capture open.
        Raises StartError (one line, exit code) and leaves nothing running then."""
        s = self.s
        self._check_spool_dir()
        self.specs = self._specs()
        from appliance.runtime import httpd

        host, port = s.http_addr
        try:
            self.http_sock = httpd.bind(host, port)
        except OSError as exc:
            self._close_specs()
            raise StartError(f"cannot serve HTTP on {host}:{port}: {exc.strerror}") from None
        self.loop = asyncio.new_event_loop()
        try:
            self.loop.run_until_complete(self._start())
        except StartError:
            self.loop.run_until_complete(self._abort())
            self.loop.close()
            raise

    async def _start(self) -> None:
        from appliance.runtime import httpd

        loop = asyncio.get_running_loop()
        self.wake = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGCHLD, self._reap)
        routes = {"/healthz": (self._healthz_route, False), "/status": (self._status_route, True),
                  "/metrics": (self._metrics_route, True)}
        self.http = httpd.HttpEndpoint(self.http_sock, routes, getattr(self.s, "http_token", ""))
        await self.http.start()
        self.allowance = memory.worker_allowance(self.ceiling, rss_bytes(), len(self.specs))
        self.slots = [Slot(i, spec) for i, spec in enumerate(self.specs)]
        for slot in self.slots:
            self._spawn(slot)
        deadline = time.monotonic() + READY_TIMEOUT
        while not all(sl.ready for sl in self.slots):
            for sl in self.slots:
                if sl.error is not None:
                    raise StartError(sl.error[1], sl.error[0])
                if sl.exit is not None:
                    raise StartError(f"worker {sl.id} {_describe(sl.exit)} while starting; "
                                     f"see the log above")
            if self.stop.is_set():
                return
            if time.monotonic() > deadline:
                raise StartError(f"workers not ready after {READY_TIMEOUT:.0f}s")
            await self._sleep(0.1)
        refusal = memory.refusal(self.ceiling, rss_bytes(), {sl.id: sl.idle for sl in self.slots})
        if refusal:
            raise StartError(refusal, EXIT_CONFIG_ERROR)
        self.running = True
        if self.ceiling:  # (the start-up line itself is the CLI's: appliance/cli/run.py)
            log.info("memory ceiling %d MB (%d MB per worker)", self.ceiling >> 20,
                     self.allowance >> 20)
        if core.CORE == "python" and not core.REASON.startswith("APPLIANCE_CORE"):
            log.warning("running the pure-Python core, several times slower: %s", core.REASON)

    async def _abort(self) -> None:
        self.stopping = True
        for sl in self.slots:
            if sl.alive:
                self._signal(sl, signal.SIGTERM)
        end = time.monotonic() + 10
        while any(sl.alive for sl in self.slots) and time.monotonic() < end:
            await self._sleep(0.05)
        for sl in self.slots:
            if sl.alive:
                self._signal(sl, signal.SIGKILL)
        await self._close()

    def _spawn(self, slot: Slot) -> None:
        from appliance.sinks.spool import spool_dirs

        n = len(self.specs)
        adopt = ()
        if not self.jsonl:
            adopt = tuple(path for idx, path in spool_dirs(self.s.spool_dir)
                          if idx >= n and idx % n == slot.id)
        pid, sock = spawn(self.s, slot.id, slot.spec, jsonl=self.jsonl, allowance=self.allowance,
                          adopt=adopt)
        slot.pid, slot.sock = pid, sock
        slot.started = time.monotonic()
        slot.ready = False
        slot.error = None
        slot.final = None
        slot.exit = None
        slot.killed = False
        self.loop.add_reader(sock.fileno(), self._on_reports, slot)

    # -- events ---------------------------------------------------------------------------
    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.wake.wait(), seconds)
        except TimeoutError:
            pass
        self.wake.clear()

    def _on_stop_signal(self, signum: int) -> None:
        if not self.stop.is_set():
            log.info("%s: stopping", signal.Signals(signum).name)
        self.stop.set()
        self.wake.set()

    def _on_reports(self, slot: Slot) -> None:
        sock = slot.sock
        if sock is None:
            return
        msgs, closed = channel.receive_all(sock)
        for msg in msgs:
            self._take(slot, msg)
        if closed:
            self.loop.remove_reader(sock.fileno())
            sock.close()
            slot.sock = None
        if msgs:
            self.wake.set()

    def _take(self, slot: Slot, msg: dict) -> None:
        if msg.get("pid") != slot.pid:
            return
        if "error" in msg:
            slot.error = (msg.get("code", EXIT_FAILURE), msg["error"])
            return
        if msg.get("ready"):
            slot.ready = True
            slot.idle = msg.get("idle_bytes", 0)
        if msg.get("final"):
            slot.final = msg
        self.latest[slot.id] = msg

    def _reap(self) -> None:
        for sl in self.slots:
            if not sl.alive:
                continue
            try:
                pid, status = os.waitpid(sl.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = sl.pid, 0
            if pid == 0:
                continue
            if sl.sock is not None:
                self._on_reports(sl)  # the final report, sent just before exiting
                if sl.sock is not None:
                    self.loop.remove_reader(sl.sock.fileno())
                    sl.sock.close()
                    sl.sock = None
            sl.exit = os.waitstatus_to_exitcode(status)
            self._worker_exited(sl)
        if self.wake is not None:
            self.wake.set()

    def _worker_exited(self, sl: Slot) -> None:
        if self.stopping or not self.running:
            return  # expected, or a start-up failure that start() reports
        if not sl.ready:
            log.error("worker %d (pid %d) could not start again: %s; retrying", sl.id, sl.pid,
                      sl.error[1] if sl.error else _describe(sl.exit))
        else:
            self._died(sl)
        self._retire(sl.id)
        sl.restarts += 1
        lived = time.monotonic() - sl.started
        sl.quick_deaths = sl.quick_deaths + 1 if lived < QUICK_DEATH_SECS else 0
        delay = 0.0 if sl.quick_deaths <= 1 else min(MAX_BACKOFF, 0.5 * 2 ** (sl.quick_deaths - 2))
        sl.restart_at = time.monotonic() + delay
        sl.pid = 0

    def _died(self, sl: Slot) -> None:
        held = self.latest.get(sl.id, {})
        k = held.get("kafka", {})
        what = (f"it held {held.get('stats', {}).get('active_connections', 0)} connections and "
                f"{k.get('queued', 0)} queued pairs") if held else "nothing reported yet"
        if sl.exit == 0:  # stopped from outside, after flushing what it held
            log.warning("worker %d (pid %d) stopped; restarting it", sl.id, sl.pid)
        else:
            if sl.exit == 1:
                what = "its traceback is above; it flushed what it could"
            self.unclean.append(f"worker {sl.id} {_describe(sl.exit)} ({what})")
            log.error("worker %d (pid %d) %s (%s); restarting it", sl.id, sl.pid,
                      _describe(sl.exit), what)

    def _retire(self, wid: int) -> None:
        """Fold a dead worker's counters into the totals, so they never go backwards."""
        rep = self.latest.pop(wid, None)
        if not rep or "stats" not in rep:
            return
        r = self.retired
        for k in COUNTERS:
            r["totals"][k] += rep["stats"].get(k, 0)
        for vni, vals in rep.get("vni", {}).items():
            acc = r["vni"].setdefault(vni, [0, 0, 0])
            for i in range(3):
                acc[i] += vals[i]
        for key in ("delivered", "failed", "dropped", "corrupt"):
            r["kafka"][key] = r["kafka"].get(key, 0) + rep.get("kafka", {}).get(key, 0)
        st = rep["stats"]
        for reason, n in st.get("drops", {}).items():
            r["drops"][reason] = r["drops"].get(reason, 0) + n
        for reason, n in st.get("evicted", {}).items():
            if reason != "idle":
                key = "evicted_" + reason
                r["drops"][key] = r["drops"].get(key, 0) + n

    def _signal(self, sl: Slot, sig: int) -> None:
        try:
            os.kill(sl.pid, sig)
        except ProcessLookupError:
            pass

    # -- run ------------------------------------------------------------------------------
    def run(self) -> int:
        try:
            return self.loop.run_until_complete(self._run())
        finally:
            self.loop.close()

    async def _run(self) -> int:
        next_rates = 0.0
        while not self.stop.is_set():
            now = time.monotonic()
            for sl in self.slots:
                if not sl.alive and sl.pid == 0 and now >= sl.restart_at:
                    try:
                        self._spawn(sl)
                    except OSError as exc:
                        log.error("cannot restart worker %d: %s", sl.id, exc.strerror)
                        sl.restart_at = now + 1.0
            self._poll_collector()
            if self._memory_check(now):
                self.exit_code = EXIT_MEMORY
                break
            if now >= next_rates:
                next_rates = now + 1.0
                self._update_rates()
            await self._sleep(0.1)
        return await self._shutdown()

    def _memory_check(self, now: float) -> bool:
        total = self.total_rss()
        self.peak_rss = max(self.peak_rss, total)
        if not self.ceiling:
            return False
        if total <= self.ceiling:
            self.over_since = 0.0
            return False
        if not self.over_since:
            self.over_since = now
            log.warning("memory %d MB is above AKTO_MEM_THRESH_RESTART=%d MB: every worker "
                        "sheds what it holds", total >> 20, self.ceiling >> 20)
        if now - self.last_shed_signal >= 1.0:
            self.last_shed_signal = now
            for sl in self.slots:
                if sl.alive:
                    self._signal(sl, SIG_SHED)
        if now - self.over_since >= OVER_CEILING_SECS:
            log.error("memory %d MB still above AKTO_MEM_THRESH_RESTART=%d MB %.0fs after "
                      "shedding everything; flushing and exiting for a restart", total >> 20,
                      self.ceiling >> 20, OVER_CEILING_SECS)
            return True
        return False

    def total_rss(self) -> int:
        return rss_bytes() + sum(rss_bytes(sl.pid) for sl in self.slots if sl.alive)

    async def _shutdown(self) -> int:
        """SIGTERM every worker; wait for their final reports within the deadline; kill
        what is left; one line with the counts; the exit code."""
        self.stopping = True
        began = time.monotonic()
        for sl in self.slots:
            if sl.alive:
                self._signal(sl, signal.SIGTERM)
        deadline = began + self.stop_timeout + 1.0
        while any(sl.alive for sl in self.slots) and time.monotonic() < deadline:
            await self._sleep(0.05)
        for sl in self.slots:
            if sl.alive:
                rep = self.latest.get(sl.id, {})
                self.unclean.append(
                    f"worker {sl.id} did not stop within APPLIANCE_STOP_TIMEOUT="
                    f"{self.stop_timeout:g}s and was killed, with "
                    f"{rep.get('stats', {}).get('active_connections', '?')} connections and "
                    f"{rep.get('kafka', {}).get('queued', '?')} queued pairs")
                sl.killed = True
                self._signal(sl, signal.SIGKILL)
        end = time.monotonic() + 5
        while any(sl.alive for sl in self.slots) and time.monotonic() < end:
            await self._sleep(0.05)
        code = self._summary(time.monotonic() - began)
        await self._close()
        return code

    def _summary(self, took: float) -> int:
        finals = [sl.final for sl in self.slots if sl.final]
        lost = sum(f.get("lost", 0) for f in finals)
        lost += self.retired["kafka"].get("dropped", 0)
        unread = sum(f.get("unread", 0) for f in finals)
        k = self._kafka_totals()
        parts = [f"{k['delivered']} pairs delivered" if not self.jsonl
                 else f"{self.totals()['pairs']} pairs written",
                 f"{k['spooled']} spooled in {self.s.spool_dir}" if k["spooled"] else None,
                 f"{lost} lost (spool full or rejected by Kafka)" if lost else None,
                 f"{unread} packets left unread in the kernel" if unread else None]
        line = ", ".join(p for p in parts if p)
        if lost or self.unclean:
            log.error("stopped in %.1fs with loss: %s%s", took, line,
                      "".join(f"; {u}" for u in self.unclean))
            if not self.exit_code:
                self.exit_code = EXIT_FAILURE
        else:
            log.info("stopped in %.1fs: %s, 0 lost", took, line)
        return self.exit_code

    async def _close(self) -> None:
        if self.http is not None:
            await self.http.stop()
            self.http = None
        elif self.http_sock is not None:
            self.http_sock.close()
        self._close_specs()
        for sl in self.slots:
            if sl.sock is not None:
                self.loop.remove_reader(sl.sock.fileno())
                sl.sock.close()
                sl.sock = None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            loop.remove_signal_handler(sig)

    def _close_specs(self) -> None:
        for spec in self.specs:
            for sock, _ in getattr(spec, "socks", ()):
                sock.close()
        if self.collector is not None:
            self.collector.close()  # detaches every probe: the node runs untraced again
            self.collector = None

    # -- HTTP routes ----------------------------------------------------------------------
    def _healthz_route(self, query: str):
        ok, why = self.healthy()
        return (200 if ok else 503), (why + "\n").encode(), "text/plain"

    def _status_route(self, query: str):
        try:  # ?history=N: only the last N seconds of rate history
            seconds = parse_seconds(urllib.parse.parse_qs(query))
        except ValueError as exc:
            return 400, f"{exc}\n".encode(), "text/plain"
        return 200, json.dumps(self.status(seconds)).encode(), "application/json"

    def _metrics_route(self, query: str):
        body, ctype = self.metrics()
        return 200, body, ctype

    # -- figures --------------------------------------------------------------------------
    def totals(self) -> dict:
        keys = ("packets", "bytes", "pairs", "pending", "connections", "active_connections",
                "malformed", "gaps", "orphan_responses", "decode_errors")
        t = {k: self.retired["totals"].get(k, 0) for k in keys}
        for rep in list(self.latest.values()):
            for k in keys:
                t[k] += rep["stats"].get(k, 0)
        return t

    def _vni_totals(self) -> dict:
        out: dict[str, list] = {vni: list(v) for vni, v in self.retired["vni"].items()}
        for rep in list(self.latest.values()):
            for vni, (p, b, pairs) in rep.get("vni", {}).items():
                acc = out.setdefault(vni, [0, 0, 0])
                acc[0] += p
                acc[1] += b
                acc[2] += pairs
        return out

    def _kafka_totals(self) -> dict:
        kafka = {"state": "disabled" if self.jsonl else "up", "reason": None,
                 "brokers": self.s.kafka_brokers, "topic": self.s.kafka_topic, "queued": 0,
                 "spooled": 0, "spool_bytes": 0, "delivered": 0, "failed": 0, "dropped": 0,
                 "corrupt": 0}
        for key in ("delivered", "failed", "dropped", "corrupt"):
            kafka[key] += self.retired["kafka"].get(key, 0)
        states = []
        for _, rep in sorted(self.latest.items()):
            k = rep["kafka"]
            states.append((k["state"], k.get("reason")))
            for key in ("queued", "spooled", "spool_bytes", "delivered", "failed", "dropped",
                        "corrupt"):
                kafka[key] += k.get(key, 0)
        down = [st for st in states if st[0] == "down"]
        if down:
            kafka["state"], kafka["reason"] = down[0]
        elif states:
            kafka["state"] = states[0][0]
        return kafka

    def _update_rates(self) -> None:
        now = time.time()
        if self.process_rates is not None:
            self.process_rates.observe(now, self._processes())
        t = self.totals()
        vt = self._vni_totals()
        for vni, (p, _, _) in vt.items():
            prev = self.vni_last_seen.get(vni)
            if prev is None or p != prev[0]:
                self.vni_last_seen[vni] = (p, now)
        self.rate_history.observe(now, (t["packets"], t["bytes"], t["pairs"]), vt)
        self.history.append((now, t["packets"], t["bytes"], t["pairs"], vt))
        while len(self.history) > 2 and now - self.history[0][0] > RATE_WINDOW:
            self.history.popleft()
        t0, p0, b0, q0, v0 = self.history[0]
        dt = now - t0
        if dt <= 0:
            return
        self.rates = {"packets_per_s": (t["packets"] - p0) / dt,
                      "bytes_per_s": (t["bytes"] - b0) / dt, "pairs_per_s": (t["pairs"] - q0) / dt}
        self.vni_rates = {}
        for vni, (p, b, q) in vt.items():
            op, ob, oq = v0.get(vni, (0, 0, 0))
            self.vni_rates[vni] = {"packets_per_s": (p - op) / dt, "bytes_per_s": (b - ob) / dt,
                                   "pairs_per_s": (q - oq) / dt}

    def status(self, history: int | None = None) -> dict:
        """The /status document; ``history`` limits its rate history to the last N
        seconds (None: all that is kept, 0: none)."""
        now = time.time()
        s = self.s
        sessions = []
        for vni, (p, b, q) in sorted(self._vni_totals().items(), key=lambda kv: int(kv[0])):
            row = {"vni": int(vni), "packets": p, "bytes": b, "pairs": q,
                   **self.vni_rates.get(vni, {"packets_per_s": 0.0, "bytes_per_s": 0.0,
                                              "pairs_per_s": 0.0}),
                   "last_seen": self.vni_last_seen.get(vni, (0, None))[1],
                   "cloud": None, "session_id": None, "eni": None, "instance": None, "policy": None}
            row.update({k: v for k, v in self.sessions.get(vni, {}).items() if v is not None})
            sessions.append(row)
        drops: dict[str, int] = dict(self.retired["drops"])
        workers = []
        for sl in self.slots:
            rep = self.latest.get(sl.id)
            row = {"id": sl.id, "pid": sl.pid or None, "restarts": sl.restarts,
                   "state": "running" if sl.alive and sl.ready else
                            ("stopped" if self.stopping and not sl.alive else "starting"),
                   "rss_bytes": 0, "buffer_bytes": 0, "active_connections": 0, "packets": 0}
            if rep is not None and "stats" in rep:
                st = rep["stats"]
                for reason, n in st.get("drops", {}).items():
                    drops[reason] = drops.get(reason, 0) + n
                for reason, n in st.get("evicted", {}).items():
                    if reason != "idle":
                        drops["evicted_" + reason] = drops.get("evicted_" + reason, 0) + n
                row.update({"rss_bytes": rep["rss_bytes"], "buffer_bytes": rep["buffer_bytes"],
                            "active_connections": st["active_connections"],
                            "packets": st["packets"]})
                mem = rep.get("memory", {})
                if mem.get("allowance_bytes"):
                    row["allowance_bytes"] = mem["allowance_bytes"]
            workers.append(row)
        doc = {
            "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
            "version": __version__, "core": core.CORE, "mode": s.mode,
            "hostname": socket.gethostname(),
            "started_at": self.started, "now": now, "uptime_s": now - self.started,
            "workers": len(self.slots), "restarts": sum(sl.restarts for sl in self.slots),
            "totals": self.totals(), "rates": dict(self.rates),
            "sessions": sessions,
            "memory": {"rss_bytes": self.total_rss(), "peak_rss_bytes": self.peak_rss,
                       "limit_bytes": self.ceiling or None,
                       "buffer_bytes": sum(w["buffer_bytes"] for w in workers),
                       "buffer_limit_bytes": s.buffer_mb << 20,
                       "active_connections": sum(w["active_connections"] for w in workers),
                       "max_connections": s.max_active_conn, "workers": workers},
            "kafka": self._kafka_totals(), "drops": drops,
            "history": self.rate_history.document(history),
        }
        if s.mode == "ebpf":  # per-process and per-pod rows in place of mirror sessions
            from appliance.runtime import ebpf

            procs = self._processes()
            if self.process_rates is not None:
                procs = self.process_rates.annotate(procs)
            doc.update(processes=procs, pods=ebpf.pods_of(procs), ebpf=ebpf.status(self.collector))
        return doc

    def healthy(self) -> tuple[bool, str]:
        if self.stop.is_set() or self.stopping:
            return False, "stopping"
        down = [sl.id for sl in self.slots if not (sl.alive and sl.ready)]
        if down:
            if any(sl.restarts for sl in self.slots):
                return False, f"degraded: worker(s) {down} restarting"
            # every worker reports once its capture is open (and, in gcp mode, it has
            # joined the fanout group): until then traffic would be missed, or a flow
            # split between workers while the group is still forming
            return False, "starting"
        now = time.time()
        stale = [w for w, rep in list(self.latest.items()) if now - rep["time"] > STALE_SECS]
        if stale:
            return False, f"worker(s) {stale} not reporting"
        return True, "ok"

    def metrics(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        from prometheus_client.core import (CollectorRegistry, CounterMetricFamily,
                                            GaugeMetricFamily)

        st = self.status(history=0)

        class Collector:
            def collect(self_inner):
                t = st["totals"]
                for name, key, doc in (("packets", "packets", "packets captured"),
                                       ("bytes", "bytes", "bytes captured"),
                                       ("pairs", "pairs", "HTTP pairs emitted"),
                                       ("pending_pairs", "pending", "requests emitted unanswered"),
                                       ("connections", "connections", "TCP connections seen"),
                                       ("malformed_packets", "malformed", "malformed packets skipped"),
                                       ("tcp_gaps", "gaps", "TCP gaps skipped"),
                                       ("orphan_responses", "orphan_responses", "responses without request"),
                                       ("body_decode_errors", "decode_errors", "body decode errors")):
                    yield CounterMetricFamily(f"appliance_{name}", doc, value=t[key])
                yield GaugeMetricFamily("appliance_active_connections", "connections in memory",
                                        value=t["active_connections"])
                yield CounterMetricFamily("appliance_worker_restarts", "worker processes restarted",
                                          value=st["restarts"])
                m = st["memory"]
                yield GaugeMetricFamily("appliance_rss_bytes", "resident memory, all processes",
                                        value=m["rss_bytes"])
                yield GaugeMetricFamily("appliance_buffer_bytes", "reassembly and body bytes held",
                                        value=m["buffer_bytes"])
                k = st["kafka"]
                up = GaugeMetricFamily("appliance_kafka_up", "1 when the broker accepts messages")
                up.add_metric([], 1 if k["state"] == "up" else 0)
                yield up
                for key in ("delivered", "failed", "dropped", "corrupt"):
                    yield CounterMetricFamily(f"appliance_kafka_{key}", f"Kafka messages {key}",
                                              value=k[key])
                for key in ("queued", "spooled", "spool_bytes"):
                    yield GaugeMetricFamily(f"appliance_kafka_{key}", f"Kafka {key}", value=k[key])
                drops = CounterMetricFamily("appliance_drops", "dropped on purpose, by reason",
                                            labels=["reason"])
                for reason, n in sorted(st["drops"].items()):
                    drops.add_metric([reason], n)
                yield drops
                sess = {name: CounterMetricFamily(f"appliance_session_{name}",
                                                  f"{name} per mirror session", labels=["vni"])
                        for name in ("packets", "bytes", "pairs")}
                for row in st["sessions"]:
                    for name in sess:
                        sess[name].add_metric([str(row["vni"])], row[name])
                yield from sess.values()
                kernel = st.get("ebpf", {}).get("kernel")
                if kernel:
                    k = CounterMetricFamily("appliance_ebpf_kernel", "eBPF collector kernel "
                                            "counters (ring_lost, tls_unlinked, ...)",
                                            labels=["counter"])
                    for name, n in sorted(kernel.items()):
                        k.add_metric([name], n)
                    yield k
                    proc = CounterMetricFamily("appliance_process_pairs", "HTTP pairs per "
                                               "traced process", labels=["pid", "comm", "pod"])
                    for row in st.get("processes", []):
                        proc.add_metric([str(row.get("pid")), str(row.get("comm") or ""),
                                         str(row.get("pod") or "")], row.get("pairs", 0))
                    yield proc

        reg = CollectorRegistry()
        reg.register(Collector())
        return generate_latest(reg), CONTENT_TYPE_LATEST
