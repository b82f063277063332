"""The reference suite of mmunet.md 7, V4: nnU-Net v2, the numpy witness and mmsegd on the same
DICOM series (run by nnunet_parity.sh).

    python nnunet_parity.py run --work DIR [--record FILE] [--fixtures DIR] [--cases A,B,..]
        [--model FILE] [--mmsegd PATH | --no-mmsegd] [--witness-python PY | --no-witness]
        [--phantom-python PY] [--no-fp32] [--threads N]
    python nnunet_parity.py witness --model FILE --nifti CT.nii.gz --spacing SC SR SK
        --out LABELS.nii.gz [--tta yes|no] [--threads N]
    python nnunet_parity.py compare A.nii.gz B.nii.gz

`run` needs nnunetv2 and torch 2.x (the virtual environment of nnunet_proof.sh); `witness`
and `compare` need only numpy, scipy, scikit-image, nibabel and torch (Debian's python3 with
torch 1.13 will do).

For every case of CASES (mmunet.md 7, V5), in DIR/<case>:
 1. input     the DICOM series: a folder of the shared test data, or a phantom that
              tools/mmunet/phantom.py --dicom writes (deterministic: the SHA-256 of its files
              is recorded), run with --phantom-python (default /usr/bin/python3, the Python
              that `make check` uses to regenerate it)
 2. nifti     `mmsegd inspect --json --nifti`: the CT as int16 HU NIfTI, our own writer
 3. nnunet    nnUNetPredictor (nnunet_predict.py): tile step 0.5, Gaussian, mirroring on the
              card's axes, CPU, plans and dataset.json synthesised from the model card, the
              reference network of export.load_network: "nnunet" (mirroring on) and
              "nnunet-notta" (off), nnU-Net as shipped; "nnunet-fp32" and
              "nnunet-fp32-notta" are a diagnostic with float32 in place of nnU-Net's float16
              sliding-window accumulators (--no-fp32 skips them)
 4. witness   tools/mmunet/pipeline.py segment() with the reference network (mirroring on), on
              the HU of step 2 with the spacing `mmsegd inspect` reports and the directions
              of its NIfTI, in a subprocess of --witness-python (default /usr/bin/python3
              where it has torch, else this Python)
 5. mmsegd    `mmsegd segment --model FILE --backend cpu --json --nifti` on the DICOM of
              step 1: "mmsegd" (--tta yes) and "mmsegd-notta" (--tta no)
 6. compare   each pair among nnunet, nnunet-fp32, witness and mmsegd, and among
              nnunet-notta, nnunet-fp32-notta and mmsegd-notta: agreement (fraction of
              equal voxels), agreement on the voxels that either labels foreground, and
              Dice per label (skipped where a label is absent from both)
nnU-Net's label maps are copied, gzip level 9, to FIXTURES/<case>.nnunet.nii.gz and
<case>.nnunet-notta.nii.gz (default FIXTURES: tests/fixtures/parity), which
tests/test-parity.sh compares with `mmsegd segment`.  Versions, case definitions, sizes, tile
counts, timings and figures go to the record (default tests/fixtures/nnunet-parity.json); the
test reads its case list from there.

Verdict: every pair must agree on >= 99.9 % of the voxels (mmunet.md 7, V4); the last line is
`nnunet-parity: ok` or `nnunet-parity: FAILED: <reasons>`, with a non-zero exit status.
"""

import argparse
import datetime
import gzip
import hashlib
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

MIN_AGREEMENT = 0.999
# Runs compared with each other: with mirroring, and without.  nnU-Net's "nnunet" and
# "nnunet-notta" label maps are the fixtures of tests/test-parity.sh.
TTA_RUNS = ("nnunet", "nnunet-fp32", "witness", "mmsegd")
NOTTA_RUNS = ("nnunet-notta", "nnunet-fp32-notta", "mmsegd-notta")
FIXTURE_RUNS = ("nnunet", "nnunet-notta")
DEFAULT_MODEL = os.path.join(ROOT, "models", "demo.safetensors")
DEFAULT_RECORD = os.path.join(ROOT, "tests", "fixtures", "nnunet-parity.json")
DEFAULT_FIXTURES = os.path.join(ROOT, "tests", "fixtures", "parity")
DEBIAN_PY = "/usr/bin/python3"

# mmunet.md 7, V5.  "testdata": a folder of the shared test data; "phantom": the arguments of
# tools/mmunet/phantom.py (seeds outside the demo model's training seeds 0..47 and its
# held-out seeds 1000..1004).  With the demo card (4 mm isotropic target, patch 24x48x48):
CASES = {
    # 512x512x20 at 0.977 x 0.977 x 2 mm, JPEG 2000: 10 slices at 4 mm, padded to the patch
    # along z; spacing ratio 2.05 < 3, so full 3D resampling both ways.
    "ts-example": {"testdata": "totalsegmentator/tests/reference_files/example_ct_dicom",
                   "note": "real abdominal CT (TotalSegmentator example), 2 mm slices; "
                           "smaller than the patch along z (padding), full 3D path"},
    # 28 slices of 384x384 at 5 x 0.8 x 0.8 mm (8 MB): spacing ratio 6.25 > 3, so cubic
    # in-plane per slice and nearest along z (28 -> 35), and back linear in-plane, nearest z.
    "phantom-5mm": {"phantom": {"seed": 1005, "shape": [28, 384, 384],
                                "spacing": [5.0, 0.8, 0.8]},
                    "note": "phantom.py, 5 mm slices, 0.8 mm pixels: separate-z path"},
    # 96 slices of 240x240 at 1.5 mm isotropic (11 MB): full 3D cubic to 36x90x90.
    "phantom-1.5mm": {"phantom": {"seed": 1006, "shape": [96, 240, 240],
                                  "spacing": [1.5, 1.5, 1.5]},
                      "note": "phantom.py, 1.5 mm isotropic: full 3D path"},
    # Real DICOM at 5 mm (0.45 mm pixels): the separate-z path on scanner data.  A head
    # phantom, not an abdomen: the demo model's labels there are not anatomy.
    "philips-5mm": {"testdata": "dcm_qa_ct/In/Philips/S21570/S2010",
                    "note": "real CT of a head phantom (dcm_qa_ct Philips S21570), 5 mm "
                            "slices, 0.45 mm pixels: separate-z path on scanner data"},
}


class ParityError(Exception):
    pass


# ------------------------------------------------------------------------------ helpers
def find_testdata():
    for d in (os.environ.get("MMS_TESTDATA"), os.path.join(ROOT, "..", "shared", "testdata"),
              "/work/shared/testdata"):
        if d and os.path.isdir(os.path.join(d, "dcm_qa_ct", "In")):
            return os.path.abspath(d)
    return None


def sha256_files(folder):
    """SHA-256 over the files of a folder, by sorted name: name, then content."""
    h = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        p = os.path.join(folder, name)
        if os.path.isfile(p):
            h.update(name.encode() + b"\0")
            with open(p, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def folder_bytes(folder):
    return sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder))


def run_cmd(cmd, env=None, timeout=None):
    print("+ " + " ".join(cmd), flush=True)
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout)
    return r


def load_labels(path):
    """A label NIfTI as (array in file voxel order, affine)."""
    import nibabel
    img = nibabel.load(path)
    return np.asarray(img.dataobj), np.asarray(img.affine, dtype=np.float64)


def save_labels(path, lab, affine):
    import nibabel
    img = nibabel.Nifti1Image(np.ascontiguousarray(lab.astype(np.uint8)), affine)
    img.header.set_data_dtype(np.uint8)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    nibabel.save(img, path)


def gzip9(src, dst):
    """Copy a .nii.gz with the payload recompressed at level 9 and no timestamp."""
    with gzip.open(src, "rb") as f:
        raw = f.read()
    with open(dst, "wb") as out:
        with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=9, mtime=0) as g:
            g.write(raw)


def compare(a, b):
    """Agreement, foreground agreement and Dice per label of two label arrays."""
    if a.shape != b.shape:
        raise ParityError(f"label maps differ in shape: {a.shape} vs {b.shape}")
    eq = a == b
    fg = (a > 0) | (b > 0)
    n = int(a.size)
    labels = sorted(set(np.unique(a).tolist()) | set(np.unique(b).tolist()))
    dice = {}
    for lab in labels:
        if lab == 0:
            continue
        x, y = a == lab, b == lab
        s = int(x.sum()) + int(y.sum())
        dice[str(lab)] = round(2.0 * float(np.logical_and(x, y).sum()) / s, 6) if s else None
    return {
        "agreement": float(eq.sum()) / n,
        "foreground_agreement": float(eq[fg].sum()) / float(fg.sum()) if fg.any() else 1.0,
        "differing_voxels": int(n - eq.sum()),
        "foreground_voxels": int(fg.sum()),
        "dice": dice,
    }


def label_counts(lab):
    c = np.bincount(lab.ravel().astype(np.int64))
    return {str(i): int(v) for i, v in enumerate(c) if i > 0 and v > 0}


# ------------------------------------------------------------------------------ witness
def witness(args):
    """tools/mmunet/pipeline.py on a CT NIfTI written by `mmsegd inspect --nifti`."""
    import nibabel
    import torch
    from mmunet import export, pipeline
    if args.threads:
        torch.set_num_threads(args.threads)
    net, card, _ = export.load_network(args.model)
    img = nibabel.load(args.nifti)
    hu = np.asarray(img.dataobj).astype(np.float32)        # (i, j, k) = (column, row, slice)
    hu_krc = np.ascontiguousarray(hu.transpose(2, 1, 0))
    a = np.asarray(img.affine, dtype=np.float64)
    flip = np.array([-1.0, -1.0, 1.0])                     # RAS -> LPS
    u = [flip * a[:3, i] / np.linalg.norm(a[:3, i]) for i in range(3)]
    spacing = [float(s) for s in args.spacing]
    t = time.perf_counter()
    lab = pipeline.segment(net, card, hu_krc, u[0], u[1], u[2], spacing, tta=args.tta == "yes")
    dt = time.perf_counter() - t
    save_labels(args.out, lab.transpose(2, 1, 0), a)
    import scipy
    import skimage
    print(json.dumps({"total_s": round(dt, 3), "threads": torch.get_num_threads(),
                      "python": platform.python_version(), "torch": torch.__version__,
                      "numpy": np.__version__, "scipy": scipy.__version__,
                      "scikit-image": skimage.__version__}))
    return 0


def witness_python(choice):
    if choice:
        return choice
    if os.path.exists(DEBIAN_PY):
        r = subprocess.run([DEBIAN_PY, "-c", "import torch, skimage, scipy, nibabel"],
                           capture_output=True, env=plain_env())
        if r.returncode == 0:
            return DEBIAN_PY
    return sys.executable


def plain_env():
    """The environment without this virtual environment's variables."""
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONHOME", None)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(sys.prefix))
    return env


# ------------------------------------------------------------------------------ the run
def prepare_input(name, spec, work, testdata, phantom_py):
    """The DICOM folder of a case and what is known about it."""
    info = {"note": spec["note"]}
    if "testdata" in spec:
        if testdata is None:
            raise ParityError(f"{name}: the shared test data is not here (set MMS_TESTDATA)")
        d = os.path.join(testdata, spec["testdata"])
        if not os.path.isdir(d):
            raise ParityError(f"{name}: {d} is not here")
        info["input"] = {"testdata": spec["testdata"]}
        return d, info
    ph = spec["phantom"]
    out = os.path.join(work, "phantom")
    if os.path.isdir(out):
        shutil.rmtree(out)
    cmd = [phantom_py, os.path.join(HERE, "phantom.py"), "--seed", str(ph["seed"]),
           "--shape", *map(str, ph["shape"]), "--spacing", *map(str, ph["spacing"]),
           "--out", out, "--dicom"]
    t = time.perf_counter()
    r = run_cmd(cmd, env=plain_env())
    if r.returncode != 0:
        raise ParityError(f"{name}: phantom.py exited {r.returncode}: {r.stderr[-2000:]}")
    d = os.path.join(out, "dicom")
    info["input"] = {"phantom": ph, "dicom_sha256": sha256_files(d),
                     "dicom_bytes": folder_bytes(d),
                     "generate_s": round(time.perf_counter() - t, 2)}
    return d, info


def inspect(mmsegd, dicom, out):
    if os.path.isdir(out):
        shutil.rmtree(out)
    r = run_cmd([mmsegd, "inspect", "--json", "--nifti", out, dicom])
    if r.returncode != 0:
        raise ParityError(f"mmsegd inspect exited {r.returncode}: {r.stderr[-2000:]}")
    series = [s for s in json.loads(r.stdout)["series"] if s.get("volume")]
    if len(series) != 1:
        raise ParityError(f"{dicom}: {len(series)} series with a volume, expected 1")
    return series[0]


def run_mmsegd_segment(mmsegd, model, dicom, out, threads, tta):
    if os.path.isdir(out):
        shutil.rmtree(out)
    cmd = [mmsegd, "segment", "--model", model, "--backend", "cpu", "--tta", tta, "--json",
           "--nifti", out, dicom]
    if threads:
        cmd[2:2] = ["--threads", str(threads)]
    t = time.perf_counter()
    r = run_cmd(cmd)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise ParityError(f"mmsegd segment exited {r.returncode}: {r.stderr[-2000:]}")
    try:
        js = json.loads(r.stdout)
    except ValueError as e:
        raise ParityError(f"mmsegd segment --json printed no JSON ({e}): {r.stdout[:500]}")
    if len(js.get("series", [])) != 1:
        raise ParityError(f"mmsegd segment --json lists {len(js.get('series', []))} series")
    s = js["series"][0]
    return s, round(wall, 3)


def tool_version(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    return r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else None


def mmsegd_has_segment(mmsegd):
    r = subprocess.run([mmsegd, "segment", "--help"], capture_output=True, text=True)
    return r.returncode == 0


def run(args):
    from mmunet import nnunet_predict
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    testdata = find_testdata()
    model = os.path.abspath(args.model)
    names = list(CASES) if not args.cases else args.cases.split(",")
    for n in names:
        if n not in CASES:
            raise ParityError(f"unknown case {n!r} (known: {', '.join(CASES)})")
    if not os.path.exists(args.mmsegd):
        raise ParityError(f"{args.mmsegd} is not built (make -C _build/dev mmsegd)")
    mmsegd = None if args.no_mmsegd else os.path.abspath(args.mmsegd)
    if mmsegd and not mmsegd_has_segment(mmsegd):
        raise ParityError(f"{mmsegd} has no `segment` command (build it, or pass --no-mmsegd)")
    wpy = None if args.no_witness else witness_python(args.witness_python)
    threads = args.threads or os.cpu_count()

    t = time.perf_counter()
    pred = nnunet_predict.Predictor(model, tta=True, threads=threads)
    nn_predictors = {"nnunet": pred,
                     "nnunet-notta": nnunet_predict.Predictor(model, tta=False, threads=threads)}
    if not args.no_fp32:
        for run_name, tta in (("nnunet-fp32", True), ("nnunet-fp32-notta", False)):
            nn_predictors[run_name] = nnunet_predict.Predictor(model, tta=tta, threads=threads,
                                                               accumulate="fp32")
    ctor_diff = pred.check_constructor()
    setup_s = time.perf_counter() - t
    card = pred.card
    pp = nnunet_predict.postprocessing(card=card)
    ver = nnunet_predict.versions()
    print(f"versions: python {ver['python']}, torch {ver['torch']}, nnunetv2 {ver['nnunetv2']}, "
          f"numpy {ver['numpy']}, scipy {ver['scipy']}, scikit-image {ver['scikit-image']}",
          flush=True)
    print(f"get_network_from_plans: the reference class takes the model's tensors; "
          f"max |logit difference| {ctor_diff:.3g}", flush=True)

    record = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "threads": threads,
        "generator": "tools/mmunet/nnunet_parity.sh (tools/mmunet/nnunet_parity.py run)",
        "versions": ver,
        "model": {"path": os.path.relpath(model, ROOT), "sha256": pred.sha,
                  "name": card["name"], "version": card["version"]},
        "nnunet_settings": {
            "predictor": "nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, "
                         "use_mirroring=True, perform_everything_on_device=False, "
                         "device=cpu).manual_initialization(network=export.load_network(), "
                         "parameters=[state_dict], plans and dataset.json from the card)",
            "mirror_axes": card["inference"]["mirror_axes"],
            "reader": pred.plans["image_reader_writer"],
            "plans_3d_fullres": {k: v for k, v in
                                 pred.plans["configurations"]["3d_fullres"].items()
                                 if k != "architecture"},
            "intensity_properties": pred.plans["foreground_intensity_properties_per_channel"]["0"],
            "get_network_from_plans_max_abs_logit_diff": ctor_diff,
            "postprocessing": ("nnunetv2.postprocessing.remove_connected_components."
                               "load_postprocess_save with the card's steps "
                               f"{json.dumps(card.get('postprocessing', []))}"
                               if pp[0] else "none (the card states none)"),
        },
        "mmsegd": None if mmsegd is None else {
            "path": os.path.relpath(mmsegd, ROOT), "version": tool_version([mmsegd, "--version"]),
            "git_head": tool_version(["git", "-C", ROOT, "rev-parse", "HEAD"])},
        "witness": None if wpy is None else {"python": wpy},
        "timing_note": "stage times of one run each on the machine above, which other jobs "
                       "may have shared; tools/bench-pipeline.sh is the benchmark",
        "min_agreement": MIN_AGREEMENT,
        "cases": {},
    }
    fixtures = os.path.abspath(args.fixtures)
    os.makedirs(fixtures, exist_ok=True)
    failures = []
    for name in names:
        spec = CASES[name]
        cdir = os.path.join(work, name)
        os.makedirs(cdir, exist_ok=True)
        print(f"== {name}: {spec['note']}", flush=True)
        dicom, info = prepare_input(name, spec, cdir, testdata, args.phantom_python)
        s = inspect(args.mmsegd, dicom, os.path.join(cdir, "ct"))
        ct = s["volume"]["nifti"]
        ct_lab, ct_aff = load_labels(ct)
        info.update({"series_uid": s["series_uid"], "dims": s["volume"]["dims"],
                     "spacing": s["volume"]["spacing"], "runs": {}, "labels": {},
                     "fixtures": {}, "compare": {}})
        maps = {}

        def on_grid(run_name, path):
            lab, aff = load_labels(path)
            if lab.shape != ct_lab.shape or not np.allclose(aff, ct_aff, atol=1e-4):
                failures.append(f"{name}: {run_name}: labels not on the CT's grid "
                                f"({lab.shape} vs {ct_lab.shape})")
                return None
            info["labels"][run_name] = label_counts(lab)
            return lab

        # nnU-Net: as shipped with and without mirroring (the fixtures), and the diagnostic
        # run with float32 accumulators
        for run_name, p in nn_predictors.items():
            out = os.path.join(cdir, f"{run_name}.nii.gz")
            nn = p.predict(ct, out)
            if pp[0]:
                # the card's postprocessing, applied by nnU-Net's own function as
                # nnUNetv2_apply_postprocessing does (mmsegd and the witness apply it too)
                nn["times"]["postprocessing_s"] = p.postprocess(out, out, pp)
            info["runs"][run_name] = nn
            print(f"{run_name}: target {nn['target_zyx']}, {nn['tiles']} tiles, "
                  f"{nn['passes']} passes, {nn['times']['total_s']:.1f} s (network "
                  f"{nn['times']['network_s']:.1f} s)", flush=True)
            lab = on_grid(run_name, out)
            if lab is None:
                raise ParityError(f"{name}: nnU-Net's labels are not on the CT's grid")
            maps[run_name] = lab
            if run_name in FIXTURE_RUNS:
                fx = os.path.join(fixtures, f"{name}.{run_name}.nii.gz")
                gzip9(out, fx)
                info["fixtures"][run_name] = {"path": os.path.relpath(fx, ROOT),
                                              "bytes": os.path.getsize(fx),
                                              "tta": p.tta}

        # the numpy witness (mirroring on)
        if wpy:
            w_out = os.path.join(cdir, "witness.nii.gz")
            cmd = [wpy, os.path.abspath(__file__), "witness", "--model", model, "--nifti", ct,
                   "--spacing", *map(repr, info["spacing"]), "--out", w_out,
                   "--threads", str(threads)]
            r = run_cmd(cmd, env=plain_env())
            if r.returncode != 0:
                raise ParityError(f"{name}: the witness exited {r.returncode}: "
                                  f"{r.stderr[-3000:]}")
            info["runs"]["witness"] = json.loads(r.stdout.strip().splitlines()[-1])
            print(f"witness: {info['runs']['witness']['total_s']:.1f} s", flush=True)
            lab = on_grid("witness", w_out)
            if lab is not None:
                maps["witness"] = lab

        # mmsegd, with and without mirroring
        if mmsegd:
            for run_name, tta in (("mmsegd", "yes"), ("mmsegd-notta", "no")):
                seg, wall = run_mmsegd_segment(mmsegd, model, dicom,
                                               os.path.join(cdir, run_name), threads, tta)
                seg = dict(seg)
                seg["wall_s"] = wall
                info["runs"][run_name] = {k: v for k, v in seg.items() if k != "nifti"}
                print(f"{run_name}: {seg.get('times', {}).get('total_s', 0):.1f} s", flush=True)
                lab = on_grid(run_name, seg["nifti"])
                if lab is not None:
                    maps[run_name] = lab

        for group in (TTA_RUNS, NOTTA_RUNS):
            keys = [k for k in group if k in maps]
            for i in range(len(keys)):
                for j in range(i + 1, len(keys)):
                    pair = f"{keys[i]}~{keys[j]}"
                    c = compare(maps[keys[i]], maps[keys[j]])
                    info["compare"][pair] = c
                    print(f"{pair}: agreement {c['agreement']:.6f}, foreground "
                          f"{c['foreground_agreement']:.6f} ({c['differing_voxels']} voxels "
                          f"differ; {c['foreground_voxels']} foreground)", flush=True)
                    if c["agreement"] < MIN_AGREEMENT:
                        failures.append(f"{name}: {pair} agreement {c['agreement']:.6f} < "
                                        f"{MIN_AGREEMENT}")
        record["cases"][name] = info
    record["seconds_setup"] = round(setup_s, 1)
    record["summary"] = {
        "agreement": {c: {pair: round(v["agreement"], 6) for pair, v in i["compare"].items()}
                      for c, i in record["cases"].items()},
        "foreground_agreement": {c: {pair: round(v["foreground_agreement"], 6)
                                     for pair, v in i["compare"].items()}
                                 for c, i in record["cases"].items()},
    }
    if args.record:
        with open(args.record, "w") as f:
            json.dump(record, f, indent=1)
            f.write("\n")
        print(f"recorded {args.record}")
    if failures:
        raise ParityError("; ".join(failures))


def compare_cmd(args):
    a, _ = load_labels(args.a)
    b, _ = load_labels(args.b)
    print(json.dumps(compare(a, b)))
    return 0


def main(argv):
    ap = argparse.ArgumentParser(description="nnU-Net v2 / witness / mmsegd label parity")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run every case")
    r.add_argument("--work", required=True, help="scratch folder")
    r.add_argument("--record", default=DEFAULT_RECORD)
    r.add_argument("--no-record", dest="record", action="store_const", const=None)
    r.add_argument("--fixtures", default=DEFAULT_FIXTURES)
    r.add_argument("--cases", help="comma-separated names (default: all of " +
                   ", ".join(CASES) + ")")
    r.add_argument("--model", default=DEFAULT_MODEL)
    r.add_argument("--mmsegd", default=os.path.join(ROOT, "_build", "dev", "mmsegd"))
    r.add_argument("--no-mmsegd", action="store_true", help="skip `mmsegd segment`")
    r.add_argument("--witness-python")
    r.add_argument("--no-witness", action="store_true")
    r.add_argument("--no-fp32", action="store_true",
                   help="skip the diagnostic nnU-Net run with float32 accumulators")
    r.add_argument("--phantom-python", default=DEBIAN_PY if os.path.exists(DEBIAN_PY)
                   else sys.executable)
    r.add_argument("--threads", type=int)
    w = sub.add_parser("witness", help="tools/mmunet/pipeline.py on one CT NIfTI")
    w.add_argument("--model", required=True)
    w.add_argument("--nifti", required=True)
    w.add_argument("--spacing", type=float, nargs=3, required=True,
                   metavar=("SC", "SR", "SK"), help="column, row and slice spacing (mm)")
    w.add_argument("--out", required=True)
    w.add_argument("--tta", choices=("yes", "no"), default="yes")
    w.add_argument("--threads", type=int)
    c = sub.add_parser("compare", help="agreement and Dice of two label NIfTI files")
    c.add_argument("a")
    c.add_argument("b")
    args = ap.parse_args(argv)
    if args.cmd == "witness":
        return witness(args)
    if args.cmd == "compare":
        return compare_cmd(args)
    try:
        run(args)
    except ParityError as e:
        print(f"nnunet-parity: FAILED: {e}")
        return 1
    except Exception as e:
        import traceback
        traceback.print_exc()
        print(f"nnunet-parity: FAILED: {type(e).__name__}: {e}")
        return 1
    print("nnunet-parity: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
