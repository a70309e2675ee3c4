"""Live aws-mode benchmark: the highest rate one worker takes with zero loss, per core.

The shared mix (../shared/bench/gen_mix.py, as in replay_bench.py) is turned into VXLAN
datagrams as AWS traffic mirroring delivers them, and a small C sender (bench/pacer.c,
compiled here with the machine's cc: the sender must not be the bottleneck, and a Python
sender is) sends them over loopback with sendmmsg at a fixed rate to ``appliance run
--mode aws --workers 1`` writing JSONL.  Each trial sends for ``--seconds`` (cycling
through the capture); the worker's packet count in /status says how many it took.  The
rate is raised until a trial loses datagrams, then bisected: the figure is the highest
rate with no loss, for the compiled and the pure-Python core.

The kernel socket buffer (32 MiB) absorbs a burst of about 25k datagrams, so a trial must
be long enough to overflow it when the worker falls behind: the default 5 s does for a
shortfall of 5 % at 100k datagrams/s.

    python bench/live_bench.py [--seconds 5] [--cores cython,python]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import struct
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

OUT = ROOT / "bench" / "out"


def status(url: str) -> dict:
    with urllib.request.urlopen(url + "/status", timeout=2) as r:
        return json.load(r)


def build_pacer() -> Path:
    exe = OUT / "pacer"
    src = ROOT / "bench" / "pacer.c"
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
        if cc is None:
            raise SystemExit("live_bench: no C compiler to build bench/pacer.c (install gcc)")
        subprocess.run([cc, "-O2", "-Wall", "-o", str(exe), str(src)], check=True)
    return exe


def datagram_file(pcap: Path) -> tuple[Path, int]:
    """The capture's frames as VXLAN datagrams (VNI 4242), length-prefixed for the pacer."""
    import pcapy

    out = pcap.with_suffix(".vxlan-dgrams")
    count = 0
    if not out.exists():
        r = pcapy.open_offline(str(pcap))
        with open(str(out) + ".tmp", "wb") as f:
            while True:
                hdr, data = r.next()
                if hdr is None:
                    break
                d = b"\x08\0\0\0\0\x10\x92\0" + data
                f.write(struct.pack("=I", len(d)) + d)
        os.replace(str(out) + ".tmp", out)
    with open(out, "rb") as f:
        while True:
            head = f.read(4)
            if len(head) < 4:
                break
            n = struct.unpack("=I", head)[0]
            f.seek(n, 1)
            count += 1
    return out, count


class Appliance:
    def __init__(self, core: str, tmp: str) -> None:
        self.udp, http = free_port(socket.SOCK_DGRAM), free_port()
        self.url = f"http://127.0.0.1:{http}"
        env = dict(os.environ, APPLIANCE_CORE=core)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "run", "--mode", "aws",
             "--listen", f"127.0.0.1:{self.udp}", "--http", f"127.0.0.1:{http}",
             "--workers", "1", "--jsonl", os.path.join(tmp, f"pairs-{core}.jsonl"),
             "--spool-dir", os.path.join(tmp, f"spool-{core}")],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_healthy(self.url, self.proc)
        st = status(self.url)
        if st.get("core", core) != core:
            raise SystemExit(f"live_bench: asked for the {core} core, /status says {st.get('core')}")

    def packets(self) -> int:
        return int(status(self.url)["totals"]["packets"])

    def settle(self, target: int) -> int:
        """Wait until the worker has counted ``target`` packets, or its count has not moved
        for 2.5 s (workers report once a second)."""
        last, changed = self.packets(), time.monotonic()
        while last < target:
            time.sleep(0.25)
            now = self.packets()
            if now != last:
                last, changed = now, time.monotonic()
            elif time.monotonic() - changed > 2.5:
                break
        return last

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def trial(app: Appliance, pacer: Path, dgrams: Path, rate: float, seconds: float) -> tuple[int, int, float]:
    """(sent, taken, seconds sending) for one trial at ``rate`` datagrams/s."""
    before = app.packets()
    count = int(rate * seconds)
    out = subprocess.run([str(pacer), str(dgrams), "127.0.0.1", str(app.udp), str(rate), str(count)],
                         capture_output=True, text=True, check=True).stdout.split()
    sent, took = int(out[1]), float(out[6])
    taken = app.settle(before + sent) - before
    return sent, taken, took


def search(core: str, pacer: Path, dgrams: Path, avg_bytes: float, seconds: float,
           start: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        app = Appliance(core, tmp)
        try:
            good, bad = 0.0, 0.0
            rate = start
            tries = 0
            while tries < 12:
                tries += 1
                sent, taken, took = trial(app, pacer, dgrams, rate, seconds)
                lost = sent - taken
                offered = sent / took
                print(f"  [{core}] offered {offered:10,.0f} datagrams/s for {took:.1f}s: "
                      f"{'no loss' if lost <= 0 else f'lost {lost} ({100 * lost / sent:.2f}%)'}",
                      flush=True)
                if lost <= 0:
                    good = max(good, offered)
                    if not bad:
                        rate *= 1.6
                        continue
                else:
                    bad = offered if not bad else min(bad, offered)
                if bad and (bad - good) / bad < 0.08:
                    break
                rate = (good + bad) / 2 if good else bad / 2
        finally:
            app.stop()
    print(f"live aws mode, one worker, {core} core: highest zero-loss rate "
          f"{good:,.0f} datagrams/s = {good * avg_bytes * 8 / 1e9:.3f} Gbit/s "
          f"(first loss at {bad:,.0f}/s)" if bad else
          f"live aws mode, one worker, {core} core: no loss up to {good:,.0f} datagrams/s "
          f"(the sender's limit here)", flush=True)


def main() -> int:
    from replay_bench import shared_mix

    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each trial")
    ap.add_argument("--packets", type=int, default=200_000, help="the shared mix's size")
    ap.add_argument("--cores", default="cython,python")
    ap.add_argument("--start", type=float, default=40_000, help="first rate tried")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    mix = shared_mix(args.packets)
    if not mix:
        return 0
    pacer = build_pacer()
    dgrams, count = datagram_file(mix[0][0])
    avg = (dgrams.stat().st_size - 4 * count) / count
    print(f"\n== live aws mode: {count} VXLAN datagrams of the shared mix ({avg:.0f} B average), "
          f"C sendmmsg pacer over loopback, trials of {args.seconds:.0f}s")
    import appliance.core

    for core in args.cores.split(","):
        if core == "cython" and not appliance.core._compiled_state()[0]:
            print(f"  (cython core skipped: {appliance.core._compiled_state()[1]})")
            continue
        search(core, pacer, dgrams, avg, args.seconds, args.start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
