"""`appliance boot` against a local metadata server (AWS IMDSv2 and GCP)."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from deploy_helpers import (ROOT, RUNTIME_PREFIXES, MetadataServer, appliance_cmd, clean_env,
                            closed_port_url, parse_print_env)

from appliance import cli

# what infra/cdktf writes: KEY='value' lines (systemd EnvironmentFile syntax)
INFRA_STYLE = (b"# mirror-appliance environment\n"
               b"APPLIANCE_MODE='aws'\n"
               b"AKTO_KAFKA_BROKER_MAL='b-1.msk.internal:9092,b-2.msk.internal:9092'\n"
               b"APPLIANCE_KAFKA_TOPIC='akto.api.logs'\n"
               b"AKTO_TRAFFIC_BATCH_SIZE='100'\n"
               b"AKTO_TRAFFIC_BATCH_TIME_SECS='10'\n"
               b"AKTO_MODULE_DISCOVERY_CONFIG='[{\"key\":{\"eq\":\"host\",\"ifAbsent\":\"reject\"},"
               b"\"value\":{\"regex\":\"^api\\\\..*$\"}}]'\n")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in list(os.environ):
        if name.startswith(RUNTIME_PREFIXES):
            monkeypatch.delenv(name)


@pytest.fixture
def aws():
    with MetadataServer("aws") as server:
        yield server


@pytest.fixture
def gcp():
    with MetadataServer("gcp") as server:
        yield server


def boot(capsys, *args):
    """Run `appliance boot ... --print-env` in-process: (exit code, values, sources, out, err)."""
    code = cli.main(["boot", *args])
    captured = capsys.readouterr()
    values, sources = parse_print_env(captured.out)
    return code, values, sources, captured.out, captured.err


# ----------------------------------------------------------------------------- AWS


def test_aws_imdsv2_user_data_and_tags(aws, capsys):
    aws.user_data = INFRA_STYLE
    aws.tags = {"Name": "appliance-1", "appliance-akto-log-level": "info",
                "appliance-TRAFFIC_INACTIVITY_THRESHOLD": "30", "team": "net"}
    code, env, src, out, err = boot(capsys, "--cloud", "aws", "--aws-endpoint", aws.url, "--print-env")
    assert code == 0, err
    assert env["AKTO_KAFKA_BROKER_MAL"] == "b-1.msk.internal:9092,b-2.msk.internal:9092"
    assert env["AKTO_MODULE_DISCOVERY_CONFIG"] == '[{"key":{"eq":"host","ifAbsent":"reject"},' \
                                                  '"value":{"regex":"^api\\\\..*$"}}]'
    assert env["APPLIANCE_MODE"] == "aws" and src["APPLIANCE_MODE"] == "aws user data"
    assert env["AKTO_LOG_LEVEL"] == "info" and src["AKTO_LOG_LEVEL"] == "aws tag appliance-akto-log-level"
    assert env["TRAFFIC_INACTIVITY_THRESHOLD"] == "30"
    assert "Name" not in env and "team" not in env
    # IMDSv2: a token first, with a TTL; every GET carries it; only our tags are fetched
    method, path, headers = aws.requests[0]
    assert (method, path) == ("PUT", "/latest/api/token")
    assert 1 <= int(headers["X-aws-ec2-metadata-token-ttl-seconds"]) <= 21600
    gets = [(p, h) for m, p, h in aws.requests if m == "GET"]
    assert all(h["X-aws-ec2-metadata-token"] in aws.tokens for _, h in gets)
    paths = [p for p, _ in gets]
    assert paths[:2] == ["/latest/user-data", "/latest/meta-data/tags/instance/"]
    assert sorted(paths[2:]) == ["/latest/meta-data/tags/instance/appliance-TRAFFIC_INACTIVITY_THRESHOLD",
                                 "/latest/meta-data/tags/instance/appliance-akto-log-level"]
    assert out.startswith("# appliance boot: aws metadata at " + aws.url)


def test_precedence_environment_over_tags_over_user_data_over_mode_default(aws, capsys, monkeypatch):
    aws.user_data = (b"AKTO_TRAFFIC_BATCH_SIZE=10\nAKTO_LOG_LEVEL=ERROR\nTRAFFIC_MAX_ACTIVE_CONN=7\n"
                     b"AKTO_KAFKA_BROKER_MAL=k:9092\n")
    aws.tags = {"appliance-akto-traffic-batch-size": "20", "appliance-akto-log-level": "INFO"}
    monkeypatch.setenv("AKTO_TRAFFIC_BATCH_SIZE", "30")
    monkeypatch.setenv("PATH_UNRELATED", "x")
    code, env, src, _, err = boot(capsys, "--cloud", "aws", "--aws-endpoint", aws.url, "--print-env")
    assert code == 0, err
    assert (env["AKTO_TRAFFIC_BATCH_SIZE"], src["AKTO_TRAFFIC_BATCH_SIZE"]) == ("30", "environment")
    assert (env["AKTO_LOG_LEVEL"], src["AKTO_LOG_LEVEL"]) == ("INFO", "aws tag appliance-akto-log-level")
    assert (env["TRAFFIC_MAX_ACTIVE_CONN"], src["TRAFFIC_MAX_ACTIVE_CONN"]) == ("7", "aws user data")
    assert (env["APPLIANCE_MODE"], src["APPLIANCE_MODE"]) == ("aws", "boot default for aws")
    assert "PATH_UNRELATED" not in env


def test_a_higher_layer_wins_whatever_spelling_of_the_setting_it_uses(aws, capsys, monkeypatch):
    """AKTO_KAFKA_BROKER_URL is the fallback spelling of AKTO_KAFKA_BROKER_MAL: the environment's
    URL must beat the user data's MAL, although the runtime prefers MAL when both are set."""
    aws.user_data = b"AKTO_KAFKA_BROKER_MAL=from-user-data:9092\n"
    monkeypatch.setenv("AKTO_KAFKA_BROKER_URL", "from-env:9092")
    code, env, _, _, err = boot(capsys, "--cloud", "aws", "--aws-endpoint", aws.url, "--print-env")
    assert code == 0, err
    assert env == {"APPLIANCE_MODE": "aws", "AKTO_KAFKA_BROKER_URL": "from-env:9092"}


@pytest.mark.parametrize("user_data", [
    json.dumps({"AKTO_KAFKA_BROKER_MAL": "k:9092", "AKTO_TRAFFIC_BATCH_SIZE": 50,
                "CAPTURE_ALL": True, "AKTO_MODULE_DISCOVERY_CONFIG":
                [{"key": {"eq": "host", "ifAbsent": "accept"}, "value": {"regex": "x"}}]}).encode(),
    gzip.compress(b"export AKTO_KAFKA_BROKER_MAL=k:9092\nAKTO_TRAFFIC_BATCH_SIZE=\"50\"\n"
                  b"CAPTURE_ALL = true\nAKTO_MODULE_DISCOVERY_CONFIG="
                  b"'[{\"key\":{\"eq\":\"host\",\"ifAbsent\":\"accept\"},\"value\":{\"regex\":\"x\"}}]'\n"),
    b"Content-Type: multipart/mixed; boundary=XX\nMIME-Version: 1.0\n\n--XX\n"
    b"Content-Type: text/cloud-config\n\n#cloud-config\nruncmd: [[echo, hi]]\n--XX\n"
    b"Content-Type: text/x-appliance-env\n\nAKTO_KAFKA_BROKER_MAL=k:9092\nAKTO_TRAFFIC_BATCH_SIZE=50\n"
    b"CAPTURE_ALL=true\nAKTO_MODULE_DISCOVERY_CONFIG="
    b"[{\"key\":{\"eq\":\"host\",\"ifAbsent\":\"accept\"},\"value\":{\"regex\":\"x\"}}]\n--XX--\n",
], ids=["json", "gzip-env-file", "mime-multipart"])
def test_user_data_formats(aws, capsys, user_data):
    aws.user_data = user_data
    code, env, _, _, err = boot(capsys, "--cloud", "aws", "--aws-endpoint", aws.url, "--print-env")
    assert code == 0, err
    assert env["AKTO_KAFKA_BROKER_MAL"] == "k:9092"
    assert env["AKTO_TRAFFIC_BATCH_SIZE"] == "50"
    assert env["CAPTURE_ALL"] == "true"
    assert json.loads(env["AKTO_MODULE_DISCOVERY_CONFIG"])[0]["key"]["ifAbsent"] == "accept"


@pytest.mark.parametrize("user_data", [b"#!/bin/bash\necho AKTO_LOG_LEVEL=DEBUG\n",
                                       b"#cloud-config\nwrite_files: []\n"])
def test_cloud_init_user_data_is_left_to_cloud_init(aws, capsys, user_data):
    aws.user_data = user_data
    aws.tags = {"appliance-akto-kafka-broker-mal": "k:9092"}
    code, env, _, out, err = boot(capsys, "--cloud", "aws", "--aws-endpoint", aws.url, "--print-env")
    assert code == 0, err
    assert env == {"APPLIANCE_MODE": "aws", "AKTO_KAFKA_BROKER_MAL": "k:9092"}
    assert "left to cloud-init" in out


def test_no_user_data_and_tags_not_in_metadata(aws, capsys, monkeypatch):
    aws.user_data, aws.tags = None, None
    monkeypatch.setenv("AKTO_KAFKA_BROKER_MAL", "k:9092")
    code, env, _, out, err = boot(capsys, "--cloud", "aws", "--aws-endpoint", aws.url, "--print-env")
    assert code == 0, err
    assert env == {"APPLIANCE_MODE": "aws", "AKTO_KAFKA_BROKER_MAL": "k:9092"}
    assert "no user data" in out and "instance_metadata_tags" in out


def test_secrets_are_masked(aws, capsys):
    aws.user_data = (b"AKTO_KAFKA_BROKER_MAL=k:9093\nAPPLIANCE_KAFKA_SECURITY_PROTOCOL=SASL_SSL\n"
                     b"APPLIANCE_KAFKA_SASL_MECHANISM=SCRAM-SHA-512\nAPPLIANCE_KAFKA_SASL_USERNAME=svc\n"
                     b"APPLIANCE_KAFKA_SASL_PASSWORD=hunter2-very-secret\n")
    code, env, _, out, err = boot(capsys, "--cloud", "aws", "--aws-endpoint", aws.url, "--print-env")
    assert code == 0, err
    assert env["APPLIANCE_KAFKA_SASL_PASSWORD"] == "****"
    assert env["APPLIANCE_KAFKA_SASL_USERNAME"] == "svc"
    assert "hunter2" not in out + err


# ----------------------------------------------------------------------------- GCP


def test_gcp_attributes_with_metadata_flavor(gcp, capsys):
    gcp.attributes = {
        "startup-script": "#!/bin/bash\ntrue\n",
        "enable-oslogin": "true",
        "appliance-config": "AKTO_KAFKA_BROKER_MAL='10.0.0.5:9092'\nAKTO_LOG_LEVEL=ERROR\n",
        "appliance-akto-log-level": "DEBUG",
        "appliance-APPLIANCE_INTERFACE": "ens4",
    }
    code, env, src, _, err = boot(capsys, "--cloud", "gcp", "--gcp-endpoint", gcp.url, "--print-env")
    assert code == 0, err
    assert env == {"APPLIANCE_MODE": "gcp", "AKTO_KAFKA_BROKER_MAL": "10.0.0.5:9092",
                   "AKTO_LOG_LEVEL": "DEBUG", "APPLIANCE_INTERFACE": "ens4"}
    assert src["APPLIANCE_MODE"] == "boot default for gcp"
    assert src["AKTO_KAFKA_BROKER_MAL"] == "gcp attribute appliance-config"
    assert src["AKTO_LOG_LEVEL"] == "gcp attribute appliance-akto-log-level"
    [(method, path, headers)] = gcp.requests
    assert (method, path) == ("GET", "/computeMetadata/v1/instance/attributes/?recursive=true")
    assert headers["Metadata-Flavor"] == "Google"


def test_gcp_endpoint_from_gce_metadata_host(gcp, capsys, monkeypatch):
    gcp.attributes = {"appliance-config": json.dumps({"AKTO_KAFKA_BROKER_MAL": "k:9092"})}
    monkeypatch.setenv("GCE_METADATA_HOST", gcp.url.removeprefix("http://"))
    code, env, _, _, err = boot(capsys, "--cloud", "gcp", "--print-env")
    assert code == 0, err
    assert env["AKTO_KAFKA_BROKER_MAL"] == "k:9092"


def test_a_server_without_the_flavor_header_is_not_a_gcp_metadata_server(aws, capsys):
    code, _, _, _, err = boot(capsys, "--cloud", "gcp", "--gcp-endpoint", aws.url, "--attempts", "1",
                              "--print-env")
    assert code == 1
    assert "not a GCP metadata server" in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- auto


def test_auto_finds_gcp_when_no_aws_imds_answers(gcp, capsys, monkeypatch):
    gcp.attributes = {"appliance-akto-kafka-broker-mal": "k:9092"}
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", closed_port_url())
    code, env, _, _, err = boot(capsys, "--gcp-endpoint", gcp.url, "--print-env")
    assert code == 0, err
    assert env["APPLIANCE_MODE"] == "gcp"


def test_auto_on_gcp_where_169_254_169_254_is_the_google_server(gcp, capsys):
    """On GCE the AWS address answers too, as Google's server: auto must not take it for AWS."""
    gcp.attributes = {"appliance-akto-kafka-broker-mal": "k:9092"}
    code, env, _, _, err = boot(capsys, "--cloud", "auto", "--aws-endpoint", gcp.url,
                                "--gcp-endpoint", gcp.url, "--print-env")
    assert code == 0, err
    assert env["APPLIANCE_MODE"] == "gcp"
    assert gcp.requests[0][:2] == ("PUT", "/latest/api/token")


def test_auto_prefers_aws(aws, gcp, capsys, monkeypatch):
    monkeypatch.setenv("APPLIANCE_BOOT_CLOUD", "auto")
    aws.user_data = b"AKTO_KAFKA_BROKER_MAL=k:9092\n"
    code, env, _, _, err = boot(capsys, "--aws-endpoint", aws.url, "--gcp-endpoint", gcp.url,
                                "--print-env")
    assert code == 0, err
    assert env["APPLIANCE_MODE"] == "aws" and gcp.requests == []


# ----------------------------------------------------------------------------- failures


def test_unreachable_metadata_is_one_line_and_exit_1(capsys):
    start = time.monotonic()
    code, _, _, out, err = boot(capsys, "--cloud", "aws", "--aws-endpoint", closed_port_url(),
                                "--attempts", "2", "--print-env")
    assert code == 1 and out == ""
    assert err.startswith("appliance: error: cannot read instance metadata after 2 attempts: AWS IMDS at")
    assert len(err.strip().splitlines()) == 1
    assert time.monotonic() - start < 5


def test_auto_with_nothing_answering_names_both_services(capsys):
    code, _, _, _, err = boot(capsys, "--aws-endpoint", closed_port_url(), "--gcp-endpoint",
                              closed_port_url(), "--attempts", "1", "--print-env")
    assert code == 1
    assert "no instance metadata service answered" in err
    assert "AWS IMDS at" in err and "GCP metadata server at" in err
    assert len(err.strip().splitlines()) == 1


def test_a_hanging_metadata_service_times_out_quickly(aws, capsys):
    aws.hang = True
    start = time.monotonic()
    code, _, _, _, err = boot(capsys, "--cloud", "aws", "--aws-endpoint", aws.url, "--timeout", "0.3",
                              "--attempts", "2", "--print-env")
    assert code == 1 and "timed out after 0.3s" in err
    assert time.monotonic() - start < 5


def test_transient_errors_are_retried(aws, capsys):
    aws.user_data = b"AKTO_KAFKA_BROKER_MAL=k:9092\n"
    aws.fail_first = 2
    code, env, _, _, err = boot(capsys, "--cloud", "aws", "--aws-endpoint", aws.url, "--print-env")
    assert code == 0, err
    assert env["AKTO_KAFKA_BROKER_MAL"] == "k:9092"


def test_imds_refusing_the_token_is_not_retried(aws, capsys, monkeypatch):
    from appliance.cloudmeta import aws as aws_metadata

    monkeypatch.setattr(aws_metadata, "AWS_TOKEN_TTL", "0")  # the server answers 400
    code, _, _, _, err = boot(capsys, "--cloud", "aws", "--aws-endpoint", aws.url, "--print-env")
    assert code == 1 and "HTTP 400" in err
    assert len(aws.requests) == 1


@pytest.mark.parametrize("user_data, tags, message", [
    (b"AKTO_KAFKA_BROKER_MAL=k:9092\n", {"appliance-akto-traffic-batch-size": "ten"},
     "invalid AKTO_TRAFFIC_BATCH_SIZE = 'ten': Input should be a valid integer, unable to parse "
     "string as an integer (from aws tag appliance-akto-traffic-batch-size)"),
    (b"AKTO_KAFKA_BROKER_MAL=k:9092\nAKTO_LOG_LEVEL=CHATTY\n", {},
     "(from aws user data)"),
    (b"AKTO_KAFKA_BROKER_MAL=k:9092\nAKTO_LOG_LEVL=INFO\n", {},
     "aws user data line 2: AKTO_LOG_LEVL is not a setting of the appliance (did you mean AKTO_LOG_LEVEL?)"),
    (b"PYTHONPATH=/tmp\n", {}, "aws user data line 1: PYTHONPATH is not a setting"),
    (b"AKTO_KAFKA_BROKER_MAL k:9092\n", {}, "aws user data line 1: expected NAME=VALUE"),
    (b"AKTO_KAFKA_BROKER_MAL='k:9092\n", {}, "aws user data line 1: unbalanced single quote"),
    (b'{"AKTO_KAFKA_BROKER_MAL": ', {}, "aws user data: not valid JSON"),
    (b'["AKTO_KAFKA_BROKER_MAL"]', {}, "aws user data line 1: expected NAME=VALUE"),
    (b"\xff\xfe\x00", {}, "aws user data: not UTF-8 text"),
    (b"AKTO_LOG_LEVEL=INFO\n", {}, "no Kafka brokers: set AKTO_KAFKA_BROKER_MAL in the user data, as "
                                   "the instance tag appliance-akto-kafka-broker-mal, or in the environment"),
    (b"", {"appliance-akto-kafka-broker-mal": "k:9092", "appliance-AKTO_KAFKA_BROKER_MAL": "j:9092"},
     "both set AKTO_KAFKA_BROKER_MAL"),
], ids=["bad-value-from-tag", "bad-value-from-user-data", "misspelt",
        "pythonpath", "no-equals", "unbalanced-quote", "bad-json", "json-not-object", "not-utf8",
        "no-brokers", "duplicate-tags"])
def test_invalid_metadata_is_one_line_and_exit_2(aws, capsys, user_data, tags, message):
    aws.user_data, aws.tags = user_data, tags
    code, _, _, _, err = boot(capsys, "--cloud", "aws", "--aws-endpoint", aws.url)
    assert code == 2
    assert message in err
    assert err.startswith("appliance: error: ") and len(err.strip().splitlines()) == 1


def test_tags_that_name_no_setting_are_ignored_never_applied(aws, capsys):
    """Organisations tag instances freely (appliance-owner...): such a tag must not stop the
    appliance, and nothing outside the runtime's variables (LD_PRELOAD!) is ever set."""
    aws.user_data = b"AKTO_KAFKA_BROKER_MAL=k:9092\n"
    aws.tags = {"appliance-ld-preload": "/tmp/evil.so", "appliance-owner": "netops",
                "appliance-akto-log-levl": "DEBUG", "appliance-mode": "aws"}
    code, env, src, out, err = boot(capsys, "--cloud", "aws", "--aws-endpoint", aws.url, "--print-env")
    assert code == 0, err
    assert env == {"AKTO_KAFKA_BROKER_MAL": "k:9092", "APPLIANCE_MODE": "aws"}
    assert src["APPLIANCE_MODE"] == "aws tag appliance-mode"  # appliance-<x> -> APPLIANCE_<X>
    assert "# note: ignored aws tag appliance-ld-preload: LD_PRELOAD is not a setting" in out
    assert "# note: ignored aws tag appliance-owner: OWNER is not a setting" in out
    assert "AKTO_LOG_LEVL is not a setting of the appliance (did you mean AKTO_LOG_LEVEL?)" in out


def test_what_appliance_provision_gcp_writes_boots(gcp, capsys):
    """The collector metadata of provision/gcp/plan.py: appliance-mode, appliance-deployment,
    appliance-health-port and a JSON appliance-config."""
    gcp.attributes = {
        "appliance-mode": "gcp", "appliance-deployment": "prod", "appliance-health-port": "8080",
        "appliance-config": json.dumps({"AKTO_KAFKA_BROKER_MAL": "10.1.0.5:9092", "APPLIANCE_HTTP": "0.0.0.0:8080",
                                        "APPLIANCE_MODE": "gcp", "CAPTURE_ALL": "true",
                                        "AKTO_TRAFFIC_BATCH_SIZE": "500"}, separators=(",", ":")),
        "enable-oslogin": "TRUE", "startup-script": "#!/bin/bash\nexec appliance boot\n",
    }
    code, env, _, out, err = boot(capsys, "--cloud", "gcp", "--gcp-endpoint", gcp.url, "--print-env")
    assert code == 0, err
    assert env == {"AKTO_KAFKA_BROKER_MAL": "10.1.0.5:9092", "APPLIANCE_HTTP": "0.0.0.0:8080",
                   "APPLIANCE_MODE": "gcp", "CAPTURE_ALL": "true", "AKTO_TRAFFIC_BATCH_SIZE": "500"}
    assert "# note:" not in out  # the informational keys are known


def test_print_env_still_shows_what_it_resolved_when_invalid(aws, capsys):
    aws.user_data = b"AKTO_KAFKA_BROKER_MAL=k:9092\nAKTO_TRAFFIC_BATCH_SIZE=0\n"
    code, env, _, _, err = boot(capsys, "--cloud", "aws", "--aws-endpoint", aws.url, "--print-env")
    assert code == 2 and env["AKTO_TRAFFIC_BATCH_SIZE"] == "0"
    assert "invalid AKTO_TRAFFIC_BATCH_SIZE = '0'" in err and "(from aws user data)" in err


def test_bad_boot_cloud_variable(capsys, monkeypatch):
    monkeypatch.setenv("APPLIANCE_BOOT_CLOUD", "azure")
    code, _, _, _, err = boot(capsys, "--print-env")
    assert code == 2 and "invalid APPLIANCE_BOOT_CLOUD = 'azure'" in err


# ----------------------------------------------------------------------------- hand-over


def test_hands_over_to_run_with_the_environment_and_the_flags_after_dashdash(aws, capsys, monkeypatch):
    aws.user_data = b"AKTO_KAFKA_BROKER_MAL=k:9092\n"
    aws.tags = {"appliance-akto-log-level": "INFO"}
    calls = []

    def fake_run(args):
        calls.append((args.workers, args.jsonl, {k: os.environ.get(k) for k in
                                                 ("AKTO_KAFKA_BROKER_MAL", "AKTO_LOG_LEVEL", "APPLIANCE_MODE")}))
        return 0

    from appliance.cli import run

    monkeypatch.setattr(run, "cmd_run", fake_run)
    assert cli.main(["boot", "--cloud", "aws", "--aws-endpoint", aws.url, "--", "--workers", "1"]) == 0
    assert calls == [("1", None, {"AKTO_KAFKA_BROKER_MAL": "k:9092",
                                  "AKTO_LOG_LEVEL": "INFO", "APPLIANCE_MODE": "aws"})]
    err = capsys.readouterr().err
    assert err.startswith(f"appliance boot: aws metadata at {aws.url}: ")
    assert "1 from aws user data" in err and "1 from aws tags" in err


def test_module_import_is_light():
    """The whole CLI (every command's parser, boot's included) loads nothing heavy: the
    metadata clients, pydantic and Kafka load when a command runs."""
    code = ("import sys, appliance.cli; appliance.cli.build_parser(); "
            "heavy = [m for m in ('pydantic', 'urllib.request', 'appliance.config', "
            "'appliance.cloudmeta.resolve', 'confluent_kafka', 'email', 'rich', 'pcapy') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         check=True).stdout
    assert out.strip() == "[]"


def test_boot_runs_the_runtime_end_to_end(aws, tmp_path):
    """A real process: metadata -> boot -> run (aws mode) -> healthy -> VXLAN pairs -> SIGTERM."""
    from appliance import synth
    from appliance.broker import free_port
    from appliance.demo import send_vxlan

    udp, http = free_port(socket.SOCK_DGRAM), free_port()
    out = tmp_path / "pairs.jsonl"
    aws.user_data = (f"APPLIANCE_LISTEN='127.0.0.1:{udp}'\nAPPLIANCE_HTTP='127.0.0.1:{http}'\n"
                     f"APPLIANCE_WORKERS=1\nAPPLIANCE_SPOOL_DIR='{tmp_path / 'spool'}'\n"
                     f"APPLIANCE_SESSION_MAP='{tmp_path / 'sessions.json'}'\n").encode()
    aws.tags = {"appliance-akto-log-level": "INFO"}
    log = tmp_path / "boot.log"
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "boot", "--cloud", "aws",
                             "--aws-endpoint", aws.url, "--", "--jsonl", str(out)],
                            stdout=subprocess.DEVNULL, stderr=open(log, "wb"), cwd=ROOT,
                            env=clean_env())
    try:
        deadline = time.time() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline, log.read_text()
            time.sleep(0.2)
        frames = synth.sample_frames()
        send_vxlan(frames, udp, vni=4242)
        deadline = time.time() + 20
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/status", timeout=2) as r:
                status = json.loads(r.read())
            if status["totals"]["packets"] >= len(frames):
                break
            assert time.time() < deadline, json.dumps(status)[:1000]
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    pairs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(pairs) >= 8
    assert {p["akto_vxlan_id"] for p in pairs} == {"4242"}
    assert "appliance boot: aws metadata at" in log.read_text()


def test_boot_is_in_the_cli():
    proc = appliance_cmd("--help")
    assert proc.returncode == 0 and "boot" in proc.stdout


@pytest.mark.parametrize("mode", ["aws", "gcp"])
def test_what_infra_cdktf_deploys_boots(capsys, mode):
    """The user data (AWS) / appliance-config attribute (GCP) that infra/cdktf renders, served by
    the metadata server and read by `appliance boot`, gives exactly the variables it meant."""
    infra = ROOT / "infra" / "cdktf"
    if str(infra) not in sys.path:
        sys.path.insert(0, str(infra))
    from appliance_infra.config import parse_config
    from appliance_infra.user_data import BOOT_ATTRIBUTE, appliance_environment, render_boot_environment

    raw = json.loads((infra / "examples" / f"{mode}.json").read_text())
    raw["appliance"]["extra_environment"] = {
        "AKTO_MODULE_DISCOVERY_CONFIG": '[{"key":{"eq":"host","ifAbsent":"reject"},"value":{"regex":"^api\\\\..*$"}}]'}
    settings = parse_config(raw).appliance
    rendered = render_boot_environment(settings, mode)
    with MetadataServer(mode) as server:
        if mode == "aws":
            server.user_data = rendered.encode()
        else:
            server.attributes = {BOOT_ATTRIBUTE: rendered, "enable-oslogin": "true"}
        code, env, _, _, err = boot(capsys, "--cloud", mode, f"--{mode}-endpoint", server.url, "--print-env")
    assert code == 0, err
    assert env == appliance_environment(settings, mode)


def test_akto_s_own_environment_block_boots(aws, capsys):
    """An environment copied from Akto's deployment docs: AKTO_INFRA_MIRRORING_MODE selects the
    mode over the cloud's default, AKTO_MONGO_CONN is accepted, not applied, and noted."""
    aws.user_data = (b"AKTO_TRAFFIC_BATCH_TIME_SECS=10\nAKTO_TRAFFIC_BATCH_SIZE=100\n"
                     b"AKTO_INFRA_MIRRORING_MODE=gcp\nAKTO_KAFKA_BROKER_MAL=10.0.0.9:9092\n"
                     b"AKTO_MONGO_CONN=mongodb://0.0.0.0:27017\n")
    code, env, src, out, err = boot(capsys, "--cloud", "aws", "--aws-endpoint", aws.url, "--print-env")
    assert code == 0, err
    assert env["AKTO_INFRA_MIRRORING_MODE"] == "gcp" and "APPLIANCE_MODE" not in env
    assert "AKTO_MONGO_CONN" not in env
    assert "# note: AKTO_MONGO_CONN (from aws user data) is accepted and not used" in out
    from appliance.config import load_settings

    assert load_settings(env=env).mode == "gcp"
