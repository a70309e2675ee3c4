"""Workers never outlive their supervisor, and never hang at exit (issue 16).

Real processes, signals and sockets: the supervisor is killed with SIGKILL (what the OOM
killer or a crash does) while its workers hold traffic; a worker is stopped while nobody
reads its reports."""

import json
import os
import signal
import socket
import time

from appliance import synth
from appliance.demo import send_vxlan
from appliance.sinks.spool import Spool
from rt_helpers import alive, consume_all, records, wait_gone
from traffic import connections, key


def open_exchanges(n, net, cport=31000):
    """n connections: one answered exchange, then a request still in flight."""
    frames, done, pending = [], set(), set()
    for i in range(n):
        c = synth.Conversation(client=f"{net}.0.{i + 1}", server="10.70.0.10", cport=cport + i,
                               sport=8080, t=1_700_000_100.0 + i * 0.001)
        c.handshake()
        c.exchange(synth.http_request("GET", f"/open/{i}"), synth.http_response(200, b"o%d" % i))
        c.send(True, synth.http_request("POST", f"/in-flight/{i}", b"x" * 10))
        frames += c.frames
        done.add((c.client, str(c.cport), f"/open/{i}", "200", f"o{i}"))
        pending.add((c.client, str(c.cport), f"/in-flight/{i}"))
    return frames, done, pending


def spooled(path):
    out = []
    for name in sorted(os.listdir(path)):
        if name.startswith("worker-"):
            sp = Spool(os.path.join(path, name), 1 << 30)
            out += [json.loads(v) for _, _, v in sp.read(100_000)]
            sp.close()
    return out


def udp_port_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", port))  # no SO_REUSEPORT: fails while any socket holds it
        return True
    except OSError:
        return False
    finally:
        s.close()


def test_kill_9_of_the_supervisor_ends_its_workers_and_frees_the_port(broker, appliance):
    first_done, exp_done = connections(10, exchanges=2, client_net="10.71")
    open_frames, exp_open, exp_pending = open_exchanges(10, "10.72")
    app = appliance(["--mode", "aws", "--kafka", broker.bootstrap, "--workers", "2",
                     "--batch-time", "30"])  # a long linger: pairs wait in the producer
    workers = app.workers()
    assert len(workers) == 2
    send_vxlan(first_done + open_frames, app.udp, vni=12)
    app.wait_status(lambda s: s["totals"]["packets"] == len(first_done) + len(open_frames))

    app.proc.send_signal(signal.SIGKILL)
    app.proc.wait()
    took = wait_gone(workers, 2.0)
    assert took is not None, "workers still running 2 s after their supervisor died"
    assert udp_port_free(app.udp)
    # what they held (answered pairs waiting in the producer, requests still open) is in
    # the spool, nothing was delivered
    got = spooled(app.spool)
    assert {key(r) for r in got if r["is_pending"] == "false"} == exp_done | exp_open
    assert {(r["ip"], r["srcPort"], r["path"]) for r in got if r["is_pending"] == "true"} \
        == exp_pending
    assert len(got) == len(exp_done) + len(exp_open) + len(exp_pending)
    assert consume_all(broker.bootstrap, "akto.api.logs", timeout=3) == []

    # a new appliance on the same address and spool receives all further traffic, and
    # delivers what the old workers spooled
    again = appliance(["--mode", "aws", "--kafka", broker.bootstrap, "--workers", "2",
                       "--batch-time", "0.05", "--listen", f"127.0.0.1:{app.udp}",
                       "--spool-dir", str(app.spool)])
    later, exp_later = connections(20, exchanges=2, client_net="10.73")
    send_vxlan(later, app.udp, vni=12)
    total = len(got) + len(exp_later)
    recs = records(consume_all(broker.bootstrap, "akto.api.logs", expect=total, timeout=60))
    assert len(recs) == total
    assert exp_later <= {key(r) for r in recs}
    st = again.wait_status(lambda s: s["kafka"]["spooled"] == 0)
    assert st["totals"]["pairs"] == len(exp_later)
    assert again.terminate() == 0


def test_a_worker_exits_even_when_nobody_reads_its_reports(broker, appliance):
    app = appliance(["--mode", "aws", "--kafka", broker.bootstrap, "--workers", "1",
                     "--batch-time", "0.05"])
    [worker] = app.workers()
    os.kill(app.proc.pid, signal.SIGSTOP)  # the reader of the reports stops reading
    try:
        time.sleep(3)  # three reports queue up unread
        os.kill(worker, signal.SIGTERM)
        assert wait_gone([worker], 10) is not None
    finally:
        os.kill(app.proc.pid, signal.SIGCONT)
    # the supervisor notices, restarts the worker, and still stops cleanly
    app.wait_status(lambda s: s["restarts"] == 1 and s["memory"]["workers"][0]["state"]
                    == "running")
    assert app.terminate() == 0


def test_an_orphan_noticed_by_its_parent_check_still_exits(broker, appliance):
    """PR_SET_PDEATHSIG is backed by a parent check in the loop: a worker whose death
    signal was lost (here: ignored by stopping it across the supervisor's death) exits
    as soon as it runs again."""
    app = appliance(["--mode", "aws", "--kafka", broker.bootstrap, "--workers", "1"])
    [worker] = app.workers()
    os.kill(worker, signal.SIGSTOP)
    app.proc.send_signal(signal.SIGKILL)
    app.proc.wait()
    time.sleep(0.5)
    assert alive(worker)  # stopped, holding the death signal
    os.kill(worker, signal.SIGCONT)
    assert wait_gone([worker], 5) is not None
    assert udp_port_free(app.udp)
