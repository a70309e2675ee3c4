"""Logging by AKTO_LOG_LEVEL (DEBUG, INFO, WARN, ERROR, OFF; default WARN) in the format of
APPLIANCE_LOG_FORMAT: ``text`` (default) or ``json`` (one JSON object per line, for log
shippers, with the same fields as text: time, level, logger, message; a traceback, when there
is one, in ``exc_info``). JSON lines come from python-json-logger.

The start-up line (``startup()``: version, mode, workers, broker) is shown at the default
level too: it goes through the ``appliance.startup`` logger, enabled at INFO unless the level
is ERROR or OFF.

Log lines never carry secrets, and never carry bodies or headers above DEBUG.
"""

from __future__ import annotations

import logging
import sys

LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING,
          "ERROR": logging.ERROR, "OFF": logging.CRITICAL + 10}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
STARTUP = "appliance.startup"


def formatter(fmt: str = "text") -> logging.Formatter:
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        return JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                             rename_fields={"asctime": "time", "levelname": "level",
                                            "name": "logger"})
    return logging.Formatter(TEXT_FORMAT)


def setup_logging(level: str = "WARN", fmt: str = "text") -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    root.addHandler(handler)
    threshold = LEVELS.get(level, logging.WARNING)
    root.setLevel(threshold)
    # the start-up line shows at the default level (WARN), not under ERROR or OFF
    logging.getLogger(STARTUP).setLevel(logging.INFO if threshold <= logging.WARNING else threshold)


def startup(message: str, *args: object) -> None:
    """Log the one start-up line (shown at the default level)."""
    logging.getLogger(STARTUP).info(message, *args)
