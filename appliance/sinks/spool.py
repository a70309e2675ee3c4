"""A bounded, append-only, on-disk FIFO of Kafka messages.

Used when the broker is slow or unreachable: records go here instead of being lost,
and are read back in order when the broker returns.  Files are segments named
``<sequence>.spool`` holding ``[u32 key length][u32 value length][key][value]``
frames.  A segment is deleted once every record in it has been read back.  The
spool survives a restart: segments left by a previous run are read first.

Hand-written because what we need is small (append, read in order, bound the bytes)
and a queue library would bring a second persistence format to operate.
"""

from __future__ import annotations

import os
import struct

_HDR = struct.Struct("<II")
SEGMENT_BYTES = 16 << 20


class Spool:
    def __init__(self, directory: str, max_bytes: int):
        self.dir = directory
        self.max_bytes = max_bytes
        os.makedirs(directory, exist_ok=True)
        self.segments = sorted(int(n.split(".")[0]) for n in os.listdir(directory)
                               if n.endswith(".spool") and n.split(".")[0].isdigit())
        self.bytes = sum(os.path.getsize(self._path(s)) for s in self.segments)
        self.records = sum(self._count(s) for s in self.segments)
        self.write_seq = (self.segments[-1] + 1) if self.segments else 0
        self.writer = None
        self.writer_bytes = 0
        self.reader = None
        self.read_seq = None
        self.dropped = 0

    def _path(self, seq: int) -> str:
        return os.path.join(self.dir, f"{seq:012d}.spool")

    def _count(self, seq: int) -> int:
        n = 0
        with open(self._path(seq), "rb") as f:
            while True:
                hdr = f.read(8)
                if len(hdr) < 8:
                    break
                k, v = _HDR.unpack(hdr)
                f.seek(k + v, 1)
                n += 1
        return n

    def __len__(self) -> int:
        return self.records

    def append(self, key: bytes | None, value: bytes) -> bool:
        """Store one message; False (and counted) when the spool is full."""
        key = key or b""
        size = 8 + len(key) + len(value)
        if self.bytes + size > self.max_bytes:
            self.dropped += 1
            return False
        if self.writer is None or self.writer_bytes >= SEGMENT_BYTES:
            if self.writer is not None:
                self.writer.close()
            seq = self.write_seq
            self.write_seq += 1
            self.segments.append(seq)
            self.writer = open(self._path(seq), "ab")
            self.writer_bytes = 0
        self.writer.write(_HDR.pack(len(key), len(value)) + key + value)
        self.writer_bytes += size
        self.bytes += size
        self.records += 1
        return True

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def read(self, limit: int) -> list[tuple[bytes, bytes]]:
        """Take up to `limit` messages from the head, oldest first."""
        out = []
        while len(out) < limit and self.segments:
            head = self.segments[0]
            if self.reader is None or self.read_seq != head:
                if self.writer is not None and head == self.write_seq - 1:
                    # reading the segment being written: flush it and stop writing to it
                    self.writer.close()
                    self.writer = None
                self.reader = open(self._path(head), "rb")
                self.read_seq = head
            hdr = self.reader.read(8)
            if len(hdr) < 8:
                self.reader.close()
                self.reader = None
                size = os.path.getsize(self._path(head))
                os.unlink(self._path(head))
                self.segments.pop(0)
                self.bytes -= size
                continue
            k, v = _HDR.unpack(hdr)
            key = self.reader.read(k)
            value = self.reader.read(v)
            out.append((key or None, value))
            self.records -= 1
        if not self.segments:
            self.bytes = 0
        return out

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.reader is not None:
            # records already read were handed to the producer; keep the rest for next time
            pos = self.reader.tell()
            path = self._path(self.read_seq)
            self.reader.close()
            self.reader = None
            with open(path, "rb") as f:
                f.seek(pos)
                rest = f.read()
            with open(path, "wb") as f:
                f.write(rest)
