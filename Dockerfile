#
# Mirror appliance image: `appliance run` by default (see deploy/README.md).
#
#   docker build -t mirror-appliance:0.1.0 .
#   docker build --build-arg BASE_IMAGE=debian-bookworm-local -t mirror-appliance:0.1.0 .
#
#   # aws mode (VXLAN on UDP 4789): no privileges, runs as the image's non-root user
#   docker run -d --name appliance --network host --cap-drop ALL --read-only --tmpfs /tmp \
#     --security-opt no-new-privileges -v appliance-state:/var/lib/appliance \
#     -e AKTO_KAFKA_BROKER_MAL=kafka:9092 mirror-appliance:0.1.0
#
#   # gcp mode (libpcap on a NIC): root inside the container, but only NET_RAW
#   docker run -d --name appliance --network host --user 0 --cap-drop ALL --cap-add NET_RAW \
#     --read-only --tmpfs /tmp --security-opt no-new-privileges \
#     -v appliance-state:/var/lib/appliance -e APPLIANCE_MODE=gcp \
#     -e AKTO_KAFKA_BROKER_MAL=kafka:9092 mirror-appliance:0.1.0
#
# Plain Dockerfile syntax: it builds with the classic builder (DOCKER_BUILDKIT=0) as well as
# with BuildKit, and needs no frontend image from a registry.
#
# BASE_IMAGE: any Debian bookworm image. The default is the official Python image, pinned by
# digest (multi-platform index) so a rebuild gets the same bits; update the tag and the digest
# together. A base without a usable Python 3.11+ (a plain Debian, or one made locally with
# `debootstrap --variant=minbase bookworm` and `docker import`, as the tests do) gets
# Debian's python3 from apt in both stages. Both stages use the same base: the virtual
# environment built in the first one links to that base's interpreter.
ARG BASE_IMAGE=python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1

# ---------------------------------------------------------------------------- build
# Compiles everything the project's build compiles (`pip wheel .`: C/Cython extensions with
# the compiler and Python headers, BPF objects with clang/llvm against libbpf's headers) and
# installs the wheels into /opt/appliance, a virtual environment without pip. Compilers,
# headers, wheels and sources stay in this stage.
FROM ${BASE_IMAGE} AS build
ARG DEBIAN_FRONTEND=noninteractive
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
RUN set -eu; \
    pkgs="ca-certificates build-essential pkg-config clang llvm libbpf-dev libpcap-dev"; \
    if ! python3 -c 'import sys, sysconfig, os, ensurepip, venv; sys.exit(sys.version_info < (3, 11) or not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null; \
    then pkgs="$pkgs python3 python3-venv python3-dev"; fi; \
    apt-get update; \
    apt-get install -y --no-install-recommends $pkgs; \
    rm -rf /var/lib/apt/lists/*
# pip for the build only (bookworm's and the python image's are both recent enough for
# `pip --python`, which installs into a venv that has no pip of its own)
RUN python3 -m venv /opt/build
WORKDIR /src
# The build context is already the allow-list in .dockerignore: exactly what the wheel
# build reads. A file a build step adds (setup.py for extensions, say) goes there.
COPY . ./
# the eBPF collector's CO-RE objects (package data of the wheel), compiled here for this image
# (the k8s extra: the eBPF DaemonSet looks pods up with the official kubernetes client)
RUN make bpf \
 && /opt/build/bin/pip wheel --wheel-dir /wheels '.[k8s]' \
 && ls /wheels/mirror_appliance-*.whl \
 && python3 -m venv --without-pip /opt/appliance \
 && /opt/build/bin/pip --python /opt/appliance/bin/python install --no-index \
      --find-links /wheels 'mirror-appliance[k8s]' \
 && /opt/appliance/bin/appliance --version

# ---------------------------------------------------------------------------- runtime
# The interpreter and shared libraries the runtime loads, and the virtual environment built
# above: no compiler, no headers, no pip, no source tree.
FROM ${BASE_IMAGE} AS runtime
ARG DEBIAN_FRONTEND=noninteractive
LABEL org.opencontainers.image.title="mirror-appliance" \
      org.opencontainers.image.description="Mirrored traffic -> HTTP pairs -> Kafka (Akto-compatible)" \
      org.opencontainers.image.licenses="Apache-2.0"
# libbpf1 for the eBPF front end; ca-certificates for Kafka over TLS; python3 only when the
# base has none (the same test as in the build stage, so both stages agree).
RUN set -eu; \
    pkgs="libbpf1 ca-certificates"; \
    if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; \
    then pkgs="$pkgs python3"; fi; \
    apt-get update; \
    apt-get install -y --no-install-recommends $pkgs; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
COPY --from=build /opt/appliance /opt/appliance
ENV PATH=/opt/appliance/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    APPLIANCE_HTTP=0.0.0.0:8000
# A fixed numeric UID so that Kubernetes' runAsNonRoot can check it. /var/lib/appliance holds
# the Kafka spool and the session map (mount a volume there to keep the spool across restarts);
# its group is root's so that gcp mode, root without CAP_DAC_OVERRIDE, can write there too.
RUN appliance --version \
 && groupadd --system --gid 10001 appliance \
 && useradd --system --uid 10001 --gid appliance --home-dir /var/lib/appliance \
      --shell /usr/sbin/nologin appliance \
 && install -d -o appliance -g 0 -m 0770 /var/lib/appliance /var/lib/appliance/spool
WORKDIR /var/lib/appliance
USER 10001:10001
# 4789/udp: VXLAN from AWS Traffic Mirroring (aws mode); 8000: /healthz /metrics /status
EXPOSE 4789/udp 8000/tcp
# No curl in the image: the stdlib asks /healthz on the address APPLIANCE_HTTP names
# (127.0.0.1 when it binds every address); a 503 or no answer raises, and python exits 1.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/opt/appliance/bin/python", "-c", "import os,urllib.request as u; h,_,p=os.environ.get('APPLIANCE_HTTP','0.0.0.0:8000').rpartition(':'); h=h.strip('[]'); h='127.0.0.1' if h in ('','0.0.0.0','::') else h; u.urlopen('http://%s:%s/healthz' % ('[%s]' % h if ':' in h else h, p), timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["appliance"]
CMD ["run"]
