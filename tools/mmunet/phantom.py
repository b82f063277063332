"""Synthetic abdominal CT phantom: volume, label map, DICOM series and NIfTI files.

The phantom is a contrast-enhanced (portal-venous) abdomen built from smooth analytic shapes:
an elliptical body with subcutaneous fat and a muscle wall, a vertebral column with posterior
elements, paraspinal and psoas muscles, lung bases and ribs, and the nine demo organs of
labels.DEMO_LABEL_NAMES as randomly deformed ellipsoids and tubes. Everything is drawn from one
numpy Generator, so a seed gives the same bytes every time.

Array convention (the one DICOM uses): an array has shape (D, H, W) = (slice, row, column) in
the patient (LPS) frame of an axial, unrotated series:
    axis 0, slice k:  z = z0 + k * sz, increasing z = superior (towards the head)
    axis 1, row r:    y = y0 + r * sy, increasing y = posterior (towards the back)
    axis 2, column c: x = x0 + c * sx, increasing x = patient LEFT
so the liver (patient right) sits at low column indices, the spleen at high ones, the belly at
low row indices and the spine at high ones. `spacing` is always (sz, sy, sx) in mm and `origin`
is (x0, y0, z0), the LPS position of voxel (0, 0, 0).

Geometry is described in a "canonical" patient frame (mm, same axes as LPS, origin near the
centre of the volume at the level of the upper lumbar spine). A random pose (scale, rotation
about z, shift) maps canonical to volume coordinates. Each shape is a field f that is
approximately the signed distance in canonical mm (negative inside). The label of a voxel is
decided at its centre (f < 0, the later shape in the painting order wins); its intensity is
blended with a partial-volume weight clip(0.5 - f / h, 0, 1), h being the voxel size, then the
whole volume is blurred (sigma 0.6 voxel) and noise is added.

Usage:
    python3 tools/mmunet/phantom.py --seed 3 --shape 64 128 128 --spacing 3 3 3 --out DIR \
        [--dicom] [--nifti]
"""

import argparse
import datetime
import json
import math
import os
import sys
import time
import uuid

import numpy as np
from scipy import ndimage

try:                                    # imported as part of the mmunet package
    from . import labels as _labels
except ImportError:                     # run as a script or imported from tools/mmunet
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import labels as _labels

DEMO_LABEL_NAMES = _labels.DEMO_LABEL_NAMES

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"

# Namespace of every UID the phantom writes: 2.25.<uuid5(namespace, seed/what)>.
_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "mmsegd:tools/mmunet/phantom")

# Organs in painting order: a later organ overwrites an earlier one, label and intensity alike,
# so small or enhancing structures (vessels, gallbladder, kidneys) are carved out of the liver.
PAINT_ORDER = ["liver", "stomach", "spleen", "pancreas", "kidney_right", "kidney_left",
               "gallbladder", "inferior_vena_cava", "aorta"]


# ---------------------------------------------------------------------------------------------
# Geometry helpers


def _rotation(rx=0.0, ry=0.0, rz=0.0):
    """Rotation matrix Rz @ Ry @ Rx for angles in degrees; its columns are the local axes."""
    ax, ay, az = (math.radians(a) for a in (rx, ry, rz))
    cx, sx, cy, sy, cz, sz = (math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay),
                              math.cos(az), math.sin(az))
    mx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    my = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    mz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return mz @ my @ mx


def _smin(a, b, k):
    """Smooth minimum (union of two fields) with blend width k mm."""
    h = np.clip((k - np.abs(a - b)) / k, 0.0, 1.0)
    return np.minimum(a, b) - h * h * (k * 0.25)


def _radial_basis(nx, ny, nz):
    """Low-order spherical-harmonic-like functions of a unit direction (degrees 1..3)."""
    return [nx, ny, nz,
            nx * ny, ny * nz, nx * nz, nx * nx - ny * ny, 3.0 * nz * nz - 1.0,
            nx * ny * nz, nx * (nx * nx - 3.0 * ny * ny), nz * (5.0 * nz * nz - 3.0)]


_BASIS_DEGREE = np.array([1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3], dtype=np.float64)


class _Blob:
    """Ellipsoid deformed by a smooth displacement field and a radial perturbation.

    centre (3,), radii (3,) and rot (3x3, columns = local axes) are in canonical mm. The
    displacement is a sum of a few sinusoidal modes with wavelengths of about the blob's size;
    the radial perturbation multiplies the unit radius by 1 + sum c_j B_j(direction).
    """

    def __init__(self, rng, centre, radii, rot=None, bump=0.07, warp=0.06, modes=3):
        self.centre = np.asarray(centre, dtype=np.float64)
        self.radii = np.asarray(radii, dtype=np.float64)
        self.rot = np.eye(3) if rot is None else np.asarray(rot, dtype=np.float64)
        mean_r = float(self.radii.mean())
        self.coeffs = rng.normal(0.0, bump, size=_BASIS_DEGREE.size) / _BASIS_DEGREE
        self.modes = []
        for _ in range(modes):
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            wavelength = mean_r * rng.uniform(1.5, 3.0)
            k = direction * (2.0 * math.pi / wavelength)
            amp = rng.normal(0.0, warp * mean_r, size=3)
            self.modes.append((k, float(rng.uniform(0.0, 2.0 * math.pi)), amp))

    def bounds(self):
        """Canonical bounding box (lo, hi) that contains the deformed shape."""
        half = np.sqrt(((self.rot * self.radii[None, :]) ** 2).sum(axis=1))
        half = half * (1.0 + np.abs(self.coeffs).sum())
        half += sum(np.abs(amp) for _, _, amp in self.modes) + 2.0
        return self.centre - half, self.centre + half

    def field(self, qx, qy, qz):
        """Approximate signed distance (mm, negative inside) at canonical points."""
        ux = qx - np.float32(self.centre[0])
        uy = qy - np.float32(self.centre[1])
        uz = qz - np.float32(self.centre[2])
        for k, phase, amp in self.modes:
            s = np.sin(ux * np.float32(k[0]) + uy * np.float32(k[1]) + uz * np.float32(k[2])
                       + np.float32(phase))
            ux = ux + np.float32(amp[0]) * s
            uy = uy + np.float32(amp[1]) * s
            uz = uz + np.float32(amp[2]) * s
        r, m = self.radii, self.rot
        v = [(ux * np.float32(m[0, i]) + uy * np.float32(m[1, i]) + uz * np.float32(m[2, i]))
             * np.float32(1.0 / r[i]) for i in range(3)]
        rr = np.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]) + np.float32(1e-6)
        inv = 1.0 / rr
        n = [vi * inv for vi in v]
        rho = np.float32(1.0)
        for c, b in zip(self.coeffs, _radial_basis(*n)):
            rho = rho + np.float32(c) * b
        # |grad rr| of the undeformed ellipsoid turns the radial excess into millimetres.
        grad = np.sqrt((n[0] * np.float32(1.0 / r[0])) ** 2 + (n[1] * np.float32(1.0 / r[1])) ** 2
                       + (n[2] * np.float32(1.0 / r[2])) ** 2)
        return (rr - rho) / grad


class _Grid:
    """Voxel grid plus the random pose that maps canonical mm to volume mm.

    Volume mm are LPS offsets from the centre of the volume: p = scale * Rz(theta) q + shift.
    """

    def __init__(self, shape, spacing, scale, theta_deg, shift):
        self.shape = tuple(int(n) for n in shape)
        self.spacing = tuple(float(s) for s in spacing)
        self.scale = float(scale)
        self.theta = math.radians(theta_deg)
        self.shift = np.asarray(shift, dtype=np.float64)
        # Partial-volume edge width in canonical mm.
        self.h = float(np.mean(self.spacing)) / self.scale

    def region(self, lo, hi):
        """Voxel slices covering the canonical box [lo, hi] and canonical coordinates there.

        Returns (slices, qx, qy, qz) with qx, qy shaped (1, h, w) and qz shaped (d, 1, 1), or
        None when the box misses the volume.
        """
        c, s = math.cos(self.theta), math.sin(self.theta)
        corners = np.array([[x, y] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])])
        px = self.scale * (c * corners[:, 0] - s * corners[:, 1]) + self.shift[0]
        py = self.scale * (s * corners[:, 0] + c * corners[:, 1]) + self.shift[1]
        pz = self.scale * np.array([lo[2], hi[2]]) + self.shift[2]
        spans = []
        for p, n, sp in ((pz, self.shape[0], self.spacing[0]), (py, self.shape[1], self.spacing[1]),
                         (px, self.shape[2], self.spacing[2])):
            idx = p / sp + (n - 1) / 2.0
            a = max(int(math.floor(idx.min())), 0)
            b = min(int(math.ceil(idx.max())) + 1, n)
            if a >= b:
                return None
            spans.append((a, b))
        return self._coords(spans)

    def full(self):
        return self._coords([(0, n) for n in self.shape])

    def _coords(self, spans):
        (k0, k1), (r0, r1), (c0, c1) = spans
        d, h, w = self.shape
        sz, sy, sx = self.spacing
        pz = ((np.arange(k0, k1) - (d - 1) / 2.0) * sz - self.shift[2])
        py = ((np.arange(r0, r1) - (h - 1) / 2.0) * sy - self.shift[1])[:, None]
        px = ((np.arange(c0, c1) - (w - 1) / 2.0) * sx - self.shift[0])[None, :]
        c, s = math.cos(self.theta), math.sin(self.theta)
        inv = 1.0 / self.scale
        qx = ((c * px + s * py) * inv).astype(np.float32)[None]
        qy = ((-s * px + c * py) * inv).astype(np.float32)[None]
        qz = (pz * inv).astype(np.float32)[:, None, None]
        return (slice(k0, k1), slice(r0, r1), slice(c0, c1)), qx, qy, qz


def _occupancy(f, h):
    """Partial-volume weight of a voxel whose centre is at signed distance f (mm)."""
    return np.clip(np.float32(0.5) - f * np.float32(1.0 / h), 0.0, 1.0)


def _paint(hu, sl, f, value, h):
    """Blend `value` (scalar or array) into hu[sl] with the partial-volume weight of f."""
    view = hu[sl]
    view += _occupancy(f, h) * (value - view)


def _tube_field(qx, qy, qz, cx, cy, rx, ry):
    """Elliptic cylinder along z: centre (cx, cy) and radii (rx, ry) may vary with qz."""
    dx = (qx - cx) / rx
    dy = (qy - cy) / ry
    rr = np.sqrt(dx * dx + dy * dy) + np.float32(1e-6)
    grad = np.sqrt((dx / rx) ** 2 + (dy / ry) ** 2) / rr
    return (rr - 1.0) / grad


def _polyline_field(qx, qy, qz, points, radii):
    """Distance to a polyline with linearly varying radius, minus that radius (a smooth rod)."""
    best = None
    for i in range(len(points) - 1):
        a, b = points[i], points[i + 1]
        ab = b - a
        denom = float(ab @ ab)
        t = ((qx - a[0]) * ab[0] + (qy - a[1]) * ab[1] + (qz - a[2]) * ab[2]) / denom
        t = np.clip(t, 0.0, 1.0)
        dx = qx - (a[0] + t * ab[0])
        dy = qy - (a[1] + t * ab[1])
        dz = qz - (a[2] + t * ab[2])
        f = np.sqrt(dx * dx + dy * dy + dz * dz) - (radii[i] + t * (radii[i + 1] - radii[i]))
        best = f if best is None else np.minimum(best, f)
    return best


def _catmull_rom(ctrl, per_segment=4):
    """Points on a Catmull-Rom spline through the control points (ends included)."""
    ctrl = np.asarray(ctrl, dtype=np.float64)
    pad = np.vstack([2 * ctrl[0] - ctrl[1], ctrl, 2 * ctrl[-1] - ctrl[-2]])
    out = []
    for i in range(1, len(pad) - 2):
        p0, p1, p2, p3 = pad[i - 1], pad[i], pad[i + 1], pad[i + 2]
        for t in np.linspace(0.0, 1.0, per_segment, endpoint=False):
            out.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                              + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3))
    out.append(ctrl[-1])
    return np.array(out)


# ---------------------------------------------------------------------------------------------
# Anatomy


class _Body:
    """Elliptical trunk outline whose axes vary smoothly with z, plus its wall layers."""

    def __init__(self, rng):
        self.ax = rng.uniform(140.0, 158.0)       # half width (x)
        self.ay = rng.uniform(112.0, 124.0)       # half depth (y)
        self.yc = 24.0                            # centre of the outline, posterior of the navel
        self.fat = rng.uniform(12.0, 30.0)        # subcutaneous fat thickness
        self.muscle = rng.uniform(8.0, 14.0)      # abdominal wall muscle thickness
        self.wave = [(rng.uniform(0.02, 0.05), rng.uniform(160.0, 320.0),
                      rng.uniform(0.0, 2 * math.pi)) for _ in range(2)]

    def axes(self, qz, inset):
        """Ellipse half-axes at canonical z (qz shaped (d,1,1)), shrunk by `inset` mm."""
        ga = 1.0 + self.wave[0][0] * np.sin(qz * (2 * math.pi / self.wave[0][1]) + self.wave[0][2])
        gb = 1.0 + self.wave[1][0] * np.sin(qz * (2 * math.pi / self.wave[1][1]) + self.wave[1][2])
        return (self.ax * ga - inset).astype(np.float32), (self.ay * gb - inset).astype(np.float32)

    def field(self, qx, qy, qz, inset=0.0):
        a, b = self.axes(qz, inset)
        return _tube_field(qx, qy, qz, np.float32(0.0), np.float32(self.yc), a, b)

    def cavity(self, qx, qy, qz):
        """Inside of the muscle wall: organs are clipped to it."""
        return self.field(qx, qy, qz, self.fat + self.muscle)


def _jitter(rng, centre, sd=4.0):
    return np.asarray(centre, dtype=np.float64) + rng.normal(0.0, sd, size=3)


def _scaled(rng, radii, lo=0.9, hi=1.1):
    return np.asarray(radii, dtype=np.float64) * rng.uniform(lo, hi)


class _Organs:
    """Random organ shapes and enhancement values; field() evaluates one organ on a region."""

    def __init__(self, rng):
        hu = {}
        # Liver: large right lobe plus a left lobe that crosses the midline anteriorly.
        self.liver = [
            _Blob(rng, _jitter(rng, (-52, 2, 32)), _scaled(rng, (64, 80, 70)),
                  _rotation(0, 0, rng.uniform(5, 20))),
            _Blob(rng, _jitter(rng, (12, -42, 48)), _scaled(rng, (52, 26, 36)),
                  _rotation(0, 10, rng.uniform(-30, -15))),
        ]
        hu["liver"] = rng.uniform(90, 115)
        # Spleen: left, posterior, high; a medial notch gives the crescent.
        self.spleen = _Blob(rng, _jitter(rng, (84, 42, 44)), _scaled(rng, (24, 46, 44)),
                            _rotation(0, 0, rng.uniform(25, 45)), bump=0.09)
        self.spleen_notch = _Blob(rng, self.spleen.centre + (-30, -12, 0), (22, 26, 34),
                                  bump=0.0, warp=0.0, modes=0)
        hu["spleen"] = rng.uniform(100, 125)
        # Kidneys: beans either side of the spine, the right one lower; hilum faces
        # antero-medially and has lower attenuation (renal sinus, pelvis).
        self.kidney = {}
        for name, side, z in (("kidney_right", -1.0, -38.0), ("kidney_left", 1.0, -24.0)):
            radii = _scaled(rng, (25, 30, 52))
            rot = _rotation(-12.0, side * 10.0, -side * rng.uniform(20, 35))
            blob = _Blob(rng, _jitter(rng, (side * 68, 56, z)), radii, rot, bump=0.05)
            medial = rot @ np.array([-side * radii[0], -0.25 * radii[1], 0.0])
            notch = _Blob(rng, blob.centre + 1.05 * medial, (0.45 * radii[0], 0.5 * radii[1],
                                                             0.45 * radii[2]),
                          rot, bump=0.0, warp=0.0, modes=0)
            hilum = _Blob(rng, blob.centre + 0.45 * medial,
                          (0.45 * radii[0], 0.45 * radii[1], 0.55 * radii[2]), rot,
                          bump=0.05, warp=0.0, modes=0)
            self.kidney[name] = (blob, notch, hilum)
        hu["kidney"] = rng.uniform(140, 175)
        hu["kidney_hilum"] = rng.uniform(20, 40)
        # Gallbladder: pear under the inferior surface of the liver, fundus anterior.
        self.gallbladder = _Blob(rng, _jitter(rng, (-42, -38, 2), 3.0), _scaled(rng, (15, 17, 34)),
                                 _rotation(35, 0, rng.uniform(-20, 10)), bump=0.06)
        hu["gallbladder"] = rng.uniform(0, 20)
        # Stomach: fundus, body and antrum joined smoothly; wall plus content.
        self.stomach = [
            _Blob(rng, _jitter(rng, (58, 8, 62)), _scaled(rng, (36, 34, 32))),
            _Blob(rng, _jitter(rng, (36, -32, 30)), _scaled(rng, (42, 24, 34)),
                  _rotation(0, 0, -35)),
            _Blob(rng, _jitter(rng, (-2, -52, 12)), _scaled(rng, (32, 18, 20)),
                  _rotation(0, 0, 10)),
        ]
        self.stomach_content = rng.choice(["fluid", "air", "air_fluid", "collapsed"])
        self.stomach_wall = rng.uniform(4.0, 7.0)
        self.stomach_level = rng.uniform(-45.0, -15.0)   # air anterior of this y (supine)
        hu["stomach_wall"] = rng.uniform(50, 75)
        hu["stomach_fluid"] = rng.uniform(0, 20)
        # Pancreas: head near the duodenum, neck and body in front of the aorta, tail at the
        # splenic hilum.
        ctrl = np.array([(-32, 0, -16), (-5, -10, -8), (30, -2, 0), (68, 26, 14)], dtype=float)
        ctrl += rng.normal(0.0, 3.0, size=ctrl.shape)
        self.pancreas_path = _catmull_rom(ctrl)
        self.pancreas_radii = np.interp(np.linspace(0, 1, len(self.pancreas_path)),
                                        [0, 0.3, 1], [17, 12, 10]) * rng.uniform(0.9, 1.1)
        self.pancreas_warp = _Blob(rng, (0, 0, 0), (14, 14, 14), warp=0.15, modes=3)
        hu["pancreas"] = rng.uniform(80, 100)
        # Aorta: left-anterior of the vertebral body, along z, slightly tapering downwards.
        self.aorta = (rng.uniform(12, 18), rng.uniform(24, 28), rng.uniform(10.5, 13.0),
                      rng.uniform(0, 2 * math.pi))
        hu["aorta"] = rng.uniform(180, 250)
        # IVC: right of the aorta and a bit anterior, flattened, ending in the liver.
        self.ivc = (rng.uniform(-26, -20), rng.uniform(18, 24), rng.uniform(11, 14),
                    rng.uniform(7, 10), rng.uniform(70, 90))
        hu["inferior_vena_cava"] = rng.uniform(120, 150)
        self.hu = hu

    # Each method returns (lo, hi, evaluate) where evaluate(qx, qy, qz) -> (f, value).

    def spec(self, name):
        return getattr(self, "_" + name)()

    def _union(self, blobs):
        los, his = zip(*(b.bounds() for b in blobs))
        return np.min(los, axis=0), np.max(his, axis=0)

    def _liver(self):
        lo, hi = self._union(self.liver)

        def ev(qx, qy, qz):
            f = _smin(self.liver[0].field(qx, qy, qz), self.liver[1].field(qx, qy, qz), 15.0)
            return f, self.hu["liver"]
        return lo, hi, ev

    def _spleen(self):
        lo, hi = self.spleen.bounds()

        def ev(qx, qy, qz):
            f = np.maximum(self.spleen.field(qx, qy, qz), -self.spleen_notch.field(qx, qy, qz))
            return f, self.hu["spleen"]
        return lo, hi, ev

    def _kidney(self, name):
        blob, notch, hilum = self.kidney[name]
        lo, hi = blob.bounds()

        def ev(qx, qy, qz):
            f = np.maximum(blob.field(qx, qy, qz), -notch.field(qx, qy, qz))
            w = _occupancy(hilum.field(qx, qy, qz), 4.0)
            value = self.hu["kidney"] + w * (self.hu["kidney_hilum"] - self.hu["kidney"])
            return f, value
        return lo, hi, ev

    def _kidney_right(self):
        return self._kidney("kidney_right")

    def _kidney_left(self):
        return self._kidney("kidney_left")

    def _gallbladder(self):
        lo, hi = self.gallbladder.bounds()

        def ev(qx, qy, qz):
            return self.gallbladder.field(qx, qy, qz), self.hu["gallbladder"]
        return lo, hi, ev

    def _stomach(self):
        lo, hi = self._union(self.stomach)

        def ev(qx, qy, qz):
            f = _smin(self.stomach[0].field(qx, qy, qz), self.stomach[1].field(qx, qy, qz), 20.0)
            f = _smin(f, self.stomach[2].field(qx, qy, qz), 15.0)
            wall = self.hu["stomach_wall"]
            if self.stomach_content == "collapsed":
                return f, wall
            # Lumen: deeper than the wall thickness; air floats anteriorly (low y).
            inner = _occupancy(f + self.stomach_wall, 2.0)
            if self.stomach_content == "fluid":
                content = self.hu["stomach_fluid"]
            elif self.stomach_content == "air":
                content = -1000.0
            else:
                air = _occupancy(qy - np.float32(self.stomach_level), 1.0)
                content = self.hu["stomach_fluid"] + air * (-1000.0 - self.hu["stomach_fluid"])
            return f, wall + inner * (content - wall)
        return lo, hi, ev

    def _pancreas(self):
        pts, radii = self.pancreas_path, self.pancreas_radii
        margin = radii.max() + 8.0
        lo, hi = pts.min(axis=0) - margin, pts.max(axis=0) + margin
        warp = self.pancreas_warp

        def ev(qx, qy, qz):
            # Lobulated outline: displace the sample points by the warp blob's modes.
            ux, uy, uz = qx, qy, qz
            for k, phase, amp in warp.modes:
                s = np.sin(ux * np.float32(k[0]) + uy * np.float32(k[1]) + uz * np.float32(k[2])
                           + np.float32(phase))
                ux, uy, uz = (ux + np.float32(amp[0]) * s, uy + np.float32(amp[1]) * s,
                              uz + np.float32(amp[2]) * s)
            return _polyline_field(ux, uy, uz, pts, radii), self.hu["pancreas"]
        return lo, hi, ev

    def _aorta(self):
        x0, y0, r0, ph = self.aorta
        lo, hi = np.array([x0 - 25, y0 - 25, -1e4]), np.array([x0 + 25, y0 + 25, 1e4])

        def ev(qx, qy, qz):
            wander = np.sin(qz * np.float32(1 / 70.0) + np.float32(ph))
            cx = np.float32(x0) + np.float32(3.0) * wander
            cy = np.float32(y0) + qz * np.float32(0.02)
            r = np.float32(r0) * (1.0 + qz * np.float32(0.001))
            return _tube_field(qx, qy, qz, cx, cy, r, r), self.hu["aorta"]
        return lo, hi, ev

    def _inferior_vena_cava(self):
        x0, y0, rx, ry, top = self.ivc
        lo, hi = np.array([x0 - 25, y0 - 25, -1e4]), np.array([x0 + 25, y0 + 25, top + 5])

        def ev(qx, qy, qz):
            cy = np.float32(y0) + qz * np.float32(0.05)
            f = _tube_field(qx, qy, qz, np.float32(x0), cy, np.float32(rx), np.float32(ry))
            return np.maximum(f, qz - np.float32(top)), self.hu["inferior_vena_cava"]
        return lo, hi, ev


def _paint_background(rng, grid, body, hu):
    """Body wall, visceral fat and bowel, lungs, muscles, spine and ribs (no labels)."""
    sl, qx, qy, qz = grid.full()
    h = grid.h
    f_body = body.field(qx, qy, qz)
    _paint(hu, sl, f_body, rng.uniform(-110, -90), h)                       # subcutaneous fat
    f_wall = body.field(qx, qy, qz, body.fat)
    _paint(hu, sl, f_wall, rng.uniform(35, 50), h)                          # muscle wall
    f_cav = body.field(qx, qy, qz, body.fat + body.muscle)
    # Visceral fat mixed with bowel loops: smooth random texture, upsampled from a coarse grid.
    cell = 18.0 * grid.scale
    coarse = [max(2, int(round(n * s / cell)) + 2) for n, s in zip(grid.shape, grid.spacing)]
    noise = ndimage.gaussian_filter(rng.standard_normal(coarse).astype(np.float32), 0.7)
    noise = ndimage.zoom(noise, [n / c for n, c in zip(grid.shape, coarse)], order=1,
                         grid_mode=True, mode="nearest")[:grid.shape[0], :grid.shape[1],
                                                         :grid.shape[2]]
    noise /= max(float(noise.std()), 1e-6)
    bowel = np.clip((noise - 0.2) * 1.5 + 0.5, 0.0, 1.0)
    visceral = np.float32(rng.uniform(-105, -85)) + bowel * np.float32(rng.uniform(110, 140))
    _paint(hu, sl, f_cav, visceral, h)
    del f_body, f_wall, noise, bowel, visceral

    # Lung bases above the diaphragm, inside the chest wall.
    lung_hu = rng.uniform(-870, -820)
    for side in (-1.0, 1.0):
        lung = _Blob(rng, _jitter(rng, (side * 78, 42, 178), 5.0), _scaled(rng, (66, 72, 112)),
                     bump=0.04)
        r = grid.region(*lung.bounds())
        if r is not None:
            s2, x2, y2, z2 = r
            _paint(hu, s2, np.maximum(lung.field(x2, y2, z2), f_cav[s2]), lung_hu, h)

    # Ribs: oblique bony bands in the wall, lateral and posterior, upper abdomen only.
    pitch, lean = rng.uniform(28, 36), rng.uniform(0.25, 0.45)
    rib_top = rng.uniform(-45, -25)
    phase = (qz - np.float32(lean) * qy) * np.float32(1.0 / pitch) + np.float32(rng.uniform(0, 1))
    band = np.abs(phase - np.floor(phase) - np.float32(0.5)) * np.float32(pitch) - np.float32(5.0)
    ring = np.maximum(f_cav - np.float32(body.muscle * 0.6), -f_cav - np.float32(3.0))
    # No ribs in front of the midline (costal cartilage and linea alba region).
    anterior_gap = np.where(qy < 0, np.float32(40.0) - np.abs(qx), np.float32(-1e3))
    rib = np.maximum(np.maximum(band, ring), np.maximum(np.float32(rib_top) - qz, anterior_gap))
    _paint(hu, sl, rib, rng.uniform(450, 650), h)
    del phase, band, ring, rib

    # Paraspinal (erector spinae) muscles, kept inside the subcutaneous fat boundary.
    f_fat_in = body.field(qx, qy, qz, body.fat * 0.7)
    musc = rng.uniform(45, 60)
    for side in (-1.0, 1.0):
        blob = _Blob(rng, (side * 38, 116, 0), (28, 22, 400), bump=0.03, warp=0.02)
        r = grid.region(*blob.bounds())
        if r is not None:
            s2, x2, y2, z2 = r
            _paint(hu, s2, np.maximum(blob.field(x2, y2, z2), f_fat_in[s2]), musc, h)
    del f_fat_in

    # Psoas muscles: appear below the upper lumbar spine and widen downwards.
    psoas_top = rng.uniform(-5, 15)
    for side in (-1.0, 1.0):
        r = grid.region((side * 40 - 40, 20, -1e4), (side * 40 + 40, 100, psoas_top + 2))
        if r is None:
            continue
        s2, x2, y2, z2 = r
        rad = np.maximum(np.float32(0.0), (np.float32(psoas_top) - z2) * np.float32(0.22)) + 1e-3
        cx = np.float32(side) * (np.float32(34.0) + rad * np.float32(0.3))
        f = _tube_field(x2, y2, z2, cx, np.float32(62.0), rad, rad * np.float32(0.9))
        _paint(hu, s2, np.maximum(f, z2 - np.float32(psoas_top)), musc, h)

    # Vertebral column: bodies with a cortical rim, discs between them, posterior elements.
    r = grid.region((-60, 30, -1e4), (60, 150, 1e4))
    if r is None:
        return
    s2, x2, y2, z2 = r
    vy, vrx, vry = rng.uniform(62, 68), rng.uniform(20, 25), rng.uniform(17, 21)
    cancellous, cortex = rng.uniform(300, 420), rng.uniform(650, 750)
    level_pitch, level_phase = rng.uniform(30, 36), rng.uniform(0, 1)
    f_vb = _tube_field(x2, y2, z2, np.float32(0.0), np.float32(vy), np.float32(vrx),
                       np.float32(vry))
    _paint(hu, s2, f_vb, cortex, h)
    _paint(hu, s2, f_vb + np.float32(2.0), cancellous, h)
    # Discs: slabs of ~7 mm at every level; zeta in [-0.5, 0.5) is the position in the level.
    zeta = z2 * np.float32(1.0 / level_pitch) + np.float32(level_phase)
    zeta = zeta - np.floor(zeta + np.float32(0.5))
    f_disc = np.maximum(f_vb, np.abs(zeta) * np.float32(level_pitch) - np.float32(3.5))
    _paint(hu, s2, f_disc, rng.uniform(70, 100), h)
    # Spinal canal with cord/CSF, the neural arch around it, spinous and transverse processes.
    canal_y = vy + vry + 12.0
    f_canal = _tube_field(x2, y2, z2, np.float32(0.0), np.float32(canal_y), np.float32(10.0),
                          np.float32(9.0))
    arch = np.maximum(f_canal - np.float32(6.5), -f_canal)
    spinous = _tube_field(x2, y2, z2, np.float32(0.0), np.float32(canal_y + 26.0),
                          np.float32(4.5), np.float32(17.0))
    transverse = np.minimum(
        _tube_field(x2, y2, z2, np.float32(-27.0), np.float32(canal_y - 4.0), np.float32(15.0),
                    np.float32(4.5)),
        _tube_field(x2, y2, z2, np.float32(27.0), np.float32(canal_y - 4.0), np.float32(15.0),
                    np.float32(4.5)))
    # Processes exist in the upper part of each level only (gaps at the facet joints).
    gap = zeta * np.float32(level_pitch) - np.float32(6.0)
    posterior = np.minimum(arch, np.maximum(np.minimum(spinous, transverse), gap))
    _paint(hu, s2, posterior, rng.uniform(450, 600), h)
    _paint(hu, s2, f_canal, rng.uniform(15, 35), h)


def make_phantom(seed, shape=(64, 128, 128), spacing=(3.0, 3.0, 3.0), labels=DEMO_LABEL_NAMES):
    """Generate a phantom.

    seed:    integer seed of the numpy Generator; the same arguments give the same bytes.
    shape:   (D, H, W) = (slices, rows, columns).
    spacing: (sz, sy, sx) in mm.
    labels:  organ names (a subset of DEMO_LABEL_NAMES, any order); organ labels[i] gets id i+1.
             Organs not listed are still drawn (and still cover earlier organs) but are
             labelled 0.
    Returns (hu, lab): float32 Hounsfield units and uint8 labels, both shaped `shape`, in the
    DICOM (slice, row, column) LPS order described in the module docstring.
    """
    labels = list(labels)
    unknown = [n for n in labels if n not in PAINT_ORDER]
    if unknown:
        raise ValueError("phantom cannot draw %s" % ", ".join(unknown))
    if len(set(labels)) != len(labels):
        raise ValueError("duplicate label names")
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError("shape must be three positive integers")

    rng = np.random.default_rng(seed)
    grid = _Grid(shape, spacing, scale=rng.uniform(0.85, 1.15), theta_deg=rng.uniform(-10, 10),
                 shift=(rng.normal(0, 8), rng.normal(0, 8), rng.normal(0, 10)))
    body = _Body(rng)
    organs = _Organs(rng)

    hu = np.full(shape, -1000.0, dtype=np.float32)
    lab = np.zeros(shape, dtype=np.uint8)
    _paint_background(rng, grid, body, hu)

    ids = {name: i + 1 for i, name in enumerate(labels)}
    for name in PAINT_ORDER:
        lo, hi, ev = organs.spec(name)
        r = grid.region(lo, hi)
        if r is None:
            continue
        sl, qx, qy, qz = r
        f, value = ev(qx, qy, qz)
        f = np.maximum(f, body.cavity(qx, qy, qz))
        _paint(hu, sl, f, value, grid.h)
        # An unlisted organ still covers what it overlaps: its voxels become background.
        lab[sl][f < 0] = ids.get(name, 0)

    # Scanner blur, then slightly correlated noise.
    hu = ndimage.gaussian_filter(hu, 0.6, mode="nearest")
    noise = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 0.4)
    noise *= np.float32(rng.uniform(10.0, 20.0) / max(float(noise.std()), 1e-6))
    hu += noise
    return hu, lab


# ---------------------------------------------------------------------------------------------
# Output


def default_origin(shape, spacing):
    """LPS origin (x0, y0, z0) that centres the volume on (0, 0, 0)."""
    d, h, w = shape
    sz, sy, sx = spacing
    return (-(w - 1) * sx / 2.0, -(h - 1) * sy / 2.0, -(d - 1) * sz / 2.0)


def phantom_uid(seed, *what):
    """Deterministic UID 2.25.<uuid> for (seed, what...)."""
    name = "/".join(str(p) for p in (seed,) + what)
    return "2.25.%d" % uuid.uuid5(_UID_NAMESPACE, name).int


def _ds(value):
    """Decimal String (VR DS) of at most 16 characters, as precise as that allows."""
    value = float(value)
    if value == 0.0:
        return "0"
    for digits in range(16, 0, -1):
        text = "%.*g" % (digits, value)
        if len(text) <= 16:
            return text
    raise ValueError("cannot write %r as DS" % value)


def write_dicom_series(hu, lab_unused, out_dir, spacing, origin=None, series_uid=None,
                       study_uid=None, patient=None, tilt_deg=0.0, positions=None,
                       transfer_syntax=None, seed=0):
    """Write hu as a CT Image Storage series, one file per slice, and return the paths.

    hu:            (D, H, W) HU array in slice/row/column LPS order (rounded to int16).
    lab_unused:    accepted for symmetry with make_phantom's result; not written.
    out_dir:       created if missing; files are CT0001.dcm .. in slice order.
    spacing:       (sz, sy, sx) mm; PixelSpacing is written as [sy, sx].
    origin:        (x0, y0, z0) LPS of voxel (0, 0, 0); default centres the volume.
    series_uid, study_uid: default to UIDs derived from the seed.
    patient:       dict overriding "name", "id", "sex", "birth_date"; defaults PHANTOM^<seed>,
                   PHANTOM-<seed>, "O", "".
    tilt_deg:      gantry tilt: rows stay [1,0,0], the column direction turns about x to
                   [0, cos t, sin t], while ImagePositionPatient still steps along z only, so
                   the stack is sheared.
    positions:     explicit z (mm) of each slice instead of z0 + k * sz (irregular spacing).
    transfer_syntax: pydicom UID; ExplicitVRLittleEndian (default), ImplicitVRLittleEndian,
                   ExplicitVRBigEndian or RLELossless.
    seed:          seed of the derived UIDs and patient identity.
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import (ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                             RLELossless, UID)

    if transfer_syntax is None:
        transfer_syntax = ExplicitVRLittleEndian
    transfer_syntax = UID(transfer_syntax)
    if transfer_syntax not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                               ExplicitVRBigEndian, RLELossless):
        raise ValueError("unsupported transfer syntax %s" % transfer_syntax)

    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise ValueError("hu must be (D, H, W)")
    d, h, w = hu.shape
    sz, sy, sx = (float(s) for s in spacing)
    x0, y0, z0 = default_origin(hu.shape, spacing) if origin is None else origin
    if positions is None:
        zs = [z0 + k * sz for k in range(d)]
    else:
        zs = [float(z) for z in positions]
        if len(zs) != d:
            raise ValueError("positions must give one z per slice")
    steps = np.diff(zs)
    uniform = d < 2 or np.allclose(steps, steps[0], atol=1e-4)

    tilt = math.radians(tilt_deg)
    iop = [1.0, 0.0, 0.0, 0.0, math.cos(tilt), math.sin(tilt)]
    pix = np.clip(np.rint(hu), -32768, 32767).astype(np.int16)

    study_uid = study_uid or phantom_uid(seed, "study")
    series_uid = series_uid or phantom_uid(seed, "series")
    frame_uid = phantom_uid(seed, series_uid, "frame")
    who = {"name": "PHANTOM^%s" % seed, "id": "PHANTOM-%s" % seed, "sex": "O", "birth_date": ""}
    who.update(patient or {})
    date = (datetime.date(2024, 1, 1) + datetime.timedelta(days=abs(hash_seed(seed)) % 365))
    date = date.strftime("%Y%m%d")

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for k in range(d):
        sop_uid = phantom_uid(seed, series_uid, "sop", k)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = (ExplicitVRLittleEndian if transfer_syntax == RLELossless
                                  else transfer_syntax)
        meta.ImplementationClassUID = phantom_uid("implementation")
        meta.ImplementationVersionName = "MMSEGD_PHANTOM"
        path = os.path.join(out_dir, "CT%04d.dcm" % (k + 1))
        ds = FileDataset(path, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.is_little_endian = transfer_syntax != ExplicitVRBigEndian
        ds.is_implicit_VR = transfer_syntax == ImplicitVRLittleEndian

        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = date
        ds.StudyTime = "090000"
        ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = "090100"
        ds.AccessionNumber = ""
        ds.Modality = "CT"
        ds.Manufacturer = "mmsegd"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "Synthetic abdomen"
        ds.SeriesDescription = "Phantom abdomen %gmm" % sz
        ds.PatientName = who["name"]
        ds.PatientID = who["id"]
        ds.PatientBirthDate = who["birth_date"]
        ds.PatientSex = who["sex"]
        ds.BodyPartExamined = "ABDOMEN"
        ds.SliceThickness = _ds(sz)
        if uniform and d > 1:
            # Distance between the slice planes, measured along their normal.
            ds.SpacingBetweenSlices = _ds(abs(steps[0]) * math.cos(tilt))
        elif d == 1:
            ds.SpacingBetweenSlices = _ds(sz * math.cos(tilt))
        ds.KVP = "120"
        ds.GantryDetectorTilt = _ds(tilt_deg)
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = 1
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds(x0), _ds(y0), _ds(zs[k])]
        ds.ImageOrientationPatient = [_ds(v) for v in iop]
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = _ds(zs[k])
        ds.ImagesInAcquisition = d
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = h
        ds.Columns = w
        ds.PixelSpacing = [_ds(sy), _ds(sx)]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        plane = np.ascontiguousarray(pix[k])
        if transfer_syntax == RLELossless:
            ds.compress(RLELossless, plane)
        else:
            order = "<i2" if ds.is_little_endian else ">i2"
            ds.PixelData = plane.astype(order).tobytes()
            ds["PixelData"].VR = "OW"
        ds.save_as(path, write_like_original=False)
        paths.append(path)
    return paths


def hash_seed(seed):
    """Stable small integer from a seed of any printable type (Python's hash() is salted)."""
    return uuid.uuid5(_UID_NAMESPACE, str(seed)).int % 1000003


def nifti_affine(spacing, origin):
    """RAS affine of an array written as (column, row, slice) from a DICOM-order (D, H, W) one.

    LPS -> RAS negates x and y, so i (column) steps by -sx along RAS x, j (row) by -sy along
    RAS y and k (slice) by +sz along z; the translation is (-x0, -y0, z0).
    """
    sz, sy, sx = (float(s) for s in spacing)
    x0, y0, z0 = (float(o) for o in origin)
    return np.array([[-sx, 0.0, 0.0, -x0],
                     [0.0, -sy, 0.0, -y0],
                     [0.0, 0.0, sz, z0],
                     [0.0, 0.0, 0.0, 1.0]])


def save_nifti(arr, path, spacing, origin=None):
    """Write a (D, H, W) DICOM-order array as NIfTI (transposed to (W, H, D)); returns path."""
    import nibabel as nib

    arr = np.asarray(arr)
    if origin is None:
        origin = default_origin(arr.shape, spacing)
    affine = nifti_affine(spacing, origin)
    img = nib.Nifti1Image(np.ascontiguousarray(arr.transpose(2, 1, 0)), affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, path)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description="Generate a synthetic abdominal CT phantom.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 128, 128],
                        metavar=("D", "H", "W"))
    parser.add_argument("--spacing", type=float, nargs=3, default=[3.0, 3.0, 3.0],
                        metavar=("SZ", "SY", "SX"), help="mm")
    parser.add_argument("--origin", type=float, nargs=3, default=None,
                        metavar=("X0", "Y0", "Z0"), help="LPS mm of voxel (0,0,0)")
    parser.add_argument("--tilt", type=float, default=0.0, help="gantry tilt (degrees), DICOM")
    parser.add_argument("--out", required=True)
    parser.add_argument("--dicom", action="store_true", help="write DIR/dicom/CT*.dcm")
    parser.add_argument("--nifti", action="store_true",
                        help="write DIR/volume.nii.gz and DIR/labels.nii.gz (default when "
                             "neither --dicom nor --nifti is given)")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    hu, lab = make_phantom(args.seed, tuple(args.shape), tuple(args.spacing))
    elapsed = time.perf_counter() - t0
    origin = (tuple(args.origin) if args.origin is not None
              else default_origin(hu.shape, args.spacing))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "labels.json"), "w") as fp:
        json.dump(_labels.demo_labels(), fp, indent=1)
        fp.write("\n")
    if args.nifti or not args.dicom:
        vol = np.clip(np.rint(hu), -32768, 32767).astype(np.int16)
        save_nifti(vol, os.path.join(args.out, "volume.nii.gz"), args.spacing, origin)
        save_nifti(lab, os.path.join(args.out, "labels.nii.gz"), args.spacing, origin)
    if args.dicom:
        write_dicom_series(hu, lab, os.path.join(args.out, "dicom"), args.spacing, origin,
                           tilt_deg=args.tilt, seed=args.seed)
    counts = np.bincount(lab.ravel(), minlength=len(DEMO_LABEL_NAMES) + 1)
    print("phantom seed %d shape %s spacing %s: %.2f s" % (args.seed, hu.shape,
                                                            tuple(args.spacing), elapsed))
    for i, name in enumerate(DEMO_LABEL_NAMES):
        print("  %2d %-20s %8d voxels" % (i + 1, name, counts[i + 1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
