"""TLS plaintext through uprobes on OpenSSL: Python's ssl (OpenSSL 3, SSL_read_ex /
SSL_write_ex) and Debian's nginx + curl (SSL_read / SSL_write). The captured plaintext
must be exactly what each process passed to / got from the library, and no ciphertext
may come out for those sockets."""

import os
import shutil
import time

import pytest

from appliance.ebpf.events import Direction, Role
from ebpf_helpers import Peer, python_peer, write_script, data_events

pytestmark = pytest.mark.needs_bpf


def req(target):
    return b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % target.encode()


def test_python_ssl_plaintext_exact(capture, netns, tmp_path, cert):
    capture.col.rescan()  # this interpreter's libssl is already mapped by pytest
    srv = Peer(python_peer(netns, "server", "--once", "--tls", *cert, str(tmp_path)),
               capture.col, wait_line="port")
    port = srv.first_line.split()[1]
    sends = [(req("/a"), 1), (req("/size/70000"), 1), (req("/close"), 1)]
    cli = Peer(python_peer(netns, "client", "--tls", "--port", port, "--script",
                           write_script(tmp_path / "s.json", sends), str(tmp_path)), capture.col)
    try:
        assert capture.col.rescan([srv.pid, cli.pid]) >= 0
        assert capture.col.tls.files, "libssl not attached"
        srv.go()
        cli.go()
        cli.wait()
        srv.wait()
        capture.until(lambda: any(r.closed for r in capture.of(srv.pid))
                      and any(r.closed for r in capture.of(cli.pid)))
    finally:
        srv.kill()
        cli.kill()
    s_sent = (tmp_path / "server0.sent").read_bytes()
    s_recv = (tmp_path / "server0.recv").read_bytes()
    [server] = capture.of(srv.pid)
    [client] = capture.of(cli.pid)
    assert server.conn.tls and client.conn.tls
    assert server.open.role == Role.SERVER and client.open.role == Role.CLIENT
    assert server.stream(Direction.INGRESS) == s_recv == b"".join(b for b, _ in sends)
    assert server.stream(Direction.EGRESS) == s_sent
    assert client.stream(Direction.EGRESS) == s_recv
    assert client.stream(Direction.INGRESS) == s_sent
    for pid in (srv.pid, cli.pid):
        evs = data_events(capture.events, pid)
        assert evs and all(e.tls for e in evs), "ciphertext or plain records on a TLS socket"
    assert capture.col.stats()["cipher_bytes"] > len(s_sent)


NGINX_CONF = """
worker_processes 1;
daemon off;
user root;
error_log {d}/error.log;
pid {d}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {crt};
        ssl_certificate_key {key};
        root {d}/www;
        keepalive_requests 100;
    }}
}}
"""


@pytest.mark.skipif(shutil.which("nginx") is None or shutil.which("curl") is None,
                    reason="nginx/curl not installed: run scripts/system-deps.sh")
def test_nginx_and_curl_plaintext(capture, netns, tmp_path, cert):
    www = tmp_path / "www"
    www.mkdir()
    page = os.urandom(50000).hex().encode()   # 100 kB of text
    (www / "page.txt").write_bytes(page)
    (www / "small.txt").write_bytes(b"small\n")
    port = 18443
    (tmp_path / "nginx.conf").write_text(NGINX_CONF.format(d=tmp_path, port=port, crt=cert[0],
                                                            key=cert[1]))
    # nginx: master forks the worker; the allow-list follows the fork
    ngx = Peer(netns.cmd("sh", "-c", f"read x; exec nginx -c {tmp_path}/nginx.conf"), capture.col)
    ngx.go()
    try:
        for _ in range(100):
            if os.path.exists(tmp_path / "nginx.pid"):
                break
            time.sleep(0.05)
        time.sleep(0.2)
        capture.col.rescan()
        assert capture.col.tls.files
        curl = Peer(netns.cmd("sh", "-c", f"read x; exec curl -sk --http1.1 "
                              f"https://127.0.0.1:{port}/page.txt https://127.0.0.1:{port}/small.txt"),
                    capture.col)
        curl.go()
        out = curl.wait()
        assert out.encode() == page + b"small\n"
        workers = _children(ngx.pid)
        capture.until(lambda: any(r.closed for r in capture.of(curl.pid))
                      and any(r.closed for p in workers for r in capture.of(p)))
    finally:
        ngx.terminate()
    [client] = capture.of(curl.pid)
    views = [r for p in workers | {ngx.pid} for r in capture.of(p)]
    [server] = views
    assert client.conn.tls and server.conn.tls
    c_out, c_in = client.stream(Direction.EGRESS), client.stream(Direction.INGRESS)
    assert c_out.startswith(b"GET /page.txt HTTP/1.1\r\n") and b"GET /small.txt HTTP/1.1\r\n" in c_out
    # what nginx sent is what curl received, and holds the file exactly
    s_out = server.stream(Direction.EGRESS)
    s_in = server.stream(Direction.INGRESS)
    assert s_in == c_out
    assert s_out == c_in
    head, _, rest = s_out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: 100000" in head
    assert rest[:len(page)] == page and rest.endswith(b"small\n")
    # nginx peeks at the first byte (MSG_PEEK): not counted, so no ciphertext came out
    for pid in {curl.pid, *workers}:
        assert all(e.tls for e in data_events(capture.events, pid))


def _children(pid):
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.add(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out
