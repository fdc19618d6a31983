#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Storage Commitment (issue 12) against the real daemon: our commitment
SCU (commit_scu, DCMTK) and Orthanc 1.10 as a real commitment SCU, with a
scripted DICOMweb server (it.MockWeb) or Orthanc as the destination.

usage: commit_it.py BINARY COMMIT_SCU TEST

Each TEST is one function below (test_<name>); CTest runs each with a
timeout. 77 means skipped.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import it  # noqa: E402
from it import Failure, check, run, wait_for  # noqa: E402

from pydicom.uid import generate_uid  # noqa: E402

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
COMMIT_SCU = None


def make_files(work, count, study=None, prefix="i"):
    """@count small CT instances of one study: [(path, sop uid)]."""
    study = study or generate_uid()
    out = []
    for i in range(count):
        path = os.path.join(work, "%s%04d.dcm" % (prefix, i))
        out.append((path, it.make_instance(path, study=study, size=8)))
    return study, out


def store(d, files, calling="MOD1"):
    r = it.storescu(d.port, [p for p, _ in files], calling=calling)
    check(r.returncode == 0, "storescu sent %d instances (%s)" %
          (len(files), r.stderr[-300:]))


def qido_from(mock, extra=None):
    """A QIDO-RS answer for /instances?SOPInstanceUID=..: what the mock
    stored, plus @extra {sop: class} (on the server, never sent by us)."""
    extra = extra or {}

    def answer(path, headers):
        q = urllib.parse.parse_qs(urllib.parse.urlparse(path).query)
        uid = q.get("SOPInstanceUID", [""])[0]
        with mock.lock:
            known = uid in mock.stored
        cls = extra.get(uid, CT if known else None)
        if cls is None:
            return 200, "[]", []
        return 200, json.dumps([{
            "00080016": {"vr": "UI", "Value": [cls]},
            "00080018": {"vr": "UI", "Value": [uid]}}]), []
    return answer


def commit_daemon(work, mock_port, listen_port, remote_ae="MOD1", **extra):
    cfg = dict(
        upload={"url": "http://127.0.0.1:%d/dicom-web" % mock_port,
                "timeout_s": 5},
        retry={"min_s": 1, "max_s": 2},
        dicom={"remote_aes": [{"ae_title": remote_ae, "host": "127.0.0.1",
                               "port": listen_port}]},
        commit={"report_retry_max_s": 2},
        log={"level": "debug"})
    for section, values in extra.items():
        cfg.setdefault(section, {}).update(values)
    return it.Daemon(work, **cfg)


def items_file(work, items, name="items.txt"):
    path = os.path.join(work, name)
    with open(path, "w") as f:
        for cls, uid in items:
            f.write("%s %s\n" % (cls, uid))
    return path


def scu(d, items, tx=None, listen=0, wait=0, calling="MOD1", extra=(),
        background=False):
    """Runs commit_scu; returns (process or result, tx)."""
    tx = tx if tx is not None else generate_uid()
    cmd = [COMMIT_SCU, "--port", str(d.port), "--calling", calling,
           "--tx", tx, "--timeout", "10"]
    if listen:
        cmd += ["--listen", str(listen), "--wait", str(wait)]
    cmd += list(extra) + [items if isinstance(items, str) else
                          items_file(d.work, items, "items-%s.txt" % tx)]
    if background:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True), tx
    return run(cmd, timeout=wait + 60), tx


def action_status(out):
    m = re.search(r"action status=([0-9A-F]{4})", out)
    return m.group(1) if m else None


def report_of(out):
    m = re.search(r"^report (\{.*\})$", out, re.M)
    return json.loads(m.group(1)) if m else None


def delivered(mock, uids):
    with mock.lock:
        return all(u in mock.stored for u in uids)


def test_basic(work):
    """All delivered -> Event Type 1; a transaction naming one instance
    twice lists it twice; unknown instances: present on the server ->
    committed, absent -> 0112; other class on the server -> 0119."""
    mock = it.MockWeb()
    listen = it.free_port()
    d = commit_daemon(work, mock.port, listen).start()
    try:
        study, files = make_files(work, 3)
        store(d, files)
        uids = [u for _, u in files]
        wait_for(lambda: delivered(mock, uids), 60, "delivered")
        on_server = generate_uid()
        other_class = generate_uid()
        mock.qido = qido_from(mock, {on_server: CT, other_class: MR})
        items = [(CT, u) for u in uids] + [(CT, uids[0])]
        t0 = time.time()
        r, tx = scu(d, items, listen=listen, wait=30)
        rep = report_of(r.stdout)
        check(action_status(r.stdout) == "0000", "N-ACTION-RSP 0000")
        check(rep is not None, "a report came (%s)" % r.stdout)
        print("report %.2f s after the N-ACTION" % (time.time() - t0))
        check(rep["event_type"] == 1 and rep["tx"] == tx,
              "Event Type 1 with our Transaction UID")
        check(rep["class"] == "1.2.840.10008.1.20.1" and
              rep["instance"] == "1.2.840.10008.1.20.1.1",
              "the well-known SOP class and instance")
        check(rep["role"] == "scp", "the SCP role was proposed")
        check(rep["retrieve_ae"] == "STOWBRIDGE", "Retrieve AE Title = ours")
        check(sorted(u for _, u in rep["committed"]) ==
              sorted(uids + [uids[0]]) and rep["failed"] == [],
              "every instance listed, the one named twice twice")

        absent = generate_uid()
        items = [(CT, uids[1]), (CT, on_server), (CT, absent),
                 (CT, other_class)]
        r, tx2 = scu(d, items, listen=listen, wait=30)
        rep = report_of(r.stdout)
        check(rep is not None and rep["event_type"] == 2 and
              rep["tx"] == tx2, "Event Type 2 (%s)" % r.stdout)
        check(sorted(u for _, u in rep["committed"]) ==
              sorted([uids[1], on_server]),
              "delivered and present-on-server instances committed")
        check(sorted((u, reason) for _, u, reason in rep["failed"]) ==
              sorted([(absent, 0x0112), (other_class, 0x0119)]),
              "absent: 0112, another class on the server: 0119")
        log = d.log_text()
        check("event=commit-reported tx=%s" % tx2 in log, "report logged")
        check(not os.listdir(os.path.join(d.spool, "commit")),
              "commit/ is empty once the reports are delivered")
        check("Test^Pat" not in log and "IT0001" not in log,
              "no patient data in the log")
        check(d.stop() == 0, "clean stop")
    finally:
        d.stop()
        mock.close()


def test_poison(work):
    """One instance in failed/ -> Event Type 2 with 0110 for it."""
    mock = it.MockWeb()
    listen = it.free_port()
    d = commit_daemon(work, mock.port, listen,
                      upload={"batch_max_instances": 2}).start()
    try:
        # The first instance rejected (A900), by its UID: the "mixed" mode
        # (the first of each batch) rejected both whenever the scheduler
        # took them in two batches of one.
        study, files = make_files(work, 2)
        mock.reasons = {files[0][1]: 43264}
        store(d, files)
        wait_for(lambda: d.entries("failed") and delivered(mock, [files[1][1]])
                 or len(mock.stored) >= 1 and d.entries("failed"), 60,
                 "one rejected, one stored")
        failed_id = os.path.basename(d.entries("failed")[0])[:-4]
        stored = list(mock.stored)
        mock.reasons = {}
        items = [(CT, u) for _, u in files]
        r, tx = scu(d, items, listen=listen, wait=30)
        rep = report_of(r.stdout)
        check(rep is not None and rep["event_type"] == 2,
              "Event Type 2 (%s)" % r.stdout)
        poison = [u for _, u in files if u not in stored]
        check(len(poison) == 1 and
              [(u, reason) for _, u, reason in rep["failed"]] ==
              [(poison[0], 0x0110)], "the poison instance: 0110")
        check([u for _, u in rep["committed"]] == stored,
              "the other committed")
        check(re.search(r"id=%s event=commit-failed tx=%s sop=%s "
                        r"reason=0110" % (re.escape(failed_id), tx,
                                          poison[0]), d.log_text()),
              "logged with the entry ID")
    finally:
        d.stop()
        mock.close()


def test_dest_down(work):
    """The destination is down during the request: the report comes only
    after it is back and the instances are delivered."""
    web_port = it.free_port()
    listen = it.free_port()
    d = commit_daemon(work, web_port, listen).start()
    mock = None
    try:
        study, files = make_files(work, 3)
        store(d, files)
        items = [(CT, u) for _, u in files]
        proc, tx = scu(d, items, listen=listen, wait=90, background=True)
        time.sleep(4)
        check(proc.poll() is None, "no report while the server is down")
        mock = it.restart_mock_on(web_port)
        mock.qido = qido_from(mock)
        out, _ = proc.communicate(timeout=120)
        rep = report_of(out)
        check(rep is not None and rep["event_type"] == 1 and
              len(rep["committed"]) == 3, "Event Type 1 once back (%s)" % out)
        check(delivered(mock, [u for _, u in files]),
              "the instances were delivered first")
        log = d.log_text()
        last = max(log.rfind("event=delivered sop=%s" % u) for _, u in files)
        check(last >= 0 and log.find("event=commit-reported tx=%s" % tx) >
              last, "the report after the last delivery")
    finally:
        d.stop()
        if mock:
            mock.close()


def test_kill9(work):
    """kill -9 between the N-ACTION-RSP and the report: the report is
    still sent after the restart."""
    web_port = it.free_port()
    listen = it.free_port()
    d = commit_daemon(work, web_port, listen).start()
    mock = None
    try:
        study, files = make_files(work, 2)
        store(d, files)
        items = [(CT, u) for _, u in files]
        r, tx = scu(d, items)    # no listener: the report cannot go yet
        check(action_status(r.stdout) == "0000", "N-ACTION-RSP 0000")
        check(os.path.exists(os.path.join(d.spool, "commit", tx + ".req")),
              "the request is in commit/ before the answer")
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(10)
        d.log.close()
        mock = it.restart_mock_on(web_port)
        mock.qido = qido_from(mock)
        proc, _ = scu(d, "-", tx=tx, listen=listen, wait=90,
                      extra=["--no-action"], background=True)
        d.start()
        out, _ = proc.communicate(timeout=120)
        rep = report_of(out)
        check(rep is not None and rep["tx"] == tx and rep["event_type"] == 1
              and len(rep["committed"]) == 2,
              "report after the restart (%s)" % out)
        check("event=commit-restored tx=%s" % tx in d.log_text(),
              "restored from commit/")
    finally:
        d.stop()
        if mock:
            mock.close()


def test_port_closed(work):
    """The modality's port is closed for the report: retried until it
    opens; a refusing answer is retried too; kill -9 with a report
    waiting keeps it. No QIDO-RS answers here: an instance delivered just
    before the request is known from memory, not the server."""
    mock = it.MockWeb()
    listen = it.free_port()
    d = commit_daemon(work, mock.port, listen).start()
    try:
        study, files = make_files(work, 2)
        store(d, files)
        wait_for(lambda: delivered(mock, [u for _, u in files]), 60,
                 "delivered")
        items = [(CT, u) for _, u in files]
        r, tx = scu(d, items)
        check(action_status(r.stdout) == "0000", "N-ACTION-RSP 0000")
        wait_for(lambda: d.log_text().count(
            "event=commit-report-deferred tx=%s" % tx) >= 2, 30,
            "two failed report attempts")
        check(os.path.exists(os.path.join(d.spool, "commit", tx + ".rep")),
              "the report is kept in commit/")
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(10)
        d.log.close()
        d.start()
        r, _ = scu(d, "-", tx=tx, listen=listen, wait=60,
                   extra=["--no-action", "--report-status", "0110"])
        rep = report_of(r.stdout)
        check(rep is not None and rep["tx"] == tx and
              rep["event_type"] == 1, "report once the port opens (%s)" %
              r.stdout)
        check(r.stdout.count("report {") == 2,
              "refused once (status 0110), then sent again")
        wait_for(lambda: not os.listdir(os.path.join(d.spool, "commit")),
                 10, "commit/ emptied")
        check(d.stop() == 0, "clean stop")
    finally:
        d.stop()
        mock.close()


def test_parallel_reports(work):
    """Reports go out in parallel per remote AE: MOD1's address accepts
    the TCP connection and never answers the A-ASSOCIATE-RQ (each attempt
    hangs for dicom.timeout_s = 60 s), MOD3's port is closed; MOD2's
    report still arrives while MOD1's first attempt is hanging."""
    import socket
    mock = it.MockWeb()
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)          # never accepted: the kernel completes it
    closed = it.free_port()
    listen2 = it.free_port()
    remotes = [
        {"ae_title": "MOD1", "host": "127.0.0.1",
         "port": silent.getsockname()[1]},
        {"ae_title": "MOD2", "host": "127.0.0.1", "port": listen2},
        {"ae_title": "MOD3", "host": "127.0.0.1", "port": closed}]
    d = commit_daemon(work, mock.port, listen2,
                      dicom={"remote_aes": remotes, "timeout_s": 60}).start()
    try:
        study, files = make_files(work, 2)
        store(d, files)
        uids = [u for _, u in files]
        wait_for(lambda: delivered(mock, uids), 60, "delivered")
        items = [(CT, u) for u in uids]
        r, tx1 = scu(d, items, calling="MOD1")
        check(action_status(r.stdout) == "0000", "MOD1: N-ACTION-RSP 0000")
        r, tx3 = scu(d, items, calling="MOD3")
        check(action_status(r.stdout) == "0000", "MOD3: N-ACTION-RSP 0000")
        wait_for(lambda: "event=commit-resolved tx=%s" % tx1 in d.log_text()
                 and "event=commit-resolved tx=%s" % tx3 in d.log_text(),
                 30, "MOD1's and MOD3's transactions resolved")
        time.sleep(1)   # MOD1's first attempt is under way
        t0 = time.time()
        r, tx2 = scu(d, items, calling="MOD2", listen=listen2, wait=50)
        lag = time.time() - t0
        rep = report_of(r.stdout)
        check(rep is not None and rep["tx"] == tx2 and
              rep["event_type"] == 1, "MOD2's report came (%s)" % r.stdout)
        print("MOD2: N-ACTION to report %.2f s while MOD1 hangs" % lag)
        log = d.log_text()
        check("event=commit-report-deferred tx=%s" % tx1 not in log,
              "MOD1's first attempt was still hanging")
        check(lag < 30, "MOD2 did not wait for MOD1's attempt (%.1f s)" %
              lag)
        check("event=commit-report-deferred tx=%s" % tx3 in log,
              "MOD3 (port closed) was tried and deferred")
        # MOD1 refuses now (its listener closed: RST): deferred, kept.
        silent.close()
        wait_for(lambda: "event=commit-report-deferred tx=%s" % tx1 in
                 d.log_text(), 90, "MOD1's attempt failed")
        check(os.path.exists(os.path.join(d.spool, "commit", tx1 + ".rep"))
              and os.path.exists(os.path.join(d.spool, "commit",
                                              tx3 + ".rep")),
              "MOD1's and MOD3's reports are kept")
        check(d.stop() == 0, "clean stop")
    finally:
        silent.close()
        d.stop()
        mock.close()


def reports_of(out):
    return [json.loads(m) for m in re.findall(r"^report (\{.*\})$", out,
                                                re.M)]


def test_same_association(work):
    """commit.same_association: the report goes on the N-ACTION's
    association while the SCU keeps it open; refused there, or the
    association released first, it goes on a new one; off (the default),
    never on the same association."""
    mock = it.MockWeb()
    listen = it.free_port()
    d = commit_daemon(work, mock.port, listen,
                      commit={"same_association": True}).start()
    try:
        study, files = make_files(work, 3)
        store(d, files)
        uids = [u for _, u in files]
        wait_for(lambda: delivered(mock, uids), 60, "delivered")
        items = [(CT, u) for u in uids]

        r, tx = scu(d, items, listen=listen, wait=4,
                    extra=["--same-assoc", "8"])
        reps = reports_of(r.stdout)
        check(action_status(r.stdout) == "0000", "N-ACTION-RSP 0000")
        check(len(reps) == 1 and reps[0]["via"] == "same" and
              reps[0]["tx"] == tx and reps[0]["event_type"] == 1 and
              sorted(u for _, u in reps[0]["committed"]) == sorted(uids),
              "the report on the same association, once (%s)" % r.stdout)
        check("report no-more" in r.stdout, "no second report")
        check(re.search(r"event=commit-reported tx=%s to=MOD1 "
                        r"via=same-association event_type=1" % tx,
                        d.log_text()), "logged via=same-association")

        r, tx = scu(d, items, listen=listen, wait=30,
                    extra=["--same-assoc", "8", "--report-status", "0110"])
        reps = reports_of(r.stdout)
        check([x["via"] for x in reps] == ["same", "new"] and
              all(x["tx"] == tx for x in reps),
              "refused on the same association: sent on a new one (%s)" %
              r.stdout)
        check("event=commit-report-deferred tx=%s to=MOD1 "
              "via=same-association" % tx in d.log_text(),
              "the refusal logged")

        r, tx = scu(d, items, listen=listen, wait=30)
        reps = reports_of(r.stdout)
        check(len(reps) == 1 and reps[0]["via"] == "new" and
              reps[0]["role"] == "scp",
              "SCU released at once: a new association (%s)" % r.stdout)
        wait_for(lambda: os.listdir(os.path.join(d.spool, "commit")) == [],
                 10, "commit/ emptied")
        check(d.stop() == 0, "clean stop")
    finally:
        d.stop()
        mock.close()

    # Off (the default): never on the same association.
    mock = it.MockWeb()
    d = commit_daemon(work, mock.port, listen).start()
    try:
        study, files = make_files(work, 1, prefix="off")
        store(d, files)
        wait_for(lambda: delivered(mock, [files[0][1]]), 60, "delivered")
        r, tx = scu(d, [(CT, files[0][1])], listen=listen, wait=30,
                    extra=["--same-assoc", "3"])
        reps = reports_of(r.stdout)
        check("same-assoc none" in r.stdout and len(reps) == 1 and
              reps[0]["via"] == "new",
              "off: nothing on the same association (%s)" % r.stdout)
        check(d.stop() == 0, "clean stop")
    finally:
        d.stop()
        mock.close()


def study_json(d, study):
    r = run([it.BINARY, "study", study, "--json", "--config", d.config])
    check(r.returncode == 0, "study --json exits 0 (%s)" %
          (r.stdout + r.stderr)[-300:])
    return json.loads(r.stdout)


def ledger_delivered(d, study):
    try:
        return study_json(d, study)["delivered"]["instances"]
    except Failure:
        return -1


def test_ledger_reopen(work):
    """A ledger that breaks while the daemon runs is opened again:
    removed (SQLite would go on writing into the removed file), then
    overwritten with garbage (corrupt: moved aside). Deliveries and
    commitment go on meanwhile; ledger records resume."""
    mock = it.MockWeb()
    listen = it.free_port()
    d = commit_daemon(work, mock.port, listen).start()
    db = os.path.join(d.spool, "ledger.db")
    try:
        mock.qido = qido_from(mock)
        study_a, files = make_files(work, 2, prefix="a")
        store(d, files)
        wait_for(lambda: delivered(mock, [u for _, u in files]), 60,
                 "study A delivered")
        wait_for(lambda: ledger_delivered(d, study_a) == 2, 30,
                 "study A in the ledger")

        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(db + suffix):
                os.unlink(db + suffix)
        wait_for(lambda: "event=ledger-reopened" in d.log_text(), 30,
                 "the removed ledger opened again")
        log = d.log_text()
        check(log.count("event=ledger-broken") == 1 and
              "was removed\"" in log,
              "logged once, with the reason")
        check(os.path.exists(db), "a new ledger file")
        study_b, files_b = make_files(work, 2, prefix="b")
        store(d, files_b)
        wait_for(lambda: delivered(mock, [u for _, u in files_b]), 60,
                 "study B delivered")
        wait_for(lambda: ledger_delivered(d, study_b) == 2, 30,
                 "study B recorded in the new ledger")
        r, tx = scu(d, [(CT, u) for _, u in files_b], listen=listen,
                    wait=30)
        rep = report_of(r.stdout)
        check(rep is not None and rep["event_type"] == 1,
              "commitment goes on (%s)" % r.stdout)

        # Garbage over the file in place (same inode): corrupt.
        with open(db, "r+b") as f:
            f.write(b"this is not a database " * 400)
            f.flush()
            os.fsync(f.fileno())
        study_c, files_c = make_files(work, 2, prefix="c")
        store(d, files_c)
        wait_for(lambda: delivered(mock, [u for _, u in files_c]), 60,
                 "study C delivered while the ledger is corrupt")
        wait_for(lambda: d.log_text().count("event=ledger-reopened") == 2,
                 60, "the corrupt ledger moved aside and opened again")
        check(any(n.startswith("ledger.db.corrupt-")
                  for n in os.listdir(d.spool)), "the corrupt file kept aside")
        study_e, files_e = make_files(work, 2, prefix="e")
        store(d, files_e)
        wait_for(lambda: delivered(mock, [u for _, u in files_e]), 60,
                 "study E delivered")
        wait_for(lambda: ledger_delivered(d, study_e) == 2, 30,
                 "records resume after the corruption")
        check(d.stop() == 0, "clean stop")
    finally:
        d.stop()
        mock.close()


def test_ledger_io_error(work):
    """The ledger's writes fail with EIO (an LD_PRELOAD library plays the
    failing disk): logged, the ledger closed and opened again with
    backoff; deliveries and commitment go on; once the disk is back the
    ledger records again."""
    lib = os.environ.get("SB_FAULT_IO_LIB", "")
    if not os.path.exists(lib):
        print("skipped: no fault_io library (run through CTest)")
        sys.exit(77)
    mock = it.MockWeb()
    listen = it.free_port()
    flag = os.path.join(work, "disk-fails")
    d = commit_daemon(work, mock.port, listen)
    env = dict(os.environ, LD_PRELOAD=lib, SB_FAULT_IO_FLAG=flag,
               SB_FAULT_IO_MATCH="ledger.db",
               ASAN_OPTIONS="verify_asan_link_order=0:" +
               os.environ.get("ASAN_OPTIONS", ""))
    d.start(env=env)
    try:
        mock.qido = qido_from(mock)
        study_a, files = make_files(work, 2, prefix="a")
        store(d, files)
        wait_for(lambda: ledger_delivered(d, study_a) == 2, 60,
                 "study A in the ledger")
        open(flag, "w").close()
        study_b, files_b = make_files(work, 2, prefix="b")
        store(d, files_b)
        wait_for(lambda: delivered(mock, [u for _, u in files_b]), 60,
                 "study B delivered while the ledger's disk fails")
        wait_for(lambda: re.search(r'event=ledger-broken .*reason="I/O '
                                   r'error', d.log_text()), 60,
                 "the I/O errors seen and logged")
        r, tx = scu(d, [(CT, u) for _, u in files_b], listen=listen,
                    wait=30)
        rep = report_of(r.stdout)
        check(rep is not None and rep["event_type"] == 1,
              "commitment goes on (%s)" % r.stdout)
        os.unlink(flag)
        wait_for(lambda: "event=ledger-reopened" in d.log_text(), 120,
                 "opened again once the disk is back")
        study_c, files_c = make_files(work, 2, prefix="c")
        store(d, files_c)
        wait_for(lambda: ledger_delivered(d, study_c) == 2, 60,
                 "records resume")
        log = d.log_text()
        broken = log.count("event=ledger-broken")
        for line in log.splitlines():
            if "event=ledger-" in line:
                print(line)
        print("ledger-broken lines: %d, unavailable: %d, reopened: %d" % (
            broken, log.count("event=ledger-unavailable"),
            log.count("event=ledger-reopened")))
        check(broken <= log.count("event=ledger-reopened") + 1,
              "logged once per change of state")
        check(d.stop() == 0, "clean stop")
    finally:
        if os.path.exists(flag):
            os.unlink(flag)
        d.stop()
        mock.close()


def test_many(work):
    """500 instances in one transaction, asked right after their upload
    (some still queued): every one listed; the time from the last
    delivery to the report is printed and must stay within 1 s."""
    mock = it.MockWeb()
    listen = it.free_port()
    d = commit_daemon(work, mock.port, listen).start()
    try:
        study, files = make_files(work, 500)
        uids = [u for _, u in files]
        items = [(CT, u) for u in uids]
        store(d, files)
        proc, tx = scu(d, items, listen=listen, wait=240, background=True)
        t_delivered = None
        while proc.poll() is None and t_delivered is None:
            if delivered(mock, uids):
                t_delivered = time.time()
            time.sleep(0.005)
        out = ""
        t_report = None
        for line in proc.stdout:
            out += line
            if line.startswith("report ") and t_report is None:
                t_report = time.time()
        proc.wait(60)
        rep = report_of(out)
        check(action_status(out) == "0000", "N-ACTION-RSP 0000")
        check(rep is not None and rep["event_type"] == 1 and
              len(rep["committed"]) == 500, "500 committed (%s)" % out[:300])
        check(t_delivered is not None and t_report is not None,
              "both times seen")
        lag = t_report - t_delivered
        print("last delivery -> report received: %.3f s" % lag)
        check(lag <= 1.0, "report within 1 s of the last delivery")
        check(d.stop() == 0, "clean stop")
    finally:
        d.stop()
        mock.close()


def test_invalid(work):
    """Bad requests get the PS3.4/PS3.7 statuses; the daemon keeps
    running; a repeated request is answered 0000 and reported once; a
    caller with "commit": false cannot negotiate the SOP class."""
    mock = it.MockWeb()
    listen = it.free_port()
    d = commit_daemon(work, mock.port, listen, dicom={"allowed_callers": [
        {"ae_title": "MOD1"}, {"ae_title": "ECHOSCU"},
        {"ae_title": "NOCOMMIT", "commit": False}]}).start()
    try:
        uid = generate_uid()
        mock.qido = qido_from(mock, {uid: CT})
        items = [(CT, uid)]
        cases = [
            (["--action-type", "2"], "0123", "Action Type 2"),
            (["--class", "1.2.840.10008.1.20.2"], "0118", "wrong class"),
            (["--instance", "1.2.3"], "0112", "wrong instance"),
            (["--no-seq"], "0115", "no Referenced SOP Sequence"),
        ]
        for extra, status, what in cases:
            r, _ = scu(d, items, extra=extra)
            check(action_status(r.stdout) == status,
                  "%s -> %s (%s)" % (what, status, r.stdout.strip()))
        r, _ = scu(d, items, tx="")
        check(action_status(r.stdout) == "0115", "no Transaction UID: 0115")
        r, _ = scu(d, items, tx="1.2.abc")
        check(action_status(r.stdout) == "0115", "bad Transaction UID: 0115")
        r, _ = scu(d, [(CT, "1..2")])
        check(action_status(r.stdout) == "0115" and "item 1" in r.stdout,
              "bad item UID: 0115 naming the item")
        r, _ = scu(d, "-", extra=[])
        check(action_status(r.stdout) == "0115", "empty sequence: 0115")
        r, _ = scu(d, items, calling="NOCOMMIT")
        check("context-refused" in r.stdout,
              "commit false: the SOP class is refused")
        # The same transaction twice (no listener yet), then another
        # request with the same UID but other items.
        r, tx = scu(d, items)
        check(action_status(r.stdout) == "0000", "first request 0000")
        r, _ = scu(d, items, tx=tx)
        check(action_status(r.stdout) == "0000", "repeated request 0000")
        r, _ = scu(d, [(CT, generate_uid())], tx=tx)
        check(action_status(r.stdout) == "0110" and "in use" in r.stdout,
              "same Transaction UID, other items: 0110")
        r, _ = scu(d, "-", tx=tx, listen=listen, wait=30,
                   extra=["--no-action"])
        rep = report_of(r.stdout)
        check(rep is not None and rep["tx"] == tx and
              len(rep["committed"]) == 1, "reported once")
        check(it.echo(d.port).returncode == 0, "the daemon still answers")
        check(d.stop() == 0, "clean stop")
    finally:
        d.stop()
        mock.close()


def orthanc_with_modality(work, bridge_port):
    """Orthanc whose modality "bridge" is the daemon."""
    o = it.Orthanc.__new__(it.Orthanc)
    orig_dump = json.dump

    def dump(cfg, f, *a, **kw):
        cfg["DicomModalities"] = {"bridge": ["STOWBRIDGE", "127.0.0.1",
                                             bridge_port]}
        cfg["DicomAet"] = "ORTHANC"
        o.dicom_port = cfg["DicomPort"]
        return orig_dump(cfg, f, *a, **kw)
    json.dump = dump
    try:
        it.Orthanc.__init__(o, work)
    finally:
        json.dump = orig_dump
    return o


def test_orthanc_scu(work):
    """Orthanc 1.10 as the commitment SCU (REST storage-commitment: it
    sends N-ACTION and takes the report on its own DICOM port) and as the
    DICOMweb server the instances go to."""
    bridge_port = it.free_port()
    orthanc = orthanc_with_modality(work, bridge_port)
    d = None
    try:
        d = it.Daemon(work, upload={
            "url": "http://127.0.0.1:%d/dicom-web" % orthanc.port,
            "timeout_s": 30}, retry={"min_s": 1, "max_s": 4},
            dicom={"port": bridge_port, "remote_aes": [{
                "ae_title": "ORTHANC", "host": "127.0.0.1",
                "port": orthanc.dicom_port}]},
            commit={"report_retry_max_s": 2})
        d.port = bridge_port
        d.start()
        study, files = make_files(work, 3)
        store(d, files)
        wait_for(lambda: it.spool_empty(d), 60, "uploads to Orthanc")
        absent = generate_uid()
        body = {"DicomInstances": [[CT, u] for _, u in files] +
                [[CT, absent]], "Timeout": 30}
        job = orthanc.post("/modalities/bridge/storage-commitment",
                           json.dumps(body))
        check("ID" in job, "Orthanc sent the request (%s)" % job)
        path = job.get("Path", "/storage-commitment/" + job["ID"])

        def report():
            got = json.loads(orthanc.get(path))
            return got if got.get("Status") not in ("Pending", None) else None
        wait_for(report, 60, "Orthanc received the report")
        got = report()
        print("Orthanc:", json.dumps(got)[:400])
        check(got["Status"] == "Failure", "Orthanc: failures exist (type 2)")
        check(sorted(x["SOPInstanceUID"] for x in got["Success"]) ==
              sorted(u for _, u in files), "Orthanc: the three committed")
        check([(x["SOPInstanceUID"], x["FailureReason"])
               for x in got["Failures"]] == [(absent, 0x0112)],
              "Orthanc: the absent one failed with 0112")
        check(got["RemoteAET"] == "STOWBRIDGE", "Orthanc: from our AE")
        # All delivered: Orthanc sees success.
        body = {"DicomInstances": [[CT, u] for _, u in files]}
        job = orthanc.post("/modalities/bridge/storage-commitment",
                           json.dumps(body))
        path = job.get("Path", "/storage-commitment/" + job["ID"])
        wait_for(report, 60, "Orthanc received the second report")
        got = report()
        check(got["Status"] == "Success" and len(got["Success"]) == 3 and
              not got["Failures"], "Orthanc: all committed (type 1)")
        check(d.stop() == 0, "clean stop")
    finally:
        if d:
            d.stop()
        orthanc.close()


def test_tls_report(work):
    """A dicom.remote_aes entry with "tls": true and a certificate_sha256
    pin gets its report over DICOM TLS (commit_scu --tls): a certificate
    from an unknown CA, then one from our CA that is not the pinned one:
    no report (nothing sent), the reason logged, retried; the pinned one:
    the same report arrives."""
    import tls_it
    pki = os.path.join(work, "pki")
    os.makedirs(pki)
    tls_it.make_ca(pki, "ca")
    tls_it.make_ca(pki, "rogue-ca")
    for name, ca in (("mod1", "ca"), ("other", "ca"), ("rogue", "rogue-ca")):
        tls_it.make_leaf(pki, name, ca, cn="MOD1", san="IP:127.0.0.1")
    pin = tls_it.fingerprint(pki, "mod1").replace(":", "").lower()
    mock = it.MockWeb()
    listen = it.free_port()
    d = it.Daemon(
        work, upload={"url": "http://127.0.0.1:%d/dicom-web" % mock.port,
                      "timeout_s": 5},
        retry={"min_s": 1, "max_s": 2},
        dicom={"tls": {"ca_file": os.path.join(pki, "ca.pem")},
               "remote_aes": [{"ae_title": "MOD1", "host": "127.0.0.1",
                               "port": listen, "tls": True,
                               "certificate_sha256": pin}]},
        commit={"report_retry_max_s": 2}, log={"level": "debug"}).start()
    procs = []
    try:
        study, files = make_files(work, 2)
        store(d, files)
        uids = [u for _, u in files]
        wait_for(lambda: delivered(mock, uids), 60, "delivered")

        def tls_scu(cert, no_action, wait, tx=None):
            extra = ["--tls", os.path.join(pki, cert + ".key"),
                     os.path.join(pki, cert + ".pem")]
            if no_action:
                extra.append("--no-action")
            p, tx = scu(d, [(CT, u) for u in uids], tx=tx, listen=listen,
                        wait=wait, extra=extra, background=True)
            procs.append(p)
            return p, tx

        def deferred(tx, n):
            return re.findall(r"event=commit-report-deferred tx=%s "
                              r"to=MOD1@127\.0\.0\.1:%d attempts=\d+ "
                              r"next=\d+s reason=\"([^\"]*)\""
                              % (re.escape(tx), listen), d.log_text())[n:]

        # 1. A certificate our CA did not sign: the handshake fails.
        p, tx = tls_scu("rogue", False, 60)
        wait_for(lambda: deferred(tx, 0), 60, "an attempt with the rogue "
                 "certificate failed")
        why = deferred(tx, 0)[0]
        print("untrusted:", why)
        check("pinned" not in why and re.search(
            r"certif|verif|TLS|SSL|handshake", why, re.I),
            "the log says the TLS handshake failed (%s)" % why)
        p.terminate()
        out = p.communicate(timeout=30)[0]
        check(report_of(out) is None, "no report to the untrusted one")
        check("report tls-failed" in out, "it saw a failed handshake")
        seen = len(deferred(tx, 0))

        # 2. Our CA, but not the pinned certificate.
        p, _ = tls_scu("other", True, 60, tx=tx)
        wait_for(lambda: any("pinned" in w for w in deferred(tx, seen)),
                 60, "an attempt with the wrong pin failed")
        why = [w for w in deferred(tx, seen) if "pinned" in w][0]
        print("wrong pin:", why)
        check("certificate_sha256" in why, "the log names the pin (%s)" % why)
        p.terminate()
        out = p.communicate(timeout=30)[0]
        check(report_of(out) is None and "report {" not in out,
              "no N-EVENT-REPORT to the wrong certificate (%s)" % out)
        check("event=commit-reported tx=%s" % tx not in d.log_text(),
              "not reported yet")

        # 3. The pinned certificate: the retry delivers the same report.
        t0 = time.time()
        p, _ = tls_scu("mod1", True, 60, tx=tx)
        out = p.communicate(timeout=90)[0]
        rep = report_of(out)
        print("pinned: report %.2f s after listening" % (time.time() - t0))
        check(p.returncode == 0 and rep is not None,
              "the report came over TLS (%s)" % out)
        check(rep["tx"] == tx and rep["event_type"] == 1 and
              sorted(u for _, u in rep["committed"]) == sorted(uids),
              "Event Type 1, both instances")
        wait_for(lambda: "event=commit-reported tx=%s" % tx in d.log_text(),
                 10, "report logged")
        check(d.stop() == 0, "clean stop")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        d.stop()
        mock.close()


def test_study_cmd(work):
    """stowbridge study UID [--json] and commit list|show, read-only while
    the daemon runs."""
    mock = it.MockWeb()
    listen = it.free_port()
    d = commit_daemon(work, mock.port, listen).start()
    try:
        study, files = make_files(work, 3)
        store(d, files)
        wait_for(lambda: delivered(mock, [u for _, u in files]), 60,
                 "delivered")
        absent = generate_uid()
        mock.qido = qido_from(mock)
        r, tx = scu(d, [(CT, u) for _, u in files] + [(CT, absent)],
                    listen=listen, wait=30)
        check(report_of(r.stdout) is not None, "reported")
        time.sleep(0.5)   # the ledger writes within 100 ms

        def ok(args):
            r = run([it.BINARY] + args + ["--config", d.config])
            check(r.returncode == 0, " ".join(args) + " exits 0 (%s)" %
                  (r.stdout + r.stderr)[-300:])
            return r.stdout
        js = json.loads(ok(["study", study, "--json"]))
        check(js["delivered"]["instances"] == 3, "study: 3 delivered")
        check(js["received"][0]["calling_ae"] == "MOD1" and
              js["received"][0]["instances"] == 3, "study: by calling AE")
        check(any(c["tx"] == tx for c in js["commitments"]),
              "study: the transaction that named it")
        text = ok(["study", study])
        check("MOD1" in text and tx in text, "study: text form")
        lst = ok(["commit", "list"])
        check(tx in lst, "commit list shows it")
        show = ok(["commit", "show", tx])
        check(absent in show and "0112" in show and "event_type=2" in show,
              "commit show: items and outcome")
        r = run([it.BINARY, "commit", "show", "1.2.3", "--config",
                 d.config])
        check(r.returncode != 0 and "no such" in (r.stdout + r.stderr),
              "commit show of an unknown transaction: an error")
        r = run([it.BINARY, "study", "bad uid", "--config", d.config])
        check(r.returncode != 0, "study with a bad UID: an error")
        check(d.stop() == 0, "clean stop")
    finally:
        d.stop()
        mock.close()


def main():
    global COMMIT_SCU
    it.BINARY, COMMIT_SCU, name = sys.argv[1], sys.argv[2], sys.argv[3]
    test = globals().get("test_" + name)
    if test is None:
        print("no such test:", name)
        return 2
    return it.run_test(test, name)


if __name__ == "__main__":
    sys.exit(main())
