"""What both clouds share: one exit-code table (documented identically in both READMEs and
both --help texts), the confirmation rule, and the exact command lines for finish/undo."""

from __future__ import annotations

import argparse
import io
import re
from pathlib import Path

import pytest

from provision import exitcodes
from provision.command import command_line, confirm, guarded
from provision.errors import ProvisionError

ROOT = Path(__file__).resolve().parents[2]


def test_codes_are_distinct_and_documented():
    codes = [exitcodes.OK, exitcodes.ERROR, exitcodes.USAGE, exitcodes.PARTIAL, exitcodes.DENIED, exitcodes.QUOTA,
             exitcodes.CONFLICT, exitcodes.NOT_FOUND, exitcodes.INTERRUPTED]
    assert len(set(codes)) == len(codes)
    assert set(exitcodes.MEANING) == set(codes)
    assert exitcodes.DENIED == 4  # the same on AWS and GCP (it was 4 on AWS and 3 on GCP)


@pytest.mark.parametrize("readme", ["provision/aws/README.md", "provision/gcp/README.md"])
def test_both_readmes_carry_the_same_table(readme):
    assert exitcodes.markdown_table() in (ROOT / readme).read_text()


@pytest.mark.parametrize("argv", [
    ["provision", "aws", "--help"], ["provision", "aws", "status", "--help"], ["deprovision", "aws", "--help"],
    ["provision", "gcp", "--help"], ["provision", "gcp", "status", "--help"], ["deprovision", "gcp", "--help"],
])
def test_every_provisioning_help_shows_the_table(argv, capsys):
    from appliance.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert exitcodes.epilog() in out
    if "status" not in argv:
        assert "--yes" in out and "--auto-approve" in out
    assert "--output" in out


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_confirm_rules():
    confirm("3 changes", assume_yes=True, stdin=io.StringIO(""))  # --yes: no question at all
    with pytest.raises(ProvisionError) as refused:
        confirm("3 changes", assume_yes=False, stdin=io.StringIO("yes\n"))  # a pipe is not a person
    assert refused.value.code == exitcodes.USAGE
    prompt = io.StringIO()
    confirm("3 changes", assume_yes=False, stdin=_Tty("Yes\n"), prompt=prompt)
    assert prompt.getvalue() == "Apply 3 changes? [y/N] "
    for answer in ("n\n", "\n", "sure\n", ""):
        with pytest.raises(ProvisionError) as declined:
            confirm("3 changes", assume_yes=False, stdin=_Tty(answer), prompt=io.StringIO())
        assert declined.value.code == exitcodes.ERROR


def test_command_line_reproduces_the_arguments():
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="appliance")
    parser.add_argument("--tag", action="append")
    parser.add_argument("--min", dest="min_replicas", default="1")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("-y", "--yes", "--auto-approve", dest="yes", action="store_true")
    parser.add_argument("-o", "--output", default="text")
    parser.add_argument("--json", dest="output", action="store_const", const="json", default="text")
    args = parser.parse_args(["--tag", "team=a b", "--tag", "x", "--min", "3", "--dry-run", "--auto-approve",
                              "--json"])
    assert command_line(["appliance", "provision", "aws"], parser, args) == \
        "appliance provision aws --tag 'team=a b' --tag x --min 3 --yes --output json"


def test_guard_turns_anything_into_one_line(capsys, monkeypatch):
    monkeypatch.delenv("APPLIANCE_DEBUG", raising=False)

    @guarded
    def boom(args):
        raise LookupError("deep inside\n  something")

    assert boom(argparse.Namespace()) == exitcodes.ERROR
    assert capsys.readouterr().err == ("appliance: error: unexpected error: LookupError: deep inside something "
                                       "(set APPLIANCE_DEBUG=1 for a traceback)\n")
    monkeypatch.setenv("APPLIANCE_DEBUG", "1")
    with pytest.raises(LookupError):
        boom(argparse.Namespace())


def _example_commands(text: str, *, fenced: bool = True) -> list[list[str]]:
    """Every complete `appliance provision|deprovision ...` command in ``text`` (in its code
    blocks when ``fenced``), continuation lines joined, comments dropped; commands with
    placeholders are left out."""
    import shlex

    commands = []
    in_code = not fenced
    pending = ""
    for line in text.splitlines():
        if fenced and line.startswith("```"):
            in_code = not in_code
            pending = ""
            continue
        if not in_code:
            continue
        if not pending and not re.match(r"^(\w+=\S+\s+)*appliance\s", line.strip()):
            continue
        pending += line.rstrip("\\").strip() + " " if line.rstrip().endswith("\\") else line.strip()
        if line.rstrip().endswith("\\"):
            continue
        current, pending = pending, ""
        words = shlex.split(current, comments=True) if current.strip() else []
        while words and "=" in words[0] and not words[0].startswith("-"):
            words = words[1:]  # VAR=value prefixes
        if words[:1] != ["appliance"] or words[1:2] not in (["provision"], ["deprovision"]):
            continue
        if any(w in ("...", "…") or w.startswith("[") or w.isupper() or "..." in w for w in words):
            continue
        commands.append(words[1:])
    return commands


def _help_text(argv: list[str]) -> str:
    import contextlib

    from appliance.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(argv)
    return out.getvalue()


@pytest.mark.parametrize("source", ["README.md", "provision/aws/README.md", "provision/gcp/README.md",
                                    "provision aws --help"])
def test_documented_examples_parse_and_validate(source, monkeypatch):
    """The examples are accepted as written: they parse, and every id, name and format passes
    the same validation the commands run before calling the cloud."""
    from appliance.cli import build_parser
    from provision.aws.spec import build_spec, validate_name, validate_region
    from provision.gcp import spec as gspec
    from provision.gcp.cli import spec_from_args

    for var in ("CLOUDSDK_CORE_PROJECT", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_COMPUTE_REGION"):
        monkeypatch.delenv(var, raising=False)
    if source.endswith("--help"):
        commands = _example_commands(_help_text(source.split()), fenced=False)
    else:
        commands = _example_commands((ROOT / source).read_text())
    assert commands, f"no complete provisioning example found in {source}"
    parser = build_parser()
    for argv in commands:
        args = parser.parse_args(argv)
        cloud = argv[1]
        status = "status" in argv
        if cloud == "aws":
            if args.region:
                validate_region(args.region)
            if argv[0] == "provision" and not status:
                build_spec(args)
            else:
                validate_name(args.name)
        else:
            gspec.validate_project(args.project)
            gspec.validate_region(args.region)
            if argv[0] == "provision" and not status:
                spec_from_args(args)
            elif getattr(args, "name", None):
                gspec.validate_name(args.name)
