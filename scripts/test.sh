#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The whole test suite, as CI runs it: first the source checks (lint,
# clang-format; seconds, before any build), then a normal build and an
# AddressSanitizer+UBSan build, each running every unit and integration
# test through CTest, and a ThreadSanitizer build running the tests that
# exercise threads (CTest label tsan).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

echo "== source checks (scripts/lint.sh, scripts/format-check.sh)"
bash scripts/lint.sh
bash scripts/format-check.sh

jobs=$(nproc)
# Tests at once (ctest -j): most tests wait on sockets, timers and their
# Orthanc, not on the CPU (a 2-core machine was 13-28 % busy running two
# at a time), so four run at once whatever the core count; those that
# must run alone have the CTest property RUN_SERIAL (the flood tests and
# it_monitor_load, tests/integration/CMakeLists.txt); the power-loss
# tests and the packaging test take a RESOURCE_LOCK instead (each other's
# qemu guest or debootstrap root, not the neighbours' timing).
test_jobs=${STOWBRIDGE_TEST_JOBS:-4}
# run_suite DIR [CMAKE_ARGS...] [-- CTEST_ARGS...]
run_suite() {
    local dir=$1; shift
    local cmake_args=() ctest_args=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do cmake_args+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    ctest_args=("$@")
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "${cmake_args[@]}" >/dev/null
    cmake --build "$dir" -j"$jobs"
    ctest --test-dir "$dir" --output-on-failure --timeout 400 -j"$test_jobs" \
        "${ctest_args[@]}"
}

echo "== normal build"
run_suite build

echo "== sanitizer build (ASan + UBSan)"
# (The power-loss tests, label power, run in the normal build only: they
# check the commit's durability on replayed disks, no memory use, and an
# ASan daemon in their emulated guest would only be slower.)
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_suite build-asan -DSTOWBRIDGE_SANITIZE=ON -- -LE power

# The threads: spool concurrency, token source, the SCP with several
# associations, uploads, the find pool, the admin server (tests labelled
# tsan in tests/unit and tests/integration).
if grep -q STOWBRIDGE_TSAN CMakeLists.txt; then
    echo "== ThreadSanitizer build (tests labelled tsan)"
    TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
        run_suite build-tsan -DSTOWBRIDGE_TSAN=ON -- -L tsan
else
    echo "== ThreadSanitizer build skipped: CMakeLists.txt has no STOWBRIDGE_TSAN option yet"
fi
