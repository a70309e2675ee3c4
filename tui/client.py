"""Reading an appliance's ``GET /status`` document.

Two readers share URL handling and error wording:

* :func:`fetch` is synchronous and uses only the standard library, so `appliance status`
  works on an appliance host that has only the base install (no ``tui`` extra);
* :func:`fetch_async` uses an ``httpx.AsyncClient`` and is what the console polls with, so
  a slow or dead appliance never blocks the event loop.

Both raise :class:`StatusError` with a short, human message ("connection refused",
"timed out after 3s", "HTTP 503", "not JSON") and never anything else; an answer that is
JSON but not an appliance's status document (no schema marker, or a schema version this
reader does not know) raises :class:`NotAnAppliance`, a StatusError too.
"""

from __future__ import annotations

import json
import socket
import urllib.parse
from typing import TYPE_CHECKING

from appliance.runtime.statusdoc import SCHEMA, SCHEMA_VERSION

if TYPE_CHECKING:
    import httpx  # imported by fetch_async: `appliance status` needs only the stdlib

DEFAULT_URL = "http://127.0.0.1:8000"
# An appliance that sets this protects /status with "Authorization: Bearer <token>"; the
# readers send the same variable's value, from the environment (not a flag: argv is public).
TOKEN_ENV = "APPLIANCE_HTTP_TOKEN"
DEFAULT_TIMEOUT = 3.0
MAX_BYTES = 16 << 20  # a /status with thousands of sessions is still far below this


class StatusError(Exception):
    """The appliance could not be read; ``str()`` is a short reason.

    ``kind`` says what that means for the appliance ("unreachable", "not an appliance")
    and ``detail`` is the reason without it."""

    kind = "unreachable"

    @property
    def detail(self) -> str:
        return str(self)


class NotAnAppliance(StatusError):
    """Something answered with JSON, but not with an appliance's /status document (or
    with one of a schema version this reader does not know: ``kind`` "incompatible")."""

    def __init__(self, detail: str, kind: str = "not an appliance") -> None:
        super().__init__(f"{kind} ({detail})")
        self.kind = kind
        self._detail = detail

    @property
    def detail(self) -> str:
        return self._detail


def base_url(url: str) -> str:
    """Normalise what an operator types: ``10.0.1.5:8000``, ``http://h:8000/``,
    ``http://h:8000/status`` all name the appliance ``http://h:8000``.

    Raises ValueError for something that is not an http(s) address.
    """
    text = (url or "").strip()
    if not text:
        raise ValueError("empty URL")
    if "://" not in text:
        text = "http://" + text
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise ValueError(f"bad port in URL: {url!r}") from None
    path = parts.path.rstrip("/")
    if path.endswith("/status"):
        path = path[: -len("/status")]
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def status_url(url: str, history: int | None = None) -> str:
    """The document's URL; ``history`` asks for only the last N seconds of rate history."""
    target = base_url(url) + "/status"
    return target if history is None else f"{target}?history={max(0, int(history))}"


def display_name(url: str) -> str:
    """``http://10.0.1.5:8000`` -> ``10.0.1.5:8000`` for tables and titles."""
    parts = urllib.parse.urlsplit(url)
    return (parts.netloc + parts.path) if parts.scheme == "http" else url


def _decode(body: bytes) -> dict:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise NotAnAppliance("its answer is not JSON; is this an appliance's HTTP port?") \
            from None
    if not isinstance(doc, dict):
        raise NotAnAppliance("its answer is JSON but not an object")
    check_schema(doc)
    return doc


def check_schema(doc: dict) -> None:
    """Raise :class:`NotAnAppliance` unless ``doc`` says it is a status document this
    reader understands (docs/status.md, "Identity")."""
    schema, version = doc.get("schema"), doc.get("schema_version")
    if schema != SCHEMA:
        if isinstance(schema, str) and schema:
            raise NotAnAppliance(f"its JSON is schema {json.dumps(schema)[:60]}, "
                                 f"not {SCHEMA}")
        raise NotAnAppliance(f'its JSON has no "schema": "{SCHEMA}"; '
                             "is this an appliance's HTTP port?")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise NotAnAppliance(f"schema_version {json.dumps(version)[:20]} is not a version")
    if version != SCHEMA_VERSION:
        raise NotAnAppliance(f"its /status is schema version {version}, this console reads "
                             f"version {SCHEMA_VERSION}: use the appliance's release",
                             kind="incompatible appliance")


def _timeout_text(timeout: float) -> str:
    return f"timed out after {timeout:g}s"


def request_headers(token: str | None = None) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": "appliance-console"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def fetch(url: str, timeout: float = DEFAULT_TIMEOUT, history: int | None = None,
          token: str | None = None) -> dict:
    """GET <url>/status once, synchronously (stdlib only)."""
    import urllib.error
    import urllib.request

    target = status_url(url, history)
    req = urllib.request.Request(target, headers=request_headers(token))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - http(s) only
            body = resp.read(MAX_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise StatusError(_http_reason(exc.code, exc.reason)) from None
    except urllib.error.URLError as exc:
        raise StatusError(_os_reason(exc.reason, timeout)) from None
    except (TimeoutError, socket.timeout):
        raise StatusError(_timeout_text(timeout)) from None
    except OSError as exc:
        raise StatusError(_os_reason(exc, timeout)) from None
    if len(body) > MAX_BYTES:
        raise StatusError("answer too large")
    return _decode(body)


def _http_reason(code: int, phrase: object) -> str:
    text = f"HTTP {code} {phrase or ''}".strip()
    if code == 404:
        text += " (no /status here: is this an appliance's HTTP port?)"
    elif code == 401:
        text += f" (set {TOKEN_ENV} to the appliance's token)"
    return text


def _os_reason(reason: object, timeout: float) -> str:
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return _timeout_text(timeout)
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return "unknown host"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason) or reason.__class__.__name__


async def fetch_async(client: httpx.AsyncClient, url: str, timeout: float = DEFAULT_TIMEOUT,
                      history: int | None = None, token: str | None = None) -> dict:
    """GET <url>/status once with an ``httpx.AsyncClient``."""
    import httpx

    try:
        resp = await client.get(status_url(url, history), timeout=timeout,
                                headers=request_headers(token))
    except httpx.TimeoutException:
        raise StatusError(_timeout_text(timeout)) from None
    except httpx.ConnectError as exc:
        raise StatusError(_connect_reason(exc, timeout)) from None
    except httpx.HTTPError as exc:
        raise StatusError(str(exc) or exc.__class__.__name__) from None
    if resp.status_code != 200:
        raise StatusError(_http_reason(resp.status_code, resp.reason_phrase))
    if len(resp.content) > MAX_BYTES:
        raise StatusError("answer too large")
    return _decode(resp.content)


def _connect_reason(exc: BaseException, timeout: float) -> str:
    """The root cause of a connect failure (httpx wraps httpcore wraps anyio wraps OSError)."""
    seen = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (ConnectionRefusedError, socket.gaierror, TimeoutError)):
            return _os_reason(cur, timeout)
        if isinstance(cur, OSError) and cur.errno is not None and cur.strerror:
            return _os_reason(cur, timeout)
        cur = cur.__cause__ or cur.__context__
    return str(exc) or "cannot connect"
