"""`appliance deprovision gcp` and `appliance provision gcp status`."""

from __future__ import annotations

import copy
import json

from gcp_helpers import PROJECT, REGION, fake, offline, provision_args, run  # noqa: F401 (fixtures)

from provision import exitcodes

P = f"projects/{PROJECT}"
R = f"{P}/regions/{REGION}"
LOC = ("--project", PROJECT, "--region", REGION)

TEARDOWN = [
    f"{R}/packetMirrorings/demo-pm",
    f"{R}/forwardingRules/demo-fr",
    f"{R}/backendServices/demo-bes",
    f"{R}/autoscalers/demo-as",
    f"{R}/instanceGroupManagers/demo-mig",
    f"{P}/global/instanceTemplates/demo-tmpl",
    f"{R}/healthChecks/demo-hc",
    f"{P}/global/firewalls/demo-allow-mirrored",
    f"{P}/global/firewalls/demo-allow-health",
]


def test_teardown_removes_exactly_what_was_created_in_reverse_dependency_order(run, fake):
    world = copy.deepcopy(fake.store)
    assert run(*provision_args("--subnet", "app-a", "--tag", "web"))[0] == 0
    assert len(fake.store) == len(world) + 9
    n = len(fake.calls)
    code, out, err = run("deprovision", "gcp", *LOC, "--name", "demo")
    assert code == 0, err
    calls = fake.calls[n:]
    assert [c.path for c in calls if c.method == "DELETE"] == TEARDOWN
    # each delete is waited to DONE (the fake refuses to delete a resource still in use)
    deletes = [i for i, c in enumerate(calls) if c.method == "DELETE"]
    for a, b in zip(deletes, deletes[1:]):
        assert [c.path.rsplit("/", 1)[1] for c in calls[a + 1 : b]].count("wait") == 2
    assert all(c.status == 200 for c in calls)
    assert fake.store == world  # the seeded world (other collector, networks, VMs) is intact
    assert "deployment demo removed: 9 resources deleted" in out
    assert "deleting managed instance group demo-mig ..." in err

    n = len(fake.calls)
    code, out, _ = run("deprovision", "gcp", *LOC, "--name", "demo")
    assert code == 0
    assert all(c.method == "GET" for c in fake.calls[n:])
    assert "deployment demo: nothing to delete" in out


def test_teardown_never_touches_resources_it_did_not_create(run, fake):
    url = f"{R}/forwardingRules/ext-collector"
    assert run(*provision_args("--tag", "web", "--collector-ilb", url, collector=False))[0] == 0
    # Same-named resources made by someone else, and by another deployment.
    fake.seed(f"{P}/global/firewalls/demo-allow-health", {"network": f"{P}/global/networks/prod-vpc", "description": "hand made"})
    fake.seed(f"{R}/healthChecks/demo-hc", {"type": "TCP", "description": "mirror-appliance:other health check"})
    before = {k: v for k, v in fake.store.items() if not k.endswith("/demo-pm")}
    n = len(fake.calls)
    code, out, err = run("deprovision", "gcp", *LOC, "--name", "demo")
    assert code == 0, err
    assert [c.path for c in fake.calls[n:] if c.method == "DELETE"] == [f"{R}/packetMirrorings/demo-pm"]
    assert fake.store == before
    assert "warning: firewall rule demo-allow-health exists but was not created by deployment 'demo' (foreign resource); leaving it alone" in err
    assert "warning: health check demo-hc exists but was not created by deployment 'demo' (it belongs to 'other'); leaving it alone" in err
    assert "1 resources deleted" in out


def test_teardown_dry_run_deletes_nothing(run, fake):
    assert run(*provision_args("--subnet", "app-a"))[0] == 0
    n = len(fake.calls)
    code, out, _ = run("deprovision", "gcp", *LOC, "--name", "demo", "--dry-run")
    assert code == 0
    assert all(c.method == "GET" for c in fake.calls[n:])
    assert "dry run, nothing changed" in out
    assert "delete    packet mirroring policy  demo-pm" in out
    code, out, _ = run("deprovision", "gcp", *LOC, "--name", "demo", "--dry-run", "--json")
    assert [(r["action"], r["name"]) for r in json.loads(out)["resources"]][:2] == [("delete", "demo-pm"), ("delete", "demo-fr")]
    assert all(c.method == "GET" for c in fake.calls[n:])


def test_teardown_of_a_half_built_deployment(run, fake):
    fake.fail("POST", r"/backendServices$", 403, "Quota 'BACKEND_SERVICES' exceeded.  Limit: 5.0 in region us-central1.", "quotaExceeded")
    code, out, err = run(*provision_args("--subnet", "app-a"))
    assert code == exitcodes.QUOTA
    # the partial apply says what exists now, and the exact commands to finish or undo it
    assert ("Changed before the stop: created firewall rule demo-allow-health; created firewall rule "
            "demo-allow-mirrored; created health check demo-hc; created instance template demo-tmpl; created "
            "managed instance group demo-mig; created autoscaler demo-as.") in out
    finish, undo = next_steps(out)
    assert undo == ["appliance", "deprovision", "gcp", "--project", PROJECT, "--region", REGION, "--name", "demo",
                    "--api-endpoint", fake.endpoint]
    # the undo command, as printed, removes exactly what the partial apply created
    n = len(fake.calls)
    code, out, err = run(*undo[1:], endpoint=False)
    assert code == 0, err
    assert [c.path for c in fake.calls[n:] if c.method == "DELETE"] == TEARDOWN[3:]
    assert "6 resources deleted" in out


def test_the_printed_finish_command_completes_a_partial_apply(run, fake):
    fake.fail("POST", r"/backendServices$", 403, "Quota 'BACKEND_SERVICES' exceeded.  Limit: 5.0 in region us-central1.", "quotaExceeded")
    code, out, err = run(*provision_args("--subnet", "app-a", "--tag", "web", "--cidr", "10.8.0.0/16"))
    assert code == exitcodes.QUOTA
    finish, _ = next_steps(out)
    assert finish[:3] == ["appliance", "provision", "gcp"] and finish[-1] == "--yes"
    for flag, value in (("--subnet", "app-a"), ("--tag", "web"), ("--cidr", "10.8.0.0/16"), ("--min", "2"),
                        ("--max", "5"), ("--collector-subnet", "collectors")):
        assert finish[finish.index(flag) + 1] == value
    code, out, err = run(*finish[1:], endpoint=False, yes=False)
    assert code == 0, err
    assert "3 created, 0 updated, 6 unchanged" in out
    assert all(fake.get(url) is not None for url in TEARDOWN)


def next_steps(out: str) -> tuple[list[str], list[str] | None]:
    """The finish and undo commands printed after a partial apply, as argv lists."""
    import shlex

    lines = out.splitlines()
    finish = shlex.split(lines[lines.index("To finish, run the same command again (it keeps what exists and does the rest):") + 1])
    marker = "To undo, remove everything this deployment created:"
    undo = shlex.split(lines[lines.index(marker) + 1]) if marker in lines else None
    return finish, undo


def test_teardown_stops_cleanly_when_a_resource_is_still_used(run, fake):
    assert run(*provision_args("--subnet", "app-a"))[0] == 0
    # Someone pointed their own backend service at our health check.
    fake.seed(f"{R}/backendServices/theirs", {"loadBalancingScheme": "INTERNAL", "healthChecks": [f"{R}/healthChecks/demo-hc"]})
    code, out, err = run("deprovision", "gcp", *LOC, "--name", "demo")
    assert code == exitcodes.CONFLICT
    line = err.splitlines()[-1]
    assert line.startswith("appliance: error: cannot finish deleting health check demo-hc:")
    assert f"is already being used by '{R}/backendServices/theirs'" in line
    assert fake.get(f"{R}/backendServices/theirs") is not None
    # what is gone, what is left, and how to finish
    assert "stopped while deleting health check demo-hc." in out
    assert ("Deleted before the stop: packet mirroring policy demo-pm; forwarding rule demo-fr; backend service "
            "demo-bes; autoscaler demo-as; managed instance group demo-mig; instance template demo-tmpl.") in out
    assert ("Still there: health check demo-hc; firewall rule demo-allow-mirrored; firewall rule "
            "demo-allow-health.") in out
    lines = out.splitlines()
    finish = lines[lines.index("To finish, run the same command again (it deletes what is left):") + 1]
    assert finish == (f"  appliance deprovision gcp --project {PROJECT} --region {REGION} --api-endpoint {fake.endpoint} "
                      "--name demo --yes")


def test_status_shows_policy_mirrored_resources_and_collector_health(run, fake):
    assert run(*provision_args("--subnet", "app-a", "--tag", "web", "--instance", f"{REGION}-a/web-1", "--cidr", "192.168.0.0/16", "--protocol", "tcp"))[0] == 0
    fake.health[f"{R}/instanceGroups/demo-mig"] = [
        {"instance": f"https://www.googleapis.com/compute/v1/{P}/zones/{REGION}-a/instances/demo-collector-x1", "ipAddress": "10.30.0.10", "healthState": "HEALTHY"},
        {"instance": f"https://www.googleapis.com/compute/v1/{P}/zones/{REGION}-b/instances/demo-collector-x2", "ipAddress": "10.30.0.11", "healthState": "UNHEALTHY"},
    ]
    n = len(fake.calls)
    code, out, err = run("provision", "gcp", "status", *LOC, "--name", "demo")
    assert code == 0, err
    assert all(c.method == "GET" or c.path.endswith("/getHealth") for c in fake.calls[n:])
    health = [c for c in fake.calls[n:] if c.path.endswith("/getHealth")]
    assert [(c.path, c.body) for c in health] == [(f"{R}/backendServices/demo-bes/getHealth", {"group": f"https://www.googleapis.com/compute/v1/{R}/instanceGroups/demo-mig"})]
    assert "policy demo-pm: enabled, priority 1000" in out
    assert f"  mirrored subnets:   {R}/subnetworks/app-a" in out
    assert f"  mirrored instances: {P}/zones/{REGION}-a/instances/web-1" in out
    assert "  mirrored tags:      web" in out
    assert "  filter: direction BOTH; protocols tcp; cidrs 192.168.0.0/16" in out
    assert f"collector {R}/forwardingRules/demo-fr: 10.30.0.100, all ports, mirroring collector: True" in out
    assert f"  backend service {R}/backendServices/demo-bes: 1/2 healthy" in out
    assert f"    UNHEALTHY {P}/zones/{REGION}-b/instances/demo-collector-x2 10.30.0.11" in out
    assert "  autoscaler               demo-as (min 2, max 5, ACTIVE)" in out

    code, out, _ = run("provision", "gcp", "status", *LOC, "--name", "demo", "--json")
    report = json.loads(out)
    assert report["policy"]["mirrored"] == {
        "subnets": [f"{R}/subnetworks/app-a"],
        "instances": [f"{P}/zones/{REGION}-a/instances/web-1"],
        "tags": ["web"],
    }
    assert report["collector"]["healthy"] == 1 and report["collector"]["total"] == 2
    assert [r["name"] for r in report["owned_resources"]] == [u.rsplit("/", 1)[1] for u in TEARDOWN]


def test_status_of_a_policy_using_an_existing_collector(run, fake):
    assert run(*provision_args("--tag", "web", "--collector-ilb", "ext-collector", collector=False))[0] == 0
    code, out, err = run("provision", "gcp", "status", *LOC, "--name", "demo")
    assert code == 0, err
    assert f"collector {R}/forwardingRules/ext-collector: 10.30.0.9, all ports, mirroring collector: True" in out
    assert f"  backend service {R}/backendServices/ext-bes: 1/2 healthy" in out
    assert f"    UNHEALTHY {P}/zones/{REGION}-b/instances/ids-2 10.30.0.51" in out
    assert "created by this deployment:\n  packet mirroring policy  demo-pm\n" in out


def test_status_lists_deployments_across_pages(run, fake):
    for name in ("alpha", "beta", "gamma"):
        assert run(*provision_args("--tag", "web", "--collector-ilb", "ext-collector", name=name, collector=False))[0] == 0
    fake.seed(f"{R}/packetMirrorings/hand-made", {"description": "not ours", "network": {"url": f"{P}/global/networks/prod-vpc"}})
    fake.page_size = 2
    n = len(fake.calls)
    code, out, err = run("provision", "gcp", "status", *LOC)
    assert code == 0, err
    lists = [c for c in fake.calls[n:] if c.path == f"{R}/packetMirrorings"]
    assert len(lists) == 2 and lists[1].query.get("pageToken") == "2"  # the library followed nextPageToken
    assert "alpha" in out and "beta" in out and "gamma" in out
    assert "hand-made" not in out
    code, out, _ = run("provision", "gcp", "status", *LOC, "--json")
    assert [d["deployment"] for d in json.loads(out)["deployments"]] == ["alpha", "beta", "gamma"]


def test_status_of_an_unknown_deployment_is_exit_7(run, fake):
    code, out, _ = run("provision", "gcp", "status", *LOC, "--name", "nope", "--json")
    assert code == exitcodes.NOT_FOUND
    assert json.loads(out) == {"cloud": "gcp", "deployment": "nope", "project": PROJECT, "region": REGION,
                               "found": False}
    code, _, err = run("provision", "gcp", "status", *LOC, "--name", "nope")
    assert code == exitcodes.NOT_FOUND
    assert err == f"appliance: error: no deployment 'nope' in project {PROJECT}, region {REGION} (packet mirroring policy nope-pm not found)\n"
