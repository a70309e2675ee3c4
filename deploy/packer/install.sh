#!/usr/bin/env bash
# Turn a Debian 12 build instance into the appliance image. Run by Packer as root
# (deploy/packer/appliance.pkr.hcl); safe to run again.
#
#   APPLIANCE_CLOUD   aws | gcp: which image this is (the unit's drop-ins differ)
#   APPLIANCE_STAGE   where Packer uploaded the files (default /tmp/appliance):
#                     mirror_appliance-*.whl, appliance.service, gcp-capture.conf and,
#                     optionally, wheels/ (a wheelhouse of the dependencies, for builds
#                     that must not reach a package index)
#
# The image gets: Python 3.11 and a virtual environment in /opt/appliance with the wheel;
# /usr/local/bin/appliance; the systemd unit, enabled, running `appliance boot`; in the
# GCE image the drop-in granting CAP_NET_RAW. No /etc/appliance/appliance.env:
# each instance is configured by its metadata.
set -euo pipefail

cloud="${APPLIANCE_CLOUD:-}"
stage="${APPLIANCE_STAGE:-/tmp/appliance}"
case "$cloud" in
  aws | gcp) ;;
  *) echo "install.sh: APPLIANCE_CLOUD must be aws or gcp, got '${cloud}'" >&2; exit 2 ;;
esac
shopt -s nullglob
wheels=("$stage"/mirror_appliance-*.whl)
if [ "${#wheels[@]}" -ne 1 ]; then
  echo "install.sh: expected one mirror_appliance-*.whl in $stage, found ${#wheels[@]}" >&2
  exit 2
fi
for f in appliance.service gcp-capture.conf; do
  [ -f "$stage/$f" ] || { echo "install.sh: $stage/$f is missing" >&2; exit 2; }
done

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get -y -q -o Dpkg::Options::=--force-confold upgrade  # the image ships patched
apt-get install -y -q --no-install-recommends python3 python3-venv ca-certificates
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "install.sh: Python >= 3.11 is required, this is $(python3 -V)" >&2; exit 2; }

# --- the application ------------------------------------------------------------------
python3 -m venv /opt/appliance
pip_args=(--quiet --no-cache-dir)
if [ -d "$stage/wheels" ]; then
  pip_args+=(--no-index --find-links "$stage/wheels")
fi
/opt/appliance/bin/python -m pip install "${pip_args[@]}" "${wheels[0]}"
ln -sfn /opt/appliance/bin/appliance /usr/local/bin/appliance
/usr/local/bin/appliance --version

# --- the service ----------------------------------------------------------------------
install -D -m 0644 "$stage/appliance.service" /etc/systemd/system/appliance.service
install -d -m 0755 /etc/systemd/system/appliance.service.d
printf '[Service]\n# baked by deploy/packer: read this cloud'"'"'s metadata only\nEnvironment=APPLIANCE_BOOT_CLOUD=%s\n' \
  "$cloud" > /etc/systemd/system/appliance.service.d/10-cloud.conf
if [ "$cloud" = gcp ]; then
  install -m 0644 "$stage/gcp-capture.conf" /etc/systemd/system/appliance.service.d/gcp-capture.conf
else
  rm -f /etc/systemd/system/appliance.service.d/gcp-capture.conf
  # room for the 32 MiB receive buffer each VXLAN socket asks for, without CAP_NET_ADMIN
  printf 'net.core.rmem_max = 33554432\n' > /etc/sysctl.d/60-appliance.conf
fi
install -d -m 0755 /etc/appliance
systemctl enable appliance.service

# --- leave no build traces --------------------------------------------------------------
apt-get clean
rm -rf /var/lib/apt/lists/* "$stage"
if command -v cloud-init >/dev/null 2>&1; then
  cloud-init clean --logs  # instances of the image run cloud-init afresh
fi
echo "install.sh: $(/usr/local/bin/appliance --version) installed for $cloud"
