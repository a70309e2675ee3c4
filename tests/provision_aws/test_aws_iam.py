"""The shipped IAM policies cover every AWS action the code can call, and nothing more.

Two independent derivations of the called actions:
* static: every EC2 / ELBv2 operation name (as boto3 method name) that appears in the
  source of provision/aws, as an attribute (``ec2.create_traffic_mirror_session``) or a
  string (``paginate(ec2, "describe_instances", ...)``);
* dynamic: the operations recorded through botocore's ``provide-client-params`` event while
  running the full flows (first run, new ENI, orphan cleanup, status, teardown).
"""

from __future__ import annotations

import ast
import json
from importlib import resources
from pathlib import Path

import botocore.session
from awsprov_support import (
    BASE,
    DEFAULT_RULES,
    NAME,
    SUBNET,
    TYPES,
    VNI,
    VPC,
    eni,
    eni_id,
    existing_state,
    flt_id,
    instance,
    mirror_filter,
    queue_first_run,
    queue_session_create,
    rule_id,
    sess_id,
    session,
    target,
    tgt_id,
    vpc_enis,
    vpc_instances,
)
from botocore import xform_name

import provision.aws as pkg

SRC = Path(pkg.__file__).parent
_bc = botocore.session.get_session()
SERVICES = {"ec2": "ec2", "elbv2": "elasticloadbalancing"}


def _operation_index() -> dict[str, set[str]]:
    """boto3 method name -> IAM actions (``ec2:CreateTrafficMirrorSession``)."""
    index: dict[str, set[str]] = {}
    for service, prefix in SERVICES.items():
        for op in _bc.get_service_model(service).operation_names:
            index.setdefault(xform_name(op), set()).add(f"{prefix}:{op}")
    return index


def scanned_actions() -> set[str]:
    index = _operation_index()
    found: set[str] = set()
    for path in SRC.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            name = None
            if isinstance(node, ast.Attribute):
                name = node.attr
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                name = node.value
            if name in index:
                found |= index[name]
    return found


def policy_actions(filename: str) -> tuple[set[str], dict]:
    doc = json.loads((resources.files("provision.aws") / filename).read_text())
    assert doc["Version"] == "2012-10-17"
    actions: set[str] = set()
    for stmt in doc["Statement"]:
        assert stmt["Effect"] == "Allow"
        acts = stmt["Action"]
        actions |= {acts} if isinstance(acts, str) else set(acts)
    return actions, doc


def _tagging_creates(actions: set[str]) -> set[str]:
    """Scanned create operations that take TagSpecifications (tag-on-create needs ec2:CreateTags)."""
    model = _bc.get_service_model("ec2")
    out = set()
    for action in actions:
        prefix, op = action.split(":")
        if prefix == "ec2" and "TagSpecifications" in model.operation_model(op).input_shape.members \
                and op.startswith("Create"):
            out.add(op)
    return out


def test_static_scan_finds_the_expected_core():
    found = scanned_actions()
    for action in ("ec2:DescribeNetworkInterfaces", "ec2:CreateTrafficMirrorSession", "ec2:DeleteTrafficMirrorTarget",
                   "ec2:ModifyTrafficMirrorSession", "elasticloadbalancing:DescribeListeners"):
        assert action in found


def test_policy_allows_every_scanned_action_and_nothing_else():
    allowed, doc = policy_actions("iam-policy.json")
    found = scanned_actions()
    assert found - allowed == set(), "actions the code calls but the policy lacks"
    assert allowed - found == {"ec2:CreateTags"}, "policy grants actions the code never calls"


def test_create_tags_is_limited_to_our_tag_on_create_calls():
    _, doc = policy_actions("iam-policy.json")
    stmt = next(s for s in doc["Statement"] if s["Action"] == "ec2:CreateTags")
    used = _tagging_creates(scanned_actions())
    # the code only tags via TagSpecifications on the three creates that carry them
    assert set(stmt["Condition"]["StringEquals"]["ec2:CreateAction"]) == {
        "CreateTrafficMirrorTarget", "CreateTrafficMirrorFilter", "CreateTrafficMirrorSession"}
    assert {"CreateTrafficMirrorTarget", "CreateTrafficMirrorFilter", "CreateTrafficMirrorSession"} <= used


def test_deletes_are_limited_to_resources_tagged_by_the_appliance():
    from provision.aws import constants as C

    _, doc = policy_actions("iam-policy.json")
    stmt = next(s for s in doc["Statement"] if "ec2:DeleteTrafficMirrorSession" in s["Action"])
    assert stmt["Condition"]["StringEquals"] == {f"aws:ResourceTag/{C.TAG_MANAGED_BY}": C.MANAGED_BY}


def test_recorded_calls_of_all_flows_are_allowed(harness, cli):
    allowed, _ = policy_actions("iam-policy.json")
    found = scanned_actions()
    # first run
    queue_first_run(harness)
    assert cli(*BASE)[0] == 0
    # re-run with a new ENI, an orphaned session and drift
    state = existing_state()
    state["sessions"] = [session(1, 1, vni=5), session(4, 4), session(9, 9)]
    harness.preflight()
    harness.state(**state)
    harness.discovery(vpc_enis() + [eni(7, instance=7)], vpc_instances() + [instance(7)], TYPES)
    harness.orphan_lookup([eni_id(9)])
    harness.ec2_stub.add_response("delete_traffic_mirror_session", {}, {"TrafficMirrorSessionId": sess_id(9)})
    harness.ec2_stub.add_response("modify_traffic_mirror_session", {},
                                  {"TrafficMirrorSessionId": sess_id(1), "VirtualNetworkId": VNI})
    queue_session_create(harness, 7, sid_n=7, instance_n=7)
    assert cli(*BASE)[0] == 0
    # a dry run limited to a subnet (the preflight looks the subnet up)
    harness.preflight(subnets=[{"SubnetId": SUBNET, "VpcId": VPC}])
    harness.state(**existing_state())
    harness.discovery(vpc_enis(), vpc_instances(), TYPES, extra_filters=[{"Name": "subnet-id", "Values": [SUBNET]}])
    assert cli(*BASE, "--subnet", SUBNET, "--dry-run")[0] == 0
    # status
    harness.state(**existing_state())
    harness.orphan_lookup([eni_id(1), eni_id(4)])
    assert cli("provision", "aws", "status", "--name", NAME)[0] == 0
    # teardown
    harness.state(targets=[target(1)], filters=[mirror_filter(1, DEFAULT_RULES[:1])], sessions=[session(1, 1)])
    for op, params in (("delete_traffic_mirror_session", {"TrafficMirrorSessionId": sess_id(1)}),
                       ("delete_traffic_mirror_filter_rule", {"TrafficMirrorFilterRuleId": rule_id(1)}),
                       ("delete_traffic_mirror_filter", {"TrafficMirrorFilterId": flt_id(1)}),
                       ("delete_traffic_mirror_target", {"TrafficMirrorTargetId": tgt_id(1)})):
        harness.ec2_stub.add_response(op, {}, params)
    assert cli("deprovision", "aws", "--name", NAME, "--yes")[0] == 0
    harness.verify()

    recorded = harness.actions()
    assert recorded - allowed == set()
    assert recorded - found == set(), "the static scan missed an action the code called"
    # the flows above exercise every action the policy grants
    assert allowed - recorded == {"ec2:CreateTags"}


def test_status_policy_covers_the_status_command(harness, cli):
    allowed, _ = policy_actions("iam-policy-status.json")
    harness.state(**existing_state())
    harness.orphan_lookup([eni_id(1), eni_id(4)])
    assert cli("provision", "aws", "status", "--name", NAME, "--json")[0] == 0
    harness.verify()
    assert harness.actions() == allowed
