"""Pure parts: option parsing, filter rules, VNI derivation, instance types, session map, CLI wiring."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from provision import exitcodes
from provision.aws import constants as C
from provision.aws import sessionmap
from provision.aws.discovery import instance_type_problem
from provision.aws.planner import free_session_number, packet_length_matches
from provision.aws.spec import (
    FilterSpec,
    Rule,
    UsageError,
    default_vni,
    desired_rules,
    parse_cidrs,
    parse_ports,
    parse_protocols,
    parse_tags,
    per_session_vni,
    tags_match,
)


def test_default_vni_is_stable_in_range_and_name_dependent():
    assert default_vni("prod") == default_vni("prod")
    assert default_vni("prod") != default_vni("staging")
    values = {default_vni(f"d{i}") for i in range(2000)}
    assert all(C.VNI_MIN <= v <= C.VNI_MAX for v in values)
    assert len(values) > 1990  # effectively collision-free for distinct names
    # documented derivation: sha256(name)[:4] big-endian mod 16777215, plus 1
    import hashlib

    assert default_vni("prod") == int.from_bytes(hashlib.sha256(b"prod").digest()[:4], "big") % 16777215 + 1


def test_per_session_vni_probes_past_taken_values():
    first = per_session_vni("prod", "eni-1", set())
    assert per_session_vni("prod", "eni-1", {first}) == first % C.VNI_MAX + 1


def test_ports_are_merged_and_validated():
    assert parse_ports(None) is None
    assert parse_ports(["443,80", "81-90", "8000-8100,8050"]) == [(80, 90), (443, 443), (8000, 8100)]
    for bad in (["x"], ["70000"], ["9-1"], ["-5"]):
        with pytest.raises(UsageError):
            parse_ports(bad)


def test_protocols_and_cidrs():
    assert parse_protocols(None) == [6]
    assert parse_protocols(["udp,tcp"]) == [6, 17]
    assert parse_protocols(["all"]) is None
    assert parse_protocols(["47"]) == [47]
    with pytest.raises(UsageError):
        parse_protocols(["all", "tcp"])
    assert parse_cidrs(None) == ["0.0.0.0/0"]
    assert parse_cidrs(["10.1.2.3/8", "::/0"]) == ["10.0.0.0/8", "::/0"]


def test_tag_selectors():
    sel = parse_tags(["team=a", "team=b", "env"], "--tag")
    assert sel == {"team": {"a", "b"}, "env": None}
    assert tags_match(sel, {"env": "x"}, {"team": "b"})
    assert not tags_match(sel, {"team": "a"}, {})
    assert not tags_match(sel, {"team": "c", "env": "1"}, {})


def _keys(rules):
    return [(r.direction, r.number, r.action, r.protocol, r.dst_ports, r.src_ports, r.src_cidr, r.dst_cidr)
            for r in rules]


def test_default_filter_is_all_tcp_both_directions_without_dns():
    rules = desired_rules(FilterSpec(protocols=[6]), "prod")
    z = "0.0.0.0/0"
    assert _keys(rules) == [
        ("ingress", 100, "reject", 6, (53, 53), None, z, z),
        ("ingress", 110, "reject", 6, None, (53, 53), z, z),
        ("ingress", 200, "accept", 6, None, None, z, z),
        ("egress", 100, "reject", 6, (53, 53), None, z, z),
        ("egress", 110, "reject", 6, None, (53, 53), z, z),
        ("egress", 200, "accept", 6, None, None, z, z),
    ]


def test_all_protocols_rejects_tcp_and_udp_dns_and_fits_the_quota():
    rules = desired_rules(FilterSpec(protocols=None), "prod")
    assert len(rules) == C.MAX_RULES_PER_FILTER
    rejects = {(r.direction, r.protocol, r.dst_ports, r.src_ports) for r in rules if r.action == "reject"}
    assert len(rejects) == 8
    accepts = [r for r in rules if r.action == "accept"]
    assert [(r.direction, r.protocol) for r in accepts] == [("ingress", None), ("egress", None)]


def test_ports_without_53_need_no_dns_rejects_and_include_dns_drops_them():
    assert all(r.action == "accept" for r in desired_rules(FilterSpec(protocols=[6], ports=[(80, 80)]), "p"))
    with_53 = desired_rules(FilterSpec(protocols=[6], ports=[(1, 100)]), "p")
    assert any(r.action == "reject" for r in with_53)
    assert all(r.action == "accept" for r in desired_rules(FilterSpec(protocols=[6], include_dns=True), "p"))


def test_peer_cidr_is_source_on_ingress_and_destination_on_egress_ipv6_too():
    rules = desired_rules(FilterSpec(protocols=[6], cidrs=("10.0.0.0/8", "fd00::/8"), include_dns=True), "p")
    pairs = {(r.direction, r.src_cidr, r.dst_cidr) for r in rules}
    assert pairs == {("ingress", "10.0.0.0/8", "0.0.0.0/0"), ("ingress", "fd00::/8", "::/0"),
                     ("egress", "0.0.0.0/0", "10.0.0.0/8"), ("egress", "::/0", "fd00::/8")}


def test_rule_budget_is_enforced():
    with pytest.raises(UsageError, match="AWS allows 10 per filter"):
        desired_rules(FilterSpec(protocols=[6, 17]), "p")  # 8 rejects + 4 accepts


def test_rule_round_trips_through_the_api_shape():
    rule = Rule("egress", 200, "accept", 17, (80, 90), None, "0.0.0.0/0", "10.0.0.0/8", description="d")
    api = rule.create_params("tmf-1")
    api["TrafficMirrorFilterRuleId"] = "tmfr-1"
    back = Rule.from_api(api)
    assert back == rule and back.key() == rule.key() and back.rule_id == "tmfr-1"
    # "all protocols" comes back without a protocol (or as 0): both mean None
    assert Rule.from_api({**api, "Protocol": 0}).protocol is None


@pytest.mark.parametrize("itype, info, ok", [
    ("m5.large", {"Hypervisor": "nitro"}, True),
    ("c5n.18xlarge", {"Hypervisor": "nitro"}, True),
    ("c4.large", {"Hypervisor": "xen"}, True),  # on the supported non-Nitro list
    ("t2.micro", {"Hypervisor": "xen"}, False),
    ("m3.medium", {"Hypervisor": "xen"}, False),
    ("m6i.large", {"Hypervisor": "nitro"}, False),  # documented unsupported Nitro family
    ("m7i-flex.large", {"Hypervisor": "nitro"}, False),
    ("m5.metal", {"BareMetal": True}, False),
    ("t2.nano", None, False),  # unknown to DescribeInstanceTypes: family lists decide
    ("zz9.large", None, True),
])
def test_instance_type_rules(itype, info, ok):
    assert (instance_type_problem(itype, info) is None) is ok


def test_session_numbers_and_packet_length_equivalence():
    assert free_session_number(set()) == 1
    assert free_session_number({1, 2, 4}) == 3
    assert packet_length_matches(None, None) and packet_length_matches(None, 8500)
    assert not packet_length_matches(None, 100)
    assert packet_length_matches(100, 100) and not packet_length_matches(100, None)


def test_session_map_document_and_atomic_write(tmp_path, monkeypatch):
    doc = sessionmap.build("prod", "us-east-1", "vpc-1", [
        {"session_id": "tms-b", "vni": 7, "eni": "eni-b", "instance": None, "session_number": 2,
         "private_ips": ["10.0.0.2"]},
        {"session_id": "tms-a", "vni": 7, "eni": "eni-a", "instance": "i-a", "session_number": 1,
         "private_ips": ["10.0.0.1", "fd00::1"]},
        {"session_id": None, "vni": 7, "eni": "eni-c"},  # failed create: not in the map
    ], now=0)
    assert doc["generated_at"] == "1970-01-01T00:00:00Z"
    assert list(doc["sessions"]) == ["tms-a", "tms-b"]
    assert doc["by_vni"] == {"7": ["tms-a", "tms-b"]}
    assert doc["by_ip"] == {"10.0.0.1": "tms-a", "fd00::1": "tms-a", "10.0.0.2": "tms-b"}
    path = tmp_path / "deep" / "dir" / "sessions.json"
    sessionmap.write(str(path), doc)
    assert json.loads(path.read_text()) == doc
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in path.parent.iterdir()] == ["sessions.json"]  # no temp file left
    assert not sessionmap.remove_if_deployment(str(path), "other")
    assert sessionmap.remove_if_deployment(str(path), "prod") and not path.exists()


def test_session_map_path_resolution(monkeypatch):
    monkeypatch.delenv(C.SESSION_MAP_ENV, raising=False)
    assert sessionmap.resolve_path(None) == "/var/lib/appliance/sessions.json"
    monkeypatch.setenv(C.SESSION_MAP_ENV, "/tmp/x.json")
    assert sessionmap.resolve_path(None) == "/tmp/x.json"
    assert sessionmap.resolve_path("/y.json") == "/y.json"


def test_registering_the_cli_imports_neither_boto3_nor_rich():
    code = ("import sys, appliance.cli as c; p = c.build_parser(); "
            "p.parse_args(['provision', 'aws', '--vpc', 'vpc-0123456789abcdef0']); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 'rich')]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_status_subcommand_keeps_options_given_before_it():
    from appliance.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["provision", "aws", "--name", "blue", "--region", "eu-west-1", "status"])
    assert (args.name, args.region, args.aws_command) == ("blue", "eu-west-1", "status")
    args = parser.parse_args(["provision", "aws", "--name", "blue", "status", "--name", "green"])
    assert args.name == "green"
    assert args.func.__name__ == "_status"
    assert parser.parse_args(["provision", "aws", "--vpc", "vpc-0123456789abcdef0"]).func.__name__ == "_provision"
    assert parser.parse_args(["deprovision", "aws", "--name", "x"]).func.__name__ == "_deprovision"


def test_help_documents_exit_codes(capsys):
    from appliance.cli import main

    for argv in (["provision", "aws", "--help"], ["deprovision", "aws", "--help"], ["provision", "aws", "status", "-h"]):
        with pytest.raises(SystemExit):
            main(argv)
        out = capsys.readouterr().out
        assert exitcodes.epilog() in out
