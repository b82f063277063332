"""Agreement of two label volumes of the same series (mmunet.md 3.2 tolerances).

    label_agreement.py REF OTHER --min-agree X --min-dice Y [--min-voxels V] [--truth FILE]
                       [--names A,B]

REF and OTHER are NIfTI label files (.nii.gz) or folders holding exactly one (mmsegd segment
--nifti writes one per series). Prints the voxel agreement, the worst Dice of OTHER against
REF over the labels REF holds with at least V voxels (default 1), each smaller label's Dice
and voxel counts, and, with --truth, each one's mean Dice against the truth over the truth's
labels. Exit 0 when agreement >= X and every label Dice judged >= Y (and, with --truth, the
two mean Dice are within 0.01), else 1; 2 for unreadable input.
(Below about 2 / (1 - Y) voxels one voxel moves a label's Dice by more than 1 - Y, so Y
judges such a label by whether the two agree exactly; V states which labels Y is for.)
"""

import argparse
import glob
import gzip
import os
import struct
import sys

import numpy as np

DTYPES = {2: np.uint8, 4: np.int16, 8: np.int32, 256: np.int8, 512: np.uint16}


def load(path):
    """(shape, flat int64 labels) of a .nii.gz label file, or of the one in a folder."""
    if os.path.isdir(path):
        found = glob.glob(os.path.join(path, "*.nii.gz"))
        if len(found) != 1:
            sys.exit(f"{path}: {len(found)} label files, not 1")
        path = found[0]
    d = gzip.open(path).read()
    dims = struct.unpack("<8h", d[40:56])
    code = struct.unpack("<h", d[70:72])[0]
    off = int(struct.unpack("<f", d[108:112])[0])
    if code not in DTYPES or not 1 <= dims[0] <= 7:
        sys.exit(f"{path}: not a label volume (datatype {code}, {dims[0]} dimensions)")
    shape = tuple(dims[1:1 + dims[0]])
    n = int(np.prod(shape))
    return shape, np.frombuffer(d, DTYPES[code], n, off).astype(np.int64)


def dice(a, b, i):
    return 2.0 * np.sum((a == i) & (b == i)) / max(1, np.sum(a == i) + np.sum(b == i))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ref")
    ap.add_argument("other")
    ap.add_argument("--min-agree", type=float, required=True)
    ap.add_argument("--min-dice", type=float, required=True)
    ap.add_argument("--min-voxels", type=int, default=1)
    ap.add_argument("--truth")
    ap.add_argument("--names", default="ref,other")
    a = ap.parse_args()
    na, nb = (a.names.split(",") + ["other"])[:2]
    (sa, r), (so, o) = load(a.ref), load(a.other)
    if sa != so:
        print(f"the grids differ: {na} {sa}, {nb} {so}")
        return 1
    agree = float((r == o).mean())
    ids, counts = np.unique(r, return_counts=True)
    size = {int(i): int(c) for i, c in zip(ids, counts) if i != 0}
    labels = [i for i in sorted(size) if size[i] >= a.min_voxels]
    small = [i for i in sorted(size) if size[i] < a.min_voxels]
    worst = min((dice(o, r, i) for i in labels), default=1.0)
    ok = agree >= a.min_agree and worst >= a.min_dice
    line = (f"{nb}/{na} voxel agreement {agree:.5f}, worst label Dice against {na} "
            f"{worst:.5f} over {len(labels)} labels")
    if small:
        line += (f" of at least {a.min_voxels} voxels; smaller, not judged: " + ", ".join(
            f"label {i} Dice {dice(o, r, i):.4f} ({size[i]}/{int(np.sum(o == i))} voxels)"
            for i in small))
    if a.truth:
        st, t = load(a.truth)
        if st != sa:
            print(f"the grids differ: {na} {sa}, truth {st}")
            return 1
        ids = sorted(set(np.unique(t).tolist()) - {0})
        dr = float(np.mean([dice(r, t, i) for i in ids]))
        do = float(np.mean([dice(o, t, i) for i in ids]))
        line += f"; mean Dice against the truth over {len(ids)} labels: {na} {dr:.4f}, {nb} {do:.4f}"
        ok = ok and abs(dr - do) <= 0.01
    print(f"{line} (pass: agreement >= {a.min_agree}, label Dice >= {a.min_dice}"
          f"{', Dice within 0.01' if a.truth else ''})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
