"""Delivery through the spool against a real broker (Tansu): a slow broker, a crash
during an outage (issue 12, deliver 4)."""

import os
import socket
import subprocess
import threading
import time

import pytest

from appliance.broker import free_port, tansu_binary
from appliance.demo import send_vxlan
from rt_helpers import consume_all, records
from traffic import connections, key


class ThrottledProxy:
    """A TCP proxy whose client-to-server direction carries at most `rate` bytes/s (all
    connections together): a broker behind a slow link."""

    def __init__(self, upstream: int, rate: float):
        self.upstream = upstream
        self.rate = rate
        self.lock = threading.Lock()
        self.next_free = time.monotonic()
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.socks: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.upstream))
            self.socks += [c, u]
            threading.Thread(target=self._pump, args=(c, u, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c, False), daemon=True).start()

    def _pump(self, src, dst, throttled):
        try:
            while True:
                data = src.recv(2048 if throttled else 65536)
                if not data:
                    break
                if throttled and self.rate:
                    with self.lock:
                        now = time.monotonic()
                        start = max(now, self.next_free)
                        self.next_free = start + len(data) / self.rate
                    time.sleep(max(0.0, start - now))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.closed = True
        self.lsock.close()
        for s in self.socks:
            s.close()


@pytest.fixture
def slow_broker(tmp_path):
    """Tansu listening on one port, advertising a throttled proxy's port."""
    port = free_port()
    proxy = ThrottledProxy(port, rate=50_000)
    url = f"tcp://127.0.0.1:{port}"
    log = open(tmp_path / "tansu.log", "wb")
    proc = subprocess.Popen([tansu_binary(), "broker", "--listener-url", url,
                             "--advertised-listener-url", f"tcp://127.0.0.1:{proxy.port}"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                assert time.time() < deadline and proc.poll() is None, "Tansu did not start"
                time.sleep(0.1)
        yield proxy
    finally:
        proxy.close()
        proc.terminate()
        proc.wait(10)
        log.close()


def test_a_broker_throttled_to_50_kb_s_then_restored_loses_and_duplicates_nothing(
        slow_broker, appliance):
    # incompressible bodies: the link, not lz4, is the limit
    frames, expected = connections(150, exchanges=2, client_net="10.93",
                                   body=lambda i, j: os.urandom(400).hex().encode())
    bootstrap = f"127.0.0.1:{slow_broker.port}"
    app = appliance(["--mode", "aws", "--kafka", bootstrap, "--workers", "1",
                     "--batch-time", "0.05"], env={"APPLIANCE_QUEUE_MAX": "100"})
    send_vxlan(frames, app.udp, vni=31)
    # about 300 KB of records behind a 50 KB/s link: the in-memory queue is full and the
    # rest waits in the spool
    st = app.wait_status(lambda s: s["kafka"]["spooled"] > 0, timeout=30)
    time.sleep(3)
    assert app.status()["kafka"]["delivered"] < len(expected)
    slow_broker.rate = 0  # restored
    st = app.wait_status(lambda s: s["kafka"]["delivered"] >= len(expected)
                         and s["kafka"]["spooled"] == 0, timeout=90)
    assert st["kafka"]["dropped"] == 0 and st["kafka"]["corrupt"] == 0
    recs = records(consume_all(bootstrap, "akto.api.logs", expect=len(expected), timeout=60))
    assert len(recs) == len(expected)  # no duplicates
    assert {key(r) for r in recs} == expected  # none lost
    assert app.terminate() == 0


def test_kill_9_during_an_outage_loses_nothing_and_resends_at_most_a_batch(broker, appliance):
    frames, expected = connections(300, exchanges=2, client_net="10.94")
    app = appliance(["--mode", "aws", "--kafka", broker.bootstrap, "--workers", "2",
                     "--batch-time", "0.05"])
    broker.stop()  # the outage
    send_vxlan(frames, app.udp, vni=32)
    app.wait_status(lambda s: s["kafka"]["spooled"] == len(expected), timeout=60)
    app.kill()  # kill -9: supervisor and workers at once
    broker.start()
    again = appliance(["--mode", "aws", "--kafka", broker.bootstrap, "--workers", "2",
                       "--batch-time", "0.05", "--spool-dir", str(app.spool)])
    recs = records(consume_all(broker.bootstrap, "akto.api.logs", expect=len(expected),
                               timeout=120))
    assert {key(r) for r in recs} == expected  # 0 lost
    assert len(recs) - len(expected) <= 500  # at most one drain batch again
    st = again.wait_status(lambda s: s["kafka"]["spooled"] == 0)
    assert st["kafka"]["corrupt"] == 0
    assert again.terminate() == 0
