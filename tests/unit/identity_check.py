#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Compares dicom/identity (through identity_dump) with pydicom's reading
of the same values on every file pydicom ships as character set and test
data: Latin-1, Latin-2-free Western sets, Greek, Cyrillic, Arabic, Hebrew,
Japanese (ISO 2022 IR 13, 87, 159), Korean (IR 149), Chinese (GB18030,
IR 58), UTF-8, and every transfer syntax of its test files. Values are
compared one by one ('\\'-separated, trimmed of spaces), as
redact_add_value() takes them.

usage: identity_check.py IDENTITY_DUMP
"""
import glob
import subprocess
import sys
import warnings

try:
    import pydicom
    from pydicom.tag import Tag
except ImportError:
    print("SKIP: no pydicom")
    sys.exit(77)

DATA = "/usr/lib/python3/dist-packages/pydicom/data"
TAGS = [0x00100010, 0x00101001, 0x00101005, 0x00101060, 0x00102297,
        0x00100020, 0x00101000, 0x00100030, 0x00080050, 0x00101040,
        0x00102154, 0x00101090]
SEQUENCE = 0x00101002


def values(text):
    """The values of @text, trimmed; a PN's empty last component group
    ("A^B=" ) is no value (pydicom drops it, the file may keep it)."""
    out = []
    for v in text.split("\\"):
        v = v.strip(" ").rstrip("=")
        if v:
            out.append(v)
    return out


def text_of(elem):
    v = elem.value
    if v is None or isinstance(v, bytes):
        return None
    if isinstance(v, (list, pydicom.multival.MultiValue)):
        return "\\".join(str(x) for x in v)
    return str(v)


def truth(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        ds.decode()
        out = {}
        for t in TAGS:
            if Tag(t) in ds:
                text = text_of(ds[Tag(t)])
                if text is None:
                    return None
                if values(text):
                    out["%08X" % t] = values(text)
        if Tag(SEQUENCE) in ds and ds[Tag(SEQUENCE)].VR == "SQ":
            for i, item in enumerate(ds[Tag(SEQUENCE)].value):
                if "PatientID" in item and values(str(item.PatientID)):
                    out["%08X[%d].00100020" % (SEQUENCE, i)] = \
                        values(str(item.PatientID))
    return out


def main():
    files = sorted(glob.glob(DATA + "/charset_files/*.dcm") +
                   glob.glob(DATA + "/test_files/*.dcm") +
                   glob.glob(DATA + "/test_files/*/*.dcm"))
    if not files:
        print("SKIP: no pydicom test data")
        return 77
    dump = subprocess.run([sys.argv[1]] + files, capture_output=True,
                          check=True).stdout.decode("utf-8", "strict")
    ours = {}
    current = None
    for line in dump.splitlines():
        if line.startswith("FILE "):
            current = line[5:]
            ours[current] = {}
        elif line.startswith("ERROR "):
            ours[current] = None
        else:
            key, _vr, text = (line.split(" ", 2) + [""])[:3]
            ours[current][key] = values(text)
    bad = 0
    compared = 0
    for path in files:
        try:
            expected = truth(path)
        except Exception as e:  # pydicom cannot read it: nothing to compare
            print("# skipped %s (pydicom: %s)" % (path, e))
            continue
        if expected is None:
            print("# skipped %s (a value pydicom leaves as bytes)" % path)
            continue
        compared += 1
        got = ours.get(path)
        if got is None:
            if expected:
                print("not ok - %s: identity failed, pydicom read %d values"
                      % (path, len(expected)))
                bad += 1
            continue
        if got != expected:
            bad += 1
            print("not ok - %s" % path)
            for k in sorted(set(got) | set(expected)):
                if got.get(k) != expected.get(k):
                    print("#   %s ours %r pydicom %r"
                          % (k, got.get(k), expected.get(k)))
    print("%d files compared, %d differ" % (compared, bad))
    return 1 if bad or compared < 40 else 0


if __name__ == "__main__":
    sys.exit(main())
