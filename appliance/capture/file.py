"""Capture files (pcap, pcapng) read with pcapy-ng, in batches.

``open_capture`` checks the file first so that a missing file, an empty file or a file
that is not a capture gives one clear sentence instead of libpcap's terse errors.
``CaptureFile.batches()`` yields ``(buf, meta)`` in pcapy-ng ``next_batch`` layout; a
truncated file stops with ``TruncatedCapture`` after every complete packet before the
cut has been delivered.
"""

from __future__ import annotations

import os
import struct

import pcapy

from appliance.core.decode import SUPPORTED_LINKTYPES

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",  # microsecond
    b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">",  # nanosecond
}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
BATCH = 2048


class CaptureError(Exception):
    """The file cannot be read as a capture at all."""


class TruncatedCapture(Exception):
    """The file ends in the middle of a packet; everything before was read."""

    def __init__(self, path: str, packets: int, offset: int | None, detail: str):
        where = f"after packet {packets}"
        if offset is not None:
            where += f" (byte offset {offset})"
        super().__init__(f"{path}: capture is truncated {where}: {detail}")
        self.packets = packets
        self.offset = offset


class CaptureFile:
    def __init__(self, path: str):
        self.path = path
        if not os.path.exists(path):
            raise CaptureError(f"{path}: no such file")
        if os.path.isdir(path):
            raise CaptureError(f"{path}: is a directory, not a capture file")
        try:
            size = os.path.getsize(path)
            with open(path, "rb") as f:
                head = f.read(24)
        except OSError as exc:
            raise CaptureError(f"{path}: cannot read: {exc.strerror}") from None
        self.size = size
        self.format = "pcap" if head[:4] in PCAP_MAGICS else "pcapng" if head[:4] == PCAPNG_MAGIC else None
        if self.format is None:
            raise CaptureError(f"{path}: not a pcap or pcapng capture (unknown magic {head[:4].hex() or 'empty file'})")
        if self.format == "pcap" and len(head) < 24:
            raise CaptureError(f"{path}: capture is truncated inside its file header ({len(head)} of 24 bytes)")
        try:
            self.reader = pcapy.open_offline(path)
        except pcapy.PcapError as exc:
            raise CaptureError(f"{path}: cannot open capture: {exc}") from None
        self.linktype = self.reader.datalink()
        if self.linktype not in SUPPORTED_LINKTYPES:
            if self.format == "pcap":
                # libpcap maps some link types; trust the file header when it names one we know
                endian = PCAP_MAGICS[head[:4]]
                lt = struct.unpack(endian + "I", head[20:24])[0] & 0x0FFFFFFF
                if lt in SUPPORTED_LINKTYPES:
                    self.linktype = lt
        if self.linktype not in SUPPORTED_LINKTYPES:
            raise CaptureError(f"{path}: unsupported link type {self.linktype}")
        self.packets = 0
        self.offset = 24 if self.format == "pcap" else None  # bytes consumed, pcap only

    def batches(self, batch: int = BATCH):
        reader = self.reader
        while True:
            try:
                buf, meta = reader.next_batch(batch)
            except pcapy.PcapError as exc:
                # the batch that hit the cut is lost inside libpcap: re-read it one by one
                yield from self._tail_after_error(str(exc))
                return
            if not meta:
                return
            n = len(meta) // 16
            self.packets += n
            if self.offset is not None:
                self.offset += 16 * n + len(buf)
            yield buf, meta

    def _tail_after_error(self, detail: str):
        reader = pcapy.open_offline(self.path)
        good = self.packets
        for _ in range(good):
            reader.next()
        metas = []
        frames = []
        pos = 0
        while True:
            try:
                hdr, data = reader.next()
            except pcapy.PcapError as exc:
                detail = str(exc)
                break
            if hdr is None:
                break
            sec, usec = hdr.getts()
            metas.append(struct.pack("=IIII", sec, usec, pos, len(data)))
            frames.append(data)
            pos += len(data)
            self.packets += 1
            if self.offset is not None:
                self.offset += 16 + len(data)
        if frames:
            yield b"".join(frames), b"".join(metas)
        raise TruncatedCapture(self.path, self.packets, self.offset, detail)

    def close(self) -> None:
        self.reader = None
