"""The inference procedure of mmunet.md section 5 (nnU-Net v2 semantics), in numpy/PyTorch.

This is the always-available witness for the C pipeline: it uses the same scikit-image and
scipy calls as nnU-Net's preprocessing and export.  Input is a volume in DICOM order
(k, r, c) = (slice, row, column) with its LPS direction vectors and spacings; output is a
uint8 label volume on the same grid.

    segment(net, card, hu, u_c, u_r, u_k, spacing_crk, tta=True) -> labels (k, r, c)
"""

import itertools
import math

import numpy as np
import torch
from scipy.ndimage import map_coordinates
from skimage.transform import resize


# ------------------------------------------------------------------------ 5.1 orientation
def io_orientation(direction):
    """Array axis -> (world axis, sign), greedy in array order on the closest orthogonal
    matrix (nibabel's io_orientation).  direction: 3x3, column a = world vector of axis a."""
    u, _, vt = np.linalg.svd(direction)
    r = u @ vt
    used = []
    out = []
    for a in range(3):
        col = np.abs(r[:, a])
        best = None
        for w in range(3):
            if w in used:
                continue
            if best is None or col[w] > col[best]:
                best = w
        used.append(best)
        out.append((best, 1 if r[best, a] >= 0 else -1))
    return out


class Orientation:
    """The flips and permutation that take a (k, r, c) DICOM array to the network frame
    (mmunet.md 5.1 and transpose_forward), and back."""

    def __init__(self, u_c, u_r, u_k, spacing_crk, orientation, transpose_forward):
        m = np.stack([np.asarray(u_c, float), np.asarray(u_r, float), np.asarray(u_k, float)],
                     axis=1)
        if orientation == "RAS":
            m[0:2, :] *= -1
        self.axes = io_orientation(m)          # for NIfTI-order axes i=c, j=r, k
        self.tf = list(transpose_forward)
        sp = np.asarray(spacing_crk, float)    # spacing of c, r, k
        world = [None] * 3
        for a, (w, _) in enumerate(self.axes):
            world[w] = sp[a]
        # reversed world order (z, y, x), then transpose_forward
        rev = world[::-1]
        self.spacing = [rev[t] for t in self.tf]

    def forward(self, arr_krc):
        a = np.asarray(arr_krc).transpose(2, 1, 0)            # (c, r, k) = NIfTI (i, j, k)
        for ax, (w, s) in enumerate(self.axes):
            if s < 0:
                a = np.flip(a, axis=ax)
        perm = [None] * 3
        for ax, (w, _) in enumerate(self.axes):
            perm[w] = ax
        a = a.transpose(perm)                                  # world order (x, y, z)
        a = a.transpose(2, 1, 0)                               # (z, y, x)
        return np.ascontiguousarray(a.transpose(self.tf))

    def backward(self, arr):
        inv = np.argsort(self.tf)
        a = np.asarray(arr).transpose(inv)                     # (z, y, x)
        a = a.transpose(2, 1, 0)                               # (x, y, z)
        perm = [None] * 3
        for ax, (w, _) in enumerate(self.axes):
            perm[w] = ax
        a = a.transpose(np.argsort(perm))                      # NIfTI order (i, j, k)
        for ax, (w, s) in enumerate(self.axes):
            if s < 0:
                a = np.flip(a, axis=ax)
        return np.ascontiguousarray(a.transpose(2, 1, 0))     # (k, r, c)


# ------------------------------------------------------------------------ 5.2, 5.3
def crop_to_nonzero(a):
    """Bounding box of a != 0, as slices; the whole array when all-zero (mmunet.md 5.2)."""
    nz = np.nonzero(a)
    if len(nz[0]) == 0:
        return tuple(slice(0, s) for s in a.shape)
    return tuple(slice(int(i.min()), int(i.max()) + 1) for i in nz)


def normalize_ct(a, norm):
    a = np.clip(a.astype(np.float32), norm["clip_low"], norm["clip_high"])
    return ((a - norm["mean"]) / max(norm["std"], 1e-8)).astype(np.float32)


# ------------------------------------------------------------------------ 5.4 resampling
def new_shape(shape, spacing, target):
    return [int(v) for v in np.round(np.asarray(spacing, float) / np.asarray(target, float)
                                     * np.asarray(shape, float))]


def separate_axis(current, target, threshold=3.0):
    """nnU-Net's determine_do_sep_z_and_axis: the axis to treat separately, or None."""
    def aniso(sp):
        sp = np.asarray(sp, float)
        return sp.max() / sp.min() > threshold

    for sp in (current, target):
        if aniso(sp):
            sp = np.asarray(sp, float)
            axes = np.where(sp == sp.max())[0]
            return int(axes[0]) if len(axes) == 1 else None
    return None


def _zoom_axis_nearest(a, axis, n_out):
    """Order 0 along one axis: index = clamp(floor(src + 0.5)), src = (j + .5) n_in/n_out - .5."""
    n_in = a.shape[axis]
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    idx = np.clip(np.floor(src + 0.5).astype(int), 0, n_in - 1)
    return np.take(a, idx, axis=axis)


def resample(a, shape_out, current, target, order, order_z, threshold=3.0):
    """Resample one channel (3D) as nnU-Net does (mmunet.md 5.4)."""
    shape_out = [int(s) for s in shape_out]
    if list(a.shape) == shape_out:
        return a.astype(np.float32)
    ax = separate_axis(current, target, threshold)
    kw = dict(mode="edge", anti_aliasing=False)
    if ax is None:
        return resize(a.astype(float), shape_out, order=order, **kw).astype(np.float32)
    plane = [s for i, s in enumerate(shape_out) if i != ax]
    moved = np.moveaxis(a, ax, 0).astype(float)
    out = np.stack([resize(sl, plane, order=order, **kw) for sl in moved])
    out = np.moveaxis(out, 0, ax)
    if out.shape[ax] != shape_out[ax]:
        if order_z != 0:
            raise NotImplementedError("only order 0 along the separate axis")
        out = _zoom_axis_nearest(out, ax, shape_out[ax])
    return out.astype(np.float32)


# ------------------------------------------------------------------------ 5.6, 5.7
def tile_starts(length, patch, step):
    if length <= patch:
        return [0]
    n = int(math.ceil((length - patch) / (patch * step))) + 1
    if n == 1:
        return [0]
    stride = (length - patch) / (n - 1)
    return [int(np.round(stride * i)) for i in range(n)]


def gaussian_map(patch, sigma_scale=0.125, peak=10.0):
    g = np.ones(patch, dtype=np.float64)
    for d, p in enumerate(patch):
        c = p // 2
        s = sigma_scale * p
        shape = [1, 1, 1]
        shape[d] = p
        g = g * np.exp(-((np.arange(p) - c) ** 2) / (2 * s * s)).reshape(shape)
    return (peak * g).astype(np.float32)


def sliding_window(net, vol, card, tta=True, step=None, progress=None):
    """Logits (classes, *vol.shape) of a normalised, resampled volume."""
    inf = card["inference"]
    P = inf["patch_size"]
    step = inf["tile_step"] if step is None else step
    ncls = card["architecture"]["num_classes"]
    shape = list(vol.shape)
    pads = [(max(0, (P[d] - shape[d]) // 2), max(0, P[d] - shape[d]) - max(0, (P[d] - shape[d]) // 2))
            for d in range(3)]
    x = np.pad(vol, pads, constant_values=inf["pad_value"])
    starts = [tile_starts(x.shape[d], P[d], step) for d in range(3)]
    g = torch.from_numpy(gaussian_map(P, inf["gaussian"]["sigma_scale"], inf["gaussian"]["peak"]))
    acc = torch.zeros((ncls,) + x.shape, dtype=torch.float32)
    wt = torch.zeros(x.shape, dtype=torch.float32)
    axes = inf["mirror_axes"] if tta else []
    flips = [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    tiles = list(itertools.product(*starts))
    dtype = next(net.parameters()).dtype
    with torch.no_grad():
        for i, (s0, s1, s2) in enumerate(tiles):
            sl = (slice(s0, s0 + P[0]), slice(s1, s1 + P[1]), slice(s2, s2 + P[2]))
            t = xt[sl][None, None].to(dtype)
            out = torch.zeros((ncls,) + tuple(P), dtype=torch.float64)
            for f in flips:
                dims = [2 + d for d in f]
                y = net(t.flip(dims) if dims else t)
                out += (y.flip(dims) if dims else y)[0].double()
            out = (out / len(flips)).float()
            acc[(slice(None),) + sl] += g * out
            wt[sl] += g
            if progress:
                progress(i + 1, len(tiles))
    logits = acc / wt
    if not torch.isfinite(logits).all():
        raise FloatingPointError("non-finite logits")
    cut = tuple(slice(pads[d][0], pads[d][0] + shape[d]) for d in range(3))
    return logits[(slice(None),) + cut].numpy()


# ------------------------------------------------------------------------ whole
def segment(net, card, hu_krc, u_c, u_r, u_k, spacing_crk, tta=True, step=None,
            progress=None):
    """Labels (k, r, c) uint8 for a CT volume in DICOM order (mmunet.md 5.1-5.8), then the
    card's postprocessing."""
    pre = card["preprocessing"]
    ori = Orientation(u_c, u_r, u_k, spacing_crk, pre["orientation"], pre["transpose_forward"])
    a = ori.forward(hu_krc.astype(np.float32))
    spacing = ori.spacing
    box = crop_to_nonzero(a) if pre["crop_to_nonzero"] else tuple(slice(0, s) for s in a.shape)
    full_shape = a.shape
    a = a[box]
    a = normalize_ct(a, pre["normalization"])
    target = pre["target_spacing"]
    rs = pre["resampling"]
    th = rs["anisotropy_threshold"]
    shp = new_shape(a.shape, spacing, target)
    a = resample(a, shp, spacing, target, rs["data_order"], rs["data_order_z"], th)
    logits = sliding_window(net, a, card, tta, step, progress)
    back = np.stack([resample(c, [s.stop - s.start for s in box], target, spacing,
                              rs["logits_order"], rs["logits_order_z"], th) for c in logits])
    lab = np.argmax(back, axis=0).astype(np.uint8)
    full = np.zeros(full_shape, dtype=np.uint8)
    full[box] = lab
    return postprocess(ori.backward(full), card.get("postprocessing", []))


def keep_largest_component(seg, labels):
    """Of the voxels whose label is in `labels`, keep the largest 26-connected component (every
    one of that size on a tie); the others become 0. nnU-Net's
    remove_all_but_largest_component_from_segmentation; a set absent from seg changes nothing."""
    from scipy import ndimage
    mask = np.isin(seg, list(labels))
    comp, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    out = seg.copy()
    if n == 0:
        return out
    sizes = np.bincount(comp.ravel())[1:]
    keep = np.flatnonzero(sizes == sizes.max()) + 1
    out[mask & ~np.isin(comp, keep)] = 0
    return out


def postprocess(seg, steps):
    """The card's postprocessing: its steps in order (mmunet.md; card key `postprocessing`)."""
    for st in steps:
        seg = keep_largest_component(seg, st["keep_largest_component"])
    return seg


def outside_body(hu, lab):
    """How many labelled voxels lie outside the body: the largest 26-connected component of
    HU > -500, the holes of each slice along the first axis filled (axial slices for arrays
    in (k, r, c) order)."""
    from scipy import ndimage
    comp, n = ndimage.label(hu > -500, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return int(np.count_nonzero(lab))
    body = comp == np.argmax(np.bincount(comp.ravel())[1:]) + 1
    body = np.stack([ndimage.binary_fill_holes(s) for s in body])
    return int(np.count_nonzero((lab > 0) & ~body))


def dice(a, b, labels):
    """Dice per label (None where absent from both)."""
    out = {}
    for lab in labels:
        x, y = a == lab, b == lab
        s = x.sum() + y.sum()
        out[lab] = None if s == 0 else float(2.0 * np.logical_and(x, y).sum() / s)
    return out
