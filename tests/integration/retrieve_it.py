#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Integration tests of C-MOVE and C-GET answered through QIDO-RS and
WADO-RS (issue 15): the real stowbridge binary, DCMTK's movescu, getscu
and storescp, a real Orthanc with its DICOMweb plugin (as the DICOMweb
server, as a C-MOVE SCU and as a move destination), a raw-PDU SCU for
what the tools cannot show (identifiers of final responses, C-CANCEL at a
chosen moment), and a scripted Azure-rules server that misbehaves on
request (fake_dicomweb.py).

usage: retrieve_it.py BINARY TEST

Each TEST is one function below (test_<name>); CTest runs each as its own
test with a timeout. A retrieved data set is compared with the original
element by element (dcmdump +L output without group 0002, group lengths,
padding and the encoding of lengths); a decompressed one with what
DCMTK's own dcmdjpeg/dcmdjpls/dcmdrle make of the original. 77 means
skipped (a tool is missing).
"""
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import it  # noqa: E402
from it import Failure, check, run, wait_for  # noqa: E402
import dimse_peer as dp  # noqa: E402
import fake_dicomweb  # noqa: E402

import pydicom  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

TOOLS = ["movescu", "getscu", "storescp", "storescu", "dcmdump", "echoscu",
         "dcmcjpeg", "dcmcjpls", "dcmcrle", "dcmdjpeg", "dcmdjpls", "dcmdrle",
         "ss"]

EXPLICIT = "1.2.840.10008.1.2.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
MOVE = {"S": "1.2.840.10008.5.1.4.1.2.2.2", "P": "1.2.840.10008.5.1.4.1.2.1.2"}
GET = {"S": "1.2.840.10008.5.1.4.1.2.2.3", "P": "1.2.840.10008.5.1.4.1.2.1.3"}
C_MOVE_RQ, C_MOVE_RSP = 0x0021, 0x8021
C_GET_RQ, C_GET_RSP = 0x0010, 0x8010
C_STORE_RQ, C_STORE_RSP = 0x0001, 0x8001
MR = "1.2.840.10008.5.1.4.1.1.4"
PENDING, SUCCESS, WARNING, CANCEL = 0xFF00, 0x0000, 0xB000, 0xFE00
REFUSED_RESOURCES, ALL_FAILED, DEST_UNKNOWN = 0xA701, 0xA702, 0xA801

BINARY = None


def need_tools():
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        print("skip: missing tools:", " ".join(missing))
        sys.exit(it.SKIP)


# --------------------------------------------------------------------------
# Data


def make_ct(path, study, series, patient="RTPAT1", name="Retrieve^Test",
            size=32, number=1):
    """A generated CT instance in @study/@series (explicit VR LE)."""
    it.make_instance(path, study=study, size=size, name=name)
    ds = pydicom.dcmread(path)
    ds.SeriesInstanceUID = series
    ds.PatientID = patient
    ds.InstanceNumber = number
    ds.save_as(path, write_like_original=False)
    return str(ds.SOPInstanceUID)


def retag(src, dst, study, series, patient="RTPAT1"):
    """Copies @src to @dst with new UIDs in @study/@series, keeping its
    transfer syntax and pixel encoding."""
    ds = pydicom.dcmread(src)
    sop = generate_uid()
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.SOPInstanceUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.PatientID = patient
    ds.save_as(dst, write_like_original=True)
    return sop


def uids(path):
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return (str(ds.get("PatientID", "")), str(ds.StudyInstanceUID),
            str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))


def ts_of(path):
    return str(pydicom.dcmread(path, stop_before_pixels=True)
               .file_meta.TransferSyntaxUID)


def sha256_tail(path, length):
    """SHA-256 of the last @length bytes of @path."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(-length, os.SEEK_END)
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


DUMP_SKIP = re.compile(r"^\((0002,....|....,0000|fffc,fffc|fffe,e00d|"
                       r"fffe,e0dd)\)")


def dump(path, full=True):
    """The data set of @path as dcmdump prints it, element by element:
    [(depth, tag, VR, value, VM, keyword)], without the meta header
    (group 0002), group lengths, trailing padding, delimitation items and
    the way lengths are encoded (explicit or undefined)."""
    r = run(["dcmdump", "-q", "+L" if full else "-L", path], timeout=120)
    if r.returncode != 0:
        raise Failure("dcmdump %s: %s" % (path, r.stderr))
    out = []
    for line in r.stdout.splitlines():
        s = line.strip()
        if not s.startswith("(") or DUMP_SKIP.match(s):
            continue
        head, _, tail = s.rpartition("#")
        head = re.sub(r"\((Sequence|Item) with (explicit|undefined) length",
                      r"(\1", head).rstrip()
        tail = re.sub(r"^\s*(\d+|u/l),\s*", "", tail)
        depth = (len(line) - len(line.lstrip())) // 4
        out.append((depth, head, tail))
    return out


def same_elements(got, want, what, full=True):
    a, b = dump(got, full), dump(want, full)
    if a != b:
        diff = [(x, y) for x, y in zip(a, b) if x != y][:3]
        if not diff:
            diff = "lengths %d and %d" % (len(a), len(b))
        raise Failure("%s: data sets differ: %s" % (what, diff))
    print("ok: %s: %d elements equal" % (what, len(a)))


def decompressed(path, work):
    """What DCMTK's own decoder makes of @path (Explicit VR LE)."""
    tool = {"1.2.840.10008.1.2.4.70": "dcmdjpeg",
            "1.2.840.10008.1.2.4.57": "dcmdjpeg",
            "1.2.840.10008.1.2.4.50": "dcmdjpeg",
            "1.2.840.10008.1.2.4.80": "dcmdjpls",
            "1.2.840.10008.1.2.4.81": "dcmdjpls",
            "1.2.840.10008.1.2.5": "dcmdrle"}[ts_of(path)]
    out = os.path.join(work, "dec-" + os.path.basename(path))
    r = run([tool, path, out])
    if r.returncode != 0:
        raise Failure("%s %s: %s" % (tool, path, r.stderr))
    return out


# --------------------------------------------------------------------------
# Peers


class Dest:
    """A storescp move destination on loopback (Nagle off unless
    @nodelay is False). @accept: "all" (every
    transfer syntax DCMTK knows), "uncompressed" (storescp's default) or
    "explicit" (Explicit VR LE only, from a generated configuration file,
    for @classes)."""

    def __init__(self, work, ae="DEST", accept="all", classes=(CT,),
                 debug=True, port=None, extra=(), nodelay=True):
        self.ae = ae
        self.port = port or it.free_port()
        self.dir = os.path.join(work, "dest-" + ae)
        os.makedirs(self.dir, exist_ok=True)
        args = ["storescp", "-d" if debug else "-v", "-aet", ae,
                "-od", self.dir, "-dhl"]
        if accept == "all":
            args.append("+xa")
        elif accept == "explicit":
            cfg = os.path.join(work, "storescp-%s.cfg" % ae)
            with open(cfg, "w") as f:
                f.write("[[TransferSyntaxes]]\n[ExplicitLE]\n"
                        "TransferSyntax1 = %s\n" % EXPLICIT)
                f.write("[[PresentationContexts]]\n[Explicit]\n"
                        "PresentationContext1 = 1.2.840.10008.1.1\\"
                        "ExplicitLE\n")
                for n, uid in enumerate(classes):
                    f.write("PresentationContext%d = %s\\ExplicitLE\n" %
                            (n + 2, uid))
                f.write("[[Profiles]]\n[ExplicitOnly]\n"
                        "PresentationContexts = Explicit\n")
            args += ["-xf", cfg, "ExplicitOnly"]
        args += list(extra)
        args.append(str(self.port))
        self.log_path = os.path.join(work, "storescp-%s.log" % ae)
        self.log = open(self.log_path, "ab")
        # TCP_NODELAY=1: DCMTK turns Nagle's algorithm off, else every
        # C-STORE-RSP waits ~40 ms for a delayed ACK on loopback.
        env = dict(os.environ, TCP_NODELAY="1") if nodelay else None
        self.proc = subprocess.Popen(args, stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env)
        wait_for(lambda: listening(self.port) or self.proc.poll() is not None,
                 20, "storescp %s listening" % ae)
        if self.proc.poll() is not None:
            raise Failure("storescp %s exited: %s" % (ae, self.log_text()))

    def remote(self, **extra):
        entry = {"ae_title": self.ae, "host": "127.0.0.1", "port": self.port,
                 "tls": False}
        entry.update(extra)
        return entry

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def associations(self):
        return len(re.findall(r"(?m)^I: Association Received$",
                              self.log_text()))

    def files(self):
        return sorted(os.path.join(self.dir, n) for n in os.listdir(self.dir)
                      if not n.startswith("."))

    def by_sop(self):
        return {uids(p)[3]: p for p in self.files()}

    def clear(self):
        for p in self.files():
            os.unlink(p)

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def listening(port):
    r = run(["ss", "-ltnH", "sport = :%d" % port], timeout=10)
    return "LISTEN" in r.stdout


class Orthanc(it.Orthanc):
    """it.Orthanc with a DICOM AE title, port and modalities of our
    choosing (Orthanc as the DICOMweb server, C-MOVE SCU or destination)."""

    def __init__(self, work, name="orthanc", aet="ORTHANC", modalities=None):
        if not os.path.exists("/usr/sbin/Orthanc") or \
                not os.path.exists(self.PLUGIN):
            print("skip: Orthanc or its DICOMweb plugin is not installed")
            sys.exit(it.SKIP)
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir)
        self.aet = aet
        self.port = it.free_port()
        self.dicom_port = it.free_port()
        cfg = {
            "Name": name, "HttpPort": self.port, "DicomPort": self.dicom_port,
            "DicomAet": aet, "DicomCheckCalledAet": False,
            "StorageDirectory": os.path.join(self.dir, "db"),
            "IndexDirectory": os.path.join(self.dir, "db"),
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "Plugins": [self.PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "HttpTimeout": 120, "StableAge": 1, "DicomScuTimeout": 120,
            "DicomModalities": modalities or {},
        }
        conf = os.path.join(self.dir, "orthanc.json")
        with open(conf, "w") as f:
            json.dump(cfg, f)
        self.log = open(os.path.join(work, name + ".log"), "wb")
        self.proc = subprocess.Popen(["/usr/sbin/Orthanc", conf],
                                     stdout=self.log, stderr=self.log)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                self.get("/system")
                return
            except OSError:
                time.sleep(0.2)
        raise Failure("Orthanc %s did not start" % name)

    @property
    def dicomweb(self):
        return "http://127.0.0.1:%d/dicom-web" % self.port

    def store(self, files):
        """Sends @files to Orthanc over one association (storescu)."""
        for i in range(0, len(files), 200):
            r = run(["storescu", "-aec", self.aet, "-to", "10", "-ta", "30",
                     "-td", "60", "127.0.0.1", str(self.dicom_port)] +
                    files[i:i + 200], timeout=300, env=it.NODELAY_ENV)
            if r.returncode != 0:
                raise Failure("storescu to Orthanc: %s" % r.stderr[-500:])

    def upload(self, files):
        """Posts @files to Orthanc's REST API one by one, as they are."""
        import urllib.request
        for path in files:
            with open(path, "rb") as f:
                req = urllib.request.Request(
                    "http://127.0.0.1:%d/instances" % self.port,
                    data=f.read(), method="POST",
                    headers={"Content-Type": "application/dicom"})
            with urllib.request.urlopen(req, timeout=60) as resp:
                status = json.loads(resp.read()).get("Status")
            if status not in ("Success", "AlreadyStored"):
                raise Failure("Orthanc refused %s: %s" % (path, status))

    def count(self):
        return json.loads(self.get("/statistics"))["CountInstances"]


def bridge(work, url, remotes, dicom=None, retrieve=None, **sections):
    """A stowbridge daemon whose DICOMweb server is @url and whose remote
    AEs are @remotes (Dest objects or entries)."""
    dcm = {"remote_aes": [r.remote() if isinstance(r, Dest) else r
                          for r in remotes]}
    dcm.update(dicom or {})
    sections.setdefault("upload", {"url": url, "timeout_s": 30})
    sections.setdefault("retry", {"min_s": 1, "max_s": 4})
    sections.setdefault("admin", {"listen": ""})
    if retrieve is not None:
        sections["retrieve"] = retrieve
    return it.Daemon(work, dicom=dcm, **sections)


# --------------------------------------------------------------------------
# SCUs


class Rsp:
    """One C-MOVE/C-GET response: status, the four counts (None when the
    element is absent), the identifier's Failed SOP Instance UID List,
    the Error Comment."""

    def __init__(self, status, remaining, completed, failed, warning,
                 failed_uids=(), comment=None, ident=None):
        self.status = status
        self.remaining = remaining
        self.completed = completed
        self.failed = failed
        self.warning = warning
        self.failed_uids = list(failed_uids)
        self.comment = comment
        self.ident = ident

    def __repr__(self):
        return ("status=%04X rem=%s ok=%s failed=%s warn=%s failed_uids=%d "
                "comment=%r" % (self.status, self.remaining, self.completed,
                                self.failed, self.warning,
                                len(self.failed_uids), self.comment))


class Outcome:
    """What an SCU run showed: its responses, the final one, its text."""

    def __init__(self, rsps, text, rc):
        self.rsps = rsps
        self.text = text
        self.rc = rc
        self.final = rsps[-1] if rsps else None
        self.pending = [r for r in rsps if r.status == PENDING]

    def __repr__(self):
        return "final=%r pending=%d rc=%s" % (self.final, len(self.pending),
                                              self.rc)


def parse_dcmtk(text, kind):
    """The @kind ("C-MOVE RSP", "C-GET RSP") messages of movescu/getscu -d
    output, in order."""
    rsps = []
    block = None
    for line in text.splitlines():
        body = line[3:] if line[1:3] == ": " else line
        if "INCOMING DIMSE MESSAGE" in body:
            block = {}
        elif "END DIMSE MESSAGE" in body and block is not None:
            if block.get("Message Type") == kind:
                def count(key):
                    v = block.get(key, "none")
                    return None if v == "none" else int(v)
                status = int(block["DIMSE Status"].split(":")[0], 16)
                rsps.append(Rsp(status,
                                count("Remaining Suboperations"),
                                count("Completed Suboperations"),
                                count("Failed Suboperations"),
                                count("Warning Suboperations")))
            block = None
        elif block is not None and " : " in body:
            k, _, v = body.partition(" : ")
            block[k.strip()] = v.strip()
    failed = re.findall(r"\(0008,0058\) UI \[([0-9.\\]*)\]", text)
    if rsps and failed:
        rsps[-1].failed_uids = failed[-1].split("\\")
    return rsps


def keys_args(keys):
    args = []
    for k, v in keys:
        args += ["-k", "%s=%s" % (k, v)]
    return args


def movescu(port, keys, dest, model="S", calling="MOVESCU", extra=(),
            timeout=600):
    r = run(["movescu", "-d", "-" + model, "-aet", calling,
             "-aec", "STOWBRIDGE", "-aem", dest, "-to", "10", "-ta", "30",
             "-td", "300", *extra, *keys_args(keys), "127.0.0.1", str(port)],
            timeout=timeout)
    text = r.stdout + r.stderr
    return Outcome(parse_dcmtk(text, "C-MOVE RSP"), text, r.returncode)


def getscu(port, keys, out_dir, model="S", calling="GETSCU", extra=(),
           timeout=600):
    os.makedirs(out_dir, exist_ok=True)
    r = run(["getscu", "-d", "-" + model, "-aet", calling,
             "-aec", "STOWBRIDGE", "-od", out_dir, "-to", "10", "-ta", "30",
             "-td", "300", *extra, *keys_args(keys), "127.0.0.1", str(port)],
            timeout=timeout)
    text = r.stdout + r.stderr
    return Outcome(parse_dcmtk(text, "C-GET RSP"), text, r.returncode)


def identifier(keys):
    ds = pydicom.Dataset()
    for k, v in keys:
        setattr(ds, k, v)
    return ds


def move_rq(msg_id, dest, sop_class):
    ae = dest.encode()
    if len(ae) % 2:
        ae += b" "
    return dp.command([(0x0002, dp.uid_bytes(sop_class)),
                       (0x0100, dp.us(C_MOVE_RQ)), (0x0110, dp.us(msg_id)),
                       (0x0600, ae), (0x0700, dp.us(0)),
                       (0x0800, dp.us(0))])


def raw_move(port, keys, dest, model="S", calling="RAWMOVE", cancel_after=None,
             cancel_at_s=None, timeout=300, refused_ok=False):
    """C-MOVE over raw PDUs (dimse_peer): every response with its
    identifier decoded; a C-CANCEL-RQ after @cancel_after pending
    responses or @cancel_at_s seconds after the request."""
    peer = dp.Peer(port, timeout=30)
    try:
        kind, _ = peer.associate(calling=calling, contexts=[
            (1, MOVE[model], [EXPLICIT])])
        if kind != dp.ASSOCIATE_AC or peer.contexts.get(1, (1,))[0] != 0:
            if refused_ok:
                return None
            raise Failure("the C-MOVE context was not accepted (PDU type %d,"
                          " contexts %s)" % (kind, getattr(peer, "contexts",
                                                           None)))
        msg_id = 7
        peer.send_message(1, move_rq(msg_id, dest, MOVE[model]),
                          dp.dataset_bytes(identifier(keys)))
        timer = None
        lock = threading.Lock()

        def cancel():
            with lock:
                peer.send_message(1, dp.cancel_rq(msg_id))
        if cancel_at_s is not None:
            timer = threading.Timer(cancel_at_s, cancel)
            timer.start()
        rsps = []
        start = time.monotonic()
        while True:
            cmd, data, _ = peer.read_message(
                timeout=max(1, timeout - (time.monotonic() - start)))
            if dp.field_us(cmd, 0x0100) != C_MOVE_RSP:
                raise Failure("a command other than C-MOVE-RSP: %04X" %
                              dp.field_us(cmd, 0x0100))
            if dp.field_us(cmd, 0x0120) != msg_id:
                raise Failure("C-MOVE-RSP answers message %s, not %d" %
                              (dp.field_us(cmd, 0x0120), msg_id))
            ident = None
            failed = []
            if data:
                ident = pydicom.filereader.read_dataset(
                    io.BytesIO(data), is_implicit_VR=False,
                    is_little_endian=True)
                if "FailedSOPInstanceUIDList" in ident:
                    v = ident.FailedSOPInstanceUIDList
                    failed = [str(x) for x in (v if isinstance(
                        v, (list, pydicom.multival.MultiValue)) else [v])]
            comment = cmd.get(0x00000902)
            rsp = Rsp(dp.field_us(cmd, 0x0900), dp.field_us(cmd, 0x1020),
                      dp.field_us(cmd, 0x1021), dp.field_us(cmd, 0x1022),
                      dp.field_us(cmd, 0x1023), failed,
                      comment.rstrip(b"\0 ").decode("ascii", "replace")
                      if comment is not None else None, ident)
            rsps.append(rsp)
            if rsp.status != PENDING:
                break
            if cancel_after is not None and \
                    len(rsps) == cancel_after:
                cancel()
        if timer:
            timer.cancel()
        peer.release()
        return Outcome(rsps, "", 0)
    finally:
        peer.close()


def get_rq(msg_id, sop_class):
    return dp.command([(0x0002, dp.uid_bytes(sop_class)),
                       (0x0100, dp.us(C_GET_RQ)), (0x0110, dp.us(msg_id)),
                       (0x0700, dp.us(0)), (0x0800, dp.us(0))])


def store_rsp(msg_id, sop_class, sop_instance, status=0):
    return dp.command([(0x0002, dp.uid_bytes(sop_class)),
                       (0x0100, dp.us(C_STORE_RSP)), (0x0120, dp.us(msg_id)),
                       (0x0800, dp.us(dp.NO_DATA_SET)),
                       (0x0900, dp.us(status)),
                       (0x1000, dp.uid_bytes(sop_instance))])


def role_item(uid, scu, scp):
    u = uid.encode()
    return dp.item(0x54, len(u).to_bytes(2, "big") + u + bytes([scu, scp]))


def raw_get(port, keys, storage, out_dir, model="S", calling="RAWGET",
            cancel_after=None, timeout=300):
    """C-GET over raw PDUs: proposes the GET context and, for each
    (sop_class, scp_role) of @storage, a storage context (with a role
    selection item asking for the SCP role when scp_role); answers every
    C-STORE-RQ with 0000 and writes its data set to @out_dir/SOP.dcm.
    Returns (Outcome, {sop: (context id, path)})."""
    os.makedirs(out_dir, exist_ok=True)
    contexts = [(1, GET[model], [EXPLICIT])]
    roles = b""
    for n, (uid, scp) in enumerate(storage):
        contexts.append((3 + 2 * n, uid, [EXPLICIT]))
        if scp:
            roles += role_item(uid, 0, 1)
    peer = dp.Peer(port, timeout=30)
    try:
        kind, _ = peer.associate(calling=calling, contexts=contexts,
                                 user=dp.user_info(extra=roles))
        if kind != dp.ASSOCIATE_AC or peer.contexts.get(1, (1,))[0] != 0:
            raise Failure("the C-GET context was not accepted")
        msg_id = 9
        peer.send_message(1, get_rq(msg_id, GET[model]),
                          dp.dataset_bytes(identifier(keys)))
        rsps, stored = [], {}
        start = time.monotonic()
        while True:
            cmd, data, pc = peer.read_message(
                timeout=max(1, timeout - (time.monotonic() - start)))
            field = dp.field_us(cmd, 0x0100)
            if field == C_STORE_RQ:
                sop = dp.field_uid(cmd, 0x1000)
                cls = dp.field_uid(cmd, 0x0002)
                ds = pydicom.filereader.read_dataset(
                    io.BytesIO(data or b""), is_implicit_VR=False,
                    is_little_endian=True)
                meta = pydicom.dataset.FileMetaDataset()
                meta.MediaStorageSOPClassUID = cls
                meta.MediaStorageSOPInstanceUID = sop
                meta.TransferSyntaxUID = EXPLICIT
                path = os.path.join(out_dir, sop + ".dcm")
                fds = pydicom.dataset.FileDataset(path, ds, file_meta=meta,
                                                  preamble=b"\0" * 128)
                fds.is_little_endian, fds.is_implicit_VR = True, False
                fds.save_as(path, write_like_original=False)
                stored[sop] = (pc, path)
                peer.send_message(pc, store_rsp(
                    dp.field_us(cmd, 0x0110), cls, sop))
                continue
            if field != C_GET_RSP:
                raise Failure("unexpected command %04X" % field)
            failed = []
            ident = None
            if data:
                ident = pydicom.filereader.read_dataset(
                    io.BytesIO(data), is_implicit_VR=False,
                    is_little_endian=True)
                if "FailedSOPInstanceUIDList" in ident:
                    v = ident.FailedSOPInstanceUIDList
                    failed = [str(x) for x in (v if isinstance(
                        v, (list, pydicom.multival.MultiValue)) else [v])]
            comment = cmd.get(0x00000902)
            rsp = Rsp(dp.field_us(cmd, 0x0900), dp.field_us(cmd, 0x1020),
                      dp.field_us(cmd, 0x1021), dp.field_us(cmd, 0x1022),
                      dp.field_us(cmd, 0x1023), failed,
                      comment.rstrip(b"\0 ").decode("ascii", "replace")
                      if comment is not None else None, ident)
            rsps.append(rsp)
            if rsp.status != PENDING:
                break
            if cancel_after is not None and len(rsps) == cancel_after:
                peer.send_message(1, dp.cancel_rq(msg_id))
        peer.release()
        return Outcome(rsps, "", 0), stored
    finally:
        peer.close()


# --------------------------------------------------------------------------
# Checks


def check_counts(o, total, what):
    """The pending responses carry the four counts, adding up to @total
    and never going backwards; the final one has no Remaining."""
    check(o.final is not None, "%s: a final response (%s)" %
          (what, o.text[-1500:]))
    last_done = 0
    for r in o.pending:
        if None in (r.remaining, r.completed, r.failed, r.warning):
            raise Failure("%s: a pending response without the four counts: "
                          "%r" % (what, r))
        done = r.completed + r.failed + r.warning
        if r.remaining + done != total or done < last_done:
            raise Failure("%s: pending counts do not add up to %d: %r" %
                          (what, total, r))
        last_done = done
    if o.pending:
        print("ok: %s: %d pending responses, counts add up to %d" %
              (what, len(o.pending), total))
    if o.final.status != CANCEL:
        check(o.final.remaining in (None, 0),
              "%s: no Remaining in the final response (%s)" %
              (what, o.final.remaining))


def check_success(o, total, what):
    check_counts(o, total, what)
    check(o.final.status == SUCCESS and o.final.completed == total and
          o.final.failed == 0 and o.final.warning == 0,
          "%s: final 0000 with %d completed (%r)" % (what, total, o.final))


def check_received(got, originals, what, full=True):
    """@got {sop: path} holds exactly @originals {sop: path}, each data set
    equal element by element."""
    check(sorted(got) == sorted(originals), "%s: exactly the %d instances "
          "asked for (got %d)" % (what, len(originals), len(got)))
    for sop, path in originals.items():
        same_elements(got[sop], path, "%s: %s" % (what, sop[-12:]), full)


def tmp_empty(d, what):
    """Nothing of a retrieve left in the spool's temporary area."""
    tmp = os.path.join(d.spool, "tmp")
    wait_for(lambda: not os.path.isdir(tmp) or not os.listdir(tmp), 20,
             "%s: the spool's tmp/ emptied" % what)
    print("ok: %s: nothing left in the spool's tmp/" % what)


def done_lines(d):
    return [line for line in d.log_text().splitlines()
            if "event=retrieve_done" in line]


def check_done_lines(d, count, what):
    wait_for(lambda: len(done_lines(d)) >= count, 20,
             "%s: event=retrieve_done logged" % what)
    time.sleep(0.2)
    lines = done_lines(d)
    check(len(lines) == count, "%s: %d event=retrieve_done lines (%d)" %
          (what, count, len(lines)))
    return lines[-1]


def hwm_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise Failure("no VmHWM for %d" % pid)


def clean_stop(d):
    """SIGTERM: the daemon exits 0 (its exit status in the message)."""
    rc = d.stop()
    check(rc == 0, "clean stop (exit status %s)" % rc)


def sanitized(d):
    """True when the daemon is an ASan/TSan build (scripts/test.sh)."""
    with open("/proc/%d/maps" % d.proc.pid) as f:
        maps = f.read()
    return "libasan" in maps or "libtsan" in maps


def no_patient_data(d, *values):
    log = d.log_text()
    for v in values:
        check(v not in log, "no patient data in the daemon's log (%s)" %
              ("*" * len(v)))


# --------------------------------------------------------------------------
# The shared study set


def level_study_set(work):
    """Patient RTPAT1: study A (series A1 with 2 instances, A2 with 2) and
    study B (1 instance); patient RTPAT2: study C (1 instance).
    Returns {name: {sop: path}} for the sets each level test asks for,
    and the UIDs."""
    src = os.path.join(work, "src")
    os.makedirs(src, exist_ok=True)
    layout = {}
    n = 0
    for patient, study in (("RTPAT1", "A"), ("RTPAT1", "B"),
                           ("RTPAT2", "C")):
        s_uid = generate_uid()
        for series in ((study + "1", study + "2") if study == "A" else
                       (study + "1",)):
            se_uid = generate_uid()
            count = 2 if study == "A" else 1
            for i in range(count):
                path = os.path.join(src, "%s-%d.dcm" % (series, i))
                sop = make_ct(path, s_uid, se_uid, patient=patient,
                              number=i + 1)
                layout.setdefault(series, []).append(
                    (patient, s_uid, se_uid, sop, path))
                n += 1
    return layout


def select(layout, *series_names):
    return {x[3]: x[4] for s in series_names for x in layout[s]}


def level_cases(layout):
    """(model, keys, expected {sop: path}, label)."""
    a1, a2, b1, c1 = (layout[k] for k in ("A1", "A2", "B1", "C1"))
    p1 = a1[0][0]
    sa, sb = a1[0][1], b1[0][1]
    return [
        ("S", [("QueryRetrieveLevel", "STUDY"), ("StudyInstanceUID", sa)],
         select(layout, "A1", "A2"), "Study Root STUDY"),
        ("S", [("QueryRetrieveLevel", "STUDY"),
               ("StudyInstanceUID", sa + "\\" + sb)],
         select(layout, "A1", "A2", "B1"), "Study Root STUDY, two UIDs"),
        ("S", [("QueryRetrieveLevel", "SERIES"), ("StudyInstanceUID", sa),
               ("SeriesInstanceUID", a2[0][2])],
         select(layout, "A2"), "Study Root SERIES"),
        ("S", [("QueryRetrieveLevel", "IMAGE"), ("StudyInstanceUID", sa),
               ("SeriesInstanceUID", a1[0][2]),
               ("SOPInstanceUID", a1[1][3])],
         {a1[1][3]: a1[1][4]}, "Study Root IMAGE"),
        ("S", [("QueryRetrieveLevel", "IMAGE"), ("StudyInstanceUID", sa),
               ("SeriesInstanceUID", a1[0][2]),
               ("SOPInstanceUID", a1[0][3] + "\\" + a1[1][3])],
         select(layout, "A1"), "Study Root IMAGE, two UIDs"),
        ("P", [("QueryRetrieveLevel", "PATIENT"), ("PatientID", p1)],
         select(layout, "A1", "A2", "B1"), "Patient Root PATIENT"),
        ("P", [("QueryRetrieveLevel", "STUDY"), ("PatientID", p1),
               ("StudyInstanceUID", sb)],
         select(layout, "B1"), "Patient Root STUDY"),
        ("P", [("QueryRetrieveLevel", "SERIES"), ("PatientID", p1),
               ("StudyInstanceUID", sa), ("SeriesInstanceUID", a1[0][2])],
         select(layout, "A1"), "Patient Root SERIES"),
        ("P", [("QueryRetrieveLevel", "IMAGE"), ("PatientID", p1),
               ("StudyInstanceUID", sa), ("SeriesInstanceUID", a2[0][2]),
               ("SOPInstanceUID", a2[0][3])],
         {a2[0][3]: a2[0][4]}, "Patient Root IMAGE"),
        ("P", [("QueryRetrieveLevel", "PATIENT"), ("PatientID", c1[0][0])],
         select(layout, "C1"), "Patient Root PATIENT, other patient"),
    ]


def all_files(layout):
    return [x[4] for rows in layout.values() for x in rows]


# --------------------------------------------------------------------------
# Tests


def test_levels_move(work):
    """movescu at every level of both information models against Orthanc's
    DICOMweb: exactly the instances asked for, equal element by element,
    one sub-association per C-MOVE, Move Originator set, the counts."""
    orthanc = Orthanc(work)
    dest = Dest(work)
    layout = level_study_set(work)
    orthanc.upload(all_files(layout))
    d = bridge(work, orthanc.dicomweb, [dest]).start()
    try:
        cases = level_cases(layout)
        for n, (model, keys, want, label) in enumerate(cases):
            dest.clear()
            before = dest.associations()
            o = movescu(d.port, keys, dest.ae, model=model)
            check_success(o, len(want), label)
            check_received(dest.by_sop(), want, label)
            check(dest.associations() == before + 1,
                  "%s: one sub-association" % label)
            tmp_empty(d, label)
            check_done_lines(d, n + 1, label)
        log = dest.log_text()
        check(re.search(r"Move Originator AE Title\s*: MOVESCU", log),
              "the C-STORE-RQs carry Move Originator AE MOVESCU")
        check(re.search(r"Move Originator ID\s*: 1\b", log),
              "...and Move Originator ID 1 (movescu's Message ID)")
        # Nothing matches: success with zero sub-operations.
        dest.clear()
        o = movescu(d.port, [("QueryRetrieveLevel", "STUDY"),
                             ("StudyInstanceUID", generate_uid())], dest.ae)
        check_success(o, 0, "no match")
        check(dest.files() == [], "no match: nothing sent")
        # The raw SCU sees the same from the wire.
        a1 = layout["A1"]
        o = raw_move(d.port, [("QueryRetrieveLevel", "SERIES"),
                              ("StudyInstanceUID", a1[0][1]),
                              ("SeriesInstanceUID", a1[0][2])], dest.ae)
        check_success(o, 2, "raw C-MOVE SERIES")
        check(o.final.ident is None, "a 0000 response carries no identifier")
        no_patient_data(d, "RTPAT1", "RTPAT2", "Retrieve^Test")
        clean_stop(d)
    finally:
        d.stop()
        dest.close()
        orthanc.close()


def test_levels_get(work):
    """getscu at every level of both information models: the instances
    come on the C-GET association itself, equal element by element."""
    orthanc = Orthanc(work)
    layout = level_study_set(work)
    orthanc.upload(all_files(layout))
    d = bridge(work, orthanc.dicomweb, []).start()
    try:
        for n, (model, keys, want, label) in enumerate(level_cases(layout)):
            out = os.path.join(work, "get-%d" % n)
            o = getscu(d.port, keys, out, model=model)
            check_success(o, len(want), "C-GET " + label)
            got = {uids(os.path.join(out, f))[3]: os.path.join(out, f)
                   for f in os.listdir(out)}
            check_received(got, want, "C-GET " + label)
            tmp_empty(d, label)
            check_done_lines(d, n + 1, label)
        out = os.path.join(work, "get-none")
        o = getscu(d.port, [("QueryRetrieveLevel", "STUDY"),
                            ("StudyInstanceUID", generate_uid())], out)
        check_success(o, 0, "C-GET no match")
        check(os.listdir(out) == [], "C-GET no match: nothing sent")
        no_patient_data(d, "RTPAT1", "RTPAT2", "Retrieve^Test")
        clean_stop(d)
    finally:
        d.stop()
        orthanc.close()


def test_big(work):
    """A 105 MB multi-frame instance through C-MOVE and C-GET from the
    scripted server: equal to the original, and the daemon's peak RSS
    (VmHWM) stays far below the instance size."""
    src = os.path.join(work, "src")
    os.makedirs(src)
    big = os.path.join(src, "big.dcm")
    small = os.path.join(src, "small.dcm")
    it.make_big_instance(big, 105)
    _, big_study, _, big_sop = uids(big)
    make_ct(small, generate_uid(), generate_uid())
    size = os.path.getsize(big)
    pixel_len = 105 * 2 * 512 * 512 * 2
    check(size > 105 * 1000 * 1000, "a %.1f MB instance" % (size / 1e6))
    server = fake_dicomweb.FakeDicomweb(
        [fake_dicomweb.instance_of(p) for p in (big, small)])
    ds = pydicom.dcmread(big, stop_before_pixels=True)
    dest = Dest(work, classes=(str(ds.SOPClassUID),), debug=False)
    d = bridge(work, server.base, [dest]).start()
    try:
        # Warm up with the small instance: the baseline peak.
        o = movescu(d.port, [("QueryRetrieveLevel", "STUDY"),
                             ("StudyInstanceUID", uids(small)[1])], dest.ae)
        check_success(o, 1, "small instance")
        base = hwm_kb(d.proc.pid)
        dest.clear()
        start = time.time()
        o = movescu(d.port, [("QueryRetrieveLevel", "STUDY"),
                             ("StudyInstanceUID", big_study)], dest.ae)
        took = time.time() - start
        check_success(o, 1, "105 MB instance by C-MOVE")
        got = dest.by_sop()
        check(list(got) == [big_sop], "the 105 MB instance arrived")
        same_elements(got[big_sop], big, "105 MB instance (header)",
                      full=False)
        check(sha256_tail(got[big_sop], pixel_len) ==
              sha256_tail(big, pixel_len), "105 MB instance: pixel data "
              "identical (SHA-256)")
        peak = hwm_kb(d.proc.pid)
        print("  VmHWM %d KiB before, %d KiB after a %d KiB instance; "
              "%.1f MB/s" % (base, peak, size // 1024, size / 1e6 / took))
        asan = sanitized(d)
        if asan:
            print("  (a sanitizer build: its shadow memory and quarantine "
                  "make VmHWM meaningless; not checked)")
        else:
            check(peak - base < 24 * 1024 and peak < size // 1024 // 3,
                  "RSS flat: VmHWM +%d KiB (to %d KiB) for %d KiB" %
                  (peak - base, peak, size // 1024))
        tmp_empty(d, "105 MB C-MOVE")
        # C-GET: the same instance on the caller's association.
        out = os.path.join(work, "get")
        o = getscu(d.port, [("QueryRetrieveLevel", "STUDY"),
                            ("StudyInstanceUID", big_study)], out)
        check_success(o, 1, "105 MB instance by C-GET")
        files = os.listdir(out)
        check(len(files) == 1 and sha256_tail(
            os.path.join(out, files[0]), pixel_len) ==
            sha256_tail(big, pixel_len), "C-GET: pixel data identical")
        peak2 = hwm_kb(d.proc.pid)
        if not asan:
            check(peak2 - base < 24 * 1024, "C-GET: RSS flat, VmHWM +%d KiB"
                  % (peak2 - base))
        tmp_empty(d, "105 MB C-GET")
        clean_stop(d)
    finally:
        d.stop()
        dest.close()
        server.close()


def test_many(work):
    """A study of 500 instances from Orthanc (QIDO-RS paged past 200) on
    one sub-association."""
    orthanc = Orthanc(work)
    src = os.path.join(work, "src")
    os.makedirs(src)
    study, series = generate_uid(), generate_uid()
    want = {}
    for i in range(500):
        p = os.path.join(src, "i%03d.dcm" % i)
        want[make_ct(p, study, series, size=16, number=i + 1)] = p
    orthanc.store(sorted(want.values()))
    check(orthanc.count() == 500, "Orthanc holds the 500 instances")
    dest = Dest(work, debug=False)
    d = bridge(work, orthanc.dicomweb, [dest]).start()
    try:
        start = time.time()
        o = movescu(d.port, [("QueryRetrieveLevel", "STUDY"),
                             ("StudyInstanceUID", study)], dest.ae)
        took = time.time() - start
        check_success(o, 500, "500 instances")
        print("  500 instances in %.1f s" % took)
        check(dest.associations() == 1, "one sub-association for 500 "
              "instances (%d)" % dest.associations())
        got = dest.by_sop()
        check(sorted(got) == sorted(want), "all 500 arrived, no duplicate")
        for sop in sorted(want)[::50]:
            same_elements(got[sop], want[sop], "instance " + sop[-12:])
        tmp_empty(d, "500 instances")
        check_done_lines(d, 1, "500 instances")
        clean_stop(d)
    finally:
        d.stop()
        dest.close()
        orthanc.close()


def compressed_set(work, study, series):
    """Three generated CT instances stored as JPEG lossless, JPEG-LS
    lossless and RLE by DCMTK's own encoders: {sop: path}."""
    src = os.path.join(work, "src")
    os.makedirs(src, exist_ok=True)
    out = {}
    for n, tool in enumerate(("dcmcjpeg", "dcmcjpls", "dcmcrle")):
        plain = os.path.join(src, "plain%d.dcm" % n)
        sop = make_ct(plain, study, series, size=64, number=n + 1)
        packed = os.path.join(src, "%s.dcm" % tool)
        r = run([tool, plain, packed])
        if r.returncode != 0:
            raise Failure("%s: %s" % (tool, r.stderr))
        out[sop] = packed
    return out


def test_decompress(work):
    """JPEG (lossless, and 8-bit colour baseline), JPEG-LS and RLE stored;
    a destination accepting only Explicit VR LE gets them decompressed,
    equal to what DCMTK's decoders make; an SCU accepting all syntaxes
    gets them as stored."""
    orthanc = Orthanc(work)
    study, series = generate_uid(), generate_uid()
    packed = compressed_set(work, study, series)
    baseline = os.path.join(work, "src", "baseline.dcm")
    packed[retag(os.path.join(it.TEST_FILES, "SC_rgb_jpeg_dcmtk.dcm"),
                 baseline, study, series)] = baseline
    orthanc.upload(list(packed.values()))
    sc = str(pydicom.dcmread(baseline, stop_before_pixels=True).SOPClassUID)
    dest = Dest(work, accept="explicit", classes=(CT, sc))
    anyts = Dest(work, ae="ANYTS", accept="all")
    d = bridge(work, orthanc.dicomweb, [dest, anyts]).start()
    try:
        keys = [("QueryRetrieveLevel", "STUDY"), ("StudyInstanceUID", study)]
        o = movescu(d.port, keys, dest.ae)
        check_success(o, 4, "compressed to an Explicit-LE-only destination")
        got = dest.by_sop()
        check(sorted(got) == sorted(packed), "all three arrived")
        for sop, path in packed.items():
            check(ts_of(got[sop]) == EXPLICIT, "%s arrived as Explicit VR LE"
                  % ts_of(path))
            same_elements(got[sop], decompressed(path, work), "%s decoded"
                          % ts_of(path))
        o = movescu(d.port, keys, anyts.ae)
        check_success(o, 4, "compressed to a destination taking all")
        got = anyts.by_sop()
        for sop, path in packed.items():
            check(ts_of(got[sop]) == ts_of(path), "%s kept as stored" %
                  ts_of(path))
            same_elements(got[sop], path, "%s as stored" % ts_of(path))
        # C-GET: getscu proposes only uncompressed syntaxes by default.
        out = os.path.join(work, "get")
        o = getscu(d.port, keys, out)
        check_success(o, 4, "C-GET of compressed instances, uncompressed")
        for f in os.listdir(out):
            p = os.path.join(out, f)
            sop = uids(p)[3]
            check(ts_of(p) != ts_of(packed[sop]), "C-GET: %s decoded" %
                  ts_of(packed[sop]))
            same_elements(p, decompressed(packed[sop], work), "C-GET: %s "
                          "decoded" % ts_of(packed[sop]))
        tmp_empty(d, "decompress")
        clean_stop(d)
    finally:
        d.stop()
        dest.close()
        anyts.close()
        orthanc.close()


def test_j2k(work):
    """JPEG 2000 (no DCMTK decoder) to an Explicit-LE-only destination:
    that instance is counted failed and listed (B000), the others go; a
    study of J2K only: A702; a destination taking J2K gets it."""
    orthanc = Orthanc(work)
    src = os.path.join(work, "src")
    os.makedirs(src)
    study, series = generate_uid(), generate_uid()
    j2k = os.path.join(src, "j2k.dcm")
    j2k_sop = retag(os.path.join(it.TEST_FILES, "JPEG2000.dcm"), j2k, study,
                    series)
    plain = os.path.join(src, "plain.dcm")
    plain_sop = make_ct(plain, study, generate_uid())
    only = generate_uid()
    j2k_only = os.path.join(src, "j2k-only.dcm")
    j2k_only_sop = retag(os.path.join(it.TEST_FILES, "JPEG2000.dcm"),
                         j2k_only, only, generate_uid())
    # Two more studies of a plain CT and a J2K instance in two series, in
    # both orders (series UIDs ending .1 and .2), for the destination that
    # takes J2K: whichever comes first, both must arrive as stored.
    both = []
    for first in ("plain", "j2k"):
        st = generate_uid()
        paths = {}
        base = "1.2.826.0.1.3680043.8.498.%d" % (
            int.from_bytes(os.urandom(8), "big") | (1 << 63))
        for n, kind in enumerate((first, "j2k" if first == "plain"
                                  else "plain")):
            se = base + ".%d" % (n + 1)
            p = os.path.join(src, "%s-first-%s.dcm" % (first, kind))
            if kind == "j2k":
                sop = retag(os.path.join(it.TEST_FILES, "JPEG2000.dcm"), p,
                            st, se)
            else:
                sop = make_ct(p, st, se)
            paths[sop] = p
        both.append((first, st, paths))
    orthanc.upload([j2k, plain, j2k_only] +
                   [p for _, _, paths in both for p in paths.values()])
    sc = str(pydicom.dcmread(j2k, stop_before_pixels=True).SOPClassUID)
    dest = Dest(work, accept="explicit", classes=(CT, sc))
    anyts = Dest(work, ae="ANYTS", accept="all")
    d = bridge(work, orthanc.dicomweb, [dest, anyts]).start()
    try:
        keys = [("QueryRetrieveLevel", "STUDY"), ("StudyInstanceUID", study)]
        o = raw_move(d.port, keys, dest.ae)
        check_counts(o, 2, "J2K + explicit")
        check(o.final.status == WARNING and o.final.completed == 1 and
              o.final.failed == 1, "J2K + explicit: B000, 1 completed, 1 "
              "failed (%r)" % o.final)
        check(o.final.failed_uids == [j2k_sop],
              "the Failed SOP Instance UID List names the J2K instance")
        check(list(dest.by_sop()) == [plain_sop], "the other one arrived")
        same_elements(dest.by_sop()[plain_sop], plain, "the other one")
        log = d.log_text()
        check(re.search(r"1\.2\.840\.10008\.1\.2\.4\.9[01]|JPEG ?2000",
                        log, re.I), "a log line names the J2K transfer syntax")
        o = movescu(d.port, keys, dest.ae)
        check(o.final is not None and o.final.status == WARNING and
              o.final.failed == 1, "movescu sees B000 too (%r)" % o.final)
        dest.clear()
        o = raw_move(d.port, [("QueryRetrieveLevel", "STUDY"),
                              ("StudyInstanceUID", only)], dest.ae)
        check(o.final.status == ALL_FAILED and o.final.completed == 0 and
              o.final.failed == 1 and o.final.failed_uids == [j2k_only_sop],
              "J2K only: A702 with the failed list (%r)" % o.final)
        check(dest.files() == [], "J2K only: nothing arrived")
        for first, st, paths in both:
            anyts.clear()
            o = movescu(d.port, [("QueryRetrieveLevel", "STUDY"),
                                 ("StudyInstanceUID", st)], anyts.ae)
            label = "J2K to a destination taking it (%s first)" % first
            check_success(o, 2, label)
            check_received(anyts.by_sop(), paths, label)
        # C-GET with uncompressed syntaxes only: the same accounting.
        out = os.path.join(work, "get")
        o = getscu(d.port, keys, out)
        check(o.final is not None and o.final.status == WARNING and
              o.final.completed == 1 and o.final.failed == 1,
              "C-GET: B000, 1 completed, 1 failed (%r)" % o.final)
        tmp_empty(d, "J2K")
        clean_stop(d)
    finally:
        d.stop()
        dest.close()
        anyts.close()
        orthanc.close()


def small_study(work, count=3, series_count=1):
    src = os.path.join(work, "src")
    os.makedirs(src, exist_ok=True)
    study = generate_uid()
    series = [generate_uid() for _ in range(series_count)]
    files = {}
    for i in range(count):
        p = os.path.join(src, "s%03d.dcm" % i)
        files[make_ct(p, study, series[i % series_count], number=i + 1)] = p
    return study, files


def test_get_roles(work):
    """C-GET stores only on storage contexts whose SCP role the SCU asked
    for: a CT (role selection SCP) arrives on its context, an MR (no role
    selection item) is counted failed and listed; a C-CANCEL after the
    first pending response ends a slow C-GET with FE00."""
    src = os.path.join(work, "src")
    os.makedirs(src)
    study, series = generate_uid(), generate_uid()
    ct = os.path.join(src, "ct.dcm")
    ct_sop = make_ct(ct, study, series)
    mr = os.path.join(src, "mr.dcm")
    mr_sop = retag(os.path.join(it.TEST_FILES, "MR_small.dcm"), mr, study,
                   series)
    server = fake_dicomweb.FakeDicomweb(
        [fake_dicomweb.instance_of(p) for p in (ct, mr)])
    d = bridge(work, server.base, []).start()
    try:
        keys = [("QueryRetrieveLevel", "STUDY"), ("StudyInstanceUID", study)]
        o, stored = raw_get(d.port, keys, [(CT, True), (MR, False)],
                            os.path.join(work, "get"))
        check_counts(o, 2, "C-GET roles")
        check(o.final.status == WARNING and o.final.completed == 1 and
              o.final.failed == 1 and o.final.failed_uids == [mr_sop],
              "C-GET: B000, the MR (no SCP role) failed and listed (%r)" %
              o.final)
        check(list(stored) == [ct_sop] and stored[ct_sop][0] == 3,
              "the CT came on its own storage context (3)")
        same_elements(stored[ct_sop][1], ct, "C-GET CT")
        o, stored = raw_get(d.port, keys, [(CT, True), (MR, True)],
                            os.path.join(work, "get2"))
        check_success(o, 2, "C-GET, both roles")
        same_elements(stored[mr_sop][1], mr, "C-GET MR")
        # C-CANCEL during a slow C-GET.
        study8, files = small_study(work, count=6)
        server.instances += [fake_dicomweb.instance_of(p)
                             for p in files.values()]
        server.mode = "slow"
        server.slow_s = 1.0
        o, stored = raw_get(d.port, [("QueryRetrieveLevel", "STUDY"),
                                     ("StudyInstanceUID", study8)],
                            [(CT, True)], os.path.join(work, "get3"),
                            cancel_after=1)
        check(o.final.status == CANCEL and
              (o.final.completed or 0) < 6,
              "C-GET cancelled: FE00 (%r)" % o.final)
        check(len(stored) == o.final.completed, "as many stored as "
              "completed (%d)" % len(stored))
        tmp_empty(d, "C-GET")
        clean_stop(d)
    finally:
        d.stop()
        server.close()


def test_bad_identifier(work):
    """Identifiers PS3.4 C.4.2.1.4 does not allow: refused (A900 or Cxxx)
    before anything is listed or fetched."""
    study, files = small_study(work)
    server = fake_dicomweb.FakeDicomweb(
        [fake_dicomweb.instance_of(p) for p in files.values()])
    dest = Dest(work)
    d = bridge(work, server.base, [dest]).start()
    try:
        series = uids(next(iter(files.values())))[2]
        cases = [
            ("S", [("QueryRetrieveLevel", "PATIENT"), ("PatientID", "RTPAT1")],
             "PATIENT level in Study Root"),
            ("S", [("QueryRetrieveLevel", "SERIES"),
                   ("StudyInstanceUID", study)],
             "SERIES level without SeriesInstanceUID"),
            ("S", [("StudyInstanceUID", study)], "no QueryRetrieveLevel"),
            ("S", [("QueryRetrieveLevel", "FRAME"),
                   ("StudyInstanceUID", study)], "an unknown level"),
            ("S", [("QueryRetrieveLevel", "IMAGE"),
                   ("StudyInstanceUID", study),
                   ("SeriesInstanceUID", series)],
             "IMAGE level without SOPInstanceUID"),
            ("P", [("QueryRetrieveLevel", "STUDY"),
                   ("StudyInstanceUID", "*")], "a wildcard as a unique key"),
        ]
        before = len(server.requests)
        for model, keys, label in cases:
            o = raw_move(d.port, keys, dest.ae, model=model)
            check(not o.pending and (o.final.status == 0xA900 or
                                     0xC000 <= o.final.status <= 0xCFFF),
                  "%s: refused, A900 or Cxxx (%r)" % (label, o.final))
        check(dest.files() == [] and not [
            r for r in server.requests[before:]
            if r[1].endswith("/instances") or not server.is_qido(r[1])],
            "nothing listed or fetched for them")
        o = movescu(d.port, [("QueryRetrieveLevel", "STUDY"),
                             ("StudyInstanceUID", study)], dest.ae)
        check_success(o, 3, "a valid identifier afterwards")
        clean_stop(d)
    finally:
        d.stop()
        dest.close()
        server.close()


def test_dest_refuses(work):
    """The destination accepts none of the proposed contexts (it takes
    MR only, the study is CT): every sub-operation failed, A702 and the
    list."""
    study, files = small_study(work)
    server = fake_dicomweb.FakeDicomweb(
        [fake_dicomweb.instance_of(p) for p in files.values()])
    dest = Dest(work, accept="explicit", classes=(MR,))
    d = bridge(work, server.base, [dest]).start()
    try:
        o = raw_move(d.port, [("QueryRetrieveLevel", "STUDY"),
                              ("StudyInstanceUID", study)], dest.ae)
        check(o.final.status == ALL_FAILED and o.final.failed == 3 and
              not o.final.completed and
              sorted(o.final.failed_uids) == sorted(files),
              "no context accepted: A702, 3 failed and listed (%r)" % o.final)
        check(dest.files() == [], "nothing stored")
        tmp_empty(d, "destination refuses")
        clean_stop(d)
    finally:
        d.stop()
        dest.close()
        server.close()


def test_caller_abort(work):
    """The C-MOVE SCU aborts mid-way: the retrieve stops, its files go,
    one retrieve_done line, the max_parallel slot is free again."""
    study, files = small_study(work, count=6)
    server = fake_dicomweb.FakeDicomweb(
        [fake_dicomweb.instance_of(p) for p in files.values()])
    server.mode = "slow"
    server.slow_s = 1.0
    dest = Dest(work)
    d = bridge(work, server.base, [dest], retrieve={"max_parallel": 1})
    d.start()
    try:
        keys = [("QueryRetrieveLevel", "STUDY"), ("StudyInstanceUID", study)]
        peer = dp.Peer(d.port, timeout=30)
        kind, _ = peer.associate(calling="RAWMOVE", contexts=[
            (1, MOVE["S"], [EXPLICIT])])
        check(kind == dp.ASSOCIATE_AC, "associated")
        peer.send_message(1, move_rq(3, dest.ae, MOVE["S"]),
                          dp.dataset_bytes(identifier(keys)))
        cmd, _, _ = peer.read_message(timeout=60)
        check(dp.field_us(cmd, 0x0900) == PENDING, "a first pending response")
        peer.send(dp.raw_ab())
        peer.close()
        check_done_lines(d, 1, "aborted by the caller")
        tmp_empty(d, "aborted by the caller")
        check(it.echo(d.port).returncode == 0, "the daemon still answers")
        server.mode = "azure"
        dest.clear()
        o = movescu(d.port, keys, dest.ae)
        check_success(o, 6, "the slot is free again (max_parallel 1)")
        check_received(dest.by_sop(), files, "after the abort")
        clean_stop(d)
    finally:
        d.stop()
        dest.close()
        server.close()


def test_kill9(work):
    """kill -9 of the daemon in the middle of a retrieve: after a restart
    nothing of it is left in the spool's tmp/, and a retrieve works."""
    study, files = small_study(work, count=6)
    server = fake_dicomweb.FakeDicomweb(
        [fake_dicomweb.instance_of(p) for p in files.values()])
    server.mode = "slow"
    server.slow_s = 1.0
    dest = Dest(work)
    d = bridge(work, server.base, [dest]).start()
    try:
        keys = [("QueryRetrieveLevel", "STUDY"), ("StudyInstanceUID", study)]
        result = {}
        t = threading.Thread(target=lambda: result.update(
            o=movescu(d.port, keys, dest.ae, timeout=120)))
        t.start()
        wait_for(lambda: len(dest.files()) >= 2, 60, "two sent")
        d.stop(sig=9)
        t.join(120)
        check(result["o"].final is None or
              result["o"].final.status != SUCCESS,
              "the SCU saw no success (%r)" % result["o"].final)
        d.start()
        tmp_empty(d, "restart after kill -9")
        server.mode = "azure"
        dest.clear()
        o = movescu(d.port, keys, dest.ae)
        check_success(o, 6, "a retrieve after the restart")
        clean_stop(d)
    finally:
        d.stop()
        dest.close()
        server.close()


def test_budget(work):
    """retrieve.max_temp_mb bounds what is fetched ahead: with 1 MiB and a
    destination slower than the server (storescp without TCP_NODELAY,
    ~40 ms per C-STORE), the spool's tmp/ never holds much more than
    1 MiB plus the instance being written, and all 30 arrive."""
    src = os.path.join(work, "src")
    os.makedirs(src)
    study, series = generate_uid(), generate_uid()
    files = {}
    for i in range(30):
        p = os.path.join(src, "b%02d.dcm" % i)
        files[make_ct(p, study, series, size=256, number=i + 1)] = p
    one = max(os.path.getsize(p) for p in files.values())
    server = fake_dicomweb.FakeDicomweb(
        [fake_dicomweb.instance_of(p) for p in files.values()])
    dest = Dest(work, debug=False, nodelay=False)
    d = bridge(work, server.base, [dest], retrieve={"max_temp_mb": 1})
    d.start()
    try:
        tmp = os.path.join(d.spool, "tmp")
        peak = [0]
        running = [True]

        def sample():
            while running[0]:
                total = 0
                try:
                    for n in os.listdir(tmp):
                        try:
                            total += os.path.getsize(os.path.join(tmp, n))
                        except OSError:
                            pass
                except OSError:
                    pass
                peak[0] = max(peak[0], total)
                time.sleep(0.005)
        t = threading.Thread(target=sample)
        t.start()
        try:
            o = movescu(d.port, [("QueryRetrieveLevel", "STUDY"),
                                 ("StudyInstanceUID", study)], dest.ae)
        finally:
            running[0] = False
            t.join()
        check_success(o, 30, "30 instances of %d KiB under a 1 MiB budget"
                      % (one // 1024))
        check_received(dest.by_sop(), files, "under a budget")
        print("  tmp/ peak: %d KiB (budget 1024 KiB, one instance %d KiB)" %
              (peak[0] // 1024, one // 1024))
        check(peak[0] > 0, "the fetch went through tmp/")
        check(peak[0] <= (1 << 20) + 2 * one, "tmp/ stayed within the "
              "budget plus the instance in flight (%d KiB)" %
              (peak[0] // 1024))
        tmp_empty(d, "budget")
        clean_stop(d)
    finally:
        d.stop()
        dest.close()
        server.close()


def dcmtk_storage_classes():
    """The storage SOP classes of DCMTK's AllDICOMStorageSCP profile
    (/etc/dcmtk/storescp.cfg) that pydicom can name: about 120 UIDs."""
    from pydicom.uid import UID_dictionary
    with open("/etc/dcmtk/storescp.cfg") as f:
        text = f.read()
    section = text[text.index("[AllDICOMStorageSCP]"):
                   text.index("[[Profiles]]")]
    names = set(re.findall(r"= (\w+)\\", section))
    names.discard("VerificationSOPClass")
    by_keyword = {v[4]: k for k, v in UID_dictionary.items() if len(v) > 4}
    return sorted(by_keyword[n] for n in names if n in by_keyword)


def test_many_classes(work):
    """One instance each of 131 SOP classes (DCMTK's storage classes and
    private ones, to a promiscuous destination): the sub-association
    proposes at most 128 contexts; instances of classes that found no
    context are counted failed and listed (B000), the rest arrive."""
    classes = dcmtk_storage_classes()
    classes += ["1.2.826.0.1.3680043.9.7156.1.%d" % n
                for n in range(1, 132 - len(classes))]
    check(len(classes) == 131, "131 SOP classes")
    src = os.path.join(work, "src")
    os.makedirs(src)
    study = generate_uid()
    files = {}
    for n, uid in enumerate(classes):
        p = os.path.join(src, "c%03d.dcm" % n)
        make_ct(p, study, generate_uid(), size=8, number=n + 1)
        ds = pydicom.dcmread(p)
        ds.SOPClassUID = uid
        ds.file_meta.MediaStorageSOPClassUID = uid
        ds.save_as(p, write_like_original=False)
        files[str(ds.SOPInstanceUID)] = p
    server = fake_dicomweb.FakeDicomweb(
        [fake_dicomweb.instance_of(p) for p in files.values()])
    dest = Dest(work, debug=False, extra=["-pm"])
    d = bridge(work, server.base, [dest]).start()
    try:
        o = raw_move(d.port, [("QueryRetrieveLevel", "STUDY"),
                              ("StudyInstanceUID", study)], dest.ae)
        check_counts(o, 131, "131 classes")
        m = re.search(r"event=retrieve-sub-association .*?contexts=(\d+)",
                      d.log_text())
        check(m is not None and int(m.group(1)) <= 128,
              "at most 128 contexts proposed (%s)" % (m and m.group(1)))
        f = o.final
        check(f.completed + f.failed == 131 and f.completed >= 64,
              "every instance accounted for, %d sent, %d failed" %
              (f.completed, f.failed))
        check((f.status == WARNING) == (f.failed > 0) and
              len(f.failed_uids) == f.failed,
              "B000 lists the %d failed (%r)" % (f.failed, f))
        got = dest.by_sop()
        check(len(got) == f.completed and
              not set(got) & set(f.failed_uids) and
              set(got) | set(f.failed_uids) == set(files),
              "the sent ones arrived, the failed ones did not")
        check(dest.associations() == 1, "one sub-association")
        clean_stop(d)
    finally:
        d.stop()
        dest.close()
        server.close()


def test_move_to_self(work):
    """The workstation pattern: movescu names itself as the Move
    Destination and takes the sub-association on its own port (+P) while
    its C-MOVE association waits for the responses."""
    study, files = small_study(work, count=4, series_count=2)
    server = fake_dicomweb.FakeDicomweb(
        [fake_dicomweb.instance_of(p) for p in files.values()])
    port = it.free_port()
    d = bridge(work, server.base, [{"ae_title": "MOVESCU",
                                    "host": "127.0.0.1", "port": port,
                                    "tls": False}]).start()
    try:
        out = os.path.join(work, "self")
        os.makedirs(out)
        o = movescu(d.port, [("QueryRetrieveLevel", "STUDY"),
                             ("StudyInstanceUID", study)], "MOVESCU",
                    extra=["+P", str(port), "-od", out, "+xa"])
        check_success(o, 4, "C-MOVE to the SCU itself")
        got = {uids(os.path.join(out, f))[3]: os.path.join(out, f)
               for f in os.listdir(out)}
        check_received(got, files, "C-MOVE to the SCU itself")
        clean_stop(d)
    finally:
        d.stop()
        server.close()


def test_parallel(work):
    """Three C-MOVEs and a C-GET at once (retrieve.max_parallel 4): each
    on its own sub-association, each complete, nothing mixed up."""
    studies = []
    rows = []
    for n in range(4):
        sub = os.path.join(work, "s%d" % n)
        study, files = small_study(sub, count=12, series_count=3)
        studies.append((study, files))
        rows += [fake_dicomweb.instance_of(p) for p in files.values()]
    server = fake_dicomweb.FakeDicomweb(rows)
    dests = [Dest(work, ae="DEST%d" % n, debug=False) for n in range(3)]
    d = bridge(work, server.base, dests).start()
    try:
        results = {}

        def move(n):
            results[n] = movescu(d.port, [
                ("QueryRetrieveLevel", "STUDY"),
                ("StudyInstanceUID", studies[n][0])], dests[n].ae,
                calling="MOVESCU%d" % n)

        def get():
            results[3] = getscu(d.port, [
                ("QueryRetrieveLevel", "STUDY"),
                ("StudyInstanceUID", studies[3][0])],
                os.path.join(work, "get"))
        threads = [threading.Thread(target=move, args=(n,))
                   for n in range(3)] + [threading.Thread(target=get)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        for n in range(3):
            check_success(results[n], 12, "parallel C-MOVE %d" % n)
            check_received(dests[n].by_sop(), studies[n][1],
                           "parallel C-MOVE %d" % n)
            check(dests[n].associations() == 1,
                  "parallel C-MOVE %d: one sub-association" % n)
        check_success(results[3], 12, "parallel C-GET")
        out = os.path.join(work, "get")
        got = {uids(os.path.join(out, f))[3]: os.path.join(out, f)
               for f in os.listdir(out)}
        check_received(got, studies[3][1], "parallel C-GET")
        check_done_lines(d, 4, "four retrieves")
        tmp_empty(d, "parallel")
        clean_stop(d)
    finally:
        d.stop()
        for x in dests:
            x.close()
        server.close()


def test_patient_chars(work):
    """PATIENT level against Orthanc (query.profile orthanc) for Patient
    IDs with characters that need care in a URL: '^', space, '+', '&',
    '%' and non-ASCII; each gets exactly its own patient's instances."""
    orthanc = Orthanc(work)
    ids = ["RT^PAT 1", "RT+PAT&2", "RT%PAT=3", "RT\u00c9PAT4", "RTPAT5"]
    src = os.path.join(work, "src")
    os.makedirs(src)
    want = {}
    for n, pid in enumerate(ids):
        p = os.path.join(src, "p%d.dcm" % n)
        make_ct(p, generate_uid(), generate_uid(), patient=pid)
        if not pid.isascii():
            ds = pydicom.dcmread(p)
            ds.SpecificCharacterSet = "ISO_IR 192"
            ds.save_as(p, write_like_original=False)
        want[pid] = {uids(p)[3]: p}
    orthanc.upload([p for w in want.values() for p in w.values()])
    dest = Dest(work)
    d = bridge(work, orthanc.dicomweb, [dest], query={"profile": "orthanc"})
    d.start()
    try:
        wrong = []
        for pid, files in want.items():
            dest.clear()
            args = ["-k", "SpecificCharacterSet=ISO_IR 192"] \
                if not pid.isascii() else []
            o = movescu(d.port, [("QueryRetrieveLevel", "PATIENT"),
                                 ("PatientID", pid)], dest.ae, model="P",
                        extra=args)
            got = sorted(dest.by_sop())
            print("  Patient ID %r: %r, %d arrived" % (pid, o.final,
                                                     len(got)))
            if o.final is None or o.final.status != SUCCESS or \
                    got != sorted(files):
                wrong.append(pid)
            else:
                same_elements(dest.by_sop()[got[0]], files[got[0]],
                              "Patient ID %r" % pid)
        check(not wrong, "each Patient ID gets its patient's instance "
              "(wrong: %r)" % wrong)
        clean_stop(d)
    finally:
        d.stop()
        dest.close()
        orthanc.close()


def test_azure_case(work):
    """Azure matches strings case-insensitively; DICOM matching of a
    Patient ID is case-sensitive (PS3.4 C.2.2.2.1). Two patients RTCASE1
    and rtcase1: a PATIENT-level C-MOVE of each (query.profile azure)
    gets only that patient's instance."""
    src = os.path.join(work, "src")
    os.makedirs(src)
    want = {}
    for n, pid in enumerate(("RTCASE1", "rtcase1")):
        p = os.path.join(src, "c%d.dcm" % n)
        make_ct(p, generate_uid(), generate_uid(), patient=pid)
        want[pid] = {uids(p)[3]: p}
    server = fake_dicomweb.FakeDicomweb(
        [fake_dicomweb.instance_of(p) for w in want.values()
         for p in w.values()])
    server.strict = True
    dest = Dest(work)
    d = bridge(work, server.base, [dest], query={"profile": "azure"})
    d.start()
    try:
        for pid, files in want.items():
            dest.clear()
            o = movescu(d.port, [("QueryRetrieveLevel", "PATIENT"),
                                 ("PatientID", pid)], dest.ae, model="P")
            label = "Patient ID %s" % pid
            check_success(o, 1, label)
            check_received(dest.by_sop(), files, label)
        clean_stop(d)
    finally:
        d.stop()
        dest.close()
        server.close()


def test_patient_root_keys(work):
    """Patient Root: the unique keys of the levels above are part of the
    match (PS3.4 C.4.2.2.1). A STUDY or SERIES level C-MOVE naming another
    patient's ID moves nothing (0000 with zero sub-operations, or a
    refusal); with the right ID it moves the study."""
    src = os.path.join(work, "src")
    os.makedirs(src)
    p = os.path.join(src, "a.dcm")
    study, series = generate_uid(), generate_uid()
    make_ct(p, study, series, patient="RTPAT1")
    server = fake_dicomweb.FakeDicomweb([fake_dicomweb.instance_of(p)])
    dest = Dest(work)
    d = bridge(work, server.base, [dest]).start()
    try:
        for level, keys in (
                ("STUDY", [("StudyInstanceUID", study)]),
                ("SERIES", [("StudyInstanceUID", study),
                            ("SeriesInstanceUID", series)])):
            dest.clear()
            o = raw_move(d.port, [("QueryRetrieveLevel", level),
                                  ("PatientID", "RTOTHER")] + keys,
                         dest.ae, model="P")
            check(not o.final.completed and dest.files() == [],
                  "%s level, another Patient ID: nothing moved (%r)" %
                  (level, o.final))
            o = raw_move(d.port, [("QueryRetrieveLevel", level),
                                  ("PatientID", "RTPAT1")] + keys,
                         dest.ae, model="P")
            check_success(o, 1, "%s level, the right Patient ID" % level)
        clean_stop(d)
    finally:
        d.stop()
        dest.close()
        server.close()


def test_wado_foreign(work):
    """The server slips an instance of another study into every WADO-RS
    answer: it is never sent (nobody asked for it), the listed ones are."""
    study, files = small_study(work, count=3)
    other = os.path.join(work, "other.dcm")
    other_sop = make_ct(other, generate_uid(), generate_uid(),
                        patient="RTOTHER")
    server = fake_dicomweb.FakeDicomweb(
        [fake_dicomweb.instance_of(p) for p in files.values()])
    server.foreign = fake_dicomweb.instance_of(other)
    dest = Dest(work)
    d = bridge(work, server.base, [dest]).start()
    try:
        o = movescu(d.port, [("QueryRetrieveLevel", "STUDY"),
                             ("StudyInstanceUID", study)], dest.ae)
        check_success(o, 3, "the three listed")
        check(other_sop not in dest.by_sop(), "the foreign instance was not "
              "sent")
        check_received(dest.by_sop(), files, "only the listed")
        tmp_empty(d, "foreign part")
        clean_stop(d)
    finally:
        d.stop()
        dest.close()
        server.close()


def test_token(work):
    """QIDO-RS and WADO-RS carry the upload's Bearer token (auth.type
    static); the token is never logged; a server that refuses the token
    (401) makes the C-MOVE fail with a status and comment, not 0000."""
    study, files = small_study(work)
    server = fake_dicomweb.FakeDicomweb(
        [fake_dicomweb.instance_of(p) for p in files.values()])
    token = "tok-" + os.urandom(12).hex()
    server.bearer = token
    dest = Dest(work)
    d = bridge(work, server.base, [dest],
               auth={"type": "static", "token": token}).start()
    try:
        keys = [("QueryRetrieveLevel", "STUDY"), ("StudyInstanceUID", study)]
        o = movescu(d.port, keys, dest.ae)
        check_success(o, 3, "with the Bearer token")
        check_received(dest.by_sop(), files, "with the Bearer token")
        used = [r for r in server.requests if r[0] == "GET"]
        check(used and all(r[3].get("Authorization") == "Bearer " + token
                           for r in used),
              "every QIDO-RS and WADO-RS request carried the token (%d)" %
              len(used))
        server.bearer = "another-token"
        dest.clear()
        o = raw_move(d.port, keys, dest.ae)
        check(o.final.status not in (SUCCESS, PENDING, WARNING) and
              not o.final.completed and o.final.comment,
              "a refused token: a failure status with a comment (%r)" %
              o.final)
        check(dest.files() == [], "nothing sent")
        check(token not in d.log_text(), "the token is not in the log")
        clean_stop(d)
    finally:
        d.stop()
        dest.close()
        server.close()


def test_paging_boundary(work):
    """QIDO-RS pages at the edges: a study of exactly 200 instances (the
    next page is a 204) and one of 201 (the second page holds one)."""
    rows, studies = [], []
    for count in (200, 201):
        study, files = small_study(os.path.join(work, "p%d" % count),
                                   count=count)
        rows += [fake_dicomweb.instance_of(p) for p in files.values()]
        studies.append((study, files))
    server = fake_dicomweb.FakeDicomweb(rows)
    server.strict = True
    dest = Dest(work, debug=False)
    d = bridge(work, server.base, [dest], query={"profile": "azure"})
    d.start()
    try:
        for study, files in studies:
            dest.clear()
            o = movescu(d.port, [("QueryRetrieveLevel", "STUDY"),
                                 ("StudyInstanceUID", study)], dest.ae)
            check_success(o, len(files), "%d instances" % len(files))
            check(sorted(dest.by_sop()) == sorted(files),
                  "%d instances: each once" % len(files))
        check(not server.rejected, "no request refused (%s)" %
              server.rejected[:3])
        clean_stop(d)
    finally:
        d.stop()
        dest.close()
        server.close()


def test_dest_dies(work):
    """The destination dies mid-way (storescp killed after two
    instances): what was sent counts completed, the rest failed and
    listed (B000), no hang, nothing left in tmp/."""
    study, files = small_study(work, count=6)
    server = fake_dicomweb.FakeDicomweb(
        [fake_dicomweb.instance_of(p) for p in files.values()])
    server.mode = "slow"
    server.slow_s = 0.7
    dest = Dest(work)
    d = bridge(work, server.base, [dest]).start()
    try:
        result = {}
        t = threading.Thread(target=lambda: result.update(o=raw_move(
            d.port, [("QueryRetrieveLevel", "STUDY"),
                     ("StudyInstanceUID", study)], dest.ae, timeout=120)))
        start = time.time()
        t.start()
        wait_for(lambda: len(dest.files()) >= 2, 60, "two arrived")
        dest.proc.kill()
        dest.proc.wait(10)
        sent = set(dest.by_sop())
        t.join(120)
        took = time.time() - start
        o = result.get("o")
        check(o is not None and o.final is not None, "a final response "
              "(%.1f s)" % took)
        f = o.final
        check(f.status == WARNING and f.completed >= 2 and
              f.completed + f.failed == 6,
              "B000, %s completed, %s failed (%r)" % (f.completed, f.failed,
                                                     f))
        check(set(f.failed_uids) <= set(files) - sent,
              "the failed list names only instances that did not arrive")
        check(len(f.failed_uids) == f.failed, "...all %d of them" %
              f.failed)
        check(took < 60, "no hang (%.1f s)" % took)
        tmp_empty(d, "destination died")
        check(it.echo(d.port).returncode == 0, "the daemon still answers")
        clean_stop(d)
    finally:
        d.stop()
        dest.close()
        server.close()


def test_unknown_dest(work):
    """A Move Destination not in dicom.remote_aes: A801 with an Error
    Comment, nothing fetched."""
    study, files = small_study(work)
    server = fake_dicomweb.FakeDicomweb(
        [fake_dicomweb.instance_of(p) for p in files.values()])
    dest = Dest(work)
    d = bridge(work, server.base, [dest]).start()
    try:
        keys = [("QueryRetrieveLevel", "STUDY"), ("StudyInstanceUID", study)]
        o = raw_move(d.port, keys, "NOWHERE")
        check(o.final.status == DEST_UNKNOWN and not o.pending,
              "unknown destination: A801, no pending response (%r)" %
              o.final)
        check(o.final.comment, "...with an Error Comment: %r" %
              o.final.comment)
        check(server.wado_requests() == [], "nothing fetched")
        o = movescu(d.port, keys, "NOWHERE")
        check(o.final is not None and o.final.status == DEST_UNKNOWN,
              "movescu sees A801 (%r)" % o.final)
        # The destination's AE title with another case is another AE.
        o = raw_move(d.port, keys, dest.ae.lower())
        check(o.final.status == DEST_UNKNOWN, "AE titles are compared as "
              "they are: %s unknown (%r)" % (dest.ae.lower(), o.final))
        o = movescu(d.port, keys, dest.ae)
        check_success(o, 3, "the known destination still works")
        clean_stop(d)
    finally:
        d.stop()
        dest.close()
        server.close()


def test_dest_down(work):
    """The destination does not listen: every sub-operation failed (A702,
    or a Cxxx refusal), nothing hangs; once it listens the same C-MOVE
    works."""
    study, files = small_study(work)
    server = fake_dicomweb.FakeDicomweb(
        [fake_dicomweb.instance_of(p) for p in files.values()])
    port = it.free_port()
    d = bridge(work, server.base, [{"ae_title": "DOWN", "host": "127.0.0.1",
                                    "port": port, "tls": False}]).start()
    dest = None
    try:
        keys = [("QueryRetrieveLevel", "STUDY"), ("StudyInstanceUID", study)]
        start = time.time()
        o = raw_move(d.port, keys, "DOWN", timeout=120)
        took = time.time() - start
        check(o.final.status == ALL_FAILED or
              0xC000 <= o.final.status <= 0xCFFF,
              "destination down: A702 or Cxxx (%r)" % o.final)
        check(not o.final.completed, "nothing completed")
        if o.final.status == ALL_FAILED:
            check(o.final.failed == 3 and sorted(o.final.failed_uids) ==
                  sorted(files), "A702 counts and lists the 3 failed")
        check(took < 60, "answered in %.1f s" % took)
        check("DOWN" in d.log_text(), "the log names the destination")
        check(it.echo(d.port).returncode == 0, "the daemon still answers")
        tmp_empty(d, "destination down")
        dest = Dest(work, ae="DOWN", port=port)
        o = movescu(d.port, keys, "DOWN")
        check_success(o, 3, "destination back")
        check_received(dest.by_sop(), files, "destination back")
        clean_stop(d)
    finally:
        d.stop()
        if dest:
            dest.close()
        server.close()


def wado_fault(work, mode, expect_completed):
    """A C-MOVE of a 3-instance series while the server answers WADO-RS
    in @mode: the right instances fail, are counted and listed."""
    study, files = small_study(work)
    server = fake_dicomweb.FakeDicomweb(
        [fake_dicomweb.instance_of(p) for p in files.values()])
    server.mode = mode
    dest = Dest(work)
    d = bridge(work, server.base, [dest]).start()
    try:
        keys = [("QueryRetrieveLevel", "STUDY"), ("StudyInstanceUID", study)]
        o = raw_move(d.port, keys, dest.ae, timeout=180)
        check_counts(o, 3, mode)
        order = [r["SOPInstanceUID"] for r in server.instances]
        ok = order[:expect_completed]
        failed = order[expect_completed:]
        want = ALL_FAILED if not ok else WARNING
        check(o.final.status == want and o.final.completed == len(ok) and
              o.final.failed == len(failed),
              "%s: %04X, %d completed, %d failed (%r)" %
              (mode, want, len(ok), len(failed), o.final))
        check(sorted(o.final.failed_uids) == sorted(failed),
              "%s: the Failed SOP Instance UID List names the %d" %
              (mode, len(failed)))
        check_received(dest.by_sop(), {s: files[s] for s in ok}, mode)
        check(server.wado_requests(), "%s: WADO-RS was asked" % mode)
        tmp_empty(d, mode)
        check_done_lines(d, 1, mode)
        check(it.echo(d.port).returncode == 0, "the daemon still answers")
        # The server mends: the same C-MOVE completes.
        server.mode = "azure"
        dest.clear()
        o = movescu(d.port, keys, dest.ae)
        check_success(o, 3, "%s, then the server mended" % mode)
        check_received(dest.by_sop(), files, "after " + mode)
        clean_stop(d)
    finally:
        d.stop()
        dest.close()
        server.close()


def test_wado_406(work):
    wado_fault(work, "406", 0)


def test_wado_500(work):
    wado_fault(work, "500", 0)


def test_wado_garbage(work):
    wado_fault(work, "garbage", 0)


def test_wado_drop(work):
    """The connection cut in the middle of part 2: part 1 arrives whole,
    parts 2 and 3 (the per-instance retries are cut too) fail."""
    wado_fault(work, "drop", 1)


def test_qido_500(work):
    """QIDO-RS answers 500: the C-MOVE is refused (A701 or Cxxx), not
    answered 0000 with zero sub-operations."""
    study, files = small_study(work)
    server = fake_dicomweb.FakeDicomweb(
        [fake_dicomweb.instance_of(p) for p in files.values()])
    server.qido_mode = "500"
    dest = Dest(work)
    d = bridge(work, server.base, [dest]).start()
    try:
        keys = [("QueryRetrieveLevel", "STUDY"), ("StudyInstanceUID", study)]
        o = raw_move(d.port, keys, dest.ae)
        check(o.final.status == REFUSED_RESOURCES or
              0xC000 <= o.final.status <= 0xCFFF,
              "QIDO 500: A701 or Cxxx (%r)" % o.final)
        check(o.final.comment, "...with an Error Comment: %r" %
              o.final.comment)
        check(dest.files() == [] and server.wado_requests() == [],
              "nothing fetched, nothing sent")
        clean_stop(d)
    finally:
        d.stop()
        dest.close()
        server.close()


def test_cancel(work):
    """C-CANCEL mid-way: movescu --cancel after 2 responses while a slow
    server sends one part a second, and the raw SCU cancelling during the
    first fetch: FE00, counts that add up, instances already sent kept,
    the temporary area emptied; the next C-MOVE works."""
    study, files = small_study(work, count=8)
    server = fake_dicomweb.FakeDicomweb(
        [fake_dicomweb.instance_of(p) for p in files.values()])
    server.mode = "slow"
    server.slow_s = 1.0
    dest = Dest(work)
    d = bridge(work, server.base, [dest]).start()
    try:
        keys = [("QueryRetrieveLevel", "STUDY"), ("StudyInstanceUID", study)]
        start = time.time()
        o = movescu(d.port, keys, dest.ae, extra=["--cancel", "2"])
        took = time.time() - start
        check(o.final is not None and o.final.status == CANCEL,
              "movescu --cancel 2: FE00 (%r)" % o.final)
        check_counts(o, 8, "cancelled")
        f = o.final
        check(f.completed is not None and 1 <= f.completed < 8,
              "cancelled with %s of 8 completed" % f.completed)
        if f.remaining is not None:
            check(f.remaining + f.completed + f.failed + f.warning == 8,
                  "FE00 counts add up to 8 (%r)" % f)
        check(len(dest.files()) == f.completed, "the %d completed are at the "
              "destination" % f.completed)
        check(took < 8 * 1.0 + 5, "stopped early (%.1f s)" % took)
        tmp_empty(d, "cancel after 2")
        dest.clear()
        # During the first fetch: no sub-operation done yet.
        server.slow_s = 6.0
        start = time.time()
        o = raw_move(d.port, keys, dest.ae, cancel_at_s=1.0)
        took = time.time() - start
        check(o.final.status == CANCEL, "C-CANCEL during a fetch: FE00 (%r)"
              % o.final)
        check(took < 5.0, "the fetch was abandoned: FE00 %.1f s after the "
              "request, before the first part came (6 s)" % took)
        check(len(dest.files()) == (o.final.completed or 0),
              "what completed is at the destination")
        tmp_empty(d, "cancel during a fetch")
        server.mode = "azure"
        dest.clear()
        o = movescu(d.port, keys, dest.ae)
        check_success(o, 8, "the next C-MOVE")
        check_received(dest.by_sop(), files, "after the cancels")
        clean_stop(d)
    finally:
        d.stop()
        dest.close()
        server.close()


def test_orthanc_scu(work):
    """Orthanc as the C-MOVE SCU (REST /modalities/bridge/move) moving a
    study from Orthanc's DICOMweb to a storescp destination, and to
    itself (Orthanc as the move destination)."""
    source = Orthanc(work, name="source", aet="SOURCE")
    layout = level_study_set(work)
    source.upload(all_files(layout))
    bridge_port = it.free_port()
    scu = Orthanc(work, name="scu", aet="ORTHANCB", modalities={
        "bridge": ["STOWBRIDGE", "127.0.0.1", bridge_port]})
    dest = Dest(work)
    d = bridge(work, source.dicomweb, [dest, {
        "ae_title": "ORTHANCB", "host": "127.0.0.1",
        "port": scu.dicom_port, "tls": False}],
        dicom={"port": bridge_port})
    d.port = bridge_port
    d.start()
    try:
        study = layout["A1"][0][1]
        want = select(layout, "A1", "A2")
        body = {"Level": "Study", "Resources": [{"StudyInstanceUID": study}],
                "TargetAet": "DEST", "Synchronous": True, "Timeout": 120}
        answer = scu.post("/modalities/bridge/move", json.dumps(body))
        print("  Orthanc answered:", json.dumps(answer)[:200])
        check_received(dest.by_sop(), want, "Orthanc moved to DEST")
        log = dest.log_text()
        check(re.search(r"Move Originator AE Title\s*: ORTHANCB", log),
              "Move Originator AE is Orthanc's")
        body["TargetAet"] = "ORTHANCB"
        scu.post("/modalities/bridge/move", json.dumps(body))
        check(scu.count() == len(want), "Orthanc received %d instances "
              "(%d)" % (len(want), scu.count()))
        for sop, path in want.items():
            got = os.path.join(work, "b-" + sop + ".dcm")
            data = scu.instance_file(sop)
            check(data is not None, "in Orthanc: %s" % sop[-12:])
            with open(got, "wb") as f:
                f.write(data)
            same_elements(got, path, "Orthanc as destination: " + sop[-12:])
        # A series move, Orthanc's SERIES level.
        dest.clear()
        series = layout["A2"][0][2]
        body = {"Level": "Series", "Resources": [{
            "StudyInstanceUID": study, "SeriesInstanceUID": series}],
            "TargetAet": "DEST", "Synchronous": True, "Timeout": 120}
        scu.post("/modalities/bridge/move", json.dumps(body))
        check_received(dest.by_sop(), select(layout, "A2"),
                       "Orthanc moved a series")
        check_done_lines(d, 3, "Orthanc's three moves")
        clean_stop(d)
    finally:
        d.stop()
        dest.close()
        scu.close()
        source.close()


def test_orthanc_dest(work):
    """movescu moving to Orthanc as the destination, with compressed
    instances Orthanc accepts as they are."""
    source = Orthanc(work, name="source", aet="SOURCE")
    study, series = generate_uid(), generate_uid()
    want = compressed_set(work, study, series)
    plain = os.path.join(work, "plain.dcm")
    want[make_ct(plain, study, series)] = plain
    source.upload(list(want.values()))
    target = Orthanc(work, name="target", aet="TARGET")
    d = bridge(work, source.dicomweb, [{
        "ae_title": "TARGET", "host": "127.0.0.1",
        "port": target.dicom_port, "tls": False}]).start()
    try:
        o = movescu(d.port, [("QueryRetrieveLevel", "STUDY"),
                             ("StudyInstanceUID", study)], "TARGET")
        check_success(o, 4, "to Orthanc")
        check(target.count() == 4, "Orthanc holds the 4")
        for sop, path in want.items():
            got = os.path.join(work, "t-" + sop + ".dcm")
            with open(got, "wb") as f:
                f.write(target.instance_file(sop))
            ts = ts_of(got)
            ref = path if ts == ts_of(path) else decompressed(path, work)
            same_elements(got, ref, "Orthanc got %s as %s" %
                          (ts_of(path), ts))
        clean_stop(d)
    finally:
        d.stop()
        target.close()
        source.close()


def test_azure(work):
    """The Azure-rules server: 406 unless transfer-syntax=*, no type=,
    parts without Content-Length, QIDO-RS limit at most 200 and only
    SOPInstanceUID (+ the resource's UIDs) unless includefield asks, a
    list that moves between pages (de-duplicated)."""
    study, files = small_study(work, count=250, series_count=2)
    rows = [fake_dicomweb.instance_of(p) for p in files.values()]
    study2, files2 = small_study(os.path.join(work, "two"), count=2)
    rows += [fake_dicomweb.instance_of(p) for p in files2.values()]
    server = fake_dicomweb.FakeDicomweb(rows)
    server.duplicate_pages = True
    server.strict = True
    dest = Dest(work, debug=False)
    d = bridge(work, server.base, [dest], query={"profile": "azure"})
    d.start()
    try:
        o = movescu(d.port, [("QueryRetrieveLevel", "STUDY"),
                             ("StudyInstanceUID", study)], dest.ae)
        check_success(o, 250, "250 instances from the Azure-rules server")
        got = dest.by_sop()
        check(sorted(got) == sorted(files), "each once, none missing")
        for sop in sorted(files)[::25]:
            same_elements(got[sop], files[sop], "instance " + sop[-12:])
        check(dest.associations() == 1, "one sub-association")
        qido = [r for r in server.qido_requests()
                if r[1].endswith("/instances")]
        check(qido, "QIDO-RS at instance level")
        for _, path, query, _ in qido:
            fields = ",".join(query.get("includefield", []))
            limit = int(query.get("limit", ["0"])[-1])
            if not ("00080016" in fields.upper() or "SOPClassUID" in fields
                    or "all" in fields):
                raise Failure("QIDO-RS without includefield=00080016: %s %s"
                              % (path, query))
            if not 1 <= limit <= 200:
                raise Failure("QIDO-RS limit %s" % limit)
        offsets = sorted(int(q.get("offset", ["0"])[-1])
                         for _, _, q, _ in qido)
        check(len(qido) >= 2 and offsets[0] == 0,
              "paged: offsets %s" % offsets)
        wado = server.wado_requests()
        check(wado, "WADO-RS asked")
        for _, path, _, headers in wado:
            accept = headers.get("Accept", "")
            if "transfer-syntax=*" not in accept or \
                    "multipart/related" not in accept:
                raise Failure("WADO-RS Accept %r for %s" % (accept, path))
        print("  %d QIDO-RS, %d WADO-RS requests" % (len(qido), len(wado)))
        check(len(wado) <= 4, "WADO-RS per series, not per instance (%d)" %
              len(wado))
        # UID lists (no list matching on Azure: one query per UID, or the
        # bridge filters): two studies; two instances of one series.
        dest.clear()
        o = movescu(d.port, [("QueryRetrieveLevel", "STUDY"),
                             ("StudyInstanceUID", study2 + "\\" + study)],
                    dest.ae)
        check_success(o, 252, "two studies by a UID list")
        check(sorted(dest.by_sop()) == sorted(list(files) + list(files2)),
              "two studies: all 252 arrived once")
        by_series = {}
        for sop, p in files.items():
            by_series.setdefault(uids(p)[2], []).append(sop)
        series, sops = sorted(by_series.items())[0]
        dest.clear()
        o = movescu(d.port, [("QueryRetrieveLevel", "IMAGE"),
                             ("StudyInstanceUID", study),
                             ("SeriesInstanceUID", series),
                             ("SOPInstanceUID", sops[0] + "\\" + sops[1])],
                    dest.ae)
        check_success(o, 2, "two instances by a UID list")
        check_received(dest.by_sop(), {x: files[x] for x in sops[:2]},
                       "two instances by a UID list")
        dest.clear()
        o = movescu(d.port, [("QueryRetrieveLevel", "SERIES"),
                             ("StudyInstanceUID", study),
                             ("SeriesInstanceUID", series)], dest.ae)
        check_success(o, len(sops), "one series")
        check(sorted(dest.by_sop()) == sorted(sops), "one series: its %d"
              % len(sops))
        check(not server.rejected, "no request refused with 400 (%s)" %
              server.rejected[:3])
        tmp_empty(d, "Azure")
        clean_stop(d)
    finally:
        d.stop()
        dest.close()
        server.close()


def test_refused(work):
    """Who may retrieve: a caller whose entry says "retrieve": false gets
    no C-MOVE/C-GET context; without upload.url nothing is offered;
    retrieve.max_parallel moves at once, the next one A701 with an Error
    Comment."""
    study, files = small_study(work, count=4)
    server = fake_dicomweb.FakeDicomweb(
        [fake_dicomweb.instance_of(p) for p in files.values()])
    dest = Dest(work)
    d = bridge(work, server.base, [dest], dicom={"allowed_callers": [
        {"ae_title": "NOMOVE", "retrieve": False},
        {"ae_title": "MOVESCU"}, {"ae_title": "GETSCU"},
        {"ae_title": "RAWMOVE"}, {"ae_title": "RAWTWO"},
        {"ae_title": "ECHOSCU"}]},
        retrieve={"max_parallel": 1}).start()
    try:
        keys = [("QueryRetrieveLevel", "STUDY"), ("StudyInstanceUID", study)]
        o = movescu(d.port, keys, dest.ae, calling="NOMOVE")
        check(not o.rsps and "No valid Presentation Context" in o.text,
              "retrieve: false: movescu gets no C-MOVE context")
        o = raw_move(d.port, keys, dest.ae, calling="NOMOVE", refused_ok=True)
        check(o is None, "retrieve: false: the raw SCU's context refused")
        o = getscu(d.port, keys, os.path.join(work, "get"), calling="NOMOVE")
        check(o.rc != 0 and not o.rsps, "retrieve: false: no C-GET either")
        check(server.wado_requests() == [] and not [
            r for r in server.qido_requests() if r[1].endswith("/instances")],
            "nothing listed or fetched for them (requests: %s)" %
            [r[1] for r in server.requests])
        # max_parallel 1: a slow move holds the slot.
        server.mode = "slow"
        server.slow_s = 1.5
        first = {}
        t = threading.Thread(target=lambda: first.update(
            o=raw_move(d.port, keys, dest.ae, calling="RAWMOVE")))
        t.start()
        wait_for(lambda: server.wado_requests(), 20, "the first move fetches")
        o = raw_move(d.port, keys, dest.ae, calling="RAWTWO")
        check(o.final.status == REFUSED_RESOURCES and o.final.comment,
              "over max_parallel: A701 with an Error Comment (%r)" % o.final)
        t.join(120)
        check(first["o"].final.status == SUCCESS, "the first one completed")
        clean_stop(d)
    finally:
        d.stop()
        server.close()
    # No upload.url: retrieve is not offered.
    d2 = it.Daemon(work, dicom={"remote_aes": [dest.remote()]},
                   admin={"listen": ""})
    d2.start()
    try:
        o = movescu(d2.port, keys, dest.ae)
        check(not o.rsps and re.search(
            "No valid Presentation Context|No Acceptable Presentation",
            o.text), "without upload.url no C-MOVE context")
        clean_stop(d2)
    finally:
        d2.stop()
        dest.close()


def test_tls_dest(work):
    """Outbound TLS (a remote AE with "tls": true): our CA file and client
    certificate; the destination's certificate pinned by
    certificate_sha256 (DCMTK 3.6.7 checks no host name). A wrong pin and
    a certificate from another CA: every sub-operation failed, nothing
    sent in the clear."""
    import tls_it
    pki = os.path.join(work, "pki")
    os.makedirs(pki)
    tls_it.make_ca(pki, "ca")
    tls_it.make_ca(pki, "rogue-ca")
    tls_it.make_leaf(pki, "bridge", "ca", cn="STOWBRIDGE")
    tls_it.make_leaf(pki, "dest", "ca", cn="dest.example")
    tls_it.make_leaf(pki, "other", "ca", cn="other.example")
    tls_it.make_leaf(pki, "rogue", "rogue-ca", cn="dest.example")

    def tls_dest(ae, cert):
        return Dest(work, ae=ae, extra=[
            "+tls", os.path.join(pki, cert + ".key"),
            os.path.join(pki, cert + ".pem"),
            "+cf", os.path.join(pki, "ca.pem")])
    good = tls_dest("TLSDEST", "dest")
    rogue = tls_dest("ROGUE", "rogue")
    pin = tls_it.fingerprint(pki, "dest")
    wrong = tls_it.fingerprint(pki, "other")
    study, files = small_study(work)
    server = fake_dicomweb.FakeDicomweb(
        [fake_dicomweb.instance_of(p) for p in files.values()])
    d = bridge(work, server.base, [
        good.remote(tls=True, certificate_sha256=pin),
        dict(good.remote(tls=True, certificate_sha256=wrong),
             ae_title="WRONGPIN"),
        dict(good.remote(tls=True), ae_title="NOPIN"),
        rogue.remote(tls=True)],
        dicom={"tls": {"port": it.free_port(),
                       "certificate_file": os.path.join(pki, "bridge.pem"),
                       "private_key_file": os.path.join(pki, "bridge.key"),
                       "ca_file": os.path.join(pki, "ca.pem")}})
    d.start()
    try:
        keys = [("QueryRetrieveLevel", "STUDY"), ("StudyInstanceUID", study)]
        o = movescu(d.port, keys, "TLSDEST")
        check_success(o, 3, "TLS destination, pinned")
        check_received(good.by_sop(), files, "over TLS")
        good.clear()
        o = movescu(d.port, keys, "NOPIN")
        check_success(o, 3, "TLS destination, CA-verified, no pin")
        good.clear()
        for ae, target in (("WRONGPIN", good), ("ROGUE", rogue)):
            o = raw_move(d.port, keys, ae)
            check(o.final.status == ALL_FAILED or
                  0xC000 <= o.final.status <= 0xCFFF,
                  "%s: refused, A702 or Cxxx (%r)" % (ae, o.final))
            check(not o.final.completed and target.files() == [],
                  "%s: nothing sent" % ae)
        clean_stop(d)
    finally:
        d.stop()
        good.close()
        rogue.close()
        server.close()


def test_spool(work):
    """Instances still in our spool (not yet delivered: the server's
    STOW-RS answers 503) are served from the spool: one the server lists
    but cannot serve (WADO-RS 500), and one it does not know at all."""
    study, files = small_study(work, count=2)
    sops = sorted(files)
    listed = fake_dicomweb.instance_of(files[sops[0]])
    server = fake_dicomweb.FakeDicomweb([listed])
    server.mode = "500"
    dest = Dest(work)
    d = bridge(work, server.base, [dest]).start()
    try:
        r = it.storescu(d.port, [files[s] for s in sops])
        check(len(it.acknowledged_files(r.stdout + r.stderr)) == 2,
              "both stored in the spool")
        wait_for(lambda: any(req[0] == "POST" for req in server.requests),
                 30, "an upload attempt (503)")
        o = raw_move(d.port, [("QueryRetrieveLevel", "STUDY"),
                              ("StudyInstanceUID", study)], dest.ae)
        got = dest.by_sop()
        check(sops[0] in got, "the listed instance came from the spool "
              "(%r)" % o.final)
        same_elements(got[sops[0]], files[sops[0]], "from the spool")
        check(sops[1] in got, "the unlisted one came from the spool too "
              "(%r)" % o.final)
        check(o.final.status == SUCCESS and o.final.completed == 2,
              "0000, 2 completed (%r)" % o.final)
        clean_stop(d)
    finally:
        d.stop()
        dest.close()
        server.close()


def main():
    global BINARY
    BINARY, name = sys.argv[1], sys.argv[2]
    it.BINARY = BINARY
    test = globals().get("test_" + name)
    if test is None:
        print("no such test:", name)
        return 2
    need_tools()
    return it.run_test(test, name)


if __name__ == "__main__":
    sys.exit(main())
