"""Bad input: one line on stderr, documented exit code, no traceback, no API call."""

from __future__ import annotations

import pytest
from gcp_helpers import PROJECT, REGION, fake, offline, provision_args, run  # noqa: F401 (fixtures)


def one_line_error(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line]
    assert len(lines) == 1, err
    assert lines[0].startswith("appliance: error: ")
    return lines[0]


def many(flag, fmt, n):
    out = []
    for i in range(n):
        out += [flag, fmt.format(i)]
    return out


CASES = [
    # (extra args, collector, needle)
    (many("--subnet", "s{}", 6), True, "too many mirrored subnets: 6 given, the Packet Mirroring API allows at most 5 --subnet per policy"),
    (many("--instance", "us-central1-a/vm-{}", 51), False, "too many mirrored instances: 51 given, the Packet Mirroring API allows at most 50 --instance per policy"),
    ([], False, "nothing to mirror: give at least one --subnet, --tag or --instance"),
    (["--tag", "web", "--cidr", "10.0.0.1/8"], False, "invalid --cidr '10.0.0.1/8': 10.0.0.1/8 has host bits set"),
    (["--tag", "web", "--cidr", "nope"], False, "(expected a network such as 10.8.0.0/16)"),
    (["--tag", "web", "--protocol", "http"], False, "invalid --protocol 'http': use one of tcp, udp, icmp, esp, ah, ipip, sctp or an IP protocol number 0-255"),
    (["--tag", "web", "--protocol", "300"], False, "invalid --protocol '300'"),
    (["--tag", "web", "--direction", "sideways"], False, "invalid --direction 'sideways': use ingress, egress or both"),
    (["--tag", "web", "--priority", "70000"], False, "invalid --priority 70000: must be 0-65535"),
    (["--tag", "web", "--priority", "high"], False, "invalid --priority 'high': expected an integer"),
    (["--tag", "Web_Servers"], False, "invalid --tag 'Web_Servers'"),
    (["--instance", "web-1"], False, "invalid --instance 'web-1': expected ZONE/NAME (e.g. us-central1-a/web-1) or a URL projects/PROJECT/zones/ZONE/instances/NAME"),
    (["--instance", "europe-west1-b/web-1"], False, "--instance 'europe-west1-b/web-1' is in zone europe-west1-b, outside region us-central1"),
    (["--instance", "uscentral1/web-1"], False, "invalid --instance 'uscentral1/web-1': 'uscentral1' is not a zone name (e.g. us-central1-a)"),
    (["--tag", "web", "--network", "Prod_VPC"], False, "invalid --network 'Prod_VPC': expected a name (lowercase letters, digits and '-', starting with a letter, at most 63 characters) or a URL projects/PROJECT/global/networks/NAME"),
    (["--tag", "web", "--network", "projects/x/networks/y"], False, "invalid --network 'projects/x/networks/y': expected a name or a URL projects/PROJECT/global/networks/NAME"),
    (["--subnet", "App_A"], False, "invalid --subnet 'App_A': expected a name (lowercase letters, digits and '-', starting with a letter, at most 63 characters) or a URL projects/PROJECT/regions/REGION/subnetworks/NAME"),
    (["--tag", "web", "--collector-ilb", "Bad_Rule"], False, "invalid --collector-ilb 'Bad_Rule': expected a name"),
    (["--tag", "web", "--image", "Bad_Image"], True, "invalid --image 'Bad_Image': expected a name"),
    (["--tag", "web", "--collector-subnet", "Bad_Sub"], True, "invalid --collector-subnet 'Bad_Sub': expected a name"),
    (["--tag", "web", "--machine-type", "E2"], True, "invalid --machine-type 'E2': expected a machine type name such as e2-standard-2"),
    (["--subnet", f"projects/{PROJECT}/regions/europe-west1/subnetworks/x"], False, "is not in region us-central1: mirrored subnets must be in the policy's region"),
    (["--tag", "web"], False, "choose exactly one collector: --collector-ilb FORWARDING_RULE_URL or --create-collector"),
    (["--tag", "web", "--collector-ilb", "ext-collector", "--create-collector"], False, "choose exactly one collector"),
    (["--tag", "web", "--min", "0"], True, "invalid --min 0: at least 1 collector instance is needed"),
    (["--tag", "web", "--max", "1"], True, "invalid --max 1: must be >= --min (2)"),
    (["--tag", "web", "--health-port", "70000"], True, "invalid --health-port 70000"),
    (["--tag", "web", "--target-cpu", "1.5"], True, "invalid --target-cpu 1.5"),
    (["--tag", "web", "--appliance-env", "lower=1"], True, "invalid --appliance-env 'lower=1'"),
    (["--tag", "web", "--appliance-env", "AKTO_KAFKA_BROKER_MAL=x:1"], True, "--appliance-env AKTO_KAFKA_BROKER_MAL is managed by the provisioner: set it with --kafka-bootstrap"),
    (["--tag", "web", "--appliance-env", "APPLIANCE_HTTP=0.0.0.0:1"], True, "--appliance-env APPLIANCE_HTTP is managed by the provisioner: set it with --health-port"),
    (["--tag", "web", "--appliance-env", "APPLIANCE_MODE=aws"], True, "--appliance-env APPLIANCE_MODE is managed by the provisioner: collectors always run in gcp mode"),
    (["--tag", "web", "--cidr", "2001:db8::/32"], True, "--create-collector does not support IPv6 --cidr filters yet"),
    (["--tag", "web", "--kafka-bootstrap", "kafka"], True, "invalid --kafka-bootstrap 'kafka': expected HOST:PORT"),
]


@pytest.mark.parametrize("extra, collector, needle", CASES, ids=[c[2][:40] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_no_api_call(run, fake, extra, collector, needle):
    if not collector and not any(a in ("--collector-ilb",) for a in extra) and "choose exactly one" not in needle:
        extra = extra + ["--collector-ilb", "ext-collector"]
    code, out, err = run(*provision_args(*extra, collector=collector))
    assert code == 2
    assert needle in one_line_error(err)
    assert fake.calls == []


def test_create_collector_requirements(run, fake):
    base = ["provision", "gcp", "--project", PROJECT, "--region", REGION, "--network", "prod-vpc", "--tag", "web", "--create-collector"]
    code, _, err = run(*base)
    assert code == 2 and "--create-collector needs --image" in one_line_error(err)
    code, _, err = run(*base, "--image", "img")
    assert code == 2 and "--create-collector needs --kafka-bootstrap" in one_line_error(err)
    code, _, err = run(*base, "--image", "img", "--kafka-bootstrap", "k:9092")
    assert code == 2 and "--create-collector needs --collector-subnet" in one_line_error(err)
    assert fake.calls == []


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--region", REGION, "--network", "n", "--tag", "t", "--collector-ilb", "c"], "--project is required"),
        (["--project", PROJECT, "--network", "n", "--tag", "t", "--collector-ilb", "c"], "--region is required"),
        (["--project", PROJECT, "--region", REGION, "--tag", "t", "--collector-ilb", "c"], "--network is required"),
        (["--project", "Bad Project", "--region", REGION, "--network", "n", "--tag", "t", "--collector-ilb", "c"], "invalid --project 'Bad Project': expected a project ID: 6-30 lowercase letters, digits or '-', starting with a letter (e.g. my-project-123)"),
        (["--project", PROJECT, "--region", "mars", "--network", "n", "--tag", "t", "--collector-ilb", "c"], "invalid --region 'mars': expected a region name such as us-central1"),
        (["--project", PROJECT, "--region", REGION, "--network", "n", "--name", "Demo", "--tag", "t", "--collector-ilb", "c"], "invalid --name 'Demo': a deployment name is lowercase letters"),
        (["--project", PROJECT, "--region", REGION, "--network", "n", "--name", "a" * 49, "--tag", "t", "--collector-ilb", "c"], "it is 49 characters; the maximum is 48"),
        (["--project", PROJECT, "--region", REGION, "--tag", "t", "--collector-ilb", "c"], "--network is required: the VPC network whose traffic is mirrored (a name such as prod-vpc, or projects/PROJECT/global/networks/NAME)"),
        (["--project", PROJECT, "--region", REGION, "--network", "n", "--tag", "t", "--collector-ilb", "c", "--timeout", "-1"], "invalid --timeout -1.0: must be positive"),
    ],
)
def test_missing_or_bad_location(run, fake, args, needle):
    code, _, err = run("provision", "gcp", *args)
    assert code == 2
    assert needle in one_line_error(err)
    assert fake.calls == []


def test_status_and_deprovision_validate_too(run, fake):
    code, _, err = run("provision", "gcp", "status", "--project", PROJECT, "--region", REGION, "--name", "Bad")
    assert code == 2 and "invalid --name 'Bad'" in one_line_error(err)
    code, _, err = run("deprovision", "gcp", "--project", PROJECT, "--name", "demo")
    assert code == 2 and "--region is required" in one_line_error(err)
    assert fake.calls == []


def test_deprovision_requires_a_name(run, fake, capsys):
    from appliance.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["deprovision", "gcp", "--project", PROJECT, "--region", REGION])
    assert exc.value.code == 2
    assert "the following arguments are required: --name" in capsys.readouterr().err
    assert fake.calls == []
