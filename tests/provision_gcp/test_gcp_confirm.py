"""Applies ask first: the real CLI in a child process, a real terminal (pty) for the answer,
the real google-cloud-compute client against the local Compute server."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from gcp_helpers import PROJECT, REGION, fake, offline, provision_args, run, run_cli_process  # noqa: F401 (fixtures)

from provision import exitcodes

LOC = ("--project", PROJECT, "--region", REGION)


def argv(fake, *extra):
    return [*provision_args("--subnet", "app-a", *extra), "--api-endpoint", fake.endpoint]


def errors(err: str) -> list[str]:
    assert "Traceback" not in err
    return re.findall(r"appliance: error: .*", err)


def test_yes_on_the_terminal_applies(fake):
    code, out, err = run_cli_process(argv(fake), answer="y\n")
    assert code == 0, err
    assert "Plan: 9 to create" in out.splitlines()[-2]  # the plan, then the result
    assert "Apply 9 change(s) to deployment demo in project demo-proj, region us-central1? [y/N]" in err
    assert out.splitlines()[-1].startswith("deployment demo ready:")
    assert len(fake.inserts()) == 9


@pytest.mark.parametrize("answer", ["n\n", "\x04"], ids=["no", "end-of-input"])
def test_anything_but_yes_changes_nothing(fake, answer):
    code, out, err = run_cli_process(argv(fake), answer=answer)
    assert code == exitcodes.ERROR
    assert errors(err) == ["appliance: error: not applied: 9 change(s) to deployment demo in project demo-proj, "
                           "region us-central1 declined at the prompt; nothing was changed"]
    assert fake.mutations() == []
    assert "Plan: 9 to create" in out


def test_no_terminal_and_no_yes_refuses_instead_of_waiting(fake):
    code, out, err = run_cli_process(argv(fake), stdin=subprocess.PIPE, timeout=60)
    assert code == exitcodes.USAGE
    assert err == ("appliance: error: not applying 9 change(s) to deployment demo in project demo-proj, region "
                   "us-central1: stdin is not a terminal, so nobody can confirm; pass --yes (or --auto-approve) to "
                   "apply, or --dry-run to only plan\n")
    assert fake.mutations() == []


def test_deprovision_asks_too(fake, run):
    assert run(*provision_args("--subnet", "app-a"))[0] == 0
    base = ["deprovision", "gcp", *LOC, "--name", "demo", "--api-endpoint", fake.endpoint]
    code, out, err = run(*base, endpoint=False, yes=False)  # in-process: pytest's stdin is no terminal
    assert code == exitcodes.USAGE
    assert "not applying 9 deletion(s) of deployment demo" in errors(err)[0]
    assert fake.deletes() == []
    assert "delete    packet mirroring policy  demo-pm" in out  # the list was shown
    code, out, err = run_cli_process(base, answer="yes\n")
    assert code == 0, err
    assert len(fake.deletes()) == 9
    assert "deployment demo removed: 9 resources deleted" in out


def test_json_apply_keeps_stdout_for_the_document_and_shows_the_plan_on_stderr(fake):
    code, out, err = run_cli_process([*argv(fake), "--output", "json"], answer="y\n")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["applied"] is True and doc["created"] == 9 and doc["result"]["complete"] is True
    assert "plan for deployment demo" in err and "Apply 9 change(s)" in err


def test_auto_approve_is_an_alias_of_yes(fake, run):
    code, out, err = run(*provision_args("--subnet", "app-a"), "--auto-approve", yes=False)
    assert code == 0, err
    assert "Apply" not in err
    assert len(fake.inserts()) == 9


def test_ctrl_c_mid_apply_says_what_exists_and_how_to_go_on(fake):
    """A real SIGINT to the running command, sent while it waits for the answer to its request to
    create the health check (the hook runs in the server before it answers)."""
    import os
    import signal
    import sys
    from pathlib import Path

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
           "GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent/credentials.json", "APPLIANCE_GCP_POLL_INTERVAL": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "appliance", *argv(fake), "--yes"], env=env, text=True,
                            cwd=Path(__file__).resolve().parents[2], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    fake.on("POST", r"/healthChecks$", lambda f, call: os.kill(proc.pid, signal.SIGINT))
    try:
        out, err = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert proc.returncode == exitcodes.INTERRUPTED, err
    assert errors(err)[-1].startswith("appliance: error: interrupted while applying health check demo-hc")
    assert ("Changed before the stop: created firewall rule demo-allow-health; created firewall rule "
            "demo-allow-mirrored.") in out
    assert "To undo, remove everything this deployment created:" in out
