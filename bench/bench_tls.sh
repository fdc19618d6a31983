#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# DICOM TLS benchmark (issue 11, Performance). Run on demand, never in CI:
#
#   bench/bench_tls.sh [BUILD_DIR] [COUNT] [SIZE_KB] [ROUNDS] [HANDSHAKES]
#
# KEEP=1 keeps the work directory (daemon logs) for a look afterwards.
#
# Certificates are made by openssl in a temp dir (a CA, the server and one
# modality, RSA 2048, as the tests make them); every TLS association
# presents the modality certificate (dicom.tls.client_certificate
# "required", the default; profile bcp195-nd, the default).
#
# 1. Ingest: COUNT instances of ~SIZE_KB, one association per run, sent by
#    storescu to one stowbridge serving its plain and its TLS port at
#    once, and to DCMTK's storescp, plain and +tls (no fsync), in the same
#    run: ROUNDS rounds alternating the four, medians reported. The ratio
#    the issue asks for is stowbridge TLS / stowbridge plain (>= 0.8);
#    storescp's own TLS / plain ratio shows what TLS costs DCMTK itself.
#    Besides the ratio of the medians, the median of the per-round ratios
#    (each TLS run against the plain run just before it), which the
#    shared disk's and CPU's swings between rounds disturb less.
#    Then the same plain/TLS rounds against a second stowbridge whose
#    spool is on tmpfs (/dev/shm, where fsync costs nothing; for
#    comparison only, never run the service like this): what TLS costs
#    the receive path itself, without the disk's commit latency. For each
#    run the receiver's CPU time (user + system, from /proc) is recorded
#    too: whether the receiver or the sender is the limit.
# 2. Handshakes: HANDSHAKES short associations in a row, plain then TLS,
#    to the same stowbridge: with echoscu (one process, one C-ECHO each:
#    its own start-up and certificate loading are in the time), and with
#    bench/tls_handshakes.py (one process for all: connect, full
#    handshake, A-ASSOCIATE-RQ/AC, A-RELEASE-RQ/RP each): associations/s,
#    median and p95 per association.
# 3. Memory: a fresh stowbridge, 16 storescu +tls at once (COUNT/16
#    instances each); VmRSS sampled every 50 ms with the number of TLS
#    connections established; VmHWM (peak RSS) at the end. All 16 come
#    from 127.0.0.1, and one address may hold only a quarter of
#    dicom.max_pending while handshaking (8 of the default 32; more are
#    evicted, "The DIMSE side"), so this daemon has max_pending 64.
# Every phase reports the connections stowbridge evicted or dropped.
# Both receivers run with TCP_NODELAY (Nagle off) and max PDU 131072.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
count=${2:-1000}
size_kb=${3:-512}
rounds=${4:-5}
handshakes=${5:-200}
bin=$build/bridge/stowbridge
[ -x "$bin" ] || { echo "build first: $bin not found" >&2; exit 2; }
for tool in storescu storescp echoscu openssl bc ss; do
    command -v "$tool" >/dev/null || { echo "$tool is missing" >&2; exit 2; }
done

work=$(mktemp -d /var/tmp/stowbridge-bench-tls.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "${shm:-}" ] && rm -rf "$shm"
    if [ -n "${KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
now() { date +%s.%N; }

# --- certificates --------------------------------------------------------
pki=$work/pki
mkdir -p "$pki"
(
    cd "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench-ca \
        -keyout ca.key -out ca.pem
    for leaf in server modality; do
        openssl req -newkey rsa:2048 -nodes -subj "/CN=$leaf" \
            -keyout "$leaf.key" -out "$leaf.csr"
        openssl x509 -req -in "$leaf.csr" -CA ca.pem -CAkey ca.key \
            -CAcreateserial -days 2 -out "$leaf.pem"
    done
    chmod 0600 ./*.key
) >"$work/pki.log" 2>&1 || { cat "$work/pki.log"; exit 1; }
tls_scu=(+tls "$pki/modality.key" "$pki/modality.pem" +cf "$pki/ca.pem")

# wait_echo PORT AET [TLS-OPTIONS...]
wait_echo() {
    local port=$1 aet=$2
    shift 2
    for _ in $(seq 1 100); do
        echoscu -to 2 -aec "$aet" "$@" 127.0.0.1 "$port" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "no answer on port $port" >&2
    return 1
}

# start_sb NAME [MAX_PENDING [SPOOL_PARENT]]: a stowbridge with a plain and
# a TLS port, its spool in SPOOL_PARENT/spool-NAME (default the work
# directory); sets sb_pid, sb_port, sb_tls_port.
start_sb() {
    sb_port=$(free_port)
    sb_tls_port=$(free_port)
    cat >"$work/$1.json" <<JSON
{ "dicom": { "port": $sb_port, "max_pdu": 131072, "max_associations": 64,
             "max_pending": ${2:-32},
             "tls": { "port": $sb_tls_port,
                      "certificate_file": "$pki/server.pem",
                      "private_key_file": "$pki/server.key",
                      "ca_file": "$pki/ca.pem" } },
  "spool": { "dir": "${3:-$work}/spool-$1", "min_free_mb": 0 },
  "log": { "level": "notice" } }
JSON
    "$bin" run --config "$work/$1.json" 2>"$work/$1.log" &
    sb_pid=$!
    pids+=("$sb_pid")
    wait_echo "$sb_port" STOWBRIDGE
    wait_echo "$sb_tls_port" STOWBRIDGE "${tls_scu[@]}"
}

echo "generating $count instances of ~${size_kb} KB..."
/usr/bin/python3 "$here/gen_instances.py" "$work/in" "$count" "$size_kb"
total_bytes=$(du -sb "$work/in" | cut -f1)

# --- 1. ingest -----------------------------------------------------------
start_sb sb
ref_port=$(free_port)
ref_tls_port=$(free_port)
mkdir -p "$work/storescp" "$work/storescp-tls"
TCP_NODELAY=1 storescp -aet STORESCP --max-pdu 131072 -od "$work/storescp" \
    "$ref_port" &
ref_pid=$!
pids+=("$ref_pid")
TCP_NODELAY=1 storescp -aet STORESCP --max-pdu 131072 -od "$work/storescp-tls" \
    +tls "$pki/server.key" "$pki/server.pem" +cf "$pki/ca.pem" "$ref_tls_port" &
ref_tls_pid=$!
pids+=("$ref_tls_pid")
wait_echo "$ref_port" STORESCP
wait_echo "$ref_tls_port" STORESCP "${tls_scu[@]}"

# The CPU seconds (user + system) process PID has used.
cpu_of() {
    awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"
}
# send PORT AET PID CPU_LOG [TLS-OPTIONS...]: the whole set on one
# association; prints the seconds it took, appends the CPU seconds the
# receiver PID used meanwhile to CPU_LOG.
send() {
    local port=$1 aet=$2 pid=$3 log=$4 t0 t1 c0 c1
    shift 4
    sync
    c0=$(cpu_of "$pid")
    t0=$(now)
    TCP_NODELAY=1 storescu -aec "$aet" --max-pdu 131072 "$@" +sd 127.0.0.1 \
        "$port" "$work/in" >/dev/null
    t1=$(now)
    c1=$(cpu_of "$pid")
    echo "$c1 - $c0" | bc >>"$log"
    echo "$t1 - $t0" | bc
}
incoming=$work/spool-sb/incoming
sb_plain=()
sb_tls=()
ref_plain=()
ref_tls=()
received_plain=0
received_tls=0
for round in $(seq 1 "$rounds"); do
    echo "round $round/$rounds"
    find "$incoming" -type f -delete
    sb_plain+=("$(send "$sb_port" STOWBRIDGE "$sb_pid" "$work/cpu.sb_plain")")
    received_plain=$(find "$incoming" -type f | wc -l)
    find "$incoming" -type f -delete
    sb_tls+=("$(send "$sb_tls_port" STOWBRIDGE "$sb_pid" "$work/cpu.sb_tls" \
        "${tls_scu[@]}")")
    received_tls=$(find "$incoming" -type f | wc -l)
    rm -rf "${work:?}/storescp"/* "${work:?}/storescp-tls"/*
    ref_plain+=("$(send "$ref_port" STORESCP "$ref_pid" "$work/cpu.ref_plain")")
    ref_tls+=("$(send "$ref_tls_port" STORESCP "$ref_tls_pid" "$work/cpu.ref_tls" \
        "${tls_scu[@]}")")
done
find "$incoming" -type f -delete
rm -rf "${work:?}/storescp"/* "${work:?}/storescp-tls"/*

# The same on tmpfs (no disk), if /dev/shm has room for two runs.
shm_plain=()
shm_tls=()
if [ -d /dev/shm ] && [ -w /dev/shm ] &&
    [ "$(df -P -k /dev/shm | awk 'NR == 2 {print $4}')" -gt $((total_bytes / 512)) ]; then
    shm=$(mktemp -d /dev/shm/stowbridge-bench-tls.XXXXXX)
    main_pid=$sb_pid
    main_port=$sb_port
    main_tls_port=$sb_tls_port
    start_sb shm 32 "$shm"
    for round in $(seq 1 "$rounds"); do
        echo "tmpfs round $round/$rounds"
        find "$shm/spool-shm/incoming" -type f -delete
        shm_plain+=("$(send "$sb_port" STOWBRIDGE "$sb_pid" "$work/cpu.shm_plain")")
        find "$shm/spool-shm/incoming" -type f -delete
        shm_tls+=("$(send "$sb_tls_port" STOWBRIDGE "$sb_pid" "$work/cpu.shm_tls" \
            "${tls_scu[@]}")")
    done
    kill -TERM "$sb_pid"
    wait "$sb_pid" || true
    rm -rf "$shm"
    sb_pid=$main_pid
    sb_port=$main_port
    sb_tls_port=$main_tls_port
fi

# --- 2. handshakes ---------------------------------------------------------
# assocs PORT [TLS-OPTIONS...]: HANDSHAKES echoscu runs in a row; prints
# the seconds they took.
assocs() {
    local port=$1 t0 t1 i
    shift
    t0=$(now)
    for i in $(seq 1 "$handshakes"); do
        echoscu -to 10 -aec STOWBRIDGE "$@" 127.0.0.1 "$port" ||
            { echo "echoscu $i failed" >&2; return 1; }
    done
    t1=$(now)
    echo "$t1 - $t0" | bc
}
hs_plain=$(assocs "$sb_port")
hs_tls=$(assocs "$sb_tls_port" "${tls_scu[@]}")
/usr/bin/python3 "$here/tls_handshakes.py" "$handshakes" "$sb_port" \
    "$sb_tls_port" "$pki/ca.pem" "$pki/modality.pem" "$pki/modality.key" \
    >"$work/handshakes.txt"
sb_hwm=$(awk '/VmHWM/ {print $2}' "/proc/$sb_pid/status")
kill -TERM "$sb_pid"
wait "$sb_pid" || true

# --- 3. 16 TLS associations at once ---------------------------------------
start_sb mem 64
per=$((count / 16))
[ "$per" -ge 1 ] || per=1
ls "$work/in" | head -n $((per * 16)) >"$work/list"
split -n l/16 -d "$work/list" "$work/part."
scus=()
for part in "$work"/part.*; do
    d=$work/in16/$(basename "$part")
    mkdir -p "$d"
    while read -r f; do ln "$work/in/$f" "$d/$f"; done <"$part"
done
rss_log=$work/rss.log
: >"$rss_log"
(
    while kill -0 "$sb_pid" 2>/dev/null; do
        conns=$(ss -Htn state established "( sport = :$sb_tls_port )" | wc -l)
        rss=$(awk '/VmRSS/ {print $2}' "/proc/$sb_pid/status" 2>/dev/null || echo 0)
        echo "$conns $rss" >>"$rss_log"
        sleep 0.05
    done
) &
sampler=$!
pids+=("$sampler")
rss_before=$(awk '/VmRSS/ {print $2}' "/proc/$sb_pid/status")
t0=$(now)
for d in "$work"/in16/*; do
    TCP_NODELAY=1 storescu -aec STOWBRIDGE --max-pdu 131072 "${tls_scu[@]}" \
        +sd 127.0.0.1 "$sb_tls_port" "$d" >/dev/null &
    scus+=("$!")
done
scu_failed=0
for p in "${scus[@]}"; do wait "$p" || scu_failed=$((scu_failed + 1)); done
t1=$(now)
mem_s=$(echo "$t1 - $t0" | bc)
mem_received=$(find "$work/spool-mem/incoming" -type f | wc -l)
mem_hwm=$(awk '/VmHWM/ {print $2}' "/proc/$sb_pid/status")
kill -TERM "$sb_pid"
wait "$sb_pid" || true
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true

/usr/bin/python3 - "$count" "$total_bytes" "${sb_plain[*]}" "${sb_tls[*]}" \
    "${ref_plain[*]}" "${ref_tls[*]}" "$received_plain" "$received_tls" \
    "$handshakes" "$hs_plain" "$hs_tls" "$sb_hwm" "$((per * 16))" \
    "$mem_received" "$scu_failed" "$mem_s" "$rss_before" "$mem_hwm" \
    "$rss_log" "$work/handshakes.txt" "$(grep -c 'event=dropped' "$work/sb.log" || true)" \
    "$(grep -c 'event=dropped' "$work/mem.log" || true)" "${shm_plain[*]}" \
    "${shm_tls[*]}" "$work" <<'PY'
import statistics, sys
a = sys.argv
n, size = int(a[1]), int(a[2])
runs = [[float(x) for x in a[i].split()] for i in range(3, 7)]
sb_p, sb_t, ref_p, ref_t = (statistics.median(r) for r in runs)
recv_p, recv_t = int(a[7]), int(a[8])
hs_n, hs_p, hs_t = int(a[9]), float(a[10]), float(a[11])
sb_hwm = int(a[12])
mem_n, mem_recv, mem_failed, mem_s = int(a[13]), int(a[14]), int(a[15]), float(a[16])
rss_before, mem_hwm = int(a[17]), int(a[18])
samples = [tuple(map(int, l.split())) for l in open(a[19]) if l.strip()]
mb = size / 1e6
names = ["stowbridge plain", "stowbridge TLS", "storescp plain", "storescp TLS"]
print("rounds (s):")
for name, r in zip(names, runs):
    print(f"  {name:17s} {r}")
print(f"instances: {n}, {mb:.1f} MB per run; stowbridge spooled {recv_p} "
      f"(plain) and {recv_t} (TLS) in the last round")
for name, t in zip(names, (sb_p, sb_t, ref_p, ref_t)):
    print(f"{name:17s}: {n/t:7.1f} inst/s {mb/t:7.1f} MB/s ({t:.2f} s)")
print(f"ratio stowbridge TLS / plain: {sb_p/sb_t:.2f} (target >= 0.8); "
      f"median of the per-round ratios "
      f"{statistics.median(p / t for p, t in zip(runs[0], runs[1])):.2f}")
if a[23].strip():
    sp = [float(x) for x in a[23].split()]
    st = [float(x) for x in a[24].split()]
    print(f"spool on tmpfs (no fsync cost, comparison only): plain {sp}, "
          f"TLS {st}")
    print(f"  plain {n/statistics.median(sp):7.1f} inst/s, TLS "
          f"{n/statistics.median(st):7.1f} inst/s; ratio TLS / plain "
          f"{statistics.median(sp)/statistics.median(st):.2f}, per-round "
          f"{statistics.median(p / t for p, t in zip(sp, st)):.2f}")
print(f"ratio storescp TLS / plain:   {ref_p/ref_t:.2f}")
cpu = []
for kind in ("sb_plain", "sb_tls", "shm_plain", "shm_tls", "ref_plain",
             "ref_tls"):
    try:
        vals = [float(x) for x in open(a[25] + "/cpu." + kind)]
    except OSError:
        continue
    cpu.append(f"{kind} {statistics.median(vals):.2f} s")
print("receiver CPU (user + system) per run, medians: " + ", ".join(cpu))
print(f"ratio stowbridge TLS / storescp TLS: {ref_t/sb_t:.2f}")
print(f"{hs_n} short associations (echoscu, one C-ECHO each): plain "
      f"{hs_n/hs_p:.1f}/s, TLS {hs_n/hs_t:.1f}/s; TLS costs "
      f"{(hs_t-hs_p)/hs_n*1000:.1f} ms more per association")
for line in open(a[20]):
    _, k, total, med, p95, proto = line.split()
    print(f"{k} short associations in one Python process, {proto:7s}: "
          f"{int(k)/float(total):6.1f}/s, median {med} ms, p95 {p95} ms")
print(f"stowbridge peak RSS over phases 1-2 (VmHWM): {sb_hwm/1024:.1f} MiB; "
      f"connections dropped in phases 1-2: {a[21]}")
most = max((c for c, _ in samples), default=0)
peak_sampled = max((r for _, r in samples), default=0)
print(f"16 TLS associations at once: {mem_n} instances in {mem_s:.2f} s, "
      f"{mem_recv} spooled, {mem_failed} storescu failed; at most {most} TLS "
      f"connections established at one sample")
print(f"  VmRSS before {rss_before/1024:.1f} MiB, sampled peak "
      f"{peak_sampled/1024:.1f} MiB, VmHWM {mem_hwm/1024:.1f} MiB "
      f"(target <= 40 MB); connections dropped: {a[22]}")
PY
