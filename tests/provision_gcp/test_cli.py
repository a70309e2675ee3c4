"""CLI wiring: lazy imports, help, exit codes, running without the gcp extra."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from gcp_helpers import offline  # noqa: F401 (fixture)

from provision import exitcodes

ROOT = Path(__file__).parents[2]


def _py(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_cli_does_not_import_google_cloud():
    res = _py(
        "import sys, appliance.cli as c\n"
        "import provision.gcp.cli\n"
        "c.build_parser().parse_args(['provision', 'gcp', 'status', '--name', 'x'])\n"
        "bad = [m for m in sys.modules if m.startswith(('google.cloud', 'google.api_core', 'google.auth'))]\n"
        "print(bad)\n"
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_help_lists_every_flag_and_the_exit_codes(capsys):
    from appliance.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["provision", "gcp", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--project", "--region", "--network", "--name", "--subnet", "--tag", "--instance", "--cidr",
        "--protocol", "--direction", "--priority", "--collector-ilb", "--create-collector", "--image",
        "--machine-type", "--min", "--max", "--collector-subnet", "--kafka-bootstrap", "--appliance-env",
        "--health-port", "--service-account", "--target-cpu", "--dry-run", "--json", "--output", "--yes",
        "--auto-approve", "--timeout", "status",
    ):
        assert flag in out
    assert "--api-endpoint" not in out  # advanced, documented in the README
    assert exitcodes.epilog() in out  # the table shared with AWS

    with pytest.raises(SystemExit):
        main(["deprovision", "gcp", "--help"])
    assert "--dry-run" in capsys.readouterr().out


def test_without_google_cloud_compute_a_clear_error(tmp_path):
    res = _py(
        "import sys\n"
        "sys.modules['google.cloud.compute_v1'] = None  # as if the gcp extra were not installed\n"
        "from appliance.cli import main\n"
        "sys.exit(main(['provision', 'gcp', '--project', 'demo-proj', '--region', 'us-central1', '--network', 'n',"
        " '--tag', 't', '--collector-ilb', 'c', '--api-endpoint', 'http://127.0.0.1:9']))\n"
    )
    assert res.returncode == 1
    assert res.stderr == "appliance: error: google-cloud-compute is not installed: pip install 'mirror-appliance[gcp]'\n"


def test_package_data_ships_the_docs():
    for name in ("permissions.json", "IAM.md", "README.md"):
        assert (ROOT / "provision/gcp" / name).is_file()
