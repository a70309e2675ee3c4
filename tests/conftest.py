"""Which core build the suite runs against: ``pytest --core=python`` (the pure-Python
reference) or ``--core=cython`` (the compiled build); by default whatever the package
loads (the compiled core where it is built).  The choice goes through the environment
(APPLIANCE_CORE, read once by appliance.core), so the processes the tests start run the
same core.  ``make test`` runs the whole suite on the default core, then the core's
tests again on the pure-Python one."""

from __future__ import annotations

import os


def pytest_addoption(parser):
    parser.addoption("--core", choices=("cython", "python"), default=None,
                     help="run against this build of the core (default: what the package loads)")


def pytest_configure(config):
    core = config.getoption("--core")
    if core:
        os.environ["APPLIANCE_CORE"] = core


def pytest_report_header(config):
    import appliance.core

    return f"appliance {appliance.core.describe()}"
