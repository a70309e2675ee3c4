"""The on-disk spool and the Kafka sink's fallback to it (broker unreachable)."""

import json

from appliance.config import load_settings
from appliance.sinks.kafka import KafkaSink, fit, message_key
from appliance.sinks.spool import Spool


def test_spool_is_fifo_bounded_and_survives_restart(tmp_path):
    sp = Spool(str(tmp_path / "s"), max_bytes=10_000)
    for i in range(50):
        assert sp.append(b"k%d" % i, b"v" * 100 + b"%d" % i)
    assert len(sp) == 50
    assert [v[-2:] for _, v in sp.read(3)] == [b"v0", b"v1", b"v2"]
    # full: further appends are refused and counted
    while sp.append(b"k", b"x" * 100):
        pass
    assert sp.dropped == 1
    sp.close()
    again = Spool(str(tmp_path / "s"), max_bytes=10_000)
    first = again.read(1)[0]
    assert first == (b"k3", b"v" * 100 + b"3")  # the three already read are gone
    rest = again.read(10_000)
    assert len(again) == 0 and again.bytes == 0 and len(rest) > 40


def test_fit_trims_payloads_to_the_message_limit():
    rec = {"path": "/", "requestPayload": "a" * 5000, "responsePayload": "é" * 400_000,
           "requestHeaders": "{}", "responseHeaders": "{}"}
    value = fit(rec, 100_000)
    assert len(value) <= 100_000
    out = json.loads(value)
    assert "message_trimmed" in out["anomalies"] and out["requestPayload"] == "a" * 5000
    assert len(fit({"path": "/", "responsePayload": "small"}, 100_000)) < 100


def test_message_key_is_the_connection():
    rec = {"ip": "10.0.0.1", "srcPort": "1234", "destIp": "10.0.0.2", "destPort": "80"}
    assert message_key(rec) == b"10.0.0.1:1234>10.0.0.2:80"


CA = "/etc/ssl/certs/ca-certificates.crt"


def test_missing_ca_file_is_a_config_error():
    import pytest

    from appliance.config import ConfigError

    with pytest.raises(ConfigError, match="APPLIANCE_KAFKA_SSL_CA"):
        load_settings(env={"APPLIANCE_KAFKA_SSL_CA": "/nonexistent/ca.pem"})


def _rec(i):
    return {"path": f"/{i}", "ip": "10.0.0.1", "srcPort": "1", "destIp": "10.0.0.2",
            "destPort": "80", "responsePayload": "x" * 200}


def test_dead_broker_spools_then_drops_beyond_cap_counted(tmp_path, caplog):
    from appliance.broker import free_port

    s = load_settings({"kafka_brokers": f"127.0.0.1:{free_port()}", "spool_max_mb": 1,
                       "queue_max": 100, "batch_time_secs": 0.01})
    sink = KafkaSink(s, str(tmp_path / "spool"))
    n = 6000  # ~300 bytes each: more than 100 queued + 1 MB spooled
    for i in range(0, n, 500):
        sink.write([_rec(j) for j in range(i, i + 500)])
    st = sink.stats()
    assert st["queued"] <= 100
    assert st["spooled"] > 3000 and st["dropped"] > 0
    assert st["queued"] + st["spooled"] + st["dropped"] == n  # every pair accounted for
    with caplog.at_level("ERROR"):
        sink._to_spool(b"k", b"v" * 2_000_000)
    assert any("spool full" in r.message for r in caplog.records)
    dropped_before_close = sink.spool.dropped
    sink.close(timeout=1)
    # what was queued in memory is purged back to the spool at close, for the next start;
    # the spool is full here, so those are dropped, and counted
    left = Spool(str(tmp_path / "spool"), 1 << 20)
    dropped_at_close = sink.spool.dropped - dropped_before_close
    assert len(left) + dropped_at_close == st["queued"] + st["spooled"]
    assert dropped_at_close == st["queued"]


def test_close_with_room_spools_what_was_queued(tmp_path):
    from appliance.broker import free_port

    s = load_settings({"kafka_brokers": f"127.0.0.1:{free_port()}", "spool_max_mb": 10,
                       "queue_max": 100, "batch_time_secs": 0.01})
    sink = KafkaSink(s, str(tmp_path / "spool"))
    sink.write([_rec(j) for j in range(50)])
    # "queued" counts messages, not librdkafka's len() (which also counts protocol
    # requests, such as InitProducerId, and once made this read 51)
    assert sink.stats()["queued"] == 50
    sink.close(timeout=1)
    st = sink.stats()
    assert st["queued"] == 0 and st["failed"] == 50 and st["delivered"] == 0
    left = Spool(str(tmp_path / "spool"), 10 << 20)
    assert sorted(json.loads(v)["path"] for _, v in left.read(100)) == sorted(f"/{j}" for j in range(50))


def test_sasl_and_tls_settings_reach_the_producer_and_are_masked():
    s = load_settings(env={"AKTO_KAFKA_BROKER_MAL": "b-1.msk:9096",
                           "APPLIANCE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                           "APPLIANCE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                           "APPLIANCE_KAFKA_SASL_USERNAME": "appliance",
                           "APPLIANCE_KAFKA_SASL_PASSWORD": "s3cret",
                           "APPLIANCE_KAFKA_SSL_CA": CA})
    conf = s.kafka_config()
    assert conf["security.protocol"] == "SASL_SSL" and conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.username"] == "appliance" and conf["sasl.password"] == "s3cret"
    assert conf["ssl.ca.location"] == CA
    assert conf["acks"] == "all" and conf["enable.idempotence"] is True
    assert conf["compression.type"] == "lz4"
    assert "s3cret" not in json.dumps(s.display())
    # the real client accepts the configuration
    from confluent_kafka import Producer

    Producer({k: v for k, v in conf.items()})


def test_batching_settings_map_to_the_producer():
    s = load_settings(env={"AKTO_TRAFFIC_BATCH_SIZE": "250", "AKTO_TRAFFIC_BATCH_TIME_SECS": "2"})
    conf = s.kafka_config()
    assert conf["batch.num.messages"] == 250 and conf["linger.ms"] == 2000
