"""Golden fixtures for the C engine (mmunet.md section 7, V1 and V6).

    python3 tools/mmunet/fixtures.py [OUT_DIR]      # default tests/fixtures/mmunet

writes, deterministically (the same seed gives the same bytes):

- tiny-<variant>.safetensors: random-weight models, S = 3, F = (4, 8, 16), kernels
  (1,3,3), (3,3,3), (3,3,3), strides (1,1,1), (1,2,2), (2,2,2), P = (8, 16, 16); one per
  biscan value, plus inner_residual, merge_scale 0.5, and Mamba in some stages only with
  mamba_blocks = last.
- tiny-<variant>.golden.safetensors: a fixed input, every block's output, the first
  MetaBlock's LN output, mixer output, delta and pre-gate y, and the logits, computed in
  fp64 from the stored (fp32) weights.
- tiny-separate.big.safetensors: a 32x64x64 input and the argmax of its logits.
- tiny-separate-pp.safetensors: tiny-separate's network with a postprocessing in its card.
- mamba-ops.safetensors: one Mamba layer's weights and outputs for sequences of 1, 3 and
  1000 tokens (shorter and longer than d_conv).
- tiny-ensemble.safetensors: a fold ensemble of two tiny-separate networks (seeds of their
  own), and tiny-ensemble.golden.safetensors: a fixed input, each member's logits and their
  mean, in fp64.
- tiny-plain.safetensors, tiny-resenc.safetensors, tiny-resenc-nobias.safetensors: nnU-Net's
  PlainConvUNet (F = (4, 8, 16), 2 convolutions per stage, 2 per decoder level) and
  ResidualEncoderUNet (F = (4, 8, 8): the last stage's skip is an AvgPool alone; 1, 2, 2 blocks,
  1 convolution per decoder level; with and without conv_bias), the tiny kernels and strides,
  random weights; tiny-plain-ensemble.safetensors, a fold ensemble of two PlainConvUNets. Each
  with a .golden.safetensors: a fixed input and the logits (for the ensemble each member's,
  logits.<k>, and their mean), in fp64 from the stored fp32 weights.
- micro-plain.safetensors: a valid three-stage PlainConvUNet of a few kilobytes, the base of
  the malformed files of the nnU-Net families.
- micro.safetensors: a valid two-stage model of a few kilobytes, micro-ensemble.safetensors
  (two of them as an ensemble), and malformed/*.safetensors derived from them, with
  malformed/manifest.json giving a fragment of the message the Python reader gives for each:
  files every loader must refuse.
"""

import copy
import json
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mmunet import export  # noqa: E402
from mmunet.mamba import Mamba  # noqa: E402
from mmunet.model import (MIXER_DEFAULTS, MMUNet, PlainConvUNet,  # noqa: E402
                          ResidualEncoderUNet, init_reference_weights)

TINY = dict(input_channels=1, num_classes=3, n_stages=3, features_per_stage=[4, 8, 16],
            kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]],
            strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]])
PATCH = [8, 16, 16]
VARIANTS = {
    "separate": {"biscan": "separate"},
    "shared": {"biscan": "shared"},
    "vim_v2": {"biscan": "vim_v2"},
    "inner_residual": {"biscan": "separate", "inner_residual": True},
    "merge_half": {"biscan": "separate", "merge_scale": 0.5},
    "partial": {"biscan": "separate", "mamba_stages": [1, 2], "mamba_blocks": "last"},
}
SEED = 20260131
# nnU-Net's standard networks: the tiny kernels and strides (README, "nnU-Net's standard
# networks").  TINY_RESENC's last stage keeps 8 channels: its skip is the AvgPool alone.
TINY_PLAIN = dict(TINY, features_per_stage=[4, 8, 16], n_conv_per_stage=[2, 2, 2],
                  n_conv_per_stage_decoder=[2, 2], conv_bias=True)
TINY_RESENC = dict(TINY, features_per_stage=[4, 8, 8], n_blocks_per_stage=[1, 2, 2],
                   n_conv_per_stage_decoder=[1, 1], conv_bias=True)
NNUNET_VARIANTS = {
    "plain": (PlainConvUNet, TINY_PLAIN),
    "resenc": (ResidualEncoderUNet, TINY_RESENC),
    "resenc-nobias": (ResidualEncoderUNet, dict(TINY_RESENC, conv_bias=False)),
}


def tiny_card(model, variant, members=None):
    labels = [
        {"id": 1, "name": "liver", "segment_label": "Liver",
         "category": {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"},
         "type": {"scheme": "SCT", "code": "10200004", "meaning": "Liver"}, "rgb": [40, 140, 40]},
        {"id": 2, "name": "spleen", "segment_label": "Spleen",
         "category": {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"},
         "type": {"scheme": "SCT", "code": "78961009", "meaning": "Spleen"}, "rgb": [50, 170, 60]},
    ]
    return export.make_card(
        model, name=f"tiny-{variant}", version="1.0.0",
        description=f"Random-weight test fixture ({variant}); not a trained model",
        license="CC0-1.0",
        preprocessing={"orientation": "RAS", "transpose_forward": [0, 1, 2],
                       "transpose_backward": [0, 1, 2], "target_spacing": [3.0, 1.5, 1.5],
                       "crop_to_nonzero": True,
                       "normalization": {"scheme": "ct", "clip_low": -1000.0, "clip_high": 1000.0,
                                         "mean": 0.0, "std": 500.0},
                       "resampling": {"data_order": 3, "data_order_z": 0, "logits_order": 1,
                                      "logits_order_z": 0, "anisotropy_threshold": 3.0,
                                      "force_separate_z": None}},
        inference={"patch_size": PATCH, "tile_step": 0.5, "mirror_axes": [0, 1, 2],
                   "gaussian": {"sigma_scale": 0.125, "peak": 10.0}, "pad_value": 0.0},
        labels=labels,
        provenance={"trainer": "tools/mmunet/fixtures.py (random weights)", "date": "2026-01-31",
                    "seed": SEED},
        members=members)


def fp32_roundtrip(model):
    """The model with its weights rounded to fp32 as stored, then in fp64 for the goldens."""
    m = copy.deepcopy(model).float().double().eval()
    return m


PP_STEPS = [{"keep_largest_component": [1, 2]}, {"keep_largest_component": [1]}]


def write_tiny(out, variant, mixer, seed):
    torch.manual_seed(seed)
    model = MMUNet(**TINY, mixer=mixer)
    init_reference_weights(model, seed)
    card = tiny_card(model, variant)
    sd = model.state_dict()
    export.write_model(os.path.join(out, f"tiny-{variant}.safetensors"), sd, card)
    if variant == "separate":  # the same network with a postprocessing in its card
        card = tiny_card(model, "separate-pp")
        card["postprocessing"] = PP_STEPS
        export.validate_card(card)
        export.write_model(os.path.join(out, "tiny-separate-pp.safetensors"), sd, card)
    ref = fp32_roundtrip(model)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn([1, 1] + PATCH, generator=g, dtype=torch.float64)
    taps = {}
    with torch.no_grad():
        ref(x, taps)
    gold = {"input": x[0]}
    for k, v in taps.items():
        if isinstance(v, torch.Tensor):
            gold[k] = v[0]
    export.write_model(os.path.join(out, f"tiny-{variant}.golden.safetensors"), gold,
                       metadata={"mamba_block": taps["mamba"], "variant": variant})
    return ref, card


def write_big(out, ref, seed):
    g = torch.Generator().manual_seed(seed + 2)
    x = torch.randn(1, 1, 32, 64, 64, generator=g, dtype=torch.float64)
    with torch.no_grad():
        # One tile of the larger shape: the network itself, no sliding window.
        logits = ref(x)[0]
    top2 = torch.topk(logits, 2, dim=0).values
    margin = (top2[0] - top2[1]).min().item()
    export.write_model(os.path.join(out, "tiny-separate.big.safetensors"),
                       {"input": x[0], "argmax": logits.argmax(0).double()},
                       metadata={"min_margin": f"{margin:.4g}"})


ENSEMBLE_MEMBERS = ["fold_0", "fold_3"]


def ensemble_members(make, seed):
    """Two networks of one architecture with the weights of two seeds (two folds)."""
    nets = []
    for k in range(len(ENSEMBLE_MEMBERS)):
        torch.manual_seed(seed + k)
        m = make()
        init_reference_weights(m, seed + k)
        nets.append(m)
    return nets


def write_ensemble(out, seed, variant="ensemble", make=None):
    """tiny-<variant>: a fold ensemble of two networks of make() (tiny-separate's by default),
    and its golden: a fixed input, each member's logits and their mean (fp64, from the stored
    fp32 weights)."""
    if make is None:
        make = lambda: MMUNet(**TINY, mixer=VARIANTS["separate"])  # noqa: E731
    nets = ensemble_members(make, seed)
    card = tiny_card(nets[0], variant, members=ENSEMBLE_MEMBERS)
    export.write_model(os.path.join(out, f"tiny-{variant}.safetensors"),
                       export.ensemble_tensors([m.state_dict() for m in nets]), card)
    g = torch.Generator().manual_seed(seed + 7)
    x = torch.randn([1, 1] + PATCH, generator=g, dtype=torch.float64)
    gold = {"input": x[0]}
    with torch.no_grad():
        logits = [fp32_roundtrip(m)(x)[0] for m in nets]
    for k, lg in enumerate(logits):
        gold[f"logits.{k}"] = lg
    gold["logits"] = (logits[0] + logits[1]) / 2
    export.write_model(os.path.join(out, f"tiny-{variant}.golden.safetensors"), gold)


def nnunet_network(variant):
    """A new network of NNUNET_VARIANTS[variant] (the tiny card's input and classes)."""
    cls, kw = NNUNET_VARIANTS[variant]
    return cls(**kw)


def write_nnunet(out, variant, seed):
    """tiny-<variant>: an nnU-Net network with random weights (init_reference_weights: norm
    affines away from (1, 0), biases non-zero), and its golden: a fixed input and the logits,
    in fp64 from the stored fp32 weights."""
    torch.manual_seed(seed)
    model = nnunet_network(variant)
    init_reference_weights(model, seed)
    card = tiny_card(model, variant)
    export.write_model(os.path.join(out, f"tiny-{variant}.safetensors"), model.state_dict(), card)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn([1, 1] + PATCH, generator=g, dtype=torch.float64)
    with torch.no_grad():
        logits = fp32_roundtrip(model)(x)
    export.write_model(os.path.join(out, f"tiny-{variant}.golden.safetensors"),
                       {"input": x[0], "logits": logits[0]}, metadata={"variant": variant})


def write_mamba_ops(out, seed):
    torch.manual_seed(seed)
    m = Mamba(8, d_state=16, d_conv=4, expand=2).double().eval()
    g = torch.Generator().manual_seed(seed + 3)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=torch.float64))
        m.float().double()
    t = {("weights." + k): v for k, v in m.state_dict().items()}
    m.chunked = False
    for L in (1, 3, 1000):
        u = torch.randn(1, L, 8, generator=g, dtype=torch.float64)
        taps = {}
        with torch.no_grad():
            y = m(u, taps)
        t[f"L{L}.input"] = u[0]
        t[f"L{L}.output"] = y[0]
        t[f"L{L}.delta"] = taps["delta"][0]
        t[f"L{L}.y_pregate"] = taps["y_pregate"][0]
    export.write_model(os.path.join(out, "mamba-ops.safetensors"), t,
                       metadata={"d_model": "8", "d_state": "16", "d_conv": "4", "expand": "2",
                                 "dt_rank": "1"})


def _rewrite(src, dst, edit_header=None, edit_data=None, raw=None):
    """A copy of src with its JSON header and/or data changed (header re-padded)."""
    with open(src, "rb") as f:
        data = f.read()
    if raw is not None:
        data = raw(data)
    else:
        (nh,) = struct.unpack_from("<Q", data, 0)
        header = json.loads(data[8:8 + nh].decode())
        body = bytearray(data[8 + nh:])
        if edit_header:
            edit_header(header)
        if edit_data:
            body = edit_data(header, body)
        hb = json.dumps(header, separators=(",", ":")).encode()
        hb += b" " * ((-(8 + len(hb))) % 64)
        data = struct.pack("<Q", len(hb)) + hb + bytes(body)
    with open(dst, "wb") as f:
        f.write(data)


def write_malformed(out, src, ensemble_src, plain_src):
    d = os.path.join(out, "malformed")
    os.makedirs(d, exist_ok=True)
    cases = {}

    def case(name, expect, base=src, **kw):
        _rewrite(base, os.path.join(d, name + ".safetensors"), **kw)
        cases[name] = expect

    def first_tensor(h):
        return sorted(k for k in h if k != "__metadata__")[0]

    def card_edit(fn):
        def edit(h):
            c = json.loads(h["__metadata__"]["mmsegd.model"])
            fn(c)
            h["__metadata__"]["mmsegd.model"] = json.dumps(c)
        return edit

    def drop_tensor(h, b, name="head.bias"):
        beg, end = h[name]["data_offsets"]
        del h[name]
        for k, v in h.items():
            if k != "__metadata__" and v["data_offsets"][0] >= end:
                v["data_offsets"] = [v["data_offsets"][0] - (end - beg), v["data_offsets"][1] - (end - beg)]
        return b[:beg] + b[end:]

    def add_tensor(h, b, name="extra.weight"):
        h[name] = {"dtype": "F32", "shape": [2], "data_offsets": [len(b), len(b) + 8]}
        return b + bytes(8)

    def nan_weight(h, b):
        beg = h["head.weight"]["data_offsets"][0]
        b[beg:beg + 4] = struct.pack("<f", float("nan"))
        return b

    case("truncated", "header length", raw=lambda data: data[:4])
    case("truncated-data", "outside the data", raw=lambda data: data[:-100])
    case("header-huge", "exceeds the file",
         raw=lambda data: struct.pack("<Q", 1 << 63) + data[8:])
    case("header-not-json", "not JSON",
         raw=lambda data: data[:8] + b"{" + b"x" * (struct.unpack_from("<Q", data)[0] - 1) +
         data[8 + struct.unpack_from("<Q", data)[0]:])
    case("offsets-past-eof", "outside the data",
         edit_header=lambda h: h[first_tensor(h)].update(
             data_offsets=[h[first_tensor(h)]["data_offsets"][0], 1 << 40]))
    case("overlap", "overlap",
         edit_header=lambda h: h["head.weight"].update(
             data_offsets=[h["head.weight"]["data_offsets"][0] - 4,
                           h["head.weight"]["data_offsets"][1] - 4]))
    case("hole", "hole",
         edit_header=lambda h: h["head.weight"].update(
             data_offsets=[h["head.weight"]["data_offsets"][0] + 4,
                           h["head.weight"]["data_offsets"][1] + 4]))
    case("dtype-i64", "is not F32",
         edit_header=lambda h: h["head.bias"].update(dtype="I64"))
    case("wrong-size", "bytes for",
         edit_header=lambda h: h["head.bias"].update(shape=[h["head.bias"]["shape"][0] + 1]))
    case("missing-tensor", "missing tensor 'head.bias'", edit_data=drop_tensor)
    case("extra-tensor", "unexpected tensor 'extra.weight'", edit_data=add_tensor)
    case("nan-weight", "NaN", edit_data=nan_weight)
    case("unknown-arch-key", "unknown key 'attention'",
         edit_header=card_edit(lambda c: c["architecture"].update(attention=True)))
    case("no-card", "no model card",
         edit_header=lambda h: h["__metadata__"].pop("mmsegd.model"))
    case("bad-card", "patch_size",
         edit_header=card_edit(lambda c: c["inference"].update(patch_size=[8, 15, 16])))
    case("shape-mismatch", "shape",
         edit_header=lambda h: h["head.bias"].update(shape=[1, h["head.bias"]["shape"][0]]))
    # fold ensembles (architecture.ensemble): every member complete, no member beyond them
    case("ensemble-missing-member-tensor", "missing tensor 'ensemble.1.head.bias'",
         base=ensemble_src, edit_data=lambda h, b: drop_tensor(h, b, "ensemble.1.head.bias"))
    case("ensemble-extra-member", "unexpected tensor 'ensemble.2.head.bias'",
         base=ensemble_src, edit_data=lambda h, b: add_tensor(h, b, "ensemble.2.head.bias"))
    case("ensemble-leading-zero", "unexpected tensor 'ensemble.01.decoder.ds_heads.0.bias'",
         base=ensemble_src,
         edit_data=lambda h, b: add_tensor(h, b, "ensemble.01.decoder.ds_heads.0.bias"))
    case("ensemble-unprefixed", "missing tensor 'ensemble.0.",
         base=src, edit_header=card_edit(
             lambda c: c["architecture"].update(ensemble=ENSEMBLE_MEMBERS)))
    case("ensemble-one-member", "architecture.ensemble: 2 to 16 distinct member names",
         base=ensemble_src, edit_header=card_edit(
             lambda c: c["architecture"].update(ensemble=["fold_0"])))
    case("ensemble-same-names", "architecture.ensemble: 2 to 16 distinct member names",
         base=ensemble_src, edit_header=card_edit(
             lambda c: c["architecture"].update(ensemble=["fold_0", "fold_0"])))
    case("ensemble-name-with-space", "architecture.ensemble: 2 to 16 distinct member names",
         base=ensemble_src, edit_header=card_edit(
             lambda c: c["architecture"].update(ensemble=["fold 0", "fold_1"])))
    # nnU-Net's families (plain_src: a PlainConvUNet): the family decides the keys, and the
    # tensors that the trained network holds twice or only for training are refused
    def copy_tensor(src_name, name):
        def edit(h, b):
            beg, end = h[src_name]["data_offsets"]
            h[name] = {"dtype": "F32", "shape": h[src_name]["shape"],
                       "data_offsets": [len(b), len(b) + end - beg]}
            return b + b[beg:end]
        return edit

    def zeros(name, shape):
        def edit(h, b):
            n = 4 * int(np.prod(shape))
            h[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(b), len(b) + n]}
            return b + bytes(n)
        return edit

    case("family-unknown", "architecture.family: expected 'mmunet', 'PlainConvUNet' or "
         "'ResidualEncoderUNet', found 'ResidualUNet'", base=plain_src,
         edit_header=card_edit(lambda c: c["architecture"].update(family="ResidualUNet")))
    case("family-missing", "architecture.family: expected 'mmunet', 'PlainConvUNet' or "
         "'ResidualEncoderUNet', found None", base=plain_src,
         edit_header=card_edit(lambda c: c["architecture"].pop("family")))
    case("plain-mixer-key", "architecture: unknown key 'mixer' (it could change the math)",
         base=plain_src, edit_header=card_edit(
             lambda c: c["architecture"].update(
                 mixer=dict(MIXER_DEFAULTS, mamba_stages=[0, 1, 2]))))
    case("plain-n-blocks-per-stage", "architecture: unknown key 'n_blocks_per_stage'",
         base=plain_src, edit_header=card_edit(
             lambda c: c["architecture"].update(
                 n_blocks_per_stage=c["architecture"].pop("n_conv_per_stage"))))
    case("conv-bias-not-bool", "architecture.conv_bias: must be true or false",
         base=plain_src, edit_header=card_edit(lambda c: c["architecture"].update(conv_bias=1)))
    case("plain-missing-transpconv", "missing tensor 'decoder.transpconvs.0.weight'",
         base=plain_src,
         edit_data=lambda h, b: drop_tensor(h, b, "decoder.transpconvs.0.weight"))
    case("plain-all-modules-alias",
         "unexpected tensor 'encoder.stages.0.0.convs.0.all_modules.0.weight'", base=plain_src,
         edit_data=copy_tensor("encoder.stages.0.0.convs.0.conv.weight",
                               "encoder.stages.0.0.convs.0.all_modules.0.weight"))
    case("plain-decoder-encoder-alias",
         "unexpected tensor 'decoder.encoder.stages.0.0.convs.0.conv.weight'", base=plain_src,
         edit_data=copy_tensor("encoder.stages.0.0.convs.0.conv.weight",
                               "decoder.encoder.stages.0.0.convs.0.conv.weight"))
    case("plain-ds-head", "unexpected tensor 'decoder.seg_layers.0.weight'", base=plain_src,
         edit_data=zeros("decoder.seg_layers.0.weight", [3, 4, 1, 1, 1]))
    with open(os.path.join(d, "manifest.json"), "w") as f:
        json.dump(cases, f, indent=1, sort_keys=True)
        f.write("\n")
    return cases


def main(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    out = argv[1] if len(argv) > 1 else os.path.join(here, "..", "..", "tests", "fixtures", "mmunet")
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)   # summation order, hence bytes, independent of the machine
    refs = {}
    for i, (variant, mixer) in enumerate(VARIANTS.items()):
        refs[variant], _ = write_tiny(out, variant, mixer, SEED + 10 * i)
    write_big(out, refs["separate"], SEED)
    write_mamba_ops(out, SEED)
    # The malformed files derive from a micro model, to keep the fixtures small.
    torch.manual_seed(SEED)
    micro = MMUNet(1, 3, 2, [2, 4], [[1, 3, 3], [3, 3, 3]], [[1, 1, 1], [1, 2, 2]],
                   mixer={"mamba_stages": [1], "d_state": 4, "expand": 1})
    init_reference_weights(micro, SEED)
    card = tiny_card(micro, "micro")
    micro_path = os.path.join(out, "micro.safetensors")
    export.write_model(micro_path, micro.state_dict(), card)
    write_ensemble(out, SEED + 100)
    nets = ensemble_members(lambda: MMUNet(1, 3, 2, [2, 4], [[1, 3, 3], [3, 3, 3]],
                                           [[1, 1, 1], [1, 2, 2]],
                                           mixer={"mamba_stages": [1], "d_state": 4,
                                                  "expand": 1}), SEED + 200)
    ens_path = os.path.join(out, "micro-ensemble.safetensors")
    export.write_model(ens_path, export.ensemble_tensors([m.state_dict() for m in nets]),
                       tiny_card(nets[0], "micro-ensemble", members=ENSEMBLE_MEMBERS))
    for i, variant in enumerate(NNUNET_VARIANTS):
        write_nnunet(out, variant, SEED + 300 + 10 * i)
    write_ensemble(out, SEED + 400, "plain-ensemble", lambda: nnunet_network("plain"))
    torch.manual_seed(SEED + 500)
    micro_plain = PlainConvUNet(1, 3, 3, [2, 4, 4], TINY["kernel_sizes"], TINY["strides"],
                                [1, 1, 1], [1, 1])
    init_reference_weights(micro_plain, SEED + 500)
    plain_path = os.path.join(out, "micro-plain.safetensors")
    export.write_model(plain_path, micro_plain.state_dict(), tiny_card(micro_plain, "micro-plain"))
    write_malformed(out, micro_path, ens_path, plain_path)
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(out) for f in fs)
    print(f"fixtures: wrote {out} ({total} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
