#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# format-check - fails when a C/C++ file of ours is not formatted as the
# repository's .clang-format says (clang-format 14, --dry-run -Werror).
# Usage: scripts/format-check.sh [ROOT]   (ROOT: the tree, default ours)
# Files: every .c .cc .h that git tracks under ROOT (or, outside a git
# work tree, every one under it except build*/ and node_modules/).
# scripts/format-apply.sh rewrites them in place.
# Exit status: 0 formatted, 1 not (one "file:line: not formatted (N
# places)" line per file, line being the first difference), 2 clang-format
# missing or the wrong major version (another formats differently).
set -euo pipefail

root=${1:-$(dirname "$0")/..}
cd "$root"

cf=$(command -v clang-format-14 || command -v clang-format || true)
if [ -z "$cf" ]; then
    echo "format-check: clang-format 14 is missing (apt-get install clang-format)" >&2
    exit 2
fi
version=$("$cf" --version | sed -n 's/.*clang-format version \([0-9]*\)\..*/\1/p')
if [ "$version" != 14 ]; then
    echo "format-check: $cf is version ${version:-unknown}, need 14" >&2
    exit 2
fi
if [ ! -f .clang-format ]; then
    echo "format-check: no .clang-format in $(pwd)" >&2
    exit 2
fi

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    mapfile -d '' files < <(git ls-files -z -- '*.c' '*.cc' '*.h')
else
    mapfile -d '' files < <(find . \( -name 'build*' -o -name node_modules \
        -o -name .git \) -prune -o -type f \( -name '*.c' -o -name '*.cc' \
        -o -name '*.h' \) -printf '%P\0' | sort -z)
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
bad=0
for f in "${files[@]}"; do
    [ -f "$f" ] || continue
    if ! "$cf" --style=file --dry-run -Werror "$f" 2>"$log"; then
        # One line per file: where the first difference is, and how many.
        n=$(grep -c ': error: code should be clang-formatted' "$log" || true)
        first=$(grep -m1 -o '^[^ ]*:[0-9]*:' "$log" || echo "$f:")
        echo "${first} not formatted (${n} places)"
        bad=$((bad + 1))
    fi
done
if [ $bad -gt 0 ]; then
    echo "format-check: $bad of ${#files[@]} file(s) not formatted (scripts/format-apply.sh)" >&2
    exit 1
fi
echo "format-check: ${#files[@]} file(s) formatted" >&2
