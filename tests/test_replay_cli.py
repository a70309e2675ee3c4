"""`appliance replay` end to end: files in, JSONL out, errors as one clear line."""

import json
import os
import subprocess
import sys

import pytest

from appliance import synth

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True,
                          text=True, cwd=cwd or ROOT, timeout=120)


@pytest.fixture
def sample(tmp_path):
    path = tmp_path / "sample.pcap"
    synth.write_pcap(path, synth.sample_frames())
    return path


def lines(path):
    return [json.loads(x) for x in open(path, encoding="utf-8")]


def test_replay_to_file_and_summary(sample, tmp_path):
    out = tmp_path / "pairs.jsonl"
    proc = run("replay", str(sample), "--jsonl", str(out))
    assert proc.returncode == 0, proc.stderr
    recs = lines(out)
    assert len(recs) == 8
    assert {r["path"] for r in recs} >= {"/api/users?limit=2", "/api/users", "/index.html",
                                          "/api/stream", "/api/users/9"}
    summary = proc.stderr.strip().splitlines()[-1]
    for word in ("packets", "bytes", "connections", "8 pairs", "pending", "malformed", "gaps",
                 "decode errors", "packets/s"):
        assert word in summary
    assert "Traceback" not in proc.stderr


def test_replay_to_stdout_by_default(sample):
    proc = run("replay", str(sample), "-q")
    assert proc.returncode == 0
    recs = [json.loads(x) for x in proc.stdout.splitlines()]
    assert len(recs) == 8 and proc.stderr == ""


def test_several_captures_and_pcapng(tmp_path):
    a = tmp_path / "a.pcapng"
    synth.write_pcapng(a, synth.sample_frames())
    c = synth.Conversation(client="10.5.5.5", cport=41000)
    c.handshake().exchange(synth.http_request("GET", "/b"), synth.http_response(200, b"b")).close()
    b = tmp_path / "b.pcap"
    synth.write_pcap(b, c.frames, nanosecond=True)
    out = tmp_path / "o.jsonl"
    proc = run("replay", str(a), str(b), "--jsonl", str(out))
    assert proc.returncode == 0, proc.stderr
    recs = lines(out)
    assert len(recs) == 9 and recs[-1]["path"] == "/b"


@pytest.mark.parametrize("link", ["ethernet", "raw", "sll", "sll2", "null"])
def test_link_types_from_files(tmp_path, link):
    c = synth.Conversation(link=link)
    c.handshake().exchange(synth.http_request("GET", "/l"), synth.http_response(200, b"l")).close()
    path = tmp_path / f"{link}.pcap"
    synth.write_pcap(path, c.frames, linktype=synth.LINKTYPES[link])
    out = tmp_path / "o.jsonl"
    proc = run("replay", str(path), "--jsonl", str(out))
    assert proc.returncode == 0, proc.stderr
    assert [r["path"] for r in lines(out)] == ["/l"]


def test_missing_file_is_one_line_exit_3(tmp_path):
    proc = run("replay", str(tmp_path / "nope.pcap"), "-q")
    assert proc.returncode == 3
    assert proc.stderr.strip() == f"appliance: error: {tmp_path / 'nope.pcap'}: no such file"


def test_not_a_capture_is_one_line_exit_3(tmp_path):
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is a text file, not a capture\n" * 10)
    proc = run("replay", str(junk), "-q")
    assert proc.returncode == 3
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "not a pcap or pcapng capture" in proc.stderr


def test_empty_file(tmp_path):
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    proc = run("replay", str(empty), "-q")
    assert proc.returncode == 3 and "empty file" in proc.stderr


def test_truncated_capture_keeps_pairs_and_says_where(sample, tmp_path):
    data = sample.read_bytes()
    # cut in the middle of the packet that carries the last response of the 2nd connection
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) - 300])
    out = tmp_path / "o.jsonl"
    proc = run("replay", str(cut), "--jsonl", str(out))
    assert proc.returncode == 4
    warn = [line for line in proc.stderr.splitlines() if "truncated" in line]
    assert len(warn) == 1 and "after packet" in warn[0] and "byte offset" in warn[0]
    assert "Traceback" not in proc.stderr
    recs = lines(out)
    assert 5 <= len(recs) < 8 + 1
    assert {"/api/users?limit=2", "/api/users", "/index.html"} <= {r["path"] for r in recs}


def test_truncated_file_header(tmp_path):
    bad = tmp_path / "hdr.pcap"
    bad.write_bytes(b"\xd4\xc3\xb2\xa1\x02\x00")
    proc = run("replay", str(bad), "-q")
    assert proc.returncode == 3 and "truncated inside its file header" in proc.stderr


def test_good_files_still_processed_when_one_is_bad(sample, tmp_path):
    out = tmp_path / "o.jsonl"
    proc = run("replay", str(tmp_path / "missing.pcap"), str(sample), "--jsonl", str(out), "-q")
    assert proc.returncode == 3
    assert len(lines(out)) == 8


def test_unwritable_output_is_one_line(sample, tmp_path):
    proc = run("replay", str(sample), "--jsonl", str(tmp_path / "no" / "such" / "dir.jsonl"))
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("appliance: error:") and "cannot write" in proc.stderr


def test_bad_argument_exit_2(sample):
    proc = run("replay", str(sample), "--max-body", "lots")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_demo_prints_pairs():
    proc = run("demo")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count('"path"') == 8
    assert "8 pairs" in proc.stderr
