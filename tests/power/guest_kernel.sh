#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Fetches the guest kernel of the power-loss test (tests/power): Debian's
# linux-image-amd64, unpacked into a cache directory and never installed
# on this machine. Prints the directory holding boot/vmlinuz-* and
# lib/modules/*/ on success; exits 1 (with the reason on stderr) if the
# package cannot be had.
#
# usage: guest_kernel.sh [CACHE_DIR]   (default /var/cache/stowbridge-power)
set -euo pipefail

cache=${1:-/var/cache/stowbridge-power}

# The versioned package the meta package points at (linux-image-6.1.0-N-amd64).
versioned() {
    apt-cache depends linux-image-amd64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n 1
}

pkg=$(versioned)
if [ -z "$pkg" ]; then
    # No package lists yet (a fresh machine): read them once.
    apt-get update >/dev/null 2>&1 || true
    pkg=$(versioned)
fi
if [ -z "$pkg" ]; then
    # Offline and no lists: use whatever an earlier run unpacked.
    dir=$(ls -d "$cache"/linux-image-*/ 2>/dev/null | sort | tail -n 1)
    if [ -n "$dir" ] && ls "$dir"boot/vmlinuz-* >/dev/null 2>&1; then
        echo "${dir%/}"
        exit 0
    fi
    echo "guest_kernel.sh: apt-cache knows no linux-image-amd64" >&2
    exit 1
fi

dir=$cache/$pkg
if ls "$dir"/boot/vmlinuz-* >/dev/null 2>&1; then
    echo "$dir"
    exit 0
fi

mkdir -p "$cache"
tmp=$(mktemp -d "$cache/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# apt-get download runs as _apt where it can; a root-only cache is fine.
if ! (cd "$tmp" && apt-get download "$pkg" >/dev/null 2>"$tmp/err"); then
    echo "guest_kernel.sh: apt-get download $pkg failed: $(tail -n 1 "$tmp/err")" >&2
    exit 1
fi
mkdir "$tmp/x"
dpkg-deb -x "$tmp"/"$pkg"_*.deb "$tmp/x"
# Only the kernel and its modules are kept (about 400 MB unpacked).
rm -rf "$tmp/x/usr"
mv "$tmp/x" "$dir"
echo "$dir"
