"""``appliance boot``: configure the runtime from cloud instance metadata, then start it.

This is what the appliance image's systemd unit runs. It reads the instance's metadata,
turns it into the runtime's environment variables, validates them exactly as
``appliance run`` would, and hands over to ``appliance run`` in the same process.

Where the configuration comes from (highest precedence first)::

    CLI flags after ``--``        appliance boot -- --log-level DEBUG
    the process environment       systemd Environment=/EnvironmentFile=, docker -e, kubectl env
    tags / attributes             AWS instance tag or GCP instance attribute appliance-<variable>
    the environment block         AWS user data, or the GCP instance attribute appliance-config
    boot default                  APPLIANCE_MODE = the cloud the instance runs on
    built-in defaults             appliance/config.py

Formats:

* The **environment block** (AWS user data; GCP attribute ``appliance-config``) is either
  ``KEY=VALUE`` lines in environment-file syntax (``#`` comments, blank lines, optional
  ``export``, values optionally in single quotes (literal) or double quotes (backslash
  escapes)), or one JSON object of variable name to value (numbers and booleans are turned
  into strings, lists and objects into compact JSON, which suits
  ``AKTO_MODULE_DISCOVERY_CONFIG``). User data may be gzip-compressed. User data that is
  meant for cloud-init (``#cloud-config``, a ``#!`` script, ``#include`` ...) is left to
  cloud-init and ignored here; a MIME multi-part user data contributes its
  ``text/x-appliance-env`` parts.
* A **tag / attribute** ``appliance-<name>`` sets one variable: ``<name>`` upper-cased with
  ``-`` and ``.`` turned into ``_``, or that with ``APPLIANCE_`` in front when only that is a
  variable (``appliance-akto-log-level`` and ``appliance-AKTO_LOG_LEVEL`` set
  ``AKTO_LOG_LEVEL``, ``appliance-mode`` sets ``APPLIANCE_MODE``). On AWS, instance tags must
  be allowed in instance metadata (launch template ``instance_metadata_tags = enabled``).

Only the runtime's own variables (every name ``appliance config`` knows) are ever set from
metadata: whoever can tag an instance must not be able to set ``LD_PRELOAD`` or
``PYTHONPATH`` on it. An unknown name in an environment block is an error (it was meant as a
setting); an ``appliance-*`` tag or attribute that names no setting is ignored with a note
(organisations tag instances freely), shown by ``--print-env`` and on the start-up line.

Exit status: 1 when no metadata service answers (after a few short retries; a service
manager should retry), 2 when the metadata or the resulting configuration is invalid (a
restart cannot fix it), otherwise that of ``appliance run``.

Nothing heavy is imported at module level: the CLI must start fast.
"""

from __future__ import annotations

import os
import sys

AWS_ENDPOINT = "http://169.254.169.254"
GCP_ENDPOINT = "http://metadata.google.internal"
AWS_TOKEN_TTL = "300"
GCP_ATTRIBUTES = "/computeMetadata/v1/instance/attributes/?recursive=true"
PREFIX = "appliance-"
BLOCK = "appliance-config"  # the GCP attribute (and AWS tag) carrying a whole environment block
# attributes that `appliance provision gcp` writes for people and tools, not settings
INFORMATIONAL = {"appliance-deployment", "appliance-health-port"}
MAX_BYTES = 1 << 20  # user data is at most 16 KiB, all of a GCE instance's metadata 512 KiB
MIME_ENV_TYPE = "text/x-appliance-env"

EXIT_UNREACHABLE = 1
EXIT_INVALID = 2

# user data that cloud-init handles itself (cloud-init's own type detection)
CLOUD_INIT_STARTS = ("#!", "#cloud-config", "#include", "#cloud-boothook", "#part-handler",
                     "#upstart-job", "## template:", "#cloud-config-archive", "#cloud-config-jsonp")


class MetadataUnreachable(Exception):
    """No metadata service answered usefully (exit 1: worth retrying later)."""


class MetadataInvalid(Exception):
    """The metadata or the configuration it gives is invalid (exit 2)."""


class _Transient(Exception):
    """Connection failure, timeout or 5xx: try again."""


class _Refused(Exception):
    """An answer that will not change by retrying (4xx, not this cloud)."""


# ----------------------------------------------------------------------------- CLI


def register(sub) -> None:
    import argparse

    p = sub.add_parser(
        "boot", help="read configuration from cloud instance metadata and start the runtime",
        description="Read the instance's metadata (AWS IMDSv2 user data and tags, or GCP instance "
                    "attributes), turn it into the runtime's environment variables, validate them "
                    "and start `appliance run`. Precedence: flags after `--` > process environment "
                    "> tags/attributes appliance-<var> > user data / attribute appliance-config > "
                    "APPLIANCE_MODE from the cloud > defaults.",
        epilog="Exit status: 1 metadata unreachable, 2 invalid metadata or configuration, "
               "otherwise that of `appliance run`.")
    p.add_argument("--cloud", choices=["aws", "gcp", "auto"], default=None,
                   help="which metadata service to read (default: $APPLIANCE_BOOT_CLOUD or auto: "
                        "AWS IMDS, then GCP)")
    p.add_argument("--print-env", action="store_true",
                   help="print the resolved variables (secrets masked) with where each came from, "
                        "check them, and exit without starting the runtime")
    p.add_argument("--timeout", type=_positive, default=2.0, metavar="S",
                   help="timeout of one metadata request in seconds (default 2)")
    p.add_argument("--attempts", type=int, default=3, metavar="N",
                   help="attempts before giving up on an unreachable metadata service (default 3)")
    # test and unusual-network hooks: also AWS_EC2_METADATA_SERVICE_ENDPOINT / GCE_METADATA_HOST,
    # the variables the AWS SDKs and google-auth read
    p.add_argument("--aws-endpoint", help=argparse.SUPPRESS)
    p.add_argument("--gcp-endpoint", help=argparse.SUPPRESS)
    p.add_argument("run_args", nargs="*", metavar="-- RUN-FLAGS",
                   help="flags passed to `appliance run` (they override everything)")
    p.set_defaults(func=cmd_boot)


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(text)
    return value


def cmd_boot(args) -> int:
    from appliance.cli import CliError

    cloud = args.cloud or os.environ.get("APPLIANCE_BOOT_CLOUD", "auto").strip().lower() or "auto"
    if cloud not in ("aws", "gcp", "auto"):
        raise CliError(f"invalid APPLIANCE_BOOT_CLOUD = {cloud!r}: must be aws, gcp or auto",
                       EXIT_INVALID)
    try:
        res = resolve(cloud, aws_endpoint=aws_endpoint(args.aws_endpoint),
                      gcp_endpoint=gcp_endpoint(args.gcp_endpoint), timeout=args.timeout,
                      attempts=max(1, args.attempts))
    except MetadataUnreachable as exc:
        raise CliError(str(exc), EXIT_UNREACHABLE) from None
    except MetadataInvalid as exc:
        raise CliError(str(exc), EXIT_INVALID) from None
    if args.print_env:
        sys.stdout.write(res.render())
        sys.stdout.flush()
    try:
        res.validate(args.run_args)
    except MetadataInvalid as exc:
        raise CliError(str(exc), EXIT_INVALID) from None
    if args.print_env:
        return 0
    os.environ.update(res.env)
    for note in res.notes:
        print(f"appliance boot: note: {note}", file=sys.stderr)
    print(f"appliance boot: {res.summary()}; starting appliance run", file=sys.stderr, flush=True)
    from appliance.cli import main

    return main(["run", *args.run_args])


def aws_endpoint(flag: str | None = None) -> str:
    return (flag or os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or AWS_ENDPOINT).rstrip("/")


def gcp_endpoint(flag: str | None = None) -> str:
    if flag:
        return flag.rstrip("/")
    host = os.environ.get("GCE_METADATA_HOST", "").strip()
    if host:
        return (host if "://" in host else f"http://{host}").rstrip("/")
    return GCP_ENDPOINT


# ----------------------------------------------------------------------------- resolution


class Resolution:
    """The merged variables, where each came from, and notes for the operator."""

    def __init__(self, cloud: str, endpoint: str):
        self.cloud = cloud
        self.endpoint = endpoint
        self.env: dict[str, str] = {}
        self.sources: dict[str, str] = {}
        self.notes: list[str] = []

    def add(self, label: str, values: dict[str, str]) -> None:
        """A layer that overrides what is there (and the other spellings of the same setting)."""
        fields = _fields()
        for name, value in values.items():
            for other in [n for n in self.env if n != name and fields[n] == fields[name]]:
                if self.sources[other] != label:
                    del self.env[other], self.sources[other]
            self.env[name] = value
            self.sources[name] = label

    def render(self) -> str:
        lines = [f"# appliance boot: {self.summary()}",
                 "# precedence: run flags > environment > tags/attributes > user data/appliance-config"
                 " > boot default > built-in default"]
        lines += [f"# note: {n}" for n in self.notes]
        for name in sorted(self.env):
            lines.append(f"{name}={_quote(mask(name, self.env[name]))}  # {self.sources[name]}")
        return "\n".join(lines) + "\n"

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for label in self.sources.values():
            if label.startswith(("aws tag ", "gcp attribute ")) and not label.endswith(BLOCK):
                label = label.rsplit(" ", 1)[0] + "s"
            elif label.startswith("boot default"):
                label = "boot default"
            counts[label] = counts.get(label, 0) + 1
        parts = ", ".join(f"{n} from {k}" for k, n in counts.items()) or "no variables"
        return f"{self.cloud} metadata at {self.endpoint}: {parts}"

    def validate(self, run_args: list[str] | None = None) -> None:
        from appliance.config import FLAG_NAMES, ConfigError, load_settings

        flags = dict(FLAG_NAMES)
        FLAG_NAMES.clear()  # the values came from metadata, not from `appliance run` flags
        try:
            load_settings(env=self.env)
        except ConfigError as exc:
            msg = str(exc)
            name = msg.split()[1] if msg.startswith("invalid ") else ""
            where = self.sources.get(name)
            raise MetadataInvalid(f"{msg} (from {where})" if where else msg) from None
        finally:
            FLAG_NAMES.update(flags)
        run_args = run_args or []
        has_brokers = any(self.env.get(n, "").strip() for n in _aliases("kafka_brokers"))
        if not has_brokers and not any(a.split("=")[0] in ("--kafka", "--jsonl") for a in run_args):
            raise MetadataInvalid(
                f"no Kafka brokers: set AKTO_KAFKA_BROKER_MAL in {_block_name(self.cloud)}, "
                f"as the {_attr_kind(self.cloud)} {PREFIX}akto-kafka-broker-mal, or in the environment")


def resolve(cloud: str, *, aws_endpoint: str = AWS_ENDPOINT, gcp_endpoint: str = GCP_ENDPOINT,
            timeout: float = 2.0, attempts: int = 3, environ=None) -> Resolution:
    """Read the metadata of `cloud` ('aws', 'gcp' or 'auto') and merge it with `environ`."""
    environ = os.environ if environ is None else environ
    candidates = {"aws": [("aws", aws_endpoint)], "gcp": [("gcp", gcp_endpoint)],
                  "auto": [("aws", aws_endpoint), ("gcp", gcp_endpoint)]}[cloud]
    found, endpoint, meta = _fetch_any(candidates, timeout, attempts)
    res = Resolution(found, endpoint)
    res.add(f"boot default for {found}", {"APPLIANCE_MODE": found})
    if found == "aws":
        user_data, tags = meta
        if user_data is None:
            res.notes.append("the instance has no user data")
            block = {}
        else:
            block, note = parse_user_data(user_data, "aws user data")
            if note:
                res.notes.append(note)
        res.add("aws user data", block)
        if tags is None:
            res.notes.append("instance tags are not in the instance metadata (launch template: "
                             "instance_metadata_tags = enabled); appliance-* tags are not read")
            tags = {}
        _add_attributes(res, tags, "aws tag")
    else:
        attrs = meta
        key = next((k for k in attrs if k.lower() == BLOCK), None)
        if key is not None:
            if not isinstance(attrs[key], str):
                raise MetadataInvalid(f"gcp attribute {key}: the value must be a string")
            res.add(f"gcp attribute {key}", parse_env_block(attrs[key].encode(), f"gcp attribute {key}"))
        _add_attributes(res, attrs, "gcp attribute")
    known = _fields()
    res.add("environment", {k: v for k, v in environ.items() if k in known})
    return res


def _add_attributes(res: Resolution, attrs: dict[str, str], kind: str) -> None:
    values: dict[str, str] = {}
    labels: dict[str, str] = {}
    for key in sorted(attrs):
        if not key.lower().startswith(PREFIX) or key.lower() in (BLOCK, *INFORMATIONAL):
            continue
        name = variable_for(key)
        source = f"{kind} {key}"
        try:
            check_name(name, source)
        except MetadataInvalid as exc:
            res.notes.append(f"ignored {exc}")
            continue
        value = attrs[key]
        if not isinstance(value, str):
            raise MetadataInvalid(f"{source}: the value must be a string")
        _check_value(value, source)
        if name in values:
            raise MetadataInvalid(f"{source} and {labels[name]} both set {name}")
        values[name], labels[name] = value, source
    for name, value in values.items():  # one label per variable, so print-env names the tag
        res.add(labels[name], {name: value})


def variable_for(key: str) -> str:
    """appliance-akto-log-level / appliance-AKTO_LOG_LEVEL -> AKTO_LOG_LEVEL;
    appliance-mode -> APPLIANCE_MODE (when only the prefixed name is a variable)."""
    name = key[len(PREFIX):].replace("-", "_").replace(".", "_").upper()
    known = _fields()
    if name not in known and f"APPLIANCE_{name}" in known:
        return f"APPLIANCE_{name}"
    return name


# ----------------------------------------------------------------------------- formats


def parse_user_data(data: bytes, where: str) -> tuple[dict[str, str], str | None]:
    """AWS user data -> (variables, note). gzip, MIME multi-part and cloud-init formats."""
    if data[:2] == b"\x1f\x8b":
        import gzip
        import zlib

        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise MetadataInvalid(f"{where}: not valid gzip ({exc})") from None
        if len(data) > MAX_BYTES:
            raise MetadataInvalid(f"{where}: more than {MAX_BYTES} bytes once decompressed")
    text = _decode(data, where)
    head = text.lstrip()[:200].lower()
    if head.startswith(("content-type:", "mime-version:")):
        return _parse_mime(text, where)
    for start in CLOUD_INIT_STARTS:
        if head.startswith(start):
            kind = "script" if start == "#!" else start.strip("# ")
            return {}, (f"{where} is a cloud-init {kind}; it is left to cloud-init (variables it "
                        f"writes to /etc/appliance/appliance.env reach the runtime through the "
                        f"unit's EnvironmentFile)")
    return parse_env_block(data, where), None


def _parse_mime(text: str, where: str) -> tuple[dict[str, str], str | None]:
    import email

    msg = email.message_from_string(text)
    env: dict[str, str] = {}
    found = 0
    for part in msg.walk():
        if part.get_content_type() != MIME_ENV_TYPE:
            continue
        found += 1
        payload = part.get_payload(decode=True) or b""
        env.update(parse_env_block(payload, f"{where} ({MIME_ENV_TYPE} part {found})"))
    note = None if found else f"{where} is MIME multi-part without a {MIME_ENV_TYPE} part"
    return env, note


def parse_env_block(data: bytes, where: str) -> dict[str, str]:
    """KEY=VALUE lines or a JSON object -> variables (names checked, values strings)."""
    text = _decode(data, where)
    if text.lstrip().startswith("{"):
        return _parse_json_block(text, where)
    env: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        source = f"{where} line {lineno}"
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[7:].lstrip()
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not name:
            raise MetadataInvalid(f"{source}: expected NAME=VALUE, got {_excerpt(line)}")
        check_name(name, source)
        env[name] = _unquote(value.strip(), source)
    return env


def _parse_json_block(text: str, where: str) -> dict[str, str]:
    import json

    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MetadataInvalid(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno} "
                              f"column {exc.colno})") from None
    if not isinstance(data, dict):
        raise MetadataInvalid(f"{where}: JSON must be an object of variable name to value")
    env = {}
    for name, value in data.items():
        source = f"{where} key {name!r}"
        check_name(name, source)
        if value is None:
            raise MetadataInvalid(f"{source}: null is not a value (leave the key out)")
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (int, float)):
            value = json.dumps(value)
        elif isinstance(value, (list, dict)):
            value = json.dumps(value, separators=(",", ":"))
        _check_value(value, source)
        env[name] = value
    return env


def _unquote(value: str, source: str) -> str:
    if value[:1] == "'":
        if len(value) < 2 or not value.endswith("'") or "'" in value[1:-1]:
            raise MetadataInvalid(f"{source}: unbalanced single quote")
        out = value[1:-1]
    elif value[:1] == '"':
        if len(value) < 2 or not value.endswith('"'):
            raise MetadataInvalid(f"{source}: unbalanced double quote")
        out, i, body = [], 0, value[1:-1]
        escapes = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "$": "$", "`": "`", "'": "'"}
        while i < len(body):
            ch = body[i]
            if ch == "\\" and i + 1 < len(body):
                nxt = body[i + 1]
                out.append(escapes.get(nxt, "\\" + nxt))
                i += 2
                continue
            if ch == '"':
                raise MetadataInvalid(f"{source}: unescaped double quote inside the value")
            out.append(ch)
            i += 1
        out = "".join(out)
    else:
        out = value
    _check_value(out, source)
    return out


def _check_value(value: str, source: str) -> None:
    if "\0" in value:
        raise MetadataInvalid(f"{source}: the value contains a NUL byte")


def _decode(data: bytes, where: str) -> str:
    if len(data) > MAX_BYTES:
        raise MetadataInvalid(f"{where}: more than {MAX_BYTES} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MetadataInvalid(f"{where}: not UTF-8 text (byte {exc.start})") from None


def _excerpt(text: str, n: int = 40) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")


# ----------------------------------------------------------------------------- names


_FIELDS: dict[str, str] = {}


def _fields() -> dict[str, str]:
    """Every environment variable the runtime reads -> its settings field (aliases share one)."""
    if not _FIELDS:
        from appliance.config import Settings

        for field_name, field in Settings.model_fields.items():
            for alias in getattr(field.validation_alias, "choices", []):
                if alias != field_name:
                    _FIELDS[alias] = field_name
    return _FIELDS


def _aliases(field_name: str) -> list[str]:
    return [n for n, f in _fields().items() if f == field_name]


def check_name(name: str, source: str) -> None:
    known = _fields()
    if name in known:
        return
    import difflib
    import re

    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise MetadataInvalid(f"{source}: {_excerpt(name)} is not a variable name")
    hint = difflib.get_close_matches(name.upper(), list(known), n=1, cutoff=0.75)
    more = f" (did you mean {hint[0]}?)" if hint else " (see `appliance config` for the names)"
    raise MetadataInvalid(f"{source}: {name} is not a setting of the appliance{more}")


def mask(name: str, value: str) -> str:
    from appliance.config import SECRET_FIELDS

    secret = _fields().get(name) in SECRET_FIELDS or any(
        word in name for word in ("PASSWORD", "SECRET", "TOKEN"))
    return "****" if secret and value else value


def _quote(value: str) -> str:
    import shlex

    return shlex.quote(value)


def _block_name(cloud: str) -> str:
    return "the user data" if cloud == "aws" else f"the instance attribute {BLOCK}"


def _attr_kind(cloud: str) -> str:
    return "instance tag" if cloud == "aws" else "instance attribute"


# ----------------------------------------------------------------------------- HTTP


def _fetch_any(candidates, timeout: float, attempts: int):
    """Try each (cloud, endpoint) in turn, up to `attempts` rounds with a short backoff."""
    import time

    errors: dict[str, str] = {}
    live = list(candidates)
    for attempt in range(attempts):
        for cloud, endpoint in list(live):
            try:
                fetch = fetch_aws if cloud == "aws" else fetch_gcp
                return cloud, endpoint, fetch(endpoint, timeout)
            except _Transient as exc:
                errors[cloud] = f"{_label(cloud)} at {endpoint}: {exc}"
            except _Refused as exc:
                errors[cloud] = f"{_label(cloud)} at {endpoint}: {exc}"
                live.remove((cloud, endpoint))
        if not live:
            break
        if attempt + 1 < attempts:
            time.sleep(min(0.5 * 2 ** attempt, 4.0))
    tried = f" after {attempts} attempt{'s' if attempts > 1 else ''}" if live else ""
    detail = "; ".join(errors[c] for c, _ in candidates if c in errors)
    what = "no instance metadata service answered" if len(candidates) > 1 else "cannot read instance metadata"
    raise MetadataUnreachable(f"{what}{tried}: {detail}")


def _label(cloud: str) -> str:
    return "AWS IMDS" if cloud == "aws" else "GCP metadata server"


def _http(method: str, url: str, headers: dict, timeout: float):
    """(status, headers, body); _Transient on network failures."""
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
            raise _Transient(f"timed out after {timeout:g}s") from None
        if isinstance(reason, socket.gaierror):
            raise _Transient(f"cannot resolve the host ({reason.strerror or reason})") from None
        raise _Transient(getattr(reason, "strerror", None) or str(reason)) from None
    except (TimeoutError, socket.timeout):
        raise _Transient(f"timed out after {timeout:g}s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise _Transient(str(exc) or type(exc).__name__) from None


def _check_status(status: int, what: str) -> None:
    if status >= 500 or status == 429:
        raise _Transient(f"{what}: HTTP {status}")
    if status != 200:
        raise _Refused(f"{what}: HTTP {status}")


def fetch_aws(endpoint: str, timeout: float):
    """IMDSv2: (user data bytes or None, {tag key: value} or None when tags are not exposed)."""
    status, headers, body = _http("PUT", f"{endpoint}/latest/api/token",
                                  {"X-aws-ec2-metadata-token-ttl-seconds": AWS_TOKEN_TTL}, timeout)
    if (headers.get("Metadata-Flavor") or "") == "Google":
        raise _Refused("this is a GCP metadata server")
    if status == 403:
        raise _Refused("the IMDSv2 token was refused (HTTP 403): instance metadata is turned off "
                       "or the request crossed more hops than the instance allows")
    _check_status(status, "PUT /latest/api/token")
    token = body.decode("ascii", "replace").strip()
    if not token:
        raise _Refused("PUT /latest/api/token returned no token")
    auth = {"X-aws-ec2-metadata-token": token}

    def get(path: str):
        st, _, data = _http("GET", f"{endpoint}{path}", auth, timeout)
        if st == 404:
            return None
        if st == 401:  # token expired between calls: the next attempt gets a new one
            raise _Transient(f"GET {path}: HTTP 401")
        _check_status(st, f"GET {path}")
        return data

    user_data = get("/latest/user-data")
    listing = get("/latest/meta-data/tags/instance/")
    if listing is None:
        return user_data, None
    import urllib.parse

    tags = {}
    for key in _decode(listing, "instance tag list").split():
        key = key.strip().rstrip("/")
        if not key.lower().startswith(PREFIX):
            continue
        value = get(f"/latest/meta-data/tags/instance/{urllib.parse.quote(key, safe='')}")
        if value is not None:
            tags[key] = _decode(value, f"aws tag {key}")
    return user_data, tags


def fetch_gcp(endpoint: str, timeout: float) -> dict[str, str]:
    """The instance's custom metadata attributes."""
    import json

    status, headers, body = _http("GET", f"{endpoint}{GCP_ATTRIBUTES}",
                                  {"Metadata-Flavor": "Google"}, timeout)
    if status < 500 and (headers.get("Metadata-Flavor") or "") != "Google":
        raise _Refused(f"HTTP {status} without the Metadata-Flavor: Google header "
                       f"(not a GCP metadata server)")
    _check_status(status, "GET /computeMetadata/v1/instance/attributes/")
    try:
        attrs = json.loads(_decode(body, "gcp instance attributes"))
    except json.JSONDecodeError as exc:
        raise MetadataInvalid(f"gcp instance attributes: not valid JSON ({exc.msg})") from None
    if not isinstance(attrs, dict):
        raise MetadataInvalid("gcp instance attributes: expected a JSON object")
    return attrs
