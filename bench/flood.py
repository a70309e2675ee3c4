"""Continuous VXLAN floods for the runtime benchmarks and the stop test.

Frames are built from byte templates (no per-packet synth objects), so one Python process
sends a few hundred thousand datagrams a second.  Kinds:

- ``pairs``: complete keep-alive-less connections (handshake, one POST answered with a
  response naming the connection, FIN): every one should become a pair whose
  ``responsePayload`` is its path's number;
- ``syn-post``: a SYN and a partial POST (headers and the first 100 bytes of a 1,000-byte
  body), never finished: the million-connection flood;
- ``pipeline``: one connection, then pipelined requests that are never answered.

    python bench/flood.py --port 4789 --kind pairs [--count N] [--rate PPS]
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import time

VXLAN = b"\x08\0\0\0\0\0\x2a\0"  # VNI 42
ETH = b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x08\x00"
SYN, ACK, PSH, FIN = 0x02, 0x10, 0x08, 0x01
SERVER = socket.inet_aton("10.70.0.10")


def _frame(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
           payload: bytes = b"") -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 0x50, flags,
                      65535, 0, 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, src, dst)
    return VXLAN + ETH + ip + tcp


def client_of(n: int) -> tuple[bytes, int]:
    """A distinct client address and port for connection number n."""
    return struct.pack("!BBBB", 10, 100 + (n >> 24) % 100, (n >> 16) & 0xFF, (n >> 8) & 0xFF), \
        1024 + (n & 0xFF) * 200 + (n >> 24) % 200


def pairs(n: int) -> list[bytes]:
    cip, cport = client_of(n)
    body = b"%d" % n
    req = b"POST /f/%d HTTP/1.1\r\nHost: svc\r\nContent-Length: 2\r\n\r\n{}" % n
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    c, s = 1000, 5000
    return [
        _frame(cip, SERVER, cport, 8080, c, 0, SYN),
        _frame(SERVER, cip, 8080, cport, s, c + 1, SYN | ACK),
        _frame(cip, SERVER, cport, 8080, c + 1, s + 1, ACK),
        _frame(cip, SERVER, cport, 8080, c + 1, s + 1, PSH | ACK, req),
        _frame(SERVER, cip, 8080, cport, s + 1, c + 1 + len(req), PSH | ACK, resp),
        _frame(cip, SERVER, cport, 8080, c + 1 + len(req), s + 1 + len(resp), FIN | ACK),
        _frame(SERVER, cip, 8080, cport, s + 1 + len(resp), c + 2 + len(req), FIN | ACK),
    ]


def syn_post(n: int) -> list[bytes]:
    cip, cport = client_of(n)
    req = (b"POST /upload/%d HTTP/1.1\r\nHost: svc\r\nContent-Length: 1000\r\n\r\n" % n
           + b"b" * 100)
    return [_frame(cip, SERVER, cport, 8080, 1000, 0, SYN),
            _frame(cip, SERVER, cport, 8080, 1001, 5001, PSH | ACK, req)]


class Pipeline:
    """One connection's handshake, then request after request, never answered."""

    def __init__(self, body: int = 200):
        self.cip, self.cport = client_of(7)
        self.seq = 1001
        self.body = b"p" * body

    def start(self) -> list[bytes]:
        return [_frame(self.cip, SERVER, self.cport, 8080, 1000, 0, SYN),
                _frame(SERVER, self.cip, 8080, self.cport, 5000, 1001, SYN | ACK),
                _frame(self.cip, SERVER, self.cport, 8080, 1001, 5001, ACK)]

    def __call__(self, n: int) -> list[bytes]:
        req = (b"POST /pipelined/%d HTTP/1.1\r\nHost: svc\r\nContent-Length: %d\r\n\r\n"
               % (n, len(self.body)) + self.body)
        f = _frame(self.cip, SERVER, self.cport, 8080, self.seq, 5001, PSH | ACK, req)
        self.seq += len(req)
        return [f]


def flood(port: int, kind: str, count: int = 0, rate: float = 0.0, host: str = "127.0.0.1",
          first: int = 0, report=None) -> int:
    """Send until `count` connections (requests for ``pipeline``) are out (0: for ever);
    `rate` caps datagrams per second.  Returns datagrams sent."""
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    addr = (host, port)
    make = {"pairs": pairs, "syn-post": syn_post}.get(kind)
    if kind == "pipeline":
        make = Pipeline()
        for f in make.start():
            tx.sendto(f, addr)
    sent = 0
    t0 = time.monotonic()
    n = first
    try:
        while not count or n < first + count:
            for f in make(n):
                try:
                    tx.sendto(f, addr)
                except (BlockingIOError, ConnectionRefusedError):
                    continue
                sent += 1
            n += 1
            if rate and sent % 200 == 0:
                ahead = t0 + sent / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            if report is not None and n % 10000 == 0:
                report(n, sent)
    except KeyboardInterrupt:
        pass
    finally:
        tx.close()
    return sent


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--kind", choices=["pairs", "syn-post", "pipeline"], default="pairs")
    ap.add_argument("--count", type=int, default=0, help="connections (0: until interrupted)")
    ap.add_argument("--rate", type=float, default=0.0, help="datagrams per second (0: no cap)")
    ap.add_argument("--first", type=int, default=0)
    args = ap.parse_args()
    sent = flood(args.port, args.kind, args.count, args.rate, first=args.first)
    print(sent, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
