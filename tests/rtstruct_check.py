#!/usr/bin/python3
"""Check one of mmsegd's RT Structure Sets against its source series and labels.

    rtstruct_check.py [--model MODEL] [--min-dice D] [--json] RTSTRUCT.dcm LABELS DICOM_PATH...

LABELS and DICOM_PATH as for seg_check.py (whose readers this uses). Every contour is filled
back independently of mmsegd: its points are mapped to the pixel grid of the slice it refers to
(through that slice's Image Position and Orientation and Pixel Spacing), scikit-image's
polygon fill takes the pixels whose centres lie inside, and the contours of one ROI on one
slice are combined by parity (holes are contours of their own). Then per ROI the Dice
coefficient against (LABELS == its label) over the volume.

Checks: RT Structure Set Storage, Modality RTSTRUCT; the Frame of Reference of the source;
Referenced Frame of Reference / Study / Series listing the source series' images; one ROI per
label present, ROI Name and Display Color of the card (--model: the label is the card's entry
with that segment label; without it the ROIs are the labels present in ascending order),
RT ROI Interpreted Type ORGAN, generated AUTOMATIC; every contour CLOSED_PLANAR with Number of
Contour Points = its points, referring to one source slice, every point on that slice's plane
within 1e-3 mm; Dice per ROI at least --min-dice (default 0.98), and how many voxels differ.

Output: "ok - "/"not ok - " lines and a last "# rtstruct_check: ..." summary, or one JSON
object with --json. Exit 0 when every check passed, 1 otherwise, 2 on bad usage. Needs
pydicom, numpy and scikit-image (nibabel for NIfTI labels).
"""
import argparse
import json
import os
import sys

import numpy as np
import pydicom
from skimage.draw import polygon

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from seg_check import Report, _s, read_card, read_inputs  # noqa: E402

RT_STRUCT = "1.2.840.10008.5.1.4.1.1.481.3"
PLANE_TOL = 1e-3  # mm


def check(args):
    rep = Report()
    summary = {}
    try:
        rt = pydicom.dcmread(args.rtstruct)
    except Exception as e:  # noqa: BLE001 (any reason the file cannot be read)
        rep.check(False, "pydicom reads %s (%s)" % (args.rtstruct, e))
        return rep, summary
    src = read_inputs(rep, args.dicom, args.labels)
    if src is None:
        return rep, summary
    slices, _, shape, labels = src
    src0 = slices[0].ds
    n_sl, rows, cols = shape
    key_to_slice = {}
    for k, sl in enumerate(slices):
        key_to_slice.setdefault((sl.uid, sl.frame), k)

    rep.check(_s(rt.get("SOPClassUID")) == RT_STRUCT and _s(rt.get("Modality")) == "RTSTRUCT"
              and _s(rt.file_meta.get("MediaStorageSOPClassUID")) == RT_STRUCT,
              "RT Structure Set Storage, Modality RTSTRUCT (%s, %s)"
              % (rt.get("SOPClassUID"), rt.get("Modality")))
    for_uid = _s(src0.get("FrameOfReferenceUID"))
    rfor = list(rt.get("ReferencedFrameOfReferenceSequence", []))
    listed = set()
    series_ok = False
    for f in rfor:
        for st in f.get("RTReferencedStudySequence", []):
            for se in st.get("RTReferencedSeriesSequence", []):
                series_ok = series_ok or _s(se.get("SeriesInstanceUID")) == \
                    _s(src0.get("SeriesInstanceUID")) or not _s(src0.get("SeriesInstanceUID"))
                for img in se.get("ContourImageSequence", []):
                    fn = img.get("ReferencedFrameNumber")
                    listed.add((_s(img.get("ReferencedSOPInstanceUID")),
                                int(fn) if fn not in (None, "") else None))
    rep.check(len(rfor) == 1 and (_s(rfor[0].get("FrameOfReferenceUID")) == for_uid or
                                  not for_uid) and series_ok and listed == set(key_to_slice),
              "Referenced Frame of Reference %s (source %r), the source series, its %d images "
              "listed (%d)" % (rfor[0].get("FrameOfReferenceUID") if rfor else None, for_uid,
                               n_sl, len(listed)))

    # ROIs and their labels
    present = [int(v) for v in np.flatnonzero(np.bincount(labels.ravel(), minlength=256)) if v]
    card = read_card(args.model) if args.model else None
    by_name = {}
    if card is not None:
        for lab in card["labels"]:
            by_name[lab.get("segment_label", lab["name"])] = lab
    ss = list(rt.get("StructureSetROISequence", []))
    rc_items = {int(i.ReferencedROINumber): i for i in rt.get("ROIContourSequence", [])}
    obs = {int(i.ReferencedROINumber): i for i in rt.get("RTROIObservationsSequence", [])}
    roi_label, bad_meta = {}, []
    for n, item in enumerate(ss):
        num, name = int(item.ROINumber), _s(item.get("ROIName"))
        if card is not None:
            lab = by_name.get(name)
            label = lab["id"] if lab else None
            colour_ok = lab is not None and num in rc_items and \
                [int(v) for v in rc_items[num].ROIDisplayColor] == list(lab["rgb"])
        else:
            label = present[n] if n < len(present) else None
            colour_ok = num in rc_items and len(rc_items[num].get("ROIDisplayColor", [])) == 3
        ok = label is not None and colour_ok and num in obs and \
            _s(obs[num].get("RTROIInterpretedType")) == "ORGAN" and \
            _s(item.get("ROIGenerationAlgorithm")) == "AUTOMATIC" and \
            _s(item.get("ReferencedFrameOfReferenceUID")) == _s(rfor[0].get(
                "FrameOfReferenceUID") if rfor else "")
        if not ok:
            bad_meta.append(name)
        roi_label[num] = label
    summary.update(rois=len(ss), labels_present=present)
    rep.check(sorted(v for v in roi_label.values() if v is not None) == present and
              len(ss) == len(present),
              "one ROI per label present: %d ROIs, labels %s" % (len(ss), present))
    rep.check(not bad_meta, "ROI names and colours of the card, ORGAN, AUTOMATIC, the frame of "
              "reference%s" % ("" if not bad_meta else " (not: %s)" % bad_meta[:5]))

    # contours: fill back by parity, points on their plane
    filled = {num: np.zeros(shape, bool) for num in roi_label}
    n_contours = n_points = 0
    bad_type, no_src, off_plane = [], [], 0
    worst = 0.0
    for num, item in rc_items.items():
        for c in item.get("ContourSequence", []):
            n_contours += 1
            data = np.array(c.ContourData, float).reshape(-1, 3)
            n_points += len(data)
            if _s(c.get("ContourGeometricType")) != "CLOSED_PLANAR" or \
                    int(c.NumberOfContourPoints) != len(data):
                bad_type.append(n_contours)
            refs = list(c.get("ContourImageSequence", []))
            keys = [(_s(r.get("ReferencedSOPInstanceUID")),
                     int(r.ReferencedFrameNumber) if r.get("ReferencedFrameNumber") not in
                     (None, "") else None) for r in refs]
            if len(keys) != 1 or keys[0] not in key_to_slice:
                no_src.append(n_contours)
                continue
            k = key_to_slice[keys[0]]
            sl = slices[k]
            row, col = sl.iop[:3], sl.iop[3:]
            nrm = np.cross(row, col)
            d = data - sl.ipp
            dist = np.abs(d @ nrm)
            worst = max(worst, float(dist.max()))
            off_plane += int((dist > PLANE_TOL).sum())
            ci = d @ row / sl.spacing[1]  # column index
            rj = d @ col / sl.spacing[0]  # row index
            rr, cc = polygon(rj, ci, shape=(rows, cols))
            if num in filled:
                m = np.zeros((rows, cols), bool)
                m[rr, cc] = True
                filled[num][k] ^= m
    summary.update(contours=n_contours, points=n_points)
    rep.check(n_contours > 0 and not bad_type, "%d contours, CLOSED_PLANAR, Number of Contour "
              "Points = the points (%d in all)%s" % (n_contours, n_points, "" if not bad_type
                                                     else "; not: %s" % bad_type[:5]))
    rep.check(not no_src, "every contour refers to one source slice%s"
              % ("" if not no_src else " (not %d contours)" % len(no_src)))
    rep.check(off_plane == 0, "every point on its slice's plane within %g mm (largest distance "
              "%.3g mm)" % (PLANE_TOL, worst))
    dice, differ = {}, {}
    for num, label in roi_label.items():
        if label is None:
            continue
        truth = labels == label
        inter = int((filled[num] & truth).sum())
        total = int(filled[num].sum() + truth.sum())
        dice[label] = 2.0 * inter / total if total else 1.0
        differ[label] = int((filled[num] != truth).sum())
    low = {k: v for k, v in dice.items() if v < args.min_dice}
    summary.update(dice=dice, voxels_differ=differ)
    rep.check(dice and not low, "filled back (scikit-image polygon, parity): Dice per ROI at "
              "least %g: min %.6f, voxels differing %s" % (args.min_dice, min(dice.values()) if
                                                         dice else 0.0, differ))
    return rep, summary


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="model file whose card names the ROIs")
    ap.add_argument("--min-dice", type=float, default=0.98)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("rtstruct")
    ap.add_argument("labels")
    ap.add_argument("dicom", nargs="+")
    args = ap.parse_args(argv)
    rep, summary = check(args)
    if args.json:
        summary.update(ok=rep.failed == 0, failed=rep.failed,
                       results=[{"ok": ok, "check": d} for ok, d in rep.results])
        print(json.dumps(summary))
    else:
        for ok, desc in rep.results:
            print("%s - %s" % ("ok" if ok else "not ok", desc))
        print("# rtstruct_check: %s ROIs, %s contours, %d of %d checks passed"
              % (summary.get("rois"), summary.get("contours"),
                 len(rep.results) - rep.failed, len(rep.results)))
    return 0 if rep.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
