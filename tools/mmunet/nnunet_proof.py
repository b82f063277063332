"""End-to-end proof of the nnU-Net v2 integration of MM-UNet (run by nnunet_proof.sh).

    python nnunet_proof.py run --work DIR --record FILE [--setup-seconds S]

`run` needs nnunetv2 and torch 2.x (the virtual environment of nnunet_proof.sh).  In order:

 1. dataset   a small synthetic CT dataset in nnU-Net's raw format (Dataset990_MMUNetProof:
              NIfTI, channel "CT", labels liver, arota (AMOS's spelling of aorta) and an
              unknown "blob"), under DIR/raw
 2. plan      nnUNetv2_plan_and_preprocess -d 990 -c 3d_fullres --verify_dataset_integrity
 3. install   install_nnunet_trainer.py (the trainer shim inside the nnunetv2 package)
 4. train     nnUNetv2_train 990 3d_fullres 0 -tr nnUNetTrainerMMUNet_2epochs -device cpu,
              which ends with nnU-Net's own validation (sliding window, mirroring)
 5. export    export_nnunet.py RESULTS -o DIR/model.safetensors --folds 0
 6. check     the network nnU-Net's predictor restores from the checkpoint and the network
              export.load_network() reads from the file give the same logits on a random
              input (eval mode, deep supervision off); the official safetensors package (when
              installed) reads the same tensors and card as export.read_model; the card says
              what the plan and dataset.json say
 7. debian    where /usr/bin/python3 has torch (Debian's 1.13), the exporter runs there too and
              must write the same tensors

Each step's seconds, the versions and the largest difference go to the JSON record; the last
line printed is `nnunet-proof: ok`, or `nnunet-proof: FAILED: <reason>` with a non-zero exit.
"""

import argparse
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
sys.path.insert(0, os.path.dirname(HERE))

DATASET_ID = 990
DATASET_NAME = "Dataset990_MMUNetProof"
TRAINER = "nnUNetTrainerMMUNet_2epochs"
CONFIGURATION = "3d_fullres"
LABELS = {"background": 0, "liver": 1, "arota": 2, "blob": 3}
# Array shape (z, y, x) and spacing (z, y, x) in mm of every case; nnU-Net plans the patch
# as the whole case.  Small on purpose: the reference Mamba is plain PyTorch, and its training
# cost grows faster than linearly with the tokens of stage 0, while the proof must train on 2
# CPU cores in minutes.
SHAPE = (8, 16, 16)
SPACING = (2.0, 1.0, 1.0)
N_CASES = 5
TOLERANCE = 1e-5
MODEL_VERSION = "0.0.1"


class ProofError(Exception):
    pass


# ------------------------------------------------------------------------------ the dataset
def make_case(rng, shape=SHAPE):
    """One CT-like volume (int16 HU) and its labels, both (z, y, x).

    Air outside an elliptic body of soft tissue; a large ellipsoid "liver", a bright tube
    along z (the aorta, contrast-enhanced) and a small dark "blob"; Gaussian noise."""
    z, y, x = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    nz, ny, nx = shape
    img = np.full(shape, -1000.0)
    lab = np.zeros(shape, np.uint8)
    body = ((y - ny / 2) / (0.46 * ny)) ** 2 + ((x - nx / 2) / (0.46 * nx)) ** 2 < 1
    img[body] = 30.0
    c = rng.uniform([0.4, 0.35, 0.25], [0.6, 0.5, 0.4]) * shape
    r = rng.uniform([0.3, 0.18, 0.15], [0.4, 0.25, 0.2]) * shape
    liver = (((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2) < 1
    img[liver] = 60.0
    lab[liver] = 1
    ay, ax = rng.uniform([0.55, 0.5], [0.65, 0.6]) * shape[1:]
    aorta = ((y - ay) ** 2 + (x - ax) ** 2) < rng.uniform(2.0, 2.8) ** 2
    img[aorta] = 220.0
    lab[aorta] = 2
    b = rng.uniform([0.3, 0.25, 0.6], [0.7, 0.4, 0.75]) * shape
    blob = ((z - b[0]) ** 2 / 4 + (y - b[1]) ** 2 + (x - b[2]) ** 2) < rng.uniform(2.0, 3.0) ** 2
    img[blob & body] = -60.0
    lab[blob & body] = 3
    img += rng.normal(0.0, 15.0, shape)
    return np.round(img).astype(np.int16), lab


def write_nifti(path, array_zyx, spacing_zyx):
    """Save a (z, y, x) array as NIfTI (x, y, z); nnU-Net's reader gives back (z, y, x)."""
    import nibabel
    affine = np.diag([spacing_zyx[2], spacing_zyx[1], spacing_zyx[0], 1.0])
    nibabel.save(nibabel.Nifti1Image(np.ascontiguousarray(array_zyx.transpose(2, 1, 0)),
                                     affine), path)


def make_dataset(raw_dir, n_cases=N_CASES, seed=990):
    root = os.path.join(raw_dir, DATASET_NAME)
    if os.path.isdir(root):
        shutil.rmtree(root)
    os.makedirs(os.path.join(root, "imagesTr"))
    os.makedirs(os.path.join(root, "labelsTr"))
    rng = np.random.default_rng(seed)
    for i in range(n_cases):
        img, lab = make_case(rng)
        write_nifti(os.path.join(root, "imagesTr", f"proof_{i:03d}_0000.nii.gz"), img, SPACING)
        write_nifti(os.path.join(root, "labelsTr", f"proof_{i:03d}.nii.gz"), lab, SPACING)
    with open(os.path.join(root, "dataset.json"), "w") as f:
        json.dump({"channel_names": {"0": "CT"}, "labels": LABELS, "numTraining": n_cases,
                   "file_ending": ".nii.gz", "name": "MMUNetProof",
                   "description": "synthetic CT-like blobs for the mmsegd nnU-Net proof",
                   "licence": "CC0-1.0"}, f, indent=2)
    return root


# ------------------------------------------------------------------------------ the checks
def check_card(card, plans, dataset_json, results_dir):
    """The card says what the plan, dataset.json and mmunet.md 2.2 say."""
    from mmunet.nnunet_trainer import arch_kwargs_from_plans
    from mmunet.model import default_blocks
    conf = plans["configurations"][CONFIGURATION]
    kw = arch_kwargs_from_plans(plans, CONFIGURATION)
    a, p, inf = card["architecture"], card["preprocessing"], card["inference"]
    S = kw["n_stages"]
    enc, dec = default_blocks(S)
    fp = plans["foreground_intensity_properties_per_channel"]["0"]
    expect = [
        ("n_stages", a["n_stages"], S),
        ("features_per_stage", a["features_per_stage"], kw["features_per_stage"]),
        ("kernel_sizes", a["kernel_sizes"], kw["kernel_sizes"]),
        ("strides", a["strides"], kw["strides"]),
        ("n_blocks_encoder", a["n_blocks_encoder"], enc),
        ("n_blocks_decoder", a["n_blocks_decoder"], dec),
        ("num_classes", a["num_classes"], len(dataset_json["labels"])),
        ("target_spacing", p["target_spacing"], conf["spacing"]),
        ("transpose_forward", p["transpose_forward"], plans["transpose_forward"]),
        ("transpose_backward", p["transpose_backward"], plans["transpose_backward"]),
        ("orientation", p["orientation"], "LPS"),      # the default SimpleITKIO reader
        ("clip_low", p["normalization"]["clip_low"], fp["percentile_00_5"]),
        ("clip_high", p["normalization"]["clip_high"], fp["percentile_99_5"]),
        ("mean", p["normalization"]["mean"], fp["mean"]),
        ("std", p["normalization"]["std"], fp["std"]),
        ("patch_size", inf["patch_size"], conf["patch_size"]),
        ("label 1", (card["labels"][0]["name"], card["labels"][0]["type"]["code"]),
         ("liver", "10200004")),
        ("label 2 (arota)", (card["labels"][1]["name"], card["labels"][1]["type"]["code"]),
         ("aorta", "15825003")),
        ("label 3 (unknown)", (card["labels"][2]["name"], card["labels"][2]["category"]["code"]),
         ("blob", "85756007")),
    ]
    for what, got, want in expect:
        if got != want:
            raise ProofError(f"card {what}: {got!r}, expected {want!r}")
    if not card["provenance"]["nnunet_trainer"] == TRAINER:
        raise ProofError(f"card provenance names {card['provenance']['nnunet_trainer']!r}")


def check_networks(results_dir, model_path, fold):
    """Largest |difference| of the logits and of the weights between the network nnU-Net's
    predictor restores from the checkpoint and the one load_network reads from the file."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from mmunet import export
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                perform_everything_on_device=False,
                                device=torch.device("cpu"), verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(results_dir, use_folds=(fold,),
                                                   checkpoint_name="checkpoint_final.pth")
    ref = predictor.network.eval()
    if ref.deep_supervision:
        raise ProofError("nnU-Net's predictor got a network with deep supervision on")
    net, card, _ = export.load_network(model_path)
    ref_sd = {k: v for k, v in ref.state_dict().items() if not k.startswith("decoder.ds_heads.")}
    net_sd = net.state_dict()
    if set(ref_sd) != set(net_sd):
        raise ProofError(f"tensor names differ: {sorted(set(ref_sd) ^ set(net_sd))[:5]}")
    w_diff = max(float((ref_sd[k].float() - net_sd[k]).abs().max()) if ref_sd[k].numel() else 0.0
                 for k in ref_sd)
    g = torch.Generator().manual_seed(990)
    x = torch.randn((2, 1, *card["inference"]["patch_size"]), generator=g)
    with torch.no_grad():
        a = ref(x)
        b = net(x)
    if a.shape != b.shape:
        raise ProofError(f"logit shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    diff = float((a - b).abs().max())
    scale = max(1.0, float(a.abs().max()))
    if not diff <= TOLERANCE * scale:
        raise ProofError(f"logits differ by {diff:.3g} (tolerance {TOLERANCE * scale:.3g})")
    return diff, w_diff, scale


def check_safetensors(model_path):
    """The official safetensors package reads the same tensors and card as export.read_model.
    Returns the package version, or None where it is not installed."""
    try:
        import safetensors
        from safetensors import safe_open
        from safetensors.numpy import load_file
    except ImportError:
        return None
    from mmunet import export
    card, tensors, _ = export.read_model(model_path)
    theirs = load_file(model_path)
    if set(theirs) != set(tensors):
        odd = sorted(set(theirs) ^ set(tensors))[:5]
        raise ProofError(f"safetensors lists other tensors: {odd}")
    for k, v in tensors.items():
        if theirs[k].dtype != np.float32 or not np.array_equal(theirs[k], v):
            raise ProofError(f"safetensors reads tensor {k!r} differently")
    with safe_open(model_path, framework="np") as f:
        meta = f.metadata()
    if json.loads(meta[export.CARD_KEY]) != card:
        raise ProofError("safetensors reads a different model card")
    return safetensors.__version__


def check_debian_export(results_dir, model_path, work, fold):
    """Export again with Debian's python3 and torch 1.13 and compare the tensors and card.
    Returns the Debian torch version, or None where /usr/bin/python3 has no torch."""
    deb = "/usr/bin/python3"
    if not os.path.exists(deb):
        return None
    probe = subprocess.run([deb, "-c", "import torch; print(torch.__version__)"],
                           capture_output=True, text=True, env=_plain_env())
    if probe.returncode != 0:
        return None
    version = probe.stdout.strip().splitlines()[-1]
    out = os.path.join(work, "model-debian.safetensors")
    run_cmd([deb, os.path.join(HERE, "export_nnunet.py"), results_dir, "-o", out,
             "--folds", str(fold), "--version", MODEL_VERSION], env=_plain_env())
    from mmunet import export
    card_a, ta, _ = export.read_model(model_path)
    card_b, tb, _ = export.read_model(out)
    if set(ta) != set(tb) or any(not np.array_equal(ta[k], tb[k]) for k in ta):
        raise ProofError("the export under Debian's torch has different tensors")
    for c in (card_a, card_b):
        for k in ("torch_version", "nnunetv2_version", "date"):
            c["provenance"].pop(k, None)
    if card_a != card_b:
        raise ProofError("the export under Debian's torch has a different card")
    return version


# ------------------------------------------------------------------------------ the run
def _plain_env():
    """The environment without the virtual environment's variables."""
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONHOME", None)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(sys.prefix))
    return env


def run_cmd(cmd, env=None, log=None):
    """Run a command; its output goes to `log` (a file) or is shown on failure."""
    print("+ " + " ".join(cmd), flush=True)
    if log:
        with open(log, "w") as f:
            r = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            with open(log, errors="replace") as f:
                tail = f.read()[-4000:]
            raise ProofError(f"{cmd[0]} exited with {r.returncode}; end of {log}:\n{tail}")
    else:
        r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
        if r.returncode != 0:
            raise ProofError(f"{' '.join(cmd)} exited with {r.returncode}:\n{r.stdout[-4000:]}")
        return r.stdout


def versions():
    from importlib.metadata import version
    out = {"python": platform.python_version()}
    for pkg in ("torch", "nnunetv2", "numpy", "dynamic_network_architectures", "safetensors",
                "SimpleITK", "nibabel"):
        try:
            out[pkg] = version(pkg)
        except Exception:
            out[pkg] = None
    return out


def run(args):
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    env = dict(os.environ)
    env.update({
        "nnUNet_raw": os.path.join(work, "raw"),
        "nnUNet_preprocessed": os.path.join(work, "preprocessed"),
        "nnUNet_results": os.path.join(work, "results"),
        "nnUNet_def_n_proc": "1",      # worker processes of preprocessing and export
        "nnUNet_compile": "false",
        # glibc hands large blocks back to the kernel after each use, so every big temporary
        # of the scan costs fresh page faults; keeping them in the heap makes CPU training
        # several times faster on small machines.
        "MALLOC_MMAP_THRESHOLD_": "33554432",
        "MALLOC_TRIM_THRESHOLD_": "4294967296",
        "MALLOC_TOP_PAD_": "268435456",
    })
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        if os.path.isdir(env[k]):
            shutil.rmtree(env[k])
    seconds = {}
    if args.setup_seconds is not None:
        seconds["setup"] = round(args.setup_seconds, 1)
    bindir = os.path.dirname(sys.executable)
    results = os.path.join(env["nnUNet_results"], DATASET_NAME,
                           f"{TRAINER}__nnUNetPlans__{CONFIGURATION}")
    model = os.path.join(work, "model.safetensors")
    fold = 0
    record = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
              "versions": versions()}
    v = record["versions"]
    print(f"versions: python {v['python']}, torch {v['torch']}, nnunetv2 {v['nnunetv2']}, "
          f"numpy {v['numpy']}, safetensors {v['safetensors']}", flush=True)

    def step(name, fn):
        t = time.time()
        out = fn()
        seconds[name] = round(time.time() - t, 1)
        print(f"step {name}: {seconds[name]} s", flush=True)
        return out

    step("dataset", lambda: make_dataset(env["nnUNet_raw"]))
    # Fingerprinting and planning use nnUNet_n_proc_DA threads (it must be >= 1 there).
    step("plan", lambda: run_cmd(
        [os.path.join(bindir, "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID),
         "-c", CONFIGURATION, "--verify_dataset_integrity", "-np", "1"],
        env=dict(env, nnUNet_n_proc_DA="1"), log=os.path.join(work, "plan.log")))
    step("install", lambda: print(run_cmd(
        [sys.executable, os.path.join(HERE, "install_nnunet_trainer.py")], env=env), end=""))
    # Training augments in the main process (nnUNet_n_proc_DA=0): no worker competes for the
    # two cores.
    step("train", lambda: run_cmd(
        [os.path.join(bindir, "nnUNetv2_train"), str(DATASET_ID), CONFIGURATION, str(fold),
         "-tr", TRAINER, "-device", "cpu"],
        env=dict(env, nnUNet_n_proc_DA="0"), log=os.path.join(work, "train.log")))
    step("export", lambda: print(run_cmd(
        [sys.executable, os.path.join(HERE, "export_nnunet.py"), results, "-o", model,
         "--folds", str(fold), "--version", MODEL_VERSION], env=env), end=""))

    from mmunet import export
    card, _, sha = export.read_model(model)
    with open(os.path.join(results, "plans.json")) as f:
        plans = json.load(f)
    with open(os.path.join(results, "dataset.json")) as f:
        dataset_json = json.load(f)
    os.environ.update({k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed",
                                           "nnUNet_results")})

    def checks():
        check_card(card, plans, dataset_json, results)
        diff, w_diff, scale = check_networks(results, model, fold)
        st = check_safetensors(model)
        return diff, w_diff, scale, st

    diff, w_diff, scale, st_version = step("check", checks)
    print(f"logits: max |nnU-Net - exported| = {diff:.3g} (max |logit| {scale:.3g}); "
          f"weights: max |difference| = {w_diff:.3g}", flush=True)
    print("safetensors: " + (f"{st_version} reads the same tensors and card" if st_version
                             else "package not installed, skipped"), flush=True)
    deb = step("debian", lambda: check_debian_export(results, model, work, fold))
    print("debian export: " + (f"torch {deb} writes the same tensors and card" if deb
                               else "no torch in /usr/bin/python3, skipped"), flush=True)

    summary = os.path.join(results, f"fold_{fold}", "validation", "summary.json")
    dice = None
    if os.path.isfile(summary):
        with open(summary) as f:
            dice = json.load(f).get("foreground_mean", {}).get("Dice")
    seconds["total"] = round(sum(v for k, v in seconds.items()), 1)
    record.update({
        "debian_torch": deb,
        "dataset": {"name": DATASET_NAME, "cases": N_CASES, "shape_zyx": list(SHAPE),
                    "spacing_zyx": list(SPACING), "labels": LABELS},
        "trainer": TRAINER,
        "plan": {"patch_size": card["inference"]["patch_size"],
                 "n_stages": card["architecture"]["n_stages"],
                 "features_per_stage": card["architecture"]["features_per_stage"],
                 "strides": card["architecture"]["strides"],
                 "batch_size": plans["configurations"][CONFIGURATION]["batch_size"]},
        "seconds": seconds,
        "max_abs_diff_logits": diff,
        "max_abs_logit": scale,
        "max_abs_diff_weights": w_diff,
        "tolerance": TOLERANCE,
        "safetensors_check": "ok" if st_version else "skipped",
        "validation_dice_after_2_epochs": dice,
        "model_sha256": sha,
    })
    if args.record:
        with open(args.record, "w") as f:
            json.dump(record, f, indent=2)
            f.write("\n")
        print(f"recorded {args.record}")
    print("seconds: " + ", ".join(f"{k} {v}" for k, v in seconds.items()))


def main(argv):
    ap = argparse.ArgumentParser(description="nnU-Net v2 end-to-end proof for MM-UNet")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run every step")
    r.add_argument("--work", required=True, help="scratch folder (emptied)")
    r.add_argument("--record", help="JSON file for versions and figures")
    r.add_argument("--setup-seconds", type=float, help="time the environment took to set up")
    d = sub.add_parser("dataset", help="only write the synthetic raw dataset")
    d.add_argument("raw", help="nnUNet_raw folder")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "dataset":
            print(make_dataset(args.raw))
        else:
            run(args)
    except ProofError as e:
        print(f"nnunet-proof: FAILED: {e}")
        return 1
    except Exception as e:  # an unexpected failure still ends with the verdict line
        import traceback
        traceback.print_exc()
        print(f"nnunet-proof: FAILED: {type(e).__name__}: {e}")
        return 1
    print("nnunet-proof: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
