#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""DIMSE-side hardening tests (issue 9 items 2, 3, 5, 6, 7, 8 and 11): the
real stowbridge binary against DCMTK's echoscu/storescu/findscu and a raw
peer (dimse_peer.py) that sends what no toolkit would.

usage: scp_it.py BINARY CRAFT_SCU TEST

TEST is one of: cancel, storage_classes, refused_log, max_pdu,
packed_pdvs, flood_malformed, flood_release, flood_rejected, flood_trickle, leaks,
soak, fd_limit, config. Each prints what it measured (times, RSS, log
lines) and exits non-zero on the first failed check.
"""
import os
import re
import resource
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import it  # noqa: E402
import dimse_peer as dp  # noqa: E402
from it import Daemon, check, run  # noqa: E402

# A well-behaved echoscu must be served within this, flood or not (issue 9
# item 6); measured from process start to exit, so it includes echoscu's
# own start-up.
ECHO_LIMIT_S = 2.0


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

def proc_status(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def rss_kib(pid):
    return proc_status(pid, "VmRSS")


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def is_asan(d):
    with open("/proc/%d/maps" % d.proc.pid) as f:
        return "libasan" in f.read()


def timed_echo(port, calling="ECHOSCU"):
    start = time.monotonic()
    r = it.echo(port, calling=calling)
    return r.returncode == 0, time.monotonic() - start, r


def probe(d, what, count=5, pause=0.5, alive=None):
    """Runs echoscu @count times while a flood is on; each must succeed
    within ECHO_LIMIT_S. @alive() must stay true (the flood is active).
    Returns the times."""
    times = []
    for _ in range(count):
        if alive is not None:
            check(alive(), "%s: the flood is active while echoscu runs"
                  % what)
        ok, took, r = timed_echo(d.port)
        times.append(took)
        check(ok, "%s: echoscu served (%.2f s) %s" % (what, took,
                                                       r.stderr.strip()))
        check(took < ECHO_LIMIT_S, "%s: echoscu took %.2f s (< %.1f s)"
              % (what, took, ECHO_LIMIT_S))
        time.sleep(pause)
    print("measured: %s: echoscu %s s" % (what, ", ".join(
        "%.2f" % t for t in times)))
    return times


def server_closed(sock):
    """True once the SCP has closed its socket: it shuts its write side
    at once (so EOF tells nothing) and closes once the peer closed or its
    deadline passed; after that, a byte we send is answered by a reset,
    which the next send reports. Reads and drops what the SCP sent."""
    sock.setblocking(False)
    try:
        while sock.recv(65536):
            pass
    except BlockingIOError:
        pass
    except OSError:
        return True
    try:
        sock.send(b"\0")
    except OSError:
        return True
    return False


def wait_closed_by_server(socks, seconds):
    """How many of @socks the SCP closed within @seconds."""
    deadline = time.monotonic() + seconds
    open_socks = list(socks)
    closed = 0
    while open_socks and time.monotonic() < deadline:
        still = []
        for s in open_socks:
            if server_closed(s):
                closed += 1
            else:
                still.append(s)
        open_socks = still
        time.sleep(0.1)
    return closed


def check_close_times(d, timeout_s):
    """A malformed request, a wrong called AE and a release, each held
    open by the peer: the SCP closes each socket within dicom.timeout_s
    (a 1.5 s margin for a loaded machine)."""
    bad = [c for c in dp.malformed_requests() if c[2] == "abort"][0][1]
    socks = {"released": release_and_hold(d.port),
             "malformed request": hold(d.port, bad),
             "wrong called AE": hold(d.port, dp.associate_rq(called="X"))}
    check(all(s is not None for s in socks.values()), "three peers hold "
          "their sockets")
    times = dict.fromkeys(socks)
    start = time.monotonic()
    while None in times.values() and \
            time.monotonic() - start < timeout_s + 5:
        for what, s in socks.items():
            if times[what] is None and server_closed(s):
                times[what] = time.monotonic() - start
        time.sleep(0.1)
    close_all(socks.values())
    print("measured: socket closed by the SCP after %s" % ", ".join(
        "%s %s s" % (w, "%.1f" % t if t is not None else "never")
        for w, t in times.items()))
    for what, t in times.items():
        check(t is not None and t <= timeout_s + 1.5,
              "%s, peer keeps its socket: closed by the SCP within "
              "dicom.timeout_s %d (%s s)" % (what, timeout_s,
                                             "%.1f" % t if t else "never"))


def hold(port, data, source=None):
    """A connection that sends @data and stays open; None if refused."""
    try:
        s = socket.socket()
        if source:
            s.bind((source, 0))
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        if data:
            s.sendall(data)
        return s
    except OSError:
        return None


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


class Flood(threading.Thread):
    """Runs @step(i) over and over in the background until stopped; counts
    the steps and keeps what they return (open sockets) in a bounded
    list."""

    def __init__(self, step, keep=400, pause=0.0):
        super().__init__(daemon=True)
        self.step = step
        self.keep = keep
        self.pause = pause
        self.count = 0
        self.errors = 0
        self.held = []
        self.stop_flag = False

    def run(self):
        i = 0
        while not self.stop_flag:
            try:
                s = self.step(i)
            except Exception:
                s = None
                self.errors += 1
            i += 1
            self.count += 1
            if s is not None:
                self.held.append(s)
                if len(self.held) > self.keep:
                    close_all(self.held[:-self.keep])
                    del self.held[:-self.keep]
            if self.pause:
                time.sleep(self.pause)

    def active_since(self, count):
        return self.count > count

    def stop(self):
        self.stop_flag = True
        self.join(30)
        close_all(self.held)


def log_lines(d, pattern):
    return [l for l in d.log_text().splitlines() if re.search(pattern, l)]


def logged(d, pattern, seconds=30):
    """True once a log line matches @pattern (the daemon may log just
    after it answered); False after @seconds (generous: a loaded machine
    or a sanitizer build only makes it slower)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if log_lines(d, pattern):
            return True
        time.sleep(0.05)
    return False


def no_sanitizer_report(d, what):
    text = d.log_text()
    check("LeakSanitizer" not in text and "AddressSanitizer" not in text
          and "runtime error" not in text,
          "%s: no sanitizer report in the daemon's output" % what)


# ---------------------------------------------------------------------------
# Item 2: a C-CANCEL after the final C-FIND response
# ---------------------------------------------------------------------------

def test_cancel(work):
    import find_it
    db = find_it.Qido(find_it.synthetic_studies(48), azure=False)
    mock = it.MockWeb()
    mock.qido = db.handle
    url = "http://127.0.0.1:%d/dicom-web" % mock.port
    keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "",
            "PatientName": "PAGE*", "PatientID": ""}
    try:
        d = Daemon(work, upload={"url": url, "timeout_s": 10},
                   query={"page_size": 100}).start()
        # Deterministic: our peer reads every response, the final one
        # included, and only then sends C-CANCEL, then releases.
        ident = dp.dataset_bytes(find_identifier())
        p = dp.Peer(d.port)
        kind, _ = p.associate(contexts=[(1, dp.FIND_STUDY, [dp.EXPLICIT])])
        check(kind == dp.ASSOCIATE_AC, "C-FIND association accepted")
        p.send_message(1, dp.find_rq(7), ident)
        statuses = []
        while True:
            cmd, _, _ = p.read_message()
            statuses.append(dp.field_us(cmd, 0x0900))
            if statuses[-1] != 0xFF00:
                break
        check(len(statuses) == 49 and statuses[-1] == 0,
              "48 pending responses then 0000 (%d, final %04X)"
              % (len(statuses), statuses[-1]))
        p.send_message(1, dp.cancel_rq(7))
        p.send_message(1, dp.cancel_rq(3))
        check(p.release(), "a C-CANCEL after the final response is "
              "ignored: A-RELEASE-RP")
        p.close()
        # A C-CANCEL for another message ID while a C-FIND runs is
        # ignored too; the C-FIND completes.
        p = dp.Peer(d.port)
        p.associate(contexts=[(1, dp.FIND_STUDY, [dp.EXPLICIT])])
        p.send_message(1, dp.cancel_rq(99))
        p.send_message(1, dp.find_rq(9), ident)
        p.send_message(1, dp.cancel_rq(98))
        final = None
        count = 0
        while True:
            cmd, _, _ = p.read_message()
            count += 1
            if dp.field_us(cmd, 0x0900) != 0xFF00:
                final = dp.field_us(cmd, 0x0900)
                break
        check(final == 0 and count == 49, "a C-CANCEL for another message "
              "ID is ignored: 48 answers and 0000 (%d, %s)" % (count, final))
        check(p.release(), "and the association is released normally")
        p.close()
        check("unsupported DIMSE command" not in d.log_text(),
              "no C-CANCEL was called an unsupported command")
        # findscu -S --cancel 2 against 48 matches on one page: the
        # cancel crosses the burst of answers; whichever it meets, the
        # association ends with a normal release.
        for attempt in range(3):
            before = len(log_lines(d, r"event=released"))
            answers, final, out = find_it.findscu(
                d.port, keys, work=work, extra=["--cancel", "2"])
            check("Releasing Association" in out and
                  "Association Release Failed" not in out and
                  "Aborted" not in out,
                  "findscu --cancel 2 (run %d): released normally (final "
                  "%s, %d answers)" % (attempt + 1, final, len(answers)))
            check(final in ("0000", "FE00"), "final status 0000 or FE00 "
                  "(%s)" % final)
            it.wait_for(lambda: len(log_lines(d, r"event=released")) >
                        before, 30, "the daemon logs the release")
        check(not log_lines(d, r"event=dropped.*0x0fff"),
              "no association dropped for a C-CANCEL")
        check(d.stop() == 0, "clean stop")
        no_sanitizer_report(d, "cancel")
    finally:
        mock.close()


def find_identifier():
    from pydicom.dataset import Dataset
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = ""
    ds.PatientName = "PAGE*"
    ds.PatientID = ""
    return ds


# ---------------------------------------------------------------------------
# Item 3: storage classes newer than DCMTK 3.6.7's list
# ---------------------------------------------------------------------------

# Seen refused in issue 9: under the storage root, unknown to DCMTK 3.6.7.
NEW_STORAGE = ["1.2.840.10008.5.1.4.1.1.6.3", "1.2.840.10008.5.1.4.1.1.9.100.1",
               "1.2.840.10008.5.1.4.1.1.9.100.2",
               "1.2.840.10008.5.1.4.1.1.88.77",
               "1.2.840.10008.5.1.4.1.1.201.1",
               "1.2.840.10008.5.1.4.1.1.201.1.1",
               "1.2.840.10008.5.1.4.1.1.201.2",
               "1.2.840.10008.5.1.4.1.1.201.3",
               "1.2.840.10008.5.1.4.1.1.201.5",
               "1.2.840.10008.5.1.4.1.1.501.2"]
COLOR_PALETTE = "1.2.840.10008.5.1.4.39.1"
PRIVATE = "1.2.826.0.1.3680043.9.7156.77.1"


def propose(port, uids, calling="RAWPEER"):
    """Associates proposing @uids (ids 1, 3, ...) with explicit and
    implicit VR LE; returns (peer, {uid: result})."""
    contexts = [(2 * i + 1, u, [dp.EXPLICIT, dp.IMPLICIT])
                for i, u in enumerate(uids)]
    p = dp.Peer(port)
    kind, _ = p.associate(contexts=contexts, calling=calling)
    if kind != dp.ASSOCIATE_AC:
        return p, None
    return p, {u: p.contexts.get(2 * i + 1, (None, ""))[0]
               for i, u in enumerate(uids)}


def store_raw(p, pc_id, sop_class, sop_uid, study):
    ds = dp.ct_dataset(sop_uid, study=study, sop_class=sop_class)
    data = dp.dataset_bytes(ds)
    p.send_message(pc_id, dp.store_rq(1, sop_class, sop_uid), data)
    cmd, _, _ = p.read_message()
    return dp.field_us(cmd, 0x0900), data


def spooled_dataset(d, sop_uid, seconds=10.0):
    """The data set and meta header of the spool entry holding @sop_uid.
    An instance the journal took is durable before 0000 and its entry file
    is written just after the answer (before the next command is read), so
    a peer that looks while its association is open may have to wait a
    moment; an entry appears whole (linked once written)."""
    import pydicom
    deadline = time.monotonic() + seconds
    while True:
        for path in d.entries():
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            if str(ds.SOPInstanceUID) == sop_uid:
                body, meta = it.dataset_bytes(path)
                return body, meta
        if time.monotonic() >= deadline:
            return None, None
        time.sleep(0.02)


def spool_count_reaches(d, n, seconds=10.0):
    """True once incoming/ holds @n entries (see spooled_dataset())."""
    deadline = time.monotonic() + seconds
    while len(d.entries()) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return len(d.entries()) == n


def test_storage_classes(work):
    d = Daemon(work, dicom={"extra_storage_classes": [PRIVATE]}).start()
    p, res = propose(d.port, NEW_STORAGE + [PRIVATE, COLOR_PALETTE,
                                            dp.VERIFICATION])
    check(res is not None, "association accepted")
    for u in NEW_STORAGE:
        check(res[u] == 0, "%s accepted (result %s)" % (u, res[u]))
    check(res[PRIVATE] == 0, "a private class in "
          "dicom.extra_storage_classes accepted")
    check(res[COLOR_PALETTE] == 3, "Color Palette (a non-patient object, "
          "outside the storage root) refused: abstract syntax not "
          "supported")
    # End to end into the spool: each new class, byte for byte.
    study = "1.2.826.0.1.3680043.9.7156.5.1"
    for i, u in enumerate(NEW_STORAGE[:4] + [PRIVATE]):
        sop = "1.2.826.0.1.3680043.9.7156.5.2.%d" % i
        pc_id = 2 * (NEW_STORAGE + [PRIVATE]).index(u) + 1
        status, sent = store_raw(p, pc_id, u, sop, study)
        check(status == 0, "C-STORE of a %s instance: 0000 (%04X)"
              % (u, status))
        body, meta = spooled_dataset(d, sop)
        check(body == sent and str(meta.MediaStorageSOPClassUID) == u,
              "its spool entry holds the data set as sent, class %s" % u)
    check(p.release(), "released")
    p.close()
    # storescu with a file of one of them (storescu proposes the file's
    # class as is).
    f = os.path.join(work, "new.dcm")
    it.make_instance(f)
    import pydicom
    ds = pydicom.dcmread(f)
    ds.SOPClassUID = NEW_STORAGE[1]
    ds.file_meta.MediaStorageSOPClassUID = NEW_STORAGE[1]
    ds.save_as(f, write_like_original=False)
    cfg = os.path.join(work, "storescu.cfg")
    with open(cfg, "w") as out:
        out.write("[[TransferSyntaxes]]\n[Uncompressed]\n"
                  "TransferSyntax1 = LittleEndianExplicit\n"
                  "[[PresentationContexts]]\n[New]\n"
                  "PresentationContext1 = %s\\Uncompressed\n"
                  "[[Profiles]]\n[Default]\nPresentationContexts = New\n"
                  % NEW_STORAGE[1])
    r = it.storescu(d.port, [f], extra=["-xf", cfg, "Default"])
    check("Received Store Response (Success)" in r.stdout + r.stderr,
          "storescu stores a %s instance: %s" % (NEW_STORAGE[1],
                                                 (r.stdout + r.stderr)[-300:]))
    check(d.stop() == 0, "clean stop")

    # dicom.accept_unknown_storage_classes false: only DCMTK's list (and
    # the extra classes) are accepted, and the log says why.
    d = Daemon(work, dicom={"accept_unknown_storage_classes": False,
                            "extra_storage_classes": [PRIVATE]}).start()
    p, res = propose(d.port, NEW_STORAGE[:2] + [dp.CT_IMAGE, PRIVATE])
    check(res[NEW_STORAGE[0]] == 3 and res[NEW_STORAGE[1]] == 3,
          "unknown classes refused when accept_unknown_storage_classes is "
          "false")
    check(res[dp.CT_IMAGE] == 0 and res[PRIVATE] == 0,
          "DCMTK's classes and the extra ones still accepted")
    p.release()
    p.close()
    check(log_lines(d, r"event=contexts-refused.*1\.2\.840\.10008\.5\.1\.4"
                    r"\.1\.1\.6\.3 \(unknown storage class"),
          "the refusal names the UID and the reason")
    check(d.stop() == 0, "clean stop")

    # The 128-context limit: 128 contexts (IDs 1..255) are negotiated;
    # more cannot be numbered and the request is refused as malformed.
    d = Daemon(work).start()
    uids = ["1.2.840.10008.5.1.4.1.1.9999.%d" % i for i in range(128)]
    p, res = propose(d.port, uids)
    check(res is not None and all(v == 0 for v in res.values()),
          "128 contexts with odd IDs 1..255: all accepted")
    p.release()
    p.close()
    p = dp.Peer(d.port)
    kind, body = p.associate(contexts=[((2 * i + 1) & 0xff, u, [dp.EXPLICIT])
                                       for i, u in enumerate(uids + uids[:1])])
    check(kind == dp.ABORT and body[2] == 2 and body[3] == 6,
          "129 contexts: A-ABORT, service provider, invalid parameter value")
    p.close()
    check(log_lines(d, r"malformed A-ASSOCIATE-RQ: more than 128"),
          "the log says more than 128 contexts")
    check(d.stop() == 0, "clean stop")
    no_sanitizer_report(d, "storage classes")


# ---------------------------------------------------------------------------
# Item 5: what was refused at negotiation, by name and reason
# ---------------------------------------------------------------------------

def test_refused_log(work):
    import find_it
    mock = it.MockWeb()
    mock.qido = find_it.Qido([], azure=False).handle
    url = "http://127.0.0.1:%d/dicom-web" % mock.port
    try:
        # Storage Commitment is offered with upload.url since issue 12:
        # turned off here so that it is still a refused context.
        d = Daemon(work, upload={"url": url}, dicom={"allowed_callers": [
            {"ae_title": "STOREONLY", "find": False, "retrieve": False},
            {"ae_title": "ECHOSCU"},
            {"ae_title": "MANY"}]}, commit={"enabled": False}).start()
        refused = ["1.2.840.10008.5.1.4.1.2.2.2",        # Study Root MOVE
                   "1.2.840.10008.5.1.4.1.2.2.3",        # Study Root GET
                   "1.2.840.10008.1.20.1",               # commitment
                   "1.2.840.10008.5.1.4.31"]             # worklist
        p, res = propose(d.port, [dp.CT_IMAGE, dp.FIND_STUDY] + refused,
                         calling="STOREONLY")
        check(res[dp.CT_IMAGE] == 0 and all(res[u] == 3 for u in refused)
              and res[dp.FIND_STUDY] == 3, "CT accepted; MOVE, GET, "
              "commitment, worklist and FIND refused")
        p.release()
        p.close()
        lines = log_lines(d, r"event=contexts-refused .*from=STOREONLY@")
        check(len(lines) == 1, "one contexts-refused line for the "
              "association (%d)" % len(lines))
        line = lines[0]
        print("logged:", line)
        for name in ("MOVEStudyRootQueryRetrieveInformationModel "
                     "(not allowed for this caller (retrieve false)",
                     "GETStudyRootQueryRetrieveInformationModel "
                     "(not allowed for this caller (retrieve false)",
                     "StorageCommitmentPushModelSOPClass (not supported: "
                     "Storage Commitment is off",
                     "FINDModalityWorklistInformationModel (not supported)",
                     "FINDStudyRootQueryRetrieveInformationModel (not "
                     "allowed for this caller"):
            check(name in line, "named with its reason: " + name)
        check("count=5" in line, "count=5")
        check(log_lines(d, r"event=accepted .*from=STOREONLY@.*contexts=1"),
              "event=accepted still says contexts=1")
        # Bounded: 100 unknown syntaxes (several contexts each) give one
        # line of bounded length that says how many more there were.
        many = ["1.2.826.0.1.3680043.9.7156.99.%d" % i for i in range(100)]
        p, res = propose(d.port, many + many[:20] + [dp.VERIFICATION],
                         calling="MANY")
        check(res is not None and res[dp.VERIFICATION] == 0, "accepted")
        p.release()
        p.close()
        lines = log_lines(d, r"event=contexts-refused .*from=MANY@")
        check(len(lines) == 1, "one line for 120 refused contexts")
        line = lines[0]
        m = re.search(r'syntaxes="(.*)"$', line)
        check(m is not None and len(m.group(1)) <= 520,
              "the list is bounded (%d characters)" % len(m.group(1)))
        more = re.search(r"and (\d+) more", line)
        shown = m.group(1).count("(not supported)")
        check("count=100" in line and more is not None and
              shown + int(more.group(1)) == 100,
              "each UID once: %d shown + %s more = 100" %
              (shown, more.group(1) if more else "?"))
        check(len(line) < 800, "one line of %d characters" % len(line))
        check(d.stop() == 0, "clean stop")
        no_sanitizer_report(d, "refused log")
    finally:
        mock.close()


# ---------------------------------------------------------------------------
# Item 11: a maximum PDU length too small to carry our answers
# ---------------------------------------------------------------------------

def test_max_pdu(work):
    import find_it
    db = find_it.Qido(find_it.synthetic_studies(3), azure=False)
    mock = it.MockWeb()
    mock.qido = db.handle
    url = "http://127.0.0.1:%d/dicom-web" % mock.port
    try:
        d = Daemon(work, upload={"url": url}).start()
        study = "1.2.826.0.1.3680043.9.7156.6.1"
        for size in (1, 12, 13):
            p = dp.Peer(d.port)
            kind, body = p.associate(contexts=[(1, dp.VERIFICATION,
                                                [dp.IMPLICIT]),
                                               (3, dp.CT_IMAGE,
                                                [dp.EXPLICIT])],
                                     max_pdu=size)
            check(kind == dp.ASSOCIATE_RJ and body[1] == 1,
                  "maximum PDU length %d: A-ASSOCIATE-RJ permanent" % size)
            p.close()
            check(logged(d, r"event=rejected .*maximum PDU length of %d "
                         r"bytes cannot carry our responses" % size),
                  "and the log says why (%d)" % size)
        check(d.entries() == [], "nothing was stored for them")
        # 14 bytes: two bytes a PDU, but every answer goes out.
        p = dp.Peer(d.port)
        kind, _ = p.associate(contexts=[(1, dp.VERIFICATION, [dp.IMPLICIT]),
                                        (3, dp.CT_IMAGE, [dp.EXPLICIT]),
                                        (5, dp.FIND_STUDY, [dp.EXPLICIT])],
                              max_pdu=14)
        check(kind == dp.ASSOCIATE_AC, "maximum PDU length 14: accepted")
        p.peer_max_pdu = 16384   # what we send may be larger
        status, _ = store_raw(p, 3, dp.CT_IMAGE,
                              "1.2.826.0.1.3680043.9.7156.6.2", study)
        check(status == 0, "C-STORE-RSP 0000 arrives in 14-byte PDUs")
        check(spool_count_reaches(d, 1), "and the instance is spooled")
        p.send_message(1, dp.echo_rq(2))
        cmd, _, _ = p.read_message()
        check(dp.field_us(cmd, 0x0900) == 0, "C-ECHO-RSP 0000")
        p.send_message(5, dp.find_rq(3), dp.dataset_bytes(
            find_identifier_all()))
        answers = 0
        while True:
            cmd, data, _ = p.read_message()
            if dp.field_us(cmd, 0x0900) != 0xFF00:
                break
            answers += 1
        check(answers == 3 and dp.field_us(cmd, 0x0900) == 0,
              "C-FIND: 3 answers with identifiers and 0000 (%d)" % answers)
        check(p.release(), "released")
        p.close()
        # 0 means no limit.
        p = dp.Peer(d.port)
        kind, _ = p.associate(max_pdu=0)
        p.peer_max_pdu = 16384
        check(kind == dp.ASSOCIATE_AC, "maximum PDU length 0 (no limit): "
              "accepted")
        p.send_message(1, dp.echo_rq(1))
        cmd, _, _ = p.read_message()
        check(dp.field_us(cmd, 0x0900) == 0 and p.release(), "and served")
        p.close()
        check(d.stop() == 0, "clean stop")
        no_sanitizer_report(d, "max pdu")
    finally:
        mock.close()


def find_identifier_all():
    ds = find_identifier()
    ds.PatientName = ""
    return ds


# ---------------------------------------------------------------------------
# Found by the fuzzer: several PDVs in one P-DATA-TF PDU
# ---------------------------------------------------------------------------

def packed(pc_id, parts):
    """One P-DATA-TF PDU holding every (payload, is_command) fragment of
    @parts, in order, each marked last when it ends its message."""
    body = b""
    for payload, is_command, last in parts:
        body += dp.pdv(pc_id, payload, is_command, last)
    return dp.pdu(dp.P_DATA, body)


def fragments(payload, is_command, size):
    chunks = [payload[i:i + size] for i in range(0, len(payload), size)]
    return [(c, is_command, i == len(chunks) - 1)
            for i, c in enumerate(chunks)]


def test_packed_pdvs(work):
    """PS3.8 9.3.5 lets a P-DATA-TF carry several PDVs. DCMTK 3.6.7's
    DUL_NextPDV() misreads the third one on (SEGV with two C-STOREs in
    one PDU): stowbridge splits such PDUs before DCMTK reads them."""
    d = Daemon(work).start()
    study = "1.2.826.0.1.3680043.9.7156.7.1"
    p = dp.Peer(d.port)
    kind, _ = p.associate(contexts=[(1, dp.VERIFICATION, [dp.IMPLICIT]),
                                    (3, dp.CT_IMAGE, [dp.EXPLICIT])])
    check(kind == dp.ASSOCIATE_AC, "accepted")
    sent = {}
    parts = []
    for i, size in enumerate((1000, 700, 334)):
        sop = "1.2.826.0.1.3680043.9.7156.7.2.%d" % i
        data = dp.dataset_bytes(dp.ct_dataset(sop, study=study, pixels=2000))
        sent[sop] = data
        parts += fragments(dp.store_rq(i + 1, dp.CT_IMAGE, sop), True, 60)
        parts += fragments(data, False, size)
    check(len(parts) > 10, "%d PDVs of different sizes" % len(parts))
    p.send(packed(3, parts))
    statuses = []
    for _ in range(3):
        cmd, _, _ = p.read_message()
        statuses.append(dp.field_us(cmd, 0x0900))
    check(statuses == [0, 0, 0], "three C-STOREs in one PDU: 0000 each "
          "(%s)" % statuses)
    # And an echo command packed behind a data set fragment's end.
    p.send(packed(1, [(dp.echo_rq(9), True, True)]))
    cmd, _, _ = p.read_message()
    check(dp.field_us(cmd, 0x0900) == 0, "C-ECHO after them")
    check(p.release(), "released")
    p.close()
    for sop, data in sent.items():
        body, _ = spooled_dataset(d, sop)
        check(body == data, "%s spooled byte for byte" % sop)
    check(d.alive() and it.echo(d.port).returncode == 0, "still serving")
    # PDVs that do not add up are still refused, not split.
    p = dp.Peer(d.port)
    p.associate(contexts=[(1, dp.VERIFICATION, [dp.IMPLICIT])])
    bad = packed(1, [(dp.echo_rq(1), True, True)])
    bad = bad[:6] + (len(bad) + 10).to_bytes(4, "big") + bad[10:]
    p.send(bad)
    check(p.wait_closed(10) is not None, "a PDV length past its PDU: the "
          "association is dropped")
    p.close()
    check(logged(d, r"PDV lengths don't add up|invalid length"),
          "and DCMTK's reason logged")
    check(d.stop() == 0, "clean stop")
    no_sanitizer_report(d, "packed PDVs")


# ---------------------------------------------------------------------------
# Item 6: floods that locked everyone out
# ---------------------------------------------------------------------------

def malformed_step(port):
    bad = [c for c in dp.malformed_requests() if c[2] == "abort"]

    def step(i):
        return hold(port, bad[i % len(bad)][1])
    return step


def test_flood_malformed(work):
    d = Daemon(work, dicom={"timeout_s": 5, "max_associations": 16}).start()
    # The numbers first: 24 malformed requests and 16 calling a
    # wrong AE title, all held open.
    bad = [c for c in dp.malformed_requests() if c[2] == "abort"]
    held = [hold(d.port, bad[i % len(bad)][1]) for i in range(24)]
    held += [hold(d.port, dp.associate_rq(called="WRONG"))
             for _ in range(16)]
    check(all(s is not None for s in held), "40 connections held open")
    flood = Flood(malformed_step(d.port), pause=0.01)
    wrong = Flood(lambda i: hold(d.port, dp.associate_rq(called="WRONG")),
                  pause=0.02)
    flood.start()
    wrong.start()
    it.wait_for(lambda: flood.active_since(10) and wrong.active_since(10),
                30, "both floods under way")
    probe(d, "malformed and wrong-AE flood", alive=lambda: (
        flood.active_since(10) and wrong.active_since(10)))
    print("measured: flood sent %d malformed and %d wrong-AE requests"
          % (flood.count, wrong.count))
    flood.stop()
    wrong.stop()
    closed = wait_closed_by_server(held, 5 + 3)
    check(closed == len(held), "the SCP closed all %d held sockets within "
          "dicom.timeout_s (+3 s margin): %d" % (len(held), closed))
    close_all(held)
    check(log_lines(d, r"malformed A-ASSOCIATE-RQ") and
          log_lines(d, r"called AE title not recognized"), "both logged")
    check(d.alive() and it.echo(d.port).returncode == 0, "still serving")
    check(d.stop() == 0, "clean stop")
    no_sanitizer_report(d, "malformed flood")


def release_and_hold(port):
    p = dp.Peer(port)
    kind, _ = p.associate()
    if kind != dp.ASSOCIATE_AC:
        p.close()
        return None
    p.send(dp.pdu(dp.RELEASE_RQ, b"\0\0\0\0"))
    kind, _ = p.read_pdu()
    if kind != dp.RELEASE_RP:
        p.close()
        return None
    return p.sock     # kept open: the peer never closes


def test_flood_release(work):
    d = Daemon(work, dicom={"timeout_s": 5, "max_associations": 4}).start()
    held = [release_and_hold(d.port) for _ in range(4)]
    check(all(s is not None for s in held),
          "4 peers got A-RELEASE-RP and keep their sockets open")
    flood = Flood(lambda i: release_and_hold(d.port), pause=0.05)
    flood.start()
    it.wait_for(lambda: flood.active_since(5), 30, "the flood under way")
    probe(d, "released-but-open flood (max_associations 4)",
          alive=lambda: flood.active_since(5))
    served = flood.count
    flood.stop()
    print("measured: %d released-and-held associations during the probes"
          % served)
    check(served >= 10, "the flood kept releasing and holding (%d)" % served)
    closed = wait_closed_by_server(held, 5 + 3)
    check(closed == 4, "the SCP closed the 4 held sockets within "
          "dicom.timeout_s (+3 s): %d" % closed)
    close_all(held)
    check(d.stop() == 0, "clean stop")
    no_sanitizer_report(d, "release flood")


def test_flood_rejected(work):
    d = Daemon(work, dicom={"timeout_s": 5, "max_associations": 1}).start()
    pid = d.proc.pid
    fds_before = open_fds(pid)
    rq = dp.associate_rq(called="WRONG")
    held = [hold(d.port, rq) for _ in range(200)]
    check(all(s is not None for s in held), "200 connections accepted")
    # Each got its A-ASSOCIATE-RJ.
    rj = 0
    for s in held:
        s.settimeout(10)
        try:
            if s.recv(10)[:1] == b"\x03":
                rj += 1
        except OSError:
            pass
    check(rj == 200, "200 requests answered A-ASSOCIATE-RJ (%d)" % rj)
    flood = Flood(lambda i: hold(d.port, rq), pause=0.02)
    flood.start()
    it.wait_for(lambda: flood.active_since(5), 30, "the flood under way")
    probe(d, "200 rejected and held open (max_associations 1)",
          alive=lambda: flood.active_since(5))
    fds_flood = open_fds(pid)
    flood.stop()
    closed = wait_closed_by_server(held, 5 + 3)
    check(closed == 200, "the SCP closed the 200 held sockets within "
          "dicom.timeout_s (+3 s): %d" % closed)
    close_all(held)
    # The loop closes what it still held as it notices: wait for that
    # rather than for a fixed time (the check below still decides).
    try:
        it.wait_for(lambda: open_fds(pid) <= fds_before + 2, 30,
                    "the descriptors to come back")
    except it.Failure:
        pass
    fds_after = open_fds(pid)
    print("measured: daemon descriptors %d before, %d during the flood, "
          "%d after" % (fds_before, fds_flood, fds_after))
    check(fds_after <= fds_before + 2, "descriptors back to %d (%d)"
          % (fds_before, fds_after))
    check_close_times(d, 5)
    check(d.stop() == 0, "clean stop")
    no_sanitizer_report(d, "rejected flood")


class Trickler(threading.Thread):
    """Sends an A-ASSOCIATE-RQ one byte a second; when the SCP drops it,
    connects again and starts over (a patient attacker)."""

    def __init__(self, port, source):
        super().__init__(daemon=True)
        self.port = port
        self.source = source
        self.rq = dp.associate_rq()
        self.bytes_sent = 0
        self.connects = 0
        self.stop_flag = False

    def run(self):
        while not self.stop_flag:
            s = hold(self.port, b"", self.source)
            if s is None:
                time.sleep(0.5)
                continue
            self.connects += 1
            try:
                for b in self.rq[:-1]:
                    if self.stop_flag:
                        break
                    s.sendall(bytes([b]))
                    self.bytes_sent += 1
                    time.sleep(1)
            except OSError:
                pass
            close_all([s])


def test_flood_trickle(work):
    d = Daemon(work, dicom={"timeout_s": 5}).start()
    # 25 from our own address (as echoscu), 25 from 25 others.
    sources = ["127.0.0.1"] * 25 + ["127.0.0.%d" % (i + 2) for i in range(25)]
    flood = [Trickler(d.port, s) for s in sources]
    for t in flood:
        t.start()
    time.sleep(3)
    last = [sum(t.bytes_sent for t in flood)]

    def alive():
        now = sum(t.bytes_sent for t in flood)
        grew = now > last[0]
        last[0] = now
        return grew

    time.sleep(1.2)
    probe(d, "50 peers trickling 1 byte/s", count=8, pause=1.0, alive=alive)
    print("measured: tricklers sent %d bytes, connected %d times"
          % (sum(t.bytes_sent for t in flood),
             sum(t.connects for t in flood)))
    for t in flood:
        t.stop_flag = True
    for t in flood:
        t.join(10)
    check(log_lines(d, r"evicted: the oldest"), "tricklers were evicted")
    check(not log_lines(d, r"event=rejected.*local limit"),
          "no caller was refused for the association limit")
    check(d.stop() == 0, "clean stop")
    no_sanitizer_report(d, "trickle flood")


# ---------------------------------------------------------------------------
# Item 7: no leak on malformed requests
# ---------------------------------------------------------------------------

def send_case(port, data, timeout=5, half_close=False):
    """Sends one request (then shuts the write side if @half_close);
    returns what came back ("abort", "rj", "ac", "closed")."""
    p = dp.Peer(port)
    try:
        p.send(data)
        if half_close:
            p.sock.shutdown(socket.SHUT_WR)
        kind, _ = p.read_pdu(timeout)
        got = dp.answer_kind(kind)
        if got == "ac":
            p.release()
        return got
    except dp.Closed:
        return "closed"
    except OSError:
        return "closed"
    finally:
        p.close()


def test_leaks(work):
    """Every kind of malformed (and odd) A-ASSOCIATE-RQ, three times each;
    under ASan (detect_leaks=1) the daemon must exit 0 with no report."""
    d = Daemon(work, dicom={"timeout_s": 3}).start()
    cases = dp.malformed_requests()
    wrong = []
    rounds = int(os.environ.get("SCP_IT_LEAK_ROUNDS", "3"))
    for _ in range(rounds):
        for name, data, expect in cases:
            got = send_case(d.port, data)
            if got != expect:
                wrong.append("%s: %s, expected %s" % (name, got, expect))
    ok, took, _ = timed_echo(d.port)
    check(ok, "echoscu served after %d requests" % (rounds * len(cases)))
    asan = is_asan(d)
    status = d.stop()
    print("daemon exit status %s (ASan build: %s)" % (status, asan))
    check(status == 0, "the daemon exits 0 (a LeakSanitizer report would "
          "make it fail): %s" % status)
    no_sanitizer_report(d, "leaks")
    check(not wrong, "every request answered as expected: %s"
          % "; ".join(wrong))
    check(len(log_lines(d, r"malformed A-ASSOCIATE-RQ")) ==
          rounds * sum(1 for c in cases if c[2] in ("abort",) or
                  c[0] == "protocol version 0"),
          "each malformed request logged once")


def soak_sender(port, cases, count, errors):
    for i in range(count):
        name, data, expect = cases[i % len(cases)]
        if send_case(port, data, half_close=True) != expect:
            errors.append(name)


def test_soak(work):
    """20 000 malformed requests: RSS must stay flat."""
    d = Daemon(work, dicom={"timeout_s": 3}, log={"level": "warning"}).start()
    pid = d.proc.pid
    asan = is_asan(d)
    cases = [c for c in dp.malformed_requests() if c[2] != "ac"]
    errors = []

    def burst(n, threads=4):
        ts = [threading.Thread(target=soak_sender,
                               args=(d.port, cases, n // threads, errors))
              for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    start = time.monotonic()
    burst(2000)
    time.sleep(0.5)
    rss_warm = rss_kib(pid)
    burst(18000)
    time.sleep(0.5)
    rss_end = rss_kib(pid)
    took = time.monotonic() - start
    growth = rss_end - rss_warm
    print("measured: RSS %d KiB after 2000 requests, %d KiB after 20000 "
          "(%+d KiB), %.1f s, %d answered otherwise"
          % (rss_warm, rss_end, growth, took, len(errors)))
    # A line may follow the answer its peer saw: wait for all 20000 (the
    # count is checked exactly below).
    refused_re = r"malformed A-ASSOCIATE-RQ|event=rejected"
    try:
        it.wait_for(lambda: len(log_lines(d, refused_re)) >= 20000, 60,
                    "20000 refusals logged")
    except it.Failure:
        pass
    handled = len(log_lines(d, refused_re))
    print("measured: %d requests logged as refused" % handled)
    check(len(errors) == 0, "every request answered as expected")
    check(handled == 20000, "all 20000 were refused and logged (%d)"
          % handled)
    check(it.echo(d.port).returncode == 0, "still serving")
    # Bound: the leak of issue 9 was ~57 bytes a request in the release
    # build, +1.1 MiB over 20 000; 18 000 requests at even 30 bytes would
    # be 527 KiB. Allowed: 256 KiB of allocator noise. ASan keeps freed
    # memory in quarantine, so there its exit-time leak check decides.
    if not asan:
        check(growth < 256, "RSS flat: %+d KiB over 18 000 requests (< 256)"
              % growth)
    status = d.stop()
    check(status == 0, "clean stop, no leak report at exit: %s" % status)
    no_sanitizer_report(d, "soak")


# ---------------------------------------------------------------------------
# Item 8: out of file descriptors
# ---------------------------------------------------------------------------

def test_fd_limit(work):
    limit = 64

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    d = Daemon(work, dicom={"timeout_s": 30, "max_associations": 200})
    d.log = open(d.log_path, "ab")
    d.proc = subprocess.Popen([it.BINARY, "run", "--config", d.config],
                              stdout=d.log, stderr=d.log,
                              preexec_fn=low_limit)
    it.wait_for(lambda: it.echo(d.port).returncode == 0, 60,
                "the daemon answers C-ECHO")
    pid = d.proc.pid
    # Hold 150 associations open (Verification), then flood with more
    # connections: descriptors run out.
    held = []
    for _ in range(150):
        s = hold(d.port, dp.associate_rq())
        if s is not None:
            held.append(s)
    check(len(held) >= 100, "%d connections held" % len(held))
    cpu0 = cpu_seconds(pid)
    lines0 = len(log_lines(d, r"event=accept-failed"))
    t0 = time.monotonic()
    extra = []
    refused = 0
    while time.monotonic() - t0 < 12:
        s = hold(d.port, dp.associate_rq())
        if s is not None:
            extra.append(s)
        time.sleep(0.02)
    elapsed = time.monotonic() - t0
    cpu = cpu_seconds(pid) - cpu0
    lines = len(log_lines(d, r"event=accept-failed")) - lines0
    # The oldest connections waiting in the listen backlog get the
    # refusals: look at every socket's first PDU.
    time.sleep(0.5)
    for s in held + extra:
        s.setblocking(False)
        try:
            if s.recv(10)[:1] == b"\x03":
                refused += 1
        except OSError:
            pass
    print("measured: %.1f s out of descriptors: %d accept-failed lines, "
          "CPU %.2f s (%.0f %%), %d of %d callers refused with "
          "A-ASSOCIATE-RJ, daemon fds %d"
          % (elapsed, lines, cpu, 100 * cpu / elapsed, refused,
             len(held) + len(extra), open_fds(pid)))
    total = len(log_lines(d, r"event=accept-failed"))
    check(total >= 1, "running out is logged")
    check(lines <= elapsed / 10 + 2, "at most one line per 10 s (%d in "
          "%.0f s)" % (lines, elapsed))
    check(cpu < 0.3 * elapsed, "no busy loop: CPU %.2f s in %.1f s"
          % (cpu, elapsed))
    check(refused >= 1, "callers are refused cleanly with the reserve "
          "descriptor (%d)" % refused)
    last = log_lines(d, r"event=accept-failed")[-1]
    check("Too many open files" in last and "count=" in last,
          "the line has the reason and a count: " + last)
    close_all(held + extra)
    it.wait_for(lambda: it.echo(d.port).returncode == 0, 60,
                "echoscu served once the connections closed")
    ok, took, _ = timed_echo(d.port)
    check(ok and took < ECHO_LIMIT_S, "echoscu in %.2f s" % took)
    check(log_lines(d, r"event=accept-recovered"), "recovery is logged")
    check(log_lines(d, r"event=fd-limit limit=64 needed=\d+ reason="),
          "the start warned that 64 descriptors do not fit")
    check(d.stop() == 0, "clean stop")
    no_sanitizer_report(d, "fd limit")


# ---------------------------------------------------------------------------
# The new keys
# ---------------------------------------------------------------------------

def test_config(work):
    def checked(dicom):
        d = Daemon(work, dicom=dicom)
        return run([it.BINARY, "check", "--config", d.config])

    r = checked({"extra_storage_classes": ["1.2.3", "1.2.x"]})
    check(r.returncode == 2 and "dicom.extra_storage_classes[1]: expected a "
          "UID" in r.stderr, "a bad UID is refused: " + r.stderr.strip())
    r = checked({"extra_storage_classes": "1.2.3"})
    check(r.returncode == 2 and "expected a list" in r.stderr,
          "a string is not a list")
    r = checked({"accept_unknown_storage_classes": 1})
    check(r.returncode == 2 and "expected true or false" in r.stderr,
          "accept_unknown_storage_classes is a boolean")
    r = checked({"max_pending": 0})
    check(r.returncode == 2 and "dicom.max_pending" in r.stderr,
          "max_pending 0 refused")
    d = Daemon(work, dicom={"extra_storage_classes": ["1.2.3", "1.2.4.5"],
                            "accept_unknown_storage_classes": False,
                            "max_pending": 8})
    r = run([it.BINARY, "check", "--config", d.config, "--dump"])
    check('"extra_storage_classes": ["1.2.3", "1.2.4.5"]' in r.stdout and
          '"accept_unknown_storage_classes": false' in r.stdout and
          '"max_pending": 8' in r.stdout, "the dump shows the new keys")


def main():
    it.BINARY, it.CRAFT_SCU, name = sys.argv[1], sys.argv[2], sys.argv[3]
    test = globals().get("test_" + name)
    if test is None:
        print("no such test:", name)
        return 2
    return it.run_test(test, name)


if __name__ == "__main__":
    sys.exit(main())
