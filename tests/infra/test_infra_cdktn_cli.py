"""`cdktn synth` as users run it: the npm `cdktn-cli` on the Node.js >= 22 that
infra/cdktf/package.json installs (the npm package `node`), with `npx` from infra/cdktf.

On Node 20 the CLI crashes (`markAsUncloneable is not a function`); the in-process synthesis
of the other infra tests runs on any Node the jsii runtime accepts, so only this test shows
that the documented command works. The CLI and Node come from `make cdktn` (which `make test`
runs; cached until package-lock.json changes); this test runs the same target.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from infra_helpers import CDKTF_DIR, REPO, example

STACKS = ["appliance-aws", "appliance-gcp"]


def without_metadata(node):
    """Drop the "//" construct metadata the CLI's App adds (Testing.synth omits it)."""
    if isinstance(node, dict):
        return {k: without_metadata(v) for k, v in node.items() if k != "//"}
    if isinstance(node, list):
        return [without_metadata(v) for v in node]
    return node


def cli_env(config: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_INFRA")}
    env.pop("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", None)  # Node 22 needs no silencing
    env |= {
        # `python3 main.py` (cdktf.json) finds this environment's Python, as with an activated venv
        "PATH": str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
        "APPLIANCE_INFRA_CONFIG": config,
        "CHECKPOINT_DISABLE": "1",  # no version check against HashiCorp's checkpoint service
    }
    return env


def npx(*args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    # --no-install: the project's own copy, never one fetched on the fly
    return subprocess.run(["npx", "--no-install", *args], cwd=CDKTF_DIR, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cli():
    assert shutil.which("npm") and shutil.which("make"), \
        "npm is missing: run `bash scripts/system-deps.sh` (make test does)"
    proc = subprocess.run(["make", "-s", "-C", str(REPO), "cdktn"], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    version = npx("node", "--version", env=cli_env(""), timeout=60)
    assert version.returncode == 0, version.stderr
    return version.stdout.strip()


def test_the_cli_runs_on_node_22(cli):
    major, minor, _ = (int(x) for x in cli.lstrip("v").split("."))
    assert (major, minor) >= (22, 19) and major == 22  # cdktn-cli 0.24 requires >= 22.19
    lock = json.loads((CDKTF_DIR / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/cdktn-cli"]["version"].startswith("0.24.")
    # the Python library the stacks are written with: the same minor release as the CLI
    assert metadata.version("cdktn").startswith("0.24.")


def test_cdktn_synth_writes_both_stacks_as_the_tests_synthesize_them(cli, synthesized, tmp_path):
    out = tmp_path / "cdktf.out"
    proc = npx("cdktn", "synth", "--output", str(out),
               env=cli_env(os.pathsep.join(["examples/aws.json", "examples/gcp.json"])))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Generated Terraform code for the stacks: appliance-aws, appliance-gcp" in proc.stdout
    assert "markAsUncloneable" not in proc.stdout + proc.stderr

    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["stacks"]) == STACKS
    for name in STACKS:
        tf = json.loads((out / manifest["stacks"][name]["synthesizedStackPath"]).read_text())
        assert tf["//"]["metadata"]["stackName"] == name  # the CLI's App, with its metadata
        written = without_metadata(tf)
        # exactly what the in-process synthesis (which the other infra tests check) produces
        for section in ("resource", "output", "provider", "data"):
            assert written.get(section) == synthesized[name].tf.get(section), (name, section)
        expected_tf = dict(synthesized[name].tf["terraform"])
        # the default local state file is next to cdktf.json, where the CLI runs the app
        assert written["terraform"].pop("backend") == {
            "local": {"path": str(CDKTF_DIR / f"terraform.{name}.tfstate")}}
        expected_tf.pop("backend")
        assert written["terraform"] == expected_tf, name
    aws = json.loads((out / manifest["stacks"]["appliance-aws"]["synthesizedStackPath"]).read_text())
    gcp = json.loads((out / manifest["stacks"]["appliance-gcp"]["synthesizedStackPath"]).read_text())
    assert {"aws_ec2_traffic_mirror_target", "aws_ec2_traffic_mirror_filter", "aws_autoscaling_group",
            "aws_lb", "aws_launch_template"} <= set(aws["resource"])
    assert {"google_compute_packet_mirroring", "google_compute_region_instance_group_manager",
            "google_compute_forwarding_rule", "google_compute_instance_template"} <= set(gcp["resource"])
    assert aws["provider"]["aws"][0]["region"] == example("aws.json")["region"]
    assert gcp["provider"]["google"][0]["project"] == example("gcp.json")["project"]


def test_a_bad_configuration_stops_the_cli_with_one_line_naming_it(cli, tmp_path):
    bad = example("aws.json") | {"ami_id": "ami-xyz"}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    proc = npx("cdktn", "synth", "--output", str(tmp_path / "out"), env=cli_env(str(path)), timeout=180)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert f"appliance-infra: error: {path}: ami_id: must look like ami-0123456789abcdef0, got 'ami-xyz'" \
        in text, text[-3000:]
    assert not (tmp_path / "out" / "manifest.json").exists()
