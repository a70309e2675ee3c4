"""Akto's traffic filters, each drop counted by reason (sans-IO, through the pipeline)."""

import pytest

from appliance import synth
from appliance.config import ConfigError, load_settings, parse_discovery_config
from appliance.format.filters import PairFilter
from helpers import run_frames


def exchange(host, path="/", client="10.0.0.1", server="10.0.0.2", headers=(), cport=40000):
    c = synth.Conversation(client=client, server=server, cport=cport)
    c.handshake().exchange(synth.http_request("GET", path, host=host, headers=list(headers)),
                           synth.http_response(200, b"ok")).close()
    return c.frames


def run(frames, **kw):
    f = PairFilter(**kw)
    return run_frames(frames, pair_filter=f)


def test_discovery_config_reject_absent_and_regex():
    rules = parse_discovery_config('[{"key":{"eq":"x-forwarded-client-cert","ifAbsent":"reject"},'
                                   '"value":{"regex":".*bookinfo.*"}}]')
    frames = (exchange("a", "/absent", cport=1)
              + exchange("a", "/match", headers=[("X-Forwarded-Client-Cert", "By=spiffe://c/ns/bookinfo/sa/x")], cport=2)
              + exchange("a", "/nomatch", headers=[("x-forwarded-client-cert", "By=spiffe://c/ns/other")], cport=3))
    recs, p = run(frames, discovery_rules=rules)
    assert [r["path"] for r in recs] == ["/match"]
    assert p.formatter.drops == {"filter_discovery_config": 2}


def test_discovery_config_accept_absent():
    rules = parse_discovery_config('[{"key":{"eq":"x-tenant","ifAbsent":"accept"},"value":{"regex":"^acme$"}}]')
    frames = exchange("a", "/absent", cport=1) + exchange("a", "/bad", headers=[("X-Tenant", "evil")], cport=2)
    recs, p = run(frames, discovery_rules=rules)
    assert [r["path"] for r in recs] == ["/absent"]


@pytest.mark.parametrize("host,dropped", [("api.example.com", False), ("10.1.2.3", True),
                                          ("10.1.2.3:8080", True), ("[2001:db8::1]:80", True),
                                          ("", True), ("example.com:8080", False)])
def test_ignore_ip_traffic(host, dropped):
    recs, p = run(exchange(host), ignore_ip_host=True)
    assert (len(recs) == 0) is dropped
    assert p.formatter.drops.get("filter_ip_host", 0) == int(dropped)


def test_ignore_cloud_metadata_by_host_and_by_address():
    frames = (exchange("169.254.169.254", "/latest/meta-data/", cport=1)
              + exchange("metadata.google.internal", "/computeMetadata/v1/", cport=2)
              + exchange("whatever", "/x", server="169.254.169.254", cport=3)
              + exchange("api.internal", "/kept", cport=4))
    recs, p = run(frames, ignore_metadata=True)
    assert [r["path"] for r in recs] == ["/kept"]
    assert p.formatter.drops == {"filter_cloud_metadata": 3}


def test_disable_egress_drops_calls_to_external_servers_only():
    internal = ["10.0.0.0/8", "192.168.0.0/16"]
    frames = (exchange("in", "/inbound-from-internet", client="203.0.113.5", server="10.0.0.2", cport=1)
              + exchange("out", "/egress", client="10.0.0.1", server="93.184.216.34", cport=2)
              + exchange("east-west", "/internal", client="10.0.0.1", server="192.168.1.1", cport=3))
    recs, p = run(frames, disable_egress=True, internal_cidrs=internal)
    assert [r["path"] for r in recs] == ["/inbound-from-internet", "/internal"]
    assert p.formatter.drops == {"filter_egress": 1}


def test_ignored_ports_counted():
    c = synth.Conversation(sport=22)
    c.handshake().exchange(synth.http_request("GET", "/"), synth.http_response(200, b"x")).close()
    recs, p = run_frames(c.frames, ignored_ports=frozenset({22}))
    assert recs == [] and p.drops["ignored_port"] == len(c.frames)


def test_filters_from_settings():
    s = load_settings(env={"AKTO_IGNORE_IP_TRAFFIC": "true", "TRAFFIC_DISABLE_EGRESS": "1",
                           "AKTO_MODULE_DISCOVERY_CONFIG": '[{"key":{"eq":"h"},"value":{"regex":"x"}}]'})
    f = PairFilter.from_settings(s)
    assert f.ignore_ip_host and f.disable_egress and len(f.rules) == 1
    assert PairFilter.from_settings(load_settings(env={})) is None


@pytest.mark.parametrize("text,fragment", [
    ("{}", "JSON list"), ("[1]", "rule 0"), ('[{"key":{"eq":"h","ifAbsent":"maybe"},"value":{"regex":"x"}}]', "ifAbsent"),
    ('[{"key":{"eq":"h"},"value":{"regex":"("}}]', "bad regex"), ("[", "not valid JSON")])
def test_bad_discovery_config_is_one_line(text, fragment):
    with pytest.raises(ConfigError) as e:
        load_settings(env={"AKTO_MODULE_DISCOVERY_CONFIG": text})
    msg = str(e.value)
    assert "AKTO_MODULE_DISCOVERY_CONFIG" in msg and fragment in msg and "\n" not in msg
