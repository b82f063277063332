"""MM-UNet in PyTorch: the reference network of mmunet.md section 2.

The module tree gives the parameter names of section 2.7 directly (state_dict() keys are
the tensor names of the model file), so export needs no renaming:

    stem.blocks.{b}.                     ResBlocks of the stem
    encoder.stages.{s}.blocks.{b}.       ResBlocks or MetaBlocks
    decoder.levels.{j}.up.               1x1x1 convolution of the upsampling path
    decoder.levels.{j}.blocks.{b}.       ResBlocks
    decoder.ds_heads.{j}.                deep-supervision heads (training only)
    head.                                the segmentation head

Activations are (batch, C, D, H, W).  The constructor also accepts the keyword arguments
that nnU-Net v2's get_network_from_plans passes (input_channels, num_classes,
deep_supervision and the plan's architecture kwargs); see `from_nnunet_plan`.

PlainConvUNet and ResidualEncoderUNet are nnU-Net v2's standard networks (README, "nnU-Net's
standard networks"), written here from that description with the canonical tensor names of
dynamic_network_architectures' networks; `canonical_nnunet_state_dict` reduces a trained
state dict to them, and `network_from_architecture` builds any family from a card.
"""

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

try:
    from .mamba import Mamba
except ImportError:  # run as a plain script from tools/mmunet
    from mamba import Mamba

MIXER_DEFAULTS = {
    "type": "bimamba",
    "biscan": "separate",
    "merge_scale": 1.0,
    "inner_residual": False,
    "mamba_stages": None,          # None = every stage, 0..S-1
    "mamba_blocks": "all",
    "ln_eps": 1e-5,
    "d_state": 16,
    "d_conv": 4,
    "expand": 2,
    "dt_rank": "auto",
}
BISCANS = ("separate", "shared", "vim_v2")


def default_blocks(n_stages):
    """mmunet.md 2.2: 2 blocks for s < ceil(S/2), else 1; the decoder likewise per level."""
    half = math.ceil(n_stages / 2)
    enc = [2 if s < half else 1 for s in range(n_stages)]
    dec = [2 if j < half else 1 for j in range(n_stages - 1)]
    return enc, dec


class BiMamba(nn.Module):
    """LN over channels per token, then the bidirectional Mamba of mmunet.md 2.4."""

    def __init__(self, channels, mixer):
        super().__init__()
        self.biscan = mixer["biscan"]
        self.alpha = float(mixer["merge_scale"])
        self.norm = nn.LayerNorm(channels, eps=mixer["ln_eps"])
        kw = dict(d_state=mixer["d_state"], d_conv=mixer["d_conv"], expand=mixer["expand"],
                  dt_rank=mixer["dt_rank"])
        if self.biscan == "separate":
            self.mamba_f = Mamba(channels, **kw)
            self.mamba_b = Mamba(channels, **kw)
        elif self.biscan == "shared":
            self.mamba = Mamba(channels, **kw)
        elif self.biscan == "vim_v2":
            self.mamba = Mamba(channels, bimamba_v2=True, merge_scale=self.alpha, **kw)
        else:
            raise ValueError(f"unknown biscan {self.biscan!r}")

    def forward(self, h, taps=None):
        """h: (b, C, D, H, W) -> M untokenised, same shape."""
        b, c, d, hh, w = h.shape
        u = self.norm(h.flatten(2).transpose(1, 2))                   # tokens, (b, L, C)
        if self.biscan == "separate":
            m = self.alpha * (self.mamba_f(u, taps) + self.mamba_b(u.flip(1)).flip(1))
        elif self.biscan == "shared":
            m = self.alpha * (self.mamba(u, taps) + self.mamba(u.flip(1)).flip(1))
        else:
            m = self.mamba(u, taps)
        if taps is not None:
            taps["ln"] = u
            taps["mixer"] = m
        return m.transpose(1, 2).reshape(b, c, d, hh, w)


class Block(nn.Module):
    """ResBlock, or MetaBlock when `mixer` is given (mmunet.md 2.3)."""

    def __init__(self, cin, cout, kernel, stride, eps, slope, mixer=None):
        super().__init__()
        pad = [k // 2 for k in kernel]
        self.slope = slope
        self.conv1 = nn.Conv3d(cin, cout, kernel, stride, pad, bias=True)
        self.norm1 = nn.InstanceNorm3d(cout, eps=eps, affine=True)
        self.conv2 = nn.Conv3d(cout, cout, kernel, 1, pad, bias=True)
        self.norm2 = nn.InstanceNorm3d(cout, eps=eps, affine=True)
        if cin != cout or any(s != 1 for s in stride):
            self.proj = nn.Conv3d(cin, cout, 1, stride, 0, bias=True)
        else:
            self.proj = None
        self.inner_residual = bool(mixer and mixer["inner_residual"])
        self.mixer = BiMamba(cout, mixer) if mixer else None

    def forward(self, x, taps=None):
        h1 = F.leaky_relu(self.norm1(self.conv1(x)), self.slope)
        h2 = self.norm2(self.conv2(h1))
        skip = x if self.proj is None else self.proj(x)
        if self.mixer is None:
            return F.leaky_relu(h2 + skip, self.slope)
        r = self.mixer(h2, taps)
        if self.inner_residual:
            r = r + h2
        return F.leaky_relu(r + skip, self.slope)


class _Blocks(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)


class _Level(nn.Module):
    def __init__(self, up, blocks):
        super().__init__()
        self.up = up
        self.blocks = nn.ModuleList(blocks)


class _Encoder(nn.Module):
    def __init__(self, stages):
        super().__init__()
        self.stages = nn.ModuleList(stages)


class _Decoder(nn.Module):
    def __init__(self, levels, ds_heads):
        super().__init__()
        self.levels = nn.ModuleList(levels)
        if ds_heads is not None:
            self.ds_heads = nn.ModuleList(ds_heads)


def nearest_up(x, stride):
    """out[i] = in[floor(i / t)] per axis: each voxel repeated t_d times along axis d."""
    for axis, t in enumerate(stride):
        if t != 1:
            x = x.repeat_interleave(int(t), dim=2 + axis)
    return x


class MMUNet(nn.Module):
    """The network of mmunet.md section 2, built from the card's `architecture` values."""

    # Keyword arguments of nnU-Net v2 plans that this class accepts and does not need: its
    # convolutions, norms and nonlinearity are fixed by mmunet.md (validated below).
    _NNUNET_KWARGS = ("conv_op", "conv_bias", "norm_op", "norm_op_kwargs", "dropout_op",
                      "dropout_op_kwargs", "nonlin", "nonlin_kwargs", "n_conv_per_stage",
                      "n_conv_per_stage_decoder", "n_blocks_per_stage", "bottleneck_channels",
                      "stem_channels")

    def __init__(self, input_channels, num_classes, n_stages, features_per_stage, kernel_sizes,
                 strides, n_blocks_encoder=None, n_blocks_decoder=None, stem_blocks=None,
                 mixer=None, norm_eps=1e-5, negative_slope=0.01, deep_supervision=False,
                 **nnunet_kwargs):
        super().__init__()
        unknown = set(nnunet_kwargs) - set(self._NNUNET_KWARGS)
        if unknown:
            raise TypeError(f"MMUNet: unexpected arguments {sorted(unknown)}")
        conv_op = nnunet_kwargs.get("conv_op")
        if conv_op is not None and conv_op is not nn.Conv3d and \
                getattr(conv_op, "__name__", str(conv_op)).split(".")[-1] != "Conv3d":
            raise ValueError(f"MMUNet is 3D only, not {conv_op}")
        S = int(n_stages)
        if isinstance(features_per_stage, int):
            features_per_stage = [features_per_stage] * S
        enc_default, dec_default = default_blocks(S)
        self.in_channels = int(input_channels)
        self.num_classes = int(num_classes)
        self.n_stages = S
        self.features = [int(f) for f in features_per_stage]
        self.kernels = [[int(k) for k in ks] for ks in kernel_sizes]
        self.strides = [[int(t) for t in (st if isinstance(st, (list, tuple)) else [st] * 3)]
                        for st in strides]
        self.n_blocks_encoder = list(n_blocks_encoder or enc_default)
        self.n_blocks_decoder = list(n_blocks_decoder or dec_default)
        self.stem_blocks = int(stem_blocks or self.n_blocks_encoder[0])
        self.norm_eps = float(norm_eps)
        self.slope = float(negative_slope)
        self.deep_supervision = bool(deep_supervision)
        mx = copy.deepcopy(MIXER_DEFAULTS)
        mx.update(mixer or {})
        if mx["mamba_stages"] is None:
            mx["mamba_stages"] = list(range(S))
        if mx["biscan"] not in BISCANS:
            raise ValueError(f"unknown biscan {mx['biscan']!r}")
        if mx["mamba_blocks"] not in ("all", "last"):
            raise ValueError(f"unknown mamba_blocks {mx['mamba_blocks']!r}")
        self.mixer_cfg = mx
        if len(self.features) != S or len(self.kernels) != S or len(self.strides) != S:
            raise ValueError("features_per_stage, kernel_sizes and strides need n_stages entries")
        if self.strides[0] != [1, 1, 1]:
            raise ValueError("strides[0] must be (1, 1, 1)")

        F_, K, T = self.features, self.kernels, self.strides
        eps, slope = self.norm_eps, self.slope
        self.stem = _Blocks(
            [Block(self.in_channels if b == 0 else F_[0], F_[0], K[0], [1, 1, 1], eps, slope)
             for b in range(self.stem_blocks)])
        stages = []
        for s in range(S):
            cin = F_[s - 1] if s > 0 else F_[0]
            nb = self.n_blocks_encoder[s]
            blocks = []
            for b in range(nb):
                hybrid = s in mx["mamba_stages"] and (mx["mamba_blocks"] == "all" or b == nb - 1)
                blocks.append(Block(cin if b == 0 else F_[s], F_[s], K[s],
                                    T[s] if b == 0 else [1, 1, 1], eps, slope,
                                    mx if hybrid else None))
            stages.append(_Blocks(blocks))
        self.encoder = _Encoder(stages)
        levels = []
        for j in range(S - 1):
            a, b_ = S - 1 - j, S - 2 - j
            up = nn.Conv3d(F_[a], F_[b_], 1, 1, 0, bias=True)
            blocks = [Block(2 * F_[b_] if i == 0 else F_[b_], F_[b_], K[b_], [1, 1, 1], eps, slope)
                      for i in range(self.n_blocks_decoder[j])]
            levels.append(_Level(up, blocks))
        ds = None
        if self.deep_supervision:
            ds = [nn.Conv3d(F_[S - 2 - j], self.num_classes, 1, 1, 0, bias=True)
                  for j in range(S - 2)]
        self.decoder = _Decoder(levels, ds)
        self.head = nn.Conv3d(F_[0], self.num_classes, 1, 1, 0, bias=True)

    # --------------------------------------------------------------------------- forward
    def forward(self, x, taps=None):
        """x: (b, in_channels, D, H, W) -> logits (b, num_classes, D, H, W).

        With deep_supervision, a list: the full-resolution logits first, then one per
        coarser decoder level (nnU-Net's order).  `taps`, a dict, receives every block's
        output by its name prefix, and the first MetaBlock's LN output, mixer output, delta
        and pre-gate y (mmunet.md 7, V1 goldens).
        """
        def run(block, h, name):
            sub = {} if taps is not None else None
            out = block(h, sub)
            if taps is not None:
                taps[name] = out
                if sub and "mamba" not in taps:
                    taps["mamba"] = name
                    for k, v in sub.items():
                        taps[name + "." + k] = v
            return out

        h = x
        for b, blk in enumerate(self.stem.blocks):
            h = run(blk, h, f"stem.blocks.{b}")
        skips = []
        for s, stage in enumerate(self.encoder.stages):
            for b, blk in enumerate(stage.blocks):
                h = run(blk, h, f"encoder.stages.{s}.blocks.{b}")
            skips.append(h)
        z = skips[-1]
        outs = []
        for j, level in enumerate(self.decoder.levels):
            a, b_ = self.n_stages - 1 - j, self.n_stages - 2 - j
            up = nearest_up(level.up(z), self.strides[a])   # conv first: same values, fewer FLOPs
            if taps is not None:
                taps[f"decoder.levels.{j}.up"] = up
            z = torch.cat([up, skips[b_]], dim=1)
            for i, blk in enumerate(level.blocks):
                z = run(blk, z, f"decoder.levels.{j}.blocks.{i}")
            if self.deep_supervision and j < self.n_stages - 2:
                outs.append(self.decoder.ds_heads[j](z))
        logits = self.head(z)
        if taps is not None:
            taps["logits"] = logits
        if self.deep_supervision:
            return [logits] + outs[::-1]
        return logits

    def set_chunked_scan(self, chunked):
        """Choose the chunked (default) or the sequential selective scan everywhere."""
        for m in self.modules():
            if isinstance(m, Mamba):
                m.chunked = chunked

    def set_scan_group(self, tokens):
        """Run the chunked scan on groups of `tokens` tokens, carrying the state from group to
        group (None, the default: the whole sequence at once).  Same result up to rounding;
        the scan's workspace becomes O(tokens) instead of O(L)."""
        if tokens is not None and int(tokens) < 1:
            raise ValueError(f"scan group must be >= 1 token, not {tokens}")
        for m in self.modules():
            if isinstance(m, Mamba):
                m.scan_group = None if tokens is None else int(tokens)

    # --------------------------------------------------------------------------- card
    def architecture(self):
        """The card's `architecture` object for this network (mmunet.md 4.2)."""
        mx = {k: self.mixer_cfg[k] for k in MIXER_DEFAULTS}
        mx["mamba_stages"] = sorted(int(s) for s in mx["mamba_stages"])
        return {
            "family": "mmunet",
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "n_stages": self.n_stages,
            "features_per_stage": self.features,
            "kernel_sizes": self.kernels,
            "strides": self.strides,
            "n_blocks_encoder": self.n_blocks_encoder,
            "n_blocks_decoder": self.n_blocks_decoder,
            "stem_blocks": self.stem_blocks,
            "norm": {"type": "instance", "eps": self.norm_eps, "affine": True},
            "nonlin": {"type": "leaky_relu", "negative_slope": self.slope},
            "decoder": "residual_nearest",
            "mixer": mx,
            "ignorable_tensors": ["decoder.ds_heads.*"],
        }

    @classmethod
    def from_architecture(cls, arch, deep_supervision=False):
        """Build the network a card's `architecture` describes (validated by the caller)."""
        return cls(arch["in_channels"], arch["num_classes"], arch["n_stages"],
                   arch["features_per_stage"], arch["kernel_sizes"], arch["strides"],
                   arch["n_blocks_encoder"], arch["n_blocks_decoder"], arch["stem_blocks"],
                   mixer=arch["mixer"], norm_eps=arch["norm"]["eps"],
                   negative_slope=arch["nonlin"]["negative_slope"],
                   deep_supervision=deep_supervision)


class Ensemble(nn.Module):
    """A fold ensemble (model card architecture.ensemble): the members' logits added in
    member order and divided by their count, as nnU-Net's predictor averages the logits of
    its parameter sets. `taps` receives the first member's."""

    def __init__(self, nets):
        super().__init__()
        self.members = nn.ModuleList(nets)

    def forward(self, x, taps=None):
        out = None
        for i, m in enumerate(self.members):
            y = m(x, taps if i == 0 else None)
            out = y if out is None else out + y
        return out / len(self.members)



# ------------------------------------------------------------------------------ nnU-Net's networks
# PlainConvUNet and ResidualEncoderUNet as dynamic_network_architectures builds them from a
# plan's arch_kwargs (README, "nnU-Net's standard networks"), written here from that
# description: the module tree gives the canonical tensor names of the trained network,
# without the aliases (`*.all_modules.*`, `decoder.encoder.*`) and without the
# deep-supervision heads.

NNUNET_FAMILIES = ("PlainConvUNet", "ResidualEncoderUNet")


def _triple(v, n):
    """n entries of 3 ints from an int, a triple or a list of either (nnU-Net's spellings)."""
    if isinstance(v, int):
        v = [v] * n
    return [[int(x) for x in (e if isinstance(e, (list, tuple)) else [e] * 3)] for e in v]


class _CNR(nn.Module):
    """Conv (k, stride t, padding k//2) -> InstanceNorm (affine) [-> LeakyReLU]: the names
    `conv` and `norm` of dynamic_network_architectures' ConvDropoutNormReLU."""

    def __init__(self, cin, cout, kernel, stride, bias, eps, slope, nonlin=True):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, kernel, stride, [k // 2 for k in kernel], bias=bias)
        self.norm = nn.InstanceNorm3d(cout, eps=eps, affine=True)
        self.slope = slope if nonlin else None

    def forward(self, x):
        h = self.norm(self.conv(x))
        return h if self.slope is None else F.leaky_relu(h, self.slope)


class _Convs(nn.Module):
    """A stack of CNRs named `convs.<i>`, the first cin -> cout with the stride."""

    def __init__(self, n, cin, cout, kernel, stride, bias, eps, slope):
        super().__init__()
        self.convs = nn.ModuleList(
            [_CNR(cin if i == 0 else cout, cout, kernel, stride if i == 0 else [1, 1, 1], bias,
                  eps, slope) for i in range(n)])

    def forward(self, x):
        for c in self.convs:
            x = c(x)
        return x


class _BasicBlock(nn.Module):
    """out = LReLU(IN(conv2(CNR_conv1(x))) + skip(x)); skip: identity, or AvgPool(t, t) when
    the stride is not 1, then a 1x1x1 conv (no bias) and IN when the channels change."""

    def __init__(self, cin, cout, kernel, stride, bias, eps, slope):
        super().__init__()
        self.slope = slope
        self.conv1 = _CNR(cin, cout, kernel, stride, bias, eps, slope)
        self.conv2 = _CNR(cout, cout, kernel, [1, 1, 1], bias, eps, slope, nonlin=False)
        ops = []
        if any(t != 1 for t in stride):
            ops.append(nn.AvgPool3d(stride, stride))
        if cin != cout:
            ops.append(_CNR(cin, cout, [1, 1, 1], [1, 1, 1], False, eps, slope, nonlin=False))
        self.skip = nn.Sequential(*ops) if ops else None

    def forward(self, x):
        r = x if self.skip is None else self.skip(x)
        return F.leaky_relu(self.conv2(self.conv1(x)) + r, self.slope)


class _ResStage(nn.Module):
    def __init__(self, n, cin, cout, kernel, stride, bias, eps, slope):
        super().__init__()
        self.blocks = nn.ModuleList(
            [_BasicBlock(cin if i == 0 else cout, cout, kernel, stride if i == 0 else [1, 1, 1],
                         bias, eps, slope) for i in range(n)])

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x


class _NnunetEncoder(nn.Module):
    def __init__(self, stem, stages):
        super().__init__()
        if stem is not None:
            self.stem = stem
        self.stages = nn.ModuleList(stages)


class _NnunetDecoder(nn.Module):
    def __init__(self, transpconvs, stages, head_index, head):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.transpconvs = nn.ModuleList(transpconvs)
        # Only the full-resolution head, under its index in the trained network (S-2).
        self.seg_layers = nn.ModuleDict({str(head_index): head})


class _NnunetUNet(nn.Module):
    """What PlainConvUNet and ResidualEncoderUNet share: the card's fields, the decoder
    (transposed convolution, concatenation before the skip, CNRs) and the head."""

    FAMILY = None
    ENCODER_KEY = None       # the card's key of the per-stage counts

    def __init__(self, input_channels, num_classes, n_stages, features_per_stage, kernel_sizes,
                 strides, n_per_stage, n_conv_per_stage_decoder, conv_bias=True, norm_eps=1e-5,
                 negative_slope=0.01):
        super().__init__()
        S = int(n_stages)
        if isinstance(features_per_stage, int):
            features_per_stage = [features_per_stage] * S
        if isinstance(n_per_stage, int):
            n_per_stage = [n_per_stage] * S
        if isinstance(n_conv_per_stage_decoder, int):
            n_conv_per_stage_decoder = [n_conv_per_stage_decoder] * (S - 1)
        self.in_channels = int(input_channels)
        self.num_classes = int(num_classes)
        self.n_stages = S
        self.features = [int(f) for f in features_per_stage]
        self.kernels = _triple(kernel_sizes, S)
        self.strides = _triple(strides, S)
        self.n_per_stage = [int(n) for n in n_per_stage]
        self.n_conv_decoder = [int(n) for n in n_conv_per_stage_decoder]
        self.conv_bias = bool(conv_bias)
        self.norm_eps = float(norm_eps)
        self.slope = float(negative_slope)
        if len(self.features) != S or len(self.kernels) != S or len(self.strides) != S or \
                len(self.n_per_stage) != S:
            raise ValueError(f"features_per_stage, kernel_sizes, strides and {self.ENCODER_KEY} "
                             f"need n_stages entries")
        if len(self.n_conv_decoder) != S - 1:
            raise ValueError("n_conv_per_stage_decoder needs n_stages - 1 entries")
        if self.strides[0] != [1, 1, 1]:
            raise ValueError("strides[0] must be (1, 1, 1)")
        self.encoder = self._make_encoder()
        F_, K, T = self.features, self.kernels, self.strides
        ups, stages = [], []
        for j in range(S - 1):
            a, b = S - 1 - j, S - 2 - j
            ups.append(nn.ConvTranspose3d(F_[a], F_[b], T[a], T[a], bias=self.conv_bias))
            stages.append(_Convs(self.n_conv_decoder[j], 2 * F_[b], F_[b], K[b], [1, 1, 1],
                                 self.conv_bias, self.norm_eps, self.slope))
        head = nn.Conv3d(F_[0], self.num_classes, 1, 1, 0, bias=True)
        self.decoder = _NnunetDecoder(ups, stages, S - 2, head)

    def _make_encoder(self):
        raise NotImplementedError

    def forward(self, x, taps=None):
        """x: (b, in_channels, D, H, W) -> logits (b, num_classes, D, H, W).  `taps`, a dict,
        receives the output of the stem, of every encoder stage (the skips), of every
        transposed convolution and decoder stage, and the logits."""
        enc, dec = self.encoder, self.decoder
        h = x
        if hasattr(enc, "stem"):
            h = enc.stem(h)
            if taps is not None:
                taps["encoder.stem"] = h
        skips = []
        for s, stage in enumerate(enc.stages):
            h = stage(h)
            skips.append(h)
            if taps is not None:
                taps[f"encoder.stages.{s}"] = h
        z = skips[-1]
        for j in range(self.n_stages - 1):
            up = dec.transpconvs[j](z)
            z = dec.stages[j](torch.cat([up, skips[self.n_stages - 2 - j]], dim=1))
            if taps is not None:
                taps[f"decoder.transpconvs.{j}"] = up
                taps[f"decoder.stages.{j}"] = z
        logits = dec.seg_layers[str(self.n_stages - 2)](z)
        if taps is not None:
            taps["logits"] = logits
        return logits

    def set_chunked_scan(self, chunked):
        """No selective scan in this network: nothing to choose."""

    def set_scan_group(self, tokens):
        """No selective scan in this network: nothing to group."""

    def architecture(self):
        """The card's `architecture` object for this network."""
        return {
            "family": self.FAMILY,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "n_stages": self.n_stages,
            "features_per_stage": list(self.features),
            "kernel_sizes": [list(k) for k in self.kernels],
            "strides": [list(t) for t in self.strides],
            self.ENCODER_KEY: list(self.n_per_stage),
            "n_conv_per_stage_decoder": list(self.n_conv_decoder),
            "conv_bias": self.conv_bias,
            "norm": {"type": "instance", "eps": self.norm_eps, "affine": True},
            "nonlin": {"type": "leaky_relu", "negative_slope": self.slope},
            "ignorable_tensors": [],
        }

    @classmethod
    def from_architecture(cls, arch):
        """Build the network a card's `architecture` describes (validated by the caller)."""
        return cls(arch["in_channels"], arch["num_classes"], arch["n_stages"],
                   arch["features_per_stage"], arch["kernel_sizes"], arch["strides"],
                   arch[cls.ENCODER_KEY], arch["n_conv_per_stage_decoder"],
                   conv_bias=arch["conv_bias"], norm_eps=arch["norm"]["eps"],
                   negative_slope=arch["nonlin"]["negative_slope"])


class PlainConvUNet(_NnunetUNet):
    """nnU-Net's default network: stage s is n_conv_per_stage[s] CNRs, the first with the
    stride (tensors encoder.stages.<s>.0.convs.<i>.{conv,norm})."""

    FAMILY = "PlainConvUNet"
    ENCODER_KEY = "n_conv_per_stage"

    def __init__(self, input_channels, num_classes, n_stages, features_per_stage, kernel_sizes,
                 strides, n_conv_per_stage, n_conv_per_stage_decoder, conv_bias=True,
                 norm_eps=1e-5, negative_slope=0.01):
        super().__init__(input_channels, num_classes, n_stages, features_per_stage,
                         kernel_sizes, strides, n_conv_per_stage, n_conv_per_stage_decoder,
                         conv_bias, norm_eps, negative_slope)

    def _make_encoder(self):
        F_, K, T = self.features, self.kernels, self.strides
        return _NnunetEncoder(None, [
            nn.Sequential(_Convs(self.n_per_stage[s], F_[s - 1] if s else self.in_channels,
                                 F_[s], K[s], T[s], self.conv_bias, self.norm_eps, self.slope))
            for s in range(self.n_stages)])


class ResidualEncoderUNet(_NnunetUNet):
    """The ResEnc M/L/XL plans' network: a stem CNR, then n_blocks_per_stage[s] residual
    blocks per stage (tensors encoder.stem.convs.0, encoder.stages.<s>.blocks.<i>), and
    PlainConvUNet's decoder."""

    FAMILY = "ResidualEncoderUNet"
    ENCODER_KEY = "n_blocks_per_stage"

    def __init__(self, input_channels, num_classes, n_stages, features_per_stage, kernel_sizes,
                 strides, n_blocks_per_stage, n_conv_per_stage_decoder, conv_bias=True,
                 norm_eps=1e-5, negative_slope=0.01):
        super().__init__(input_channels, num_classes, n_stages, features_per_stage,
                         kernel_sizes, strides, n_blocks_per_stage, n_conv_per_stage_decoder,
                         conv_bias, norm_eps, negative_slope)

    def _make_encoder(self):
        F_, K, T = self.features, self.kernels, self.strides
        eps, slope, bias = self.norm_eps, self.slope, self.conv_bias
        stem = _Convs(1, self.in_channels, F_[0], K[0], [1, 1, 1], bias, eps, slope)
        return _NnunetEncoder(stem, [
            _ResStage(self.n_per_stage[s], F_[s - 1] if s else F_[0], F_[s], K[s], T[s], bias,
                      eps, slope) for s in range(self.n_stages)])


FAMILIES = {"mmunet": MMUNet, "PlainConvUNet": PlainConvUNet,
            "ResidualEncoderUNet": ResidualEncoderUNet}


def network_from_architecture(arch):
    """The reference network of a card's `architecture` (validated by the caller), by its
    family: MMUNet, PlainConvUNet or ResidualEncoderUNet."""
    return FAMILIES[arch["family"]].from_architecture(arch)


def canonical_nnunet_state_dict(sd, arch):
    """The state dict of a dynamic_network_architectures PlainConvUNet or ResidualEncoderUNet
    (nnU-Net's checkpoint "network_weights") reduced to the tensors of the model file, the
    names of this module's networks: drops the aliases its modules register twice
    (`*.all_modules.*`, `decoder.encoder.*`) and the deep-supervision heads
    `decoder.seg_layers.<j>` for j < S-2 (`arch`: the card's architecture, for S).
    Everything else passes unchanged, so that the loaders name anything unexpected; a DDP
    `module.` or torch.compile `_orig_mod.` prefix is the caller's to remove first
    (export_nnunet.clean_state_dict).  The values are not copied."""
    keep_head = f"decoder.seg_layers.{arch['n_stages'] - 2}."
    out = {}
    for k, v in sd.items():
        if ".all_modules." in k or k.startswith("all_modules.") or \
                k.startswith("decoder.encoder."):
            continue
        if k.startswith("decoder.seg_layers.") and not k.startswith(keep_head):
            continue
        out[k] = v
    return out


def init_reference_weights(model, seed):
    """Deterministic random weights for fixtures (mmunet.md 7, V1): every tensor drawn from a
    seeded generator, norm affines away from (1, 0), A_log = log(1..N) + noise and dt biases
    whose softplus is uniform in [1e-3, 0.1]."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            leaf = name.rsplit(".", 1)[-1]
            parent = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else ""
            if leaf in ("A_log", "A_b_log"):
                n = p.shape[1]
                base = torch.log(torch.arange(1, n + 1, dtype=torch.float64)).repeat(p.shape[0], 1)
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64))
            elif leaf in ("D", "D_b"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g, dtype=torch.float64))
            elif leaf == "bias" and parent.startswith("dt_proj"):
                dt = 1e-3 + (0.1 - 1e-3) * torch.rand(p.shape, generator=g, dtype=torch.float64)
                p.copy_(dt + torch.log(-torch.expm1(-dt)))
            elif parent.startswith("norm") or parent == "norm":
                if leaf == "weight":
                    p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64))
                else:
                    p.copy_(0.2 * torch.randn(p.shape, generator=g, dtype=torch.float64))
            elif leaf == "weight":
                fan_in = max(1, p[0].numel())
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) / math.sqrt(fan_in))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return model
