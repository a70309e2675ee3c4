"""A thin, typed ctypes layer over the system's libbpf.so.1.

Why not a PyPI binding: none that is maintained covers what the collector needs, namely
BPF ring buffers, uprobes attached by binary path and symbol name, and setting read-only
(`.rodata`) globals before load. PyPI's `pylibbpf` (0.0.6) has none of them, PyPI's `bcc`
is an unrelated package, and BCC itself compiles C at run time against kernel headers,
which nodes do not have. libbpf is the kernel community's own loader, ships as a
Debian/RHEL package (`libbpf1` / `libbpf`) and does the hard parts (CO-RE relocation
against the kernel's BTF, ELF symbol lookup for uprobes, map-in-map set-up); this module
only declares the C signatures it uses and turns NULL/negative returns into `LibbpfError`
with errno and libbpf's own last message.

Only libbpf >= 1.0 semantics are assumed (errors through errno, NULL on failure);
Debian 12 ships 1.1.2.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import errno as _errno
import logging
import os
from collections.abc import Callable
from typing import Any
from ctypes import (CFUNCTYPE, POINTER, Structure, c_bool, c_char_p, c_int, c_size_t,
                    c_uint, c_uint64, c_void_p)

log = logging.getLogger("appliance.ebpf.libbpf")

BPF_MAP_TYPE_RINGBUF = 27


class LibbpfError(RuntimeError):
    """A libbpf call failed; `errno` is the positive error number."""

    def __init__(self, what: str, err: int, detail: str = "") -> None:
        self.errno = err
        self.what = what
        self.detail = detail
        msg = f"{what}: {os.strerror(err) if err else 'failed'}"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)


class LibbpfMissing(RuntimeError):
    pass


class _UprobeOpts(Structure):
    # struct bpf_uprobe_opts of libbpf 1.1 (later versions append fields; `sz` tells
    # them this caller's size, and the missing fields read as zero)
    _fields_ = [("sz", c_size_t), ("ref_ctr_offset", c_size_t), ("bpf_cookie", c_uint64),
                ("retprobe", c_bool), ("func_name", c_char_p)]


_SAMPLE_FN = CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)
_PRINT_FN = CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)


class _Lib:
    """The loaded shared library with argument/return types declared."""

    def __init__(self, name: str = "libbpf.so.1") -> None:
        try:
            self.c = ctypes.CDLL(name, use_errno=True)
        except OSError as e:
            raise LibbpfMissing(
                f"{name} not found ({e}): install the libbpf runtime "
                "(Debian/Ubuntu: apt-get install libbpf1; RHEL/Fedora: dnf install libbpf)") from None
        self.libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        c = self.c
        sig: dict[str, tuple[list[Any], Any]] = {
            "bpf_object__open_file": ([c_char_p, c_void_p], c_void_p),
            "bpf_object__load": ([c_void_p], c_int),
            "bpf_object__close": ([c_void_p], None),
            "bpf_object__find_map_by_name": ([c_void_p, c_char_p], c_void_p),
            "bpf_object__find_program_by_name": ([c_void_p, c_char_p], c_void_p),
            "bpf_object__next_map": ([c_void_p, c_void_p], c_void_p),
            "bpf_object__next_program": ([c_void_p, c_void_p], c_void_p),
            "bpf_map__name": ([c_void_p], c_char_p),
            "bpf_map__fd": ([c_void_p], c_int),
            "bpf_map__value_size": ([c_void_p], c_uint),
            "bpf_map__key_size": ([c_void_p], c_uint),
            "bpf_map__max_entries": ([c_void_p], c_uint),
            "bpf_map__set_max_entries": ([c_void_p, c_uint], c_int),
            "bpf_map__set_inner_map_fd": ([c_void_p, c_int], c_int),
            "bpf_map__set_initial_value": ([c_void_p, c_void_p, c_size_t], c_int),
            "bpf_program__name": ([c_void_p], c_char_p),
            "bpf_program__section_name": ([c_void_p], c_char_p),
            "bpf_program__fd": ([c_void_p], c_int),
            "bpf_program__set_autoload": ([c_void_p, c_bool], c_int),
            "bpf_program__attach": ([c_void_p], c_void_p),
            "bpf_program__attach_uprobe_opts": ([c_void_p, c_int, c_char_p, c_size_t,
                                                 POINTER(_UprobeOpts)], c_void_p),
            "bpf_link__destroy": ([c_void_p], c_int),
            "bpf_map_create": ([c_int, c_char_p, c_uint, c_uint, c_uint, c_void_p], c_int),
            "bpf_map_update_elem": ([c_int, c_void_p, c_void_p, c_uint64], c_int),
            "bpf_map_lookup_elem": ([c_int, c_void_p, c_void_p], c_int),
            "bpf_map_delete_elem": ([c_int, c_void_p], c_int),
            "libbpf_num_possible_cpus": ([], c_int),
            "libbpf_set_print": ([_PRINT_FN], c_void_p),
            "ring_buffer__new": ([c_int, _SAMPLE_FN, c_void_p, c_void_p], c_void_p),
            "ring_buffer__add": ([c_void_p, c_int, _SAMPLE_FN, c_void_p], c_int),
            "ring_buffer__poll": ([c_void_p, c_int], c_int),
            "ring_buffer__consume": ([c_void_p], c_int),
            "ring_buffer__epoll_fd": ([c_void_p], c_int),
            "ring_buffer__free": ([c_void_p], None),
        }
        for fname, (args, res) in sig.items():
            f = getattr(c, fname)
            f.argtypes = args
            f.restype = res
        self.libc.vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]
        self.libc.vsnprintf.restype = c_int
        # libbpf's diagnostics (verifier log, relocation failures) go to our logger, and
        # the last lines are kept to explain a failure in one line
        self.messages: collections.deque[str] = collections.deque(maxlen=64)
        self._print_cb = _PRINT_FN(self._on_print)
        c.libbpf_set_print(self._print_cb)

    def _on_print(self, level: int, fmt: bytes, va: int) -> int:
        buf = ctypes.create_string_buffer(1 << 20)
        self.libc.vsnprintf(buf, len(buf), fmt, va)
        text = buf.value.decode(errors="replace").rstrip()
        if text:
            if level == 0:  # LIBBPF_WARN: kept to explain the failing call
                self.messages.append(text.removeprefix("libbpf: "))
            log.debug("libbpf: %s", text)
        return 0

    def last_message(self) -> str:
        """libbpf's last warning since the previous call to this (the verifier's log is
        long: only its first line is kept)."""
        msg = self.messages[-1].splitlines()[0] if self.messages else ""
        self.messages.clear()
        return msg


_lib: _Lib | None = None


def lib() -> _Lib:
    global _lib
    if _lib is None:
        _lib = _Lib()
    return _lib


def _fail(what: str) -> LibbpfError:
    err = ctypes.get_errno() or _errno.EINVAL
    return LibbpfError(what, err, lib().last_message())


def _check_ptr(p: int | None, what: str) -> int:
    if not p:
        raise _fail(what)
    return p


def _check_rc(rc: int, what: str) -> None:
    if rc < 0:
        err = -rc if rc != -1 else (ctypes.get_errno() or _errno.EINVAL)
        raise LibbpfError(what, err, lib().last_message())


class Link:
    """An attachment; detached by destroy() (or when the process exits)."""

    def __init__(self, ptr: int, what: str) -> None:
        self._ptr: int | None = ptr
        self.what = what

    def destroy(self) -> None:
        if self._ptr:
            lib().c.bpf_link__destroy(self._ptr)
            self._ptr = None


class BpfMap:
    def __init__(self, ptr: int) -> None:
        self._ptr = ptr

    @property
    def name(self) -> str:
        return str(lib().c.bpf_map__name(self._ptr).decode())

    @property
    def fd(self) -> int:
        return int(lib().c.bpf_map__fd(self._ptr))

    @property
    def value_size(self) -> int:
        return int(lib().c.bpf_map__value_size(self._ptr))

    @property
    def max_entries(self) -> int:
        return int(lib().c.bpf_map__max_entries(self._ptr))

    def set_max_entries(self, n: int) -> None:
        _check_rc(lib().c.bpf_map__set_max_entries(self._ptr, n), f"resize map {self.name}")

    def set_inner_map_fd(self, fd: int) -> None:
        """Map-in-map: use this existing map as the inner-map template (libbpf 1.1's
        template object cannot be resized in place)."""
        _check_rc(lib().c.bpf_map__set_inner_map_fd(self._ptr, fd), f"set inner map of {self.name}")

    def set_initial_value(self, data: bytes) -> None:
        buf = ctypes.create_string_buffer(data, len(data))
        _check_rc(lib().c.bpf_map__set_initial_value(self._ptr, buf, len(data)),
                  f"set initial value of {self.name}")


class BpfProgram:
    def __init__(self, ptr: int) -> None:
        self._ptr = ptr

    @property
    def name(self) -> str:
        return str(lib().c.bpf_program__name(self._ptr).decode())

    @property
    def section(self) -> str:
        return str(lib().c.bpf_program__section_name(self._ptr).decode())

    @property
    def fd(self) -> int:
        return int(lib().c.bpf_program__fd(self._ptr))

    def attach(self) -> Link:
        """Attach as the section name says (tracepoints)."""
        return Link(_check_ptr(lib().c.bpf_program__attach(self._ptr), f"attach {self.section}"),
                    self.section)

    def attach_uprobe(self, binary: str, symbol: str, *, retprobe: bool, pid: int = -1) -> Link:
        """Entry (or return) of `symbol` in the ELF file `binary`, for every process
        mapping that file (pid -1) or one process. libbpf resolves the symbol."""
        opts = _UprobeOpts(sz=ctypes.sizeof(_UprobeOpts), retprobe=retprobe,
                           func_name=symbol.encode())
        what = f"uprobe {'return of ' if retprobe else ''}{symbol} in {binary}"
        ptr = lib().c.bpf_program__attach_uprobe_opts(self._ptr, pid, binary.encode(), 0,
                                                      ctypes.byref(opts))
        return Link(_check_ptr(ptr, what), what)


class BpfObject:
    """An opened (then loaded) BPF ELF object."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._ptr: int | None = _check_ptr(lib().c.bpf_object__open_file(path.encode(), None),
                                           f"open BPF object {path}")

    def map(self, name: str) -> BpfMap:
        ptr = lib().c.bpf_object__find_map_by_name(self._ptr, name.encode())
        if not ptr:
            raise LibbpfError(f"no map {name!r} in {self.path}", _errno.ENOENT)
        return BpfMap(ptr)

    def maps(self) -> list[BpfMap]:
        out: list[BpfMap] = []
        cur = None
        while True:
            cur = lib().c.bpf_object__next_map(self._ptr, cur)
            if not cur:
                return out
            out.append(BpfMap(cur))

    def program(self, name: str) -> BpfProgram:
        ptr = lib().c.bpf_object__find_program_by_name(self._ptr, name.encode())
        if not ptr:
            raise LibbpfError(f"no program {name!r} in {self.path}", _errno.ENOENT)
        return BpfProgram(ptr)

    def programs(self) -> list[BpfProgram]:
        out: list[BpfProgram] = []
        cur = None
        while True:
            cur = lib().c.bpf_object__next_program(self._ptr, cur)
            if not cur:
                return out
            out.append(BpfProgram(cur))

    def load(self) -> None:
        _check_rc(lib().c.bpf_object__load(self._ptr), f"load {os.path.basename(self.path)}")

    def close(self) -> None:
        if self._ptr:
            lib().c.bpf_object__close(self._ptr)
            self._ptr = None


def map_create_ringbuf(name: str, size: int) -> int:
    fd = lib().c.bpf_map_create(BPF_MAP_TYPE_RINGBUF, name.encode(), 0, 0, size, None)
    _check_rc(fd, f"create ring buffer {name} ({size} bytes)")
    return int(fd)


def map_update(fd: int, key: bytes, value: bytes, flags: int = 0) -> None:
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value, len(value))
    _check_rc(lib().c.bpf_map_update_elem(fd, k, v, flags), "map update")


def map_delete(fd: int, key: bytes) -> bool:
    k = ctypes.create_string_buffer(key, len(key))
    rc = lib().c.bpf_map_delete_elem(fd, k)
    if rc < 0 and ctypes.get_errno() not in (0, _errno.ENOENT) and rc != -_errno.ENOENT:
        _check_rc(rc, "map delete")
    return bool(rc == 0)


def map_lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value_size)
    rc = lib().c.bpf_map_lookup_elem(fd, k, v)
    if rc < 0:
        return None
    return v.raw


def possible_cpus() -> int:
    n = lib().c.libbpf_num_possible_cpus()
    _check_rc(n, "count possible CPUs")
    return int(n)


class RingBuffer:
    """libbpf's consumer of one or more BPF ring buffer maps. Each record is copied out
    as `bytes` and handed to `on_record(bytes)`; poll()/consume() return the count."""

    def __init__(self, map_fd: int, on_record: Callable[[bytes], None]) -> None:
        self._on_record = on_record
        self._cb = _SAMPLE_FN(self._sample)  # kept alive as long as the ring buffer
        self._ptr: int | None = _check_ptr(lib().c.ring_buffer__new(map_fd, self._cb, None, None),
                                           "open ring buffer")

    def _sample(self, _ctx: int, data: int, size: int) -> int:
        try:
            self._on_record(ctypes.string_at(data, size))
        except Exception:  # an exception must not unwind through C
            log.exception("ring buffer record handler failed")
        return 0

    def add(self, map_fd: int) -> None:
        _check_rc(lib().c.ring_buffer__add(self._ptr, map_fd, self._cb, None), "add ring buffer")

    def poll(self, timeout_ms: int) -> int:
        n = lib().c.ring_buffer__poll(self._ptr, timeout_ms)
        if n < 0 and n != -_errno.EINTR:
            _check_rc(n, "poll ring buffer")
        return int(max(n, 0))

    def consume(self) -> int:
        n = lib().c.ring_buffer__consume(self._ptr)
        _check_rc(n, "consume ring buffer")
        return int(n)

    @property
    def epoll_fd(self) -> int:
        return int(lib().c.ring_buffer__epoll_fd(self._ptr))

    def free(self) -> None:
        if self._ptr:
            lib().c.ring_buffer__free(self._ptr)
            self._ptr = None
