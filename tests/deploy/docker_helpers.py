"""A real Docker engine for the image tests, and the `docker run` commands the docs give.

No registry is reachable here, so nothing is pulled: Debian's `docker.io` is installed by
scripts/system-deps.sh, `dockerd` is started when none is running (and stopped again), a base
image is made from Debian packages (`debootstrap --variant=minbase bookworm` + `docker
import`, cached under a tag derived from its recipe), and the image is built from it with
the classic builder (`DOCKER_BUILDKIT=0`), which is what the Dockerfile promises to work with.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from deploy_helpers import DEPLOY, ROOT

DOCKERFILE = ROOT / "Dockerfile"
IMAGE = "mirror-appliance-test"
BASE_REPO = "mirror-appliance-testbase"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# Changing this (or the host's CA bundle) makes a new base image; the old one is removed.
BASE_RECIPE = ("debootstrap --variant=minbase --include=ca-certificates bookworm "
               f"{DEBIAN_MIRROR}; host CAs; image dpkg/apt settings; no apt lists or cached debs; v2")
# What Debian's official images set for dpkg and apt in a container (debuerreotype): no
# fsync per unpacked file (a build layer is written whole or not at all), no translations.
IMAGE_SETTINGS = {
    "etc/dpkg/dpkg.cfg.d/docker-apt-speedup": "force-unsafe-io\n",
    "etc/apt/apt.conf.d/docker-no-languages": 'Acquire::Languages "none";\n',
    "etc/apt/apt.conf.d/docker-gzip-indexes": 'Acquire::GzipIndexes "true";\n',
}
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PEM = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
# linux/capability.h: the capabilities the docs may name for the container
CAP_BITS = {"NET_ADMIN": 12, "NET_RAW": 13, "SYS_ADMIN": 21, "PERFMON": 38, "BPF": 39}


class DockerUnavailable(Exception):
    """Docker cannot run on this machine (the reason is the message)."""


def sh(cmd: list[str], timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


class Docker:
    """The engine: reuses a running daemon, or starts one (as root) and stops it at the end."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.cli = ""
        self.containers: list[str] = []
        self.volumes: list[str] = []

    @staticmethod
    def find_cli() -> str | None:
        # the client packaged with the daemon first: another client on PATH (a static newer
        # one, say) talks to it too, but this pair is known to agree
        dockerd = shutil.which("dockerd")
        if dockerd:
            packaged = Path(dockerd).resolve().parent.parent / "bin" / "docker"
            if packaged.exists():
                return str(packaged)
        return shutil.which("docker")

    def reachable(self) -> bool:
        if not self.cli:
            return False
        return sh([self.cli, "version", "--format", "{{.Server.Version}}"], timeout=30).returncode == 0

    def ensure(self) -> Docker:
        if os.geteuid() == 0:
            deps = sh(["bash", str(ROOT / "scripts" / "system-deps.sh")], timeout=900)
            if deps.returncode != 0:
                raise RuntimeError(f"scripts/system-deps.sh failed: {deps.stderr[-2000:]}")
        self.cli = self.find_cli() or ""
        if self.reachable():
            return self
        if os.geteuid() != 0:
            raise DockerUnavailable("no Docker daemon is reachable and, not being root, the test "
                                    "can neither install docker.io nor start dockerd")
        if not shutil.which("dockerd") or not self.cli:
            raise DockerUnavailable("scripts/system-deps.sh did not provide dockerd and docker")
        log_path = self.workdir / "dockerd.log"
        # host networking only (every build and container here uses --network host): no
        # bridge, no iptables rules left on the machine
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(["dockerd", "--bridge=none", "--iptables=false"],
                                         stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
                self.proc = None
                raise DockerUnavailable("dockerd exited: " + " | ".join(tail))
            if self.reachable():
                return self
            time.sleep(0.5)
        self.stop()
        raise DockerUnavailable("dockerd did not answer within 60 s")

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        proc = sh([self.cli, *args], timeout=timeout, env={**os.environ, "DOCKER_BUILDKIT": "0"})
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args[:3])} … failed ({proc.returncode}): "
                                 f"{(proc.stderr or proc.stdout)[-3000:]}")
        return proc

    def image_id(self, ref: str) -> str | None:
        proc = self("image", "inspect", "--format", "{{.Id}}", ref, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else None

    def inspect(self, ref: str) -> dict:
        return json.loads(self("inspect", ref).stdout)[0]

    def cleanup(self) -> None:
        for c in self.containers:
            self("rm", "-f", c, check=False)
        for v in self.volumes:
            self("volume", "rm", "-f", v, check=False)
        self.containers.clear()
        self.volumes.clear()

    def stop(self) -> None:
        """Stop the daemon if this test started it (it stops its own containerd)."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def host_ca_pems() -> list[str]:
    try:
        return PEM.findall(HOST_CA_BUNDLE.read_text())
    except OSError:
        return []


def local_base_image(docker: Docker) -> str:
    """A Debian bookworm minbase image made here, cached by a tag derived from its recipe.

    It trusts what this machine trusts: where PyPI is reached through a TLS-inspecting proxy
    (as here), the proxy's CA is in the host's bundle and must be in the image's, just as an
    organisation's base images carry its CA. pip ships its own CA list, so PIP_CERT points
    it at the system bundle then.
    """
    pems = host_ca_pems()
    key = hashlib.sha256("\n".join([BASE_RECIPE, *pems]).encode()).hexdigest()[:12]
    tag = f"{BASE_REPO}:bookworm-{key}"
    if docker.image_id(tag):
        return tag
    if os.geteuid() != 0:
        raise DockerUnavailable("making the local Debian base image needs root (debootstrap)")
    with tempfile.TemporaryDirectory(dir=docker.workdir) as tmp:
        rootfs = Path(tmp) / "rootfs"
        boot = sh(["debootstrap", "--variant=minbase", "--include=ca-certificates", "bookworm",
                   str(rootfs), DEBIAN_MIRROR], timeout=900)
        assert boot.returncode == 0, f"debootstrap failed: {(boot.stderr or boot.stdout)[-3000:]}"
        known = set(PEM.findall((rootfs / "etc/ssl/certs/ca-certificates.crt").read_text()))
        extra = [p for p in pems if p not in known]
        changes = ["CMD [\"/bin/bash\"]"]
        if extra:
            local = rootfs / "usr/local/share/ca-certificates"
            for i, pem in enumerate(extra):
                (local / f"host-{i:03d}.crt").write_text(pem + "\n")
            upd = sh(["chroot", str(rootfs), "update-ca-certificates"], timeout=120)
            assert upd.returncode == 0, upd.stderr
            changes.append("ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt")
        for rel, text in IMAGE_SETTINGS.items():
            (rootfs / rel).write_text(text)
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (rootfs / junk).glob("*"):
                if p.is_file():
                    p.unlink()
        tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."],
                               stdout=subprocess.PIPE)
        args = [docker.cli, "import"]
        for c in changes:
            args += ["--change", c]
        imp = subprocess.run([*args, "-", tag], stdin=tar.stdout, capture_output=True, text=True,
                             timeout=300)
        tar.stdout.close()
        assert tar.wait() == 0 and imp.returncode == 0, f"docker import failed: {imp.stderr}"
    return tag


def build_image(docker: Docker, base: str, log_dir: Path) -> str:
    """`docker build` with the classic builder on `base`; the build stage is tagged too, so
    that replacing an older build frees its layers but keeps the cached package layers."""
    old = {t: docker.image_id(t) for t in (f"{IMAGE}:build", f"{IMAGE}:latest")}
    for target, tag in (("build", f"{IMAGE}:build"), (None, f"{IMAGE}:latest")):
        args = ["build", "--network", "host", "--build-arg", f"BASE_IMAGE={base}", "-t", tag]
        if target:
            args += ["--target", target]
        proc = docker(*args, str(ROOT), timeout=1200, check=False)
        (log_dir / f"build-{target or 'runtime'}.log").write_text(proc.stdout + proc.stderr)
        assert proc.returncode == 0, f"docker build failed:\n{(proc.stdout + proc.stderr)[-4000:]}"
    for t, image_id in old.items():
        if image_id and image_id != docker.image_id(t):
            docker("rmi", image_id, check=False)
    # bases of older recipes, now that no image of ours builds on them
    for ref in docker("images", BASE_REPO, "--format", "{{.Repository}}:{{.Tag}}").stdout.split():
        if ref != base:
            docker("rmi", ref, check=False)
    return f"{IMAGE}:latest"


def wait_health(docker: Docker, cid: str, timeout: float = 90) -> dict:
    """-> the container state once its HEALTHCHECK reports healthy; fails if it stops."""
    deadline = time.time() + timeout
    while True:
        state = docker.inspect(cid)["State"]
        if state.get("Health", {}).get("Status") == "healthy":
            return state
        logs = docker("logs", cid, check=False)
        assert state["Running"], f"container exited {state['ExitCode']}: {logs.stderr[-2000:]}"
        assert time.time() < deadline, f"never healthy: {state.get('Health')} {logs.stderr[-2000:]}"
        time.sleep(0.5)


def wait_exit(docker: Docker, cid: str, timeout: float = 60) -> int:
    proc = docker("wait", cid, timeout=timeout)
    return int(proc.stdout.strip())


def proc_status(docker: Docker, cid: str) -> dict[str, str]:
    """/proc/1/status of the container: PID 1 is `appliance` itself (no init in between)."""
    text = docker("exec", cid, "cat", "/proc/1/status").stdout
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def cap_mask(names) -> int:
    return sum(1 << CAP_BITS[n] for n in names)


# ------------------------------------------------------------------ the documented commands
def documented_runs(text: str) -> dict[str, list[str]]:
    """The `docker run -d …` examples of a text (a README, or the Dockerfile's commented
    header), by mode: 'gcp' for the one that sets APPLIANCE_MODE=gcp, 'aws' for the other."""
    joined = re.sub(r"\\\n\s*#?", " ", text)  # continuation lines (commented in the Dockerfile)
    runs: dict[str, list[str]] = {}
    for line in re.findall(r"docker run -d [^\n]*", joined):
        argv = shlex.split(line)
        mode = "gcp" if "APPLIANCE_MODE=gcp" in argv else "aws"
        assert mode not in runs, f"two {mode} examples: {line}"
        runs[mode] = argv
    return runs


def readme_runs() -> dict[str, list[str]]:
    return documented_runs((DEPLOY / "README.md").read_text())


def dockerfile_runs() -> dict[str, list[str]]:
    return documented_runs(DOCKERFILE.read_text().split("\nFROM ", 1)[0])


VALUED = {"--name", "--restart", "--network", "--cap-drop", "--cap-add", "--tmpfs", "-v",
          "--volume", "-e", "--env", "--user", "-u", "--security-opt", "-p", "--memory",
          "--pids-limit"}


def options(argv: list[str]) -> list[tuple[str, str | None]]:
    """`docker run` argv -> [(option, value)], the image last as ('IMAGE', name)."""
    out, i = [], 2
    while i < len(argv):
        a = argv[i]
        if a in VALUED:
            out.append((a, argv[i + 1]))
            i += 2
        elif a.startswith("-"):
            out.append((a, None))
            i += 1
        else:
            assert i == len(argv) - 1, f"unexpected arguments after the image: {argv[i:]}"
            out.append(("IMAGE", a))
            i += 1
    return out


def as_test_run(documented: list[str], *, name: str, volume: str, image: str,
                env: dict[str, str], drop_caps: set[str] = frozenset()) -> list[str]:
    """The documented command with this test's name, volume, image and environment.

    Every hardening flag is kept as written. `--restart` goes (the test must see the process
    exit, not a restart), the health check is asked every second instead of every 15 s (the
    image's own command), and `drop_caps` removes added capabilities (to show each is needed).
    """
    args = []
    for opt, val in options(documented):
        if opt in ("-e", "--env", "--restart", "--name", "IMAGE"):
            continue
        if opt in ("-v", "--volume") and val.endswith(":/var/lib/appliance"):
            val = f"{volume}:/var/lib/appliance"
        if opt == "--cap-add" and val in drop_caps:
            continue
        args += [opt] if val is None else [opt, val]
    for k, v in env.items():
        args += ["-e", f"{k}={v}"]
    return ["run", "--name", name, "--health-interval", "1s", *args, image]
