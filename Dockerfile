# syntax=docker/dockerfile:1
#
# Mirror appliance image: `appliance run` by default (see deploy/README.md).
#
#   docker build -t mirror-appliance:0.1.0 .
#
#   # aws mode (VXLAN on UDP 4789): no privileges, runs as the image's non-root user
#   docker run -d --name appliance --network host --cap-drop ALL --read-only --tmpfs /tmp \
#     -v appliance-state:/var/lib/appliance -e AKTO_KAFKA_BROKER_MAL=kafka:9092 \
#     mirror-appliance:0.1.0
#
#   # gcp mode (libpcap on a NIC): root inside the container, but only NET_RAW and NET_ADMIN
#   docker run -d --name appliance --network host --user 0 --cap-drop ALL \
#     --cap-add NET_RAW --cap-add NET_ADMIN --read-only --tmpfs /tmp \
#     -v appliance-state:/var/lib/appliance -e APPLIANCE_MODE=gcp \
#     -e AKTO_KAFKA_BROKER_MAL=kafka:9092 mirror-appliance:0.1.0
#
# The base is pinned to a patch release, literally in both FROM lines so that scanners and
# update bots see it; both stages must use the same one (the wheels are built for it).

# ---------------------------------------------------------------------------- build
# Builds the project's wheel and a wheelhouse of its dependencies. Everything that
# compiles (should a dependency have no wheel for this platform) stays in this stage.
FROM python:3.11.13-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential libpcap-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY appliance ./appliance
COPY provision ./provision
COPY tui ./tui
RUN python -m pip wheel --wheel-dir /wheels . \
 && ls /wheels/mirror_appliance-*.whl

# ---------------------------------------------------------------------------- runtime
# Only the wheels go in: no compiler, no headers, no source tree.
FROM python:3.11.13-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="mirror-appliance" \
      org.opencontainers.image.description="Mirrored traffic -> HTTP pairs -> Kafka (Akto-compatible)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    APPLIANCE_HTTP=0.0.0.0:8000
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --no-index --find-links /wheels mirror-appliance \
 && appliance --version
# A fixed numeric UID so that Kubernetes' runAsNonRoot can check it. /var/lib/appliance holds
# the Kafka spool and the session map (mount a volume there to keep the spool across restarts);
# its group is root's so that gcp mode, root without CAP_DAC_OVERRIDE, can write there too.
RUN groupadd --system --gid 10001 appliance \
 && useradd --system --uid 10001 --gid appliance --home-dir /var/lib/appliance \
      --shell /usr/sbin/nologin appliance \
 && install -d -o appliance -g 0 -m 0770 /var/lib/appliance /var/lib/appliance/spool
WORKDIR /var/lib/appliance
USER 10001:10001
# 4789/udp: VXLAN from AWS Traffic Mirroring (aws mode); 8000: /healthz /metrics /status
EXPOSE 4789/udp 8000/tcp
# No curl in a slim image: the stdlib asks /healthz on the address APPLIANCE_HTTP names
# (127.0.0.1 when it binds every address); a 503 or no answer raises, and python exits 1.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os,urllib.request as u; h,_,p=os.environ.get('APPLIANCE_HTTP','0.0.0.0:8000').rpartition(':'); h=h.strip('[]'); h='127.0.0.1' if h in ('','0.0.0.0','::') else h; u.urlopen('http://%s:%s/healthz' % ('[%s]' % h if ':' in h else h, p), timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["appliance"]
CMD ["run"]
