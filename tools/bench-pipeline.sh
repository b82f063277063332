#!/bin/bash
# DICOM CT series to label map: `mmsegd segment --nifti` against nnU-Net v2's own predictor with
# the PyTorch reference network (tools/mmunet/nnunet_predict.py), CPU, same machine, same
# thread count, mirroring TTA on and off, all in one run.
#
#   tools/bench-pipeline.sh [--threads T] [--slices N] [--cases A,B] [--tta yes,no] [--short]
#
# Cases: (a) ts-example, TotalSegmentator's example CT (512x512x20, 2 mm, JPEG 2000 lossless,
# from the shared test data); (b) synthetic, a 512x512xN phantom series (default N = 300,
# 0.78125 mm pixels, 1.25 mm slices; tools/mmunet/phantom.py --dicom, seed 1007), generated once
# into _build/bench/phantom-512x512xN and reused. Model: models/demo.safetensors (MMSEGD_MODEL
# overrides it). --short: case (a) only.
#
# Ours: `mmsegd segment --model M --backend cpu --threads T --tta yes|no --json --nifti DIR`
# on the DICOM folder; its --json gives the stage times (load = DICOM read and decode,
# preprocess, network, export = back to the DICOM grid, write = NIfTI). nnU-Net:
# nnunet_predict.py in the virtual environment _build/venv-ref of
# tools/mmunet/nnunet_proof.sh (torch 2.x, nnunetv2), on the NIfTI that `mmsegd inspect --nifti`
# writes for the same series (converted before timing), with torch.set_num_threads(T) and
# nnUNet_def_n_proc=T; its stages: load (NIfTI read), preprocess, network (sliding window),
# export (resampling of the logits, argmax, NIfTI write). Both run under OMP_NUM_THREADS=T, and
# under taskset on cores 0..T-1 when T is below the core count; wall time and peak RSS come
# from /usr/bin/time -f '%e %M' around the whole process (start-up and model load included).
# One run each (the page cache is warmed by an untimed read of the input first).
#
# Default T: the number of cores. Figures go to _build/bench/pipeline-*.json; the table shows
# per-stage times, wall time, peak RSS, the ratios nnU-Net / ours for time and peak memory,
# and the share of our total that is not the network.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=$(nproc)
slices=300
cases=ts-example,synthetic
ttas=yes,no
while [ $# -gt 0 ]; do
    case $1 in
    --threads) threads=$2; shift 2 ;;
    --slices) slices=$2; shift 2 ;;
    --cases) cases=$2; shift 2 ;;
    --tta) ttas=$2; shift 2 ;;
    --short) cases=ts-example; shift ;;
    *) echo "usage: $0 [--threads T] [--slices N] [--cases A,B] [--tta yes,no] [--short]" >&2
       exit 2 ;;
    esac
done
mmsegd=${MMSEGD:-_build/dev/mmsegd}
model=${MMSEGD_MODEL:-models/demo.safetensors}
py=${PYTHON3:-/usr/bin/python3}
venv_py=_build/venv-ref/bin/python
out=_build/bench
mkdir -p "$out"

. tests/find-testdata.sh
die() { echo "bench-pipeline: $*" >&2; exit 1; }
[ -x "$mmsegd" ] || die "$mmsegd is not built (make -C _build/dev mmsegd)"
"$mmsegd" segment --help >/dev/null 2>&1 || die "$mmsegd has no segment command"
[ -x /usr/bin/time ] || die "/usr/bin/time is missing (apt-get install time)"
nnunet=yes
if ! "$venv_py" -c 'import nnunetv2, torch' >/dev/null 2>&1; then
    echo "bench-pipeline: $venv_py has no nnunetv2 (tools/mmunet/nnunet_proof.sh sets it up):" \
        "ours is timed alone, without ratios" >&2
    nnunet=no
fi

pin=()
if [ "$threads" -lt "$(nproc)" ] && command -v taskset >/dev/null; then
    pin=(taskset -c "0-$((threads - 1))")
fi
export OMP_NUM_THREADS=$threads

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# timed FILE CMD...: run CMD under /usr/bin/time; FILE gets "wall_s peak_kb", stdout goes to
# FILE.out, stderr to FILE.err
timed() {
    local f=$1
    shift
    /usr/bin/time -o "$f" -f '%e %M' "${pin[@]}" "$@" >"$f.out" 2>"$f.err"
}

run_case() { # run_case NAME DICOM_DIR NOTE
    local name=$1 dicom=$2 note=$3 ct tta
    echo "== $name: $dicom" >&2
    rm -f "$out/pipeline-$name".*
    echo "$note" >"$out/pipeline-$name.note"
    cat "$dicom"/* >/dev/null 2>&1 || true # page cache
    rm -rf "$tmp/ct-$name"
    "$mmsegd" inspect --json --nifti "$tmp/ct-$name" "$dicom" >"$tmp/ct-$name.json" ||
        die "$name: mmsegd inspect failed"
    ct=$("$py" -c 'import json, sys
s = [s for s in json.load(open(sys.argv[1]))["series"] if s.get("volume")]
print(s[0]["volume"]["nifti"])' "$tmp/ct-$name.json")
    for tta in ${ttas//,/ }; do
        echo "   mmsegd segment, tta $tta" >&2
        rm -rf "$tmp/ours"
        if ! timed "$tmp/ours.time" "$mmsegd" segment --model "$model" --backend cpu \
            --threads "$threads" --tta "$tta" --json --nifti "$tmp/ours" "$dicom"; then
            tail -5 "$tmp/ours.time.err" >&2
            die "$name: mmsegd segment failed"
        fi
        cp "$tmp/ours.time.out" "$out/pipeline-$name.ours-$tta.json"
        cp "$tmp/ours.time" "$out/pipeline-$name.ours-$tta.time"
        if [ $nnunet = yes ]; then
            echo "   nnU-Net predictor, tta $tta" >&2
            if ! timed "$tmp/nn.time" env nnUNet_def_n_proc="$threads" nnUNet_compile=false \
                "$venv_py" tools/mmunet/nnunet_predict.py --model "$model" --tta "$tta" \
                --threads "$threads" --json "$ct" "$tmp/nnunet.nii.gz"; then
                tail -5 "$tmp/nn.time.err" >&2
                die "$name: nnunet_predict.py failed"
            fi
            tail -1 "$tmp/nn.time.out" >"$out/pipeline-$name.nnunet-$tta.json"
            cp "$tmp/nn.time" "$out/pipeline-$name.nnunet-$tta.time"
            "$py" tools/mmunet/nnunet_parity.py compare "$tmp/nnunet.nii.gz" \
                "$(ls "$tmp"/ours/*.nii.gz)" >"$out/pipeline-$name.agree-$tta.json" || true
        fi
    done
}

list=()
for c in ${cases//,/ }; do
    case $c in
    ts-example)
        if find_testdata; then
            run_case ts-example "$td/totalsegmentator/tests/reference_files/example_ct_dicom" \
                "TotalSegmentator example CT, 512x512x20, 0.977x0.977x2 mm, JPEG 2000 lossless"
            list+=(ts-example)
        else
            echo "bench-pipeline: the shared test data is not here (MMS_TESTDATA): ts-example" \
                "skipped" >&2
        fi ;;
    synthetic)
        bench_phantom "$out" "$slices" "$py" || die "phantom.py failed (see $ph.log)"
        run_case synthetic "$ph/dicom" "phantom.py seed 1007, 512x512x$slices, \
0.78125x0.78125x1.25 mm, uncompressed"
        list+=(synthetic) ;;
    *) die "unknown case $c (ts-example, synthetic)" ;;
    esac
done

"$py" - "$out" "$threads" "$ttas" "${list[@]}" <<'PY'
import json, os, sys
out, threads, ttas, cases = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(","), sys.argv[4:]

def load(case, impl, tta):
    p = os.path.join(out, f"pipeline-{case}.{impl}-{tta}")
    if not os.path.exists(p + ".json"):
        return None
    with open(p + ".json") as f:
        js = json.loads(f.read().strip().splitlines()[-1] if impl == "nnunet" else f.read())
    wall, kb = open(p + ".time").read().split()[-2:]
    if impl == "ours":
        s = js["series"][0]
        info = {"times": s["times"], "tiles": s["tiles"], "passes": s["passes"],
                "dims": s["dims"], "target": s["target"]}
    else:
        info = {"times": js["times"], "tiles": js["tiles"], "passes": js["passes"],
                "target": js["target_zyx"]}
    info.update(wall=float(wall), peak_mb=int(kb) / 1024.0)
    return info

hdr = (f"{'case':11} {'tta':3} {'impl':8} {'passes':>6} {'load':>7} {'prep':>7} {'network':>8} "
       f"{'export':>7} {'write':>6} {'total':>8} {'wall s':>8} {'peak MB':>8}")
print(f"CPU, {threads} threads each; stage times in s (ours: --json; nnU-Net: nnunet_predict.py)")
print(hdr)
for c in cases:
    note = open(os.path.join(out, f"pipeline-{c}.note")).read().strip()
    for tta in ttas:
        o, n = load(c, "ours", tta), load(c, "nnunet", tta)
        for impl, r in (("mmsegd", o), ("nnU-Net", n)):
            if r is None:
                continue
            t = r["times"]
            print(f"{c:11} {tta:3} {impl:8} {r['passes']:6d} {t['load_s']:7.2f} "
                  f"{t['preprocess_s']:7.2f} {t['network_s']:8.2f} {t['export_s']:7.2f} "
                  f"{t.get('write_s', float('nan')):6.2f} {t['total_s']:8.2f} "
                  f"{r['wall']:8.2f} {r['peak_mb']:8.0f}")
        if o:
            t = o["times"]
            share = (t["total_s"] - t["network_s"]) / t["total_s"] if t["total_s"] else 0.0
            line = f"{'':11} {tta:3} non-network share of our total {100 * share:.1f} %"
            if n:
                line += (f"; nnU-Net/ours: wall {n['wall'] / o['wall']:.2f}x, total "
                         f"{n['times']['total_s'] / t['total_s']:.2f}x, network "
                         f"{n['times']['network_s'] / t['network_s']:.2f}x, non-network "
                         f"{(n['times']['total_s'] - n['times']['network_s']) / max(t['total_s'] - t['network_s'], 1e-9):.2f}x, "
                         f"peak RSS {n['peak_mb'] / o['peak_mb']:.2f}x")
                ag = os.path.join(out, f"pipeline-{c}.agree-{tta}.json")
                if os.path.exists(ag) and os.path.getsize(ag):
                    a = json.load(open(ag))
                    line += (f"; label agreement {a['agreement']:.6f} (foreground "
                             f"{a['foreground_agreement']:.6f})")
            print(line)
    tgt = (o or n)["target"] if (o or n) else None
    print(f"{'':11} note: {note}; target grid {tgt}")
print("wall and peak RSS: the whole process (/usr/bin/time). Ours reads DICOM (load includes "
      "decoding); nnU-Net reads the NIfTI mmsegd inspect wrote. Ratios above 1: nnU-Net "
      "takes longer or more memory.")
PY
