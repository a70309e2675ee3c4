"""The Dockerfile read without an engine: its structure, the documented `docker run` commands,
its health check and package choice run for real, and the wheel installed into a clean
virtual environment and run. test_docker_image.py builds and runs the image itself."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from deploy_helpers import ROOT, MetadataServer, clean_env
from docker_helpers import DOCKERFILE, dockerfile_runs, options, readme_runs

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


def test_builds_with_the_classic_builder():
    """No frontend image (`# syntax=` needs a registry) and no BuildKit-only instruction."""
    text = DOCKERFILE.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I)
    assert not re.search(r"^#\s*(escape|check)\s*=", text, re.M | re.I)
    assert "--mount" not in text and "<<" not in text  # RUN --mount, heredocs
    assert "--chmod" not in text and "--link" not in text and "--parents" not in text


def test_the_base_is_a_build_argument_defaulting_to_a_pinned_slim_python(dockerfile):
    args, stages = dockerfile
    # a version pinned to the patch level, slim, a named Debian release, and the digest
    assert re.fullmatch(r"python:3\.1[1-9]\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", args["BASE_IMAGE"])
    raw = [line.split()[1] for line in DOCKERFILE.read_text().splitlines() if line.startswith("FROM ")]
    assert raw and set(raw) == {"${BASE_IMAGE}"}  # every stage on the same base: the venv links to it
    assert [s["name"] for s in stages] == ["build", "runtime"]


def test_the_build_stage_compiles_and_the_final_stage_only_copies_the_venv(dockerfile):
    _, stages = dockerfile
    build, final = stages
    runs = " ".join(instructions(build, "RUN"))
    # the project's own build (with the extras the image runs), whatever it compiles
    assert re.search(r"pip wheel [^&]*\s'?\.(\[[\w,]+\])?'?(\s|$)", runs)
    # ready for compiled extensions (a C compiler and the Python headers) and for BPF objects
    for pkg in ("build-essential", "python3-dev", "clang", "llvm", "libbpf-dev"):
        assert re.search(rf"\b{re.escape(pkg)}\b", runs), pkg
    assert "venv --without-pip /opt/appliance" in runs and "--no-index" in runs
    final_runs = instructions(final, "RUN")
    assert not [r for r in final_runs if BUILD_TOOLS.search(r)], "build tools in the final stage"
    assert any(re.search(r"\blibbpf1\b", r) for r in final_runs)  # the eBPF loader's library
    assert instructions(final, "COPY") == ["--from=build /opt/appliance /opt/appliance"]
    assert not instructions(final, "ADD")
    env = " ".join(instructions(final, "ENV"))
    assert "PATH=/opt/appliance/bin:$PATH" in env


def test_a_base_without_python_gets_debians_python_in_both_stages(dockerfile, tmp_path):
    """The shell that picks the packages, run for real with a python3 that passes its check
    and one that fails it: the python:3.11-slim default keeps its own interpreter, a bare
    Debian gets bookworm's. The checks themselves run under this interpreter (valid code)."""
    _, stages = dockerfile
    for stage, extra in zip(stages, (["python3", "python3-venv", "python3-dev"], ["python3"]), strict=True):
        [script] = [r for r in instructions(stage, "RUN") if "apt-get install" in r]
        [check] = re.findall(r"python3 -c '([^']+)'", script)
        proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=30)
        assert proc.returncode in (0, 1) and not proc.stderr, proc.stderr
        script = script.replace("apt-get update;", ":;").replace("rm -rf", ": rm -rf")
        script = script.replace("apt-get install -y --no-install-recommends $pkgs;",
                                'echo "$pkgs" > "$OUT";')
        for verdict, wants in (("true", []), ("false", extra)):
            shim = tmp_path / "bin"
            shim.mkdir(exist_ok=True)
            (shim / "python3").unlink(missing_ok=True)
            (shim / "python3").symlink_to(shutil.which(verdict))
            out = tmp_path / "pkgs"
            proc = subprocess.run(["sh", "-c", script], env={"PATH": f"{shim}:/usr/bin:/bin",
                                  "OUT": str(out)}, capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, proc.stderr
            pkgs = out.read_text().split()
            assert [p for p in pkgs if p.startswith("python3")] == wants, (stage["name"], verdict, pkgs)


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
    assert argv[:2] == ["/opt/appliance/bin/python", "-c"] and "curl" not in cmd and "wget" not in cmd
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


HARDENING = {"--network", "--cap-drop", "--cap-add", "--read-only", "--tmpfs", "--user",
             "--security-opt", "--privileged"}


def hardening(argv):
    return sorted((o, v) for o, v in options(argv) if o in HARDENING)


def test_the_documented_docker_run_flags():
    """deploy/README.md and the Dockerfile's header give the same hardened commands (the ones
    test_docker_image.py runs); this is what they must say."""
    readme, header = readme_runs(), dockerfile_runs()
    assert set(readme) == set(header) == {"aws", "gcp"}
    for mode in ("aws", "gcp"):
        assert hardening(readme[mode]) == hardening(header[mode]), mode
        flags = dict(options(readme[mode]))
        assert flags["--network"] == "host" and flags["--cap-drop"] == "ALL"
        assert "--read-only" in flags and flags["--security-opt"] == "no-new-privileges"
        assert "--privileged" not in flags
        assert flags["-v"].endswith(":/var/lib/appliance")  # the spool survives a restart
    # aws mode: the image's non-root user and no capability at all
    assert "--user" not in dict(options(readme["aws"])) and "--cap-add" not in dict(options(readme["aws"]))
    # gcp mode: root inside the container, with only the capability libpcap needs
    gcp = options(readme["gcp"])
    assert dict(gcp)["--user"] == "0"
    assert [v for o, v in gcp if o == "--cap-add"] == ["NET_RAW"]


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
    """The build stage copies the whole context, so the allow-list is what the wheel build
    reads: the packaging files and every package pyproject names, nothing private."""
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    _, stages = dockerfile
    assert instructions(stages[0], "COPY") == [". ./"]
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = project["tool"]["setuptools"]["packages"]["find"]["include"]
    needed = ["pyproject.toml", project["project"]["readme"]]
    needed += [p.rstrip("*") for p in packages]
    needed += [f for f in ("setup.py", "setup.cfg", "MANIFEST.in") if (ROOT / f).exists()]
    for src in needed:
        assert (ROOT / src).exists(), src
        assert not dockerignore_excludes(src, patterns), src
    assert not dockerignore_excludes("appliance/boot.py", patterns)
    for private in (".venv/bin/python", ".git/config", "tests/deploy/test_docker.py",
                    "infra/cdktf/main.py", "infra/cdktf/node_modules/.bin/cdktn",
                    "appliance/__pycache__/cli.cpython-311.pyc", "capture.pcap",
                    "appliance/core/fast.cpython-311-x86_64-linux-gnu.so",
                    "appliance/ebpf/bpf/probe.bpf.o", "Dockerfile"):
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
