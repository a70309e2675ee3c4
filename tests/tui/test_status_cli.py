"""`appliance status` and `appliance tui` as a user runs them: subprocesses of the real CLI
against a real /status endpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from statusd import free_port, sample_status

ROOT = Path(__file__).resolve().parents[2]


def appliance(*args: str, columns: int = 160, **extra_env: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS=str(columns), NO_COLOR="1", PYTHONPATH=str(ROOT))
    env.pop("FORCE_COLOR", None)
    env.pop("APPLIANCE_HTTP_TOKEN", None)
    env.update(extra_env)
    return subprocess.run([sys.executable, "-m", "appliance", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)


def test_status_json_is_the_document(server):
    proc = appliance("status", "--url", server.url, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == server.doc
    assert proc.stderr == ""


def test_status_json_follows_the_figures(server):
    doc = sample_status(hostname="changed-host")
    doc["rates"]["pairs_per_s"] = 123.0
    server.set(doc)
    proc = appliance("status", "--url", server.url.replace("http://", "") + "/status", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["hostname"] == "changed-host" and out["rates"]["pairs_per_s"] == 123.0


def test_status_table(server):
    proc = appliance("status", "--url", server.url)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for needle in ("ip-10-0-1-5", server.url, "mode aws", "version 0.1.0", "up 2m03s",
                   "2 workers", "1k pkts/s", "6.4 Mbit/s", "40 pairs/s", "123k packets",
                   "94.2 MiB", "RSS 118 MiB / 500 MiB (24%)", "buffer 1 MiB / 400 MiB (0%)",
                   "connections 45 / 4.1k (1%)", "akto.api.logs", "queued 10",
                   "delivered 4.5k", "ignored port 345", "cloud metadata 12",
                   "malformed 3", "sessions (3)", "4242", "eni-0abc", "i-0def",
                   "tms-0123456789abcdef0", "policy mirror-web-tier", "6.3 Mbit/s",
                   "10m ago"):
        assert needle in out, (needle, out)
    # workers table
    assert "1234" in out and "57.2 MiB" in out


def test_status_table_ebpf_mode(server):
    from statusd import sample_ebpf_status

    server.set(sample_ebpf_status())
    proc = appliance("status", "--url", server.url)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for needle in ("mode ebpf", "processes (4)", "4100", "nginx", "shop/api-7d9f8c6b5-x2kq4",
                   "host", "3.9k", "TLS unlinked 2", "TLS libraries 1", "not attached 1",
                   "seen at both ends 310", "TLS library not traced: pid 6001"):
        assert needle in out, (needle, out)
    assert "sessions" not in out
    narrow = appliance("status", "--url", server.url, columns=80).stdout
    assert "nginx" in narrow and all(len(line) <= 80 for line in narrow.splitlines())


def test_status_table_in_a_narrow_terminal(server):
    proc = appliance("status", "--url", server.url, columns=80)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "ip-10-0-1-5" in out and "4242" in out and "eni-0abc" in out and "1k" in out
    assert all(len(line) <= 80 for line in out.splitlines())


def test_status_unreachable_is_one_line_and_non_zero():
    url = f"http://127.0.0.1:{free_port()}"
    proc = appliance("status", "--url", url)
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"appliance: error: cannot read {url}/status: connection refused"]
    proc = appliance("status", "--url", url, "--json")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and proc.stdout == ""


def test_status_http_error_and_not_json(server):
    server.status_code = 503
    proc = appliance("status", "--url", server.url)
    assert proc.returncode == 1
    assert "HTTP 503" in proc.stderr and "Traceback" not in proc.stderr
    server.status_code = 200
    server.set([1, 2, 3])
    proc = appliance("status", "--url", server.url, "--json")
    assert proc.returncode == 1
    assert "not an appliance (its answer is JSON but not an object)" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("doc", [{}, {"status": "UP", "groups": ["liveness"]},
                                 {"schema": "other-service/health", "version": "3"}],
                         ids=["empty", "another-service", "another-schema"])
def test_status_refuses_json_that_is_not_an_appliance(server, doc):
    """Any JSON is not an appliance: one line, exit 1, nothing on stdout (not a table of
    dashes, not the foreign document as --json)."""
    server.set(doc)
    for args in ((), ("--json",)):
        proc = appliance("status", "--url", server.url, *args)
        assert proc.returncode == 1, proc.stdout
        assert proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr
        assert lines[0].startswith(f"appliance: error: cannot read {server.url}/status: "
                                   "not an appliance ("), lines[0]


def test_status_names_a_schema_version_it_does_not_read(server):
    server.set(dict(sample_status(), schema_version=2))
    proc = appliance("status", "--url", server.url)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "incompatible appliance (its /status is schema version 2, this console reads " \
           "version 1" in proc.stderr


def test_status_table_asks_for_no_history_and_json_gets_all(server):
    """The table does not show the history, so it does not fetch it; --json prints the
    document as served, history included."""
    assert appliance("status", "--url", server.url).returncode == 0
    assert server.queries[-1] == 0
    proc = appliance("status", "--url", server.url, "--json")
    assert server.queries[-1] is None
    assert len(json.loads(proc.stdout)["history"]["totals"]["packets_per_s"]) == 600


def test_bad_url_and_interval_are_usage_errors():
    proc = appliance("status", "--url", "ftp://example.com")
    assert proc.returncode == 2 and "not an http(s) URL" in proc.stderr
    proc = appliance("tui", "--url", "http://host:notaport")
    assert proc.returncode == 2 and "bad port" in proc.stderr
    proc = appliance("tui", "--interval", "0")
    assert proc.returncode == 2 and "must be more than 0" in proc.stderr


def test_tui_without_a_terminal_says_so(server):
    proc = appliance("tui", "--url", server.url)
    assert proc.returncode == 2
    assert "needs a terminal" in proc.stderr and "appliance status" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_lists_the_commands_and_register_is_light():
    proc = appliance("--help")
    assert proc.returncode == 0
    assert "tui" in proc.stdout and "status" in proc.stdout
    proc = appliance("tui", "--help")
    assert "--url" in proc.stdout and "--interval" in proc.stdout
    # registering the sub-commands must not pull in Textual or httpx
    code = ("import sys, argparse; import tui.cli as c; "
            "p = argparse.ArgumentParser(); c.register(p.add_subparsers()); "
            "heavy = [m for m in ('textual', 'httpx', 'rich') if m in sys.modules]; "
            "print(heavy)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_status_sends_the_token_from_the_environment(server):
    """An appliance that protects /status with APPLIANCE_HTTP_TOKEN: without the token the
    error says what to set; with it (from the environment, never a flag) the read works."""
    server.token = "s3cret-token"
    proc = appliance("status", "--url", server.url)
    assert proc.returncode == 1
    assert "HTTP 401" in proc.stderr and "set APPLIANCE_HTTP_TOKEN" in proc.stderr
    proc = appliance("status", "--url", server.url, "--json", APPLIANCE_HTTP_TOKEN="s3cret-token")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["hostname"] == "ip-10-0-1-5"
