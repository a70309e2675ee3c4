"""The CDK Terrain app as the CLI runs it: cdktf.json's "app" command, with CLI-style context."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from infra_helpers import CDKTF_DIR

from appliance_infra import TARGET_VERSIONS


def strip_metadata(node):
    """Drop the "//" construct metadata the CLI-style App adds (Testing.synth omits it)."""
    if isinstance(node, dict):
        return {k: strip_metadata(v) for k, v in node.items() if k != "//"}
    if isinstance(node, list):
        return [strip_metadata(v) for v in node]
    return node


def test_cdktf_json_declares_a_python_app_with_prebuilt_providers():
    cfg = json.loads((CDKTF_DIR / "cdktf.json").read_text())
    assert cfg["language"] == "python"
    assert cfg["app"] == "python3 main.py"
    assert cfg["terraformProviders"] == []  # prebuilt cdktn-provider-aws / -google packages
    assert cfg["targetVersions"] == TARGET_VERSIONS


def test_generated_output_is_ignored_by_git():
    inside = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=CDKTF_DIR, capture_output=True)
    if inside.returncode != 0:
        pytest.skip("not a git work tree")
    proc = subprocess.run(
        ["git", "check-ignore", "-v", "cdktf.out/manifest.json", ".gen/x", "terraform.appliance-aws.tfstate"],
        cwd=CDKTF_DIR,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 3, proc.stdout + proc.stderr


def test_app_command_synthesizes_both_stacks_from_context(tmp_path, synthesized):
    """Run exactly what `cdktn synth` runs, passing context and outdir the way the CLI does
    (CDKTF_CONTEXT_JSON, CDKTF_OUTDIR), and compare with the in-process synthesis."""
    app_cmd = shlex.split(json.loads((CDKTF_DIR / "cdktf.json").read_text())["app"])
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_INFRA")}
    env |= {
        "PATH": venv_bin + os.pathsep + env.get("PATH", ""),  # as with an activated virtualenv
        "CDKTF_OUTDIR": str(tmp_path),
        "CDKTF_CONTEXT_JSON": json.dumps(
            {"applianceInfraConfig": ["examples/aws.json", "examples/gcp.json"], "targetVersions": TARGET_VERSIONS}
        ),
    }
    proc = subprocess.run(app_cmd, cwd=CDKTF_DIR, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert sorted(manifest["stacks"]) == ["appliance-aws", "appliance-gcp"]
    for name in ("appliance-aws", "appliance-gcp"):
        written = strip_metadata(json.loads((tmp_path / manifest["stacks"][name]["synthesizedStackPath"]).read_text()))
        assert written["resource"] == synthesized[name].tf["resource"]
        assert written["output"] == synthesized[name].tf["output"]
        assert written["provider"] == synthesized[name].tf["provider"]
