#!/usr/bin/env bash
# Install the Debian packages lemfleet's demo and tests need, once: the test bed (debootstrap,
# systemd-nspawn, the apt proxy, iproute2, procps/psmisc for its teardown), OpenSSH (client and the
# sshd the live tests start), curl, git, CA certificates, python3-venv, and Debian's prometheus (with
# promtool) for the Prometheus test. One list for demo.sh, test.sh and .ci/run. Needs root.
set -euo pipefail
PACKAGES=(debootstrap systemd-container apt-cacher-ng openssh-client openssh-server iproute2 procps psmisc
          ca-certificates curl git python3-venv prometheus)
missing=()
for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "lemfleet needs these Debian packages, installed as root: ${missing[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
for i in 1 2 3; do
    apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}" && exit 0
    sleep $((i * 10))
done
exit 1
