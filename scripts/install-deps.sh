#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs what stowbridge needs to build and test on Debian 12.
# Idempotent: does nothing when every package is already installed.
set -euo pipefail

packages=(
    build-essential cmake pkg-config
    libdcmtk-dev libcurl4-openssl-dev libcjson-dev libssl-dev
    zlib1g-dev         # the Part 10 reader inflates deflated data sets
    libsqlite3-dev     # the delivery ledger (ledger/)
    dcmtk              # storescu, echoscu, dump2dcm: the test modality
    python3 python3-pydicom   # test fixtures (real files, generated ones)
    orthanc orthanc-dicomweb  # a real third-party STOW-RS server for the tests
    procps util-linux  # ps, mount for the disk-full test
    curl               # the demo looks at Orthanc with it
    # The packages and their test (tests/packaging): CPack's RPM needs
    # rpmbuild (from rpm), the DEB dpkg-shlibdeps (dpkg-dev) and file;
    # lintian; a Debian 12 root made with debootstrap; systemd-analyze
    # (systemd) and systemd-nspawn (systemd-container) to rate and boot
    # the unit.
    dpkg-dev file rpm lintian debootstrap systemd systemd-container
    openssl            # a TLS certificate for the packaging test's DICOMweb stub
    libmicrohttpd-dev  # the admin endpoint's HTTP server (admin/)
    # The admin endpoint's tests: promtool and a real Prometheus server
    # (prometheus), a headless browser for the status page (chromium).
    prometheus chromium
    haproxy            # a real load balancer sending PROXY v1/v2 (tls_it.py)
    clang-format       # scripts/format-check.sh (Debian 12: clang-format 14)
    # The power-loss test (tests/power): a qemu guest with a static
    # busybox initramfs, dm-log-writes driven by dmsetup, e2fsck.
    qemu-system-x86 busybox-static dmsetup e2fsprogs
)
# Node.js and npm run the test OAuth server (tests/oidc, oidc-provider);
# a machine that already has them (from any source) keeps its own.
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)

# Its guest kernel: Debian's linux-image-amd64, unpacked into
# /var/cache/stowbridge-power, never installed (a failure only skips it).
bash "$(dirname "$0")/../tests/power/guest_kernel.sh" >/dev/null ||
    echo "install-deps.sh: no guest kernel; tests/power will be skipped" >&2

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
        || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    sudo=sudo
else
    sudo=
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update
$sudo apt-get install -y --no-install-recommends "${missing[@]}"
