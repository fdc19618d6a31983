#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Integration tests of what servers say and how long they may take: the
real stowbridge binary against scripted HTTP(S) servers on loopback.

usage: servertext_it.py BINARY CRAFT_SCU TEST

  stow_echo      a STOW-RS 400 whose body echoes the instance's patient
                 data, the token and the secret: none of it in the journal,
                 `queue list/show` or meta/, the codes still there
  token_echo     a token endpoint echoing the client secret: not in `token`,
                 `check` or the journal; invalid_client and AADSTS kept
  qido_echo      a QIDO-RS 400 echoing the query and the token: not in the
                 journal; HTTP 400 and C002 kept
  trickle        answers trickled at 2 bytes/s (STOW-RS, QIDO-RS, token)
                 with upload.timeout_s 5: the worker is free within the
                 documented bound
  token_lifetime expires_in -5, 0, "NaN", 1e30, wrapping values: a short
                 lifetime, said in the log, and no stampede of requests
  tls            real TLS servers (openssl-made certificates: self-signed,
                 unknown CA, expired, wrong name): the cause and the fix in
                 `check`, `token` and the journal
  redirect       301/308 from STOW-RS, QIDO-RS and the probe: Location
                 logged, "upload.url should change", never followed, long
                 backoff
  deep_json      a 100 000-deep JSON answer: "nested deeper than 64"
  find_pn        C-FIND answers keep a trailing empty PN group as the server
                 sent it (and as Orthanc's own C-FIND answers); a lone '*'
                 stays universal (matches empty values)
"""
import base64
import http.server
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse

import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import it  # noqa: E402
from it import (Daemon, Failure, MockWeb, acknowledged_files, check,  # noqa
                free_port, run, storescu, wait_for)
import find_it  # noqa: E402

# The patient of the echo tests: values distinctive enough that finding
# any of them (case-insensitively) in an output is a leak.
FAMILY, GIVEN = "Quixtable", "Zorbanelle"
PATIENT_ID = "PX-774411"
OTHER_ID = "ALT-55501"
BIRTH = "19650412"
ACCESSION = "ACX99321"
SECRET = "pa55+word"                 # it.upload_config's secret
LEAKS = [FAMILY, GIVEN, PATIENT_ID, OTHER_ID, BIRTH, "1965-04-12",
         "12.04.1965", "04/12/1965", ACCESSION, "pa55", "pa55%2Bword"]


def leaks(text, extra=()):
    """The leaked values found in TEXT (case-insensitive)."""
    low = text.lower()
    return [v for v in list(LEAKS) + list(extra) if v and v.lower() in low]


def make_patient_instance(path, study=None):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(path, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "%s^%s" % (FAMILY.upper(), GIVEN.upper())
    ds.PatientID = PATIENT_ID
    ds.OtherPatientIDs = OTHER_ID
    ds.PatientBirthDate = BIRTH
    ds.AccessionNumber = ACCESSION
    ds.Modality = "OT"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 8
    ds.Columns = 8
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = os.urandom(64)
    ds.save_as(path, write_like_original=False)
    return str(ds.SOPInstanceUID)


class Server:
    """A scripted HTTP/1.1 server (TLS with CERT/KEY) on loopback. HANDLE
    (method, path, headers, body) returns (status, [(name, value)], body
    bytes), or ("trickle", bytes/s, raw answer bytes) to send the raw answer
    that slowly after its head (up to the blank line), which goes at once.
    Every request is kept in .requests."""

    def __init__(self, handle, cert=None, key=None):
        self.handle = handle
        self.requests = []
        self.trickle_ends = []       # seconds a trickled answer lasted
        srv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def serve(self, method):
                n = int(self.headers.get("Content-Length", 0) or 0)
                body = self.rfile.read(n) if n else b""
                srv.requests.append((method, self.path, dict(self.headers),
                                     body))
                answer = srv.handle(method, self.path, self.headers, body)
                if answer[0] == "trickle":
                    _, rate, raw = answer
                    start = time.time()
                    head = raw.index(b"\r\n\r\n") + 4
                    try:
                        self.wfile.write(raw[:head])
                        self.wfile.flush()
                        for i in range(head, len(raw), rate):
                            self.wfile.write(raw[i:i + rate])
                            self.wfile.flush()
                            time.sleep(1)
                    except OSError:
                        pass
                    srv.trickle_ends.append(time.time() - start)
                    self.close_connection = True
                    return
                status, headers, data = answer
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self.serve("GET")

            def do_POST(self):
                self.serve("POST")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                      Handler)
        self.server.daemon_threads = True
        if cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            self.server.socket = ctx.wrap_socket(self.server.socket,
                                                 server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       daemon=True)
        self.thread.start()

    def url(self, path="/dicom-web", scheme="http"):
        return "%s://127.0.0.1:%d%s" % (scheme, self.port, path)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def token_answer(lifetime="3599"):
    claims = {"aud": "https://dicom.example.org", "oid": "sp-42",
              "appid": "client-7", "exp": int(time.time()) + 3600}
    return (200, [("Content-Type", "application/json")],
            ('{"access_token": "%s", "token_type": "Bearer", '
             '"expires_in": %s}' % (it.jwt(claims), lifetime)).encode())


def config(work, url, token_url=None, name="c.json", **sections):
    """A configuration file: client_credentials against TOKEN_URL (or
    auth none), retry 1..4 s, debug log; SECTIONS override."""
    cfg = {
        "dicom": {"ae_title": "STOWBRIDGE", "port": free_port(),
                  "timeout_s": 10},
        "spool": {"dir": os.path.join(work, "spool-" + name), "min_free_mb":
                  0, "journal_mb": 8},
        "upload": {"url": url, "timeout_s": 5},
        "retry": {"min_s": 1, "max_s": 4},
        "log": {"level": "debug"},
        "auth": {"type": "none"},
    }
    if token_url:
        with open(os.path.join(work, "secret"), "w") as f:
            f.write(SECRET + "\n")
        os.chmod(os.path.join(work, "secret"), 0o600)
        cfg["auth"] = {"type": "client_credentials", "token_url": token_url,
                       "client_id": "client-7",
                       "client_secret_file": os.path.join(work, "secret")}
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


def daemon(work, cfg):
    return Daemon(work, spool_dir=cfg["spool"]["dir"],
                  **{k: v for k, v in cfg.items()
                     if k not in ("spool", "dicom")})


def write_config(work, cfg, name="check.json"):
    path = os.path.join(work, name)
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


def send_one(work, d, tag="x", study=None):
    p = os.path.join(work, "%s-%s.dcm" % (tag, generate_uid()[-8:]))
    sop = make_patient_instance(p, study)
    r = storescu(d.port, [p])
    check(len(acknowledged_files(r.stdout + r.stderr)) == 1, "stored " + tag)
    return sop


def meta_texts(d):
    m = os.path.join(d.spool, "meta")
    out = ""
    for n in os.listdir(m):
        with open(os.path.join(m, n), errors="replace") as f:
            out += f.read()
    return out


# ---------------------------------------------------------------------------

def test_stow_echo(work):
    """The server's 400 echoes everything it was sent."""
    seen = {}

    def handle(method, path, headers, body):
        if path == "/token":
            return token_answer()
        token = (headers.get("Authorization") or "")[7:]
        seen["token"] = token
        # Everything within the first 200 bytes shown (a value is shown as
        # "[redacted]", 10 bytes), the secrets first.
        text = ("A900: " + token + " pa55+word pa55%2Bword\n<6>id=x "
                "event=delivered forged\nQUIXTABLE^ZORBANELLE (Zorbanelle "
                "Quixtable; QUIXTABLE%5EZORBANELLE) px-774411 ALT-55501 "
                "19650412 1965-04-12 12.04.1965 04/12/1965 ACX99321 end")
        return (400, [("Content-Type", "text/plain")], text.encode())

    srv = Server(handle)
    try:
        cfg = config(work, srv.url(), srv.url("/token"))
        d = daemon(work, cfg).start()
        send_one(work, d, "echo")
        # event=failed is logged after the move to failed/: wait for both.
        wait_for(lambda: d.entries("failed") and
                 "event=failed" in d.log_text(), 30,
                 "the 400 dead-letters it")
        token = seen["token"]
        check(len(token) > 20, "the server saw the bearer token")
        fid = os.path.basename(d.entries("failed")[0])[:-4]
        log = d.log_text()
        failed = [line for line in log.splitlines() if "event=failed" in line]
        check(failed and "HTTP 400 for this instance alone" in failed[0],
              "the failure is logged with its HTTP status")
        check("A900" in failed[0] and "[redacted]" in failed[0] and
              failed[0].endswith(' [redacted] end"'),
              "the server's code stays, its echoes are redacted, all of "
              "them shown: " + failed[0])
        check(not leaks(log, [token, token[:40]]),
              "no patient data, token or secret in the journal: %s"
              % leaks(log, [token]))
        check("forged" not in "".join(l for l in log.splitlines()
                                      if l.startswith("<6>id=x")),
              "the server's newline forges no journal line")
        meta = meta_texts(d)
        check("last_http_status=400" in meta and "A900" in meta,
              "meta/ keeps the status and the code")
        check(not leaks(meta, [token]), "nothing in meta/: %s"
              % leaks(meta, [token]))
        r = run([it.BINARY, "queue", "list", "--config", d.config])
        check(r.returncode == 0 and fid in r.stdout and "HTTP 400" in r.stdout,
              "queue list shows the entry and the status")
        check(not leaks(r.stdout + r.stderr, [token]),
              "nothing in queue list: %s" % leaks(r.stdout, [token]))
        r = run([it.BINARY, "queue", "show", fid, "--config", d.config])
        check(r.returncode == 0 and "last status:  HTTP 400" in r.stdout,
              "queue show gives the status")
        check(not leaks(r.stdout + r.stderr, [token]),
              "nothing in queue show: %s" % leaks(r.stdout, [token]))

        # A meta/ file from an older version, with the echo in it: queue
        # list/show check it against the entry's own values again.
        mpath = os.path.join(d.spool, "meta", fid)
        with open(mpath) as f:
            lines = f.read().splitlines()
        lines = [l if not l.startswith("last_error=") else
                 "last_error=HTTP 400: patient QUIXTABLE^ZORBANELLE "
                 "PX-774411 born 1965-04-12" for l in lines]
        with open(mpath, "w") as f:
            f.write("\n".join(lines) + "\n")
        for cmd in (["list", "failed"], ["show", fid]):
            r = run([it.BINARY, "queue"] + cmd + ["--config", d.config])
            check(r.returncode == 0 and "HTTP 400: patient [redacted]" in
                  r.stdout and not leaks(r.stdout),
                  "queue %s redacts an old meta/ file too" % cmd[0])
        check(d.stop() == 0, "clean stop")
    finally:
        srv.close()


def test_token_echo(work):
    """A token endpoint whose error_description echoes the client secret,
    raw, URL-encoded and as the Basic credentials it received."""
    basic = base64.b64encode(b"client-7:pa55%2Bword").decode()

    def handle(method, path, headers, body):
        got = headers.get("Authorization") or body.decode()
        text = ("AADSTS7000215: Invalid client secret provided: " + SECRET +
                " / " + got + " / " + basic + "\r\nTrace ID: 42")
        return (401, [("Content-Type", "application/json")],
                json.dumps({"error": "invalid_client",
                            "error_description": text}).encode())

    srv = Server(handle)
    try:
        for auth in ("body", "basic"):
            cfg = config(work, srv.url(), srv.url("/token"),
                         name="t-%s.json" % auth)
            cfg["auth"]["client_auth"] = auth
            conf = write_config(work, cfg, "token-%s.json" % auth)
            for cmd in ("token", "check"):
                r = run([it.BINARY, cmd, "--config", conf])
                out = r.stdout + r.stderr
                check(r.returncode == 1 and "invalid_client" in out and
                      "AADSTS7000215" in out and "[redacted]" in out,
                      "%s (%s): the codes are shown" % (cmd, auth))
                check(not leaks(out, [basic]),
                      "%s (%s): the secret is not: %s"
                      % (cmd, auth, leaks(out, [basic])))
            check(any(basic in (h.get("Authorization") or "")
                      for _, _, h, _ in srv.requests) or auth == "body",
                  "the server did get the Basic credentials (%s)" % auth)
        d = daemon(work, cfg).start()
        send_one(work, d, "tok")
        wait_for(lambda: "no token" in d.log_text(), 30, "upload without "
                 "token")
        log = d.log_text()
        check("AADSTS7000215" in log and not leaks(log, [basic]),
              "the journal keeps the code, not the secret: %s"
              % leaks(log, [basic]))
        check(not leaks(meta_texts(d), [basic]), "nor meta/")
        check(d.stop() == 0, "clean stop")
    finally:
        srv.close()


def test_qido_echo(work):
    """A QIDO-RS 400 echoing the query, raw and decoded, and the token."""
    token = "static-tok-9f8e7d6c5b4a"

    def handle(method, path, headers, body):
        decoded = urllib.parse.unquote(path)
        text = "%s: invalid query (%s) %s" % (
            headers.get("Authorization"), decoded, path)
        return (400, [("Content-Type", "application/json")],
                json.dumps({"error": text}).encode())

    srv = Server(handle)
    try:
        cfg = config(work, srv.url(), auth={"type": "static",
                                            "token": token})
        d = daemon(work, cfg).start()
        keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "",
                "PatientName": "QUIXTABLE^ZORBANELLE",
                "PatientID": PATIENT_ID, "PatientBirthDate": BIRTH,
                "AccessionNumber": ACCESSION}
        answers, final, out = find_it.findscu(d.port, keys, work=work)
        check(final == "C002" and not answers, "C002 (%s)" % final)
        path = srv.requests[-1][1]
        check("QUIXTABLE" in urllib.parse.unquote(path),
              "the server was asked the patient's name")
        log = d.log_text()
        line = [l for l in log.splitlines() if "event=find-failed" in l]
        check(line and "HTTP 400" in line[0] and
              "Bearer [redacted]: invalid query (/dicom-web/studies?"
              "00080050=[redacted]&00100010=[redacted]&" in line[0],
              "the failure names the status and the server's words: %s"
              % line)
        check(not leaks(log, [token, "QUIXTABLE%5E"]),
              "no query value or token in the journal: %s"
              % leaks(log, [token]))
        check(d.stop() == 0, "clean stop")
    finally:
        srv.close()


def test_trickle(work):
    """2 bytes a second, upload.timeout_s 5: STOW-RS frees its worker
    within the low-speed limit (T + 6 s) and always within its deadline
    (2 T + body / 16 KiB/s); QIDO-RS and token requests within T."""
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\n"
              b"Content-Length: 4000\r\n\r\n" + b" " * 4000)

    def handle(method, path, headers, body):
        if path == "/token":
            if srv.slow_token:
                return ("trickle", 2, answer)
            return token_answer()
        return ("trickle", 2, answer)

    srv = Server(handle)
    srv.slow_token = False
    try:
        cfg = config(work, srv.url(), srv.url("/token"),
                     upload={"workers": 1})
        d = daemon(work, cfg).start()
        start = time.time()
        send_one(work, d, "slow")
        wait_for(lambda: "event=deferred" in d.log_text(), 40,
                 "the trickled STOW-RS is given up")
        held = time.time() - start
        check(held < 25, "the worker was held %.1f s (bound 5 + 6 s, "
              "deadline 2*5 s + body/16 KiB/s; < 25 s allowed)" % held)
        line = [l for l in d.log_text().splitlines() if "event=deferred" in l]
        check("timed out" in line[0] or "too slow" in line[0].lower(),
              "the reason says it timed out: %s" % line[0])
        print("measured: STOW-RS trickled at 2 B/s held the worker %.1f s"
              % held)
        # QIDO-RS: C001 within the bound.
        keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": ""}
        t0 = time.time()
        _, final, _ = find_it.findscu(d.port, keys, work=work)
        took = time.time() - t0
        check(final == "C001" and took < 20,
              "QIDO-RS trickled: C001 after %.1f s" % took)
        print("measured: QIDO-RS trickled at 2 B/s ended after %.1f s" % took)
        check(d.stop() == 0, "clean stop")
        # A token endpoint trickling: `token` says so within the bound.
        srv.slow_token = True
        conf = write_config(work, cfg)
        t0 = time.time()
        r = run([it.BINARY, "token", "--config", conf], timeout=60)
        took = time.time() - t0
        check(r.returncode == 1 and "unreachable" in r.stdout and took < 20,
              "token endpoint trickled: given up after %.1f s" % took)
        print("measured: token request trickled at 2 B/s ended after %.1f s"
              % took)
    finally:
        srv.close()


def test_token_lifetime(work):
    """Each nonsense expires_in: few token requests while uploading for
    3 s (10 uploads: a lifetime taken as 1 s would need 3 tokens), and
    the log says what was received."""
    forms = [("-5", "-5"), ("0", "0"), ('"NaN"', "'NaN'"),
             ("1e30", "1e+30"),
             ("18446744073709551616", "1.84467440737096e+19"),
             ('"99999999999999999999"', "'99999999999999999999'")]
    lifetime = {"value": "3599"}

    def handle(method, path, headers, body):
        if path == "/token":
            return token_answer(lifetime["value"])
        return (200, [("Content-Type", "application/dicom+json")], b"")

    srv = Server(handle)
    try:
        for value, shown in forms:
            lifetime["value"] = value
            before = len([r for r in srv.requests if r[1] == "/token"])
            cfg = config(work, srv.url(), srv.url("/token"),
                         name="l%s.json" % len(srv.requests))
            d = daemon(work, cfg).start()
            start = time.time()
            n = 0
            while time.time() - start < 3:
                send_one(work, d, "life%d" % n)
                n += 1
                time.sleep(0.3)
            wait_for(lambda: it.spool_empty(d), 30, "uploads")
            tokens = len([r for r in srv.requests if r[1] == "/token"]) - \
                before
            check(tokens <= 2, "expires_in %s: %d token requests for %d "
                  "uploads in 3 s" % (value, tokens, n))
            log = d.log_text()
            check("event=token-lifetime" in log and
                  ("expires_in %s," % shown) in log and "60 s" in log,
                  "expires_in %s: the log says what came and what is used"
                  % value)
            check("event=failed" not in log, "nothing failed")
            check(d.stop() == 0, "clean stop")
    finally:
        srv.close()


def make_certs(work):
    """A CA; server certificates for 127.0.0.1 by it (good, expired),
    one for another name, and a self-signed one; with openssl."""
    d = os.path.join(work, "pki")
    os.makedirs(os.path.join(d, "newcerts"))
    with open(os.path.join(d, "index.txt"), "w"):
        pass
    with open(os.path.join(d, "serial"), "w") as f:
        f.write("01\n")
    with open(os.path.join(d, "ca.cnf"), "w") as f:
        f.write("[ca]\ndefault_ca = t\n[t]\ndir = .\ndatabase = index.txt\n"
                "new_certs_dir = newcerts\nserial = serial\n"
                "default_md = sha256\npolicy = p\ncopy_extensions = copy\n"
                "unique_subject = no\n[p]\ncommonName = supplied\n")

    def sh(*args):
        r = subprocess.run(["openssl"] + list(args), cwd=d,
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise Failure("openssl %s: %s" % (args[0], r.stderr))

    sh("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
       "-out", "ca.pem", "-subj", "/CN=stowbridge test CA", "-days", "2",
       "-addext", "basicConstraints=critical,CA:TRUE",
       "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    sh("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out",
       "srv.csr", "-subj", "/CN=127.0.0.1",
       "-addext", "subjectAltName=IP:127.0.0.1")
    sh("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "wrong.key",
       "-out", "wrong.csr", "-subj", "/CN=wrong.example",
       "-addext", "subjectAltName=DNS:wrong.example")
    sh("ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile",
       "ca.key", "-in", "srv.csr", "-out", "good.pem", "-days", "2",
       "-notext")
    sh("ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile",
       "ca.key", "-in", "srv.csr", "-out", "expired.pem", "-startdate",
       "20200101000000Z", "-enddate", "20200102000000Z", "-notext")
    sh("ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile",
       "ca.key", "-in", "wrong.csr", "-out", "wrong.pem", "-days", "2",
       "-notext")
    sh("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
       "self.key", "-out", "self.pem", "-subj", "/CN=127.0.0.1", "-days",
       "2", "-addext", "subjectAltName=IP:127.0.0.1")
    return d


def test_tls(work):
    pki = make_certs(work)
    ca = os.path.join(pki, "ca.pem")

    def handle(method, path, headers, body):
        if path == "/token":
            return token_answer()
        return (200, [("Content-Type", "application/dicom+json")], b"[]")

    # name, cert, key, ca_file, words the cause must have, fix named
    cases = [
        ("self-signed", "self.pem", "self.key", None, "is self-signed",
         "upload.ca_file"),
        ("unknown CA", "good.pem", "srv.key", None, "unknown CA",
         "upload.ca_file"),
        ("expired", "expired.pem", "srv.key", ca, "has expired",
         "needs a renewed one"),
        ("wrong name", "wrong.pem", "wrong.key", ca,
         "not for the host name", "upload.url"),
    ]
    servers = []
    try:
        good = Server(handle, os.path.join(pki, "good.pem"),
                      os.path.join(pki, "srv.key"))
        servers.append(good)
        cfg = config(work, good.url(scheme="https"),
                     upload={"ca_file": ca})
        r = run([it.BINARY, "check", "--config", write_config(work, cfg)])
        check("dicomweb: ok" in r.stdout, "the CA's own certificate with "
              "upload.ca_file: ok\n" + r.stdout)
        for name, cert, key, ca_file, cause, fix in cases:
            srv = Server(handle, os.path.join(pki, cert),
                         os.path.join(pki, key))
            servers.append(srv)
            cfg = config(work, srv.url(scheme="https"),
                         upload={"ca_file": ca_file or ""})
            r = run([it.BINARY, "check", "--config",
                     write_config(work, cfg)])
            line = [l for l in r.stdout.splitlines()
                    if l.startswith("dicomweb:")]
            check(r.returncode == 1 and line and "FAILED" in line[0] and
                  cause in line[0] and fix in line[0],
                  "check, %s: cause and fix named: %s" % (name, line))
            # The token endpoint on the same server: `token` says it too.
            cfg = config(work, srv.url(scheme="https"),
                         srv.url("/token", scheme="https"),
                         upload={"ca_file": ca_file or ""})
            r = run([it.BINARY, "token", "--config",
                     write_config(work, cfg)])
            check(r.returncode == 1 and cause in r.stdout and fix in r.stdout,
                  "token, %s: cause and fix named: %s" % (name, r.stdout))
        # The journal, for an upload to the self-signed server.
        cfg = config(work, servers[1].url(scheme="https"))
        d = daemon(work, cfg).start()
        send_one(work, d, "tls")
        wait_for(lambda: "event=deferred" in d.log_text(), 30, "deferred")
        line = [l for l in d.log_text().splitlines()
                if "event=deferred" in l][0]
        check("is self-signed" in line and "upload.ca_file" in line,
              "the journal names the cause and the fix: " + line)
        check(d.stop() == 0, "clean stop")
    finally:
        for s in servers:
            s.close()


def test_redirect(work):
    moved = Server(lambda m, p, h, b: (200, [], b"[]"))

    def handle(method, path, headers, body):
        if path == "/token":
            return token_answer()
        target = moved.url("/new/dicom-web") + path[len("/dicom-web"):]
        if method == "POST":
            target += "?patient=QUIXTABLE"
        return (301 if method == "GET" else 308,
                [("Location", target)], b"")

    srv = Server(handle)
    try:
        cfg = config(work, srv.url(), srv.url("/token"),
                     retry={"min_s": 1, "max_s": 30})
        d = daemon(work, cfg).start()
        send_one(work, d, "moved")
        wait_for(lambda: "event=redirected" in d.log_text(), 30, "redirect")
        time.sleep(4)   # min_s 1: a usual retry would have come by now
        stows = [r for r in srv.requests if r[0] == "POST" and
                 r[1].startswith("/dicom-web/studies")]
        check(len(stows) == 1, "sent once, then not again soon (%d)"
              % len(stows))
        check(not moved.requests, "the redirect is not followed: the other "
              "server got nothing, so no token went there")
        log = d.log_text()
        line = [l for l in log.splitlines() if "event=redirected" in l][0]
        check("status=308" in line and "upload.url should change (to '%s'?)"
              % moved.url("/new/dicom-web") in line and
              moved.url("/new/dicom-web/studies/") in line,
              "logged with its Location and what to change: " + line)
        check(FAMILY.lower() not in log.lower(), "the Location's echo of "
              "the patient is redacted")
        nexts = [int(m) for m in re.findall(r"event=deferred .*next=(\d+)s",
                                           log)]
        check(nexts and min(nexts) >= 20, "deferred with the long backoff "
              "(retry.max_s): next=%s" % nexts)
        check(d.entries("deferred") and not d.entries("failed"),
              "kept in deferred/, never dead-lettered for it")
        # QIDO-RS: C002, and the same words.
        keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": ""}
        _, final, _ = find_it.findscu(d.port, keys, work=work)
        check(final == "C002", "C-FIND: C002 (%s)" % final)
        check("a redirect to '%s" % moved.url("/new/dicom-web/studies")
              in d.log_text() and "upload.url should change" in d.log_text(),
              "the C-FIND failure names the Location")
        check(not moved.requests, "still nothing went to the other server")
        check(d.stop() == 0, "clean stop")
        # check: the probe's redirect.
        r = run([it.BINARY, "check", "--config", write_config(work, cfg)])
        check(r.returncode == 1 and "HTTP 301: upload.url should change (to "
              "'%s'?)" % moved.url("/new/dicom-web") in r.stdout,
              "check names the redirect and the new URL:\n" + r.stdout)
    finally:
        srv.close()
        moved.close()


def test_deep_json(work):
    deep = b"[" * 100000 + b"]" * 100000

    def handle(method, path, headers, body):
        if path == "/token":
            return token_answer()
        return (200, [("Content-Type", "application/dicom+json")], deep)

    srv = Server(handle)
    try:
        cfg = config(work, srv.url(), srv.url("/token"))
        d = daemon(work, cfg).start()
        send_one(work, d, "deep")
        wait_for(lambda: "event=deferred" in d.log_text(), 30, "deferred")
        keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": ""}
        _, final, _ = find_it.findscu(d.port, keys, work=work)
        check(final == "C003", "C-FIND: C003 (%s)" % final)
        log = d.log_text()
        check(len(re.findall(r"nested deeper than 64 levels", log)) >= 2,
              "STOW-RS and QIDO-RS both say how deep")
        check("at byte 1000)" not in log, "not cJSON's byte 1000")
        check(d.stop() == 0, "clean stop")
    finally:
        srv.close()


WANG = "Wang^XiaoDong=\u738b^\u5c0f\u6771="


def raw_pn(ds):
    """PatientName as the bytes on the wire (pydicom's str() drops a
    trailing empty group), without the padding."""
    v = ds.get_item(0x00100010).value
    if not isinstance(v, bytes):
        v = v.original_string or str(v).encode()
    return v.rstrip(b" \0").decode("utf-8", "replace")


def test_find_pn(work):
    """PN groups as the server sent them; a lone '*' universal."""
    studies = [
        {"0020000D": {"vr": "UI", "Value": ["1.2.826.0.1.3680043.11.1"]},
         "00100010": {"vr": "PN", "Value": [{
             "Alphabetic": "Wang^XiaoDong",
             "Ideographic": "\u738b^\u5c0f\u6771", "Phonetic": ""}]},
         "00081030": {"vr": "LO", "Value": ["CT HEAD"]}},
        {"0020000D": {"vr": "UI", "Value": ["1.2.826.0.1.3680043.11.2"]},
         "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}},
    ]
    asked = []

    def qido(path, headers):
        asked.append(path)
        return 200, json.dumps(studies), []

    mock = MockWeb()
    mock.qido = qido
    try:
        d = find_it.new_daemon(work, upload={
            "url": "http://127.0.0.1:%d/dicom-web" % mock.port}).start()
        keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "",
                "PatientName": "", "StudyDescription": "*"}
        answers, final, _ = find_it.findscu(d.port, keys, work=work,
                                            charset="ISO_IR 192")
        check(final == "0000" and len(answers) == 2,
              "a lone '*' matches the study without a description too "
              "(%d answers)" % len(answers))
        check(not any("00081030=" in p or "StudyDescription=" in p
                      for p in asked),
              "and is not sent as a filter: %s" % asked)
        names = sorted(raw_pn(a) for a in answers)
        check(WANG in names, "the trailing empty group is kept: %s" % names)
        check("Doe^Jane" in names, "a name without groups stays as it is")
        check(d.stop() == 0, "clean stop")
    finally:
        mock.close()
    orthanc_pn(work)


def orthanc_pn(work):
    """The same name through Orthanc: its own C-FIND and stowbridge in
    front of its DICOMweb give the same bytes; a lone '*' on an empty
    description: stowbridge matches it (universal), Orthanc is printed."""
    if not os.path.exists("/usr/sbin/Orthanc") or \
            not os.path.exists(it.Orthanc.PLUGIN):
        print("skip (Orthanc part): Orthanc or its DICOMweb plugin missing")
        return
    o = find_it.orthanc_with_find(work)
    try:
        for i, (name, descr) in enumerate([(WANG, "CT HEAD"),
                                           ("Doe^Jane", None)]):
            p = os.path.join(work, "pn%d.dcm" % i)
            make_patient_instance(p)
            ds = pydicom.dcmread(p)
            ds.SpecificCharacterSet = "ISO_IR 192"
            # Bytes: pydicom's own str() would drop the trailing '='.
            ds.PatientName = name.encode("utf-8")
            ds.PatientID = "PN%d" % i
            if descr:
                ds.StudyDescription = descr
            ds.save_as(p, write_like_original=False)
            find_it.post_file(o, p)
        d = find_it.new_daemon(work, upload={
            "url": "http://127.0.0.1:%d/dicom-web" % o.port},
            query={"profile": "orthanc"}).start()
        keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "",
                "PatientName": "", "PatientID": "PN0"}
        ours, final, _ = find_it.findscu(d.port, keys, work=work,
                                         charset="ISO_IR 192")
        theirs, final2, _ = find_it.findscu(o.dicom_port, keys, work=work,
                                            charset="ISO_IR 192",
                                            called="ORTHANC")
        check(final == "0000" and final2 == "0000" and len(ours) == 1 and
              len(theirs) == 1, "one match each")
        a, b = raw_pn(ours[0]), raw_pn(theirs[0])
        check(a == b == WANG,
              "the same value as Orthanc's C-FIND: %r / %r" % (a, b))
        keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "",
                "PatientID": "PN*", "StudyDescription": "*"}
        ours, _, _ = find_it.findscu(d.port, keys, work=work)
        theirs, _, _ = find_it.findscu(o.dicom_port, keys, work=work,
                                       called="ORTHANC")
        check(len(ours) == 2, "a lone '*' is universal: both studies (%d)"
              % len(ours))
        print("Orthanc's own C-FIND with StudyDescription '*': %d of 2 "
              "studies (an empty description %s)"
              % (len(theirs), "matches" if len(theirs) == 2 else
                 "does not match"))
        check(d.stop() == 0, "clean stop")
    finally:
        o.close()


def main():
    it.BINARY, it.CRAFT_SCU, name = sys.argv[1], sys.argv[2], sys.argv[3]
    test = globals().get("test_" + name)
    if test is None:
        print("no such test:", name)
        return 2
    return it.run_test(test, name)


if __name__ == "__main__":
    sys.exit(main())
