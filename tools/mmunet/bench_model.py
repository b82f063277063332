"""A random-weight model file for the forward-pass benchmark (tools/bench-forward.sh).

    python3 tools/mmunet/bench_model.py OUT.safetensors [--preset nnunet] [--seed N]

Preset `nnunet`: the size of an nnU-Net v2 3d_fullres plan for abdominal CT, 6 stages,
features 32..320, 3x3x3 kernels, isotropic stride 2 from stage 1 on, default blocks and mixer,
15 AMOS labels, patch 64x128x128.  Weights come from model.init_reference_weights, so the same
seed gives the same bytes.  (The demo case uses models/demo.safetensors as it is.)
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mmunet import export  # noqa: E402
from mmunet.labels import AMOS_LABELS  # noqa: E402
from mmunet.model import MMUNet, init_reference_weights  # noqa: E402

PRESETS = {
    "nnunet": {
        "net": dict(input_channels=1, num_classes=16, n_stages=6,
                    features_per_stage=[32, 64, 128, 256, 320, 320],
                    kernel_sizes=[[3, 3, 3]] * 6,
                    strides=[[1, 1, 1]] + [[2, 2, 2]] * 5),
        "patch_size": [64, 128, 128],
        "labels": AMOS_LABELS,
    },
}
# The same network without Mamba: the convolution side alone, where PyTorch is at its best.
PRESETS["nnunet-cnn"] = dict(PRESETS["nnunet"], net=dict(PRESETS["nnunet"]["net"],
                                                         mixer={"mamba_stages": []}))


def build(preset, seed):
    """(model, card) of a preset with the seed's reference weights."""
    cfg = PRESETS[preset]
    torch.manual_seed(seed)
    model = MMUNet(**cfg["net"])
    init_reference_weights(model, seed)
    card = export.make_card(
        model, name=f"bench-{preset}", version="1.0.0",
        description=f"Random-weight benchmark model ({preset} preset); not a trained model",
        license="CC0-1.0",
        preprocessing={"orientation": "RAS", "transpose_forward": [0, 1, 2],
                       "transpose_backward": [0, 1, 2], "target_spacing": [2.0, 0.7129, 0.7129],
                       "crop_to_nonzero": True,
                       "normalization": {"scheme": "ct", "clip_low": -991.0, "clip_high": 362.0,
                                         "mean": 50.0, "std": 141.0},
                       "resampling": {"data_order": 3, "data_order_z": 0, "logits_order": 1,
                                      "logits_order_z": 0, "anisotropy_threshold": 3.0,
                                      "force_separate_z": None}},
        inference={"patch_size": list(cfg["patch_size"]), "tile_step": 0.5,
                   "mirror_axes": [0, 1, 2], "gaussian": {"sigma_scale": 0.125, "peak": 10.0},
                   "pad_value": 0.0},
        labels=[dict(lab) for lab in cfg["labels"]],
        provenance={"trainer": "tools/mmunet/bench_model.py (random weights)",
                    "date": "2026-01-31", "preset": preset, "seed": seed})
    return model, card


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("out", help="the .safetensors file to write")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="nnunet")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    model, card = build(args.preset, args.seed)
    d = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(d, exist_ok=True)
    sha = export.write_model(args.out, model.state_dict(), card)
    n = sum(p.numel() for p in model.parameters())
    print(f"bench_model: wrote {args.out} ({args.preset}, seed {args.seed}, {n} parameters, "
          f"sha256 {sha})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
