"""What the AWS commands print: JSON documents, the any-address call-outs, confirmation."""

from __future__ import annotations

import json

from awsprov_support import (
    BASE,
    DEFAULT_RULES,
    NAME,
    NLB_ARN,
    TYPES,
    VPC,
    existing_state,
    mirror_filter,
    queue_first_run,
    session,
    target,
    tgt_id,
    vpc_enis,
    vpc_instances,
)
from botocore.stub import ANY

from provision import exitcodes

DENIED = "You are not authorized to perform this operation."


def test_text_plan_shows_every_any_address_rule(harness, cli):
    harness.preflight()
    harness.state()
    harness.discovery(vpc_enis(), vpc_instances(), TYPES)
    code, out, err = cli(*BASE, "--dry-run")
    assert code == 0, err
    assert "ingress #200 accept tcp 0.0.0.0/0 -> 0.0.0.0/0" in out
    assert "egress #200 accept tcp 0.0.0.0/0 -> 0.0.0.0/0" in out
    assert ("any address: 2 accept rule(s) mirror traffic to and from 0.0.0.0/0 (every peer); narrow them with "
            "--cidr") in out
    # narrowed: no call-out
    harness.preflight()
    harness.state()
    harness.discovery(vpc_enis(), vpc_instances(), TYPES)
    code, out, err = cli(*BASE, "--dry-run", "--cidr", "10.0.0.0/8")
    assert code == 0, err
    assert "any address" not in out
    assert "ingress #200 accept tcp 10.0.0.0/8 -> 0.0.0.0/0" in out


def test_dry_run_json_is_the_plan_with_request_parameters(harness, cli):
    harness.preflight()
    harness.state()
    harness.discovery(vpc_enis(), vpc_instances(), TYPES)
    code, out, err = cli(*BASE, "--dry-run", "-o", "json")
    harness.verify()
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["deployment"], doc["region"], doc["vpc"], doc["dry_run"], doc["applied"]) == \
        (NAME, "us-east-1", VPC, True, False)
    assert doc["summary"] == {"create": 10, "update": 0, "delete": 0, "keep": 0, "skip": 4}
    target_item = doc["items"][0]
    assert target_item["operation"] == "CreateTrafficMirrorTarget"
    assert target_item["params"]["NetworkLoadBalancerArn"] == NLB_ARN
    rules = [i for i in doc["items"] if i["kind"] == "rule"]
    assert rules[0]["params"]["TrafficMirrorFilterId"] == "(new filter)"
    assert {r["params"]["RuleNumber"] for r in rules} == {100, 110, 200}
    skips = {i["id"]: i["detail"] for i in doc["items"] if i["action"] == "skip"}
    assert len(skips) == 4 and all(skips.values())


def test_apply_json_reports_the_result_and_the_next_steps_after_a_partial_apply(harness, cli):
    harness.preflight()
    harness.state()
    harness.discovery(vpc_enis(), vpc_instances(), TYPES)
    harness.ec2_stub.add_response("create_traffic_mirror_target", {"TrafficMirrorTarget": target(1)},
                                  {"NetworkLoadBalancerArn": NLB_ARN, "Description": ANY, "TagSpecifications": ANY})
    harness.ec2_stub.add_client_error("create_traffic_mirror_filter", "UnauthorizedOperation", DENIED)
    code, out, err = cli(*BASE, "--output", "json")
    harness.verify()
    assert code == exitcodes.DENIED
    assert err.count("appliance: error:") == 1 and "Traceback" not in err
    doc = json.loads(out)  # stdout is exactly one document
    result = doc["result"]
    assert doc["applied"] is True
    assert result["exit_code"] == exitcodes.DENIED and result["complete"] is False
    assert result["stopped"].startswith("permission denied: ec2:CreateTrafficMirrorFilter")
    assert result["changed"] == [{"action": "create", "kind": "target", "id": tgt_id(1), "eni": None}]
    assert [c["status"] for c in result["not_changed"]][:2] == ["failed", "not-run"]
    assert result["next_steps"]["undo"] == "appliance deprovision aws --name prod --region us-east-1"
    assert result["next_steps"]["finish"] == (f"appliance provision aws --name prod --output json --vpc {VPC} "
                                              f"--target-nlb {NLB_ARN} --yes")


def test_status_json_and_missing_deployment(harness, cli):
    harness.state(**existing_state())
    harness.orphan_lookup(["eni-00000000000000001", "eni-00000000000000004"])
    code, out, err = cli("provision", "aws", "status", "--name", NAME, "--output", "json", "--no-session-map")
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["cloud"], doc["found"], len(doc["sessions"])) == ("aws", True, 2)

    harness.state(targets=[target(9, name="other")])
    code, out, err = cli("provision", "aws", "status", "--name", NAME, "--json", "--no-session-map")
    assert code == exitcodes.NOT_FOUND
    assert json.loads(out)["found"] is False
    assert err == (f"appliance: error: no deployment '{NAME}' in region us-east-1: nothing is tagged "
                   f"appliance:deployment={NAME} (check --name, --region and --profile)\n")

    harness.state()
    code, out, err = cli("provision", "aws", "status", "--name", NAME)
    harness.verify()
    assert code == exitcodes.NOT_FOUND and out == ""


def test_deprovision_asks_first_and_refuses_without_a_terminal(harness, cli):
    harness.state(targets=[target(1)], filters=[mirror_filter(1, DEFAULT_RULES[:1])], sessions=[session(1, 1)])
    code, out, err = cli("deprovision", "aws", "--name", NAME)  # pytest's stdin is not a terminal
    harness.verify()
    assert code == exitcodes.USAGE
    assert err == ("appliance: error: not applying 4 deletion(s) of deployment prod in us-east-1: stdin is not a "
                   "terminal, so nobody can confirm; pass --yes (or --auto-approve) to apply, or --dry-run to "
                   "only plan\n")
    assert not [op for op in harness.operations if op.startswith("Delete")]
    assert "4 to delete" in out  # the teardown plan was shown


def test_deprovision_json(harness, cli):
    harness.state(targets=[target(1)], filters=[mirror_filter(1)], sessions=[session(1, 1)])
    code, out, err = cli("deprovision", "aws", "--name", NAME, "--dry-run", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["command"], doc["summary"]["delete"]) == ("deprovision", 3)


def test_no_change_rerun_json(harness, cli):
    harness.preflight()
    harness.state(**existing_state())
    harness.discovery(vpc_enis(), vpc_instances(), TYPES)
    code, out, err = cli(*BASE, "--json")
    harness.verify()
    assert code == 0, err
    doc = json.loads(out)
    assert doc["summary"]["create"] == 0 and doc["applied"] is False


def test_first_run_json_result_is_complete(harness, cli):
    queue_first_run(harness)
    code, out, err = cli(*BASE, "--json")
    harness.verify()
    assert code == 0, err
    result = json.loads(out)["result"]
    assert result["complete"] is True and result["next_steps"] is None and result["not_changed"] == []
    assert len(result["changed"]) == 10


def test_ctrl_c_mid_apply_reports_what_was_done_and_exits_130(harness, cli):
    harness.preflight()
    harness.state()
    harness.discovery(vpc_enis(), vpc_instances(), TYPES)
    harness.ec2_stub.add_response("create_traffic_mirror_target", {"TrafficMirrorTarget": target(1)},
                                  {"NetworkLoadBalancerArn": NLB_ARN, "Description": ANY, "TagSpecifications": ANY})

    def ctrl_c(**_):  # the user presses Ctrl-C while the filter is being created
        raise KeyboardInterrupt

    harness.ec2.meta.events.register("provide-client-params.ec2.CreateTrafficMirrorFilter", ctrl_c)
    code, out, err = cli(*BASE)
    harness.verify()
    assert code == exitcodes.INTERRUPTED
    assert err == "appliance: error: interrupted during CreateTrafficMirrorFilter\n"
    assert f"Changed before the run ended: created target {tgt_id(1)}" in out
    assert "To undo, remove everything this deployment created:\n  appliance deprovision aws --name prod" in out
