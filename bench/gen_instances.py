#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Writes N distinct CT instances of about SIZE_KB each (explicit VR little
endian, random 16-bit pixels) into DIR, for the receive benchmark.

usage: gen_instances.py DIR N [SIZE_KB]
"""
import os
import sys

import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def main():
    out_dir, count = sys.argv[1], int(sys.argv[2])
    size_kb = int(sys.argv[3]) if len(sys.argv) > 3 else 512
    side = int((size_kb * 1024 / 2) ** 0.5)
    pixels = os.urandom(side * side * 2)
    study = generate_uid()
    series = generate_uid()
    os.makedirs(out_dir, exist_ok=True)
    for i in range(count):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = os.path.join(out_dir, "ct%05d.dcm" % i)
        ds = FileDataset(path, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.Modality = "CT"
        ds.PatientName = "Bench^Patient"
        ds.PatientID = "BENCH0001"
        ds.InstanceNumber = i + 1
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = side
        ds.Columns = side
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.PixelData = pixels
        ds.save_as(path, enforce_file_format=True) if pydicom.__version__ >= "3" \
            else ds.save_as(path, write_like_original=False)


if __name__ == "__main__":
    main()
