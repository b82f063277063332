#!/usr/bin/python3
"""What the demo prints for one result: where the SEG and its preview are, the organ volumes,
the Dice against a phantom's truth, and the time per stage.

    demo_report.py --seg SEG.dcm --dicom DIR [--manifest series.json --variant V
                   --card MODEL_INFO.txt] [--status STATUS.json] [--name NAME]

SEG.dcm: a SEG written by mmsegd, or a folder of them with --series UID (the last written SEG
of that source series is taken); DIR: the source series' files (the slices it refers to).
--manifest/--variant: tools/mmunet/phantom_series.py's manifest and the variant the series is;
the SEG's masks are put back on the truth's grid (inspect's NIfTI layout: voxel (i, j, k) =
column, row, slice ascending along the normal), each segment as the label id the model card
(--card: the output of `mmsegd model-info`) gives its Segment Label, and scored per organ. --status: the output of
`mmsegd status --json`, for the job of the SEG's source series (its last done job).
Needs pydicom and numpy; nibabel with --manifest.
"""
import argparse
import json
import os
import sys

import numpy as np
import pydicom


def slices(folder):
    """The source's single-frame images sorted along the normal: [(sop_uid, position)]."""
    out = []
    for root, _, files in os.walk(folder):
        for f in files:
            try:
                d = pydicom.dcmread(os.path.join(root, f), stop_before_pixels=True)
            except Exception:
                continue
            if "ImagePositionPatient" not in d or "ImageOrientationPatient" not in d:
                continue
            o = np.array(d.ImageOrientationPatient, float)
            n = np.cross(o[:3], o[3:])
            out.append((str(d.SOPInstanceUID), float(np.dot(n, np.array(d.ImagePositionPatient,
                                                                        float)))))
    out.sort(key=lambda s: s[1])
    return out


def masks(seg, order):
    """(segment number, slice index, mask) for every frame of the SEG."""
    index = {uid: k for k, (uid, _) in enumerate(order)}
    frames = seg.pixel_array
    if frames.ndim == 2:
        frames = frames[None]
    for f, fg in enumerate(seg.PerFrameFunctionalGroupsSequence):
        number = int(fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        src = fg.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        yield number, index[str(src)], frames[f]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seg", required=True)
    ap.add_argument("--dicom", required=True)
    ap.add_argument("--manifest")
    ap.add_argument("--variant")
    ap.add_argument("--card")
    ap.add_argument("--status")
    ap.add_argument("--name", default="")
    ap.add_argument("--series")
    a = ap.parse_args()

    if os.path.isdir(a.seg):
        found = []
        for f in os.listdir(a.seg):
            p = os.path.join(a.seg, f)
            try:
                d = pydicom.dcmread(p, stop_before_pixels=True)
                if (d.Modality == "SEG" and
                        str(d.ReferencedSeriesSequence[0].SeriesInstanceUID) == a.series):
                    found.append((os.path.getmtime(p), p))
            except Exception:
                continue
        if not found:
            print("== %s: no SEG of series %s in %s" % (a.name, a.series, a.seg))
            return 1
        a.seg = max(found)[1]
    seg = pydicom.dcmread(a.seg)
    order = slices(a.dicom)
    steps = np.diff([p for _, p in order])
    step = float(np.mean(steps)) if len(steps) else 1.0
    shared = seg.SharedFunctionalGroupsSequence[0]
    dy, dx = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    names = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    voxels = {n: 0 for n in names}
    for number, _, m in masks(seg, order):
        voxels[number] += int(m.sum())

    title = a.name or os.path.basename(a.seg)
    print("== %s" % title)
    print("   SEG:     %s" % os.path.abspath(a.seg))
    png = os.path.splitext(a.seg)[0] + ".png"
    print("   preview: %s" % (os.path.abspath(png) if os.path.exists(png) else "(none)"))
    print("   series:  %s (SEG series number %s)" % (seg.ReferencedSeriesSequence[0]
                                                    .SeriesInstanceUID, seg.SeriesNumber))
    print("   organs (mL):")
    for n in sorted(names):
        print("     %-28s %9.1f" % (names[n], voxels[n] * dx * dy * abs(step) / 1000.0))

    if a.manifest and a.variant and a.card:
        import nibabel as nib
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "mmunet"))
        import phantom_series
        man = json.load(open(a.manifest))
        base = os.path.dirname(os.path.abspath(a.manifest))
        truth = nib.load(os.path.join(base, man["variants"][a.variant]["truth"]))
        # the SEG's segments back to the model's label ids, through the card's Segment Labels
        text = open(a.card).read()
        card = json.JSONDecoder().raw_decode(text)[0]  # the card, then the summary lines
        ids = {lab["segment_label"]: int(lab["id"]) for lab in card["labels"]}
        lab = np.zeros(truth.shape, np.uint8)
        for number, k, m in masks(seg, order):
            lab[:, :, k][m.T.astype(bool)] = ids[names[number]]
        pred = os.path.join(os.path.dirname(os.path.abspath(a.seg)), ".demo-labels.nii.gz")
        nib.save(nib.Nifti1Image(lab, truth.affine, truth.header), pred)
        res = phantom_series.score(man, a.variant, pred, False, base)
        os.unlink(pred)
        d = res.get("dice", {})
        print("   Dice against the phantom's truth: mean %.3f" % res.get("mean", 0.0))
        for k in sorted(d):
            print("     %-28s %9.3f" % (k, d[k]))

    if a.status:
        src = str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID)
        jobs = [j for j in json.load(open(a.status))["jobs"]
                if j["series_uid"] == src and j["state"] == "done"]
        if jobs:
            t = jobs[-1]["times"]
            print("   job %d, time per stage (s): decode %.2f, wait %.2f, preprocess %.2f, "
                  "network %.2f, export %.2f, SEG %.2f; total %.2f"
                  % (jobs[-1]["job"], t["decode_s"], t["wait_s"], t["preprocess_s"],
                     t["network_s"], t["export_s"], t["write_s"], t["total_s"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
