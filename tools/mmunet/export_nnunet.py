"""Export a network trained with nnU-Net v2 to the model file of mmunet.md section 4.

    python3 tools/mmunet/export_nnunet.py RESULTS_DIR -o model.safetensors
        [--folds 0 1 ...] [--checkpoint checkpoint_final.pth] [--name NAME]
        [--version VERSION] [--orientation RAS|LPS] [--license LICENSE] [--description TEXT]
        [--postprocessing FILE|none]

RESULTS_DIR is a trainer's output folder, nnUNet_results/DatasetXXX_Name/TRAINER__PLANS__CONF,
holding plans.json, dataset.json and fold_X/checkpoint_final.pth (or checkpoint_best.pth).
Several folds become a fold ensemble (model card architecture.ensemble, members "fold_X"):
each fold's network is kept whole and mmsegd averages their logits, as nnU-Net's predictor
does with the folds it is given.  Weights of different folds are never averaged: networks
trained from different random starts do not average into a working one.  The default is every
fold that has the checkpoint.

The network (the card's architecture.family):
  mmunet               the trainer is nnUNetTrainerMMUNet or a subclass (nnunet_trainer.py): the
                       MM-UNet of the plan by the rules of nnunet_trainer.py, as in training;
                       the deep-supervision heads (decoder.ds_heads.*) are dropped
  PlainConvUNet        any other trainer: the plan's network_class_name is
  ResidualEncoderUNet  dynamic_network_architectures' PlainConvUNet (nnUNetPlans, the default
                       nnUNetTrainer) or ResidualEncoderUNet (the ResEnc M/L/XL plans,
                       nnUNetResEncUNet{M,L,XL}Plans).  The plan's arch_kwargs give the card's
                       n_stages, features_per_stage, kernel_sizes, strides, n_conv_per_stage (or
                       n_blocks_per_stage), n_conv_per_stage_decoder and conv_bias; the
                       checkpoint's state dict loses the aliases dynamic_network_architectures
                       registers twice (*.all_modules.*, decoder.encoder.*) and the
                       deep-supervision heads, and must then be exactly the card's tensors
The exporter refuses, naming the reason: another network class (or a trainer that builds
another network: its tensors do not fit), a 2d configuration (mmsegd's engine is 3D only),
3d_cascade_fullres (it takes the 3d_lowres segmentation as extra input channels), a norm other
than InstanceNorm3d (affine, eps 1e-5, no running statistics), a nonlinearity other than
LeakyReLU (slope 0.01), ResidualEncoderUNet's bottleneck blocks or another stem width,
PlainConvUNet's nonlin_first, and any arch_kwargs key it does not know.  Dropout is accepted:
nnU-Net predicts in eval mode, where dropout is the identity.  3d_fullres and 3d_lowres (on
its own: a 3D network at the lower resolution) work.

The card (mmunet.md 4.2) comes from:
  architecture   the plan (above)
  preprocessing  the plan: spacing (in the transposed frame) -> target_spacing, transpose_forward
                 and _backward, CT normalisation from foreground_intensity_properties_per_channel
                 of channel 0 (percentile_00_5 -> clip_low, percentile_99_5 -> clip_high, mean,
                 std), the resampling orders of the plan; orientation from --orientation, else
                 from the reader nnU-Net used: NibabelIOWithReorient and SimpleITKIOWithReorient
                 give RAS, SimpleITKIO and NibabelIO (the file's own voxel order, which for a
                 standard axial DICOM-derived volume is LPS) give LPS
  inference      patch_size of the plan, tile_step 0.5, the mirror axes the trainer allowed
                 (stored in the checkpoint; else 0, 1, 2), Gaussian sigma_scale 0.125, peak 10,
                 pad_value 0
  labels         dataset.json `labels` matched by name to the AMOS table of labels.py (aliases
                 such as "arota" and "postcava", spellings such as "right kidney" or "gall
                 bladder"); an unknown name gets generic codes (Tissue / Anatomical structure)
                 and a warning
  postprocessing crossval_results_folds_<folds>/postprocessing.pkl when
                 nnUNetv2_find_best_configuration determined one for these folds (or
                 --postprocessing FILE; none leaves it out)
  provenance     trainer, plans, configuration, folds, checkpoint, epochs, date and the torch
                 and nnunetv2 versions of the export

Only torch and numpy are needed (Debian's torch 1.13 will do); nnU-Net need not be installed.
"""

import argparse
import colorsys
import copy
import datetime
import glob
import importlib.abc
import importlib.util
import json
import os
import pickle
import re
import sys
import warnings

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    from . import export, labels as label_tables
    from .model import (Ensemble, PlainConvUNet, ResidualEncoderUNet,
                        canonical_nnunet_state_dict)
    from .nnunet_trainer import arch_kwargs_from_plans, build_mmunet, resolve_configuration
except ImportError:  # run as a plain script from tools/mmunet
    sys.path.insert(0, HERE)
    import export
    import labels as label_tables
    from model import Ensemble, PlainConvUNet, ResidualEncoderUNet, canonical_nnunet_state_dict
    from nnunet_trainer import arch_kwargs_from_plans, build_mmunet, resolve_configuration

IGNORED_PREFIXES = ("decoder.ds_heads.",)

# Which orientation (mmunet.md 5.1) each nnU-Net reader gives its arrays.
READER_ORIENTATION = {
    "NibabelIOWithReorient": "RAS",
    "SimpleITKIOWithReorient": "RAS",
    "SimpleITKIO": "LPS",
    "NibabelIO": "LPS",
}

# Names seen in nnU-Net dataset.json files for the AMOS organs, after normalisation.
EXTRA_ALIASES = {
    "arota": "aorta",
    "postcava": "inferior_vena_cava",
    "ivc": "inferior_vena_cava",
    "bladder": "urinary_bladder",
    "gall_bladder": "gallbladder",
    "oesophagus": "esophagus",
    "prostate_uterus": "prostate_or_uterus",
}

# Codes for a label that is not in the AMOS table (mmunet.md 6: generic Tissue category).
GENERIC_CATEGORY = {"scheme": "SCT", "code": "85756007", "meaning": "Tissue"}
GENERIC_TYPE = {"scheme": "SCT", "code": "91723000", "meaning": "Anatomical structure"}


class ExportError(Exception):
    pass


# ------------------------------------------------------------------------------ checkpoints
class _NumpyCoreAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves numpy._core.* (numpy 2) as numpy.core.* (numpy 1), so that a checkpoint pickled
    under numpy 2 unpickles under numpy 1 (torch 1.13 ignores torch.load's pickle_module)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "numpy._core" or fullname.startswith("numpy._core."):
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module("numpy.core" + spec.name[len("numpy._core"):])

    def exec_module(self, module):
        pass


def load_checkpoint(path):
    """An nnU-Net checkpoint dict.  It holds more than tensors (plans, optimizer state, logs),
    so it is read with full unpickling: only load checkpoints you trust."""
    alias = None
    if importlib.util.find_spec("numpy._core") is None:
        alias = _NumpyCoreAlias()
        sys.meta_path.insert(0, alias)
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except TypeError:  # torch without the weights_only argument
            return torch.load(path, map_location="cpu")
    finally:
        if alias is not None:
            sys.meta_path.remove(alias)
            for name in [n for n in sys.modules if n.split(".")[:2] == ["numpy", "_core"]]:
                del sys.modules[name]


def clean_state_dict(sd):
    """Tensor names as MMUNet has them: no DDP `module.` or torch.compile `_orig_mod.` prefix."""
    out = {}
    for name, t in sd.items():
        for prefix in ("module.", "_orig_mod."):
            if name.startswith(prefix):
                name = name[len(prefix):]
        out[name] = t
    return out


# ------------------------------------------------------------------------------ the card
def _norm_name(name):
    """lowercase, '/' -> '_or_', other non-alphanumerics -> '_'; 'right kidney' ->
    'kidney_right' (laterality last, as in the AMOS table)."""
    s = name.strip().lower().replace("/", "_or_")
    s = re.sub(r"[^a-z0-9]+", "_", s).strip("_")
    m = re.match(r"^(right|left)_(.+)$", s)
    if m:
        s = f"{m.group(2)}_{m.group(1)}"
    return s


def card_labels(dataset_labels):
    """Card `labels` from dataset.json `labels` ({name: id}, background 0 excluded).

    Returns (labels, warnings).  Region-based training (ids given as lists) is not supported;
    nnU-Net's "ignore" label has no output channel and is skipped."""
    table = {e["name"]: e for e in label_tables.AMOS_LABELS}
    aliases = dict(EXTRA_ALIASES)
    aliases.update(getattr(label_tables, "NAME_ALIASES", {}))
    squeezed = {k.replace("_", ""): k for k in table}
    out, notes = [], []
    for name, lid in dataset_labels.items():
        if isinstance(lid, (list, tuple)):
            raise ExportError(f"label {name!r}: region-based training (regions_class_order) is "
                              f"not supported: its sigmoid-and-threshold conversion is not "
                              f"built")
        if name == "ignore" or int(lid) == 0:
            continue
        key = _norm_name(name)
        key = aliases.get(key, key)
        key = key if key in table else squeezed.get(key.replace("_", ""), key)
        if key in table:
            entry = _deepcopy_json(table[key])
            entry["id"] = int(lid)
        else:
            notes.append(f"label {name!r} (id {lid}) is not in the AMOS table: generic codes "
                         f"{GENERIC_CATEGORY['meaning']} / {GENERIC_TYPE['meaning']}")
            entry = {"id": int(lid), "name": key or f"label_{lid}",
                     "segment_label": name.strip() or f"Label {lid}",
                     "category": dict(GENERIC_CATEGORY), "type": dict(GENERIC_TYPE),
                     "rgb": _palette(int(lid))}
        out.append(entry)
    out.sort(key=lambda e: e["id"])
    return out, notes


def _deepcopy_json(obj):
    if isinstance(obj, dict):
        return {k: _deepcopy_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deepcopy_json(v) for v in obj]
    return obj


def _palette(i):
    """A fixed colour for an unknown label id: golden-ratio hues, mid saturation."""
    r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.65, 0.85)
    return [int(round(255 * v)) for v in (r, g, b)]


def infer_orientation(plans, dataset_json):
    """RAS or LPS from the reader nnU-Net used (dataset.json overrides the plan's)."""
    reader = dataset_json.get("overwrite_image_reader_writer")
    if reader in (None, "None"):
        reader = plans.get("image_reader_writer")
    if reader not in READER_ORIENTATION:
        raise ExportError(f"cannot infer the orientation from the reader {reader!r}: "
                          f"pass --orientation RAS or LPS")
    return READER_ORIENTATION[reader], reader


def preprocessing_from_plans(plans, conf, orientation):
    if conf.get("normalization_schemes") != ["CTNormalization"]:
        raise ExportError(f"only one CT channel with CTNormalization is supported; the plan has "
                          f"{conf.get('normalization_schemes')}")
    fp = plans["foreground_intensity_properties_per_channel"]["0"]
    data_kw = conf.get("resampling_fn_data_kwargs", {})
    prob_kw = conf.get("resampling_fn_probabilities_kwargs", {})
    for key in ("resampling_fn_data", "resampling_fn_probabilities"):
        if conf.get(key, "resample_data_or_seg_to_shape") != "resample_data_or_seg_to_shape":
            warnings.warn(f"plan uses {key} = {conf[key]!r}; the card describes nnU-Net's "
                          f"default resampling")
    force = data_kw.get("force_separate_z")
    return {
        "orientation": orientation,
        "transpose_forward": [int(v) for v in plans["transpose_forward"]],
        "transpose_backward": [int(v) for v in plans["transpose_backward"]],
        "target_spacing": [float(v) for v in conf["spacing"]],
        "crop_to_nonzero": True,
        "normalization": {"scheme": "ct", "clip_low": float(fp["percentile_00_5"]),
                          "clip_high": float(fp["percentile_99_5"]),
                          "mean": float(fp["mean"]), "std": float(fp["std"])},
        "resampling": {"data_order": int(data_kw.get("order", 3)),
                       "data_order_z": int(data_kw.get("order_z", 0)),
                       "logits_order": int(prob_kw.get("order", 1)),
                       "logits_order_z": int(prob_kw.get("order_z", 0)),
                       "anisotropy_threshold": 3.0,
                       "force_separate_z": None if force is None else bool(force)},
    }


def package_version(name):
    try:
        from importlib.metadata import version, PackageNotFoundError
    except ImportError:
        return "unknown"
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


# ------------------------------------------------------------------------------ postprocessing
PP_FN = "remove_all_but_largest_component_from_segmentation"


class _PostprocessingUnpickler(pickle.Unpickler):
    """Reads nnU-Net's postprocessing.pkl ((functions, kwargs)) without nnU-Net: a function is
    read as its name, and only nnunetv2's postprocessing functions may appear."""

    def find_class(self, module, name):
        if module.startswith("nnunetv2.") and name == PP_FN:
            return name
        if (module, name) in (("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                              ("numpy._core.multiarray", "scalar")):  # numpy integer labels
            import numpy
            return numpy.dtype if name == "dtype" else numpy.core.multiarray.scalar
        raise ExportError(f"postprocessing: unexpected object {module}.{name}")


def _label_set(v):
    """labels_or_regions of a step (a label, a region tuple, or a list of them): the union of
    their labels, as nnU-Net's mask of the step is."""
    if isinstance(v, (list, tuple)):
        out = []
        for x in v:
            out += _label_set(x)
        return out
    if isinstance(v, bool) or not isinstance(v, int) and not hasattr(v, "__index__"):
        raise ExportError(f"postprocessing: labels_or_regions {v!r} is not a label")
    return [int(v)]


def read_postprocessing(path):
    """The card's `postprocessing` from nnU-Net's postprocessing.pkl or postprocessing.json
    (nnUNetv2_find_best_configuration writes both into crossval_results_folds_*)."""
    if path.endswith(".json"):
        with open(path) as f:
            d = json.load(f)
        fns, kwargs = d["postprocessing_fns"], d["postprocessing_kwargs"]
    else:
        with open(path, "rb") as f:
            fns, kwargs = _PostprocessingUnpickler(f).load()
    steps = []
    for fn, kw in zip(fns, kwargs):
        if fn != PP_FN or set(kw) - {"labels_or_regions", "background_label"} or \
                kw.get("background_label", 0) != 0:
            raise ExportError(f"postprocessing: step {fn}({kw}) is not one the card can state")
        labels = []
        for x in _label_set(kw["labels_or_regions"]):
            if x not in labels:
                labels.append(x)
        steps.append({"keep_largest_component": labels})
    return steps


def find_postprocessing(results_dir, folds):
    """nnU-Net's postprocessing for these folds, if it was determined: the path or None."""
    d = os.path.join(results_dir, "crossval_results_folds_" + "_".join(str(f) for f in folds))
    for name in ("postprocessing.pkl", "postprocessing.json"):
        if os.path.isfile(os.path.join(d, name)):
            return os.path.join(d, name)
    return None


# ------------------------------------------------------------------------------ the network
MMUNET_TRAINER = "nnUNetTrainerMMUNet"
DNA_PACKAGE = "dynamic_network_architectures."
NETWORK_CLASSES = {"PlainConvUNet": PlainConvUNet, "ResidualEncoderUNet": ResidualEncoderUNet}
DEFAULT_NAMES = {"mmunet": "mmunet", "PlainConvUNet": "nnunet",
                 "ResidualEncoderUNet": "nnunet-resenc"}
FAMILY_TEXT = {"mmunet": "MM-UNet", "PlainConvUNet": "nnU-Net's PlainConvUNet",
               "ResidualEncoderUNet": "nnU-Net's ResidualEncoderUNet"}
# torch's dropouts: the identity in eval mode, where nnU-Net predicts
DROPOUTS = ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout")


def _class_name(v):
    """The class name of a dotted path (a plan's string) or of a class."""
    if v is None:
        return None
    if not isinstance(v, str):
        v = getattr(v, "__name__", str(v))
    return v.rsplit(".", 1)[-1]


def plan_network(conf):
    """(network class path, arch_kwargs) of a configuration: its `architecture` (nnunetv2 >=
    2.4), or the keys of older plans converted as their get_network_from_plans did."""
    if "architecture" in conf:  # MM-UNet's trainers build their own network: no class needed
        a = conf["architecture"]
        return a.get("network_class_name"), copy.deepcopy(a["arch_kwargs"])
    name = conf.get("UNet_class_name", "PlainConvUNet")
    n = len(conf["conv_kernel_sizes"])
    dim = len(conf["patch_size"])
    kw = {"n_stages": n,
          "features_per_stage": [min(conf["UNet_base_num_features"] * 2 ** s,
                                     conf["unet_max_num_features"]) for s in range(n)],
          "conv_op": f"torch.nn.modules.conv.Conv{dim}d",
          "kernel_sizes": copy.deepcopy(conf["conv_kernel_sizes"]),
          "strides": copy.deepcopy(conf["pool_op_kernel_sizes"]),
          "n_conv_per_stage_decoder": list(conf["n_conv_per_stage_decoder"]),
          "conv_bias": True,
          "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dim}d",
          "norm_op_kwargs": {"eps": 1e-5, "affine": True},
          "dropout_op": None, "dropout_op_kwargs": None,
          "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
    enc = "n_blocks_per_stage" if name == "ResidualEncoderUNet" else "n_conv_per_stage"
    kw[enc] = list(conf["n_conv_per_stage_encoder"])
    return DNA_PACKAGE + "architectures.unet." + name, kw


def network_family(trainer, class_path):
    """The card's family: mmunet for MM-UNet's trainers, else the plan's network class."""
    if trainer.startswith(MMUNET_TRAINER):
        return "mmunet"
    name = _class_name(class_path)
    if name in NETWORK_CLASSES and (not isinstance(class_path, str) or "." not in class_path
                                    or class_path.startswith(DNA_PACKAGE)):
        return name
    raise ExportError(f"the plan's network {class_path!r} (trainer {trainer}) is not one mmsegd "
                      f"runs: dynamic_network_architectures' PlainConvUNet (nnUNetPlans) or "
                      f"ResidualEncoderUNet (the ResEnc plans), or MM-UNet "
                      f"({MMUNET_TRAINER} and its subclasses)")


def nnunet_network_args(family, kw):
    """Keyword arguments of model.PlainConvUNet or ResidualEncoderUNet (beside the channels)
    from a plan's arch_kwargs; ExportError names what the card cannot state."""
    enc = "n_conv_per_stage" if family == "PlainConvUNet" else "n_blocks_per_stage"
    known = {"n_stages", "features_per_stage", "conv_op", "kernel_sizes", "strides", enc,
             "n_conv_per_stage_decoder", "conv_bias", "norm_op", "norm_op_kwargs", "dropout_op",
             "dropout_op_kwargs", "nonlin", "nonlin_kwargs", "deep_supervision"}
    known |= {"nonlin_first"} if family == "PlainConvUNet" else \
        {"block", "bottleneck_channels", "stem_channels"}
    unknown = sorted(set(kw) - known)
    if unknown:
        raise ExportError(f"{family}: arch_kwargs {unknown} are not in the card (known: "
                          f"{', '.join(sorted(known))})")
    conv = _class_name(kw.get("conv_op"))
    if conv in ("Conv1d", "Conv2d"):
        raise ExportError(f"a {conv[-2:]} network (conv_op {kw['conv_op']}): mmsegd's engine is "
                          f"3D only; export a 3d_fullres or 3d_lowres configuration")
    if conv != "Conv3d":
        raise ExportError(f"conv_op {kw.get('conv_op')!r}: only Conv3d")
    norm = _class_name(kw.get("norm_op"))
    nk = kw.get("norm_op_kwargs") or {}
    if norm != "InstanceNorm3d" or not nk.get("affine", False) or \
            nk.get("track_running_stats", False):
        raise ExportError(f"norm {kw.get('norm_op')!r} {nk}: only InstanceNorm3d with affine "
                          f"true and no running statistics")
    eps = float(nk.get("eps", 1e-5))
    nonlin = _class_name(kw.get("nonlin"))
    slope = float((kw.get("nonlin_kwargs") or {}).get("negative_slope", 0.01))
    if nonlin != "LeakyReLU":
        raise ExportError(f"nonlinearity {kw.get('nonlin')!r}: only LeakyReLU")
    if eps != 1e-5 or slope != 0.01:
        raise ExportError(f"norm eps {eps:g}, LeakyReLU slope {slope:g}: the card (version 1) "
                          f"states eps 1e-5 and slope 0.01 only")
    drop = kw.get("dropout_op")
    if drop is not None and _class_name(drop) not in DROPOUTS:
        raise ExportError(f"dropout_op {drop!r}: only torch's dropouts (the identity when "
                          f"predicting)")
    if kw.get("nonlin_first", False):
        raise ExportError("PlainConvUNet with nonlin_first (LeakyReLU before the norm): not in "
                          "the card")
    if family == "ResidualEncoderUNet":
        if _class_name(kw.get("block", "BasicBlockD")) != "BasicBlockD" or \
                kw.get("bottleneck_channels") is not None:
            raise ExportError(f"ResidualEncoderUNet with block {kw.get('block')!r} (bottleneck "
                              f"channels {kw.get('bottleneck_channels')}): only BasicBlockD")
        F0 = kw["features_per_stage"]
        F0 = F0 if isinstance(F0, int) else F0[0]
        if kw.get("stem_channels") not in (None, F0):
            raise ExportError(f"ResidualEncoderUNet with stem_channels {kw['stem_channels']}: "
                              f"the card's stem has features_per_stage[0] = {F0}")
    for key in ("n_stages", "features_per_stage", "kernel_sizes", "strides", enc,
                "n_conv_per_stage_decoder"):
        if key not in kw:
            raise ExportError(f"{family}: the plan's arch_kwargs lack {key!r}")
    return {"n_stages": kw["n_stages"], "features_per_stage": kw["features_per_stage"],
            "kernel_sizes": kw["kernel_sizes"], "strides": kw["strides"], enc: kw[enc],
            "n_conv_per_stage_decoder": kw["n_conv_per_stage_decoder"],
            # dynamic_network_architectures' default
            "conv_bias": bool(kw.get("conv_bias", False)),
            "norm_eps": eps, "negative_slope": slope}


def build_network(family, plans, configuration, conf, num_classes):
    """An empty network of the plan's family (see the module docstring)."""
    if family == "mmunet":
        return build_mmunet(arch_kwargs_from_plans(plans, configuration), 1, num_classes,
                            enable_deep_supervision=False, initialize=False)
    _, kw = plan_network(conf)
    try:
        return NETWORK_CLASSES[family](1, num_classes, **nnunet_network_args(family, kw))
    except (ValueError, TypeError) as e:
        raise ExportError(f"{family}: the plan's arch_kwargs do not make a network: {e}")


def fold_state_dict(family, net, sd):
    """A checkpoint's network_weights as the tensors of `net`: no DDP or torch.compile
    prefix and, for nnU-Net's networks, none of the aliases and deep-supervision heads."""
    sd = clean_state_dict(sd)
    if family != "mmunet":
        sd = canonical_nnunet_state_dict(sd, net.architecture())
    return sd


# ------------------------------------------------------------------------------ export
def find_folds(results_dir, checkpoint):
    found = []
    for path in glob.glob(os.path.join(results_dir, "fold_*", checkpoint)):
        f = os.path.basename(os.path.dirname(path))[len("fold_"):]
        found.append(int(f) if f.isdigit() else f)
    return sorted(found, key=str)


def export_results(results_dir, out_path, folds=None, checkpoint="checkpoint_final.pth",
                   name=None, version="0.1.0", orientation=None, license=None,
                   description=None, log=print, postprocessing=None):
    """Write the model file; returns (card, sha256, network) with the network in eval mode.
    postprocessing: a postprocessing.pkl or .json to carry into the card, "none", or None for
    the one nnU-Net determined for these folds, if any."""
    with open(os.path.join(results_dir, "plans.json")) as f:
        plans = json.load(f)
    with open(os.path.join(results_dir, "dataset.json")) as f:
        dataset_json = json.load(f)
    if not folds:
        folds = find_folds(results_dir, checkpoint)
        if not folds:
            raise ExportError(f"no fold_*/{checkpoint} in {results_dir}")
    ckpts = []
    for fold in folds:
        path = os.path.join(results_dir, f"fold_{fold}", checkpoint)
        if not os.path.isfile(path):
            raise ExportError(f"missing {path}")
        ckpts.append(load_checkpoint(path))
    first = ckpts[0]
    configuration = first.get("init_args", {}).get("configuration", "3d_fullres")
    trainer = first.get("trainer_name", "unknown")
    for fold, c in zip(folds, ckpts):
        if c.get("trainer_name", trainer) != trainer:
            raise ExportError(f"fold {fold} was trained by {c.get('trainer_name')}, "
                              f"fold {folds[0]} by {trainer}")

    if len(dataset_json.get("channel_names", {"0": "CT"})) != 1:
        raise ExportError("only single-channel (CT) trainings can be exported")
    conf = resolve_configuration(plans, configuration)
    if len(conf.get("patch_size", ())) != 3:
        raise ExportError(f"configuration {configuration} is 2d (patch "
                          f"{conf.get('patch_size')}): mmsegd's engine is 3D only; export a "
                          f"3d_fullres or 3d_lowres training")
    if conf.get("previous_stage"):
        raise ExportError(f"configuration {configuration} is a cascade stage: its network "
                          f"takes the {conf['previous_stage']} segmentation as extra input "
                          f"channels, which mmsegd does not compute; export 3d_fullres or "
                          f"{conf['previous_stage']} on its own")
    family = network_family(trainer, plan_network(conf)[0])
    label_entries, notes = card_labels(dataset_json["labels"])
    num_classes = len(label_entries) + 1
    nets = []
    for fold, c in zip(folds, ckpts):  # one whole network per fold
        net = build_network(family, plans, configuration, conf, num_classes)
        what = f"fold {fold}: the checkpoint does not fit the {family} the plan describes"
        try:
            missing, unexpected = net.load_state_dict(
                fold_state_dict(family, net, c["network_weights"]), strict=False)
        except RuntimeError as e:  # a shape mismatch
            raise ExportError(f"{what}: {e}")
        missing = [k for k in missing if not k.startswith(IGNORED_PREFIXES)]
        if missing or unexpected:
            hint = "" if family == "mmunet" else \
                f" (does the trainer {trainer} build another network than the plan's?)"
            raise ExportError(f"{what}: missing {missing[:5]}, unexpected {unexpected[:5]}"
                              f"{hint}")
        nets.append(net.eval())
    members = [f"fold_{f}" for f in folds] if len(folds) > 1 else None
    if postprocessing is None:
        postprocessing = find_postprocessing(results_dir, folds)
    pp_steps = [] if postprocessing in (None, "none") else read_postprocessing(postprocessing)
    if postprocessing not in (None, "none"):
        log(f"postprocessing from {postprocessing}: {pp_steps or 'none'}")

    if orientation is None:
        orientation, reader = infer_orientation(plans, dataset_json)
        log(f"orientation {orientation} (nnU-Net reader {reader})")
    mirror = first.get("inference_allowed_mirroring_axes")
    mirror_axes = [0, 1, 2] if mirror is None else sorted(int(a) for a in mirror)
    dataset_name = plans.get("dataset_name", os.path.basename(os.path.dirname(
        os.path.abspath(results_dir))))
    folds_text = ", ".join(str(f) for f in folds)
    card = export.make_card(
        nets[0],
        name=name or DEFAULT_NAMES[family] + "-" + re.sub(r"[^a-z0-9]+", "-",
                                                          dataset_name.lower()).strip("-"),
        version=version,
        description=description or (f"{FAMILY_TEXT[family]} trained with nnU-Net v2 on "
                                     f"{dataset_name} "
                                     f"({configuration}, fold{'s' if len(folds) > 1 else ''} "
                                     f"{folds_text})"),
        license=license or dataset_json.get("licence") or dataset_json.get("license")
        or "unspecified",
        preprocessing=preprocessing_from_plans(plans, conf, orientation),
        inference={"patch_size": [int(v) for v in conf["patch_size"]], "tile_step": 0.5,
                   "mirror_axes": mirror_axes,
                   "gaussian": {"sigma_scale": 0.125, "peak": 10.0}, "pad_value": 0.0},
        labels=label_entries,
        provenance={
            "training_data": dataset_name,
            "trainer": f"nnU-Net v2 {trainer}, plans {plans.get('plans_name', '?')}, "
                       f"{configuration}, fold{'s' if len(folds) > 1 else ''} {folds_text}",
            "nnunet_trainer": trainer,
            "plans": plans.get("plans_name", "unknown"),
            "configuration": configuration,
            "folds": [str(f) for f in folds],
            "checkpoint": checkpoint,
            "epochs": [int(c.get("current_epoch", 0)) for c in ckpts],
            "date": datetime.date.today().isoformat(),
            "nnunetv2_version": package_version("nnunetv2"),
            "torch_version": torch.__version__,
        },
        members=members)
    if pp_steps:
        card["postprocessing"] = pp_steps
        export.validate_card(card)
    for n in notes:
        warnings.warn(n)
    sds = [{k: v for k, v in n.state_dict().items() if not k.startswith(IGNORED_PREFIXES)}
           for n in nets]
    tensors = sds[0] if members is None else export.ensemble_tensors(sds)
    sha = export.write_model(out_path, tensors, card)
    return card, sha, nets[0] if members is None else Ensemble(nets).eval()


def main(argv):
    ap = argparse.ArgumentParser(
        description="Export an nnU-Net v2 MM-UNet training to an mmsegd model file.")
    ap.add_argument("results_dir", help="nnUNet_results/DatasetXXX/TRAINER__PLANS__CONF")
    ap.add_argument("-o", "--output", required=True, help="model file to write (.safetensors)")
    ap.add_argument("--folds", nargs="+",
                    help="folds to export, as one fold ensemble when several (default: all found)")
    ap.add_argument("--checkpoint", default="checkpoint_final.pth",
                    help="checkpoint file name in each fold (default checkpoint_final.pth)")
    ap.add_argument("--name", help="card name (default mmunet-<dataset>)")
    ap.add_argument("--version", default="0.1.0", help="card version (default 0.1.0)")
    ap.add_argument("--orientation", choices=("RAS", "LPS"),
                    help="default: from the image reader nnU-Net used")
    ap.add_argument("--license", help="default: dataset.json licence, else 'unspecified'")
    ap.add_argument("--description", help="card description")
    ap.add_argument("--postprocessing",
                    help="nnU-Net's postprocessing.pkl or .json to carry into the card, or "
                         "'none' (default: crossval_results_folds_<folds>/postprocessing.pkl "
                         "when nnUNetv2_find_best_configuration wrote it)")
    args = ap.parse_args(argv)
    folds = [int(f) if f.isdigit() else f for f in args.folds] if args.folds else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = lambda m, *a, **k: print(f"warning: {m}", file=sys.stderr)
            card, sha, net = export_results(args.results_dir, args.output, folds,
                                            args.checkpoint, args.name, args.version,
                                            args.orientation, args.license, args.description,
                                            postprocessing=args.postprocessing)
    except (ExportError, export.ModelError, OSError, KeyError, pickle.UnpicklingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    n = sum(p.numel() for k, p in net.state_dict().items() if ".ds_heads." not in k)
    a = card["architecture"]
    members = f", a fold ensemble of {len(a['ensemble'])} ({', '.join(a['ensemble'])})" \
        if "ensemble" in a else ""
    print(f"wrote {args.output}: {a['family']}, {a['n_stages']} stages "
          f"{a['features_per_stage']}, "
          f"{a['num_classes']} classes, {n} parameters{members}, "
          f"patch {card['inference']['patch_size']}")
    print("labels: " + ", ".join(f"{e['id']}={e['name']}" for e in card["labels"]))
    print(f"sha256: {sha}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
