"""Write a fold ensemble (model card architecture.ensemble) from model files of one network.

    python3 tools/mmunet/make_ensemble.py OUT FILE [FILE ...] [--names N1 N2 ...]
        [--perturb K --scale S --seed SEED]

Every FILE must hold a single network with the same card but for name, version, description
and provenance (the architecture, preprocessing, inference, labels and postprocessing of the
first are kept); member i is FILE i, named by --names (default fold_0, fold_1, ...).  With
--perturb K, K more members are copies of the first with every weight multiplied by
1 + S * z (z standard normal, numpy's default_rng(SEED)): stand-ins for folds trained from
other starts, for tests of the averaging only; the card says so.  Prints the SHA-256.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mmunet import export  # noqa: E402

SAME = ("architecture", "preprocessing", "inference", "labels", "postprocessing")


def main(argv):
    ap = argparse.ArgumentParser(description="Write a fold ensemble from model files.")
    ap.add_argument("out")
    ap.add_argument("files", nargs="+")
    ap.add_argument("--names", nargs="+")
    ap.add_argument("--perturb", type=int, default=0)
    ap.add_argument("--scale", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    try:
        first, t0, _ = export.read_model(args.files[0])
        sds = [t0]
        for path in args.files[1:]:
            card, t, _ = export.read_model(path)
            for k in SAME:
                if card.get(k) != first.get(k):
                    raise export.ModelError(f"{path}: its {k} differs from {args.files[0]}'s")
            sds.append(t)
        if "ensemble" in first["architecture"]:
            raise export.ModelError(f"{args.files[0]} is an ensemble already")
        rng = np.random.default_rng(args.seed)
        for _ in range(args.perturb):
            sds.append({k: (v * (1.0 + args.scale * rng.standard_normal(v.shape)))
                        .astype(np.float32) for k, v in sorted(t0.items())})
        n = len(sds)
        names = args.names or [f"fold_{i}" for i in range(n)]
        if len(names) != n:
            raise export.ModelError(f"{len(names)} names for {n} members")
        card = dict(first)
        card["architecture"] = dict(first["architecture"], ensemble=names)
        if args.perturb:
            card["description"] = (f"{first['description']}; a test ensemble: members 1..{n - 1}"
                                   f" are copies with weights x (1 + {args.scale} z), seed "
                                   f"{args.seed}")
            card["provenance"] = dict(first["provenance"],
                                      ensemble=f"make_ensemble.py --perturb {args.perturb} "
                                               f"--scale {args.scale} --seed {args.seed}")
        export.validate_card(card)
        sha = export.write_model(args.out, export.ensemble_tensors(sds), card)
    except (export.ModelError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {n} members ({', '.join(names)})")
    print(f"sha256: {sha}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
