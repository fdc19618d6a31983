#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Integration tests of issue 9, items 1 and 10 (pauses): copies of one SOP
Instance UID reach the server in arrival order, identical copies are sent
once, conflicting copies follow upload.on_conflict, and a Retry-After pause
is capped and can be ended by an operator. The real stowbridge binary and
DCMTK's storescu, against a scripted STOW-RS server that records every
part it is sent (and against Orthanc for what a real server keeps).

usage: order_it.py BINARY CRAFT_SCU TEST
"""
import hashlib
import http.server
import io
import json
import os
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import it  # noqa: E402
from it import Failure, check, run, wait_for  # noqa: E402

import pydicom  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402


def part_dataset(data):
    """(sha256 hex of the data set bytes, Source AE) of a Part 10 file."""
    if data[128:132] != b"DICM":
        raise Failure("a part is not a Part 10 file")
    group_len = int.from_bytes(data[140:144], "little")
    meta = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return (hashlib.sha256(data[132 + 12 + group_len:]).hexdigest(),
            str(meta.file_meta.get("SourceApplicationEntityTitle", ""))
            .strip())


def file_dataset_sha(path):
    with open(path, "rb") as f:
        return part_dataset(f.read())[0]


class StowServer:
    """STOW-RS on loopback that records each part it gets, in order, as
    (SOP Instance UID, data set SHA-256, Source AE, HTTP status answered).
    Modes: ok (Azure's rule: an instance already there is not replaced and
    is answered 45070), 503 (outage), 429huge (Retry-After 10^12 s),
    reject (every instance refused with A900). down() closes the port
    (connection refused), up() opens it again."""

    def __init__(self):
        self.mode = "ok"
        self.posts = []
        self.stored = {}
        self.lock = threading.Lock()
        self.port = None
        self.server = None
        self.up()

    def handler(self):
        srv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, status, body=None, headers=()):
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/dicom+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                boundary = re.search(r"boundary=([^;]+)",
                                     self.headers["Content-Type"]).group(1)
                parts = []
                for chunk in body.split(b"--" + boundary.encode())[1:]:
                    if chunk.startswith(b"--"):
                        break
                    data = chunk.partition(b"\r\n\r\n")[2][:-2]
                    ds = pydicom.dcmread(io.BytesIO(data),
                                         stop_before_pixels=True)
                    sha, ae = part_dataset(data)
                    parts.append((str(ds.SOPInstanceUID), sha, ae))
                with srv.lock:
                    mode = srv.mode
                    status, ref, failed = 200, [], []
                    for sop, sha, ae in parts:
                        item = {"00081155": {"vr": "UI", "Value": [sop]}}
                        if mode == "reject":
                            item["00081197"] = {"vr": "US", "Value": [43264]}
                            failed.append(item)
                        elif mode == "ok" and sop in srv.stored:
                            item["00081197"] = {"vr": "US", "Value": [45070]}
                            failed.append(item)
                        elif mode == "ok":
                            srv.stored[sop] = sha
                            ref.append(item)
                    if mode == "503":
                        status = 503
                    elif mode == "429huge":
                        status = 429
                    elif failed:
                        status = 202 if ref else 409
                    for sop, sha, ae in parts:
                        srv.posts.append((sop, sha, ae, status))
                if status in (429, 503):
                    self.answer(status, {}, [("Retry-After", "1000000000000")]
                                if status == 429 else [])
                    return
                answer = {"00081199": {"vr": "SQ", "Value": ref}}
                if failed:
                    answer["00081198"] = {"vr": "SQ", "Value": failed}
                self.answer(status, answer)

        return Handler

    def up(self):
        deadline = time.time() + 10
        while True:
            try:
                self.server = http.server.ThreadingHTTPServer(
                    ("127.0.0.1", self.port or 0), self.handler())
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever,
                         daemon=True).start()

    def down(self):
        self.server.shutdown()
        self.server.server_close()

    def posts_of(self, sop):
        with self.lock:
            return [p for p in self.posts if p[0] == sop]

    def url(self):
        return "http://127.0.0.1:%d/dicom-web" % self.port


def daemon(work, server, spool=None, **extra):
    cfg = {"upload": {"url": server.url(), "timeout_s": 5},
           "auth": {"type": "none"},
           "retry": {"min_s": 1, "max_s": 2}}
    for section, values in extra.items():
        cfg.setdefault(section, {}).update(values)
    if spool:
        cfg["spool_dir"] = spool
    return it.Daemon(work, **cfg)


def two_copies(work, tag, identical=False):
    """Files A and B with one SOP Instance UID: B with other pixels (or the
    same data set)."""
    a = os.path.join(work, tag + "-a.dcm")
    b = os.path.join(work, tag + "-b.dcm")
    sop = it.make_instance(a, size=16)
    ds = pydicom.dcmread(a)
    if not identical:
        ds.PixelData = os.urandom(16 * 16 * 2)
    ds.save_as(b, write_like_original=False)
    return sop, a, b


def store(d, path, calling):
    r = it.storescu(d.port, [path], calling=calling)
    check(it.acknowledged_files(r.stdout + r.stderr) == [path],
          "%s stored as %s" % (os.path.basename(path), calling))
    return received_id(d, path, calling)


def received_id(d, path, calling):
    """The spool ID of the last instance received from @calling."""
    sop = it.sop_uid(path)
    ids = re.findall(r"id=(\S+) event=received from=%s@\S+ sop=%s " %
                     (calling, re.escape(sop)), d.log_text())
    check(ids, "the daemon logged the receipt from %s" % calling)
    return ids[-1]


def outage_begin(server, kind):
    if kind == "refused":
        server.down()
    else:
        server.mode = "503"


def outage_end(server, kind):
    if kind == "refused":
        server.up()
    server.mode = "ok"


def log_event(d, event, entry):
    return [line for line in d.log_text().splitlines()
            if "id=%s event=%s " % (entry, event) in line]


def entry_path(d, state, entry):
    return os.path.join(d.spool, state, entry + ".dcm")


def queue(d, *args):
    return run([it.BINARY, "queue", *args, "--config", d.config])


def status_json(d):
    r = run([it.BINARY, "status", "--config", d.config, "--json"])
    check(r.returncode == 0, "status --json exits 0 (%s)" % r.stderr)
    return json.loads(r.stdout)


# --------------------------------------------------------------------------


def test_conflict_keep_first(work):
    """A then B (different) during an outage, three times (503, connection
    refused, 503): the server only ever gets A; B is in failed/ as a
    conflicting duplicate, logged once with both IDs, sizes and hashes."""
    server = StowServer()
    d = daemon(work, server).start()
    try:
        for n, kind in enumerate(("503", "refused", "503")):
            sop, a, b = two_copies(work, "k%d" % n)
            outage_begin(server, kind)
            id_a = store(d, a, "CT1")
            if kind == "503":
                wait_for(lambda: server.posts_of(sop), 30,
                         "an attempt during the outage")
            else:
                wait_for(lambda: "id=%s event=deferred" % id_a in
                         d.log_text(), 30, "an attempt during the outage")
            id_b = store(d, b, "CT2")
            check(id_a < id_b, "the IDs sort in arrival order")
            wait_for(lambda: os.path.exists(entry_path(d, "failed", id_b)),
                     30, "B to failed/")
            outage_end(server, kind)
            wait_for(lambda: it.spool_empty(d), 60, "A delivered")
            posts = server.posts_of(sop)
            shas = set(p[1] for p in posts)
            check(len(shas) == 1 and all(p[2] == "CT1" for p in posts),
                  "round %d (%s): the server only got A (%d posts)" %
                  (n + 1, kind, len(posts)))
            sha_a = posts[0][1]
            check(server.stored.get(sop) == sha_a and posts[-1][3] == 200,
                  "A is what the server keeps")
            sha_b = file_dataset_sha(entry_path(d, "failed", id_b))
            check(sha_a != sha_b, "the copies really differ")
            lines = log_event(d, "conflict", id_b)
            check(len(lines) == 1, "one event=conflict line for B")
            line = lines[0]
            size_b = os.path.getsize(entry_path(d, "failed", id_b))
            check("earlier=%s " % id_a in line and
                  "sha256=%s " % sha_b[:16] in line and
                  "earlier_sha256=%s " % sha_a[:16] in line and
                  re.search(r" bytes=%d " % size_b, line) and
                  re.search(r" earlier_bytes=\d+ ", line) and
                  "keep-first" in line,
                  "the conflict names both IDs, sizes and hashes: " + line)
            check("Test^Pat" not in d.log_text() and "IT0001" not in
                  d.log_text(), "no patient data in the log")
            meta = open(os.path.join(d.spool, "meta", id_b)).read()
            check("last_error=conflicting duplicate of %s" % id_a in meta,
                  "failed/ keeps the reason 'conflicting duplicate'")
        r = queue(d, "list", "failed")
        check(r.returncode == 0 and r.stdout.count("conflicting duplicate")
              == 3, "queue list failed shows the three conflicts")
        r = queue(d, "show", id_b)
        check("conflicting duplicate of %s" % id_a in r.stdout and
              "copy of:      %s" % id_a in r.stdout and
              "no longer in the spool" in r.stdout,
              "queue show names the earlier copy and where it is")
        # The earlier copy is gone (delivered): sent back, B is sent and
        # the server decides (here: already exists, 45070 = delivered).
        r = queue(d, "retry", id_b)
        check(r.returncode == 0, "queue retry of a conflicting copy")
        wait_for(lambda: it.spool_empty(d) and not os.path.exists(
            entry_path(d, "failed", id_b)), 30, "B resolved")
        check(server.posts_of(sop)[-1][2:] == ("CT2", 409),
              "retried after A was delivered, B is sent and answered 45070")
        check(server.stored[sop] == sha_a, "the server still has A")
        check(d.stop() == 0, "clean stop")
    finally:
        server.down()


def test_conflict_send(work):
    """upload.on_conflict send: A then B during an outage, three times: the
    server always gets A (and A is answered) before B is first sent."""
    server = StowServer()
    d = daemon(work, server, upload={"on_conflict": "send"}).start()
    try:
        for n, kind in enumerate(("refused", "503", "refused")):
            sop, a, b = two_copies(work, "s%d" % n)
            outage_begin(server, kind)
            id_a = store(d, a, "CT1")
            wait_for(lambda: "id=%s event=deferred" % id_a in d.log_text(),
                     30, "an attempt during the outage")
            id_b = store(d, b, "CT2")
            wait_for(lambda: log_event(d, "conflict", id_b), 30,
                     "event=conflict")
            check("(upload.on_conflict send)" in
                  log_event(d, "conflict", id_b)[0], "the action is logged")
            r = queue(d, "list")
            check("(copy of %s)" % id_a in r.stdout,
                  "queue list shows that B waits for A")
            outage_end(server, kind)
            wait_for(lambda: it.spool_empty(d), 60, "both resolved")
            posts = server.posts_of(sop)
            aes = [p[2] for p in posts]
            first_b = aes.index("CT2")
            check("CT1" not in aes[first_b:] and
                  posts[first_b - 1][3] == 200,
                  "round %d (%s): A (answered 200) before B: %s" %
                  (n + 1, kind, [(p[2], p[3]) for p in posts]))
            check(posts[-1][2:] == ("CT2", 409),
                  "B is sent after A; the server says it has the instance")
            check(not d.entries("failed"), "nothing failed")
            check(len(log_event(d, "conflict", id_b)) == 1,
                  "the conflict is logged once")
        check(d.stop() == 0, "clean stop")
    finally:
        server.down()


def test_duplicate(work):
    """The same data set twice (another calling AE, so another File Meta
    header): one event=duplicate line, sent once, the copy removed with
    it; and when the first copy fails, the second goes to failed/ naming
    it."""
    server = StowServer()
    d = daemon(work, server).start()
    try:
        sop, a, b = two_copies(work, "dup", identical=True)
        server.mode = "503"
        id_a = store(d, a, "CT1")
        wait_for(lambda: server.posts_of(sop), 30, "a first attempt")
        id_b = store(d, b, "CT2")
        wait_for(lambda: log_event(d, "duplicate", id_b), 30,
                 "event=duplicate")
        line = log_event(d, "duplicate", id_b)[0]
        check("of=%s " % id_a in line, "the duplicate names the first copy")
        time.sleep(3)   # several passes: logged once only
        check(len(log_event(d, "duplicate", id_b)) == 1,
              "event=duplicate once")
        r = queue(d, "show", id_b)
        check(re.search(r"copy of: +%s \(same SOP Instance UID, in "
                        r"(deferred|active)/\)" % id_a, r.stdout),
              "queue show: B is a copy of A, queued")
        server.mode = "ok"
        wait_for(lambda: it.spool_empty(d), 60, "delivery")
        # Each line follows its spool change.
        wait_for(lambda: log_event(d, "duplicate-removed", id_b), 30,
                 "the duplicate's removal logged")
        posts = server.posts_of(sop)
        check(all(p[2] == "CT1" for p in posts) and posts[-1][3] == 200,
              "only A was sent (%d posts)" % len(posts))
        check(sop in server.stored, "the instance was delivered")
        check(log_event(d, "duplicate-removed", id_b) and
              log_event(d, "delivered", id_a) and
              not log_event(d, "delivered", id_b),
              "A delivered, B removed as its duplicate")
        check(not os.path.exists(os.path.join(d.spool, "meta", id_b)),
              "B's meta/ is gone too")

        # The first copy is refused: the duplicate goes to failed/ too,
        # saying why.
        sop, a, b = two_copies(work, "dupfail", identical=True)
        server.mode = "503"
        id_a = store(d, a, "CT1")
        wait_for(lambda: server.posts_of(sop), 30, "a first attempt")
        id_b = store(d, b, "CT2")
        wait_for(lambda: log_event(d, "duplicate", id_b), 30,
                 "event=duplicate")
        server.mode = "reject"
        wait_for(lambda: len(d.entries("failed")) == 2, 60, "both failed")
        meta = open(os.path.join(d.spool, "meta", id_b)).read()
        check("identical copy of %s, which failed: HTTP 409, Failure Reason "
              "A900" % id_a in meta, "the duplicate's reason names A's")
        check(all(p[2] == "CT1" for p in server.posts_of(sop)),
              "B was never sent")
        # Both back (A first): A is sent first and delivered. B is either
        # held and removed with it, or, if the scheduler saw it only after
        # A was delivered, sent and answered "already exists".
        server.mode = "ok"
        before = len(server.posts_of(sop))
        r = queue(d, "retry", "--all-failed")
        check(r.returncode == 0, "retry --all-failed")
        wait_for(lambda: it.spool_empty(d) and not d.entries("failed"), 60,
                 "delivered after the retry")
        after = server.posts_of(sop)[before:]
        check(after and after[0][2:] == ("CT1", 200) and
              all(p[2:] == ("CT2", 409) for p in after[1:]),
              "after the retry A is sent first: %s" %
              [p[2:] for p in after])
        check(d.stop() == 0, "clean stop")
    finally:
        server.down()


def test_kill9(work):
    """kill -9 between the copies: after the restart the index is rebuilt
    from the spool and the order holds (keep-first: B failed; send: A
    before B)."""
    server = StowServer()
    spool = os.path.join(work, "spool")
    try:
        for n, mode in enumerate(("keep-first", "send")):
            d = daemon(work, server, spool=spool,
                       upload={"on_conflict": mode}).start()
            sop, a, b = two_copies(work, "kill%d" % n)
            server.mode = "503"
            id_a = store(d, a, "CT1")
            wait_for(lambda: server.posts_of(sop), 30, "A attempted")
            d.proc.kill()
            d.proc.wait()
            d.log.close()
            d = daemon(work, server, spool=spool,
                       upload={"on_conflict": mode}).start()
            id_b = store(d, b, "CT2")
            wait_for(lambda: log_event(d, "conflict", id_b), 30,
                     "event=conflict after the restart")
            server.mode = "ok"
            wait_for(lambda: it.spool_empty(d), 60, "resolved")
            aes = [(p[2], p[3]) for p in server.posts_of(sop)]
            if mode == "keep-first":
                check(all(ae == "CT1" for ae, _ in aes) and
                      os.path.exists(entry_path(d, "failed", id_b)),
                      "keep-first after kill -9: only A sent, B failed: %s"
                      % aes)
            else:
                first_b = [ae for ae, _ in aes].index("CT2")
                check(aes[first_b - 1] == ("CT1", 200) and
                      all(ae == "CT2" for ae, _ in aes[first_b:]),
                      "send after kill -9: A delivered before B: %s" % aes)
            check(id_a < id_b, "A arrived first")
            check(d.stop() == 0, "clean stop")
    finally:
        server.down()


def test_pause(work):
    """429 with Retry-After 10^12: every upload pauses for at most
    retry.max_pause_s (600 by default), logged with what was asked; status
    shows it; 'queue resume' and 'queue retry' end it within seconds."""
    server = StowServer()
    d = daemon(work, server).start()
    try:
        server.mode = "429huge"
        p = os.path.join(work, "p0.dcm")
        sop = it.make_instance(p, size=16)
        entry = store(d, p, "CT1")
        wait_for(lambda: "event=paused" in d.log_text(), 30, "the pause")
        line = [x for x in d.log_text().splitlines()
                if "event=paused" in x][0]
        m = re.search(r"seconds=(\d+)", line)
        check(m and int(m.group(1)) <= 600,
              "the pause is capped at retry.max_pause_s: " + line)
        check('retry_after="at least 86400 s"' in line and
              "max_pause_s=600" in line, "what was asked and the cap logged")
        wait_for(lambda: os.path.exists(entry_path(d, "deferred", entry)),
                 30, "deferred")
        not_before = os.path.getmtime(entry_path(d, "deferred", entry))
        check(not_before <= time.time() + 601,
              "the entry waits at most the cap (%.0f s)" %
              (not_before - time.time()))
        st = status_json(d)
        check(st["paused"] is not None and
              500 < st["paused"]["remaining_s"] <= 600 and
              "Retry-After" in st["paused"]["reason"],
              "status --json shows the pause: %s" % st["paused"])
        r = run([it.BINARY, "status", "--config", d.config])
        check("uploads paused until" in r.stdout, "the status table too")

        # Paused: a new instance waits, the server is back but idle.
        server.mode = "ok"
        q = os.path.join(work, "p1.dcm")
        sop2 = it.make_instance(q, size=16)
        store(d, q, "CT1")
        time.sleep(3)
        check(not server.posts_of(sop2) and len(server.posts_of(sop)) == 1,
              "nothing is sent while paused")
        start = time.time()
        r = queue(d, "resume")
        check(r.returncode == 0 and "pause lifted" in r.stdout and
              "1 deferred entries are due now" in r.stdout,
              "queue resume: " + r.stdout)
        wait_for(lambda: sop in server.stored and sop2 in server.stored, 20,
                 "uploads after queue resume")
        took = time.time() - start
        print("measured: delivered %.1f s after queue resume" % took)
        check(took < 10, "uploads resume within seconds (%.1f s)" % took)
        check("event=resumed" in d.log_text(), "the end is logged")
        check(status_json(d)["paused"] is None, "status: no pause")
        r = queue(d, "resume")
        check(r.returncode == 0 and "no pause in effect" in r.stdout,
              "queue resume without a pause")

        # queue retry ID lifts a pause too.
        server.mode = "429huge"
        p = os.path.join(work, "p2.dcm")
        sop = it.make_instance(p, size=16)
        entry = store(d, p, "CT1")
        wait_for(lambda: os.path.exists(entry_path(d, "deferred", entry)),
                 30, "deferred again")
        check(status_json(d)["paused"] is not None, "paused again")
        server.mode = "ok"
        start = time.time()
        r = queue(d, "retry", entry)
        check(r.returncode == 0 and "pause lifted" in r.stdout,
              "queue retry lifts the pause: " + r.stdout)
        wait_for(lambda: sop in server.stored, 20, "upload after retry")
        print("measured: delivered %.1f s after queue retry" %
              (time.time() - start))
        check(d.stop() == 0, "clean stop")
    finally:
        server.down()


def test_pause_restart(work):
    """A pause survives a restart (it is in the spool), cut to the limits
    of the new configuration."""
    server = StowServer()
    spool = os.path.join(work, "spool")
    try:
        d = daemon(work, server, spool=spool,
                   retry={"max_pause_s": 3600}).start()
        server.mode = "429huge"
        p = os.path.join(work, "r0.dcm")
        sop = it.make_instance(p, size=16)
        store(d, p, "CT1")
        wait_for(lambda: "event=paused" in d.log_text(), 30, "the pause")
        check(status_json(d)["paused"]["remaining_s"] > 3000,
              "paused for up to an hour")
        check(d.stop() == 0, "clean stop")
        server.mode = "ok"
        d = daemon(work, server, spool=spool,
                   retry={"max_pause_s": 30}).start()
        wait_for(lambda: "recorded before this start" in d.log_text(), 30,
                 "the old pause is obeyed")
        check(status_json(d)["paused"]["remaining_s"] <= 30,
              "cut to today's retry.max_pause_s")
        waiting = d.entries("deferred")
        check(len(waiting) == 1 and
              os.path.getmtime(waiting[0]) <= time.time() + 31,
              "the deferred entry's wait is cut to it too")
        time.sleep(2)
        check(sop not in server.stored, "still paused after the restart")
        r = queue(d, "resume")
        check(r.returncode == 0 and "pause lifted" in r.stdout, "resume")
        wait_for(lambda: sop in server.stored, 30, "delivered")
        check(d.stop() == 0, "clean stop")
    finally:
        server.down()


def test_fairness(work):
    """A large study and then a small one waiting at once, one batch going
    out at a time (one worker, two instances a batch): the small study is
    not held back until the large one is done (the planner's round-robin
    between studies, issue 10 item 5), and every instance is delivered
    exactly once."""
    server = StowServer()
    d = daemon(work, server,
               upload={"workers": 1, "batch_max_instances": 2}).start()
    try:
        # Paused (Retry-After), so both studies are waiting together.
        server.mode = "429huge"
        p = os.path.join(work, "f0.dcm")
        first = it.make_instance(p, size=16)
        entry = store(d, p, "CT1")
        wait_for(lambda: os.path.exists(entry_path(d, "deferred", entry)),
                 30, "the first instance deferred by the pause")
        server.mode = "ok"
        big_study = generate_uid()
        big, big_paths = [], []
        for i in range(12):
            path = os.path.join(work, "big%02d.dcm" % i)
            big.append(it.make_instance(path, study=big_study, size=16))
            big_paths.append(path)
        r = it.storescu(d.port, big_paths, calling="CT1")
        check(len(it.acknowledged_files(r.stdout + r.stderr)) == 12,
              "the large study stored")
        small_path = os.path.join(work, "small.dcm")
        small = it.make_instance(small_path, size=16)
        store(d, small_path, "CT2")
        time.sleep(1)
        check(not server.posts_of(small) and not server.posts_of(big[0]),
              "nothing is sent while paused")
        r = queue(d, "resume")
        check(r.returncode == 0 and "pause lifted" in r.stdout,
              "queue resume: " + r.stdout)
        wait_for(lambda: all(s in server.stored
                             for s in big + [small, first]), 60,
                 "every instance delivered")
        with server.lock:
            sent = [post[0] for post in server.posts if post[3] == 200]
        before = sent[:sent.index(small)]
        big_before = len([s for s in before if s in big])
        print("measured: %d of the large study's 12 instances went before "
              "the small study's one" % big_before)
        check(big_before <= 4, "the small study waited for at most two "
              "batches of the large one (%d instances)" % big_before)
        for sop in big + [small, first]:
            check(len([post for post in server.posts_of(sop)
                       if post[3] == 200]) == 1, "delivered once: " + sop)
        check(d.stop() == 0, "clean stop")
    finally:
        server.down()


def start_orthanc(work, port, name):
    """Orthanc 1.10 with DICOMweb (default OverwriteInstances: false) on
    @port, its database in work/@name; returns the process."""
    base = os.path.join(work, name)
    os.makedirs(base, exist_ok=True)
    conf = os.path.join(base, "orthanc.json")
    with open(conf, "w") as f:
        json.dump({"Name": "order", "HttpPort": port,
                   "DicomPort": it.free_port(),
                   "StorageDirectory": os.path.join(base, "db"),
                   "IndexDirectory": os.path.join(base, "db"),
                   "RemoteAccessAllowed": False,
                   "AuthenticationEnabled": False,
                   "Plugins": [it.Orthanc.PLUGIN],
                   "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}, f)
    log = open(os.path.join(work, name + ".log"), "ab")
    proc = subprocess.Popen(["/usr/sbin/Orthanc", conf], stdout=log,
                            stderr=log)
    orthanc = it.Orthanc.__new__(it.Orthanc)
    orthanc.port = port
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            orthanc.get("/system")
            return proc, orthanc
        except OSError:
            time.sleep(0.2)
    raise Failure("Orthanc did not start")


def test_orthanc(work):
    """What Orthanc keeps: with keep-first it only ever gets A; with send
    it gets A then B, answers 200 for both and keeps A (its default
    OverwriteInstances false) - what the README says."""
    if not os.path.exists("/usr/sbin/Orthanc") or \
            not os.path.exists(it.Orthanc.PLUGIN):
        print("skip: Orthanc or its DICOMweb plugin is not installed")
        sys.exit(it.SKIP)
    port = it.free_port()
    proc = None
    try:
        for mode in ("keep-first", "send"):
            d = it.Daemon(work, spool_dir=os.path.join(work, "spool-" + mode),
                          upload={"url": "http://127.0.0.1:%d/dicom-web" %
                                  port, "timeout_s": 10,
                                  "on_conflict": mode},
                          retry={"min_s": 1, "max_s": 2}).start()
            sop, a, b = two_copies(work, mode)
            id_a = store(d, a, "CT1")   # Orthanc is down: both wait
            id_b = store(d, b, "CT2")
            wait_for(lambda: log_event(d, "conflict", id_b), 30, "conflict")
            proc, orthanc = start_orthanc(work, port, "orthanc-" + mode)
            wait_for(lambda: it.spool_empty(d), 60, "uploads to Orthanc")
            got = os.path.join(work, "got-%s.dcm" % mode)
            with open(got, "wb") as f:
                f.write(orthanc.instance_file(sop))
            check(it.same_dataset(a, got) and not it.same_dataset(b, got),
                  "%s: Orthanc keeps A" % mode)
            if mode == "keep-first":
                check(os.path.exists(entry_path(d, "failed", id_b)),
                      "keep-first: B in failed/")
            else:
                wait_for(lambda: log_event(d, "delivered", id_b), 30,
                         "B's delivery logged")
                delivered = re.search(r"id=%s event=delivered .*status=200" %
                                      id_b, d.log_text())
                check(delivered and not d.entries("failed"),
                      "send: Orthanc answers 200 for B too (and keeps A)")
                check(d.log_text().index("id=%s event=delivered" % id_a) <
                      d.log_text().index("id=%s event=delivered" % id_b),
                      "send: A before B")
            check(id_a < id_b, "arrival order")
            check(d.stop() == 0, "clean stop")
            proc.terminate()
            proc.wait(30)
            proc = None
    finally:
        if proc is not None:
            proc.kill()


def main():
    it.BINARY, it.CRAFT_SCU, name = sys.argv[1], sys.argv[2], sys.argv[3]
    test = globals().get("test_" + name)
    if test is None:
        print("no such test:", name)
        return 2
    return it.run_test(test, name)


if __name__ == "__main__":
    sys.exit(main())
