#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Send benchmark (issue: send side). Run on demand, never in CI:
#
#   bench/bench_send.sh [BUILD_DIR] [COUNT] [SIZE_KB] [BIG_MB]
#
# In one run, against the same kind of destination (a fresh Orthanc with
# its DICOMweb plugin each time):
#   1. storescu -> stowbridge -> Orthanc STOW-RS: COUNT instances of
#      ~SIZE_KB of one study, timed from the first C-STORE until Orthanc
#      holds them all;
#   (a) curl posting the same files to Orthanc as multipart/related batches
#      of 50 (the HTTP ceiling; bodies built before the clock starts);
#   (b) a second Orthanc as the forwarder: C-STORE in, STOW-RS out per study
#      (Lua OnStableStudy, StableAge 1 s), timed the same way;
#   and stowbridge's CPU seconds per GB and peak RSS; then a study of
#   ~BIG_MB MB (default 2048) queued in the spool at once and uploaded,
#   with stowbridge's peak RSS.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
count=${2:-1000}
size_kb=${3:-512}
big_mb=${4:-2048}
bin=$build/bridge/stowbridge
[ -x "$bin" ] || { echo "build first: $bin not found" >&2; exit 2; }

work=$(mktemp -d /var/tmp/stowbridge-bench-send.XXXXXX)
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

# start_orthanc NAME [EXTRA_JSON] -> sets $orthanc_port, $orthanc_dicom
start_orthanc() {
    local name=$1 extra=${2:-}
    orthanc_port=$(free_port)
    orthanc_dicom=$(free_port)
    mkdir -p "$work/$name"
    cat > "$work/$name/orthanc.json" <<JSON
{ "Name": "$name", "HttpPort": $orthanc_port, "DicomPort": $orthanc_dicom,
  "DicomAet": "ORTHANC", "DicomCheckCalledAet": false,
  "StorageDirectory": "$work/$name/db", "IndexDirectory": "$work/$name/db",
  "RemoteAccessAllowed": false, "AuthenticationEnabled": false,
  "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
  "StableAge": 1, "HttpTimeout": 600 $extra }
JSON
    /usr/sbin/Orthanc "$work/$name/orthanc.json" > "$work/$name.log" 2>&1 &
    pids+=("$!")
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

wait_instances() {
    local port=$1 want=$2
    while [ "$(instances_in "$port")" -lt "$want" ]; do sleep 0.05; done
}

echo "generating $count instances of ~${size_kb} KB (one study)..."
/usr/bin/python3 "$here/gen_instances.py" "$work/in" "$count" "$size_kb"
total_bytes=$(du -sb "$work/in" | cut -f1)

# --- 1. stowbridge ---------------------------------------------------------
start_orthanc target1 ', "DicomWeb": {"Enable": true, "Root": "/dicom-web/"}'
target1=$orthanc_port
sb_port=$(free_port)
cat > "$work/sb.json" <<JSON
{ "dicom": { "port": $sb_port, "max_pdu": 131072 },
  "spool": { "dir": "$work/spool", "min_free_mb": 0 },
  "upload": { "url": "http://127.0.0.1:$target1/dicom-web", "workers": 4 },
  "log": { "level": "notice" } }
JSON
"$bin" run --config "$work/sb.json" 2>"$work/sb.log" &
sb_pid=$!
pids+=("$sb_pid")
for _ in $(seq 1 100); do echoscu -aec STOWBRIDGE 127.0.0.1 "$sb_port" 2>/dev/null && break; sleep 0.1; done
cpu0=$(awk '{print $14 + $15}' "/proc/$sb_pid/stat")
t0=$(now)
TCP_NODELAY=1 storescu -aec STOWBRIDGE --max-pdu 131072 +sd 127.0.0.1 "$sb_port" "$work/in"
wait_instances "$target1" "$count"
t1=$(now)
cpu1=$(awk '{print $14 + $15}' "/proc/$sb_pid/stat")
sb_hwm=$(awk '/VmHWM/ {print $2}' "/proc/$sb_pid/status")
kill -TERM "$sb_pid"; wait "$sb_pid" || true

# --- (a) curl, multipart batches of 50 --------------------------------------
start_orthanc target2 ', "DicomWeb": {"Enable": true, "Root": "/dicom-web/"}'
target2=$orthanc_port
study=$(dcmdump -q +P 0020,000d "$work/in/ct00000.dcm" | sed 's/.*\[\(.*\)\].*/\1/')
/usr/bin/python3 - "$work/in" "$work/bodies" <<'PY'
import os, sys
src, out = sys.argv[1], sys.argv[2]
os.makedirs(out)
files = sorted(os.listdir(src))
for b in range(0, len(files), 50):
    with open(os.path.join(out, "%05d" % b), "wb") as f:
        for name in files[b:b + 50]:
            f.write(b"--benchboundary\r\nContent-Type: application/dicom\r\n\r\n")
            f.write(open(os.path.join(src, name), "rb").read())
            f.write(b"\r\n")
        f.write(b"--benchboundary--\r\n")
PY
t2=$(now)
for body in "$work"/bodies/*; do
    curl -sf -o /dev/null -H 'Expect:' -H 'Accept: application/dicom+json' \
        -H 'Content-Type: multipart/related; type="application/dicom"; boundary=benchboundary' \
        --data-binary "@$body" "http://127.0.0.1:$target2/dicom-web/studies/$study"
done
t3=$(now)

# --- (b) Orthanc as the forwarder -------------------------------------------
start_orthanc target3 ', "DicomWeb": {"Enable": true, "Root": "/dicom-web/"}'
target3=$orthanc_port
cat > "$work/forward.lua" <<'LUA'
function OnStableStudy(studyId, tags, metadata)
   RestApiPost('/dicom-web/servers/target/stow',
               '{"Resources": ["' .. studyId .. '"]}')
end
LUA
start_orthanc forwarder ", \"LuaScripts\": [\"$work/forward.lua\"], \"DicomWeb\": {\"Enable\": true, \"Root\": \"/dicom-web/\", \"Servers\": {\"target\": [\"http://127.0.0.1:$target3/dicom-web/\"]}}"
fwd_dicom=$orthanc_dicom
t4=$(now)
TCP_NODELAY=1 storescu -aec ORTHANC --max-pdu 131072 +sd 127.0.0.1 "$fwd_dicom" "$work/in"
wait_instances "$target3" "$count"
t5=$(now)

# --- a large study queued at once: memory stays flat -------------------------
big_rss="-"
if [ "$big_mb" -gt 0 ]; then
    start_orthanc target4 ', "DicomWeb": {"Enable": true, "Root": "/dicom-web/"}'
    target4=$orthanc_port
    n_big=$(( big_mb / 64 ))
    /usr/bin/python3 "$here/gen_instances.py" "$work/big" "$n_big" 65536
    big_port=$(free_port)
    sed "s/\"port\": $sb_port/\"port\": $big_port/; s|$work/spool|$work/spool-big|; s|127.0.0.1:$target1|127.0.0.1:$target4|" \
        "$work/sb.json" > "$work/big.json"
    # Receive-only first, so the whole study is queued before uploads start.
    /usr/bin/python3 - "$work/big.json" <<'PY'
import json, sys
cfg = json.load(open(sys.argv[1])); url = cfg.pop("upload")
json.dump(cfg, open(sys.argv[1] + ".recv", "w")); json.dump(cfg | {"upload": url}, open(sys.argv[1], "w"))
PY
    "$bin" run --config "$work/big.json.recv" 2>/dev/null &
    rpid=$!
    for _ in $(seq 1 100); do echoscu -aec STOWBRIDGE 127.0.0.1 "$big_port" 2>/dev/null && break; sleep 0.1; done
    TCP_NODELAY=1 storescu -aec STOWBRIDGE --max-pdu 131072 +sd 127.0.0.1 "$big_port" "$work/big"
    kill -TERM "$rpid"; wait "$rpid" || true
    "$bin" run --config "$work/big.json" 2>"$work/big.log" &
    bpid=$!
    pids+=("$bpid")
    wait_instances "$target4" "$n_big"
    big_rss=$(awk '/VmHWM/ {print $2}' "/proc/$bpid/status")
    kill -TERM "$bpid"; wait "$bpid" || true
fi

/usr/bin/python3 - "$count" "$total_bytes" "$t0" "$t1" "$t2" "$t3" "$t4" "$t5" \
    "$cpu0" "$cpu1" "$(getconf CLK_TCK)" "$sb_hwm" "$big_rss" "$big_mb" <<'PY'
import sys
n, size = int(sys.argv[1]), int(sys.argv[2])
t0, t1, t2, t3, t4, t5 = map(float, sys.argv[3:9])
cpu0, cpu1, tck = int(sys.argv[9]), int(sys.argv[10]), int(sys.argv[11])
hwm, big_rss, big_mb = sys.argv[12], sys.argv[13], sys.argv[14]
sb, a, b = t1 - t0, t3 - t2, t5 - t4
mb = size / 1e6
print(f"instances: {n}, {mb:.1f} MB")
print(f"stowbridge  storescu->stowbridge->Orthanc: {n/sb:7.1f} inst/s {mb/sb:7.1f} MB/s ({sb:.2f} s)")
print(f"(a) curl multipart batches of 50 -> Orthanc: {n/a:7.1f} inst/s {mb/a:7.1f} MB/s ({a:.2f} s)")
print(f"(b) Orthanc forwarder (per study):         {n/b:7.1f} inst/s {mb/b:7.1f} MB/s ({b:.2f} s)")
print(f"ratio stowbridge/(a): {a/sb:.2f}   stowbridge/(b): {b/sb:.2f}")
print(f"stowbridge CPU: {(cpu1-cpu0)/tck:.2f} s, {(cpu1-cpu0)/tck/(size/1e9):.2f} s per GB")
print(f"stowbridge peak RSS (VmHWM): {int(hwm)/1024:.1f} MiB")
if big_rss != "-":
    print(f"peak RSS uploading a {big_mb} MB study queued at once: {int(big_rss)/1024:.1f} MiB")
PY
