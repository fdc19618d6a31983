#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# promtool_check.sh metrics SAMPLE_PROGRAM | rules RULES_FILE
#
# metrics: the exposition text of the whole metrics catalog (printed by
# metrics_sample) passes `promtool check metrics`: parse errors and lint
# problems (names, units, help) fail (test_metrics_promtool).
# rules: the shipped alert rules pass `promtool check rules`
# (test_alert_rules).
# Skips (77) only when promtool (Debian package prometheus) is absent.
set -u
mode=$1
arg=$2
if ! command -v promtool >/dev/null 2>&1; then
    echo "SKIP: promtool not installed (Debian package prometheus)"
    exit 77
fi
if [ "$mode" = rules ]; then
    exec promtool check rules "$arg"
fi
out=$(mktemp) || exit 1
trap 'rm -f "$out"' EXIT
"$arg" >"$out" || { echo "FAIL: $arg failed"; exit 1; }
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
