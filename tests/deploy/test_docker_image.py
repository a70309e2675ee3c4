"""The image, built and run by a real Docker engine.

The image is built with the classic builder on a Debian base made here (docker_helpers),
then run exactly as deploy/README.md says, hardening flags and all: aws mode as the image's
non-root user with no capability, on the host network, fed VXLAN datagrams, its pairs read
back from a Tansu broker; gcp mode as root with only the documented capabilities, capturing
frames on a veth interface, and refused one line naming the fix when one of them is missing.
Skipped only where Docker cannot run (the reason is given).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
import uuid

import pytest
from docker_helpers import (
    Docker,
    DockerUnavailable,
    as_test_run,
    build_image,
    cap_mask,
    local_base_image,
    options,
    proc_status,
    readme_runs,
    wait_exit,
    wait_health,
)

from appliance import __version__, synth
from appliance.broker import LocalBroker, consume_all, free_port

pytestmark = pytest.mark.timeout(1200)  # a cold run installs docker.io and builds the base

VNI = 4242


@pytest.fixture(scope="module")
def docker(tmp_path_factory):
    engine = Docker(tmp_path_factory.mktemp("docker"))
    try:
        engine.ensure()
    except DockerUnavailable as exc:
        pytest.skip(f"Docker cannot run here: {exc}")
    yield engine
    engine.cleanup()
    engine.stop()


@pytest.fixture(scope="module")
def image(docker, tmp_path_factory):
    try:
        base = local_base_image(docker)
    except DockerUnavailable as exc:
        pytest.skip(f"Docker cannot run here: {exc}")
    return build_image(docker, base, tmp_path_factory.mktemp("build"))


@pytest.fixture
def broker(tmp_path):
    with LocalBroker(log_path=str(tmp_path / "tansu.log")) as b:
        yield b


@pytest.fixture
def names(docker):
    """A unique container and volume name per test; removed afterwards."""
    tag = uuid.uuid4().hex[:8]
    yield f"appliance-test-{tag}", f"appliance-test-state-{tag}"
    docker.cleanup()


def start(docker, argv, name, volume):
    docker.containers.append(name)
    docker.volumes.append(volume)
    return docker(*argv).stdout.strip()


def traffic(n_conns: int, exchanges: int):
    """Keep-alive connections with unique paths and bodies: (frames by time, expected pairs)."""
    frames, expected = [], set()
    for i in range(n_conns):
        c = synth.Conversation(client=f"10.80.{i // 200}.{i % 200 + 1}", server="10.90.0.10",
                               cport=20000 + i, sport=8080, t=1_700_000_000.0 + i * 0.001)
        c.handshake()
        for j in range(exchanges):
            path, body = f"/api/c{i}/r{j}", b'{"conn":%d,"req":%d}' % (i, j)
            c.exchange(synth.http_request("POST", path, b'{"q":%d}' % j,
                                          [("Content-Type", "application/json")]),
                       synth.http_response(200, body, [("Content-Type", "application/json")]))
            expected.add((c.client, str(c.cport), path, "200", body.decode()))
        c.close()
        frames += c.frames
    frames.sort(key=lambda f: f[0])
    return [f for _, f in frames], expected


def key(rec):
    return (rec["ip"], rec["srcPort"], rec["path"], rec["statusCode"], rec["responsePayload"])


def send_vxlan(frames, port):
    """One UDP socket per direction of each inner connection, as AWS varies the outer source
    port by inner flow."""
    socks = {}
    try:
        for frame in frames:
            s = socks.setdefault(frame[26:38], socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            s.sendto(synth.vxlan(frame, VNI), ("127.0.0.1", port))
    finally:
        for s in socks.values():
            s.close()


def kafka_pairs(broker, expected):
    msgs = consume_all(broker.bootstrap, "akto.api.logs", expect=len(expected), timeout=90)
    return [json.loads(m.value()) for m in msgs]


def wait_status(http_port, predicate, timeout=30):
    """/status once `predicate` holds (workers report to the supervisor periodically)."""
    deadline = time.time() + timeout
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/status", timeout=5) as r:
            st = json.loads(r.read())
        if predicate(st):
            return st
        assert time.time() < deadline, json.dumps(st)[:2000]
        time.sleep(0.25)


def test_the_image_holds_the_runtime_and_nothing_to_build_with(docker, image):
    cfg = docker.inspect(image)["Config"]
    assert cfg["User"] == "10001:10001"
    assert cfg["Entrypoint"] == ["appliance"] and cfg["Cmd"] == ["run"]
    assert {"4789/udp", "8000/tcp"} <= set(cfg["ExposedPorts"])
    hc = cfg["Healthcheck"]
    assert hc["Test"][0] == "CMD" and hc["Test"][1] == "/opt/appliance/bin/python"
    assert hc["Interval"] == 15 * 10**9 and hc["Retries"] == 3
    probe = ("id -u; appliance --version; python -c 'import sys; print(sys.version_info >= (3, 11))';"
             " for t in cc gcc clang llc make; do command -v $t; done;"
             " ls -d /src /wheels /opt/build 2>/dev/null;"
             " python -m pip --version >/dev/null 2>&1 && echo has-pip;"
             " python -c 'import pcapy, confluent_kafka, orjson, kubernetes; print(\"imports\")';"
             # the eBPF collector's CO-RE object, compiled in the build stage, and libbpf1
             " python -c 'import appliance.ebpf, pathlib; p = pathlib.Path(appliance.ebpf.__file__)"
             ".parent / \"bpf/collector.bpf.o\"; print(\"bpf\", p.stat().st_size > 0)';"
             " ls /usr/lib/*/libbpf.so.1 >/dev/null && echo libbpf1")
    out = docker("run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c", probe).stdout
    # the image runs the compiled core (its build stage has the compiler)
    assert out.split() == ["10001", "appliance", __version__, "(core:", "cython", "(compiled))",
                           "True", "imports", "bpf", "True", "libbpf1"], out


def test_aws_mode_hardened_as_documented_delivers_vxlan_pairs_to_kafka(docker, image, broker, names):
    name, volume = names
    doc = readme_runs()["aws"]
    udp, http = free_port(socket.SOCK_DGRAM), free_port()
    argv = as_test_run(doc, name=name, volume=volume, image=image, env={
        "AKTO_KAFKA_BROKER_MAL": broker.bootstrap, "APPLIANCE_LISTEN": f"127.0.0.1:{udp}",
        "APPLIANCE_HTTP": f"127.0.0.1:{http}", "APPLIANCE_WORKERS": "2",
        "AKTO_TRAFFIC_BATCH_TIME_SECS": "0.05"})
    cid = start(docker, argv, name, volume)
    wait_health(docker, cid)

    host = docker.inspect(cid)["HostConfig"]
    assert host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert host["NetworkMode"] == "host" and "no-new-privileges" in host["SecurityOpt"]
    st = proc_status(docker, cid)
    assert st["Uid"].split()[0] == "10001" and st["Gid"].split()[0] == "10001"
    assert int(st["CapEff"], 16) == 0 and int(st["CapBnd"], 16) == 0
    assert st["NoNewPrivs"] == "1"

    frames, expected = traffic(333, 3)
    send_vxlan(frames, udp)
    recs = kafka_pairs(broker, expected)
    assert len(recs) == len(expected) == 999
    assert {key(r) for r in recs} == expected
    assert {r["akto_vxlan_id"] for r in recs} == {str(VNI)}
    assert {r["source"] for r in recs} == {"MIRRORING"} and {r["is_pending"] for r in recs} == {"false"}
    s = wait_status(http, lambda s: s["totals"]["pairs"] == 999 and s["kafka"]["delivered"] == 999)
    assert s["totals"]["orphan_responses"] == 0 and len(s["memory"]["workers"]) == 2

    docker("stop", "--time", "60", cid, timeout=90)
    assert docker.inspect(cid)["State"]["ExitCode"] == 0  # SIGTERM: flushed and stopped cleanly
    assert "Traceback" not in docker("logs", cid).stderr


@pytest.fixture
def veth():
    """A veth pair on the host: frames sent on one end arrive on the other, where gcp mode
    captures (their MAC addresses are not the interface's: promiscuous mode matters)."""
    if os.geteuid() != 0:
        pytest.skip("creating veth interfaces needs root")
    tag = uuid.uuid4().hex[:8]
    a, b = f"vma{tag}", f"vmb{tag}"
    subprocess.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b], check=True)
    try:
        for ifname in (a, b):
            subprocess.run(["ip", "link", "set", ifname, "up"], check=True)
        yield a, b
    finally:
        subprocess.run(["ip", "link", "del", a], capture_output=True)


def promiscuity(ifname):
    out = subprocess.run(["ip", "-d", "-j", "link", "show", "dev", ifname], capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out)[0]["promiscuity"]


def test_gcp_mode_captures_with_exactly_the_documented_capabilities(docker, image, broker, names, veth):
    send_if, capture_if = veth
    name, volume = names
    doc = readme_runs()["gcp"]
    caps = {v for o, v in options(doc) if o == "--cap-add"}
    http = free_port()
    env = {"AKTO_KAFKA_BROKER_MAL": broker.bootstrap, "APPLIANCE_MODE": "gcp",
           "APPLIANCE_INTERFACE": capture_if, "APPLIANCE_HTTP": f"127.0.0.1:{http}",
           "APPLIANCE_WORKERS": "2", "AKTO_TRAFFIC_BATCH_TIME_SECS": "0.05"}

    cid = start(docker, as_test_run(doc, name=name, volume=volume, image=image, env=env), name, volume)
    wait_health(docker, cid)
    st = proc_status(docker, cid)
    assert st["Uid"].split()[0] == "0"
    assert int(st["CapEff"], 16) == int(st["CapBnd"], 16) == cap_mask(caps)
    assert promiscuity(capture_if) >= 1  # set through the packet socket, with these caps only

    frames, expected = traffic(60, 2)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((send_if, 0))
        for frame in frames:
            s.send(frame)
    recs = kafka_pairs(broker, expected)
    assert len(recs) == len(expected) == 120
    assert {key(r) for r in recs} == expected
    assert {r["akto_vxlan_id"] for r in recs} == {"0"}
    docker("stop", "--time", "60", cid, timeout=90)
    assert docker.inspect(cid)["State"]["ExitCode"] == 0
    assert promiscuity(capture_if) == 0

    # each documented capability is needed: without it, one line naming the fix
    for cap in sorted(caps):
        tag = uuid.uuid4().hex[:8]
        name, volume = f"appliance-test-{tag}", f"appliance-test-state-{tag}"
        argv = as_test_run(doc, name=name, volume=volume, image=image, env=env, drop_caps={cap})
        cid = start(docker, argv, name, volume)
        assert wait_exit(docker, cid) == 2  # a configuration problem, named before capturing
        err = docker("logs", cid).stderr.strip().splitlines()
        assert len(err) == 1 and "Traceback" not in err[0], err
        assert err[0].startswith(f"appliance: error: capturing on {capture_if} needs CAP_{cap}"), err
        assert f"--cap-add {cap}" in err[0], err
        assert f"CAP_{cap}" in err[0], err
