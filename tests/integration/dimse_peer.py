# SPDX-License-Identifier: Apache-2.0
"""A raw DICOM upper-layer peer for tests (PS3.8 9.3, PS3.7 9.3 and E):
every PDU, item and command set is built byte by byte here, so a test
can send what no toolkit would (truncated items, odd lengths, tiny PDU
sizes, late C-CANCELs) and read exactly what the SCP answered.

Imported by tests/integration/scp_it.py and tests/fuzz/dimse_fuzz.py.
Only the Python standard library and pydicom (for data sets).
"""
import socket
import struct
import time

APP_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
VERIFICATION = "1.2.840.10008.1.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
FIND_STUDY = "1.2.840.10008.5.1.4.1.2.2.1"
FIND_PATIENT = "1.2.840.10008.5.1.4.1.2.1.1"

# PDU types (PS3.8 9.3.1)
ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ = 1, 2, 3
P_DATA, RELEASE_RQ, RELEASE_RP, ABORT = 4, 5, 6, 7

# Command fields (PS3.7 E.1)
C_STORE_RQ, C_STORE_RSP = 0x0001, 0x8001
C_FIND_RQ, C_FIND_RSP = 0x0020, 0x8020
C_ECHO_RQ, C_ECHO_RSP = 0x0030, 0x8030
C_CANCEL_RQ = 0x0FFF
NO_DATA_SET = 0x0101


def uid_bytes(uid):
    """A UID value padded to even length with NUL (PS3.5 9.1)."""
    b = uid.encode() if isinstance(uid, str) else uid
    return b + b"\0" if len(b) % 2 else b


def item(kind, body):
    """A variable item: type, reserved, 2-byte length, body."""
    return bytes([kind, 0]) + len(body).to_bytes(2, "big") + body


def pdu(kind, body):
    """A PDU: type, reserved, 4-byte length, body."""
    return bytes([kind, 0]) + len(body).to_bytes(4, "big") + body


def pc_item(pc_id, abstract, transfers):
    """A Presentation Context item of an A-ASSOCIATE-RQ (PS3.8 9.3.2.2)."""
    body = bytes([pc_id, 0, 0, 0]) + item(0x30, abstract.encode())
    for ts in transfers:
        body += item(0x40, ts.encode())
    return item(0x20, body)


def user_info(max_pdu=16384, impl_uid="1.2.826.0.1.3680043.9.7156.1",
              version="RAWPEER", extra=b""):
    """A User Information item: maximum length, implementation class UID
    and version name (PS3.7 D.3.3), then @extra sub-items as given."""
    body = item(0x51, struct.pack(">I", max_pdu))
    body += item(0x52, impl_uid.encode())
    if version:
        body += item(0x55, version.encode())
    return item(0x50, body + extra)


def associate_rq(called="STOWBRIDGE", calling="RAWPEER", contexts=None,
                 max_pdu=16384, user=None, app=APP_CONTEXT):
    """An A-ASSOCIATE-RQ PDU. @contexts: [(id, abstract, [ts...])];
    default: Verification with implicit VR LE as context 1."""
    if contexts is None:
        contexts = [(1, VERIFICATION, [IMPLICIT])]
    body = struct.pack(">HH", 1, 0)
    body += called.encode().ljust(16)[:16] + calling.encode().ljust(16)[:16]
    body += b"\0" * 32 + item(0x10, app.encode())
    for pc_id, abstract, transfers in contexts:
        body += pc_item(pc_id, abstract, transfers)
    body += user if user is not None else user_info(max_pdu)
    return pdu(ASSOCIATE_RQ, body)


def element(group, elem, value):
    """One implicit VR little endian element."""
    return struct.pack("<HHI", group, elem, len(value)) + value


def us(v):
    return struct.pack("<H", v)


def command(fields):
    """A command set (PS3.7 6.3): @fields is [(elem, bytes)] of group
    0000 in ascending order; CommandGroupLength (0000,0000) is added."""
    body = b"".join(element(0, e, v) for e, v in fields)
    return element(0, 0, struct.pack("<I", len(body))) + body


def echo_rq(msg_id=1):
    return command([(0x0002, uid_bytes(VERIFICATION)),
                    (0x0100, us(C_ECHO_RQ)), (0x0110, us(msg_id)),
                    (0x0800, us(NO_DATA_SET))])


def store_rq(msg_id, sop_class, sop_instance):
    return command([(0x0002, uid_bytes(sop_class)),
                    (0x0100, us(C_STORE_RQ)), (0x0110, us(msg_id)),
                    (0x0700, us(0)), (0x0800, us(0)),
                    (0x1000, uid_bytes(sop_instance))])


def find_rq(msg_id, sop_class=FIND_STUDY):
    return command([(0x0002, uid_bytes(sop_class)),
                    (0x0100, us(C_FIND_RQ)), (0x0110, us(msg_id)),
                    (0x0700, us(0)), (0x0800, us(0))])


def cancel_rq(msg_id):
    return command([(0x0100, us(C_CANCEL_RQ)), (0x0120, us(msg_id)),
                    (0x0800, us(NO_DATA_SET))])


def pdv(pc_id, payload, is_command, last):
    """One PDV item (PS3.8 9.3.5.1, E.2): length, context ID, control
    header (bit 0 command, bit 1 last fragment), data."""
    ctrl = (1 if is_command else 0) | (2 if last else 0)
    return struct.pack(">IBB", len(payload) + 2, pc_id, ctrl) + payload


def pdata_pdus(pc_id, payload, is_command, max_pdu=16384):
    """@payload as P-DATA-TF PDUs of at most @max_pdu bytes of variable
    field each (one PDV per PDU)."""
    room = max(1, max_pdu - 6)
    out = []
    off = 0
    while True:
        chunk = payload[off:off + room]
        off += len(chunk)
        out.append(pdu(P_DATA, pdv(pc_id, chunk, is_command,
                                   off >= len(payload))))
        if off >= len(payload):
            return out


def parse_elements(data):
    """Implicit VR LE elements of group 0000 -> {elem: bytes}."""
    out = {}
    off = 0
    while off + 8 <= len(data):
        group, elem, length = struct.unpack_from("<HHI", data, off)
        off += 8
        out[(group << 16) | elem] = data[off:off + length]
        off += length
    return out


def field_us(cmd, elem):
    v = cmd.get(elem)
    return struct.unpack("<H", v[:2])[0] if v is not None and len(v) >= 2 \
        else None


def field_uid(cmd, elem):
    v = cmd.get(elem)
    return v.rstrip(b"\0 ").decode("ascii", "replace") if v is not None \
        else None


def parse_ac(body):
    """The presentation context results of an A-ASSOCIATE-AC body:
    {id: (result, transfer syntax)} and the peer's maximum PDU length."""
    results = {}
    max_pdu = None
    off = 68
    while off + 4 <= len(body):
        kind = body[off]
        length = int.from_bytes(body[off + 2:off + 4], "big")
        value = body[off + 4:off + 4 + length]
        if kind == 0x21 and len(value) >= 4:
            ts = b""
            sub = 4
            while sub + 4 <= len(value):
                slen = int.from_bytes(value[sub + 2:sub + 4], "big")
                if value[sub] == 0x40:
                    ts = value[sub + 4:sub + 4 + slen]
                sub += 4 + slen
            results[value[0]] = (value[2], ts.decode("ascii", "replace"))
        elif kind == 0x50:
            sub = 0
            while sub + 4 <= len(value):
                slen = int.from_bytes(value[sub + 2:sub + 4], "big")
                if value[sub] == 0x51 and slen == 4:
                    max_pdu = int.from_bytes(value[sub + 4:sub + 8], "big")
                sub += 4 + slen
        off += 4 + length
    return results, max_pdu


def dataset_bytes(ds):
    """@ds encoded as explicit VR little endian, without meta header."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_dataset(fp, ds)
    return fp.getvalue()


def ct_dataset(sop_instance, study="1.2.826.0.1.3680043.9.7156.2.1",
               sop_class=CT_IMAGE, pixels=64):
    """A small CT-like data set (no patient data beyond a test name)."""
    from pydicom.dataset import Dataset
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.Modality = "CT"
    ds.PatientName = "Raw^Peer"
    ds.PatientID = "RAW0001"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = study + ".1"
    ds.Rows = 8
    ds.Columns = pixels // 8 if pixels >= 8 else 1
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(range(256)) * (pixels // 256) + \
        bytes(pixels % 256)
    return ds


class Closed(Exception):
    """The SCP closed the connection (or it timed out)."""


class Peer:
    """One TCP connection to the SCP, spoken to PDU by PDU."""

    def __init__(self, port, host="127.0.0.1", source=None, timeout=10):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        if source is not None:
            self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.buf = b""
        self.peer_max_pdu = 16384

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Closed("timeout")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise Closed("timeout")
            except OSError as e:
                raise Closed(str(e))
            if not chunk:
                raise Closed("closed by the SCP")
            self.buf += chunk

    def read_pdu(self, timeout=10):
        """(type, body) of the next PDU; raises Closed."""
        deadline = time.monotonic() + timeout
        self._fill(6, deadline)
        length = int.from_bytes(self.buf[2:6], "big")
        self._fill(6 + length, deadline)
        kind, body = self.buf[0], self.buf[6:6 + length]
        self.buf = self.buf[6 + length:]
        return kind, body

    def wait_closed(self, timeout):
        """Seconds until the SCP closed the connection, or None."""
        start = time.monotonic()
        deadline = start + timeout
        while time.monotonic() < deadline:
            try:
                self._fill(len(self.buf) + 1, deadline)
            except Closed as e:
                if str(e) == "timeout":
                    return None
                return time.monotonic() - start
        return None

    def associate(self, rq=None, timeout=10, **kw):
        """Sends an A-ASSOCIATE-RQ; returns (type, body) of the answer, and
        for an A-ASSOCIATE-AC the context results in self.contexts."""
        self.send(rq if rq is not None else associate_rq(**kw))
        kind, body = self.read_pdu(timeout)
        self.contexts = {}
        if kind == ASSOCIATE_AC:
            self.contexts, max_pdu = parse_ac(body)
            if max_pdu:
                self.peer_max_pdu = max_pdu
        return kind, body

    def send_message(self, pc_id, cmd, data=None):
        for p in pdata_pdus(pc_id, cmd, True, self.peer_max_pdu):
            self.send(p)
        if data is not None:
            for p in pdata_pdus(pc_id, data, False, self.peer_max_pdu):
                self.send(p)

    def read_message(self, timeout=10):
        """The next DIMSE message: (command dict, data set bytes or None,
        context ID). Raises Closed, or ValueError on another PDU type."""
        cmd = b""
        data = b""
        pc = None
        want_data = None
        while True:
            kind, body = self.read_pdu(timeout)
            if kind != P_DATA:
                raise ValueError("PDU type %d in place of P-DATA" % kind)
            off = 0
            while off + 6 <= len(body):
                length = int.from_bytes(body[off:off + 4], "big")
                pc, ctrl = body[off + 4], body[off + 5]
                value = body[off + 6:off + 4 + length]
                off += 4 + length
                if ctrl & 1:
                    cmd += value
                    if ctrl & 2:
                        fields = parse_elements(cmd)
                        want_data = field_us(fields, 0x0800) != NO_DATA_SET
                        if not want_data:
                            return fields, None, pc
                else:
                    data += value
                    if ctrl & 2:
                        return parse_elements(cmd), data, pc

    def release(self, timeout=10):
        """A-RELEASE-RQ; True if A-RELEASE-RP came back."""
        self.send(pdu(RELEASE_RQ, b"\0\0\0\0"))
        try:
            kind, _ = self.read_pdu(timeout)
        except Closed:
            return False
        return kind == RELEASE_RP


def raw_ab(source=0, reason=0):
    return pdu(ABORT, bytes([0, 0, source, reason]))



# ---------------------------------------------------------------------------
# A catalogue of malformed and odd A-ASSOCIATE-RQs
# ---------------------------------------------------------------------------

def _rq(items, called="STOWBRIDGE", calling="RAWPEER", version=1):
    body = struct.pack(">HH", version, 0)
    body += called.encode("latin-1").ljust(16)[:16]
    body += calling.encode("latin-1").ljust(16)[:16] + b"\0" * 32 + items
    return pdu(ASSOCIATE_RQ, body)


def _app(uid=APP_CONTEXT):
    return item(0x10, uid.encode() if isinstance(uid, str) else uid)


def _pc(pc_id=1, abstract=VERIFICATION, transfers=(IMPLICIT,), extra=b""):
    body = bytes([pc_id, 0, 0, 0])
    if abstract is not None:
        body += item(0x30, abstract.encode() if isinstance(abstract, str)
                     else abstract)
    for ts in transfers:
        body += item(0x40, ts.encode() if isinstance(ts, str) else ts)
    return item(0x20, body + extra)


def _max_len(n=16384):
    return item(0x51, struct.pack(">I", n))


def _impl():
    return item(0x52, b"1.2.826.0.1.3680043.9.7156.1")


def _user(*subs):
    return item(0x50, b"".join(subs))


def _identity(kind=1, primary=b"user", secondary=b""):
    return item(0x58, bytes([kind, 0]) + struct.pack(">H", len(primary)) +
                primary + struct.pack(">H", len(secondary)) + secondary)


def _role(uid=VERIFICATION):
    u = uid.encode()
    return item(0x54, struct.pack(">H", len(u)) + u + b"\1\1")


def _ext_neg(uid=VERIFICATION, info=b"\1"):
    u = uid.encode()
    return item(0x56, struct.pack(">H", len(u)) + u + info)


def _raw(kind, length, body):
    """An item whose length field says @length whatever @body is."""
    return bytes([kind, 0]) + struct.pack(">H", length) + body


def _good_items():
    return (_app() + _pc(1) + _pc(3, CT_IMAGE, (EXPLICIT, IMPLICIT)) +
            _user(_max_len(), _impl(), item(0x55, b"RAWPEER")))


def malformed_requests():
    """[(name, PDU, expected answer)]: answer is "abort" (our structural
    check refuses it: A-ABORT), "rj" (A-ASSOCIATE-RJ) or "ac". Each kind
    of damage DCMTK 3.6.7 fails on in its own parser is here (several of
    them leak there), plus well-formed requests with odd content."""
    ui = _user(_max_len(), _impl())
    ts = IMPLICIT.encode()
    vs = VERIFICATION.encode()
    cases = [
        ("pc: transfer syntax past its context",
         _rq(_app() + item(0x20, bytes([1, 0, 0, 0]) + item(0x30, vs) +
                          item(0x40, ts) + _raw(0x40, 50, b"1.2")) + ui),
         "abort"),
        ("pc: transfer syntax of 80 bytes",
         _rq(_app() + _pc(1, VERIFICATION, (b"1." * 40,)) + ui), "abort"),
        ("pc: abstract syntax of 70 bytes",
         _rq(_app() + _pc(1, b"1" * 70) + ui), "abort"),
        ("pc: length past the PDU",
         _rq(_app() + _raw(0x20, 4096, _pc(1)[4:]) + ui), "abort"),
        ("pc: length 2",
         _rq(_app() + _raw(0x20, 2, b"\1\0") + ui), "abort"),
        ("pc: no transfer syntax",
         _rq(_app() + _pc(1, VERIFICATION, ()) + ui), "abort"),
        ("pc: no abstract syntax",
         _rq(_app() + _pc(1, None) + ui), "abort"),
        ("pc: two abstract syntaxes",
         _rq(_app() + _pc(1, VERIFICATION, (IMPLICIT,),
                          item(0x30, vs)) + ui), "abort"),
        ("pc: even ID", _rq(_app() + _pc(2) + ui), "abort"),
        ("pc: ID twice", _rq(_app() + _pc(1) + _pc(1) + ui), "abort"),
        ("pc: 200 contexts",
         _rq(_app() + b"".join(_pc((2 * i + 1) & 0xff) for i in range(200))
             + ui), "abort"),
        ("pc: unknown sub-item",
         _rq(_app() + _pc(1, VERIFICATION, (IMPLICIT,), item(0x41, ts)) + ui),
         "abort"),
        ("pc: A-ASSOCIATE-AC context item",
         _rq(_app() + item(0x21, bytes([1, 0, 0, 0]) + item(0x40, ts)) +
             _pc(3) + ui), "abort"),
        ("pc: empty abstract syntax",
         _rq(_app() + _pc(1, b"") + ui), "abort"),
        ("pc: truncated in the sub-item header",
         _rq(_app() + _raw(0x20, 6, bytes([1, 0, 0, 0, 0x30, 0])) + ui),
         "abort"),
        ("app: 70 bytes", _rq(_app("1" * 70) + _pc(1) + ui), "abort"),
        ("app: missing", _rq(_pc(1) + ui), "abort"),
        ("app: twice", _rq(_app() + _app() + _pc(1) + ui), "abort"),
        ("app: length past the PDU",
         _rq(_pc(1) + ui + _raw(0x10, 99, b"1.2.840")), "abort"),
        ("ui: missing", _rq(_app() + _pc(1)), "abort"),
        ("ui: twice", _rq(_app() + _pc(1) + ui + ui), "abort"),
        ("ui: length past the PDU",
         _rq(_app() + _pc(1) + _raw(0x50, 40, _max_len())), "abort"),
        ("ui: no maximum length", _rq(_app() + _pc(1) + _user(_impl())),
         "abort"),
        ("ui: maximum length of 3 bytes",
         _rq(_app() + _pc(1) + _user(item(0x51, b"\0\x40\0"))), "abort"),
        ("ui: maximum length twice",
         _rq(_app() + _pc(1) + _user(_max_len(), _max_len())), "abort"),
        ("ui: role selection truncated",
         _rq(_app() + _pc(1) + _user(_max_len(), _role(),
                                      _raw(0x54, 9, b"\0\2\x31"))), "abort"),
        ("ui: role selection UID length",
         _rq(_app() + _pc(1) + _user(_max_len(), item(
             0x54, struct.pack(">H", 40) + vs + b"\1\1"))), "abort"),
        ("ui: extended negotiation UID past its item",
         _rq(_app() + _pc(1) + _user(_max_len(), item(
             0x56, struct.pack(">H", 200) + b"1.2"))), "abort"),
        ("ui: extended negotiation of 1 byte",
         _rq(_app() + _pc(1) + _user(_max_len(), item(0x56, b"\0"))),
         "abort"),
        ("ui: user identity primary past its item",
         _rq(_app() + _pc(1) + _user(_max_len(), item(
             0x58, b"\1\0" + struct.pack(">H", 30) + b"abc"))), "abort"),
        ("ui: user identity secondary for type 1",
         _rq(_app() + _pc(1) + _user(_max_len(), _identity(1, b"u", b"pw"))),
         "abort"),
        ("ui: user identity twice",
         _rq(_app() + _pc(1) + _user(_max_len(), _identity(), _identity())),
         "abort"),
        ("ui: user identity server response",
         _rq(_app() + _pc(1) + _user(_max_len(), item(0x59, b"\0\0"))),
         "abort"),
        ("ui: user identity type 0",
         _rq(_app() + _pc(1) + _user(_max_len(), _identity(0))), "abort"),
        ("ui: implementation class UID of 70 bytes",
         _rq(_app() + _pc(1) + _user(_max_len(), item(0x52, b"1" * 70))),
         "abort"),
        ("ui: version name of 17 characters",
         _rq(_app() + _pc(1) + _user(_max_len(), item(0x55, b"V" * 17))),
         "abort"),
        ("ui: asynchronous operations of 2 bytes",
         _rq(_app() + _pc(1) + _user(_max_len(), item(0x53, b"\0\1"))),
         "abort"),
        ("item header cut at the end",
         _rq(_good_items() + b"\x50\0"), "abort"),
        ("fixed part only", _rq(b""), "abort"),
        ("protocol version 0", _rq(_good_items(), version=0), "rj"),
        # Well formed, odd content: DCMTK parses these; we reject or
        # refuse them.
        ("odd UIDs: letters, NUL and spaces in syntaxes",
         _rq(_app() + _pc(1, b"1.2.x.\0zz", (b"1.2.840.10008.1.2\0",)) +
             _pc(3, b" 1.2.3 ", (b"abc",)) + ui), "ac"),
        ("called AE not ours", _rq(_good_items(), called="WRONG"), "rj"),
        ("called AE with control characters",
         _rq(_good_items(), called="\x01\x02ab\\c\x7f"), "rj"),
        ("calling AE all spaces", _rq(_good_items(), calling=""), "rj"),
        ("maximum PDU length 1",
         _rq(_app() + _pc(1) + _user(_max_len(1), _impl())), "rj"),
        ("every user information sub-item, well formed",
         _rq(_app() + _pc(1) + _user(
             _max_len(), _impl(), item(0x53, b"\0\1\0\1"), _role(),
             item(0x55, b"RAWPEER"), _ext_neg(), _identity(2, b"u", b"pw"),
             item(0x57, b"\0\3abc\0\0\0\0"), item(0x5f, b"\1"))), "ac"),
    ]
    return cases


def answer_kind(kind):
    return {ASSOCIATE_AC: "ac", ASSOCIATE_RJ: "rj", ABORT: "abort"}.get(
        kind, "pdu %d" % kind)
