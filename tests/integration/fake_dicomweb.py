# SPDX-License-Identifier: Apache-2.0
"""A scripted DICOMweb server (QIDO-RS and WADO-RS) that answers as the
Azure DICOM service v2 does (protocol-facts-2.md 2.4) and misbehaves on
request, for the C-MOVE/C-GET tests (retrieve_it.py) and the retrieve
benchmark helpers.

wado_it.py's Scripted server speaks WADO-RS only; a retrieve first lists
instances through QIDO-RS, so this one serves both from one table.

Azure rules kept here:
- WADO-RS of a study or series: 406 unless the Accept asks for
  transfer-syntax=* (no parameter means Explicit VR LE, refused for more
  than one instance); a single instance in another syntax: 406 (this
  server does not transcode).
- The answer is `multipart/related; boundary=<GUID>` with no type=
  parameter, chunked, and every part is only
  `Content-Type: application/dicom; transfer-syntax=<uid>`: no
  Content-Length.
- QIDO-RS instance level: SOPInstanceUID and the UIDs above the queried
  resource (as Azure's StudyInstances / AllInstances resources add the
  series and study attributes), the filtered attributes and those named by
  includefield; SOPClassUID only when asked for (includefield=00080016 or
  all). limit above 200: 400. An unknown query key: 400.

Modes (attribute .mode, changeable while running): "azure" (default),
"406" (every WADO-RS refused with 406), "500" (500 with Retry-After),
"garbage" (200 multipart whose body is random bytes), "drop" (the
connection is cut in the middle of the second part, of the first when
there is only one, and in the middle of a single-part answer), "slow"
(.slow_s seconds before each part). .qido_mode: "ok" or "500".
.duplicate_pages: every page after the first repeats the previous page's
last entry (a server whose list moved between pages). .strict: QIDO-RS
as Azure's query parser takes it: per resource only the attributes of
its levels may be filtered (others 400), one non-empty value each,
exact matching (no wildcards, no UID lists: taken literally; strings but
UIDs case-insensitive), includefield=all alone. .foreign: a row (not in the table) sent as an
extra first part of every multipart WADO-RS answer. .bearer: the token
every GET must carry (Authorization: Bearer ...), else 401.
.requests records (method, path, query dict, headers) of every request,
.rejected the path and query of every request answered 400.

Only the Python standard library and pydicom (to read the table's
headers).
"""
import http.server
import json
import os
import re
import socket
import threading
import time
import urllib.parse
import uuid

EXPLICIT = "1.2.840.10008.1.2.1"
MAX_LIMIT = 200

# keyword -> (tag, VR); the attributes a retrieve filters or asks for.
ATTRS = {
    "PatientID": ("00100020", "LO"),
    "PatientName": ("00100010", "PN"),
    "StudyInstanceUID": ("0020000D", "UI"),
    "SeriesInstanceUID": ("0020000E", "UI"),
    "SOPInstanceUID": ("00080018", "UI"),
    "SOPClassUID": ("00080016", "UI"),
    "Modality": ("00080060", "CS"),
    "AccessionNumber": ("00080050", "SH"),
    "StudyDate": ("00080020", "DA"),
    "InstanceNumber": ("00200013", "IS"),
}
BY_TAG = {tag: kw for kw, (tag, _) in ATTRS.items()}
# Attributes a resource adds besides SOPInstanceUID (Azure's
# QueryResponseBuilder: StudyInstances adds series attributes, AllInstances
# study and series ones).
RESOURCE_UIDS = {
    "all": ["StudyInstanceUID", "SeriesInstanceUID"],
    "study": ["SeriesInstanceUID"],
    "series": [],
}
QUERY_WORDS = {"limit", "offset", "includefield", "fuzzymatching"}
# .strict (Azure's QueryParser, protocol-facts.md 3.4): the attributes
# each level may filter on, and which levels each resource takes.
STRICT_LEVELS = {
    "study": {"StudyInstanceUID", "PatientName", "PatientID",
              "AccessionNumber", "StudyDate"},
    "series": {"SeriesInstanceUID", "Modality"},
    "instance": {"SOPInstanceUID"},
}
STRICT_RESOURCES = {
    ("studies", False, False): ("study",),
    ("series", False, False): ("study", "series"),
    ("instances", False, False): ("study", "series", "instance"),
    ("series", True, False): ("series",),
    ("instances", True, False): ("series", "instance"),
    ("instances", True, True): ("instance",),
}


def instance_of(path):
    """A table row for the Part 10 file @path: its attributes (from the
    header) and its transfer syntax."""
    import pydicom
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    row = {"path": path, "ts": str(ds.file_meta.TransferSyntaxUID)}
    for kw in ATTRS:
        if kw in ds:
            row[kw] = str(ds.data_element(kw).value)
    return row


def key_of(name):
    """The keyword of a QIDO query key (keyword or 8 hex digits), or
    None."""
    if name in ATTRS:
        return name
    return BY_TAG.get(name.upper())


def matches(value, wanted):
    """QIDO matching of one attribute: a UID list, wildcards * and ?."""
    if value is None:
        return False
    for w in wanted.split(","):
        if "*" in w or "?" in w:
            rx = "".join(".*" if c == "*" else "." if c == "?" else
                         re.escape(c) for c in w)
            if re.fullmatch(rx, value):
                return True
        elif value == w:
            return True
    return False


class FakeDicomweb:
    """QIDO-RS and WADO-RS for @instances (rows of instance_of()) at
    http://127.0.0.1:PORT/v2 (self.base)."""

    def __init__(self, instances):
        self.instances = list(instances)
        self.mode = "azure"
        self.qido_mode = "ok"
        self.duplicate_pages = False
        self.strict = False
        self.foreign = None
        self.bearer = None
        self.slow_s = 1.0
        self.requests = []
        self.rejected = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.handle(self)

            def do_POST(self):
                # STOW-RS is not this server's business: the uploader's
                # instances stay in the spool (503, retried later).
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                outer.record(self, {})
                outer.answer(self, 503, "application/json",
                             b'{"message":"service unavailable"}',
                             [("Retry-After", "60")])

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

    # -- bookkeeping ---------------------------------------------------

    def record(self, h, query):
        with self.lock:
            self.requests.append((h.command, urllib.parse.urlsplit(
                h.path).path, query, dict(h.headers)))

    @staticmethod
    def is_qido(path):
        return path.rsplit("/", 1)[-1] in ("instances", "series", "studies")

    def qido_requests(self):
        with self.lock:
            return [r for r in self.requests if self.is_qido(r[1])]

    def wado_requests(self):
        with self.lock:
            return [r for r in self.requests
                    if r[0] == "GET" and not self.is_qido(r[1])]

    # -- answers ---------------------------------------------------------

    @staticmethod
    def answer(h, status, ctype, body, extra=()):
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)

    def bad(self, h, ctype, body):
        """400, remembered in .rejected (the request's path and query)."""
        with self.lock:
            self.rejected.append(h.path)
        return self.answer(h, 400, ctype, body)

    @staticmethod
    def chunk(h, data):
        if data:
            h.wfile.write(b"%x\r\n" % len(data) + data + b"\r\n")

    def handle(self, h):
        parts = urllib.parse.urlsplit(h.path)
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
        self.record(h, query)
        if self.bearer is not None and \
                h.headers.get("Authorization") != "Bearer " + self.bearer:
            return self.answer(h, 401, "application/json",
                               b'{"message":"unauthorized"}',
                               [("WWW-Authenticate", "Bearer")])
        path = parts.path
        m = re.fullmatch(r"/v2(?:/studies/([0-9.]+)(?:/series/([0-9.]+))?)?"
                         r"/(instances|series|studies)", path)
        if m and not (m.group(3) == "studies" and m.group(1)):
            return self.qido(h, m.group(1), m.group(2), m.group(3), query)
        m = re.fullmatch(r"/v2/studies/([0-9.]+)(?:/series/([0-9.]+)"
                         r"(?:/instances/([0-9.]+))?)?", path)
        if m is None:
            return self.bad(h, "application/json",
                               b'{"message":"bad path"}')
        return self.wado(h, *m.groups())

    # -- QIDO-RS ---------------------------------------------------------

    def qido(self, h, study, series, level, query):
        if self.qido_mode == "500":
            return self.answer(h, 500, "application/json",
                               b'{"message":"internal error"}')
        filters = {}
        if study:
            filters["StudyInstanceUID"] = study
        if series:
            filters["SeriesInstanceUID"] = series
        include = set()
        include_all = False
        allowed = set()
        for lv in STRICT_RESOURCES.get((level, bool(study), bool(series)),
                                       ()):
            allowed |= STRICT_LEVELS[lv]
        for name, values in query.items():
            if name in QUERY_WORDS:
                continue
            kw = key_of(name)
            if kw is None or (self.strict and kw not in allowed):
                return self.bad(h, "application/json", json.dumps(
                    {"message": "unknown or unsupported query parameter " +
                     name}).encode())
            if self.strict and (len(values) > 1 or values[0] == ""):
                return self.bad(h, "application/json", json.dumps(
                    {"message": "duplicate or empty attribute " +
                     name}).encode())
            filters[kw] = values[-1]
        if self.strict:
            fields = [f for v in query.get("includefield", [])
                      for f in v.split(",")]
            if "all" in fields and len(fields) > 1:
                return self.bad(h, "application/json",
                                   b'{"message":"includefield=all with '
                                   b'other fields"}')
        for value in query.get("includefield", []):
            for name in value.split(","):
                if name == "all":
                    include_all = True
                elif key_of(name):
                    include.add(key_of(name))
        try:
            limit = int(query.get("limit", ["100"])[-1])
            offset = int(query.get("offset", ["0"])[-1])
        except ValueError:
            return self.bad(h, "application/json",
                               b'{"message":"bad limit or offset"}')
        if limit < 1 or limit > MAX_LIMIT or offset < 0:
            return self.bad(h, "application/json", json.dumps(
                {"message": "The limit must be between 1 and %d" %
                 MAX_LIMIT}).encode())
        if self.strict:
            # Exact matching only: '*', '?' and ',' are taken literally;
            # strings other than UIDs case-insensitively (as Azure does).
            def same(k, value, wanted):
                if value is None:
                    return False
                if ATTRS[k][1] == "UI":
                    return value == wanted
                return value.lower() == wanted.lower()
            rows = [r for r in self.instances
                    if all(same(k, r.get(k), v) for k, v in filters.items())]
        else:
            rows = [r for r in self.instances
                    if all(matches(r.get(k), v) for k, v in filters.items())]
        if level != "instances":
            key = "StudyInstanceUID" if level == "studies" else \
                "SeriesInstanceUID"
            seen, unique = set(), []
            for r in rows:
                if r[key] not in seen:
                    seen.add(r[key])
                    unique.append(r)
            rows = unique
        start = offset
        if self.duplicate_pages and offset > 0:
            start = offset - 1
        page = rows[start:offset + limit]
        if level == "instances":
            resource = "series" if series else "study" if study else "all"
            fields = {"SOPInstanceUID"} | set(RESOURCE_UIDS[resource])
            if include_all:
                fields |= set(ATTRS)
        elif level == "series":
            fields = {"SeriesInstanceUID", "Modality"} | (
                {"StudyInstanceUID"} if not study else set())
        else:
            fields = {"StudyInstanceUID", "PatientID", "StudyDate",
                      "AccessionNumber"}
        fields |= include | set(filters)
        out = []
        for r in page:
            obj = {}
            for kw in sorted(fields):
                tag, vr = ATTRS[kw]
                if kw in r:
                    obj[tag] = {"vr": vr, "Value": [r[kw]]}
            out.append(obj)
        if not out:
            h.send_response(204)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return None
        return self.answer(h, 200, "application/dicom+json",
                           json.dumps(out).encode())

    # -- WADO-RS ---------------------------------------------------------

    def wado(self, h, study, series, sop):
        chosen = [r for r in self.instances
                  if r.get("StudyInstanceUID") == study and
                  (series is None or r.get("SeriesInstanceUID") == series)
                  and (sop is None or r.get("SOPInstanceUID") == sop)]
        if self.mode == "500":
            return self.answer(h, 500, "text/plain", b"internal error",
                               [("Retry-After", "1")])
        if self.mode == "406":
            return self.answer(h, 406, "application/json",
                               b'{"message":"The request headers are not '
                               b'acceptable"}')
        if not chosen:
            return self.answer(h, 404, "application/json",
                               b'{"message":"The specified study cannot be '
                               b'found."}')
        boundary = str(uuid.uuid4())
        if self.mode == "garbage":
            return self.answer(h, 200, "multipart/related; boundary=" +
                               boundary, os.urandom(5000))
        accept = h.headers.get("Accept", "")
        single = False
        if sop is not None and re.match(r"\s*application/dicom\b", accept):
            single = True
        elif "multipart/related" not in accept or \
                not re.search(r'type="?application/dicom"?', accept):
            return self.answer(h, 406, "application/json",
                               b'{"message":"The request headers are not '
                               b'acceptable"}')
        ts = re.search(r"transfer-syntax=([^;,\s]+)", accept)
        ts = ts.group(1).strip('"') if ts else EXPLICIT
        if ts != "*":
            if sop is None:
                return self.answer(h, 406, "application/json",
                                   b'{"message":"The request headers are not '
                                   b'acceptable: multi instance transcoding '
                                   b'is not supported"}')
            if ts != chosen[0]["ts"]:
                return self.answer(h, 406, "application/json",
                                   b'{"message":"transcoding not supported"}')
        if single:
            with open(chosen[0]["path"], "rb") as f:
                body = f.read()
            if self.mode == "drop":
                h.send_response(200)
                h.send_header("Content-Type", "application/dicom; "
                              "transfer-syntax=" + chosen[0]["ts"])
                h.send_header("Content-Length", str(len(body)))
                h.end_headers()
                h.wfile.write(body[:len(body) // 2])
                h.wfile.flush()
                h.connection.shutdown(socket.SHUT_RDWR)
                h.close_connection = True
                return None
            return self.answer(h, 200, "application/dicom; transfer-syntax=" +
                               chosen[0]["ts"], body)
        h.send_response(200)
        h.send_header("Content-Type", "multipart/related; boundary=" +
                      boundary)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        if self.foreign is not None:
            # A server that slips in an instance nobody asked for.
            chosen = [self.foreign] + chosen
        cut = 1 if len(chosen) > 1 else 0
        for n, row in enumerate(chosen):
            if self.mode == "slow":
                h.wfile.flush()
                time.sleep(self.slow_s)
            self.chunk(h, ("--%s\r\nContent-Type: application/dicom; "
                           "transfer-syntax=%s\r\n\r\n" %
                           (boundary, row["ts"])).encode())
            size = os.path.getsize(row["path"])
            sent = 0
            with open(row["path"], "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    if self.mode == "drop" and n == cut and \
                            sent + len(block) > size // 2:
                        self.chunk(h, block[:size // 2 - sent])
                        h.wfile.flush()
                        h.connection.shutdown(socket.SHUT_RDWR)
                        h.close_connection = True
                        return None
                    self.chunk(h, block)
                    sent += len(block)
            self.chunk(h, b"\r\n")
        self.chunk(h, ("--%s--" % boundary).encode())
        h.wfile.write(b"0\r\n\r\n")
        return None
