"""Which names are settings: metadata may set only the runtime's own variables (whoever can
tag an instance must not be able to set LD_PRELOAD or PYTHONPATH on it)."""

from __future__ import annotations

import difflib
import re
import shlex

from appliance.cloudmeta import MetadataInvalid

PREFIX = "appliance-"
BLOCK = "appliance-config"  # the GCP attribute (and AWS tag) carrying a whole environment block


def excerpt(text: str, n: int = 40) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")


def fields() -> dict[str, str]:
    """Every environment variable the runtime reads -> its settings field (aliases share one)."""
    from appliance.config import VARIABLES  # pydantic: only when a boot really runs

    return VARIABLES


def ignored() -> dict[str, str]:
    """Akto's variables that the appliance accepts and does not use -> why."""
    from appliance.config import IGNORED_AKTO_VARIABLES

    return IGNORED_AKTO_VARIABLES


def aliases(field_name: str) -> list[str]:
    return [n for n, f in fields().items() if f == field_name]


def variable_for(key: str) -> str:
    """appliance-akto-log-level / appliance-AKTO_LOG_LEVEL -> AKTO_LOG_LEVEL;
    appliance-mode -> APPLIANCE_MODE (when only the prefixed name is a variable)."""
    name = key[len(PREFIX):].replace("-", "_").replace(".", "_").upper()
    known = fields()
    if name not in known and f"APPLIANCE_{name}" in known:
        return f"APPLIANCE_{name}"
    return name


def check_name(name: str, source: str) -> None:
    known = fields()
    if name in known or name in ignored():
        return
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise MetadataInvalid(f"{source}: {excerpt(name)} is not a variable name")
    hint = difflib.get_close_matches(name.upper(), list(known), n=1, cutoff=0.75)
    more = f" (did you mean {hint[0]}?)" if hint else " (see `appliance config` for the names)"
    raise MetadataInvalid(f"{source}: {name} is not a setting of the appliance{more}")


def mask(name: str, value: str) -> str:
    from appliance.config import SECRET_FIELDS

    secret = fields().get(name) in SECRET_FIELDS or any(
        word in name for word in ("PASSWORD", "SECRET", "TOKEN"))
    return "****" if secret and value else value


def quote(value: str) -> str:
    return shlex.quote(value)
