"""Worker -> supervisor reports over a SOCK_SEQPACKET socket pair.

Why not a ``multiprocessing.Queue``: its feeder thread is joined at exit, and blocks for
ever writing to a pipe whose reader (a dead supervisor) is gone, so a worker could hang
at exit.  Here every send is one non-blocking system call of one whole message: a full
buffer drops a periodic report (the next one, a second later, supersedes it), and a gone
reader is an error the worker sees at once (and takes as its supervisor's death).
Messages are pickled dicts: both ends are our own processes.
"""

from __future__ import annotations

import errno
import pickle
import socket
import time

MAX_MESSAGE = 1 << 20


class PeerGone(Exception):
    pass


def pair() -> tuple[socket.socket, socket.socket]:
    """(supervisor end, worker end)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_MESSAGE)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MAX_MESSAGE)
    a.setblocking(False)
    b.setblocking(False)
    return a, b


class Sender:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.dropped = 0

    def send(self, msg: dict, wait: float = 0.0) -> bool:
        """Send one report; with `wait`, retry a full buffer for up to that long.
        False when it was dropped; PeerGone when the supervisor is gone."""
        data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        deadline = time.monotonic() + wait
        while True:
            try:
                self.sock.send(data, socket.MSG_DONTWAIT)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self.dropped += 1
                    return False
                time.sleep(0.01)
            except OSError as exc:
                if exc.errno in (errno.EPIPE, errno.ECONNRESET, errno.ECONNREFUSED,
                                 errno.ENOTCONN):
                    raise PeerGone() from None
                if exc.errno == errno.EMSGSIZE:
                    self.dropped += 1
                    return False
                raise


def receive_all(sock: socket.socket) -> tuple[list[dict], bool]:
    """Every message waiting on the supervisor end; (messages, peer closed)."""
    out = []
    while True:
        try:
            data = sock.recv(MAX_MESSAGE)
        except BlockingIOError:
            return out, False
        except OSError:
            return out, True
        if not data:
            return out, True
        try:
            out.append(pickle.loads(data))
        except Exception:  # noqa: BLE001 - a torn report is skipped, never fatal
            continue
