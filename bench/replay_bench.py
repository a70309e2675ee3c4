"""Replay benchmark: realistic keep-alive HTTP mix, plain and VXLAN-wrapped.

Generates (once, cached under bench/out/) a capture of thousands of interleaved
keep-alive connections with 1-20 requests each, requests of 200 B-2 KB, responses of
200 B-64 KB over several segments, some chunked and some gzip; plus a copy wrapped in
VXLAN as AWS traffic mirroring delivers it.  Then prints, for each file:

  - a bare pcapy-ng ``next_batch`` read loop over the file (the ceiling for any
    Python consumer of libpcap), and
  - ``appliance replay FILE --jsonl OUT`` end to end, as a subprocess,

as packets/s, pairs/s and Gbit/s of captured bytes, per core (one process).

    python bench/replay_bench.py [--connections 2000] [--runs 3]
"""

from __future__ import annotations

import argparse
import heapq
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance import synth  # noqa: E402

OUT = ROOT / "bench" / "out"


def _body(rng: random.Random, n: int) -> bytes:
    words = [b"alpha", b"beta", b"gamma", b"delta", b"user", b"id", b"name", b"value", b"42"]
    out = []
    size = 0
    while size < n:
        w = rng.choice(words)
        out.append(w)
        size += len(w) + 1
    return b" ".join(out)[:n]


def connection_frames(rng: random.Random, idx: int, t0: float, counter: list):
    client = f"10.{1 + idx // 60000 % 200}.{idx // 250 % 250}.{idx % 250 + 1}"
    conv = synth.Conversation(client=client, server=f"10.200.0.{idx % 16 + 1}",
                              cport=1024 + idx % 60000, sport=8080, t=t0,
                              step=0.0002)
    conv.handshake()
    for j in range(rng.randint(1, 20)):
        req_body = _body(rng, rng.randint(0, 1800)) if rng.random() < 0.4 else b""
        method = "POST" if req_body else "GET"
        req = synth.http_request(method, f"/api/v1/items/{idx}/{j}?q={rng.randint(0, 999)}",
                                 req_body, [("User-Agent", "bench/1.0"),
                                            ("Accept", "application/json")])
        pad = max(0, rng.randint(200, 2048) - len(req))
        if pad:
            req = req.replace(b"\r\n\r\n", b"\r\nX-Pad: " + b"p" * pad + b"\r\n\r\n", 1)
        size = int(200 * (320 ** rng.random()))  # 200 B .. 64 KB, log-uniform
        body = _body(rng, size)
        r = rng.random()
        if r < 0.15:
            resp = synth.http_response(200, synth.chunked(body, 4096),
                                       [("Transfer-Encoding", "chunked"),
                                        ("Content-Type", "application/json")])
        elif r < 0.30:
            resp = synth.http_response(200, synth.gzip_bytes(body),
                                       [("Content-Encoding", "gzip"),
                                        ("Content-Type", "application/json")])
        else:
            resp = synth.http_response(200, body, [("Content-Type", "application/json")])
        conv.exchange(req, resp)
        counter[0] += 1
        conv.t += rng.random() * 0.01
    conv.close()
    return conv.frames


def generate(path: Path, vxlan_path: Path, connections: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    streams = []
    counter = [0]
    for i in range(connections):
        streams.append(connection_frames(rng, i, 1_700_000_000.0 + rng.random() * 2.0, counter))
    path.with_suffix(".pairs").write_text(str(counter[0]))
    merged = heapq.merge(*streams, key=lambda f: f[0])
    frames = list(merged)
    synth.write_pcap(path, frames)
    vx = []
    for ts, frame in frames:
        # AWS sets the outer UDP source port from a hash of the inner flow
        vx.append((ts, synth.wrap_vxlan(frame, 4242, sport=49152 + (hash(frame[26:34]) & 0x3FFF))))
    synth.write_pcap(vxlan_path, vx)


def bare_read(path: Path, batch: bool) -> tuple[int, int, float]:
    """A bare pcapy-ng read loop over the file: the ceiling for any Python consumer."""
    import pcapy

    t = time.perf_counter()
    r = pcapy.open_offline(str(path))
    packets = 0
    nbytes = 0
    if batch:
        while True:
            buf, meta = r.next_batch(2048)
            if not meta:
                break
            packets += len(meta) // 16
            nbytes += len(buf)
    else:
        while True:
            hdr, data = r.next()
            if hdr is None:
                break
            packets += 1
            nbytes += len(data)
    return packets, nbytes, time.perf_counter() - t


def replay(path: Path, core: str) -> tuple[int, float, float, str]:
    """(pairs, wall seconds, CPU seconds, summary) of `appliance replay FILE --jsonl OUT`
    on the given core build."""
    out = OUT / (path.stem + ".jsonl")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "appliance", "replay", str(path), "--jsonl",
                           str(out)], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, APPLIANCE_CORE=core))
    elapsed = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"replay failed: {proc.stderr.strip()}")
    with open(out, "rb") as f:
        pairs = sum(1 for _ in f)
    out.unlink()
    return pairs, elapsed, cpu, proc.stderr.strip()


def shared_mix(packets: int) -> list[tuple[Path, int]]:
    """The mix performance is judged on (../shared/bench/gen_mix.py), plain and VXLAN."""
    gen = ROOT.parent / "shared" / "bench" / "gen_mix.py"
    if not gen.exists():
        print(f"(skipping the shared mix: {gen} not found)")
        return []
    files = []
    for vx in (False, True):
        path = OUT / f"shared-mix-{packets}{'-vxlan' if vx else ''}.pcap"
        if not path.exists():
            subprocess.run([sys.executable, str(gen), str(path), "--packets", str(packets)]
                           + (["--vxlan"] if vx else []), check=True, capture_output=True)
        want = int(Path(str(path) + ".pairs").read_text())
        files.append((path, want))
    return files


def project_mix(connections: int) -> list[tuple[Path, int]]:
    plain = OUT / f"mix-{connections}.pcap"
    wrapped = OUT / f"mix-{connections}-vxlan.pcap"
    if not plain.exists() or not wrapped.exists() or not plain.with_suffix(".pairs").exists():
        t = time.perf_counter()
        generate(plain, wrapped, connections)
        print(f"generated {plain.name} and {wrapped.name} in {time.perf_counter() - t:.1f}s")
    want = int(plain.with_suffix(".pairs").read_text())
    return [(plain, want), (wrapped, want)]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=2000, help="the project's own mix")
    ap.add_argument("--packets", type=int, default=200_000, help="the shared mix")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cores", default="cython,python", help="core builds to measure")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    import appliance.core

    cores = args.cores.split(",")
    if "cython" in cores and not appliance.core._compiled_state()[0]:
        print(f"(cython core skipped: {appliance.core._compiled_state()[1]})")
        cores.remove("cython")
    print("Per core (one process), for each build of the core. 'CPU' rates divide by the\n"
          "process's CPU time (user+sys), which a busy machine distorts less than wall time;\n"
          "both include start-up (under 0.1 s).")
    for title, files in (("shared mix (../shared/bench/gen_mix.py)", shared_mix(args.packets)),
                         ("project mix (bench/replay_bench.py)", project_mix(args.connections))):
        print(f"\n== {title}")
        for path, want in files:
            packets, nbytes, _ = bare_read(path, True)
            best_next = min(bare_read(path, False)[2] for _ in range(args.runs))
            best_batch = min(bare_read(path, True)[2] for _ in range(args.runs))
            print(f"{path.name}: {packets} packets, {nbytes / 1e6:.1f} MB, {want} pairs, "
                  f"{nbytes / max(want, 1) / 1e3:.1f} KB per pair")
            print(f"  pcapy-ng next()             : {packets / best_next:12,.0f} packets/s "
                  f"{'':17}{nbytes * 8 / best_next / 1e9:7.2f} Gbit/s")
            print(f"  pcapy-ng next_batch()       : {packets / best_batch:12,.0f} packets/s "
                  f"{'':17}{nbytes * 8 / best_batch / 1e9:7.2f} Gbit/s")
            for core in cores:
                runs = [replay(path, core) for _ in range(args.runs)]
                pairs, wall, _, summary = min(runs, key=lambda r: r[1])
                cpu = min(r[2] for r in runs)
                verdict = "every pair" if pairs == want else f"MISSING {want - pairs} of {want} pairs"
                for label, secs in (("wall", wall), ("CPU", cpu)):
                    print(f"  {core:6} replay->JSONL {label:4}: {packets / secs:12,.0f} packets/s "
                          f"{pairs / secs:10,.0f} pairs/s {nbytes * 8 / secs / 1e9:7.3f} Gbit/s "
                          f"({secs:.2f}s, best of {args.runs}; {verdict})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
