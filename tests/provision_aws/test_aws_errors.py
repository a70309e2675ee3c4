"""Error paths: one line on stderr, no traceback, documented exit codes."""

from __future__ import annotations

import pytest
from botocore.awsrequest import AWSResponse
from botocore.stub import ANY

from awsprov_support import NAME, NLB_ARN, VPC, eni, eni_id, instance, mirror_filter, session, target
from awsprov_support import (BASE, TYPES, existing_state, queue_first_run, queue_session_create, vpc_enis,
                             vpc_instances)

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


def test_permission_denied_on_discovery_names_the_action(harness, cli):
    harness.ec2_stub.add_client_error("describe_traffic_mirror_targets", "UnauthorizedOperation",
                                      DENIED_MSG.format(action="ec2:DescribeTrafficMirrorTargets"),
                                      http_status_code=403)
    code, out, err = cli(*BASE)
    harness.verify()
    assert code == 4
    line = one_error_line(err)
    assert "permission denied: ec2:DescribeTrafficMirrorTargets" in line
    assert "AbCdEf0123456789xyz" not in line


def test_permission_denied_mid_apply_stops_and_summarises(harness, cli):
    harness.state(**existing_state())
    harness.listeners(("UDP", 4789))
    harness.discovery(vpc_enis() + [eni(7, instance=7), eni(8, instance=8)],
                      vpc_instances() + [instance(7), instance(8)], TYPES)
    queue_session_create(harness, 7, sid_n=7, instance_n=7,
                         error=("UnauthorizedOperation", DENIED_MSG.format(action="ec2:CreateTrafficMirrorSession")))
    code, out, err = cli(*BASE)
    harness.verify()  # ENI 8 was never attempted
    assert code == 4
    assert "permission denied: ec2:CreateTrafficMirrorSession" in one_error_line(err)
    assert "Summary" in out and "not run" in out


def test_elbv2_access_denied_names_the_elb_action(harness, cli):
    harness.state()
    harness.elb_stub.add_client_error("describe_listeners", "AccessDenied", "User is not allowed",
                                      http_status_code=403, expected_params={"LoadBalancerArn": NLB_ARN})
    code, out, err = cli(*BASE)
    harness.verify()
    assert code == 4
    assert "permission denied: elasticloadbalancing:DescribeListeners" in one_error_line(err)


def test_bad_credentials_are_exit_4(harness, cli):
    harness.ec2_stub.add_client_error("describe_traffic_mirror_targets", "AuthFailure",
                                      "AWS was not able to validate the provided access credentials",
                                      http_status_code=401)
    code, out, err = cli(*BASE)
    assert code == 4
    assert "AWS rejected the credentials" in one_error_line(err)


@pytest.mark.parametrize("dry_run", [False, True])
def test_nlb_without_udp_4789_listener_is_refused(harness, cli, dry_run):
    harness.state()
    harness.listeners(("TCP", 80), ("UDP", 53))
    harness.discovery(vpc_enis(), vpc_instances(), TYPES)
    code, out, err = cli(*BASE, *(["--dry-run"] if dry_run else []))
    harness.verify()
    assert code == 1
    line = one_error_line(err)
    assert "has no UDP listener on port 4789 (listeners: TCP:80, UDP:53)" in line
    assert not [op for op in harness.operations if op.startswith(MUTATING)]
    assert "create" in out  # the plan is still shown


def test_skip_listener_check(harness, cli):
    queue_first_run(harness, listener=False)
    code, out, err = cli(*BASE, "--skip-listener-check")
    harness.verify()
    assert code == 0, err
    assert "DescribeListeners" not in harness.operations


def test_unknown_load_balancer_is_an_error(harness, cli):
    harness.state()
    harness.elb_stub.add_client_error("describe_listeners", "LoadBalancerNotFound", "One or more load balancers not found",
                                      http_status_code=400, expected_params={"LoadBalancerArn": NLB_ARN})
    code, out, err = cli(*BASE)
    assert code == 1
    assert "elasticloadbalancing:DescribeListeners failed: LoadBalancerNotFound" in one_error_line(err)


def test_target_creation_failure_aborts_before_sessions(harness, cli):
    harness.state()
    harness.listeners(("UDP", 4789))
    harness.discovery(vpc_enis(), vpc_instances(), TYPES)
    harness.ec2_stub.add_client_error("create_traffic_mirror_target", "InvalidParameterValue",
                                      "The NLB is not internal",
                                      expected_params={"NetworkLoadBalancerArn": NLB_ARN, "Description": ANY,
                                                       "TagSpecifications": ANY})
    code, out, err = cli(*BASE)
    harness.verify()
    assert code == 1
    assert "ec2:CreateTrafficMirrorTarget failed: InvalidParameterValue: The NLB is not internal" in one_error_line(err)
    assert [op for op in harness.operations if op.startswith(MUTATING)] == ["CreateTrafficMirrorTarget"]


def test_first_run_without_a_target_is_a_usage_error(harness, cli):
    harness.state()
    harness.discovery(vpc_enis(), vpc_instances(), TYPES)
    code, out, err = cli("provision", "aws", "--vpc", VPC, "--name", NAME)
    assert code == 2
    assert "has no mirror target yet" in one_error_line(err)


def test_unknown_target_id_is_a_usage_error(harness, cli):
    harness.state(targets=[target(1, ours=False)])
    harness.discovery(vpc_enis(), vpc_instances(), TYPES)
    code, out, err = cli("provision", "aws", "--vpc", VPC, "--name", NAME, "--target-id", "tmt-0fffffffffffffff0")
    assert code == 2
    assert "tmt-0fffffffffffffff0 does not exist" in one_error_line(err)


def test_deployment_bound_to_another_vpc_is_refused(harness, cli):
    other = "vpc-0ffffffffffffffff"
    harness.state(targets=[target(1)], filters=[mirror_filter(1)], sessions=[session(1, 1)])
    code, out, err = cli("provision", "aws", "--vpc", other, "--name", NAME, "--target-nlb", NLB_ARN)
    harness.verify()
    assert code == 2
    assert harness.operations == ["DescribeTrafficMirrorTargets", "DescribeTrafficMirrorFilters",
                                  "DescribeTrafficMirrorSessions"]
    assert "already has resources in another VPC" in one_error_line(err)


@pytest.mark.parametrize("argv, needle", [
    (("--vpc", "vpc-xyz"), "invalid --vpc"),
    (("--vpc", VPC, "--ports", "80,abc"), "invalid port or range 'abc'"),
    (("--vpc", VPC, "--ports", "90-80"), "invalid port or range '90-80'"),
    (("--vpc", VPC, "--ports", "1,3,5"), "the filter would need 12 rules but AWS allows 10"),
    (("--vpc", VPC, "--protocol", "all", "--ports", "80"), "--ports needs --protocol tcp"),
    (("--vpc", VPC, "--protocol", "icmp"), "invalid --protocol 'icmp'"),
    (("--vpc", VPC, "--cidr", "10.0.0.300/8"), "invalid --cidr"),
    (("--vpc", VPC, "--vni", "0"), "--vni must be between 1 and 16777215"),
    (("--vpc", VPC, "--vni", "16777216"), "--vni must be between 1 and 16777215"),
    (("--vpc", VPC, "--vni", "5", "--vni-mode", "per-session"), "--vni sets the one VNI"),
    (("--vpc", VPC, "--packet-length", "8501"), "--packet-length must be between 1 and 8500"),
    (("--vpc", VPC, "--target-nlb", "arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/x/1"),
     "invalid --target-nlb"),
    (("--vpc", VPC, "--tag", "=x"), "invalid --tag"),
    (("--vpc", VPC, "--interval", "5"), "--interval only applies with --watch"),
    (("--vpc", VPC, "--watch", "--interval", "0"), "--interval must be a positive"),
    (("--vpc", VPC, "--name", "bad name!"), "invalid deployment name"),
    ((), "--vpc is required"),
    (("--vpc", VPC, "--max-attempts", "0"), "--max-attempts must be at least 1"),
])
def test_usage_errors_exit_2_without_calling_aws(harness, cli, argv, needle):
    code, out, err = cli("provision", "aws", *argv)
    assert code == 2
    assert needle in one_error_line(err)
    assert harness.calls == []


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
    assert code == 4
    assert "no AWS credentials found" in one_error_line(err)


def test_unknown_profile_is_exit_2(cli):
    code, out, err = cli("deprovision", "aws", "--name", NAME, "--profile", "nope")
    assert code == 2
    assert "unknown AWS profile" in one_error_line(err)


def test_no_region_is_exit_2(cli, monkeypatch):
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    code, out, err = cli("provision", "aws", "status", "--name", NAME)
    assert code == 2
    assert "no AWS region" in one_error_line(err)


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


def test_throttling_beyond_max_attempts_is_one_line_exit_1(throttled_clients, cli):
    box, sleeps = throttled_clients
    box["throttle"] = 100
    code, out, err = cli("provision", "aws", "status", "--name", NAME, "--max-attempts", "3")
    assert code == 1
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
