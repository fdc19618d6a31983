#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""C-FIND integration tests: DCMTK's findscu against the real stowbridge,
which answers through QIDO-RS from (a) the real Orthanc with its DICOMweb
plugin and (b) our scripted QIDO-RS server playing Azure's rules or a
plain standard server, with faults.

usage: find_it.py BINARY CRAFT_SCU TEST     (TEST: find, find_paging,
                                             find_faults)

The truth for every differential query is computed here from the
generated data (PS3.4 C.2.2.2 matching), so stowbridge is checked against
the standard, and Orthanc's own C-FIND is checked against it too; where
Orthanc deviates, the deviation is named below and printed.
"""
import copy
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse

import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import it  # noqa: E402
from it import Daemon, Failure, MockWeb, Orthanc, check, free_port, run  # noqa

STUDY_ROOT = "-S"
PATIENT_ROOT = "-P"

# ---------------------------------------------------------------------------
# Test data: patients, studies, series, instances
# ---------------------------------------------------------------------------

PATIENTS = [
    # name, id, issuer, birth date, sex, charset
    ("DOE^JOHN", "P001", "", "19700101", "M", None),
    ("Doe^Jane", "P002", "", "19800202", "F", None),
    ("Müller^Jürgen", "P003", "", "19650303", "M", "ISO_IR 100"),
    ("山田^太郎", "P004", "HOSP-A", "19900404", "M", "ISO_IR 192"),
    ("SMITH^ANNA+B", "P005", "", "19550505", "F", None),
]

# patient index, date, time, accession, description, [(modality, n images)]
STUDIES = [
    (0, "20190315", "083000", "ACC-1", "CT CHEST", [("CT", 3), ("SR", 1)]),
    (0, "20210720", "141500", "ACC-2", "MR BRAIN", [("MR", 2)]),
    (1, "20200601", "101010", "ACC-3", "ct abdomen", [("CT", 2)]),
    (2, "20221111", "235959", "ACC-4", "US ABDOMEN", [("US", 2)]),
    (3, "20230105", "000001", "ACC-5", "MR KNEE", [("MR", 1), ("MR", 2)]),
    (4, "20200101", "120000", "ACC/6&7", "CT HEAD", [("CT", 1)]),
    (4, "20231231", "093000", "ACC-8", "XR CHEST", [("CR", 1)]),
]


def make_files(work):
    """Writes the instances; returns (paths, model) where model holds the
    studies with their series and instances as plain dicts."""
    out = os.path.join(work, "data")
    os.makedirs(out)
    paths, studies = [], []
    for si, (pi, date, tm, acc, descr, series_list) in enumerate(STUDIES):
        name, pid, issuer, birth, sex, charset = PATIENTS[pi]
        study = {"uid": generate_uid(), "patient": pi, "date": date,
                 "time": tm, "accession": acc, "description": descr,
                 "id": "S%d" % (si + 1), "series": []}
        for sn, (modality, count) in enumerate(series_list):
            series = {"uid": generate_uid(), "modality": modality,
                      "number": str(sn + 1), "instances": [],
                      "description": "%s series %d" % (modality, sn + 1)}
            for n in range(count):
                sop = generate_uid()
                meta = FileMetaDataset()
                meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
                meta.MediaStorageSOPInstanceUID = sop
                meta.TransferSyntaxUID = ExplicitVRLittleEndian
                path = os.path.join(out, "%s.dcm" % sop)
                ds = FileDataset(path, {}, file_meta=meta,
                                 preamble=b"\0" * 128)
                ds.is_little_endian = True
                ds.is_implicit_VR = False
                if charset:
                    ds.SpecificCharacterSet = charset
                ds.SOPClassUID = meta.MediaStorageSOPClassUID
                ds.SOPInstanceUID = sop
                ds.StudyInstanceUID = study["uid"]
                ds.SeriesInstanceUID = series["uid"]
                ds.PatientName = name
                ds.PatientID = pid
                if issuer:
                    ds.IssuerOfPatientID = issuer
                ds.PatientBirthDate = birth
                ds.PatientSex = sex
                ds.StudyDate = date
                ds.StudyTime = tm
                ds.AccessionNumber = acc
                ds.StudyDescription = descr
                ds.StudyID = study["id"]
                ds.ReferringPhysicianName = "REF^ONE"
                ds.Modality = modality
                ds.SeriesNumber = series["number"]
                ds.SeriesDescription = series["description"]
                ds.InstanceNumber = str(n + 1)
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
                paths.append(path)
                series["instances"].append({"uid": sop, "number": str(n + 1),
                                            "class": ds.SOPClassUID})
            study["series"].append(series)
        studies.append(study)
    return paths, studies


def new_daemon(work, **overrides):
    """A Daemon with a spool of its own (several run at once here)."""
    spool = os.path.join(work, "spool-" + generate_uid()[-10:])
    return Daemon(work, spool_dir=spool, **overrides)


# ---------------------------------------------------------------------------
# findscu
# ---------------------------------------------------------------------------

def query_file(work, keys, charset=None):
    """A query identifier file: KEYS maps keyword -> value ('' = return
    key)."""
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    path = os.path.join(work, "q-%s.dcm" % generate_uid()[-12:])
    ds = FileDataset(path, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    if charset:
        ds.SpecificCharacterSet = charset
    for kw, value in keys.items():
        setattr(ds, kw, value)
    ds.save_as(path, write_like_original=False)
    return path


def findscu(port, keys, model=STUDY_ROOT, work=None, charset=None,
            extra=(), calling="FINDSCU", called="STOWBRIDGE", timeout=60,
            watch=None):
    """Runs one C-FIND. Returns (answers, final status, output). @watch,
    if given, is called with each line of findscu's output as it comes."""
    outdir = os.path.join(work, "rsp-%s" % generate_uid()[-12:])
    os.makedirs(outdir)
    qfile = query_file(work, keys, charset)
    cmd = ["findscu", "-d", "-aet", calling, "-aec", called, model, "-X",
           "-od", outdir] + list(extra) + \
        ["127.0.0.1", str(port), qfile]
    # -d output holds names in the query's character set: not UTF-8.
    if watch is None:
        r = subprocess.run(cmd, capture_output=True, text=True,
                           timeout=timeout, errors="replace")
        out = r.stdout + r.stderr
    else:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True,
                                errors="replace")
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        lines = []
        try:
            for line in proc.stdout:
                lines.append(line)
                watch(line)
            proc.wait()
        finally:
            timer.cancel()
        out = "".join(lines)
    answers = [pydicom.dcmread(os.path.join(outdir, n))
               for n in sorted(os.listdir(outdir))]
    statuses = re.findall(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})", out)
    final = statuses[-1].upper() if statuses else None
    return answers, final, out


def values(ds, keyword):
    if keyword not in ds:
        return None
    v = ds.data_element(keyword).value
    if isinstance(v, pydicom.multival.MultiValue):
        return tuple(sorted(str(x) for x in v))
    s = str(v) if v is not None else ""
    return s.strip()


# ---------------------------------------------------------------------------
# The truth: PS3.4 C.2.2.2 matching on the generated data
# ---------------------------------------------------------------------------

def study_entities(studies):
    """Study-level entities as keyword -> value, as a standard server
    holds them."""
    out = []
    for s in studies:
        name, pid, issuer, birth, sex, _ = PATIENTS[s["patient"]]
        out.append({
            "StudyInstanceUID": s["uid"], "PatientName": name,
            "PatientID": pid, "PatientBirthDate": birth, "PatientSex": sex,
            "StudyDate": s["date"], "StudyTime": s["time"],
            "AccessionNumber": s["accession"], "StudyID": s["id"],
            "StudyDescription": s["description"],
            "ModalitiesInStudy": tuple(sorted({x["modality"]
                                               for x in s["series"]})),
            "NumberOfStudyRelatedSeries": str(len(s["series"])),
            "NumberOfStudyRelatedInstances": str(sum(len(x["instances"])
                                                     for x in s["series"])),
        })
    return out


def wild(pattern, text, fold):
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                 for c in pattern)
    return re.fullmatch(rx, text, re.S | (re.I if fold else 0)) is not None


def truth_studies(studies, pred):
    return {e["StudyInstanceUID"] for e in study_entities(studies) if pred(e)}


# ---------------------------------------------------------------------------
# Our scripted QIDO-RS server (Azure's rules, or a plain standard one)
# ---------------------------------------------------------------------------

STUDY_TAGS = {"00100010", "00100020", "00100021", "00100030", "00100040",
              "00080020", "00080030", "00080050", "00080090", "00081030",
              "0020000D", "00200010", "00080005"}
SERIES_TAGS = {"0020000E", "00080060", "00200011", "0008103E", "00400244",
               "00081090"}
AZURE_STUDY = {"0020000D", "00100010", "00100020", "00100030", "00080050",
               "00080090", "00080020", "00081030", "00080061"}
AZURE_SERIES = {"0020000E", "00080060", "00400244", "00081090"}
AZURE_INSTANCE = {"00080018"}


class Qido:
    """QIDO-RS over a list of instance DICOM JSON objects. azure=True
    plays Azure's documented rules (protocol-facts 3.4): 400 for a
    parameter it cannot search, an empty value, a duplicate, a limit over
    200, includefield=all with others; exact case-insensitive matching;
    204 for no results. azure=False plays a minimal standard server that
    ignores every match parameter (as PS3.18 allows for unsupported
    ones), leaving all matching to the client."""

    def __init__(self, instances, azure):
        self.instances = instances
        self.azure = azure
        self.requests = []
        self.fault = None        # None | 500 | garbage | drop | 403 | 401once
        self.insert_after_first_page = None   # a study to add mid-query
        # A threading.Event: pages from offset gate_offset on wait for it
        # (at most 60 s) before they are answered.
        self.gate = None
        self.gate_offset = 0

    def handle(self, path, headers):
        self.requests.append(path)
        if self.gate is not None:
            query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(
                path).query))
            if int(query.get("offset", 0)) >= self.gate_offset:
                self.gate.wait(60)
        if self.fault == "500":
            return 500, "oops", []
        if self.fault == "garbage":
            return 200, '[{"0020000D": {"vr": "UI", "Value": [', []
        if self.fault == "drop":
            return None, "", []
        if self.fault == "403":
            return 403, "{}", []
        if self.fault == "401once":
            self.fault = None
            return 401, "{}", []
        url = urllib.parse.urlsplit(path)
        parts = [p for p in url.path.split("/") if p][1:]   # after dicom-web
        params = urllib.parse.parse_qsl(url.query, keep_blank_values=True)
        if parts == ["studies"] and not params:
            return 200, "[]", []                 # the check probe
        level = parts[-1]
        nested = dict(zip(parts[0:-1:2], parts[1:-1:2]))
        limit, offset, filters, seen = None, 0, [], set()
        includes = []
        allowed = self.allowed(level, nested)
        for k, v in params:
            if k == "limit":
                limit = int(v)
                if self.azure and not 1 <= limit <= 200:
                    return 400, '{"error": "limit"}', []
                continue
            if k == "offset":
                offset = int(v)
                continue
            if k == "includefield":
                includes += v.split(",")
                continue
            if k == "fuzzymatching":
                continue
            if k in seen and self.azure:
                return 400, '{"error": "duplicate %s"}' % k, []
            seen.add(k)
            if self.azure:
                if k not in allowed:
                    return 400, '{"error": "UnsupportedSearchParameter"}', []
                if v == "":
                    return 400, '{"error": "QueryEmptyAttributeValue"}', []
            filters.append((k, v))
        if self.azure and "all" in includes and len(includes) > 1:
            return 400, '{"error": "includefield"}', []
        rows = self.rows(level, nested)
        if self.azure:
            rows = [r for r in rows if all(self.azure_match(r, k, v)
                                           for k, v in filters)]
        page = rows[offset:offset + limit if limit is not None else None]
        if self.insert_after_first_page is not None and offset > 0:
            self.instances.insert(0, self.insert_after_first_page)
            self.insert_after_first_page = None
        if not page and self.azure:
            return 204, "", []
        return 200, json.dumps(page), []

    @staticmethod
    def allowed(level, nested):
        study = AZURE_STUDY
        series = AZURE_SERIES
        inst = AZURE_INSTANCE
        if level == "studies":
            return study
        if level == "series":
            return series if "studies" in nested else study | series
        if "series" in nested:
            return inst
        if "studies" in nested:
            return series | inst
        return study | series | inst

    @staticmethod
    def azure_match(row, tag, value):
        attr = row.get(tag)
        if attr is None or "Value" not in attr:
            return False
        vals = []
        for v in attr["Value"]:
            if isinstance(v, dict):
                v = v.get("Alphabetic", "")
            vals.append(str(v))
        if attr["vr"] == "DA" and "-" in value:
            lo, hi = value.split("-", 1)
            return any((not lo or v >= lo) and (not hi or v <= hi)
                       for v in vals)
        return any(v.lower() == value.lower() for v in vals)

    def rows(self, level, nested):
        insts = [i for i in self.instances
                 if ("studies" not in nested or
                     i["0020000D"]["Value"][0] == nested["studies"]) and
                 ("series" not in nested or
                  i["0020000E"]["Value"][0] == nested["series"])]
        if level == "instances":
            return insts
        key = "0020000D" if level == "studies" else "0020000E"
        groups = {}
        for i in insts:
            groups.setdefault(i[key]["Value"][0], []).append(i)
        rows = []
        for uid, members in groups.items():
            first = members[0]
            keep = STUDY_TAGS if level == "studies" else \
                STUDY_TAGS | SERIES_TAGS
            row = {t: copy.deepcopy(v) for t, v in first.items()
                   if t in keep}
            if level == "studies":
                mods = sorted({m["00080060"]["Value"][0] for m in members})
                row["00080061"] = {"vr": "CS", "Value": mods}
                row["00201206"] = {"vr": "IS", "Value": [len({
                    m["0020000E"]["Value"][0] for m in members})]}
                row["00201208"] = {"vr": "IS", "Value": [len(members)]}
            else:
                row["00201209"] = {"vr": "IS", "Value": [len(members)]}
            rows.append(row)
        return rows


def instance_json(path):
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    out = ds.to_json_dict()
    for t in list(out):
        if out[t]["vr"] in ("OB", "OW", "SQ"):
            del out[t]
    return out


# ---------------------------------------------------------------------------
# The differential test
# ---------------------------------------------------------------------------

def orthanc_with_find(work):
    """Orthanc (DICOMweb plugin on) that also answers C-FIND itself."""
    o = Orthanc.__new__(Orthanc)
    o.dir = os.path.join(work, "orthanc")
    os.makedirs(o.dir)
    o.port = free_port()
    o.dicom_port = free_port()
    cfg = {
        "Name": "it", "HttpPort": o.port, "DicomPort": o.dicom_port,
        "DicomAet": "ORTHANC",
        "StorageDirectory": os.path.join(o.dir, "db"),
        "IndexDirectory": os.path.join(o.dir, "db"),
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "Plugins": [Orthanc.PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "DicomAlwaysAllowFind": True, "DicomCheckCalledAet": False,
        "UnknownSopClassAccepted": True, "DefaultEncoding": "Utf8",
        "DicomModalities": {"findscu": ["FINDSCU", "127.0.0.1", 104]},
    }
    if not os.path.exists("/usr/sbin/Orthanc") or \
            not os.path.exists(Orthanc.PLUGIN):
        print("skip: Orthanc or its DICOMweb plugin is not installed")
        sys.exit(it.SKIP)
    conf = os.path.join(o.dir, "orthanc.json")
    with open(conf, "w") as f:
        json.dump(cfg, f)
    o.log = open(os.path.join(work, "orthanc.log"), "wb")
    o.proc = subprocess.Popen(["/usr/sbin/Orthanc", conf], stdout=o.log,
                              stderr=o.log)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            o.get("/system")
            return o
        except OSError:
            time.sleep(0.2)
    raise Failure("Orthanc did not start")


def post_file(orthanc, path):
    import urllib.request
    with open(path, "rb") as f:
        req = urllib.request.Request(
            "http://127.0.0.1:%d/instances" % orthanc.port, data=f.read(),
            method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def find_cases(studies):
    """(name, model, keys, charset, expected unique keys or None, unique
    keyword, Orthanc deviation note or None)."""
    s = studies
    ret = {"StudyInstanceUID": "", "PatientName": "", "PatientID": "",
           "StudyDate": "", "StudyTime": "", "AccessionNumber": "",
           "StudyDescription": "", "ModalitiesInStudy": "",
           "NumberOfStudyRelatedInstances": "",
           "NumberOfStudyRelatedSeries": ""}

    def study(keys):
        return dict(ret, QueryRetrieveLevel="STUDY", **keys)

    cases = [
        ("wildcard name, upper case", STUDY_ROOT,
         study({"PatientName": "DOE*"}), None,
         truth_studies(s, lambda e: wild("DOE*", e["PatientName"], True)),
         None),
        ("wildcard name with ?", STUDY_ROOT,
         study({"PatientName": "D?e^J*"}), None,
         truth_studies(s, lambda e: wild("D?e^J*", e["PatientName"], True)),
         None),
        ("date range", STUDY_ROOT, study({"StudyDate": "20200101-20211231"}),
         None, truth_studies(s, lambda e: "20200101" <= e["StudyDate"] <=
                             "20211231"), None),
        ("open date range", STUDY_ROOT, study({"StudyDate": "20221111-"}),
         None, truth_studies(s, lambda e: e["StudyDate"] >= "20221111"),
         None),
        ("date upper bound", STUDY_ROOT, study({"StudyDate": "-20200101"}),
         None, truth_studies(s, lambda e: e["StudyDate"] <= "20200101"),
         None),
        ("time range", STUDY_ROOT, study({"StudyTime": "080000-120000"}),
         None, truth_studies(s, lambda e: "080000" <= e["StudyTime"] <=
                             "120000"), None),
        ("modalities in study", STUDY_ROOT,
         study({"ModalitiesInStudy": "MR"}), None,
         truth_studies(s, lambda e: "MR" in e["ModalitiesInStudy"]), None),
        ("UID list", STUDY_ROOT,
         study({"StudyInstanceUID": "%s\\%s" % (s[1]["uid"], s[4]["uid"])}),
         None, {s[1]["uid"], s[4]["uid"]}, None),
        ("accession with / and &", STUDY_ROOT,
         study({"AccessionNumber": "ACC/6&7"}), None, {s[5]["uid"]}, None),
        ("name with + (percent-encoded)", STUDY_ROOT,
         study({"PatientName": "SMITH^ANNA+B"}), None,
         {s[5]["uid"], s[6]["uid"]}, None),
        ("case-sensitive description", STUDY_ROOT,
         study({"StudyDescription": "CT*"}), None,
         truth_studies(s, lambda e: wild("CT*", e["StudyDescription"],
                                         False)), "case"),
        ("non-ASCII name, ISO_IR 100 query", STUDY_ROOT,
         study({"PatientName": "Müller*"}), "ISO_IR 100", {s[3]["uid"]},
         None),
        ("non-ASCII name, UTF-8 query", STUDY_ROOT,
         study({"PatientName": "山田*"}), "ISO_IR 192", {s[4]["uid"]}, None),
        ("all studies, only return keys", STUDY_ROOT,
         {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "",
          "PatientID": ""}, None, {x["uid"] for x in s}, None),
        ("series of a study", STUDY_ROOT,
         {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": s[0]["uid"],
          "SeriesInstanceUID": "", "Modality": "", "SeriesNumber": "",
          "SeriesDescription": "", "NumberOfSeriesRelatedInstances": ""},
         None, {x["uid"] for x in s[0]["series"]}, None),
        ("CT series of a study", STUDY_ROOT,
         {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": s[0]["uid"],
          "SeriesInstanceUID": "", "Modality": "CT"}, None,
         {x["uid"] for x in s[0]["series"] if x["modality"] == "CT"}, None),
        ("images of a series", STUDY_ROOT,
         {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": s[0]["uid"],
          "SeriesInstanceUID": s[0]["series"][0]["uid"],
          "SOPInstanceUID": "", "InstanceNumber": "", "SOPClassUID": ""},
         None, {i["uid"] for i in s[0]["series"][0]["instances"]}, None),
        ("one image by number", STUDY_ROOT,
         {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": s[0]["uid"],
          "SeriesInstanceUID": s[0]["series"][0]["uid"],
          "SOPInstanceUID": "", "InstanceNumber": "2"}, None,
         {s[0]["series"][0]["instances"][1]["uid"]}, None),
        ("patients (Patient Root)", PATIENT_ROOT,
         {"QueryRetrieveLevel": "PATIENT", "PatientName": "*",
          "PatientID": "", "PatientBirthDate": "", "PatientSex": "",
          "NumberOfPatientRelatedStudies": ""}, "ISO_IR 192",
         {p[1] for p in PATIENTS}, None),
        ("patients by name (Patient Root)", PATIENT_ROOT,
         {"QueryRetrieveLevel": "PATIENT", "PatientName": "DOE*",
          "PatientID": "", "NumberOfPatientRelatedStudies": ""}, None,
         {"P001", "P002"}, None),
        ("studies of a patient (Patient Root)", PATIENT_ROOT,
         {"QueryRetrieveLevel": "STUDY", "PatientID": "P001",
          "StudyInstanceUID": "", "StudyDate": ""}, None,
         {s[0]["uid"], s[1]["uid"]}, None),
    ]
    return cases


UNIQUE = {"STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID",
          "IMAGE": "SOPInstanceUID", "PATIENT": "PatientID"}
IGNORED = {"SpecificCharacterSet", "RetrieveAETitle", "QueryRetrieveLevel",
           "InstanceAvailability"}


def answer_map(answers, level):
    out = {}
    for a in answers:
        out[values(a, UNIQUE[level])] = a
    return out


def compare_answers(label, got, expected_keys, keys, level):
    """Checks that GOT (answer map) has exactly the expected unique keys,
    and that each answer carries exactly the requested keys."""
    check(set(got) == set(expected_keys),
          "%s: matches %s" % (label, sorted(got)))
    wanted = set(keys) | {"QueryRetrieveLevel", "RetrieveAETitle"}
    for uid, a in got.items():
        check(values(a, "RetrieveAETitle") == "STOWBRIDGE",
              "%s: Retrieve AE Title = ours" % label)
        present = {e.keyword for e in a} - {"SpecificCharacterSet"}
        check(present == wanted,
              "%s: answer %s carries exactly the requested keys (%s)"
              % (label, uid[-12:] if uid else uid,
                 sorted(present ^ wanted)))


def test_find(work):
    paths, studies = make_files(work)
    orthanc = orthanc_with_find(work)
    try:
        for p in paths:
            post_file(orthanc, p)
        url = "http://127.0.0.1:%d/dicom-web" % orthanc.port
        # Orthanc 1.10 (DICOMweb 1.7) does not percent-decode QIDO-RS
        # parameters: the "orthanc" profile matches such values here.
        std = new_daemon(work, upload={"url": url, "timeout_s": 10},
                         query={"page_size": 3, "profile": "orthanc"}).start()
        azure_db = Qido([instance_json(p) for p in paths], azure=True)
        mock = MockWeb()
        mock.qido = azure_db.handle
        az = new_daemon(work, upload={
            "url": "http://127.0.0.1:%d/dicom-web" % mock.port,
            "timeout_s": 10}, query={"profile": "azure", "page_size": 2},
            retry={"min_s": 1}).start()
        deviations = []
        for (name, model, keys, charset, expected, note) in \
                find_cases(studies):
            level = keys["QueryRetrieveLevel"]
            requested = [k for k in keys if k != "QueryRetrieveLevel"]
            results = {}
            for label, port, called in (("stowbridge/orthanc", std.port,
                                         "STOWBRIDGE"),
                                        ("stowbridge/azure", az.port,
                                         "STOWBRIDGE"),
                                        ("orthanc C-FIND", orthanc.dicom_port,
                                         "ORTHANC")):
                answers, final, out = findscu(port, keys, model, work,
                                              charset, called=called)
                results[label] = (answer_map(answers, level), final)
                if label.startswith("stowbridge"):
                    check(final == "0000", "%s %s: final status 0000 (%s)"
                          % (name, label, final))
                    compare_answers("%s %s" % (name, label),
                                    results[label][0], expected, requested,
                                    level)
            # Orthanc's own C-FIND against the truth.
            got = set(results["orthanc C-FIND"][0])
            if got != set(expected):
                deviations.append("%s: Orthanc's C-FIND answers %d, the "
                                  "standard %d (%s)" % (name, len(got),
                                                        len(expected), note))
            # Values: stowbridge in both modes and Orthanc agree on every
            # requested key of the results they share.
            ours = results["stowbridge/orthanc"][0]
            for label in ("stowbridge/azure", "orthanc C-FIND"):
                theirs = results[label][0]
                for uid in set(ours) & set(theirs):
                    for kw in requested:
                        if kw in IGNORED:
                            continue
                        a, b = values(ours[uid], kw), values(theirs[uid], kw)
                        if label == "orthanc C-FIND" and a != b:
                            deviations.append("%s: %s of %s: ours %r, "
                                              "Orthanc %r" % (name, kw, uid,
                                                              a, b))
                            continue
                        if a != b:
                            raise Failure("%s: %s of %s: %r here, %r from %s"
                                          % (name, kw, uid, a, b, label))
                print("ok: %s: values agree with %s (%d results)"
                      % (name, label, len(set(ours) & set(theirs))))
        # Non-ASCII names arrive intact, in the character set asked for.
        answers, final, _ = findscu(std.port, {
            "QueryRetrieveLevel": "STUDY", "PatientName": "Müller*",
            "StudyInstanceUID": ""}, STUDY_ROOT, work, "ISO_IR 100")
        check(len(answers) == 1 and
              answers[0].SpecificCharacterSet == "ISO_IR 100" and
              str(answers[0].PatientName) == "Müller^Jürgen",
              "a Latin-1 query gets a Latin-1 answer with the name intact")
        answers, final, _ = findscu(std.port, {
            "QueryRetrieveLevel": "STUDY", "PatientID": "P004",
            "PatientName": ""}, STUDY_ROOT, work, "ISO_IR 100")
        check(len(answers) == 1 and
              answers[0].SpecificCharacterSet == "ISO_IR 192" and
              str(answers[0].PatientName) == "山田^太郎",
              "a name Latin-1 cannot hold is sent as UTF-8 (ISO_IR 192), "
              "not garbled")
        answers, final, _ = findscu(std.port, {
            "QueryRetrieveLevel": "STUDY", "PatientID": "P003",
            "PatientName": ""}, STUDY_ROOT, work)
        check(len(answers) == 1 and
              answers[0].SpecificCharacterSet == "ISO_IR 192" and
              str(answers[0].PatientName) == "Müller^Jürgen",
              "no character set asked, non-ASCII answer: ISO_IR 192")
        # Never "key=" to Azure, and never a wildcard or a list.
        for path in azure_db.requests:
            q = urllib.parse.urlsplit(path).query
            check("=&" not in q + "&" or "includefield" in q,
                  "Azure request without an empty value: %s" % path[:60])
        for d in deviations:
            print("Orthanc deviation (documented, not ours):", d)
        print("requests to the Azure-like server:", len(azure_db.requests))
        check(std.stop() == 0 and az.stop() == 0, "clean stops")
        mock.close()
    finally:
        orthanc.close()


# ---------------------------------------------------------------------------
# Paging, caps, C-CANCEL
# ---------------------------------------------------------------------------

def synthetic_studies(n):
    out = []
    for i in range(n):
        out.append({
            "0020000D": {"vr": "UI", "Value": ["1.2.826.0.1.3680043.10.%d"
                                               % (i + 1)]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic":
                                                "PAGE^%04d" % i}]},
            "00100020": {"vr": "LO", "Value": ["PG%04d" % i]},
            "00080020": {"vr": "DA", "Value": ["20240101"]},
            "0020000E": {"vr": "UI", "Value": ["1.2.826.0.1.3680043.11.%d"
                                               % (i + 1)]},
            "00080060": {"vr": "CS", "Value": ["CT"]},
        })
    return out


def test_find_paging(work):
    db = Qido(synthetic_studies(450), azure=False)
    mock = MockWeb()
    mock.qido = db.handle
    url = "http://127.0.0.1:%d/dicom-web" % mock.port
    keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "",
            "PatientName": "PAGE*", "PatientID": ""}
    try:
        # upload.timeout_s 60: the C-CANCEL case below holds a page until
        # findscu has sent its C-CANCEL.
        d = new_daemon(work, upload={"url": url, "timeout_s": 60},
                   query={"page_size": 100, "max_results": 5000}).start()
        answers, final, _ = findscu(d.port, keys, work=work)
        uids = [str(a.StudyInstanceUID) for a in answers]
        check(len(answers) == 450 and len(set(uids)) == 450,
              "450 matches, page size 100: 450 pending responses (%d)"
              % len(answers))
        check(final == "0000", "final status 0000")
        pages = [p for p in db.requests if "limit=" in p]
        check(len(pages) == 5, "5 QIDO-RS pages (%d)" % len(pages))
        check(all("00100010=PAGE*" in p for p in pages),
              "the wildcard is passed to a standard server")
        # The standard server here ignores match parameters: local
        # filtering must still give exact DIMSE results.
        answers, final, _ = findscu(d.port, dict(keys, PatientName="PAGE^01*"),
                                    work=work)
        check(len(answers) == 100 and final == "0000",
              "a filter the server ignored is applied here (100 of 450)")
        # De-duplication: a study arrives while paging, shifting offsets.
        db.requests.clear()
        extra = synthetic_studies(451)[450]
        db.insert_after_first_page = extra
        answers, final, _ = findscu(d.port, keys, work=work)
        uids = [str(a.StudyInstanceUID) for a in answers]
        check(len(uids) == len(set(uids)),
              "no duplicate when a study arrives between pages (%d answers)"
              % len(uids))
        db.instances.remove(extra)
        # C-CANCEL after the first responses: no more QIDO-RS requests.
        # The C-CANCEL races the burst of the first page's responses: the
        # next page may already be on its way, none after it. On a loaded
        # machine findscu can fall further behind the burst than one page,
        # so the second page is answered only once findscu has sent its
        # C-CANCEL: then no third page may be asked for.
        db.requests.clear()
        cancel_sent = threading.Event()
        db.gate, db.gate_offset = cancel_sent, 100

        def watch(line):
            if "Sending Cancel Request" in line:
                cancel_sent.set()
        try:
            answers, final, out = findscu(d.port, keys, work=work,
                                          extra=["--cancel", "3"],
                                          watch=watch)
        finally:
            db.gate = None
        check(cancel_sent.is_set(), "findscu sent its C-CANCEL")
        check(final == "FE00", "C-CANCEL answered FE00 (%s)" % final)
        pages = len([p for p in db.requests if "limit=" in p])
        check(pages <= 2 and len(answers) < 450,
              "C-CANCEL stopped the paging (%d of 5 pages, %d answers)"
              % (pages, len(answers)))
        check(d.stop() == 0, "clean stop")

        # A cap of 300: exactly 300 answers, then an incomplete status.
        db.requests.clear()
        capped = new_daemon(work, upload={"url": url, "timeout_s": 10},
                        query={"page_size": 100, "max_results": 300}).start()
        answers, final, out = findscu(capped.port, keys, work=work)
        check(len(answers) == 300, "cap 300: 300 answers (%d)"
              % len(answers))
        check(final == "A700", "cap 300: final status A700, the list is "
              "incomplete (%s)" % final)
        check("incomplete" in out, "the error comment says incomplete")
        check("event=find-capped" in capped.log_text(), "the log says so")
        # Exactly at the cap with nothing more: complete.
        db.instances[:] = synthetic_studies(300)
        answers, final, _ = findscu(capped.port, keys, work=work)
        check(len(answers) == 300 and final == "0000",
              "300 matches with a cap of 300: complete (%s)" % final)
        check(capped.stop() == 0, "clean stop")

        # Azure rules: page size over 200 is a config error; 204 = none.
        az = Qido(synthetic_studies(5), azure=True)
        mock.qido = az.handle
        d = new_daemon(work, upload={"url": url, "timeout_s": 10},
                   query={"profile": "azure", "page_size": 200}).start()
        answers, final, _ = findscu(d.port, dict(keys, PatientName="NOBODY"),
                                    work=work)
        check(answers == [] and final == "0000", "204: no matches, success")
        answers, final, _ = findscu(d.port, dict(keys, PatientName="PAGE*"),
                                    work=work)
        check(len(answers) == 5 and final == "0000",
              "Azure: the wildcard is matched here (5)")
        check(all("00100010=PAGE" not in p for p in az.requests),
              "Azure: no wildcard sent")
        check(any("00100010=NOBODY" in p for p in az.requests),
              "Azure: an exact name is sent")
        check(d.stop() == 0, "clean stop")
        bad = new_daemon(work, upload={"url": url},
                     query={"profile": "azure", "page_size": 201})
        r = run([it.BINARY, "check", "--config", bad.config])
        check(r.returncode == 2 and "query.page_size" in r.stderr,
              "azure with page_size 201 is refused by check")
    finally:
        mock.close()


# ---------------------------------------------------------------------------
# Failures and permissions
# ---------------------------------------------------------------------------

def test_find_faults(work):
    db = Qido(synthetic_studies(3), azure=False)
    mock = MockWeb()
    mock.qido = db.handle
    url = "http://127.0.0.1:%d/dicom-web" % mock.port
    keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "",
            "PatientName": ""}
    try:
        with open(os.path.join(work, "secret"), "w") as f:
            f.write("s3cret")
        os.chmod(os.path.join(work, "secret"), 0o600)
        auth = {"type": "client_credentials",
                "token_url": "http://127.0.0.1:%d/token" % mock.port,
                "client_id": "client-7",
                "client_secret_file": os.path.join(work, "secret")}
        # upload.timeout_s is only a bound on a hang here: every fault
        # below answers (or refuses) at once. 3 s let a slow answer from
        # this Python server on a loaded machine (ASan, CI) become C001
        # where C002 or C003 is checked; 30 s cannot.
        d = new_daemon(work, upload={"url": url, "timeout_s": 30}, auth=auth,
                   dicom={"allowed_callers": [
                       {"ae_title": "FINDSCU"}, {"ae_title": "ECHOSCU"},
                       {"ae_title": "STOREONLY", "find": False}]}).start()
        answers, final, _ = findscu(d.port, keys, work=work)
        check(len(answers) == 3 and final == "0000", "baseline: 3 matches")
        for fault, status in (("500", "C002"), ("garbage", "C003"),
                              ("drop", "C001"), ("403", "C002")):
            db.fault = fault
            answers, final, out = findscu(d.port, keys, work=work)
            check(answers == [] and final == status,
                  "server %s: no answers, status %s (%s)"
                  % (fault, status, final))
            check("Error Comment" in out or "ErrorComment" in out,
                  "server %s: an error comment" % fault)
        check("DICOM Data Owner" in d.log_text() or
              "role" in d.log_text(),
              "a 403 logs the token diagnosis")
        db.fault = "401once"
        before = len(mock.token_requests)
        answers, final, _ = findscu(d.port, keys, work=work)
        check(len(answers) == 3 and final == "0000",
              "a 401 is answered by a new token and one replay")
        check(len(mock.token_requests) == before + 1, "one new token")
        db.fault = None
        # A token endpoint that is not there (a fresh daemon: no token
        # cached), then no server at all.
        dead = "http://127.0.0.1:%d" % free_port()
        notoken = new_daemon(work, upload={"url": url, "timeout_s": 30},
                         auth=dict(auth, token_url=dead + "/token")).start()
        answers, final, out = findscu(notoken.port, keys, work=work)
        check(answers == [] and final == "C004",
              "token endpoint down: status C004 (%s)" % final)
        check(notoken.stop() == 0, "clean stop")
        mock.close()
        answers, final, out = findscu(d.port, keys, work=work)
        check(answers == [] and final == "C001",
              "server down: status C001 (%s)" % final)
        check(d.alive() and it.echo(d.port).returncode == 0,
              "the daemon keeps serving")
        # Permissions: a caller with "find": false cannot query.
        answers, final, out = findscu(d.port, keys, work=work,
                                      calling="STOREONLY")
        check(final is None and answers == [],
              "\"find\": false: no C-FIND context for that caller")
        check("find-refused" in d.log_text(), "and the log says why")
        check(d.stop() == 0, "clean stop")
        # query.enabled false: no C-FIND at all.
        off = new_daemon(work, upload={"url": url},
                     query={"enabled": False}).start()
        answers, final, out = findscu(off.port, keys, work=work)
        check(final is None and answers == [], "query.enabled false: no "
              "C-FIND context")
        check(off.stop() == 0, "clean stop")
        # Bad identifiers.
        mock = MockWeb()
        mock.qido = db.handle
        url = "http://127.0.0.1:%d/dicom-web" % mock.port
        d = new_daemon(work, upload={"url": url}).start()
        answers, final, _ = findscu(d.port, {"PatientName": ""}, work=work)
        check(final == "A900", "no QueryRetrieveLevel: A900 (%s)" % final)
        answers, final, _ = findscu(d.port, {"QueryRetrieveLevel": "PATIENT",
                                             "PatientID": ""}, work=work)
        check(final == "A900", "PATIENT level in Study Root: A900 (%s)"
              % final)
        answers, final, out = findscu(d.port, keys, work=work,
                                      charset="ISO_IR 999")
        check(final == "C000" and answers == [],
              "an identifier in an unknown character set: C000 (%s)" % final)
        check(it.echo(d.port).returncode == 0, "and the daemon keeps serving")
        check(d.stop() == 0, "clean stop")
    finally:
        mock.close()


def main():
    it.BINARY, it.CRAFT_SCU, name = sys.argv[1], sys.argv[2], sys.argv[3]
    test = globals().get("test_" + name)
    if test is None:
        print("no such test:", name)
        return 2
    return it.run_test(test, name)


if __name__ == "__main__":
    sys.exit(main())
