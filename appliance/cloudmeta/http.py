"""The HTTP request both metadata clients make, and the two ways it can fail."""

from __future__ import annotations

from typing import Any

MAX_BYTES = 1 << 20  # user data is at most 16 KiB, all of a GCE instance's metadata 512 KiB


class Transient(Exception):
    """Connection failure, timeout or 5xx: try again."""


class Refused(Exception):
    """An answer that will not change by retrying (4xx, not this cloud)."""


def request(method: str, url: str, headers: dict[str, str], timeout: float) -> tuple[int, Any, bytes]:
    """(status, headers, body); Transient on network failures."""
    import http.client
    import socket
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, method=method, headers=headers,
                                 data=b"" if method == "PUT" else None)
    # Never through a proxy: the metadata service is link-local and answers only the instance.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read(MAX_BYTES + 1)
    except urllib.error.HTTPError as exc:
        body = b""
        try:
            body = exc.read(4096)
        except (OSError, http.client.HTTPException):
            pass
        return exc.code, exc.headers, body
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, socket.timeout) or "timed out" in str(reason):
            raise Transient(f"timed out after {timeout:g}s") from None
        if isinstance(reason, socket.gaierror):
            raise Transient(f"cannot resolve the host ({reason.strerror or reason})") from None
        raise Transient(getattr(reason, "strerror", None) or str(reason)) from None
    except (TimeoutError, socket.timeout):
        raise Transient(f"timed out after {timeout:g}s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise Transient(str(exc) or type(exc).__name__) from None


def check_status(status: int, what: str) -> None:
    if status >= 500 or status == 429:
        raise Transient(f"{what}: HTTP {status}")
    if status != 200:
        raise Refused(f"{what}: HTTP {status}")

