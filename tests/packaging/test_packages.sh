#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The packaging test: builds the .deb and the .rpm with CPack from a built
# tree, checks what they contain (files, modes, owners, conffiles,
# dependencies, scripts, the man page against --help, the unit's settings
# and its `systemd-analyze security` exposure), runs lintian on the .deb,
# then installs the .deb with apt into a fresh Debian 12 root made with
# debootstrap and goes through its life cycle there:
#   - first installation: user, spool, modes, unit in place, not enabled,
#     not started; `stowbridge check` against a local HTTPS token endpoint
#     and DICOMweb stub (dicomweb_stub.py, on the host's loopback);
#   - reinstallation and upgrade (restart; configuration and enablement
#     kept), remove (stop; configuration and spool kept), purge
#     (configuration gone, spool kept); the RPM scriptlets in the same root.
#     systemd does not run there: the scripts' systemctl and
#     deb-systemd-invoke calls go to recording stand-ins;
#   - the package again on the root with systemd installed
#     (systemd-sysusers, systemd-tmpfiles, systemd-analyze verify), then the
#     root booted with systemd-nspawn: the service started for real,
#     sandboxed, receiving from storescu and delivering over TLS with the
#     secret from LoadCredential=, restarted after kill -9 and by an
#     upgrade, stopped by a remove.
#
#   test_packages.sh SOURCE_DIR BUILD_DIR
#
# Needs root. Exit status 0 when everything passed, 1 on a failure, 77
# (skipped) only when not root or when the Debian mirror cannot be
# reached. The debootstrap root and the downloaded packages are cached in
# $STOWBRIDGE_TEST_CACHE (default /var/cache/stowbridge-test); the mirror
# is the host's own (its APT sources), or $STOWBRIDGE_TEST_MIRROR. Network
# traffic other than to the mirror stays on 127.0.0.1.
set -euo pipefail

SRC=$(cd "${1:?usage: test_packages.sh SOURCE_DIR BUILD_DIR}" && pwd)
BUILD=$(cd "${2:?usage: test_packages.sh SOURCE_DIR BUILD_DIR}" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${STOWBRIDGE_TEST_CACHE:-/var/cache/stowbridge-test}
SUITE=bookworm
BASE_RECIPE="debootstrap --variant=minbase $SUITE, v1"
# Issue 11 item 8: the unit's exposure rating stays at or below 2.0.
MAX_EXPOSURE=2.0
# The system Python, which has python3-pydicom (as the integration tests).
PY=/usr/bin/python3

passed=0
failed=0
t0=$(date +%s)

say() { printf '%s\n' "$*"; }
section() { printf '\n== %s (%ds)\n' "$*" "$(( $(date +%s) - t0 ))"; }
pass() { passed=$((passed + 1)); say "ok - $*"; }
fail() { failed=$((failed + 1)); say "FAIL - $*"; }
# check WHAT COMMAND...: one assertion.
check() {
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}
die() {
    say "FATAL: $*"
    say "$passed passed, $((failed + 1)) failed"
    exit 1
}
skip() {
    say ""
    say "########################################################################"
    say "# SKIPPED: $*"
    say "########################################################################"
    say "$passed passed, $failed failed, 1 skipped"
    [ "$failed" -eq 0 ] || exit 1
    exit 77
}

[ "$(id -u)" -eq 0 ] ||
    skip "the packaging test must run as root (it installs packages into a chroot)"
for tool in cpack dpkg-deb dpkg-shlibdeps rpm rpmbuild lintian debootstrap \
            systemd-analyze systemd-nspawn $PY curl chroot unshare runuser \
            flock readelf man timeout echoscu storescu openssl; do
    command -v "$tool" >/dev/null ||
        die "$tool is missing: run scripts/install-deps.sh"
done
$PY -c "import pydicom" 2>/dev/null || die "python3-pydicom is missing: run scripts/install-deps.sh"
[ -f "$BUILD/CPackConfig.cmake" ] || die "no $BUILD/CPackConfig.cmake: configure the build first"

mkdir -p "$CACHE"
# One run at a time: another run's root would otherwise be taken for
# leftovers of a killed one.
exec 9>"$CACHE/.lock"
timeout 900 flock 9 || die "another packaging test holds $CACHE/.lock"

# Removes a run directory, never crossing into a mount (the root's /proc).
remove_run() {
    local d=$1
    if mountpoint -q "$d/root/proc"; then
        umount "$d/root/proc" || umount -l "$d/root/proc" || true
    fi
    if mountpoint -q "$d/root/proc"; then
        say "warning: $d/root/proc is still mounted; leaving $d"
        return 0
    fi
    rm -rf --one-file-system "$d"
}
for stale in "$CACHE"/run.*; do
    [ -d "$stale" ] && remove_run "$stale"
done

WORK=$(mktemp -d "$CACHE/run.XXXXXX")
ROOT=$WORK/root
STUB_PID=
nspawn_pid=
cleanup() {
    local rc=$?
    set +e
    if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
        kill "$nspawn_pid"
        wait "$nspawn_pid" 2>/dev/null
    fi
    if [ -n "$STUB_PID" ]; then
        kill "$STUB_PID" 2>/dev/null
        wait "$STUB_PID" 2>/dev/null
    fi
    remove_run "$WORK"
    exit "$rc"
}
trap cleanup EXIT

VERSION=$(sed -n 's/^set(CPACK_PACKAGE_VERSION "\(.*\)")$/\1/p' "$BUILD/CPackConfig.cmake")
[ -n "$VERSION" ] || die "no CPACK_PACKAGE_VERSION in $BUILD/CPackConfig.cmake"
UP_VERSION="$VERSION+pkgtest1"
DEB_ARCH=$(dpkg --print-architecture)

# ---------------------------------------------------------------------------
section "building the packages (version $VERSION)"
timeout 600 cpack --config "$BUILD/CPackConfig.cmake" -B "$WORK/pkg" \
    >"$WORK/cpack.log" 2>&1 || { cat "$WORK/cpack.log"; die "cpack failed"; }
timeout 600 cpack --config "$BUILD/CPackConfig.cmake" -G DEB -B "$WORK/pkg-up" \
    -D CPACK_PACKAGE_VERSION="$UP_VERSION" >>"$WORK/cpack.log" 2>&1 ||
    { cat "$WORK/cpack.log"; die "cpack (upgrade version) failed"; }
DEB=$WORK/pkg/stowbridge_${VERSION}_${DEB_ARCH}.deb
DEB_UP=$WORK/pkg-up/stowbridge_${UP_VERSION}_${DEB_ARCH}.deb
RPM_FILE=$(ls "$WORK"/pkg/stowbridge-"$VERSION"-1.*.rpm 2>/dev/null | head -n 1 || true)
check "the .deb is built ($(basename "$DEB"))" test -s "$DEB"
check "the .rpm is built ($(basename "${RPM_FILE:-none}"))" test -s "${RPM_FILE:-/nonexistent}"
check "the upgrade .deb is built ($(basename "$DEB_UP"))" test -s "$DEB_UP"
[ -s "$DEB" ] && [ -s "$RPM_FILE" ] && [ -s "$DEB_UP" ] || die "packages missing"

# ---------------------------------------------------------------------------
section "the .deb: files, modes, owners"
dpkg-deb -c "$DEB" | awk '{print $1, $2, $6}' | sed 's#\./#/#' >"$WORK/deb.list"
cat "$WORK/deb.list"
cat >"$WORK/deb.expected" <<'EOF'
-rw-r----- root/root /etc/stowbridge/stowbridge.json
-rw-r--r-- root/root /usr/lib/systemd/system/stowbridge.service
-rw-r--r-- root/root /usr/lib/sysusers.d/stowbridge.conf
-rw-r--r-- root/root /usr/lib/tmpfiles.d/stowbridge.conf
-rw-r--r-- root/root /usr/share/doc/stowbridge/README.md
-rw-r--r-- root/root /usr/share/doc/stowbridge/changelog.gz
-rw-r--r-- root/root /usr/share/doc/stowbridge/copyright
-rw-r--r-- root/root /usr/share/doc/stowbridge/examples/azure-arc.conf
-rw-r--r-- root/root /usr/share/doc/stowbridge/examples/low-port.conf
-rw-r--r-- root/root /usr/share/doc/stowbridge/examples/stowbridge.sample.json
-rw-r--r-- root/root /usr/share/lintian/overrides/stowbridge
-rw-r--r-- root/root /usr/share/man/man1/stowbridge.1.gz
-rwxr-xr-x root/root /usr/bin/stowbridge
EOF
grep -v '^d' "$WORK/deb.list" | sort >"$WORK/deb.files"
sort "$WORK/deb.expected" >"$WORK/deb.expected.sorted"
check "the .deb holds exactly the expected files, modes and owners" \
    diff -u "$WORK/deb.expected.sorted" "$WORK/deb.files"
check "every directory in the .deb is drwxr-xr-x root/root" \
    test -z "$(grep '^d' "$WORK/deb.list" | grep -v '^drwxr-xr-x root/root ')"
check "the .deb ships no spool (tmpfiles.d creates it; dpkg never removes it)" \
    test -z "$(grep ' /var/' "$WORK/deb.list")"

dpkg-deb -x "$DEB" "$WORK/deb-root"
dpkg-deb -e "$DEB" "$WORK/deb-ctrl"
BIN=$WORK/deb-root/usr/bin/stowbridge
UNIT=$WORK/deb-root/usr/lib/systemd/system/stowbridge.service
check "the packaged program runs and says its version" \
    test "$("$BIN" --version)" = "stowbridge $VERSION"
check "the packaged program is stripped" \
    test -z "$(readelf -S "$BIN" | grep -E '\.debug_|\.symtab')"
check "the shipped sysusers.d line is the one the RPM %pre uses" \
    grep -qxF "$(grep '^u ' "$WORK/deb-root/usr/lib/sysusers.d/stowbridge.conf")" \
        <(rpm -qp --qf '%{PREIN}' "$RPM_FILE" | sed -n "s/^ *echo '\(u .*\)' |.*/\1/p")
check "tmpfiles.d makes the spool 0700 stowbridge:stowbridge, never aged" \
    grep -qxE 'd /var/spool/stowbridge 0700 stowbridge stowbridge -' \
        "$WORK/deb-root/usr/lib/tmpfiles.d/stowbridge.conf"

# ---------------------------------------------------------------------------
section "the .deb: control, conffiles, scripts, dependencies"
dpkg-deb -I "$DEB"
depends=$(dpkg-deb -f "$DEB" Depends)
has_dep() { printf '%s\n' "$depends" | tr ',' '\n' | sed 's/^ *//' | grep -qE "^$1( |$)"; }
for dep in libdcmtk17 libcurl4 libcjson1 libmicrohttpd12 libc6 adduser \
    ca-certificates; do
    check "Depends: $dep" has_dep "$dep"
done
check "Depends names no GnuTLS curl (OpenSSL's libcurl4 it is)" \
    eval '! printf "%s" "$depends" | grep -q gnutls'
check "Version is $VERSION" test "$(dpkg-deb -f "$DEB" Version)" = "$VERSION"
check "the changelog's first entry is version $VERSION" \
    eval 'zcat "$WORK/deb-root/usr/share/doc/stowbridge/changelog.gz" | head -n 1 | grep -qF "stowbridge ($VERSION)"'
check "conffiles lists exactly /etc/stowbridge/stowbridge.json" \
    test "$(cat "$WORK/deb-ctrl/conffiles")" = "/etc/stowbridge/stowbridge.json"
for s in postinst prerm postrm; do
    check "$s is 0755 and valid sh" \
        eval 'test "$(stat -c %a "$WORK/deb-ctrl/$s")" = 755 && sh -n "$WORK/deb-ctrl/$s"'
done

# ---------------------------------------------------------------------------
section "the .rpm: files, modes, owners, config, requirements, scriptlets"
rpm -qp --qf '[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} flags=%{FILEFLAGS:fflags} %{FILENAMES}\n]' \
    "$RPM_FILE" >"$WORK/rpm.list"
cat "$WORK/rpm.list"
cat >"$WORK/rpm.expected" <<'EOF'
-rw-r----- root:stowbridge flags=cn /etc/stowbridge/stowbridge.json
-rwxr-xr-x root:root flags= /usr/bin/stowbridge
-rw-r--r-- root:root flags= /usr/lib/systemd/system/stowbridge.service
-rw-r--r-- root:root flags= /usr/lib/sysusers.d/stowbridge.conf
-rw-r--r-- root:root flags= /usr/lib/tmpfiles.d/stowbridge.conf
-rw-r--r-- root:root flags=d /usr/share/doc/stowbridge/README.md
-rw-r--r-- root:root flags=d /usr/share/doc/stowbridge/changelog.gz
-rw-r--r-- root:root flags=d /usr/share/doc/stowbridge/copyright
-rw-r--r-- root:root flags=d /usr/share/doc/stowbridge/examples/azure-arc.conf
-rw-r--r-- root:root flags=d /usr/share/doc/stowbridge/examples/low-port.conf
-rw-r--r-- root:root flags=d /usr/share/doc/stowbridge/examples/stowbridge.sample.json
-rw-r--r-- root:root flags=d /usr/share/man/man1/stowbridge.1.gz
drwxr-xr-x root:root flags= /etc/stowbridge
drwxr-xr-x root:root flags= /usr/share/doc/stowbridge
drwxr-xr-x root:root flags= /usr/share/doc/stowbridge/examples
EOF
check "the .rpm holds exactly the expected files; the config is %config(noreplace) 0640 root:stowbridge; it owns no system directory" \
    diff -u <(sort "$WORK/rpm.expected") <(sort "$WORK/rpm.list")
rpm -qpR "$RPM_FILE" >"$WORK/rpm.requires"
for req in 'libdcmnet.so.17()(64bit)' 'libdcmdata.so.17()(64bit)' \
           'libcurl.so.4(CURL_OPENSSL_4)(64bit)' 'libcjson.so.1()(64bit)' \
           ca-certificates /usr/sbin/useradd; do
    check "Requires: $req" grep -qxF "$req" "$WORK/rpm.requires"
done
check "the .rpm is not relocatable" \
    test "$(rpm -qp --qf '%{PREFIXES}' "$RPM_FILE")" = "(none)"
mkdir -p "$WORK/rpm-scripts"
for s in PREIN POSTIN PREUN POSTUN; do
    rpm -qp --qf "%{$s}" "$RPM_FILE" >"$WORK/rpm-scripts/$s"
    check "RPM %$s is a valid sh scriptlet" \
        eval 'test -s "$WORK/rpm-scripts/$s" && sh -n "$WORK/rpm-scripts/$s"'
done

# ---------------------------------------------------------------------------
section "lintian"
# Every tag down to pedantic is shown; only errors fail the test.
if timeout 300 lintian --fail-on error --display-info --display-experimental \
        --pedantic "$DEB" >"$WORK/lintian.log" 2>&1; then rc=0; else rc=$?; fi
grep -v 'running with root privileges' "$WORK/lintian.log" | sed 's/^/    /' || true
say "lintian: $(grep -c '^E:' "$WORK/lintian.log" || true) errors, $(grep -c '^W:' "$WORK/lintian.log" || true) warnings"
check "lintian reports no error" \
    eval 'test "$rc" -eq 0 && ! grep -q "^E:" "$WORK/lintian.log"'

# ---------------------------------------------------------------------------
section "the man page covers --help"
man_text=$WORK/man.txt
MANWIDTH=200 man -l -P cat "$WORK/deb-root/usr/share/man/man1/stowbridge.1.gz" \
    >"$man_text" 2>/dev/null
check "the man page renders without groff warnings" \
    test -z "$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z \
        "$WORK/deb-root/usr/share/man/man1/stowbridge.1.gz" 2>&1 >/dev/null)"
"$BIN" --help >"$WORK/help.txt"
$PY - "$WORK/help.txt" >"$WORK/help.items" <<'EOF'
import re, sys
# Each usage line is "  stowbridge CMD ..." (or "  stowbridge --version |
# --help"); queue's actions are the words after "queue" and after each
# "| ". Options are every --word.
items = []
for line in open(sys.argv[1]):
    if not line.startswith("  stowbridge "):
        continue
    m = re.match(r"  stowbridge ([a-z][a-z-]*)(.*)", line)
    if m:
        items.append("stowbridge " + m.group(1))
        if m.group(1) == "queue":
            for action in re.findall(r"(?:^ |\| )([a-z]+)", m.group(2)):
                items.append("stowbridge queue " + action)
    items += re.findall(r"--[a-z][a-z-]*", line)
print("\n".join(dict.fromkeys(items)))
EOF
check "--help lists subcommands" test -s "$WORK/help.items"
while read -r item; do
    check "the man page documents '$item'" grep -qF -- "$item" "$man_text"
done <"$WORK/help.items"

# ---------------------------------------------------------------------------
section "the unit"
unit_has() { grep -qxF "$1" "$UNIT"; }
for line in 'Type=notify' 'User=stowbridge' 'Group=stowbridge' 'Restart=on-failure' \
    'ExecStart=/usr/bin/stowbridge run --config /etc/stowbridge/stowbridge.json' \
    'NoNewPrivileges=yes' 'ProtectSystem=strict' 'ProtectHome=yes' 'PrivateTmp=yes' \
    'PrivateDevices=yes' 'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' \
    'SystemCallFilter=@system-service' 'CapabilityBoundingSet=' 'AmbientCapabilities=' \
    'LoadCredential=client_secret:/etc/stowbridge/client_secret' \
    'LoadCredential=tls_key:/etc/stowbridge/tls/key.pem' 'SetCredential=tls_key:\n' \
    'WantedBy=multi-user.target'; do
    check "unit: $line" unit_has "$line"
done
check "unit: ReadWritePaths= is the spool and only the spool" \
    test "$(grep '^ReadWritePaths=' "$UNIT")" = "ReadWritePaths=/var/spool/stowbridge"
check "unit: no capability is granted anywhere else" \
    test -z "$(grep -E '^(Capability|Ambient)' "$UNIT" | grep -v -e '=$')"

# TimeoutStopSec against the daemon's stop grace: dicom.timeout_s (the
# shipped config's, else the default) + DAEMON_GRACE_EXTRA_S.
extra=$(sed -n 's/^#define DAEMON_GRACE_EXTRA_S \([0-9]*\).*/\1/p' "$SRC/bridge/daemon.c")
timeouts=$($PY - "$WORK/deb-root/etc/stowbridge/stowbridge.json" "$BIN" <<'EOF'
import json, re, subprocess, sys
def load(text):
    # Whole-line // comments only, as both files are written.
    return json.loads("\n".join(l for l in text.splitlines()
                                if not l.lstrip().startswith("//")))
sample = load(subprocess.run([sys.argv[2], "sample-config"], check=True,
                             capture_output=True, text=True).stdout)
shipped = load(open(sys.argv[1]).read())
print(sample["dicom"]["timeout_s"],
      shipped.get("dicom", {}).get("timeout_s", sample["dicom"]["timeout_s"]))
EOF
)
read -r default_timeout shipped_timeout <<<"$timeouts"
stop_s=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s$/\1/p' "$UNIT")
say "stop grace: default dicom.timeout_s $default_timeout + $extra s, shipped $shipped_timeout + $extra s; TimeoutStopSec=${stop_s}s"
check "unit: TimeoutStopSec (${stop_s}s) is at least 20 s above the stop grace ($((shipped_timeout + extra)) s)" \
    test -n "$stop_s" -a -n "$extra" -a "$stop_s" -ge $((shipped_timeout + extra + 20)) \
         -a "$stop_s" -ge $((default_timeout + extra + 20))

security() {
    systemd-analyze security --offline=true "$1" 2>&1 |
        sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p'
}
exposure=$(security "$UNIT")
say "systemd-analyze security: overall exposure $exposure"
check "systemd-analyze security rates the unit ${exposure:-?} <= $MAX_EXPOSURE" \
    $PY -c "import sys; sys.exit(0 if 0 < float('${exposure:-99}') <= $MAX_EXPOSURE else 1)"
# The documented drop-in for a port below 1024, merged into the unit.
mkdir -p "$WORK/lowport"
{ cat "$UNIT"; sed -n '/^\[Service\]/,$p' "$WORK/deb-root/usr/share/doc/stowbridge/examples/low-port.conf"; } \
    >"$WORK/lowport/stowbridge.service"
exposure_low=$(security "$WORK/lowport/stowbridge.service")
say "systemd-analyze security with examples/low-port.conf: overall exposure $exposure_low"
check "with the low-port drop-in the unit still rates ${exposure_low:-?} <= $MAX_EXPOSURE" \
    $PY -c "import sys; sys.exit(0 if 0 < float('${exposure_low:-99}') <= $MAX_EXPOSURE else 1)"

# ---------------------------------------------------------------------------
section "a fresh Debian $SUITE root"
# The mirror: $STOWBRIDGE_TEST_MIRROR, else the one the host's APT uses for
# $SUITE; the root gets the host's $SUITE sources (main only).
$PY - "$SUITE" "${STOWBRIDGE_TEST_MIRROR:-}" >"$WORK/sources" <<'EOF' ||
import glob, re, sys
suite, override = sys.argv[1], sys.argv[2]
entries = []   # (uri, suite)
if override:
    entries = [(override, suite), (override, suite + "-updates")]
else:
    files = glob.glob("/etc/apt/sources.list") + \
        sorted(glob.glob("/etc/apt/sources.list.d/*.list"))
    for path in files:
        for line in open(path, errors="replace"):
            m = re.match(r"\s*deb\s+(\[[^]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)", line)
            if m and "main" in m.group(4).split():
                entries.append((m.group(2), m.group(3)))
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for stanza in re.split(r"\n\s*\n", open(path, errors="replace").read()):
            fields = {}
            for l in stanza.splitlines():
                m = re.match(r"([A-Za-z-]+):\s*(.*)", l)
                if m:
                    fields[m.group(1).lower()] = m.group(2).split()
            if ("deb" in fields.get("types", []) and
                    "main" in fields.get("components", []) and
                    fields.get("enabled", ["yes"]) != ["no"]):
                for uri in fields.get("uris", []):
                    for s in fields.get("suites", []):
                        entries.append((uri, s))
entries = [(u.rstrip("/"), s) for u, s in entries
           if re.match(r"https?://", u) and
           (s == suite or s.startswith(suite + "-") or s.startswith(suite + "/"))]
mirror = next((u for u, s in entries if s == suite), None)
if mirror is None:
    sys.exit("no APT source for " + suite)
print("MIRROR " + mirror)
for u, s in dict.fromkeys(entries):
    print("deb %s %s main" % (u, s))
EOF
    die "no APT source for $SUITE on this host: set STOWBRIDGE_TEST_MIRROR to a Debian mirror"
MIRROR=$(sed -n 's/^MIRROR //p' "$WORK/sources")
grep '^deb ' "$WORK/sources" >"$WORK/sources.list"
say "mirror: $MIRROR"
cat "$WORK/sources.list"
if ! timeout 30 curl -fsS -o /dev/null "$MIRROR/dists/$SUITE/Release"; then
    skip "the Debian mirror $MIRROR cannot be reached: the chroot part of the packaging test did not run"
fi

# Runs a command in $ROOT with a clean environment and no stdin.
in_root() {
    timeout "${TMO:-300}" chroot "$ROOT" /usr/bin/env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@" </dev/null
}
APT=(apt-get -y -q -o Dpkg::Use-Pty=0 --no-install-recommends)

BASE=$CACHE/$SUITE-minbase
if [ "$(cat "$BASE/.stowbridge-base" 2>/dev/null)" != "$BASE_RECIPE $MIRROR" ]; then
    say "creating the base root $BASE with debootstrap (first run only)"
    rm -rf --one-file-system "$BASE" "$BASE.new"
    if ! timeout 900 debootstrap --variant=minbase "$SUITE" "$BASE.new" "$MIRROR" \
            >"$WORK/debootstrap.log" 2>&1; then
        tail -n 30 "$WORK/debootstrap.log"
        if ! timeout 30 curl -fsS -o /dev/null "$MIRROR/dists/$SUITE/Release"; then
            rm -rf --one-file-system "$BASE.new"
            skip "debootstrap could not reach the Debian mirror $MIRROR"
        fi
        die "debootstrap failed (log above)"
    fi
    rm -f "$BASE.new"/var/cache/apt/archives/*.deb
    echo "$BASE_RECIPE $MIRROR" >"$BASE.new/.stowbridge-base"
    mv "$BASE.new" "$BASE"
fi
cp -a "$BASE" "$ROOT"
cp "$WORK/sources.list" "$ROOT/etc/apt/sources.list"
rm -f "$ROOT"/etc/apt/sources.list.d/*
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
mount -t proc proc "$ROOT/proc"
# Downloaded packages are kept between runs.
mkdir -p "$CACHE/apt-archives"
find "$CACHE/apt-archives" -name '*.deb' -exec cp -n -l -t "$ROOT/var/cache/apt/archives/" {} +
keep_downloads() {
    find "$ROOT/var/cache/apt/archives" -maxdepth 1 -name '*.deb' \
        -exec cp -n -l -t "$CACHE/apt-archives/" {} + 2>/dev/null || true
}
TMO=300 in_root "${APT[@]}" update >"$WORK/apt-update.log" 2>&1 ||
    { cat "$WORK/apt-update.log"; die "apt-get update in the root failed"; }
mkdir -p "$ROOT/tmp/pkg"
cp "$DEB" "$DEB_UP" "$ROOT/tmp/pkg/"
cp "$WORK/rpm-scripts"/* "$ROOT/tmp/pkg/"
chmod 0755 "$ROOT/tmp/pkg"
chmod 0644 "$ROOT"/tmp/pkg/*
DEB_IN=/tmp/pkg/$(basename "$DEB")
DEB_UP_IN=/tmp/pkg/$(basename "$DEB_UP")

# Stand-ins for a running systemd: the scripts see /run/systemd/system and
# their systemctl / deb-systemd-invoke calls are recorded, not carried out.
# They take the real paths (dpkg-divert), since apt runs dpkg with its own
# PATH (DPkg::Path).
SYSTEMD_LOG=$ROOT/var/log/systemd-calls.log
STAND_INS="/usr/bin/systemctl /usr/bin/deb-systemd-invoke"
install_stand_ins() {
    local path
    mkdir -p "$ROOT/run/systemd/system"
    for path in $STAND_INS; do
        in_root dpkg-divert --quiet --local --rename --add "$path"
        printf '#!/bin/sh\necho "%s $*" >>/var/log/systemd-calls.log\nexit 0\n' \
            "$(basename "$path")" >"$ROOT$path"
        chmod 0755 "$ROOT$path"
    done
    : >"$SYSTEMD_LOG"
}
remove_stand_ins() {
    local path
    rm -rf "${ROOT:?}/run/systemd"
    for path in $STAND_INS; do
        rm -f "${ROOT:?}$path"
        in_root dpkg-divert --quiet --local --rename --remove "$path"
    done
}
calls_since() { tail -n "+$(($1 + 1))" "$SYSTEMD_LOG"; }
calls_mark() { wc -l <"$SYSTEMD_LOG"; }

# Mode and owner as the root's own user database names them.
stat_of() { chroot "$ROOT" stat -c '%a %U:%G' "$1" 2>/dev/null; }
user_of_root() { chroot "$ROOT" getent passwd stowbridge; }
# check_installed PHASE: user, group, spool, config, unit, not enabled.
check_installed() {
    local phase=$1 pw
    pw=$(user_of_root || true)
    say "$phase: passwd: $pw"
    check "$phase: user stowbridge exists, home /var/spool/stowbridge, shell nologin" \
        eval 'printf "%s\n" "$pw" | grep -qE "^stowbridge:x:[0-9]+:[0-9]+:[^:]*:/var/spool/stowbridge:/(usr/)?sbin/nologin$"'
    check "$phase: group stowbridge exists and is the user's group" \
        test "$(chroot "$ROOT" id -gn stowbridge 2>/dev/null)" = stowbridge
    check "$phase: /var/spool/stowbridge is 0700 stowbridge:stowbridge ($(stat_of /var/spool/stowbridge))" \
        test "$(stat_of /var/spool/stowbridge)" = "700 stowbridge:stowbridge"
    check "$phase: /etc/stowbridge/stowbridge.json is 0640 root:stowbridge ($(stat_of /etc/stowbridge/stowbridge.json))" \
        test "$(stat_of /etc/stowbridge/stowbridge.json)" = "640 root:stowbridge"
    check "$phase: /etc/stowbridge/tls is 0750 root:stowbridge ($(stat_of /etc/stowbridge/tls))" \
        test "$(stat_of /etc/stowbridge/tls)" = "750 root:stowbridge"
    check "$phase: the unit is installed 0644 root:root" \
        test "$(stat_of /usr/lib/systemd/system/stowbridge.service)" = "644 root:root"
    check "$phase: /usr/bin/stowbridge is 0755 root:root and runs" \
        eval 'test "$(stat_of /usr/bin/stowbridge)" = "755 root:root" && chroot "$ROOT" /usr/bin/stowbridge --version >/dev/null'
}
enabled_link=/etc/systemd/system/multi-user.target.wants/stowbridge.service

# ---------------------------------------------------------------------------
section "install the .deb with apt (no systemd in the root)"
install_stand_ins
mark=$(calls_mark)
TMO=600 in_root "${APT[@]}" install "$DEB_IN" >"$WORK/install.log" 2>&1 ||
    { cat "$WORK/install.log"; die "apt-get install of the .deb failed"; }
keep_downloads
grep -E '^(Setting up|stowbridge|Unpacking stowbridge|    |and start)' "$WORK/install.log" || true
for lib in libdcmtk17 libcurl4 libcjson1 libssl3 ca-certificates; do
    check "apt installed $lib with the package" \
        test "$(chroot "$ROOT" dpkg-query -W -f '${Status}' "$lib" 2>/dev/null)" = "install ok installed"
done
check "every library of /usr/bin/stowbridge resolves in the root, libssl.so.3 among them" \
    eval 'chroot "$ROOT" ldd /usr/bin/stowbridge >"$WORK/ldd.txt" && ! grep -q "not found" "$WORK/ldd.txt" && grep -q "libssl.so.3" "$WORK/ldd.txt"'
check_installed "first install"
check "first install: postinst says the service is not enabled and how to start it" \
    grep -q 'stowbridge is installed but not enabled' "$WORK/install.log"
calls_since "$mark" | sed 's/^/    call: /'
check "first install: systemd is reloaded" \
    grep -qx 'systemctl --system daemon-reload' <(calls_since "$mark")
check "first install: nothing is started, restarted or enabled" \
    test -z "$(calls_since "$mark" | grep -E 'start|restart|enable')"
check "first install: the unit is not enabled" test ! -e "$ROOT$enabled_link"

# ---------------------------------------------------------------------------
section "stowbridge check in the root"
# The shipped configuration, in a network namespace of its own so its
# port 11112 cannot meet anything on the host.
if timeout 60 unshare -n chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin \
        runuser -u stowbridge -- /usr/bin/stowbridge check \
        --config /etc/stowbridge/stowbridge.json >"$WORK/check-shipped.log" 2>&1 </dev/null; then
    rc=0
else
    rc=$?
fi
sed 's/^/    /' "$WORK/check-shipped.log"
check "the shipped configuration passes 'stowbridge check' as the service user (receive-only)" \
    eval 'test "$rc" -eq 0 && grep -q "^config: ok" "$WORK/check-shipped.log" && grep -q "^upload: not configured" "$WORK/check-shipped.log"'

# A configuration that sends: the stub token endpoint and DICOMweb root
# on the host's loopback (the root shares the network), the secret as the
# systemd credential the unit would load.
secret=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
client=stowbridge-pkgtest
# Over TLS, as a real server: the root trusts a test CA given in
# upload.ca_file, so OpenSSL runs too (in the service's sandbox later on).
timeout 60 openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$WORK/tls.key" -out "$WORK/tls.pem" \
    >"$WORK/openssl.log" 2>&1 || { cat "$WORK/openssl.log"; die "openssl req failed"; }
ca_file=/etc/ssl/stowbridge-pkgtest-ca.pem
install -m 0644 "$WORK/tls.pem" "$ROOT$ca_file"
$PY "$HERE/dicomweb_stub.py" "$WORK/stub.port" "$WORK/stub.log" "$client" "$secret" \
    "$WORK/tls.pem" "$WORK/tls.key" 2>"$WORK/stub.err" &
STUB_PID=$!
for _ in $(seq 1 100); do [ -s "$WORK/stub.port" ] && break; sleep 0.1; done
[ -s "$WORK/stub.port" ] || { cat "$WORK/stub.err"; die "the DICOMweb stub did not start"; }
stub_port=$(cat "$WORK/stub.port")
dicom_port=$($PY -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')
cat >"$ROOT/etc/stowbridge/test.json" <<EOF
{
    // The packaging test: sends to a stub on the host's loopback.
    "dicom": { "port": $dicom_port },
    "spool": { "dir": "/var/spool/stowbridge", "min_free_mb": 1 },
    "upload": { "url": "https://127.0.0.1:$stub_port/dicomweb",
                "ca_file": "$ca_file" },
    "auth": { "type": "client_credentials",
              "token_url": "https://127.0.0.1:$stub_port/token",
              "client_id": "$client" }
}
EOF
chroot "$ROOT" chown root:stowbridge /etc/stowbridge/test.json
chmod 0640 "$ROOT/etc/stowbridge/test.json"
creds=/run/credentials/stowbridge.service
write_credential() {
    mkdir -p "$ROOT$creds"
    printf '%s\n' "$1" >"$ROOT$creds/client_secret"
    chroot "$ROOT" chown -R stowbridge:stowbridge "$creds"
    chmod 0500 "$ROOT$creds"
    chmod 0400 "$ROOT$creds/client_secret"
}
run_check() {
    in_root runuser -u stowbridge -- /usr/bin/env CREDENTIALS_DIRECTORY="$creds" \
        /usr/bin/stowbridge "$@" >"$WORK/check.log" 2>&1
}
write_credential "$secret"
: >"$WORK/stub.log"
if run_check check --config /etc/stowbridge/test.json; then rc=0; else rc=$?; fi
sed 's/^/    /' "$WORK/check.log"
check "'stowbridge check' against the stub exits 0" test "$rc" -eq 0
for what in 'config: ok' 'spool: ok' 'dicom: ok' 'auth: ok' 'dicomweb: ok'; do
    check "check says '$what'" grep -q "^$what" "$WORK/check.log"
done
check "the stub was asked for a token with the credential's secret" \
    grep -q '"path": "/token".*"grant_type": "client_credentials", "client_id": "'"$client"'", "secret_ok": true' "$WORK/stub.log"
check "the stub was asked /dicomweb/studies?limit=1 with a Bearer token" \
    grep -q '"method": "GET", "path": "/dicomweb/studies?limit=1", "authorization": "Bearer ' "$WORK/stub.log"
if run_check token --config /etc/stowbridge/test.json; then rc=0; else rc=$?; fi
check "'stowbridge token' in the root exits 0 and shows the claims" \
    eval 'test "$rc" -eq 0 && grep -q "\"appid\"" "$WORK/check.log"'
write_credential "not-the-secret"
if run_check check --config /etc/stowbridge/test.json; then rc=0; else rc=$?; fi
sed 's/^/    /' "$WORK/check.log"
check "with a wrong secret 'stowbridge check' fails (exit 1) and says auth FAILED" \
    eval 'test "$rc" -eq 1 && grep -q "^auth: FAILED" "$WORK/check.log"'
rm -rf "${ROOT:?}$creds"

# ---------------------------------------------------------------------------
section "reinstall and upgrade"
# The administrator's changes: the configuration, an enabled unit, a
# spooled entry.
sed -i 's/"level": "info"/"level": "notice"/' "$ROOT/etc/stowbridge/stowbridge.json"
check "the configuration was changed for the test" \
    grep -q '"level": "notice"' "$ROOT/etc/stowbridge/stowbridge.json"
conf_sum=$(md5sum <"$ROOT/etc/stowbridge/stowbridge.json")
# What "systemctl enable stowbridge" does (WantedBy=multi-user.target).
mkdir -p "$(dirname "$ROOT$enabled_link")"
ln -s /usr/lib/systemd/system/stowbridge.service "$ROOT$enabled_link"
entry=/var/spool/stowbridge/incoming/1700000000.000001-0123456789abcdef.dcm
mkdir -p "$ROOT/var/spool/stowbridge/incoming"
printf 'DICM' >"$ROOT$entry"
chroot "$ROOT" chown -R stowbridge:stowbridge /var/spool/stowbridge/incoming

mark=$(calls_mark)
TMO=300 in_root "${APT[@]}" install --reinstall "$DEB_IN" >"$WORK/reinstall.log" 2>&1 ||
    { cat "$WORK/reinstall.log"; die "reinstalling the .deb failed"; }
calls_since "$mark" | sed 's/^/    call: /'
check "reinstall: the service is try-restarted" \
    grep -qx 'deb-systemd-invoke try-restart stowbridge.service' <(calls_since "$mark")
check "reinstall: the service is neither stopped nor started" \
    test -z "$(calls_since "$mark" | grep -E ' (stop|start) ')"

mark=$(calls_mark)
TMO=300 in_root "${APT[@]}" install "$DEB_UP_IN" >"$WORK/upgrade.log" 2>&1 ||
    { cat "$WORK/upgrade.log"; die "upgrading to $UP_VERSION failed"; }
calls_since "$mark" | sed 's/^/    call: /'
check "upgrade: version $UP_VERSION is installed" \
    test "$(chroot "$ROOT" dpkg-query -W -f '${Version}' stowbridge)" = "$UP_VERSION"
check "upgrade: the service is try-restarted (restarted if it was running)" \
    grep -qx 'deb-systemd-invoke try-restart stowbridge.service' <(calls_since "$mark")
check "upgrade: the service is neither stopped nor started" \
    test -z "$(calls_since "$mark" | grep -E ' (stop|start) ')"
check "upgrade: the changed configuration is kept, without a prompt or a .dpkg-* file" \
    eval 'test "$(md5sum <"$ROOT/etc/stowbridge/stowbridge.json")" = "$conf_sum" && ! ls "$ROOT"/etc/stowbridge/*.dpkg-* >/dev/null 2>&1'
check "upgrade: the unit stays enabled" test -L "$ROOT$enabled_link"
check "upgrade: the spooled entry is still there" test -f "$ROOT$entry"
check_installed "after upgrade"

# ---------------------------------------------------------------------------
section "remove, then purge"
printf 'secret\n' >"$ROOT/etc/stowbridge/client_secret"
chmod 0600 "$ROOT/etc/stowbridge/client_secret"
# The TLS key (a secret, as the unit loads it) and a certificate beside it.
printf 'key\n' >"$ROOT/etc/stowbridge/tls/key.pem"
chmod 0600 "$ROOT/etc/stowbridge/tls/key.pem"
printf 'certificate\n' >"$ROOT/etc/stowbridge/tls/server.pem"
mark=$(calls_mark)
TMO=300 in_root "${APT[@]}" remove stowbridge >"$WORK/remove.log" 2>&1 ||
    { cat "$WORK/remove.log"; die "apt-get remove failed"; }
calls_since "$mark" | sed 's/^/    call: /'
check "remove: the service is stopped" \
    grep -qx 'deb-systemd-invoke stop stowbridge.service' <(calls_since "$mark")
check "remove: the program and the unit are gone" \
    test ! -e "$ROOT/usr/bin/stowbridge" -a ! -e "$ROOT/usr/lib/systemd/system/stowbridge.service"
check "remove: the package is in state config-files" \
    test "$(chroot "$ROOT" dpkg-query -W -f '${Status}' stowbridge)" = "deinstall ok config-files"
check "remove: the changed configuration is kept" \
    test "$(md5sum <"$ROOT/etc/stowbridge/stowbridge.json" 2>/dev/null)" = "$conf_sum"
check "remove: the spool and its entry are kept" test -f "$ROOT$entry"

TMO=300 in_root dpkg --purge stowbridge >"$WORK/purge.log" 2>&1 ||
    { cat "$WORK/purge.log"; die "dpkg --purge failed"; }
sed 's/^/    /' "$WORK/purge.log"
check "purge: the configuration and the client secret are gone" \
    test ! -e "$ROOT/etc/stowbridge/stowbridge.json" -a ! -e "$ROOT/etc/stowbridge/client_secret"
check "purge: a file the administrator added (test.json) is left alone" \
    test -f "$ROOT/etc/stowbridge/test.json"
check "purge: the TLS key is gone, the certificate beside it is kept, and purge says so" \
    eval 'test ! -e "$ROOT/etc/stowbridge/tls/key.pem" -a -f "$ROOT/etc/stowbridge/tls/server.pem" &&
          grep -q "/etc/stowbridge/tls is kept" "$WORK/purge.log"'
rm -f "$ROOT/etc/stowbridge/test.json" "$ROOT/etc/stowbridge/tls/server.pem"
rmdir "$ROOT/etc/stowbridge/tls" "$ROOT/etc/stowbridge" 2>/dev/null || true
check "purge: the enablement symlink and the mask are gone" \
    test ! -e "$ROOT$enabled_link" -a ! -L "$ROOT$enabled_link" -a ! -L "$ROOT/etc/systemd/system/stowbridge.service"
check "purge: the package is forgotten" \
    test -z "$(chroot "$ROOT" dpkg-query -W -f '${Status}' stowbridge 2>/dev/null)"
check "purge: the spool and its entry are kept, and purge says so" \
    eval 'test -f "$ROOT$entry" && grep -q "spool /var/spool/stowbridge is kept (1 DICOM files)" "$WORK/purge.log"'
check "purge: the stowbridge user, owner of the kept spool, is kept" \
    eval 'user_of_root >/dev/null'

# ---------------------------------------------------------------------------
section "the RPM scriptlets, run in the same root"
in_root userdel stowbridge
in_root groupdel stowbridge 2>/dev/null || true
rm -rf "$ROOT/var/spool/stowbridge"
mark=$(calls_mark)
check "%pre (install) runs" in_root sh /tmp/pkg/PREIN 1
check "%pre created the user stowbridge with its group and home" \
    eval 'user_of_root | grep -qE "^stowbridge:x:[0-9]+:[0-9]+:[^:]*:/var/spool/stowbridge:" && test "$(chroot "$ROOT" id -gn stowbridge)" = stowbridge'
check "%post (install) runs" in_root sh /tmp/pkg/POSTIN 1
check "%post created the spool 0700 stowbridge:stowbridge" \
    test "$(stat_of /var/spool/stowbridge)" = "700 stowbridge:stowbridge"
check "%post created /etc/stowbridge/tls 0750 root:stowbridge" \
    test "$(stat_of /etc/stowbridge/tls)" = "750 root:stowbridge"
check "%post neither enables nor starts" \
    test -z "$(calls_since "$mark" | grep -E 'start|enable|preset')"
mark=$(calls_mark)
check "%preun (upgrade) runs" in_root sh /tmp/pkg/PREUN 1
check "%postun (upgrade) runs" in_root sh /tmp/pkg/POSTUN 1
check "%postun on upgrade try-restarts, %preun on upgrade stops nothing" \
    eval 'calls_since "$mark" | grep -qx "systemctl try-restart stowbridge.service" && ! calls_since "$mark" | grep -q disable'
mark=$(calls_mark)
check "%preun (erase) runs" in_root sh /tmp/pkg/PREUN 0
check "%preun on erase stops and disables the service" \
    grep -qx 'systemctl --no-reload disable --now stowbridge.service' <(calls_since "$mark")
check "%postun (erase) runs" in_root sh /tmp/pkg/POSTUN 0
check "%postun on erase removes the empty /etc/stowbridge/tls" \
    test ! -e "$ROOT/etc/stowbridge/tls"
in_root userdel stowbridge
in_root groupdel stowbridge 2>/dev/null || true
rm -rf "$ROOT/var/spool/stowbridge"
remove_stand_ins

# ---------------------------------------------------------------------------
section "install again with systemd in the root (systemd-sysusers, systemd-tmpfiles)"
# systemd as a server has it: with dbus (a Recommends), which systemd-run
# needs.
TMO=600 in_root "${APT[@]}" install systemd dbus >"$WORK/systemd.log" 2>&1 ||
    { tail -n 30 "$WORK/systemd.log"; die "installing systemd in the root failed"; }
keep_downloads
TMO=300 in_root "${APT[@]}" install "$DEB_IN" >"$WORK/install2.log" 2>&1 ||
    { cat "$WORK/install2.log"; die "apt-get install of the .deb (with systemd) failed"; }
check_installed "with systemd"
check "with systemd: systemctl says the unit is disabled" \
    test "$(in_root systemctl is-enabled stowbridge.service 2>/dev/null)" = disabled
if timeout 120 systemd-analyze verify --man=no --root="$ROOT" stowbridge.service \
        >"$WORK/verify.log" 2>&1; then rc=0; else rc=$?; fi
sed 's/^/    /' "$WORK/verify.log"
check "systemd-analyze verify accepts the installed unit" \
    eval 'test "$rc" -eq 0 && ! grep -q stowbridge "$WORK/verify.log"'
installed_exposure=$(systemd-analyze security --offline=true --root="$ROOT" stowbridge.service 2>&1 |
    sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
check "the installed unit rates ${installed_exposure:-?} <= $MAX_EXPOSURE" \
    $PY -c "import sys; sys.exit(0 if 0 < float('${installed_exposure:-99}') <= $MAX_EXPOSURE else 1)"

# ---------------------------------------------------------------------------
section "boot the root with systemd (systemd-nspawn): the service for real"
# The administrator configures it to send to the stub, with the secret in
# /etc/stowbridge/client_secret (the unit's LoadCredential=), and starts
# it. A probe unit inside records what systemd and /proc say, the host
# plays the modality, then the probe kills the daemon (restart on failure),
# upgrades the package (restart), removes it (stop) and powers off. The
# container shares the host's network, so both reach the stub on loopback.
dicom_port=$($PY -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')
tls_port=$($PY -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')
# DICOM TLS as the README says: the certificate and the CA of the
# modalities in /etc/stowbridge/tls/, the key there as key.pem (root only),
# which reaches the daemon through LoadCredential=tls_key only.
PKI=$WORK/pki
mkdir -p "$PKI"
{
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=pkgtest-ca \
        -keyout "$PKI/ca.key" -out "$PKI/ca.pem" &&
    for leaf in server modality; do
        openssl req -newkey rsa:2048 -nodes -subj "/CN=$leaf" \
            -keyout "$PKI/$leaf.key" -out "$PKI/$leaf.csr" &&
        openssl x509 -req -in "$PKI/$leaf.csr" -CA "$PKI/ca.pem" -CAkey "$PKI/ca.key" \
            -CAcreateserial -days 2 -out "$PKI/$leaf.pem" || exit 1
    done
} >"$WORK/pki.log" 2>&1 || { cat "$WORK/pki.log"; die "openssl (the DICOM TLS certificates) failed"; }
install -m 0644 "$PKI/server.pem" "$ROOT/etc/stowbridge/tls/server.pem"
install -m 0644 "$PKI/ca.pem" "$ROOT/etc/stowbridge/tls/ca.pem"
install -m 0600 "$PKI/server.key" "$ROOT/etc/stowbridge/tls/key.pem"
cat >"$ROOT/etc/stowbridge/stowbridge.json" <<EOF
{
    "dicom": { "port": $dicom_port,
               "tls": { "port": $tls_port,
                        "certificate_file": "/etc/stowbridge/tls/server.pem",
                        "ca_file": "/etc/stowbridge/tls/ca.pem" } },
    "spool": { "min_free_mb": 1 },
    "upload": { "url": "https://127.0.0.1:$stub_port/dicomweb",
                "ca_file": "$ca_file" },
    "auth": { "type": "client_credentials",
              "token_url": "https://127.0.0.1:$stub_port/token",
              "client_id": "$client" },
    "retry": { "min_s": 1, "max_s": 2 }
}
EOF
check "the edited configuration keeps 0640 root:stowbridge" \
    test "$(stat_of /etc/stowbridge/stowbridge.json)" = "640 root:stowbridge"
printf '%s\n' "$secret" >"$ROOT/etc/stowbridge/client_secret"
chmod 0600 "$ROOT/etc/stowbridge/client_secret"
PROBE=$ROOT/root/pkgtest
mkdir -p "$PROBE"
cp "$DEB_UP" "$PROBE/upgrade.deb"
cat >"$PROBE/probe.sh" <<'EOF'
#!/bin/sh
# Runs inside the booted root. Each step leaves its result in
# /root/pkgtest; the host reads them.
cd /root/pkgtest
exec >probe.log 2>&1
PS4='+ $(date +%T.%N) '
set -x
show() {
    systemctl show -p ActiveState,SubState,MainPID,StatusText,NRestarts,Result stowbridge.service
}
wait_active() {
    for i in $(seq 1 150); do
        [ "$(systemctl is-active stowbridge.service)" = active ] && return 0
        sleep 0.2
    done
    return 1
}
hardening() {
    pid=$(systemctl show -p MainPID --value stowbridge.service)
    grep -E '^(Uid|Gid|NoNewPrivs|Seccomp|CapInh|CapPrm|CapEff|CapBnd|CapAmb):' "/proc/$pid/status"
}
systemctl is-enabled stowbridge.service >enabled.boot
systemctl is-active stowbridge.service >active.boot
# The service user cannot read the TLS key itself: the daemon gets it as
# the credential tls_key.
runuser -u stowbridge -- cat /etc/stowbridge/tls/key.pem >/dev/null 2>key-read.err
echo $? >key-read.rc
# Without the key file: the credential is the unit's empty fallback, a
# configuration error (exit status 2), not retried.
mv /etc/stowbridge/tls/key.pem /root/pkgtest/key.pem.away
systemctl start stowbridge.service
for i in $(seq 1 100); do
    [ "$(systemctl is-active stowbridge.service)" = failed ] && break
    sleep 0.2
done
sleep 2
systemctl show -p ActiveState,Result,ExecMainStatus,NRestarts stowbridge.service >show.nokey
for i in $(seq 1 50); do
    journalctl -u stowbridge.service --no-pager -o cat >journal.nokey
    grep -q 'credential tls_key is empty' journal.nokey && break
    sleep 0.2
done
journalctl -u stowbridge.service -n 0 --show-cursor --no-pager |
    sed -n 's/^-- cursor: //p' >cursor.nokey
mv /root/pkgtest/key.pem.away /etc/stowbridge/tls/key.pem
systemctl reset-failed stowbridge.service
# The documented way to run check with the credentials, as the service
# would.
systemd-run --quiet --pipe --wait --collect -p User=stowbridge \
    -p LoadCredential=client_secret:/etc/stowbridge/client_secret \
    -p LoadCredential=tls_key:/etc/stowbridge/tls/key.pem \
    /usr/bin/stowbridge check --config /etc/stowbridge/stowbridge.json \
    >check-systemd-run.log 2>&1 </dev/null
echo $? >check-systemd-run.rc
systemctl start stowbridge.service
wait_active
show >show.started
hardening >hardening.txt
stat -c %U "/proc/$(systemctl show -p MainPID --value stowbridge.service)" >user.txt
# The daemon reads its own view: /root and /home are hidden from it.
pid=$(systemctl show -p MainPID --value stowbridge.service)
ls "/proc/$pid/root/root" >root-seen-by-daemon.txt 2>&1
touch started
for i in $(seq 1 600); do [ -e sent ] && break; sleep 0.2; done
# Delivered: the spool empties. status reads no secret, so it runs as
# root without the credential (the configuration names none).
for i in $(seq 1 300); do
    stowbridge status --config /etc/stowbridge/stowbridge.json --json >status.json
    grep -q '"incoming": {"count": 0' status.json &&
        grep -q '"active": {"count": 0' status.json &&
        grep -q '"deferred": {"count": 0' status.json && break
    sleep 0.2
done
# systemctl reload: ExecReload= sends SIGHUP to the main process, which
# re-reads its credentials and TLS files and keeps running.
reload_pid=$(systemctl show -p MainPID --value stowbridge.service)
systemctl reload stowbridge.service >reload.log 2>&1
echo $? >reload.rc
for i in $(seq 1 100); do
    journalctl -u stowbridge.service --no-pager -o cat | grep -q "event=reloaded" && break
    sleep 0.2
done
[ "$(systemctl show -p MainPID --value stowbridge.service)" = "$reload_pid" ] &&
    systemctl is-active stowbridge.service >active.after-reload
show >show.before-kill
kill -9 "$(systemctl show -p MainPID --value stowbridge.service)"
sleep 1
for i in $(seq 1 200); do
    [ "$(systemctl show -p NRestarts --value stowbridge.service)" -ge 1 ] && break
    sleep 0.2
done
wait_active
show >show.after-kill
dpkg -i /root/pkgtest/upgrade.deb >upgrade.log 2>&1
wait_active
show >show.after-upgrade
dpkg-query -W -f '${Version}' stowbridge >version.after-upgrade
dpkg -r stowbridge >remove.log 2>&1
systemctl is-active stowbridge.service >active.after-remove
journalctl -u stowbridge.service --no-pager -o cat \
    --after-cursor="$(cat cursor.nokey)" >journal.txt
touch done
systemctl poweroff
EOF
chmod 0755 "$PROBE/probe.sh"
cat >"$ROOT/etc/systemd/system/pkgtest-probe.service" <<'EOF'
[Unit]
Description=stowbridge packaging test probe
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/root/pkgtest/probe.sh
[Install]
WantedBy=default.target
EOF
mkdir -p "$ROOT/etc/systemd/system/default.target.wants"
ln -sf /etc/systemd/system/pkgtest-probe.service \
    "$ROOT/etc/systemd/system/default.target.wants/pkgtest-probe.service"
umount "$ROOT/proc"
machine=sbpkgtest$$
timeout 300 systemd-nspawn --quiet --keep-unit --register=no -M "$machine" \
    -D "$ROOT" --boot --console=pipe >"$WORK/nspawn.log" 2>&1 </dev/null &
nspawn_pid=$!
wait_file() {
    local i
    for i in $(seq 1 "$2"); do
        [ -e "$1" ] && return 0
        kill -0 "$nspawn_pid" 2>/dev/null || return 1
        sleep 0.2
    done
    return 1
}
if wait_file "$PROBE/started" 450; then
    sed 's/^/    /' "$PROBE/show.started" "$PROBE/hardening.txt"
    check "booted: the package had not enabled the service" \
        test "$(cat "$PROBE/enabled.boot")" = disabled
    check "booted: the service had not been started" \
        test "$(cat "$PROBE/active.boot")" = inactive
    check "the service user cannot read /etc/stowbridge/tls/key.pem itself" \
        eval 'test "$(cat "$PROBE/key-read.rc")" != 0 && grep -q "Permission denied" "$PROBE/key-read.err"'
    sed 's/^/    /' "$PROBE/show.nokey"
    check "without /etc/stowbridge/tls/key.pem: exit status 2, not restarted, the journal names the empty credential" \
        eval 'grep -qx ExecMainStatus=2 "$PROBE/show.nokey" && grep -qx NRestarts=0 "$PROBE/show.nokey" &&
              grep -qx ActiveState=failed "$PROBE/show.nokey" &&
              grep -q "dicom.tls.private_key_file is \"\" and the systemd credential tls_key is empty" "$PROBE/journal.nokey"'
    sed 's/^/    /' "$PROBE/check-systemd-run.log"
    check "systemd-run ... stowbridge check, as operators are told to run it, passes (TLS key from the credential)" \
        eval 'test "$(cat "$PROBE/check-systemd-run.rc")" = 0 && grep -q "^dicomweb: ok" "$PROBE/check-systemd-run.log" &&
              grep -q "^tls: ok (port $tls_port" "$PROBE/check-systemd-run.log"'
    check "systemctl start: active (running), READY=1 received (Type=notify), uploading" \
        eval 'grep -qx ActiveState=active "$PROBE/show.started" && grep -qx SubState=running "$PROBE/show.started" && grep -qx "StatusText=receiving and uploading" "$PROBE/show.started"'
    check "the daemon runs as stowbridge, with no capabilities, no new privileges, a seccomp filter" \
        eval 'grep -qx stowbridge "$PROBE/user.txt" &&
              grep -qE "^CapEff:\s+0+$" "$PROBE/hardening.txt" &&
              grep -qE "^CapBnd:\s+0+$" "$PROBE/hardening.txt" &&
              grep -qE "^NoNewPrivs:\s+1$" "$PROBE/hardening.txt" &&
              grep -qE "^Seccomp:\s+2$" "$PROBE/hardening.txt"'
    check "the daemon does not see /root (ProtectHome)" \
        test ! -s "$PROBE/root-seen-by-daemon.txt" -o -n "$(grep -i 'denied\|no such' "$PROBE/root-seen-by-daemon.txt")"
    sample=$($PY -c 'from pydicom.data import get_testdata_file; print(get_testdata_file("CT_small.dcm"))')
    sop=$($PY -c 'import sys, pydicom; print(pydicom.dcmread(sys.argv[1]).SOPInstanceUID)' "$sample")
    check "echoscu gets an answer from the service" \
        timeout 30 echoscu -to 10 -aec STOWBRIDGE 127.0.0.1 "$dicom_port"
    check "storescu stores CT_small.dcm ($sop)" \
        timeout 60 storescu -to 10 -aec STOWBRIDGE 127.0.0.1 "$dicom_port" "$sample"
    tls_opts=(+tls "$PKI/modality.key" "$PKI/modality.pem" +cf "$PKI/ca.pem")
    check "echoscu +tls (a modality certificate) gets an answer on the TLS port, the key from LoadCredential=tls_key" \
        timeout 30 echoscu -to 10 -aec STOWBRIDGE "${tls_opts[@]}" 127.0.0.1 "$tls_port"
    check "echoscu +tls without a client certificate is refused" \
        eval '! timeout 30 echoscu -to 10 -aec STOWBRIDGE +tla +cf "$PKI/ca.pem" 127.0.0.1 "$tls_port" 2>/dev/null'
    # A second instance (its own SOP Instance UID) over TLS.
    tls_sample=$WORK/tls_sample.dcm
    tls_sop=$($PY -c 'import sys, pydicom
ds = pydicom.dcmread(sys.argv[1])
ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID + ".2"
ds.save_as(sys.argv[2])
print(ds.SOPInstanceUID)' "$sample" "$tls_sample")
    check "storescu +tls stores a copy with its own UID ($tls_sop) on the TLS port" \
        timeout 60 storescu -to 10 -aec STOWBRIDGE "${tls_opts[@]}" 127.0.0.1 "$tls_port" "$tls_sample"
    touch "$PROBE/sent"
    for _ in $(seq 1 300); do
        grep -q "\"stored\": \[[^]]*\"$sop\"" "$WORK/stub.log" &&
            grep -q "\"stored\": \[[^]]*\"$tls_sop\"" "$WORK/stub.log" && break
        sleep 0.2
    done
    check "the service delivered both instances (plain and TLS) to the DICOMweb stub with a token from the credential" \
        eval 'grep -q "\"known_token\": true, \"stored\": \[[^]]*\"$sop\"" "$WORK/stub.log" &&
              grep -q "\"known_token\": true, \"stored\": \[[^]]*\"$tls_sop\"" "$WORK/stub.log" &&
              grep -q "\"client_id\": \"$client\", \"secret_ok\": true" "$WORK/stub.log"'
else
    sed 's/^/    /' "$WORK/nspawn.log" "$PROBE/probe.log" 2>/dev/null | tail -n 40
    fail "the root did not boot, or the service did not start, under systemd-nspawn"
    touch "$PROBE/sent"
fi
if wait_file "$PROBE/done" 600; then
    sed 's/^/    /' "$PROBE/show.before-kill" "$PROBE/show.after-kill" "$PROBE/show.after-upgrade"
    pid_before=$(sed -n 's/^MainPID=//p' "$PROBE/show.before-kill")
    pid_killed=$(sed -n 's/^MainPID=//p' "$PROBE/show.after-kill")
    pid_upgraded=$(sed -n 's/^MainPID=//p' "$PROBE/show.after-upgrade")
    check "stowbridge status: the spool is empty once delivered" \
        grep -q '"incoming": {"count": 0, "bytes": 0, "oldest_s": 0}, "active": {"count": 0, "bytes": 0, "oldest_s": 0}, "deferred": {"count": 0, "bytes": 0, "oldest_s": 0}, "failed": {"count": 0' "$PROBE/status.json"
    check "kill -9: systemd restarts the service (Restart=on-failure)" \
        eval 'grep -qx NRestarts=1 "$PROBE/show.after-kill" && grep -qx ActiveState=active "$PROBE/show.after-kill" && test "$pid_killed" != "$pid_before"'
    check "upgrade to $UP_VERSION restarts the running service (new main PID $pid_upgraded)" \
        eval 'grep -qx ActiveState=active "$PROBE/show.after-upgrade" && test "$pid_upgraded" != "$pid_killed" -a "$pid_upgraded" != 0 &&
              test "$(cat "$PROBE/version.after-upgrade")" = "$UP_VERSION"'
    check "remove stops the service" \
        test "$(cat "$PROBE/active.after-remove")" != active
    check "systemctl reload: SIGHUP through ExecReload=, the credentials re-read, the same process still running" \
        eval 'test "$(cat "$PROBE/reload.rc")" = 0 && grep -qx active "$PROBE/active.after-reload" &&
              grep -q "event=reloaded" "$PROBE/journal.txt"'
    check "the journal shows the start, the stop on SIGTERM and no error" \
        eval 'grep -q "event=started" "$PROBE/journal.txt" && grep -q "event=stopping signal=SIGTERM" "$PROBE/journal.txt" &&
              ! grep -q "event=start-failed" "$PROBE/journal.txt"'
else
    sed 's/^/    /' "$PROBE/probe.log" 2>/dev/null | tail -n 40
    fail "the probe in the booted root did not finish"
fi
for _ in $(seq 1 300); do
    kill -0 "$nspawn_pid" 2>/dev/null || break
    sleep 0.2
done
if kill -0 "$nspawn_pid" 2>/dev/null; then
    kill "$nspawn_pid" 2>/dev/null || true
fi
wait "$nspawn_pid" 2>/dev/null && rc=0 || rc=$?
nspawn_pid=
check "the booted root powered off cleanly" test "$rc" -eq 0
# systemd-nspawn leaves its (empty) propagation directory behind when /run
# is not a tmpfs.
rmdir "/run/systemd/nspawn/propagate/$machine" 2>/dev/null || true

section "done"
say "systemd-analyze security exposure: $exposure (with the low-port drop-in: $exposure_low)"
say "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
