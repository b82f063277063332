"""Broken compressed series and a CT SOP class with another modality, for tests/test-baddata.sh.

    bad_streams.py J2K_DIR PHANTOM_DIR OUT
        J2K_DIR holds a real JPEG 2000 CT series (one frame per file); PHANTOM_DIR an
        uncompressed CT series whose files were compressed to JPEG-LS into PHANTOM_DIR.jls by
        dcmcjpls. Writes one folder per case under OUT, each a whole series with its own Series
        and SOP Instance UIDs, and prints "NAME SERIES_UID BROKEN_FILE" per case:
          j2k-cut-stream     one file's J2K codestream cut to half, re-encapsulated properly
                             (the file is well formed; the stream ends early)
          j2k-cut-file       one file cut in the middle of its pixel data (no delimiter)
          jls-cut-stream     the same two for JPEG-LS
          jls-cut-file
          mr-in-ct-class     the phantom series with Modality MR in CT Image Storage
"""

import os
import sys

import pydicom
from pydicom.encaps import encapsulate, generate_pixel_data_frame
from pydicom.uid import generate_uid


def _series(src, out, name, root):
    """Copy every DICOM file of src into out/name with new series and SOP UIDs; the paths."""
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    series_uid = generate_uid(prefix=root + ".")
    paths = []
    for i, f in enumerate(sorted(os.listdir(src))):
        try:
            ds = pydicom.dcmread(os.path.join(src, f))
        except Exception:
            continue
        if "PixelData" not in ds:
            continue
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid(prefix=root + ".")
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if not str(ds.get("SOPClassUID", "")):
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        p = os.path.join(d, "IM%04d.dcm" % i)
        ds.save_as(p, write_like_original=False)
        paths.append(p)
    return series_uid, paths


def _cut_stream(path):
    ds = pydicom.dcmread(path)
    frame = next(generate_pixel_data_frame(ds.PixelData, 1))
    half = frame[: len(frame) // 2]
    ds.PixelData = encapsulate([half + (b"\0" if len(half) % 2 else b"")])
    ds.save_as(path, write_like_original=False)


def _cut_file(path):
    with open(path, "rb") as f:
        data = f.read()
    at = data.rfind(b"\xe0\x7f\x10\x00")  # (7FE0,0010)
    keep = at + (len(data) - at) // 2
    with open(path, "wb") as f:
        f.write(data[:keep])


def main():
    j2k, phantom, out = sys.argv[1:4]
    root = "2.25.3141592653"
    cases = []
    for kind, src in (("j2k", j2k), ("jls", phantom + ".jls")):
        for how, cut in (("stream", _cut_stream), ("file", _cut_file)):
            name = "%s-cut-%s" % (kind, how)
            uid, paths = _series(src, out, name, root)
            broken = paths[len(paths) // 2]
            cut(broken)
            cases.append((name, uid, broken))
    uid, paths = _series(phantom, out, "mr-in-ct-class", root)
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.Modality = "MR"
        ds.save_as(p, write_like_original=False)
    cases.append(("mr-in-ct-class", uid, "-"))
    for c in cases:
        print(*c)


if __name__ == "__main__":
    main()
