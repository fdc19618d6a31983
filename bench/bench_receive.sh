#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Receive benchmark (issue: receive side). Run on demand, never in CI:
#
#   bench/bench_receive.sh [BUILD_DIR] [COUNT] [SIZE_KB]
#
# 1. storescu -> stowbridge: COUNT instances of ~SIZE_KB on one association
#    (stowbridge fsyncs every instance before answering 0000), and
# 2. the same files -> DCMTK storescp writing to the same disk (no fsync),
#    three rounds each, alternating; medians reported;
# 3. 1000 associations in a row (one C-ECHO each) -> stowbridge, VmRSS
#    sampled after 100 and after 1000, to show there is no per-association
#    leak.
# Both receivers run with TCP_NODELAY (Nagle off). Prints instances/s,
# MB/s, the ratio and stowbridge's peak RSS (VmHWM).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
count=${2:-1000}
size_kb=${3:-512}
bin=$build/bridge/stowbridge
[ -x "$bin" ] || { echo "build first: $bin not found" >&2; exit 2; }

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

echo "generating $count instances of ~${size_kb} KB..."
/usr/bin/python3 "$here/gen_instances.py" "$work/in" "$count" "$size_kb"
total_bytes=$(du -sb "$work/in" | cut -f1)

# Three rounds, alternating stowbridge and storescp, so that the page
# cache and writeback state of this shared disk hit both alike; the
# medians are reported.
sb_port=$(free_port)
cat > "$work/sb.json" <<JSON
{ "dicom": { "port": $sb_port, "max_pdu": 131072 },
  "spool": { "dir": "$work/spool", "min_free_mb": 0 },
  "log": { "level": "notice" } }
JSON
"$bin" run --config "$work/sb.json" 2>"$work/sb.log" &
sb_pid=$!
pids+=("$sb_pid")
wait_echo "$sb_port" STOWBRIDGE

ref_port=$(free_port)
mkdir -p "$work/storescp"
TCP_NODELAY=1 storescp -aet STORESCP --max-pdu 131072 -od "$work/storescp" "$ref_port" &
pids+=("$!")
wait_echo "$ref_port" STORESCP

sb_times=()
ref_times=()
for round in 1 2 3 4 5; do
    find "$work/spool/incoming" -type f -delete
    sync
    t0=$(now)
    TCP_NODELAY=1 storescu -aec STOWBRIDGE --max-pdu 131072 +sd 127.0.0.1 "$sb_port" "$work/in"
    t1=$(now)
    sb_times+=("$(echo "$t1 - $t0" | bc)")
    received=$(ls "$work/spool/incoming" | wc -l)

    rm -rf "$work/storescp"/*
    sync
    t0=$(now)
    TCP_NODELAY=1 storescu -aec STORESCP --max-pdu 131072 +sd 127.0.0.1 "$ref_port" "$work/in"
    t1=$(now)
    ref_times+=("$(echo "$t1 - $t0" | bc)")
done
sb_hwm=$(awk '/VmHWM/ {print $2}' "/proc/$sb_pid/status")

# --- the price of durability: stowbridge with fsync disabled -------------
# (eatmydata turns fsync into a no-op; never run the service like this)
nofsync=""
if command -v eatmydata >/dev/null; then
    nf_port=$(free_port)
    sed "s/\"port\": $sb_port/\"port\": $nf_port/; s|$work/spool|$work/spool-nofsync|" \
        "$work/sb.json" > "$work/nf.json"
    eatmydata "$bin" run --config "$work/nf.json" 2>/dev/null &
    nf_pid=$!
    pids+=("$nf_pid")
    wait_echo "$nf_port" STOWBRIDGE
    nf_times=()
    for round in 1 2 3; do
        find "$work/spool-nofsync/incoming" -type f -delete
        sync
        t0=$(now)
        TCP_NODELAY=1 storescu -aec STOWBRIDGE --max-pdu 131072 +sd 127.0.0.1 "$nf_port" "$work/in"
        t1=$(now)
        nf_times+=("$(echo "$t1 - $t0" | bc)")
    done
    kill -TERM "$nf_pid"; wait "$nf_pid" || true
    nofsync="${nf_times[*]}"
fi

# --- 1000 associations in a row ----------------------------------------
for i in $(seq 1 1000); do
    echoscu -aec STOWBRIDGE 127.0.0.1 "$sb_port"
    [ "$i" -eq 100 ] && rss100=$(awk '/VmRSS/ {print $2}' "/proc/$sb_pid/status")
done
rss1000=$(awk '/VmRSS/ {print $2}' "/proc/$sb_pid/status")
kill -TERM "$sb_pid"; wait "$sb_pid" || true

/usr/bin/python3 - "$count" "$total_bytes" "${sb_times[*]}" "${ref_times[*]}" \
    "$received" "$sb_hwm" "$rss100" "$rss1000" "$nofsync" <<'PY'
import statistics, sys
n, size = int(sys.argv[1]), int(sys.argv[2])
sb_runs = [float(x) for x in sys.argv[3].split()]
ref_runs = [float(x) for x in sys.argv[4].split()]
received, hwm, rss100, rss1000 = map(int, sys.argv[5:9])
sb, ref = statistics.median(sb_runs), statistics.median(ref_runs)
print("rounds (s): stowbridge", sb_runs, "storescp", ref_runs)
mb = size / 1e6
print(f"instances: {n}, {mb:.1f} MB in total; stowbridge spooled {received}")
print(f"stowbridge (fsync each): {n/sb:8.1f} inst/s {mb/sb:8.1f} MB/s ({sb:.2f} s)")
print(f"storescp   (no fsync)  : {n/ref:8.1f} inst/s {mb/ref:8.1f} MB/s ({ref:.2f} s)")
print(f"ratio stowbridge/storescp: {ref/sb:.2f}")
if len(sys.argv) > 9 and sys.argv[9].strip():
    nf = statistics.median(float(x) for x in sys.argv[9].split())
    print(f"stowbridge without fsync (eatmydata, for comparison only): "
          f"{n/nf:8.1f} inst/s, ratio to storescp {ref/nf:.2f}")
print(f"stowbridge peak RSS (VmHWM): {hwm/1024:.1f} MiB")
print(f"VmRSS after 100 / 1000 associations: {rss100/1024:.1f} / {rss1000/1024:.1f} MiB")
PY
