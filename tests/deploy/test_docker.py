"""The Dockerfile (no Docker engine here): its structure, its health check run for real, and
the wheel it installs, installed into a clean virtual environment and run."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from deploy_helpers import ROOT, MetadataServer, clean_env

DOCKERFILE = ROOT / "Dockerfile"
BUILD_TOOLS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|make|cmake|[\w.+-]+-dev|"
                         r"pip wheel|python -m build|setup\.py)\b")


def parse_dockerfile(text: str) -> tuple[dict, list[dict]]:
    """-> (global ARG defaults, stages [{name, base, instructions: [(KEYWORD, args)]}])."""
    lines, buf = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continuation are dropped, as Docker does
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        lines.append(buf + stripped)
        buf = ""
    assert not buf, "dangling line continuation"
    args, stages = {}, []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
        elif keyword == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], parts[0])
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append({"name": name, "base": base, "instructions": []})
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1]["instructions"].append((keyword, rest.strip()))
    return args, stages


@pytest.fixture(scope="module")
def dockerfile():
    return parse_dockerfile(DOCKERFILE.read_text())


def instructions(stage, keyword):
    return [rest for kw, rest in stage["instructions"] if kw == keyword]


def test_multi_stage_with_a_pinned_slim_base(dockerfile):
    args, stages = dockerfile
    assert len(stages) >= 2
    build, final = stages[0], stages[-1]
    assert build["name"] == "build" and final["name"] == "runtime"
    for stage in stages:
        # a version pinned to the patch level, slim, and a named Debian release: never "latest"
        assert re.fullmatch(r"python:3\.1[1-9]\.\d+-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?",
                            stage["base"]), stage["base"]
    assert build["base"] == final["base"]  # the wheels are built for the interpreter that runs them


def test_the_build_stage_builds_the_wheel_and_the_final_stage_only_installs_it(dockerfile):
    _, stages = dockerfile
    build, final = stages[0], stages[-1]
    assert any("pip wheel" in r for r in instructions(build, "RUN"))
    runs = instructions(final, "RUN")
    assert not [r for r in runs if BUILD_TOOLS.search(r)], "build tools in the final stage"
    assert not instructions(final, "COPY") and not instructions(final, "ADD"), "sources in the final stage"
    [install] = [r for r in runs if "pip install" in r]
    assert "--mount=type=bind,from=build" in install  # the wheels never become a layer
    assert "--no-index" in install and "--no-cache-dir" in install
    assert "mirror-appliance" in install


def test_runs_appliance_run_as_a_non_root_user_by_default(dockerfile):
    _, stages = dockerfile
    final = stages[-1]
    [user] = instructions(final, "USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) >= 10000  # numeric, so runAsNonRoot can verify it
    assert json.loads(instructions(final, "ENTRYPOINT")[-1]) == ["appliance"]
    assert json.loads(instructions(final, "CMD")[-1]) == ["run"]
    assert instructions(final, "STOPSIGNAL") == ["SIGTERM"]  # the runtime flushes on SIGTERM


def test_exposes_vxlan_and_the_health_port(dockerfile):
    _, stages = dockerfile
    exposed = {p for e in instructions(stages[-1], "EXPOSE") for p in e.split()}
    assert {"4789/udp", "8000/tcp"} <= exposed


def healthcheck_argv(stages) -> list[str]:
    [hc] = instructions(stages[-1], "HEALTHCHECK")
    options, _, cmd = hc.partition(" CMD ")
    assert re.search(r"--interval=\d+s", options) and re.search(r"--timeout=\d+s", options)
    assert re.search(r"--start-period=\d+s", options) and re.search(r"--retries=\d+", options)
    argv = json.loads(cmd)
    assert argv[:2] == ["python", "-c"] and "curl" not in cmd and "wget" not in cmd
    return argv


def test_healthcheck_really_checks_healthz(dockerfile, tmp_path):
    """Run the HEALTHCHECK command against a local /healthz: 200 healthy, 503 and down not."""
    _, stages = dockerfile
    argv = healthcheck_argv(stages)
    state = {"code": 200, "paths": []}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):  # noqa: N802
            state["paths"].append(self.path)
            self.send_response(state["code"])
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    port = server.server_address[1]

    def check(http):
        return subprocess.run([sys.executable, *argv[1:]], env=clean_env({"APPLIANCE_HTTP": http}),
                              capture_output=True, timeout=30).returncode

    try:
        assert check(f"0.0.0.0:{port}") == 0  # binds every address: asks 127.0.0.1
        assert check(f"127.0.0.1:{port}") == 0
        state["code"] = 503
        assert check(f"0.0.0.0:{port}") != 0
    finally:
        server.shutdown()
        server.server_close()
    assert check(f"0.0.0.0:{port}") != 0  # nothing listening
    assert set(state["paths"]) == {"/healthz"}


def test_the_documented_docker_run_flags(dockerfile):
    header = DOCKERFILE.read_text().split("\nFROM ", 1)[0]
    readme = (ROOT / "deploy" / "README.md").read_text()
    for text in (header, readme):
        joined = re.sub(r"\\\n#?", " ", text)  # continuation lines (commented in the Dockerfile)
        gcp = [c for c in re.findall(r"docker run [^\n]*", joined) if "APPLIANCE_MODE=gcp" in c]
        assert gcp, "no gcp-mode docker run example"
        flags = shlex.split(gcp[0])
        # root inside the container, but with only the two capabilities libpcap needs
        assert flags[flags.index("--user") + 1] == "0"
        assert flags[flags.index("--cap-drop") + 1] == "ALL"
        added = {flags[i + 1] for i, f in enumerate(flags) if f == "--cap-add"}
        assert added == {"NET_RAW", "NET_ADMIN"}
        assert "--privileged" not in flags and "--network" in flags
        # aws mode: the image's non-root user and no capability at all
        [aws] = [c for c in re.findall(r"docker run -d [^\n]*", joined) if "APPLIANCE_MODE=gcp" not in c]
        flags = shlex.split(aws)
        assert "--user" not in flags and "--cap-add" not in flags
        assert flags[flags.index("--cap-drop") + 1] == "ALL"


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        candidates = [path] + ["/".join(path.split("/")[:i]) for i in range(1, path.count("/") + 1)]
        hit = any(fnmatch.fnmatch(c, pat) or (pat.startswith("**/") and
                  any(fnmatch.fnmatch(part, pat[3:]) for part in c.split("/"))) for c in candidates)
        if hit:
            excluded = not negate
    return excluded


def test_dockerignore_sends_what_the_build_copies_and_nothing_else(dockerfile):
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    _, stages = dockerfile
    copied = [src for c in instructions(stages[0], "COPY") for src in c.split()[:-1]
              if not src.startswith("--")]
    assert copied
    for src in copied:
        assert (ROOT / src).exists(), src
        assert not dockerignore_excludes(src.rstrip("/"), patterns), src
    assert not dockerignore_excludes("appliance/boot.py", patterns)
    for private in (".venv/bin/python", ".git/config", "tests/deploy/test_docker.py",
                    "infra/cdktf/main.py", "appliance/__pycache__/cli.cpython-311.pyc", "capture.pcap"):
        assert dockerignore_excludes(private, patterns), private


def test_the_wheel_installs_into_a_clean_venv_and_runs(tmp_path):
    """What the image's final stage does: the project's wheel, its dependencies from the index,
    nothing from this checkout; then `appliance --version`, a replay and `appliance boot`."""
    from appliance import __version__, synth

    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(ROOT), "-w", str(dist)],
                   check=True, capture_output=True, timeout=300, cwd=tmp_path)
    [wheel] = dist.glob("mirror_appliance-*.whl")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "appliance/cli/boot.py" in names and "appliance/cli/app.py" in names
    assert not [n for n in names if n.startswith(("tests/", "infra/", "deploy/"))]

    venv = tmp_path / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], capture_output=True,
                          text=True, timeout=600, env=clean_env({"PIP_DISABLE_PIP_VERSION_CHECK": "1"}))
    assert proc.returncode == 0, proc.stderr[-3000:]
    app = venv / "bin" / "appliance"
    env = clean_env()
    env.pop("PYTHONPATH", None)
    run = dict(capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)

    # the installed copy, not this checkout
    where = subprocess.run([str(py), "-c", "import appliance; print(appliance.__file__)"], **run)
    assert str(venv) in where.stdout, where.stdout

    version = subprocess.run([str(app), "--version"], **run)
    import appliance.core

    # built on this machine, the wheel carries the same build of the core as this checkout
    assert version.returncode == 0 and version.stdout.strip().startswith(
        f"appliance {__version__} (core: {appliance.core.CORE}"), version.stdout

    capture = tmp_path / "sample.pcap"
    synth.write_pcap(capture, synth.sample_frames())
    out = tmp_path / "pairs.jsonl"
    replay = subprocess.run([str(app), "replay", str(capture), "--jsonl", str(out), "-q"], **run)
    assert replay.returncode == 0, replay.stderr
    pairs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(pairs) >= 8
    assert {"path", "method", "statusCode", "requestPayload", "responsePayload"} <= set(pairs[0])
    assert all(isinstance(v, str) for p in pairs for v in p.values())
    assert {p["method"] for p in pairs} >= {"GET", "POST", "DELETE"}

    with MetadataServer("gcp") as gcp:
        gcp.attributes = {"appliance-config": "AKTO_KAFKA_BROKER_MAL=k:9092\n"}
        booted = subprocess.run([str(app), "boot", "--cloud", "gcp", "--gcp-endpoint", gcp.url,
                                 "--print-env"], **run)
    assert booted.returncode == 0, booted.stderr
    assert "APPLIANCE_MODE=gcp" in booted.stdout and "AKTO_KAFKA_BROKER_MAL=k:9092" in booted.stdout
