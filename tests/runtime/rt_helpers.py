"""Helpers for runtime tests (imported by name; fixtures live in conftest.py)."""

import json

from appliance.broker import consume_all  # noqa: F401 - re-exported for the tests


def records(msgs):
    return [json.loads(m.value()) for m in msgs]
