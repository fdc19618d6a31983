#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Integration tests: the real stowbridge binary against DCMTK's real
echoscu and storescu, on loopback, random ports and temporary directories.

usage: it.py BINARY CRAFT_SCU TEST

Each TEST is one function below (test_<name>); CTest runs each as its own
test with a timeout. A test prints what it checked and exits non-zero on
the first failed check; 77 means skipped (with the reason printed).
Needs: dcmtk (echoscu, storescu, dcmdump) and python3-pydicom.
"""
import base64
import hashlib
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

TEST_FILES = "/usr/lib/python3/dist-packages/pydicom/data/test_files"
CHARSET_FILES = "/usr/lib/python3/dist-packages/pydicom/data/charset_files"
SKIP = 77

# storescu option that proposes exactly a file's transfer syntax, so the
# data set travels (and is spooled) byte for byte as it is in the file.
PROPOSE = {
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.1": "-xe",
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
}

BINARY = None
CRAFT_SCU = None


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)
    print("ok:", what)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, timeout=120, **kw):
    return subprocess.run(cmd, capture_output=True, text=True,
                          timeout=timeout, **kw)


class Daemon:
    """One stowbridge run --config in a temp dir, stopped on exit."""

    def __init__(self, work, **overrides):
        self.work = work
        self.port = free_port()
        self.spool = overrides.pop("spool_dir", os.path.join(work, "spool"))
        self.cfg = {
            "dicom": {"ae_title": "STOWBRIDGE", "port": self.port,
                      "timeout_s": 10},
            # A small intake journal: written with zeros at every first
            # start, and records up to 1 MiB still go through it.
            "spool": {"dir": self.spool, "min_free_mb": 0, "journal_mb": 8},
            "log": {"level": "debug"},
            # No admin endpoint unless a test asks for one: the default
            # port (9475) would be fought over by daemons running at once.
            "admin": {"listen": ""},
        }
        for section, values in overrides.items():
            self.cfg.setdefault(section, {}).update(values)
        self.config = os.path.join(work, "stowbridge-%d.json" % self.port)
        with open(self.config, "w") as f:
            json.dump(self.cfg, f)
        self.log_path = os.path.join(work, "daemon-%d.log" % self.port)
        self.proc = None

    def start(self, wait=True, env=None):
        """Starts the daemon. wait=True: returns once it answers C-ECHO;
        "ready": once it sent READY=1 (the port is listening), for a
        daemon that refuses our echoscu; False: at once."""
        notify = None
        if wait == "ready":
            path = os.path.join(self.work, "notify-%d.sock" % self.port)
            if os.path.exists(path):
                os.unlink(path)
            notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            notify.bind(path)
            env = dict(env or os.environ, NOTIFY_SOCKET=path)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([BINARY, "run", "--config", self.config],
                                     stdout=self.log, stderr=self.log,
                                     env=env)
        if notify is not None:
            try:
                deadline = time.time() + 30
                notify.settimeout(0.2)
                while time.time() < deadline:
                    if self.proc.poll() is not None:
                        raise Failure("daemon exited at start: " +
                                      self.log_text())
                    try:
                        if notify.recv(256).startswith(b"READY=1"):
                            return self
                    except socket.timeout:
                        pass
                raise Failure("daemon never sent READY=1")
            finally:
                notify.close()
        if wait:
            deadline = time.time() + 60
            while time.time() < deadline:
                if self.proc.poll() is not None:
                    raise Failure("daemon exited at start: " + self.log_text())
                if echo(self.port).returncode == 0:
                    return self
                time.sleep(0.1)
            raise Failure("daemon never answered C-ECHO")
        return self

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self.log.close()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def status(self):
        r = run([BINARY, "status", "--config", self.config, "--json"])
        check(r.returncode == 0, "status --json exits 0 (%s)" % r.stderr)
        return json.loads(r.stdout)

    def entries(self, state="incoming"):
        d = os.path.join(self.spool, state)
        return sorted(os.path.join(d, n) for n in os.listdir(d))


def echo(port, called="STOWBRIDGE", calling="ECHOSCU", extra=()):
    return run(["echoscu", "-to", "5", "-ta", "10", "-td", "10",
                "-aet", calling, "-aec", called, *extra,
                "127.0.0.1", str(port)], timeout=60)


# TCP_NODELAY=1: DCMTK's SCUs turn Nagle's algorithm off only when told,
# else every C-STORE waits ~40 ms for a delayed ACK on loopback (the
# daemon's side has Nagle off itself). What a test proves does not depend
# on that wait; only the suite's wall time does.
NODELAY_ENV = dict(os.environ, TCP_NODELAY="1")


def storescu(port, files, extra=(), calling="STORESCU", timeout=300,
             nodelay=True):
    """storescu -v of @files; @nodelay False leaves Nagle on (a paced
    SCU, as DCMTK's default is)."""
    return run(["storescu", "-v", "-to", "5", "-ta", "30", "-td", "60",
                "-aet", calling, "-aec", "STOWBRIDGE", *extra,
                "127.0.0.1", str(port), *files], timeout=timeout,
               env=NODELAY_ENV if nodelay else None)


def acknowledged_files(output):
    """Pairs storescu -v's 'Sending file' lines with their responses:
    returns the files answered Success."""
    ok, current = [], None
    for line in output.splitlines():
        m = re.match(r"I: Sending file: (.*)$", line)
        if m:
            current = m.group(1)
        elif "Received Store Response (Success)" in line and current:
            ok.append(current)
            current = None
    return ok


def dataset_bytes(path):
    """The bytes after the File Meta Information, and the meta header."""
    with open(path, "rb") as f:
        data = f.read()
    check_magic = data[128:132] == b"DICM"
    if not check_magic:
        raise Failure("%s is not a Part 10 file" % path)
    meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
    # Group length (0002,0000) gives where the data set starts.
    start = 132 + 12 + meta.FileMetaInformationGroupLength
    return data[start:], meta


def same_dataset(a, b):
    """True if the files carry the same data set: every element equal,
    compared by pydicom after decoding, group lengths (gggg,0000) and
    trailing padding (FFFC,FFFC) aside: storescu re-encodes a data set even
    in the same transfer syntax and drops both."""
    def load(path):
        ds = pydicom.dcmread(path)
        def strip(d):
            for elem in list(d):
                if elem.tag.element == 0 or elem.tag == 0xFFFCFFFC:
                    del d[elem.tag]
                elif elem.VR == "SQ":
                    for item in elem.value:
                        strip(item)
        strip(ds)
        return ds

    def equal(x, y):
        if set(e.tag for e in x) != set(e.tag for e in y):
            return False
        for ex in x:
            ey = y[ex.tag]
            if ex.VR == "SQ":
                if len(ex.value) != len(ey.value) or not all(
                        equal(i, j) for i, j in zip(ex.value, ey.value)):
                    return False
            elif ex.value != ey.value:
                # OB and OW hold the same bytes; VR is not compared.
                return False
        return True
    return equal(load(a), load(b))


def sop_uid(path):
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def make_instance(path, study=None, size=256, charset=None, name="Test^Pat",
                  rows=None):
    """Writes a generated CT instance with random pixels."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(path, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.PatientName = name
    ds.PatientID = "IT0001"
    side = rows or size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = side
    ds.Columns = size
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = os.urandom(side * size * 2)
    ds.save_as(path, write_like_original=False)
    return str(ds.SOPInstanceUID)


def make_big_instance(path, megabytes):
    """A multi-frame instance of about MEGABYTES, written without holding
    the pixel data in pydicom (header by pydicom, pixels streamed)."""
    frames = megabytes * 2  # 512x512x16 bit = 0.5 MiB per frame
    pixel_len = frames * 512 * 512 * 2
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enh. CT
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(path, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 512
    ds.Columns = 512
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.save_as(path, write_like_original=False)
    with open(path, "ab") as f:
        # (7FE0,0010) OW, explicit VR little endian, 4-byte length.
        f.write(b"\xe0\x7f\x10\x00OW\x00\x00" + pixel_len.to_bytes(4, "little"))
        chunk = os.urandom(1 << 20)
        for _ in range(pixel_len >> 20):
            f.write(chunk)
    return str(ds.SOPInstanceUID)


def source_ae(meta):
    return str(meta.get("SourceApplicationEntityTitle", "")).strip()


# --------------------------------------------------------------------------


def test_echo(work):
    notify_path = os.path.join(work, "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(10)
    d = Daemon(work).start(env=dict(os.environ, NOTIFY_SOCKET=notify_path))
    check(notify.recv(256).startswith(b"READY=1"),
          "READY=1 sent to $NOTIFY_SOCKET")
    r = echo(d.port)
    check(r.returncode == 0, "C-ECHO answered")
    st = d.status()
    for state in ("incoming", "active", "deferred", "failed"):
        check(st[state] == {"count": 0, "bytes": 0, "oldest_s": 0},
              "status --json: %s is empty" % state)
    r = run([BINARY, "check", "--config", d.config])
    check(r.returncode == 1 and "dicom: FAILED" in r.stdout,
          "check says the port is taken while the daemon runs")
    check("spool: " in r.stdout and "in use by the running daemon" in r.stdout,
          "check reports the spool as owned by the daemon")
    check(d.stop() == 0, "SIGTERM: exit status 0")
    check(notify.recv(256) == b"STOPPING=1", "STOPPING=1 sent on SIGTERM")
    notify.close()
    check("event=stopped" in d.log_text(), "stop is logged")
    r = run([BINARY, "check", "--config", d.config])
    check(r.returncode == 0 and "dicom: ok" in r.stdout, "check passes: "
          + r.stdout)

    bad = os.path.join(work, "bad.json")
    with open(bad, "w") as f:
        f.write('{"dicom": {"prot": 104}}')
    r = run([BINARY, "run", "--config", bad])
    check(r.returncode == 2, "unknown key: run exits 2")
    check("dicom.prot" in r.stderr and "dicom.port" in r.stderr,
          "the message names the key and suggests dicom.port: "
          + r.stderr.strip())
    r = run([BINARY, "run"])
    check(r.returncode == 2 and "--config" in r.stderr, "missing --config")
    r = run([BINARY, "frobnicate", "--config", bad])
    check(r.returncode == 2, "unknown command exits 2")


def varied_files(work):
    """(path, calling-side storescu option) of real and generated files."""
    names = [
        "CT_small.dcm",                    # explicit VR little endian
        "MR_small_implicit.dcm",           # implicit VR little endian
        "MR_small_bigendian.dcm",          # explicit VR big endian
        "image_dfl.dcm",                   # deflated
        "SC_rgb_jpeg_dcmtk.dcm",           # JPEG baseline
        "JPEG-lossy.dcm",                  # JPEG extended (12 bit)
        "MR_small_jpeg_ls_lossless.dcm",   # JPEG-LS lossless
        "MR_small_jp2klossless.dcm",       # JPEG 2000 lossless
        "JPEG2000.dcm",                    # JPEG 2000
        "MR_small_RLE.dcm",                # RLE
        "SC_rgb_rle_2frame.dcm",           # RLE, multi-frame
        "rtdose.dcm",                      # implicit, multi-frame
        "waveform_ecg.dcm",                # waveform
        "rtplan.dcm",                      # non-image
    ]
    files = [os.path.join(TEST_FILES, n) for n in names]
    files += [os.path.join(CHARSET_FILES, n)
              for n in ("chrH31.dcm", "chrGerm.dcm", "chrArab.dcm",
                        "chrFren.dcm")]
    gen = os.path.join(work, "gen")
    os.makedirs(gen)
    utf8 = os.path.join(gen, "utf8.dcm")
    make_instance(utf8, charset="ISO_IR 192", name="Müller^Zoë=山田^太郎")
    files.append(utf8)
    for i in range(3):
        p = os.path.join(gen, "gen%d.dcm" % i)
        make_instance(p, size=128 + 64 * i)
        files.append(p)
    return files


def test_store_varied(work):
    d = Daemon(work).start()
    files = varied_files(work)
    big = os.path.join(work, "big.dcm")
    make_big_instance(big, 105)
    check(os.path.getsize(big) > 100 * 1024 * 1024, "a >100 MB object made")
    files.append(big)

    sent = []
    for path in files:
        ts = str(pydicom.dcmread(path, stop_before_pixels=True)
                 .file_meta.TransferSyntaxUID)
        option = PROPOSE.get(ts)
        check(option is not None, "known transfer syntax %s" % ts)
        r = storescu(d.port, [path], extra=["-R", option],
                     calling="MODALITY1")
        check(r.returncode == 0 and acknowledged_files(r.stdout + r.stderr)
              == [path], "stored with 0000: %s (%s)" %
              (os.path.basename(path), ts))
        sent.append((path, ts))

    spooled = {}
    for entry in d.entries():
        data, meta = dataset_bytes(entry)
        key = (sop_uid(entry), str(meta.TransferSyntaxUID))
        spooled.setdefault(key, []).append((entry, data, meta))
    check(sum(len(v) for v in spooled.values()) == len(sent),
          "exactly %d entries in incoming/" % len(sent))
    for path, ts in sent:
        key = (sop_uid(path), ts)
        check(key in spooled, "spooled: %s" % os.path.basename(path))
        entry, data, meta = spooled[key].pop()
        check(source_ae(meta) == "MODALITY1",
              "SourceApplicationEntityTitle is the calling AE")
        check(same_dataset(path, entry),
              "same data set: %s" % os.path.basename(path))
    check(len(d.entries("tmp")) == 0, "tmp/ empty")
    check(d.stop() == 0, "clean stop")


def test_reject(work):
    d = Daemon(work).start()
    r = echo(d.port, called="WRONG")
    check(r.returncode != 0 and "Called AE Title Not Recognized" in r.stderr,
          "wrong called AE rejected: called AE not recognized")
    d.stop()

    # Our echoscu (ECHOSCU) may not call these two: wait for READY=1.
    d = Daemon(work, dicom={"allowed_callers": [
        {"ae_title": "GOODSCU", "hosts": ["127.0.0.1"]}]}).start(wait="ready")
    r = echo(d.port, calling="GOODSCU")
    check(r.returncode == 0, "allowed caller GOODSCU@127.0.0.1 accepted")
    r = echo(d.port, calling="BADSCU")
    check(r.returncode != 0 and "Calling AE Title Not Recognized" in r.stderr,
          "BADSCU rejected: calling AE not recognized")
    check("caller not in dicom.allowed_callers" in d.log_text(),
          "the rejection says why in the log")
    d.stop()

    d = Daemon(work, dicom={"allowed_callers": [
        {"ae_title": "GOODSCU", "hosts": ["10.1.2.0/24"]}]}).start(wait="ready")
    r = echo(d.port, calling="GOODSCU")
    check(r.returncode != 0 and "Calling AE Title Not Recognized" in r.stderr,
          "GOODSCU from 127.0.0.1 rejected when only 10.1.2.0/24 may call")
    d.stop()

    # Association limit: hold two associations open with raw A-ASSOCIATE-RQs.
    d = Daemon(work, dicom={"max_associations": 2}).start()
    held = [associate(d.port) for _ in range(2)]
    check(all(h is not None for h in held), "two associations held open")
    r = echo(d.port)
    check(r.returncode != 0 and "Rejected Transient" in r.stderr,
          "third association rejected transient: " + r.stderr.strip())
    check("local limit exceeded" in d.log_text(), "logged: local limit")
    for s in held:
        s.close()
    # The slots free as the association threads see the peers gone.
    check(wait_for(lambda: echo(d.port).returncode == 0, 60,
                   "the held associations to end"),
          "served again once the held associations are gone")
    check(d.stop() == 0, "clean stop")


def associate(port, calling=b"HOLDER", called=b"STOWBRIDGE"):
    """Opens an association (Verification, implicit VR LE) and returns
    the socket once accepted, or None."""
    def item(t, body):
        return bytes([t, 0]) + len(body).to_bytes(2, "big") + body
    app = item(0x10, b"1.2.840.10008.3.1.1.1")
    pc = item(0x20, bytes([1, 0, 0, 0]) + item(0x30, b"1.2.840.10008.1.1")
              + item(0x40, b"1.2.840.10008.1.2"))
    user = item(0x50, item(0x51, (16384).to_bytes(4, "big")))
    body = ((1).to_bytes(2, "big") + b"\0\0" + called.ljust(16)
            + calling.ljust(16) + b"\0" * 32 + app + pc + user)
    pdu = bytes([1, 0]) + len(body).to_bytes(4, "big") + body
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(pdu)
    head = s.recv(6)
    if len(head) < 6 or head[0] != 2:
        s.close()
        return None
    return s


def mount_small_fs(path, megabytes):
    os.makedirs(path, exist_ok=True)
    r = run(["mount", "-t", "tmpfs", "-o", "size=%dm,mode=0700" % megabytes,
             "tmpfs", path])
    if r.returncode == 0:
        return "tmpfs"
    img = path + ".img"
    with open(img, "wb") as f:
        f.truncate(megabytes << 20)
    if run(["mkfs.ext4", "-q", "-F", img]).returncode == 0 and \
            run(["mount", "-o", "loop", img, path]).returncode == 0:
        os.chmod(path, 0o700)
        return "ext4 loop"
    return None


def test_disk_full(work):
    fs = os.path.join(work, "small")
    kind = mount_small_fs(fs, 24)
    if kind is None:
        print("skip: cannot mount a small file system here (needs root)")
        sys.exit(SKIP)
    try:
        spool = os.path.join(fs, "spool")
        files = []
        for i in range(10):
            p = os.path.join(work, "f%d.dcm" % i)
            make_instance(p, size=1400)  # ~3.9 MB each
            files.append(p)

        # A: the admission check refuses everything.
        d = Daemon(work, spool_dir=spool,
                   spool={"min_free_mb": 100}).start()
        r = storescu(d.port, files[:2])
        out = r.stdout + r.stderr
        check("Refused: OutOfResources" in out and
              not acknowledged_files(out), "below min_free_mb: A700")
        check(not d.entries() and not d.entries("tmp"),
              "nothing in incoming/ or tmp/")
        check(echo(d.port).returncode == 0, "still answers C-ECHO")
        check("below 100 MiB" in d.log_text(), "the log gives the reason")
        d.stop()

        # B: the disk fills up in the middle of a data set.
        d = Daemon(work, spool_dir=spool).start()
        r = storescu(d.port, files)
        out = r.stdout + r.stderr
        acked = acknowledged_files(out)
        check(0 < len(acked) < len(files),
              "%d of %d stored before the disk was full" %
              (len(acked), len(files)))
        check("Refused: OutOfResources" in out, "then A700")
        check(not d.entries("tmp"), "tmp/ empty: nothing half-written kept")
        entries = d.entries()
        check(len(entries) == len(acked),
              "incoming/ holds exactly the acknowledged instances")
        by_uid = {sop_uid(e): e for e in entries}
        for path in acked:
            entry = by_uid.get(sop_uid(path))
            check(entry is not None, "acknowledged %s is spooled"
                  % os.path.basename(path))
            check(same_dataset(path, entry),
                  "complete data set for %s" % os.path.basename(path))
        check(d.alive() and echo(d.port).returncode == 0,
              "daemon alive and serving")
        check("No space left on device" in d.log_text(),
              "the log names ENOSPC")
        check(d.stop() == 0, "clean stop")
    finally:
        run(["umount", "-l", fs])


def test_garbage(work):
    # dicom.timeout_s 10: "at once" below is under half of it, so it says
    # the next association did not wait for a held socket's timeout, with
    # room for a sanitizer build on a loaded machine.
    timeout_s = 10
    d = Daemon(work, dicom={"timeout_s": timeout_s}).start()
    cases = [
        ("random bytes", os.urandom(5000), True),
        ("truncated A-ASSOCIATE-RQ, closed",
         bytes([1, 0, 0, 0, 3, 0xe8]) + b"\0" * 40, True),
        ("truncated A-ASSOCIATE-RQ, held open",
         bytes([1, 0, 0, 0, 3, 0xe8]) + b"\0" * 40, False),
        ("absurd PDU length", bytes([1, 0, 0xff, 0xff, 0xff, 0xf0]), False),
        ("complete PDU, garbage body", bytes([1, 0, 0, 0, 0, 100])
         + os.urandom(100), True),
        ("nothing at all, held open", b"", False),
    ]
    held = []
    for what, data, close in cases:
        s = socket.create_connection(("127.0.0.1", d.port))
        if data:
            s.sendall(data)
        if close:
            time.sleep(0.1)
            s.close()
        else:
            held.append(s)
        t = time.time()
        r = echo(d.port)
        took = time.time() - t
        check(r.returncode == 0 and took < timeout_s / 2,
              "after %s: the next association is served at once (%.2f s)"
              % (what, took))
    wait_for(lambda: "incomplete A-ASSOCIATE-RQ (timeout)" in d.log_text(),
             timeout_s + 30, "the held half PDU to be dropped")
    for s in held:
        s.close()
    log = d.log_text()
    check("incomplete A-ASSOCIATE-RQ (timeout)" in log,
          "the held half PDU is dropped after dicom.timeout_s")
    check("not an A-ASSOCIATE-RQ" in log, "garbage is named in the log")
    check(d.alive() and echo(d.port).returncode == 0, "daemon alive")

    # A crafted SCU: UID mismatch -> A900, unparseable data set -> C000.
    f = os.path.join(work, "ct.dcm")
    make_instance(f)
    r = run([CRAFT_SCU, str(d.port), "mismatch", f])
    check("status=0xA900" in r.stdout, "SOP Instance UID mismatch: A900")
    r = run([CRAFT_SCU, str(d.port), "garbage", f])
    check("status=0xC000" in r.stdout, "unparseable data set: C000")
    check(not d.entries() and not d.entries("tmp"), "nothing spooled")
    check(d.stop() == 0, "clean stop")


def test_kill9(work):
    src = os.path.join(work, "src")
    os.makedirs(src)
    study = generate_uid()
    files = []
    for i in range(300):
        p = os.path.join(src, "i%03d.dcm" % i)
        make_instance(p, study=study, size=96)
        files.append(p)
    d = Daemon(work).start()
    out_path = os.path.join(work, "storescu.out")
    with open(out_path, "w") as out:
        scu = subprocess.Popen(
            ["storescu", "-v", "-aec", "STOWBRIDGE", "127.0.0.1",
             str(d.port), *files], stdout=out, stderr=subprocess.STDOUT)
        # event=received is logged before its 0000 goes out, and storescu
        # sends the next C-STORE only once it read the last answer: 101
        # lines mean storescu saw at least 100 answers.
        deadline = time.time() + 120
        while time.time() < deadline:
            if d.log_text().count("event=received") >= 101:
                break
            time.sleep(0.01)
        d.proc.kill()  # SIGKILL in the middle of the run
        d.proc.wait()
        scu.wait(timeout=60)
    with open(out_path) as f:
        acked = acknowledged_files(f.read())
    check(100 <= len(acked) < 300,
          "killed mid-run: storescu saw %d acknowledged" % len(acked))

    d2 = Daemon(work, spool_dir=d.spool)
    d2.port = d.port
    d2.config = d.config
    d2.start()
    check(not d2.entries("tmp"), "after restart tmp/ is empty")
    check("event=spool-recovered" in d2.log_text(), "recovery is logged")
    spooled = {}
    for e in d2.entries():
        spooled[sop_uid(e)] = e  # also proves every entry parses
    missing = [p for p in acked if sop_uid(p) not in spooled]
    check(not missing, "every acknowledged instance (%d) is in incoming/ "
          "(%d entries)" % (len(acked), len(spooled)))
    incomplete = [p for p in acked
                  if not same_dataset(p, spooled[sop_uid(p)])]
    check(not incomplete, "every acknowledged entry is complete")

    r = run([BINARY, "run", "--config", d2.config], timeout=30)
    check(r.returncode == 1 and "in use" in r.stderr,
          "a second daemon on the same spool refuses to start")
    check(d2.stop() == 0, "clean stop")


def receiving(d):
    """True while the daemon writes a file being received: a name in tmp/,
    or (O_TMPFILE, the spool's usual path) an open anonymous file of
    incoming/, which /proc shows as "incoming/#<inode> (deleted)"."""
    if os.listdir(os.path.join(d.spool, "tmp")):
        return True
    fds = "/proc/%d/fd" % d.proc.pid
    try:
        for fd in os.listdir(fds):
            try:
                target = os.readlink(os.path.join(fds, fd))
            except OSError:
                continue
            if target.startswith(os.path.join(d.spool, "incoming", "#")):
                return True
    except OSError:
        pass
    return False


def test_sigterm(work):
    big = os.path.join(work, "big.dcm")
    make_big_instance(big, 60)
    d = Daemon(work).start()
    scu = subprocess.Popen(["storescu", "-v", "-aec", "STOWBRIDGE",
                            "127.0.0.1", str(d.port), big],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not receiving(d):
        time.sleep(0.005)
    check(receiving(d), "a C-STORE is in flight")
    d.proc.send_signal(signal.SIGTERM)
    out, _ = scu.communicate(timeout=120)
    rc = d.proc.wait(60)
    acked = acknowledged_files(out)
    check(rc == 0, "daemon exits 0 after SIGTERM")
    if acked:
        check(len(d.entries()) == 1 and
              sop_uid(d.entries()[0]) == sop_uid(big),
              "the in-flight C-STORE finished, was answered 0000 and is "
              "in incoming/")
    else:
        check(not d.entries(), "not acknowledged, and not in incoming/")
    check("event=stopping signal=SIGTERM" in d.log_text(), "stop logged")
    d.start()
    check(not d.entries("tmp"), "restart: tmp/ empty")
    d.stop()


def test_status(work):
    d = Daemon(work).start()
    files = []
    for i in range(5):
        p = os.path.join(work, "s%d.dcm" % i)
        make_instance(p, size=64 + i)
        files.append(p)
    r = storescu(d.port, files)
    check(len(acknowledged_files(r.stdout + r.stderr)) == 5, "5 stored")
    st = d.status()
    total = sum(os.path.getsize(e) for e in d.entries())
    check(st["incoming"]["count"] == 5, "incoming.count == 5")
    check(st["incoming"]["bytes"] == total, "incoming.bytes == %d" % total)
    check(0 <= st["incoming"]["oldest_s"] < 600, "incoming.oldest_s sane")
    check(set(["incoming", "active", "deferred", "failed"]) <= set(st),
          "every state is reported")
    r = run([BINARY, "status", "--config", d.config])
    lines = r.stdout.splitlines()
    check(r.returncode == 0 and any(re.match(r"incoming\s+5\s+%d\s" % total,
                                             l) for l in lines),
          "the table shows incoming 5 %d" % total)
    for state in ("active", "deferred", "failed", "tmp"):
        check(any(l.startswith(state) for l in lines), "table row " + state)
    d.stop()
    r = run([BINARY, "status", "--config", d.config, "--json"])
    check(r.returncode == 0 and json.loads(r.stdout)["incoming"]["count"]
          == 5, "status works without the daemon too")


class MockWeb:
    """A token endpoint (POST /token) and a DICOMweb root (GET
    /dicom-web/studies) on loopback, switched by attributes."""

    def __init__(self, port=0):
        self.token_mode = "ok"       # ok | refuse
        self.studies_status = 200
        self.claims = {"aud": "https://dicom.example.org", "oid": "sp-42",
                       "appid": "client-7", "idtyp": "app", "tid": "t-1"}
        self.token_requests = []
        # time.monotonic() after which each token given out has expired
        # for the daemon too (it counts the lifetime from before its
        # request, so from before this server saw it).
        self.token_expiries = []
        self.auth_headers = []
        self.token_lifetime = 3599
        self.retry_after = "2"       # what 429once answers in Retry-After
        self.stow_mode = "ok"        # ok | mixed | 403 | 401once | 500once
        #                              | split415 | reject415 | garbage
        #                              | reset
        #                              | 429once | slow
        self.stow_requests = []      # (study, [sop uids], [part types])
        self.stored = {}             # sop uid -> part bytes
        # sop uid -> the Failure Reason "ok" answers for it (45070: it is
        # also stored), whichever batch it comes in; a batch of only such
        # instances is answered 409, with others 202.
        self.reasons = {}
        self.resets = 0
        # QIDO-RS: a callable (path, headers) -> (status, body, headers);
        # status None drops the connection. None: GET /studies answers [].
        self.qido = None
        self.lock = threading.Lock()
        mock = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status, body, ctype="application/json"):
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                if mock.stow_mode == "reset" and \
                        self.path.startswith("/dicom-web/studies/"):
                    # Read a little of the body, then cut the connection.
                    self.rfile.read(min(n, 100))
                    mock.stow_mode = "ok"
                    mock.resets += 1
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                seen = time.monotonic()
                body = self.rfile.read(n)
                if self.path.startswith("/dicom-web/studies/"):
                    self.stow(body)
                    return
                mock.token_requests.append(body.decode())
                if mock.token_mode == "refuse":
                    self.reply(401, json.dumps({
                        "error": "invalid_client",
                        "error_description": "AADSTS7000215: Invalid client "
                                             "secret provided."}))
                    return
                with mock.lock:
                    mock.token_expiries.append(seen + mock.token_lifetime)
                claims = dict(mock.claims, exp=int(time.time()) + 3600,
                              iat=int(time.time()))
                self.reply(200, json.dumps({
                    "access_token": jwt(claims), "token_type": "Bearer",
                    "expires_in": str(mock.token_lifetime)}))

            def stow(self, body):
                mock.auth_headers.append(self.headers.get("Authorization"))
                ctype = self.headers.get("Content-Type", "")
                boundary = re.search(r'boundary=([^;]+)', ctype).group(1)
                parts, types, uids = [], [], []
                for chunk in body.split(b"--" + boundary.encode())[1:]:
                    if chunk.startswith(b"--"):
                        break
                    head, _, data = chunk.partition(b"\r\n\r\n")
                    data = data[:-2]  # the CRLF before the next boundary
                    types.append(head.decode().strip())
                    ds = pydicom.dcmread(__import__("io").BytesIO(data),
                                         stop_before_pixels=True)
                    uids.append(str(ds.SOPInstanceUID))
                    parts.append(data)
                study = self.path.rsplit("/", 1)[1]
                with mock.lock:
                    mock.stow_requests.append((study, uids, types))
                    mode = mock.stow_mode
                    if mode.endswith("once"):
                        mock.stow_mode = "ok"
                if mode == "slow":
                    time.sleep(3)
                if mode == "split415" and len(uids) > 1 or \
                        mode == "reject415":
                    self.reply(415, "unsupported media type")
                    return
                if mode == "exists409":
                    failed = [{"00081155": {"vr": "UI", "Value": [u]},
                               "00081197": {"vr": "US", "Value": [45070]}}
                              for u in uids]
                    with mock.lock:
                        mock.stow_mode = "ok"
                        for u, data in zip(uids, parts):
                            mock.stored.setdefault(u, data)
                    self.reply(409, json.dumps({"00081198": {
                        "vr": "SQ", "Value": failed}}),
                        "application/dicom+json")
                    return
                if mode == "garbage":
                    with mock.lock:
                        mock.stow_mode = "ok"
                    self.reply(200, "{\"00081199\": [garbage",
                               "application/dicom+json")
                    return
                if mode == "403":
                    self.reply(403, "{}")
                    return
                if mode == "401once":
                    self.reply(401, "{}")
                    return
                if mode == "500once":
                    self.reply(500, "oops")
                    return
                if mode == "429once":
                    self.send_response(429)
                    self.send_header("Retry-After", mock.retry_after)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                ref, failed = [], []
                for i, (uid, data) in enumerate(zip(uids, parts)):
                    item = {"00081155": {"vr": "UI", "Value": [uid]}}
                    if mode == "mixed" and i == 0:
                        item["00081197"] = {"vr": "US", "Value": [43264]}
                        failed.append(item)
                    elif mode == "mixed" and i == 1:
                        item["00081197"] = {"vr": "US", "Value": [45070]}
                        failed.append(item)
                        with mock.lock:
                            mock.stored[uid] = data
                    elif mode == "ok" and uid in mock.reasons:
                        reason = mock.reasons[uid]
                        item["00081197"] = {"vr": "US", "Value": [reason]}
                        failed.append(item)
                        if reason == 45070:
                            with mock.lock:
                                mock.stored[uid] = data
                    else:
                        ref.append(item)
                        with mock.lock:
                            mock.stored[uid] = data
                answer = {"00081199": {"vr": "SQ", "Value": ref}}
                if failed:
                    answer["00081198"] = {"vr": "SQ", "Value": failed}
                status = 202 if failed else 200
                if mode == "ok" and failed and not ref:
                    status = 409
                self.reply(status, json.dumps(answer),
                           "application/dicom+json")

            def do_GET(self):
                mock.auth_headers.append(self.headers.get("Authorization"))
                if mock.qido is not None:
                    status, body, headers = mock.qido(self.path,
                                                      self.headers)
                    if status is None:      # drop the connection
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return
                    data = body.encode()
                    self.send_response(status)
                    for name, value in headers:
                        self.send_header(name, value)
                    if status != 204:
                        self.send_header("Content-Type",
                                         "application/dicom+json")
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if status != 204:
                        self.wfile.write(data)
                    return
                if mock.studies_status == 200:
                    self.reply(200, "[]", "application/dicom+json")
                else:
                    self.reply(mock.studies_status, "{}")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port),
                                                      Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def jwt(claims):
    def b64(obj):
        raw = json.dumps(obj).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return b64({"alg": "none", "typ": "JWT"}) + "." + b64(claims) + ".sig"


def upload_config(work, mock, url=None, **auth):
    cfg = {
        "spool": {"dir": os.path.join(work, "spool"), "min_free_mb": 0,
                  "journal_mb": 8},
        "dicom": {"port": free_port()},
        "upload": {"url": url or "http://127.0.0.1:%d/dicom-web" % mock.port,
                   "timeout_s": 5},
        "auth": dict({"type": "client_credentials",
                      "token_url": "http://127.0.0.1:%d/token" % mock.port,
                      "client_id": "client-7",
                      "client_secret_file": os.path.join(work, "secret")},
                     **auth),
    }
    with open(os.path.join(work, "secret"), "w") as f:
        f.write("pa55+word\n")
    os.chmod(os.path.join(work, "secret"), 0o600)
    path = os.path.join(work, "upload.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


def test_token(work):
    mock = MockWeb()
    try:
        conf = upload_config(work, mock, scope="https://dicom.example.org/.default")
        r = run([BINARY, "token", "--config", conf])
        check(r.returncode == 0, "token: exit 0 (%s)" % r.stdout[-300:])
        check(re.search(r'"oid":\s*"sp-42"', r.stdout) and
              re.search(r'"alg":\s*"none"', r.stdout),
              "header and claims printed")
        check("ok: valid for" in r.stdout, "expiry shown")
        check("eyJ" not in r.stdout, "the token itself is not printed")
        check("pa55" not in r.stdout + r.stderr, "the secret is not printed")
        body = mock.token_requests[-1]
        check("grant_type=client_credentials" in body and
              "client_secret=pa55%2Bword" in body and
              "scope=https%3A%2F%2Fdicom.example.org%2F.default" in body,
              "client_credentials form with the secret from the file")
        r = run([BINARY, "token", "--config", conf, "--raw"])
        check(r.returncode == 0 and "access_token: eyJ" in r.stdout,
              "--raw prints the token")

        # Azure DICOM URL with a token for another audience.
        conf = upload_config(work, mock, url="https://ws-d.dicom."
                             "azurehealthcareapis.com/v2")
        r = run([BINARY, "token", "--config", conf])
        check(r.returncode == 1 and "error: the audience is "
              "'https://dicom.example.org'" in r.stdout and
              "/.default" in r.stdout, "wrong audience diagnosed")

        mock.token_mode = "refuse"
        conf = upload_config(work, mock)
        r = run([BINARY, "token", "--config", conf])
        check(r.returncode == 1 and "invalid_client" in r.stdout and
              "AADSTS7000215" in r.stdout,
              "refused client: the server's reason is shown")
    finally:
        mock.close()
    r = run([BINARY, "token", "--config", conf])
    check(r.returncode == 1 and "unreachable" in r.stdout,
          "token endpoint down: said so")


def test_check_upload(work):
    mock = MockWeb()
    try:
        conf = upload_config(work, mock)
        r = run([BINARY, "check", "--config", conf])
        check(r.returncode == 0 and "auth: ok" in r.stdout and
              "dicomweb: ok (HTTP 200" in r.stdout, "check: all ok\n" +
              r.stdout)
        check(mock.auth_headers[-1].startswith("Bearer eyJ"),
              "the probe carries the token")
        mock.studies_status = 403
        r = run([BINARY, "check", "--config", conf])
        check(r.returncode == 1 and "dicomweb: FAILED" in r.stdout and
              "HTTP 403" in r.stdout and "appid=client-7" in r.stdout and
              "oid=sp-42" in r.stdout and "roles=[none]" in r.stdout,
              "403: the identity is named\n" + r.stdout)
        mock.studies_status = 401
        r = run([BINARY, "check", "--config", conf])
        check(r.returncode == 1 and "HTTP 401" in r.stdout, "401 reported")
        mock.token_mode = "refuse"
        r = run([BINARY, "check", "--config", conf])
        check(r.returncode == 1 and "auth: FAILED" in r.stdout and
              "invalid_client" in r.stdout, "token refused reported")
        r = run([BINARY, "check", "--config", conf, "--dump"])
        check("pa55" not in r.stdout and '"client_secret": "********"' in
              r.stdout, "--dump masks the secret")
    finally:
        mock.close()
    mock_port = mock.port
    conf = upload_config(work, mock, type="none")
    r = run([BINARY, "check", "--config", conf])
    check(r.returncode == 1 and "dicomweb: FAILED" in r.stdout and
          ("127.0.0.1:%d" % mock_port) in r.stdout,
          "DICOMweb server down: said so")


def upload_daemon(work, mock, **extra):
    conf = upload_config(work, mock)
    with open(conf) as f:
        cfg = json.load(f)
    cfg["retry"] = {"min_s": 1, "max_s": 4}
    cfg["log"] = {"level": "debug"}
    for section, values in extra.items():
        cfg.setdefault(section, {}).update(values)
    d = Daemon(work, **{k: v for k, v in cfg.items()
                        if k in ("upload", "auth", "retry", "log")})
    return d


def wait_for(predicate, seconds, what):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    raise Failure("timed out waiting: " + what)


def spool_empty(d):
    return not any(d.entries(s) for s in ("incoming", "active", "deferred"))


def test_upload(work):
    mock = MockWeb()
    try:
        d = upload_daemon(work, mock).start()
        files, uids = [], set()
        for study in (generate_uid(), generate_uid()):
            for i in range(3):
                p = os.path.join(work, "u%d.dcm" % len(files))
                uids.add(make_instance(p, study=study, size=64))
                files.append(p)
        r = storescu(d.port, files)
        check(len(acknowledged_files(r.stdout + r.stderr)) == 6, "6 stored")
        # Each event=delivered line follows its entry's removal.
        wait_for(lambda: spool_empty(d) and
                 d.log_text().count("event=delivered") >= 6, 30, "uploads")
        check(set(mock.stored) == uids, "every instance reached the server")
        by_study = {}
        for study, sent, types in mock.stow_requests:
            by_study.setdefault(study, set()).update(sent)
            check(all(t == "Content-Type: application/dicom" for t in types),
                  "every part is exactly application/dicom")
        check(len(by_study) == 2 and all(len(v) == 3 for v in
                                         by_study.values()),
              "batched per study: %s" % [len(v) for v in by_study.values()])
        for p in files:
            u = sop_uid(p)
            out = os.path.join(work, "got-" + u + ".dcm")
            with open(out, "wb") as f:
                f.write(mock.stored[u])
            check(same_dataset(p, out), "the server got the same data set")
        check(len(mock.token_requests) == 1, "one token for all of it")
        check(all(h.startswith("Bearer ") for h in mock.auth_headers),
              "every request carries the token")
        log = d.log_text()
        check(log.count("event=delivered") == 6, "6 delivered events")
        check("pa55" not in log and "eyJ" not in log,
              "no secret and no token in the log")
        check(d.stop() == 0, "clean stop")
    finally:
        mock.close()


def test_upload_outcomes(work):
    mock = MockWeb()
    try:
        # retry.max_s 60: the 403 entry (retried after max_s) stays in
        # deferred/ while queue show and queue delete look at it; the
        # other retries here wait retry.min_s or Retry-After.
        d = upload_daemon(work, mock, retry={"max_s": 60}).start()
        study = generate_uid()

        def send(n, tag):
            files = []
            for i in range(n):
                p = os.path.join(work, "%s%d.dcm" % (tag, i))
                make_instance(p, study=study, size=32)
                files.append(p)
            r = storescu(d.port, files)
            check(len(acknowledged_files(r.stdout + r.stderr)) == n,
                  "%d stored (%s)" % (n, tag))
            return files

        # 202: one rejected (A900), one already there (45070), one stored;
        # the answers are per instance, so they hold however the three
        # are batched.
        files = []
        for i in range(3):
            files.append(os.path.join(work, "mixed%d.dcm" % i))
            make_instance(files[-1], study=study, size=32)
        mock.reasons = {sop_uid(files[0]): 43264, sop_uid(files[1]): 45070}
        r = storescu(d.port, files)
        check(len(acknowledged_files(r.stdout + r.stderr)) == 3,
              "3 stored (mixed)")
        wait_for(lambda: spool_empty(d), 30, "mixed outcomes")
        mock.reasons = {}
        failed = d.entries("failed")
        check(len(failed) == 1 and sop_uid(failed[0]) == sop_uid(files[0]),
              "the A900 instance is in failed/")
        meta = open(os.path.join(d.spool, "meta",
                                 os.path.basename(failed[0])[:-4])).read()
        check("last_reason=43264" in meta and "A900" in meta,
              "failed/ keeps the Failure Reason and its meaning")
        check(d.status()["failed"]["count"] == 1, "status counts it")
        check(sop_uid(files[1]) in mock.stored and sop_uid(files[2]) in
              mock.stored, "already-stored and stored count as delivered")

        # The operator sees why, and sends it again once the cause is fixed.
        fid = os.path.basename(failed[0])[:-4]
        r = run([BINARY, "queue", "list", "failed", "--config", d.config])
        check(r.returncode == 0 and fid in r.stdout and "A900" in r.stdout,
              "queue list failed shows the entry and its error")
        r = run([BINARY, "queue", "show", fid, "--config", d.config])
        check(r.returncode == 0 and "state:        failed" in r.stdout and
              "last reason:  A900 (data set does not match SOP Class)" in
              r.stdout and "attempts:     1" in r.stdout,
              "queue show gives state, reason and attempts")
        r = run([BINARY, "queue", "retry", fid, "--config", d.config])
        check(r.returncode == 0 and "failed -> incoming" in r.stdout,
              "queue retry moves it back")
        wait_for(lambda: sop_uid(files[0]) in mock.stored, 30,
                 "the retried entry is delivered")
        r = run([BINARY, "queue", "show", "1.2.3", "--config", d.config])
        check(r.returncode == 2, "a bad ID is a usage error")

        # 401 once: the token is refreshed and the batch replayed once.
        tokens = len(mock.token_requests)
        requests = len(mock.stow_requests)
        mock.stow_mode = "401once"
        send(1, "auth")
        wait_for(lambda: spool_empty(d), 30, "401 replay")
        check(len(mock.token_requests) == tokens + 1, "one new token")
        check(len(mock.stow_requests) == requests + 2,
              "the 401 batch is replayed exactly once")
        check("event=token-refused status=401" in d.log_text(),
              "the replay is logged")

        # 500 once, then delivered after a retry with backoff.
        mock.stow_mode = "500once"
        files = send(1, "err")
        wait_for(lambda: sop_uid(files[0]) in mock.stored, 30, "500 retry")
        check("reason=\"HTTP 500\"" in d.log_text(), "the 500 is logged")

        # 429 with Retry-After pauses every worker.
        mock.stow_mode = "429once"
        files = send(1, "busy")
        wait_for(lambda: sop_uid(files[0]) in mock.stored, 30, "429 retry")
        check("event=paused" in d.log_text() and "seconds=2" in d.log_text(),
              "Retry-After pauses the whole service")
        nexts = [int(m) for m in re.findall(
            r'event=deferred .*next=(\d+)s reason="HTTP 429"', d.log_text())]
        check(nexts and min(nexts) >= 2,
              "the 429 instance waits at least Retry-After (%s s)" % nexts)

        # 403: deferred, never failed, with the identity in the log.
        mock.stow_mode = "403"
        files = send(1, "deny")
        wait_for(lambda: "event=forbidden" in d.log_text(), 30, "403")
        check(not d.entries("failed"), "403 does not dead-letter")
        check("appid=client-7" in d.log_text() and "oid=sp-42" in
              d.log_text(), "the 403 diagnosis names the identity")
        wait_for(lambda: len(d.entries("deferred")) == 1, 30, "deferred")
        check(len(d.entries("deferred")) == 1,
              "the 403 instance waits in deferred/")
        did = os.path.basename(d.entries("deferred")[0])[:-4]
        r = run([BINARY, "queue", "show", did, "--config", d.config])
        check("last status:  HTTP 403" in r.stdout, "queue show: HTTP 403")
        r = run([BINARY, "queue", "delete", did, "--config", d.config])
        check(r.returncode == 0 and not d.entries("deferred"),
              "queue delete removes it")
        r = run([BINARY, "queue", "retry", "--all-failed", "--config",
                 d.config])
        check(r.returncode == 0 and "0 failed entries retried" in r.stdout,
              "retry --all-failed with nothing failed")
        mock.stow_mode = "ok"
        check(d.stop() == 0, "clean stop")
    finally:
        mock.close()


def test_upload_kill9(work):
    mock = MockWeb()
    try:
        d = upload_daemon(work, mock, upload={"workers": 2,
                                              "batch_max_instances": 5})
        d.start()
        files, uids = [], set()
        for i in range(20):
            p = os.path.join(work, "k%d.dcm" % i)
            uids.add(make_instance(p, size=32))
            files.append(p)
        mock.stow_mode = "slow"
        r = storescu(d.port, files)
        check(len(acknowledged_files(r.stdout + r.stderr)) == 20,
              "20 acknowledged")
        wait_for(lambda: len(mock.stow_requests) >= 1, 30, "an upload")
        d.proc.kill()
        d.proc.wait()
        check(d.entries("active"), "killed with uploads in flight")
        mock.stow_mode = "ok"
        d.start()
        wait_for(lambda: spool_empty(d), 60, "delivery after restart")
        check(uids <= set(mock.stored),
              "every acknowledged instance delivered after kill -9 "
              "(at least once)")
        check(d.stop() == 0, "clean stop")
    finally:
        mock.close()


class Orthanc:
    """A real Orthanc with its DICOMweb plugin (Debian packages orthanc,
    orthanc-dicomweb) on loopback, in a temp dir."""

    PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"

    def __init__(self, work):
        if not os.path.exists("/usr/sbin/Orthanc") or \
                not os.path.exists(self.PLUGIN):
            print("skip: Orthanc or its DICOMweb plugin is not installed")
            sys.exit(SKIP)
        self.dir = os.path.join(work, "orthanc")
        os.makedirs(self.dir)
        self.port = free_port()
        cfg = {
            "Name": "it", "HttpPort": self.port, "DicomPort": free_port(),
            "StorageDirectory": os.path.join(self.dir, "db"),
            "IndexDirectory": os.path.join(self.dir, "db"),
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "Plugins": [self.PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "HttpTimeout": 60, "StableAge": 1,
        }
        conf = os.path.join(self.dir, "orthanc.json")
        with open(conf, "w") as f:
            json.dump(cfg, f)
        self.log = open(os.path.join(work, "orthanc.log"), "wb")
        self.proc = subprocess.Popen(["/usr/sbin/Orthanc", conf],
                                     stdout=self.log, stderr=self.log)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                self.get("/system")
                return
            except OSError:
                time.sleep(0.2)
        raise Failure("Orthanc did not start")

    def get(self, path):
        import urllib.request
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.port, path),
                                    timeout=30) as r:
            return r.read()

    def post(self, path, body):
        import urllib.request
        req = urllib.request.Request(
            "http://127.0.0.1:%d%s" % (self.port, path),
            data=body.encode(), method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def instance_file(self, sop):
        found = self.post("/tools/lookup", sop)
        ids = [x["ID"] for x in found if x["Type"] == "Instance"]
        return self.get("/instances/%s/file" % ids[0]) if ids else None

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def test_upload_faults(work):
    mock = MockWeb()
    port = mock.port
    try:
        d = upload_daemon(work, mock, upload={"batch_max_instances": 10})
        d.start()
        study = generate_uid()
        n = [0]

        def make(count, of=study):
            files = []
            for i in range(count):
                p = os.path.join(work, "f%d.dcm" % n[0])
                n[0] += 1
                make_instance(p, study=of, size=32)
                files.append(p)
            return files

        def send(count, of=study, files=None):
            files = files or make(count, of)
            r = storescu(d.port, files)
            check(len(acknowledged_files(r.stdout + r.stderr)) == count,
                  "%d stored" % count)
            return [sop_uid(f) for f in files]

        # 415 for the batch: split, each alone is accepted. A batch of
        # three needs the three in incoming/ at one scheduling pass, so
        # uploads are paused while they arrive (a 429 with Retry-After for
        # an instance of another study), then resumed.
        mock.retry_after = "3600"
        mock.stow_mode = "429once"
        held = send(1, of=generate_uid())
        wait_for(lambda: re.search(r'event=deferred sop=%s .*reason="HTTP '
                                   r'429' % re.escape(held[0]),
                                   d.log_text()), 30, "uploads paused")
        mock.stow_mode = "split415"
        uids = send(3)
        check(not set(uids) & set(mock.stored), "nothing sent while paused")
        r = run([BINARY, "queue", "resume", "--config", d.config])
        check(r.returncode == 0 and "pause lifted" in r.stdout,
              "queue resume: " + r.stdout.strip())
        wait_for(lambda: set(uids + held) <= set(mock.stored), 30, "split")
        check(re.search(r"event=split study=%s instances=3 status=415"
                        % re.escape(study), d.log_text()),
              "the batch of three was split")
        check(not d.entries("failed"), "nothing dead-lettered by a split")
        # 415 for the instance alone: dead-lettered with the reason.
        mock.stow_mode = "reject415"
        send(1)
        wait_for(lambda: d.entries("failed"), 30, "reject")
        check("HTTP 415 for this instance alone" in
              open(os.path.join(d.spool, "meta", os.path.basename(
                  d.entries("failed")[0])[:-4])).read(),
              "the 415 is the recorded reason")
        # 409, every instance already there (45070): delivered, not failed.
        # The answer is per instance (MockWeb.reasons), so it holds however
        # the two are batched. The event=delivered lines follow the
        # removals: wait for both.
        mock.stow_mode = "ok"
        files = make(2)
        mock.reasons = {sop_uid(f): 45070 for f in files}
        uids = send(2, files=files)
        wait_for(lambda: spool_empty(d) and
                 d.log_text().count("status=409") >= 2, 30,
                 "409 already stored")
        check(len(d.entries("failed")) == 1 and
              d.log_text().count("status=409") == 2,
              "409 with 45070 counts as delivered")
        mock.reasons = {}
        # Garbage JSON in a 200: deferred, then delivered.
        mock.stow_mode = "garbage"
        uids = send(1)
        wait_for(lambda: uids[0] in mock.stored, 30, "after garbage")
        check("cannot be read" in d.log_text(), "garbage answer logged")
        # A connection reset in the middle of the body.
        mock.stow_mode = "reset"
        uids = send(2)
        wait_for(lambda: set(uids) <= set(mock.stored), 30, "after reset")
        check(mock.resets == 1, "one connection was reset mid-body")
        # The server is down: everything waits in deferred/, then goes.
        mock.close()
        uids = send(4)
        wait_for(lambda: len(d.entries("deferred")) == 4 and
                 "no answer from" in d.log_text(), 30, "deferred")
        check(len(d.entries("failed")) == 1 and not d.entries("incoming"),
              "a dead server defers, never dead-letters")
        # The server comes back on the same port (the uploader's URL).
        mock = restart_mock_on(port)
        wait_for(lambda: set(uids) <= set(mock.stored), 60,
                 "delivery once the server is back")
        check(d.stop() == 0, "clean stop")
    finally:
        mock.close()


def restart_mock_on(port):
    """A new MockWeb bound to @port (the server comes back)."""
    deadline = time.time() + 10
    while True:
        mock = MockWeb.__new__(MockWeb)
        try:
            MockWeb.__init__(mock, port=port)
            return mock
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def test_token_refresh(work):
    """A 3-second token lifetime and uploads spread over 20 s: no upload
    fails, and the token requests stay near 20/3."""
    mock = MockWeb()
    mock.token_lifetime = 3
    try:
        d = upload_daemon(work, mock).start()
        uids = set()
        start = time.time()
        i = 0
        while time.time() - start < 20:
            p = os.path.join(work, "t%d.dcm" % i)
            i += 1
            uids.add(make_instance(p, size=32))
            r = storescu(d.port, [p])
            check(len(acknowledged_files(r.stdout + r.stderr)) == 1,
                  "stored %d" % i)
            time.sleep(0.5)
        wait_for(lambda: spool_empty(d), 30, "uploads")
        check(uids <= set(mock.stored), "all %d delivered" % len(uids))
        log = d.log_text()
        check("event=deferred" not in log and "event=failed" not in log and
              "status=401" not in log, "no upload failed, no 401")
        tokens = len(mock.token_requests)
        check(5 <= tokens <= 12, "%d token requests for 20 s of 3 s tokens"
              % tokens)
        check(d.stop() == 0, "clean stop")
    finally:
        mock.close()


def test_upload_expiry(work):
    """An entry older than retry.max_age_h whose attempt fails is
    dead-lettered as expired; a token endpoint that refuses or is down is
    an outage: entries wait."""
    mock = MockWeb()
    mock.token_lifetime = 1
    try:
        d = upload_daemon(work, mock, retry={"max_age_h": 1})
        os.makedirs(os.path.join(d.spool, "incoming"), exist_ok=True)
        os.chmod(d.spool, 0o700)
        old = os.path.join(d.spool, "incoming",
                           "1700000000.000001-00000000000000ab.dcm")
        make_instance(old, size=16)
        os.chmod(old, 0o600)
        mock.stow_mode = "500once"
        d.start()
        wait_for(lambda: d.entries("failed"), 30, "expiry")
        meta = open(os.path.join(d.spool, "meta", "1700000000.000001-"
                                 "00000000000000ab")).read()
        check("expired: not delivered within 1 h; last error: HTTP 500" in
              meta, "an old entry whose attempt fails is failed as expired")

        # Tokens live 1 s here: once every token given out so far has
        # expired (the last one counted from when its request came in,
        # which is after the daemon started its clock), the next upload
        # needs a new one, and the endpoint refuses it.
        mock.token_mode = "refuse"
        with mock.lock:
            expiry = max(mock.token_expiries)
        wait_for(lambda: time.monotonic() > expiry, 30,
                 "the daemon's last token to expire")
        p = os.path.join(work, "t.dcm")
        uid = make_instance(p, size=16)
        r = storescu(d.port, [p])
        check(len(acknowledged_files(r.stdout + r.stderr)) == 1, "stored")
        # The event=deferred line follows the move to deferred/: wait for
        # the line, not the directory.
        deferred = r'id=(\S+) event=deferred .*reason="no token: token ' \
            r'endpoint refused'
        wait_for(lambda: re.search(deferred, d.log_text()), 30,
                 "deferred without token")
        check(len(d.entries("failed")) == 1,
              "a refused token defers, never dead-letters")
        mock.token_mode = "ok"
        # The entry may already be on its retry (deferred/ -> active/):
        # queue retry then finds nothing to move, and the retry delivers it.
        run([BINARY, "queue", "retry",
             re.search(deferred, d.log_text()).group(1),
             "--config", d.config])
        wait_for(lambda: uid in mock.stored, 30, "delivered once the token "
                 "endpoint accepts the client again")
        check(d.stop() == 0, "clean stop")
    finally:
        mock.close()


def test_orthanc(work):
    orthanc = Orthanc(work)
    try:
        # The sample files reuse SOP Instance UIDs in other transfer
        # syntaxes (different bytes): send them all, Orthanc decides.
        d = Daemon(work, upload={
            "url": "http://127.0.0.1:%d/dicom-web" % orthanc.port,
            "timeout_s": 30, "on_conflict": "send"},
            retry={"min_s": 1, "max_s": 4}).start()
        files = varied_files(work)
        sent = []
        for path in files:
            ts = str(pydicom.dcmread(path, stop_before_pixels=True)
                     .file_meta.TransferSyntaxUID)
            r = storescu(d.port, [path], extra=["-R", PROPOSE[ts]])
            if acknowledged_files(r.stdout + r.stderr) == [path]:
                sent.append(path)
        check(len(sent) == len(files), "all %d files stored" % len(files))
        wait_for(lambda: spool_empty(d), 120, "uploads to Orthanc")
        failed = d.entries("failed")
        check(not failed, "nothing dead-lettered: %s" % [
            run([BINARY, "queue", "show", os.path.basename(f)[:-4],
                 "--config", d.config]).stdout for f in failed])
        # pydicom's sample files reuse SOP Instance UIDs across files: the
        # server keeps one instance per UID; compare against one of them.
        by_uid = {}
        for path in sent:
            by_uid.setdefault(sop_uid(path), []).append(path)
        for uid, paths in by_uid.items():
            data = orthanc.instance_file(uid)
            check(data is not None, "in Orthanc: %s" %
                  os.path.basename(paths[0]))
            got = os.path.join(work, "orthanc-" + uid + ".dcm")
            with open(got, "wb") as f:
                f.write(data)
            check(any(same_dataset(p, got) for p in paths),
                  "same data set in Orthanc: %s" % os.path.basename(paths[0]))
        check(d.stop() == 0, "clean stop")
    finally:
        orthanc.close()


def main():
    global BINARY, CRAFT_SCU
    BINARY, CRAFT_SCU, name = sys.argv[1], sys.argv[2], sys.argv[3]
    test = globals().get("test_" + name)
    if test is None:
        print("no such test:", name)
        return 2
    return run_test(test, name)


def run_test(test, name):
    """Runs TEST in a fresh work dir; prints the logs' tails on failure and
    kills anything left running from that dir."""
    work = tempfile.mkdtemp(prefix="stowbridge-it-")
    try:
        test(work)
        print("PASS", name)
        return 0
    except Failure as e:
        print("FAIL", name + ":", e)
        for log in sorted(n for n in os.listdir(work) if n.endswith(".log")):
            with open(os.path.join(work, log), "rb") as f:
                tail = f.read()[-4000:].decode("utf-8", "replace")
            print("--- %s (tail)\n%s" % (log, tail))
        return 1
    finally:
        for line in run(["pgrep", "-f", work]).stdout.split():
            try:
                os.kill(int(line), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
