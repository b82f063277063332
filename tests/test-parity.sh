#!/bin/bash
# `mmsegd segment` against nnU-Net v2's own predictor (mmunet.md 7, V4), from committed outputs.
#
# tools/mmunet/nnunet_parity.sh ran nnU-Net v2 (nnUNetPredictor with the PyTorch reference
# network and plans synthesised from the card of models/demo.safetensors) on the cases listed
# in tests/fixtures/nnunet-parity.json and committed its label maps,
# tests/fixtures/parity/<case>.nnunet.nii.gz (mirroring on) and <case>.nnunet-notta.nii.gz
# (off). Here, for each case:
#  - the input: a folder of the shared test data, or a phantom that tools/mmunet/phantom.py
#    --dicom regenerates into a temporary folder with the recorded seed, shape and spacing
#    (the SHA-256 of its files is compared with the recorded one and shown as a note: another
#    numpy or scipy may draw another phantom, and the agreement below then says by how much);
#  - `$MMSEGD segment --model $srcdir/models/demo.safetensors --backend cpu --tta yes|no
#    --json --nifti DIR` on it: exit 0, one series, its NIfTI on the grid of nnU-Net's
#    labels (dims and affine), the label counts of --json equal to the NIfTI's;
#  - agreement with nnU-Net's labels >= 0.999 of all voxels (mmunet.md 7, V4), printed with the
#    agreement on the voxels either labels foreground and the number of voxels that differ.
#    The foreground agreement must also be >= 0.98: where the foreground is small (the head
#    phantom), labels moved by 3 voxels still agree on 99.95 % of all voxels but on 57 % of
#    the foreground. The reference suite measured 0.9923 or more on every case.
# When the card states postprocessing (the demo's does), the reference suite applied it to
# nnU-Net's labels with nnU-Net's own function (load_postprocess_save), and mmsegd applies it.
# nnU-Net keeps its sliding-window sums in float16 and mmsegd in float32 (mmunet.md 5.9), so a
# few voxels with near-tied logits may differ; the record holds the reference suite's figures.
# The same for a fold ensemble (tests/fixtures/nnunet-parity-ensemble.json, labels in
# tests/fixtures/parity-ensemble/): the demo network and a perturbed copy of it as a second
# member (tools/mmunet/make_ensemble.py --perturb 1 --scale 0.05 --seed 7, remade here),
# nnU-Net's predictor given both as its parameter sets. Its labels differ from the demo's
# alone on 0.17 to 1.3 % of the voxels, so a run of one member fails the 0.999.
# nnU-Net's standard networks and MM-UNet as nnU-Net v2 trains them
# (tests/fixtures/nnunet-parity-families.json, tools/mmunet/nnunet_families.sh): tiny
# PlainConvUNet, ResidualEncoderUNet (a ResEnc M plan) and MM-UNet trainings on phantoms, two
# folds each, exported as fold ensembles with their postprocessing
# (tests/fixtures/parity-families/<family>.safetensors); nnU-Net's predictor loaded the results
# folder with both folds and wrote <family>.<case>.nnunet.nii.gz (its postprocessing applied)
# and .nnunet-nopp.nii.gz (not). `mmsegd segment --postprocessing yes|no` must agree with them
# as above, and the two folds with their weights averaged (nnunet_families.py average, remade
# here) must not: agreement below 0.999 shows that this test catches an export that averages
# folds.
# SKIP only without the shared test data or without numpy/scipy/pydicom in $PYTHON3.
set -u
. "$(dirname "$0")/find-testdata.sh"
require_testdata
src=${srcdir:-.}
mmsegd=${MMSEGD:-./mmsegd}
python=${PYTHON3:-/usr/bin/python3}
record=$src/tests/fixtures/nnunet-parity.json
model=$src/models/demo.safetensors
require_python numpy scipy pydicom
tmp=$(mktemp -d "${TMPDIR:-/tmp}/test-parity.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT


# The helper: cases from the record, phantom hashes, and the comparison of one run.
cat >"$tmp/parity.py" <<'PY'
import gzip, hashlib, json, os, sys
import numpy as np

def read_nifti(path):
    """uint8 NIfTI-1 (.nii.gz): (array in voxel order i, j, k, sform 4x4)."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if np.frombuffer(raw, "<i4", 1, 0)[0] != 348:
        raise ValueError(f"{path}: not a little-endian NIfTI-1 file")
    dim = np.frombuffer(raw, "<i2", 8, 40)
    dtype = np.frombuffer(raw, "<i2", 1, 70)[0]
    off = int(np.frombuffer(raw, "<f4", 1, 108)[0])
    if dtype != 2 or dim[0] != 3:
        raise ValueError(f"{path}: datatype {dtype}, {dim[0]} dimensions; expected uint8, 3")
    shape = tuple(int(d) for d in dim[1:4])
    arr = np.frombuffer(raw, np.uint8, int(np.prod(shape)), off).reshape(shape, order="F")
    srow = np.frombuffer(raw, "<f4", 12, 280).astype(np.float64).reshape(3, 4)
    return arr, np.vstack([srow, [0, 0, 0, 1]])

def cases(record):
    rec = json.load(open(record))
    for name, c in rec["cases"].items():
        inp = c["input"]
        if "phantom" in inp:
            p = inp["phantom"]
            spec = "phantom %d %s %s %s" % (p["seed"], " ".join(map(str, p["shape"])),
                                           " ".join(map(str, p["spacing"])), inp["dicom_sha256"])
        else:
            spec = "testdata " + inp["testdata"]
        print(name, spec)

def sha256_files(folder):
    h = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        p = os.path.join(folder, name)
        if os.path.isfile(p):
            h.update(name.encode() + b"\0")
            h.update(open(p, "rb").read())
    print(h.hexdigest())

def check(js_path, fixture, desc):
    """One result line for the run, one for the agreement."""
    try:
        js = json.load(open(js_path))
        series = js["series"]
        if len(series) != 1:
            raise ValueError(f"--json lists {len(series)} series, expected 1")
        s = series[0]
        ours, a_ours = read_nifti(s["nifti"])
        ref, a_ref = read_nifti(fixture)
    except Exception as e:
        print(f"not ok - {desc}: {type(e).__name__}: {e}")
        print(f"not ok - {desc}: agreement with nnU-Net not measured")
        return
    problems = []
    if ours.shape != ref.shape:
        problems.append(f"dims {ours.shape}, nnU-Net's {ref.shape}")
    elif not np.allclose(a_ours, a_ref, atol=1e-3):
        problems.append(f"affine differs from nnU-Net's by "
                        f"{np.abs(a_ours - a_ref).max():.3g} mm")
    counts = np.bincount(ours.ravel(), minlength=256)
    mine = {str(i): int(v) for i, v in enumerate(counts) if i > 0 and v > 0}
    theirs = {str(k): int(v) for k, v in s.get("labels", {}).items() if int(v) > 0}
    if mine != theirs:
        problems.append(f"--json labels {theirs} but the NIfTI has {mine}")
    t = s.get("times", {})
    print(("not ok" if problems else "ok") + f" - {desc}: one series, {s.get('tiles')} tiles, "
          f"{s.get('passes')} passes, {t.get('total_s', 0):.2f} s; NIfTI on nnU-Net's grid "
          f"{'x'.join(map(str, ref.shape))}, --json labels = NIfTI"
          + ("" if not problems else ": " + "; ".join(problems)))
    if ours.shape != ref.shape:
        print(f"not ok - {desc}: agreement with nnU-Net not measured (dims differ)")
        return
    eq = ours == ref
    fg = (ours > 0) | (ref > 0)
    agree = float(eq.mean())
    fg_agree = float(eq[fg].mean()) if fg.any() else 1.0
    diff = int(eq.size - eq.sum())
    ok = agree >= 0.999 and fg_agree >= 0.98
    print(("ok" if ok else "not ok") + f" - {desc}: agreement with nnU-Net "
          f"{agree:.6f} (>= 0.999), foreground {fg_agree:.6f} (>= 0.98); {diff} of {eq.size} "
          f"voxels differ, {int(fg.sum())} foreground")

def differs(js_path, fixture, desc):
    """One result line: the run must NOT agree with nnU-Net's labels (a negative control)."""
    try:
        s = json.load(open(js_path))["series"][0]
        ours, _ = read_nifti(s["nifti"])
        ref, _ = read_nifti(fixture)
        if ours.shape != ref.shape:
            raise ValueError(f"dims {ours.shape}, nnU-Net's {ref.shape}")
    except Exception as e:
        print(f"not ok - {desc}: {type(e).__name__}: {e}")
        return
    agree = float((ours == ref).mean())
    print(("ok" if agree < 0.999 else "not ok") + f" - {desc}: agreement with nnU-Net's "
          f"ensemble {agree:.6f} (must be < 0.999)")

def families(record):
    for fam, f in json.load(open(record))["families"].items():
        print(f["key"], fam)

if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "cases":
        cases(sys.argv[2])
    elif cmd == "sha256":
        sha256_files(sys.argv[2])
    elif cmd == "families":
        families(sys.argv[2])
    elif cmd == "differs":
        differs(*sys.argv[2:5])
    else:
        check(*sys.argv[2:5])
PY

# pcheck ARGS...: parity.py check prints 2 unnumbered results; number them, and count a
# result it did not print (a crash) as a failure.
pcheck() {
    local got=0 line out
    out=$("$python" "$tmp/parity.py" check "$@" 2>&1)
    while IFS= read -r line; do
        case $line in
        "ok - "*) result OK "${line#ok - }"; got=$((got + 1)) ;;
        "not ok - "*) result FAIL "${line#not ok - }"; got=$((got + 1)) ;;
        *) echo "# $line" ;;
        esac
    done <<<"$out"
    while [ $got -lt 2 ]; do
        result FAIL "$3: result $((got + 1)) of 2 missing"
        got=$((got + 1))
    done
}

# case_input DIR NAME KIND ARGS...: sets $dicom to the case's DICOM folder (a folder of the
# shared test data, or a phantom regenerated under DIR); 1 (with a FAIL) when there is none.
case_input() {
    local dir=$1 name=$2 kind=$3 a=$4 b=$5 c=$6 d=$7 e=$8 f=$9 g=${10} h=${11} sha
    mkdir -p "$dir"
    if [ "$kind" = testdata ]; then
        dicom=$td/$a
        if [ ! -d "$dicom" ]; then
            result FAIL "$name: $dicom is not in the shared test data"
            return 1
        fi
        return 0
    fi
    # phantom SEED D H W SZ SY SX SHA256
    dicom=$dir/phantom/dicom
    if ! "$python" "$src/tools/mmunet/phantom.py" --seed "$a" --shape "$b" "$c" "$d" \
        --spacing "$e" "$f" "$g" --out "$dir/phantom" --dicom >"$dir/phantom.log" 2>&1; then
        result FAIL "$name: phantom.py --seed $a failed"
        sed 's/^/# /' "$dir/phantom.log" | tail -5
        return 1
    fi
    sha=$("$python" "$tmp/parity.py" sha256 "$dicom")
    if [ "$sha" != "$h" ]; then
        echo "# $name: the regenerated phantom differs from the one nnU-Net segmented" \
            "(SHA-256 $sha, recorded $h)"
    fi
}

# parity RECORD MODEL FIXTURES: every case of RECORD with MODEL, against FIXTURES/<case>.*
parity() {
    local record=$1 model=$2 fixdir=$3
    if [ ! -f "$record" ]; then
        result FAIL "$record is missing (tools/mmunet/nnunet_parity.sh writes it)"
        return
    fi
    if ! "$python" "$tmp/parity.py" cases "$record" >"$tmp/cases" 2>"$tmp/cases.err"; then
        result FAIL "$record: unreadable: $(tail -1 "$tmp/cases.err")"
        return
    fi
    local tag=${4:-}
    while read -r -u 3 name kind a b c d e f g h; do
        dir=$tmp/$name$tag
        case_input "$dir" "$name" "$kind" "$a" "$b" "$c" "$d" "$e" "$f" "$g" "$h" || continue
        for tta in yes no; do
            if [ $tta = yes ]; then fx=$fixdir/$name.nnunet.nii.gz; else
                fx=$fixdir/$name.nnunet-notta.nii.gz; fi
            out=$dir/seg-$tta
            "$mmsegd" segment --model "$model" --backend cpu --tta $tta --json --nifti "$out" \
                "$dicom" >"$out.json" 2>"$out.err"
            rc=$?
            if [ $rc -ne 0 ]; then
                result FAIL "$name$tag (tta $tta): mmsegd segment exited $rc"
                sed 's/^/# /' "$out.err" | tail -10
                result FAIL "$name$tag (tta $tta): agreement with nnU-Net not measured"
                continue
            fi
            pcheck "$out.json" "$fx" "$name$tag (tta $tta)"
        done
    done 3<"$tmp/cases"
}

parity "$record" "$model" "$src/tests/fixtures/parity"

# The fold ensemble, remade from the demo model as the reference suite made it.
erecord=$src/tests/fixtures/nnunet-parity-ensemble.json
emodel=$tmp/demo-ensemble.safetensors
if "$python" "$src/tools/mmunet/make_ensemble.py" "$emodel" "$model" --perturb 1 --scale 0.05 \
    --seed 7 >"$tmp/ensemble.log" 2>&1; then
    want=$("$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["model"]["sha256"])' \
        "$erecord" 2>/dev/null)
    got=$(sed -n 's/^sha256: //p' "$tmp/ensemble.log")
    [ "$got" = "$want" ] || echo "# the remade ensemble's file differs from the one nnU-Net ran" \
        "(SHA-256 $got, recorded $want): another demo card (the labels' colours changed since)" \
        "or another numpy's draws"
    parity "$erecord" "$emodel" "$src/tests/fixtures/parity-ensemble" " (ensemble)"
else
    result FAIL "make_ensemble.py: $(tail -1 "$tmp/ensemble.log")"
fi

# nnU-Net's standard networks and MM-UNet, trained by nnU-Net v2.
frecord=$src/tests/fixtures/nnunet-parity-families.json
fdir=$src/tests/fixtures/parity-families
families() {
    if ! "$python" "$tmp/parity.py" families "$frecord" >"$tmp/families" 2>"$tmp/families.err" ||
        ! "$python" "$tmp/parity.py" cases "$frecord" >"$tmp/fcases" 2>>"$tmp/families.err"; then
        result FAIL "$frecord: unreadable: $(tail -1 "$tmp/families.err")"
        return
    fi
    while read -r -u 3 name kind a b c d e f g h; do
        case_input "$tmp/families-$name" "$name" "$kind" "$a" "$b" "$c" "$d" "$e" "$f" "$g" \
            "$h" || continue
        while read -r -u 4 key family; do
            model=$fdir/$key.safetensors
            for pp in yes no; do
                if [ $pp = yes ]; then fx=$fdir/$key.$name.nnunet.nii.gz; else
                    fx=$fdir/$key.$name.nnunet-nopp.nii.gz; fi
                out=$tmp/families-$name/$key-pp-$pp
                desc="$family $name (postprocessing $pp)"
                "$mmsegd" segment --model "$model" --backend cpu --tta yes --postprocessing $pp \
                    --json --nifti "$out" "$dicom" >"$out.json" 2>"$out.err"
                rc=$?
                if [ $rc -ne 0 ]; then
                    result FAIL "$desc: mmsegd segment exited $rc"
                    sed 's/^/# /' "$out.err" | tail -10
                    result FAIL "$desc: agreement with nnU-Net not measured"
                    continue
                fi
                pcheck "$out.json" "$fx" "$desc"
            done
            # the negative control: the folds' weights averaged into one network
            avg=$tmp/$key-averaged.safetensors
            [ -f "$avg" ] || "$python" "$src/tools/mmunet/nnunet_families.py" average "$model" \
                "$avg" >"$tmp/$key-averaged.log" 2>&1
            out=$tmp/families-$name/$key-averaged
            desc="$family $name: the 2 folds' weights averaged"
            if [ ! -f "$avg" ]; then
                result FAIL "$desc: nnunet_families.py average: $(tail -1 "$tmp/$key-averaged.log")"
            elif "$mmsegd" segment --model "$avg" --backend cpu --tta yes --postprocessing yes \
                --json --nifti "$out" "$dicom" >"$out.json" 2>"$out.err"; then
                line=$("$python" "$tmp/parity.py" differs "$out.json" \
                    "$fdir/$key.$name.nnunet.nii.gz" "$desc" 2>&1)
                case $line in
                "ok - "*) result OK "${line#ok - }" ;;
                *) result FAIL "${line#not ok - }" ;;
                esac
            else
                result FAIL "$desc: mmsegd segment exited $?"
                sed 's/^/# /' "$out.err" | tail -10
            fi
        done 4<"$tmp/families"
    done 3<"$tmp/fcases"
}
families

echo "1..$n"
exit $failed
