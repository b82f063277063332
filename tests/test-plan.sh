#!/bin/bash
# The job's memory plan comes from the headers, before any pixel is decoded, and a job over
# [infer] max_memory_mb takes the degrade order (one tile per network call, then no mirroring)
# before it fails with the figures of every step (`mmsegd segment`, the daemon's job path).
# tests/promise_series.py writes series whose files promise far more pixels than they hold:
# failing on the plan, not on "pixel data shorter than declared", shows that nothing was
# decoded.
set -u
. "$(dirname "$0")/find-testdata.sh"
mmsegd=${MMSEGD:-./mmsegd}
python=${PYTHON3:-/usr/bin/python3}
src=${srcdir:-.}
model=$src/models/demo.safetensors
require_python numpy scipy pydicom
tmp=$(mktemp -d "${TMPDIR:-/tmp}/test-plan.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
printf '[series]\nmax_voxels = 100000000000\n' >"$tmp/big.ini"
planned="(planned from the headers, before decoding)"

# segment NAME WANT-EXIT TEXT ARGS...: mmsegd segment must exit WANT-EXIT and print TEXT
segment() {
    local name=$1 want=$2 text=$3 rc reason
    shift 3
    "$mmsegd" segment --model "$model" --threads 2 "$@" >"$tmp/run.log" 2>&1
    rc=$?
    reason=$(grep -m1 '^failed: ' "$tmp/run.log")
    if [ $rc -eq "$want" ] && { [ -z "$text" ] || grep -qF -- "$text" "$tmp/run.log"; } &&
        ! grep -q 'pixel data shorter' "$tmp/run.log"; then
        result OK "$name: exit $rc${reason:+, ${reason#failed: series * }}"
    else
        result FAIL "$name: exit $rc (want $want${text:+ and \"$text\"})"
        sed 's/^/# /' "$tmp/run.log" | tail -5
    fi
}

# 1. 4096 x 4096 x 2000 promised: over the pipeline's 2^32 voxels, refused before decoding
"$python" "$src/tests/promise_series.py" "$tmp/huge" 2000 4096 || exit 1
segment "4096 x 4096 x 2000 promised" 1 \
    "the volume has 4096 x 4096 x 2000 voxels, more than the maximum of 4294967296 $planned" \
    -c "$tmp/big.ini" -o "$tmp/out" "$tmp/huge"

# 2. 1024 x 1024 x 2000 promised, 4096 MiB allowed: every step of the degrade order is over
"$python" "$src/tests/promise_series.py" "$tmp/large" 2000 1024 || exit 1
segment "1024 x 1024 x 2000 promised, 4096 MiB" 1 \
    "with one tile per network call and no mirroring: more than the limit of 4096 MiB $planned" \
    -c "$tmp/big.ini" --max-memory-mb 4096 -o "$tmp/out" "$tmp/large"
segment "the same without mirroring" 1 \
    "MiB of memory as configured: more than the limit of 4096 MiB $planned" \
    -c "$tmp/big.ini" --max-memory-mb 4096 --tta no -o "$tmp/out" "$tmp/large"

# 3. a real phantom series: refused under a limit below its plan, segmented above it
"$python" "$src/tools/mmunet/phantom_series.py" write --seed 1000 --out "$tmp/ph" \
    --variants regular --shape 20 64 64 --spacing 3 3 3 >"$tmp/write.log" 2>&1 ||
    { sed 's/^/# /' "$tmp/write.log"; exit 1; }
segment "phantom, 1 MiB allowed" 1 "more than the limit of 1 MiB $planned" \
    --max-memory-mb 1 -o "$tmp/out" "$tmp/ph/regular/dicom"
segment "phantom, 4096 MiB allowed" 0 "" --max-memory-mb 4096 -o "$tmp/out" "$tmp/ph/regular/dicom"
echo "1..$n"
exit $failed
