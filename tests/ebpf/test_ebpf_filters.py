"""Who is traced: the pid allow-list (other processes' traffic never appears), the
collector's own process never, and a process whose libssl is another file in its own
mount namespace (a container) is found through /proc/PID/root after it execs."""

import os
import shutil
import urllib.request

import pytest

from appliance.ebpf.events import Direction
from ebpf_helpers import Peer, python_peer, write_script

pytestmark = pytest.mark.needs_bpf

REQ = b"GET /size/100 HTTP/1.1\r\nHost: t\r\n\r\n"


def pair(capture, netns, tmp_path, name, allow):
    d = tmp_path / name
    d.mkdir()
    col = capture.col if allow else None
    srv = Peer(python_peer(netns, "server", "--once", str(d)), col, wait_line="port")
    port = srv.first_line.split()[1]
    cli = Peer(python_peer(netns, "client", "--port", port, "--script",
                           write_script(d / "s.json", [(REQ, 1)] * 3), str(d)), col)
    return srv, cli


def test_pid_filter_and_self_exclusion(capture, netns, tmp_path):
    a_srv, a_cli = pair(capture, netns, tmp_path, "a", allow=True)
    b_srv, b_cli = pair(capture, netns, tmp_path, "b", allow=False)
    # a server outside the namespace, reached from this (the collector's) process
    c_srv = Peer(python_peer(None, "server", "--once", str(tmp_path)), capture.col, wait_line="port")
    capture.col.allow_pid(os.getpid())      # allowed, and still never traced: it is the collector
    try:
        for p in (a_srv, a_cli, b_srv, b_cli, c_srv):
            p.go()
        for p in (a_cli, b_cli, a_srv, b_srv):
            p.wait()
        port = c_srv.first_line.split()[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/close", timeout=10) as r:
            assert r.read() == b"ok"
        c_srv.wait()
        capture.until(lambda: all(any(r.closed for r in capture.of(p.pid))
                                  for p in (a_srv, a_cli, c_srv)))
    finally:
        for p in (a_srv, a_cli, b_srv, b_cli, c_srv):
            p.kill()
        capture.col.disallow_pid(os.getpid())
    pids = {e.key.tgid for e in capture.events if hasattr(e, "key")}
    assert a_srv.pid in pids and a_cli.pid in pids and c_srv.pid in pids
    assert b_srv.pid not in pids and b_cli.pid not in pids
    assert os.getpid() not in pids
    [a] = capture.of(a_srv.pid)
    assert a.stream(Direction.INGRESS) == REQ * 3


@pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare (util-linux) not installed")
def test_container_libssl_found_through_proc_root(capture, netns, tmp_path, cert):
    # the libssl this interpreter's _ssl module links (ssl is imported above)
    libssl = next(line.split()[-1] for line in open("/proc/self/maps")
                  if os.path.basename(line.split()[-1]).startswith("libssl.so"))
    copy = tmp_path / "libssl-copy.so"
    shutil.copy(libssl, copy)
    st = os.stat(copy)
    assert (st.st_dev, st.st_ino) != (os.stat(libssl).st_dev, os.stat(libssl).st_ino)

    srv = Peer(python_peer(netns, "server", "--once", "--tls", *cert, str(tmp_path)),
               capture.col, wait_line="port")
    port = srv.first_line.split()[1]
    script = write_script(tmp_path / "s.json", [(REQ, 1), (b"GET /close HTTP/1.1\r\nHost: t\r\n\r\n", 1)])
    client = " ".join(python_peer(None, "client", "--tls", "--port", port, "--script", script,
                                  str(tmp_path)))
    # its own mount namespace where the library path is the copy; the first line lets it
    # exec Python (which maps the copy), the second starts its traffic
    inner = f"mount --bind {copy} {libssl} && read x && exec {client}"
    cli = Peer(netns.cmd("unshare", "-m", "--propagation", "private", "sh", "-c", inner), capture.col)
    capture.col.rescan([srv.pid])
    try:
        srv.go()
        cli.go()    # -> exec: the collector hears of it and rescans that process
        capture.until(lambda: (st.st_dev, st.st_ino) in capture.col.tls.files, timeout=15)
        af = capture.col.tls.files[(st.st_dev, st.st_ino)]
        assert af.via == f"/proc/{cli.pid}/root{libssl}" and cli.pid in af.pids
        assert capture.col.execs_seen >= 1
        cli.go()
        cli.wait()
        srv.wait()
        capture.until(lambda: any(r.closed for r in capture.of(cli.pid)))
    finally:
        srv.kill()
        cli.kill()
    [view] = capture.of(cli.pid)
    assert view.conn.tls
    assert view.stream(Direction.EGRESS) == (tmp_path / "client.sent").read_bytes()
    assert view.stream(Direction.INGRESS) == (tmp_path / "client.recv").read_bytes()
