#!/bin/sh
# test_metrics_promtool: the exposition text of the whole metrics catalog
# (metrics_sample) passes `promtool check metrics` (Debian's prometheus
# package): parse errors and lint problems (names, units, help) fail.
# Skips (77) only when promtool is not installed.
set -u
sample=$1
if ! command -v promtool >/dev/null 2>&1; then
    echo "SKIP: promtool not installed (Debian package prometheus)"
    exit 77
fi
out=$(mktemp) || exit 1
trap 'rm -f "$out"' EXIT
"$sample" >"$out" || { echo "FAIL: metrics_sample failed"; exit 1; }
lines=$(grep -c . "$out")
if [ "$lines" -lt 50 ]; then
    echo "FAIL: only $lines lines of metrics"
    exit 1
fi
if ! promtool check metrics <"$out"; then
    echo "FAIL: promtool check metrics rejected the text:"
    cat "$out"
    exit 1
fi
echo "ok: promtool check metrics accepted $lines lines"
