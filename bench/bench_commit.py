#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Benchmark (run on demand, never in CI) of Storage Commitment and the
delivery ledger in the daemon (issue 12, Performance):

  - delivery throughput of an N-instance upload with the ledger on and off
    (ledger.path unusable -> the daemon runs without it), alternating,
    median of the rounds: the ratio must stay >= 0.95;
  - the commitment of those N instances asked while they are uploaded
    (the spool filled first, the request sent as the daemon starts): the
    time from the last delivery
    (the DICOMweb mock received the last instance) to the N-EVENT-REPORT
    at the modality (target <= 1 s);
  - the ledger file size and the daemon's peak and final RSS.

usage: bench_commit.py BINARY COMMIT_SCU [--instances N] [--rounds R]
       (from the build tree: bridge/stowbridge tests/integration/commit_scu)
The 30-million-row look-up p99 and file size are bench_ledger.sh's
(ledger/README.md).
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
import it  # noqa: E402
import commit_it  # noqa: E402


def rss_kib(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def one_round(work, files, ledger_on):
    # Fill the spool first (receive-only), so that the upload runs at the
    # uploader's speed, not at the speed the SCU sends.
    fill = it.Daemon(work, log={"level": "notice"}).start()
    commit_it.store(fill, files)
    fill.stop()
    mock = it.MockWeb()
    listen = it.free_port()
    ledger = {} if ledger_on else {"path": "/proc/self/no-ledger.db"}
    d = commit_it.commit_daemon(work, mock.port, listen,
                                upload={"workers": 4,
                                        "batch_max_instances": 50},
                                log={"level": "info"}, ledger=ledger)
    uids = [u for _, u in files]
    d.start()
    first_stow = [None]
    last_stow = [None]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            with mock.lock:
                n = len(mock.stored)
            if n and first_stow[0] is None:
                first_stow[0] = time.time()
            if n >= len(uids):
                last_stow[0] = time.time()
                return
            time.sleep(0.002)
    t = threading.Thread(target=watch)
    t.start()
    proc, tx = commit_it.scu(d, [(commit_it.CT, u) for u in uids],
                             listen=listen, wait=300, background=True)
    t_report = None
    out = ""
    for line in proc.stdout:
        out += line
        if line.startswith("report ") and t_report is None:
            t_report = time.time()
    proc.wait(60)
    t.join(60)
    stop.set()
    rep = commit_it.report_of(out)
    ok = rep is not None and rep["event_type"] == 1 and \
        len(rep["committed"]) == len(uids)
    peak = rss_kib(d.proc.pid, "VmHWM")
    now = rss_kib(d.proc.pid, "VmRSS")
    d.stop()
    mock.close()
    size = 0
    for name in ("ledger.db", "ledger.db-wal"):
        p = os.path.join(d.spool, name)
        if os.path.exists(p):
            size += os.path.getsize(p)
    span = last_stow[0] - first_stow[0]
    return {"ok": ok, "rate": len(uids) / span if span > 0 else 0,
            "lag": t_report - last_stow[0], "peak_kib": peak,
            "rss_kib": now, "ledger_bytes": size}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("commit_scu")
    ap.add_argument("--instances", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    it.BINARY = a.binary
    commit_it.COMMIT_SCU = a.commit_scu
    base = tempfile.mkdtemp(prefix="bench-commit-")
    try:
        results = {True: [], False: []}
        for r in range(a.rounds):
            for ledger_on in (True, False):
                work = os.path.join(base, "r%d-%s" % (r, ledger_on))
                os.makedirs(work)
                _, files = commit_it.make_files(work, a.instances)
                res = one_round(work, files, ledger_on)
                results[ledger_on].append(res)
                print("round %d ledger=%s: %s" % (
                    r, "on" if ledger_on else "off", res), flush=True)
                shutil.rmtree(work, ignore_errors=True)
        med = {k: {f: statistics.median(x[f] for x in v)
                   for f in ("rate", "lag", "peak_kib", "rss_kib",
                             "ledger_bytes")}
               for k, v in results.items()}
        print("median, ledger on : %.0f instances/s, report %.3f s after "
              "the last delivery, peak RSS %d KiB, ledger %d bytes" % (
                  med[True]["rate"], med[True]["lag"],
                  med[True]["peak_kib"], med[True]["ledger_bytes"]))
        print("median, ledger off: %.0f instances/s, report %.3f s after "
              "the last delivery, peak RSS %d KiB" % (
                  med[False]["rate"], med[False]["lag"],
                  med[False]["peak_kib"]))
        print("throughput ratio on/off: %.3f" %
              (med[True]["rate"] / med[False]["rate"]))
        bad = [x for v in results.values() for x in v if not x["ok"]]
        return 1 if bad else 0
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
