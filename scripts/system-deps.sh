#!/usr/bin/env bash
# Debian packages the test suite needs (real interfaces, replay tools, schema checks).
# Installs only what is missing, so it costs nothing on a machine that has them.
set -euo pipefail
need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v tcpreplay >/dev/null 2>&1 || need+=(tcpreplay)
command -v node >/dev/null 2>&1 || need+=(nodejs npm)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)  # deploy: unit verification
command -v cloud-init >/dev/null 2>&1 || need+=(cloud-init)    # deploy: user-data schema check
# eBPF collector: clang/llvm build the CO-RE objects (make bpf), libbpf1 loads them;
# nginx, curl, tcpdump are real peers and a second capture in the probe tests
command -v clang >/dev/null 2>&1 || need+=(clang)
command -v llvm-strip >/dev/null 2>&1 || need+=(llvm)
[ -e /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
ldconfig -p 2>/dev/null | grep -q 'libbpf\.so\.1 ' || need+=(libbpf1)
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v tcpdump >/dev/null 2>&1 || need+=(tcpdump)
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)        # deploy: the image, built and run
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)  # deploy: a local Debian base image
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "system-deps: missing ${need[*]}; run as root or install them" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # cloud-init is installed only for its schema validator: never let it configure this machine
  case " ${need[*]} " in *" cloud-init "*) touch /etc/cloud/cloud-init.disabled ;; esac
fi
