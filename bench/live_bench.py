"""Live aws-mode benchmark: VXLAN datagrams blasted at `appliance run` on loopback.

Sends the benchmark mix (see replay_bench.py) as VXLAN datagrams from one process to an
appliance with one worker writing JSONL, then reads /status: packets received and
processed, pairs, and the rate the worker sustained.  On a 2-core machine the sender
takes the other core, so this measures one worker core.

    python bench/live_bench.py [--connections 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from appliance.broker import free_port  # noqa: E402
from appliance.demo import wait_healthy  # noqa: E402


def status(url):
    with urllib.request.urlopen(url + "/status", timeout=2) as r:
        return json.load(r)


def main() -> int:
    import pcapy

    from replay_bench import OUT, generate

    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=60000, help="datagrams per second to send")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    plain = OUT / f"mix-{args.connections}.pcap"
    if not plain.exists() or not plain.with_suffix(".pairs").exists():
        generate(plain, OUT / f"mix-{args.connections}-vxlan.pcap", args.connections)
    r = pcapy.open_offline(str(plain))
    datagrams = []
    while True:
        hdr, data = r.next()
        if hdr is None:
            break
        datagrams.append(b"\x08\0\0\0\0\x10\x92\0" + data)  # VXLAN header, VNI 4242
    nbytes = sum(len(d) for d in datagrams)
    udp, http = free_port(socket.SOCK_DGRAM), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen([sys.executable, "-m", "appliance", "run", "--mode", "aws",
                                 "--listen", f"127.0.0.1:{udp}", "--http", f"127.0.0.1:{http}",
                                 "--workers", "1", "--jsonl", os.path.join(tmp, "pairs.jsonl"),
                                 "--spool-dir", os.path.join(tmp, "spool")], cwd=ROOT)
        url = f"http://127.0.0.1:{http}"
        try:
            wait_healthy(url, proc)
            tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
            t0 = time.perf_counter()
            sent = 0
            step = 500
            for i in range(0, len(datagrams), step):
                for d in datagrams[i:i + step]:
                    tx.sendto(d, ("127.0.0.1", udp))
                sent += len(datagrams[i:i + step])
                ahead = t0 + sent / args.rate - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)
            send_time = time.perf_counter() - t0
            # workers report once a second: wait until every datagram is counted, or
            # until the count has not moved for 2.5 s (the rest was lost)
            deadline = time.perf_counter() + 60
            st = status(url)
            last_change = time.perf_counter()
            while st["totals"]["packets"] < sent and time.perf_counter() < deadline:
                time.sleep(0.2)
                prev = st["totals"]["packets"]
                st = status(url)
                if st["totals"]["packets"] != prev:
                    last_change = time.perf_counter()
                elif time.perf_counter() - last_change > 2.5:
                    break
            done = time.perf_counter() - t0  # an upper bound: reports lag up to 1 s
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        got = st["totals"]["packets"]
        print(f"sent {sent} VXLAN datagrams ({nbytes / 1e6:.1f} MB) in {send_time:.2f}s; "
              f"appliance processed {got} ({100 * got / sent:.2f}%), {st['totals']['pairs']} pairs "
              f"in {done:.2f}s: offered {sent / send_time:,.0f} packets/s = "
              f"{nbytes * 8 / send_time / 1e9:.3f} Gbit/s to one worker, "
              f"{'no loss' if got == sent else f'{sent - got} lost in the kernel socket buffer'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
