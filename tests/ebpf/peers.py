"""HTTP peers for the eBPF probe tests, run as separate processes (the collector never
traces its own process). Each waits for a line on stdin before touching the network, so
the test can allow-list its pid first, and logs every byte its socket (or TLS) calls
moved to files: the ground truth the captured streams are compared with.

    peers.py server --port 0 [--tls CERT KEY] LOG_DIR     prints "port N", then "go" on stdin
    peers.py client --port N --script FILE [--tls] [--write-size N] LOG_DIR
        FILE: JSON list of [request_bytes_latin1, expected_responses] "sends"; each send
        is written in pieces of --write-size, then that many responses are read.

Server responses: `GET /size/N` -> N bytes of a fixed pattern; `/close` adds
`Connection: close` and closes after the response; a request body (Content-Length) is
read and its length echoed in `X-Got`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import sys


def pattern(n: int) -> bytes:
    unit = bytes(range(33, 127))
    return (unit * (n // len(unit) + 1))[:n]


class Logged:
    """A connected socket (plain or TLS) that records what it sent and received."""

    def __init__(self, sock: socket.socket, log_dir: str, name: str) -> None:
        self.sock = sock
        self.sent = open(os.path.join(log_dir, name + ".sent"), "wb")
        self.recv_log = open(os.path.join(log_dir, name + ".recv"), "wb")
        self.buf = b""

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = self.sock.send(view)
            self.sent.write(view[:n])
            view = view[n:]
        self.sent.flush()

    def send_vec(self, parts: list[bytes]) -> None:
        """One sendmsg() with one iovec entry per part (then send() for any rest)."""
        data = b"".join(parts)
        n = self.sock.sendmsg(parts)
        self.sent.write(data[:n])
        self.sent.flush()
        if n < len(data):
            self.send(data[n:])

    def recv_more(self) -> bool:
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.recv_log.write(chunk)
        self.recv_log.flush()
        self.buf += chunk
        return True

    def read_message(self) -> tuple[bytes, bytes] | None:
        """One HTTP message (head, body) framed by Content-Length."""
        while b"\r\n\r\n" not in self.buf:
            if not self.recv_more():
                return None
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v.strip())
        self.buf = rest
        while len(self.buf) < length:
            if not self.recv_more():
                return None
        body, self.buf = self.buf[:length], self.buf[length:]
        return head, body

    def close(self) -> None:
        self.sent.close()
        self.recv_log.close()
        self.sock.close()


def serve(args: argparse.Namespace) -> None:
    ls = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((args.host, args.port))
    ls.listen(16)
    ctx = None
    if args.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls[0], args.tls[1])
    print("port", ls.getsockname()[1], flush=True)
    sys.stdin.readline()
    n = 0
    while True:
        conn, _ = ls.accept()
        if ctx is not None:
            conn = ctx.wrap_socket(conn, server_side=True)
        peer = Logged(conn, args.log_dir, f"server{n}")
        n += 1
        while True:
            msg = peer.read_message()
            if msg is None:
                break
            head, body = msg
            target = head.split(b" ")[1].decode()
            size = int(target.rsplit("/", 1)[1]) if target.startswith("/size/") else 2
            payload = pattern(size) if target.startswith("/size/") else b"ok"
            close = target == "/close"
            resp = (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Got: %d\r\n%s\r\n"
                    % (len(payload), len(body), b"Connection: close\r\n" if close else b""))
            if args.sendmsg:
                peer.send_vec([resp, payload])
            elif args.one_write:
                peer.send(resp + payload)
            else:
                peer.send(resp)
                for i in range(0, len(payload), args.write_size):
                    peer.send(payload[i:i + args.write_size])
            if close:
                break
        peer.close()
        if args.once:
            return


def client(args: argparse.Namespace) -> None:
    with open(args.script) as f:
        script = json.load(f)
    sys.stdin.readline()
    sock = socket.create_connection((args.host, args.port))
    if args.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        sock = ctx.wrap_socket(sock)
    peer = Logged(sock, args.log_dir, "client")
    for i, (blob, expect) in enumerate(script):
        if i == args.pause_before:
            print("paused", flush=True)
            sys.stdin.readline()
        data = blob.encode("latin-1")
        for i in range(0, len(data), args.write_size):
            peer.send(data[i:i + args.write_size])
        for _ in range(expect):
            if peer.read_message() is None:
                raise SystemExit("server closed early")
    peer.close()
    print("done", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--tls", nargs=2)
    s.add_argument("--once", action="store_true", help="exit after one connection")
    s.add_argument("--one-write", action="store_true", help="head and body in one send")
    s.add_argument("--sendmsg", action="store_true", help="head and body in one sendmsg, two iovecs")
    s.add_argument("--write-size", type=int, default=1 << 30)
    s.add_argument("log_dir")
    c = sub.add_parser("client")
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--script", required=True)
    c.add_argument("--tls", action="store_true")
    c.add_argument("--write-size", type=int, default=1 << 30)
    c.add_argument("--pause-before", type=int, default=-1,
                   help="before this send, print 'paused' and wait for a line")
    c.add_argument("log_dir")
    args = ap.parse_args()
    serve(args) if args.cmd == "server" else client(args)


if __name__ == "__main__":
    main()
