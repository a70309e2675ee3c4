"""Error paths: one line on stderr, no traceback, documented exit codes."""

from __future__ import annotations

import pytest
from awsprov_support import (
    BASE,
    NAME,
    NLB_ARN,
    TYPES,
    VPC,
    eni,
    eni_id,
    existing_state,
    flt_id,
    inst_id,
    instance,
    mirror_filter,
    our_tags,
    queue_first_run,
    queue_session_create,
    session,
    target,
    tgt_id,
    vpc_enis,
    vpc_instances,
)
from botocore.awsrequest import AWSResponse
from botocore.stub import ANY

from provision import exitcodes

MUTATING = ("Create", "Delete", "Modify")
DENIED_MSG = ("You are not authorized to perform this operation. User: arn:aws:iam::123456789012:user/ci is not "
              "authorized to perform: {action} on resource: arn:aws:ec2:us-east-1:123456789012:* because no "
              "identity-based policy allows the {action} action. Encoded authorization failure message: "
              "AbCdEf0123456789xyz")


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("appliance: error: ")
    assert "Traceback" not in err
    return lines[0]


def test_permission_denied_in_preflight_names_the_action(harness, cli):
    harness.ec2_stub.add_client_error("describe_vpcs", "UnauthorizedOperation",
                                      DENIED_MSG.format(action="ec2:DescribeVpcs"), http_status_code=403)
    code, out, err = cli(*BASE)
    harness.verify()
    assert code == exitcodes.DENIED
    line = one_error_line(err)
    assert "permission denied: ec2:DescribeVpcs" in line
    assert "AbCdEf0123456789xyz" not in line
    assert out == ""  # no plan


def test_permission_denied_on_discovery_names_the_action(harness, cli):
    harness.preflight()
    harness.ec2_stub.add_client_error("describe_traffic_mirror_targets", "UnauthorizedOperation",
                                      DENIED_MSG.format(action="ec2:DescribeTrafficMirrorTargets"),
                                      http_status_code=403)
    code, out, err = cli(*BASE)
    harness.verify()
    assert code == exitcodes.DENIED
    assert "permission denied: ec2:DescribeTrafficMirrorTargets" in one_error_line(err)


def test_permission_denied_mid_apply_stops_and_summarises(harness, cli):
    harness.preflight()
    harness.state(**existing_state())
    harness.discovery(vpc_enis() + [eni(7, instance=7), eni(8, instance=8)],
                      vpc_instances() + [instance(7), instance(8)], TYPES)
    queue_session_create(harness, 7, sid_n=7, instance_n=7,
                         error=("UnauthorizedOperation", DENIED_MSG.format(action="ec2:CreateTrafficMirrorSession")))
    code, out, err = cli(*BASE)
    harness.verify()  # ENI 8 was never attempted
    assert code == exitcodes.DENIED
    assert "permission denied: ec2:CreateTrafficMirrorSession" in one_error_line(err)
    assert "Summary" in out and "not run" in out
    assert "Nothing was changed." in out
    assert "appliance provision aws --name prod --vpc vpc-0a1b2c3d4e5f60718" in out


def test_partial_apply_lists_what_was_created_and_how_to_finish_or_undo(harness, cli):
    """Target and filter created, then the first rule fails: the summary names what exists now
    and prints the exact commands to finish (same arguments) or undo (deprovision)."""
    harness.preflight()
    harness.state()
    harness.discovery(vpc_enis(), vpc_instances(), TYPES)
    harness.ec2_stub.add_response("create_traffic_mirror_target", {"TrafficMirrorTarget": target(1)},
                                  {"NetworkLoadBalancerArn": NLB_ARN, "Description": ANY, "TagSpecifications": ANY})
    harness.ec2_stub.add_response("create_traffic_mirror_filter", {"TrafficMirrorFilter": mirror_filter(1)},
                                  {"Description": ANY, "TagSpecifications": ANY})
    harness.ec2_stub.add_client_error("create_traffic_mirror_filter_rule", "UnauthorizedOperation",
                                      DENIED_MSG.format(action="ec2:CreateTrafficMirrorFilterRule"))
    code, out, err = cli(*BASE, "--ports", "80,443")
    harness.verify()
    assert code == exitcodes.DENIED
    assert "permission denied: ec2:CreateTrafficMirrorFilterRule" in one_error_line(err)
    assert f"Changed before the run ended: created target {tgt_id(1)}; created filter {flt_id(1)}" in out
    finish = ("appliance provision aws --name prod --vpc vpc-0a1b2c3d4e5f60718 --target-nlb "
              f"{NLB_ARN} --ports 80,443 --yes")
    assert f"  {finish}\n" in out
    assert "  appliance deprovision aws --name prod --region us-east-1\n" in out


def test_unexpected_exception_mid_apply_is_one_line_and_a_summary(harness, cli, monkeypatch):
    """An exception nothing expects (here a KeyError from a malformed response) during the
    apply: one line naming the call and the exception, the summary, no traceback."""
    harness.preflight()
    harness.state()
    harness.discovery(vpc_enis(), vpc_instances(), TYPES)
    harness.ec2_stub.add_response("create_traffic_mirror_target", {"TrafficMirrorTarget": target(1)},
                                  {"NetworkLoadBalancerArn": NLB_ARN, "Description": ANY, "TagSpecifications": ANY})
    # Valid for the service model (every output member is optional), but without the filter.
    harness.ec2_stub.add_response("create_traffic_mirror_filter", {}, {"Description": ANY, "TagSpecifications": ANY})
    code, out, err = cli(*BASE)
    harness.verify()
    assert code == exitcodes.ERROR
    line = one_error_line(err)
    assert "unexpected error while calling ec2:CreateTrafficMirrorFilter: KeyError: 'TrafficMirrorFilter'" in line
    assert f"created target {tgt_id(1)}" in out
    assert "appliance deprovision aws --name prod --region us-east-1" in out


def test_unknown_client_error_code_is_one_line(harness, cli):
    harness.preflight()
    harness.state()
    harness.discovery(vpc_enis(), vpc_instances(), TYPES)
    harness.ec2_stub.add_client_error("create_traffic_mirror_target", "SomethingNobodyHasSeen", "the\nmessage",
                                      http_status_code=418,
                                      expected_params={"NetworkLoadBalancerArn": NLB_ARN, "Description": ANY,
                                                       "TagSpecifications": ANY})
    code, out, err = cli(*BASE)
    assert code == exitcodes.ERROR
    assert "ec2:CreateTrafficMirrorTarget failed: SomethingNobodyHasSeen: the message" in one_error_line(err)


def test_elbv2_access_denied_names_the_elb_action(harness, cli):
    harness.ec2_stub.add_response("describe_vpcs", {"Vpcs": [{"VpcId": VPC}]},
                                  {"Filters": [{"Name": "vpc-id", "Values": [VPC]}]})
    harness.elb_stub.add_client_error("describe_load_balancers", "AccessDenied", "User is not allowed",
                                      http_status_code=403, expected_params={"LoadBalancerArns": [NLB_ARN]})
    code, out, err = cli(*BASE)
    harness.verify()
    assert code == exitcodes.DENIED
    assert "permission denied: elasticloadbalancing:DescribeLoadBalancers" in one_error_line(err)


def test_bad_credentials_are_exit_4(harness, cli):
    harness.ec2_stub.add_client_error("describe_vpcs", "AuthFailure",
                                      "AWS was not able to validate the provided access credentials",
                                      http_status_code=401)
    code, out, err = cli(*BASE)
    assert code == exitcodes.DENIED
    assert "AWS rejected the credentials" in one_error_line(err)


@pytest.mark.parametrize("dry_run", [False, True])
def test_nlb_without_udp_4789_listener_is_refused_before_planning(harness, cli, dry_run):
    harness.preflight(listeners=(("TCP", 80), ("UDP", 53)))
    code, out, err = cli(*BASE, *(["--dry-run"] if dry_run else []))
    harness.verify()
    assert code == exitcodes.USAGE
    line = one_error_line(err)
    assert "has no UDP listener on port 4789 (listeners: TCP:80, UDP:53)" in line
    assert "--skip-listener-check" in line
    assert harness.operations == ["DescribeVpcs", "DescribeLoadBalancers", "DescribeListeners"]
    assert out == ""


def test_skip_listener_check(harness, cli):
    queue_first_run(harness, listener=False)
    code, out, err = cli(*BASE, "--skip-listener-check")
    harness.verify()
    assert code == 0, err
    assert "DescribeListeners" not in harness.operations


def test_missing_vpc_and_target_eni_are_named_together_and_no_plan_is_printed(harness, cli):
    """The case from the issue: neither the VPC nor the target ENI exists."""
    target_eni = "eni-0123456789abcdef0"
    harness.preflight(vpc_exists=False, nlb=None)
    harness.ec2_stub.add_response("describe_network_interfaces", {"NetworkInterfaces": []},
                                  {"Filters": [{"Name": "network-interface-id", "Values": [target_eni]}]})
    code, out, err = cli("provision", "aws", "--vpc", VPC, "--target-eni", target_eni, "--region", "us-east-1",
                         "--dry-run")
    harness.verify()
    assert code == exitcodes.USAGE
    assert one_error_line(err) == (
        f"appliance: error: not found in us-east-1 with these credentials: VPC {VPC} (--vpc), "
        f"network interface {target_eni} (--target-eni)")
    assert out == ""
    assert all(op.startswith("Describe") for op in harness.operations)
    assert "DescribeTrafficMirrorTargets" not in harness.operations  # stopped before planning


def test_missing_and_misplaced_subnets_and_instances(harness, cli):
    other = "vpc-0ffffffffffffffff"
    good, elsewhere, gone = "subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb", "subnet-0cccccccccccccccc"
    harness.preflight(nlb=None)
    harness.ec2_stub.add_response(
        "describe_subnets", {"Subnets": [{"SubnetId": good, "VpcId": VPC}, {"SubnetId": elsewhere, "VpcId": other}]},
        {"Filters": [{"Name": "subnet-id", "Values": sorted([good, elsewhere, gone])}]})
    harness.ec2_stub.add_response(
        "describe_instances", {"Reservations": [{"Instances": [dict(instance(2), VpcId=other)]}]},
        {"Filters": [{"Name": "instance-id", "Values": sorted([inst_id(1), inst_id(2), inst_id(3)])}]})
    code, out, err = cli("provision", "aws", "--vpc", VPC, "--subnet", f"{good},{elsewhere},{gone}",
                         "--instance", inst_id(1), "--instance", inst_id(2), "--exclude-instance", inst_id(3))
    harness.verify()
    assert code == exitcodes.USAGE, err
    line = one_error_line(err)
    assert (f"not found in us-east-1 with these credentials: subnet {gone} (--subnet), "
            f"instance {inst_id(1)} (--instance), instance {inst_id(3)} (--exclude-instance)") in line
    assert f"--subnet {elsewhere} is in {other}, not in --vpc {VPC}" in line
    assert f"--instance {inst_id(2)} is in {other}, not in --vpc {VPC}" in line


def test_unknown_load_balancer_is_a_missing_resource(harness, cli):
    harness.ec2_stub.add_response("describe_vpcs", {"Vpcs": [{"VpcId": VPC}]},
                                  {"Filters": [{"Name": "vpc-id", "Values": [VPC]}]})
    harness.elb_stub.add_client_error("describe_load_balancers", "LoadBalancerNotFound",
                                      "One or more load balancers not found", http_status_code=400,
                                      expected_params={"LoadBalancerArns": [NLB_ARN]})
    code, out, err = cli(*BASE)
    harness.verify()
    assert code == exitcodes.USAGE
    assert f"network load balancer {NLB_ARN} (--target-nlb)" in one_error_line(err)


def test_nlb_in_another_region_is_refused(harness, cli):
    harness.ec2_stub.add_response("describe_vpcs", {"Vpcs": [{"VpcId": VPC}]},
                                  {"Filters": [{"Name": "vpc-id", "Values": [VPC]}]})
    west = NLB_ARN.replace("us-east-1", "us-west-2")
    code, out, err = cli("provision", "aws", "--vpc", VPC, "--target-nlb", west)
    harness.verify()
    assert code == exitcodes.USAGE
    assert "--target-nlb is in region us-west-2, but the deployment is in us-east-1" in one_error_line(err)


def test_target_creation_failure_aborts_before_sessions(harness, cli):
    harness.preflight()
    harness.state()
    harness.discovery(vpc_enis(), vpc_instances(), TYPES)
    harness.ec2_stub.add_client_error("create_traffic_mirror_target", "InvalidParameterValue",
                                      "The NLB is not internal",
                                      expected_params={"NetworkLoadBalancerArn": NLB_ARN, "Description": ANY,
                                                       "TagSpecifications": ANY})
    code, out, err = cli(*BASE)
    harness.verify()
    assert code == exitcodes.ERROR
    assert "ec2:CreateTrafficMirrorTarget failed: InvalidParameterValue: The NLB is not internal" in one_error_line(err)
    assert [op for op in harness.operations if op.startswith(MUTATING)] == ["CreateTrafficMirrorTarget"]


def test_first_run_without_a_target_is_a_usage_error(harness, cli):
    harness.preflight(nlb=None)
    harness.state()
    harness.discovery(vpc_enis(), vpc_instances(), TYPES)
    code, out, err = cli("provision", "aws", "--vpc", VPC, "--name", NAME)
    assert code == exitcodes.USAGE
    assert "has no mirror target yet" in one_error_line(err)


def test_unknown_target_id_is_a_usage_error(harness, cli):
    harness.preflight(nlb=None)
    harness.state(targets=[target(1, ours=False)])
    code, out, err = cli("provision", "aws", "--vpc", VPC, "--name", NAME, "--target-id", "tmt-0fffffffffffffff0")
    harness.verify()
    assert code == exitcodes.USAGE
    assert "traffic mirror target tmt-0fffffffffffffff0 (--target-id)" in one_error_line(err)
    assert out == ""


def test_deployment_bound_to_another_vpc_is_refused(harness, cli):
    other = "vpc-0ffffffffffffffff"
    harness.preflight(vpc=other)
    harness.state(targets=[target(1)], filters=[mirror_filter(1)], sessions=[session(1, 1)])
    code, out, err = cli("provision", "aws", "--vpc", other, "--name", NAME, "--target-nlb", NLB_ARN)
    harness.verify()
    assert code == exitcodes.USAGE
    assert harness.operations == ["DescribeVpcs", "DescribeLoadBalancers", "DescribeListeners",
                                  "DescribeTrafficMirrorTargets", "DescribeTrafficMirrorFilters",
                                  "DescribeTrafficMirrorSessions"]
    assert "already has resources in another VPC" in one_error_line(err)


HEX17 = "0a1b2c3d4e5f67890"


@pytest.mark.parametrize("argv, needle", [
    (("--vpc", "vpc-xyz"), f"invalid --vpc 'vpc-xyz': expected vpc- and 8 or 17 lowercase hex digits, "
                           f"e.g. vpc-{HEX17}"),
    (("--vpc", "vpc-0abc"), "invalid --vpc 'vpc-0abc': expected vpc- and 8 or 17 lowercase hex digits"),
    (("--vpc", "vpc-0A1B2C3D4E5F67890"), "invalid --vpc 'vpc-0A1B2C3D4E5F67890': expected vpc- and 8 or 17 lowercase"),
    (("--vpc", VPC, "--subnet", "subnet-1"), f"invalid --subnet 'subnet-1': expected subnet- and 8 or 17 "
                                             f"lowercase hex digits, e.g. subnet-{HEX17}"),
    (("--vpc", VPC, "--instance", "web-1"), f"invalid --instance 'web-1': expected i- and 8 or 17 lowercase hex "
                                            f"digits, e.g. i-{HEX17}"),
    (("--vpc", VPC, "--exclude-instance", "i-1"), "invalid --exclude-instance 'i-1': expected i- and"),
    (("--vpc", VPC, "--target-eni", "eni-12"), f"invalid --target-eni 'eni-12': expected eni- and 8 or 17 "
                                               f"lowercase hex digits, e.g. eni-{HEX17}"),
    (("--vpc", VPC, "--target-id", "tmt-1"), f"invalid --target-id 'tmt-1': expected tmt- and 8 or 17 lowercase "
                                             f"hex digits, e.g. tmt-{HEX17}"),
    (("--vpc", VPC, "--target-nlb", "arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/x/1"),
     "invalid --target-nlb 'arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/x/1': expected a network "
     "load balancer ARN, e.g. arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/mirror/"),
    (("--vpc", VPC, "--region", "useast1"), "invalid --region 'useast1': expected an AWS region code such as us-east-1"),
    (("--vpc", VPC, "--ports", "80,abc"), "invalid --ports entry 'abc': expected a port or a range, e.g. 443 or "
                                          "8000-8100"),
    (("--vpc", VPC, "--ports", "90-80"), "invalid --ports entry '90-80': ports are 0-65535 and a range is low-high"),
    (("--vpc", VPC, "--ports", "1,3,5"), "the filter would need 12 rules but AWS allows 10"),
    (("--vpc", VPC, "--protocol", "all", "--ports", "80"), "--ports needs --protocol tcp"),
    (("--vpc", VPC, "--protocol", "icmp"), "invalid --protocol 'icmp'"),
    (("--vpc", VPC, "--cidr", "10.0.0.300/8"), "invalid --cidr '10.0.0.300/8': expected an IPv4 or IPv6 CIDR"),
    (("--vpc", VPC, "--vni", "0"), "--vni must be between 1 and 16777215"),
    (("--vpc", VPC, "--vni", "16777216"), "--vni must be between 1 and 16777215"),
    (("--vpc", VPC, "--vni", "5", "--vni-mode", "per-session"), "--vni sets the one VNI"),
    (("--vpc", VPC, "--packet-length", "8501"), "--packet-length must be between 1 and 8500"),
    (("--vpc", VPC, "--tag", "=x"), "invalid --tag"),
    (("--vpc", VPC, "--interval", "5"), "--interval only applies with --watch"),
    (("--vpc", VPC, "--watch", "--interval", "0"), "invalid --interval 0: must be a positive"),
    (("--vpc", VPC, "--watch"), "--watch applies changes every round without asking: add --yes"),
    (("--vpc", VPC, "--name", "bad name!"), "invalid --name 'bad name!': use 1-63 letters"),
    ((), f"--vpc is required: the VPC whose ENIs are mirrored (vpc- and 8 or 17 lowercase hex digits, "
         f"e.g. vpc-{HEX17})"),
    (("--vpc", VPC, "--max-attempts", "0"), "invalid --max-attempts 0: must be at least 1"),
])
def test_usage_errors_exit_2_without_calling_aws(harness, cli, argv, needle):
    code, out, err = cli("provision", "aws", *argv)
    assert code == exitcodes.USAGE
    assert needle in one_error_line(err)
    assert harness.calls == []


def test_region_from_the_environment_is_validated_too(cli, monkeypatch):
    monkeypatch.setenv("AWS_REGION", "mars-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "mars-1")
    code, out, err = cli("provision", "aws", "--vpc", VPC)
    assert code == exitcodes.USAGE
    assert "invalid AWS region (from AWS_REGION, AWS_DEFAULT_REGION or the profile) 'mars-1'" in one_error_line(err)


def test_conflicting_target_flags_are_rejected_by_argparse(cli, capsys):
    from appliance.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["provision", "aws", "--vpc", VPC, "--target-nlb", NLB_ARN, "--target-eni", eni_id(1)])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_no_credentials_is_exit_4(cli, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    code, out, err = cli("provision", "aws", "status", "--name", NAME)
    assert code == exitcodes.DENIED
    assert "no AWS credentials found" in one_error_line(err)


def test_unknown_profile_is_exit_2(cli):
    code, out, err = cli("deprovision", "aws", "--name", NAME, "--profile", "nope")
    assert code == exitcodes.USAGE
    assert "unknown AWS profile" in one_error_line(err)


def test_no_region_is_exit_2(cli, monkeypatch):
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    code, out, err = cli("provision", "aws", "status", "--name", NAME)
    assert code == exitcodes.USAGE
    assert "no AWS region" in one_error_line(err)


def test_unreachable_endpoint_is_one_line_exit_1(cli, monkeypatch):
    """A real connection error from botocore: nothing listens on the endpoint."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    code, out, err = cli("provision", "aws", "status", "--name", NAME, "--max-attempts", "1")
    assert code == exitcodes.ERROR
    line = one_error_line(err)
    assert f"cannot reach AWS on ec2:DescribeTrafficMirrorTargets: Could not connect to the endpoint URL: " \
           f"\"http://127.0.0.1:{port}/\"" in line


# -- throttling: botocore's real retry handler, over a fake HTTP layer -------------------------

THROTTLE_BODY = (b'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>RequestLimitExceeded</Code>'
                 b"<Message>Request limit exceeded.</Message></Error></Errors><RequestID>r-1</RequestID></Response>")


@pytest.fixture
def throttled_clients(monkeypatch):
    """Real clients from the production ``make_clients`` (retry config and all), running under moto,
    with the first N DescribeTrafficMirrorTargets HTTP responses replaced by RequestLimitExceeded."""
    from moto import mock_aws

    from provision.aws import clients as clients_mod

    sleeps: list[float] = []
    monkeypatch.setattr("botocore.endpoint.time.sleep", sleeps.append)
    box = {"throttle": 0, "attempts": 0}
    real_make = clients_mod.make_clients

    def make(*args, **kwargs):
        clients = real_make(*args, **kwargs)

        def throttle(request, **_):
            box["attempts"] += 1
            if box["throttle"] > 0:
                box["throttle"] -= 1
                return AWSResponse(request.url, 503, {}, _Raw(THROTTLE_BODY))
            return None

        clients.ec2.meta.events.register_first("before-send.ec2.DescribeTrafficMirrorTargets", throttle)
        return clients

    monkeypatch.setattr(clients_mod, "make_clients", make)
    with mock_aws():
        # the deployment exists (status of a missing one is exit 7)
        import boto3

        boto3.client("ec2", region_name="us-east-1").create_traffic_mirror_filter(
            TagSpecifications=[{"ResourceType": "traffic-mirror-filter", "Tags": our_tags()}])
        yield box, sleeps


class _Raw:
    def __init__(self, body: bytes):
        self._body = body

    def stream(self, **_):
        yield self._body


def test_throttling_is_retried_with_backoff(throttled_clients, cli):
    box, sleeps = throttled_clients
    box["throttle"] = 2
    code, out, err = cli("provision", "aws", "status", "--name", NAME, "--max-attempts", "4", "--no-session-map")
    assert code == 0, err
    assert box["attempts"] == 3
    assert len(sleeps) == 2


def test_throttling_beyond_max_attempts_is_one_line_exit_5(throttled_clients, cli):
    box, sleeps = throttled_clients
    box["throttle"] = 100
    code, out, err = cli("provision", "aws", "status", "--name", NAME, "--max-attempts", "3")
    assert code == exitcodes.QUOTA
    line = one_error_line(err)
    assert "throttled by AWS on ec2:DescribeTrafficMirrorTargets after 3 attempts" in line
    assert box["attempts"] == 3


def test_retry_config_honours_flags_then_environment(monkeypatch):
    from provision.aws.clients import retry_config

    assert retry_config(None, None).retries == {"mode": "standard", "total_max_attempts": 10}
    monkeypatch.setenv("AWS_RETRY_MODE", "adaptive")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "7")
    assert retry_config(None, None).retries == {"mode": "adaptive", "total_max_attempts": 7}
    assert retry_config("standard", 2).retries == {"mode": "standard", "total_max_attempts": 2}
