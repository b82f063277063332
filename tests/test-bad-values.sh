#!/bin/bash
# Series whose values parse but make no sense, through `mmsegd segment` (the job path of the
# daemon: volume, plan, pipeline, SEG). tests/bad_series.py derives each case from one small
# phantom series (tools/mmunet/phantom_series.py, 64 x 64 x 20 at 3 mm) at test time. Each
# case has its documented outcome: a value outside the limits of dicom/dicom.h fails the series
# with exit 1 and a reason naming the value, the limit and the file; no case crashes (a crash
# is exit >= 128); a constant volume, all zero included, is segmented (exit 0).
set -u
. "$(dirname "$0")/find-testdata.sh"
mmsegd=${MMSEGD:-./mmsegd}
python=${PYTHON3:-/usr/bin/python3}
src=${srcdir:-.}
model=$src/models/demo.safetensors
bad=$src/tests/bad_series.py
require_python numpy scipy pydicom
tmp=$(mktemp -d "${TMPDIR:-/tmp}/test-bad-values.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

# CASE|EXIT|TEXT: bad_series.py CASE, then mmsegd segment must exit EXIT and print TEXT
# (a fixed string; empty: only the exit status counts).
range="0.001..1000 mm"
pixel="Pixel Spacing missing, not two finite numbers, or not positive"
CASES=(
    "none|0|"
    "spacing=1e30|1|Pixel Spacing 1e+30 x 1e+30 mm is outside $range"
    "spacing=1e308|1|Pixel Spacing 1e+308 x 1e+308 mm is outside $range"
    "spacing=1e10|1|Pixel Spacing 1e+10 x 1e+10 mm is outside $range"
    "spacing=1e-30|1|Pixel Spacing 1e-30 x 1e-30 mm is outside $range"
    "spacing=NaN|1|$pixel (0 x 0 mm)"
    "spacing=0|1|$pixel (0 x 0 mm)"
    "spacing=-1|1|$pixel (-1 x -1 mm)"
    "thickness=1e30|1|Slice Thickness 1e+30 mm is outside $range"
    "slope=1e38|1|Rescale Slope 1e+38 is outside 0.0001..10000 (in absolute value)"
    "slope=0|1|Rescale Slope 0 is outside 0.0001..10000"
    "slope=NaN|1|Rescale Slope nan is outside 0.0001..10000"
    "orientation=1\\0\\0\\1\\0\\0|1|Image Orientation (Patient) 1\\0\\0\\1\\0\\0 is not two orthogonal unit vectors"
    "orientation=1e30\\0\\0\\0\\1\\0|1|Image Orientation (Patient) 1e+30\\0\\0\\0\\1\\0 is not"
    "position=NaN|1|no CT image with position and orientation ("
    "position=1e30|1|1e+30) mm is outside +-1e+06 mm"
    "for-per-slice|1|not a volume: the largest of 20 stacks has 1 frame of 20 (left out: 19 in other frames of reference"
    "constant=0|0|"
    "constant=40|0|"
)

"$python" "$src/tools/mmunet/phantom_series.py" write --seed 1000 --out "$tmp/ph" \
    --variants regular --shape 20 64 64 --spacing 3 3 3 >"$tmp/write.log" 2>&1
rc=$?
result "$([ $rc -eq 0 ] && echo OK || echo FAIL)" "phantom_series.py wrote the source series (exit $rc)"
[ $rc -eq 0 ] || sed 's/^/# /' "$tmp/write.log" | head -20
for spec in "${CASES[@]}"; do
    IFS='|' read -r case want text <<<"$spec"
    dir=$tmp/in/${case//[^a-zA-Z0-9.-]/_}
    if ! "$python" "$bad" "$tmp/ph/regular/dicom" "$dir" "$case" >"$tmp/bad.log" 2>&1; then
        result FAIL "$case: bad_series.py failed"
        sed 's/^/# /' "$tmp/bad.log" | head -5
        continue
    fi
    "$mmsegd" segment --model "$model" --threads 2 -o "$tmp/out" "$dir" >"$tmp/run.log" 2>&1
    rc=$?
    reason=$(grep -m1 '^failed: ' "$tmp/run.log")
    reason=${reason//$tmp\/in\//}
    if [ $rc -eq "$want" ] && { [ -z "$text" ] || grep -qF -- "$text" "$tmp/run.log"; }; then
        result OK "$case: exit $rc${reason:+, ${reason#failed: series * }}"
    else
        result FAIL "$case: exit $rc (want $want${text:+ and \"$text\"})"
        sed 's/^/# /' "$tmp/run.log" | tail -5
    fi
done
echo "1..$n"
exit $failed
