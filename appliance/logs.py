"""Logging by AKTO_LOG_LEVEL (DEBUG, INFO, WARN, ERROR, OFF; default WARN).

Log lines never carry secrets, and never carry bodies or headers above DEBUG.
"""

from __future__ import annotations

import logging
import sys

LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING,
          "ERROR": logging.ERROR, "OFF": logging.CRITICAL + 10}


def setup_logging(level: str = "WARN") -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(LEVELS.get(level, logging.WARNING))
