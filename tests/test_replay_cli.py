"""`appliance replay` end to end: files in, JSONL out, errors as one clear line."""

import gzip
import json
import os
import pty
import subprocess
import sys
import time

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


# ----------------------------------------------------------------------------- inputs like tcpdump/zeek


def run_stdin(data: bytes, *args):
    return subprocess.run([sys.executable, "-m", "appliance", *args], input=data,
                          capture_output=True, cwd=ROOT, timeout=120)


def test_read_flag_like_tcpdump_and_zeek(sample, tmp_path):
    out = tmp_path / "o.jsonl"
    proc = run("replay", "-r", str(sample), "--jsonl", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    assert len(lines(out)) == 8
    both = run("replay", "-r", str(sample), "--read", str(sample), "--jsonl", str(out), "-q")
    assert both.returncode == 0 and len(lines(out)) == 16


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_standard_input(tmp_path, fmt):
    path = tmp_path / f"s.{fmt}"
    getattr(synth, f"write_{fmt}")(path, synth.sample_frames())
    for args in (["replay", "-", "-q"], ["replay", "-r", "-", "-q"]):
        proc = run_stdin(path.read_bytes(), *args)
        assert proc.returncode == 0, proc.stderr
        assert len(proc.stdout.splitlines()) == 8
        assert {json.loads(x)["path"] for x in proc.stdout.splitlines()} >= {"/api/users", "/index.html"}


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_gzip_captures_detected_by_content_not_name(tmp_path, fmt):
    path = tmp_path / f"s.{fmt}"
    getattr(synth, f"write_{fmt}")(path, synth.sample_frames())
    data = gzip.compress(path.read_bytes())
    named = tmp_path / f"s.{fmt}.gz"
    named.write_bytes(data)
    unnamed = tmp_path / "capture-without-suffix"
    unnamed.write_bytes(data)
    for p in (named, unnamed):
        proc = run("replay", str(p), "-q")
        assert proc.returncode == 0, proc.stderr
        assert len(proc.stdout.splitlines()) == 8
    piped = run_stdin(data, "replay", "-", "-q")
    assert piped.returncode == 0 and len(piped.stdout.splitlines()) == 8


def test_gzip_and_plain_give_the_same_pairs(tmp_path):
    frames, _ = synth_connections(tmp_path)
    plain = tmp_path / "many.pcap"
    synth.write_pcap(plain, frames)
    gz = tmp_path / "many.pcap.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    a = run("replay", str(plain), "-q")
    b = run("replay", str(gz), "-q")
    assert a.returncode == b.returncode == 0
    assert len(a.stdout.splitlines()) > 100
    assert a.stdout == b.stdout


def synth_connections(tmp_path):
    frames = []
    for i in range(60):
        c = synth.Conversation(client=f"10.9.{i // 200}.{i % 200 + 1}", cport=40000 + i)
        c.handshake()
        for j in range(3):
            c.exchange(synth.http_request("POST", f"/c{i}/{j}", body=b"x" * (i * 37 % 3000)),
                       synth.http_response(200, b"y" * (i * 101 % 70000)))
        c.close()
        frames += c.frames
    return frames, None


def test_truncated_gzip_keeps_the_pairs_before_the_cut(sample, tmp_path):
    cut = tmp_path / "cut.pcap.gz"
    cut.write_bytes(gzip.compress(sample.read_bytes())[:-40])
    out = tmp_path / "o.jsonl"
    proc = run("replay", str(cut), "--jsonl", str(out))
    assert proc.returncode == 4, proc.stderr
    warn = [line for line in proc.stderr.splitlines() if "truncated" in line]
    assert len(warn) == 1 and "gzip stream ends early" in warn[0] and "after packet" in warn[0]
    assert "Traceback" not in proc.stderr
    assert 5 <= len(lines(out)) <= 8


@pytest.mark.parametrize("data, fragment", [
    (b"\x1f\x8b\x08\x00garbage-after-a-gzip-magic", "not a readable gzip stream"),
    (gzip.compress(b"just some text, not a capture\n" * 4), "gzip-compressed unknown magic"),
], ids=["corrupt-gzip", "gzip-of-text"])
def test_bad_gzip_is_one_line_exit_3(tmp_path, data, fragment):
    bad = tmp_path / "bad.pcap.gz"
    bad.write_bytes(data)
    proc = run("replay", str(bad), "-q")
    assert proc.returncode == 3
    assert proc.stderr.strip().count("\n") == 0 and fragment in proc.stderr, proc.stderr


def test_a_live_pipe_is_read_as_it_arrives(sample, tmp_path):
    """A FIFO written slowly (like tcpdump -w - into a pipe): replay reads it as a stream."""
    fifo = tmp_path / "live.pcap"
    os.mkfifo(fifo)
    data = sample.read_bytes()
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "replay", str(fifo), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    with open(fifo, "wb") as w:
        for i in range(0, len(data), 500):
            w.write(data[i:i + 500])
            w.flush()
            time.sleep(0.01)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert len(out.splitlines()) == 8


def test_standard_input_twice_or_nothing_is_a_usage_error(sample):
    proc = run_stdin(b"", "replay", "-", "-r", "-")
    assert proc.returncode == 2 and b"can be read only once" in proc.stderr
    none = run("replay")
    assert none.returncode == 2 and "no capture given" in none.stderr
    assert none.stderr.startswith("usage: appliance replay")


def test_a_terminal_on_standard_input_is_refused_in_one_line():
    master, slave = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "appliance", "replay", "-", "-q"], stdin=slave,
                              capture_output=True, text=True, cwd=ROOT, timeout=60)
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode == 3
    assert proc.stderr.strip() == ("appliance: error: standard input is a terminal: pipe a capture "
                                   "into it (e.g. tcpdump -w - ... | appliance replay -)")


# ----------------------------------------------------------------------------- argument errors


@pytest.mark.parametrize("args, message", [
    (["--max-body", "-5"], "argument --max-body: '-5' is not a positive number of bytes"),
    (["--max-body", "lots"], "argument --max-body: 'lots' is not a positive number of bytes"),
    (["--idle-timeout", "0"], "argument --idle-timeout: '0' is not a number of seconds more than 0"),
    (["--kafka-timeout", "soon"], "argument --kafka-timeout: 'soon' is not a number"),
])
def test_argument_errors_name_the_flag(sample, args, message):
    proc = run("replay", str(sample), *args)
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith(f"appliance replay: error: {message}"), proc.stderr
    assert "_size" not in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("command, positional", [
    (["run"], []), (["replay"], []), (["config"], []), (["boot"], []), (["resend"], ["spool"]),
    (["provision", "aws"], []), (["status"], [])], ids=lambda v: " ".join(v) or "-")
def test_each_command_prints_its_own_usage_on_a_bad_flag(command, positional):
    proc = run(*command, "--foo", *positional)
    assert proc.returncode == 2
    prog = " ".join(["appliance", *command])
    assert proc.stderr.startswith(f"usage: {prog} "), proc.stderr
    assert proc.stderr.strip().endswith(f"{prog}: error: unrecognized arguments: --foo")


def test_flags_are_not_abbreviated(sample):
    proc = run("replay", str(sample), "--max-b", "10")
    assert proc.returncode == 2 and "unrecognized arguments: --max-b" in proc.stderr


def test_extra_methods_make_a_connection_http(tmp_path):
    # an unknown method on the first request line: not HTTP unless configured
    c = synth.Conversation()
    c.handshake().exchange(synth.http_request("FROBNICATE", "/x"), synth.http_response(200, b"ok"))
    c.close()
    path = tmp_path / "custom.pcap"
    synth.write_pcap(path, c.frames)
    out = tmp_path / "out.jsonl"
    assert run("replay", str(path), "--jsonl", str(out), "-q").returncode == 0
    assert lines(out) == []
    assert run("replay", str(path), "--jsonl", str(out), "-q", "--methods", "frobnicate").returncode == 0
    assert [(r["method"], r["statusCode"]) for r in lines(out)] == [("FROBNICATE", "200")]
    bad = run("replay", str(path), "--methods", "GET/1")
    assert bad.returncode == 2 and "argument --methods: 'GET/1' is not a method name" in bad.stderr
