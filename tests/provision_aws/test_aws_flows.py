"""Full provisioning flows through the real CLI, with Stubber on real boto3 clients."""

from __future__ import annotations

import json

from awsprov_support import (
    BASE,
    DEFAULT_RULES,
    MUTATING_PREFIXES,
    NAME,
    NLB_ARN,
    TYPES,
    VNI,
    VPC,
    eni,
    eni_id,
    existing_state,
    expected_rule_params,
    flt_id,
    inst_id,
    instance,
    itype_info,
    mirror_filter,
    queue_first_run,
    queue_session_create,
    rule_id,
    sess_id,
    session,
    spec_args,
    target,
    tgt_id,
    vpc_enis,
    vpc_instances,
)
from botocore.stub import ANY

# -- first run ---------------------------------------------------------------------------------


def test_first_run_creates_target_filter_rules_and_sessions(harness, cli, aws_env):
    queue_first_run(harness)
    code, out, err = cli(*BASE)
    harness.verify()
    assert code == 0, err
    assert err == ""
    # Only the two mirrorable ENIs got sessions; every other ENI is reported with its reason.
    created = harness.params_of("CreateTrafficMirrorSession")
    assert [p["NetworkInterfaceId"] for p in created] == [eni_id(1), eni_id(4)]
    assert "t2.micro is not Nitro-based" in out
    assert "interface type network_load_balancer cannot be a mirror source" in out
    assert "not in use (status available)" in out
    assert "appliance collector (tag appliance:role=collector)" in out
    assert "Summary" in out
    # Rejects are evaluated before accepts in both directions.
    rules = harness.params_of("CreateTrafficMirrorFilterRule")
    for direction in ("ingress", "egress"):
        mine = [r for r in rules if r["TrafficDirection"] == direction]
        assert max(r["RuleNumber"] for r in mine if r["RuleAction"] == "reject") < \
            min(r["RuleNumber"] for r in mine if r["RuleAction"] == "accept")
    # The session map for the runtime.
    doc = json.loads((aws_env / "sessions.json").read_text())
    assert doc["cloud"] == "aws" and doc["deployment"] == NAME and doc["schema_version"] == 1
    assert set(doc["sessions"]) == {sess_id(1), sess_id(4)}
    assert doc["sessions"][sess_id(1)] == {
        "session_id": sess_id(1), "vni": VNI, "eni": eni_id(1), "instance": inst_id(1),
        "session_number": 1, "private_ips": ["10.0.1.2"],
    }
    assert doc["sessions"][sess_id(4)]["instance"] is None
    assert doc["by_vni"] == {str(VNI): [sess_id(1), sess_id(4)]}
    assert doc["by_ip"]["10.0.1.2"] == sess_id(1)


def test_rerun_is_a_no_op(harness, cli):
    harness.preflight()
    harness.state(**existing_state())
    harness.discovery(vpc_enis(), vpc_instances(), TYPES)
    code, out, err = cli(*BASE)
    harness.verify()
    assert code == 0, err
    assert not [op for op in harness.operations if op.startswith(MUTATING_PREFIXES)]
    assert "No changes" in out
    assert "0 to create, 0 to update, 0 to delete" in out


def test_rerun_without_target_flag_uses_the_deployments_target(harness, cli):
    harness.preflight(nlb=None)
    harness.state(**existing_state())
    harness.discovery(vpc_enis(), vpc_instances(), TYPES)
    code, out, err = cli("provision", "aws", "--vpc", VPC, "--name", NAME, "--yes")
    harness.verify()
    assert code == 0, err
    assert "DescribeListeners" not in harness.operations


def test_new_eni_gets_a_session(harness, cli):
    harness.preflight(listeners=(("TCP_UDP", 4789),))
    harness.state(**existing_state())
    harness.discovery(vpc_enis() + [eni(7, instance=7)], vpc_instances() + [instance(7, "c5.xlarge")],
                      TYPES + [itype_info("c5.xlarge", "nitro")])
    queue_session_create(harness, 7, sid_n=7, instance_n=7)
    code, out, err = cli(*BASE)
    harness.verify()
    assert code == 0, err
    assert [op for op in harness.operations if op.startswith(MUTATING_PREFIXES)] == ["CreateTrafficMirrorSession"]


def test_session_whose_eni_disappeared_is_deleted(harness, cli):
    state = existing_state()
    state["sessions"].append(session(9, 9))
    harness.preflight()
    harness.state(**state)
    harness.discovery(vpc_enis(), vpc_instances(), TYPES)
    harness.orphan_lookup([eni_id(9)])
    harness.ec2_stub.add_response("delete_traffic_mirror_session", {"TrafficMirrorSessionId": sess_id(9)},
                                  {"TrafficMirrorSessionId": sess_id(9)})
    code, out, err = cli(*BASE)
    harness.verify()
    assert code == 0, err
    assert f"ENI {eni_id(9)} no longer exists" in out


def test_session_on_eni_that_no_longer_matches_the_selection_is_deleted(harness, cli):
    harness.preflight()
    harness.state(**existing_state())
    # ENI 4 (RDS) has no team tag any more; the instance of ENI 1 has it.
    harness.discovery(vpc_enis(), [instance(1, "m5.large", tags={"team": "pay"})] + vpc_instances()[1:], TYPES)
    harness.ec2_stub.add_response("delete_traffic_mirror_session", {"TrafficMirrorSessionId": sess_id(4)},
                                  {"TrafficMirrorSessionId": sess_id(4)})
    code, out, err = cli(*BASE, "--tag", "team=pay")
    harness.verify()
    assert code == 0, err
    assert "does not match --tag team=pay" in out


def test_partial_failure_reports_and_continues(harness, cli, aws_env):
    harness.preflight()
    harness.state(**existing_state())
    harness.discovery(vpc_enis() + [eni(7, instance=7), eni(8, instance=8)],
                      vpc_instances() + [instance(7, "m5.large"), instance(8, "m5.large")], TYPES)
    queue_session_create(harness, 7, sid_n=7, instance_n=7,
                         error=("TrafficMirrorSourcesPerTargetLimitExceeded", "The target has too many sources."))
    queue_session_create(harness, 8, sid_n=8, instance_n=8)
    code, out, err = cli(*BASE)
    harness.verify()
    assert code == 3
    assert "TrafficMirrorSourcesPerTargetLimitExceeded" in out
    assert "Failures" in out
    doc = json.loads((aws_env / "sessions.json").read_text())
    assert set(doc["sessions"]) == {sess_id(1), sess_id(4), sess_id(8)}


def test_dry_run_calls_only_describe(harness, cli, aws_env):
    harness.preflight()
    harness.state()
    harness.discovery(vpc_enis(), vpc_instances(), TYPES)
    code, out, err = cli(*BASE, "--dry-run")
    harness.verify()
    assert code == 0, err
    assert harness.operations and all(op.startswith("Describe") for op in harness.operations)
    assert "10 to create" in out  # target, filter, 6 rules, 2 sessions
    assert "dry run: nothing changed" in out
    for word in ("create", "skip"):
        assert word in out
    assert not (aws_env / "sessions.json").exists()


def test_drift_is_corrected_with_modify(harness, cli):
    state = existing_state()
    state["sessions"] = [session(1, 1, vni=42, packet_length=128), session(4, 4, packet_length=8500)]
    harness.preflight()
    harness.state(**state)
    harness.discovery(vpc_enis(), vpc_instances(), TYPES)
    harness.ec2_stub.add_response(
        "modify_traffic_mirror_session", {"TrafficMirrorSession": session(1, 1)},
        {"TrafficMirrorSessionId": sess_id(1), "VirtualNetworkId": VNI, "RemoveFields": ["packet-length"]},
    )
    code, out, err = cli(*BASE)
    harness.verify()
    assert code == 0, err
    # 8500 is what AWS reports for "whole packet" on NLB targets: not drift.
    assert len(harness.params_of("ModifyTrafficMirrorSession")) == 1


def test_filter_rule_drift_deletes_extra_and_creates_missing(harness, cli):
    from provision.aws.spec import Rule

    extra = Rule("ingress", 300, "accept", 17, None, None, "0.0.0.0/0", "0.0.0.0/0")
    rules = [r for r in DEFAULT_RULES if not (r.direction == "egress" and r.number == 200)] + [extra]
    state = existing_state()
    state["filters"] = [mirror_filter(1, rules)]
    harness.preflight()
    harness.state(**state)
    harness.discovery(vpc_enis(), vpc_instances(), TYPES)
    extra_id = rule_id(len(rules))  # the builder numbers rules in order
    harness.ec2_stub.add_response("delete_traffic_mirror_filter_rule", {"TrafficMirrorFilterRuleId": extra_id},
                                  {"TrafficMirrorFilterRuleId": extra_id})
    harness.ec2_stub.add_response(
        "create_traffic_mirror_filter_rule", {"TrafficMirrorFilterRule": {"TrafficMirrorFilterRuleId": rule_id(50)}},
        {"TrafficMirrorFilterId": flt_id(1), "TrafficDirection": "egress", "RuleNumber": 200, "RuleAction": "accept",
         "Protocol": 6, "DestinationCidrBlock": "0.0.0.0/0", "SourceCidrBlock": "0.0.0.0/0", "Description": ANY},
    )
    code, out, err = cli(*BASE)
    harness.verify()
    assert code == 0, err


def test_session_limit_and_free_session_number(harness, cli):
    foreign = [session(20 + i, 7, number=i + 1, ours=False, target_n=9, filter_n=9) for i in range(3)]
    foreign.append(session(30, 8, number=1, ours=False, target_n=9, filter_n=9))
    state = existing_state()
    state["sessions"] += foreign
    harness.preflight()
    harness.state(**state)
    harness.discovery(vpc_enis() + [eni(7, instance=7), eni(8, instance=8)],
                      vpc_instances() + [instance(7, "m5.large"), instance(8, "m5.large")], TYPES)
    queue_session_create(harness, 8, sid_n=8, instance_n=8, number=2)
    code, out, err = cli(*BASE)
    harness.verify()
    assert code == 0, err
    assert "already in 3 traffic mirror sessions (limit 3 per ENI)" in out
    assert f"lower-numbered session(s) {sess_id(30)}" in out


def test_existing_foreign_target_for_the_nlb_is_reused_not_created(harness, cli):
    harness.preflight()
    harness.state(targets=[target(5, ours=False)])
    harness.discovery(vpc_enis(), vpc_instances(), TYPES)
    harness.ec2_stub.add_response("create_traffic_mirror_filter", {"TrafficMirrorFilter": mirror_filter(1)},
                                  {"Description": ANY, "TagSpecifications": ANY})
    for i, params in enumerate(expected_rule_params(flt_id(1))):
        harness.ec2_stub.add_response("create_traffic_mirror_filter_rule",
                                      {"TrafficMirrorFilterRule": {"TrafficMirrorFilterRuleId": rule_id(i + 1)}}, params)
    queue_session_create(harness, 1, sid_n=1, instance_n=1, target_n=5)
    queue_session_create(harness, 4, sid_n=4, who="RDS", target_n=5)
    code, out, err = cli(*BASE)
    harness.verify()
    assert code == 0, err
    assert "CreateTrafficMirrorTarget" not in harness.operations
    assert "never deleted" in out


def test_per_session_vni_mode_gives_distinct_stable_vnis(harness, cli, aws_env):
    from provision.aws.spec import per_session_vni

    v1 = per_session_vni(NAME, eni_id(1), set())
    v4 = per_session_vni(NAME, eni_id(4), {v1})
    assert v1 != v4
    queue_first_run(harness, with_sessions=False)
    queue_session_create(harness, 1, sid_n=1, instance_n=1, vni=v1)
    queue_session_create(harness, 4, sid_n=4, who="RDS", vni=v4)
    code, out, err = cli(*BASE, "--vni-mode", "per-session")
    harness.verify()
    assert code == 0, err
    doc = json.loads((aws_env / "sessions.json").read_text())
    assert doc["by_vni"] == {str(v1): [sess_id(1)], str(v4): [sess_id(4)]}


def test_explicit_filter_options_and_packet_length(harness, cli):
    harness.preflight()
    harness.state()
    harness.discovery([eni(1, instance=1)], [instance(1, "m5.large")], TYPES[:1])
    harness.ec2_stub.add_response("create_traffic_mirror_target", {"TrafficMirrorTarget": target(1)},
                                  {"NetworkLoadBalancerArn": NLB_ARN, "Description": ANY, "TagSpecifications": ANY})
    harness.ec2_stub.add_response("create_traffic_mirror_filter", {"TrafficMirrorFilter": mirror_filter(1)},
                                  {"Description": ANY, "TagSpecifications": ANY})
    # --ports 80,443 --cidr 10.0.0.0/8: no port reaches 53, so no DNS rejects are needed.
    expected = []
    for direction in ("ingress", "egress"):
        src, dst = ("10.0.0.0/8", "0.0.0.0/0") if direction == "ingress" else ("0.0.0.0/0", "10.0.0.0/8")
        number = 200
        for port in (80, 443):
            for key in ("DestinationPortRange", "SourcePortRange"):
                expected.append({"TrafficMirrorFilterId": flt_id(1), "TrafficDirection": direction,
                                 "RuleNumber": number, "RuleAction": "accept", "Protocol": 6,
                                 "DestinationCidrBlock": dst, "SourceCidrBlock": src, "Description": ANY,
                                 key: {"FromPort": port, "ToPort": port}})
                number += 10
    for i, params in enumerate(expected):
        harness.ec2_stub.add_response("create_traffic_mirror_filter_rule",
                                      {"TrafficMirrorFilterRule": {"TrafficMirrorFilterRuleId": rule_id(i + 1)}}, params)
    queue_session_create(harness, 1, sid_n=1, instance_n=1, vni=4242, extra={"PacketLength": 512})
    code, out, err = cli(*BASE, "--ports", "80,443", "--cidr", "10.0.0.0/8", "--vni", "4242",
                         "--packet-length", "512")
    harness.verify()
    assert code == 0, err


def test_target_eni_is_never_a_source(harness, cli):
    harness.preflight(nlb=None, target_eni=eni_id(2))
    harness.state()
    harness.discovery([eni(1, instance=1), eni(2, instance=2)], [instance(1), instance(2)], TYPES[:1])
    harness.ec2_stub.add_response(
        "create_traffic_mirror_target", {"TrafficMirrorTarget": target(1, nlb=None, eni=eni_id(2))},
        {"NetworkInterfaceId": eni_id(2), "Description": ANY, "TagSpecifications": ANY})
    harness.ec2_stub.add_response("create_traffic_mirror_filter", {"TrafficMirrorFilter": mirror_filter(1)},
                                  {"Description": ANY, "TagSpecifications": ANY})
    for i, params in enumerate(expected_rule_params(flt_id(1))):
        harness.ec2_stub.add_response("create_traffic_mirror_filter_rule",
                                      {"TrafficMirrorFilterRule": {"TrafficMirrorFilterRuleId": rule_id(i + 1)}}, params)
    queue_session_create(harness, 1, sid_n=1, instance_n=1)
    code, out, err = cli("provision", "aws", "--vpc", VPC, "--name", NAME, "--target-eni", eni_id(2), "--yes")
    harness.verify()
    assert code == 0, err
    assert "is a traffic mirror target" in out
    assert [p["NetworkInterfaceId"] for p in harness.params_of("CreateTrafficMirrorSession")] == [eni_id(1)]


def test_discovery_paginates_and_filters_by_subnet_and_instance(harness, cli):
    from awsprov_support import SUBNET

    filters = [{"Name": "vpc-id", "Values": [VPC]}, {"Name": "subnet-id", "Values": [SUBNET]},
               {"Name": "attachment.instance-id", "Values": [inst_id(1), inst_id(4)]}]
    harness.preflight(subnets=[{"SubnetId": SUBNET, "VpcId": VPC}], instances=[instance(1), instance(4)])
    harness.state(**existing_state())
    harness.ec2_stub.add_response("describe_network_interfaces",
                                  {"NetworkInterfaces": [eni(1, instance=1)], "NextToken": "page2"},
                                  {"Filters": filters})
    harness.ec2_stub.add_response("describe_network_interfaces",
                                  {"NetworkInterfaces": [eni(7, instance=4)]},
                                  {"Filters": filters, "NextToken": "page2"})
    harness.ec2_stub.add_response("describe_instances", {"Reservations": [{"Instances": [
        instance(1), instance(4, "m5.large")]}]}, {"Filters": [{"Name": "instance-id", "Values": [inst_id(1), inst_id(4)]}]})
    harness.ec2_stub.add_response("describe_instance_types", {"InstanceTypes": TYPES[:1]},
                                  {"InstanceTypes": ["m5.large"]})
    harness.orphan_lookup([eni_id(4)], found=[eni(4, requester="amazon-rds", description="RDSNetworkInterface")])
    harness.ec2_stub.add_response("delete_traffic_mirror_session", {"TrafficMirrorSessionId": sess_id(4)},
                                  {"TrafficMirrorSessionId": sess_id(4)})
    queue_session_create(harness, 7, sid_n=7, instance_n=4)
    code, out, err = cli(*BASE, "--subnet", SUBNET, "--instance", f"{inst_id(1)},{inst_id(4)}")
    harness.verify()
    assert code == 0, err
    assert f"ENI {eni_id(4)} no longer matches --subnet/--instance" in out


# -- watch -------------------------------------------------------------------------------------


def test_watch_attaches_new_instances_on_later_iterations(harness, monkeypatch):
    from provision.aws import runner
    from provision.aws.render import make_console
    from provision.aws.spec import build_spec

    spec = build_spec(spec_args(target_nlb=NLB_ARN))
    # iteration 1: the deployment exists and matches
    harness.preflight()
    harness.state(**existing_state())
    harness.discovery(vpc_enis(), vpc_instances(), TYPES)
    # iteration 2: a new instance appeared; instance types are cached from iteration 1
    harness.preflight()
    harness.state(**existing_state())
    harness.discovery(vpc_enis() + [eni(7, instance=7)], vpc_instances() + [instance(7, "m5.large")])
    queue_session_create(harness, 7, sid_n=7, instance_n=7)
    sleeps = []
    import io

    buf = io.StringIO()
    code = runner.watch(spec, harness.clients(), runner.Options(assume_yes=True), make_console(buf), interval=15,
                        max_iterations=2, sleep=sleeps.append)
    harness.verify()
    assert code == 0
    assert sleeps == [15]
    assert harness.operations.count("DescribeInstanceTypes") == 1
    assert "reconcile #2" in buf.getvalue()


def test_watch_flag_runs_bounded_iterations_through_the_cli(harness, cli):
    harness.preflight()
    harness.state(**existing_state())
    harness.discovery(vpc_enis(), vpc_instances(), TYPES)
    code, out, err = cli(*BASE, "--watch", "--interval", "5", "--max-iterations", "1")
    harness.verify()
    assert code == 0, err
    assert "reconcile #1" in out


def test_watch_keeps_going_after_a_transient_error(harness, monkeypatch):
    import io

    from provision.aws import runner
    from provision.aws.render import make_console
    from provision.aws.spec import build_spec

    spec = build_spec(spec_args())
    harness.preflight(nlb=None)
    harness.ec2_stub.add_client_error("describe_traffic_mirror_targets", "InternalError", "try again",
                                      http_status_code=500)
    harness.preflight(nlb=None)
    harness.state(**existing_state())
    harness.discovery(vpc_enis(), vpc_instances(), TYPES)
    code = runner.watch(spec, harness.clients(), runner.Options(), make_console(io.StringIO()), interval=1,
                        max_iterations=2, sleep=lambda s: None)
    harness.verify()
    assert code == 0


# -- teardown ----------------------------------------------------------------------------------


def test_teardown_deletes_only_this_deployment_in_dependency_order(harness, cli, aws_env):
    (aws_env / "sessions.json").write_text(json.dumps({"cloud": "aws", "deployment": NAME, "sessions": {}}))
    rules = DEFAULT_RULES[:2]
    harness.state(
        targets=[target(1), target(2, ours=False), target(3, name="other")],
        filters=[mirror_filter(1, rules), mirror_filter(2, DEFAULT_RULES[:1], ours=False, first_rule=10)],
        sessions=[session(1, 1), session(4, 4), session(5, 5, ours=False, target_n=2, filter_n=2),
                  session(6, 6, name="other", target_n=3, filter_n=2)],
    )
    ec2 = harness.ec2_stub
    for n in (1, 4):
        ec2.add_response("delete_traffic_mirror_session", {"TrafficMirrorSessionId": sess_id(n)},
                         {"TrafficMirrorSessionId": sess_id(n)})
    # rules are deleted in rule-key order: ingress #100, ingress #110
    ec2.add_response("delete_traffic_mirror_filter_rule", {"TrafficMirrorFilterRuleId": rule_id(1)},
                     {"TrafficMirrorFilterRuleId": rule_id(1)})
    ec2.add_response("delete_traffic_mirror_filter_rule", {"TrafficMirrorFilterRuleId": rule_id(2)},
                     {"TrafficMirrorFilterRuleId": rule_id(2)})
    ec2.add_response("delete_traffic_mirror_filter", {"TrafficMirrorFilterId": flt_id(1)},
                     {"TrafficMirrorFilterId": flt_id(1)})
    ec2.add_response("delete_traffic_mirror_target", {"TrafficMirrorTargetId": tgt_id(1)},
                     {"TrafficMirrorTargetId": tgt_id(1)})
    code, out, err = cli("deprovision", "aws", "--name", NAME, "--yes")
    harness.verify()
    assert code == 0, err
    mutating = [op for op in harness.operations if op.startswith(MUTATING_PREFIXES)]
    assert mutating == ["DeleteTrafficMirrorSession"] * 2 + ["DeleteTrafficMirrorFilterRule"] * 2 + \
        ["DeleteTrafficMirrorFilter", "DeleteTrafficMirrorTarget"]
    deleted = {next(iter(p.values())) for _, op, p in harness.calls if op.startswith("Delete")}
    assert deleted == {sess_id(1), sess_id(4), rule_id(1), rule_id(2), flt_id(1), tgt_id(1)}
    assert not (aws_env / "sessions.json").exists()


def test_teardown_never_deletes_a_reused_target_or_a_shared_filter(harness, cli):
    harness.state(
        targets=[target(5, ours=False)],
        filters=[mirror_filter(1, DEFAULT_RULES[:1])],
        sessions=[session(1, 1, target_n=5), session(2, 2, ours=False, target_n=5, filter_n=1)],
    )
    harness.ec2_stub.add_response("delete_traffic_mirror_session", {"TrafficMirrorSessionId": sess_id(1)},
                                  {"TrafficMirrorSessionId": sess_id(1)})
    code, out, err = cli("deprovision", "aws", "--name", NAME, "--yes")
    harness.verify()
    assert code == 0, err
    assert "DeleteTrafficMirrorTarget" not in harness.operations
    assert "DeleteTrafficMirrorFilter" not in harness.operations
    assert "not deleted: used by 1 session(s) of other deployments" in out


def test_teardown_failed_session_blocks_filter_and_target(harness, cli):
    harness.state(targets=[target(1)], filters=[mirror_filter(1)], sessions=[session(1, 1)])
    harness.ec2_stub.add_client_error("delete_traffic_mirror_session", "IncorrectState", "busy",
                                      expected_params={"TrafficMirrorSessionId": sess_id(1)})
    code, out, err = cli("deprovision", "aws", "--name", NAME, "--yes")
    harness.verify()
    assert code == 3
    assert "DeleteTrafficMirrorFilter" not in harness.operations
    assert "DeleteTrafficMirrorTarget" not in harness.operations
    assert "still in use" in out


def test_teardown_dry_run_and_nothing_to_delete(harness, cli):
    harness.state(targets=[target(1)], filters=[mirror_filter(1)], sessions=[session(1, 1)])
    code, out, err = cli("deprovision", "aws", "--name", NAME, "--dry-run")
    assert code == 0, err
    assert all(op.startswith("Describe") for op in harness.operations)
    assert "3 to delete" in out
    harness.state()
    code, out, err = cli("deprovision", "aws", "--name", NAME, "--yes")
    harness.verify()
    assert code == 0 and "Nothing to delete" in out


# -- status ------------------------------------------------------------------------------------


def test_status_lists_sessions_and_writes_the_map(harness, cli, aws_env):
    harness.state(**existing_state())
    harness.orphan_lookup([eni_id(1), eni_id(4)], found=[eni(1, instance=1), eni(4, requester="amazon-rds")])
    code, out, err = cli("provision", "aws", "status", "--name", NAME)
    harness.verify()
    assert code == 0, err
    for text in (sess_id(1), eni_id(1), inst_id(1), str(VNI), "2 session(s)"):
        assert text in out
    doc = json.loads((aws_env / "sessions.json").read_text())
    assert doc["sessions"][sess_id(1)]["instance"] == inst_id(1)
    assert doc["by_vni"] == {str(VNI): [sess_id(1), sess_id(4)]}


def test_status_json_and_explicit_map_path(harness, cli, aws_env):
    harness.state(**existing_state())
    harness.orphan_lookup([eni_id(1), eni_id(4)], found=[eni(1, instance=1)])
    path = aws_env / "elsewhere" / "map.json"
    code, out, err = cli("provision", "aws", "--name", "ignored", "status", "--name", NAME, "--json",
                         "--session-map", str(path))
    harness.verify()
    assert code == 0, err
    doc = json.loads(out)
    assert [r["session_id"] for r in doc["sessions"]] == [sess_id(1), sess_id(4)]
    assert doc["sessions"][1]["eni_state"] == "missing"
    assert json.loads(path.read_text())["deployment"] == NAME
    assert not (aws_env / "sessions.json").exists()


def test_unwritable_session_map_is_a_warning_not_a_failure(harness, cli, aws_env):
    blocker = aws_env / "file"
    blocker.write_text("x")
    harness.state(**existing_state())
    harness.orphan_lookup([eni_id(1), eni_id(4)])
    code, out, err = cli("provision", "aws", "status", "--name", NAME, "--session-map", str(blocker / "map.json"))
    assert code == 0
    assert err.startswith("appliance: warning: cannot write session map")
    assert len(err.strip().splitlines()) == 1
