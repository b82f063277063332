"""Golden fixtures for the building blocks of the C pipeline (mmunet.md 5.4, 5.6 and 7, V2):
new shape, separate axis, resampling, tile starts and the Gaussian map.  Read by
tests/test-pipeline.c.

    /usr/bin/python3 tools/mmunet/pipeline_fixtures.py [OUT_DIR]    # tests/fixtures/pipeline
    _build/venv-ref/bin/python tools/mmunet/pipeline_fixtures.py --nnunet [OUT_DIR]

The first form (Debian's python3: numpy, scipy, scikit-image) writes, deterministically:

- resample.safetensors: one case per name N, with N.in (the input, 3D), N.out (the golden
  output, 3D) and N.p = [order, order_z, sep_axis, threshold, current[3], target[3],
  axis_used].  sep_axis is the argument of mms_pipe_resample(): -1 lets current/target decide,
  -2 forces the full 3D path, 0..2 names the axis; axis_used is the axis the golden used (-1:
  full 3D).  The goldens come from the same calls as nnU-Net's resample_data_or_seg:
  skimage.transform.resize(x.astype(float64), shape, order, mode='edge', anti_aliasing=False)
  on the whole array or per plane, and scipy.ndimage.map_coordinates(order=order_z,
  mode='nearest') along the separate axis, computed in float64 from the float32 input and
  rounded to float32.  Cases with order_z = 0 are also checked against
  tools/mmunet/pipeline.py's resample().
- blocks.safetensors:
  new_shape (n, 12): shape[3], spacing[3], target[3], expected[3] (round half to even of
    spacing / target * shape in float64, at least 1);
  separate_axis (n, 8): current[3], target[3], threshold, expected axis (-1: none);
  tiles.params (n, 4): len, patch, step, count; tiles.starts: the starts of all rows, in
    order (mmunet.md 5.6; one start at 0 when len <= patch);
  gaussian.AxBxC: the map for patch (A, B, C), sigma_scale 0.125, peak 10, from the closed
    form of mmunet.md 5.6 in float64.
  Every parameter is stored as float32, and every golden is computed from the float32 value
  widened to float64, which is what the C test passes.

The second form (the virtual environment of tools/mmunet/nnunet_proof.sh, with nnunetv2 and
torch 2.x) writes nnunet.safetensors from nnunetv2 itself:

- gaussian.AxBxC.f64 and gaussian.AxBxC.f16: compute_gaussian(patch, 1/8, 10, dtype, cpu)
  for dtype float64 and float16 (float16 is what nnUNetPredictor accumulates with); compare
  after dividing by the maximum.
- tiles.params, tiles.starts: compute_steps_for_sliding_window for the rows of blocks'
  tiles with len >= patch (nnU-Net pads smaller axes to the patch first).
- metadata: versions, and how nnunetv2's resample_data_or_seg_to_shape / resample_data_or_seg,
  compute_new_shape and determine_do_sep_z_and_axis compare with the goldens above.

Run without --nnunet, the script reruns itself with --nnunet when _build/venv-ref/bin/python
exists (--no-nnunet skips that), so one command regenerates every file; without the
environment, an existing nnunet.safetensors is left as it is.
"""

import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
from mmunet import export  # noqa: E402

SEED = 20260205
SIGMA_SCALE = 0.125
PEAK = 10.0
THRESHOLD = 3.0
GAUSS_PATCHES = [(8, 16, 16), (5, 7, 9), (17, 24, 31), (1, 2, 3)]
VENV_PY = os.path.join(ROOT, "_build", "venv-ref", "bin", "python")


def f32(v):
    """The float64 value of v rounded to float32, as the C test reads it."""
    return [float(np.float32(x)) for x in v]


def meta_str(d):
    return {k: (v if isinstance(v, str) else json.dumps(v, sort_keys=True)) for k, v in d.items()}


# ------------------------------------------------------------------------ references
def separate_axis(current, target, threshold=THRESHOLD):
    """determine_do_sep_z_and_axis(None, current, target, threshold): axis or -1."""
    for sp in (np.asarray(current, float), np.asarray(target, float)):
        if sp.max() / sp.min() > threshold:
            axes = np.where(sp.max() / sp == 1)[0]
            return int(axes[0]) if len(axes) == 1 else -1
    return -1


def new_shape(shape, spacing, target):
    """compute_new_shape (Python's round: half to even), at least 1 (infer/pipeline.h)."""
    return [max(1, int(round(i / j * k))) for i, j, k in zip(spacing, target, shape)]


def resample_ref(x32, shape_out, current, target, order, order_z, threshold, sep_arg):
    """One channel through the steps of nnU-Net's resample_data_or_seg (is_seg False).
    Returns (float32 output, axis used or -1)."""
    from scipy.ndimage import map_coordinates
    from skimage.transform import resize

    shape = np.array(x32.shape)
    shape_out = np.array(shape_out)
    if sep_arg >= 0:
        axis = sep_arg
    elif sep_arg == -2:
        axis = -1
    else:
        axis = separate_axis(current, target, threshold)
    if np.all(shape == shape_out):
        return x32.copy(), axis
    data = x32.astype(float)
    kw = {"mode": "edge", "anti_aliasing": False}
    if axis < 0:
        return resize(data, shape_out, order, **kw).astype(np.float32), axis
    plane = shape_out[[i for i in range(3) if i != axis]]
    tmp = shape_out.copy()
    tmp[axis] = shape[axis]
    here = np.zeros(tmp)
    for s in range(shape[axis]):
        idx = [slice(None)] * 3
        idx[axis] = s
        here[tuple(idx)] = resize(data[tuple(idx)], plane, order, **kw)
    if shape[axis] == shape_out[axis]:
        return here.astype(np.float32), axis
    rows, cols, dim = shape_out
    orig_rows, orig_cols, orig_dim = here.shape
    row_scale = float(orig_rows) / rows
    col_scale = float(orig_cols) / cols
    dim_scale = float(orig_dim) / dim
    map_rows, map_cols, map_dims = np.mgrid[:rows, :cols, :dim]
    map_rows = row_scale * (map_rows + 0.5) - 0.5
    map_cols = col_scale * (map_cols + 0.5) - 0.5
    map_dims = dim_scale * (map_dims + 0.5) - 0.5
    coord_map = np.array([map_rows, map_cols, map_dims])
    out = map_coordinates(here, coord_map, order=order_z, mode="nearest")
    return out.astype(np.float32), axis


def tile_starts(length, patch, step):
    """mmunet.md 5.6 / compute_steps_for_sliding_window, one start at 0 when len <= patch."""
    if length <= patch:
        return [0]
    n = int(np.ceil((length - patch) / (patch * step))) + 1
    if n == 1:
        return [0]
    stride = (length - patch) / (n - 1)
    return [int(np.round(stride * i)) for i in range(n)]


def gaussian_closed(patch, sigma_scale=SIGMA_SCALE, peak=PEAK):
    g = np.ones(patch, dtype=np.float64)
    for d, p in enumerate(patch):
        c = p // 2
        s = sigma_scale * p
        shape = [1, 1, 1]
        shape[d] = p
        g = g * np.exp(-((np.arange(p) - c) ** 2) / (2 * s * s)).reshape(shape)
    return peak * g


# ------------------------------------------------------------------------ data
def smooth_step(shape, axis):
    """A smooth field plus a unit step across the middle of axis: cubic overshoots the step,
    so clipping to [min, max] changes the result."""
    z, y, x = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    c = [z, y, x][axis]
    step = (c >= shape[axis] // 2).astype(float)
    return (step + 0.05 * np.sin(0.7 * z + 0.3) * np.cos(0.5 * y) + 0.02 * x).astype(np.float32)


def resample_cases(rng):
    """(name, input float32, shape_out, current, target, order, order_z, sep_arg, note)."""
    iso = [1.0, 1.0, 1.0]
    cases = []

    def rand(shape, scale=2.0):
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    def add(name, x, shape_out, order, order_z=0, cur=iso, tgt=iso, sep=-1, note=""):
        cases.append((name, x, list(shape_out), f32(cur), f32(tgt), order, order_z, sep, note))

    for order in (3, 1):
        o = f"o{order}"
        add(f"{o}_down", rand((12, 14, 16)), (7, 9, 11), order, note="every axis shrinks")
        add(f"{o}_up", rand((5, 6, 7)), (11, 13, 9), order, note="every axis grows")
        add(f"{o}_mixed", rand((9, 8, 10)), (13, 8, 6), order, note="up, unchanged, down")
        add(f"{o}_len1_in", rand((1, 7, 6)), (3, 10, 4), order, note="axis 0 of length 1 grows")
        add(f"{o}_len1_out", rand((6, 5, 7)), (4, 1, 9), order, note="axis 1 shrinks to 1")
        add(f"{o}_len1_keep", rand((5, 6, 1)), (8, 4, 1), order, note="axis 2 stays 1")
        add(f"{o}_len2_3", rand((2, 3, 9)), (5, 7, 4), order, note="lengths 2 and 3 (< kernel)")
        add(f"{o}_len3_2", rand((3, 2, 5)), (2, 3, 8), order, note="3 -> 2, 2 -> 3")
        add(f"{o}_odd", rand((13, 11, 9)), (7, 15, 5), order, note="odd lengths")
        add(f"{o}_step", smooth_step((10, 12, 14), 2), (17, 9, 27), order,
            note="smooth field with a unit step along axis 2 (clipping)")
        add(f"{o}_step_ax0", smooth_step((9, 7, 8), 0), (20, 5, 11), order,
            note="unit step along axis 0 (clipping)")
        add(f"{o}_forced_full", rand((4, 10, 9)), (12, 7, 6), order, cur=[5.0, 0.8, 0.8],
            tgt=[1.5, 1.5, 1.5], sep=-2, note="anisotropic spacing, sep_axis -2: full 3D")
    add("o3_long", rand((20, 32, 32), 100.0), (26, 25, 41), 3,
        note="lines longer than the 12-sample padding, values up to ~400")
    add("o0_ties", rand((4, 6, 2)), (2, 9, 3), 0,
        note="order 0 on the whole array, exact .5 source coordinates (2 -> 3, 6 -> 9)")
    add("o0_odd", rand((5, 7, 9)), (3, 10, 4), 0, note="order 0, odd input lengths")

    # separate axis: order 3 (data) or 1 (logits) in the planes, order_z along the axis
    cur, tgt = [5.0, 0.8, 0.8], [1.5, 1.5, 1.5]
    x = rand((6, 20, 22))
    add("sep0_o3_ct", x, new_shape(x.shape, f32(cur), f32(tgt)), 3, 0, cur, tgt,
        note="5 mm slices to 1.5 mm: axis 0 from the current spacing")
    x = smooth_step((5, 16, 18), 1)
    add("sep0_o3_step", x, new_shape(x.shape, f32(cur), f32(tgt)), 3, 0, cur, tgt,
        note="as sep0_o3_ct with a step in the planes (per-plane clipping)")
    x = rand((20, 11, 12))
    add("sep0_o1_back", x, new_shape(x.shape, f32(tgt), f32(cur)), 1, 0, tgt, cur,
        note="the logits path back: axis 0 from the target spacing")
    add("sep0_o3_back", x, new_shape(x.shape, f32(tgt), f32(cur)), 3, 0, tgt, cur,
        note="the reverse of sep0_o3_ct with order 3")
    cur1, tgt1 = [0.9, 4.0, 0.9], [1.0, 1.0, 1.0]
    x = rand((11, 5, 13))
    add("sep1_o3", x, new_shape(x.shape, f32(cur1), f32(tgt1)), 3, 0, cur1, tgt1,
        note="separate axis 1")
    cur2, tgt2 = [0.7, 0.7, 3.0], [1.2, 1.2, 1.2]
    x = rand((14, 12, 4))
    add("sep2_o1", x, new_shape(x.shape, f32(cur2), f32(tgt2)), 1, 0, cur2, tgt2,
        note="separate axis 2, order 1 in the planes")
    add("sep2_o3_ties", rand((7, 9, 4)), (5, 11, 6), 3, 0, cur2, tgt2,
        note="separate axis 2, 4 -> 6 along it (exact .5 coordinates)")
    add("sep0_o1_ties", rand((2, 6, 5)), (3, 4, 7), 1, 0, cur, tgt,
        note="separate axis 0, 2 -> 3 along it (exact .5 coordinates)")
    add("sep0_o3_43", rand((4, 5, 6)), (3, 7, 4), 3, 0, cur, tgt,
        note="separate axis 0, 4 -> 3 along it (1.5 in the middle)")
    add("sep0_z_only", rand((5, 8, 9)), (12, 8, 9), 3, 0, [5.0, 1.0, 1.0], [2.0, 1.0, 1.0],
        note="only the separate axis changes; the planes are resized to their own shape")
    add("sep0_plane_only", rand((5, 8, 9)), (5, 12, 6), 3, 0, [5.0, 1.0, 1.0],
        [5.0, 0.67, 1.5], note="the separate axis keeps its length")
    add("sep0_len1", rand((1, 6, 7)), (3, 9, 5), 3, 0, cur, tgt,
        note="separate axis of length 1 grows to 3")
    add("sep0_o3_z1", rand((6, 9, 8)), (11, 12, 6), 3, 1, cur, tgt,
        note="order_z 1: map_coordinates(order=1) along the separate axis")
    add("sep2_explicit", rand((6, 7, 5)), (9, 5, 8), 3, 0, iso, iso, sep=2,
        note="sep_axis 2 given while the spacings are isotropic")
    add("sep1_o0", rand((5, 3, 7)), (8, 6, 4), 0, 0, [1.0, 4.0, 1.0], iso,
        note="order 0 in the planes and along axis 1")
    return cases


def new_shape_cases():
    rows = [
        ((6, 20, 22), (5.0, 0.8, 0.8), (1.5, 1.5, 1.5)),
        ((20, 11, 12), (1.5, 1.5, 1.5), (5.0, 0.8, 0.8)),
        ((5, 7, 3), (1.0, 1.0, 1.0), (2.0, 2.0, 2.0)),         # 2.5, 3.5, 1.5: 2, 4, 2
        ((3, 5, 9), (3.0, 1.5, 1.0), (2.0, 1.0, 2.0)),         # 4.5, 7.5, 4.5: 4, 8, 4
        ((200, 333, 317), (1.25, 0.78125, 0.78125), (2.5, 1.5625, 1.5625)),  # 166.5, 158.5
        ((5, 13, 1), (0.7, 0.7, 0.7), (1.4, 1.4, 1.4)),        # 0.7 / 1.4 is 0.5 exactly
        ((1, 1, 1), (0.4, 0.2, 1.0), (1.0, 1.0, 1.0)),         # 0.4, 0.2 round to 0: 1
        ((7, 9, 11), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0)),
        ((100, 512, 512), (2.5, 0.703125, 0.703125), (1.5, 0.8, 0.8)),
        ((15, 30, 45), (0.1, 0.3, 0.9), (0.3, 0.1, 0.3)),
        ((87, 256, 256), (5.0, 0.9765625, 0.9765625), (2.0, 1.5, 1.5)),
    ]
    out = []
    for shape, sp, tg in rows:
        sp, tg = f32(sp), f32(tg)
        out.append(list(shape) + sp + tg + new_shape(shape, sp, tg))
    return out


def separate_axis_cases():
    rows = [
        ((5.0, 0.8, 0.8), (1.5, 1.5, 1.5), 3.0),   # current decides: 0
        ((1.5, 1.5, 1.5), (5.0, 0.8, 0.8), 3.0),   # target decides: 0
        ((0.8, 5.0, 0.8), (1.0, 1.0, 1.0), 3.0),   # 1
        ((0.8, 0.8, 5.0), (1.0, 1.0, 1.0), 3.0),   # 2
        ((5.0, 5.0, 0.8), (1.0, 1.0, 1.0), 3.0),   # largest in 2 axes: -1
        ((5.0, 5.0, 1.0), (1.0, 1.0, 4.0), 3.0),   # current anisotropic, tie: -1, no fallback
        ((3.0, 1.0, 1.0), (1.0, 1.0, 1.0), 3.0),   # ratio exactly 3 is not > 3: -1
        ((3.5, 1.0, 1.0), (1.0, 1.0, 4.0), 3.0),   # current before target: 0
        ((1.0, 1.0, 1.0), (1.0, 1.0, 4.0), 3.0),   # 2
        ((2.0, 1.0, 1.0), (1.0, 3.5, 0.5), 3.0),   # target ratio 7: 1
        ((0.5, 4.0, 1.0), (1.0, 1.0, 1.0), 3.0),   # 1
        ((2.5, 1.0, 1.0), (1.0, 1.0, 1.0), 2.0),   # threshold 2: 0
        ((2.5, 1.0, 1.0), (1.0, 1.0, 1.0), 3.0),   # threshold 3: -1
        ((1.0, 1.0, 1.0), (2.0, 2.0, 2.0), 3.0),   # -1
        ((4.0, 4.0, 4.0), (4.0, 0.5, 4.0), 3.0),   # target, max in 2 axes: -1
    ]
    out = []
    for cur, tgt, th in rows:
        cur, tgt = f32(cur), f32(tgt)
        th = float(np.float32(th))
        out.append(cur + tgt + [th, separate_axis(cur, tgt, th)])
    return out


TILE_ROWS = [
    (110, 64, 0.5),    # 0, 23, 46
    (64, 64, 0.5),     # len == patch
    (40, 64, 0.5),     # len < patch
    (1, 8, 0.5),
    (65, 64, 0.5),     # 0, 1
    (13, 8, 0.5),      # stride 2.5: 0, 2, 5
    (15, 8, 0.5),      # stride 3.5: 0, 4, 7
    (20, 5, 0.5),      # stride 2.5: 0, 2, 5, 8, 10, 12, 15 (odd patch)
    (100, 63, 0.5),    # odd patch, stride 18.5: 0, 18, 37
    (200, 64, 0.33),
    (250, 97, 0.33),
    (166, 100, 0.33),
    (300, 128, 0.5),
    (512, 160, 0.5),
    (110, 64, 1.0),
    (129, 64, 0.25),
    (47, 7, 0.33),
]


def tile_cases():
    params, starts = [], []
    for length, patch, step in TILE_ROWS:
        s = float(np.float32(step))
        st = tile_starts(length, patch, s)
        params.append([length, patch, s, len(st)])
        starts += st
    return params, starts


# ------------------------------------------------------------------------ writers
def postprocess_cases(rng):
    """Label volumes and postprocessing steps: components touching only at a corner or an edge
    (one component with 26-connectivity), ties, a set absent from the volume, a union of
    labels, components at the borders, a volume one voxel thick, and random blobs."""
    cases = []
    a = np.zeros((6, 7, 8), np.uint8)
    a[1, 1, 1] = a[2, 2, 2] = 1          # corner neighbours: one component of 2
    a[4, 5, 6] = 1                       # alone: removed
    a[0, 0, 5] = a[1, 1, 5] = 2          # edge neighbours: one component of 2
    a[5, 6, 7] = 2                       # a corner voxel of the volume: removed
    cases.append(("corners", a, [[1], [2]]))
    b = np.zeros((5, 9, 9), np.uint8)
    b[1, 1:3, 1:3] = 1                   # two components of 4: both stay
    b[3, 6:8, 6:8] = 1
    b[2, 4, 4] = 1                       # one of 1: removed
    cases.append(("tie", b, [[1]]))
    c = np.zeros((4, 5, 6), np.uint8)
    c[1:3, 1:3, 1:3] = 2
    cases.append(("absent", c, [[1], [1, 3]]))
    d = np.zeros((6, 10, 10), np.uint8)
    d[2:4, 2:5, 2:4] = 1                 # 1 and 2 touch: one component of their union
    d[2:4, 5:7, 2:4] = 2
    d[1, 8, 8] = 3
    d[4, 8, 1] = 2                       # far away: removed by the union step
    cases.append(("union", d, [[1, 2, 3], [2]]))
    e = np.zeros((1, 12, 9), np.uint8)
    e[0, 0, :4] = 1
    e[0, 11, 3:9] = 1
    e[0, 5, 5] = 1
    cases.append(("thin", e, [[1]]))
    f = (rng.random((14, 18, 20)) < 0.12).astype(np.uint8) * rng.integers(1, 4, (14, 18, 20))
    f = f.astype(np.uint8)
    f[3:9, 4:12, 5:15] = 2               # one big blob among the noise
    cases.append(("random", f, [[1, 2, 3], [1], [2], [3]]))
    return cases


def write_postprocess(out, rng, pipeline):
    tensors, steps = {}, {}
    for name, seg, sets in postprocess_cases(rng):
        st = [{"keep_largest_component": s} for s in sets]
        res = pipeline.postprocess(seg, st)
        tensors[f"{name}.in"] = seg.astype(np.float32)
        tensors[f"{name}.out"] = res.astype(np.float32)
        steps[name] = st
    meta = {
        "generator": "tools/mmunet/pipeline_fixtures.py",
        "golden": "tools/mmunet/pipeline.py postprocess(): scipy.ndimage.label with a 3x3x3 "
                  "structure (26-connectivity), every largest component kept",
        "steps": steps,
    }
    export.write_model(os.path.join(out, "postprocess.safetensors"), tensors,
                       metadata=meta_str(meta))


def write_main(out):
    from scipy.ndimage import zoom
    import scipy
    import skimage
    sys.path.insert(0, HERE)
    import pipeline  # tools/mmunet/pipeline.py

    rng = np.random.default_rng(SEED)
    tensors, notes = {}, {}
    clipped = {}
    for name, x, shape_out, cur, tgt, order, order_z, sep, note in resample_cases(rng):
        y, axis = resample_ref(x, shape_out, cur, tgt, order, order_z, THRESHOLD, sep)
        assert list(y.shape) == shape_out, name
        if sep == -1 and order_z == 0:
            w = pipeline.resample(x, shape_out, cur, tgt, order, order_z, THRESHOLD)
            assert np.array_equal(w, y), f"{name}: pipeline.resample() differs"
        if "step" in name and axis < 0:
            raw = zoom(x.astype(float), [b / a for a, b in zip(x.shape, shape_out)],
                       order=order, mode="nearest", grid_mode=True)
            n = int(np.sum((raw < x.min()) | (raw > x.max())))
            if order == 3:
                assert n > 0, f"{name}: clipping changes nothing"
            clipped[name] = n
        tensors[f"{name}.in"] = x
        tensors[f"{name}.out"] = y
        tensors[f"{name}.p"] = np.array([order, order_z, sep, THRESHOLD] + cur + tgt + [axis],
                                        dtype=np.float32)
        notes[name] = note
    versions = {"numpy": np.__version__, "scipy": scipy.__version__,
                "skimage": skimage.__version__, "python": sys.version.split()[0]}
    meta = {
        "generator": "tools/mmunet/pipeline_fixtures.py",
        "seed": SEED,
        "versions": versions,
        "golden": "skimage.transform.resize(x.astype(float64), shape, order, mode='edge', "
                  "anti_aliasing=False) on the array or per plane; "
                  "scipy.ndimage.map_coordinates(order=order_z, mode='nearest') along the "
                  "separate axis (nnU-Net resample_data_or_seg); order_z 0 cases also equal "
                  "tools/mmunet/pipeline.py resample()",
        "param_layout": "order, order_z, sep_axis, threshold, current[3], target[3], axis_used",
        "cases": notes,
        "voxels_clipped": clipped,
    }
    export.write_model(os.path.join(out, "resample.safetensors"), tensors,
                       metadata=meta_str(meta))

    blocks = {}
    blocks["new_shape"] = np.array(new_shape_cases(), dtype=np.float32)
    blocks["separate_axis"] = np.array(separate_axis_cases(), dtype=np.float32)
    params, starts = tile_cases()
    blocks["tiles.params"] = np.array(params, dtype=np.float32)
    blocks["tiles.starts"] = np.array(starts, dtype=np.float32)
    for p in GAUSS_PATCHES:
        blocks["gaussian." + "x".join(map(str, p))] = gaussian_closed(p)
    # pipeline.py's versions of the same building blocks must agree
    for r in new_shape_cases():
        assert [max(1, v) for v in pipeline.new_shape(r[0:3], r[3:6], r[6:9])] == r[9:12], r
    for r in separate_axis_cases():
        a = pipeline.separate_axis(r[0:3], r[3:6], r[6])
        assert (-1 if a is None else a) == r[7], r
    for length, patch, step in TILE_ROWS:
        s = float(np.float32(step))
        assert pipeline.tile_starts(length, patch, s) == tile_starts(length, patch, s)
    for p in GAUSS_PATCHES:
        assert np.array_equal(pipeline.gaussian_map(p), gaussian_closed(p).astype(np.float32))
    meta = {
        "generator": "tools/mmunet/pipeline_fixtures.py",
        "versions": versions,
        "new_shape": "shape[3], spacing[3], target[3], expected[3]: round half to even of "
                     "spacing / target * shape in float64 (nnU-Net compute_new_shape), at "
                     "least 1 (infer/pipeline.h; nnU-Net would give 0)",
        "separate_axis": "current[3], target[3], threshold, expected (-1: none); nnU-Net "
                         "determine_do_sep_z_and_axis with force_separate_z None",
        "tiles": "params: len, patch, step, count; starts: concatenated; mmunet.md 5.6",
        "gaussian": {"sigma_scale": SIGMA_SCALE, "peak": PEAK,
                     "source": "closed form of mmunet.md 5.6 in float64"},
    }
    export.write_model(os.path.join(out, "blocks.safetensors"), blocks, metadata=meta_str(meta))
    write_postprocess(out, np.random.default_rng(SEED + 1), pipeline)


def read_st(path):
    with open(path, "rb") as f:
        data = f.read()
    meta, entries, start = export.parse_safetensors(data, path)
    return meta, {n: export._to_f32(data[start + b:start + e], dt, sh)
                  for n, (dt, sh, b, e) in entries.items()}


def write_nnunet(out):
    import nnunetv2
    import scipy
    import skimage
    import torch
    from importlib.metadata import version
    from nnunetv2.inference.sliding_window_prediction import (
        compute_gaussian, compute_steps_for_sliding_window)
    from nnunetv2.preprocessing.resampling.default_resampling import (
        compute_new_shape, determine_do_sep_z_and_axis, resample_data_or_seg,
        resample_data_or_seg_to_shape)

    tensors = {}
    cpu = torch.device("cpu")
    for p in GAUSS_PATCHES:
        name = "gaussian." + "x".join(map(str, p))
        for tag, dt in (("f64", torch.float64), ("f16", torch.float16)):
            g = compute_gaussian(tuple(p), SIGMA_SCALE, PEAK, dtype=dt, device=cpu)
            tensors[f"{name}.{tag}"] = g.double().numpy()
    params, starts = [], []
    for length, patch, step in TILE_ROWS:
        if length < patch:
            continue
        s = float(np.float32(step))
        st = compute_steps_for_sliding_window((length,), (patch,), s)[0]
        params.append([length, patch, s, len(st)])
        starts += st
    tensors["tiles.params"] = np.array(params, dtype=np.float32)
    tensors["tiles.starts"] = np.array(starts, dtype=np.float32)

    # the goldens of the first form against nnunetv2's own functions
    _, rs = read_st(os.path.join(out, "resample.safetensors"))
    resample_tol = {}
    for key in sorted(k for k in rs if k.endswith(".in")):
        name = key[:-3]
        x, want, p = rs[key], rs[name + ".out"], rs[name + ".p"]
        order, order_z, sep, th = int(p[0]), int(p[1]), int(p[2]), float(p[3])
        cur, tgt = [float(v) for v in p[4:7]], [float(v) for v in p[7:10]]
        if sep >= 0:
            got = resample_data_or_seg(x[None], want.shape, False, sep, order, True, order_z)
        else:
            got = resample_data_or_seg_to_shape(x[None], want.shape, cur, tgt, False, order,
                                                order_z, None if sep == -1 else False, th)
        got = np.asarray(got[0], dtype=np.float64)
        resample_tol[name] = float(np.abs(got - want).max() / max(1.0, np.abs(want).max()))
    _, bl = read_st(os.path.join(out, "blocks.safetensors"))
    new_shape_diff = []
    for r in bl["new_shape"].astype(np.float64):
        got = [int(v) for v in compute_new_shape(r[0:3].astype(int), r[3:6], r[6:9])]
        if got != [int(v) for v in r[9:12]]:
            new_shape_diff.append({"shape": r[0:3].astype(int).tolist(),
                                   "spacing": r[3:6].tolist(), "target": r[6:9].tolist(),
                                   "nnunet": got, "golden": r[9:12].astype(int).tolist()})
    sep_diff = []
    for r in bl["separate_axis"].astype(np.float64):
        do, axis = determine_do_sep_z_and_axis(None, r[0:3], r[3:6], r[6])
        got = int(axis) if do else -1
        if got != int(r[7]):
            sep_diff.append({"row": r.tolist(), "nnunet": got})
    # the postprocessing goldens against nnunetv2's apply_postprocessing
    from nnunetv2.postprocessing.remove_connected_components import (
        apply_postprocessing, remove_all_but_largest_component_from_segmentation)
    pmeta, pp = read_st(os.path.join(out, "postprocess.safetensors"))
    pp_diff = {}
    for name, st in json.loads(pmeta["steps"]).items():
        seg = pp[name + ".in"].astype(np.uint8)
        fns = [remove_all_but_largest_component_from_segmentation] * len(st)
        kw = [{"labels_or_regions": s["keep_largest_component"]} for s in st]
        got = apply_postprocessing(seg, fns, kw)
        pp_diff[name] = int(np.sum(got != pp[name + ".out"].astype(np.uint8)))
    meta = {
        "generator": "tools/mmunet/pipeline_fixtures.py --nnunet",
        "versions": {"nnunetv2": version("nnunetv2"), "torch": torch.__version__,
                     "numpy": np.__version__, "scipy": scipy.__version__,
                     "skimage": skimage.__version__, "python": sys.version.split()[0]},
        "gaussian": "nnunetv2.inference.sliding_window_prediction.compute_gaussian(patch, "
                    "1/8, 10, dtype, cpu), .f64 and .f16 (the predictor's default dtype); "
                    "compare after dividing by the maximum",
        "tiles": "compute_steps_for_sliding_window((len,), (patch,), step) for len >= patch; "
                 "params: len, patch, step, count",
        "resample_tol_vs_goldens": resample_tol,
        "new_shape_differences": new_shape_diff,
        "separate_axis_differences": sep_diff,
        "postprocess_differences": pp_diff,
        "postprocess": "nnunetv2.postprocessing.remove_connected_components."
                       "apply_postprocessing with remove_all_but_largest_component_from_"
                       "segmentation per step, against postprocess.safetensors: voxels "
                       "that differ",
        "module": nnunetv2.__file__.split("site-packages/")[-1],
    }
    export.write_model(os.path.join(out, "nnunet.safetensors"), tensors, metadata=meta_str(meta))
    worst = max(resample_tol.values())
    print(f"pipeline_fixtures --nnunet: resample worst tol vs nnunetv2 {worst:.3g}; "
          f"new_shape differences {len(new_shape_diff)}; separate_axis differences "
          f"{len(sep_diff)}")
    # the only accepted difference: nnU-Net's 0 where infer/pipeline.h asks for at least 1
    shape_ok = all(g == w or (g == 0 and w == 1) for d in new_shape_diff
                   for g, w in zip(d["nnunet"], d["golden"]))
    print(f"pipeline_fixtures --nnunet: postprocessing differences {pp_diff}")
    return 0 if worst <= 1e-6 and not sep_diff and shape_ok and not any(pp_diff.values()) else 1


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    flags = [a for a in argv[1:] if a.startswith("--")]
    out = args[0] if args else os.path.join(ROOT, "tests", "fixtures", "pipeline")
    os.makedirs(out, exist_ok=True)
    if "--nnunet" in flags:
        return write_nnunet(out)
    write_main(out)
    rc = 0
    if "--no-nnunet" not in flags:
        if os.access(VENV_PY, os.X_OK):
            rc = subprocess.call([VENV_PY, os.path.abspath(__file__), "--nnunet", out])
        else:
            print(f"pipeline_fixtures: no {VENV_PY}; nnunet.safetensors left as it is")
    total = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"pipeline_fixtures: wrote {out} ({total} bytes)")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv))
