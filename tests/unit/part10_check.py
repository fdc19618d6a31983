#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Compares dicom/part10 (through part10_dump) with pydicom on every real
file pydicom ships as test data (every transfer syntax it has: implicit
and explicit VR little endian, big endian, deflate, JPEG, JPEG-LS,
JPEG 2000, RLE; sequences of undefined length, UN sequences, private
sequences), and on the integration tests' generated files.

usage: part10_check.py PART10_DUMP
"""
import glob
import os
import subprocess
import sys

import pydicom
from pydicom.tag import Tag

TEST_FILES = "/usr/lib/python3/dist-packages/pydicom/data/test_files"
TAGS = [0x00020010, 0x00080016, 0x00080018, 0x00080050, 0x00100010,
        0x00100020, 0x00100030, 0x00101000, 0x0020000D, 0x0020000E]


def truth(path):
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    if not hasattr(ds, "file_meta") or "TransferSyntaxUID" not in ds.file_meta:
        return None
    out = {}
    for t in TAGS:
        src = ds.file_meta if (t >> 16) == 2 else ds
        if Tag(t) not in src:
            out[t] = None
            continue
        raw = src.get_item(Tag(t))
        value = raw.value
        if isinstance(value, str):
            value = value.encode("latin-1", "replace")
        if value is None:
            value = b""
        out[t] = bytes(value).rstrip(b" \0")
    return out


def ours(dump, path):
    r = subprocess.run([dump, path] + ["%08X" % t for t in TAGS],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return r.stdout.strip()
    out = {}
    for line in r.stdout.splitlines():
        if line.endswith(" absent"):
            out[int(line[:8], 16)] = None
        elif len(line) >= 9 and line[8] == "=":
            out[int(line[:8], 16)] = bytes.fromhex(line[9:])
    return out


def main():
    dump = sys.argv[1]
    files = sorted(glob.glob(os.path.join(TEST_FILES, "*.dcm")))
    if not files:
        print("pydicom test files not found; skipped")
        return 77
    compared = mismatches = 0
    for path in files:
        with open(path, "rb") as f:
            head = f.read(132)
        if head[128:132] != b"DICM":
            continue
        try:
            expected = truth(path)
        except Exception as e:  # pydicom cannot read it either
            print("skip (pydicom: %s): %s" % (e, os.path.basename(path)))
            continue
        if expected is None:
            continue
        got = ours(dump, path)
        compared += 1
        if got != expected:
            mismatches += 1
            print("MISMATCH %s:\n  ours   %r\n  pydicom %r"
                  % (os.path.basename(path), got, expected))
    print("%d files compared, %d mismatches" % (compared, mismatches))
    if compared < 40:
        print("FAIL: too few files compared")
        return 1
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
