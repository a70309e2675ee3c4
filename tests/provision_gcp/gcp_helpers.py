"""Fixtures, constants and argument builders for the GCP provisioning tests.

No conftest.py here on purpose: several test folders of this repository import helpers with
`from conftest import ...`, which breaks when more than one folder's conftest is loaded. Test
modules import the fixtures they use from this module instead.
"""

from __future__ import annotations

import socket

import pytest
from fake_compute import FakeCompute

PROJECT = "demo-proj"
REGION = "us-central1"

_LOCAL = {"127.0.0.1", "::1", "localhost"}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Fail loudly if anything tries to reach a non-local address (e.g. real Google endpoints)."""
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in _LOCAL and self.family in (socket.AF_INET, socket.AF_INET6):
            raise RuntimeError(f"test tried to reach the network: {address!r}")
        return real_connect(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in _LOCAL and host is not None:
            raise RuntimeError(f"test tried to resolve {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    for var in ("CLOUDSDK_CORE_PROJECT", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_COMPUTE_REGION", "APPLIANCE_GCP_API_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/credentials.json")
    monkeypatch.setenv("APPLIANCE_GCP_POLL_INTERVAL", "0")


@pytest.fixture
def fake():
    server = FakeCompute(PROJECT, REGION).seed_world().start()
    yield server
    server.stop()


@pytest.fixture
def run(fake, capsys):
    """Run the real `appliance` CLI against the local server; return (code, stdout, stderr)."""
    from appliance.cli import main

    def _run(*argv, endpoint=True, yes=True):
        args = list(argv)
        if endpoint:
            args += ["--api-endpoint", fake.endpoint]
        # Applies are confirmed with --yes: these tests are about the API calls; the prompt
        # (and the refusal without a terminal) is tested in test_gcp_confirm.py.
        if yes and args[0] in ("provision", "deprovision") and "status" not in args:
            args.append("--yes")
        capsys.readouterr()
        code = main(args)
        out, err = capsys.readouterr()
        return code, out, err

    return _run



def provision_args(*extra, name="demo", collector=True):
    args = ["provision", "gcp", "--project", PROJECT, "--region", REGION, "--network", "prod-vpc", "--name", name]
    if collector:
        args += [
            "--create-collector",
            "--image", "projects/appliance-images/global/images/family/mirror-appliance",
            "--kafka-bootstrap", "kafka-1.internal:9092,kafka-2.internal:9092",
            "--min", "2", "--max", "5",
            "--collector-subnet", "collectors",
        ]
    return args + list(extra)


def run_cli_process(argv, *, answer: str | None = None, stdin=None, timeout: float = 90):
    """Run ``python -m appliance ARGV`` in a child process, as a user would. With ``answer``,
    stdin is a real terminal (a pty) on which ``answer`` is typed; otherwise ``stdin``
    (default /dev/null). No credentials: the endpoint is the local server (plain http, so the
    client uses anonymous credentials). Returns (exit code, stdout, stderr)."""
    import os
    import pty
    import subprocess
    import sys
    from pathlib import Path

    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent/credentials.json",
        "APPLIANCE_GCP_POLL_INTERVAL": "0",
    }
    master = slave = None
    if answer is not None:
        master, slave = pty.openpty()
        stdin = slave
    try:
        proc = subprocess.Popen([sys.executable, "-m", "appliance", *argv], cwd=Path(__file__).resolve().parents[2],
                                env=env, text=True, stdin=subprocess.DEVNULL if stdin is None else stdin,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if master is not None:
            os.write(master, answer.encode())
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err
    finally:
        for fd in (master, slave):
            if fd is not None:
                os.close(fd)
