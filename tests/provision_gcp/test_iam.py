"""The IAM permission lists in provision/gcp/permissions.json match the API calls the code makes.

The local server maps every request to the permission Compute checks for it
(compute.<resource>.<verb>) and can enforce a grant, answering 403 like Compute does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gcp_helpers import PROJECT, REGION, fake, offline, provision_args, run  # noqa: F401 (fixtures)

from provision import exitcodes

PERMS = json.loads((Path(__file__).parents[2] / "provision/gcp/permissions.json").read_text())
LOC = ("--project", PROJECT, "--region", REGION)
SRC = ("--subnet", "app-a", "--tag", "web", "--instance", f"{REGION}-a/web-1")


class ScenarioFailed(Exception):
    def __init__(self, code, err):
        super().__init__(f"exit {code}: {err}")
        self.code, self.err = code, err


def _ok(result):
    code, _, err = result
    if code != 0:
        raise ScenarioFailed(code, err)
    return code


# Each scenario exercises everything the command can call: create, no-op re-run, patch,
# replace (policy), update (firewall), patch (autoscaler).
def scenario_provision(run, fake):
    col = ("--collector-ilb", "ext-collector")
    for extra in ((), (), ("--subnet", "app-b"), ("--subnet", "app-b")):
        _ok(run(*provision_args(*SRC, *col, *extra, collector=False)))
    _ok(run(*provision_args("--subnet", "app-a", "--instance", f"{REGION}-a/web-1", *col, collector=False)))  # drop tag


def scenario_provision_create_collector(run, fake):
    cidr = ("--cidr", "192.168.0.0/16")
    _ok(run(*provision_args(*SRC, *cidr)))
    _ok(run(*provision_args(*SRC, *cidr)))
    _ok(run(*provision_args(*SRC, *cidr, "--subnet", "app-b")))
    _ok(run(*provision_args(*SRC, *cidr, "--subnet", "app-b", "--max", "9")))
    _ok(run(*provision_args("--subnet", "app-a", "--subnet", "app-b", "--instance", f"{REGION}-a/web-1", *cidr, "--max", "9")))


def scenario_status(run, fake):
    _ok(run("provision", "gcp", "status", *LOC, "--name", "demo"))
    _ok(run("provision", "gcp", "status", *LOC))


def scenario_deprovision(run, fake):
    _ok(run("deprovision", "gcp", *LOC, "--name", "demo"))


SCENARIOS = {
    "provision": (scenario_provision, None),
    "provision_create_collector": (scenario_provision_create_collector, None),
    "status": (scenario_status, lambda run: run(*provision_args(*SRC))),
    "deprovision": (scenario_deprovision, lambda run: run(*provision_args(*SRC))),
}


def _setup(run, fake, command):
    scenario, setup = SCENARIOS[command]
    if setup:
        assert setup(run)[0] == 0
    return scenario, len(fake.calls)


@pytest.mark.parametrize("command", list(SCENARIOS))
def test_calls_map_exactly_to_the_documented_permissions(run, fake, command):
    scenario, n = _setup(run, fake, command)
    scenario(run, fake)
    used = {c.permission for c in fake.calls[n:]}
    assert "unknown" not in used
    listed = set(PERMS["commands"][command])
    assert used - listed == set(), f"calls not covered by permissions.json[{command}]"
    assert listed - used == set(), f"permissions.json[{command}] lists permissions the code never needs"


@pytest.mark.parametrize("command", list(SCENARIOS))
def test_the_documented_grant_is_enough(run, fake, command):
    scenario, _ = _setup(run, fake, command)
    fake.granted = set(PERMS["commands"][command])
    scenario(run, fake)
    assert all(c.status != 403 for c in fake.calls)


CASES = [(cmd, perm) for cmd in SCENARIOS for perm in PERMS["commands"][cmd]]


@pytest.mark.parametrize("command, missing", CASES, ids=[f"{c}-{p}" for c, p in CASES])
def test_each_listed_permission_is_needed_and_named_when_missing(run, fake, command, missing):
    scenario, _ = _setup(run, fake, command)
    fake.granted = set(PERMS["commands"][command]) - {missing}
    with pytest.raises(ScenarioFailed) as failed:
        scenario(run, fake)
    assert failed.value.code == exitcodes.DENIED
    errors = [line for line in failed.value.err.splitlines() if line.startswith("appliance: error:")]
    assert len(errors) == 1
    assert errors[0].startswith("appliance: error: permission denied while ")
    assert f"missing IAM permission {missing} " in errors[0]


def test_code_permission_table_matches_the_server_mapping():
    from provision.gcp.compute import KINDS, operation_permission, permission

    union = set().union(*PERMS["commands"].values())
    expected = {
        ("packet_mirroring", "insert"): "compute.packetMirrorings.create",
        ("packet_mirroring", "patch"): "compute.packetMirrorings.update",
        ("backend_service", "get_health"): "compute.regionBackendServices.getHealth",
        ("health_check", "insert"): "compute.regionHealthChecks.create",
        ("autoscaler", "patch"): "compute.autoscalers.update",
        ("firewall", "update"): "compute.firewalls.update",
        ("instance_group_manager", "delete"): "compute.instanceGroupManagers.delete",
    }
    for (kind, method), perm in expected.items():
        assert permission(kind, method) == perm
        assert perm in union
    assert {operation_permission("global"), operation_permission("region")} <= union
    for key in KINDS:
        assert permission(key, "get") in union
