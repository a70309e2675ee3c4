"""The runtime reads the VNI -> mirror session map that `appliance provision aws` writes."""

from appliance.runtime.supervisor import load_session_map
from provision.aws import sessionmap


def test_map_written_by_aws_provisioning_is_understood(tmp_path):
    doc = sessionmap.build("prod", "us-east-1", "vpc-1", [
        {"session_id": "tms-a", "vni": 7001, "eni": "eni-a", "instance": "i-a", "session_number": 1,
         "private_ips": ["10.0.0.5"]},
        {"session_id": "tms-b", "vni": 7001, "eni": "eni-b", "instance": None, "session_number": 1,
         "private_ips": []},
        {"session_id": "tms-c", "vni": 9, "eni": "eni-c", "instance": "i-c", "session_number": 2,
         "private_ips": []},
    ])
    path = tmp_path / "sessions.json"
    sessionmap.write(str(path), doc)
    m = load_session_map(str(path))
    assert m["7001"] == {"cloud": "aws", "session_id": "tms-a,tms-b", "eni": "eni-a,eni-b",
                         "instance": "i-a", "policy": None}
    assert m["9"]["session_id"] == "tms-c" and m["9"]["instance"] == "i-c"


def test_missing_or_garbage_map_means_unknown(tmp_path):
    assert load_session_map(str(tmp_path / "none.json")) == {}
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert load_session_map(str(bad)) == {}
    bad.write_text("[1, 2]")
    assert load_session_map(str(bad)) == {}


def test_not_healthy_until_every_worker_captures():
    """/healthz stays 503 until each worker has reported with its capture open, so load
    balancers send no mirrored traffic that would be missed or split across workers; a
    worker being restarted makes it "degraded"."""
    import os
    import time

    from appliance.config import load_settings
    from appliance.runtime.supervisor import Slot, Supervisor

    sup = Supervisor(load_settings(env={}))
    sup.slots = [Slot(0, None), Slot(1, None)]
    for sl in sup.slots:
        sl.pid = os.getpid()  # alive: no exit status yet
    assert sup.healthy() == (False, "starting")
    sup.slots[0].ready = True
    sup.latest[0] = {"time": time.time()}
    assert sup.healthy() == (False, "starting")
    sup.slots[1].ready = True
    sup.latest[1] = {"time": time.time()}
    assert sup.healthy() == (True, "ok")
    sup.latest[1]["time"] -= 10
    assert sup.healthy()[0] is False
    sup.latest[1]["time"] += 10
    sup.slots[1].exit, sup.slots[1].restarts = -9, 1
    assert sup.healthy() == (False, "degraded: worker(s) [1] restarting")
