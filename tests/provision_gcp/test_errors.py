"""API error paths: 403 (permission named), quota, 404, 409, failed operations, timeouts."""

from __future__ import annotations

import pytest
from gcp_helpers import PROJECT, REGION, fake, offline, provision_args, run  # noqa: F401 (fixtures)

from provision import exitcodes

P = f"projects/{PROJECT}"
R = f"{P}/regions/{REGION}"


def error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.splitlines()
    assert lines and lines[-1].startswith("appliance: error: "), err
    assert sum(1 for line in lines if line.startswith("appliance: error:")) == 1
    return lines[-1]


def test_403_names_the_missing_permission_from_error_info(run, fake):
    fake.granted = None
    fake.fail(
        "POST", r"/global/firewalls$", 403,
        f"Required 'compute.firewalls.create' permission for '{P}/global/firewalls/demo-allow-health'", "forbidden",
        details=[{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "IAM_PERMISSION_DENIED",
                  "domain": "iam.googleapis.com", "metadata": {"permission": "compute.firewalls.create"}}],
    )
    code, out, err = run(*provision_args("--tag", "web"))
    assert code == exitcodes.DENIED
    line = error_line(err)
    assert "permission denied while creating firewall rule demo-allow-health: missing IAM permission compute.firewalls.create" in line
    assert "see provision/gcp/IAM.md" in line
    assert fake.inserts()[-1].path.endswith("/global/firewalls")
    assert len(fake.inserts()) == 1  # stopped at the first failure


def test_403_permission_parsed_from_message_when_no_error_info(run, fake):
    fake.granted = {"compute.projects.get", "compute.regions.get", "compute.networks.get", "compute.subnetworks.get",
                    "compute.forwardingRules.get"}
    fake.iam_error_info = False
    code, _, err = run(*provision_args("--subnet", "app-a", "--collector-ilb", "ext-collector", collector=False))
    assert code == exitcodes.DENIED
    line = error_line(err)
    assert "missing IAM permission compute.packetMirrorings.get" in line
    assert f"Required 'compute.packetMirrorings.get' permission for '{R}/packetMirrorings/demo-pm'" in line


def test_403_without_a_named_permission_says_which_one_the_call_needs(run, fake):
    fake.fail("POST", r"/packetMirrorings$", 403, "The caller does not have permission", "forbidden")
    code, _, err = run(*provision_args("--subnet", "app-a", "--collector-ilb", "ext-collector", collector=False))
    assert code == exitcodes.DENIED
    line = error_line(err)
    assert "permission denied while creating packet mirroring policy demo-pm: The caller does not have permission" in line
    assert "this call needs compute.packetMirrorings.create" in line


def test_partial_grant_fails_at_the_first_missing_permission_and_rerun_resumes(run, fake):
    import json
    from pathlib import Path

    perms = json.loads((Path(__file__).parents[2] / "provision/gcp/permissions.json").read_text())
    full = set(perms["commands"]["provision_create_collector"])
    fake.granted = full - {"compute.autoscalers.create"}
    code, _, err = run(*provision_args("--subnet", "app-a"))
    assert code == exitcodes.DENIED
    assert "missing IAM permission compute.autoscalers.create" in error_line(err)
    made = [c.body["name"] for c in fake.inserts() if c.status == 200]
    assert made == ["demo-allow-health", "demo-allow-mirrored", "demo-hc", "demo-tmpl", "demo-mig"]

    fake.granted = full
    n = len(fake.calls)
    code, out, err = run(*provision_args("--subnet", "app-a"))
    assert code == 0, err
    assert [c.body["name"] for c in fake.inserts() if fake.calls.index(c) >= n] == ["demo-as", "demo-bes", "demo-fr", "demo-pm"]
    assert "4 created, 0 updated, 5 unchanged" in out


def test_quota_exceeded_on_the_request(run, fake):
    fake.fail("POST", r"/global/firewalls$", 403, "Quota 'FIREWALLS' exceeded.  Limit: 200.0 globally.", "quotaExceeded")
    code, _, err = run(*provision_args("--tag", "web"))
    assert code == exitcodes.QUOTA
    assert "quota exceeded while creating firewall rule demo-allow-health: Quota 'FIREWALLS' exceeded. Limit: 200.0 globally." in error_line(err)


def test_quota_exceeded_reported_by_the_operation(run, fake):
    fake.fail_operation(
        "POST", r"/instanceGroupManagers$",
        [{"code": "QUOTA_EXCEEDED", "message": "Quota 'INSTANCES' exceeded.  Limit: 24.0 in region us-central1.",
          "errorDetails": [{"quotaInfo": {"metricName": "compute.googleapis.com/instances", "limitName": "INSTANCES-per-project-region",
                                          "dimensions": {"region": "us-central1"}, "limit": 24}}]}],
    )
    code, _, err = run(*provision_args("--subnet", "app-a"))
    assert code == exitcodes.QUOTA
    line = error_line(err)
    assert "quota exceeded while creating managed instance group demo-mig: Quota 'INSTANCES' exceeded. Limit: 24.0 in region us-central1." in line
    # the operation was accepted, polled through Operations.wait, and failed
    mig = [c for c in fake.calls if c.method == "POST" and c.path.endswith("/instanceGroupManagers")][0]
    after = fake.calls[fake.calls.index(mig) + 1 :]
    assert [c.path.rsplit("/", 2)[-1] for c in after] == ["wait", "wait"]
    assert fake.get(f"{R}/instanceGroupManagers/demo-mig") is None


def test_rate_limit_is_a_quota_error(run, fake):
    fake.fail("GET", r"/global/networks/", 429, "Rate Limit Exceeded", "rateLimitExceeded")
    code, _, err = run(*provision_args("--tag", "web"))
    assert code == exitcodes.QUOTA
    assert "quota exceeded while reading network" in error_line(err)


def test_failed_operation_with_a_bad_value_is_exit_2(run, fake):
    fake.fail_operation(
        "POST", r"/instanceTemplates$",
        [{"code": "INVALID_FIELD_VALUE", "message": "Invalid value for field 'resource.properties.machineType': 'e2-standard-2'. Machine type not found."}],
        status=400, status_message="BAD REQUEST",
    )
    code, _, err = run(*provision_args("--subnet", "app-a"))
    assert code == exitcodes.USAGE
    assert "the Compute API rejected creating instance template demo-tmpl: Invalid value for field 'resource.properties.machineType'" in error_line(err)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--network", "nope", "--tag", "web"], f"network {P}/global/networks/nope (--network)"),
        (["--network", "prod-vpc", "--subnet", "ghost"], f"subnet {R}/subnetworks/ghost (--subnet)"),
        (["--network", "prod-vpc", "--instance", f"{REGION}-c/ghost"], f"instance {P}/zones/{REGION}-c/instances/ghost (--instance)"),
    ],
)
def test_missing_referenced_resources_are_named_with_their_flag(run, fake, args, needle):
    code, out, err = run("provision", "gcp", "--project", PROJECT, "--region", REGION, "--name", "demo",
                         "--collector-ilb", "ext-collector", *args)
    assert code == exitcodes.USAGE
    line = error_line(err)
    assert line.startswith(f"appliance: error: not found in project {PROJECT} with these credentials: ")
    assert needle in line
    assert fake.mutations() == []
    assert out == ""  # no plan


def test_every_missing_resource_is_named_in_one_line(run, fake):
    code, out, err = run("provision", "gcp", "--project", PROJECT, "--region", REGION, "--name", "demo",
                         "--network", "nope", "--subnet", "ghost", "--instance", f"{REGION}-c/ghost",
                         "--collector-ilb", "missing-ilb")
    assert code == exitcodes.USAGE
    assert error_line(err) == (
        f"appliance: error: not found in project {PROJECT} with these credentials: "
        f"network {P}/global/networks/nope (--network), subnet {R}/subnetworks/ghost (--subnet), "
        f"instance {P}/zones/{REGION}-c/instances/ghost (--instance), "
        f"forwarding rule {R}/forwardingRules/missing-ilb (--collector-ilb)")
    assert out == ""
    assert fake.mutations() == []


@pytest.mark.parametrize("command", ["provision", "status", "deprovision"])
@pytest.mark.parametrize("where, needle", [
    (("--project", "no-such-project"), "not found with these credentials: project no-such-project (--project)"),
    (("--region", "us-west9"), f"not found with these credentials: region us-west9 in project {PROJECT} (--region)"),
])
def test_unknown_project_or_region_is_named_before_anything_else(run, fake, command, where, needle):
    loc = {"--project": PROJECT, "--region": REGION}
    loc[where[0]] = where[1]
    base = ["--project", loc["--project"], "--region", loc["--region"], "--name", "demo"]
    argv = {"provision": ["provision", "gcp", *base, "--network", "prod-vpc", "--tag", "web",
                          "--collector-ilb", "ext-collector"],
            "status": ["provision", "gcp", "status", *base],
            "deprovision": ["deprovision", "gcp", *base]}[command]
    code, out, err = run(*argv)
    assert code == exitcodes.USAGE
    assert needle in error_line(err)
    assert len(fake.calls) <= 2 and fake.mutations() == []


def test_compute_api_disabled_names_the_fix(run, fake):
    fake.fail("GET", r"^projects/demo-proj$", 403,
              "Compute Engine API has not been used in project 123 before or it is disabled.", "accessNotConfigured")
    code, out, err = run("provision", "gcp", "status", "--project", PROJECT, "--region", REGION)
    assert code == exitcodes.USAGE
    line = error_line(err)
    assert "the Compute Engine API is not enabled for the project while reading project demo-proj" in line
    assert "gcloud services enable compute.googleapis.com" in line


def test_subnet_in_another_network_is_refused(run, fake):
    code, _, err = run(*provision_args("--subnet", "elsewhere", "--collector-ilb", "ext-collector", collector=False))
    assert code == exitcodes.USAGE
    assert f"--subnet {R}/subnetworks/elsewhere belongs to network {P}/global/networks/other-vpc, not --network {P}/global/networks/prod-vpc" in error_line(err)


@pytest.mark.parametrize(
    "description, who",
    [
        ("created by hand for the IDS", "another tool or person"),
        ("mirror-appliance:other collector health check (managed by `appliance provision gcp`)", "deployment 'other'"),
    ],
)
def test_409_name_taken_by_a_resource_we_did_not_create(run, fake, description, who):
    fake.seed(f"{R}/healthChecks/demo-hc", {"type": "TCP", "description": description})
    code, _, err = run(*provision_args("--subnet", "app-a"))
    assert code == exitcodes.CONFLICT
    line = error_line(err)
    assert f"health check demo-hc already exists in project demo-proj but was created by {who}, not deployment 'demo'" in line
    assert fake.mutations() == []  # refused before creating anything
    # the dry run shows the same conflict and exits 6 too
    code, out, _ = run(*provision_args("--subnet", "app-a", "--dry-run"))
    assert code == exitcodes.CONFLICT
    assert "conflict  health check             demo-hc" in out


def test_409_race_with_ourselves_is_fine(run, fake):
    def create_first(f, call):  # another run of the same deployment wins the race
        f.seed(f"{P}/global/firewalls/{call.body['name']}", dict(call.body))

    fake.on("POST", r"/global/firewalls$", create_first)
    code, out, err = run(*provision_args("--subnet", "app-a"))
    assert code == 0, err
    assert "firewall rule demo-allow-health appeared concurrently; keeping it" in err
    assert [c.status for c in fake.inserts()][0] == 409
    assert "8 created, 0 updated, 1 unchanged" in out


def test_409_race_with_someone_else_is_a_conflict(run, fake):
    def create_foreign(f, call):
        f.seed(f"{P}/global/firewalls/{call.body['name']}", {"network": f"{P}/global/networks/prod-vpc", "description": "someone's rule"})

    fake.on("POST", r"/global/firewalls$", create_foreign)
    code, _, err = run(*provision_args("--subnet", "app-a"))
    assert code == exitcodes.CONFLICT
    assert "firewall rule demo-allow-health already exists in project demo-proj but was created by another tool or person" in error_line(err)


def test_operation_timeout(run, fake):
    fake.polls_before_done = 10_000
    code, _, err = run(*provision_args("--subnet", "app-a", "--collector-ilb", "ext-collector", "--timeout", "0.3", collector=False))
    assert code == exitcodes.ERROR
    line = error_line(err)
    assert "timed out after 0s waiting for creating packet mirroring policy demo-pm (operation operation-" in line
    assert "re-running the command is safe" in line
    assert "  ... creating packet mirroring policy demo-pm: RUNNING" in err


def test_unreachable_endpoint(run, fake):
    code, _, err = run(*provision_args("--tag", "web", "--collector-ilb", "ext-collector", "--api-endpoint", "http://127.0.0.1:9", collector=False), endpoint=False)
    assert code == exitcodes.ERROR
    assert "cannot reach the Compute API at http://127.0.0.1:9 while reading project demo-proj" in error_line(err)


def test_no_credentials_without_endpoint_fails_cleanly(run, fake):
    # Default endpoint + no Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS
    # points at a missing file): a one-line auth error, and nothing leaves the machine.
    code, _, err = run(*provision_args("--tag", "web", "--collector-ilb", "ext-collector", collector=False), endpoint=False)
    assert code == exitcodes.DENIED
    assert "no Google Cloud credentials found" in error_line(err)


def test_unexpected_server_error(run, fake):
    fake.fail("GET", r"/global/networks/", 500, "Internal error. Please try again or contact Google Support.", "backendError", times=10)
    code, _, err = run(*provision_args("--tag", "web", "--collector-ilb", "ext-collector", collector=False))
    assert code == exitcodes.ERROR
    assert f"reading network {P}/global/networks/prod-vpc failed: HTTP 500: Internal error." in error_line(err)


def test_operation_already_failed_when_returned(run, fake):
    fake.polls_before_done = 0  # the insert's response is already DONE, with an error
    fake.fail_operation(
        "POST", r"/packetMirrorings$",
        [{"code": "QUOTA_EXCEEDED", "message": "Quota 'PACKET_MIRRORINGS' exceeded.  Limit: 1.0 in region us-central1."}],
    )
    code, _, err = run(*provision_args("--tag", "web", "--collector-ilb", "ext-collector", collector=False))
    assert code == exitcodes.QUOTA
    assert "quota exceeded while creating packet mirroring policy demo-pm: Quota 'PACKET_MIRRORINGS' exceeded." in error_line(err)
    assert fake.op_polls() == []


def test_library_builtin_poller_would_leave_the_configured_endpoint(fake):
    """Why the provisioner waits with its own Operations client (see provision/gcp/compute.py).

    PacketMirroringsClient.insert() returns an ExtendedOperation whose refresh uses an operations
    client built without our client_options: it polls compute.googleapis.com, which the offline
    guard refuses. Our path (insert_unary + Operations.wait on the same endpoint) stays local.
    """
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import compute_v1

    client = compute_v1.PacketMirroringsClient(
        credentials=AnonymousCredentials(), transport="rest", client_options={"api_endpoint": fake.endpoint}
    )
    op = client.insert(
        project=PROJECT, region=REGION,
        packet_mirroring_resource=compute_v1.PacketMirroring(
            name="lib-pm",
            network=compute_v1.PacketMirroringNetworkInfo(url=f"projects/{PROJECT}/global/networks/prod-vpc"),
            collector_ilb=compute_v1.PacketMirroringForwardingRuleInfo(url=f"projects/{PROJECT}/regions/{REGION}/forwardingRules/ext-collector"),
        ),
    )
    with pytest.raises(RuntimeError, match="compute.googleapis.com"):
        op.result(timeout=5)
    assert fake.op_polls() == []

    from provision.gcp.compute import Compute

    api = Compute(PROJECT, REGION, fake.endpoint, poll_interval=0, progress=lambda msg: None)
    raw = api.client("PacketMirroringsClient").insert_unary(
        project=PROJECT, region=REGION,
        packet_mirroring_resource=compute_v1.PacketMirroring(
            name="our-pm",
            network=compute_v1.PacketMirroringNetworkInfo(url=f"projects/{PROJECT}/global/networks/prod-vpc"),
            collector_ilb=compute_v1.PacketMirroringForwardingRuleInfo(url=f"projects/{PROJECT}/regions/{REGION}/forwardingRules/ext-collector"),
        ),
    )
    api.wait(raw, "creating packet mirroring policy our-pm", "region")
    assert [c.path.rsplit("/", 1)[1] for c in fake.op_polls()] == ["wait", "wait"]
    assert fake.get(f"projects/{PROJECT}/regions/{REGION}/packetMirrorings/our-pm") is not None
