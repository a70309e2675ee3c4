"""The VNI -> session / ENI / instance map that the runtime reads for per-session statistics.

Path: ``--session-map PATH``, else ``$APPLIANCE_SESSION_MAP``, else ``/var/lib/appliance/sessions.json``.
Written atomically (temporary file + rename), so a reader never sees a partial file.

Schema (version 1)::

    {
      "schema_version": 1,
      "cloud": "aws",
      "deployment": "prod",
      "region": "us-east-1",
      "vpc": "vpc-0abc...",            # null when written by `status`
      "generated_at": "2025-01-01T00:00:00Z",
      "sessions": {                      # keyed by traffic mirror session id
        "tms-0123...": {"session_id": "tms-0123...", "vni": 7012345, "eni": "eni-0...",
                        "instance": "i-0..." | null, "session_number": 1,
                        "private_ips": ["10.0.1.5"]}
      },
      "by_vni": {"7012345": ["tms-0123...", "tms-0456..."]},   # VNI (decimal string) -> session ids
      "by_ip": {"10.0.1.5": "tms-0123..."}                     # ENI address -> session id
    }

With the default ``--vni-mode shared`` every session of a deployment carries the same VNI,
so ``by_vni`` maps that VNI to all sessions and the runtime attributes a packet to a session
by its inner source or destination address through ``by_ip``. With ``--vni-mode per-session``
each VNI maps to exactly one session.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

from provision.aws import constants as C


def resolve_path(flag: str | None) -> str:
    return flag or os.environ.get(C.SESSION_MAP_ENV) or C.DEFAULT_SESSION_MAP


def build(name: str, region: str | None, vpc: str | None, sessions: list[dict], now: float | None = None) -> dict:
    entries: dict[str, dict] = {}
    by_vni: dict[str, list[str]] = {}
    by_ip: dict[str, str] = {}
    for s in sorted(sessions, key=lambda s: s["session_id"] or ""):
        sid = s["session_id"]
        if not sid:
            continue
        entry = {
            "session_id": sid,
            "vni": s.get("vni"),
            "eni": s.get("eni"),
            "instance": s.get("instance"),
            "session_number": s.get("session_number"),
            "private_ips": list(s.get("private_ips") or []),
        }
        entries[sid] = entry
        if entry["vni"] is not None:
            by_vni.setdefault(str(entry["vni"]), []).append(sid)
        for ip in entry["private_ips"]:
            by_ip.setdefault(ip, sid)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now if now is not None else time.time()))
    return {
        "schema_version": C.SESSION_MAP_SCHEMA_VERSION,
        "cloud": "aws",
        "deployment": name,
        "region": region,
        "vpc": vpc,
        "generated_at": stamp,
        "sessions": entries,
        "by_vni": by_vni,
        "by_ip": by_ip,
    }


def write(path: str, document: dict) -> None:
    """Atomic write: temp file in the same directory, fsync, rename; mode 0644."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".sessions.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(document, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def remove_if_deployment(path: str, name: str) -> bool:
    """Delete the map if it describes deployment ``name`` (after a teardown)."""
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return False
    if doc.get("cloud") == "aws" and doc.get("deployment") == name:
        os.unlink(path)
        return True
    return False


def load(path: str) -> dict:
    with open(path) as fh:
        return json.load(fh)
