#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""C-MOVE and C-GET, the basic path: DCMTK's movescu (STUDY level, to a
storescp destination) and getscu (SERIES level, on its own association)
against the real stowbridge, which lists with QIDO-RS and fetches with
WADO-RS from the real Orthanc and its DICOMweb plugin. Every instance must
arrive and equal the original element by element; the counts and the
event=retrieve_done line must say so.

usage: retrieve_basic_it.py BINARY CRAFT_SCU retrieve_basic
"""
import os
import re
import subprocess
import sys
import time
import urllib.request

import pydicom

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import it  # noqa: E402
from it import Daemon, Failure, Orthanc, check, free_port, run  # noqa: E402


def upload_to_orthanc(orthanc, path):
    with open(path, "rb") as f:
        req = urllib.request.Request(
            "http://127.0.0.1:%d/instances" % orthanc.port, data=f.read(),
            method="POST", headers={"Content-Type": "application/dicom"})
    with urllib.request.urlopen(req, timeout=30) as r:
        check(r.status == 200, "Orthanc took %s" % os.path.basename(path))


def make_study(work, series_count, per_series):
    """A study of SERIES_COUNT series of PER_SERIES instances each; returns
    the study UID and {series UID: [paths]}."""
    study = pydicom.uid.generate_uid()
    out = {}
    n = 0
    for _ in range(series_count):
        series = pydicom.uid.generate_uid()
        for _ in range(per_series):
            path = os.path.join(work, "src-%03d.dcm" % n)
            it.make_instance(path, study=study, size=64)
            ds = pydicom.dcmread(path)
            ds.SeriesInstanceUID = series
            ds.InstanceNumber = n + 1
            ds.save_as(path, write_like_original=False)
            out.setdefault(series, []).append(path)
            n += 1
    return study, out


def received(folder):
    """{SOP Instance UID: path} of the files a storescu/getscu wrote."""
    got = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            got[it.sop_uid(path)] = path
    return got


def wait_for_file_count(folder, n, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if len([x for x in os.listdir(folder)
                if not x.startswith(".")]) >= n:
            return
        time.sleep(0.2)


def counts(output):
    """The final response's counts as movescu/getscu print them."""
    out = {}
    for key in ("Completed", "Failed", "Warning"):
        m = re.findall(r"%s Suboperations\s*:\s*(\d+)" % key, output)
        out[key] = int(m[-1]) if m else None
    return out


def test_retrieve_basic(work):
    orthanc = Orthanc(work)
    storescp = None
    try:
        study, by_series = make_study(work, 2, 3)
        originals = {}
        for paths in by_series.values():
            for p in paths:
                upload_to_orthanc(orthanc, p)
                originals[it.sop_uid(p)] = p

        dest_dir = os.path.join(work, "dest")
        os.makedirs(dest_dir)
        dest_port = free_port()
        storescp_log = open(os.path.join(work, "storescp.log"), "wb")
        storescp = subprocess.Popen(
            ["storescp", "-aet", "DEST", "-od", dest_dir, "-v",
             str(dest_port)],
            stdout=storescp_log, stderr=storescp_log)

        d = Daemon(work, upload={
            "url": "http://127.0.0.1:%d/dicom-web" % orthanc.port,
            "timeout_s": 30},
            dicom={"remote_aes": [{"ae_title": "DEST", "host": "127.0.0.1",
                                   "port": dest_port}]},
            query={"profile": "orthanc"}, admin={"listen": ""},
            retrieve={"max_temp_mb": 1}).start()

        # C-MOVE at STUDY level to the storescp destination.
        r = run(["movescu", "-d", "-S", "-aet", "MOVESCU", "-aec",
                 "STOWBRIDGE", "-aem", "DEST", "-k",
                 "QueryRetrieveLevel=STUDY", "-k",
                 "StudyInstanceUID=" + study, "127.0.0.1", str(d.port)],
                timeout=120)
        out = r.stdout + r.stderr
        check(r.returncode == 0, "movescu exits 0 (%s)" % out[-800:])
        c = counts(out)
        check(c["Completed"] == 6 and c["Failed"] == 0,
              "C-MOVE: 6 completed, 0 failed (%s)" % c)
        wait_for_file_count(dest_dir, 6, 30)
        got = received(dest_dir)
        check(set(got) == set(originals),
              "the destination has every instance of the study")
        for uid, path in got.items():
            check(it.same_dataset(originals[uid], path),
                  "moved %s equals the original" % os.path.basename(
                      originals[uid]))
        log = d.log_text()
        check(re.search(r"event=retrieve_done kind=move .*calling_ae=MOVESCU"
                        r" .*destination=DEST level=STUDY total=6 "
                        r"completed=6 failed=0 warning=0 status=0000", log)
              is not None, "one retrieve_done line for the C-MOVE")

        # C-GET at SERIES level on the caller's association.
        series = sorted(by_series)[0]
        get_dir = os.path.join(work, "get")
        os.makedirs(get_dir)
        r = run(["getscu", "-d", "-S", "-aet", "GETSCU", "-aec",
                 "STOWBRIDGE", "-od", get_dir, "-k",
                 "QueryRetrieveLevel=SERIES", "-k",
                 "StudyInstanceUID=" + study, "-k",
                 "SeriesInstanceUID=" + series, "127.0.0.1", str(d.port)],
                timeout=120)
        out = r.stdout + r.stderr
        check(r.returncode == 0, "getscu exits 0 (%s)" % out[-800:])
        c = counts(out)
        check(c["Completed"] == 3 and c["Failed"] == 0,
              "C-GET: 3 completed, 0 failed (%s)" % c)
        got = received(get_dir)
        want = {it.sop_uid(p) for p in by_series[series]}
        check(set(got) == want, "getscu has every instance of the series")
        for uid, path in got.items():
            check(it.same_dataset(originals[uid], path),
                  "got %s equals the original" % os.path.basename(
                      originals[uid]))
        log = d.log_text()
        check(re.search(r"event=retrieve_done kind=get .*calling_ae=GETSCU"
                        r" .*level=SERIES total=3 completed=3 failed=0 "
                        r"warning=0 status=0000", log) is not None,
              "one retrieve_done line for the C-GET")
        tmp = os.path.join(d.spool, "tmp")
        check(os.listdir(tmp) == [], "nothing left in the spool's tmp/")

        # An unknown destination: A801 with an Error Comment.
        r = run(["movescu", "-d", "-S", "-aet", "MOVESCU", "-aec",
                 "STOWBRIDGE", "-aem", "NOWHERE", "-k",
                 "QueryRetrieveLevel=STUDY", "-k",
                 "StudyInstanceUID=" + study, "127.0.0.1", str(d.port)],
                timeout=60)
        out = r.stdout + r.stderr
        check("0xa801" in out.lower() or "a801" in out.lower(),
              "unknown destination answered A801 (%s)" % out[-400:])
        check(d.stop() == 0, "clean stop")
    finally:
        if storescp is not None:
            storescp.terminate()
            storescp.wait(10)
        orthanc.close()


def main():
    it.BINARY, it.CRAFT_SCU, name = sys.argv[1], sys.argv[2], sys.argv[3]
    test = globals().get("test_" + name)
    if test is None:
        print("no such test:", name)
        return 2
    return it.run_test(test, name)


if __name__ == "__main__":
    sys.exit(main())
