"""The model file of mmunet.md section 4: safetensors with the model card in its metadata.

write_model() writes F32 tensors sorted by name, contiguous, with the header padded so the
data starts at a multiple of 64 bytes.  read_model() applies the loader rules of section 4.3
(the same rules the C loader applies) and raises ModelError with a message naming the file and
the tensor or key.  Only `struct` and `json` are needed: Debian 12 has no safetensors package.

    python3 tools/mmunet/export.py info FILE        # print the card, tensors and SHA-256
"""

import hashlib
import json
import math
import re
import struct
import sys
import warnings

import numpy as np

SCHEMA = "mmsegd.model/1"
CARD_KEY = "mmsegd.model"
HEADER_MAX = 100 * 1024 * 1024
ALIGN = 64
DTYPES = {"F32": (np.float32, 4), "F16": (np.float16, 2), "BF16": (None, 2)}

TOP_KEYS = ("schema", "name", "version", "description", "license", "architecture",
            "preprocessing", "inference", "labels", "provenance")
TOP_OPTIONAL = ("postprocessing",)
ARCH_KEYS = ("family", "in_channels", "num_classes", "n_stages", "features_per_stage",
             "kernel_sizes", "strides", "n_blocks_encoder", "n_blocks_decoder", "stem_blocks",
             "norm", "nonlin", "decoder", "mixer", "ignorable_tensors")
# nnU-Net's standard networks (README, "nnU-Net's standard networks")
PLAIN_KEYS = ("family", "in_channels", "num_classes", "n_stages", "features_per_stage",
              "kernel_sizes", "strides", "n_conv_per_stage", "n_conv_per_stage_decoder",
              "conv_bias", "norm", "nonlin", "ignorable_tensors")
RESENC_KEYS = tuple("n_blocks_per_stage" if k == "n_conv_per_stage" else k for k in PLAIN_KEYS)
FAMILY_KEYS = {"mmunet": ARCH_KEYS, "PlainConvUNet": PLAIN_KEYS,
               "ResidualEncoderUNet": RESENC_KEYS}
# the card's key of the per-stage counts of the encoder, by family
ENCODER_COUNTS = {"PlainConvUNet": "n_conv_per_stage", "ResidualEncoderUNet": "n_blocks_per_stage"}
ARCH_OPTIONAL = ("ensemble",)
MAX_MEMBERS = 16
MEMBER_PREFIX = "ensemble."
MIXER_KEYS = ("type", "biscan", "merge_scale", "inner_residual", "mamba_stages",
              "mamba_blocks", "ln_eps", "d_state", "d_conv", "expand", "dt_rank")


class ModelError(Exception):
    """A model file or card that breaks a rule of mmunet.md 4.3."""


# ------------------------------------------------------------------------------ tensors
def dt_rank(arch_mixer, channels):
    r = arch_mixer["dt_rank"]
    return math.ceil(channels / 16) if r == "auto" else int(r)


def expected_tensors_nnunet(arch):
    """{name: shape} of every tensor of a PlainConvUNet or ResidualEncoderUNet (README,
    "nnU-Net's standard networks"), in no order."""
    out = {}
    S = arch["n_stages"]
    F = arch["features_per_stage"]
    K = arch["kernel_sizes"]
    T = arch["strides"]
    bias = arch["conv_bias"]
    plain = arch["family"] == "PlainConvUNet"

    def cnr(prefix, cin, cout, k, has_bias):
        out[prefix + "conv.weight"] = (cout, cin, *k)
        if has_bias:
            out[prefix + "conv.bias"] = (cout,)
        out[prefix + "norm.weight"] = (cout,)
        out[prefix + "norm.bias"] = (cout,)

    if not plain:
        cnr("encoder.stem.convs.0.", arch["in_channels"], F[0], K[0], bias)
    for s in range(S):
        first_in = F[s - 1] if s > 0 else (arch["in_channels"] if plain else F[0])
        for i in range(arch[ENCODER_COUNTS[arch["family"]]][s]):
            cin = first_in if i == 0 else F[s]
            if plain:
                cnr(f"encoder.stages.{s}.0.convs.{i}.", cin, F[s], K[s], bias)
                continue
            p = f"encoder.stages.{s}.blocks.{i}."
            cnr(p + "conv1.", cin, F[s], K[s], bias)
            cnr(p + "conv2.", F[s], F[s], K[s], bias)
            if cin != F[s]:
                pool = i == 0 and any(t != 1 for t in T[s])
                cnr(p + f"skip.{1 if pool else 0}.", cin, F[s], [1, 1, 1], False)
    for j in range(S - 1):
        a, b = S - 1 - j, S - 2 - j
        out[f"decoder.transpconvs.{j}.weight"] = (F[a], F[b], *T[a])
        if bias:
            out[f"decoder.transpconvs.{j}.bias"] = (F[b],)
        for i in range(arch["n_conv_per_stage_decoder"][j]):
            cnr(f"decoder.stages.{j}.convs.{i}.", 2 * F[b] if i == 0 else F[b], F[b], K[b], bias)
    out[f"decoder.seg_layers.{S - 2}.weight"] = (arch["num_classes"], F[0], 1, 1, 1)
    out[f"decoder.seg_layers.{S - 2}.bias"] = (arch["num_classes"],)
    return out


def expected_tensors(arch):
    """{name: shape} of every tensor the architecture needs (mmunet.md 2.7 for mmunet, README
    "nnU-Net's standard networks" for the others), in no order."""
    if arch["family"] != "mmunet":
        return expected_tensors_nnunet(arch)
    out = {}
    S = arch["n_stages"]
    F = arch["features_per_stage"]
    K = arch["kernel_sizes"]
    T = arch["strides"]
    mx = arch["mixer"]

    def block(prefix, cin, cout, k, stride, hybrid):
        out[prefix + "conv1.weight"] = (cout, cin, *k)
        out[prefix + "conv2.weight"] = (cout, cout, *k)
        for n in ("conv1.bias", "conv2.bias", "norm1.weight", "norm1.bias", "norm2.weight",
                  "norm2.bias"):
            out[prefix + n] = (cout,)
        if cin != cout or any(t != 1 for t in stride):
            out[prefix + "proj.weight"] = (cout, cin, 1, 1, 1)
            out[prefix + "proj.bias"] = (cout,)
        if not hybrid:
            return
        C = cout
        E, N, R, Kc = mx["expand"] * C, mx["d_state"], dt_rank(mx, C), mx["d_conv"]
        out[prefix + "mixer.norm.weight"] = (C,)
        out[prefix + "mixer.norm.bias"] = (C,)
        mods = {"separate": ["mamba_f", "mamba_b"], "shared": ["mamba"], "vim_v2": ["mamba"]}
        for m in mods[mx["biscan"]]:
            p = f"{prefix}mixer.{m}."
            out[p + "in_proj.weight"] = (2 * E, C)
            out[p + "out_proj.weight"] = (C, E)
            for sfx in ([""] + (["_b"] if mx["biscan"] == "vim_v2" else [])):
                out[p + f"conv1d{sfx}.weight"] = (E, 1, Kc)
                out[p + f"conv1d{sfx}.bias"] = (E,)
                out[p + f"x_proj{sfx}.weight"] = (R + 2 * N, E)
                out[p + f"dt_proj{sfx}.weight"] = (E, R)
                out[p + f"dt_proj{sfx}.bias"] = (E,)
                out[p + ("A_log" if sfx == "" else "A_b_log")] = (E, N)
                out[p + f"D{sfx}"] = (E,)

    for b in range(arch["stem_blocks"]):
        block(f"stem.blocks.{b}.", arch["in_channels"] if b == 0 else F[0], F[0], K[0],
              [1, 1, 1], False)
    for s in range(S):
        nb = arch["n_blocks_encoder"][s]
        for b in range(nb):
            hybrid = s in mx["mamba_stages"] and (mx["mamba_blocks"] == "all" or b == nb - 1)
            block(f"encoder.stages.{s}.blocks.{b}.", (F[s - 1] if s > 0 else F[0]) if b == 0
                  else F[s], F[s], K[s], T[s] if b == 0 else [1, 1, 1], hybrid)
    for j in range(S - 1):
        a, b_ = S - 1 - j, S - 2 - j
        out[f"decoder.levels.{j}.up.weight"] = (F[b_], F[a], 1, 1, 1)
        out[f"decoder.levels.{j}.up.bias"] = (F[b_],)
        for i in range(arch["n_blocks_decoder"][j]):
            block(f"decoder.levels.{j}.blocks.{i}.", 2 * F[b_] if i == 0 else F[b_], F[b_],
                  K[b_], [1, 1, 1], False)
    out["head.weight"] = (arch["num_classes"], F[0], 1, 1, 1)
    out["head.bias"] = (arch["num_classes"],)
    return out


def model_tensors(arch):
    """{name: shape} of every tensor the model file needs: the network's, or for a fold
    ensemble (architecture.ensemble) the network's once per member under "ensemble.<i>."."""
    net = expected_tensors(arch)
    if "ensemble" not in arch:
        return net
    return {f"{MEMBER_PREFIX}{i}.{k}": v for i in range(len(arch["ensemble"]))
            for k, v in net.items()}


def member_rest(arch, name):
    """The network's name of a tensor of the file: the name for a single network; for an
    ensemble what follows "ensemble.<i>." with i a member (no leading zero), else None."""
    if "ensemble" not in arch:
        return name
    m = re.fullmatch(re.escape(MEMBER_PREFIX) + r"(0|[1-9][0-9]*)\.(.*)", name, re.S)
    return m.group(2) if m and int(m.group(1)) < len(arch["ensemble"]) else None


def glob_match(pattern, name):
    """Globs with `*` only (mmunet.md 4.3 rule 4)."""
    return re.fullmatch(".*".join(re.escape(p) for p in pattern.split("*")), name) is not None


# ------------------------------------------------------------------------------ card rules
def _err(msg):
    raise ModelError(msg)


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v):
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _ints(v, n, what, lo=None, hi=None):
    if not isinstance(v, list) or len(v) != n or not all(_is_int(x) for x in v):
        _err(f"{what}: expected {n} integers, found {json.dumps(v)}")
    if lo is not None and any(x < lo for x in v) or hi is not None and any(x > hi for x in v):
        _err(f"{what}: values must lie in {lo}..{hi}, found {json.dumps(v)}")
    return v


def _dicom_text(v, what, vr, n):
    """Text the SEG carries in an element of VR LO or SH (design.md 7), in DICOM's default
    character repertoire: 1 to n printable ASCII characters, not only spaces (DICOM drops
    them), no backslash (DICOM's value delimiter)."""
    if len(v) > n or not v.strip(" ") or \
            any(ch == "\\" or not 0x20 <= ord(ch) < 0x7F for ch in v):
        _err(f"{what}: {vr} text is required (1 to {n} printable ASCII characters, not only "
             f"spaces, no backslash), found {json.dumps(v)}")


def _code(v, what):
    if not isinstance(v, dict) or set(v) != {"scheme", "code", "meaning"} or \
            not all(isinstance(v[k], str) and v[k] for k in v):
        _err(f"{what}: expected {{scheme, code, meaning}} strings, found {json.dumps(v)}")
    _dicom_text(v["scheme"], f"{what}.scheme", "SH", 16)
    _dicom_text(v["code"], f"{what}.code", "SH", 16)
    _dicom_text(v["meaning"], f"{what}.meaning", "LO", 64)


def _exact_keys(obj, keys, where, optional=()):
    """Inside `architecture` every key matters to the math: unknown and missing are errors
    (the keys of `optional` may be absent)."""
    if not isinstance(obj, dict):
        _err(f"{where}: not an object")
    for k in obj:
        if k not in keys and k not in optional:
            _err(f"{where}: unknown key {k!r} (it could change the math)")
    for k in keys:
        if k not in obj:
            _err(f"{where}: missing key {k!r}")


def _validate_mmunet(a, S):
    """The keys of an mmunet architecture that the other families do not have."""
    if a["decoder"] != "residual_nearest":
        _err(f"architecture.decoder: version 1 accepts only 'residual_nearest'")
    mx = a["mixer"]
    _exact_keys(mx, MIXER_KEYS, "architecture.mixer")
    if mx["type"] != "bimamba":
        _err("architecture.mixer.type: expected 'bimamba'")
    if mx["biscan"] not in ("separate", "shared", "vim_v2"):
        _err(f"architecture.mixer.biscan: unknown {mx['biscan']!r}")
    if not _is_num(mx["merge_scale"]) or mx["merge_scale"] <= 0:
        _err("architecture.mixer.merge_scale: must be a positive number")
    if not isinstance(mx["inner_residual"], bool):
        _err("architecture.mixer.inner_residual: must be true or false")
    ms = mx["mamba_stages"]
    if not isinstance(ms, list) or not all(_is_int(s) and 0 <= s < S for s in ms) or \
            len(set(ms)) != len(ms):
        _err(f"architecture.mixer.mamba_stages: distinct stage indices in 0..{S - 1}, "
             f"found {json.dumps(ms)}")
    if mx["mamba_blocks"] not in ("all", "last"):
        _err("architecture.mixer.mamba_blocks: 'all' or 'last'")
    if not _is_num(mx["ln_eps"]) or mx["ln_eps"] <= 0:
        _err("architecture.mixer.ln_eps: must be positive")
    for k in ("d_state", "d_conv", "expand"):
        if not _is_int(mx[k]) or mx[k] < 1:
            _err(f"architecture.mixer.{k}: must be an integer >= 1")
    if mx["dt_rank"] != "auto" and (not _is_int(mx["dt_rank"]) or mx["dt_rank"] < 1):
        _err("architecture.mixer.dt_rank: 'auto' or an integer >= 1")


def validate_card(card, warn=True):
    """Check a card against mmunet.md 4.2 and 4.3 rule 5; raise ModelError naming the key.
    Unknown keys outside `architecture` are warnings (returned as a list of strings)."""
    notes = []
    if not isinstance(card, dict):
        _err("card: not a JSON object")
    if card.get("schema") != SCHEMA:
        _err(f"schema: expected {SCHEMA!r}, found {card.get('schema')!r}")
    for k in TOP_KEYS:
        if k not in card:
            _err(f"card: missing key {k!r}")
    notes += [f"card: unknown key {k!r} ignored" for k in card
              if k not in TOP_KEYS and k not in TOP_OPTIONAL]
    for k in ("name", "version", "description", "license"):
        if not isinstance(card[k], str) or not card[k]:
            _err(f"{k}: expected a non-empty string")
    # the SEG's Algorithm Name and Version, and its Series Description "MM-UNet <name>"
    _dicom_text(card["name"], "name", "LO", 56)
    _dicom_text(card["version"], "version", "LO", 64)

    a = card["architecture"]
    if not isinstance(a, dict):
        _err("architecture: not an object")
    # The family first: the keys depend on it.
    family = a.get("family")
    if not isinstance(family, str) or family not in FAMILY_KEYS:
        _err(f"architecture.family: expected 'mmunet', 'PlainConvUNet' or "
             f"'ResidualEncoderUNet', found {family!r}")
    _exact_keys(a, FAMILY_KEYS[family], "architecture", ARCH_OPTIONAL)
    S = a["n_stages"]
    if not _is_int(S) or not 2 <= S <= 8:
        _err(f"architecture.n_stages: must be 2..8, found {S!r}")
    if not _is_int(a["in_channels"]) or a["in_channels"] < 1:
        _err("architecture.in_channels: must be >= 1")
    if not _is_int(a["num_classes"]) or a["num_classes"] < 2:
        _err("architecture.num_classes: must be >= 2")
    _ints(a["features_per_stage"], S, "architecture.features_per_stage", 1)
    if not isinstance(a["kernel_sizes"], list) or len(a["kernel_sizes"]) != S:
        _err(f"architecture.kernel_sizes: expected {S} entries")
    for s, k in enumerate(a["kernel_sizes"]):
        _ints(k, 3, f"architecture.kernel_sizes[{s}]", 1, 7)
        if any(x % 2 == 0 for x in k):
            _err(f"architecture.kernel_sizes[{s}]: kernels must be odd, found {k}")
    if not isinstance(a["strides"], list) or len(a["strides"]) != S:
        _err(f"architecture.strides: expected {S} entries")
    for s, t in enumerate(a["strides"]):
        _ints(t, 3, f"architecture.strides[{s}]", 1)
    if a["strides"][0] != [1, 1, 1]:
        _err(f"architecture.strides[0]: must be [1, 1, 1], found {a['strides'][0]}")
    if family == "mmunet":
        _ints(a["n_blocks_encoder"], S, "architecture.n_blocks_encoder", 1)
        _ints(a["n_blocks_decoder"], S - 1, "architecture.n_blocks_decoder", 1)
        if not _is_int(a["stem_blocks"]) or a["stem_blocks"] < 1:
            _err("architecture.stem_blocks: must be >= 1")
    else:
        enc = ENCODER_COUNTS[family]
        _ints(a[enc], S, f"architecture.{enc}", 1)
        _ints(a["n_conv_per_stage_decoder"], S - 1, "architecture.n_conv_per_stage_decoder", 1)
        if not isinstance(a["conv_bias"], bool):
            _err("architecture.conv_bias: must be true or false")
    if a["norm"] != {"type": "instance", "eps": 1e-5, "affine": True}:
        _err(f"architecture.norm: version 1 accepts only instance, eps 1e-5, affine true; "
             f"found {json.dumps(a['norm'])}")
    if a["nonlin"] != {"type": "leaky_relu", "negative_slope": 0.01}:
        _err(f"architecture.nonlin: version 1 accepts only leaky_relu 0.01; "
             f"found {json.dumps(a['nonlin'])}")
    if family == "mmunet":
        _validate_mmunet(a, S)
    ign = a["ignorable_tensors"]
    if not isinstance(ign, list) or not all(isinstance(g, str) for g in ign):
        _err("architecture.ignorable_tensors: a list of globs")
    if "ensemble" in a:
        en = a["ensemble"]
        if not isinstance(en, list) or not 2 <= len(en) <= MAX_MEMBERS or \
                not all(isinstance(x, str) and re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", x)
                        for x in en) or len(set(en)) != len(en):
            _err(f"architecture.ensemble: 2 to {MAX_MEMBERS} distinct member names (1 to 64 "
                 f"letters, digits, '_', '.', '-'), found {json.dumps(en)}")

    p = card["preprocessing"]
    if not isinstance(p, dict):
        _err("preprocessing: not an object")
    for k in ("orientation", "transpose_forward", "transpose_backward", "target_spacing",
              "crop_to_nonzero", "normalization", "resampling"):
        if k not in p:
            _err(f"preprocessing: missing key {k!r}")
    if p["orientation"] not in ("RAS", "LPS"):
        _err(f"preprocessing.orientation: 'RAS' or 'LPS', found {p['orientation']!r}")
    tf, tb = p["transpose_forward"], p["transpose_backward"]
    _ints(tf, 3, "preprocessing.transpose_forward", 0, 2)
    _ints(tb, 3, "preprocessing.transpose_backward", 0, 2)
    if sorted(tf) != [0, 1, 2] or [tf[i] for i in tb] != [0, 1, 2]:
        _err(f"preprocessing.transpose_backward: {tb} is not the inverse of the permutation {tf}")
    ts = p["target_spacing"]
    if not isinstance(ts, list) or len(ts) != 3 or not all(_is_num(x) and x > 0 for x in ts):
        _err(f"preprocessing.target_spacing: 3 positive numbers, found {json.dumps(ts)}")
    if not isinstance(p["crop_to_nonzero"], bool):
        _err("preprocessing.crop_to_nonzero: true or false")
    n = p["normalization"]
    if not isinstance(n, dict) or n.get("scheme") != "ct":
        _err("preprocessing.normalization.scheme: version 1 accepts only 'ct'")
    for k in ("clip_low", "clip_high", "mean", "std"):
        if not _is_num(n.get(k)):
            _err(f"preprocessing.normalization.{k}: a number is required")
    if not n["clip_low"] < n["clip_high"]:
        _err("preprocessing.normalization: clip_low must be below clip_high")
    if not n["std"] > 0:
        _err("preprocessing.normalization.std: must be positive")
    r = p["resampling"]
    if not isinstance(r, dict):
        _err("preprocessing.resampling: not an object")
    for k, allowed in (("data_order", (0, 1, 3)), ("data_order_z", (0, 1, 3)),
                       ("logits_order", (0, 1, 3)), ("logits_order_z", (0, 1, 3))):
        if r.get(k) not in allowed:
            _err(f"preprocessing.resampling.{k}: one of {allowed}, found {r.get(k)!r}")
    if not _is_num(r.get("anisotropy_threshold")) or r["anisotropy_threshold"] <= 1:
        _err("preprocessing.resampling.anisotropy_threshold: a number above 1")
    if r.get("force_separate_z", None) not in (None, True, False):
        _err("preprocessing.resampling.force_separate_z: null, true or false")

    inf = card["inference"]
    if not isinstance(inf, dict):
        _err("inference: not an object")
    P = _ints(inf.get("patch_size"), 3, "inference.patch_size", 1)
    for d in range(3):
        prod = 1
        for t in a["strides"]:
            prod *= t[d]
        if P[d] % prod:
            _err(f"inference.patch_size: axis {d} ({P[d]}) is not divisible by the product of "
                 f"the strides ({prod})")
    if not _is_num(inf.get("tile_step")) or not 0 < inf["tile_step"] <= 1:
        _err("inference.tile_step: must be in (0, 1]")
    ma = inf.get("mirror_axes")
    if not isinstance(ma, list) or not all(_is_int(x) and 0 <= x <= 2 for x in ma) or \
            len(set(ma)) != len(ma):
        _err(f"inference.mirror_axes: distinct axes from 0, 1, 2, found {json.dumps(ma)}")
    g = inf.get("gaussian")
    if not isinstance(g, dict) or not _is_num(g.get("sigma_scale")) or g["sigma_scale"] <= 0 \
            or not _is_num(g.get("peak")) or g["peak"] <= 0:
        _err("inference.gaussian: positive sigma_scale and peak are required")
    if not _is_num(inf.get("pad_value")):
        _err("inference.pad_value: a number is required")

    labels = card["labels"]
    if not isinstance(labels, list):
        _err("labels: a list is required")
    ids = []
    for i, lab in enumerate(labels):
        w = f"labels[{i}]"
        if not isinstance(lab, dict):
            _err(f"{w}: not an object")
        for k in ("id", "name", "segment_label", "category", "type", "rgb"):
            if k not in lab:
                _err(f"{w}: missing key {k!r}")
        if not _is_int(lab["id"]):
            _err(f"{w}.id: an integer is required")
        for k in ("name", "segment_label"):
            if not isinstance(lab[k], str) or not lab[k]:
                _err(f"{w}.{k}: a non-empty string is required")
        _dicom_text(lab["segment_label"], f"{w}.segment_label", "LO", 64)
        _code(lab["category"], f"{w}.category")
        _code(lab["type"], f"{w}.type")
        if "modifier" in lab:
            _code(lab["modifier"], f"{w}.modifier")
        _ints(lab["rgb"], 3, f"{w}.rgb", 0, 255)
        if "by_patient_sex" in lab:
            bps = lab["by_patient_sex"]
            if not isinstance(bps, dict) or not set(bps) <= {"M", "F", "O"}:
                _err(f"{w}.by_patient_sex: an object with keys among M, F, O")
            for sex, o in bps.items():
                for k in o:
                    if k not in ("segment_label", "category", "type", "rgb"):
                        _err(f"{w}.by_patient_sex.{sex}: unknown key {k!r}")
                if "category" in o:
                    _code(o["category"], f"{w}.by_patient_sex.{sex}.category")
                if "type" in o:
                    _code(o["type"], f"{w}.by_patient_sex.{sex}.type")
                if "rgb" in o:
                    _ints(o["rgb"], 3, f"{w}.by_patient_sex.{sex}.rgb", 0, 255)
                if "segment_label" in o:
                    if not isinstance(o["segment_label"], str) or not o["segment_label"]:
                        _err(f"{w}.by_patient_sex.{sex}.segment_label: a non-empty string is "
                             f"required")
                    _dicom_text(o["segment_label"], f"{w}.by_patient_sex.{sex}.segment_label",
                                "LO", 64)
        ids.append(lab["id"])
    if sorted(ids) != list(range(1, a["num_classes"])):
        _err(f"labels: ids must be 1..{a['num_classes'] - 1} once each (num_classes - 1 labels),"
             f" found {sorted(ids)}")

    pp = card.get("postprocessing", [])
    if not isinstance(pp, list):
        _err(f"postprocessing: a list of steps is required, found {json.dumps(pp)}")
    for i, step in enumerate(pp):
        ls = step.get("keep_largest_component") if isinstance(step, dict) else None
        if not isinstance(step, dict) or set(step) != {"keep_largest_component"} or \
                not isinstance(ls, list) or not ls or \
                not all(_is_int(x) and 1 <= x < a["num_classes"] for x in ls) or \
                len(set(ls)) != len(ls):
            _err(f"postprocessing[{i}]: expected {{\"keep_largest_component\": [distinct label "
                 f"ids in 1..{a['num_classes'] - 1}]}}, found {json.dumps(step)}")

    prov = card["provenance"]
    if not isinstance(prov, dict) or not isinstance(prov.get("trainer"), str) or \
            not isinstance(prov.get("date"), str):
        _err("provenance: 'trainer' and 'date' strings are required")
    if warn:
        for n_ in notes:
            warnings.warn(n_)
    return notes


def make_card(model, name, version, description, license, preprocessing, inference, labels,
              provenance, members=None):
    """A card for `model` (an MMUNet, PlainConvUNet or ResidualEncoderUNet); the caller gives
    everything but the architecture.
    members: the names of a fold ensemble's members (of model's architecture), or None."""
    arch = model.architecture()
    if members is not None:
        arch["ensemble"] = list(members)
    card = {"schema": SCHEMA, "name": name, "version": version, "description": description,
            "license": license, "architecture": arch,
            "preprocessing": preprocessing, "inference": inference, "labels": labels,
            "provenance": provenance}
    validate_card(card)
    return card


def ensemble_tensors(state_dicts):
    """The tensors of a fold ensemble's file: member i's under "ensemble.<i>."."""
    return {f"{MEMBER_PREFIX}{i}.{k}": v for i, sd in enumerate(state_dicts)
            for k, v in sd.items()}


def member_state_dicts(card, tensors):
    """The state dict of each network of a file read by read_model(): one, or one per member
    of an ensemble, in member order."""
    arch = card["architecture"]
    if "ensemble" not in arch:
        return [tensors]
    out = [{} for _ in arch["ensemble"]]
    for name, t in tensors.items():
        m = re.fullmatch(re.escape(MEMBER_PREFIX) + r"(0|[1-9][0-9]*)\.(.*)", name, re.S)
        out[int(m.group(1))][m.group(2)] = t
    return out


# ------------------------------------------------------------------------------ the file
def write_model(path, tensors, card=None, metadata=None):
    """Write tensors ({name: array-like}) as F32 safetensors with the card in the metadata.

    Tensors are sorted by name and contiguous; the header is padded with spaces so that the
    data starts at a multiple of 64 bytes.  Returns the file's SHA-256 (lowercase hex)."""
    meta = dict(metadata or {})
    meta.setdefault("format", "pt")
    if card is not None:
        meta[CARD_KEY] = json.dumps(card, separators=(",", ":"), sort_keys=False)
    header = {"__metadata__": meta}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        if hasattr(t, "detach"):
            t = t.detach().cpu().numpy()
        a = np.ascontiguousarray(np.asarray(t, dtype="<f4"))
        header[name] = {"dtype": "F32", "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        blobs.append(a.tobytes())
        offset += a.nbytes
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((-(8 + len(hb))) % ALIGN)
    data = struct.pack("<Q", len(hb)) + hb + b"".join(blobs)
    with open(path, "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


def _no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ModelError(f"header: duplicate key {k!r}")
        d[k] = v
    return d


def parse_safetensors(data, where="model"):
    """Split a safetensors image into (metadata, {name: (dtype, shape, begin, end)}, data
    offset), checking rules 1 and 2 of mmunet.md 4.3 before any tensor is touched."""
    size = len(data)
    if size < 8:
        _err(f"{where}: file of {size} bytes is shorter than the 8-byte header length")
    (nh,) = struct.unpack_from("<Q", data, 0)
    if nh > min(size - 8, HEADER_MAX):
        _err(f"{where}: header length {nh} exceeds the file ({size} bytes) or 100 MB")
    raw = bytes(data[8:8 + nh])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        _err(f"{where}: header is not valid UTF-8 ({e})")
    body = text.rstrip(" ")
    if not body.startswith("{"):
        _err(f"{where}: header does not start with '{{'")
    try:
        obj, end = json.JSONDecoder(object_pairs_hook=_no_duplicates).raw_decode(body)
    except json.JSONDecodeError as e:
        _err(f"{where}: header is not JSON ({e.msg} at {e.pos})")
    if end != len(body):
        _err(f"{where}: header has text after its JSON object other than spaces")
    if not isinstance(obj, dict):
        _err(f"{where}: header is not a JSON object")
    meta = obj.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        _err(f"{where}: __metadata__ must map strings to strings")
    dsize = size - 8 - nh
    entries = {}
    for name, e in obj.items():
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            _err(f"{where}: tensor {name!r}: entry needs exactly dtype, shape, data_offsets")
        dt = e["dtype"]
        if dt not in DTYPES:
            _err(f"{where}: tensor {name!r}: dtype {dt} is not F32, F16 or BF16")
        shape = e["shape"]
        if not isinstance(shape, list) or len(shape) > 5 or \
                not all(_is_int(d) and d >= 0 for d in shape):
            _err(f"{where}: tensor {name!r}: bad shape {json.dumps(shape)} (rank <= 5, dims >= 0)")
        count = 1
        for d in shape:
            count *= d
            if count >= 1 << 62:
                _err(f"{where}: tensor {name!r}: element count overflows")
        off = e["data_offsets"]
        if not isinstance(off, list) or len(off) != 2 or not all(_is_int(o) for o in off):
            _err(f"{where}: tensor {name!r}: data_offsets must be two integers")
        b, en = off
        if not 0 <= b <= en <= dsize:
            _err(f"{where}: tensor {name!r}: offsets [{b}, {en}] outside the data ({dsize} bytes)")
        if en - b != count * DTYPES[dt][1]:
            _err(f"{where}: tensor {name!r}: {en - b} bytes for {count} {dt} elements")
        entries[name] = (dt, tuple(shape), b, en)
    pos = 0
    for name, (dt, shape, b, en) in sorted(entries.items(), key=lambda kv: (kv[1][2], kv[1][3])):
        if b != pos:
            _err(f"{where}: tensor {name!r}: data at {b}, expected {pos} "
                 f"({'overlap' if b < pos else 'hole'})")
        pos = en
    if pos != dsize:
        _err(f"{where}: tensors end at {pos}, the data is {dsize} bytes")
    return meta, entries, 8 + nh


def _to_f32(buf, dt, shape):
    if dt == "F32":
        return np.frombuffer(buf, dtype="<f4").reshape(shape).copy()
    if dt == "F16":
        return np.frombuffer(buf, dtype="<f2").astype(np.float32).reshape(shape)
    u = np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16
    return u.view(np.float32).reshape(shape)


def read_model(path, check_card=True):
    """Load and check a model file.  Returns (card, {name: float32 array}, sha256 hex).

    Rules 1-4 of mmunet.md 4.3; rule 5 (the card) when check_card.  Raises ModelError."""
    with open(path, "rb") as f:
        data = f.read()
    where = str(path)
    meta, entries, start = parse_safetensors(data, where)
    if CARD_KEY not in meta:
        _err(f"{where}: no model card (__metadata__ key {CARD_KEY!r})")
    try:
        card = json.loads(meta[CARD_KEY], object_pairs_hook=_no_duplicates)
    except (json.JSONDecodeError, ModelError) as e:
        _err(f"{where}: model card is not valid JSON ({e})")
    if check_card:
        try:
            validate_card(card)
        except ModelError as e:
            _err(f"{where}: {e}")
    tensors = {}
    for name, (dt, shape, b, en) in entries.items():
        a = _to_f32(data[start + b:start + en], dt, shape)
        if not np.all(np.isfinite(a)):
            _err(f"{where}: tensor {name!r}: NaN or infinite value")
        tensors[name] = a
    if check_card:
        arch = card["architecture"]
        want = model_tensors(arch)
        ignorable = arch["ignorable_tensors"]
        for name in sorted(want):
            if name not in tensors:
                _err(f"{where}: missing tensor {name!r}")
            if tuple(tensors[name].shape) != tuple(want[name]):
                _err(f"{where}: tensor {name!r}: shape {list(tensors[name].shape)}, expected "
                     f"{list(want[name])}")
        for name in sorted(tensors):
            if name not in want:
                rest = member_rest(arch, name)
                if rest is not None and any(glob_match(g, rest) for g in ignorable):
                    del tensors[name]
                else:
                    _err(f"{where}: unexpected tensor {name!r}")
    return card, tensors, hashlib.sha256(data).hexdigest()


def load_network(path, dtype=None):
    """The reference network of a model file (MMUNet, PlainConvUNet or ResidualEncoderUNet,
    by the card's family; an Ensemble of them for a fold ensemble) with its weights, in eval
    mode."""
    import torch
    try:
        from .model import Ensemble, network_from_architecture
    except ImportError:
        from model import Ensemble, network_from_architecture
    card, tensors, sha = read_model(path)
    nets = []
    for sd in member_state_dicts(card, tensors):
        net = network_from_architecture(card["architecture"])
        net.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
        nets.append(net)
    net = nets[0] if len(nets) == 1 else Ensemble(nets)
    if dtype is not None:
        net = net.to(dtype)
    return net.eval(), card, sha



def main(argv):
    if len(argv) != 3 or argv[1] != "info":
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    try:
        card, tensors, sha = read_model(argv[2])
    except (ModelError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(card, indent=2))
    members = card["architecture"].get("ensemble")
    if members:
        print(f"ensemble: {len(members)} members ({', '.join(members)}), logits averaged")
    n = sum(t.size for t in tensors.values())
    print(f"tensors: {len(tensors)}, parameters: {n}, bytes: {4 * n}")
    print(f"sha256: {sha}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
