"""The supervisor: starts the workers, serves /healthz /metrics /status, watches memory,
and coordinates a lossless shutdown.

Exit codes of ``appliance run``:
  0   stopped by SIGTERM/SIGINT after flushing every pending pair and the producer
  1   runtime failure (a worker died, the capture could not start)
  2   bad configuration (one line naming the variable)
  75  AKTO_MEM_THRESH_RESTART exceeded even after shedding load; everything was
      flushed first, and the service manager is expected to restart the process
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import queue
import signal
import socket
import time
from collections import deque

import appliance.core as core
from appliance import __version__
from appliance.runtime.worker import UDP_LINKTYPES, rss_bytes, worker_main

log = logging.getLogger("appliance.supervisor")

EXIT_MEMORY = 75
RATE_WINDOW = 5.0


class StartError(Exception):
    pass


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


class Supervisor:
    def __init__(self, settings, jsonl: str | None = None):
        self.s = settings
        self.jsonl = jsonl
        self.ctx = mp.get_context("fork")
        self.stop = self.ctx.Event()
        self.shed = self.ctx.Value("i", 0)
        self.reports = self.ctx.Queue(maxsize=10000)
        self.procs: list = []
        self.latest: dict[int, dict] = {}
        self.started = time.time()
        self.history: deque = deque()  # (time, packets, bytes, pairs, {vni: (p, b, pairs)})
        self.rates = {"packets_per_s": 0.0, "bytes_per_s": 0.0, "pairs_per_s": 0.0}
        self.vni_rates: dict[str, dict] = {}
        self.vni_last_seen: dict[str, tuple[int, float]] = {}
        self.sessions = load_session_map(settings.session_map)
        self.over_memory_since = 0.0
        self.exit_code = 0
        self.server = None
        self._term = False

    # -- start ----------------------------------------------------------------------------
    def _sources(self) -> list:
        s = self.s
        n = s.worker_count
        if s.mode == "aws":
            from appliance.runtime.sources import udp_sockets

            host, port = s.listen_addr
            groups = []
            try:
                groups.append((udp_sockets(host, port, n), UDP_LINKTYPES["vxlan"]))
                if s.geneve:
                    groups.append((udp_sockets(host, s.geneve_port, n, tunnel="geneve"),
                                   UDP_LINKTYPES["geneve"]))
            except OSError as exc:
                raise StartError(f"cannot bind UDP {host}:{port}: {exc.strerror}") from None
            return [("udp", [(g[0][i], g[1]) for g in groups]) for i in range(n)]
        from appliance.runtime.sources import (default_route_interface, fanout_group_id,
                                               interface_ipv4, own_traffic_filter)

        iface = "any" if s.capture_all else (s.interface or default_route_interface())
        if not iface:
            raise StartError("no --interface given and no default route to pick one from")
        if iface != "any" and not os.path.exists(f"/sys/class/net/{iface}"):
            raise StartError(f"interface {iface!r} does not exist")
        kafka_ports = []
        for b in s.kafka_brokers.split(","):
            if ":" in b:
                try:
                    kafka_ports.append(int(b.rsplit(":", 1)[1]))
                except ValueError:
                    pass
        own_ip = interface_ipv4(iface) if iface != "any" else None
        bpf = own_traffic_filter(own_ip, s.http_addr[1], kafka_ports)
        group = fanout_group_id() if n > 1 else None
        return [("pcap", iface, bpf, group) for _ in range(n)]

    def start(self) -> None:
        s = self.s
        sources = self._sources()
        if s.mode == "gcp":
            # fail here, in one line, rather than in every worker
            from appliance.runtime.sources import open_live

            try:
                open_live(sources[0][1], sources[0][2], None).close()
            except Exception as exc:
                raise StartError(f"cannot capture on {sources[0][1]}: {exc}") from None
        host, port = s.http_addr
        from appliance.runtime.httpd import make_server

        try:
            self.server = make_server(host, port, self.status, self.healthy, self.metrics)
        except OSError as exc:
            raise StartError(f"cannot serve HTTP on {host}:{port}: {exc.strerror}") from None
        for i, src in enumerate(sources):
            p = self.ctx.Process(target=worker_main, name=f"appliance-worker-{i}",
                                 args=(s, i, self.stop, self.shed, self.reports, src, self.jsonl))
            p.start()
            self.procs.append(p)
        if s.mode == "aws":
            for src in sources:  # the workers own their sockets now
                for sock, _ in src[1]:
                    sock.close()
        from appliance.runtime.httpd import serve_in_thread

        serve_in_thread(self.server)
        log.info("appliance %s running: mode %s, %d workers, http %s", __version__, s.mode,
                 len(self.procs), s.http)
        if core.CORE == "python" and not core.REASON.startswith("APPLIANCE_CORE"):
            log.warning("running the pure-Python core, several times slower: %s", core.REASON)

    # -- run ------------------------------------------------------------------------------
    def run(self) -> int:
        def on_signal(signum, frame):
            self._term = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        while not self._term:
            self._collect(0.5)
            dead = [p for p in self.procs if not p.is_alive()]
            if dead:
                log.error("worker %s exited with code %s; stopping", dead[0].name, dead[0].exitcode)
                self.exit_code = 1
                break
            if self._memory_check():
                self.exit_code = EXIT_MEMORY
                break
        return self.shutdown()

    def shutdown(self) -> int:
        self.stop.set()
        deadline = time.time() + 60
        for p in self.procs:
            while p.is_alive() and time.time() < deadline:
                self._collect(0.1)
                p.join(0.1)
            if p.is_alive():
                log.error("worker %s did not stop in time; killing it", p.name)
                p.kill()
        self._collect(0.2)
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        return self.exit_code

    def _collect(self, timeout: float) -> None:
        try:
            rep = self.reports.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            self.latest[rep["id"]] = rep
            try:
                rep = self.reports.get_nowait()
            except queue.Empty:
                break
        self._update_rates()

    def _memory_check(self) -> bool:
        limit = self.s.mem_restart_mb << 20
        if not limit:
            return False
        total = self.total_rss()
        if total > limit * 0.85:
            if not self.shed.value:
                log.warning("memory %d MB is near AKTO_MEM_THRESH_RESTART=%d MB: shedding load",
                            total >> 20, self.s.mem_restart_mb)
            self.shed.value = 1
        else:
            self.shed.value = 0
        if total > limit:
            if not self.over_memory_since:
                self.over_memory_since = time.time()
            elif time.time() - self.over_memory_since > 10:
                log.error("memory %d MB still above AKTO_MEM_THRESH_RESTART=%d MB after shedding; "
                          "flushing and exiting for a restart", total >> 20, self.s.mem_restart_mb)
                return True
        else:
            self.over_memory_since = 0.0
        return False

    def total_rss(self) -> int:
        return rss_bytes() + sum(rss_bytes(p.pid) for p in self.procs if p.is_alive())

    # -- figures --------------------------------------------------------------------------
    def totals(self) -> dict:
        keys = ("packets", "bytes", "pairs", "pending", "connections", "active_connections",
                "malformed", "gaps", "orphan_responses", "decode_errors")
        t = {k: 0 for k in keys}
        for rep in self.latest.values():
            for k in keys:
                t[k] += rep["stats"].get(k, 0)
        return t

    def _vni_totals(self) -> dict:
        out: dict[str, list] = {}
        for rep in self.latest.values():
            for vni, (p, b, pairs) in rep.get("vni", {}).items():
                acc = out.setdefault(vni, [0, 0, 0])
                acc[0] += p
                acc[1] += b
                acc[2] += pairs
        return out

    def _update_rates(self) -> None:
        now = time.time()
        t = self.totals()
        vt = self._vni_totals()
        for vni, (p, _, _) in vt.items():
            prev = self.vni_last_seen.get(vni)
            if prev is None or p != prev[0]:
                self.vni_last_seen[vni] = (p, now)
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

    def status(self) -> dict:
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
        kafka = {"state": "disabled" if self.jsonl else "up", "brokers": s.kafka_brokers,
                 "topic": s.kafka_topic, "queued": 0, "spooled": 0, "spool_bytes": 0,
                 "delivered": 0, "failed": 0, "dropped": 0}
        states = []
        drops: dict[str, int] = {}
        workers = []
        for wid, rep in sorted(self.latest.items()):
            k = rep["kafka"]
            states.append(k["state"])
            for key in ("queued", "spooled", "spool_bytes", "delivered", "failed", "dropped"):
                kafka[key] += k.get(key, 0)
            st = rep["stats"]
            for reason, n in st.get("drops", {}).items():
                drops[reason] = drops.get(reason, 0) + n
            for reason, n in st.get("evicted", {}).items():
                if reason != "idle":
                    drops["evicted_" + reason] = drops.get("evicted_" + reason, 0) + n
            workers.append({"id": wid, "pid": rep["pid"], "rss_bytes": rep["rss_bytes"],
                            "buffer_bytes": rep["buffer_bytes"],
                            "active_connections": st["active_connections"],
                            "packets": st["packets"]})
        if "down" in states:
            kafka["state"] = "down"
        elif states:
            kafka["state"] = states[0]
        return {
            "version": __version__, "core": core.CORE, "mode": s.mode, "hostname": socket.gethostname(),
            "started_at": self.started, "now": now, "uptime_s": now - self.started,
            "workers": len(self.procs), "totals": self.totals(), "rates": dict(self.rates),
            "sessions": sessions,
            "memory": {"rss_bytes": self.total_rss(),
                       "limit_bytes": (s.mem_restart_mb << 20) or None,
                       "buffer_bytes": sum(w["buffer_bytes"] for w in workers),
                       "buffer_limit_bytes": s.buffer_mb << 20,
                       "active_connections": sum(w["active_connections"] for w in workers),
                       "max_connections": s.max_active_conn, "workers": workers},
            "kafka": kafka, "drops": drops,
        }

    def healthy(self) -> tuple[bool, str]:
        if self.stop.is_set():
            return False, "stopping"
        alive = sum(p.is_alive() for p in self.procs)
        if alive < len(self.procs):
            return False, f"{len(self.procs) - alive} worker(s) down"
        # every worker reports once its capture is open (and, in gcp mode, it has joined
        # the fanout group): until then traffic would be missed, or a flow split between
        # workers while the group is still forming
        if len(self.latest) < len(self.procs):
            return False, "starting"
        now = time.time()
        stale = [w for w, rep in self.latest.items() if now - rep["time"] > 5]
        if stale:
            return False, f"worker(s) {stale} not reporting"
        return True, "ok"

    def metrics(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        from prometheus_client.core import (CollectorRegistry, CounterMetricFamily,
                                            GaugeMetricFamily)

        st = self.status()

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
                m = st["memory"]
                yield GaugeMetricFamily("appliance_rss_bytes", "resident memory, all processes",
                                        value=m["rss_bytes"])
                yield GaugeMetricFamily("appliance_buffer_bytes", "reassembly and body bytes held",
                                        value=m["buffer_bytes"])
                k = st["kafka"]
                up = GaugeMetricFamily("appliance_kafka_up", "1 when the broker accepts messages")
                up.add_metric([], 1 if k["state"] == "up" else 0)
                yield up
                for key in ("delivered", "failed", "dropped"):
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

        reg = CollectorRegistry()
        reg.register(Collector())
        return generate_latest(reg), CONTENT_TYPE_LATEST
