"""Train the bundled demo model (models/demo.safetensors) on 2 CPU cores.

    /usr/bin/python3 tools/mmunet/train_demo.py [--iterations N] [--out models/demo.safetensors]
    /usr/bin/python3 tools/mmunet/train_demo.py --evaluate-only models/demo.safetensors

Training data: synthetic abdominal phantoms (tools/mmunet/phantom.py, seeds 0..N_TRAIN-1) and
the real 3 mm TotalSegmentator example (example_ct_sm.nii.gz with example_seg.nii.gz, whose
labels are TotalSegmentator output, not manual truth).  Held out for validation only: phantoms
with seeds from 1000, and the 20-slice DICOM example (example_ct_dicom with
example_seg_dicom.nii.gz).  Everything is seeded; the iteration count is fixed, so a run is
reproducible up to the floating-point summation order of the machine's PyTorch.

The model is small on purpose so that it trains on 2 CPU cores within the hour: 4 stages of one
block each, 8-16-32-64 features, 4 mm voxels, a 24x48x48 patch, and Mamba in the two deepest
stages only (the plain-PyTorch scan of the reference is what limits CPU training).  It is a demo model,
not for clinical use; its card records that and the Dice figures measured here.

Augmentation, beyond nnU-Net's foreground oversampling and mirroring: every case is surrounded
by AIR_MARGIN voxels of air in-plane (a scanner's field of view is wider than the patient, and
patches of air must be background: the stomach's gas has the same HU); a fifth of the patches
come from a thin slab of 5 to 16 slices padded to the patch with 0, as inference pads a short
series; contrast phase (organ HU moved per organ: down for the portal-venous phantoms, up for
the unenhanced real case); a random window (scale 0.75-1.25, shift +-0.2) and noise.

After training, the postprocessing is determined as nnU-Net determines it from its
cross-validation (keep the largest foreground component if no label loses and one gains Dice,
then per label if that label gains), on the held-out cases, and stated in the card; the
metrics are measured with it, and count the labelled voxels outside the body of the real
example (pipeline.outside_body).
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
from mmunet import export, labels as labmod, phantom, pipeline  # noqa: E402
from mmunet.model import MMUNet  # noqa: E402

TS = os.path.join(ROOT, "..", "shared", "testdata", "totalsegmentator", "tests",
                  "reference_files")
SPACING = [4.0, 4.0, 4.0]          # network frame (S, A, R), mm
PATCH = [24, 48, 48]
PHANTOM_SHAPE = (36, 88, 88)        # DICOM order (k, r, c) at SPACING
N_TRAIN = 48
AIR_MARGIN = 16                     # voxels of air added around every case in-plane (64 mm)
VAL_SEEDS = list(range(1000, 1005))
MIRROR_AXES = [0, 1]                # S-I and A-P only: a left-right flip would swap organs
ARCH = dict(input_channels=1, n_stages=4, features_per_stage=[8, 16, 32, 64],
            kernel_sizes=[[3, 3, 3]] * 4,
            strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
            n_blocks_encoder=[1, 1, 1, 1], n_blocks_decoder=[1, 1, 1], stem_blocks=1,
            mixer={"biscan": "separate", "mamba_stages": [2, 3]})


def nifti_geometry(img):
    """A NIfTI image as a DICOM-order array (k, r, c) with LPS direction vectors and the
    spacings of c, r and k: the i axis plays the columns, j the rows."""
    a = np.asarray(img.dataobj)
    aff = img.affine
    vecs, sp = [], []
    for ax in range(3):
        v = aff[:3, ax].astype(float)
        n = np.linalg.norm(v)
        sp.append(n)
        vecs.append(np.array([-v[0], -v[1], v[2]]) / n)   # RAS -> LPS
    return a.transpose(2, 1, 0), vecs[0], vecs[1], vecs[2], sp


def to_network_frame(arr_krc, u_c, u_r, u_k, sp):
    ori = pipeline.Orientation(u_c, u_r, u_k, sp, "RAS", [0, 1, 2])
    return ori.forward(arr_krc), ori.spacing


def load_training_set(names):
    """[(hu, lab)] in the network frame at SPACING."""
    cases = []
    for seed in range(N_TRAIN):
        hu, lab = phantom.make_phantom(seed, PHANTOM_SHAPE, (SPACING[0], SPACING[1], SPACING[2]),
                                       names)
        eye = np.eye(3)
        a, _ = to_network_frame(hu, eye[0], eye[1], eye[2], SPACING)
        b, _ = to_network_frame(lab, eye[0], eye[1], eye[2], SPACING)
        cases.append((a.astype(np.float32), b.astype(np.uint8)))
    ct = nib.load(os.path.join(TS, "example_ct_sm.nii.gz"))
    seg = nib.load(os.path.join(TS, "example_seg.nii.gz"))
    assert np.allclose(ct.affine, seg.affine), "example_seg is on example_ct_sm's grid"
    a, *g = nifti_geometry(ct)
    b = labmod.map_totalseg(np.asarray(seg.dataobj).transpose(2, 1, 0), names)
    a, sp = to_network_frame(a.astype(np.float32), *g)
    b, _ = to_network_frame(b, *g)
    shape = pipeline.new_shape(a.shape, sp, SPACING)
    a = pipeline.resample(a, shape, sp, SPACING, 3, 0)
    for ax in range(3):                       # labels: nearest neighbour, axis by axis
        b = pipeline._zoom_axis_nearest(b, ax, shape[ax])
    cases.append((a.astype(np.float32), np.ascontiguousarray(b, dtype=np.uint8)))
    # Scanners reconstruct a field of view much wider than the patient: surround each case with
    # air in-plane so that patches of pure air, labelled background, are common in training.
    pad = ((0, 0), (AIR_MARGIN, AIR_MARGIN), (AIR_MARGIN, AIR_MARGIN))
    return [(np.pad(hu, pad, constant_values=-1000.0), np.pad(lab, pad, constant_values=0))
            for hu, lab in cases]


def ct_statistics(cases):
    """nnU-Net's CT fingerprint over foreground voxels: 0.5/99.5 percentiles, mean, std."""
    fg = np.concatenate([hu[lab > 0][::7] for hu, lab in cases])
    lo, hi = np.percentile(fg, [0.5, 99.5])
    clipped = np.clip(fg, lo, hi)
    return {"scheme": "ct", "clip_low": round(float(lo), 2), "clip_high": round(float(hi), 2),
            "mean": round(float(clipped.mean()), 3), "std": round(float(clipped.std()), 3)}


def augment_intensity(hu, lab, rng, ncls, real):
    """Contrast phase: each organ's HU moves by its own random offset (the phantoms are
    portal-venous and may lose up to 70 HU; the real case is unenhanced and may gain up to 100
    HU), so that both phases look familiar. Returns a new array; lab is not changed."""
    hu = hu.copy()
    for c in range(1, ncls):
        m = lab == c
        if m.any():
            hu[m] += rng.uniform(0.0, 100.0) if real else -rng.uniform(0.0, 70.0)
    return hu


def sample_batch(cases, norm, rng, batch, ncls):
    xs, ys = [], []
    for _ in range(batch):
        # The real case is drawn as often as 8 phantoms: it is the only real anatomy we have.
        weights = np.ones(len(cases))
        weights[-1] = 8.0
        k = rng.choice(len(cases), p=weights / weights.sum())
        hu, lab = cases[k]
        real = k == len(cases) - 1
        if rng.random() < 0.5:
            hu = augment_intensity(hu, lab, rng, ncls, real)
        if rng.random() < 0.2:
            # A thin slab (a 20 to 64 mm series): inference pads it to the patch with 0, as
            # the padding below does, so training must have seen such patches.
            n = int(rng.integers(5, 17))
            z0 = int(rng.integers(0, hu.shape[0] - n + 1))
            hu, lab = hu[z0:z0 + n], lab[z0:z0 + n]
        x = pipeline.normalize_ct(hu, norm)
        pad = [(max(0, (PATCH[d] - x.shape[d]) // 2),
                max(0, PATCH[d] - x.shape[d]) - max(0, (PATCH[d] - x.shape[d]) // 2))
               for d in range(3)]
        x = np.pad(x, pad, constant_values=0.0)
        y = np.pad(lab, pad, constant_values=0)
        if rng.random() < 0.5 and y.max() > 0:
            # Foreground oversampling, as nnU-Net: centre on a voxel of a random present class.
            cls = rng.choice(np.unique(y[y > 0]))
            pts = np.argwhere(y == cls)
            c = pts[rng.integers(len(pts))]
            start = [int(np.clip(c[d] - PATCH[d] // 2, 0, x.shape[d] - PATCH[d])) for d in range(3)]
        else:
            start = [int(rng.integers(0, x.shape[d] - PATCH[d] + 1)) for d in range(3)]
        sl = tuple(slice(start[d], start[d] + PATCH[d]) for d in range(3))
        x, y = x[sl], y[sl]
        for ax in MIRROR_AXES:
            if rng.random() < 0.5:
                x, y = np.flip(x, ax), np.flip(y, ax)
        x = x * rng.uniform(0.75, 1.25) + rng.uniform(-0.2, 0.2)
        if rng.random() < 0.3:
            x = x + rng.normal(0, rng.uniform(0.02, 0.15), x.shape)
        xs.append(np.ascontiguousarray(x, dtype=np.float32))
        ys.append(np.ascontiguousarray(y, dtype=np.int64))
    return torch.from_numpy(np.stack(xs))[:, None], torch.from_numpy(np.stack(ys))


def dice_ce_loss(logits, target, ncls):
    ce = F.cross_entropy(logits, target)
    p = torch.softmax(logits, 1)
    oh = F.one_hot(target, ncls).permute(0, 4, 1, 2, 3).float()
    inter = (p * oh).sum((0, 2, 3, 4))
    den = p.sum((0, 2, 3, 4)) + oh.sum((0, 2, 3, 4))
    dice = (2 * inter + 1e-5) / (den + 1e-5)
    return ce + (1 - dice[1:].mean())


def validation_cases(names):
    """[(name, hu, u_c, u_r, u_k, spacing, truth)]: the held-out phantoms and, where dcm2niix
    decodes it, the held-out real DICOM example (named "real")."""
    eye = np.eye(3)
    out = []
    for seed in VAL_SEEDS:
        hu, lab = phantom.make_phantom(seed, PHANTOM_SHAPE, tuple(SPACING), names)
        out.append((f"phantom {seed}", hu, eye[0], eye[1], eye[2], SPACING, lab))
    real = real_example()
    if real is not None:
        out.append(("real",) + real)
    return out


def predict_all(net, card, cases):
    """Each case's labels with TTA and without postprocessing."""
    raw = dict(card, postprocessing=[])
    return [pipeline.segment(net, raw, c[1], c[2], c[3], c[4], c[5], tta=True) for c in cases]


def mean_dice(preds, cases, ids):
    """Dice per label averaged over the cases where it is present in truth or prediction."""
    per = {i: [] for i in ids}
    for pred, c in zip(preds, cases):
        for i, d in pipeline.dice(pred, c[6], ids).items():
            if d is not None:
                per[i].append(d)
    return {i: float(np.mean(v)) for i, v in per.items() if v}


def determine_postprocessing(preds, cases, ids):
    """nnU-Net's rule (determine_postprocessing): keep the largest foreground component if no
    label's mean Dice gets worse and one gets better; then, for each label, keep its largest
    component if that label's mean Dice gets better. Returns the card's steps."""
    steps = []
    base = mean_dice(preds, cases, ids)
    fg = [pipeline.keep_largest_component(p, ids) for p in preds]
    after = mean_dice(fg, cases, ids)
    if all(after.get(i, 0) >= base[i] for i in base) and any(after.get(i, 0) > base[i] for i in base):
        steps.append({"keep_largest_component": list(ids)})
        preds, base = fg, after
    for i in ids:
        one = [pipeline.keep_largest_component(p, [i]) for p in preds]
        after = mean_dice(one, cases, ids)
        if i in base and after.get(i, 0) > base[i]:
            steps.append({"keep_largest_component": [i]})
            preds, base = one, after
    return steps


def evaluate(net, card, names, cases=None, preds=None):
    """Dice per label on the held-out phantoms and on the held-out real DICOM example, with
    the card's postprocessing; labelled voxels outside the body of the real example."""
    ids = list(range(1, len(names) + 1))
    cases = cases if cases is not None else validation_cases(names)
    if preds is None:
        preds = predict_all(net, card, cases)
    preds = [pipeline.postprocess(p, card.get("postprocessing", [])) for p in preds]
    result = {}
    for pred, c in zip(preds, cases):
        if c[0] == "real":
            d = pipeline.dice(pred, c[6], ids)
            result["real_example"] = {names[i - 1]: round(v, 4) for i, v in d.items()
                                      if v is not None}
            vals = list(result["real_example"].values())
            result["real_example_mean"] = round(float(np.mean(vals)), 4) if vals else None
            result["real_example_outside_body"] = pipeline.outside_body(c[1], pred)
    ph = [(p, c) for p, c in zip(preds, cases) if c[0] != "real"]
    dice = mean_dice([p for p, _ in ph], [c for _, c in ph], ids)
    result["phantoms"] = {names[i - 1]: round(v, 4) for i, v in dice.items()}
    result["phantoms_mean"] = round(float(np.mean(list(result["phantoms"].values()))), 4)
    return result


def real_example():
    """The 20-slice JPEG 2000 DICOM example, decoded by dcm2niix (pydicom has no JPEG 2000
    decoder here), with example_seg_dicom.nii.gz on the same grid."""
    src = os.path.join(TS, "example_ct_dicom")
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run(["dcm2niix", "-z", "n", "-f", "ct", "-o", d, src],
                           capture_output=True, text=True)
        path = os.path.join(d, "ct.nii")
        if r.returncode != 0 or not os.path.exists(path):
            print(f"real example: dcm2niix failed: {r.stdout[-300:]} {r.stderr[-300:]}")
            return None
        ct = nib.load(path)
        ct = nib.Nifti1Image(np.asarray(ct.dataobj).astype(np.float32), ct.affine)
    seg = nib.load(os.path.join(TS, "example_seg_dicom.nii.gz"))
    if ct.shape != seg.shape or not np.allclose(ct.affine, seg.affine, atol=1e-3):
        raise SystemExit(f"real example: CT {ct.shape} {ct.affine} and label map {seg.shape} "
                         f"{seg.affine} are not on one grid")
    hu, u_c, u_r, u_k, sp = nifti_geometry(ct)
    lab = labmod.map_totalseg(np.asarray(seg.dataobj).transpose(2, 1, 0), labmod.DEMO_LABEL_NAMES)
    return hu, u_c, u_r, u_k, sp, lab


def build_card(net, norm, names, metrics, iterations, seconds, postprocessing=()):
    card = export.make_card(
        net, name="mmunet-demo-ct", version="0.2.0",
        description=("Demo MM-UNet for abdominal CT, 9 organs, trained in about an hour on 2 CPU "
                     "cores on synthetic phantoms and one real case. A demonstration model, "
                     "NOT FOR CLINICAL USE."),
        license="Apache-2.0",
        preprocessing={"orientation": "RAS", "transpose_forward": [0, 1, 2],
                       "transpose_backward": [0, 1, 2], "target_spacing": SPACING,
                       "crop_to_nonzero": True, "normalization": norm,
                       "resampling": {"data_order": 3, "data_order_z": 0, "logits_order": 1,
                                      "logits_order_z": 0, "anisotropy_threshold": 3.0,
                                      "force_separate_z": None}},
        inference={"patch_size": PATCH, "tile_step": 0.5, "mirror_axes": MIRROR_AXES,
                   "gaussian": {"sigma_scale": 0.125, "peak": 10.0}, "pad_value": 0.0},
        labels=labmod.demo_labels(),
        provenance={
            "trainer": "tools/mmunet/train_demo.py",
            "date": datetime.date.today().isoformat(),
            "training_data": (f"{N_TRAIN} synthetic phantoms (tools/mmunet/phantom.py, seeds "
                              f"0..{N_TRAIN - 1}) and the TotalSegmentator 3 mm example "
                              "(example_ct_sm.nii.gz with example_seg.nii.gz)"),
            "iterations": iterations, "training_seconds": round(seconds),
            "clinical_use": "none: demonstration model",
            "metrics": metrics,
            "metrics_note": ("Dice with TTA on held-out phantoms (seeds 1000-1004, truth known) "
                             "and on the held-out 20-slice DICOM example against "
                             "TotalSegmentator's output (a model's labels, not manual truth). "
                             "Postprocessing determined on the same held-out cases by nnU-Net's "
                             "rule; real_example_outside_body counts labelled voxels outside "
                             "the body (largest HU > -500 component, holes filled per slice)."),
        })
    if postprocessing:
        card["postprocessing"] = list(postprocessing)
    return card


def finish(net, norm, names, iterations, seconds, out):
    """Determine the postprocessing, measure, and write the model with its final card."""
    net.eval()
    card = build_card(net, norm, names, {}, iterations, seconds)
    cases = validation_cases(names)
    preds = predict_all(net, card, cases)
    pp = determine_postprocessing(preds, cases, list(range(1, len(names) + 1)))
    print(f"postprocessing: {json.dumps(pp)}", flush=True)
    card = build_card(net, norm, names, {}, iterations, seconds, pp)
    metrics = evaluate(net, card, names, cases, preds)
    print(json.dumps(metrics, indent=1), flush=True)
    card = build_card(net, norm, names, metrics, iterations, seconds, pp)
    sha = export.write_model(out, net.state_dict(), card)
    print(f"wrote {out} sha256 {sha} ({os.path.getsize(out)} bytes)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=40.0,
                    help="training time budget (ignored with --iterations)")
    ap.add_argument("--iterations", type=int, default=0,
                    help="a fixed iteration count (the card records the count a run used)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "demo.safetensors"))
    ap.add_argument("--evaluate-only", metavar="MODEL")
    ap.add_argument("--finish", metavar="MODEL",
                    help="determine the postprocessing of a trained model, measure it and "
                         "rewrite its card")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)   # decays that underflow would otherwise crawl
    names = labmod.DEMO_LABEL_NAMES
    ncls = len(names) + 1

    if args.evaluate_only:
        net, card, sha = export.load_network(args.evaluate_only)
        print(json.dumps(evaluate(net, card, names), indent=1))
        return 0
    if args.finish:
        net, card, sha = export.load_network(args.finish)
        prov = card["provenance"]
        finish(net, card["preprocessing"]["normalization"], names, prov["iterations"],
               prov["training_seconds"], args.finish)
        return 0

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    cases = load_training_set(names)
    norm = ct_statistics(cases)
    print(f"data: {len(cases)} cases in {time.time() - t0:.0f} s; normalization {norm}",
          flush=True)
    net = MMUNet(num_classes=ncls, **ARCH)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    budget = args.minutes * 60.0
    t0 = time.time()
    net.train()
    running = None
    it = 0
    while (args.iterations and it < args.iterations) or \
            (not args.iterations and time.time() - t0 < budget):
        it += 1
        frac = it / args.iterations if args.iterations else (time.time() - t0) / budget
        lr = args.lr * min(1.0, frac / 0.03) * (1.0 - min(frac, 0.999)) ** 0.9
        for grp in opt.param_groups:
            grp["lr"] = lr
        x, y = sample_batch(cases, norm, rng, args.batch, ncls)
        loss = dice_ce_loss(net(x), y, ncls)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12.0)
        opt.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if it % 25 == 0 or it == 1:
            el = time.time() - t0
            print(f"iter {it} loss {running:.4f} lr {lr:.5f} {el:.0f} s ({el / it:.2f} s/iter)",
                  flush=True)
    args.iterations = it
    seconds = time.time() - t0
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    # The trained weights first, so that a failure below loses no training (--finish resumes).
    export.write_model(args.out, net.state_dict(),
                       build_card(net, norm, names, {}, args.iterations, seconds))
    finish(net, norm, names, args.iterations, seconds, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
