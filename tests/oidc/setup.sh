#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Installs the test OAuth server's packages (package-lock.json, exactly)
# into tests/oidc/node_modules with the machine's Node.js and npm; does
# nothing when they are already there for this lock file. Run by CTest
# as the setup of the "oidc_peer" fixture.
set -eu
cd "$(dirname "$0")"
for tool in node npm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "setup.sh: $tool is not installed: the private_key_jwt test needs Node.js and npm" >&2
        exit 1
    fi
done
if [ -d node_modules/oidc-provider ] && cmp -s package-lock.json node_modules/.stowbridge-lock; then
    exit 0
fi
npm ci --no-audit --no-fund --loglevel=error
cp package-lock.json node_modules/.stowbridge-lock
