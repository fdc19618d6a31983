#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Monitoring benchmark (issue 14). Run on demand, never in CI:
#
#   bench/bench_monitor.sh [BUILD_DIR] [COUNT] [SIZE_KB] [SPOOL_ENTRIES]
#
# 1. The send benchmark (storescu -> stowbridge -> Orthanc STOW-RS, COUNT
#    instances of ~SIZE_KB, timed until Orthanc holds them all), run twice
#    in alternation per round (ROUNDS, default 3): quiet, and with /metrics and the
#    status page scraped every second. Reports both rates and the cost.
# 2. A receive-only daemon over a spool of SPOOL_ENTRIES entries (default
#    100 000: 90 % incoming, 10 % failed with a meta/ record): the time of
#    200 requests each of /metrics and / (curl's time_total; median, p95,
#    max), and how long one spool summary scan takes (the refresh thread
#    backs off to 20x that).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
count=${2:-1000}
size_kb=${3:-256}
entries=${4:-100000}
bin=$build/bridge/stowbridge
[ -x "$bin" ] || { echo "build first: $bin not found" >&2; exit 2; }

work=$(mktemp -d /var/tmp/stowbridge-bench-monitor.XXXXXX)
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
now() { date +%s.%N; }

start_orthanc() {
    local name=$1
    orthanc_port=$(free_port)
    mkdir -p "$work/$name"
    cat > "$work/$name/orthanc.json" <<JSON
{ "Name": "$name", "HttpPort": $orthanc_port, "DicomPort": $(free_port),
  "StorageDirectory": "$work/$name/db", "IndexDirectory": "$work/$name/db",
  "RemoteAccessAllowed": false, "AuthenticationEnabled": false,
  "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
  "DicomWeb": {"Enable": true, "Root": "/dicom-web/"},
  "StableAge": 1, "HttpTimeout": 600 }
JSON
    /usr/sbin/Orthanc "$work/$name/orthanc.json" > "$work/$name.log" 2>&1 &
    orthanc_pid=$!
    pids+=("$orthanc_pid")
    for _ in $(seq 1 150); do
        curl -sf "http://127.0.0.1:$orthanc_port/system" >/dev/null && return
        sleep 0.2
    done
    echo "Orthanc $name did not start" >&2
    exit 1
}

instances_in() {
    curl -sf "http://127.0.0.1:$1/statistics" |
        /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["CountInstances"])'
}

# send_once NAME SCRAPE -> prints the seconds from the first C-STORE until
# Orthanc holds every instance.
send_once() {
    local name=$1 scrape=$2
    start_orthanc "$name"
    local sb_port admin_port
    sb_port=$(free_port)
    admin_port=$(free_port)
    cat > "$work/$name.json" <<JSON
{ "dicom": { "port": $sb_port, "max_pdu": 131072 },
  "spool": { "dir": "$work/$name-spool", "min_free_mb": 0 },
  "upload": { "url": "http://127.0.0.1:$orthanc_port/dicom-web", "workers": 4 },
  "admin": { "listen": "127.0.0.1:$admin_port" },
  "log": { "level": "notice" } }
JSON
    "$bin" run --config "$work/$name.json" 2>"$work/$name-sb.log" &
    local sb_pid=$!
    pids+=("$sb_pid")
    for _ in $(seq 1 100); do echoscu -aec STOWBRIDGE 127.0.0.1 "$sb_port" 2>/dev/null && break; sleep 0.1; done
    local scraper=""
    if [ "$scrape" = yes ]; then
        ( while :; do
              curl -s -o /dev/null "http://127.0.0.1:$admin_port/metrics"
              curl -s -o /dev/null "http://127.0.0.1:$admin_port/"
              sleep 1
          done ) &
        scraper=$!
    fi
    local t0 t1
    t0=$(now)
    TCP_NODELAY=1 storescu -aec STOWBRIDGE --max-pdu 131072 +sd 127.0.0.1 "$sb_port" "$work/in"
    while [ "$(instances_in "$orthanc_port")" -lt "$count" ]; do sleep 0.05; done
    t1=$(now)
    [ -n "$scraper" ] && { kill "$scraper"; wait "$scraper" 2>/dev/null || true; }
    kill -TERM "$sb_pid"; wait "$sb_pid" || true
    kill -TERM "$orthanc_pid"; wait "$orthanc_pid" || true
    rm -rf "${work:?}/$name" "$work/$name-spool"
    /usr/bin/python3 -c "print(f'{$t1 - $t0:.3f}')"
}

echo "generating $count instances of ~${size_kb} KB (one study)..."
/usr/bin/python3 "$here/gen_instances.py" "$work/in" "$count" "$size_kb"
quiet=()
scraped=()
for round in $(seq 1 "${ROUNDS:-3}"); do
    quiet+=("$(send_once "q$round" no)")
    scraped+=("$(send_once "s$round" yes)")
    echo "round $round: quiet ${quiet[-1]} s, scraped every second ${scraped[-1]} s"
done

# --- 2. render time over a big spool -----------------------------------------
echo "filling a spool with $entries entries..."
/usr/bin/python3 - "$work/big-spool" "$entries" <<'PY'
import os, sys, time
root, n = sys.argv[1], int(sys.argv[2])
for d in ("tmp", "incoming", "active", "deferred", "failed", "meta"):
    os.makedirs(os.path.join(root, d), exist_ok=True)
os.chmod(root, 0o700)
body = b"\0" * 128 + b"DICM" + b"\0" * 380
t = int(time.time()) - 3600
for i in range(n):
    ident = "%d.%06d-%016x" % (t + i // 1000, i % 1000000, i)
    failed = i % 10 == 0
    with open(os.path.join(root, "failed" if failed else "incoming",
                           ident + ".dcm"), "wb") as f:
        f.write(body)
    if failed:
        with open(os.path.join(root, "meta", ident), "w") as f:
            f.write("study=1.2.3.%d\nsop=1.2.3.%d.1\nfrom=CT01\n"
                    "attempts=3\nlast_http_status=202\nlast_reason=43264\n"
                    "last_error=HTTP 202, Failure Reason A900 (bench)\n" % (i, i))
PY
sb_port=$(free_port)
admin_port=$(free_port)
cat > "$work/big.json" <<JSON
{ "dicom": { "port": $sb_port },
  "spool": { "dir": "$work/big-spool", "min_free_mb": 0 },
  "admin": { "listen": "127.0.0.1:$admin_port" },
  "log": { "level": "notice" } }
JSON
"$bin" run --config "$work/big.json" 2>"$work/big.log" &
big_pid=$!
pids+=("$big_pid")
for _ in $(seq 1 600); do echoscu -aec STOWBRIDGE 127.0.0.1 "$sb_port" 2>/dev/null && break; sleep 0.1; done
sleep 3
times() {
    for _ in $(seq 1 200); do
        curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$admin_port$1"
    done
}
metrics_t=$(times /metrics)
page_t=$(times /)
shown=$(curl -s "http://127.0.0.1:$admin_port/metrics" | grep '^stowbridge_spool_entries' | tr '\n' ' ')
scan_ms=$(/usr/bin/python3 - "$work/big-spool" <<'PY'
import os, sys, time
root = sys.argv[1]
t = time.monotonic()
for d in ("tmp", "incoming", "active", "deferred", "failed"):
    for e in os.scandir(os.path.join(root, d)):
        e.stat()
print(f"{(time.monotonic() - t) * 1000:.0f}")
PY
)
kill -TERM "$big_pid"; wait "$big_pid" || true

/usr/bin/python3 - "$count" "${quiet[*]}" "${scraped[*]}" "$metrics_t" "$page_t" "$entries" "$shown" "$scan_ms" <<'PY'
import statistics, sys
n = int(sys.argv[1])
q = [float(x) for x in sys.argv[2].split()]
s = [float(x) for x in sys.argv[3].split()]
def pct(v, p):
    v = sorted(v); return v[min(len(v) - 1, int(p * len(v)))]
print(f"send benchmark, {n} instances, {len(q)} rounds each (median):")
mq, ms = statistics.median(q), statistics.median(s)
print(f"  quiet:                 {n/mq:7.1f} inst/s ({mq:.2f} s)  runs {q}")
print(f"  /metrics + / every 1 s: {n/ms:7.1f} inst/s ({ms:.2f} s)  runs {s}")
print(f"  cost of scraping: {100 * (ms - mq) / mq:+.1f} % of the time")
for name, arg in (("/metrics", sys.argv[4]), ("/ (status page)", sys.argv[5])):
    t = [float(x) * 1000 for x in arg.split()]
    print(f"{name} over a spool of {sys.argv[6]} entries, 200 requests: "
          f"median {statistics.median(t):.2f} ms, p95 {pct(t, .95):.2f} ms, max {max(t):.2f} ms")
print(f"  served: {sys.argv[7]}")
print(f"one full scan of that spool (os.scandir + stat, Python): {sys.argv[8]} ms")
PY
