"""A bounded, crash-safe, on-disk FIFO of Kafka messages (the Kafka sink's spool).

Used when the broker is slow or unreachable: messages go here instead of being lost, and
are read back in order when the broker returns.  Guarantees:

- **Framing.** Every record is ``[magic][key length][value length][header CRC32]``,
  then key and value, then a CRC32 of key and value.  A torn write (a crash mid-append)
  or a corrupt record is detected, skipped and counted (``corrupt``), never sent; a
  corrupt length is caught by the header CRC, and reading resynchronises on the next
  valid header.
- **Durability.** Appends reach the operating system at every ``flush()`` (the sink
  calls it once per loop iteration), so a process crash or ``kill -9`` loses nothing
  that was flushed.  Segments are fsynced when they are sealed (every
  ``SEGMENT_BYTES``) and at most ``FSYNC_SECS`` after a write: a power cut loses at most
  the last ``FSYNC_SECS`` of appends.  Segments are never rewritten: consumption is a
  cursor file, replaced atomically (write to a temporary file, then rename).
- **Exactness.** ``read()`` hands records out with an id; the sink calls ``ack(id)`` on
  a delivery report and ``nack(id)`` on a failure.  The cursor (everything before it is
  delivered, plus the ids delivered beyond it) is persisted at most ``CURSOR_SECS``
  after it changes, so a ``kill -9`` re-sends at most the records acknowledged in that
  window (and whatever was in flight).  A segment is deleted only when every record in it
  has been acknowledged.  After a ``nack`` the reader waits for every outstanding record,
  then rewinds to the first one not delivered and re-reads in order, skipping those
  already delivered: failed messages keep their order.
- **Two lanes.** ``append()`` adds at the tail; ``append_retry()`` adds to a lane read
  *before* the tail, for messages that were produced directly to Kafka and failed: they
  are older than everything appended since, so a connection's pairs stay in order.
- **Privacy.** Directory 0700, files 0600 (they hold full payloads and auth headers).
- **Ownership.** A spool directory is locked (``flock``) by the process that uses it; a
  second user waits for the lock or fails with ``SpoolBusy``.

Hand-written because what we need is small (append, ordered read with acknowledgements,
a byte cap) and a queue library would bring a second persistence format to operate.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import struct
import time
import zlib
from collections import OrderedDict

log = logging.getLogger("appliance.spool")

SEGMENT_BYTES = 16 << 20
FSYNC_SECS = 1.0
CURSOR_SECS = 0.1
MAX_FIELD = 256 << 20  # a length beyond this is corruption, not a record

FILE_MAGIC = b"APSPOOL2"
REC_MAGIC = 0xA55A5AA5
_HDR = struct.Struct("<IIII")  # magic, key length, value length, CRC32 of the first 12 bytes
_HDR12 = struct.Struct("<III")
_CRC = struct.Struct("<I")
OVERHEAD = _HDR.size + _CRC.size

PENDING, ACKED, NACKED = 0, 1, 2


class SpoolBusy(Exception):
    """Another process holds the spool directory's lock."""


def encode_record(key: bytes, value: bytes) -> bytes:
    head = _HDR12.pack(REC_MAGIC, len(key), len(value))
    return (head + _CRC.pack(zlib.crc32(head)) + key + value
            + _CRC.pack(zlib.crc32(value, zlib.crc32(key))))


class _Segment:
    __slots__ = ("seq", "path", "size")

    def __init__(self, seq: int, path: str, size: int):
        self.seq = seq
        self.path = path
        self.size = size


class _Lane:
    """One ordered series of segments (``<prefix>-<seq>.seg``) with its cursor file."""

    def __init__(self, spool: Spool, prefix: str):
        self.spool = spool
        self.prefix = prefix
        self.dir = spool.dir
        self.cursor_path = os.path.join(self.dir, f"{prefix}.cursor")
        self.segs: list[_Segment] = []
        for name in os.listdir(self.dir):
            if name.startswith(prefix + "-") and name.endswith(".seg"):
                digits = name[len(prefix) + 1:-4]
                if digits.isdigit():
                    path = os.path.join(self.dir, name)
                    self.segs.append(_Segment(int(digits), path, os.path.getsize(path)))
        self.segs.sort(key=lambda s: s.seq)
        self.next_seq = self.segs[-1].seq + 1 if self.segs else 0
        self.writer = None  # raw file object of the active segment
        self.wseg: _Segment | None = None
        self.wbuf: list[bytes] = []
        self.wbuf_bytes = 0
        self.dirty_since = 0.0  # first unsynced write
        # read side: head = everything before is acknowledged; rpos = next to hand out
        head, acked = self._load_cursor()
        first = self.segs[0].seq if self.segs else self.next_seq
        if head is None or head[0] < first:
            head = (first, len(FILE_MAGIC))
        # never number a new segment behind the head (a cursor may outlive its segments)
        self.next_seq = max(self.next_seq, head[0])
        self.head = head
        self.rpos = head
        # ids handed out and not yet behind the head, in read order: id -> [end, state]
        self.window: OrderedDict = OrderedDict()
        # ids ahead of the reader that were delivered already (in an earlier run, or
        # before a rewind): the reader passes over them
        self.skip: set = {rid for rid in acked if rid >= head}
        self.prior_acked = len(self.skip)
        self.rewind = False
        self.reader = None
        self.reader_seq = None
        self.cursor_dirty = False
        self.cursor_written = 0.0
        self.records = self._count()

    # -- cursor -----------------------------------------------------------------------
    def _load_cursor(self):
        try:
            with open(self.cursor_path) as f:
                data = json.load(f)
            head = tuple(int(x) for x in data["head"])
            acked = {(int(s), int(o)) for s, o in data.get("acked", [])}
            return head, acked
        except FileNotFoundError:
            return None, set()
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("spool cursor %s unreadable; re-reading its lane from the start "
                        "(records may be sent twice)", self.cursor_path)
            return None, set()

    def persist_cursor(self) -> None:
        acked = [list(k) for k, v in self.window.items() if v[1] == ACKED]
        acked += [list(k) for k in self.skip]
        data = json.dumps({"head": list(self.head), "acked": acked}, separators=(",", ":"))
        tmp = self.cursor_path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data.encode())
        finally:
            os.close(fd)
        os.replace(tmp, self.cursor_path)
        self.cursor_dirty = False
        self.cursor_written = time.monotonic()

    # -- counting at open -------------------------------------------------------------
    def _count(self) -> int:
        """Records from the head on (headers checked, payload CRCs checked when read)."""
        n = 0
        for seg in self.segs:
            if seg.seq < self.head[0]:
                continue
            start = self.head[1] if seg.seq == self.head[0] else len(FILE_MAGIC)
            with open(seg.path, "rb") as f:
                f.seek(start)
                data = f.read()
            pos = 0
            while pos + _HDR.size <= len(data):
                rec = _parse_header(data, pos)
                if rec is None:
                    nxt = _resync(data, pos + 1)
                    pos = nxt if nxt is not None else len(data)
                    continue
                klen, vlen = rec
                end = pos + _HDR.size + klen + vlen + _CRC.size
                if end > len(data):
                    break
                n += 1
                pos = end
        return max(0, n - self.prior_acked)

    @property
    def bytes(self) -> int:
        return sum(s.size for s in self.segs) + self.wbuf_bytes

    # -- writing ----------------------------------------------------------------------
    def append(self, frame: bytes) -> None:
        if self.writer is None or self.wseg.size + self.wbuf_bytes >= SEGMENT_BYTES:
            self._rotate()
        self.wbuf.append(frame)
        self.wbuf_bytes += len(frame)
        self.records += 1

    def _rotate(self) -> None:
        if self.writer is not None:
            self.flush()
            os.fsync(self.writer.fileno())
            self.writer.close()
            self.writer = None
            self.dirty_since = 0.0
        seq = self.next_seq
        self.next_seq += 1
        path = os.path.join(self.dir, f"{self.prefix}-{seq:012d}.seg")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        self.writer = os.fdopen(fd, "ab", buffering=0)
        self.writer.write(FILE_MAGIC)
        self.wseg = _Segment(seq, path, len(FILE_MAGIC))
        self.segs.append(self.wseg)
        _fsync_dir(self.dir)

    def flush(self) -> None:
        if not self.wbuf:
            return
        data = b"".join(self.wbuf)
        self.wbuf = []
        self.wbuf_bytes = 0
        self.writer.write(data)
        self.wseg.size += len(data)
        if not self.dirty_since:
            self.dirty_since = time.monotonic()

    def sync(self) -> None:
        self.flush()
        if self.writer is not None and self.dirty_since:
            os.fsync(self.writer.fileno())
            self.dirty_since = 0.0

    # -- reading ----------------------------------------------------------------------
    def outstanding(self) -> int:
        return sum(1 for v in self.window.values() if v[1] == PENDING)

    def read(self, limit: int, max_bytes: int, out: list) -> int:
        """Append up to `limit` records (and about `max_bytes`) as (id, key, value) to
        `out`; returns the bytes read."""
        if self.rewind:
            if any(v[1] == PENDING for v in self.window.values()):
                return 0  # wait for every outstanding report before re-reading
            self._do_rewind()
        got = 0
        nbytes = 0
        while got < limit and nbytes < max_bytes:
            seg = self._seg_at(self.rpos[0])
            if seg is None:
                break
            if seg is self.wseg:
                self.flush()
            if seg.seq != self.rpos[0]:
                self.rpos = (seg.seq, len(FILE_MAGIC))
            off = self.rpos[1]
            if off >= seg.size:
                if seg is self.wseg:
                    break  # everything written so far has been read
                self.rpos = (seg.seq + 1, len(FILE_MAGIC))
                self._advance()
                continue
            f = self._reader(seg)
            f.seek(off)
            head = f.read(_HDR.size)
            rec = _parse_header(head, 0) if len(head) == _HDR.size else None
            if rec is None:
                self._corrupt_at(seg, off, f)
                continue
            klen, vlen = rec
            body = f.read(klen + vlen + _CRC.size)
            end = off + _HDR.size + klen + vlen + _CRC.size
            if len(body) < klen + vlen + _CRC.size:
                self._corrupt_at(seg, off, f)  # torn tail
                continue
            key, value = body[:klen], body[klen:klen + vlen]
            if _CRC.unpack_from(body, klen + vlen)[0] != zlib.crc32(value, zlib.crc32(key)):
                self.spool.corrupt += 1
                self.records = max(0, self.records - 1)
                log.warning("spool %s: record at %d fails its checksum; skipped", seg.path, off)
                self.rpos = (seg.seq, end)
                continue
            rid = (seg.seq, off)
            self.rpos = (seg.seq, end)
            if rid in self.skip:
                self.skip.discard(rid)
                self.window[rid] = [end, ACKED]  # delivered before: let the head pass it
                self._advance()
                continue
            self.window[rid] = [end, PENDING]
            out.append(((self.prefix, rid), key or None, value))
            got += 1
            nbytes += len(key) + len(value)
        return nbytes

    def _corrupt_at(self, seg: _Segment, off: int, f) -> None:
        f.seek(off)
        data = f.read()
        nxt = _resync(data, 1)
        self.spool.corrupt += 1
        if nxt is None:
            what = "a torn write at the end" if len(data) < 1 << 16 else "corrupt data to its end"
            log.warning("spool %s: %s (offset %d); skipped", seg.path, what, off)
            self.rpos = (seg.seq, seg.size)
        else:
            log.warning("spool %s: %d corrupt bytes at offset %d; skipped", seg.path, nxt, off)
            self.rpos = (seg.seq, off + nxt)

    def _reader(self, seg: _Segment):
        if self.reader_seq != seg.seq:
            if self.reader is not None:
                self.reader.close()
            self.reader = open(seg.path, "rb")
            self.reader_seq = seg.seq
        return self.reader

    def _seg_at(self, seq: int) -> _Segment | None:
        for s in self.segs:
            if s.seq >= seq:
                return s
        return None

    def ack(self, rid) -> None:
        entry = self.window.get(rid)
        if entry is None or entry[1] == ACKED:
            return
        entry[1] = ACKED
        self.records = max(0, self.records - 1)
        self._advance()

    def nack(self, rid) -> None:
        entry = self.window.get(rid)
        if entry is not None and entry[1] == PENDING:
            entry[1] = NACKED
            self.rewind = True

    def _do_rewind(self) -> None:
        """Re-read from the first failed record; those delivered since are skipped."""
        self.rewind = False
        first = next((rid for rid, v in self.window.items() if v[1] == NACKED), None)
        if first is None:
            return
        for rid in [rid for rid in self.window if rid >= first]:
            if self.window.pop(rid)[1] == ACKED:
                self.skip.add(rid)
        self.rpos = first

    def _advance(self) -> None:
        """Move the head over acknowledged records and delete finished segments."""
        window = self.window
        moved = False
        while window:
            rid, (end, state) = next(iter(window.items()))
            if state != ACKED:
                break
            window.popitem(last=False)
            self.head = (rid[0], end)
            moved = True
        # a segment is finished when the reader is past it and nothing in it is outstanding
        limit = self.rpos[0]
        if window:
            limit = min(limit, next(iter(window))[0])
        while self.segs and self.segs[0].seq < limit and self.segs[0] is not self.wseg:
            seg = self.segs.pop(0)
            if self.reader_seq == seg.seq:
                self.reader.close()
                self.reader = None
                self.reader_seq = None
            try:
                os.unlink(seg.path)
            except FileNotFoundError:
                pass
            moved = True
            if self.head[0] <= seg.seq:
                self.head = (seg.seq + 1, len(FILE_MAGIC))
        if self.skip:
            self.skip = {rid for rid in self.skip if rid >= self.rpos}
        if not self.window and self.head < self.rpos:
            self.head = self.rpos  # all before the reader is delivered (or was corrupt)
        if moved:
            self.cursor_dirty = True

    def empty(self) -> bool:
        return self.records == 0 and not self.window and not self.skip

    def close(self) -> None:
        self.sync()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            wseg, self.wseg = self.wseg, None
            # a finished active segment need not be kept
            if wseg is not None and self.rpos >= (wseg.seq, wseg.size) and not self.window:
                self.rpos = (wseg.seq + 1, len(FILE_MAGIC))
                self._advance()
        if self.reader is not None:
            self.reader.close()
            self.reader = None
            self.reader_seq = None
        self.persist_cursor()
        if not self.segs:
            try:
                os.unlink(self.cursor_path)
            except FileNotFoundError:
                pass


def _parse_header(data: bytes, pos: int):
    if pos + _HDR.size > len(data):
        return None
    magic, klen, vlen, crc = _HDR.unpack_from(data, pos)
    if magic != REC_MAGIC or zlib.crc32(data[pos:pos + 12]) != crc:
        return None
    if klen > MAX_FIELD or vlen > MAX_FIELD:
        return None
    return klen, vlen


def _resync(data: bytes, start: int):
    """Offset of the next valid record header in `data` at or after `start`."""
    magic = struct.pack("<I", REC_MAGIC)
    pos = start
    while True:
        pos = data.find(magic, pos)
        if pos < 0:
            return None
        if _parse_header(data, pos) is not None:
            return pos
        pos += 1


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def make_private_dir(path: str) -> None:
    """Create `path` (and parents) as 0700; tighten an existing directory we own."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.stat(path)
    if st.st_uid == os.geteuid() and st.st_mode & 0o077:
        os.chmod(path, 0o700)


class Spool:
    def __init__(self, directory: str, max_bytes: int, lock_timeout: float = 0.0):
        self.dir = directory
        self.max_bytes = max_bytes
        make_private_dir(directory)
        self.lock_fd = _lock(directory, lock_timeout)
        self.dropped = 0
        self.corrupt = 0
        try:
            self.retry = _Lane(self, "r")
            self.main = _Lane(self, "m")
            self._import_legacy()
        except BaseException:
            os.close(self.lock_fd)
            raise
        self.last_sync = time.monotonic()

    # -- figures ----------------------------------------------------------------------
    def __len__(self) -> int:
        """Records not yet acknowledged, handed out or not."""
        return self.retry.records + self.main.records

    @property
    def bytes(self) -> int:
        return self.retry.bytes + self.main.bytes

    def outstanding(self) -> int:
        return self.retry.outstanding() + self.main.outstanding()

    # -- writing ----------------------------------------------------------------------
    def append(self, key: bytes | None, value: bytes) -> bool:
        """Store one message at the tail; False (and counted) when the spool is full."""
        return self._append(self.main, key, value)

    def append_retry(self, key: bytes | None, value: bytes) -> bool:
        """Store a message that failed after it was produced directly: it is read before
        everything appended with ``append`` (which is newer)."""
        return self._append(self.retry, key, value)

    def _append(self, lane: _Lane, key, value) -> bool:
        frame = encode_record(key or b"", value)
        if self.bytes + len(frame) > self.max_bytes:
            self.dropped += 1
            return False
        lane.append(frame)
        return True

    def flush(self) -> None:
        """Hand buffered appends to the operating system (safe from a process crash)."""
        self.retry.flush()
        self.main.flush()

    def tick(self) -> None:
        """Bounded-interval fsync and cursor persistence; call often."""
        now = time.monotonic()
        self.flush()
        for lane in (self.retry, self.main):
            if lane.dirty_since and now - lane.dirty_since >= FSYNC_SECS:
                lane.sync()
            if lane.cursor_dirty and now - lane.cursor_written >= CURSOR_SECS:
                lane.persist_cursor()

    # -- reading ----------------------------------------------------------------------
    def read(self, limit: int, max_bytes: int = 1 << 62) -> list:
        """Up to `limit` records, oldest first (the retry lane first): [(id, key, value)].
        Each must later be ``ack``ed or ``nack``ed.  Empty while a rewind waits for
        outstanding reports."""
        out: list = []
        used = 0
        if not self.retry.empty():
            used = self.retry.read(limit, max_bytes, out)
            if len(out) < limit and self.retry.outstanding():
                return out  # keep the retry lane strictly ahead of the tail
        if len(out) < limit and used < max_bytes and self.retry.empty():
            self.main.read(limit - len(out), max_bytes - used, out)
        return out

    def ack(self, rid) -> None:
        (self.retry if rid[0] == "r" else self.main).ack(rid[1])

    def nack(self, rid) -> None:
        (self.retry if rid[0] == "r" else self.main).nack(rid[1])

    def close(self) -> None:
        """fsync, persist the cursors, release the lock."""
        if self.lock_fd is None:
            return
        try:
            for lane in (self.retry, self.main):
                lane.close()
            _fsync_dir(self.dir)
        finally:
            os.close(self.lock_fd)
            self.lock_fd = None

    # -- an earlier format ------------------------------------------------------------
    def _import_legacy(self) -> None:
        """Segments of the first spool format (``<seq>.spool``, no checksums) are moved
        into the tail lane once, with their lengths checked, then deleted."""
        names = sorted(n for n in os.listdir(self.dir)
                       if n.endswith(".spool") and n[:-6].isdigit())
        if not names:
            return
        moved = bad = 0
        for name in names:
            path = os.path.join(self.dir, name)
            with open(path, "rb") as f:
                data = f.read()
            pos = 0
            while pos + 8 <= len(data):
                klen, vlen = struct.unpack_from("<II", data, pos)
                if pos + 8 + klen + vlen > len(data):
                    bad += 1
                    break
                self.main.append(encode_record(data[pos + 8:pos + 8 + klen],
                                               data[pos + 8 + klen:pos + 8 + klen + vlen]))
                moved += 1
                pos += 8 + klen + vlen
            self.main.sync()
            os.unlink(path)
        self.corrupt += bad
        log.warning("spool %s: moved %d records from the earlier format (%d torn)",
                    self.dir, moved, bad)


def _lock(directory: str, timeout: float) -> int:
    path = os.path.join(directory, "lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            if time.monotonic() >= deadline:
                holder = _holder(fd)
                os.close(fd)
                raise SpoolBusy(f"spool directory {directory} is in use by another process"
                                f"{holder}") from None
            time.sleep(0.05)
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def _holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
        return f" (pid {pid})" if pid.isdigit() else ""
    except OSError:
        return ""


def spool_dirs(root: str) -> list[tuple[int, str]]:
    """The per-worker spool directories under `root`: [(worker index, path)]."""
    out = []
    try:
        names = os.listdir(root)
    except OSError:
        return out
    for name in names:
        if name.startswith("worker-") and name[7:].isdigit():
            path = os.path.join(root, name)
            if os.path.isdir(path):
                out.append((int(name[7:]), path))
    return sorted(out)
