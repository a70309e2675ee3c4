"""The CLI as users run it: a separate process, over HTTP to a moto server, with a real
terminal (a pty) for the confirmation prompt.

moto implements what discovery and the preflight need but not CreateTrafficMirrorFilterRule:
its server answers that call with an HTML 500 page. That is exactly the "error the code does
not expect" of a real deployment (a proxy's error page, a new AWS behaviour): it must end as
one line plus a summary of what was created and how to finish or undo, never a traceback.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import urllib.request

import boto3
import pytest
from awsprov_support import run_cli_process

from provision import exitcodes
from provision.aws import constants as C
from provision.aws.state import tags_of

AMI = "ami-12c6146b"


@pytest.fixture(scope="module")
def moto_url():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def world(moto_url, tmp_path):
    """A fresh account: a VPC with one application instance and one collector instance."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST"), timeout=10).read()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "APPLIANCE_SESSION_MAP": str(tmp_path / "sessions.json"),
    }
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_url, aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    app, collector = ec2.run_instances(ImageId=AMI, MinCount=2, MaxCount=2, InstanceType="m5.large",
                                       SubnetId=subnet)["Instances"]
    return {"env": env, "ec2": ec2, "vpc": vpc,
            "app_eni": app["NetworkInterfaces"][0]["NetworkInterfaceId"],
            "target_eni": collector["NetworkInterfaces"][0]["NetworkInterfaceId"]}


def provision_argv(w, *extra):
    return ["provision", "aws", "--vpc", w["vpc"], "--target-eni", w["target_eni"], "--name", "demo", *extra]


def mirror_resources(ec2):
    return (ec2.describe_traffic_mirror_targets()["TrafficMirrorTargets"],
            ec2.describe_traffic_mirror_filters()["TrafficMirrorFilters"],
            ec2.describe_traffic_mirror_sessions()["TrafficMirrorSessions"])


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err
    return re.findall(r"appliance: error: .*", err)


def test_missing_vpc_and_target_eni_stop_before_any_plan(world):
    """The issue's example, over real HTTP: neither the VPC nor the ENI exists."""
    code, out, err = run_cli_process(
        ["provision", "aws", "--vpc", "vpc-0123456789abcdef0", "--target-eni", "eni-0123456789abcdef0",
         "--region", "us-east-1", "--dry-run"], world["env"])
    assert code == exitcodes.USAGE
    assert err == ("appliance: error: not found in us-east-1 with these credentials: VPC vpc-0123456789abcdef0 "
                   "(--vpc), network interface eni-0123456789abcdef0 (--target-eni)\n")
    assert out == ""


def test_the_plan_is_confirmed_on_a_terminal_and_declining_changes_nothing(world):
    code, out, err = run_cli_process(provision_argv(world), world["env"], answer="n\n")
    assert code == exitcodes.ERROR
    assert "Plan: 9 to create, 0 to update, 0 to delete" in out  # shown before the question
    assert "Apply 9 change(s) to deployment demo in us-east-1? [y/N]" in err
    assert error_lines(err) == ["appliance: error: not applied: 9 change(s) to deployment demo in us-east-1 "
                                "declined at the prompt; nothing was changed"]
    assert mirror_resources(world["ec2"]) == ([], [], [])


def test_without_a_terminal_and_without_yes_it_refuses_instead_of_waiting(world):
    # stdin is an open pipe nobody writes to: reading it would hang; the command must not try.
    code, out, err = run_cli_process(provision_argv(world), world["env"], stdin=subprocess.PIPE, timeout=60)
    assert code == exitcodes.USAGE
    assert err == ("appliance: error: not applying 9 change(s) to deployment demo in us-east-1: stdin is not a "
                   "terminal, so nobody can confirm; pass --yes (or --auto-approve) to apply, or --dry-run to "
                   "only plan\n")
    assert mirror_resources(world["ec2"]) == ([], [], [])


@pytest.mark.parametrize("how", ["prompt", "--auto-approve"])
def test_an_unimplemented_call_mid_apply_is_one_line_and_a_summary_with_next_steps(world, how):
    argv = provision_argv(world) if how == "prompt" else provision_argv(world, "--auto-approve")
    code, out, err = run_cli_process(argv, world["env"], answer="yes\n" if how == "prompt" else None)
    assert code == exitcodes.ERROR
    (line,) = error_lines(err)
    assert line.startswith("appliance: error: the endpoint answered on ec2:CreateTrafficMirrorFilterRule with "
                           "something that is not an AWS API response: 500 Internal Server Error")
    targets, filters, sessions = mirror_resources(world["ec2"])
    assert len(targets) == 1 and len(filters) == 1 and sessions == []
    assert all(tags_of(r)[C.TAG_DEPLOYMENT] == "demo" for r in targets + filters)
    tid, fid = targets[0]["TrafficMirrorTargetId"], filters[0]["TrafficMirrorFilterId"]
    assert f"Changed before the run ended: created target {tid}; created filter {fid}" in out
    lines = out.splitlines()
    finish = lines[lines.index("To finish, run the same command again (it keeps what exists and does the rest):") + 1]
    assert shlex.split(finish) == ["appliance", "provision", "aws", "--name", "demo", "--vpc", world["vpc"],
                                   "--target-eni", world["target_eni"], *(["--yes"] if how != "prompt" else [])]
    assert lines[lines.index("To undo, remove everything this deployment created:") + 1] == \
        "  appliance deprovision aws --name demo --region us-east-1"


def test_json_output_is_one_document_on_stdout(world):
    code, out, err = run_cli_process(provision_argv(world, "--dry-run", "--output", "json"), world["env"])
    assert code == exitcodes.OK, err
    doc = json.loads(out)
    assert (doc["cloud"], doc["command"], doc["dry_run"], doc["applied"]) == ("aws", "provision", True, False)
    assert doc["summary"] == {"create": 9, "update": 0, "delete": 0, "keep": 0, "skip": 1}
    assert [i["operation"] for i in doc["items"] if i["action"] == "create"][:2] == [
        "CreateTrafficMirrorTarget", "CreateTrafficMirrorFilter"]
    assert doc["any_address"] == [
        f"filter rule {d} #200 accepts 0.0.0.0/0 -> 0.0.0.0/0 (peer 0.0.0.0/0: any address)" for d in ("ingress", "egress")]
