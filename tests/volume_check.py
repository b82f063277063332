#!/usr/bin/python3
"""Independent checks of the volumes that `mmsegd inspect --json --nifti DIR` reconstructs.

Used by tests/test-volume.sh. Every expectation is computed here from the DICOM files
themselves (read with pydicom), from dcm2niix's output of the same files or from the
reference data of the shared test data (SOURCE.md), never from mmsegd's own output.

Each subcommand prints TAP results without numbers ("ok - ..." / "not ok - ..." and
"# ..." diagnostics); the shell script numbers them. `deps` prints why the checks cannot
run (exit 1) or nothing (exit 0).

The JSON and NIfTI conventions under test (from the `mmsegd inspect` interface):
  NIfTI voxel (i, j, k) = DICOM column i, row j, slice k, k ascending along the normal
  (row x col); sform = the exact sheared affine in RAS: LPS->RAS of
  [row*spacing0, col*spacing1, (ipp[last]-ipp[0])/(n-1), ipp[0]]; qform = the rigid
  (row, col, normal) frame with pixdim3 = the median step along the normal.
"""
import argparse
import glob
import json
import math
import os
import sys
import traceback

MISSING = []
try:
    import numpy as np
except Exception as e:  # noqa: BLE001 - any import failure is a reason to skip
    MISSING.append("numpy (%s)" % e)
try:
    import nibabel as nib
except Exception as e:  # noqa: BLE001
    MISSING.append("nibabel (%s)" % e)
try:
    import pydicom
except Exception as e:  # noqa: BLE001
    MISSING.append("pydicom (%s)" % e)

CT_CLASSES = ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1",
              "1.2.840.10008.5.1.4.1.1.2.2")
PADDING_HU = -1024.0  # what Pixel Padding Value pixels become (dicom/dicom.h)
LPS2RAS = None if MISSING else np.diag([-1.0, -1.0, 1.0, 1.0])


# ----------------------------------------------------------------------------- output
class Tap:
    """Collects results; `expect` makes a crash still print the missing results."""

    def __init__(self):
        self.n = 0
        self.bad = 0

    def result(self, good, desc, details=()):
        self.n += 1
        if not good:
            self.bad += 1
        print("%s - %s" % ("ok" if good else "not ok", desc.replace("\n", " ")))
        for d in details:
            for line in str(d).splitlines():
                print("# " + line)
        sys.stdout.flush()


TAP = Tap()


class CheckFailed(Exception):
    pass


class Skip(Exception):
    pass


def require(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def run_check(desc, fn, *args):
    """Run fn(*args) -> (note, details); one TAP line. A note is appended to desc."""
    try:
        note, details = fn(*args)
        TAP.result(True, desc + (": " + note if note else ""), details)
    except CheckFailed as e:
        TAP.result(False, desc, [str(e)])
    except Skip as e:
        TAP.result(True, desc + " # SKIP " + str(e))
    except Exception:  # noqa: BLE001 - a crash in a check is a failed check, shown
        TAP.result(False, desc, ["exception in volume_check.py:"] + traceback.format_exc().splitlines())


def fmt(v, p=4):
    return "[" + ", ".join(("%." + str(p) + "f") % x for x in np.ravel(v)) + "]"


# ----------------------------------------------------------------------------- mmsegd's side
def load_json(path):
    with open(path, "rb") as f:
        raw = f.read()
    if not raw.strip():
        err = os.path.splitext(path)[0] + ".err"
        msg = ""
        if os.path.isfile(err):
            with open(err, errors="replace") as f:
                msg = "; its stderr: " + f.read().strip()[:1500]
        raise CheckFailed("%s: mmsegd wrote nothing on stdout%s" % (path, msg))
    try:
        return json.loads(raw)
    except ValueError as e:
        raise CheckFailed("%s: not one JSON object (%s); it starts with %r" % (path, e, raw[:200]))


def norm(p):
    return os.path.realpath(p)


def under(path, prefix):
    path, prefix = norm(path), norm(prefix)
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def find_series(js, prefix):
    """The one series of the JSON whose first file lies under prefix (a folder or a file)."""
    sel = [s for s in js.get("series", []) if under(s.get("first", ""), prefix)]
    require(len(sel) == 1, "%d series of the JSON start under %s (series firsts: %s)" % (
        len(sel), prefix, [s.get("first") for s in js.get("series", [])]))
    return sel[0]


def volume_of(series):
    if "volume" not in series:
        raise CheckFailed("mmsegd built no volume for the series of %s: error %r, left out %r" % (
            series.get("first"), series.get("error"), series.get("left_out")))
    return series["volume"]


def load_ours(series):
    """(volume JSON, nibabel image) of a series built with --nifti."""
    vol = volume_of(series)
    require("nifti" in vol, "the volume has no \"nifti\" (was --nifti given?)")
    require(os.path.isfile(vol["nifti"]), "the NIfTI %s does not exist" % vol["nifti"])
    return vol, nib.load(vol["nifti"])


# ----------------------------------------------------------------------------- DICOM side (pydicom)
def _fg(ds, frame_index, seq, keyword):
    """A functional-group attribute: per-frame first, then shared."""
    for top in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        groups = ds.get(top)
        if not groups:
            continue
        item = groups[frame_index] if top.startswith("PerFrame") else groups[0]
        if seq in item and len(item[seq].value) and keyword in item[seq].value[0]:
            return item[seq].value[0][keyword].value
    return None


def dicom_frames(path, want_pixels=False):
    """[{frame, ipp, iop, ps, sop, slope, intercept, hu?}] of one CT file, read with pydicom.

    Classic images are one frame (frame 1). Enhanced / legacy-converted multi-frame images take
    each frame's position from its PlanePositionSequence (per-frame functional groups)."""
    ds = pydicom.dcmread(path, stop_before_pixels=not want_pixels)
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    enhanced = "PerFrameFunctionalGroupsSequence" in ds
    pix = None
    if want_pixels:
        pix = ds.pixel_array
        if nframes == 1:
            pix = pix[None]
    out = []
    for f in range(nframes):
        if enhanced:
            ipp = _fg(ds, f, "PlanePositionSequence", "ImagePositionPatient")
            iop = _fg(ds, f, "PlaneOrientationSequence", "ImageOrientationPatient")
            ps = _fg(ds, f, "PixelMeasuresSequence", "PixelSpacing")
            slope = _fg(ds, f, "PixelValueTransformationSequence", "RescaleSlope")
            inter = _fg(ds, f, "PixelValueTransformationSequence", "RescaleIntercept")
        else:
            ipp, iop, ps = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient"), ds.get("PixelSpacing")
            slope, inter = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
        slope = 1.0 if slope is None else float(slope)
        inter = 0.0 if inter is None else float(inter)
        pad = ds.get("PixelPaddingValue")
        if pad is not None and int(ds.get("PixelRepresentation", 0)) == 1 and pad > 32767:
            pad -= 65536  # the unsigned 16-bit image of a negative value
        fr = {"path": path, "frame": f + 1, "sop": str(ds.get("SOPInstanceUID", "")), "padding": pad,
              "ipp": np.array([float(x) for x in ipp]), "iop": np.array([float(x) for x in iop]),
              "ps": np.array([float(x) for x in ps]), "slope": slope, "intercept": inter,
              "rows": int(ds.Rows), "cols": int(ds.Columns), "ts": str(ds.file_meta.TransferSyntaxUID),
              "tilt": float(ds.get("GantryDetectorTilt", 0) or 0)}
        if pix is not None:
            fr["hu"] = pix[f].astype(np.float64) * slope + inter
            # mmsegd's rule (dicom/dicom.h, mms_frames_decode): stored == Pixel Padding Value -> -1024
            fr["pad_mask"] = (pix[f] == pad) if pad is not None else np.zeros(pix[f].shape, bool)
            fr["hu"][fr["pad_mask"]] = PADDING_HU
        out.append(fr)
    return out


def dicom_stack(paths, want_pixels=False):
    """Every frame of the CT image files among paths (folders walked), sorted along the normal."""
    files = []
    for p in paths:
        if os.path.isdir(p):
            for root, _, names in os.walk(p):
                files += [os.path.join(root, n) for n in names]
        else:
            files.append(p)
    frames = []
    for p in sorted(files):
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - not DICOM (README, DIRFILE read errors...)
            continue
        # SOPClassUID may be present but empty (TotalSegmentator): the meta header's then
        sop_class = str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", ""))
        if sop_class not in CT_CLASSES or "Rows" not in ds:
            continue
        if "LOCALIZER" in [str(x).upper() for x in ds.get("ImageType", [])]:
            continue
        frames += dicom_frames(p, want_pixels)
    require(frames, "pydicom found no CT image frame in %s" % paths)
    iop = frames[0]["iop"]
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    for fr in frames:
        fr["pos"] = float(fr["ipp"] @ normal)
    frames.sort(key=lambda fr: fr["pos"])
    return frames, row, col, normal


def dicom_affine(frames, row, col):
    """The sheared and the rigid affine (RAS) that the interface specifies, from pydicom values."""
    ps = frames[0]["ps"]  # [between rows, between columns]
    n = len(frames)
    first, last = frames[0]["ipp"], frames[-1]["ipp"]
    step = (last - first) / (n - 1) if n > 1 else None
    pos = np.array([fr["pos"] for fr in frames])
    median = float(np.median(np.diff(pos))) if n > 1 else None
    normal = np.cross(row, col)
    sform = np.eye(4)
    sform[:3, 0] = row * ps[1]
    sform[:3, 1] = col * ps[0]
    if step is not None:
        sform[:3, 2] = step
    sform[:3, 3] = first
    qform = sform.copy()
    if median is not None:
        qform[:3, 2] = normal * median
    return LPS2RAS @ sform, LPS2RAS @ qform, median


DCMTK_DECODERS = {"1.2.840.10008.1.2.4.80": "dcmdjpls", "1.2.840.10008.1.2.4.81": "dcmdjpls",
                  "1.2.840.10008.1.2.5": "dcmdrle"}


def dcmtk_decoded(path, tmpdir):
    """path decompressed by DCMTK (dcmdjpeg, dcmdjpls, dcmdrle): a reference decoder that is not
    GDCM, for the syntaxes pydicom 2.3 cannot decode on its own (12-bit JPEG, JPEG-LS)."""
    import shutil
    import subprocess
    ts = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    tool = DCMTK_DECODERS.get(ts, "dcmdjpeg")
    if not shutil.which(tool):
        raise Skip("%s is not on PATH (the reference decoder for %s)" % (tool, ts))
    out = os.path.join(tmpdir, "dcmtk-" + os.path.basename(path))
    r = subprocess.run([tool, path, out], capture_output=True, text=True)
    require(r.returncode == 0 and os.path.isfile(out), "%s %s failed: %s" % (tool, path, r.stderr.strip()))
    return out


def expected_hu(frames):
    """[cols, rows, n] HU in the interface's voxel order (i = column, j = row)."""
    return np.stack([fr["hu"].T for fr in frames], axis=2)


# ----------------------------------------------------------------------------- grids
def axis_map(a_src, a_dst):
    """Signed axis permutation that takes src voxel axes onto dst voxel axes.

    Derived from the affines: M = inv(A_dst) A_src (dst index steps per src index step) is
    rounded to the nearest signed permutation; the entry kept must dominate its column
    (a sheared, uncorrected tilt affine still maps each axis onto one axis)."""
    m = np.linalg.inv(a_dst[:3, :3]) @ a_src[:3, :3]
    perm, sign = [0, 0, 0], [1, 1, 1]
    for a in range(3):
        c = np.abs(m[:, a])
        r = int(np.argmax(c))
        others = np.delete(c, r)
        require(c[r] > 0.5 and c[r] > 2 * others.max(),
                "the affines do not map src axis %d onto one dst axis: column %s" % (a, fmt(m[:, a])))
        perm[a], sign[a] = r, (1 if m[r, a] > 0 else -1)
    require(sorted(perm) == [0, 1, 2], "the affines map two axes onto one: %s" % perm)
    return perm, sign


def map_desc(perm, sign, shape_dst):
    names = "ijk"
    exprs = [""] * 3
    for a in range(3):
        r = perm[a]
        exprs[r] = names[a] if sign[a] > 0 else "%d-%s" % (shape_dst[r] - 1, names[a])
    return "(i,j,k) -> (%s)" % ",".join(exprs)


def apply_map(data, perm, sign, shape_dst):
    """src array -> dst orientation, corners aligned (a flipped axis runs from n-1 to 0)."""
    order = [perm.index(r) for r in range(3)]
    out = np.transpose(data, order)
    for r in range(3):
        if sign[order[r]] < 0:
            out = np.flip(out, axis=r)
    require(out.shape == tuple(shape_dst[:3]), "the grids differ in size after the mapping: ours %s -> %s, "
            "reference %s" % (data.shape, out.shape, tuple(shape_dst)))
    return out


def index_transform(perm, sign, shape_dst):
    """4x4 T with dst_index = T @ src_index (corner-aligned)."""
    t = np.zeros((4, 4))
    t[3, 3] = 1
    for a in range(3):
        r = perm[a]
        t[r, a] = sign[a]
        t[r, 3] = 0 if sign[a] > 0 else shape_dst[r] - 1
    return t


def corners(shape):
    return np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                     for k in (0, shape[2] - 1)]).T


def corner_distance(a_src, shape_src, a_dst, t):
    """Largest distance (mm) between where the two affines put the corner voxels of src."""
    c = corners(shape_src)
    return float(np.max(np.linalg.norm((a_src @ c - a_dst @ (t @ c))[:3], axis=0)))


def angle_deg(u, v):
    u, v = np.asarray(u, float), np.asarray(v, float)
    c = float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


def raw_header(path):
    """The NIfTI header as stored (nib.load resets scl_slope/scl_inter to nan in img.header)."""
    import gzip
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        return nib.Nifti1Header.from_fileobj(f)


def data_of(img):
    return np.asarray(img.get_fdata(dtype=np.float64))


def diff_summary(ours, ref):
    d = np.abs(ours - ref)
    n = int(np.count_nonzero(d))
    msg = "max |ours - ref| %g HU, %d of %d voxels differ" % (d.max(), n, d.size)
    if n:
        idx = np.unravel_index(int(np.argmax(d)), d.shape)
        msg += "; worst at ref voxel %s: ours %g, ref %g" % (tuple(int(x) for x in idx), ours[idx], ref[idx])
    return float(d.max()), msg


# ----------------------------------------------------------------------------- checks
def padding_mask(paths):
    """[cols, rows, n] mask of the Pixel Padding Value pixels (pydicom), or None without one."""
    frames, _, _, _ = dicom_stack(paths)
    if all(fr["padding"] is None for fr in frames):
        return None, None
    frames, _, _, _ = dicom_stack(paths, want_pixels=True)
    return np.stack([fr["pad_mask"].T for fr in frames], axis=2), frames[0]["padding"]


def c_voxels(js, prefix, ref_path, dicom_paths):
    vol, img = load_ours(find_series(js, prefix))
    ref = nib.load(ref_path)
    perm, sign = axis_map(img.affine, ref.affine)
    mapped = apply_map(data_of(img), perm, sign, ref.shape)
    want = data_of(ref)
    note = ""
    # dcm2niix keeps Pixel Padding Value pixels as they are; mmsegd makes them -1024 HU
    mask, pad = padding_mask(dicom_paths)
    if mask is not None:
        mask = apply_map(mask, perm, sign, ref.shape)
        want[mask] = PADDING_HU
        note = " (its %d Pixel Padding Value %s voxels taken as %g)" % (int(mask.sum()), pad, PADDING_HU)
    dmax, msg = diff_summary(mapped, want)
    require(dmax == 0, msg + note)
    return "identical, ours %s = dcm2niix %s%s" % (map_desc(perm, sign, ref.shape), os.path.basename(ref_path), note), []


def c_affine_equal(js, prefix, ref_path, tol, expect_map):
    vol, img = load_ours(find_series(js, prefix))
    ref = nib.load(ref_path)
    perm, sign = axis_map(img.affine, ref.affine)
    desc = map_desc(perm, sign, ref.shape)
    if expect_map:
        require(desc == expect_map, "the affines map ours %s, the reference says %s" % (desc, expect_map))
    shape = tuple(img.shape[a] for a in [perm.index(r) for r in range(3)])
    require(shape == tuple(ref.shape[:3]), "grid sizes: ours %s (%s in the reference's axis order), reference %s"
            % (img.shape, shape, ref.shape))
    t = index_transform(perm, sign, ref.shape)
    ds = corner_distance(img.get_sform(), img.shape, ref.affine, t)
    require(ds <= tol, "sform: a corner voxel is %.6f mm away from the reference's (tolerance %g)\n"
            "ours:\n%s\nreference (%s):\n%s" % (ds, tol, img.get_sform(), ref_path, ref.affine))
    notes = "ours %s, corners within %.1e mm (sform)" % (desc, ds)
    if int(ref.header["qform_code"]) > 0 and int(img.header["qform_code"]) > 0:
        dq = corner_distance(img.get_qform(), img.shape, ref.get_qform(), t)
        require(dq <= tol, "qform: a corner voxel is %.6f mm away from the reference's (tolerance %g)" % (dq, tol))
        notes += ", %.1e mm (qform)" % dq
    return notes, []


def c_geometry(js, prefix, paths, expect_tilt, expect_irregular):
    """Per-slice IPP, order, frames, dims, spacing, steps and tilt against pydicom."""
    series = find_series(js, prefix)
    vol = volume_of(series)
    frames, row, col, normal = dicom_stack(paths)
    slices = vol.get("slices", [])
    n = len(frames)
    require(len(slices) == n, "%d slices in the JSON, pydicom finds %d frames" % (len(slices), n))
    want = {(norm(fr["path"]), fr["frame"]): fr for fr in frames}
    for k, s in enumerate(slices):
        for key in ("ipp", "pos_mm", "path", "frame", "sop_instance"):
            require(key in s, "slice %d has no %r: %s" % (k, key, s))
    got_keys = [(norm(s["path"]), int(s["frame"])) for s in slices]
    require(sorted(got_keys) == sorted(want), "the slices are not the frames pydicom finds: extra %s, missing %s" % (
        sorted(set(got_keys) - set(want))[:5], sorted(set(want) - set(got_keys))[:5]))
    worst = 0.0
    for k, (s, key) in enumerate(zip(slices, got_keys)):
        fr = want[key]
        d = float(np.max(np.abs(np.array(s["ipp"], float) - fr["ipp"])))
        worst = max(worst, d)
        require(d <= 1e-4, "slice %d (%s frame %d): ipp %s, pydicom %s" % (k, key[0], key[1], s["ipp"], fmt(fr["ipp"], 6)))
        require(abs(float(s["pos_mm"]) - fr["pos"]) <= 1e-4, "slice %d: pos_mm %s, ipp.normal %.6f" % (k, s["pos_mm"], fr["pos"]))
        if fr["sop"]:
            require(s.get("sop_instance") == fr["sop"], "slice %d: sop_instance %r, file %r" % (k, s.get("sop_instance"), fr["sop"]))
    # ascending along the normal (pydicom's order), the same order as ours
    require(got_keys == [(norm(fr["path"]), fr["frame"]) for fr in frames],
            "the slices are not in ascending ipp.normal order: ours %s, expected %s" % (
                [(os.path.basename(p), f) for p, f in got_keys][:6],
                [(os.path.basename(fr["path"]), fr["frame"]) for fr in frames][:6]))
    require(list(vol["dims"]) == [frames[0]["cols"], frames[0]["rows"], n],
            "dims %s, DICOM Columns/Rows/frames %s" % (vol["dims"], [frames[0]["cols"], frames[0]["rows"], n]))
    ps = frames[0]["ps"]
    pos = np.array([fr["pos"] for fr in frames])
    steps = np.diff(pos)
    sp = vol["spacing"]
    require(abs(sp[0] - ps[1]) <= 1e-5 and abs(sp[1] - ps[0]) <= 1e-5,
            "spacing %s, PixelSpacing (rows, cols) %s" % (sp[:2], fmt(ps, 6)))
    syntaxes = sorted({fr["ts"] for fr in frames})
    require(sorted(vol.get("transfer_syntaxes", [])) == syntaxes,
            "transfer_syntaxes %s, the files' %s" % (vol.get("transfer_syntaxes"), syntaxes))
    require(series.get("modality") == "CT", "modality %r" % series.get("modality"))
    notes = "%d slices, ipp = pydicom's within %.0e mm, ascending along the normal" % (n, worst)
    if n > 1:
        st = vol["slice_step"]
        for key, val in (("median", np.median(steps)), ("min", steps.min()), ("max", steps.max())):
            require(abs(float(st[key]) - val) <= 1e-3, "slice_step %s %s, from the IPPs %.5f" % (key, st[key], val))
        require(abs(sp[2] - np.median(steps)) <= 1e-3, "spacing[2] %s, median step %.5f" % (sp[2], np.median(steps)))
        if expect_irregular is not None:
            require(bool(st["irregular"]) == expect_irregular, "slice_step irregular %s, expected %s (steps %.3f..%.3f)" % (
                st["irregular"], expect_irregular, steps.min(), steps.max()))
        notes += ", steps %.3f/%.3f/%.3f mm" % (np.median(steps), steps.min(), steps.max())
    for key, val in (("origin", frames[0]["ipp"]), ("normal", normal)):
        require(np.max(np.abs(np.array(vol[key], float) - val)) <= 1e-4, "%s %s, expected %s" % (key, vol[key], fmt(val, 6)))
    dirs = np.array(vol["direction"], float)
    require(np.max(np.abs(dirs[0] - row)) <= 1e-5 and np.max(np.abs(dirs[1] - col)) <= 1e-5,
            "direction rows %s, IOP %s" % (vol["direction"][:2], fmt(np.r_[row, col], 6)))
    if n > 1:
        sd = frames[-1]["ipp"] - frames[0]["ipp"]
        sd /= np.linalg.norm(sd)
        require(np.max(np.abs(dirs[2] - sd)) <= 1e-5, "direction[2] %s, first->last IPP %s" % (vol["direction"][2], fmt(sd, 6)))
        tilt = angle_deg(sd, normal)
        require(abs(float(vol["tilt_deg"]) - tilt) <= 0.01, "tilt_deg %s, angle(first->last, normal) %.3f" % (vol["tilt_deg"], tilt))
        if expect_tilt is not None:
            require(abs(tilt - expect_tilt) <= 0.05, "the geometry tilt is %.3f, GantryDetectorTilt says %.3f" % (tilt, expect_tilt))
        notes += ", tilt %.2f deg" % tilt
    return notes, []


def c_affine_dicom(js, prefix, paths):
    """Our sform (sheared) and qform (rigid) against the affines computed from pydicom."""
    vol, img = load_ours(find_series(js, prefix))
    frames, row, col, normal = dicom_stack(paths)
    s_exp, q_exp, median = dicom_affine(frames, row, col)
    hdr = img.header
    require(int(hdr["sform_code"]) == 1 and int(hdr["qform_code"]) == 1,
            "sform_code %d, qform_code %d (1 and 1 expected)" % (hdr["sform_code"], hdr["qform_code"]))
    s = img.get_sform()
    err = float(np.max(np.abs(s - s_exp)))
    require(err <= 1e-3, "sform differs from the DICOM one by %.6f:\nours\n%s\nexpected (3rd column "
            "(ipp_last-ipp_first)/(n-1))\n%s" % (err, s, s_exp))
    q = img.get_qform()
    errq = float(np.max(np.abs(q - q_exp)))
    require(errq <= 1e-3, "qform differs from the rigid (row, col, normal*median) one by %.6f:\nours\n%s\n"
            "expected\n%s" % (errq, q, q_exp))
    require(abs(float(hdr["pixdim"][3]) - median) <= 1e-4, "pixdim3 %s, median step %.5f" % (hdr["pixdim"][3], median))
    shear = angle_deg(s[:3, 2], q[:3, 2])
    return "sform = DICOM within %.1e mm, its 3rd column %.2f deg from the qform's (the normal)" % (err, shear), []


def c_dcm2niix_tilt(js, prefix, uncorrected, corrected, expect_tilt):
    """Measure what dcm2niix does with a tilted series, against ours; fails if ours is not sheared."""
    vol, img = load_ours(find_series(js, prefix))
    unc, cor = nib.load(uncorrected), nib.load(corrected)
    ours_s3 = img.get_sform()[:3, 2]
    ours_q3 = img.get_qform()[:3, 2]
    # dcm2niix's tilt-corrected file is resampled onto a rigid grid whose 3rd axis is the normal
    d_q3 = cor.get_qform()[:3, 2]
    a_sheared = angle_deg(ours_s3, d_q3)
    a_normal = angle_deg(ours_q3, d_q3)
    require(abs(a_sheared - expect_tilt) <= 0.05,
            "angle between our sform's 3rd column %s and dcm2niix's corrected 3rd axis %s is %.3f deg, "
            "the tilt is %.2f" % (fmt(ours_s3), fmt(d_q3), a_sheared, expect_tilt))
    require(a_normal <= 0.05, "our qform's 3rd axis is %.3f deg from dcm2niix's corrected one (both should be "
            "the normal)" % a_normal)
    # where dcm2niix's uncorrected (unresampled) affine puts the voxels we also hold
    perm, sign = axis_map(img.affine, unc.affine)
    t = index_transform(perm, sign, unc.shape)
    mis = corner_distance(img.get_sform(), img.shape, unc.affine, t)
    return ("dcm2niix resamples to %s (ours %s, its 3rd axis = the normal, %.2f deg from our sheared "
            "3rd column); its uncorrected file keeps our voxels but its sform misplaces a corner by %.1f mm"
            % ("x".join(map(str, cor.shape[:3])), "x".join(map(str, img.shape[:3])), a_sheared, mis)), []


def c_labels(js, prefix, seg_path, expect):
    """Mean HU per label of the TotalSegmentator map with the mapping of SOURCE.md."""
    vol, img = load_ours(find_series(js, prefix))
    ct = data_of(img)
    seg = np.asarray(nib.load(seg_path).dataobj)
    require(ct.shape == seg.shape, "our volume %s, the label map %s" % (ct.shape, seg.shape))
    # label voxel (i, j, k) = DICOM column i, row (rows-1-j), slice k from the lowest z
    rows = ct.shape[1]
    ct_in_seg = ct[:, ::-1, :]
    require(rows == 512, "rows %d" % rows)
    got, bad = [], []
    for name, lab, hu in expect:
        m = seg == lab
        require(m.any(), "label %d (%s) is not in the map" % (lab, name))
        mean = float(ct_in_seg[m].mean())
        got.append("%s %.1f" % (name, mean))
        if abs(mean - hu) > 1.0:
            bad.append("%s (label %d): mean %.2f HU, SOURCE.md %g" % (name, lab, mean, hu))
    require(not bad, "; ".join(bad))
    return ", ".join(got), []


def c_values(js, prefix, refs, tol):
    """Our NIfTI voxels against pydicom's decoding of refs (frames stacked along the normal)."""
    vol, img = load_ours(find_series(js, prefix))
    frames, row, col, normal = dicom_stack(refs, want_pixels=True)
    exp = expected_hu(frames)
    ours = data_of(img)
    require(ours.shape[:3] == exp.shape, "ours %s, %s %s" % (ours.shape, "/".join(map(os.path.basename, refs)), exp.shape))
    dmax, msg = diff_summary(ours.reshape(exp.shape), exp)
    require(dmax <= tol, msg + " (tolerance %g)" % tol)
    return ("identical" if dmax == 0 else "max |diff| %.3g HU (tolerance %g)" % (dmax, tol)), []


def c_nifti_files(runs):
    """Every volume of every run: the NIfTI exists where the JSON says, is named after the
    SeriesInstanceUID (series-NNN when empty), loads, codes 1, dims, dtype, slope, hu_range."""
    seen, unread = 0, []
    for jpath, outdir in runs:
        try:
            js = load_json(jpath)
        except CheckFailed:  # reported by the run's own check
            unread.append(os.path.relpath(jpath, os.path.dirname(os.path.dirname(jpath))))
            continue
        for idx, s in enumerate(js.get("series", []), 1):
            if "volume" not in s:
                continue
            vol = s["volume"]
            where = "%s series %d (%s)" % (os.path.basename(jpath), idx, s.get("first"))
            require("nifti" in vol, where + ": no \"nifti\" with --nifti")
            uid = s.get("series_uid", "")
            name = (uid if uid else "series-%03d" % idx) + ".nii.gz"
            require(norm(vol["nifti"]) == norm(os.path.join(outdir, name)),
                    "%s: nifti %s, expected %s/%s" % (where, vol["nifti"], outdir, name))
            require(os.path.isfile(vol["nifti"]), "%s: %s does not exist" % (where, vol["nifti"]))
            with open(vol["nifti"], "rb") as f:
                require(f.read(2) == b"\x1f\x8b", "%s: %s is not gzip" % (where, vol["nifti"]))
            img = nib.load(vol["nifti"])
            h = raw_header(vol["nifti"])  # nibabel's img.header has scl_* reset to nan
            require(h["sizeof_hdr"] == 348 and h["magic"] == b"n+1" and h["vox_offset"] >= 352,
                    "%s: not a single-file NIfTI-1 (sizeof_hdr %s, magic %r, vox_offset %s)" % (
                        where, h["sizeof_hdr"], h["magic"], h["vox_offset"]))
            require(int(h["sform_code"]) == 1 and int(h["qform_code"]) == 1,
                    "%s: sform_code %d qform_code %d" % (where, h["sform_code"], h["qform_code"]))
            require(list(img.shape) == list(vol["dims"]), "%s: shape %s, dims %s" % (where, img.shape, vol["dims"]))
            slope, inter = float(h["scl_slope"]), float(h["scl_inter"])
            require(slope == 1 and inter == 0, "%s: scl_slope %s scl_inter %s (1 and 0: values are HU)" % (where, slope, inter))
            dt = h.get_data_dtype()
            raw = np.asarray(img.dataobj)
            if dt == np.int16:
                pass
            else:
                require(dt == np.float32, "%s: data type %s (int16 or float32)" % (where, dt))
                whole = np.all(raw == np.round(raw)) and raw.min() >= -32768 and raw.max() <= 32767
                require(not whole, "%s: float32 although every HU is a whole number in int16 range" % where)
            lo, hi = float(raw.min()), float(raw.max())
            hr = vol["hu_range"]
            require(abs(hr[0] - lo) <= 1e-3 * max(1, abs(lo)) and abs(hr[1] - hi) <= 1e-3 * max(1, abs(hi)),
                    "%s: hu_range %s, the NIfTI holds %g..%g" % (where, hr, lo, hi))
            seen += 1
    require(seen, "no volume in any run")
    return "%d NIfTI files%s" % (seen, "; no JSON from %s" % ", ".join(unread) if unread else ""), []


# ----------------------------------------------------------------------------- subcommands
def cmd_deps(_a):
    if MISSING:
        print("python modules missing: " + ", ".join(MISSING))
        return 1
    return 0


def cmd_json_ok(a):
    """The run's JSON parses, its counts add up and the named prefixes each have a volume."""
    def fn():
        js = load_json(a.json)
        for key in ("files", "dicom", "ignored", "not_read", "series"):
            require(key in js, "no %r in the JSON" % key)
        require(sum(int(s["files"]) for s in js["series"]) <= js["dicom"] <= js["files"],
                "files %s, dicom %s, series files %s" % (js["files"], js["dicom"], [s["files"] for s in js["series"]]))
        for p in a.volume:
            volume_of(find_series(js, p))
        return "%d files, %d series" % (js["files"], len(js["series"])), []
    run_check(a.desc, fn)


def cmd_dcm2niix(a):
    """Voxels identical to dcm2niix, and (with --affine-tol) affines equal after the mapping."""
    js = load_json(a.json)
    run_check(a.desc + ": voxels identical to dcm2niix", c_voxels, js, a.series, a.ref, a.dicom or [a.series])
    if a.affine_tol is not None:
        run_check(a.desc + ": affine equals dcm2niix's within %g mm" % a.affine_tol,
                  c_affine_equal, js, a.series, a.ref, a.affine_tol, None)


def cmd_geometry(a):
    js = load_json(a.json)
    run_check(a.desc + ": slices, ipp, order, dims, steps against pydicom", c_geometry, js, a.series,
              a.dicom or [a.series], a.tilt, a.irregular)
    if a.affine:
        run_check(a.desc + ": sform (sheared) and qform (rigid) against the DICOM geometry", c_affine_dicom,
                  js, a.series, a.dicom or [a.series])


def cmd_tilt(a):
    js = load_json(a.json)
    run_check(a.desc, c_dcm2niix_tilt, js, a.series, a.uncorrected, a.corrected, a.tilt)


def cmd_totalseg(a):
    js = load_json(a.json)
    series = a.series
    def named():
        se = find_series(js, series)
        require(se.get("series_uid", None) == "", "series_uid %r" % se.get("series_uid"))
        nifti = volume_of(se).get("nifti", "")
        require(os.path.basename(nifti) == "series-001.nii.gz", "nifti %r" % nifti)
        return "", []
    run_check("TotalSegmentator: empty SeriesInstanceUID, NIfTI named series-001.nii.gz", named)
    run_check("TotalSegmentator: our grid = the label map's grid (SOURCE.md mapping, corners within 1e-3 mm)",
              c_affine_equal, js, series, a.seg, 1e-3, "(i,j,k) -> (i,511-j,k)")
    expect = [("spleen", 1, 80), ("liver", 5, 89), ("aorta", 52, 177), ("IVC", 63, 90), ("T12", 32, 267),
              ("spinal cord", 79, 18)]
    run_check("TotalSegmentator: mean HU per label as in SOURCE.md within 1 HU", c_labels, js, series, a.seg, expect)


def cmd_multiframe(a):
    """Enhanced / legacy-converted CT files, one mmsegd run each: OUTDIR/<n>.json for the n-th."""
    for n, spec in enumerate(a.files, 1):
        path, ref, tol = (spec.split("|") + ["", ""])[:3]
        ref = ref or path
        tol = float(tol or 0)
        label = os.path.relpath(path, a.base) if a.base else path
        jpath = os.path.join(a.outdir, "%d.json" % n)

        def fn(path=path, ref=ref, tol=tol, jpath=jpath):
            js = load_json(jpath)
            note, _ = c_geometry(js, path, [path], None, None)
            if ref == "dcmtk":
                ref = dcmtk_decoded(path, a.outdir)
            refs = sorted(glob.glob(os.path.join(ref, "*"))) if os.path.isdir(ref) else [ref]
            vnote, _ = c_values(js, path, refs, tol)
            return "%s; values %s vs pydicom(%s)" % (note, vnote, os.path.basename(ref.rstrip("/"))), []
        run_check("multi-frame %s: frame ipp = PlanePositionSequence, dims, values" % label, fn)


def cmd_tsyntax(a):
    """One-slice volumes of the same image in several transfer syntaxes against pydicom(ref)."""
    for n, spec in enumerate(a.files, 1):
        path, tol, why = (spec.split("|") + ["0", ""])[:3]
        tol = float(tol or 0)
        jpath = os.path.join(a.outdir, "%d.json" % n)
        name = os.path.basename(path)
        if name.startswith("CTImage.dcm_"):
            syntax, uid = name[len("CTImage.dcm_"):-len(".dcm")].rsplit("_", 1)
            name = "%s (%s)" % (syntax.replace("TransferSyntax", ""), uid)
        desc = "transfer syntax %s: %s" % (name, "exact" if tol == 0 else
                                           "within %g HU (%s)" % (tol, why))

        def fn(path=path, tol=tol, jpath=jpath):
            js = load_json(jpath)
            require(js.get("series"), "no series; not_read %s, ignored %s" % (js.get("not_read"), js.get("ignored")))
            return c_values(js, path, [a.ref], tol)
        run_check(desc, fn)


def cmd_niftis(a):
    runs = []
    for spec in a.runs:
        j, d = spec.split("|", 1)
        runs.append((j, d))
    run_check(a.desc, c_nifti_files, runs)


def main(argv):
    p = argparse.ArgumentParser(prog="volume_check.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("deps")
    s = sub.add_parser("json-ok")
    s.add_argument("--json", required=True)
    s.add_argument("--desc", required=True)
    s.add_argument("--volume", action="append", default=[], help="a series under this path must have a volume")
    s = sub.add_parser("dcm2niix")
    s.add_argument("--json", required=True)
    s.add_argument("--series", required=True, help="the series whose first file lies under this path")
    s.add_argument("--ref", required=True, help="dcm2niix's NIfTI")
    s.add_argument("--affine-tol", type=float)
    s.add_argument("--dicom", action="append", help="the series' files (default: --series)")
    s.add_argument("--desc", required=True)
    s = sub.add_parser("geometry")
    s.add_argument("--json", required=True)
    s.add_argument("--series", required=True)
    s.add_argument("--dicom", action="append", help="the series' files (default: --series)")
    s.add_argument("--tilt", type=float, help="expected tilt (deg) of the geometry")
    s.add_argument("--irregular", type=lambda v: v == "yes", help="yes/no: expected slice_step.irregular")
    s.add_argument("--affine", action="store_true", help="also check the NIfTI sform/qform")
    s.add_argument("--desc", required=True)
    s = sub.add_parser("tilt")
    s.add_argument("--json", required=True)
    s.add_argument("--series", required=True)
    s.add_argument("--uncorrected", required=True)
    s.add_argument("--corrected", required=True)
    s.add_argument("--tilt", type=float, required=True)
    s.add_argument("--desc", required=True)
    s = sub.add_parser("totalseg")
    s.add_argument("--json", required=True)
    s.add_argument("--series", required=True)
    s.add_argument("--seg", required=True)
    s = sub.add_parser("multiframe")
    s.add_argument("--outdir", required=True)
    s.add_argument("--base")
    s.add_argument("files", nargs="+", help="FILE[|REFERENCE[|TOLERANCE]]")
    s = sub.add_parser("tsyntax")
    s.add_argument("--outdir", required=True)
    s.add_argument("--ref", required=True)
    s.add_argument("files", nargs="+", help="FILE[|TOLERANCE|WHY]")
    s = sub.add_parser("niftis")
    s.add_argument("--desc", required=True)
    s.add_argument("runs", nargs="+", help="JSON|NIFTI_DIR")
    a = p.parse_args(argv)
    if a.cmd == "deps":
        return cmd_deps(a)
    if MISSING:
        print("not ok - python modules missing: " + ", ".join(MISSING))
        return 1
    np.set_printoptions(precision=5, suppress=True)
    {"json-ok": cmd_json_ok, "dcm2niix": cmd_dcm2niix, "geometry": cmd_geometry, "tilt": cmd_tilt,
     "totalseg": cmd_totalseg, "multiframe": cmd_multiframe, "tsyntax": cmd_tsyntax, "niftis": cmd_niftis}[a.cmd](a)
    return 1 if TAP.bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
