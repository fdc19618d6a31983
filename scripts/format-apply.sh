#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# format-apply - formats every C/C++ file of ours in place with the
# repository's .clang-format (clang-format 14), so that
# scripts/format-check.sh passes. Run once on a clean tree and commit the
# result on its own ("clang-format the tree"), apart from any change.
# Usage: scripts/format-apply.sh [ROOT]   (ROOT: the tree, default ours)
# Idempotent: a second run changes nothing. Exit status 2 when
# clang-format 14 is missing.
set -euo pipefail

root=${1:-$(dirname "$0")/..}
cd "$root"

cf=$(command -v clang-format-14 || command -v clang-format || true)
if [ -z "$cf" ]; then
    echo "format-apply: clang-format 14 is missing (apt-get install clang-format)" >&2
    exit 2
fi
version=$("$cf" --version | sed -n 's/.*clang-format version \([0-9]*\)\..*/\1/p')
if [ "$version" != 14 ]; then
    echo "format-apply: $cf is version ${version:-unknown}, need 14" >&2
    exit 2
fi

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    mapfile -d '' files < <(git ls-files -z -- '*.c' '*.cc' '*.h')
else
    mapfile -d '' files < <(find . \( -name 'build*' -o -name node_modules \
        -o -name .git \) -prune -o -type f \( -name '*.c' -o -name '*.cc' \
        -o -name '*.h' \) -printf '%P\0' | sort -z)
fi
changed=0
for f in "${files[@]}"; do
    [ -f "$f" ] || continue
    before=$(sha256sum <"$f")
    "$cf" --style=file -i "$f"
    if [ "$(sha256sum <"$f")" != "$before" ]; then
        echo "format-apply: $f"
        changed=$((changed + 1))
    fi
done
echo "format-apply: $changed of ${#files[@]} file(s) changed" >&2
