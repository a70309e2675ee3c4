"""Packet decoding: link layer -> (tunnels) -> IP -> TCP, sans-IO.

Hand-written with ``struct`` because it is the measured hot path: dpkt decodes at
~0.1M packets/s on this class of machine, a flat ``unpack_from`` decoder at >1M/s
(DESIGN.md).  The decoder allocates nothing per packet but the payload slice and
the result tuple.

``Decoder.decode(ts, linktype, buf)`` returns ``(vni, src, dst, sport, dport, seq,
ack, flags, payload)`` for a TCP segment, or ``None`` (not TCP, malformed, or a
fragment still waiting for its siblings).  Every ``None`` is counted by reason in
``Decoder.counts``.
"""

from __future__ import annotations

from bisect import bisect_left
from struct import Struct
from typing import Any

# Link types (https://www.tcpdump.org/linktypes.html)
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_RAW_ALT12 = 12
LINKTYPE_RAW_ALT14 = 14
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
# private: datagrams received on the VXLAN / GENEVE UDP socket (tunnel header first)
LINKTYPE_VXLAN_PAYLOAD = 0x7FFF0001
LINKTYPE_GENEVE_PAYLOAD = 0x7FFF0002
SUPPORTED_LINKTYPES = {
    LINKTYPE_NULL: "BSD loopback",
    LINKTYPE_ETHERNET: "Ethernet",
    LINKTYPE_RAW: "raw IP",
    LINKTYPE_RAW_ALT12: "raw IP",
    LINKTYPE_RAW_ALT14: "raw IP",
    LINKTYPE_LOOP: "OpenBSD loopback",
    LINKTYPE_LINUX_SLL: "Linux cooked (SLL)",
    LINKTYPE_IPV4: "raw IPv4",
    LINKTYPE_IPV6: "raw IPv6",
    LINKTYPE_LINUX_SLL2: "Linux cooked v2 (SLL2)",
}

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_VLAN = 0x8100
ETH_QINQ = 0x88A8
ETH_QINQ_OLD = 0x9100
ETH_MPLS_UC = 0x8847
ETH_MPLS_MC = 0x8848
ETH_TEB = 0x6558  # transparent Ethernet bridging (GENEVE inner Ethernet)
ETH_PPPOE_SESSION = 0x8864
PPP_IPV4 = 0x0021
PPP_IPV6 = 0x0057

PROTO_TCP = 6
PROTO_UDP = 17
PROTO_IPIP = 4
PROTO_IPV6 = 41

TEREDO_PORT = 3544

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10

_H = Struct("!H")
_HH = Struct("!HH")
_I = Struct("!I")
_TCP = Struct("!HHIIH")
_UDP = Struct("!HHH")
_IPV4_FRAG = Struct("!HH")  # id, flags/offset
_IPV6_FRAG = Struct("!HI")  # offset/flags, id

# IPv6 extension headers that use the generic (next, len) layout
_IPV6_EXT = frozenset((0, 43, 60, 135, 139, 140))
_IPV6_FRAGMENT = 44
_IPV6_AH = 51
_IPV6_NONE = 59

MAX_TUNNEL_DEPTH = 4

# what decode() returns for a TCP segment:
# (vni, src ip, dst ip, src port, dst port, seq, ack, flags, payload)
Segment = tuple[int, bytes, bytes, int, int, int, int, int, bytes]
FragKey = tuple[int, bytes, bytes, int, int, int]


def _fast_ether_tcp(buf: bytes, o: int, vni: int, last: int) -> Segment | None:
    """The common case, inlined: Ethernet at ``o`` / IPv4 without options or fragmentation
    / TCP, in a frame that ends at ``last`` (frames may lie in a larger batch buffer).
    Returns the decode tuple, or None to fall back to the general path (which handles
    every other case, and counts what it rejects).  Fields are read byte by byte: that
    compiles to plain C, where a struct call would box every field."""
    if (last >= o + 54 and buf[o + 12] == 8 and buf[o + 13] == 0 and buf[o + 14] == 0x45
            and buf[o + 23] == 6 and not buf[o + 20] & 0x3F and not buf[o + 21]):
        end = o + 14 + ((buf[o + 16] << 8) | buf[o + 17])
        t = o + 34
        doff = t + ((buf[t + 12] >> 4) << 2)
        if doff >= o + 54 and doff <= end <= last:
            return (vni, buf[o + 26:o + 30], buf[o + 30:o + 34],
                    (buf[t] << 8) | buf[t + 1], (buf[t + 2] << 8) | buf[t + 3],
                    (buf[t + 4] << 24) | (buf[t + 5] << 16) | (buf[t + 6] << 8) | buf[t + 7],
                    (buf[t + 8] << 24) | (buf[t + 9] << 16) | (buf[t + 10] << 8) | buf[t + 11],
                    ((buf[t + 12] << 8) | buf[t + 13]) & 0x1FF, buf[doff:end])
    return None


class FragmentCache:
    """IPv4/IPv6 fragment reassembly, bounded in datagrams and bytes, timed on packet time."""

    __slots__ = ("pending", "max_datagrams", "max_bytes", "timeout", "bytes", "counts")

    def __init__(self, counts: dict[str, int], max_datagrams: int = 4096,
                 max_bytes: int = 32 << 20, timeout: float = 30.0) -> None:
        # key -> [first ts, sorted offsets, data by position, total length]
        self.pending: dict[FragKey, list[Any]] = {}
        self.max_datagrams = max_datagrams
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.bytes = 0
        self.counts = counts

    def add(self, ts: float, key: FragKey, offset: int, more: bool, data: bytes) -> bytes | None:
        """Add one fragment; return the whole payload when complete, else None.

        Fragments are kept ordered by offset as they arrive (bisect), so completeness is
        one pass and arrival order never matters; on overlap the first copy wins."""
        entry = self.pending.get(key)
        if entry is None:
            if len(self.pending) >= self.max_datagrams or self.bytes + len(data) > self.max_bytes:
                self.expire(ts, force=True)
            # first ts, sorted offsets, data by position, total length
            entry = self.pending[key] = [ts, [], [], -1]
        offs, chunks = entry[1], entry[2]
        i = bisect_left(offs, offset)
        if i < len(offs) and offs[i] == offset:
            self.counts["fragment_duplicate"] = self.counts.get("fragment_duplicate", 0) + 1
            return None
        offs.insert(i, offset)
        chunks.insert(i, data)
        self.bytes += len(data)
        if not more:
            entry[3] = offset + len(data)
        total = entry[3]
        if total < 0:
            return None
        # complete when the fragments tile [0, total) without holes
        pos = 0
        for off, chunk in zip(offs, chunks):
            if off > pos:
                return None
            end = off + len(chunk)
            if end > pos:
                pos = end
        if pos < total:
            return None
        del self.pending[key]
        out = bytearray(total)
        for off, chunk in zip(reversed(offs), reversed(chunks)):  # lower offsets win
            out[off:off + len(chunk)] = chunk[:max(0, total - off)]
            self.bytes -= len(chunk)
        self.counts["fragments_reassembled"] = self.counts.get("fragments_reassembled", 0) + 1
        return bytes(out[:total])

    def expire(self, now: float, force: bool = False) -> None:
        limit = now - self.timeout
        for key in list(self.pending):
            entry = self.pending[key]
            if force or entry[0] < limit:
                del self.pending[key]
                self.bytes -= sum(len(c) for c in entry[2])
                self.counts["fragments_expired"] = self.counts.get("fragments_expired", 0) + 1
                if force and len(self.pending) < self.max_datagrams // 2:
                    break


class Decoder:
    """Stateful only for IP fragments; everything else is a pure function of the bytes."""

    def __init__(self, vxlan_port: int = 4789, geneve_port: int = 6081, teredo: bool = True) -> None:
        self.vxlan_port = vxlan_port
        self.geneve_port = geneve_port
        self.teredo = teredo
        self.counts: dict[str, int] = {}
        self.frags = FragmentCache(self.counts)

    def _count(self, reason: str) -> None:
        c = self.counts
        c[reason] = c.get(reason, 0) + 1

    # -- link layer -------------------------------------------------------------------
    def decode(self, ts: float, linktype: int, buf: bytes) -> Segment | None:
        r = self._fast(linktype, buf, 0, len(buf))
        if r is not None:
            return r
        return self._general(ts, linktype, buf)

    def decode_at(self, ts: float, linktype: int, buf: bytes, start: int, last: int) -> Segment | None:
        """``decode(ts, linktype, buf[start:last])``, without copying the frame out of a
        batch buffer first when it has one of the common shapes."""
        r = self._fast(linktype, buf, start, last)
        if r is not None:
            return r
        return self._general(ts, linktype, buf[start:last])

    def _fast(self, linktype: int, buf: bytes, o: int, last: int) -> Segment | None:
        """Ethernet/IPv4/TCP, plain or in VXLAN, decoded in place; None: not that shape."""
        if linktype == LINKTYPE_ETHERNET:
            r = _fast_ether_tcp(buf, o, 0, last)
            if r is not None:
                return r
            # an outer Ethernet/IPv4/UDP to the VXLAN port around a plain inner frame
            if (last - o >= 104 and buf[o + 23] == 17 and buf[o + 14] == 0x45
                    and buf[o + 12] == 8 and buf[o + 13] == 0 and not buf[o + 20] & 0x3F
                    and not buf[o + 21] and (buf[o + 36] << 8 | buf[o + 37]) == self.vxlan_port
                    and buf[o + 42] & 0x08):
                return _fast_ether_tcp(buf, o + 50, (buf[o + 46] << 16) | (buf[o + 47] << 8)
                                       | buf[o + 48], last)
        elif linktype == LINKTYPE_VXLAN_PAYLOAD and last - o >= 8 and buf[o] & 0x08:
            return _fast_ether_tcp(buf, o + 8, (buf[o + 4] << 16) | (buf[o + 5] << 8) | buf[o + 6],
                                   last)
        return None

    def _general(self, ts: float, linktype: int, buf: bytes) -> Segment | None:
        """Every link type and encapsulation (the fast shapes were tried before)."""
        if linktype == LINKTYPE_ETHERNET:
            return self._ether(ts, buf, 0, 0, 0)
        if linktype in (LINKTYPE_RAW, LINKTYPE_RAW_ALT12, LINKTYPE_RAW_ALT14,
                        LINKTYPE_IPV4, LINKTYPE_IPV6):
            return self._ip(ts, buf, 0, len(buf), 0, 0)
        if linktype == LINKTYPE_LINUX_SLL:
            if len(buf) < 16:
                return self._bad("malformed_link")
            return self._ethertype(ts, buf, 16, _H.unpack_from(buf, 14)[0], 0, 0)
        if linktype == LINKTYPE_LINUX_SLL2:
            if len(buf) < 20:
                return self._bad("malformed_link")
            return self._ethertype(ts, buf, 20, _H.unpack_from(buf, 0)[0], 0, 0)
        if linktype == LINKTYPE_VXLAN_PAYLOAD:  # UDP payload read from a socket on 4789
            return self._vxlan(ts, buf, 0, len(buf), 0, 0)
        if linktype == LINKTYPE_GENEVE_PAYLOAD:
            return self._geneve(ts, buf, 0, len(buf), 0, 0)
        if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
            if len(buf) < 4:
                return self._bad("malformed_link")
            # NULL is in the capturing host's byte order: accept either
            fam = buf[0] | buf[3]
            if fam == 2:
                return self._ip(ts, buf, 4, len(buf), 0, 0)
            if fam in (10, 24, 28, 30):
                return self._ip(ts, buf, 4, len(buf), 0, 0)
            self._count("not_ip")
            return None
        self._count("unsupported_linktype")
        return None

    def _bad(self, reason: str) -> Segment | None:
        """Count a malformed packet (by reason and in total); the decode result: None."""
        c = self.counts
        c[reason] = c.get(reason, 0) + 1
        c["malformed"] = c.get("malformed", 0) + 1
        return None

    def _ether(self, ts: float, buf: bytes, off: int, vni: int, depth: int) -> Segment | None:
        if len(buf) < off + 14:
            return self._bad("malformed_link")
        return self._ethertype(ts, buf, off + 14, _H.unpack_from(buf, off + 12)[0], vni, depth)

    def _ethertype(self, ts: float, buf: bytes, off: int, etype: int, vni: int,
                   depth: int) -> Segment | None:
        while etype in (ETH_VLAN, ETH_QINQ, ETH_QINQ_OLD):
            if len(buf) < off + 4:
                return self._bad("malformed_link")
            etype = _H.unpack_from(buf, off + 2)[0]
            off += 4
        if etype == ETH_IPV4 or etype == ETH_IPV6:
            return self._ip(ts, buf, off, len(buf), vni, depth)
        if etype == ETH_PPPOE_SESSION:
            # PPPoE session: version/type, code, session id, length, then the PPP protocol
            if len(buf) < off + 8:
                return self._bad("malformed_link")
            proto = _H.unpack_from(buf, off + 6)[0]
            if proto == PPP_IPV4 or proto == PPP_IPV6:
                return self._ip(ts, buf, off + 8, len(buf), vni, depth)
            self._count("not_ip")
            return None
        if etype == ETH_MPLS_UC or etype == ETH_MPLS_MC:
            while True:
                if len(buf) < off + 4:
                    return self._bad("malformed_link")
                bottom = buf[off + 2] & 1
                off += 4
                if bottom:
                    break
            if len(buf) <= off:
                return self._bad("malformed_link")
            nib = buf[off] >> 4
            if nib == 4 or nib == 6:
                return self._ip(ts, buf, off, len(buf), vni, depth)
            if nib == 0:  # pseudowire control word, then Ethernet
                return self._ether(ts, buf, off + 4, vni, depth)
            return self._ether(ts, buf, off, vni, depth)
        self._count("not_ip")
        return None

    # -- network layer ----------------------------------------------------------------
    def _ip(self, ts: float, buf: bytes, off: int, end: int, vni: int,
            depth: int) -> Segment | None:
        if end - off < 1:
            return self._bad("malformed_ip")
        ver = buf[off] >> 4
        if ver == 4:
            if end - off < 20:
                return self._bad("malformed_ip")
            ihl = (buf[off] & 15) << 2
            total = _H.unpack_from(buf, off + 2)[0]
            if total == 0 and end - off >= ihl:
                # TCP segmentation offload: the NIC fills the length in later, so captures
                # taken on the sending host carry 0; the captured length is the datagram
                total = end - off
                self._count("ipv4_length_zero")
            if ihl < 20 or total < ihl:
                return self._bad("malformed_ip")
            if off + total < end:
                end = off + total  # trim link-layer padding
            elif off + total > end:
                self._count("truncated_ip")  # snaplen: keep what was captured
            ident, frag = _IPV4_FRAG.unpack_from(buf, off + 4)
            proto = buf[off + 9]
            src = buf[off + 12:off + 16]
            dst = buf[off + 16:off + 20]
            l4 = off + ihl
            if frag & 0x3FFF:  # MF set or offset non-zero
                data = self.frags.add(ts, (4, src, dst, ident, proto, vni),
                                      (frag & 0x1FFF) << 3, bool(frag & 0x2000), buf[l4:end])
                if data is None:
                    return None
                return self._l4(ts, data, 0, len(data), proto, src, dst, vni, depth)
            return self._l4(ts, buf, l4, end, proto, src, dst, vni, depth)
        if ver == 6:
            if end - off < 40:
                return self._bad("malformed_ip")
            plen = _H.unpack_from(buf, off + 4)[0]
            nxt = buf[off + 6]
            src = buf[off + 8:off + 24]
            dst = buf[off + 24:off + 40]
            p = off + 40
            if plen and p + plen < end:
                end = p + plen
            while True:
                if nxt in _IPV6_EXT:
                    if end - p < 8:
                        return self._bad("malformed_ip")
                    nxt, hlen = buf[p], (buf[p + 1] + 1) << 3
                    p += hlen
                elif nxt == _IPV6_AH:
                    if end - p < 8:
                        return self._bad("malformed_ip")
                    nxt, hlen = buf[p], (buf[p + 1] + 2) << 2
                    p += hlen
                elif nxt == _IPV6_FRAGMENT:
                    if end - p < 8:
                        return self._bad("malformed_ip")
                    fnext = buf[p]
                    offflags, ident = _IPV6_FRAG.unpack_from(buf, p + 2)
                    p += 8
                    if offflags & 0xFFF9 == 0:  # atomic fragment: offset 0, no M flag
                        nxt = fnext
                        continue
                    data = self.frags.add(ts, (6, src, dst, ident, fnext, vni),
                                          offflags & 0xFFF8, bool(offflags & 1), buf[p:end])
                    if data is None:
                        return None
                    return self._l4(ts, data, 0, len(data), fnext, src, dst, vni, depth)
                else:
                    break
                if p > end:
                    return self._bad("malformed_ip")
            return self._l4(ts, buf, p, end, nxt, src, dst, vni, depth)
        return self._bad("malformed_ip")

    # -- transport layer and tunnels --------------------------------------------------
    def _l4(self, ts: float, buf: bytes, off: int, end: int, proto: int, src: bytes, dst: bytes,
            vni: int, depth: int) -> Segment | None:
        if proto == PROTO_TCP:
            if end - off < 20:
                return self._bad("malformed_tcp")
            sport, dport, seq, ack, offflags = _TCP.unpack_from(buf, off)
            doff = (offflags >> 12) << 2
            if doff < 20 or off + doff > end:
                return self._bad("malformed_tcp")
            return (vni, src, dst, sport, dport, seq, ack, offflags & 0x1FF, buf[off + doff:end])
        if proto == PROTO_UDP:
            if end - off < 8:
                return self._bad("malformed_udp")
            sport, dport, ulen = _UDP.unpack_from(buf, off)
            p = off + 8
            if depth >= MAX_TUNNEL_DEPTH:
                self._count("tunnel_too_deep")
                return None
            if dport == self.vxlan_port:
                return self._vxlan(ts, buf, p, end, vni, depth)
            if dport == self.geneve_port:
                return self._geneve(ts, buf, p, end, vni, depth)
            if self.teredo:
                if dport == TEREDO_PORT or sport == TEREDO_PORT:
                    return self._teredo(ts, buf, p, end, vni, depth)
                # Teredo between a client and a relay uses any port: recognise it by a
                # well-formed IPv6 header whose payload length fills the datagram exactly
                if (end - p >= 40 and buf[p] >> 4 == 6
                        and _H.unpack_from(buf, p + 4)[0] + 40 == end - p):
                    return self._ip(ts, buf, p, end, vni, depth + 1)
            self._count("not_tcp")
            return None
        if proto == PROTO_IPIP or proto == PROTO_IPV6:
            if depth >= MAX_TUNNEL_DEPTH:
                self._count("tunnel_too_deep")
                return None
            return self._ip(ts, buf, off, end, vni, depth + 1)
        self._count("not_tcp")
        return None

    def _vxlan(self, ts: float, buf: bytes, p: int, end: int, vni: int,
               depth: int) -> Segment | None:
        if end - p < 8 or not buf[p] & 0x08:
            return self._bad("malformed_vxlan")
        inner_vni = _I.unpack_from(buf, p + 4)[0] >> 8
        return self._ether(ts, buf, p + 8, vni or inner_vni, depth + 1)

    def _geneve(self, ts: float, buf: bytes, p: int, end: int, vni: int,
                depth: int) -> Segment | None:
        if end - p < 8:
            return self._bad("malformed_geneve")
        optlen = (buf[p] & 0x3F) << 2
        ptype = _H.unpack_from(buf, p + 2)[0]
        inner_vni = _I.unpack_from(buf, p + 4)[0] >> 8
        q = p + 8 + optlen
        if q > end:
            return self._bad("malformed_geneve")
        if ptype == ETH_TEB:
            return self._ether(ts, buf, q, vni or inner_vni, depth + 1)
        return self._ethertype(ts, buf, q, ptype, vni or inner_vni, depth + 1)

    def _teredo(self, ts: float, buf: bytes, p: int, end: int, vni: int,
                depth: int) -> Segment | None:
        # Optional authentication (0x0001) and origin indication (0x0000) headers.
        while end - p >= 2 and buf[p] == 0:
            if buf[p + 1] == 1:
                if end - p < 4:
                    return self._bad("malformed_teredo")
                p += 4 + buf[p + 2] + buf[p + 3] + 9
            elif buf[p + 1] == 0:
                p += 8
            else:
                break
        if end - p < 40 or buf[p] >> 4 != 6:
            self._count("not_tcp")
            return None
        return self._ip(ts, buf, p, end, vni, depth + 1)
