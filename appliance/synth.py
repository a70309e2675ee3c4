"""Build packets and captures in code: the demo, the tests and the benchmark use it.

Nothing here is on the hot path; it favours clarity.  ``Conversation`` plays a TCP
connection (handshake, segmented data both ways, FIN or RST) and yields frames with
timestamps; ``write_pcap`` / ``write_pcapng`` store them.
"""

from __future__ import annotations

import gzip
import ipaddress
import random
import struct
import zlib
from dataclasses import dataclass, field

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ip_bytes(addr: str) -> bytes:
    return ipaddress.ip_address(addr).packed


def ethernet(payload: bytes, ethertype: int, src_mac: bytes = b"\x02\0\0\0\0\x01",
             dst_mac: bytes = b"\x02\0\0\0\0\x02", vlans: tuple = (), pad_to: int = 0) -> bytes:
    hdr = dst_mac + src_mac
    for tpid, vid in vlans:
        hdr += struct.pack("!HH", tpid, vid)
    frame = hdr + struct.pack("!H", ethertype) + payload
    if len(frame) < pad_to:
        frame += b"\0" * (pad_to - len(frame))
    return frame


def ipv4(src: str, dst: str, proto: int, payload: bytes, ident: int = 0, flags_frag: int = 0x4000,
         ttl: int = 64) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, flags_frag, ttl, proto,
                      0, ip_bytes(src), ip_bytes(dst))
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    return hdr + payload


def ipv6(src: str, dst: str, nxt: int, payload: bytes, ext: bytes = b"") -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(ext) + len(payload), nxt, 64, ip_bytes(src),
                       ip_bytes(dst)) + ext + payload


def tcp(sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes = b"",
        window: int = 65535) -> bytes:
    return struct.pack("!HHIIHHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                       (5 << 12) | flags, window, 0, 0) + payload


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def vxlan(inner_frame: bytes, vni: int) -> bytes:
    return struct.pack("!II", 0x08000000, vni << 8) + inner_frame


def geneve(inner_frame: bytes, vni: int, options: bytes = b"", ethertype: int = 0x6558) -> bytes:
    return struct.pack("!BBHI", len(options) // 4, 0, ethertype, vni << 8) + options + inner_frame


def ip_packet(src: str, dst: str, proto: int, payload: bytes) -> bytes:
    if ":" in src:
        return ipv6(src, dst, proto, payload)
    return ipv4(src, dst, proto, payload)


def wrap_vxlan(frame: bytes, vni: int, outer_src: str = "10.99.0.1", outer_dst: str = "10.99.0.2",
               sport: int = 49152) -> bytes:
    """An AWS-VPC-traffic-mirroring-style packet: outer Ethernet/IPv4/UDP 4789/VXLAN."""
    return ethernet(ipv4(outer_src, outer_dst, 17, udp(sport, 4789, vxlan(frame, vni))), ETH_IPV4)


def fragment_ipv4(src: str, dst: str, proto: int, payload: bytes, size: int, ident: int) -> list:
    """Split an L4 payload into IPv4 fragments of `size` bytes (multiple of 8)."""
    out = []
    for off in range(0, len(payload), size):
        more = off + size < len(payload)
        out.append(ipv4(src, dst, proto, payload[off:off + size], ident=ident,
                        flags_frag=(0x2000 if more else 0) | (off >> 3)))
    return out


FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


@dataclass
class Conversation:
    """A TCP connection between a client and a server, producing timestamped frames."""

    client: str = "10.0.0.1"
    server: str = "10.0.0.2"
    cport: int = 40000
    sport: int = 80
    t: float = 1_700_000_000.0
    cseq: int = 1000
    sseq: int = 5000
    mss: int = 1448
    step: float = 0.0001
    link: str = "ethernet"  # ethernet | raw | sll | sll2 | null
    frames: list = field(default_factory=list)

    def _frame(self, src, dst, sp, dp, seq, ack, flags, payload):
        seg = tcp(sp, dp, seq, ack, flags, payload)
        pkt = ip_packet(src, dst, 6, seg)
        return link_frame(pkt, self.link, ":" in src)

    def emit(self, from_client: bool, flags: int, payload: bytes = b"", seq: int | None = None):
        if from_client:
            s = self.cseq if seq is None else seq
            f = self._frame(self.client, self.server, self.cport, self.sport, s, self.sseq, flags,
                            payload)
        else:
            s = self.sseq if seq is None else seq
            f = self._frame(self.server, self.client, self.sport, self.cport, s, self.cseq, flags,
                            payload)
        self.t += self.step
        self.frames.append((self.t, f))
        return f

    def handshake(self):
        self.emit(True, SYN)
        self.cseq += 1
        self.emit(False, SYN | ACK)
        self.sseq += 1
        self.emit(True, ACK)
        return self

    def send(self, from_client: bool, data: bytes, mss: int | None = None):
        mss = mss or self.mss
        for off in range(0, len(data), mss):
            chunk = data[off:off + mss]
            self.emit(from_client, PSH | ACK, chunk)
            if from_client:
                self.cseq += len(chunk)
            else:
                self.sseq += len(chunk)
        return self

    def segments(self, from_client: bool, data: bytes, mss: int | None = None) -> list:
        """(seq, chunk) pieces of `data` without emitting them (for reordering tests)."""
        mss = mss or self.mss
        base = self.cseq if from_client else self.sseq
        pieces = [((base + off) & 0xFFFFFFFF, data[off:off + mss])
                  for off in range(0, len(data), mss)]
        if from_client:
            self.cseq += len(data)
        else:
            self.sseq += len(data)
        return pieces

    def close(self):
        self.emit(True, FIN | ACK)
        self.cseq += 1
        self.emit(False, FIN | ACK)
        self.sseq += 1
        self.emit(True, ACK)
        return self

    def reset(self, from_client: bool = True):
        self.emit(from_client, RST | ACK)
        return self

    def exchange(self, request: bytes, response: bytes):
        self.send(True, request)
        self.send(False, response)
        return self


def link_frame(ip_pkt: bytes, link: str, v6: bool) -> bytes:
    etype = ETH_IPV6 if v6 else ETH_IPV4
    if link == "ethernet":
        return ethernet(ip_pkt, etype)
    if link == "raw":
        return ip_pkt
    if link == "sll":
        return struct.pack("!HHH8sH", 0, 1, 6, b"\x02\0\0\0\0\x01\0\0", etype) + ip_pkt
    if link == "sll2":
        return struct.pack("!HHIHBB8s", etype, 0, 2, 1, 0, 6, b"\x02\0\0\0\0\x01\0\0") + ip_pkt
    if link == "null":
        return struct.pack("<I", 24 if v6 else 2) + ip_pkt
    raise ValueError(link)


LINKTYPES = {"ethernet": 1, "raw": 101, "sll": 113, "sll2": 276, "null": 0}


def write_pcap(path, frames, linktype: int = 1, snaplen: int = 262144, nanosecond: bool = False):
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))
        for ts, frame in frames:
            sec = int(ts)
            frac = int(round((ts - sec) * (1e9 if nanosecond else 1e6)))
            cap = frame[:snaplen]
            f.write(struct.pack("<IIII", sec, frac, len(cap), len(frame)))
            f.write(cap)


def write_pcapng(path, frames, linktype: int = 1):
    def block(btype: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        n = 12 + len(body)
        return struct.pack("<II", btype, n) + body + struct.pack("<I", n)

    with open(path, "wb") as f:
        f.write(block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)))
        f.write(block(0x00000001, struct.pack("<HHI", linktype, 0, 262144)))
        for ts, frame in frames:
            t = int(round(ts * 1e6))
            f.write(block(0x00000006, struct.pack("<IIIII", 0, t >> 32, t & 0xFFFFFFFF,
                                                   len(frame), len(frame)) + frame))


# -- HTTP message helpers ---------------------------------------------------------------------
def http_request(method: str = "GET", target: str = "/", body: bytes = b"", headers=None,
                 version: str = "HTTP/1.1", host: str = "api.example.com") -> bytes:
    hdrs = [("Host", host)] + list(headers or [])
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in hdrs):
        hdrs.append(("Content-Length", str(len(body))))
    head = f"{method} {target} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs)
    return head.encode("latin-1") + b"\r\n" + body


def http_response(status: int = 200, body: bytes = b"", headers=None, reason: str | None = None,
                  version: str = "HTTP/1.1", length: bool = True) -> bytes:
    reasons = {100: "Continue", 101: "Switching Protocols", 200: "OK", 204: "No Content",
               206: "Partial Content", 304: "Not Modified", 404: "Not Found"}
    hdrs = list(headers or [])
    if length and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in hdrs):
        hdrs.append(("Content-Length", str(len(body))))
    head = f"{version} {status} {reason if reason is not None else reasons.get(status, 'OK')}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in hdrs)
    return head.encode("latin-1") + b"\r\n" + body


def chunked(body: bytes, size: int = 1000) -> bytes:
    out = b""
    for off in range(0, len(body), size):
        piece = body[off:off + size]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    return out + b"0\r\n\r\n"


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def deflate_bytes(data: bytes, raw: bool = False) -> bytes:
    c = zlib.compressobj(wbits=-15 if raw else 15)
    return c.compress(data) + c.flush()


# -- the embedded sample ----------------------------------------------------------------------
def sample_frames(seed: int = 7) -> list:
    """A small, varied capture: keep-alive, POST with JSON, gzip, chunked, 404, pipelining."""
    rng = random.Random(seed)
    frames = []
    t = 1_700_000_000.0
    users = b'[{"id":1,"name":"ada"},{"id":2,"name":"grace"}]'
    c = Conversation(client="10.0.1.15", server="10.0.2.20", cport=51514, sport=8080, t=t)
    c.handshake()
    c.exchange(http_request("GET", "/api/users?limit=2", headers=[("Accept", "application/json")]),
               http_response(200, users, [("Content-Type", "application/json")]))
    body = b'{"name":"linus","email":"linus@example.com"}'
    c.exchange(http_request("POST", "/api/users", body, [("Content-Type", "application/json")]),
               http_response(201, b'{"id":3}', [("Content-Type", "application/json")],
                             reason="Created"))
    page = (b"<html>" + b"hello mirrored world " * 200 + b"</html>")
    c.exchange(http_request("GET", "/index.html", headers=[("Accept-Encoding", "gzip")]),
               http_response(200, gzip_bytes(page), [("Content-Encoding", "gzip"),
                                                     ("Content-Type", "text/html")]))
    c.exchange(http_request("GET", "/api/stream"),
               http_response(200, chunked(b'{"event":"tick"}\n' * 50, 256),
                             [("Transfer-Encoding", "chunked"),
                              ("Content-Type", "application/x-ndjson")]))
    c.exchange(http_request("DELETE", "/api/users/9"), http_response(404, b"not found"))
    c.close()
    frames += c.frames
    c2 = Conversation(client="10.0.1.16", server="10.0.2.20", cport=51600, sport=8080,
                      t=t + 0.05)
    c2.handshake()
    reqs = b"".join(http_request("GET", f"/api/items/{i}") for i in range(3))
    c2.send(True, reqs)
    c2.send(False, b"".join(http_response(200, b'{"item":%d}' % i,
                                          [("Content-Type", "application/json")])
                            for i in range(3)))
    c2.close()
    frames += c2.frames
    frames.sort(key=lambda f: f[0] + rng.random() * 0)
    return frames
