"""GCP instance metadata: the instance's custom attributes."""

from __future__ import annotations

import json
import os

from appliance.cloudmeta import MetadataInvalid
from appliance.cloudmeta.envblock import decode
from appliance.cloudmeta.http import Refused, check_status, request

ENDPOINT = "http://metadata.google.internal"
ATTRIBUTES = "/computeMetadata/v1/instance/attributes/?recursive=true"


def endpoint(flag: str | None = None) -> str:
    """The flag, else GCE_METADATA_HOST (what google-auth reads), else the metadata server."""
    if flag:
        return flag.rstrip("/")
    host = os.environ.get("GCE_METADATA_HOST", "").strip()
    if host:
        return (host if "://" in host else f"http://{host}").rstrip("/")
    return ENDPOINT


def fetch(endpoint: str, timeout: float) -> dict[str, str]:
    """The instance's custom metadata attributes."""
    status, headers, body = request("GET", f"{endpoint}{ATTRIBUTES}",
                                  {"Metadata-Flavor": "Google"}, timeout)
    if status < 500 and (headers.get("Metadata-Flavor") or "") != "Google":
        raise Refused(f"HTTP {status} without the Metadata-Flavor: Google header "
                       f"(not a GCP metadata server)")
    check_status(status, "GET /computeMetadata/v1/instance/attributes/")
    try:
        attrs = json.loads(decode(body, "gcp instance attributes"))
    except json.JSONDecodeError as exc:
        raise MetadataInvalid(f"gcp instance attributes: not valid JSON ({exc.msg})") from None
    if not isinstance(attrs, dict):
        raise MetadataInvalid("gcp instance attributes: expected a JSON object")
    return attrs
