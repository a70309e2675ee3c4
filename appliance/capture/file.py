"""Capture files (pcap, pcapng; plain or gzip-compressed; a file, a pipe or standard input)
read with pcapy-ng, in batches.

``CaptureFile`` checks the input first so that a missing file, an empty file or a file that
is not a capture gives one clear sentence instead of libpcap's terse errors. The format is
detected by its magic number, never by the file name: gzip (``1f 8b``), then pcap or pcapng
inside. ``CaptureFile.batches()`` yields ``(buf, meta)`` in pcapy-ng ``next_batch`` layout;
a truncated capture stops with ``TruncatedCapture`` after every complete packet before the
cut has been delivered.

Two ways in:

* A plain capture in a regular file is opened by name (libpcap reads it directly, the
  fastest path). When libpcap hits a cut, the batch it was reading is lost inside it, so the
  file is re-read packet by packet up to the cut.
* Everything else is a *stream*: standard input (``-``), a pipe or FIFO, and any gzip
  capture. pcapy-ng only opens captures by name, so the bytes (decompressed when gzip) are
  streamed to it through an anonymous pipe (``/dev/fd/N``) by a feeder thread. A pipe, not a
  temporary file: memory and disk stay constant whatever the size, pairs come out while the
  input is still arriving (``tcpdump -w - | appliance replay -``), and nothing is left in
  /tmp. A stream cannot be re-read, so it is read packet by packet (``next()``), which
  delivers every packet before a cut; batches are formed here.
  pcapy-ng holds the GIL while it opens a capture (it releases it while reading packets),
  so the capture's header blocks are written to the pipe *before* it is opened.
"""

from __future__ import annotations

import fcntl
import gzip
import os
import stat
import struct
import sys
import threading
import zlib
from collections.abc import Callable, Generator, Iterator
from typing import IO, Any, Protocol

import pcapy

from appliance.core.decode import SUPPORTED_LINKTYPES

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",  # microsecond
    b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">",  # nanosecond
}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
GZIP_MAGIC = b"\x1f\x8b"
STDIN = "-"
BATCH = 2048  # packets per batch from a file
STREAM_BATCH = 256  # from a stream: smaller, so pairs of a slow live pipe are not held back
CHUNK = 256 << 10
MAX_HEADER = 1 << 20  # pcapng section + interface header blocks written before opening
F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Linux; the constant is in fcntl from Python 3.10)
_META = struct.Struct("=IIII")


class _Reader(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class CaptureError(Exception):
    """The input cannot be read as a capture at all."""


class TruncatedCapture(Exception):
    """The capture ends in the middle of a packet; everything before was read."""

    def __init__(self, path: str, packets: int, offset: int | None, detail: str):
        where = f"after packet {packets}"
        if offset is not None:
            where += f" (byte offset {offset})"
        super().__init__(f"{path}: capture is truncated {where}: {detail}")
        self.packets = packets
        self.offset = offset


class CaptureFile:
    def __init__(self, path: str, stdin: IO[bytes] | None = None):
        self.path = path
        self.name = "standard input" if path == STDIN else path
        self.packets = 0
        self.offset: int | None = None  # pcap bytes consumed (pcap format only)
        self.size: int | None = None  # bytes of the input on disk, when known (progress)
        self.compressed = False
        self._feeder: _Feeder | None = None
        if path == STDIN:
            source = stdin if stdin is not None else sys.stdin.buffer
            if source.isatty():
                raise CaptureError("standard input is a terminal: pipe a capture into it "
                                   "(e.g. tcpdump -w - ... | appliance replay -)")
            self._open_stream(source, owned=False)
        else:
            self._open_path(path)
        self._check_linktype()

    # -- opening -------------------------------------------------------------------------
    def _open_path(self, path: str) -> None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise CaptureError(f"{path}: no such file") from None
        except OSError as exc:
            raise CaptureError(f"{path}: cannot read: {exc.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            raise CaptureError(f"{path}: is a directory, not a capture file")
        try:
            f = open(path, "rb")  # noqa: SIM115 - handed to the stream or closed below
        except OSError as exc:
            raise CaptureError(f"{path}: cannot read: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):  # a pipe, FIFO or process substitution
            self._open_stream(f, owned=True)
            return
        self.size = st.st_size
        with f:
            head = f.read(24)
        if head[:2] == GZIP_MAGIC:
            self._open_stream(open(path, "rb"), owned=True)  # noqa: SIM115 - the feeder closes it
            return
        self.format = _format_of(head, self.name)
        self.reader = _open_offline(path, self.name)
        self.linktype = self.reader.datalink()
        self._head = head
        if self.format == "pcap":
            self.offset = 24

    def _open_stream(self, raw: IO[bytes], owned: bool) -> None:
        counted = _Counting(raw)
        try:
            first = _read_exactly(counted, 2)
            if first == GZIP_MAGIC:
                self.compressed = True
                body: _Reader = gzip.GzipFile(fileobj=_Prefixed(first, counted), mode="rb")
                first = b""
            else:
                body = counted
            head = first + _read_exactly(body, 24 - len(first))
        except (OSError, EOFError, zlib.error) as exc:
            if owned:
                raw.close()
            raise CaptureError(f"{self.name}: not a readable gzip stream ({_why(exc)})") from None
        what = "gzip-compressed " if self.compressed else ""
        try:
            self.format = _format_of(head, self.name, what)
            header = head if self.format == "pcap" else _pcapng_header(head, body, self.name)
        except CaptureError:
            if owned:
                raw.close()
            raise
        self._head = head
        self._feeder = _Feeder(header, body, counted, raw if owned else None)
        try:
            self.reader = _open_offline(f"/dev/fd/{self._feeder.read_fd}", self.name)
        finally:
            self._feeder.opened()
        self.linktype = self.reader.datalink()
        if self.format == "pcap":
            self.offset = 24

    def _check_linktype(self) -> None:
        if self.linktype not in SUPPORTED_LINKTYPES and self.format == "pcap":
            # libpcap maps some link types; trust the file header when it names one we know
            endian = PCAP_MAGICS[self._head[:4]]
            lt = struct.unpack(endian + "I", self._head[20:24])[0] & 0x0FFFFFFF
            if lt in SUPPORTED_LINKTYPES:
                self.linktype = lt
        if self.linktype not in SUPPORTED_LINKTYPES:
            self.close()
            raise CaptureError(f"{self.name}: unsupported link type {self.linktype}")

    @property
    def position(self) -> int | None:
        """Bytes of the input consumed so far (compressed bytes for gzip), for progress."""
        if self._feeder is not None:
            return self._feeder.counted.count
        return self.offset

    # -- reading -------------------------------------------------------------------------
    def batches(self, batch: int = BATCH) -> Iterator[tuple[bytes, bytes]]:
        if self._feeder is not None:
            yield from self._stream_batches(min(batch, STREAM_BATCH))
            return
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

    def _stream_batches(self, batch: int) -> Iterator[tuple[bytes, bytes]]:
        assert self._feeder is not None
        detail = yield from self._one_by_one(self.reader.next, batch)
        error = self._feeder.finish()
        if error is not None:  # the input itself ended badly (gzip cut or corrupt)
            detail = f"{error}" + (f"; {detail}" if detail else "")
        if detail is not None:
            raise TruncatedCapture(self.name, self.packets, self.offset, detail)

    def _tail_after_error(self, detail: str) -> Iterator[tuple[bytes, bytes]]:
        reader = pcapy.open_offline(self.path)
        for _ in range(self.packets):
            reader.next()
        cut = yield from self._one_by_one(reader.next, 1 << 30)
        raise TruncatedCapture(self.name, self.packets, self.offset, cut or detail)

    def _one_by_one(self, next_packet: Callable[[], Any], batch: int
                    ) -> Generator[tuple[bytes, bytes], None, str | None]:
        """Packets read one at a time (a stream that cannot be re-read, or the tail before a
        cut), yielded in ``next_batch`` layout; returns libpcap's error if one ended them."""
        frames: list[bytes] = []
        metas: list[bytes] = []
        pos = 0
        detail = None
        while True:
            try:
                hdr, data = next_packet()
            except pcapy.PcapError as exc:
                detail = str(exc)
                break
            if hdr is None:
                break
            sec, usec = hdr.getts()
            metas.append(_META.pack(sec, usec, pos, len(data)))
            frames.append(data)
            pos += len(data)
            self.packets += 1
            if self.offset is not None:
                self.offset += 16 + len(data)
            if len(frames) >= batch:
                yield b"".join(frames), b"".join(metas)
                frames, metas, pos = [], [], 0
        if frames:
            yield b"".join(frames), b"".join(metas)
        return detail

    def close(self) -> None:
        self.reader = None  # pcapy closes the capture (and so the pipe's read end)
        if self._feeder is not None:
            self._feeder.finish()


# ----------------------------------------------------------------------------- helpers


def _format_of(head: bytes, name: str, what: str = "") -> str:
    if head[:4] in PCAP_MAGICS:
        if len(head) < 24:
            raise CaptureError(f"{name}: capture is truncated inside its file header "
                               f"({len(head)} of 24 bytes)")
        return "pcap"
    if head[:4] == PCAPNG_MAGIC:
        return "pcapng"
    magic = head[:4].hex() or "empty"
    raise CaptureError(f"{name}: not a pcap or pcapng capture ({what}"
                       f"{'empty file' if not head else 'unknown magic ' + magic})")


def _open_offline(path: str, name: str) -> Any:
    try:
        return pcapy.open_offline(path)
    except pcapy.PcapError as exc:
        raise CaptureError(f"{name}: cannot open capture: {exc}") from None


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _read_exactly(f: _Reader, n: int) -> bytes:
    """Up to n bytes (fewer only at the end of the input)."""
    parts = []
    while n > 0:
        chunk = f.read(n)
        if not chunk:
            break
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def _pcapng_header(head: bytes, body: _Reader, name: str) -> bytes:
    """The section header block and every block up to the first interface description:
    what libpcap reads when it opens a pcapng capture."""
    if len(head) < 12:
        raise CaptureError(f"{name}: capture is truncated inside its section header")
    bom = head[8:12]
    endian = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">" if bom == b"\x1a\x2b\x3c\x4d" else None
    if endian is None:
        raise CaptureError(f"{name}: not a pcapng capture (bad byte-order magic {bom.hex()})")
    out = bytearray(head)
    pos = 0
    while True:
        if len(out) < pos + 8:
            out += _read_exactly(body, pos + 8 - len(out))
            if len(out) < pos + 8:
                raise CaptureError(f"{name}: capture is truncated inside its header blocks")
        btype, blen = struct.unpack(endian + "II", out[pos:pos + 8])
        if blen < 12 or blen % 4 or pos + blen > MAX_HEADER:
            raise CaptureError(f"{name}: pcapng header blocks are malformed or larger than "
                               f"{MAX_HEADER >> 20} MiB")
        if len(out) < pos + blen:
            out += _read_exactly(body, pos + blen - len(out))
            if len(out) < pos + blen:
                raise CaptureError(f"{name}: capture is truncated inside its header blocks")
        pos += blen
        if btype == 1:  # interface description block: libpcap has what it needs
            return bytes(out)


class _Counting:
    """A binary reader that counts the bytes read from it (progress of a compressed file)."""

    def __init__(self, raw: IO[bytes]):
        self.raw = raw
        self.count = 0

    def read(self, n: int = -1, /) -> bytes:
        data = self.raw.read(n)
        self.count += len(data)
        return data

    def read1(self, n: int = -1) -> bytes:
        """What is available now (a live pipe must not wait for a whole chunk)."""
        read1 = getattr(self.raw, "read1", self.raw.read)
        data = read1(n)
        self.count += len(data)
        return data

    def readable(self) -> bool:
        return True


class _Prefixed:
    """Bytes already read (the magic), then the rest of a reader: what gzip decompresses."""

    def __init__(self, head: bytes, rest: _Counting):
        self.head = head
        self.rest = rest

    def read(self, n: int = -1, /) -> bytes:
        if self.head:
            if n < 0 or n >= len(self.head):
                out, self.head = self.head, b""
                more = self.rest.read(n - len(out) if n >= 0 else -1)
                return out + more
            out, self.head = self.head[:n], self.head[n:]
            return out
        return self.rest.read(n)

    def seek(self, n: int, /) -> int:
        raise OSError("a capture stream cannot seek")  # gzip only seeks to rewind

    def readable(self) -> bool:
        return True


class _Feeder:
    """Writes the header blocks, then (in a thread) the rest of the input, into a pipe."""

    def __init__(self, header: bytes, body: _Reader, counted: _Counting,
                 owned: IO[bytes] | None):
        self.body = body
        self.counted = counted
        self.owned = owned
        self.error: str | None = None
        self.read_fd, self.write_fd = os.pipe()
        if len(header) > 60_000:
            try:
                fcntl.fcntl(self.write_fd, F_SETPIPE_SZ, len(header) + 4096)
            except OSError:
                self._close_fds()
                raise CaptureError("the capture's pcapng header blocks do not fit in a pipe") from None
        view = memoryview(header)
        while view:
            view = view[os.write(self.write_fd, view):]
        self.thread = threading.Thread(target=self._copy, name="capture-feeder", daemon=True)

    def opened(self) -> None:
        """pcapy has opened (or failed to open) the read end: start streaming, drop ours."""
        os.close(self.read_fd)
        self.read_fd = -1
        self.thread.start()

    def _copy(self) -> None:
        read = getattr(self.body, "read1", self.body.read)
        try:
            while True:
                chunk = read(CHUNK)
                if not chunk:
                    break
                view = memoryview(chunk)
                while view:
                    view = view[os.write(self.write_fd, view):]
        except BrokenPipeError:
            pass  # the reader stopped early (an error, or the replay was interrupted)
        except EOFError as exc:
            self.error = f"the gzip stream ends early ({_why(exc)})"
        except (OSError, zlib.error) as exc:
            self.error = f"cannot read the input: {_why(exc)}"
        finally:
            self._close_fds()
            if self.owned is not None:
                self.owned.close()

    def _close_fds(self) -> None:
        for fd in (self.write_fd, self.read_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.write_fd = self.read_fd = -1

    def finish(self) -> str | None:
        if self.thread.is_alive():
            self.thread.join(5)
        return self.error
