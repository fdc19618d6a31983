#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""DICOM TLS, certificates bound to AE titles and the PROXY protocol
(issue 11): the real stowbridge binary against DCMTK's echoscu, storescu
and findscu with +tls, certificates made by openssl in the test's temp
dir, HAProxy in front, and raw peers that stall or lie.

usage: tls_it.py BINARY CRAFT_SCU TEST

TEST is one of: both, rejects, stall, kill9, reload, haproxy, proxy_untrusted,
config, options. Each prints what it measured and exits non-zero on the first
failed check.
"""
import glob
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import it  # noqa: E402
from it import Daemon, check, free_port, run  # noqa: E402

# A normal caller is served within this while stalling peers hold the TLS
# port (issue 11 item 7).
SERVE_LIMIT_S = 2.0


def associate_rq(calling, called=b"STOWBRIDGE"):
    """The bytes of an A-ASSOCIATE-RQ (Verification), as it.associate()
    sends it."""
    def item(t, body):
        return bytes([t, 0]) + len(body).to_bytes(2, "big") + body
    app = item(0x10, b"1.2.840.10008.3.1.1.1")
    pc = item(0x20, bytes([1, 0, 0, 0]) + item(0x30, b"1.2.840.10008.1.1")
              + item(0x40, b"1.2.840.10008.1.2"))
    user = item(0x50, item(0x51, (16384).to_bytes(4, "big")))
    body = ((1).to_bytes(2, "big") + b"\0\0" + called.ljust(16)
            + calling.ljust(16) + b"\0" * 32 + app + pc + user)
    return bytes([1, 0]) + len(body).to_bytes(4, "big") + body


# ---------------------------------------------------------------------------
# Certificates
# ---------------------------------------------------------------------------

def openssl(*args, cwd):
    r = run(["openssl", *args], cwd=cwd)
    check(r.returncode == 0, "openssl %s: %s" % (args[0], r.stderr[-400:]))
    return r


def make_ca(d, name, bits=2048):
    openssl("req", "-x509", "-newkey", "rsa:%d" % bits, "-nodes",
            "-keyout", name + ".key", "-out", name + ".pem", "-days", "30",
            "-subj", "/CN=%s" % name, "-addext",
            "basicConstraints=critical,CA:TRUE", "-addext",
            "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def ca_conf(d, ca):
    """A minimal `openssl ca` setup (for certificates dated in the past
    and for CRLs)."""
    db = os.path.join(d, ca + "-db")
    os.makedirs(db, exist_ok=True)
    open(os.path.join(db, "index.txt"), "a").close()
    if not os.path.exists(os.path.join(db, "serial")):
        with open(os.path.join(db, "serial"), "w") as f:
            f.write("1000\n")
    if not os.path.exists(os.path.join(db, "crlnumber")):
        with open(os.path.join(db, "crlnumber"), "w") as f:
            f.write("1000\n")
    conf = os.path.join(d, ca + ".cnf")
    with open(conf, "w") as f:
        f.write("""[ca]
default_ca = ca_default
[ca_default]
dir = %s
database = $dir/index.txt
serial = $dir/serial
crlnumber = $dir/crlnumber
new_certs_dir = $dir
certificate = %s/%s.pem
private_key = %s/%s.key
default_md = sha256
default_crl_days = 30
policy = policy_any
copy_extensions = copy
unique_subject = no
[policy_any]
commonName = supplied
""" % (db, d, ca, d, ca))
    return conf


def make_leaf(d, name, ca, cn=None, bits=2048, san=None, days=30,
              past=False, md="sha256"):
    """A key and a certificate signed by @ca (name.key, name.pem)."""
    cn = cn or name
    openssl("genrsa", "-out", name + ".key", str(bits), cwd=d)
    os.chmod(os.path.join(d, name + ".key"), 0o600)
    args = ["req", "-new", "-key", name + ".key", "-out", name + ".csr",
            "-subj", "/CN=%s" % cn]
    if san:
        args += ["-addext", "subjectAltName=" + san]
    openssl(*args, cwd=d)
    if past:
        conf = ca_conf(d, ca)
        openssl("ca", "-batch", "-config", conf, "-in", name + ".csr",
                "-out", name + ".pem", "-startdate", "20200101000000Z",
                "-enddate", "20200201000000Z", "-notext", cwd=d)
        return
    args = ["x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem",
            "-CAkey", ca + ".key", "-CAcreateserial", "-out", name + ".pem",
            "-days", str(days), "-" + md]
    if san:
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write("subjectAltName=%s\n" % san)
        args += ["-extfile", name + ".ext"]
    openssl(*args, cwd=d)


def fingerprint(d, name):
    r = openssl("x509", "-in", name + ".pem", "-noout", "-fingerprint",
                "-sha256", cwd=d)
    return r.stdout.strip().split("=", 1)[1]


class Pki:
    """CA, server, CT01 and MR02 modality certificates, an expired one, one
    from an unknown CA, a 1024-bit one and a SHA-1-signed one, all in
    @work/pki."""

    def __init__(self, work):
        self.dir = d = os.path.join(work, "pki")
        os.makedirs(d)
        make_ca(d, "ca")
        make_ca(d, "rogue-ca")
        make_leaf(d, "server", "ca", cn="localhost",
                  san="DNS:localhost,IP:127.0.0.1,IP:::1")
        make_leaf(d, "server2", "ca", cn="localhost",
                  san="DNS:localhost,IP:127.0.0.1,IP:::1")
        make_leaf(d, "ct01", "ca", cn="CT01",
                  san="DNS:ct01.modality.example")
        make_leaf(d, "mr02", "ca", cn="MR02")
        make_leaf(d, "expired", "ca", cn="CT01", past=True)
        make_leaf(d, "rogue", "rogue-ca", cn="CT01")
        make_leaf(d, "weak", "ca", cn="CT01", bits=1024)
        make_leaf(d, "sha1", "ca", cn="CT01", md="sha1")

    def path(self, name):
        return os.path.join(self.dir, name)


def tls_config(pki, port=None, **extra):
    tls = {"port": port or free_port(),
           "certificate_file": pki.path("server.pem"),
           "private_key_file": pki.path("server.key"),
           "ca_file": pki.path("ca.pem")}
    tls.update(extra)
    return tls


def callers(pki):
    return [
        {"ae_title": "CT01", "tls_only": True,
         "certificate_sha256": [fingerprint(pki.dir, "ct01").lower()]},
        {"ae_title": "MR02", "certificate_subject": "MR02"},
        {"ae_title": "CTNAME", "certificate_subject":
         "ct01.modality.example"},
        {"ae_title": "ECHOSCU"},
        {"ae_title": "STORESCU"},
        {"ae_title": "FINDSCU"},
    ]


def tls_daemon(work, pki, dicom=None, **tls_extra):
    dicom_cfg = {"tls": tls_config(pki, **tls_extra),
                 "allowed_callers": callers(pki)}
    dicom_cfg.update(dicom or {})
    d = Daemon(work, dicom=dicom_cfg)
    d.tls_port = d.cfg["dicom"]["tls"]["port"]
    return d


def tls_args(pki, cert="ct01"):
    """echoscu/storescu/findscu options for TLS with @cert (None: none)."""
    args = ["+tls", pki.path(cert + ".key"), pki.path(cert + ".pem")] \
        if cert else ["+tla"]
    return args + ["+cf", pki.path("ca.pem")]


def echo_tls(d, pki, cert="ct01", calling="CT01", host="127.0.0.1",
             port=None):
    return run(["echoscu", "-to", "5", "-ta", "10", "-td", "10",
                "-aet", calling, "-aec", "STOWBRIDGE",
                *tls_args(pki, cert), host, str(port or d.tls_port)],
               timeout=60)


def store_tls(d, pki, files, cert="ct01", calling="CT01", timeout=300):
    return it.storescu(d.tls_port, files, calling=calling,
                       extra=tls_args(pki, cert), timeout=timeout)


def closed_without_answer(s):
    """True if the SCP closed @s (FIN or reset) without sending a
    byte."""
    try:
        return s.recv(64) == b""
    except ConnectionResetError:
        return True


def wait_log(d, pattern, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        m = re.search(pattern, d.log_text())
        if m:
            return m
        time.sleep(0.1)
    return None


def start(d):
    """Starts @d and waits until the TLS port answers too."""
    d.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", d.tls_port), 1).close()
            return d
        except OSError:
            time.sleep(0.1)
    raise it.Failure("TLS port never listened")


def make_files(work, count, size=64):
    files = []
    for i in range(count):
        p = os.path.join(work, "in%04d.dcm" % i)
        it.make_instance(p, size=size)
        files.append(p)
    return files


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------

def test_both(work):
    """Plain and TLS at once, over IPv4 and ::1; C-ECHO, C-STORE, C-FIND
    (the association is accepted over TLS; C-FIND itself is not offered
    without upload.url, so findscu is refused its context)."""
    pki = Pki(work)
    d = start(tls_daemon(work, pki))
    r = it.echo(d.port)
    check(r.returncode == 0, "plain echoscu: %s" % r.stderr)
    r = echo_tls(d, pki)
    check(r.returncode == 0, "TLS echoscu as CT01: %s" % r.stderr)
    r = echo_tls(d, pki, cert="mr02", calling="MR02")
    check(r.returncode == 0, "TLS echoscu as MR02 (subject CN): %s"
          % r.stderr)
    r = echo_tls(d, pki, cert="ct01", calling="CTNAME")
    check(r.returncode == 0, "TLS echoscu as CTNAME (DNS SAN): %s"
          % r.stderr)
    # DCMTK 3.6.7's tools speak IPv4 only: ::1 with a raw peer, plain
    # and TLS (Python's ssl), each expecting the A-ASSOCIATE-AC.
    s = socket.create_connection(("::1", d.port), timeout=10)
    s.sendall(associate_rq(b"ECHOSCU"))
    check(s.recv(64)[:1] == b"\x02", "plain association over ::1 accepted")
    s.close()
    got = tls_client(d, pki, "ct01", b"CT01", host="::1")
    check(isinstance(got, bytes) and got[:1] == b"\x02",
          "TLS association over ::1 accepted (%r)" % (got,))
    check(wait_log(d, r"event=tls-accepted assoc=\d+ from=CT01@::1 ")
          is not None, "::1 logged as the caller")

    files = make_files(work, 6)
    plain = subprocess.Popen(
        ["storescu", "-v", "-aet", "STORESCU", "-aec", "STOWBRIDGE",
         "127.0.0.1", str(d.port), *files[:3]],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    r = store_tls(d, pki, files[3:])
    out, _ = plain.communicate(timeout=120)
    check(plain.returncode == 0, "plain storescu at the same time: %s"
          % out[-300:])
    check(r.returncode == 0, "TLS storescu: %s" % r.stderr[-300:])
    check(len(d.entries()) == 6, "6 instances spooled (%d)"
          % len(d.entries()))
    m = re.search(r"event=tls-accepted assoc=\d+ from=CT01@127.0.0.1 "
                  r"protocol=\"(TLSv1\.[23])[^\"]*\" cert_sha256=([0-9A-F:]+)",
                  d.log_text())
    check(m is not None and m.group(2) == fingerprint(pki.dir, "ct01"),
          "the caller's fingerprint is logged")
    print("measured: protocol %s" % m.group(1))
    r = run(["findscu", "-S", "-k", "QueryRetrieveLevel=STUDY",
             "-k", "StudyInstanceUID", "-aet", "FINDSCU", "-aec",
             "STOWBRIDGE", *tls_args(pki, "ct01"), "127.0.0.1",
             str(d.tls_port)], timeout=60)
    check(re.search(r"event=(accepted|tls-accepted) assoc=\d+ "
                    r"from=FINDSCU@127.0.0.1", d.log_text()) is not None,
          "findscu's association accepted over TLS")
    # bcp195-extended: TLS 1.2 only.
    check(d.stop() == 0, "clean stop")
    d2 = start(tls_daemon(work, pki, profile="bcp195-extended"))
    r = echo_tls(d2, pki)
    check(r.returncode == 0, "TLS echoscu with bcp195-extended: %s"
          % r.stderr)
    check(re.search(r"protocol=\"TLSv1\.2 ", d2.log_text()) is not None,
          "bcp195-extended negotiates TLS 1.2")
    check(d2.stop() == 0, "clean stop")


def tls_client(d, pki, name, calling=b"CT01", host="127.0.0.1"):
    """A TLS client (Python, security level 0) presenting @name's
    certificate; sends an A-ASSOCIATE-RQ; returns what came back."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.check_hostname = False
    ctx.load_verify_locations(pki.path("ca.pem"))
    ctx.load_cert_chain(pki.path(name + ".pem"), pki.path(name + ".key"))
    raw = socket.create_connection((host, d.tls_port), timeout=10)
    try:
        s = ctx.wrap_socket(raw)
        s.sendall(associate_rq(calling))
        return s.recv(64)
    except (ssl.SSLError, OSError) as e:
        return e
    finally:
        raw.close()


def test_rejects(work):
    """No client certificate, unknown CA, expired, the other AE's
    certificate, tls_only on the plain port, a 1024-bit key: each refused
    and logged with the reason (and the fingerprint where there is one);
    the daemon keeps serving."""
    pki = Pki(work)
    d = start(tls_daemon(work, pki))
    cases = [
        ("no client certificate", dict(cert=None),
         r"event=dropped from=127\.0\.0\.1 reason=\"TLS handshake failed: "
         r"peer did not return a certificate"),
        ("unknown CA", dict(cert="rogue"),
         r"reason=\"TLS handshake failed: [^\"]*certificate verify failed"
         r"[^\"]*\(certificate: unable to get local issuer"),
        ("expired", dict(cert="expired"),
         r"reason=\"TLS handshake failed: [^\"]*\(certificate: certificate "
         r"has expired\)"),
    ]
    for what, kw, pattern in cases:
        r = echo_tls(d, pki, **kw)
        check(r.returncode != 0, "%s: echoscu fails" % what)
        check(wait_log(d, pattern) is not None, "%s: logged (%s)"
              % (what, pattern))
    # MR02's certificate calling as CT01: refused at association time.
    r = echo_tls(d, pki, cert="mr02", calling="CT01")
    check(r.returncode != 0 and "Calling AE Title Not Recognized"
          in r.stdout + r.stderr,
          "other AE's certificate: calling AE title not recognized (%s)"
          % (r.stdout + r.stderr)[-300:])
    m = wait_log(d, r"event=rejected assoc=\d+ from=CT01@127.0.0.1 "
                    r"called=STOWBRIDGE port=tls cert_sha256=([0-9A-F:]+) "
                    r"cert_subject=\"CN=MR02\" reason=\"client certificate "
                    r"fingerprint not in its certificate_sha256\"")
    check(m is not None and m.group(1) == fingerprint(pki.dir, "mr02"),
          "other AE's certificate: logged with its fingerprint and subject")
    r = echo_tls(d, pki, cert="ct01", calling="MR02")
    check(r.returncode != 0, "CT01's certificate calling as MR02 refused")
    check(wait_log(d, r"reason=\"client certificate has no CN or DNS/URI "
                      r"name equal to its certificate_subject\"")
          is not None, "subject mismatch logged")
    # tls_only on the plain port.
    r = it.echo(d.port, calling="CT01")
    check(r.returncode != 0 and "Calling AE Title Not Recognized"
          in r.stdout + r.stderr, "tls_only CT01 on the plain port refused")
    check(wait_log(d, r"event=rejected assoc=\d+ from=CT01@127.0.0.1 "
                      r"called=STOWBRIDGE reason=\"tls_only caller on the "
                      r"plain port\"") is not None, "tls_only logged")
    # MR02 is bound to a certificate: not on the plain port either.
    r = it.echo(d.port, calling="MR02")
    check(r.returncode != 0, "certificate-bound MR02 on the plain port "
          "refused")
    # 1024-bit RSA client key, from our CA.
    got = tls_client(d, pki, "weak")
    check(not (isinstance(got, bytes) and got[:1] == b"\x02"),
          "1024-bit client certificate: no A-ASSOCIATE-AC (%r)" % (got,))
    check(wait_log(d, r"reason=\"(TLS handshake failed: [^\"]*key too "
                      r"(weak|small)|client certificate refused: 1024-bit "
                      r"RSA key)") is not None,
          "1024-bit key refused and logged")
    # A client certificate signed with SHA-1, from our CA.
    got = tls_client(d, pki, "sha1")
    check(not (isinstance(got, bytes) and got[:1] == b"\x02"),
          "SHA-1-signed client certificate: no A-ASSOCIATE-AC (%r)" % (got,))
    check(wait_log(d, r"reason=\"(TLS handshake failed: [^\"]*signature "
                      r"digest algorithm too weak|client certificate "
                      r"refused: certificate signed with SHA1)") is not None,
          "SHA-1 signature refused and logged")
    # Plain DICOM on the TLS port, TLS on the plain port.
    s = socket.create_connection(("127.0.0.1", d.tls_port), timeout=10)
    s.sendall(associate_rq(b"ECHOSCU"))
    check(closed_without_answer(s), "plain DICOM on the TLS port: closed")
    s.close()
    check(wait_log(d, r"reason=\"plain DICOM \(an A-ASSOCIATE-RQ\) on the "
                      r"TLS port\"") is not None, "plain on TLS logged")
    r = echo_tls(d, pki, port=d.port)
    check(r.returncode != 0, "TLS on the plain port fails")
    check(wait_log(d, r"reason=\"a TLS handshake on the plain port\"")
          is not None, "TLS on plain logged")
    r = echo_tls(d, pki)
    check(r.returncode == 0, "still serving TLS: %s" % r.stderr)
    check(d.stop() == 0, "clean stop")

    # security_level 0 lets the 1024-bit key through (and is warned).
    d2 = start(tls_daemon(work, pki, security_level=0))
    check(re.search(r"event=tls-weak security_level=0", d2.log_text())
          is not None, "a lowered security level is logged as a warning")
    got = tls_client(d2, pki, "weak", b"ECHOSCU")
    check(isinstance(got, bytes) and got[:1] == b"\x02",
          "security_level 0: the 1024-bit certificate is accepted (%r)"
          % (got,))
    got = tls_client(d2, pki, "sha1", b"ECHOSCU")
    check(isinstance(got, bytes) and got[:1] == b"\x02",
          "security_level 0: the SHA-1-signed certificate is accepted (%r)"
          % (got,))
    check(d2.stop() == 0, "clean stop")


def test_stall(work):
    """Silent TLS peers, half a ClientHello, plain DICOM on the TLS port,
    with max_associations 2: a normal TLS C-STORE is served within 2 s
    meanwhile, and the stalled ones are dropped at dicom.timeout_s
    without ever holding a slot."""
    pki = Pki(work)
    d = start(tls_daemon(work, pki, dicom={"max_associations": 2,
                                            "timeout_s": 4}))
    # A real ClientHello's first bytes (from Python's client), cut.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = out.read()
    held = []
    for i in range(6):
        s = socket.create_connection(("127.0.0.1", d.tls_port), timeout=10)
        if i % 3 == 1:
            s.sendall(hello[:len(hello) // 2])
        elif i % 3 == 2:
            s.sendall(hello[:5])
        held.append(s)
    time.sleep(0.3)
    files = make_files(work, 1)
    times = []
    for _ in range(3):
        t0 = time.monotonic()
        r = store_tls(d, pki, files)
        took = time.monotonic() - t0
        times.append(took)
        check(r.returncode == 0, "TLS C-STORE while stalled peers hold "
              "the port: %s" % r.stderr[-300:])
        check(took < SERVE_LIMIT_S, "served in %.2f s (< %.1f s)"
              % (took, SERVE_LIMIT_S))
    print("measured: TLS C-STORE with 6 stalled peers: %s s"
          % ", ".join("%.2f" % t for t in times))
    check(wait_log(d, r"reason=\"TLS handshake not completed \(timeout\)\"",
                   seconds=8) is not None, "stalled handshakes dropped at "
          "the deadline")
    for s in held:
        s.close()
    r = store_tls(d, pki, files)
    check(r.returncode == 0, "served after the stalls: %s" % r.stderr)
    check(d.stop() == 0, "clean stop")


def test_many_at_once(work):
    """16 TLS associations opened at the same instant from one address,
    with the default dicom.max_pending (32): every one is served and none
    is evicted while there is room (one PACS may open many at once)."""
    pki = Pki(work)
    d = start(tls_daemon(work, pki))
    files = make_files(work, 16)
    procs = []
    for f in files:
        procs.append(subprocess.Popen(
            ["storescu", "-to", "30", "-ta", "30", "-td", "60",
             "-aet", "CT01", "-aec", "STOWBRIDGE", *tls_args(pki),
             "127.0.0.1", str(d.tls_port), f],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    failed = []
    for p in procs:
        out, _ = p.communicate(timeout=240)
        if p.returncode != 0:
            failed.append(out[-200:])
    check(not failed, "16 TLS C-STOREs at once from one address all "
          "served: %s" % failed[:2])
    check("evicted" not in d.log_text(), "none evicted while there is room")
    check(wait_for_count(d, 16), "16 instances in the spool")
    check(d.stop() == 0, "clean stop")


def wait_for_count(d, n, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if len(d.entries("incoming")) + len(d.entries("active")) >= n:
            return True
        time.sleep(0.2)
    return False


def test_kill9(work):
    """kill -9 during a TLS C-STORE run; after a restart every
    acknowledged UID is in the spool."""
    pki = Pki(work)
    d = start(tls_daemon(work, pki))
    files = make_files(work, 60, size=320)
    proc = subprocess.Popen(
        ["storescu", "-v", "-to", "5", "-ta", "30", "-td", "60", "-aet",
         "CT01", "-aec", "STOWBRIDGE", *tls_args(pki), "127.0.0.1",
         str(d.tls_port), *files],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(d.entries()) < 10:
        time.sleep(0.05)
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(30)
    out, _ = proc.communicate(timeout=120)
    acked = it.acknowledged_files(out)
    check(0 < len(acked) < len(files), "killed in the middle (%d of %d "
          "acknowledged)" % (len(acked), len(files)))
    d2 = Daemon(work, spool_dir=d.spool, dicom=d.cfg["dicom"])
    d2.port = d.port
    d2.tls_port = d.tls_port
    d2.config = d.config
    start(d2)
    spooled = set()
    for state in ("incoming", "active", "deferred", "failed"):
        for p in d2.entries(state):
            spooled.add(it.sop_uid(p))
    missing = [f for f in acked if it.sop_uid(f) not in spooled]
    check(not missing, "every acknowledged UID is in the spool (%d "
          "missing of %d)" % (len(missing), len(acked)))
    print("measured: %d acknowledged, all in the spool after kill -9"
          % len(acked))
    check(d2.stop() == 0, "clean stop")


def server_fingerprint(port):
    r = subprocess.run(
        "openssl s_client -connect 127.0.0.1:%d -servername localhost "
        "</dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"
        % port, shell=True, capture_output=True, text=True, timeout=60)
    return r.stdout.strip().split("=", 1)[-1]


def test_reload(work):
    """SIGHUP with a new certificate: a new association sees the new
    fingerprint, one running is untouched; with a broken one the old is
    kept and the reason logged."""
    pki = Pki(work)
    live = os.path.join(work, "live")
    os.makedirs(live)
    for n in ("server.pem", "server.key"):
        shutil.copy(pki.path(n), os.path.join(live, n))
    os.chmod(os.path.join(live, "server.key"), 0o600)
    d = start(tls_daemon(work, pki,
                         certificate_file=os.path.join(live, "server.pem"),
                         private_key_file=os.path.join(live, "server.key")))
    old = fingerprint(pki.dir, "server")
    new = fingerprint(pki.dir, "server2")
    check(server_fingerprint(d.tls_port) == old, "the first certificate "
          "is served")
    # A running association across the reload.
    files = make_files(work, 30, size=256)
    proc = subprocess.Popen(
        ["storescu", "-aet", "CT01", "-aec", "STOWBRIDGE", *tls_args(pki),
         "127.0.0.1", str(d.tls_port), *files],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(0.3)
    shutil.copy(pki.path("server2.pem"), os.path.join(live, "server.pem"))
    shutil.copy(pki.path("server2.key"), os.path.join(live, "server.key"))
    d.proc.send_signal(signal.SIGHUP)
    check(wait_log(d, r"event=tls-reloaded cert_sha256=%s" % re.escape(new))
          is not None, "reload logged with the new fingerprint")
    check(server_fingerprint(d.tls_port) == new, "a new association sees "
          "the new certificate")
    out, _ = proc.communicate(timeout=120)
    check(proc.returncode == 0, "the association running across the "
          "reload completed: %s" % out[-300:])
    # Broken: a key that does not match.
    shutil.copy(pki.path("server.key"), os.path.join(live, "server.key"))
    d.proc.send_signal(signal.SIGHUP)
    check(wait_log(d, r"event=tls-reload-failed reason=\"dicom.tls."
                      r"private_key_file '[^']*' does not match") is not None,
          "broken reload logged")
    check(server_fingerprint(d.tls_port) == new, "old material kept")
    r = echo_tls(d, pki)
    check(r.returncode == 0, "still served: %s" % r.stderr)
    # Garbage certificate.
    with open(os.path.join(live, "server.pem"), "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nnot base64\n")
    d.proc.send_signal(signal.SIGHUP)
    check(wait_log(d, r"event=tls-reload-failed reason=\"dicom.tls."
                      r"certificate_file") is not None,
          "garbage certificate refused")
    check(server_fingerprint(d.tls_port) == new, "old material kept")
    check(d.stop() == 0, "clean stop")


def test_options(work):
    """dicom.tls.client_certificate optional and none, certificate_sha256
    in any case with or without colons, profile bcp195,
    dicom.bind_address (::1 and 127.0.0.1 only), and the CRL: a revoked
    client certificate refused, a CRL revoking one more re-read on SIGHUP
    (new associations refused, others still served); the CA file
    re-read on SIGHUP."""
    pki = Pki(work)
    # optional: with or without a certificate; a bad one still refused.
    d = start(tls_daemon(work, pki, client_certificate="optional"))
    r = echo_tls(d, pki, cert=None, calling="ECHOSCU")
    check(r.returncode == 0, "optional: no client certificate accepted: %s"
          % r.stderr)
    r = echo_tls(d, pki, cert="ct01", calling="CT01")
    check(r.returncode == 0, "optional: CT01's certificate accepted (and "
          "bound): %s" % r.stderr)
    r = echo_tls(d, pki, cert=None, calling="CT01")
    check(r.returncode != 0, "optional: CT01 (bound to a certificate) "
          "without one refused")
    check(wait_log(d, r"event=rejected assoc=\d+ from=CT01@127.0.0.1 "
                      r"called=STOWBRIDGE port=tls ") is not None,
          "optional: the certificate-less CT01 logged as rejected")
    r = echo_tls(d, pki, cert="rogue", calling="ECHOSCU")
    check(r.returncode != 0, "optional: a certificate from an unknown CA "
          "still refused")
    check(d.stop() == 0, "clean stop")
    # none: no certificate asked for; bindings are a configuration error.
    d = Daemon(work, dicom={"tls": tls_config(pki, client_certificate="none",
                                              ca_file="")})
    d.tls_port = d.cfg["dicom"]["tls"]["port"]
    start(d)
    r = echo_tls(d, pki, cert=None, calling="ANY")
    check(r.returncode == 0, "none: accepted without a certificate: %s"
          % r.stderr)
    check(d.stop() == 0, "clean stop")
    d = Daemon(work, dicom={"tls": tls_config(pki, client_certificate="none"),
                            "allowed_callers": callers(pki)})
    d.start(wait=False)
    rc = d.proc.wait(30)
    check(rc == 2 and "a certificate binding needs client certificates"
          in d.log_text(), "none with certificate bindings: a start-up "
          "error (%d)" % rc)
    # certificate_sha256 in any case, with or without colons; a bad one
    # is a start-up error.
    fp = fingerprint(pki.dir, "mr02")
    d = Daemon(work, dicom={"tls": tls_config(pki), "allowed_callers": [
        {"ae_title": "MR02", "certificate_sha256": [fp.replace(":", "")]},
        {"ae_title": "MR03",
         "certificate_sha256": [fp.lower(), "00" * 32]},
        {"ae_title": "ECHOSCU"}]})
    d.tls_port = d.cfg["dicom"]["tls"]["port"]
    start(d)
    for calling in ("MR02", "MR03"):
        r = echo_tls(d, pki, cert="mr02", calling=calling)
        check(r.returncode == 0, "certificate_sha256 for %s (upper case "
              "without colons, lower case with): %s" % (calling, r.stderr))
    r = echo_tls(d, pki, cert="ct01", calling="MR03")
    check(r.returncode != 0, "another certificate for MR03 refused")
    check(d.stop() == 0, "clean stop")
    d = Daemon(work, dicom={"tls": tls_config(pki), "allowed_callers": [
        {"ae_title": "MR02", "certificate_sha256": [fp[:-3]]}]})
    d.start(wait=False)
    rc = d.proc.wait(30)
    check(rc == 2 and "certificate_sha256[0]: expected a SHA-256 "
          "fingerprint" in d.log_text(), "a short fingerprint is a "
          "start-up error (%d)" % rc)
    # bcp195.
    d = start(tls_daemon(work, pki, profile="bcp195"))
    r = echo_tls(d, pki)
    check(r.returncode == 0, "profile bcp195: %s" % r.stderr)
    check(d.stop() == 0, "clean stop")
    # bind_address.
    for addr, served, refused in (("::1", "::1", "127.0.0.1"),
                                  ("127.0.0.1", "127.0.0.1", "::1")):
        d = Daemon(work, dicom={"bind_address": addr,
                                "tls": tls_config(pki)})
        d.tls_port = d.cfg["dicom"]["tls"]["port"]
        d.start(wait=False)
        ok = False
        deadline = time.monotonic() + 10
        while not ok and time.monotonic() < deadline:
            try:
                socket.create_connection((served, d.tls_port), 1).close()
                ok = True
            except OSError:
                time.sleep(0.1)
        check(ok, "bind_address %s: the TLS port listens there" % addr)
        for port in (d.port, d.tls_port):
            try:
                socket.create_connection((refused, port), 2).close()
                reached = True
            except OSError:
                reached = False
            check(not reached, "bind_address %s: port %d not reachable on "
                  "%s" % (addr, port, refused))
        s = socket.create_connection((served, d.port), timeout=10)
        s.sendall(associate_rq(b"ECHOSCU"))
        check(s.recv(64)[:1] == b"\x02", "bind_address %s: plain "
              "association on %s accepted" % (addr, served))
        s.close()
        got = tls_client(d, pki, "ct01", b"CT01", host=served)
        check(isinstance(got, bytes) and got[:1] == b"\x02",
              "bind_address %s: TLS association on %s accepted (%r)"
              % (addr, served, got))
        check(d.stop() == 0, "clean stop")
    # CRL: MR02 revoked; then CT01 too, re-read on SIGHUP.
    conf = ca_conf(pki.dir, "ca")
    crl = pki.path("crl.pem")
    openssl("ca", "-config", conf, "-revoke", "mr02.pem", cwd=pki.dir)
    openssl("ca", "-config", conf, "-gencrl", "-out", "crl.pem",
            cwd=pki.dir)
    d = start(tls_daemon(work, pki, crl_file=crl))
    r = echo_tls(d, pki, cert="mr02", calling="MR02")
    check(r.returncode != 0, "crl_file: MR02's revoked certificate refused")
    check(wait_log(d, r"reason=\"TLS handshake failed: [^\"]*\(certificate: "
                      r"certificate revoked\)") is not None,
          "revoked certificate logged")
    r = echo_tls(d, pki)
    check(r.returncode == 0, "crl_file: CT01 still accepted: %s" % r.stderr)
    openssl("ca", "-config", conf, "-revoke", "ct01.pem", cwd=pki.dir)
    openssl("ca", "-config", conf, "-gencrl", "-out", "crl.pem",
            cwd=pki.dir)
    n = len(re.findall("event=tls-reloaded", d.log_text()))
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while (len(re.findall("event=tls-reloaded", d.log_text())) == n
           and time.monotonic() < deadline):
        time.sleep(0.1)
    check(len(re.findall("event=tls-reloaded", d.log_text())) > n,
          "SIGHUP: the TLS files re-read")
    r = echo_tls(d, pki)
    check(r.returncode != 0, "after SIGHUP the new CRL refuses CT01")
    r = echo_tls(d, pki, cert="ct01", calling="CTNAME")
    check(r.returncode != 0, "CT01's certificate refused whatever the AE")
    # A broken CRL keeps the one in use.
    with open(crl, "w") as f:
        f.write("not a CRL\n")
    d.proc.send_signal(signal.SIGHUP)
    check(wait_log(d, r"event=tls-reload-failed reason=\"dicom.tls.crl_file")
          is not None, "a broken CRL: reload refused, logged")
    r = echo_tls(d, pki)
    check(r.returncode != 0, "the CRL in use is kept (CT01 still refused)")
    r = it.echo(d.port)
    check(r.returncode == 0, "plain port served throughout: %s" % r.stderr)
    check(d.stop() == 0, "clean stop")
    # The CA file, re-read on SIGHUP: a second CA trusted from then on.
    live_ca = pki.path("live-ca.pem")
    shutil.copy(pki.path("ca.pem"), live_ca)
    d = start(tls_daemon(work, pki, ca_file=live_ca))
    r = echo_tls(d, pki, cert="rogue", calling="ECHOSCU")
    check(r.returncode != 0, "a certificate of the other CA refused")
    with open(live_ca, "a") as f, open(pki.path("rogue-ca.pem")) as g:
        f.write(g.read())
    n = len(re.findall("event=tls-reloaded", d.log_text()))
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while (len(re.findall("event=tls-reloaded", d.log_text())) == n
           and time.monotonic() < deadline):
        time.sleep(0.1)
    r = echo_tls(d, pki, cert="rogue", calling="ECHOSCU")
    check(r.returncode == 0, "after SIGHUP with the other CA added to "
          "ca_file: accepted: %s" % r.stderr)
    r = echo_tls(d, pki)
    check(r.returncode == 0, "the first CA still trusted: %s" % r.stderr)
    check(d.stop() == 0, "clean stop")


class Haproxy:
    def __init__(self, work, listen, server, mode, source):
        self.cfg = os.path.join(work, "haproxy-%d.cfg" % listen)
        with open(self.cfg, "w") as f:
            f.write("""global
    maxconn 64
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
listen dicom
    bind 127.0.0.1:%d
    server s1 127.0.0.1:%d %s source %s
""" % (listen, server, mode, source))
        self.port = listen
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", self.cfg],
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", listen), 1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise it.Failure("haproxy did not start")

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)


def test_haproxy(work):
    """HAProxy (send-proxy-v2, and send-proxy) in front, connecting from
    127.0.0.3: the allow list matches the original 127.0.0.1, plain and
    TLS; the same caller straight from 127.0.0.3 would not match."""
    pki = Pki(work)
    dicom = {"allowed_callers": [
        {"ae_title": "ECHOSCU", "hosts": ["127.0.0.1"]},
        {"ae_title": "CT01", "hosts": ["127.0.0.1"],
         "certificate_subject": "CT01"},
        {"ae_title": "DIRECT", "hosts": ["127.0.0.3"]}],
        "proxy_protocol": {"trusted_proxies": ["127.0.0.3/32", "::1"]},
        "tls": tls_config(pki)}
    d = Daemon(work, dicom=dicom)
    d.tls_port = dicom["tls"]["port"]
    d.start(wait=False)
    time.sleep(0.5)
    hp = [Haproxy(work, free_port(), d.port, "send-proxy-v2", "127.0.0.3"),
          Haproxy(work, free_port(), d.tls_port, "send-proxy-v2",
                  "127.0.0.3"),
          Haproxy(work, free_port(), d.port, "send-proxy", "127.0.0.3")]
    try:
        r = it.echo(hp[0].port)
        check(r.returncode == 0, "echoscu through HAProxy send-proxy-v2: %s"
              % r.stderr)
        check(wait_log(d, r"event=accepted assoc=\d+ from=ECHOSCU@127.0.0.1 ")
              is not None, "logged with the original address")
        r = echo_tls(d, pki, port=hp[1].port)
        check(r.returncode == 0, "TLS echoscu through HAProxy: %s"
              % r.stderr)
        check(wait_log(d, r"event=tls-accepted assoc=\d+ from=CT01@127.0.0.1 ")
              is not None, "TLS logged with the original address")
        r = it.echo(hp[2].port)
        check(r.returncode == 0, "echoscu through HAProxy send-proxy (v1): "
              "%s" % r.stderr)
        files = make_files(work, 3)
        r = it.storescu(hp[0].port, files, calling="ECHOSCU")
        check(r.returncode == 0, "C-STORE through HAProxy: %s"
              % r.stderr[-300:])
        # The allow list uses the original address, not the proxy's.
        r = it.echo(hp[0].port, calling="DIRECT")
        check(r.returncode != 0, "DIRECT (allowed from 127.0.0.3 only) "
              "refused when it comes from 127.0.0.1 through the proxy")
        # The proxy's address sends no header: dropped.
        s = socket.socket()
        s.bind(("127.0.0.3", 0))
        s.connect(("127.0.0.1", d.port))
        s.sendall(associate_rq(b"ECHOSCU"))
        check(closed_without_answer(s), "trusted proxy without a header: closed")
        s.close()
        check(wait_log(d, r"event=dropped from=127.0.0.3 reason=\"no PROXY "
                          r"header from a trusted proxy") is not None,
              "missing header logged")
    finally:
        for h in hp:
            h.close()
    check(d.stop() == 0, "clean stop")


def test_proxy_untrusted(work):
    """A PROXY header (v1 or v2) from an address not trusted, on either
    port: dropped and logged; nothing forged reaches the allow list."""
    pki = Pki(work)
    dicom = {"proxy_protocol": {"trusted_proxies": ["127.0.0.3"]},
             "tls": tls_config(pki)}
    d = Daemon(work, dicom=dicom)
    d.tls_port = dicom["tls"]["port"]
    start(d)
    v1 = b"PROXY TCP4 10.9.9.9 127.0.0.1 5555 104\r\n"
    v2 = (b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c" + bytes([10, 9, 9, 9])
          + bytes([127, 0, 0, 1]) + b"\x15\xb3\x00\x68")
    for port in (d.port, d.tls_port):
        for header in (v1, v2):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(header + associate_rq(b"ECHOSCU"))
            check(closed_without_answer(s), "untrusted PROXY header closed")
            s.close()
    time.sleep(0.5)
    n = len(re.findall(r"event=dropped from=127.0.0.1 reason=\"PROXY header "
                       r"from an address not in dicom.proxy_protocol."
                       r"trusted_proxies\"", d.log_text()))
    check(n == 4, "4 untrusted PROXY headers dropped and logged (%d)" % n)
    check("10.9.9.9" not in d.log_text(), "the forged address is never "
          "used")
    r = it.echo(d.port)
    check(r.returncode == 0, "still serving: %s" % r.stderr)
    check(d.stop() == 0, "clean stop")


def test_config(work):
    """Start-up errors name the file and the reason; `check` validates
    the TLS files and prints the fingerprint; `tls-fingerprint`."""
    pki = Pki(work)
    fp = fingerprint(pki.dir, "ct01")
    r = run([it.BINARY, "tls-fingerprint", pki.path("ct01.pem")])
    check(r.returncode == 0 and ("sha256: %s" % fp) in r.stdout,
          "tls-fingerprint prints the SHA-256: %s" % r.stdout)
    r = run([it.BINARY, "tls-fingerprint", pki.path("nothing.pem")])
    check(r.returncode != 0 and "nothing.pem" in r.stderr,
          "tls-fingerprint on a missing file fails, naming it")

    loose = pki.path("loose.key")
    shutil.copy(pki.path("server.key"), loose)
    os.chmod(loose, 0o644)
    cases = [
        ("key readable by others", dict(private_key_file=loose),
         "is readable by others"),
        ("key of another certificate",
         dict(private_key_file=pki.path("ct01.key")), "does not match"),
        ("missing certificate",
         dict(certificate_file=pki.path("missing.pem")),
         "missing.pem': No such file"),
        ("garbage CA", dict(ca_file=pki.path("ct01.key")),
         "dicom.tls.ca_file"),
        ("expired server certificate",
         dict(certificate_file=pki.path("expired.pem"),
              private_key_file=pki.path("expired.key")), "expired"),
    ]
    for what, tls, text in cases:
        d = Daemon(work, dicom={"tls": tls_config(pki, **tls)})
        d.start(wait=False)
        rc = d.proc.wait(30)
        check(rc != 0 and text in d.log_text(), "%s: start-up error naming "
              "it (%r in %s)" % (what, text, d.log_text()[-400:]))
        r = run([it.BINARY, "check", "--config", d.config])
        check(r.returncode != 0 and text in r.stdout, "%s: check fails (%s)"
              % (what, r.stdout[-300:]))
    d = Daemon(work, dicom={"tls": tls_config(pki)})
    r = run([it.BINARY, "check", "--config", d.config])
    check("tls: ok" in r.stdout and fingerprint(pki.dir, "server")
          in r.stdout, "check validates TLS and prints the fingerprint: %s"
          % r.stdout)
    check("expires within 30 days" in r.stdout, "check warns of a "
          "certificate expiring within 30 days")
    # Password-protected key.
    openssl("rsa", "-in", "server.key", "-aes256", "-passout",
            "pass:s3cret", "-out", "enc.key", cwd=pki.dir)
    os.chmod(pki.path("enc.key"), 0o600)
    with open(pki.path("pw"), "w") as f:
        f.write("s3cret\n")
    os.chmod(pki.path("pw"), 0o600)
    d = Daemon(work, dicom={"tls": tls_config(
        pki, private_key_file=pki.path("enc.key"),
        private_key_password_file=pki.path("pw"))})
    d.tls_port = d.cfg["dicom"]["tls"]["port"]
    start(d)
    r = echo_tls(d, pki, calling="ANY")
    check(r.returncode == 0, "encrypted key with its password file: %s"
          % r.stderr)
    check(d.stop() == 0, "clean stop")
    with open(pki.path("pw"), "w") as f:
        f.write("wrong\n")
    d = Daemon(work, dicom={"tls": tls_config(
        pki, private_key_file=pki.path("enc.key"),
        private_key_password_file=pki.path("pw"))})
    d.start(wait=False)
    check(d.proc.wait(30) != 0 and "check the password file"
          in d.log_text(), "a wrong password is a start-up error")
    # The key as the systemd credential tls_key (private_key_file "",
    # the packaged unit's LoadCredential=tls_key:/etc/stowbridge/tls/key.pem).
    creds = os.path.join(work, "credentials")
    os.makedirs(creds, 0o700)
    shutil.copy(pki.path("server.key"), os.path.join(creds, "tls_key"))
    os.chmod(os.path.join(creds, "tls_key"), 0o400)
    env = dict(os.environ, CREDENTIALS_DIRECTORY=creds)
    d = Daemon(work, dicom={"tls": tls_config(pki, private_key_file="")})
    d.tls_port = d.cfg["dicom"]["tls"]["port"]
    d.start(env=env)
    deadline = time.monotonic() + 10
    r = echo_tls(d, pki, calling="ANY")
    while r.returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
        r = echo_tls(d, pki, calling="ANY")
    check(r.returncode == 0, "private_key_file \"\": the key from "
          "$CREDENTIALS_DIRECTORY/tls_key serves TLS: %s" % r.stderr)
    check(d.stop() == 0, "clean stop")
    r = run([it.BINARY, "check", "--config", d.config], env=env)
    check(r.returncode == 0 and "tls: ok" in r.stdout, "check with the "
          "credential tls_key: %s" % r.stdout[-300:])
    # The unit's fallback when key.pem is missing (SetCredential=tls_key:\n):
    # a configuration error naming the credential, exit status 2.
    os.chmod(os.path.join(creds, "tls_key"), 0o600)
    with open(os.path.join(creds, "tls_key"), "w") as f:
        f.write("\n")
    empty_text = "the systemd credential tls_key is empty"
    d = Daemon(work, dicom={"tls": tls_config(pki, private_key_file="")})
    d.start(wait=False, env=env)
    rc = d.proc.wait(30)
    check(rc == 2 and empty_text in d.log_text(), "an empty credential "
          "tls_key: exit status 2 (%d), naming it: %s" % (rc,
                                                          d.log_text()[-300:]))
    r = run([it.BINARY, "check", "--config", d.config], env=env)
    check(r.returncode != 0 and empty_text in r.stdout + r.stderr,
          "check with an empty credential tls_key fails, naming it: %s"
          % (r.stdout + r.stderr)[-300:])
    # No credential at all.
    env = {k: v for k, v in os.environ.items()
           if k != "CREDENTIALS_DIRECTORY"}
    d.start(wait=False, env=env)
    rc = d.proc.wait(30)
    check(rc == 2 and "dicom.tls.private_key_file is needed" in
          d.log_text(), "no key and no credential tls_key: exit status 2 "
          "(%d), naming the key" % rc)
    r = run([it.BINARY, "status", "--config", d.config], env=env)
    check(r.returncode == 0, "status (no TLS port, no key needed) runs "
          "without the credential tls_key: %s" % (r.stdout + r.stderr)[-300:])
    # Plain port 0: TLS only.
    d = Daemon(work, dicom={"port": 0, "tls": tls_config(pki)})
    d.tls_port = d.cfg["dicom"]["tls"]["port"]
    d.start(wait=False)
    deadline = time.monotonic() + 10
    ok = False
    while time.monotonic() < deadline and not ok:
        ok = echo_tls(d, pki, calling="ANY").returncode == 0
        time.sleep(0.1)
    check(ok, "dicom.port 0: TLS only")
    check(d.stop() == 0, "clean stop")


def main():
    it.BINARY, it.CRAFT_SCU, name = sys.argv[1], sys.argv[2], sys.argv[3]
    test = globals().get("test_" + name)
    if test is None:
        print("no such test:", name)
        return 2
    if name == "haproxy" and shutil.which("haproxy") is None:
        print("SKIP: haproxy not installed (scripts/install-deps.sh)")
        return 77
    return it.run_test(test, name)


if __name__ == "__main__":
    sys.exit(main())
