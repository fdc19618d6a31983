#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Retrieve benchmark (issue 15). Run on demand, never in CI:
#
#   bench/bench_retrieve.sh [BUILD_DIR] [COUNT] [SIZE_KB]
#
# One study of COUNT (default 1000) instances of ~SIZE_KB (default 512) is
# stored in a fresh Orthanc with its DICOMweb plugin. In the same run, to
# the same storescp destination:
#   1. movescu -> stowbridge: C-MOVE of the study; stowbridge lists it with
#      QIDO-RS, fetches it with WADO-RS and sends it on one sub-association
#      (fetch and send overlap), timed from the C-MOVE-RQ to the final
#      response, with stowbridge's peak RSS (VmHWM);
#   2. the baseline: curl fetching the study with one WADO-RS request
#      (transfer-syntax=*), the body split into files (wado_split.py),
#      then storescu sending them, one after the other.
# Before both, one untimed WADO-RS fetch warms Orthanc's caches.
# storescp and storescu run with TCP_NODELAY=1 (DCMTK's switch for
# Nagle's algorithm; without it each C-STORE waits ~40 ms for a delayed
# ACK on loopback and both sides measure only that); stowbridge runs with
# the environment it is given.
# Targets: ratio baseline/stowbridge >= 1.0, peak RSS <= 40 MB.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
count=${2:-1000}
size_kb=${3:-512}
bin=$build/bridge/stowbridge
[ -x "$bin" ] || { echo "build first: $bin not found" >&2; exit 2; }
for tool in movescu storescu storescp echoscu curl dcmdump /usr/sbin/Orthanc; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done

work=$(mktemp -d /var/tmp/stowbridge-bench-retrieve.XXXXXX)
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

echo "generating $count instances of ~${size_kb} KB (one study)..."
/usr/bin/python3 "$here/gen_instances.py" "$work/in" "$count" "$size_kb"
total_bytes=$(du -sb "$work/in" | cut -f1)
study=$(dcmdump -q +P 0020,000d "$work/in/ct00000.dcm" | sed 's/.*\[\(.*\)\].*/\1/')

# --- the DICOMweb server: Orthanc ---------------------------------------------
o_http=$(free_port)
o_dicom=$(free_port)
mkdir -p "$work/orthanc"
cat > "$work/orthanc/orthanc.json" <<JSON
{ "Name": "source", "HttpPort": $o_http, "DicomPort": $o_dicom,
  "DicomAet": "ORTHANC", "DicomCheckCalledAet": false,
  "StorageDirectory": "$work/orthanc/db", "IndexDirectory": "$work/orthanc/db",
  "RemoteAccessAllowed": false, "AuthenticationEnabled": false,
  "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
  "DicomWeb": { "Enable": true, "Root": "/dicom-web/" },
  "StableAge": 1, "HttpTimeout": 600 }
JSON
/usr/sbin/Orthanc "$work/orthanc/orthanc.json" > "$work/orthanc.log" 2>&1 &
pids+=("$!")
for _ in $(seq 1 150); do
    curl -sf "http://127.0.0.1:$o_http/system" >/dev/null && break
    sleep 0.2
done
echo "storing the study in Orthanc..."
storescu -aec ORTHANC --max-pdu 131072 +sd 127.0.0.1 "$o_dicom" "$work/in"
stored=$(curl -sf "http://127.0.0.1:$o_http/statistics" |
    /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["CountInstances"])')
[ "$stored" -eq "$count" ] || { echo "Orthanc holds $stored of $count" >&2; exit 1; }
base="http://127.0.0.1:$o_http/dicom-web"
accept='multipart/related; type="application/dicom"; transfer-syntax=*'

# --- the destination: storescp ------------------------------------------------
d_port=$(free_port)
mkdir -p "$work/dest"
TCP_NODELAY=1 storescp -aet DEST -pdu 131072 -od "$work/dest" "$d_port" > "$work/dest.log" 2>&1 &
pids+=("$!")
for _ in $(seq 1 100); do
    echoscu -aec DEST 127.0.0.1 "$d_port" 2>/dev/null && break
    sleep 0.1
done
received() { find "$work/dest" -type f | wc -l; }

# --- warm-up (untimed) ----------------------------------------------------------
curl -sf -o /dev/null -H "Accept: $accept" "$base/studies/$study"

# --- 1. stowbridge --------------------------------------------------------------
sb_port=$(free_port)
cat > "$work/sb.json" <<JSON
{ "dicom": { "port": $sb_port, "max_pdu": 131072,
             "remote_aes": [ { "ae_title": "DEST", "host": "127.0.0.1",
                               "port": $d_port, "tls": false } ] },
  "spool": { "dir": "$work/spool", "min_free_mb": 0 },
  "upload": { "url": "$base" },
  "admin": { "listen": "127.0.0.1:$(free_port)" },
  "log": { "level": "notice" } }
JSON
"$bin" run --config "$work/sb.json" 2>"$work/sb.log" &
sb_pid=$!
pids+=("$sb_pid")
for _ in $(seq 1 100); do echoscu -aec STOWBRIDGE 127.0.0.1 "$sb_port" 2>/dev/null && break; sleep 0.1; done
t0=$(now)
movescu -S -aec STOWBRIDGE -aem DEST -td 600 -k QueryRetrieveLevel=STUDY \
    -k StudyInstanceUID="$study" 127.0.0.1 "$sb_port" > "$work/movescu.log" 2>&1 ||
    { echo "movescu failed:" >&2; tail -20 "$work/movescu.log" >&2; tail -20 "$work/sb.log" >&2; exit 1; }
t1=$(now)
got1=$(received)
sb_hwm=$(awk '/VmHWM/ {print $2}' "/proc/$sb_pid/status")
done_line=$(grep -m1 'event=retrieve_done' "$work/sb.log" || echo "-")
kill -TERM "$sb_pid"; wait "$sb_pid" || true
[ "$got1" -eq "$count" ] || { echo "stowbridge: the destination got $got1 of $count" >&2; tail -20 "$work/sb.log" >&2; exit 1; }
find "$work/dest" -type f -delete

# --- 2. curl + storescu ---------------------------------------------------------
t2=$(now)
curl -sf -D "$work/wado.hdr" -o "$work/wado.body" -H "Accept: $accept" "$base/studies/$study"
t3=$(now)
parts=$(/usr/bin/python3 "$here/wado_split.py" "$work/wado.hdr" "$work/wado.body" "$work/parts")
t4=$(now)
TCP_NODELAY=1 storescu -aec DEST --max-pdu 131072 +sd 127.0.0.1 "$d_port" "$work/parts"
t5=$(now)
got2=$(received)
[ "$got2" -eq "$count" ] && [ "$parts" -eq "$count" ] ||
    { echo "baseline: $parts parts, the destination got $got2 of $count" >&2; exit 1; }

/usr/bin/python3 - "$count" "$total_bytes" "$t0" "$t1" "$t2" "$t3" "$t4" "$t5" \
    "$sb_hwm" "$done_line" <<'PY'
import sys
n, size = int(sys.argv[1]), int(sys.argv[2])
t0, t1, t2, t3, t4, t5 = map(float, sys.argv[3:9])
hwm, done = int(sys.argv[9]), sys.argv[10]
sb, base = t1 - t0, t5 - t2
mb = size / 1e6
print(f"study: {n} instances, {mb:.1f} MB")
print(f"stowbridge C-MOVE (QIDO + WADO-RS + one sub-association): {sb:7.2f} s  {mb/sb:7.1f} MB/s")
print(f"curl WADO-RS + split + storescu:                          {base:7.2f} s  {mb/base:7.1f} MB/s"
      f"  (curl {t3-t2:.2f} s, split {t4-t3:.2f} s, storescu {t5-t4:.2f} s)")
print(f"ratio baseline/stowbridge: {base/sb:.2f} (target >= 1.0); "
      f"without the split step {(base-(t4-t3))/sb:.2f}")
print(f"stowbridge peak RSS (VmHWM): {hwm/1024:.1f} MiB (target <= 40)")
print(f"log: {done}")
PY
