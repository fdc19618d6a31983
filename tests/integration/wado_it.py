#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Integration tests of the WADO-RS reader (web/wado.h) through wado_get,
a small C driver that retrieves into a sink and drains it on a thread.

usage: wado_it.py WADO_GET TEST

Servers: a real Orthanc with its DICOMweb plugin (retrieved files must be
byte-identical to what Orthanc stores, /instances/{id}/file), and a
scripted server that follows the Azure DICOM service's rules (406 unless
transfer-syntax=* for a study or series, multipart/related without type=,
a GUID boundary, parts with a transfer-syntax and no Content-Length,
chunked) and can misbehave: drop the connection mid-multipart, 500,
garbage, stall. A 105 MB instance is streamed while the RSS of the
retrieving process is measured. 77 means skipped.
"""
import hashlib
import http.server
import json
import os
import re
import shutil
import socket
import sys
import threading
import time
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import it  # noqa: E402
from it import Failure, check, run  # noqa: E402

import pydicom  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

WADO_GET = None
ACCEPT_ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read(path):
    with open(path, "rb") as f:
        return f.read()


def retag(src, dst, study, series):
    """Copies the Part 10 file SRC to DST with new Study/Series/SOP
    Instance UIDs, keeping its transfer syntax and pixel encoding."""
    ds = pydicom.dcmread(src)
    sop = generate_uid()
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.SOPInstanceUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.PatientID = "WADO0001"
    ds.save_as(dst, write_like_original=True)
    return sop


def study_files(work):
    """One study of two series with varied transfer syntaxes:
    [(series, sop, path, ts)]."""
    study = generate_uid()
    series = [generate_uid(), generate_uid()]
    sources = [
        (0, os.path.join(it.TEST_FILES, "CT_small.dcm")),             # expl.
        (0, os.path.join(it.TEST_FILES, "MR_small_implicit.dcm")),    # impl.
        (0, os.path.join(it.TEST_FILES, "SC_rgb_jpeg_dcmtk.dcm")),    # JPEG
        (1, os.path.join(it.TEST_FILES, "MR_small_RLE.dcm")),         # RLE
        (1, os.path.join(it.TEST_FILES, "MR_small_jpeg_ls_lossless.dcm")),
        (1, os.path.join(it.TEST_FILES, "JPEG2000.dcm")),             # J2K
    ]
    out = os.path.join(work, "src")
    os.makedirs(out, exist_ok=True)
    files = []
    for i, (s, src) in enumerate(sources):
        dst = os.path.join(out, "%d.dcm" % i)
        sop = retag(src, dst, study, series[s])
        ts = str(pydicom.dcmread(dst, stop_before_pixels=True)
                 .file_meta.TransferSyntaxUID)
        files.append((series[s], sop, dst, ts))
    return study, files


class Result:
    """What wado_get printed."""

    def __init__(self, proc, out):
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.files = []
        self.fields = {}
        self.rss_kb = None
        for line in proc.stdout.splitlines():
            if line.startswith("file "):
                self.files.append(dict(kv.split("=", 1)
                                       for kv in line[5:].split(" ")))
            elif line.startswith("result "):
                # error="..." comes last and may hold quotes itself.
                head, _, error = line[7:].partition(' error="')
                for m in re.finditer(r'(\w+)=("([^"]*)"|\S+)', head):
                    self.fields[m.group(1)] = (m.group(3) if m.group(3)
                                               is not None else m.group(2))
                self.fields["error"] = error[:-1]
            elif line.startswith("content_type="):
                self.fields["content_type"] = line[13:]
            elif line.startswith("rss_peak_kb="):
                self.rss_kb = int(line.split("=")[1])
        self.got = os.path.join(out, "got")
        self.tmp = os.path.join(out, "tmp")

    def got_path(self, index):
        return os.path.join(self.got, "%d.dcm" % index)

    def __str__(self):
        return self.stdout + self.stderr


def wado_get(work, base, uids, name, *options, timeout=300):
    out = os.path.join(work, name)
    proc = run([WADO_GET, base, out] + list(uids) + list(options),
               timeout=timeout)
    r = Result(proc, out)
    if "failure" not in r.fields:
        raise Failure("wado_get printed no result: %s" % r)
    return r


def leftovers(r):
    return sorted(os.listdir(r.tmp))


# --------------------------------------------------------------------------
# Orthanc


def orthanc_upload(orthanc, path):
    req = urllib.request.Request(
        "http://127.0.0.1:%d/instances" % orthanc.port, data=read(path),
        method="POST", headers={"Content-Type": "application/dicom"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def check_same_as_orthanc(orthanc, r, expected_sops, what):
    check(r.rc == 0 and r.fields["failure"] == "ok",
          "%s: retrieved (%s)" % (what, r.fields.get("error")))
    check(int(r.fields["parts"]) == len(expected_sops),
          "%s: %d parts" % (what, len(expected_sops)))
    seen = set()
    for f in r.files:
        path = r.got_path(int(f["index"]))
        sop = it.sop_uid(path)
        seen.add(sop)
        stored = orthanc.instance_file(sop)
        check(stored is not None and read(path) == stored,
              "%s: part %s (%s) byte-identical to Orthanc's file" %
              (what, f["index"], f["ts"]))
        ts = str(pydicom.dcmread(path, stop_before_pixels=True)
                 .file_meta.TransferSyntaxUID)
        check(f["ts"] in ("-", ts), "%s: part %s transfer-syntax %s "
              "matches (0002,0010)" % (what, f["index"], f["ts"]))
    check(seen == set(expected_sops), "%s: exactly the instances asked for"
          % what)
    check(leftovers(r) == [], "%s: nothing left in the temporary area" % what)


def test_wado_orthanc(work):
    orthanc = it.Orthanc(work)
    try:
        study, files = study_files(work)
        for _, _, path, _ in files:
            orthanc_upload(orthanc, path)
        base = "http://127.0.0.1:%d/dicom-web" % orthanc.port
        all_sops = [sop for _, sop, _, _ in files]

        r = wado_get(work, base, [study], "study")
        check(r.fields["status"] == "200", "study: HTTP 200")
        print("  Orthanc answers Content-Type:", r.fields["content_type"])
        check_same_as_orthanc(orthanc, r, all_sops, "study")

        series = files[3][0]
        r = wado_get(work, base, [study, series], "series")
        check_same_as_orthanc(
            orthanc, r, [s for se, s, _, _ in files if se == series],
            "series")

        se, sop, _, _ = files[2]
        r = wado_get(work, base, [study, se, sop], "instance")
        check_same_as_orthanc(orthanc, r, [sop], "instance")

        # A small budget and a slow consumer: the fetch pauses, nothing
        # changes in what arrives.
        r = wado_get(work, base, [study], "budget", "--budget", "20000",
                     "--drain-ms", "100")
        check_same_as_orthanc(orthanc, r, all_sops, "study under a budget")
        check(int(r.fields["pauses"]) > 0,
              "the fetch paused %s times" % r.fields["pauses"])

        r = wado_get(work, base, [generate_uid()], "unknown")
        check(r.rc == 1 and r.fields["failure"] == "not-found" and
              r.fields["status"] == "404", "unknown study: 404 not-found (%s)"
              % r.fields["error"])
    finally:
        orthanc.close()


# --------------------------------------------------------------------------
# The scripted, Azure-rules server


class Scripted:
    """WADO-RS as the Azure DICOM service answers it (protocol-facts-2.md
    2.4), for INSTANCES [(study, series, sop, path, ts)], on loopback.
    .mode: "azure" (default), "drop" (close mid-multipart, in part 2),
    "500", "html", "junk", "stall" (stop sending in part 1)."""

    def __init__(self, instances):
        self.instances = instances
        self.mode = "azure"
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.handle(self)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                      Handler)
        self.server.daemon_threads = True
        # A client that hangs up mid-answer is part of the script.
        self.server.handle_error = lambda request, address: None
        self.port = self.server.server_address[1]
        self.base = "http://127.0.0.1:%d/v2" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    @staticmethod
    def answer(h, status, ctype, body, extra=()):
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)

    @staticmethod
    def chunk(h, data):
        if data:
            h.wfile.write(b"%x\r\n" % len(data) + data + b"\r\n")

    def handle(self, h):
        self.requests.append((h.path, dict(h.headers)))
        m = re.fullmatch(r"/v2/studies/([0-9.]+)(?:/series/([0-9.]+)"
                         r"(?:/instances/([0-9.]+))?)?", h.path)
        if m is None:
            return self.answer(h, 400, "application/json", b'{"message":'
                               b'"bad path"}')
        study, series, sop = m.groups()
        chosen = [i for i in self.instances if i[0] == study and
                  (series is None or i[1] == series) and
                  (sop is None or i[2] == sop)]
        if self.mode == "500":
            return self.answer(h, 500, "text/plain", b"internal error",
                               [("Retry-After", "30")])
        if not chosen:
            return self.answer(h, 404, "application/json",
                               b'{"message":"The specified study cannot be '
                               b'found."}')
        if self.mode == "html":
            return self.answer(h, 200, "text/html", b"<html><body>Sign in"
                               b"</body></html>")
        boundary = str(uuid.uuid4())
        if self.mode == "junk":
            return self.answer(h, 200, "multipart/related; boundary=" +
                               boundary, os.urandom(5000))
        # Accept: Azure's AcceptHeaderHandler, as far as retrieve goes.
        accept = h.headers.get("Accept", "")
        ts = re.search(r"transfer-syntax=([^;,\s]+)", accept)
        ts = ts.group(1).strip('"') if ts else "1.2.840.10008.1.2.1"
        if ts != "*":
            if sop is None:
                return self.answer(h, 406, "application/json",
                                   b'{"message":"The request headers are not '
                                   b'acceptable: multi instance transcoding '
                                   b'is not supported"}')
            if ts != chosen[0][4]:
                return self.answer(h, 406, "application/json",
                                   b'{"message":"transcoding not supported"}')
        h.send_response(200)
        h.send_header("Content-Type", "multipart/related; boundary=" +
                      boundary)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for n, (_, _, _, path, its) in enumerate(chosen):
            self.chunk(h, ("--%s\r\nContent-Type: application/dicom; "
                           "transfer-syntax=%s\r\n\r\n" %
                           (boundary, its)).encode())
            size = os.path.getsize(path)
            sent = 0
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    if self.mode == "drop" and n == 1 and \
                            sent + len(block) > size // 2:
                        self.chunk(h, block[:size // 2 - sent])
                        h.wfile.flush()
                        h.connection.shutdown(socket.SHUT_RDWR)
                        h.close_connection = True
                        return
                    if self.mode == "stall":
                        # A little of part 1, then silence.
                        self.chunk(h, block[:1000])
                        h.wfile.flush()
                        time.sleep(20)
                        h.close_connection = True
                        return
                    self.chunk(h, block)
                    sent += len(block)
            self.chunk(h, b"\r\n")
        self.chunk(h, ("--%s--" % boundary).encode())
        h.wfile.write(b"0\r\n\r\n")


def scripted_instances(work):
    study, files = study_files(work)
    return study, [(study, se, sop, path, ts) for se, sop, path, ts in files]


def check_same_as_sources(r, chosen, what):
    check(r.rc == 0 and r.fields["failure"] == "ok",
          "%s: retrieved (%s)" % (what, r.fields.get("error")))
    check(int(r.fields["parts"]) == len(chosen), "%s: %d parts" %
          (what, len(chosen)))
    for n, (_, _, sop, path, ts) in enumerate(chosen):
        got = r.got_path(n)
        check(os.path.exists(got) and read(got) == read(path),
              "%s: part %d byte-identical to the stored file" % (what, n))
        check(r.files[n]["ts"] == ts, "%s: part %d transfer-syntax %s" %
              (what, n, ts))
    check(leftovers(r) == [], "%s: nothing left in the temporary area" % what)


def test_wado_azure(work):
    study, inst = scripted_instances(work)
    server = Scripted(inst)
    try:
        r = wado_get(work, server.base, [study], "study", "--bearer", "tok-1")
        path, headers = server.requests[-1]
        check(headers.get("Accept") == ACCEPT_ANY,
              "Accept is exactly %s" % ACCEPT_ANY)
        check(headers.get("Authorization") == "Bearer tok-1",
              "the bearer token is sent")
        check(re.fullmatch(r"multipart/related; boundary=[0-9a-f-]{36}",
                           r.fields["content_type"]) is not None,
              "answer without type=, GUID boundary: %s" %
              r.fields["content_type"])
        check_same_as_sources(r, inst, "study (parts without Content-Length)")

        series = inst[3][1]
        chosen = [i for i in inst if i[1] == series]
        r = wado_get(work, server.base, [study, series], "series")
        check_same_as_sources(r, chosen, "series")

        r = wado_get(work, server.base, list(inst[0][:3]), "instance")
        check_same_as_sources(r, inst[:1], "instance")

        # Asking for a transfer syntax: a study is refused, with advice.
        r = wado_get(work, server.base, [study], "ts-study", "--ts",
                     "1.2.840.10008.1.2.1")
        check(r.rc == 1 and r.fields["failure"] == "not-acceptable" and
              r.fields["status"] == "406", "study with a transfer syntax: 406")
        check("transfer-syntax=* instead" in r.fields["error"] and
              "multi instance transcoding" in r.fields["error"],
              "the error advises transfer-syntax=* and quotes the server: %s"
              % r.fields["error"])
        check(r.files == [] and os.listdir(r.got) == [] and
              leftovers(r) == [], "406: no file anywhere")
        # ...a single instance already in that syntax is served.
        r = wado_get(work, server.base, list(inst[0][:3]), "ts-instance",
                     "--ts", inst[0][4])
        check_same_as_sources(r, inst[:1], "instance in its own syntax")
    finally:
        server.close()


def test_wado_faults(work):
    study, inst = scripted_instances(work)
    server = Scripted(inst)
    try:
        server.mode = "drop"
        r = wado_get(work, server.base, [study], "drop")
        check(r.rc == 1 and r.fields["failure"] == "truncated",
              "dropped mid-multipart: truncated (%s)" % r.fields["error"])
        check("inside part 2" in r.fields["error"],
              "the error names part 2: %s" % r.fields["error"])
        check(int(r.fields["parts"]) == 1 and
              read(r.got_path(0)) == read(inst[0][3]),
              "the whole first part is kept, intact")
        check(sorted(os.listdir(r.got)) == ["0.dcm"] and leftovers(r) == [],
              "the cut part's file is removed")

        server.mode = "500"
        r = wado_get(work, server.base, [study], "e500")
        check(r.rc == 1 and r.fields["failure"] == "server-error" and
              r.fields["status"] == "500" and r.fields["retry_after"] == "30",
              "500: server-error, Retry-After kept (%s)" % r.fields["error"])

        server.mode = "html"
        r = wado_get(work, server.base, [study], "html")
        check(r.rc == 1 and r.fields["failure"] == "bad-body" and
              "text/html" in r.fields["error"],
              "200 text/html: bad-body (%s)" % r.fields["error"])

        server.mode = "junk"
        r = wado_get(work, server.base, [study], "junk")
        check(r.rc == 1 and r.fields["failure"] == "bad-body" and
              "no boundary" in r.fields["error"],
              "multipart of random bytes: bad-body (%s)" % r.fields["error"])
        check(leftovers(r) == [] and os.listdir(r.got) == [],
              "garbage: no file anywhere")

        server.mode = "azure"
        r = wado_get(work, server.base, [generate_uid()], "e404")
        check(r.rc == 1 and r.fields["failure"] == "not-found" and
              "cannot be found" in r.fields["error"],
              "unknown study: not-found (%s)" % r.fields["error"])

        server.mode = "stall"
        start = time.time()
        r = wado_get(work, server.base, [study], "stall", "--stall", "2")
        took = time.time() - start
        check(r.rc == 1 and r.fields["failure"] == "transport" and
              "stalled" in r.fields["error"] and
              "inside part 1" in r.fields["error"],
              "a stall mid-part: transport, named (%s)" % r.fields["error"])
        check(took < 15, "the stall timeout, not the server, ended it "
              "(%.1f s)" % took)
        check(leftovers(r) == [], "stall: the cut part's file is removed")
    finally:
        server.close()
    # Nobody listening.
    port = it.free_port()
    r = wado_get(work, "http://127.0.0.1:%d/v2" % port, [study], "refused")
    check(r.rc == 1 and r.fields["failure"] == "transport" and
          r.fields["status"] == "0",
          "connection refused: transport (%s)" % r.fields["error"])


def test_wado_big(work):
    src = os.path.join(work, "src")
    os.makedirs(src)
    big = os.path.join(src, "big.dcm")
    small = os.path.join(src, "small.dcm")
    sop_big = it.make_big_instance(big, 105)
    sop_small = it.make_instance(small)
    ds_big = pydicom.dcmread(big, stop_before_pixels=True)
    ds_small = pydicom.dcmread(small, stop_before_pixels=True)
    ts = "1.2.840.10008.1.2.1"
    inst = [(str(ds_big.StudyInstanceUID), str(ds_big.SeriesInstanceUID),
             sop_big, big, ts),
            (str(ds_small.StudyInstanceUID),
             str(ds_small.SeriesInstanceUID), sop_small, small, ts)]
    size = os.path.getsize(big)
    check(size > 105 * 1000 * 1000, "a %.1f MB instance" % (size / 1e6))
    server = Scripted(inst)
    try:
        r_small = wado_get(work, server.base, [inst[1][0]], "small")
        check(r_small.rc == 0, "small instance retrieved")
        start = time.time()
        # A budget smaller than the instance: it still comes whole.
        r = wado_get(work, server.base, [inst[0][0]], "big", "--budget",
                     str(32 << 20))
        took = time.time() - start
        check(r.rc == 0 and int(r.fields["parts"]) == 1,
              "105 MB instance retrieved (%s)" % r.fields.get("error"))
        check(sha256(r.got_path(0)) == sha256(big),
              "105 MB instance byte-identical")
        growth = r.rss_kb - r_small.rss_kb
        print("  RSS peak: %d KiB for a %d KiB instance, %d KiB for 105 MB "
              "(+%d KiB); %.1f MB/s" %
              (r_small.rss_kb, os.path.getsize(small) // 1024, r.rss_kb,
               growth, size / 1e6 / took))
        check(growth < 8 * 1024, "RSS flat: +%d KiB for 105 MB" % growth)
        check(leftovers(r) == [], "nothing left in the temporary area")
    finally:
        server.close()


def main():
    global WADO_GET
    WADO_GET, name = sys.argv[1], sys.argv[2]
    test = globals().get("test_" + name)
    if test is None:
        print("no such test:", name)
        return 2
    return it.run_test(test, name)


if __name__ == "__main__":
    sys.exit(main())
