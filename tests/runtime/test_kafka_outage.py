"""Broker outage: stop the broker mid-stream, restart it, and lose nothing."""

from appliance.demo import send_vxlan
from rt_helpers import consume_all, records
from traffic import connections, key


def test_broker_outage_loses_no_pairs(broker, appliance):
    first, exp1 = connections(20, exchanges=2, client_net="10.63")
    second, exp2 = connections(20, exchanges=2, client_net="10.64")
    third, exp3 = connections(10, exchanges=2, client_net="10.65")
    app = appliance(["--mode", "aws", "--kafka", broker.bootstrap, "--workers", "1",
                     "--batch-time", "0.05"])
    send_vxlan(first, app.udp, vni=5)
    got1 = records(consume_all(broker.bootstrap, "akto.api.logs", expect=len(exp1), timeout=60))
    assert {key(r) for r in got1} == exp1

    broker.stop()  # memory storage: what it held is gone; the appliance must keep the rest
    send_vxlan(second, app.udp, vni=5)
    st = app.wait_status(lambda s: s["totals"]["pairs"] == len(exp1) + len(exp2), timeout=30)
    assert st["kafka"]["dropped"] == 0

    broker.start()  # same port
    send_vxlan(third, app.udp, vni=5)
    got2 = records(consume_all(broker.bootstrap, "akto.api.logs", expect=len(exp2) + len(exp3),
                               timeout=120))
    assert {key(r) for r in got2} == exp2 | exp3
    st = app.wait_status(lambda s: s["kafka"]["spooled"] == 0 and s["kafka"]["queued"] == 0,
                         timeout=30)
    assert st["kafka"]["state"] == "up" and st["kafka"]["dropped"] == 0
    assert app.terminate() == 0
