"""AWS instance metadata (IMDSv2): the user data and the instance tags."""

from __future__ import annotations

import os
import urllib.parse

from appliance.cloudmeta.envblock import decode
from appliance.cloudmeta.http import Refused, Transient, check_status, request
from appliance.cloudmeta.names import PREFIX

ENDPOINT = "http://169.254.169.254"
AWS_TOKEN_TTL = "300"


def endpoint(flag: str | None = None) -> str:
    """The flag, else AWS_EC2_METADATA_SERVICE_ENDPOINT (what the AWS SDKs read), else IMDS."""
    return (flag or os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or ENDPOINT).rstrip("/")


def fetch(endpoint: str, timeout: float) -> tuple[bytes | None, dict[str, str] | None]:
    """IMDSv2: (user data bytes or None, {tag key: value} or None when tags are not exposed)."""
    status, headers, body = request("PUT", f"{endpoint}/latest/api/token",
                                  {"X-aws-ec2-metadata-token-ttl-seconds": AWS_TOKEN_TTL}, timeout)
    if (headers.get("Metadata-Flavor") or "") == "Google":
        raise Refused("this is a GCP metadata server")
    if status == 403:
        raise Refused("the IMDSv2 token was refused (HTTP 403): instance metadata is turned off "
                       "or the request crossed more hops than the instance allows")
    check_status(status, "PUT /latest/api/token")
    token = body.decode("ascii", "replace").strip()
    if not token:
        raise Refused("PUT /latest/api/token returned no token")
    auth = {"X-aws-ec2-metadata-token": token}

    def get(path: str) -> bytes | None:
        st, _, data = request("GET", f"{endpoint}{path}", auth, timeout)
        if st == 404:
            return None
        if st == 401:  # token expired between calls: the next attempt gets a new one
            raise Transient(f"GET {path}: HTTP 401")
        check_status(st, f"GET {path}")
        return data

    user_data = get("/latest/user-data")
    listing = get("/latest/meta-data/tags/instance/")
    if listing is None:
        return user_data, None
    tags = {}
    for key in decode(listing, "instance tag list").split():
        key = key.strip().rstrip("/")
        if not key.lower().startswith(PREFIX):
            continue
        value = get(f"/latest/meta-data/tags/instance/{urllib.parse.quote(key, safe='')}")
        if value is not None:
            tags[key] = decode(value, f"aws tag {key}")
    return user_data, tags

