"""Discovery, targets, filters, sessions, status and session teardown against moto's EC2.

moto implements DescribeNetworkInterfaces / DescribeInstances / DescribeInstanceTypes and
create/describe/modify/delete of traffic mirror sessions, create/describe of targets and
filters. It lacks filter rules and target/filter deletion, so those items of a plan are
exercised with Stubber (test_aws_flows.py) and left out here, explicitly.
"""

from __future__ import annotations

import boto3
import pytest
from awsprov_support import spec_args
from moto import mock_aws

from provision.aws import constants as C
from provision.aws.apply import apply_plan
from provision.aws.discovery import discover, lookup_enis
from provision.aws.planner import build_plan, build_teardown_plan
from provision.aws.runner import collect_status
from provision.aws.spec import build_spec, default_vni
from provision.aws.state import fetch_state, tags_of

AMI = "ami-12c6146b"
NAME = "moto"


@pytest.fixture
def world():
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="us-east-1")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]

        def run(itype, tags=None):
            kwargs = {}
            if tags:
                kwargs["TagSpecifications"] = [{"ResourceType": "instance",
                                                "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
            inst = ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, InstanceType=itype, SubnetId=subnet,
                                     **kwargs)["Instances"][0]
            return inst["InstanceId"], inst["NetworkInterfaces"][0]["NetworkInterfaceId"]

        w = {
            "ec2": ec2, "vpc": vpc, "subnet": subnet, "run": run,
            "web": run("m5.large", {"team": "pay"}),
            "api": run("c5.xlarge"),
            "old": run("t2.micro"),
            "m6i": run("m6i.large"),
            "collector": run("m5.large", {C.TAG_ROLE: C.COLLECTOR_ROLE}),
        }
        w["loose"] = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]["NetworkInterfaceId"]
        yield w


def plan_for(w, **overrides):
    spec = build_spec(spec_args(name=NAME, vpc=w["vpc"], target_eni=w["collector"][1], **overrides))
    state = fetch_state(w["ec2"], NAME)
    enis = discover(w["ec2"], spec, state, {})
    known = {e.id for e in enis}
    orphan_ids = sorted({s["NetworkInterfaceId"] for s in state.our_sessions} - known)
    orphans = lookup_enis(w["ec2"], orphan_ids) if orphan_ids else {}
    return spec, build_plan(spec, state, enis, {i: orphans.get(i) for i in orphan_ids})


def without_rules(plan):
    """moto has no CreateTrafficMirrorFilterRule: drop rule items (Stubber tests cover them)."""
    plan.items = [i for i in plan.items if i.kind != "rule"]
    return plan


def test_discovery_selects_mirrorable_enis_and_explains_the_rest(world):
    _, plan = plan_for(world)
    by_id = {e.id: e for e in plan.enis}
    assert {e.id for e in plan.enis if e.selected} == {world["web"][1], world["api"][1]}
    assert "t2.micro is not Nitro-based (xen)" in by_id[world["old"][1]].reason
    assert "m6i family is not supported" in by_id[world["m6i"][1]].reason
    assert by_id[world["collector"][1]].reason == "is a traffic mirror target (the appliance's own ENI)"
    assert by_id[world["loose"]].reason == \
        "not in use (status available)"
    assert by_id[world["web"][1]].instance_id == world["web"][0]
    assert by_id[world["web"][1]].instance_type == "m5.large"


def test_discovery_tag_selection_matches_instance_tags(world):
    _, plan = plan_for(world, tag=["team=pay"])
    assert [e.id for e in plan.enis if e.selected] == [world["web"][1]]


def test_collector_tag_excludes_even_without_an_eni_target(world):
    spec = build_spec(spec_args(name=NAME, vpc=world["vpc"], target_id="tmt-0123456789abcdef0"))
    enis = discover(world["ec2"], spec, fetch_state(world["ec2"], NAME), {})
    reason = {e.id: e.reason for e in enis}[world["collector"][1]]
    assert reason == f"appliance collector (tag {C.TAG_ROLE}={C.COLLECTOR_ROLE})"


def test_create_reconcile_and_clean_up_sessions_in_moto(world):
    ec2 = world["ec2"]
    spec, plan = plan_for(world)
    result = apply_plan(without_rules(plan), ec2)
    assert result.exit_code == 0
    # target and filter exist, tagged with the deployment
    targets = ec2.describe_traffic_mirror_targets()["TrafficMirrorTargets"]
    assert len(targets) == 1 and targets[0]["NetworkInterfaceId"] == world["collector"][1]
    assert tags_of(targets[0])[C.TAG_DEPLOYMENT] == NAME
    assert tags_of(targets[0])[C.TAG_VPC] == world["vpc"]
    filters = ec2.describe_traffic_mirror_filters()["TrafficMirrorFilters"]
    assert len(filters) == 1 and tags_of(filters[0])[C.TAG_MANAGED_BY] == C.MANAGED_BY
    sessions = ec2.describe_traffic_mirror_sessions()["TrafficMirrorSessions"]
    assert sorted(s["NetworkInterfaceId"] for s in sessions) == sorted([world["web"][1], world["api"][1]])
    for s in sessions:
        assert s["TrafficMirrorTargetId"] == targets[0]["TrafficMirrorTargetId"]
        assert s["TrafficMirrorFilterId"] == filters[0]["TrafficMirrorFilterId"]
        assert s["VirtualNetworkId"] == default_vni(NAME)
        assert s["SessionNumber"] == 1
        assert tags_of(s)[C.TAG_DEPLOYMENT] == NAME

    # Re-run: target, filter and sessions are kept (only the rules moto cannot store remain).
    _, again = plan_for(world)
    assert [(i.kind, i.action) for i in again.changes] == [("rule", "create")] * 6

    # A new instance: exactly one session to create.
    new_inst, new_eni = world["run"]("m5.xlarge")
    _, plan3 = plan_for(world)
    creates = [i for i in plan3.changes if i.kind == "session"]
    assert [(i.action, i.eni) for i in creates] == [("create", new_eni)]
    assert apply_plan(without_rules(plan3), ec2).exit_code == 0

    # A secondary ENI gets a session, then disappears: its session is deleted.
    extra = ec2.create_network_interface(SubnetId=world["subnet"])["NetworkInterface"]["NetworkInterfaceId"]
    att = ec2.attach_network_interface(NetworkInterfaceId=extra, InstanceId=new_inst, DeviceIndex=1)["AttachmentId"]
    assert apply_plan(without_rules(plan_for(world)[1]), ec2).exit_code == 0
    ec2.detach_network_interface(AttachmentId=att)
    ec2.delete_network_interface(NetworkInterfaceId=extra)
    _, plan4 = plan_for(world)
    gone = [i for i in plan4.changes if i.kind == "session"]
    assert [(i.action, i.eni, i.detail) for i in gone] == [("delete", extra, f"ENI {extra} no longer exists")]
    apply_plan(without_rules(plan4), ec2)
    live = {s["NetworkInterfaceId"] for s in ec2.describe_traffic_mirror_sessions()["TrafficMirrorSessions"]}
    assert live == {world["web"][1], world["api"][1], new_eni}


def test_vni_change_is_applied_with_modify_in_moto(world):
    ec2 = world["ec2"]
    _, plan = plan_for(world)
    apply_plan(without_rules(plan), ec2)
    _, plan2 = plan_for(world, vni=77)
    updates = [i for i in plan2.changes if i.kind == "session"]
    assert {i.action for i in updates} == {"update"} and len(updates) == 2
    apply_plan(without_rules(plan2), ec2)
    assert {s["VirtualNetworkId"] for s in ec2.describe_traffic_mirror_sessions()["TrafficMirrorSessions"]} == {77}


def test_existing_untagged_target_is_reused_in_moto(world):
    ec2 = world["ec2"]
    foreign = ec2.create_traffic_mirror_target(NetworkInterfaceId=world["collector"][1],
                                               Description="made by hand")["TrafficMirrorTarget"]
    _, plan = plan_for(world)
    target_item = plan.items[0]
    assert (target_item.action, target_item.id) == ("keep", foreign["TrafficMirrorTargetId"])
    apply_plan(without_rules(plan), ec2)
    assert len(ec2.describe_traffic_mirror_targets()["TrafficMirrorTargets"]) == 1
    # Teardown never plans to delete a target the deployment did not create.
    teardown = build_teardown_plan(fetch_state(ec2, NAME))
    assert foreign["TrafficMirrorTargetId"] not in {i.id for i in teardown.items}


def test_status_and_session_teardown_in_moto(world):
    ec2 = world["ec2"]
    _, plan = plan_for(world)
    apply_plan(without_rules(plan), ec2)
    # someone else's session on the web ENI must survive the teardown
    other_filter = ec2.create_traffic_mirror_filter()["TrafficMirrorFilter"]["TrafficMirrorFilterId"]
    tgt = ec2.describe_traffic_mirror_targets()["TrafficMirrorTargets"][0]["TrafficMirrorTargetId"]
    foreign = ec2.create_traffic_mirror_session(NetworkInterfaceId=world["web"][1], TrafficMirrorTargetId=tgt,
                                                TrafficMirrorFilterId=other_filter, SessionNumber=2)
    foreign_id = foreign["TrafficMirrorSession"]["TrafficMirrorSessionId"]

    state, rows = collect_status(ec2, NAME)
    assert {(r["eni"], r["instance"]) for r in rows} == {world["web"][::-1], world["api"][::-1]}
    assert all(r["vni"] == default_vni(NAME) and r["session_number"] == 1 for r in rows)

    teardown = build_teardown_plan(state)
    kinds = [i.kind for i in teardown.items]
    assert kinds == sorted(kinds, key=["session", "rule", "filter", "target"].index)
    # the target is still used by the foreign session: planned as a skip, not a delete
    assert [(i.kind, i.action) for i in teardown.items if i.kind == "target"] == [("target", "skip")]
    sessions_only = [i for i in teardown.items if i.kind == "session"]
    teardown.items = sessions_only  # moto cannot delete filters or targets
    assert apply_plan(teardown, ec2).exit_code == 0
    left = [s["TrafficMirrorSessionId"] for s in ec2.describe_traffic_mirror_sessions()["TrafficMirrorSessions"]]
    assert left == [foreign_id]


def test_an_unimplemented_call_stops_the_apply_and_records_what_was_done(world):
    """moto (decorator mode) raises NotImplementedError for filter rules: an exception no AWS
    code path expects. The apply stops there, every item keeps its status, nothing raises."""
    from provision import exitcodes

    ec2 = world["ec2"]
    _, plan = plan_for(world)
    result = apply_plan(plan, ec2)
    assert result.exit_code == exitcodes.ERROR
    assert str(result.aborted) == (
        "unexpected error while calling ec2:CreateTrafficMirrorFilterRule: NotImplementedError: The "
        "create_traffic_mirror_filter_rule action has not been implemented (set APPLIANCE_DEBUG=1 for a traceback)")
    assert [i.kind for i in result.done] == ["target", "filter"]
    assert {i.status for i in plan.items if i.kind == "session"} == {"not-run"}
    assert [i.status for i in plan.items if i.kind == "rule"] == ["failed"] + ["not-run"] * 5
    assert not result.complete
    # what the summary reports is what exists
    assert [t["TrafficMirrorTargetId"] for t in ec2.describe_traffic_mirror_targets()["TrafficMirrorTargets"]] == \
        [result.done[0].id]
