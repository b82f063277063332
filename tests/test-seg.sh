#!/bin/bash
# The DICOM Segmentation objects that mmsegd writes (design.md section 7), checked against
# their source series and the label volume they were written from.
#
# tests/seg-write (a test tool: `seg-write [--keep-empty] [--labelmap] MODEL DICOM LABELS OUT`,
# labels as uint8 slice k, row j, column i, slices ascending along the normal) writes the SEG
# of a given label volume with the card of models/demo.safetensors; tests/seg_check.py checks
# the IOD, the segments against the card, patient, study and frame of reference, the Common
# Instance Reference, and per frame the source reference, the position and the mask. Cases:
#  a) dcmqi's ct-3slice CT with its liver label map (liver_seg.nrrd, read here) as demo label
#     5: seg_check passes, and our SEG and dcmqi's liver.dcm carry the same mask on the same
#     referenced SOP instances;
#  b) TotalSegmentator's example CT (20 slices, JPEG 2000 lossless, empty SOP, series and study
#     UIDs in the datasets) with example_seg_dicom.nii.gz remapped to the demo ids (NIfTI voxel
#     (i, j, k) is column i, row 511 - j, slice k from the lowest z; its SOURCE.md): seg_check
#     passes, pydicom decodes the frames;
#  c) dcm_qa_ct Philips S21610/S2010 (54 slices, gantry tilt 18.5 deg) with synthetic spheres
#     and boxes of labels 1 and 5, some at the image corners: every frame's position is its
#     source slice's, seg_check passes;
#  d) --keep-empty on (c): frames = slices x segments; the default omits the empty ones;
#  f) dcmqi's 23x38x3 CT (23 columns x 38 rows: frames of 874 bits, not whole bytes) with
#     synthetic labels, default and --keep-empty: the bit packing across frame boundaries
#     and in the last byte;
#  g) that CT cut to 37 rows and copied to 8 slices (frames of 851 bits, starting at every
#     bit position of a byte) with random labels 1 and 2;
#  i) dcmqi's Legacy Converted Enhanced CT 23x38x3/multiframe/mf.dcm (3 frames in one file)
#     with synthetic labels: each SEG frame refers to its source frame;
#  highdicom (optional, where it is installed: HIGHDICOM_PYTHON or _build/venv-ref) reads the
#  SEGs of (b) and (c): segments with their codes, and for (c) the masks per source instance;
#  e) `mmsegd segment --model demo -o DIR --nifti NDIR` on (b): one .seg.dcm in DIR, which
#     seg_check accepts against the label NIfTI of the same run;
#  j) label maps (seg-write --labelmap) of (b), (c) and a 23x37x3 series: seg_check, pydicom's
#     decoding, highdicom's masks per source instance; sizes of the binary and label-map SEG;
#  k) `mmsegd segment` with [seg] type = labelmap and preview_sc = yes on a phantom CT:
#     seg_check, highdicom; the Secondary Capture: dciodvfy, pixels equal to the PNG's;
#  m) RT Structure Sets of (b), (c), (f), (i): rtstruct_check.py (contours filled back with
#     scikit-image: Dice 1 per ROI, points on their planes), dciodvfy;
#  h) the checker itself: copies of (c) with one defect each (a position 0.01 mm off, a
#     voxel flipped, a frame left out, a wrong source slice, a colour off the card) fail; and
#     of its label map (position, a pixel, a source slice) and its RT Structure Set (a point
#     off the plane, a colour, a contour left out).
# Every SEG goes through dciodvfy (dicom3tools): no "Error" line; its Error and Warning lines
# are shown as notes. "segments S frames F" from seg-write must equal the counts the labels
# give. SKIP only without the shared test data, numpy/pydicom/nibabel in $PYTHON3, or
# dciodvfy (its checks only).
set -u
. "$(dirname "$0")/find-testdata.sh"
require_testdata
src=${srcdir:-.}
mmsegd=${MMSEGD:-./mmsegd}
python=${PYTHON3:-/usr/bin/python3}
segwrite=${SEG_WRITE:-${top_builddir:-.}/tests/seg-write}
model=$src/models/demo.safetensors
checker=$src/tests/seg_check.py
dciodvfy=${DCIODVFY:-$(command -v dciodvfy || echo /usr/bin/dciodvfy)}
require_python numpy pydicom nibabel PIL skimage
tmp=$(mktemp -d "${TMPDIR:-/tmp}/test-seg.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)

skip() { # skip DESCRIPTION REASON
    n=$((n + 1))
    echo "ok $n - $1 # SKIP $2"
}
diag() { sed 's/^/# /' "$@" | head -20; }

# The helpers: label volumes from the reference files, synthetic labels, the expected
# counts, the comparison with dcmqi's SEG and pydicom's decoding.
cat >"$tmp/mk.py" <<'PY'
import gzip, os, sys
import numpy as np

def nrrd(path, out, label, first_z):
    """A gzip or raw NRRD label map (3-D, axis-aligned, LPS) -> uint8 raw, voxels > 0 = label.
    Its axes must be columns, rows, slices with slices ascending in z from first_z."""
    raw = open(path, "rb").read()
    i = raw.index(b"\n\n")
    hdr = {}
    for line in raw[:i].decode().splitlines()[1:]:
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            hdr[k.strip()] = v.strip()
    dt = {"short": "<i2", "unsigned short": "<u2", "uchar": "u1", "unsigned char": "u1",
          "int": "<i4", "char": "i1"}[hdr["type"]]
    sizes = [int(v) for v in hdr["sizes"].split()]
    dirs = [[float(x) for x in d.strip("()").split(",")] for d in hdr["space directions"].split()]
    origin = [float(x) for x in hdr["space origin"].strip("()").split(",")]
    if hdr.get("space") != "left-posterior-superior" or len(sizes) != 3 \
            or any(dirs[a][b] != 0 for a in range(3) for b in range(3) if a != b) \
            or min(dirs[a][a] for a in range(3)) <= 0 or abs(origin[2] - first_z) > 1e-3:
        sys.exit("nrrd: %s: not an axis-aligned LPS map starting at z %g: %s" % (path, first_z, hdr))
    data = raw[i + 2:]
    if hdr.get("encoding") == "gzip":
        data = gzip.decompress(data)
    a = np.frombuffer(data, dt).reshape(sizes[::-1])
    ((a > 0).astype(np.uint8) * label).tofile(out)
    print("nrrd: %s voxels of label %d" % ([int((s > 0).sum()) for s in a], label))

def ts(path, out, tools):
    sys.path.insert(0, tools)
    import nibabel as nib
    from mmunet.labels import DEMO_LABEL_NAMES, map_totalseg
    seg = np.asarray(nib.load(path).dataobj)
    lab = map_totalseg(seg, DEMO_LABEL_NAMES)      # (i, j, k), TotalSegmentator's rows flipped
    lab = np.ascontiguousarray(lab.transpose(2, 1, 0)[:, ::-1, :])
    lab.tofile(out)
    print("ts: shape %s, labels %s" % (list(lab.shape), np.unique(lab).tolist()))

def synth(out, slices, rows, cols, step, pixel):
    """Spheres and boxes of labels 1 and 5, and voxels at the corners of first and last slice."""
    S, R, C = int(slices), int(rows), int(cols)
    step, pixel = float(step), float(pixel)
    k, j, i = np.meshgrid(np.arange(S) * step, np.arange(R) * pixel, np.arange(C) * pixel,
                          indexing="ij")
    lab = np.zeros((S, R, C), np.uint8)
    ext = np.array([S * step, R * pixel, C * pixel])
    def ball(c, r, v):
        c = np.array(c) * ext
        lab[(k - c[0]) ** 2 + (j - c[1]) ** 2 + (i - c[2]) ** 2 <= (r * min(ext[1:])) ** 2] = v
    ball((0.30, 0.40, 0.60), 0.10, 1)
    ball((0.65, 0.55, 0.40), 0.15, 5)
    ball((0.62, 0.55, 0.55), 0.08, 1)                 # inside label 5's sphere: overlap in-slice
    lab[int(0.85 * S):int(0.92 * S) + 1, R // 5:R // 4 + 1, C // 5:C // 3] = 5  # a box
    lab[0, 0:3, C - 7:C] = 1                            # corner of the first slice
    lab[S - 1, R - 1, C - 1] = 5                        # last voxel of the last slice
    lab[S - 1, R - 2:R, 0:2] = 1
    lab.tofile(out)
    print("synth: %d x %d x %d, voxels of 1: %d, of 5: %d"
          % (S, R, C, int((lab == 1).sum()), int((lab == 5).sum())))

def counts(raw, slices, rows, cols):
    """The seg-write line the labels imply, default and with --keep-empty."""
    lab = np.fromfile(raw, np.uint8).reshape(int(slices), int(rows), int(cols))
    present = [v for v in np.unique(lab) if v]
    pairs = sum(len([v for v in np.unique(s) if v]) for s in lab)
    print("segments %d frames %d" % (len(present), pairs))
    print("segments %d frames %d" % (len(present), len(present) * lab.shape[0]))

def frames_by_source(path):
    """{source SOP instance: (segment label, mask)} of a SEG, frames of one segment only."""
    import pydicom
    ds = pydicom.dcmread(path)
    F, R, C = int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns)
    bits = np.unpackbits(np.frombuffer(ds.PixelData, np.uint8), bitorder="little")
    masks = bits[:F * R * C].reshape(F, R, C).astype(bool)
    out = {}
    for f, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        uid = str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        out[uid] = out.get(uid, np.zeros((R, C), bool)) | masks[f]
    return [str(s.SegmentLabel) for s in ds.SegmentSequence], out

def dcmqi(ours, theirs):
    la, a = frames_by_source(ours)
    lb, b = frames_by_source(theirs)
    uids = sorted(set(a) | set(b))
    diff = {u: int((a[u] != b[u]).sum()) if u in a and u in b else None for u in uids}
    ok = set(a) == set(b) and all(v == 0 for v in diff.values())
    print("%s - a: our SEG (%s) and dcmqi's liver.dcm (%s) carry the same mask on the "
          "same %d referenced instances (voxels per instance: ours %s, dcmqi %s; differing %s)"
          % ("ok" if ok else "not ok", la, lb, len(uids), [int(a[u].sum()) if u in a else None
                                                          for u in uids],
             [int(b[u].sum()) if u in b else None for u in uids], list(diff.values())))

def pydicom_frames(path, raw, slices, rows, cols):
    """pydicom's own decoding of the frames: shape, and the union of each segment's frames
    equal to its label's voxels."""
    import pydicom
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    F = int(ds.NumberOfFrames)
    if arr.ndim == 2:
        arr = arr[None]
    lab = np.fromfile(raw, np.uint8).reshape(int(slices), int(rows), int(cols))
    present = [int(v) for v in np.unique(lab) if v]
    got = {}
    for f, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        n = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        got[n] = got.get(n, 0) + int(arr[f].astype(bool).sum())
    want = {i + 1: int((lab == v).sum()) for i, v in enumerate(present)}
    ok = arr.shape == (F, int(rows), int(cols)) and got == want
    print("%s - %s: pydicom %s decodes the frames: pixel_array %s, voxels per segment %s (labels: %s)"
          % ("ok" if ok else "not ok", os.path.basename(path)[:-4], pydicom.__version__,
             list(arr.shape), got, want))

def oddseries(src, out, rows, slices, raw):
    """A series of `slices` copies of src (a single-frame CT) cut to its first `rows` rows, one
    new series, slices 2.5 mm apart; and random labels 1 and 2 (half of the voxels) for it."""
    import copy
    import pydicom
    from pydicom.uid import generate_uid
    rows, slices = int(rows), int(slices)
    d0 = pydicom.dcmread(src)
    px = np.ascontiguousarray(d0.pixel_array[:rows])
    series = generate_uid(entropy_srcs=[src, "oddseries", str(rows), str(slices)])
    os.makedirs(out, exist_ok=True)
    for k in range(slices):
        d = copy.deepcopy(d0)
        d.Rows = rows
        d.PixelData = px.tobytes()
        d.SeriesInstanceUID = series
        d.SOPInstanceUID = generate_uid(entropy_srcs=[series, str(k)])
        d.file_meta.MediaStorageSOPInstanceUID = d.SOPInstanceUID
        ipp = [float(v) for v in d0.ImagePositionPatient]
        ipp[2] += 2.5 * k
        d.ImagePositionPatient = ipp
        d.InstanceNumber = k + 1
        if "SliceLocation" in d:
            d.SliceLocation = ipp[2]
        d.save_as(os.path.join(out, "IMG%04d.dcm" % (k + 1)))
    rng = np.random.default_rng(7)
    lab = rng.integers(0, 3, size=(slices, rows, int(d0.Columns)), dtype=np.uint8)
    lab[rng.random(lab.shape) < 0.5] = 0
    lab.tofile(raw)
    print("oddseries: %d slices of %d x %d (%d bits a frame)"
          % (slices, int(d0.Columns), rows, rows * int(d0.Columns)))

def labelmap_frames(path, raw, slices, rows, cols):
    """pydicom's decoding of a label map: one frame per slice, each equal to the segment
    numbers of the labels (segments numbered 1.. in ascending label order), 0 elsewhere."""
    import pydicom
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    if arr.ndim == 2:
        arr = arr[None]
    lab = np.fromfile(raw, np.uint8).reshape(int(slices), int(rows), int(cols))
    number = np.zeros(256, np.uint8)
    for i, v in enumerate(v for v in np.unique(lab) if v):
        number[v] = i + 1
    ok = arr.shape == lab.shape and np.array_equal(arr, number[lab])
    print("%s - %s: pydicom %s decodes the label map: pixel_array %s %s, equal to the segment "
          "numbers of the labels %s" % ("ok" if ok else "not ok", os.path.basename(path)[:-4],
                                        pydicom.__version__, list(arr.shape), arr.dtype,
                                        list(lab.shape)))

def nii2raw(path, out):
    """The labels of a NIfTI of `mmsegd segment --nifti` (voxel i, j, k: column i, row j,
    slice k) as raw bytes, slice, row, column."""
    import nibabel as nib
    a = np.asarray(nib.load(path).dataobj).astype(np.uint8)
    np.ascontiguousarray(a.transpose(2, 1, 0)).tofile(out)
    print("nii2raw: %d x %d x %d" % a.shape)

def sc(path, png, seg):
    """The Secondary Capture of the preview: its pixels are the PNG's; SC Image Storage, RGB,
    burned-in annotation; the SEG's study, another series."""
    import pydicom
    from PIL import Image
    d = pydicom.dcmread(path)
    a = d.pixel_array
    b = np.asarray(Image.open(png).convert("RGB"))
    s = pydicom.dcmread(seg, stop_before_pixels=True)
    same = a.shape == b.shape and np.array_equal(a, b)
    iod = (d.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and d.PhotometricInterpretation == "RGB"
           and d.BurnedInAnnotation == "YES" and d.ConversionType == "WSD")
    where = (d.StudyInstanceUID == s.StudyInstanceUID and d.SeriesInstanceUID != s.SeriesInstanceUID
             and d.PatientID == s.PatientID)
    print("%s - k: the Secondary Capture's pixels %s are the preview PNG's %s" %
          ("ok" if same else "not ok", list(a.shape), list(b.shape)))
    print("%s - k: Secondary Capture Image Storage, RGB, Burned In Annotation YES, WSD" %
          ("ok" if iod else "not ok"))
    print("%s - k: in the SEG's study (%s), series %s of its own (number %s)" %
          ("ok" if where else "not ok", d.StudyInstanceUID, d.SeriesInstanceUID, d.SeriesNumber))

def mutate(path, out, kind):
    """A copy of a SEG (2 frames or more) with one defect that seg_check.py must find."""
    import pydicom
    ds = pydicom.dcmread(path)
    pf = ds.get("PerFrameFunctionalGroupsSequence")
    if kind == "ipp":          # the first frame 0.01 mm higher
        pp = pf[0].PlanePositionSequence[0]
        pp.ImagePositionPatient = [float(v) for v in pp.ImagePositionPatient[:2]] + \
            [float(pp.ImagePositionPatient[2]) + 0.01]
    elif kind == "bit":        # one voxel of the first frame flipped
        px = bytearray(ds.PixelData)
        px[len(px) // (2 * int(ds.NumberOfFrames))] ^= 0x10
        ds.PixelData = bytes(px)
    elif kind == "drop":       # the last frame left out
        F, R, C = int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns)
        del pf[F - 1]
        ds.NumberOfFrames = F - 1
        n = ((F - 1) * R * C + 7) // 8
        ds.PixelData = ds.PixelData[:n] + (b"\0" if n & 1 else b"")
    elif kind == "source":     # the first frame refers to the second frame's slice
        a = pf[0].DerivationImageSequence[0].SourceImageSequence[0]
        b = pf[1].DerivationImageSequence[0].SourceImageSequence[0]
        a.ReferencedSOPInstanceUID = b.ReferencedSOPInstanceUID
    elif kind == "colour":     # the first segment's colour off the card
        ds.SegmentSequence[0].RecommendedDisplayCIELabValue = [65535, 32896, 32896]
    elif kind == "plane":      # RT Structure Set: one point 0.01 mm off its plane
        c = ds.ROIContourSequence[0].ContourSequence[0]
        d = [float(v) for v in c.ContourData]
        d[2] += 0.01
        c.ContourData = d
    elif kind == "roicolour":  # RT Structure Set: the first ROI's colour off the card
        ds.ROIContourSequence[0].ROIDisplayColor = [1, 2, 3]
    elif kind == "dropcontour":  # RT Structure Set: the contours of the last ROI left out
        ds.ROIContourSequence[-1].ContourSequence = []
    ds.save_as(out)

if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"nrrd": lambda: nrrd(args[0], args[1], int(args[2]), float(args[3])),
     "ts": lambda: ts(*args), "synth": lambda: synth(*args), "counts": lambda: counts(*args),
     "dcmqi": lambda: dcmqi(*args), "pydicom": lambda: pydicom_frames(*args),
     "oddseries": lambda: oddseries(*args), "mutate": lambda: mutate(*args),
     "labelmap": lambda: labelmap_frames(*args), "nii2raw": lambda: nii2raw(*args),
     "sc": lambda: sc(*args)}[cmd]()
PY
mk() { "$python" "$tmp/mk.py" "$@"; }

# pylines COMMAND...: a command that prints "ok - "/"not ok - " lines; at least one.
pylines() { tap_lines 0 "$(basename "$2") $3" "$@"; }

# write NAME DICOM RAW [--keep-empty]: seg-write into $tmp/NAME.dcm; one result: exit 0 and
# a first line that begins with "segments S frames F" as the variable want gives it (fields
# after those are allowed).
write() {
    local name=$1 dicom=$2 raw=$3 rc line
    shift 3
    "$segwrite" "$@" "$model" "$dicom" "$raw" "$tmp/$name.dcm" >"$tmp/$name.out" 2>"$tmp/$name.err"
    rc=$?
    line=$(head -1 "$tmp/$name.out")
    if [ $rc -eq 0 ] && { [ "$line" = "$want" ] || [ "${line#"$want "}" != "$line" ]; } &&
        [ -s "$tmp/$name.dcm" ]; then
        result OK "$name: seg-write${*:+ $*} exits 0, \"$line\""
    else
        result FAIL "$name: seg-write${*:+ $*} exits $rc, \"$line\" (want \"$want\")"
        diag "$tmp/$name.err"
    fi
}

# segcheck NAME RAW DICOM [OPTIONS]: seg_check.py; one result, and its failing lines as notes.
segcheck() {
    local name=$1 raw=$2 dicom=$3 rc
    shift 3
    "$python" "$checker" --model "$model" "$@" "$tmp/$name.dcm" "$raw" "$dicom" \
        >"$tmp/$name.check" 2>&1
    rc=$?
    local summary
    summary=$(grep '^# seg_check:' "$tmp/$name.check" | sed 's/^# seg_check: //')
    if [ $rc -eq 0 ]; then result OK "$name: seg_check.py${*:+ $*} passes ($summary)"
    else
        result FAIL "$name: seg_check.py${*:+ $*} exits $rc (${summary:-no summary})"
        grep -v -e '^ok - ' -e '^# seg' "$tmp/$name.check" | diag
    fi
}

# vfy NAME: dciodvfy reports no Error; its Error and Warning lines become notes.
vfy() {
    local name=$1 errors warnings
    if [ ! -x "$dciodvfy" ]; then
        skip "$name: dciodvfy reports no error" "dciodvfy is not installed (dicom3tools)"
        return
    fi
    "$dciodvfy" "$tmp/$name.dcm" >"$tmp/$name.vfy" 2>&1
    errors=$(grep -c '^Error' "$tmp/$name.vfy")
    warnings=$(grep -c '^Warning' "$tmp/$name.vfy")
    if [ "$errors" -eq 0 ] && grep -q 'Segmentation' "$tmp/$name.vfy"; then
        result OK "$name: dciodvfy: no error, $warnings warnings"
    else
        result FAIL "$name: dciodvfy: $errors errors, $warnings warnings"
    fi
    grep -E '^(Error|Warning)' "$tmp/$name.vfy" | sed "s/^/# $name dciodvfy: /" | head -30
}

# hdread NAME DICOM RAW: highdicom (optional: PyPI, in the virtual environment
# _build/venv-ref that tools/mmunet/nnunet_proof.sh makes, or HIGHDICOM_PYTHON) reads the SEG:
# its segments with their codes, and per referenced source instance masks equal to the labels.
hdpy=${HIGHDICOM_PYTHON:-$src/_build/venv-ref/bin/python}
hdread() {
    local name=$1 dicom=$2 raw=$3
    if [ ! -x "$hdpy" ] || ! "$hdpy" -c 'import highdicom' 2>/dev/null; then
        skip "$name: highdicom reads segments, codes and masks" \
            "highdicom is not installed at $hdpy (pip install highdicom in a virtual environment, then HIGHDICOM_PYTHON)"
        return
    fi
    if "$hdpy" "$src/tools/mmunet/bench_seg_highdicom.py" verify "$tmp/$name.dcm" "$dicom" "$raw" \
        >"$tmp/$name.hd" 2>&1; then
        if grep -q '"per_instance": "not checked' "$tmp/$name.hd"; then
            result OK "$name: highdicom reads segments and codes; masks per source instance not checked: the source files have no SOP Instance UID (seg_check.py checks them)"
        else
            result OK "$name: highdicom reads segments, codes and masks per source instance"
        fi
        diag "$tmp/$name.hd"
    else
        result FAIL "$name: highdicom reads segments, codes and masks"
        diag "$tmp/$name.hd"
    fi
}

if [ ! -x "$segwrite" ]; then
    result FAIL "$segwrite is built (make tests/seg-write)"
fi

# a) dcmqi ct-3slice, liver as demo label 5
dq=$td/dcmqi/data/segmentations
ct3=$dq/ct-3slice
if mk nrrd "$dq/liver_seg.nrrd" "$tmp/a.raw" 5 -128.69 >"$tmp/a.mk" 2>&1; then
    diag "$tmp/a.mk"
    want=$(mk counts "$tmp/a.raw" 3 512 512 | head -1)
    write a "$ct3" "$tmp/a.raw"
    segcheck a "$tmp/a.raw" "$ct3"
    pylines "$python" "$tmp/mk.py" dcmqi "$tmp/a.dcm" "$dq/liver.dcm"
    vfy a
else
    result FAIL "a: liver_seg.nrrd read"
    diag "$tmp/a.mk"
fi

# b) TotalSegmentator's example CT with its label map on the demo ids
tsd=$td/totalsegmentator/tests/reference_files
tsdcm=$tsd/example_ct_dicom
if mk ts "$tsd/example_seg_dicom.nii.gz" "$tmp/b.raw" "$src/tools" >"$tmp/b.mk" 2>&1; then
    diag "$tmp/b.mk"
    want=$(mk counts "$tmp/b.raw" 20 512 512 | head -1)
    write b "$tsdcm" "$tmp/b.raw"
    segcheck b "$tmp/b.raw" "$tsdcm"
    vfy b
    pylines "$python" "$tmp/mk.py" pydicom "$tmp/b.dcm" "$tmp/b.raw" 20 512 512
    hdread b "$tsdcm" "$tmp/b.raw"
else
    result FAIL "b: example_seg_dicom.nii.gz mapped to the demo ids"
    diag "$tmp/b.mk"
fi

# c) Philips S2010, gantry tilt 18.5 deg: synthetic labels; d) --keep-empty on the same
tilt=$td/dcm_qa_ct/In/Philips/S21610/S2010
if mk synth "$tmp/c.raw" 54 512 512 2.371 0.4824 >"$tmp/c.mk" 2>&1; then
    diag "$tmp/c.mk"
    mk counts "$tmp/c.raw" 54 512 512 >"$tmp/c.counts"
    want=$(sed -n 1p "$tmp/c.counts")
    write c "$tilt" "$tmp/c.raw"
    segcheck c "$tmp/c.raw" "$tilt"
    line=$(grep "Image Position (Patient) = its source" "$tmp/c.check")
    case $line in
    "ok - "*) result OK "c (tilt 18.5 deg): ${line#ok - }" ;;
    *) result FAIL "c (tilt 18.5 deg): ${line#not ok - }" ;;
    esac
    vfy c
    hdread c "$tilt" "$tmp/c.raw"
    want=$(sed -n 2p "$tmp/c.counts")
    write d "$tilt" "$tmp/c.raw" --keep-empty
    segcheck d "$tmp/c.raw" "$tilt" --keep-empty
    vfy d
    fc=$(sed -n 1p "$tmp/c.counts" | awk '{ print $4 }')
    fd=$(sed -n 2p "$tmp/c.counts" | awk '{ print $4 }')
    if [ "$fc" -lt "$fd" ] 2>/dev/null; then
        result OK "d: empty frames omitted by default ($fc frames), kept with --keep-empty ($fd)"
    else
        result FAIL "d: the synthetic labels leave no empty frame ($fc, $fd)"
    fi
else
    result FAIL "c: synthetic labels"
    diag "$tmp/c.mk"
fi

# f) 38 x 23 pixels: frames that do not end on a byte boundary
odd=$dq/23x38x3/image
if mk synth "$tmp/f.raw" 3 23 38 2.5 0.7 >"$tmp/f.mk" 2>&1; then
    diag "$tmp/f.mk"
    want=$(mk counts "$tmp/f.raw" 3 23 38 | head -1)
    write f "$odd" "$tmp/f.raw"
    segcheck f "$tmp/f.raw" "$odd"
    vfy f
    want=$(mk counts "$tmp/f.raw" 3 23 38 | sed -n 2p)
    write f-keep "$odd" "$tmp/f.raw" --keep-empty
    segcheck f-keep "$tmp/f.raw" "$odd" --keep-empty
else
    result FAIL "f: synthetic labels"
    diag "$tmp/f.mk"
fi

# g) 23 x 37 pixels, 8 slices, random labels: frames of 851 bits, which start at every bit
# position of a byte, and some of which spill into one byte more than their own length
if mk oddseries "$odd/IMG0001.dcm" "$tmp/g-dicom" 37 8 "$tmp/g.raw" >"$tmp/g.mk" 2>&1; then
    diag "$tmp/g.mk"
    want=$(mk counts "$tmp/g.raw" 8 37 23 | head -1)
    write g "$tmp/g-dicom" "$tmp/g.raw"
    segcheck g "$tmp/g.raw" "$tmp/g-dicom"
    vfy g
else
    result FAIL "g: the 23 x 37 series"
    diag "$tmp/g.mk"
fi

# i) a Legacy Converted Enhanced CT (dcmqi's 23x38x3/multiframe/mf.dcm, 3 frames): every SEG
# frame names its source frame (Referenced Frame Number). The labels keep off the last bytes
# of the frames, so that the bit packing of (f) does not matter here.
mf=$dq/23x38x3/multiframe
if "$python" -c 'import numpy as np, sys
l = np.zeros((3, 38, 23), np.uint8)
l[0, 5:10, 5:10] = 1
l[2, 1:30, 2:20] = 5
l.tofile(sys.argv[1])' "$tmp/i.raw" 2>"$tmp/i.mk"; then
    want=$(mk counts "$tmp/i.raw" 3 38 23 | head -1)
    write i "$mf" "$tmp/i.raw"
    segcheck i "$tmp/i.raw" "$mf"
    vfy i
else
    result FAIL "i: labels for the multi-frame CT"
    diag "$tmp/i.mk"
fi

# e) mmsegd segment -o: the model's own output on (b)
"$mmsegd" segment --model "$model" --json -o "$tmp/e-seg" --nifti "$tmp/e-nii" "$tsdcm" \
    >"$tmp/e.json" 2>"$tmp/e.err"
rc=$?
segs=$(find "$tmp/e-seg" -name '*.seg.dcm' 2>/dev/null | wc -l)
niis=$(find "$tmp/e-nii" -name '*.nii.gz' 2>/dev/null | wc -l)
if [ $rc -eq 0 ] && [ "$segs" -eq 1 ] && [ "$niis" -eq 1 ]; then
    result OK "e: mmsegd segment -o DIR --nifti NDIR exits 0: one .seg.dcm ($(basename \
"$(find "$tmp/e-seg" -name '*.seg.dcm')")), one .nii.gz"
    cp "$(find "$tmp/e-seg" -name '*.seg.dcm')" "$tmp/e.dcm"
    segcheck e "$(find "$tmp/e-nii" -name '*.nii.gz')" "$tsdcm"
    vfy e
else
    result FAIL "e: mmsegd segment -o DIR --nifti NDIR exits $rc, $segs .seg.dcm, $niis .nii.gz"
    grep -v ' notice: ' "$tmp/e.err" | diag
fi

# j) label maps (seg-write --labelmap): (b), (c) and a 23 x 37 x 3 series (an odd number of
# pixel bytes, padded); seg_check, pydicom's decoding, highdicom's masks per source instance.
# dciodvfy (dicom3tools 1.0 of Debian 12) does not know Label Map Segmentation Storage: the
# one Error it may report is that, and every other line is shown as a note.
vfy_labelmap() {
    local name=$1 other
    if [ ! -x "$dciodvfy" ]; then
        skip "$name: dciodvfy reports no error but not knowing the IOD" \
            "dciodvfy is not installed (dicom3tools)"
        return
    fi
    "$dciodvfy" "$tmp/$name.dcm" >"$tmp/$name.vfy" 2>&1
    other=$(grep '^Error' "$tmp/$name.vfy" | grep -vc 'Information Object Not found')
    if [ "$other" -eq 0 ]; then
        result OK "$name: dciodvfy: no error but not knowing the IOD ($(grep -c '^Error' \
"$tmp/$name.vfy") such line), $(grep -c '^Warning' "$tmp/$name.vfy") warnings"
    else
        result FAIL "$name: dciodvfy: $other errors besides not knowing the IOD"
    fi
    grep -E '^(Error|Warning)' "$tmp/$name.vfy" | sed "s/^/# $name dciodvfy: /" | head -30
}
for m in "b:$tsdcm:20" "c:$tilt:54"; do
    base=${m%%:*} m=${m#*:}
    dicom=${m%:*} slices=${m##*:}
    [ -s "$tmp/$base.raw" ] || continue
    want="segments $(mk counts "$tmp/$base.raw" "$slices" 512 512 | head -1 | awk '{ print $2 }') frames $slices"
    write "j-$base" "$dicom" "$tmp/$base.raw" --labelmap
    segcheck "j-$base" "$tmp/$base.raw" "$dicom"
    pylines "$python" "$tmp/mk.py" labelmap "$tmp/j-$base.dcm" "$tmp/$base.raw" "$slices" 512 512
    hdread "j-$base" "$dicom" "$tmp/$base.raw"
    vfy_labelmap "j-$base"
done
if [ -s "$tmp/c.dcm" ] && [ -s "$tmp/j-c.dcm" ]; then
    echo "# j-c: binary SEG $(stat -c %s "$tmp/c.dcm") bytes ($(sed -n 1p "$tmp/c.counts" |
        awk '{ print $4 }') frames), label map $(stat -c %s "$tmp/j-c.dcm") bytes (54 frames)"
fi
if mk oddseries "$odd/IMG0001.dcm" "$tmp/j-odd-dicom" 37 3 "$tmp/j-odd.raw" >"$tmp/j-odd.mk" 2>&1
then
    want="segments 2 frames 3"
    write j-odd "$tmp/j-odd-dicom" "$tmp/j-odd.raw" --labelmap
    segcheck j-odd "$tmp/j-odd.raw" "$tmp/j-odd-dicom"
    pylines "$python" "$tmp/mk.py" labelmap "$tmp/j-odd.dcm" "$tmp/j-odd.raw" 3 37 23
else
    result FAIL "j-odd: the 23 x 37 x 3 series"
    diag "$tmp/j-odd.mk"
fi

# m) RT Structure Sets (seg-write --rtstruct) of (b), (c: tilted), (f: 23 x 38) and (i: a
# multi-frame source): tests/rtstruct_check.py fills every contour back with scikit-image
# (independent of mmsegd) and wants a Dice of 1 per ROI (the outlines run along the pixel
# edges: nothing is lost), every point on its slice's plane within 1e-3 mm; dciodvfy.
rtchecker=$src/tests/rtstruct_check.py
rtcheck() { # rtcheck NAME LABELS DICOM: rtstruct_check.py --min-dice 1; one result
    local name=$1 raw=$2 dicom=$3 rc
    "$python" "$rtchecker" --model "$model" --min-dice 1 "$tmp/$name.dcm" "$raw" "$dicom" \
        >"$tmp/$name.check" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then
        result OK "$name: rtstruct_check.py passes: $(grep '^ok - filled back' "$tmp/$name.check" |
            sed 's/^ok - //'); $(grep '^ok - every point' "$tmp/$name.check" | sed 's/^ok - //')"
    else
        result FAIL "$name: rtstruct_check.py exits $rc"
        grep -v '^ok - ' "$tmp/$name.check" | diag
    fi
}
vfy_rt() { # vfy_rt NAME: dciodvfy knows the IOD and reports no Error
    local name=$1
    if [ ! -x "$dciodvfy" ]; then
        skip "$name: dciodvfy reports no error" "dciodvfy is not installed (dicom3tools)"
        return
    fi
    "$dciodvfy" "$tmp/$name.dcm" >"$tmp/$name.vfy" 2>&1
    if grep -q '^RTStructureSet' "$tmp/$name.vfy" && ! grep -q '^Error' "$tmp/$name.vfy"; then
        result OK "$name: dciodvfy (RTStructureSet): no error, $(grep -c '^Warning' \
"$tmp/$name.vfy") warnings"
    else
        result FAIL "$name: dciodvfy: $(grep -c '^Error' "$tmp/$name.vfy") errors"
    fi
    grep -E '^(Error|Warning)' "$tmp/$name.vfy" | sed "s/^/# $name dciodvfy: /" | head -10
}
for m in "b:$tsdcm" "c:$tilt" "f:$odd" "i:$mf"; do
    base=${m%%:*} dicom=${m#*:}
    [ -s "$tmp/$base.raw" ] || continue
    "$segwrite" --rtstruct "$model" "$dicom" "$tmp/$base.raw" "$tmp/m-$base.dcm" \
        >"$tmp/m-$base.out" 2>"$tmp/m-$base.err"
    rc=$?
    if [ $rc -eq 0 ] && [ -s "$tmp/m-$base.dcm" ]; then
        result OK "m-$base: seg-write --rtstruct exits 0, \"$(head -1 "$tmp/m-$base.out")\""
        rtcheck "m-$base" "$tmp/$base.raw" "$dicom"
        vfy_rt "m-$base"
    else
        result FAIL "m-$base: seg-write --rtstruct exits $rc"
        diag "$tmp/m-$base.err"
    fi
done

# k) [seg] type = labelmap, preview_sc = yes and rtstruct = yes in the configuration of mmsegd
# segment, on a phantom CT (tools/mmunet/phantom.py, 160 x 160 x 32) segmented by the demo
# model: one label-map SEG, which seg_check accepts against the NIfTI of the same run and
# highdicom reads per source instance; the preview as a Secondary Capture: dciodvfy, pydicom's
# pixels equal to the preview PNG's (PIL), the SEG's study, a series of its own; the RT
# Structure Set: rtstruct_check (m) against the NIfTI, dciodvfy.
printf '[seg]\ntype = labelmap\npreview_sc = yes\nrtstruct = yes\n' >"$tmp/k.ini"
if "$python" "$src/tools/mmunet/phantom.py" --seed 5 --shape 32 160 160 --spacing 2.5 1.5 1.5 \
    --out "$tmp/k-ph" --dicom >"$tmp/k.mk" 2>&1; then
    "$mmsegd" segment -c "$tmp/k.ini" --model "$model" --json -o "$tmp/k-seg" \
        --nifti "$tmp/k-nii" "$tmp/k-ph/dicom" >"$tmp/k.json" 2>"$tmp/k.err"
    rc=$?
    kseg=$(find "$tmp/k-seg" -name '*.seg.dcm' 2>/dev/null)
    knii=$(find "$tmp/k-nii" -name '*.nii.gz' 2>/dev/null)
    if [ $rc -eq 0 ] && [ -n "$kseg" ] && [ -n "$knii" ] &&
        "$python" -c 'import pydicom, sys
sys.exit(pydicom.dcmread(sys.argv[1]).SegmentationType != "LABELMAP")' "$kseg" 2>/dev/null; then
        result OK "k: mmsegd segment with [seg] type = labelmap writes a LABELMAP SEG"
        cp "$kseg" "$tmp/k.dcm"
        segcheck k "$knii" "$tmp/k-ph/dicom"
        if mk nii2raw "$knii" "$tmp/k.raw" >"$tmp/k.mk" 2>&1; then
            hdread k "$tmp/k-ph/dicom" "$tmp/k.raw"
        else
            result FAIL "k: the NIfTI labels read"
            diag "$tmp/k.mk"
        fi
        krt=${kseg%.seg.dcm}.rtstruct.dcm
        if [ -s "$krt" ]; then
            cp "$krt" "$tmp/k-rt.dcm"
            rtcheck k-rt "$knii" "$tmp/k-ph/dicom"
            vfy_rt k-rt
        else
            result FAIL "k: rtstruct = yes writes the RT Structure Set beside the SEG"
        fi
        ksc=${kseg%.seg.dcm}.sc.dcm
        if [ -s "$ksc" ]; then
            cp "$ksc" "$tmp/k-sc.dcm"
            if [ -x "$dciodvfy" ]; then
                "$dciodvfy" "$ksc" >"$tmp/k-sc.vfy" 2>&1
                if grep -q '^SCImage' "$tmp/k-sc.vfy" && ! grep -q '^Error' "$tmp/k-sc.vfy"; then
                    result OK "k: the Secondary Capture: dciodvfy (SCImage): no error, $(grep -c \
'^Warning' "$tmp/k-sc.vfy") warnings"
                else
                    result FAIL "k: the Secondary Capture: dciodvfy reports an error"
                fi
                grep -E '^(Error|Warning)' "$tmp/k-sc.vfy" | sed 's/^/# k-sc dciodvfy: /'
            else
                skip "k: the Secondary Capture: dciodvfy" "dciodvfy is not installed (dicom3tools)"
            fi
            pylines "$python" "$tmp/mk.py" sc "$ksc" "${kseg%.seg.dcm}.png" "$kseg"
        else
            result FAIL "k: preview_sc = yes writes the Secondary Capture beside the SEG"
            grep -v ' notice: ' "$tmp/k.err" | diag
        fi
    else
        result FAIL "k: mmsegd segment with [seg] type = labelmap exits $rc, SEG '${kseg}'"
        grep -v ' notice: ' "$tmp/k.err" | diag
    fi
else
    result FAIL "k: phantom.py writes the phantom"
    diag "$tmp/k.mk"
fi

# h) the checker itself: copies of (c), binary and label map, with one defect each must fail
# the check that names it
for m in "c:ipp:Image Position (Patient) = its source" "c:bit:mask = (labels" \
    "c:drop:every non-empty (slice, segment) has its frame" "c:source:mask = (labels" \
    "c:colour:segments match the card" "j-c:ipp:Image Position (Patient) = its source" \
    "j-c:bit:pixels = the segment number" "j-c:source:pixels = the segment number" \
    "m-c:plane:on its slice's plane" "m-c:roicolour:ROI names and colours" \
    "m-c:dropcontour:filled back"; do
    base=${m%%:*} m=${m#*:}
    kind=${m%%:*} line=${m#*:} name=h-$base-${m%%:*}
    [ -s "$tmp/$base.dcm" ] || continue
    if mk mutate "$tmp/$base.dcm" "$tmp/$name.dcm" "$kind" >"$tmp/h.err" 2>&1; then
        case $base in m-*) chk=$rtchecker ;; *) chk=$checker ;; esac
        "$python" "$chk" --model "$model" "$tmp/$name.dcm" "$tmp/c.raw" "$tilt" \
            >"$tmp/$name.check" 2>&1
        rc=$?
        if [ $rc -eq 1 ] && grep '^not ok - ' "$tmp/$name.check" | grep -qF "$line"; then
            result OK "h: $(basename "$chk") finds the defect \"$kind\" in $base (\"not ok - ...$line...\")"
        else
            result FAIL "h: $(basename "$chk") misses the defect \"$kind\" in $base (exit $rc)"
            grep '^not ok' "$tmp/$name.check" | diag
        fi
    else
        result FAIL "h: the copy of $base with the defect \"$kind\""
        diag "$tmp/h.err"
    fi
done

echo "# $(($(date +%s) - start)) s"
echo "1..$n"
exit $failed
