"""nnU-Net's standard networks and MM-UNet, trained by nnU-Net v2, against `mmsegd segment`
(run by nnunet_families.sh; the optional reference suite, not part of make check).

    python nnunet_families.py run --work DIR [--record FILE] [--fixtures DIR]
        [--families A,B,..] [--steps S,T,..] [--mmsegd PATH | --no-mmsegd]
    python nnunet_families.py average MODEL OUT

`run` needs nnunetv2 and torch 2.x (the virtual environment of nnunet_proof.sh); `average`
needs only numpy.  The steps, in order (--steps runs a subset on the work folder of an earlier
run; the default is all):

 dataset   Dataset991_MMSegFamilies under DIR/raw: 6 phantoms of tools/mmunet/phantom.py
           (seeds 2000..2005, 24 x 80 x 80 voxels of 8 x 4 x 4 mm, labels liver, spleen,
           kidney_right, kidney_left, aorta), NIfTI as phantom.py writes it
 plan      nnUNetv2_plan_and_preprocess -c 3d_fullres with the default planner (nnUNetPlans,
           PlainConvUNet) and with nnUNetPlannerResEncM (nnUNetResEncUNetMPlans,
           ResidualEncoderUNet); then each family's tiny plans, a copy of its planner's plans
           with 3 stages of 4, 8, 8 features, a 16 x 48 x 48 patch and a batch of 2
           (FAMILIES below says what else), so that the model files stay small and the
           training fast.  The copies
           keep the data identifier: the preprocessed data is the planner's.
 install   install_nnunet_trainer.py (the trainers of nnunet_trainer.py inside nnunetv2)
 train     nnUNetv2_train 991 3d_fullres F -p PLANS -tr TRAINER -device cpu for folds 0 and 1
           of each family (nnUNetTrainer_2epochs_500it for the standard networks,
           nnUNetTrainerMMUNet_2epochs_500it for MM-UNet: 2 epochs of 500 iterations), each
           ending with nnU-Net's validation of the fold
 pp        nnUNetv2_find_best_configuration 991 -c 3d_fullres -p PLANS -tr TRAINER -f 0 1
           --disable_ensembling: the cross-validation of the two folds and nnU-Net's
           postprocessing (crossval_results_folds_0_1/postprocessing.pkl)
 export    export_nnunet.py RESULTS --folds 0 1: the fold ensemble with that postprocessing
           (FIXTURES/<family>.safetensors); where nnU-Net chose none, the card states
           FALLBACK_PP instead (recorded), so that postprocessing on and off still differ;
           and, for the record only, each family's two folds with their weights averaged
           (`average`, the behaviour of an exporter that averaged folds)
 predict   for each case: `mmsegd inspect --nifti` (the CT as NIfTI), then nnU-Net's
           predictor from the results folder (initialize_from_trained_model_folder, folds 0
           and 1, checkpoint_final.pth; tile step 0.5, Gaussian, mirroring) and nnU-Net's
           apply_postprocessing with the card's steps: FIXTURES/<family>.<case>.nnunet.nii.gz
           (postprocessing on) and .nnunet-nopp.nii.gz (off), gzip level 9
 mmsegd    `mmsegd segment --model FIXTURES/<family>.safetensors --backend cpu --json --nifti`
           with --postprocessing yes and no, and the weight-averaged file; agreement with
           nnU-Net's labels (>= 0.999 for the ensemble, pp on and off; the averaged file must
           fall below)

Versions, plans, seconds of every step and the figures go to the record (default
tests/fixtures/nnunet-parity-families.json), which tests/test-parity.sh reads.  The last line
is `nnunet-families: ok` or `nnunet-families: FAILED: <reasons>`, with a non-zero exit status.
"""

import argparse
import copy
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
from mmunet.nnunet_proof import ProofError, run_cmd  # noqa: E402  (the proof's runner)

DATASET_ID = 991
DATASET_NAME = "Dataset991_MMSegFamilies"
CONFIGURATION = "3d_fullres"
FOLDS = (0, 1)
LABELS = ["liver", "spleen", "kidney_right", "kidney_left", "aorta"]
SEEDS = range(2000, 2006)
SHAPE = (24, 80, 80)              # (z, y, x) voxels: 192 x 320 x 320 mm
SPACING = (8.0, 4.0, 4.0)         # mm; nnU-Net plans [1, 3, 3] kernels and [1, 2, 2] strides
TINY_STAGES = 3
TINY_FEATURES = [4, 8, 8]         # stage 2 of ResidualEncoderUNet: a pooled skip, no conv
TINY_PATCH = [16, 48, 48]
TINY_BATCH = 2                    # nnU-Net's minimum; the ResEnc M planner chose 6
MIN_AGREEMENT = 0.999
DEFAULT_RECORD = os.path.join(ROOT, "tests", "fixtures", "nnunet-parity-families.json")
DEFAULT_FIXTURES = os.path.join(ROOT, "tests", "fixtures", "parity-families")
DEBIAN_PY = "/usr/bin/python3"

# family -> how it is trained.  "planner"/"source_plans": nnU-Net's planner and the plans it
# writes; "plans": the tiny copy trained with; "edit": more keys of arch_kwargs.
FAMILIES = {
    "PlainConvUNet": {
        "planner": "ExperimentPlanner", "source_plans": "nnUNetPlans",
        "plans": "nnUNetPlansTiny", "trainer": "nnUNetTrainer_2epochs_500it", "edit": {}},
    "ResidualEncoderUNet": {
        "planner": "nnUNetPlannerResEncM", "source_plans": "nnUNetResEncUNetMPlans",
        "plans": "nnUNetResEncUNetMPlansTiny", "trainer": "nnUNetTrainer_2epochs_500it",
        # the M planner's (1, 3, 4) blocks, fewer so that the file stays small
        "edit": {"n_blocks_per_stage": [1, 2, 2]}},
    "mmunet": {
        # nnUNetTrainerMMUNet builds MM-UNet from any 3d plan; the plans still name
        # PlainConvUNet, as the default plans a user trains MM-UNet with do.  Mamba on the
        # lowest-resolution stage only: the plain-PyTorch scan of stages 0 and 1 (36864 and
        # 9216 tokens a patch) would make the training 4 to 20 times slower.
        "planner": "ExperimentPlanner", "source_plans": "nnUNetPlans",
        "plans": "nnUNetPlansTinyMMUNet", "trainer": "nnUNetTrainerMMUNet_2epochs_500it",
        "edit": {"mixer": {"mamba_stages": [2]}}},
}
# Stated in the card when nnU-Net's determination chose no postprocessing.
FALLBACK_PP = [{"keep_largest_component": [1, 2, 3, 4, 5]}]

# The DICOM series segmented: phantom.py cases (seeds outside the training seeds) and shared
# test data, as in nnunet_parity.py.
CASES = {
    # 32 slices of 160 x 160 at 5 x 2.5 x 2.5 mm -> 20 x 100 x 100 at the plan's spacing:
    # 2 x 4 x 4 tiles of 16 x 48 x 48
    "phantom-5mm": {"phantom": {"seed": 1007, "shape": [32, 160, 160],
                                "spacing": [5.0, 2.5, 2.5]},
                    "note": "phantom.py, 5 mm slices, 2.5 mm pixels: 32 tiles"},
    # 512 x 512 x 20 at 0.977 x 0.977 x 2 mm -> 5 x 125 x 125: padded along z, 25 tiles
    "ts-example": {"testdata": "totalsegmentator/tests/reference_files/example_ct_dicom",
                   "note": "real abdominal CT (TotalSegmentator example), 2 mm slices; "
                           "thinner than the patch along z (padding)"},
}
STEPS = ("dataset", "plan", "install", "train", "pp", "export", "predict", "mmsegd")


class FamiliesError(ProofError):
    pass


# ------------------------------------------------------------------------------ helpers
def json_default(v):
    """numpy scalars (nnU-Net's postprocessing.pkl holds numpy integers) as Python numbers."""
    if hasattr(v, "item"):
        return v.item()
    raise TypeError(f"{type(v).__name__} is not JSON serializable")


def family_dir(results, fam):
    f = FAMILIES[fam]
    return os.path.join(results, DATASET_NAME, f"{f['trainer']}__{f['plans']}__{CONFIGURATION}")


# ------------------------------------------------------------------------------ dataset, plans
def make_dataset(raw_dir):
    from mmunet import phantom
    root = os.path.join(raw_dir, DATASET_NAME)
    if os.path.isdir(root):
        shutil.rmtree(root)
    os.makedirs(os.path.join(root, "imagesTr"))
    os.makedirs(os.path.join(root, "labelsTr"))
    counts = {}
    for i, seed in enumerate(SEEDS):
        hu, lab = phantom.make_phantom(seed, SHAPE, SPACING, labels=LABELS)
        vol = np.clip(np.rint(hu), -32768, 32767).astype(np.int16)
        phantom.save_nifti(vol, os.path.join(root, "imagesTr", f"fam_{i:03d}_0000.nii.gz"),
                           SPACING)
        phantom.save_nifti(lab.astype(np.uint8),
                           os.path.join(root, "labelsTr", f"fam_{i:03d}.nii.gz"), SPACING)
        counts[seed] = np.bincount(lab.ravel(), minlength=len(LABELS) + 1).tolist()
    labels = {"background": 0}
    labels.update({n: i + 1 for i, n in enumerate(LABELS)})
    with open(os.path.join(root, "dataset.json"), "w") as f:
        json.dump({"channel_names": {"0": "CT"}, "labels": labels, "numTraining": len(SEEDS),
                   "file_ending": ".nii.gz", "name": "MMSegFamilies",
                   "description": "phantom.py abdomens for mmsegd's nnU-Net family parity",
                   "licence": "CC0-1.0"}, f, indent=2)
    return counts


def tiny_plans(source, fam):
    """The tiny copy of a planner's plans for one family (see the module docstring)."""
    f = FAMILIES[fam]
    plans = copy.deepcopy(source)
    plans["plans_name"] = f["plans"]
    conf = plans["configurations"][CONFIGURATION]
    a = conf["architecture"]
    kw = a["arch_kwargs"]
    S = TINY_STAGES
    if kw["n_stages"] < S:
        raise FamiliesError(f"{f['source_plans']} has {kw['n_stages']} stages, fewer than {S}")
    kw["n_stages"] = S
    kw["features_per_stage"] = list(TINY_FEATURES)
    kw["kernel_sizes"] = kw["kernel_sizes"][:S]
    kw["strides"] = kw["strides"][:S]
    for key in ("n_conv_per_stage", "n_blocks_per_stage"):
        if key in kw:
            kw[key] = list(kw[key][:S])
    kw["n_conv_per_stage_decoder"] = list(kw["n_conv_per_stage_decoder"][:S - 1])
    kw.update(copy.deepcopy(f["edit"]))
    div = np.prod(np.array(kw["strides"]), axis=0)
    if any(p % int(d) for p, d in zip(TINY_PATCH, div)):
        raise FamiliesError(f"patch {TINY_PATCH} is not divisible by the strides' {div}")
    conf["patch_size"] = list(TINY_PATCH)
    conf["batch_size"] = TINY_BATCH
    # only the trained configuration: the others would need preprocessing of their own
    plans["configurations"] = {CONFIGURATION: conf}
    return plans


def write_tiny_plans(pre_dir):
    out = {}
    for fam, f in FAMILIES.items():
        d = os.path.join(pre_dir, DATASET_NAME)
        with open(os.path.join(d, f["source_plans"] + ".json")) as fh:
            plans = tiny_plans(json.load(fh), fam)
        with open(os.path.join(d, f["plans"] + ".json"), "w") as fh:
            json.dump(plans, fh, indent=2)
        conf = plans["configurations"][CONFIGURATION]
        out[fam] = {"planner": f["planner"], "source_plans": f["source_plans"],
                    "plans": f["plans"], "patch_size": conf["patch_size"],
                    "spacing": conf["spacing"], "batch_size": conf["batch_size"],
                    "architecture": conf["architecture"]}
    return out


# ------------------------------------------------------------------------------ versions
def versions():
    from importlib.metadata import version
    out = {"python": platform.python_version()}
    for pkg in ("torch", "nnunetv2", "dynamic_network_architectures", "numpy", "scipy",
                "scikit-image", "SimpleITK", "nibabel", "acvl_utils"):
        try:
            out[pkg] = version(pkg)
        except Exception:
            out[pkg] = None
    return out


# ------------------------------------------------------------------------------ the run
def nnunet_env(work, threads):
    env = dict(os.environ)
    env.update({
        "nnUNet_raw": os.path.join(work, "raw"),
        "nnUNet_preprocessed": os.path.join(work, "preprocessed"),
        "nnUNet_results": os.path.join(work, "results"),
        "nnUNet_def_n_proc": "1",
        "nnUNet_n_proc_DA": "0",     # augmentation in the main process: no worker competes
        "nnUNet_compile": "false",
        "MMSEGD_TRAIN_THREADS": str(threads),   # nnunet_trainer.py's short trainers
        # as in nnunet_proof.py: large temporaries stay in the heap
        "MALLOC_MMAP_THRESHOLD_": "33554432",
        "MALLOC_TRIM_THRESHOLD_": "4294967296",
        "MALLOC_TOP_PAD_": "268435456",
    })
    return env


def run(args):
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    threads = args.threads or 1
    env = nnunet_env(work, threads)
    os.environ.update({k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed",
                                           "nnUNet_results")})
    bindir = os.path.dirname(sys.executable)
    fams = list(FAMILIES) if not args.families else args.families.split(",")
    for fam in fams:
        if fam not in FAMILIES:
            raise FamiliesError(f"unknown family {fam!r} (known: {', '.join(FAMILIES)})")
    steps = list(STEPS) if not args.steps else args.steps.split(",")
    for s in steps:
        if s not in STEPS:
            raise FamiliesError(f"unknown step {s!r} (known: {', '.join(STEPS)})")
    state_path = os.path.join(work, "state.json")
    state = {}
    if os.path.isfile(state_path) and steps != list(STEPS):
        with open(state_path) as f:
            state = json.load(f)
    state.setdefault("seconds", {})
    state["versions"] = versions()
    v = state["versions"]
    print(f"versions: python {v['python']}, torch {v['torch']}, nnunetv2 {v['nnunetv2']}, "
          f"dynamic_network_architectures {v['dynamic_network_architectures']}", flush=True)

    def save():
        with open(state_path + ".tmp", "w") as f:
            json.dump(state, f, indent=1, default=json_default)
        os.replace(state_path + ".tmp", state_path)

    def step(name, fn):
        t = time.time()
        out = fn()
        state["seconds"][name] = round(time.time() - t, 1)
        print(f"step {name}: {state['seconds'][name]} s", flush=True)
        save()
        return out

    if "dataset" in steps:
        for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            if os.path.isdir(env[k]):
                shutil.rmtree(env[k])
        state["dataset"] = {"name": DATASET_NAME, "seeds": list(SEEDS),
                            "shape_zyx": list(SHAPE), "spacing_zyx": list(SPACING),
                            "labels": LABELS,
                            "voxels_per_label": step("dataset",
                                                     lambda: make_dataset(env["nnUNet_raw"]))}
    if "plan" in steps:
        def plan():
            done = set()
            for fam in fams:
                f = FAMILIES[fam]
                if f["planner"] in done:
                    continue
                done.add(f["planner"])
                run_cmd([os.path.join(bindir, "nnUNetv2_plan_and_preprocess"), "-d",
                         str(DATASET_ID), "-c", CONFIGURATION, "-pl", f["planner"], "-np", "1",
                         "--verify_dataset_integrity"],
                        env=dict(env, nnUNet_n_proc_DA="1"),
                        log=os.path.join(work, f"plan-{f['planner']}.log"))
            return write_tiny_plans(env["nnUNet_preprocessed"])
        state["plans"] = step("plan", plan)
    if "install" in steps:
        step("install", lambda: print(run_cmd(
            [sys.executable, os.path.join(HERE, "install_nnunet_trainer.py")], env=env),
            end=""))
    if "train" in steps:
        for fam in fams:
            f = FAMILIES[fam]
            for fold in FOLDS:
                done = os.path.join(family_dir(env["nnUNet_results"], fam), f"fold_{fold}",
                                    "checkpoint_final.pth")
                if os.path.isfile(done) and "dataset" not in steps:
                    print(f"{fam} fold {fold}: trained already ({done})", flush=True)
                    continue
                step(f"train {fam} fold {fold}", lambda: run_cmd(
                    [os.path.join(bindir, "nnUNetv2_train"), str(DATASET_ID), CONFIGURATION,
                     str(fold), "-p", f["plans"], "-tr", f["trainer"], "-device", "cpu"],
                    env=env, log=os.path.join(work, f"train-{fam}-{fold}.log")))
    if "pp" in steps:
        for fam in fams:
            f = FAMILIES[fam]
            step(f"pp {fam}", lambda: run_cmd(
                [os.path.join(bindir, "nnUNetv2_find_best_configuration"), str(DATASET_ID),
                 "-c", CONFIGURATION, "-p", f["plans"], "-tr", f["trainer"], "-f",
                 *map(str, FOLDS), "--disable_ensembling", "-np", "1"],
                env=env, log=os.path.join(work, f"pp-{fam}.log")))
    save()
    if any(s in steps for s in ("export", "predict", "mmsegd")):
        parity(args, work, env, fams, steps, state, step)
        save()


# ------------------------------------------------------------------------------ export, parity
KEYS = {"PlainConvUNet": "plain", "ResidualEncoderUNet": "resenc", "mmunet": "mmunet"}


def average_members(model, out):
    """The members of a fold ensemble's file with their weights averaged into one network (the
    card without `ensemble`): what an exporter that averaged folds would write.  Returns the
    SHA-256 of `out`."""
    from mmunet import export
    card, tensors, _ = export.read_model(model)
    sds = export.member_state_dicts(card, tensors)
    if len(sds) < 2:
        raise FamiliesError(f"{model} is not a fold ensemble")
    avg = {k: np.mean([sd[k] for sd in sds], axis=0, dtype=np.float64).astype(np.float32)
           for k in sds[0]}
    card = copy.deepcopy(card)
    members = card["architecture"].pop("ensemble")
    card["description"] += f" -- its {len(members)} folds' weights averaged (a negative control)"
    return export.write_model(out, avg, card)


def average_cmd(args):
    try:
        sha = average_members(args.model, args.out)
    except Exception as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    print(f"sha256: {sha}")
    return 0


def fallback_pp_json(path):
    """FALLBACK_PP as the postprocessing.json that export_nnunet.py reads."""
    from mmunet import export_nnunet
    with open(path, "w") as f:
        json.dump({"postprocessing_fns": [export_nnunet.PP_FN] * len(FALLBACK_PP),
                   "postprocessing_kwargs": [{"labels_or_regions": st["keep_largest_component"]}
                                             for st in FALLBACK_PP]}, f, indent=1)
    return path


def check_logits(predictor, model):
    """Largest |difference| of the logits, per fold, between nnU-Net's network with that
    fold's parameters (as its predictor loads them) and the file's member, on one random
    patch."""
    import torch
    from mmunet import export
    loaded, card, _ = export.load_network(model)
    members = list(loaded.members) if hasattr(loaded, "members") else [loaded]
    g = torch.Generator().manual_seed(991)
    x = torch.randn((1, 1, *card["inference"]["patch_size"]), generator=g)
    out = []
    net = predictor.net
    for params, m in zip(predictor.parameters, members):
        net.load_state_dict(params)
        net.eval()
        with torch.no_grad():
            a, b = net(x), m(x)
        if isinstance(a, (list, tuple)):
            a = a[0]
        out.append(float((a - b).abs().max()))
    return out


def segment(mmsegd, model, dicom, out, threads, pp):
    """`mmsegd segment --postprocessing pp`; returns (its --json series, wall seconds)."""
    if os.path.isdir(out):
        shutil.rmtree(out)
    cmd = [mmsegd, "segment", "--model", model, "--backend", "cpu", "--tta", "yes",
           "--postprocessing", pp, "--json", "--nifti", out, dicom]
    if threads:
        cmd[2:2] = ["--threads", str(threads)]
    t = time.perf_counter()
    print("+ " + " ".join(cmd), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = round(time.perf_counter() - t, 3)
    if r.returncode != 0:
        raise FamiliesError(f"mmsegd segment exited {r.returncode}: {r.stderr[-2000:]}")
    js = json.loads(r.stdout)
    if len(js.get("series", [])) != 1:
        raise FamiliesError(f"mmsegd segment --json lists {len(js.get('series', []))} series")
    return js["series"][0], wall


def parity(args, work, env, fams, steps, state, step):
    from mmunet import export, export_nnunet, nnunet_parity, nnunet_predict
    fixtures = os.path.abspath(args.fixtures)
    os.makedirs(fixtures, exist_ok=True)
    threads = args.threads or 1
    state.setdefault("families", {})
    if "export" in steps:
        for fam in fams:
            results = family_dir(env["nnUNet_results"], fam)
            key = KEYS[fam]
            pkl = export_nnunet.find_postprocessing(results, list(FOLDS))
            determined = export_nnunet.read_postprocessing(pkl) if pkl else None
            src = pkl if determined else fallback_pp_json(os.path.join(work, f"pp-{key}.json"))
            model = os.path.join(fixtures, f"{key}.safetensors")

            def do_export():
                card, sha, _ = export_nnunet.export_results(
                    results, model, folds=list(FOLDS), name=f"families-{key}",
                    version="0.0.1", postprocessing=src,
                    description=f"{fam} trained by nnU-Net v2 on phantoms for 2 epochs: a "
                                f"test model of mmsegd (tools/mmunet/nnunet_families.py), not "
                                f"for any use on patients")
                avg = os.path.join(work, f"{key}-averaged.safetensors")
                avg_sha = average_members(model, avg)
                p = nnunet_predict.Predictor(results=results, folds=FOLDS, threads=threads)
                diffs = check_logits(p, model)
                return card, sha, avg_sha, diffs
            card, sha, avg_sha, diffs = step(f"export {fam}", do_export)
            summaries = {}
            for fold in FOLDS:
                sp = os.path.join(results, f"fold_{fold}", "validation", "summary.json")
                if os.path.isfile(sp):
                    with open(sp) as f:
                        summ = json.load(f)
                    summaries[str(fold)] = {
                        "mean_dice": summ.get("foreground_mean", {}).get("Dice"),
                        "dice": {k: round(v.get("Dice", 0.0), 4)
                                 for k, v in summ.get("mean", {}).items()}}
            a = card["architecture"]
            state["families"][fam] = {
                "key": key,
                "trainer": FAMILIES[fam]["trainer"],
                "plans": FAMILIES[fam]["plans"],
                "results": os.path.relpath(results, work),
                "model": {"path": os.path.relpath(model, ROOT), "sha256": sha,
                          "bytes": os.path.getsize(model), "name": card["name"],
                          "members": a.get("ensemble"),
                          "parameters_per_member": int(sum(
                              np.prod(v) for v in export.expected_tensors(a).values()))},
                "architecture": {k: v for k, v in a.items() if k != "ensemble"},
                "postprocessing": {
                    "determined_by_nnunet": determined,
                    "source": os.path.relpath(pkl, work) if determined else
                    ("nnUNetv2_find_best_configuration chose none; FALLBACK_PP stated in the "
                     "card" if pkl else "no postprocessing.pkl; FALLBACK_PP stated in the card"),
                    "card": card.get("postprocessing", [])},
                "averaged": {"how": "tools/mmunet/nnunet_families.py average MODEL OUT",
                             "sha256": avg_sha},
                "max_abs_logit_diff_per_fold": diffs,
                "validation": summaries,
            }
            print(f"{fam}: {model} ({os.path.getsize(model)} bytes), postprocessing "
                  f"{card.get('postprocessing')} ({'nnU-Net' if determined else 'fallback'}), "
                  f"logits differ from nnU-Net's network by {max(diffs):.3g}", flush=True)

    names = list(CASES) if not args.cases else args.cases.split(",")
    if not any(s in steps for s in ("predict", "mmsegd")):
        return
    if not os.path.exists(args.mmsegd):
        raise FamiliesError(f"{args.mmsegd} is not built")
    mmsegd = os.path.abspath(args.mmsegd)
    state["mmsegd"] = {"path": os.path.relpath(mmsegd, ROOT),
                       "version": nnunet_parity.tool_version([mmsegd, "--version"]),
                       "git_head": nnunet_parity.tool_version(["git", "-C", ROOT, "rev-parse",
                                                               "HEAD"]),
                       "worktree": "uncommitted changes" if nnunet_parity.tool_version(
                           ["git", "-C", ROOT, "status", "--porcelain", "--", "infer",
                            "kernels"]) else "clean (infer/, kernels/)"}
    testdata = nnunet_parity.find_testdata()
    state.setdefault("cases", {})
    failures = []
    for name in names:
        spec = CASES[name]
        cdir = os.path.join(work, "cases", name)
        os.makedirs(cdir, exist_ok=True)
        dicom, info = nnunet_parity.prepare_input(name, spec, cdir, testdata,
                                                  args.phantom_python)
        s = nnunet_parity.inspect(mmsegd, dicom, os.path.join(cdir, "ct"))
        ct = s["volume"]["nifti"]
        info.update({"series_uid": s["series_uid"], "dims": s["volume"]["dims"],
                     "spacing": s["volume"]["spacing"]})
        case = state["cases"].setdefault(name, {})
        case.update(info)
        runs = case.setdefault("runs", {})
        case.setdefault("fixtures", {})
        cmp_ = case.setdefault("compare", {})
        for fam in fams:
            key = KEYS[fam]
            fs = state["families"][fam]
            results = os.path.join(work, fs["results"])
            model = os.path.join(ROOT, fs["model"]["path"])
            fx = {"pp": os.path.join(fixtures, f"{key}.{name}.nnunet.nii.gz"),
                  "nopp": os.path.join(fixtures, f"{key}.{name}.nnunet-nopp.nii.gz")}
            if "predict" in steps:
                def predict():
                    p = nnunet_predict.Predictor(results=results, folds=FOLDS, tta=True,
                                                 threads=threads)
                    raw = os.path.join(cdir, f"{key}.nnunet-nopp.nii.gz")
                    done = os.path.join(cdir, f"{key}.nnunet.nii.gz")
                    r = p.predict(ct, raw)
                    card, _, _ = export.read_model(model)
                    pkl = export_nnunet.find_postprocessing(results, list(FOLDS))
                    pp = nnunet_predict.postprocessing(
                        pkl=pkl if fs["postprocessing"]["determined_by_nnunet"] else None,
                        card=card)
                    r["times"]["postprocess_s"] = p.postprocess(raw, done, pp)
                    r["postprocessing"] = [{"fn": getattr(f, "__name__", str(f)), **k}
                                           for f, k in zip(*pp)]
                    nnunet_parity.gzip9(raw, fx["nopp"])
                    nnunet_parity.gzip9(done, fx["pp"])
                    return r
                r = step(f"predict {fam} {name}", predict)
                runs[f"{key}.nnunet"] = r
                a, _ = nnunet_parity.load_labels(fx["pp"])
                b, _ = nnunet_parity.load_labels(fx["nopp"])
                case["fixtures"][key] = {
                    k: {"path": os.path.relpath(v, ROOT), "bytes": os.path.getsize(v)}
                    for k, v in fx.items()}
                case["fixtures"][key]["postprocessed_voxels"] = int((a != b).sum())
                case["fixtures"][key]["labels"] = nnunet_parity.label_counts(a)
                case["fixtures"][key]["labels_nopp"] = nnunet_parity.label_counts(b)
                print(f"{fam} {name}: nnU-Net {r['tiles']} tiles, {r['passes']} passes, "
                      f"{r['times']['total_s']:.1f} s; labels {nnunet_parity.label_counts(a)}; "
                      f"postprocessing changed {int((a != b).sum())} voxels", flush=True)
            if "mmsegd" not in steps or args.no_mmsegd:
                continue
            refs = {k: nnunet_parity.load_labels(v)[0] for k, v in fx.items()}
            avg = os.path.join(work, f"{key}-averaged.safetensors")
            for run_name, mfile, pp, ref in (("mmsegd", model, "yes", "pp"),
                                             ("mmsegd-nopp", model, "no", "nopp"),
                                             ("mmsegd-averaged", avg, "yes", "pp"),
                                             ("mmsegd-averaged-nopp", avg, "no", "nopp")):
                seg, wall = segment(mmsegd, mfile, dicom, os.path.join(cdir, f"{key}.{run_name}"),
                                    threads, pp)
                seg = {k: v for k, v in seg.items() if k != "nifti"} | {"wall_s": wall,
                                                                         "nifti": seg["nifti"]}
                lab, _ = nnunet_parity.load_labels(seg["nifti"])
                del seg["nifti"]
                runs[f"{key}.{run_name}"] = seg
                pair = f"{key}: nnunet{'' if ref == 'pp' else '-nopp'}~{run_name}"
                c = nnunet_parity.compare(refs[ref], lab)
                cmp_[pair] = c
                print(f"{pair}: agreement {c['agreement']:.6f}, foreground "
                      f"{c['foreground_agreement']:.6f} ({c['differing_voxels']} voxels "
                      f"differ); mmsegd postprocessed {seg.get('postprocessed_voxels')}",
                      flush=True)
                averaged = "averaged" in run_name
                if not averaged and c["agreement"] < MIN_AGREEMENT:
                    failures.append(f"{name}: {pair} agreement {c['agreement']:.6f} < "
                                    f"{MIN_AGREEMENT}")
                if averaged and c["agreement"] >= MIN_AGREEMENT:
                    failures.append(f"{name}: {pair}: the weight-averaged folds agree "
                                    f"({c['agreement']:.6f}), so the test would not catch "
                                    f"averaging")
    state["failures"] = failures
    if args.record:
        write_record(args.record, state)
    if failures:
        raise FamiliesError("; ".join(failures))


def write_record(path, state):
    rec = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "generator": "tools/mmunet/nnunet_families.sh (tools/mmunet/nnunet_families.py run)",
        "versions": state["versions"],
        "mmsegd": state.get("mmsegd"),
        "min_agreement": MIN_AGREEMENT,
        "dataset": state.get("dataset"),
        "plans": state.get("plans"),
        "training": {"folds": list(FOLDS), "device": "cpu",
                     "trainers": {f: FAMILIES[f]["trainer"] for f in FAMILIES}},
        "nnunet_settings": "nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, "
                           "use_mirroring=True, perform_everything_on_device=False, "
                           "device=cpu).initialize_from_trained_model_folder(RESULTS, "
                           "use_folds=(0, 1), checkpoint_name='checkpoint_final.pth'); "
                           "postprocessing: load_postprocess_save (nnUNetv2_apply_"
                           "postprocessing's) with the postprocessing.pkl, else the card's",
        "families": state.get("families"),
        "cases": state.get("cases"),
        "seconds": state.get("seconds"),
        "timing_note": "one run each on the machine above, which other jobs shared",
    }
    rec["summary"] = {c: {pair: round(v["agreement"], 6) for pair, v in i.get("compare",
                                                                              {}).items()}
                      for c, i in (state.get("cases") or {}).items()}
    with open(path, "w") as f:
        json.dump(rec, f, indent=1, default=json_default)
        f.write("\n")
    print(f"recorded {path}")


def main(argv):
    ap = argparse.ArgumentParser(description="nnU-Net families: train, export, parity")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the steps")
    r.add_argument("--work", required=True, help="scratch folder")
    r.add_argument("--record", default=DEFAULT_RECORD)
    r.add_argument("--no-record", dest="record", action="store_const", const=None)
    r.add_argument("--fixtures", default=DEFAULT_FIXTURES)
    r.add_argument("--families", help="comma-separated (default: " + ",".join(FAMILIES) + ")")
    r.add_argument("--steps", help="comma-separated (default: " + ",".join(STEPS) + ")")
    r.add_argument("--cases", help="comma-separated (default: " + ",".join(CASES) + ")")
    r.add_argument("--mmsegd", default=os.path.join(ROOT, "_build", "dev", "mmsegd"))
    r.add_argument("--no-mmsegd", action="store_true", help="skip `mmsegd segment`")
    r.add_argument("--phantom-python", default=DEBIAN_PY if os.path.exists(DEBIAN_PY)
                   else sys.executable)
    r.add_argument("--threads", type=int,
                   help="torch's threads in training and prediction, and mmsegd's (default 1: "
                        "on a shared machine torch's threads wait on each other)")
    a = sub.add_parser("average", help="a fold ensemble's members with their weights averaged")
    a.add_argument("model")
    a.add_argument("out")
    args = ap.parse_args(argv)
    if args.cmd == "average":
        return average_cmd(args)
    try:
        run(args)
    except ProofError as e:  # FamiliesError, or a command that failed
        print(f"nnunet-families: FAILED: {e}")
        return 1
    except Exception as e:
        import traceback
        traceback.print_exc()
        print(f"nnunet-families: FAILED: {type(e).__name__}: {e}")
        return 1
    print("nnunet-families: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
