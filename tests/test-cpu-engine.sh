#!/bin/bash
# The CPU engine's settings end to end with mmsegd segment.
# [infer] cpus (--cpus): inference on those CPUs, the rest on the others (the log says the
# split); a CPU this process may not use is an error naming it.
# [infer] precision on the CPU backend (mmunet.md 3.2): fp32, and bf16 convolutions where
# oneDNN reports AVX512-BF16 or AMX; anything else is refused with the reason, except that
# backend auto falling back to the CPU runs fp32. The machine's own ISA is lowered with
# ONEDNN_MAX_CPU_ISA (oneDNN's switch) to see the refusal on any CPU.
# Where bf16 runs: mmsegd segment with the demo model, fp32 against bf16, on a phantom CT
# (tools/mmunet/phantom_series.py, seed 1000) and on the TotalSegmentator example: voxel
# agreement >= 99.9 % and Dice >= 0.999 per label (mmunet.md V3) for every label of at least
# 2000 voxels; smaller labels, where one voxel moves the Dice by more than 0.001, are printed.
set -u
. "$(dirname "$0")/find-testdata.sh"
mmsegd=${MMSEGD:-./mmsegd}
python=${PYTHON3:-/usr/bin/python3}
require_python numpy scipy pydicom nibabel
src=${srcdir:-.}
demo=$src/models/demo.safetensors
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
skip() { n=$((n + 1)); echo "ok $n # SKIP $1"; }
echo "1..8"

"$python" "$src/tools/mmunet/phantom_series.py" write --seed 1000 --out "$tmp/ph" \
    --variants regular >"$tmp/ph.log" 2>&1 ||
    { result FAIL "phantom_series.py writes the phantom"; sed 's/^/# /' "$tmp/ph.log"; exit 1; }
ph=$tmp/ph/regular/dicom

read -r allowed < <(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' /proc/self/status)
last=$("$python" -c 'import os; print(max(os.sched_getaffinity(0)))')
if [ "$("$python" -c 'import os; print(len(os.sched_getaffinity(0)))')" -lt 2 ]; then
    skip "segment --cpus: fewer than two CPUs to split"
else
    "$mmsegd" segment --model "$demo" --backend cpu --cpus "$last" --threads 1 --tta no \
        --nifti "$tmp/cpus" "$ph" >"$tmp/out" 2>&1
    rc=$?
    [ $rc = 0 ] && grep -q "CPUs: inference on $last, the rest (intake, decoding, outputs) on" \
        "$tmp/out" && ls "$tmp"/cpus/*.nii.gz >/dev/null 2>&1 &&
        result OK "segment --cpus $last --threads 1: labels written, the split logged" ||
        { result FAIL "segment --cpus $last --threads 1 (exit $rc)"; sed 's/^/# /' "$tmp/out" | tail -5; }
fi

refused() { # refused NAME REASON COMMAND...: the command exits 1 and prints REASON
    local name=$1 reason=$2 rc
    shift 2
    "$@" >"$tmp/out" 2>&1
    rc=$?
    if [ $rc = 1 ] && grep -qF "$reason" "$tmp/out"; then
        result OK "$name: exit 1 with the reason"
    else
        result FAIL "$name: exit 1 with the reason (got $rc)"
        sed 's/^/# /' "$tmp/out" | tail -5
    fi
}
refused "segment --cpus 1023 (naming the CPUs this process may use)" \
    "[infer] cpus: CPU 1023 not available to this process (it may use $allowed)" \
    "$mmsegd" segment --model "$demo" --cpus 1023 --nifti "$tmp/x" "$ph"
refused "segment --backend cpu --precision fp16" "fp16 runs on CUDA only" \
    "$mmsegd" segment --model "$demo" --backend cpu --precision fp16 --nifti "$tmp/x" "$ph"
refused "ISA lowered to AVX-512 without BF16: model-info --backend cpu --precision bf16" \
    "bf16 on the CPU needs AVX512-BF16 or AMX" env ONEDNN_MAX_CPU_ISA=AVX512_CORE \
    "$mmsegd" model-info --backend cpu --precision bf16 "$demo"

ONEDNN_MAX_CPU_ISA=AVX2 "$mmsegd" segment --model "$demo" --backend auto --precision bf16 \
    --tta no --json --nifti "$tmp/auto" "$ph" >"$tmp/auto.json" 2>"$tmp/auto.err"
rc=$?
prec=$("$python" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["backend"], d["precision"])' \
    "$tmp/auto.json" 2>/dev/null)
[ $rc = 0 ] && [ "$prec" = "cpu fp32" ] &&
    result OK "ISA lowered to AVX2: backend auto with bf16 falls back to the CPU in fp32" ||
    { result FAIL "ISA lowered: backend auto with bf16 runs the CPU in fp32 (exit $rc, $prec)"
      sed 's/^/# /' "$tmp/auto.err" | tail -5; }

if ! "$mmsegd" model-info --backend cpu --precision bf16 "$demo" >"$tmp/info" 2>&1; then
    why=$(tail -1 "$tmp/info")
    for c in "model-info reports bf16" "phantom: bf16 against fp32" \
        "TotalSegmentator example: bf16 against fp32"; do
        skip "$c: this CPU does not run bf16 ($why)"
    done
    exit $failed
fi
grep -qx "backend: cpu, precision bf16" "$tmp/info" &&
    result OK "model-info --backend cpu --precision bf16: 'backend: cpu, precision bf16'" ||
    result FAIL "model-info --backend cpu --precision bf16: 'backend: cpu, precision bf16'"

compare() { # compare NAME DICOM-DIR [TRUTH]
    local p
    for p in fp32 bf16; do
        if ! "$mmsegd" segment --model "$demo" --backend cpu --precision $p \
            --nifti "$tmp/$1-$p" "$2" >"$tmp/$1-$p.log" 2>&1; then
            result FAIL "$1: segment --precision $p"
            sed 's/^/# /' "$tmp/$1-$p.log" | tail -5
            return
        fi
    done
    if out=$("$python" "$src/tests/label_agreement.py" "$tmp/$1-fp32" "$tmp/$1-bf16" \
        --min-agree 0.999 --min-dice 0.999 --min-voxels 2000 --names fp32,bf16 \
        ${3:+--truth "$3"} 2>&1); then
        result OK "$1: $out"
    else
        result FAIL "$1: bf16 against fp32"
        echo "$out" | sed 's/^/# /'
    fi
}
compare phantom "$ph" "$tmp/ph/regular/truth.nii.gz"
find_testdata
ts=${td:-}/totalsegmentator/tests/reference_files/example_ct_dicom
if [ -n "${td:-}" ] && [ -d "$ts" ]; then
    compare "TotalSegmentator example" "$ts"
else
    skip "TotalSegmentator example: the shared test data is not here (set MMS_TESTDATA)"
fi
exit $failed
