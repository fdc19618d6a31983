#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Receive benchmark (issue 16). Run on demand, never in CI:
#
#   bench/bench_receive.sh [BUILD_DIR] [COUNT] [SIZE_KB]
#   (environment: ROUNDS=5 alternating rounds, ASSOC_COUNT=1000 instances
#    per association in the four-association run, SKIP_RSS=1 to leave out
#    the 1000-association RSS run, BASELINE=OTHER_BUILD_DIR to measure
#    that build's stowbridge too, in the same rounds: before/after;
#    JOURNAL_MB=256 the intake journal's size, spool.journal_mb, and
#    BASELINE_JOURNAL_MB the baseline's: BASELINE=build BASELINE_JOURNAL_MB=0
#    compares the journal with the file-by-file commit of the same build;
#    JOURNAL_MAX_KB and BASELINE_JOURNAL_MAX_KB likewise set
#    spool.journal_max_kb, the biggest instance the journal takes)
#
# Every round, alternating, on the same disk:
#   a. the disk's own limits for one writer (build/spool/disk_limits: the
#      durable-write rate of COUNT-sized files by each commit sequence),
#   b. storescu -> stowbridge: COUNT instances of ~SIZE_KB on one
#      association (stowbridge makes each instance durable before 0000),
#   c. the same files -> DCMTK storescp (no fsync at all),
#   d. the disk's limits for four writers at once,
#   e. four storescu at once (ASSOC_COUNT instances each) -> stowbridge,
#   f. the same four at once -> storescp --fork,
#   (b', e': the BASELINE build's stowbridge, if given, after b and e).
# Then stowbridge with fsync disabled (eatmydata, or else the
# build's spool/libbench_nofsync.so preloaded; three rounds, for
# comparison only), and 1000 associations in a row (one C-ECHO each) with
# VmRSS sampled after 100 and 1000. Prints medians with the range of the
# rounds, the ratios to storescp and to the disk's limits, and
# stowbridge's peak RSS (VmHWM). All receivers run with TCP_NODELAY.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
count=${2:-1000}
size_kb=${3:-512}
rounds=${ROUNDS:-5}
assoc_count=${ASSOC_COUNT:-1000}
journal_mb=${JOURNAL_MB:-256}
base_journal_mb=${BASELINE_JOURNAL_MB:-$journal_mb}
journal_max_kb=${JOURNAL_MAX_KB:-1024}
base_journal_max_kb=${BASELINE_JOURNAL_MAX_KB:-$journal_max_kb}
[ "$assoc_count" -gt "$count" ] && assoc_count=$count
bin=$build/bridge/stowbridge
limits=$build/spool/disk_limits
[ -x "$bin" ] || { echo "build first: $bin not found" >&2; exit 2; }
[ -x "$limits" ] || { echo "build first: $limits not found" >&2; exit 2; }

work=$(mktemp -d /var/tmp/stowbridge-bench.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_echo() {
    for _ in $(seq 1 100); do
        echoscu -to 2 -aec "$2" 127.0.0.1 "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "no answer on port $1" >&2
    return 1
}
now() { date +%s.%N; }
# send AE PORT DIR [ASSOCIATIONS]: seconds for that many storescu at once.
send() {
    local ae=$1 port=$2 dir=$3 n=${4:-1} t0 t1 p failed=0
    local spids=()
    t0=$(now)
    for _ in $(seq 1 "$n"); do
        TCP_NODELAY=1 storescu -aec "$ae" --max-pdu 131072 +sd 127.0.0.1 "$port" "$dir" &
        spids+=("$!")
    done
    for p in "${spids[@]}"; do wait "$p" || failed=1; done
    t1=$(now)
    [ "$failed" -eq 0 ] || { echo "storescu to $ae failed" >&2; exit 1; }
    echo "$t1 - $t0" | bc
}
# Received files are moved aside, not deleted, until the end: on ext4
# without a journal (this VM's), inode allocation skips every inode
# deleted in the last 60-360 s, reading its inode-table block each time
# (recently_deleted(), fs/ext4/ialloc.c), which makes a receive right after
# a mass deletion CPU-bound in the kernel for receiver and reference alike.
trash_n=0
clear_spool() {
    trash_n=$((trash_n + 1))
    mkdir -p "$work/trash/$trash_n"
    find "$1/incoming" -maxdepth 1 -type f -exec mv -t "$work/trash/$trash_n" {} +
    sync
}
clear_ref() {
    trash_n=$((trash_n + 1))
    mkdir -p "$work/trash"
    mv "$work/storescp" "$work/trash/$trash_n"
    mkdir "$work/storescp"
    sync
}

echo "generating $count instances of ~${size_kb} KB..."
/usr/bin/python3 "$here/gen_instances.py" "$work/in" "$count" "$size_kb"
total_bytes=$(du -sb "$work/in" | cut -f1)
inst_bytes=$((total_bytes / count))
# The four-association run sends the first ASSOC_COUNT files on each.
mkdir -p "$work/in4"
ls "$work/in" | sort | head -n "$assoc_count" | while read -r f; do
    ln "$work/in/$f" "$work/in4/$f"
done
limit_count=$((count < 300 ? count : 300))

sb_port=$(free_port)
cat > "$work/sb.json" <<JSON
{ "dicom": { "port": $sb_port, "max_pdu": 131072 },
  "spool": { "dir": "$work/spool", "min_free_mb": 0, "journal_mb": $journal_mb,
             "journal_max_kb": $journal_max_kb },
  "log": { "level": "notice" } }
JSON
"$bin" run --config "$work/sb.json" 2>"$work/sb.log" &
sb_pid=$!
pids+=("$sb_pid")
wait_echo "$sb_port" STOWBRIDGE

base_port=""
if [ -n "${BASELINE:-}" ]; then
    [ -x "$BASELINE/bridge/stowbridge" ] || { echo "no $BASELINE/bridge/stowbridge" >&2; exit 2; }
    base_port=$(free_port)
    sed "s/\"port\": $sb_port/\"port\": $base_port/; s|$work/spool|$work/spool-base|; s/\"journal_mb\": $journal_mb/\"journal_mb\": $base_journal_mb/; s/\"journal_max_kb\": $journal_max_kb/\"journal_max_kb\": $base_journal_max_kb/" \
        "$work/sb.json" > "$work/base.json"
    "$BASELINE/bridge/stowbridge" run --config "$work/base.json" 2>"$work/base.log" &
    base_pid=$!
    pids+=("$base_pid")
    wait_echo "$base_port" STOWBRIDGE
fi

# One storescp per association (--fork), unique names since the four
# associations send the same files.
ref_port=$(free_port)
mkdir -p "$work/storescp"
TCP_NODELAY=1 storescp -aet STORESCP --max-pdu 131072 --fork +uf -od "$work/storescp" "$ref_port" &
pids+=("$!")
wait_echo "$ref_port" STORESCP

: > "$work/limits1"
: > "$work/limits4"
sb_times=() ref_times=() sb4_times=() ref4_times=() base_times=() base4_times=()
for round in $(seq 1 "$rounds"); do
    echo "round $round/$rounds..."
    nice "$limits" "$work/limits" "$inst_bytes" "$limit_count" 1 >> "$work/limits1"

    clear_spool "$work/spool"
    sb_times+=("$(send STOWBRIDGE "$sb_port" "$work/in")")
    received=$(ls "$work/spool/incoming" | wc -l)

    clear_ref
    ref_times+=("$(send STORESCP "$ref_port" "$work/in")")

    if [ -n "$base_port" ]; then
        clear_spool "$work/spool-base"
        base_times+=("$(send STOWBRIDGE "$base_port" "$work/in")")
    fi

    nice "$limits" "$work/limits" "$inst_bytes" $((limit_count / 4 + 1)) 4 >> "$work/limits4"

    clear_spool "$work/spool"
    sb4_times+=("$(send STOWBRIDGE "$sb_port" "$work/in4" 4)")
    received4=$(ls "$work/spool/incoming" | wc -l)

    clear_ref
    ref4_times+=("$(send STORESCP "$ref_port" "$work/in4" 4)")

    if [ -n "$base_port" ]; then
        clear_spool "$work/spool-base"
        base4_times+=("$(send STOWBRIDGE "$base_port" "$work/in4" 4)")
    fi
done
if [ -n "$base_port" ]; then
    clear_spool "$work/spool-base"
    kill -TERM "$base_pid"; wait "$base_pid" || true
fi
clear_spool "$work/spool"
clear_ref
sb_hwm=$(awk '/VmHWM/ {print $2}' "/proc/$sb_pid/status")

# --- the price of durability: stowbridge with fsync disabled -------------
# (eatmydata turns fsync into a no-op; never run the service like this)
nofsync=""
nofsync_cmd=()
if command -v eatmydata >/dev/null; then
    nofsync_cmd=(eatmydata)
elif [ -f "$build/spool/libbench_nofsync.so" ]; then
    nofsync_cmd=(env "LD_PRELOAD=$build/spool/libbench_nofsync.so")
fi
if [ "${#nofsync_cmd[@]}" -gt 0 ]; then
    nf_port=$(free_port)
    sed "s/\"port\": $sb_port/\"port\": $nf_port/; s|$work/spool|$work/spool-nofsync|" \
        "$work/sb.json" > "$work/nf.json"
    "${nofsync_cmd[@]}" "$bin" run --config "$work/nf.json" 2>/dev/null &
    nf_pid=$!
    pids+=("$nf_pid")
    wait_echo "$nf_port" STOWBRIDGE
    nf_times=()
    for round in 1 2 3; do
        clear_spool "$work/spool-nofsync"
        nf_times+=("$(send STOWBRIDGE "$nf_port" "$work/in")")
    done
    kill -TERM "$nf_pid"; wait "$nf_pid" || true
    nofsync="${nf_times[*]}"
fi

# --- 1000 associations in a row ----------------------------------------
rss100=0
rss1000=0
if [ "${SKIP_RSS:-0}" != 1 ]; then
    for i in $(seq 1 1000); do
        echoscu -aec STOWBRIDGE 127.0.0.1 "$sb_port"
        [ "$i" -eq 100 ] && rss100=$(awk '/VmRSS/ {print $2}' "/proc/$sb_pid/status")
    done
    rss1000=$(awk '/VmRSS/ {print $2}' "/proc/$sb_pid/status")
fi
sb_hwm_end=$(awk '/VmHWM/ {print $2}' "/proc/$sb_pid/status")
kill -TERM "$sb_pid"; wait "$sb_pid" || true

/usr/bin/python3 - "$count" "$total_bytes" "${sb_times[*]}" "${ref_times[*]}" \
    "$received" "$sb_hwm" "$rss100" "$rss1000" "$nofsync" \
    "$assoc_count" "${sb4_times[*]}" "${ref4_times[*]}" "$received4" \
    "$work/limits1" "$work/limits4" "$sb_hwm_end" "${base_times[*]:-}" \
    "${base4_times[*]:-}" <<'PY'
import collections, statistics, sys
a = sys.argv
n, size = int(a[1]), int(a[2])
sb_runs = [float(x) for x in a[3].split()]
ref_runs = [float(x) for x in a[4].split()]
received, hwm, rss100, rss1000 = map(int, a[5:9])
nofsync = a[9]
n4 = int(a[10])
sb4_runs = [float(x) for x in a[11].split()]
ref4_runs = [float(x) for x in a[12].split()]
received4 = int(a[13])
hwm_end = int(a[16])
base_runs = [float(x) for x in a[17].split()] if len(a) > 17 else []
base4_runs = [float(x) for x in a[18].split()] if len(a) > 18 else []

def limits(path):
    rows = collections.OrderedDict()
    for line in open(path):
        f = line.split()
        kv = dict(x.split("=", 1) for x in f[1:] if "=" in x)
        if "per_s" in kv:
            rows.setdefault(f[0], []).append(float(kv["per_s"]))
    return rows

def rate(count, runs):
    rates = sorted(count / t for t in runs)
    return statistics.median(rates), rates[0], rates[-1]

mb = size / 1e6
print(f"instances: {n} of {size / n / 1024:.0f} KB, {mb:.1f} MB in total; "
      f"stowbridge spooled {received} (last round)")
sb, sb_lo, sb_hi = rate(n, sb_runs)
ref, ref_lo, ref_hi = rate(n, ref_runs)
lim1 = limits(a[14])
lim4 = limits(a[15])
print(f"\none association, {len(sb_runs)} alternating rounds, "
      "median inst/s [range]:")
print(f"  stowbridge (durable each): {sb:8.1f} [{sb_lo:.0f}..{sb_hi:.0f}]"
      f"  {sb * size / n / 1e6:7.1f} MB/s")
print(f"  storescp   (no fsync)    : {ref:8.1f} [{ref_lo:.0f}..{ref_hi:.0f}]"
      f"  {ref * size / n / 1e6:7.1f} MB/s")
print(f"  ratio stowbridge/storescp: {sb / ref:.2f} (per round: "
      + " ".join(f"{r / s:.2f}" for s, r in zip(sb_runs, ref_runs)) + ")")
if base_runs:
    b, b_lo, b_hi = rate(n, base_runs)
    print(f"  baseline build           : {b:8.1f} [{b_lo:.0f}..{b_hi:.0f}]"
          f"  ratio to storescp {b / ref:.2f} (per round: "
          + " ".join(f"{r / s:.2f}" for s, r in zip(base_runs, ref_runs))
          + f"); this build {sb / b:.2f}x the baseline")
print("  the disk's limits, one writer, same rounds:")
for row, v in lim1.items():
    m = statistics.median(v)
    print(f"    {row:22s} {m:8.0f} [{min(v):.0f}..{max(v):.0f}]"
          f"  stowbridge at {sb / m:.2f} of it")
if nofsync.strip():
    nf, nf_lo, nf_hi = rate(n, [float(x) for x in nofsync.split()])
    print(f"  stowbridge without fsync (comparison only): "
          f"{nf:8.1f} [{nf_lo:.0f}..{nf_hi:.0f}], {nf / ref:.2f}x storescp")

sb4, sb4_lo, sb4_hi = rate(4 * n4, sb4_runs)
ref4, ref4_lo, ref4_hi = rate(4 * n4, ref4_runs)
print(f"\nfour associations at once, {n4} instances each, median inst/s "
      "[range]:")
print(f"  stowbridge             : {sb4:8.1f} [{sb4_lo:.0f}..{sb4_hi:.0f}]"
      f"  (spooled {received4} in the last round)")
print(f"  storescp --fork        : {ref4:8.1f} [{ref4_lo:.0f}..{ref4_hi:.0f}]")
print(f"  ratio stowbridge/storescp: {sb4 / ref4:.2f} (per round: "
      + " ".join(f"{r / s:.2f}" for s, r in zip(sb4_runs, ref4_runs)) + ")")
if base4_runs:
    b, b_lo, b_hi = rate(4 * n4, base4_runs)
    print(f"  baseline build         : {b:8.1f} [{b_lo:.0f}..{b_hi:.0f}]"
          f"  ratio to storescp {b / ref4:.2f} (per round: "
          + " ".join(f"{r / s:.2f}" for s, r in zip(base4_runs, ref4_runs))
          + f"); this build {sb4 / b:.2f}x the baseline")
print("  the disk's limits, four writers, same rounds:")
for row, v in lim4.items():
    m = statistics.median(v)
    print(f"    {row:22s} {m:8.0f} [{min(v):.0f}..{max(v):.0f}]"
          f"  stowbridge at {sb4 / m:.2f} of it")

print(f"\nstowbridge peak RSS (VmHWM): {hwm / 1024:.1f} MiB after the "
      f"receive rounds, {hwm_end / 1024:.1f} MiB at the end")
if rss1000:
    print(f"VmRSS after 100 / 1000 associations: {rss100 / 1024:.1f} / "
          f"{rss1000 / 1024:.1f} MiB")
PY
