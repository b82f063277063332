#!/usr/bin/python3
"""Check one of mmsegd's DICOM Segmentation objects against its source series and labels.

    seg_check.py [--keep-empty] [--model MODEL] [--json] SEG.dcm LABELS DICOM_PATH...

SEG.dcm is the SEG (design.md section 7). LABELS is the label volume it was written from:
either raw uint8 bytes, columns x rows x slices of the source stack, in the order slice k,
row j, column i with slices ascending along the slice normal (row x column), or a NIfTI
(.nii, .nii.gz) on the grid of `mmsegd inspect --nifti`, whose voxel (i, j, k) is column i,
row j, slice k. DICOM_PATH: the files or folders (searched recursively) of the one CT series
the SEG was made from; its CT images with a position (single-frame CT, and the frames of
Enhanced and Legacy Converted Enhanced CT), localizers left out, in the largest group of
equal orientation and size, sorted along the normal, are the slices.

Checks:
  - Segmentation Storage, Modality SEG, BINARY, 1-bit MONOCHROME2, DERIVED\\PRIMARY, the
    source's rows and columns, SOP Instance UID equal to the file meta's, explicit VR little
    endian, pixel data of the size the frames need; a label map (Label Map Segmentation
    Storage, Supplement 243): LABELMAP, 8-bit MONOCHROME2, Pixel Padding Value 0;
  - one segment per label present in LABELS, numbered 1..S in ascending label order, each
    with a label, category and type codes, Segment Algorithm Type AUTOMATIC and an algorithm
    name, and a Recommended Display CIELab Value; with --model, label, codes, laterality
    modifier and colour (within 2 of the card's sRGB after the CIELab round trip, D65) equal
    to the card's entry of that label id;
  - patient and study attributes and the Frame of Reference UID equal to the source's (a
    source with an empty Study Instance UID or Frame of Reference UID: the SEG's must be set);
  - shared or per-frame Plane Orientation and Pixel Measures equal to the source's;
  - Referenced Series Sequence (Common Instance Reference): the source series, and every
    instance a frame refers to, and no instance from elsewhere;
  - per frame: a Referenced Segment Number of a segment, Derivation Image / Source Image
    references to one source slice (its SOP class too; for a frame of a multi-frame source,
    with its Referenced Frame Number), Image Position (Patient) within
    1e-3 mm of that slice's, Dimension Index Values, and the mask equal to
    (LABELS[slice] == label of the segment);
  - every (slice, segment) pair at most once; without --keep-empty no empty frame and every
    non-empty pair present; with --keep-empty every pair present (frames = slices x segments);
  - a label map instead: no Segment Identification, one frame per slice, each frame's pixels
    the segment number of the label of each voxel (0 where no segment is).

Output: one line per check, "ok - ..." or "not ok - ..." (TAP without numbers), notes as
"# ..." lines and a last "# seg_check: ..." summary; with --json one JSON object instead.
Exit 0 when every check passed, 1 when one failed or an input could not be read, 2 on bad
usage. Needs pydicom and numpy, nibabel for NIfTI labels.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
LABEL_MAP_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"  # Supplement 243
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
# Enhanced CT and Legacy Converted Enhanced CT: multi-frame, geometry per frame.
CT_MULTIFRAME = ("1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2")
DICOMDIR = "1.2.840.10008.1.3.10"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IPP_TOL = 1e-3  # mm
IOP_TOL = 1e-4
COLOUR_TOL = 2  # sRGB levels after CIELab -> sRGB
# Patient and general study attributes copied from the source (Type 2 in the SEG).
COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
          "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName")


class Report:
    """The results of the checks, in order."""

    def __init__(self):
        self.results = []  # (ok, description)
        self.notes = []

    def check(self, ok, desc):
        self.results.append((bool(ok), desc))
        return bool(ok)

    def note(self, text):
        self.notes.append(text)

    @property
    def failed(self):
        return sum(1 for ok, _ in self.results if not ok)


def _s(v):
    """A DICOM value as a plain string ('' for None)."""
    return "" if v is None else str(v).strip()


# ------------------------------------------------------------------------------ the source
def source_files(paths):
    out = []
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs.sort()
                out += [os.path.join(root, f) for f in sorted(files)]
        else:
            out.append(p)
    return out


def instance_uid(ds):
    """SOP Instance UID, the file meta's where the dataset's is empty (as mmsegd does)."""
    uid = _s(ds.get("SOPInstanceUID"))
    if not uid and getattr(ds, "file_meta", None) is not None:
        uid = _s(ds.file_meta.get("MediaStorageSOPInstanceUID"))
    return uid


def class_uid(ds):
    uid = _s(ds.get("SOPClassUID"))
    if not uid and getattr(ds, "file_meta", None) is not None:
        uid = _s(ds.file_meta.get("MediaStorageSOPClassUID"))
    return uid


class Slice:
    """One source slice: a single-frame CT image, or one frame of a multi-frame one."""

    def __init__(self, ds, path, frame, ipp, iop, spacing):
        self.ds, self.path = ds, path
        self.uid, self.cls = instance_uid(ds), class_uid(ds)
        self.frame = frame  # 1-based frame number in a multi-frame source, else None
        self.ipp, self.iop, self.spacing = ipp, iop, spacing


def _fg(ds, item, seq):
    """The first item of functional group seq of a source frame: per-frame, else shared."""
    for fg in (item, (ds.get("SharedFunctionalGroupsSequence") or [None])[0]):
        if fg is not None and seq in fg and len(fg[seq].value):
            return fg[seq].value[0]
    return None


def source_slices(ds, path):
    """The slices of one source file (none for a localizer or another SOP class)."""
    if "LOCALIZER" in [_s(v).upper() for v in ds.get("ImageType", [])]:
        return []
    cls = class_uid(ds)
    if cls == CT_IMAGE:
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            return []
        return [Slice(ds, path, None, np.array(ds.ImagePositionPatient, float),
                      np.array(ds.ImageOrientationPatient, float),
                      np.array(ds.get("PixelSpacing", [0, 0]), float))]
    if cls not in CT_MULTIFRAME:
        return []
    out = []
    for f, item in enumerate(ds.get("PerFrameFunctionalGroupsSequence", [])):
        pp, po = _fg(ds, item, "PlanePositionSequence"), _fg(ds, item, "PlaneOrientationSequence")
        pm = _fg(ds, item, "PixelMeasuresSequence")
        if pp is None or po is None or "ImagePositionPatient" not in pp:
            continue
        out.append(Slice(ds, path, f + 1, np.array(pp.ImagePositionPatient, float),
                         np.array(po.ImageOrientationPatient, float),
                         np.array(pm.PixelSpacing if pm is not None else [0, 0], float)))
    return out


def read_source(paths):
    """The slices of the series ([Slice]) ascending along the normal, and the normal."""
    groups = {}
    for path in source_files(paths):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError):
            continue
        for sl in source_slices(ds, path):
            key = (tuple(round(float(v), 4) for v in sl.iop), int(ds.Rows), int(ds.Columns))
            groups.setdefault(key, []).append(sl)
    if not groups:
        raise ValueError("no CT image with a position in %s" % " ".join(paths))
    slices = max(groups.values(), key=len)
    normal = np.cross(slices[0].iop[:3], slices[0].iop[3:])
    slices.sort(key=lambda sl: float(normal @ sl.ipp))
    return slices, normal


def read_labels(path, shape):
    """The label volume as (slices, rows, columns) uint8."""
    if path.endswith((".nii", ".nii.gz")):
        import nibabel as nib
        arr = np.asarray(nib.load(path).dataobj)
        if arr.ndim != 3:
            raise ValueError("%s: %d dimensions, expected 3" % (path, arr.ndim))
        if arr.min() < 0 or arr.max() > 255:
            raise ValueError("%s: labels outside 0..255" % path)
        arr = np.ascontiguousarray(arr.astype(np.uint8).transpose(2, 1, 0))
    else:
        arr = np.fromfile(path, np.uint8)
        if arr.size != int(np.prod(shape)):
            raise ValueError("%s: %d bytes, the source stack needs %d (%d slices x %d rows x "
                             "%d columns)" % (path, arr.size, int(np.prod(shape)), *shape))
        arr = arr.reshape(shape)
    if arr.shape != tuple(shape):
        raise ValueError("%s: shape (slices, rows, columns) %s, the source stack is %s"
                         % (path, list(arr.shape), list(shape)))
    return arr


def read_inputs(rep, dicom, labels_path):
    """The source slices, their normal, the stack's shape (slices, rows, columns) and the
    labels; None, with a failed check in rep, when they cannot be read."""
    try:
        slices, normal = read_source(dicom)
        src0 = slices[0].ds
        shape = (len(slices), int(src0.Rows), int(src0.Columns))
        return slices, normal, shape, read_labels(labels_path, shape)
    except (ValueError, OSError, KeyError) as e:
        rep.check(False, "source series and labels readable (%s)" % e)
        return None


# ------------------------------------------------------------------------------ the card
def read_card(path):
    """The model card of a model file (safetensors metadata key "mmsegd.model")."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return json.loads(header["__metadata__"]["mmsegd.model"])


def lab_to_rgb(value):
    """DICOM CIELab (0..65535 each) to sRGB 0..255, D65 white, as DCMTK and highdicom."""
    L = value[0] * 100.0 / 65535.0
    a = value[1] * 255.0 / 65535.0 - 128.0
    b = value[2] * 255.0 / 65535.0 - 128.0
    fy = (L + 16.0) / 116.0
    fx, fz = fy + a / 500.0, fy - b / 200.0

    def finv(t):
        return t ** 3 if t ** 3 > 0.008856 else (t - 16.0 / 116.0) / 7.787

    x, y, z = 0.95047 * finv(fx), 1.0 * finv(fy), 1.08883 * finv(fz)
    rl = 3.2404542 * x - 1.5371385 * y - 0.4985314 * z
    gl = -0.9692660 * x + 1.8760108 * y + 0.0415560 * z
    bl = 0.0556434 * x - 0.2040259 * y + 1.0572252 * z

    def gamma(c):
        c = 12.92 * c if c <= 0.0031308 else 1.055 * c ** (1 / 2.4) - 0.055
        return min(255.0, max(0.0, c * 255.0))

    return [gamma(rl), gamma(gl), gamma(bl)]


def code_of(item):
    return (_s(item.get("CodingSchemeDesignator")), _s(item.get("CodeValue")),
            _s(item.get("CodeMeaning")))


def card_code(c):
    return (c["scheme"], c["code"], c["meaning"])


# ------------------------------------------------------------------------------ the SEG
def frame_values(seg, n_frames, rows, cols):
    """The frames of a label map: one byte per pixel."""
    data = seg.PixelData
    need = n_frames * rows * cols
    if len(data) < need:
        raise ValueError("PixelData has %d bytes, %d frames of %dx%d need %d"
                         % (len(data), n_frames, rows, cols, need))
    return np.frombuffer(data, np.uint8)[:need].reshape(n_frames, rows, cols), need


def frame_masks(seg, n_frames, rows, cols):
    data = seg.PixelData
    need = (n_frames * rows * cols + 7) // 8
    bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
    if bits.size < n_frames * rows * cols:
        raise ValueError("PixelData has %d bytes, %d frames of %dx%d need %d"
                         % (len(data), n_frames, rows, cols, need))
    return bits[:n_frames * rows * cols].reshape(n_frames, rows, cols).astype(bool), need


def functional_item(seg, frame, name):
    """The first item of functional group `name` of a frame: per-frame, else shared."""
    for fg in (frame, (seg.get("SharedFunctionalGroupsSequence") or [None])[0]):
        if fg is not None and name in fg and len(fg[name].value):
            return fg[name].value[0]
    return None


def check(args):
    rep = Report()
    summary = {}
    try:
        seg = pydicom.dcmread(args.seg)
    except Exception as e:  # noqa: BLE001 (any reason the file cannot be read)
        rep.check(False, "pydicom reads %s (%s)" % (args.seg, e))
        return rep, summary
    rep.check(True, "pydicom reads %s" % args.seg)
    src = read_inputs(rep, args.dicom, args.labels)
    if src is None:
        return rep, summary
    slices, normal, shape, labels = src
    src0 = slices[0].ds
    n_sl, rows, cols = shape
    key_to_slice = {}  # (SOP Instance UID, frame number or None) -> slice
    for k, sl in enumerate(slices):
        key_to_slice.setdefault((sl.uid, sl.frame), k)
    source_uids = {sl.uid: sl.cls for sl in slices}
    multi = sum(sl.frame is not None for sl in slices)
    rep.check(len(key_to_slice) == n_sl,
              "source: %d slices of %dx%d with distinct references (%d; %d instances%s)"
              % (n_sl, cols, rows, len(key_to_slice), len(source_uids),
                 ", %d slices are frames of multi-frame images" % multi if multi else ""))

    # The IOD and the image pixel description.
    meta = seg.file_meta
    lm = _s(seg.get("SOPClassUID")) == LABEL_MAP_STORAGE
    cls = LABEL_MAP_STORAGE if lm else SEG_STORAGE
    rep.check(_s(seg.get("SOPClassUID")) == cls
              and _s(meta.get("MediaStorageSOPClassUID")) == cls
              and _s(seg.get("Modality")) == "SEG",
              "SOP class %s, Modality SEG (%s, meta %s, %s)"
              % ("Label Map Segmentation Storage" if lm else "Segmentation Storage",
                 seg.get("SOPClassUID"), meta.get("MediaStorageSOPClassUID"),
                 seg.get("Modality")))
    sop = _s(seg.get("SOPInstanceUID"))
    rep.check(sop and sop == _s(meta.get("MediaStorageSOPInstanceUID"))
              and _s(seg.get("SeriesInstanceUID"))
              and _s(seg.get("SeriesInstanceUID")) != _s(src0.get("SeriesInstanceUID")),
              "own SOP Instance UID (= file meta's) and a new Series Instance UID (%s, %s)"
              % (sop, seg.get("SeriesInstanceUID")))
    rep.check(_s(meta.get("TransferSyntaxUID")) == EXPLICIT_LE,
              "explicit VR little endian (%s)" % meta.get("TransferSyntaxUID"))
    pix = {k: seg.get(k) for k in ("SegmentationType", "BitsAllocated", "BitsStored", "HighBit",
                                   "SamplesPerPixel", "PhotometricInterpretation",
                                   "PixelRepresentation")}
    if lm:
        pix["PixelPaddingValue"] = seg.get("PixelPaddingValue")
        rep.check(_s(pix["SegmentationType"]) == "LABELMAP" and pix["BitsAllocated"] == 8
                  and pix["BitsStored"] == 8 and pix["HighBit"] == 7
                  and pix["SamplesPerPixel"] == 1
                  and _s(pix["PhotometricInterpretation"]) == "MONOCHROME2"
                  and pix["PixelRepresentation"] == 0 and pix["PixelPaddingValue"] == 0
                  and "MaximumFractionalValue" not in seg,
                  "LABELMAP, 8 bits, MONOCHROME2, background 0 (%s)"
                  % ", ".join("%s %s" % kv for kv in pix.items()))
    else:
        rep.check(_s(pix["SegmentationType"]) == "BINARY" and pix["BitsAllocated"] == 1
                  and pix["BitsStored"] == 1 and pix["HighBit"] == 0
                  and pix["SamplesPerPixel"] == 1
                  and _s(pix["PhotometricInterpretation"]) == "MONOCHROME2"
                  and pix["PixelRepresentation"] == 0 and "MaximumFractionalValue" not in seg,
                  "BINARY, 1 bit, MONOCHROME2 (%s)"
                  % ", ".join("%s %s" % kv for kv in pix.items()))
    it = [_s(v) for v in seg.get("ImageType", [])]
    rep.check(it[:2] == ["DERIVED", "PRIMARY"], "Image Type DERIVED\\PRIMARY (%s)"
              % "\\".join(it))
    rep.check(seg.get("Rows") == rows and seg.get("Columns") == cols,
              "rows x columns %sx%s = the source's %dx%d"
              % (seg.get("Columns"), seg.get("Rows"), cols, rows))

    # Segments.
    present = [int(v) for v in np.flatnonzero(np.bincount(labels.ravel(), minlength=256)) if v]
    segs = list(seg.get("SegmentSequence", []))
    numbers = [s.get("SegmentNumber") for s in segs]
    S = len(segs)
    summary.update(segments=S, labels_present=present)
    rep.check(numbers == list(range(1, S + 1)) and S == len(present),
              "one segment per label present: segments %s, labels present %s"
              % (numbers, present))
    seg_label = {i + 1: lab for i, lab in enumerate(present[:S])}
    bad = []
    for s in segs:
        n = s.get("SegmentNumber")
        cat = s.get("SegmentedPropertyCategoryCodeSequence") or []
        typ = s.get("SegmentedPropertyTypeCodeSequence") or []
        lab = s.get("RecommendedDisplayCIELabValue")
        why = []
        if not _s(s.get("SegmentLabel")):
            why.append("no label")
        if len(cat) != 1 or not all(code_of(cat[0])):
            why.append("category code")
        if len(typ) != 1 or not all(code_of(typ[0])):
            why.append("type code")
        if _s(s.get("SegmentAlgorithmType")) != "AUTOMATIC":
            why.append("algorithm type %s" % s.get("SegmentAlgorithmType"))
        if not _s(s.get("SegmentAlgorithmName")):
            why.append("no algorithm name")
        if lab is None or len(lab) != 3:
            why.append("CIELab %s" % lab)
        if why:
            bad.append("segment %s: %s" % (n, ", ".join(why)))
    rep.check(S > 0 and not bad, "segments described: label, category and type codes, "
              "AUTOMATIC with an algorithm name, CIELab colour%s"
              % ("" if not bad else " (%s)" % "; ".join(bad)))
    if segs:
        s0 = segs[0]
        rep.note("segment 1: %r, category %s, type %s, algorithm %r, CIELab %s"
                 % (_s(s0.get("SegmentLabel")),
                    code_of(s0.SegmentedPropertyCategoryCodeSequence[0])
                    if s0.get("SegmentedPropertyCategoryCodeSequence") else None,
                    code_of(s0.SegmentedPropertyTypeCodeSequence[0])
                    if s0.get("SegmentedPropertyTypeCodeSequence") else None,
                    _s(s0.get("SegmentAlgorithmName")),
                    list(s0.get("RecommendedDisplayCIELabValue", []))))
    if args.model:
        try:
            card = {e["id"]: e for e in read_card(args.model)["labels"]}
        except (OSError, ValueError, KeyError, struct.error) as e:
            rep.check(False, "model card of %s readable (%s)" % (args.model, e))
            card = None
        if card is not None:
            sex = _s(seg.get("PatientSex"))
            bad = []
            for s in segs:
                n = s.get("SegmentNumber")
                e = card.get(seg_label.get(n))
                if e is None:
                    bad.append("segment %s: no card entry for label %s" % (n, seg_label.get(n)))
                    continue
                e = dict(e, **e.get("by_patient_sex", {}).get(sex, {}))
                typ = (s.get("SegmentedPropertyTypeCodeSequence") or [{}])[0]
                cat = (s.get("SegmentedPropertyCategoryCodeSequence") or [{}])[0]
                mod = list(typ.get("SegmentedPropertyTypeModifierCodeSequence", [])) \
                    if typ else []
                why = []
                if _s(s.get("SegmentLabel")) != e["segment_label"]:
                    why.append("label %r, card %r" % (_s(s.get("SegmentLabel")),
                                                      e["segment_label"]))
                if not typ or code_of(typ) != card_code(e["type"]):
                    why.append("type %s, card %s" % (code_of(typ) if typ else None,
                                                     card_code(e["type"])))
                if not cat or code_of(cat) != card_code(e["category"]):
                    why.append("category %s, card %s" % (code_of(cat) if cat else None,
                                                         card_code(e["category"])))
                want_mod = [card_code(e["modifier"])] if "modifier" in e else []
                if [code_of(m) for m in mod] != want_mod:
                    why.append("modifier %s, card %s" % ([code_of(m) for m in mod], want_mod))
                lab = s.get("RecommendedDisplayCIELabValue")
                if lab is not None and len(lab) == 3:
                    rgb = lab_to_rgb([int(v) for v in lab])
                    if max(abs(a - b) for a, b in zip(rgb, e["rgb"])) > COLOUR_TOL:
                        why.append("colour %s -> sRGB %s, card %s"
                                   % (list(lab), [round(v, 1) for v in rgb], e["rgb"]))
                if why:
                    bad.append("segment %s (label %s): %s" % (n, seg_label[n], "; ".join(why)))
            rep.check(segs and not bad, "segments match the card of %s (label, codes, "
                      "modifier, colour)%s" % (os.path.basename(args.model),
                                               "" if not bad else ": " + " | ".join(bad)))

    # Patient, study, frame of reference.
    diff = []
    for k in COPIED:
        if k not in seg:
            diff.append("%s absent" % k)
        elif _s(seg.get(k)) != _s(src0.get(k)):
            diff.append("%s %r, source %r" % (k, _s(seg.get(k)), _s(src0.get(k))))
    for k in ("StudyInstanceUID", "FrameOfReferenceUID"):
        mine, theirs = _s(seg.get(k)), _s(src0.get(k))
        if theirs and mine != theirs:
            diff.append("%s %r, source %r" % (k, mine, theirs))
        elif not mine:
            diff.append("%s empty" % k)
        elif not theirs:
            rep.note("the source's %s is empty; the SEG's is %s" % (k, mine))
    rep.check(not diff, "patient, study and frame of reference equal to the source's%s"
              % ("" if not diff else " (%s)" % "; ".join(diff)))

    # Shared geometry.
    pfg = list(seg.get("PerFrameFunctionalGroupsSequence", []))
    first = pfg[0] if pfg else None
    po = functional_item(seg, first, "PlaneOrientationSequence")
    pm = functional_item(seg, first, "PixelMeasuresSequence")
    iop_src = slices[0].iop
    ok = po is not None and "ImageOrientationPatient" in po \
        and np.abs(np.array(po.ImageOrientationPatient, float) - iop_src).max() <= IOP_TOL
    rep.check(ok, "Plane Orientation = the source's %s (%s)"
              % (list(iop_src), None if po is None else po.get("ImageOrientationPatient")))
    ps_src = slices[0].spacing
    ok = pm is not None and "PixelSpacing" in pm \
        and np.abs(np.array(pm.PixelSpacing, float) - ps_src).max() <= 1e-5 \
        and _s(pm.get("SliceThickness")) != ""
    rep.check(ok, "Pixel Measures: Pixel Spacing = the source's %s, Slice Thickness %s"
              % (list(ps_src), None if pm is None else
                 (pm.get("PixelSpacing"), pm.get("SliceThickness"))))
    dims = list(seg.get("DimensionIndexSequence", []))
    rep.check(len(dims) >= 1 and _s(seg.get("DimensionOrganizationSequence")
                                   and seg.DimensionOrganizationSequence[0]
                                   .get("DimensionOrganizationUID")),
              "Multi-frame Dimension module: %d dimension indices, %s"
              % (len(dims), ", ".join(_s(d.get("DimensionDescriptionLabel")) or
                                      str(d.get("DimensionIndexPointer")) for d in dims)))

    # Frames.
    F = len(pfg)
    summary["frames"] = F
    rep.check(int(seg.get("NumberOfFrames", -1)) == F,
              "Number of Frames %s = per-frame items %d" % (seg.get("NumberOfFrames"), F))
    try:
        masks, need = (frame_values if lm else frame_masks)(seg, F, rows, cols)
        plen = len(seg.PixelData)
        rep.check(plen in (need, need + (need & 1)),
                  "PixelData %d bytes for %d frames (%d needed)" % (plen, F, need))
    except (ValueError, AttributeError) as e:
        rep.check(False, "pixel data readable (%s)" % e)
        masks = None
    no_src, bad_class, bad_purpose, bad_segno, no_dimidx = [], [], [], [], []
    ipp_diff, ipp_bad, mask_bad = 0.0, [], []
    no_slp = 0
    pairs = {}
    referenced = set()
    number = np.zeros(256, np.uint8)  # a label map's value for each label
    for n, lab in seg_label.items():
        number[lab] = n
    slice_frames = {}  # label map: slice -> frames
    for f, item in enumerate(pfg):
        n = None
        si = (item.get("SegmentIdentificationSequence") or [{}])[0]
        n = si.get("ReferencedSegmentNumber") if si else None
        if (n is not None or "SegmentIdentificationSequence" in item) if lm \
                else n not in seg_label:
            bad_segno.append((f + 1, n))
        k = None
        srcs = []
        for d in item.get("DerivationImageSequence", []):
            srcs += list(d.get("SourceImageSequence", []))
        ks = set()
        for s in srcs:
            uid = _s(s.get("ReferencedSOPInstanceUID"))
            referenced.add(uid)
            fn = s.get("ReferencedFrameNumber") if "ReferencedFrameNumber" in s else None
            fn = [] if fn is None or fn == "" else \
                [int(v) for v in (fn if isinstance(fn, (list, tuple)) or
                                  type(fn).__name__ == "MultiValue" else [fn])]
            for key in ([(uid, v) for v in fn] if fn else [(uid, None)]):
                if key in key_to_slice:
                    ks.add(key_to_slice[key])
            if uid in source_uids and _s(s.get("ReferencedSOPClassUID")) != source_uids[uid]:
                bad_class.append(f + 1)
            if _s(s.get("SpatialLocationsPreserved")) != "YES":
                no_slp += 1
            pur = s.get("PurposeOfReferenceCodeSequence") or []
            if not pur or code_of(pur[0])[1] != "121322":
                bad_purpose.append(f + 1)
        if len(ks) != 1:
            no_src.append((f + 1, sorted(ks)))
        else:
            k = ks.pop()
        fc = (item.get("FrameContentSequence") or [{}])[0]
        div = fc.get("DimensionIndexValues") if fc else None
        if isinstance(div, int):  # one value: pydicom gives it bare
            div = [div]
        if not fc or len(div or []) != len(dims):
            no_dimidx.append(f + 1)
        pp = functional_item(seg, item, "PlanePositionSequence")
        if k is None:
            continue
        want = slices[k].ipp
        got = np.array(pp.ImagePositionPatient, float) if pp is not None \
            and "ImagePositionPatient" in pp else np.full(3, np.inf)
        d = float(np.abs(got - want).max())
        ipp_diff = max(ipp_diff, d)
        if d > IPP_TOL:
            ipp_bad.append((f + 1, k, list(got), list(want)))
        if lm:
            slice_frames.setdefault(k, []).append(f + 1)
            if masks is not None:
                truth = number[labels[k]]
                if not np.array_equal(masks[f], truth):
                    mask_bad.append((f + 1, k, 0, int(np.count_nonzero(masks[f])),
                                     int(np.count_nonzero(truth)), int((masks[f] != truth).sum())))
        elif n in seg_label:
            pairs.setdefault((k, n), []).append(f + 1)
            if masks is not None:
                truth = labels[k] == seg_label[n]
                if not np.array_equal(masks[f], truth):
                    mask_bad.append((f + 1, k, n, int(masks[f].sum()), int(truth.sum()),
                                     int((masks[f] != truth).sum())))
    if no_slp:
        rep.note("%d source references without Spatial Locations Preserved YES (Type 3; "
                 "highdicom's get_pixels_by_source_instance refuses them unless told "
                 "ignore_spatial_locations)" % no_slp)
    if lm:
        rep.check(not bad_segno, "no frame has a Segment Identification%s"
                  % ("" if not bad_segno else " (frame, number: %s)" % bad_segno[:5]))
    else:
        rep.check(not bad_segno, "every frame's Referenced Segment Number is a segment's%s"
                  % ("" if not bad_segno else " (frame, number: %s)" % bad_segno[:5]))
    rep.check(F > 0 and not no_src, "every frame refers to exactly one source slice through "
              "Derivation Image / Source Image (Referenced Frame Number for a multi-frame "
              "source)%s"
              % ("" if not no_src else " (%d do not; frame, slices: %s)"
                 % (len(no_src), no_src[:5])))
    rep.check(not bad_class and not bad_purpose,
              "source references: SOP class of the slice, purpose 121322%s"
              % ("" if not (bad_class or bad_purpose) else
                 " (class wrong in frames %s, purpose in %s)" % (bad_class[:5], bad_purpose[:5])))
    rep.check(not no_dimidx, "every frame has %d Dimension Index Values%s"
              % (len(dims), "" if not no_dimidx else " (not frames %s)" % no_dimidx[:5]))
    rep.check(F > 0 and not ipp_bad, "every frame's Image Position (Patient) = its source "
              "slice's within %g mm (max difference %.3g mm)%s"
              % (IPP_TOL, ipp_diff, "" if not ipp_bad else "; %d off, first: frame %d slice %d "
                 "%s, source %s" % ((len(ipp_bad),) + ipp_bad[0])))
    if masks is not None and lm:
        rep.check(F > 0 and not mask_bad, "every frame's pixels = the segment number of "
                  "labels[slice], 0 elsewhere%s"
                  % ("" if not mask_bad else "; %d differ, first: frame %d slice %d (%d): "
                     "%d voxels set, %d in the labels, %d differ"
                     % ((len(mask_bad),) + mask_bad[0])))
    elif masks is not None:
        rep.check(F > 0 and not mask_bad, "every frame's mask = (labels[slice] == label)%s"
                  % ("" if not mask_bad else "; %d differ, first: frame %d slice %d segment %d: "
                     "%d voxels set, %d in the labels, %d differ"
                     % ((len(mask_bad),) + mask_bad[0])))
    dup = {p: fs for p, fs in pairs.items() if len(fs) > 1}
    if not lm:
        rep.check(not dup, "every (slice, segment) at most once%s"
                  % ("" if not dup else " (%d twice, e.g. %s)"
                     % (len(dup), next(iter(dup.items())))))
    nonempty = set()
    for k in range(n_sl):
        for lab in np.unique(labels[k]):
            if lab:
                for n, l2 in seg_label.items():
                    if l2 == lab:
                        nonempty.add((k, n))
    have = set(pairs)
    if lm:
        twice = {k: fs for k, fs in slice_frames.items() if len(fs) > 1}
        rep.check(F == n_sl and len(slice_frames) == n_sl and not twice,
                  "one frame per slice: %d frames, %d slices, %d slices with a frame, %d twice"
                  % (F, n_sl, len(slice_frames), len(twice)))
    elif args.keep_empty:
        want = {(k, n) for k in range(n_sl) for n in seg_label}
        rep.check(have == want and F == n_sl * S,
                  "--keep-empty: every (slice, segment) present, %d frames = %d slices x %d "
                  "segments (missing %d)" % (F, n_sl, S, len(want - have)))
    else:
        empty = sorted(p for p in have if p not in nonempty)
        missing = sorted(nonempty - have)
        rep.check(not empty, "no empty frame%s" % ("" if not empty else " (%d, e.g. slice, "
                                                   "segment %s)" % (len(empty), empty[0])))
        rep.check(not missing, "every non-empty (slice, segment) has its frame: %d of %d%s"
                  % (len(nonempty & have), len(nonempty), "" if not missing else
                     ", first missing %s" % (missing[0],)))
    summary["nonempty_pairs"] = len(nonempty)

    # Common Instance Reference.
    rss = list(seg.get("ReferencedSeriesSequence", []))
    listed = {}
    series = []
    for r in rss:
        series.append(_s(r.get("SeriesInstanceUID")))
        for i in r.get("ReferencedInstanceSequence", []):
            listed[_s(i.get("ReferencedSOPInstanceUID"))] = _s(i.get("ReferencedSOPClassUID"))
    src_series = _s(src0.get("SeriesInstanceUID"))
    if not src_series:
        rep.note("the source's Series Instance UID is empty; Referenced Series Sequence names %s"
                 % series)
    ok_series = len(series) == 1 and series[0] != "" and (series[0] == src_series
                                                          or not src_series)
    missing = sorted(referenced - set(listed))
    foreign = sorted(set(listed) - set(source_uids))
    wrong_class = [u for u, c in listed.items() if u in source_uids and c != source_uids[u]]
    rep.check(ok_series and not missing and not foreign and not wrong_class,
              "Referenced Series Sequence: series %s (source %r), %d instances listed, %d "
              "referenced by frames, %d source instances%s"
              % (series, src_series, len(listed), len(referenced), len(source_uids),
                 "" if not (missing or foreign or wrong_class) else
                 " (not listed %d, not from the source %d, SOP class wrong %d)"
                 % (len(missing), len(foreign), len(wrong_class))))
    summary["instances_listed"] = len(listed)
    return rep, summary


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep-empty", action="store_true",
                    help="the SEG was written with empty frames kept")
    ap.add_argument("--model", help="model file whose card the segments must match")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("seg")
    ap.add_argument("labels")
    ap.add_argument("dicom", nargs="+")
    args = ap.parse_args(argv)
    rep, summary = check(args)
    n_ok = len(rep.results) - rep.failed
    if args.json:
        summary.update(ok=rep.failed == 0, checks=len(rep.results), failed=rep.failed,
                       results=[{"ok": ok, "check": d} for ok, d in rep.results],
                       notes=rep.notes)
        print(json.dumps(summary))
    else:
        for ok, desc in rep.results:
            print("%s - %s" % ("ok" if ok else "not ok", desc))
        for t in rep.notes:
            print("# %s" % t)
        print("# seg_check: %s segments, %s frames, %d of %d checks passed"
              % (summary.get("segments"), summary.get("frames"), n_ok, len(rep.results)))
    return 0 if rep.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
