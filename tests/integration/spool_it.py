#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Integration tests of issue 16 (the commit at the disk's limit), with the
real stowbridge binary and DCMTK's storescu:

- kill9_concurrent: four associations store at once (their commits share
  directory fsyncs, the group commit) and the daemon is killed with
  SIGKILL mid-run; after a restart every instance any of them saw
  acknowledged is in incoming/, complete, and nothing else is left
  half-written (tmp/ empty, no entry that is not a whole Part 10 file).
- label: a received entry has no meta/ file but its label xattr, and the
  operator's `queue show` prints its UIDs and calling AE from it.
- journal_restore: instances acknowledged through the intake journal,
  then SIGKILL before its checkpoint, then what a power cut can do to
  files whose own flush had not happened yet (names gone, files empty,
  short or overwritten, one already moved on to deferred/): after the
  restart every acknowledged instance is back, byte for byte, with its
  label, the log says how many were restored, and a clean stop leaves
  nothing to replay.
- journal_no_room: a spool on a 24 MiB file system asks for a 64 MiB
  journal: the daemon says why it cannot have it, starts anyway, stores
  file by file, and /metrics shows the journal down.

usage: spool_it.py BINARY CRAFT_SCU TEST
"""
import os
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import it  # noqa: E402
from it import check, run  # noqa: E402

from pydicom.uid import generate_uid  # noqa: E402


def test_kill9_concurrent(work):
    study = generate_uid()
    sets = []
    for a in range(4):
        src = os.path.join(work, "src%d" % a)
        os.makedirs(src)
        files = []
        for i in range(150):
            p = os.path.join(src, "i%03d.dcm" % i)
            it.make_instance(p, study=study, size=96)
            files.append(p)
        sets.append(files)
    d = it.Daemon(work).start()
    outs, scus = [], []
    for a, files in enumerate(sets):
        out = open(os.path.join(work, "storescu%d.out" % a), "w")
        outs.append(out)
        scus.append(subprocess.Popen(
            ["storescu", "-v", "-aet", "SCU%d" % a, "-aec", "STOWBRIDGE",
             "127.0.0.1", str(d.port), *files],
            stdout=out, stderr=subprocess.STDOUT))
    deadline = time.time() + 120
    while time.time() < deadline:
        if d.log_text().count("event=received") >= 200:
            break
        time.sleep(0.01)
    d.proc.kill()  # SIGKILL while four associations commit
    d.proc.wait()
    acked = []
    for a, scu in enumerate(scus):
        scu.wait(timeout=60)
        outs[a].close()
        with open(outs[a].name) as f:
            acked += it.acknowledged_files(f.read())
    check(200 <= len(acked) < 600,
          "killed mid-run: the four storescu saw %d acknowledged" % len(acked))

    d2 = it.Daemon(work, spool_dir=d.spool)
    d2.port = d.port
    d2.config = d.config
    d2.start()
    check(not d2.entries("tmp"), "after restart tmp/ is empty")
    spooled = {}
    for e in d2.entries():
        spooled[it.sop_uid(e)] = e  # also proves every entry parses
    missing = [p for p in acked if it.sop_uid(p) not in spooled]
    check(not missing, "every acknowledged instance (%d) is in incoming/ "
          "(%d entries)" % (len(acked), len(spooled)))
    incomplete = [p for p in acked
                  if not it.same_dataset(p, spooled[it.sop_uid(p)])]
    check(not incomplete, "every acknowledged entry is complete")
    check(len(spooled) <= 600, "no entry twice")
    check(d2.stop() == 0, "clean stop")


def test_label(work):
    src = os.path.join(work, "one.dcm")
    study = generate_uid()
    it.make_instance(src, study=study, size=32)
    d = it.Daemon(work).start()
    r = it.storescu(d.port, [src], calling="MODALITY7")
    check(r.returncode == 0 and it.acknowledged_files(r.stdout + r.stderr)
          == [src], "stored with 0000")
    entries = d.entries()
    check(len(entries) == 1, "one entry")
    check(not os.listdir(os.path.join(d.spool, "meta")),
          "no meta/ file written on the receive path")
    label = os.getxattr(entries[0], "user.stowbridge").decode()
    sop = it.sop_uid(src)
    check(label == "study=%s\nsop=%s\nfrom=MODALITY7\n" % (study, sop),
          "the label holds the UIDs and the calling AE: %r" % label)
    entry_id = os.path.basename(entries[0])[:-len(".dcm")]
    r = run([it.BINARY, "queue", "show", entry_id, "--config", d.config])
    check(r.returncode == 0, "queue show exits 0 (%s)" % r.stderr)
    check("study:        %s" % study in r.stdout and
          "sop:          %s" % sop in r.stdout and
          "from:         MODALITY7" in r.stdout,
          "queue show prints the label's values:\n" + r.stdout)
    check(d.stop() == 0, "clean stop")


def test_journal_restore(work):
    study = generate_uid()
    files = []
    for i in range(24):
        p = os.path.join(work, "j%02d.dcm" % i)
        it.make_instance(p, study=study, size=40)
        files.append(p)
    # A checkpoint a minute: the test's crash comes before it.
    admin_port = it.free_port()
    d = it.Daemon(work, spool={"journal_mb": 16,
                               "journal_checkpoint_ms": 60000},
                  admin={"listen": "127.0.0.1:%d" % admin_port}).start()
    r = it.storescu(d.port, files, calling="MODALITY3")
    acked = it.acknowledged_files(r.stdout + r.stderr)
    check(len(acked) == len(files), "all %d acknowledged" % len(files))
    # The journal's metrics: every commit through it, shared flushes.
    metrics = urllib.request.urlopen(
        "http://127.0.0.1:%d/metrics" % admin_port, timeout=10).read().decode()
    check('stowbridge_spool_commits_total{path="journal"} %d' % len(files)
          in metrics and
          'stowbridge_spool_commits_total{path="file"} 0' in metrics,
          "/metrics counts %d commits through the journal" % len(files))
    check("stowbridge_spool_journal_up 1" in metrics, "journal up")
    flushes = [line for line in metrics.splitlines()
               if line.startswith("stowbridge_spool_journal_flushes_total ")]
    check(len(flushes) == 1 and 0 < int(flushes[0].split()[1]) <= len(files),
          "one flush per commit at most: %s" % flushes)
    entries = sorted(d.entries())
    check(len(entries) == len(files), "all in incoming/")
    before = {}
    for e in entries:
        with open(e, "rb") as f:
            before[os.path.basename(e)] = (f.read(), os.getxattr(
                e, "user.stowbridge"))
    d.proc.kill()
    d.proc.wait()

    # What the files may look like after a power cut before the checkpoint.
    deferred = os.path.join(d.spool, "deferred")
    for i, e in enumerate(entries):
        kind = i % 6
        if kind == 0:
            os.unlink(e)                      # the name never reached disk
        elif kind == 1:
            os.truncate(e, 0)                 # the name did, the data not
        elif kind == 2:
            os.truncate(e, os.path.getsize(e) // 2)
        elif kind == 3:
            with open(e, "r+b") as f:         # stale blocks in the middle
                f.seek(1000)
                f.write(b"\0" * 4096)
        elif kind == 4:
            os.rename(e, os.path.join(deferred, os.path.basename(e)))
            with open(os.path.join(deferred, os.path.basename(e)),
                      "r+b") as f:
                f.seek(200)
                f.write(b"garbage")
        # kind 5: intact
    damaged = sum(1 for i in range(len(entries)) if i % 6 != 5)

    d2 = it.Daemon(work, spool_dir=d.spool)
    d2.port, d2.config = d.port, d.config
    d2.start()
    log = d2.log_text()
    check("journal_records=%d journal_restored=%d" % (len(files), damaged)
          in log, "recovery replayed %d records and restored %d entries"
          % (len(files), damaged))
    check("event=spool-journal-restored count=%d" % damaged in log,
          "the log says so")
    check(not os.listdir(os.path.join(d.spool, "lost+found")),
          "nothing set aside: every damaged entry was repaired first")
    after = {}
    for state in ("incoming", "deferred"):
        for e in d2.entries(state):
            with open(e, "rb") as f:
                after[os.path.basename(e)] = (f.read(), os.getxattr(
                    e, "user.stowbridge"))
    check(sorted(after) == sorted(before), "every entry is back (%d/%d)"
          % (len(after), len(before)))
    check(all(after.get(k) == v for k, v in before.items()),
          "byte for byte, with its label")
    check(len(d2.entries("deferred")) == 4,
          "the moved ones repaired where they were")
    check(d2.stop() == 0, "clean stop")

    d3 = it.Daemon(work, spool_dir=d.spool)
    d3.port, d3.config = d.port, d.config
    d3.start()
    check("journal_records=0 journal_restored=0" in d3.log_text(),
          "after a clean stop nothing is replayed")
    check(d3.stop() == 0, "clean stop")


def test_journal_no_room(work):
    fs = os.path.join(work, "small")
    kind = it.mount_small_fs(fs, 24)
    if kind is None:
        print("skip: cannot mount a small file system here (needs root)")
        sys.exit(it.SKIP)
    try:
        admin_port = it.free_port()
        d = it.Daemon(work, spool_dir=os.path.join(fs, "spool"),
                      spool={"journal_mb": 64},
                      admin={"listen": "127.0.0.1:%d" % admin_port}).start()
        check("event=spool-journal-unavailable" in d.log_text(),
              "the log says the journal could not be had (%s)" % kind)
        files = []
        for i in range(3):
            p = os.path.join(work, "n%d.dcm" % i)
            it.make_instance(p, size=40)
            files.append(p)
        r = it.storescu(d.port, files)
        check(len(it.acknowledged_files(r.stdout + r.stderr)) == 3,
              "stores anyway")
        check(len(d.entries()) == 3, "three entries in incoming/")
        check(not os.path.exists(os.path.join(fs, "spool", "journal")),
              "the segments it could make are removed: their space is the "
              "entries'")
        metrics = urllib.request.urlopen(
            "http://127.0.0.1:%d/metrics" % admin_port,
            timeout=10).read().decode()
        check("stowbridge_spool_journal_up 0" in metrics and
              'stowbridge_spool_commits_total{path="file"} 3' in metrics,
              "/metrics: journal down, three commits file by file")
        check(d.stop() == 0, "clean stop")
    finally:
        it.run(["umount", "-l", fs])


def main():
    it.BINARY, it.CRAFT_SCU, name = sys.argv[1], sys.argv[2], sys.argv[3]
    test = globals().get("test_" + name)
    if test is None:
        print("no such test:", name)
        return 2
    return it.run_test(test, name)


if __name__ == "__main__":
    sys.exit(main())
