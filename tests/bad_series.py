#!/usr/bin/python3
"""Write a copy of a single-frame CT series with one value made bad, for tests/test-bad-values.sh.

    tests/bad_series.py SRC_DIR OUT_DIR CASE

SRC_DIR holds the series (*.dcm, e.g. written by tools/mmunet/phantom_series.py); OUT_DIR
receives the same files under a new Series Instance UID and new SOP Instance UIDs, with CASE
applied to every file:

    spacing=V        Pixel Spacing V\\V (the text as given: 1e30, NaN, 0, -1 ...)
    thickness=V      Slice Thickness V
    slope=V          Rescale Slope V
    orientation=V    Image Orientation (Patient) V (six values separated by '\\')
    position=V       the z coordinate of Image Position (Patient) set to V (the same in every
                     file, so for a finite V the slices also share one position)
    for-per-slice    a Frame of Reference UID of its own in every file
    constant=HU      every pixel stored as the value that rescales to HU
    none             only the new UIDs
"""
import os
import sys
import warnings

import numpy as np
import pydicom
from pydicom.uid import generate_uid


def main():
    src, out, case = sys.argv[1:4]
    key, _, value = case.partition("=")
    os.makedirs(out, exist_ok=True)
    series = generate_uid()
    warnings.simplefilter("ignore")  # pydicom warns about the invalid DS values on purpose
    for name in sorted(f for f in os.listdir(src) if f.endswith(".dcm")):
        ds = pydicom.dcmread(os.path.join(src, name))
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if key == "spacing":
            ds.PixelSpacing = [value, value]
        elif key == "thickness":
            ds.SliceThickness = value
        elif key == "slope":
            ds.RescaleSlope = value
        elif key == "orientation":
            ds.ImageOrientationPatient = value.split("\\")
        elif key == "position":
            p = list(ds.ImagePositionPatient)
            ds.ImagePositionPatient = [p[0], p[1], value]
        elif key == "for-per-slice":
            ds.FrameOfReferenceUID = generate_uid()
        elif key == "constant":
            a = ds.pixel_array
            stored = (float(value) - float(ds.get("RescaleIntercept", 0))) / \
                float(ds.get("RescaleSlope", 1))
            ds.PixelData = np.full_like(a, int(round(stored))).tobytes()
        elif key != "none":
            sys.exit(f"bad_series: unknown case {case}")
        ds.save_as(os.path.join(out, name))


if __name__ == "__main__":
    main()
