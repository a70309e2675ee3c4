"""What the GCP commands print: the any-address call-outs, JSON documents, and one line plus a
summary for errors nothing expects (garbage answers, library exceptions)."""

from __future__ import annotations

import json

import pytest
from gcp_helpers import PROJECT, REGION, fake, offline, provision_args, run  # noqa: F401 (fixtures)

from provision import exitcodes

LOC = ("--project", PROJECT, "--region", REGION)


def test_text_plan_calls_out_the_firewall_rule_open_to_any_address(run, fake):
    code, out, err = run(*provision_args("--subnet", "app-a", "--dry-run"))
    assert code == 0, err
    assert ("  create    firewall rule            demo-allow-mirrored  from 0.0.0.0/0 (ANY ADDRESS) to tag "
            "demo-collector: all") in out
    assert ("  create    firewall rule            demo-allow-health  from 35.191.0.0/16, 130.211.0.0/22 to tag "
            "demo-collector: tcp:8000") in out
    assert ("  ! ANY ADDRESS: firewall rule demo-allow-mirrored admits ingress from 0.0.0.0/0 (any address) to tag "
            "demo-collector: all; narrow it with --cidr") in out
    assert ("  ! ANY ADDRESS: packet mirroring policy demo-pm mirrors traffic to and from any address (no --cidr: "
            "0.0.0.0/0); narrow it with --cidr") in out
    assert "cidrs all (0.0.0.0/0)" in out


def test_cidr_narrows_and_the_call_out_goes_away(run, fake):
    code, out, err = run(*provision_args("--subnet", "app-a", "--cidr", "10.8.0.0/16", "--dry-run"))
    assert code == 0, err
    assert "ANY ADDRESS" not in out
    code, out, err = run(*provision_args("--subnet", "app-a", "--cidr", "0.0.0.0/0", "--dry-run"))
    assert code == 0, err
    assert "! ANY ADDRESS: firewall rule demo-allow-mirrored admits ingress from 0.0.0.0/0" in out
    assert "! ANY ADDRESS: packet mirroring policy demo-pm mirrors traffic to and from 0.0.0.0/0" in out


def test_plan_json_lists_the_any_address_places_and_counts(run, fake):
    code, out, err = run(*provision_args("--subnet", "app-a", "--dry-run", "--output", "json"))
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["cloud"], doc["command"], doc["dry_run"], doc["applied"]) == ("gcp", "provision", True, False)
    assert doc["summary"] == {"create": 9, "update": 0, "replace": 0, "unchanged": 0, "drift": 0, "conflict": 0}
    assert len(doc["any_address"]) == 2 and doc["any_address"][0].startswith("firewall rule demo-allow-mirrored")


def test_apply_json_after_a_partial_apply(run, fake):
    fake.fail("POST", r"/autoscalers$", 403, "Quota 'AUTOSCALERS' exceeded.  Limit: 1.0 in region us-central1.",
              "quotaExceeded")
    code, out, err = run(*provision_args("--subnet", "app-a", "--json"))
    assert code == exitcodes.QUOTA
    assert err.count("appliance: error:") == 1
    doc = json.loads(out)
    result = doc["result"]
    assert result["complete"] is False and result["exit_code"] == exitcodes.QUOTA
    assert result["changed"][-1] == "created managed instance group demo-mig"
    assert result["not_changed"][0] == "autoscaler demo-as"
    assert result["next_steps"]["undo"].startswith("appliance deprovision gcp --project demo-proj --region us-central1 "
                                                   "--name demo")
    assert [s["status"] for s in doc["steps"]][4:7] == ["ok", "failed", "not-run"]


def test_status_json_names_the_cloud(run, fake):
    assert run(*provision_args("--subnet", "app-a"))[0] == 0
    code, out, _ = run("provision", "gcp", "status", *LOC, "--name", "demo", "-o", "json")
    assert code == 0
    assert json.loads(out)["cloud"] == "gcp"


@pytest.mark.parametrize("status, body, needle", [
    (200, b"{not json", "unexpected error while creating health check demo-hc: ParseError: Failed to load JSON"),
    (502, b"<html><body>Bad gateway</body></html>", "creating health check demo-hc failed: HTTP 502:"),
], ids=["non-JSON 200", "HTML 502"])
def test_a_garbage_answer_mid_apply_is_one_line_and_a_summary(run, fake, status, body, needle):
    fake.garbage("POST", r"/healthChecks$", status, body)
    code, out, err = run(*provision_args("--subnet", "app-a"))
    assert code == exitcodes.ERROR
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("appliance: error:")]
    assert len(lines) == 1 and needle in lines[0]
    assert "stopped while applying health check demo-hc." in out
    assert ("Changed before the stop: created firewall rule demo-allow-health; created firewall rule "
            "demo-allow-mirrored.") in out
    assert "To undo, remove everything this deployment created:" in out


def test_a_garbage_answer_while_reading_is_one_line(run, fake):
    fake.garbage("GET", r"/global/networks/prod-vpc$", 200, b"<html>captive portal</html>")
    code, out, err = run(*provision_args("--subnet", "app-a", "--dry-run"))
    assert code == exitcodes.ERROR
    assert err.startswith("appliance: error: unexpected error while reading network "
                          "projects/demo-proj/global/networks/prod-vpc: ")
    assert err.count("\n") == 1 and out == ""
