#!/usr/bin/env python3
"""Write a CT series whose headers promise more than its files hold: SLICES files of
ROWS x ROWS 16-bit pixels at 0.1 x 0.1 x 0.5 mm, each with 2 bytes of Pixel Data. Decoding
any of them fails ("pixel data shorter than declared"), so a job that fails for another
reason was judged on its headers alone.

usage: promise_series.py OUT_DIR SLICES ROWS"""
import os
import sys

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    out, slices, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    os.makedirs(out, exist_ok=True)
    study, series, frame_of_ref = generate_uid(), generate_uid(), generate_uid()
    for k in range(slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        d = Dataset()
        d.file_meta = meta
        d.is_little_endian, d.is_implicit_VR = True, False
        d.SOPClassUID = meta.MediaStorageSOPClassUID
        d.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        d.Modality = "CT"
        d.PatientID = "PROMISE"
        d.StudyInstanceUID, d.SeriesInstanceUID = study, series
        d.FrameOfReferenceUID = frame_of_ref
        d.InstanceNumber = k + 1
        d.ImagePositionPatient = [0, 0, k * 0.5]
        d.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        d.PixelSpacing = [0.1, 0.1]
        d.SliceThickness = 0.5
        d.Rows = d.Columns = rows
        d.SamplesPerPixel = 1
        d.PhotometricInterpretation = "MONOCHROME2"
        d.BitsAllocated, d.BitsStored, d.HighBit, d.PixelRepresentation = 16, 16, 15, 1
        d.RescaleSlope, d.RescaleIntercept = 1, 0
        d.PixelData = b"\0\0"
        d.save_as(os.path.join(out, "CT%05d.dcm" % k), write_like_original=False)


if __name__ == "__main__":
    main()
