#!/usr/bin/python3
"""Make a longer synthetic CT series from a real one, for tools/bench-volume.sh.

    tools/mkseries.py SRC_DIR OUT_DIR [--slices N] [--copy K]

SRC_DIR holds one untilted single-frame CT series (other files, such as a DIRFILE or a
localizer, are passed over). OUT_DIR receives N slices (default 300): copies of the source
slices, taken in order along the slice normal and cycled, each moved to its own position so
that the output is one regular stack with the source's spacing. Each output file has a new
SOP Instance UID, the whole output a new Series Instance UID, and ImagePositionPatient,
InstanceNumber and SliceLocation follow the new position. The UIDs derive from the source
series UID, the slice number and K, so the same input gives the same files, and copies with
another K are other series. Pixel data and the transfer syntax are copied unchanged.
"""
import argparse
import os
import sys

import numpy as np
import pydicom
from pydicom.uid import generate_uid

PREFIX = "1.2.826.0.1.3680043.8.498."  # pydicom's root, as generate_uid uses by default
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def read_source(src):
    """The CT slices of the largest series in src, sorted along the slice normal."""
    by_series = {}
    for name in sorted(os.listdir(src)):
        path = os.path.join(src, name)
        if not os.path.isfile(path):
            continue
        try:
            ds = pydicom.dcmread(path)
        except (pydicom.errors.InvalidDicomError, OSError):
            continue
        if ds.get("SOPClassUID") != CT_IMAGE or "ImagePositionPatient" not in ds \
                or "PixelData" not in ds or "LOCALIZER" in list(ds.get("ImageType", [])):
            continue
        by_series.setdefault(ds.SeriesInstanceUID, []).append(ds)
    if not by_series:
        sys.exit(f"mkseries: no single-frame CT image with a position in {src}")
    slices = max(by_series.values(), key=len)
    iop = np.array(slices[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    slices.sort(key=lambda d: float(np.dot(normal, np.array(d.ImagePositionPatient, float))))
    return slices, normal


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--copy", type=int, default=0,
                    help="copy number: other copies get other UIDs (default 0)")
    a = ap.parse_args()
    if a.slices < 2:
        sys.exit("mkseries: --slices must be 2 or more")
    slices, normal = read_source(a.src)
    if len(slices) < 2:
        sys.exit("mkseries: the source needs two slices or more (the spacing comes from them)")
    ipp = np.array([[float(v) for v in d.ImagePositionPatient] for d in slices])
    steps = np.diff(ipp, axis=0)
    step = np.median(steps, axis=0)  # one step, shear (tilt) included
    along = float(np.dot(normal, step))
    if along <= 0:
        sys.exit("mkseries: two source slices share a position")
    if np.linalg.norm(step - along * normal) > 1e-3 * along:
        sys.exit("mkseries: the source is tilted; use an untilted series")
    # SliceLocation is taken as a linear function of the position along the normal, as in the
    # source (where it is present in the first and last slices)
    first, last = slices[0], slices[-1]
    sl_rate = None
    if "SliceLocation" in first and "SliceLocation" in last:
        span = float(np.dot(normal, ipp[-1] - ipp[0]))
        sl_rate = (float(last.SliceLocation) - float(first.SliceLocation)) / span
    entropy = ["mmsegd-mkseries", first.SeriesInstanceUID, str(a.slices)]
    if a.copy != 0:
        entropy.append("copy %d" % a.copy)
    series_uid = generate_uid(PREFIX, entropy)
    os.makedirs(a.out, exist_ok=True)
    for i in range(a.slices):
        ds = slices[i % len(slices)]
        ds = pydicom.dcmread(ds.filename)  # a fresh copy: the same source slice is reused
        uid = generate_uid(PREFIX, ["mmsegd-mkseries", series_uid, str(i)])
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.SeriesInstanceUID = series_uid
        pos = ipp[0] + i * step
        ds.ImagePositionPatient = [f"{v:.6g}" for v in pos]
        ds.InstanceNumber = i + 1
        if sl_rate is not None:
            ds.SliceLocation = f"{float(first.SliceLocation) + sl_rate * i * along:.6g}"
        ds.save_as(os.path.join(a.out, f"IM{i + 1:05d}.dcm"), write_like_original=True)
    print(f"mkseries: {a.slices} slices of {first.Rows}x{first.Columns} at {along:g} mm "
          f"(from {len(slices)} in {a.src}) in {a.out}")


if __name__ == "__main__":
    main()
