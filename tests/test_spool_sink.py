"""The on-disk spool and the Kafka sink's fallback to it (broker unreachable).

Real files, real processes (kill -9), a real librdkafka producer against a port where no
broker listens.  Delivery against a real broker (Tansu) is in tests/runtime/."""

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap

import pytest

from appliance.config import load_settings
from appliance.sinks import spool as spool_mod
from appliance.sinks.kafka import KafkaSink, fit, message_key
from appliance.sinks.spool import Spool, SpoolBusy, encode_record

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fill(sp, n, start=0, size=100):
    for i in range(start, start + n):
        assert sp.append(b"k%d" % i, b"v%d-" % i + b"x" * size)


def values(batch):
    return [v.split(b"-")[0].decode() for _, _, v in batch]


def ack_all(sp, batch):
    for rid, _, _ in batch:
        sp.ack(rid)


def read_all(sp):
    """Every value, in delivery order, acknowledging each read (as the sink does)."""
    out = []
    while True:
        batch = sp.read(1000)
        if not batch:
            return out
        out += [v for _, _, v in batch]
        ack_all(sp, batch)


def segment(path):
    return sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".seg"))


def test_spool_is_fifo_bounded_and_survives_restart(tmp_path):
    sp = Spool(str(tmp_path / "s"), max_bytes=10_000)
    fill(sp, 50, size=80)
    assert len(sp) == 50
    first = sp.read(3)
    assert values(first) == ["v0", "v1", "v2"]
    ack_all(sp, first)
    # full: further appends are refused and counted
    while sp.append(b"k", b"x" * 100):
        pass
    assert sp.dropped == 1
    sp.close()
    again = Spool(str(tmp_path / "s"), max_bytes=10_000)
    batch = again.read(10_000)
    assert values(batch)[0] == "v3"  # the three delivered are gone, nothing else
    assert len(again) == len(batch) > 40
    ack_all(again, batch)
    assert len(again) == 0 and again.bytes == 0 and not segment(str(tmp_path / "s"))
    again.close()


def test_files_are_private_and_the_directory_is_locked(tmp_path):
    d = tmp_path / "spool" / "worker-0"
    sp = Spool(str(d), 1 << 20)
    fill(sp, 3)
    sp.flush()
    batch = sp.read(1)
    ack_all(sp, batch)
    sp.tick()
    import time

    time.sleep(spool_mod.CURSOR_SECS)
    sp.tick()
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    names = os.listdir(d)
    assert {"lock", "m.cursor"} <= set(names)
    for name in names:
        assert stat.S_IMODE(os.stat(d / name).st_mode) == 0o600, name
    with pytest.raises(SpoolBusy, match="in use by another process"):
        Spool(str(d), 1 << 20)
    sp.close()
    Spool(str(d), 1 << 20).close()  # free again


def test_torn_write_at_the_tail_is_skipped_and_counted(tmp_path):
    d = str(tmp_path / "s")
    sp = Spool(d, 1 << 20)
    fill(sp, 5)
    sp.close()
    # a crash mid-append: half a record at the end of the segment
    with open(segment(d)[0], "ab") as f:
        f.write(encode_record(b"k5", b"v5-" + b"x" * 100)[:40])
    again = Spool(d, 1 << 20)
    assert len(again) == 5
    batch = again.read(100)
    assert values(batch) == ["v0", "v1", "v2", "v3", "v4"]
    assert again.corrupt == 1
    ack_all(again, batch)
    assert len(again) == 0 and not segment(d)  # the torn segment is finished and deleted
    again.close()


def test_corrupt_length_and_payload_are_skipped_never_merged(tmp_path):
    d = str(tmp_path / "s")
    sp = Spool(d, 1 << 20)
    fill(sp, 6, size=50)
    sp.close()
    path = segment(d)[0]
    data = bytearray(open(path, "rb").read())
    rec = len(encode_record(b"k0", b"v0-" + b"x" * 50))
    base = len(spool_mod.FILE_MAGIC)
    data[base + rec * 1 + 8] ^= 0x40  # record 1: its value length (header CRC catches it)
    data[base + rec * 3 + 30] ^= 0x01  # record 3: a byte of its value (payload CRC)
    open(path, "wb").write(bytes(data))
    again = Spool(d, 1 << 20)
    batch = again.read(100)
    assert values(batch) == ["v0", "v2", "v4", "v5"]
    assert all(len(v) == 53 for _, _, v in batch)  # nothing merged into a neighbour
    assert again.corrupt == 2
    again.close()


def test_nack_rewinds_in_order_and_skips_what_was_delivered(tmp_path):
    sp = Spool(str(tmp_path / "s"), 1 << 20)
    fill(sp, 8)
    batch = sp.read(5)
    rid = {v: r for v, (r, _, _) in zip(values(batch), batch, strict=True)}
    for v in ("v0", "v1", "v3"):
        sp.ack(rid[v])
    sp.nack(rid["v2"])
    assert sp.read(10) == []  # v4 still has no report: nothing is re-read before it has
    sp.ack(rid["v4"])
    again = sp.read(10)
    assert values(again) == ["v2", "v5", "v6", "v7"]  # v2 keeps its place; v3, v4 not resent
    ack_all(sp, again)
    assert len(sp) == 0
    sp.close()


def test_retry_lane_is_read_before_the_tail(tmp_path):
    sp = Spool(str(tmp_path / "s"), 1 << 20)
    sp.append(b"k", b"new-1")
    sp.append_retry(b"k", b"old-1")
    sp.append_retry(b"k", b"old-2")
    sp.append(b"k", b"new-2")
    batch = sp.read(10)
    assert values(batch) == ["old", "old"]  # the tail waits until the retry lane is delivered
    ack_all(sp, batch)
    assert [v for _, _, v in sp.read(10)] == [b"new-1", b"new-2"]
    sp.close()


def test_segment_deleted_only_when_every_record_is_acknowledged(tmp_path, monkeypatch):
    monkeypatch.setattr(spool_mod, "SEGMENT_BYTES", 1000)
    d = str(tmp_path / "s")
    sp = Spool(d, 1 << 20)
    fill(sp, 30, size=100)  # about 130 bytes each: several segments
    sp.flush()
    n_segments = len(segment(d))
    assert n_segments >= 3
    batch = sp.read(100)
    assert len(batch) == 30
    for rid, _, _ in batch[1:]:
        sp.ack(rid)
    assert len(segment(d)) == n_segments  # the first record of the first one is unreported
    sp.ack(batch[0][0])
    assert len(segment(d)) == 1  # only the segment still being written remains
    sp.close()
    assert segment(d) == []


def test_drain_reads_are_bounded_in_bytes(tmp_path):
    sp = Spool(str(tmp_path / "s"), 1 << 20)
    fill(sp, 100, size=1000)
    batch = sp.read(100, max_bytes=10_000)
    assert 9 <= len(batch) <= 11
    sp.close()


KILLER = textwrap.dedent('''
    import os, signal, sys, time
    from appliance.sinks.spool import Spool
    sp = Spool(sys.argv[1], 1 << 30)
    for i in range(1000):
        sp.append(b"k", b"%d" % i)
    sp.flush()
    first = sp.read(400)
    for rid, _, _ in first:
        sp.ack(rid)
    time.sleep(0.3)
    sp.tick()  # the cursor is persisted after a delivered batch
    second = sp.read(100)
    for rid, _, _ in second:
        sp.ack(rid)  # delivered, but killed before the cursor is written again
    print("acked", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
''')


def test_kill_9_replays_at_most_one_batch_and_loses_nothing(tmp_path):
    d = str(tmp_path / "s")
    proc = subprocess.run([sys.executable, "-c", KILLER, d], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.returncode == -signal.SIGKILL and "acked" in proc.stdout, proc.stderr
    sp = Spool(d, 1 << 30)
    left = [int(v) for _, _, v in sp.read(10_000)]
    assert left == list(range(400, 1000))  # batch two again (100 duplicates), none lost
    assert sp.corrupt == 0
    sp.close()


def test_records_of_the_first_format_are_moved_in(tmp_path):
    import struct

    d = tmp_path / "s"
    d.mkdir()
    with open(d / "000000000000.spool", "wb") as f:
        for i in range(3):
            key, value = b"k%d" % i, b"v%d" % i
            f.write(struct.pack("<II", len(key), len(value)) + key + value)
    sp = Spool(str(d), 1 << 20)
    assert [v for _, _, v in sp.read(10)] == [b"v0", b"v1", b"v2"]
    assert not list(d.glob("*.spool"))
    sp.close()


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
    from appliance.config import ConfigError

    with pytest.raises(ConfigError, match="APPLIANCE_KAFKA_SSL_CA"):
        load_settings(env={"APPLIANCE_KAFKA_SSL_CA": "/nonexistent/ca.pem"})


def _rec(i):
    return {"path": f"/{i}", "ip": "10.0.0.1", "srcPort": "1", "destIp": "10.0.0.2",
            "destPort": "80", "responsePayload": "x" * 200}


def _dead_broker_settings(**kw):
    from appliance.broker import free_port

    return load_settings({"kafka_brokers": f"127.0.0.1:{free_port()}", "queue_max": 100,
                          "batch_time_secs": 0.01, **kw})


def test_dead_broker_spools_then_drops_beyond_cap_counted(tmp_path, caplog):
    sink = KafkaSink(_dead_broker_settings(spool_max_mb=1), str(tmp_path / "spool"))
    n = 6000  # ~300 bytes each: more than 100 queued + 1 MB spooled
    for i in range(0, n, 500):
        sink.write([_rec(j) for j in range(i, i + 500)])
    st = sink.stats()
    assert st["queued"] <= 100
    assert st["spooled"] > 3000 and st["dropped"] > 0
    assert st["queued"] + st["spooled"] + st["dropped"] == n  # every pair accounted for
    assert st["state"] == "down" and "brokers are down" in st["reason"]
    with caplog.at_level("ERROR"):
        sink._store(b"k", b"v" * 2_000_000)
    assert any("spool full" in r.message for r in caplog.records)
    sink.close(timeout=1)
    left = Spool(str(tmp_path / "spool"), 1 << 20)
    assert len(left) + sink.stats()["dropped"] == n + 1
    left.close()


def test_close_with_a_dead_broker_spools_everything_in_order(tmp_path):
    sink = KafkaSink(_dead_broker_settings(spool_max_mb=10), str(tmp_path / "spool"))
    sink.write([_rec(j) for j in range(50)])
    sink.write([_rec(j) for j in range(50, 80)])
    # "queued" counts messages, not librdkafka's len() (which also counts protocol
    # requests, such as InitProducerId)
    st = sink.stats()
    assert st["queued"] + st["spooled"] == 80
    sink.close(timeout=1)
    st = sink.stats()
    assert st["queued"] == 0 and st["delivered"] == 0 and st["dropped"] == 0
    left = Spool(str(tmp_path / "spool"), 10 << 20)
    # the messages produced first (then purged to the retry lane) still come first
    assert [json.loads(v)["path"] for v in read_all(left)] == [f"/{j}" for j in range(80)]
    left.close()


def test_sasl_and_tls_settings_reach_the_producer_and_are_masked():
    s = load_settings(env={"AKTO_KAFKA_BROKER_MAL": "b-1.msk:9096",
                           "APPLIANCE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                           "APPLIANCE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                           "APPLIANCE_KAFKA_SASL_USERNAME": "appliance",
                           "APPLIANCE_KAFKA_SASL_PASSWORD": "s3cret",
                           "APPLIANCE_KAFKA_SSL_CA": CA, "APPLIANCE_HTTP_TOKEN": "t0ken"})
    conf = s.kafka_config()
    assert conf["security.protocol"] == "SASL_SSL" and conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.username"] == "appliance" and conf["sasl.password"] == "s3cret"
    assert conf["ssl.ca.location"] == CA
    assert conf["acks"] == "all" and conf["enable.idempotence"] is True
    assert conf["compression.type"] == "lz4"
    shown = json.dumps(s.display())
    assert "s3cret" not in shown and "t0ken" not in shown
    # the real client accepts the configuration
    from confluent_kafka import Producer

    Producer({k: v for k, v in conf.items()})


def test_batching_settings_map_to_the_producer():
    s = load_settings(env={"AKTO_TRAFFIC_BATCH_SIZE": "250", "AKTO_TRAFFIC_BATCH_TIME_SECS": "2"})
    conf = s.kafka_config()
    assert conf["batch.num.messages"] == 250 and conf["linger.ms"] == 2000
