from __future__ import annotations

import pytest
from awsprov_support import Harness


@pytest.fixture(autouse=True)
def aws_env(monkeypatch, tmp_path):
    """Fake credentials, a fixed region, no config files, no instance metadata, a temp session map."""
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS", "AWS_SESSION_TOKEN",
                "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("APPLIANCE_SESSION_MAP", str(tmp_path / "sessions.json"))
    return tmp_path


@pytest.fixture
def harness(monkeypatch):
    """Real boto3 clients with Stubbers, wired into the CLI in place of ``make_clients``."""
    h = Harness()
    from provision.aws import clients as clients_mod

    monkeypatch.setattr(clients_mod, "make_clients", lambda *a, **k: h.clients())
    yield h


@pytest.fixture
def cli(capsys):
    """Run ``appliance ...`` in-process; returns (exit code, stdout, stderr)."""
    from appliance.cli import main

    def run(*argv: str):
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run
