"""The phantom of phantom.py as DICOM series on sheared or irregular grids, with the truth.

Each variant samples the same analytic anatomy (one seed) at the true patient position of every
pixel, so its label map is known on its own voxel grid:

    regular    axial slices at a constant step.
    tilt       gantry tilt as GE writes it (dcm_qa_ct In/GE): ImageOrientationPatient's column
               direction turned about x to [0, cos t, sin t], ImagePositionPatient stepping
               along z only; the stack is sheared and the step along the normal is sz cos t.
    shear      axial ImageOrientationPatient, ImagePositionPatient shifted in y by z tan t
               from slice to slice (a sheared stack whose planes are axial).
    irregular  axial slices whose steps vary (for sz = 3: 2 mm in the lower third,
               alternating 2 and 3.5 mm in the middle third, 3.5 mm with two 4.5 mm steps in
               the upper third; the median is 3.5 mm and every step stays below 1.9 times it,
               inside design.md's max_gap_ratio 2.0). Slice k lies up to 17 mm from where even
               spacing would put it. The files are written from the top down (CT0001 is the
               most superior slice), so a reader must sort them by position.

How a variant is sampled. phantom.make_phantom() paints on a regular _Grid; here the same
steps run on a grid of arbitrary points (_PointGrid): the same random draws in the same order
(pose, body, organs, background, noise), the background and organs of phantom.py evaluated at
each pixel's patient position, the label decided at the pixel centre (f < 0, later organs
win), then the blur and the noise of phantom.py in index space. On the regular grid this
reproduces make_phantom() (the organ boxes differ by a voxel, so HU may differ in rounding).

The truth (truth.nii.gz) is uint8 in the layout `mmsegd inspect --nifti` writes for the CT:
voxel (i, j, k) = (column, row, slice), slices ascending along the slice normal, sform = the
sheared RAS affine (columns: row direction x column spacing, column direction x row spacing,
(ipp_last - ipp_first) / (n - 1)), qform = its rigid part.

Usage:
    python3 tools/mmunet/phantom_series.py write --seed 1000 --out DIR \\
        [--variants regular,tilt,shear,irregular] [--shape 60 128 128] [--spacing 3 3 3] \\
        [--tilt 17] [--hu]
        -> DIR/<variant>/dicom/CT*.dcm, DIR/<variant>/truth.nii.gz (and hu.nii.gz with --hu),
           DIR/series.json (series UIDs, paths relative to DIR, geometry of every variant)
    python3 tools/mmunet/phantom_series.py score --manifest DIR/series.json --variant V \\
        --pred LABELS.nii.gz [--controls]
        -> JSON: Dice per organ of the prediction against the truth; with --controls also the
           Dice of the prediction and of the truth displaced as a pipeline would displace
           them if it mishandled the variant's geometry (see score()).
"""

import argparse
import json
import math
import os
import sys

import numpy as np
from scipy import ndimage

try:                                    # imported as part of the mmunet package
    from . import phantom
except ImportError:                     # run as a script or imported from tools/mmunet
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import phantom

VARIANTS = ("regular", "tilt", "shear", "irregular")
NAMES = phantom.DEMO_LABEL_NAMES


# ---------------------------------------------------------------------------------------------
# Geometry of a variant


class Geometry:
    """Voxel grid of a series: ipp (n, 3) per slice in ascending order along the normal, LPS
    unit vectors u_c (ImageOrientationPatient[0:3], along which the column index grows) and
    u_r ([3:6]), spacings sx (between columns) and sy (between rows), and the pixel counts."""

    def __init__(self, ipp, u_c, u_r, sx, sy, rows, cols):
        self.ipp = np.asarray(ipp, dtype=np.float64)
        self.u_c = np.asarray(u_c, dtype=np.float64)
        self.u_r = np.asarray(u_r, dtype=np.float64)
        self.sx, self.sy = float(sx), float(sy)
        self.rows, self.cols = int(rows), int(cols)
        self.normal = np.cross(self.u_c, self.u_r)
        self.pos = self.ipp @ self.normal
        if np.any(np.diff(self.pos) <= 0):
            raise ValueError("slices must ascend along the normal")

    @property
    def shape(self):
        return (len(self.ipp), self.rows, self.cols)

    def points(self):
        """LPS position (mm) of every pixel centre: x, y, z arrays shaped (D, H, W)."""
        r = np.arange(self.rows, dtype=np.float64)[None, :, None] * self.sy
        c = np.arange(self.cols, dtype=np.float64)[None, None, :] * self.sx
        out = []
        for a in range(3):
            p0 = self.ipp[:, a][:, None, None]
            out.append(p0 + r * self.u_r[a] + c * self.u_c[a])
        return out

    def affine(self):
        """Sheared RAS affine of the (column, row, slice) array, as mmsegd's NIfTI writer."""
        n = len(self.ipp)
        step = ((self.ipp[-1] - self.ipp[0]) / (n - 1) if n > 1
                else self.normal * self.sy)
        flip = np.array([-1.0, -1.0, 1.0])
        a = np.eye(4)
        a[:3, 0] = flip * self.u_c * self.sx
        a[:3, 1] = flip * self.u_r * self.sy
        a[:3, 2] = flip * step
        a[:3, 3] = flip * self.ipp[0]
        return a

    def rigid_affine(self):
        """Rigid part (row, column and normal directions) with the pixel and median slice step."""
        flip = np.array([-1.0, -1.0, 1.0])
        dz = float(np.median(np.diff(self.pos))) if len(self.pos) > 1 else self.sy
        a = np.eye(4)
        a[:3, 0] = flip * self.u_c * self.sx
        a[:3, 1] = flip * self.u_r * self.sy
        a[:3, 2] = flip * self.normal * dz
        a[:3, 3] = flip * self.ipp[0]
        return a

    def in_plane_offset(self):
        """Per slice, how far (pixels: rows, columns) its IPP lies off the line through the
        middle slice's IPP along the normal: the shear a tilt-blind pipeline ignores."""
        mid = len(self.ipp) // 2
        d = self.ipp - self.ipp[mid]
        return d @ self.u_r / self.sy, d @ self.u_c / self.sx

    def to_json(self):
        return {"ipp": self.ipp.round(6).tolist(), "u_c": self.u_c.tolist(),
                "u_r": self.u_r.tolist(), "sx": self.sx, "sy": self.sy, "rows": self.rows,
                "cols": self.cols}

    @classmethod
    def from_json(cls, d):
        return cls(d["ipp"], d["u_c"], d["u_r"], d["sx"], d["sy"], d["rows"], d["cols"])


def irregular_steps(n, sz):
    """n - 1 slice steps (mm) around sz: 2/3 sz in the lower third, alternating 2/3 and 7/6 sz
    in the middle third, 7/6 sz in the upper third with two steps of 3/2 sz."""
    m = n - 1
    a, b = m // 3, m - 2 * (m // 3)
    lo, hi, gap = sz * 2.0 / 3.0, sz * 7.0 / 6.0, sz * 1.5
    steps = [lo] * a + [lo if i % 2 == 0 else hi for i in range(a)] + [hi] * b
    for j in (m - b // 3, m - 2 * b // 3):
        if 2 * a <= j < m:
            steps[j] = gap
    steps = np.array(steps[:m], dtype=np.float64)
    if m and steps.max() >= 1.9 * np.median(steps):
        raise ValueError("irregular steps too far apart for max_gap_ratio")
    return steps


def variant_geometry(variant, shape, spacing, tilt_deg):
    """Geometry of a variant: (D, H, W) pixels at spacing (sz, sy, sx), centred on the LPS
    origin; tilt_deg for the tilt and shear variants."""
    d, h, w = shape
    sz, sy, sx = (float(s) for s in spacing)
    x0 = -(w - 1) * sx / 2.0
    t = math.radians(tilt_deg)
    if variant == "irregular":
        z = np.concatenate([[0.0], np.cumsum(irregular_steps(d, sz))])
    else:
        z = np.arange(d) * sz
    z = z - (z[0] + z[-1]) / 2.0
    u_c = (1.0, 0.0, 0.0)
    if variant == "tilt":
        # Rows in the tilted plane; the middle row of the middle slice at the origin.
        u_r = (0.0, math.cos(t), math.sin(t))
        half = (h - 1) * sy / 2.0
        ipp = [(x0, -half * u_r[1], zk - half * u_r[2]) for zk in z]
    elif variant == "shear":
        u_r = (0.0, 1.0, 0.0)
        y0 = -(h - 1) * sy / 2.0
        ipp = [(x0, y0 + zk * math.tan(t), zk) for zk in z]
    elif variant in ("regular", "irregular"):
        u_r = (0.0, 1.0, 0.0)
        y0 = -(h - 1) * sy / 2.0
        ipp = [(x0, y0, zk) for zk in z]
    else:
        raise ValueError("unknown variant %r" % variant)
    return Geometry(ipp, u_c, u_r, sx, sy, h, w)


# ---------------------------------------------------------------------------------------------
# The phantom at arbitrary points


class _PointGrid:
    """Stands in for phantom._Grid: the same pose, but canonical coordinates of given points.

    x, y, z are LPS positions (mm, (D, H, W) arrays) in the volume frame of phantom._Grid,
    whose origin is the centre of the volume. region() returns the index box of the points
    that lie within the canonical box widened by two edge widths, with their coordinates.
    """

    def __init__(self, x, y, z, spacing, scale, theta_deg, shift):
        self.shape = tuple(x.shape)
        self.spacing = tuple(float(s) for s in spacing)
        self.scale = float(scale)
        self.theta = math.radians(theta_deg)
        self.shift = np.asarray(shift, dtype=np.float64)
        self.h = float(np.mean(self.spacing)) / self.scale
        px, py, pz = x - self.shift[0], y - self.shift[1], z - self.shift[2]
        c, s = math.cos(self.theta), math.sin(self.theta)
        inv = 1.0 / self.scale
        self.qx = ((c * px + s * py) * inv).astype(np.float32)
        self.qy = ((-s * px + c * py) * inv).astype(np.float32)
        self.qz = (pz * inv).astype(np.float32)

    def full(self):
        return (slice(None),) * 3, self.qx, self.qy, self.qz

    def region(self, lo, hi):
        m = np.float32(2.0 * self.h)
        inside = np.ones(self.shape, dtype=bool)
        for q, a, b in ((self.qx, lo[0], hi[0]), (self.qy, lo[1], hi[1]),
                        (self.qz, lo[2], hi[2])):
            inside &= (q >= np.float32(a) - m) & (q <= np.float32(b) + m)
        if not inside.any():
            return None
        sl = []
        for axis in range(3):
            other = tuple(i for i in range(3) if i != axis)
            idx = np.flatnonzero(inside.any(axis=other))
            sl.append(slice(int(idx[0]), int(idx[-1]) + 1))
        sl = tuple(sl)
        return sl, self.qx[sl], self.qy[sl], self.qz[sl]


def make_phantom_at(seed, geom, spacing):
    """phantom.make_phantom(seed, ...) sampled on geom's pixels; returns (hu, lab) shaped
    geom.shape in geom's slice order. spacing (sz, sy, sx) sets the partial-volume edge width
    and the coarse grid of the bowel texture, as in phantom.py."""
    rng = np.random.default_rng(seed)
    x, y, z = geom.points()
    grid = _PointGrid(x, y, z, spacing, scale=rng.uniform(0.85, 1.15),
                      theta_deg=rng.uniform(-10, 10),
                      shift=(rng.normal(0, 8), rng.normal(0, 8), rng.normal(0, 10)))
    del x, y, z
    body = phantom._Body(rng)
    organs = phantom._Organs(rng)
    shape = grid.shape
    hu = np.full(shape, -1000.0, dtype=np.float32)
    lab = np.zeros(shape, dtype=np.uint8)
    phantom._paint_background(rng, grid, body, hu)
    ids = {name: i + 1 for i, name in enumerate(NAMES)}
    for name in phantom.PAINT_ORDER:
        lo, hi, ev = organs.spec(name)
        r = grid.region(lo, hi)
        if r is None:
            continue
        sl, qx, qy, qz = r
        f, value = ev(qx, qy, qz)
        f = np.maximum(f, body.cavity(qx, qy, qz))
        phantom._paint(hu, sl, f, value, grid.h)
        lab[sl][f < 0] = ids.get(name, 0)
    hu = ndimage.gaussian_filter(hu, 0.6, mode="nearest")
    noise = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 0.4)
    noise *= np.float32(rng.uniform(10.0, 20.0) / max(float(noise.std()), 1e-6))
    hu += noise
    return hu, lab


# ---------------------------------------------------------------------------------------------
# Output


def save_nifti(arr, path, geom):
    """A (D, H, W) array as NIfTI (W, H, D) with geom's sheared sform and rigid qform."""
    import nibabel as nib

    img = nib.Nifti1Image(np.ascontiguousarray(np.asarray(arr).transpose(2, 1, 0)),
                          geom.affine())
    img.header.set_xyzt_units("mm")
    img.set_sform(geom.affine(), code=1)
    img.set_qform(geom.rigid_affine(), code=1)
    nib.save(img, path)
    return path


def write_variant(seed, variant, out_dir, shape, spacing, tilt_deg, with_hu=False):
    """Write one variant's DICOM series and truth; returns its manifest entry."""
    import pydicom

    geom = variant_geometry(variant, shape, spacing, tilt_deg)
    hu, lab = make_phantom_at(seed, geom, spacing)
    os.makedirs(out_dir, exist_ok=True)
    dicom_dir = os.path.join(out_dir, "dicom")
    series_uid = phantom.phantom_uid(seed, "series", variant)
    study_uid = phantom.phantom_uid(seed, "study")
    sz, sy, sx = (float(s) for s in spacing)
    z = geom.ipp[:, 2]
    order = slice(None)
    if variant == "irregular":
        order = slice(None, None, -1)           # top slice first in the files
    paths = phantom.write_dicom_series(
        hu[order], None, dicom_dir, (sz, sy, sx),
        origin=(geom.ipp[0, 0], geom.ipp[0, 1], z[0]), series_uid=series_uid,
        study_uid=study_uid, tilt_deg=tilt_deg if variant == "tilt" else 0.0,
        positions=z[order], seed=seed)
    if variant == "shear":
        # write_dicom_series keeps IPP's y; put each slice's own y and the tilt in.
        for k, path in enumerate(paths):
            ds = pydicom.dcmread(path)
            ds.ImagePositionPatient = [phantom._ds(v) for v in geom.ipp[k]]
            ds.GantryDetectorTilt = phantom._ds(tilt_deg)
            ds.save_as(path, write_like_original=False)
    truth = save_nifti(lab, os.path.join(out_dir, "truth.nii.gz"), geom)
    # Paths relative to the folder of series.json, so that the output has the same bytes
    # wherever it is written.
    entry = {"series_uid": series_uid, "dicom": os.path.join(variant, "dicom"),
             "truth": os.path.join(variant, os.path.basename(truth)),
             "dims": [geom.cols, geom.rows, len(geom.ipp)],
             "tilt_deg": tilt_deg if variant in ("tilt", "shear") else 0.0,
             "steps_mm": np.diff(geom.pos).round(6).tolist(),
             "labels": {str(i + 1): int(n) for i, n in
                        enumerate(np.bincount(lab.ravel(), minlength=len(NAMES) + 1)[1:])},
             "geometry": geom.to_json()}
    if with_hu:
        vol = np.clip(np.rint(hu), -32768, 32767).astype(np.int16)
        save_nifti(vol, os.path.join(out_dir, "hu.nii.gz"), geom)
        entry["hu"] = os.path.join(variant, "hu.nii.gz")
    return entry


def write(seed, out, variants, shape, spacing, tilt_deg, with_hu=False):
    manifest = {"seed": seed, "shape": list(shape), "spacing": list(spacing),
                "tilt_deg": tilt_deg, "names": {str(i + 1): n for i, n in enumerate(NAMES)},
                "variants": {}}
    for v in variants:
        manifest["variants"][v] = write_variant(seed, v, os.path.join(out, v), shape, spacing,
                                                tilt_deg, with_hu)
    with open(os.path.join(out, "series.json"), "w") as fp:
        json.dump(manifest, fp, indent=1)
        fp.write("\n")
    return manifest


# ---------------------------------------------------------------------------------------------
# Scoring


def dice(a, b, ids):
    """Dice per label id of two label arrays; None where both are empty."""
    out = {}
    for i in ids:
        x, y = a == i, b == i
        s = int(x.sum()) + int(y.sum())
        out[i] = None if s == 0 else 2.0 * int(np.logical_and(x, y).sum()) / s
    return out


def shift_slices(lab, rows, cols):
    """Move slice k of a (D, H, W) label array by (rows[k], cols[k]) pixels (rounded), zeros
    coming in."""
    out = np.zeros_like(lab)
    h, w = lab.shape[1:]
    for k in range(lab.shape[0]):
        dr, dc = int(round(rows[k])), int(round(cols[k]))
        if abs(dr) >= h or abs(dc) >= w:
            continue
        src = lab[k, max(0, -dr):h - max(0, dr), max(0, -dc):w - max(0, dc)]
        out[k, max(0, dr):max(0, dr) + src.shape[0], max(0, dc):max(0, dc) + src.shape[1]] = src
    return out


def restack(lab, pos_from, pos_to):
    """Slice k of the result = the slice of lab whose position in pos_from is nearest to
    pos_to[k] (label placement by the wrong slice positions)."""
    pos_from = np.asarray(pos_from)
    idx = np.abs(pos_from[None, :] - np.asarray(pos_to)[:, None]).argmin(axis=1)
    return lab[idx]


def controls(geom, lab):
    """lab as a pipeline would place it with the geometry mishandled, by name.

    shear+ / shear-: each slice moved in-plane by +/- its IPP's offset from the middle slice's
    normal line (labels computed on an unsheared grid and not sheared back, or sheared the
    wrong way); only for stacks whose IPPs leave that line.
    uniform-back / uniform-forward: slices placed as if evenly spaced between the first and
    the last on the way back, or on the way in; only for irregular stacks.
    """
    out = {}
    rows, cols = geom.in_plane_offset()
    if max(np.abs(rows).max(), np.abs(cols).max()) >= 0.5:
        out["shear+"] = shift_slices(lab, rows, cols)
        out["shear-"] = shift_slices(lab, -rows, -cols)
    pos = geom.pos
    even = np.linspace(pos[0], pos[-1], len(pos))
    if np.abs(pos - even).max() >= 0.25 * np.median(np.diff(pos)):
        out["uniform-back"] = restack(lab, pos, even)
        out["uniform-forward"] = restack(lab, even, pos)
    return out


def _summary(d, names):
    vals = [v for v in d.values() if v is not None]
    return {"dice": {names[str(i)]: (None if v is None else round(v, 4)) for i, v in d.items()},
            "mean": round(float(np.mean(vals)), 4) if vals else None}


def score(manifest, variant, pred_path, with_controls=False, base="."):
    """Dice of a predicted label NIfTI against the variant's truth (both in the layout of
    mmsegd's NIfTI); the manifest's paths are relative to base, the folder of series.json.
    Also compares the prediction's shape and sform with the truth's."""
    import nibabel as nib

    entry = manifest["variants"][variant]
    names = manifest["names"]
    ids = [int(i) for i in names]
    t_img, p_img = nib.load(os.path.join(base, entry["truth"])), nib.load(pred_path)
    truth = np.asarray(t_img.dataobj).transpose(2, 1, 0)
    res = {"variant": variant, "pred": pred_path, "shape_ok": p_img.shape == t_img.shape,
           "pred_shape": list(p_img.shape), "truth_shape": list(t_img.shape)}
    if not res["shape_ok"]:
        return res
    pred = np.asarray(p_img.dataobj).astype(np.uint8).transpose(2, 1, 0)
    res["sform_max_diff_mm"] = round(float(np.abs(p_img.get_sform() - t_img.get_sform()).max()),
                                     6)
    res.update(_summary(dice(pred, truth, ids), names))
    res["truth_voxels"] = {names[str(i)]: int((truth == i).sum()) for i in ids}
    res["pred_voxels"] = {names[str(i)]: int((pred == i).sum()) for i in ids}
    if with_controls:
        geom = Geometry.from_json(entry["geometry"])
        res["controls"] = {}
        wrong_truth = controls(geom, truth)
        for name, wrong in controls(geom, pred).items():
            res["controls"][name] = {"pred": _summary(dice(wrong, truth, ids), names),
                                     "truth": _summary(dice(wrong_truth[name], truth, ids),
                                                       names)}
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="write the DICOM series, truth NIfTIs and series.json")
    w.add_argument("--seed", type=int, default=1000)
    w.add_argument("--out", required=True)
    w.add_argument("--variants", default=",".join(VARIANTS))
    w.add_argument("--shape", type=int, nargs=3, default=[60, 128, 128], metavar=("D", "H", "W"))
    w.add_argument("--spacing", type=float, nargs=3, default=[3.0, 3.0, 3.0],
                   metavar=("SZ", "SY", "SX"), help="mm")
    w.add_argument("--tilt", type=float, default=17.0, help="degrees (tilt and shear)")
    w.add_argument("--hu", action="store_true", help="also write each variant's hu.nii.gz")
    s = sub.add_parser("score", help="Dice of a prediction against a variant's truth (JSON)")
    s.add_argument("--manifest", required=True)
    s.add_argument("--variant", required=True)
    s.add_argument("--pred", required=True)
    s.add_argument("--controls", action="store_true")
    args = ap.parse_args(argv)

    if args.cmd == "write":
        variants = [v for v in args.variants.split(",") if v]
        bad = [v for v in variants if v not in VARIANTS]
        if bad:
            ap.error("unknown variant %s (known: %s)" % (", ".join(bad), ", ".join(VARIANTS)))
        m = write(args.seed, args.out, variants, tuple(args.shape), tuple(args.spacing),
                  args.tilt, args.hu)
        for v, e in m["variants"].items():
            print("%-10s %s  %dx%dx%d" % (v, e["series_uid"], *e["dims"]))
        return 0
    with open(args.manifest) as fp:
        manifest = json.load(fp)
    if args.variant not in manifest["variants"]:
        ap.error("no variant %s in %s" % (args.variant, args.manifest))
    json.dump(score(manifest, args.variant, args.pred, args.controls,
                    os.path.dirname(os.path.abspath(args.manifest))), sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
