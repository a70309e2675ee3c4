"""Environment blocks: AWS user data and the GCP attribute appliance-config.

Either ``KEY=VALUE`` lines in environment-file syntax (``#`` comments, blank lines, optional
``export``, values optionally in single quotes (literal) or double quotes (backslash
escapes)), or one JSON object of variable name to value (numbers and booleans become
strings, lists and objects compact JSON, which suits ``AKTO_MODULE_DISCOVERY_CONFIG``). User
data may be gzip-compressed. User data meant for cloud-init (``#cloud-config``, a ``#!``
script, ``#include`` ...) is left to cloud-init; a MIME multi-part user data contributes its
``text/x-appliance-env`` parts. Names are checked: only the runtime's own variables.
"""

from __future__ import annotations

from appliance.cloudmeta import MetadataInvalid
from appliance.cloudmeta.http import MAX_BYTES
from appliance.cloudmeta.names import check_name, excerpt

MIME_ENV_TYPE = "text/x-appliance-env"
# user data that cloud-init handles itself (cloud-init's own type detection)
CLOUD_INIT_STARTS = ("#!", "#cloud-config", "#include", "#cloud-boothook", "#part-handler",
                     "#upstart-job", "## template:", "#cloud-config-archive", "#cloud-config-jsonp")


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
    text = decode(data, where)
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
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            payload = b""
        env.update(parse_env_block(payload, f"{where} ({MIME_ENV_TYPE} part {found})"))
    note = None if found else f"{where} is MIME multi-part without a {MIME_ENV_TYPE} part"
    return env, note


def parse_env_block(data: bytes, where: str) -> dict[str, str]:
    """KEY=VALUE lines or a JSON object -> variables (names checked, values strings)."""
    text = decode(data, where)
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
            raise MetadataInvalid(f"{source}: expected NAME=VALUE, got {excerpt(line)}")
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
        check_value(value, source)
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
        chars: list[str] = []
        i, body = 0, value[1:-1]
        escapes = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "$": "$", "`": "`", "'": "'"}
        while i < len(body):
            ch = body[i]
            if ch == "\\" and i + 1 < len(body):
                nxt = body[i + 1]
                chars.append(escapes.get(nxt, "\\" + nxt))
                i += 2
                continue
            if ch == '"':
                raise MetadataInvalid(f"{source}: unescaped double quote inside the value")
            chars.append(ch)
            i += 1
        out = "".join(chars)
    else:
        out = value
    check_value(out, source)
    return out


def check_value(value: str, source: str) -> None:
    if "\0" in value:
        raise MetadataInvalid(f"{source}: the value contains a NUL byte")


def decode(data: bytes, where: str) -> str:
    if len(data) > MAX_BYTES:
        raise MetadataInvalid(f"{where}: more than {MAX_BYTES} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MetadataInvalid(f"{where}: not UTF-8 text (byte {exc.start})") from None



