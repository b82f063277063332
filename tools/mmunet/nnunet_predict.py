"""nnU-Net v2's own predictor on a model file or a results folder (mmunet.md 7, V4), stage by
stage.

    python nnunet_predict.py (--model FILE | --results DIR [--folds F ...]
        [--checkpoint NAME]) [--tta yes|no] [--tile-step X] [--threads N]
        [--accumulate fp16|fp32] [--postprocessing PKL|card] [--json] IN.nii.gz OUT.nii.gz

Needs nnunetv2 and torch 2.x (the virtual environment _build/venv-ref of nnunet_proof.sh).
IN is a CT volume as NIfTI (e.g. from `mmsegd inspect --nifti`); OUT receives nnU-Net's
label map (uint8, the affine and voxel order of IN, written by nnU-Net's reader/writer).

With --model nothing is trained or planned: the plans and dataset.json are synthesised from
the model card (plans_from_card, dataset_json_from_card), and
nnUNetPredictor.manual_initialization receives the reference network of export.load_network
(eval mode) with its state dict as the only parameter set (a fold ensemble's members as its
parameter sets).  With --results nnU-Net loads a trainer's output folder itself
(initialize_from_trained_model_folder: its plans, dataset.json, trainer class and the
checkpoints of --folds, default all found), which is what nnUNetv2_predict does.  The
predictor runs on the CPU with perform_everything_on_device off, the Gaussian on, mirroring
as --tta says (the card's or the checkpoint's mirror axes) and the tile step of --tile-step
(default: the card's, or nnU-Net's 0.5).

--postprocessing applies nnU-Net's postprocessing to the label file as
nnUNetv2_apply_postprocessing does (load_postprocess_save: the plan's reader, nnU-Net's
remove_all_but_largest_component_from_segmentation): a postprocessing.pkl of
nnUNetv2_find_best_configuration, or `card` for the steps of the model card.

The stages are the ones nnUNetPredictor.predict_from_files_sequential runs, timed apiece:
  load        the reader of the plan (NibabelIOWithReorient for RAS cards, SimpleITKIO for
              LPS): read_images
  preprocess  DefaultPreprocessor.run_case_npy: transpose, crop to nonzero, CTNormalization,
              resampling to the target spacing
  network     predict_logits_from_preprocessed_data: padding, sliding window, mirroring
  export      export_prediction_from_logits: logits back to the cropped shape, argmax, uncrop,
              transpose back, write_seg
With --json the timings and sizes are printed as one JSON object.

--accumulate fp32 is a diagnostic, not nnU-Net as shipped: the predictor's sliding window keeps
its Gaussian map, logit accumulator and weight accumulator in float16 (nnunetv2 2.x, also on
the CPU), while mmunet.md 5.7 and mmsegd use float32.  With fp32 the method
_internal_predict_sliding_window_return_logits is recompiled from nnunetv2's own source with
those three dtypes replaced by float32, nothing else changed; it fails if the source no longer
has them.

--threads N sets torch's thread count and nnUNet_def_n_proc (which nnU-Net uses as the torch
thread count of the network and export stages) before nnunetv2 is imported.
"""

import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

CONFIGURATION = "3d_fullres"
TRAINER = "nnUNetTrainerMMUNet"
READERS = {"RAS": "NibabelIOWithReorient", "LPS": "SimpleITKIO"}


def _quiet_nnunet_paths():
    """nnunetv2 prints a warning per unset path variable on import; none is used here."""
    scratch = os.path.join(tempfile.gettempdir(), "nnunet-predict-unused")
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ.setdefault(k, scratch)


# ------------------------------------------------------------------------------ card -> plans
def arch_kwargs_from_card(arch):
    """Keyword arguments of the reference class for get_network_from_plans: the card's
    architecture plus the keys nnU-Net's own plans carry (accepted and checked by MMUNet)."""
    return {
        "n_stages": arch["n_stages"],
        "features_per_stage": arch["features_per_stage"],
        "kernel_sizes": arch["kernel_sizes"],
        "strides": arch["strides"],
        "n_blocks_encoder": arch["n_blocks_encoder"],
        "n_blocks_decoder": arch["n_blocks_decoder"],
        "stem_blocks": arch["stem_blocks"],
        "mixer": arch["mixer"],
        "norm_eps": arch["norm"]["eps"],
        "negative_slope": arch["nonlin"]["negative_slope"],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": arch["norm"]["eps"], "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }


def plans_from_card(card):
    """A plans.json dict with one 3d_fullres configuration that says what the card says."""
    pre, inf, arch = card["preprocessing"], card["inference"], card["architecture"]
    norm, rs = pre["normalization"], pre["resampling"]
    if norm["scheme"] != "ct":
        raise ValueError(f"normalization scheme {norm['scheme']!r} is not CT")
    fz = rs.get("force_separate_z")
    data_kw = {"is_seg": False, "order": rs["data_order"], "order_z": rs["data_order_z"],
               "force_separate_z": fz}
    prob_kw = {"is_seg": False, "order": rs["logits_order"], "order_z": rs["logits_order_z"],
               "force_separate_z": fz}
    seg_kw = {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": fz}
    conf = {
        "data_identifier": "nnUNetPlans_3d_fullres",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": list(inf["patch_size"]),
        "median_image_size_in_voxels": [float(v) for v in inf["patch_size"]],
        "spacing": [float(v) for v in pre["target_spacing"]],
        "normalization_schemes": ["CTNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": data_kw,
        "resampling_fn_seg_kwargs": seg_kw,
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": prob_kw,
        "architecture": {
            "network_class_name": "mmunet.model.MMUNet",
            "arch_kwargs": arch_kwargs_from_card(arch),
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        },
        "batch_dice": False,
    }
    return {
        "dataset_name": "Dataset999_" + card["name"].replace("-", ""),
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": conf["spacing"],
        "original_median_shape_after_transp": list(inf["patch_size"]),
        "image_reader_writer": READERS[pre["orientation"]],
        "transpose_forward": list(pre["transpose_forward"]),
        "transpose_backward": list(pre["transpose_backward"]),
        "configurations": {CONFIGURATION: conf},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {"mean": float(norm["mean"]), "std": float(norm["std"]),
                  "percentile_00_5": float(norm["clip_low"]),
                  "percentile_99_5": float(norm["clip_high"]),
                  "min": float(norm["clip_low"]), "max": float(norm["clip_high"]),
                  "median": float(norm["mean"])},
        },
    }


def dataset_json_from_card(card):
    labels = {"background": 0}
    for lab in sorted(card["labels"], key=lambda e: e["id"]):
        labels[lab["name"]] = int(lab["id"])
    return {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": 0,
            "file_ending": ".nii.gz", "name": card["name"],
            "overwrite_image_reader_writer": READERS[card["preprocessing"]["orientation"]]}


# ------------------------------------------------------------------------------ predictor
class Predictor:
    """nnUNetPredictor set up by manual_initialization for one model file (a fold ensemble's
    members as its parameter sets, whose logits nnU-Net averages)."""

    def __init__(self, model_path=None, tta=True, tile_step=None, threads=None, verbose=False,
                 accumulate="fp16", results=None, folds=None,
                 checkpoint="checkpoint_final.pth"):
        if threads:
            os.environ["nnUNet_def_n_proc"] = str(int(threads))
        _quiet_nnunet_paths()
        import torch
        if threads:
            torch.set_num_threads(int(threads))
        self.torch = torch
        self.tta = bool(tta)
        if (model_path is None) == (results is None):
            raise ValueError("give a model file or a results folder")
        if results is not None:
            self._from_results(results, folds, checkpoint, tile_step, verbose)
        else:
            self._from_model(model_path, tile_step, verbose)
        self.accumulate = accumulate
        if accumulate == "fp32":
            self._accumulate_fp32()
        elif accumulate != "fp16":
            raise ValueError(f"accumulate must be fp16 or fp32, not {accumulate!r}")
        self.preprocessor = self.conf.preprocessor_class(verbose=verbose)
        self.reader = self.plans_manager.image_reader_writer_class()

    def _from_results(self, results, folds, checkpoint, tile_step, verbose):
        """nnU-Net's own initialisation from a trainer's output folder."""
        torch = self.torch
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
        self.card, self.sha = None, None
        self.tile_step = 0.5 if tile_step is None else float(tile_step)
        self.predictor = nnUNetPredictor(tile_step_size=self.tile_step, use_gaussian=True,
                                         use_mirroring=self.tta,
                                         perform_everything_on_device=False,
                                         device=torch.device("cpu"), verbose=verbose,
                                         verbose_preprocessing=verbose, allow_tqdm=False)
        self.predictor.initialize_from_trained_model_folder(
            results, use_folds=None if folds is None else tuple(folds),
            checkpoint_name=checkpoint)
        self.plans_manager = self.predictor.plans_manager
        self.plans = self.plans_manager.plans
        self.conf = self.predictor.configuration_manager
        self.dataset_json = self.predictor.dataset_json
        self.parameters = self.predictor.list_of_parameters
        self.net = self.predictor.network
        self.mirror_axes = tuple(int(a) for a in self.predictor.allowed_mirroring_axes or ())

    def _from_model(self, model_path, tile_step, verbose):
        """The predictor set up by manual_initialization from a model file's card."""
        torch = self.torch
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
        from mmunet import export
        loaded, self.card, self.sha = export.load_network(model_path)
        # a fold ensemble: nnU-Net's own way, one network and a parameter set per member
        members = list(loaded.members) if hasattr(loaded, "members") else [loaded]
        self.net = members[0]
        # copies: nnU-Net loads each set into self.net in turn, and a state_dict() holds the
        # network's own tensors, which the next set would overwrite
        self.parameters = [{k: v.clone() for k, v in m.state_dict().items()} for m in members]
        self.plans = plans_from_card(self.card)
        self.dataset_json = dataset_json_from_card(self.card)
        self.plans_manager = PlansManager(self.plans)
        self.conf = self.plans_manager.get_configuration(CONFIGURATION)
        step = self.card["inference"]["tile_step"] if tile_step is None else float(tile_step)
        self.tile_step = step
        self.predictor = nnUNetPredictor(tile_step_size=step, use_gaussian=True,
                                         use_mirroring=self.tta,
                                         perform_everything_on_device=False,
                                         device=torch.device("cpu"), verbose=verbose,
                                         verbose_preprocessing=verbose, allow_tqdm=False)
        self.predictor.manual_initialization(
            self.net, self.plans_manager, self.conf, self.parameters,
            self.dataset_json, TRAINER,
            tuple(int(a) for a in self.card["inference"]["mirror_axes"]))
        self.mirror_axes = tuple(int(a) for a in self.card["inference"]["mirror_axes"])

    def _accumulate_fp32(self):
        """Swap the predictor's sliding window for nnunetv2's own code with float32 in place of
        float16 for the Gaussian, the logit and the weight accumulators."""
        import inspect
        import textwrap
        import types
        from nnunetv2.inference import predict_from_raw_data as mod
        name = "_internal_predict_sliding_window_return_logits"
        src = textwrap.dedent(inspect.getsource(getattr(mod.nnUNetPredictor, name)))
        edits = [("dtype=torch.half", "dtype=torch.float32", 2),
                 ("value_scaling_factor=10,", "value_scaling_factor=10, dtype=torch.float32,", 1)]
        for old, new, count in edits:
            if src.count(old) != count:
                raise RuntimeError(f"nnunetv2's {name} has {src.count(old)} x {old!r}, "
                                   f"expected {count}: cannot switch it to float32")
            src = src.replace(old, new)
        ns = dict(mod.__dict__)
        exec(compile(src, mod.__file__, "exec"), ns)
        setattr(self.predictor, name, types.MethodType(ns[name], self.predictor))

    def check_constructor(self):
        """The reference class built by nnU-Net's get_network_from_plans from the synthesised
        plan takes the model's tensors (strict) and gives the same logits on one patch.
        Returns the largest |difference| of the logits."""
        torch = self.torch
        from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
        a = self.conf.configuration["architecture"]
        net = get_network_from_plans(a["network_class_name"], a["arch_kwargs"],
                                     a["_kw_requires_import"], 1,
                                     self.card["architecture"]["num_classes"],
                                     allow_init=True, deep_supervision=False)
        net.load_state_dict(self.net.state_dict(), strict=True)
        net.eval()
        g = torch.Generator().manual_seed(4)
        x = torch.randn((1, 1, *self.card["inference"]["patch_size"]), generator=g)
        with torch.no_grad():
            return float((net(x) - self.net(x)).abs().max())

    def predict(self, in_path, out_path):
        """Label map of in_path written to out_path (a .nii.gz name); returns the timings (s)
        and sizes of the stages."""
        torch = self.torch
        from nnunetv2.inference.export_prediction import export_prediction_from_logits
        ending = self.dataset_json["file_ending"]
        if not out_path.endswith(ending):
            raise ValueError(f"{out_path}: the output name must end with {ending}")
        times = {}
        t0 = t = time.perf_counter()
        data, props = self.reader.read_images([in_path])
        times["load_s"] = time.perf_counter() - t
        shape_in = list(data.shape[1:])
        t = time.perf_counter()
        data, _, props = self.preprocessor.run_case_npy(data, None, props, self.plans_manager,
                                                        self.conf, self.dataset_json)
        times["preprocess_s"] = time.perf_counter() - t
        target = list(data.shape[1:])
        padded = [max(s, p) for s, p in zip(target, self.conf.patch_size)]
        tiles = len(self.predictor._internal_get_sliding_window_slicers(padded))
        t = time.perf_counter()
        logits = self.predictor.predict_logits_from_preprocessed_data(torch.from_numpy(data))
        logits = logits.cpu()
        times["network_s"] = time.perf_counter() - t
        logits_dtype = str(logits.dtype).replace("torch.", "")
        t = time.perf_counter()
        export_prediction_from_logits(logits, props, self.conf, self.plans_manager,
                                      self.dataset_json, out_path[:-len(ending)], False)
        times["export_s"] = time.perf_counter() - t
        times["total_s"] = time.perf_counter() - t0
        n_mirror = 2 ** len(self.mirror_axes) if self.tta else 1
        return {
            "times": {k: round(v, 3) for k, v in times.items()},
            "shape_in_zyx": shape_in,
            "shape_cropped_zyx": [int(v) for v in props["shape_after_cropping_and_before_resampling"]],
            "target_zyx": target,
            "spacing_zyx": [float(v) for v in props["spacing"]],
            "tiles": tiles,
            "passes": tiles * n_mirror,
            "tta": self.tta,
            "tile_step": self.tile_step,
            "logits_dtype": logits_dtype,
            "accumulate": self.accumulate,
            "threads": torch.get_num_threads(),
        }


    def postprocess(self, in_path, out_path, pp):
        """nnU-Net's postprocessing of a label file, as nnUNetv2_apply_postprocessing does it:
        pp is (functions, kwargs) from postprocessing(); returns the seconds it took."""
        from nnunetv2.postprocessing.remove_connected_components import load_postprocess_save
        t = time.perf_counter()
        load_postprocess_save(in_path, out_path, self.reader, pp[0], pp[1])
        return round(time.perf_counter() - t, 3)


def postprocessing(pkl=None, card=None):
    """nnU-Net's (functions, kwargs): read from nnUNetv2_find_best_configuration's
    postprocessing.pkl, or made from a model card's `postprocessing` steps (each step's labels
    one region, as the card states them)."""
    if pkl is not None:
        from batchgenerators.utilities.file_and_folder_operations import load_pickle
        fns, kwargs = load_pickle(pkl)
        return list(fns), list(kwargs)
    from nnunetv2.postprocessing.remove_connected_components import \
        remove_all_but_largest_component_from_segmentation as keep_largest
    steps = (card or {}).get("postprocessing", [])
    return ([keep_largest] * len(steps),
            [{"labels_or_regions": [int(x) for x in st["keep_largest_component"]]}
             for st in steps])


def versions():
    import platform
    from importlib.metadata import version
    out = {"python": platform.python_version()}
    for pkg in ("torch", "nnunetv2", "numpy", "scipy", "scikit-image", "nibabel",
                "acvl_utils", "dynamic_network_architectures"):
        try:
            out[pkg] = version(pkg)
        except Exception:
            out[pkg] = None
    return out


def main(argv):
    ap = argparse.ArgumentParser(description="nnU-Net v2's predictor on an MM-UNet model file")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a model file")
    src.add_argument("--results", help="a trainer's output folder of nnU-Net")
    ap.add_argument("--folds", nargs="+", help="with --results (default: all found)")
    ap.add_argument("--checkpoint", default="checkpoint_final.pth", help="with --results")
    ap.add_argument("--postprocessing", metavar="PKL|card",
                    help="nnU-Net's postprocessing of the labels: a postprocessing.pkl, or "
                         "'card' for the model card's steps")
    ap.add_argument("--tta", choices=("yes", "no"), default="yes")
    ap.add_argument("--tile-step", type=float)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--accumulate", choices=("fp16", "fp32"), default="fp16",
                    help="sliding-window accumulators (fp16: nnU-Net as shipped)")
    ap.add_argument("--json", action="store_true", help="print the timings as JSON")
    ap.add_argument("input")
    ap.add_argument("output")
    a = ap.parse_args(argv)
    folds = [int(f) if f.isdigit() else f for f in a.folds] if a.folds else None
    p = Predictor(a.model, tta=a.tta == "yes", tile_step=a.tile_step, threads=a.threads,
                  accumulate=a.accumulate, results=a.results, folds=folds,
                  checkpoint=a.checkpoint)
    info = p.predict(a.input, a.output)
    if a.postprocessing:
        if a.postprocessing == "card" and p.card is None:
            ap.error("--postprocessing card needs --model")
        pp = postprocessing(card=p.card) if a.postprocessing == "card" else \
            postprocessing(pkl=a.postprocessing)
        info["times"]["postprocess_s"] = p.postprocess(a.output, a.output, pp)
    info["model_sha256"] = p.sha
    info["output"] = a.output
    if a.json:
        print(json.dumps(info))
    else:
        t = info["times"]
        print(f"nnunet_predict: {a.output}: target {info['target_zyx']}, {info['tiles']} tiles, "
              f"{info['passes']} passes; load {t['load_s']:.2f} s, preprocess "
              f"{t['preprocess_s']:.2f} s, network {t['network_s']:.2f} s, export "
              f"{t['export_s']:.2f} s, total {t['total_s']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
