#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""C-FIND benchmark: the latency stowbridge adds to a STUDY-level C-FIND
over the raw QIDO-RS call it makes, and its memory over 10 000 queries.

usage: bench/bench_find.py [BUILD_DIR]      (default: build)

Orthanc with its DICOMweb plugin holds the test studies of
tests/integration/find_it.py. bench/find_scu.cc (built here with g++)
sends N identical C-FINDs on one association, timing each from request to
final response; curl sends the same QIDO-RS request N times on one
connection (time_total per transfer). Added latency = median(C-FIND) -
median(QIDO). RSS of the daemon is read from /proc after a warm-up and
after 10 000 queries. Loopback only; numbers go to the README.
"""
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import it  # noqa: E402
import find_it  # noqa: E402


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build")
    it.BINARY = os.path.join(build, "bridge", "stowbridge")
    work = tempfile.mkdtemp(prefix="stowbridge-bench-find-")
    scu = os.path.join(work, "find_scu")
    subprocess.run(["g++", "-std=c++17", "-O2", "-o", scu,
                    os.path.join(HERE, "find_scu.cc"), "-ldcmnet",
                    "-ldcmdata", "-loflog", "-lofstd", "-lpthread"],
                   check=True)
    paths, studies = find_it.make_files(work)
    orthanc = find_it.orthanc_with_find(work)
    d = None
    try:
        for p in paths:
            find_it.post_file(orthanc, p)
        url = "http://127.0.0.1:%d/dicom-web" % orthanc.port
        d = find_it.new_daemon(work, upload={"url": url},
                               query={"profile": "orthanc"},
                               log={"level": "notice"}).start()

        def cfind(n):
            r = subprocess.run([scu, "127.0.0.1", str(d.port), "STOWBRIDGE",
                                str(n), "P001"], capture_output=True,
                               text=True, check=True, timeout=1800)
            rows = [line.split() for line in r.stdout.splitlines()]
            assert all(row[1] == "2" and row[2] == "0000" for row in rows), \
                rows[:3]
            return [int(row[0]) / 1000.0 for row in rows]

        # The request stowbridge makes for this identifier (DCMTK sorts
        # the keys by tag; includefield follows that order).
        qido = (url + "/studies?00100020=P001&includefield=00080020,"
                "00080050,00100010,00100020,0020000D&limit=100&offset=0")
        n = 1000
        cfind(200)                                   # warm-up
        rss_start = rss_kb(d.proc.pid)
        find_ms = cfind(n)
        r = subprocess.run(["curl", "-s", "-w", "%{time_total}\\n", "-H",
                            "Accept: application/dicom+json"] +
                           ["-o", "/dev/null", qido] * n,
                           capture_output=True, text=True, check=True,
                           timeout=600)
        qido_ms = [float(x) * 1000 for x in r.stdout.split()]
        f_med, q_med = statistics.median(find_ms), statistics.median(qido_ms)
        print("C-FIND  median %.2f ms  p95 %.2f ms  (%d queries, 2 matches "
              "each)" % (f_med, sorted(find_ms)[int(n * 0.95)], n))
        print("QIDO-RS median %.2f ms  p95 %.2f ms  (curl, one connection)"
              % (q_med, sorted(qido_ms)[int(n * 0.95)]))
        print("added latency (median) %.2f ms  target <= 5 ms"
              % (f_med - q_med))
        cfind(10000 - n - 200)
        rss_end = rss_kb(d.proc.pid)
        print("daemon RSS after warm-up %d KB, after 10 000 queries %d KB"
              % (rss_start, rss_end))
    finally:
        if d is not None:
            d.stop()
        orthanc.close()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
