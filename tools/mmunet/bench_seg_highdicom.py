"""The Python side of tools/bench-seg.sh: highdicom's DICOM SEG writer on the label volume that
tests/seg-write is timed on, and the inputs both take.

    bench_seg_highdicom.py model OUT [--demo MODEL]
        a model file whose card has the 15 AMOS labels (labels.AMOS_LABELS, their codes,
        laterality modifiers and colours) and the demo model's architecture and preprocessing
        with num_classes 16 and random weights (normal, sigma 0.01, seed 0): a card for the
        SEG writer, not a model that segments anything
    bench_seg_highdicom.py labels DICOM_DIR OUT.raw [--labels N] [--seed S]
        a uint8 label volume on the series' grid (slice, row, column; slices ascending along
        the normal): N (default 15) ellipsoids with labels 1..N, of random sizes (10 to 60 % of
        the field of view across, 15 to 70 % of the slices long) and positions; later labels
        overwrite earlier ones where they overlap. Prints a JSON line with the counts
    bench_seg_highdicom.py run [--labelmap] MODEL DICOM_DIR LABELS.raw OUT.dcm
        highdicom.seg.Segmentation(...) (BINARY, empty frames omitted, explicit VR little
        endian, segment descriptions from the card; --labelmap: LABELMAP, a frame per slice) on
        the source datasets, then save_as; prints one JSON line: read_s (pydicom.dcmread of the
        series), construct_s, save_s, frames, bytes and peak RSS (ru_maxrss) of the process
    bench_seg_highdicom.py rtutils MODEL DICOM_DIR LABELS.raw OUT.dcm
        rt-utils (PyPI rt_utils): RTStructBuilder.create_new on the series, add_roi per label
        present (the card's segment label and colour), save; the same JSON line, with
        construct_s the add_roi calls
    bench_seg_highdicom.py verify SEG DICOM_DIR LABELS.raw
        highdicom.seg.segread(SEG), and per source instance the masks it gives (all
        segments combined into labels) equal to LABELS; prints one JSON line, exits 1 when
        reading fails or a mask differs. Where highdicom refuses to index by source instance
        because the references lack Spatial Locations Preserved, that is reported
        ("spatial_locations_preserved": false) and the masks are read with
        ignore_spatial_locations

The source slices are the CT images with a position, sorted along the normal of the first
one's orientation (one untilted stack, as tools/mmunet/phantom.py writes). `run` and `verify`
need highdicom (in the virtual environment _build/venv-ref: pip install highdicom); `model`
and `labels` need numpy and pydicom.
"""
import argparse
import copy
import json
import os
import resource
import sys
import time

import numpy as np
import pydicom

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mmunet import export  # noqa: E402
from mmunet.labels import AMOS_LABELS  # noqa: E402

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def read_series(folder, pixels=False):
    """The CT slices of folder, ascending along the normal: [(path, dataset)]."""
    out = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=not pixels)
        except (pydicom.errors.InvalidDicomError, OSError):
            continue
        # CT Image Storage; a file whose SOP Class UID is empty (the TotalSegmentator example)
        # counts when its modality is CT, as mmsegd takes it
        ct = ds.get("SOPClassUID") == CT_IMAGE or (not ds.get("SOPClassUID")
                                                    and ds.get("Modality") == "CT")
        if ct and "ImagePositionPatient" in ds:
            out.append((path, ds))
    if not out:
        sys.exit(f"bench_seg_highdicom: no CT image with a position in {folder}")
    iop = np.array(out[0][1].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    out.sort(key=lambda p: float(normal @ np.array(p[1].ImagePositionPatient, float)))
    return out


def cmd_model(a):
    card, tensors, _ = export.read_model(a.demo)
    card = copy.deepcopy(card)
    labels = copy.deepcopy(AMOS_LABELS)
    card["name"] = "bench-amos15-random"
    card["version"] = "0.0.1"
    card["description"] = ("Random weights with the 15 AMOS labels, for the SEG writer benchmark "
                           "(tools/bench-seg.sh); segments nothing")
    card["architecture"]["num_classes"] = len(labels) + 1
    card["labels"] = labels
    card["provenance"] = {"trainer": "tools/mmunet/bench_seg_highdicom.py (random weights)",
                          "date": "2026-01-01", "seed": 0}
    export.validate_card(card)
    rng = np.random.default_rng(0)
    want = export.expected_tensors(card["architecture"])
    tensors = {n: rng.normal(0.0, 0.01, size=s).astype(np.float32) for n, s in want.items()}
    sha = export.write_model(a.out, tensors, card)
    export.read_model(a.out)  # the rules the C loader applies
    print(json.dumps({"model": a.out, "labels": len(labels), "sha256": sha}))


def cmd_labels(a):
    slices = read_series(a.dicom)
    S = len(slices)
    R, C = int(slices[0][1].Rows), int(slices[0][1].Columns)
    rng = np.random.default_rng(a.seed)
    lab = np.zeros((S, R, C), np.uint8)
    for v in range(1, a.labels + 1):
        rz = max(1.0, rng.uniform(0.075, 0.35) * S)
        ry, rx = rng.uniform(0.05, 0.30, 2) * np.array([R, C])
        cz = rng.uniform(0.1, 0.9) * S
        cy, cx = rng.uniform(0.25, 0.75, 2) * np.array([R, C])
        z0, z1 = max(0, int(cz - rz)), min(S, int(cz + rz) + 1)
        y0, y1 = max(0, int(cy - ry)), min(R, int(cy + ry) + 1)
        x0, x1 = max(0, int(cx - rx)), min(C, int(cx + rx) + 1)
        z, y, x = np.ogrid[z0:z1, y0:y1, x0:x1]
        inside = ((z - cz) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0
        lab[z0:z1, y0:y1, x0:x1][inside] = v
    lab.tofile(a.out)
    present = [int(v) for v in np.unique(lab) if v]
    pairs = sum(int(np.count_nonzero(np.bincount(s.ravel(), minlength=256)[1:])) for s in lab)
    print(json.dumps({"labels": a.out, "shape": [S, R, C], "present": present,
                      "nonempty_frames": pairs, "voxels": int(np.count_nonzero(lab))}))


def descriptions(card, hd, sex):
    from pydicom.sr.codedict import codes
    out = []
    for e in sorted(card["labels"], key=lambda e: e["id"]):
        e = dict(e, **e.get("by_patient_sex", {}).get(sex, {}))
        d = hd.seg.SegmentDescription(
            segment_number=e["id"],
            segment_label=e["segment_label"],
            segmented_property_category=hd.sr.CodedConcept(
                e["category"]["code"], e["category"]["scheme"], e["category"]["meaning"]),
            segmented_property_type=hd.sr.CodedConcept(
                e["type"]["code"], e["type"]["scheme"], e["type"]["meaning"]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name=card["name"], family=codes.cid7162.ArtificialIntelligence,
                version=card["version"]),
            display_color=hd.color.CIELabColor.from_rgb(*e["rgb"]))
        if "modifier" in e:
            m = e["modifier"]
            d.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = \
                [hd.sr.CodedConcept(m["code"], m["scheme"], m["meaning"])]
        out.append(d)
    return out


def cmd_run(a):
    import highdicom as hd
    card = export.read_model(a.model, check_card=False)[0]
    t0 = time.perf_counter()
    slices = read_series(a.dicom, pixels=True)
    t1 = time.perf_counter()
    sources = [ds for _, ds in slices]
    R, C = int(sources[0].Rows), int(sources[0].Columns)
    lab = np.fromfile(a.labels, np.uint8).reshape(len(sources), R, C)
    present = sorted(int(v) for v in np.unique(lab) if v)
    descs = [d for d in descriptions(card, hd, str(sources[0].get("PatientSex", "")))
             if d.SegmentNumber in present]
    if [d.SegmentNumber for d in descs] != list(range(1, len(descs) + 1)):
        sys.exit("bench_seg_highdicom: highdicom needs labels 1..N without gaps; present: %s"
                 % present)
    t2 = time.perf_counter()
    kind = hd.seg.SegmentationTypeValues.LABELMAP if a.labelmap else \
        hd.seg.SegmentationTypeValues.BINARY
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=lab,
        segmentation_type=kind, segment_descriptions=descs,
        series_instance_uid=hd.UID(), series_number=9901, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="bench", manufacturer_model_name=card["name"],
        software_versions=hd.__version__, device_serial_number="0",
        omit_empty_frames=not a.labelmap, transfer_syntax_uid=pydicom.uid.ExplicitVRLittleEndian)
    t3 = time.perf_counter()
    seg.save_as(a.out)
    t4 = time.perf_counter()
    print(json.dumps({"impl": "highdicom", "version": hd.__version__,
                      "pydicom": pydicom.__version__, "read_s": t1 - t0, "construct_s": t3 - t2,
                      "save_s": t4 - t3, "write_s": t4 - t2, "segments": len(descs),
                      "frames": int(seg.NumberOfFrames), "bytes": os.path.getsize(a.out),
                      "peak_rss_mib": peak_rss_mib()}))


def cmd_rtutils(a):
    from rt_utils import RTStructBuilder
    import rt_utils
    card = export.read_model(a.model, check_card=False)[0]
    by_id = {e["id"]: e for e in card["labels"]}
    t0 = time.perf_counter()
    rt = RTStructBuilder.create_new(dicom_series_path=a.dicom)
    t1 = time.perf_counter()
    slices = read_series(a.dicom)
    R, C = int(slices[0][1].Rows), int(slices[0][1].Columns)
    lab = np.fromfile(a.labels, np.uint8).reshape(len(slices), R, C)
    # rt-utils orders the series itself; its masks are (rows, columns, slices) in that order
    order = [str(ds.SOPInstanceUID) for ds in rt.series_data]
    ours = {str(ds.SOPInstanceUID): k for k, (_, ds) in enumerate(slices)}
    idx = [ours[u] for u in order]
    present = sorted(int(v) for v in np.unique(lab) if v)
    t2 = time.perf_counter()
    for v in present:
        e = by_id[v]
        mask = np.ascontiguousarray((lab[idx] == v).transpose(1, 2, 0))
        rt.add_roi(mask=mask, color=list(e["rgb"]), name=e["segment_label"])
    t3 = time.perf_counter()
    rt.save(a.out)
    t4 = time.perf_counter()
    print(json.dumps({"impl": "rt-utils", "version": getattr(rt_utils, "__version__", "?"),
                      "read_s": t1 - t0, "construct_s": t3 - t2, "save_s": t4 - t3,
                      "write_s": t4 - t2, "rois": len(present), "bytes": os.path.getsize(a.out),
                      "peak_rss_mib": peak_rss_mib()}))


def cmd_verify(a):
    import highdicom as hd
    res = {"segread": False}
    try:
        t0 = time.perf_counter()
        seg = hd.seg.segread(a.seg)
        res.update(segread=True, segread_s=time.perf_counter() - t0,
                   segments=len(seg.get_segment_numbers()), frames=int(seg.NumberOfFrames))
        codes = []
        for n in seg.get_segment_numbers():
            d = seg.get_segment_description(n)
            codes.append([d.segment_label, d.segmented_property_category.meaning,
                          d.segmented_property_type.meaning])
        res["codes"] = codes
        res["codes_ok"] = all(c[0] and c[1] and c[2] for c in codes)
        slices = read_series(a.dicom)
        # a data set without its SOP Instance UID (the TotalSegmentator example) is known by
        # the file meta's, as mmsegd takes it
        uids = [str(ds.get("SOPInstanceUID", "") or
                    getattr(ds, "file_meta", {}).get("MediaStorageSOPInstanceUID", ""))
                for _, ds in slices]
        if not any(uids):
            # no UID at all: mmsegd derived the UIDs its frames refer to, so highdicom cannot
            # match them to these files; tests/seg_check.py checks those masks
            res.update(per_instance="not checked: the source files have no SOP Instance UID",
                       ok=res["codes_ok"] and res["segments"] > 0)
            print(json.dumps(res))
            return 0 if res["ok"] else 1
        R, C = int(slices[0][1].Rows), int(slices[0][1].Columns)
        lab = np.fromfile(a.labels, np.uint8).reshape(len(uids), R, C)
        present = sorted(int(v) for v in np.unique(lab) if v)
        number_of = {v: i + 1 for i, v in enumerate(present)}  # label -> segment number
        want = np.zeros(256, np.uint8)
        for v, n in number_of.items():
            want[v] = n
        referenced = {str(x[2]) for x in seg.get_source_image_uids()}
        index = {u: k for k, u in enumerate(uids)}
        differ, checked = [], 0
        step = 32
        for i in range(0, len(uids), step):
            chunk = [u for u in uids[i:i + step] if u in referenced]
            if not chunk:
                continue
            kw = dict(source_sop_instance_uids=chunk, combine_segments=True, relabel=False,
                      assert_missing_frames_are_empty=True, skip_overlap_checks=True)
            if res.get("spatial_locations_preserved") is False:
                kw["ignore_spatial_locations"] = True
            try:
                got = seg.get_pixels_by_source_instance(**kw)
            except RuntimeError as e:
                # highdicom indexes by source instance only where every source reference says
                # Spatial Locations Preserved YES (0028,135A, Type 3); retry without.
                if "spatial locations" not in str(e) or "ignore_spatial_locations" in kw:
                    raise
                res["spatial_locations_preserved"] = False
                kw["ignore_spatial_locations"] = True
                got = seg.get_pixels_by_source_instance(**kw)
            for j, u in enumerate(chunk):
                k = index[u]
                if not np.array_equal(got[j], want[lab[k]]):
                    differ.append(k)
                checked += 1
        unref = [k for k, u in enumerate(uids) if u not in referenced and lab[k].any()]
        res.update(slices_checked=checked, slices_differ=differ[:10], n_differ=len(differ),
                   nonempty_slices_unreferenced=unref[:10])
        res["ok"] = not differ and not unref and res["codes_ok"]
    except Exception as e:  # noqa: BLE001 (any failure to read is the result)
        res.update(ok=False, error="%s: %s" % (type(e).__name__, e))
    print(json.dumps(res))
    return 0 if res.get("ok") else 1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("model")
    p.add_argument("out")
    p.add_argument("--demo", default=os.path.join(os.path.dirname(__file__), "..", "..",
                                                  "models", "demo.safetensors"))
    p = sub.add_parser("labels")
    p.add_argument("dicom")
    p.add_argument("out")
    p.add_argument("--labels", type=int, default=15)
    p.add_argument("--seed", type=int, default=2026)
    p = sub.add_parser("run")
    p.add_argument("--labelmap", action="store_true")
    for k in ("model", "dicom", "labels", "out"):
        p.add_argument(k)
    p = sub.add_parser("rtutils")
    for k in ("model", "dicom", "labels", "out"):
        p.add_argument(k)
    p = sub.add_parser("verify")
    for k in ("seg", "dicom", "labels"):
        p.add_argument(k)
    a = ap.parse_args(argv)
    return {"model": cmd_model, "labels": cmd_labels, "run": cmd_run, "rtutils": cmd_rtutils,
            "verify": cmd_verify}[a.cmd](a) or 0


if __name__ == "__main__":
    sys.exit(main())
