#!/usr/bin/env bash
# First run on a fresh Debian 12 machine: install the dependencies, build,
# start stowbridge on a local spool, send sample images to it with DCMTK's
# storescu (playing the modality), and show what arrived.
#
#   scripts/demo.sh              run the demo, then stop the daemon
#   scripts/demo.sh --keep       leave the daemon running in the foreground
#
# Uploads to a DICOMweb server are not built yet: the main job today is
# receiving into the crash-safe spool.
set -euo pipefail
cd "$(dirname "$0")/.."

keep=false
[ "${1:-}" = "--keep" ] && keep=true

bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"

demo=${STOWBRIDGE_DEMO_DIR:-/tmp/stowbridge-demo}
port=${STOWBRIDGE_DEMO_PORT:-11112}
mkdir -p "$demo"
cat > "$demo/stowbridge.json" <<JSON
{
    // The demo configuration: every other key keeps its default.
    "dicom": { "ae_title": "STOWBRIDGE", "port": $port },
    "spool": { "dir": "$demo/spool", "min_free_mb": 64 },
    "log": { "level": "info" }
}
JSON

./build/bridge/stowbridge check --config "$demo/stowbridge.json"
./build/bridge/stowbridge run --config "$demo/stowbridge.json" \
    2> >(tee "$demo/stowbridge.log" >&2) &
daemon=$!
trap 'kill -TERM $daemon 2>/dev/null; wait $daemon 2>/dev/null || true' EXIT

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

echo
echo "== spool status"
./build/bridge/stowbridge status --config "$demo/stowbridge.json"
echo
echo "== received SOP Instance UIDs (spool $demo/spool/incoming)"
for f in "$demo"/spool/incoming/*.dcm; do
    printf '%s  %s\n' "$(basename "$f")" \
        "$(dcmdump -q +P 0008,0018 "$f" | sed 's/.*\[\(.*\)\].*/\1/')"
done

if $keep; then
    echo
    echo "stowbridge keeps running on port $port; Ctrl-C stops it."
    trap - EXIT
    wait $daemon
fi
