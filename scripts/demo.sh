#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# First run on a fresh Debian 12 machine: install the dependencies, build,
# start a local destination (Orthanc with its DICOMweb plugin, and a local
# OAuth2 token endpoint so the real token path runs), start stowbridge
# against it, send sample images with DCMTK's storescu (playing the
# modality), and show them delivered: the spool status and the SOP
# Instance UIDs found in Orthanc.
#
#   scripts/demo.sh              run the demo, then stop everything
#   scripts/demo.sh --keep       leave stowbridge running in the foreground
set -euo pipefail
cd "$(dirname "$0")/.."

keep=false
[ "${1:-}" = "--keep" ] && keep=true

bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"

demo=${STOWBRIDGE_DEMO_DIR:-/tmp/stowbridge-demo}
port=${STOWBRIDGE_DEMO_PORT:-11112}
orthanc_port=${STOWBRIDGE_DEMO_ORTHANC_PORT:-18042}
token_port=${STOWBRIDGE_DEMO_TOKEN_PORT:-18043}
rm -rf "$demo"
mkdir -p "$demo"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

# The destination: Orthanc + DICOMweb, on loopback only.
cat > "$demo/orthanc.json" <<JSON
{ "Name": "demo", "HttpPort": $orthanc_port, "DicomServerEnabled": false,
  "StorageDirectory": "$demo/orthanc", "IndexDirectory": "$demo/orthanc",
  "RemoteAccessAllowed": false, "AuthenticationEnabled": false,
  "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
  "DicomWeb": { "Enable": true, "Root": "/dicom-web/" } }
JSON
/usr/sbin/Orthanc "$demo/orthanc.json" > "$demo/orthanc.log" 2>&1 &
pids+=("$!")
# A local token endpoint that knows one client, with a fresh secret that
# stowbridge reads from a file (as it would from LoadCredential=).
secret=$(head -c 18 /dev/urandom | base64)
printf '%s\n' "$secret" > "$demo/client_secret"
chmod 600 "$demo/client_secret"
/usr/bin/python3 scripts/demo-token-server.py "$token_port" demo-client \
    "$secret" 2> "$demo/token-server.log" &
pids+=("$!")
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$orthanc_port/system" >/dev/null && break
    sleep 0.2
done

cat > "$demo/stowbridge.json" <<JSON
{
    // The demo configuration: every other key keeps its default.
    "dicom": { "ae_title": "STOWBRIDGE", "port": $port },
    "spool": { "dir": "$demo/spool", "min_free_mb": 64 },
    "upload": { "url": "http://127.0.0.1:$orthanc_port/dicom-web" },
    "auth": { "type": "client_credentials",
              "token_url": "http://127.0.0.1:$token_port/token",
              "client_id": "demo-client",
              "client_secret_file": "$demo/client_secret" },
    "log": { "level": "info" }
}
JSON

./build/bridge/stowbridge check --config "$demo/stowbridge.json"
./build/bridge/stowbridge token --config "$demo/stowbridge.json"
./build/bridge/stowbridge run --config "$demo/stowbridge.json" \
    2> >(tee "$demo/stowbridge.log" >&2) &
daemon=$!
pids+=("$daemon")

for _ in $(seq 1 50); do
    echoscu -to 2 -aec STOWBRIDGE 127.0.0.1 "$port" 2>/dev/null && break
    sleep 0.2
done
echoscu -v -aec STOWBRIDGE 127.0.0.1 "$port"

# Each sample goes with the storescu option that proposes its own transfer
# syntax (storescu cannot convert RLE or JPEG 2000 to anything else).
samples=/usr/lib/python3/dist-packages/pydicom/data/test_files
send() {
    local files=() opts=()
    for a in "$@"; do
        case $a in -*) opts+=("$a") ;; *) files+=("$a") ;; esac
    done
    storescu -v -aet DEMO_MODALITY -aec STOWBRIDGE "${opts[@]}" \
        127.0.0.1 "$port" "${files[@]}"
}
send "$samples/CT_small.dcm" "$samples/MR_small.dcm"
send -R -xr "$samples/MR_small_RLE.dcm"
send -R -xw "$samples/JPEG2000.dcm"
send -R -xt "$samples/MR_small_jpeg_ls_lossless.dcm"

echo "== waiting for the uploads"
for _ in $(seq 1 100); do
    left=$(find "$demo/spool/incoming" "$demo/spool/active" \
                "$demo/spool/deferred" -type f | wc -l)
    [ "$left" -eq 0 ] && break
    sleep 0.2
done
echo
echo "== spool status"
./build/bridge/stowbridge status --config "$demo/stowbridge.json"
echo
echo "== SOP Instance UIDs found in Orthanc (http://127.0.0.1:$orthanc_port)"
for id in $(curl -sf "http://127.0.0.1:$orthanc_port/instances" |
            /usr/bin/python3 -c 'import json,sys; print(" ".join(json.load(sys.stdin)))'); do
    curl -sf "http://127.0.0.1:$orthanc_port/instances/$id/simplified-tags" |
        /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["SOPInstanceUID"])'
done

if $keep; then
    echo
    echo "stowbridge keeps running on port $port; Ctrl-C stops everything."
    wait "$daemon"
fi
