#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Ledger benchmark (issue 12, "Performance"). Run on demand, never in CI:
#
#   bench/bench_ledger.sh [BUILD_DIR] [ROWS] [DIR]
#
# Fills a ledger of ROWS deliveries (default 30 million, about 3.4 GB) in
# DIR (default /var/tmp), then measures inserts of 1000-instance uploads,
# look-ups, study listings, a prune of one day and the RSS (see
# bench/bench_ledger.c). The machine may be shared: everything runs under
# nice -n 19 and ionice -c3. The file is deleted afterwards unless KEEP=1.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
rows=${2:-30000000}
dir=${3:-/var/tmp}
bin=$build/ledger/bench_ledger
[ -x "$bin" ] || { echo "build first: $bin not found" >&2; exit 2; }

# About 115 bytes a row, the -wal and some room.
need_kb=$(( rows * 115 / 1024 + 1024 * 1024 ))
free_kb=$(df -Pk "$dir" | awk 'NR == 2 { print $4 }')
df -h "$dir"
if [ "$free_kb" -lt "$need_kb" ]; then
    echo "not enough room in $dir: $((free_kb / 1024)) MB free," \
         "$((need_kb / 1024)) MB needed" >&2
    exit 2
fi

db=$dir/stowbridge-bench-ledger.$$.db
cleanup() {
    if [ "${KEEP:-0}" != 1 ]; then
        rm -f "$db" "$db-wal" "$db-shm" "$db.bench"
    fi
}
trap cleanup EXIT
echo "ledger: $db, $rows rows"
nice -n 19 ionice -c3 "$bin" "$db" "$rows" 100000
