#!/bin/bash
# `mmsegd inspect` on real DICOM: dcm_qa_ct (a clean Philips series, a Philips and a GE series
# with 18.5 degree gantry tilt, the GE one with variable spacing, localizers, a Secondary
# Capture summary, DICOMDIR and directory files) and dicom2nifti's failing cases. The expected
# figures come from the sources' SOURCE.md, not from our own output.
set -u
. "$(dirname "$0")/find-testdata.sh"
require_testdata
mmsegd=${MMSEGD:-./mmsegd}
n=0
failed=0
check() { # check DESCRIPTION COMMAND...
    n=$((n + 1))
    if "${@:2}" >/dev/null 2>&1; then echo "ok $n - $1"; else echo "not ok $n - $1"; failed=1; fi
}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
qa=$td/dcm_qa_ct/In
echo "1..25"
"$mmsegd" inspect "$qa" >"$out" 2>&1
check "dcm_qa_ct: exit 0" test $? -eq 0
series_of() { grep -A3 "first $qa/$1" "$out"; }
check "Philips S2010: 28 frames at 5 mm, no tilt" \
    bash -c "grep -A3 'first $qa/Philips/S21570/S2010/' '$out' | grep -q 'volume: 28 frames of 512x512, pixel 0.4512 x 0.4512 mm, slice step 5 mm (min 5, max 5), tilt 0.00 deg'"
check "Philips S21610: 54 frames at 2.37 mm along the normal, tilt 18.5" \
    bash -c "grep -A3 'first $qa/Philips/S21610/S2010/' '$out' | grep -q 'volume: 54 frames of 512x512, .*slice step 2.371 mm.*tilt 18.50 deg'"
check "GE: 28 frames, variable spacing kept (4.22, 1.14 and 7.38 mm steps times cos 18.5)" \
    bash -c "grep -A3 'first $qa/GE/01.dcm' '$out' | grep -q 'volume: 28 frames .*slice step 4.002 mm (min 1.081, max 6.999), irregular, tilt 18.50 deg'"
check "both localizers are left out as localizers" \
    test "$(grep -c 'left out: 1 localizer, ImageType LOCALIZER' "$out")" -eq 2
check "the exam summary (Secondary Capture, modality CT) is not a CT image" \
    grep -q 'left out: 6 files, SOP class 1.2.840.10008.5.1.4.1.1.7 (not a CT image)' "$out"
check "DICOMDIR and the DIRFILEs are ignored" test "$(grep -c '^ignored: .*DICOMDIR' "$out")" -eq 8
check "summary: 126 files, 6 series" grep -q '^126 files, 126 DICOM, 8 ignored, 6 series$' "$out"

f2n=$td/dicom2nifti/tests/data/failing
"$mmsegd" inspect "$f2n/sliceincrement/001" >"$out" 2>&1
check "dicom2nifti sliceincrement/001: one missing slice (step exactly 2x) is a gap" \
    grep -q 'no volume: series 1.2.826.0.1.3680043.8.498.172569766509356227417197937: missing slices between 28.1 and 38.1 mm' "$out"
"$mmsegd" inspect "$f2n/sliceincrement/002" >"$out" 2>&1
check "dicom2nifti sliceincrement/002: the same on a tilted stack (ratio 1.99999999999996)" \
    grep -q 'no volume: series [0-9.]*: missing slices between' "$out"
"$mmsegd" inspect "$f2n/notavolume" >"$out" 2>&1
check "dicom2nifti notavolume: four acquisitions at one position" \
    grep -q 'no volume: series [0-9.]*: not a volume: 4 frames at one position' "$out"
"$mmsegd" inspect "$f2n/gantrytilting" >"$out" 2>&1
check "dicom2nifti gantrytilting: no tilt tag, tilt 14.0 from the geometry" \
    grep -q 'volume: 4 frames .*slice step 4.851 mm.*tilt 14.00 deg' "$out"

"$mmsegd" inspect "$td/orthanc-tests/Database/2026-05-06-Deeply-Nested-Sequence.dcm" >"$out" 2>&1
check "100 000 nested sequences: refused before GDCM recurses into them" \
    grep -q 'sequences nested deeper than 128 levels' "$out"
# every file of the shared test data (malformed ones included): no crash, no abort
"$mmsegd" inspect "$td" >"$out" 2>&1
rc=$?
check "the whole test data folder: exit 0, no crash (exit $rc)" test $rc -eq 0
check "files without Series Instance UID are grouped by folder: TotalSegmentator's 20 alone" \
    bash -c "grep -A1 '^series (no Series Instance UID): modality CT, 20 files, first $td/totalsegmentator/' '$out' | grep -q 'volume: 20 frames'"

# the [series] settings from -c
tmp=$(mktemp -d)
trap 'rm -f "$out"; rm -rf "$tmp"' EXIT
printf '[series]\nallow_gaps = yes\n' >"$tmp/gaps.ini"
"$mmsegd" inspect -c "$tmp/gaps.ini" "$f2n/sliceincrement/001" >"$out" 2>&1
check "allow_gaps = yes: the missing slice is kept as a 10 mm step" \
    grep -q 'volume: 4 frames .*slice step 5 mm (min 5, max 10), irregular' "$out"
printf '[series]\nmax_voxels = 7340031\n' >"$tmp/small.ini"
"$mmsegd" inspect -c "$tmp/small.ini" "$qa/Philips/S21570/S2010" >"$out" 2>&1
check "max_voxels one below 512 x 512 x 28: refused before decoding" \
    grep -q 'no volume: series [0-9.]*: 512 x 512 x 28 voxels: more than the maximum of 7340031' "$out"
printf '[series]\nmax_gap_ratio = 0.5\n' >"$tmp/bad.ini"
"$mmsegd" inspect -c "$tmp/bad.ini" "$qa/Philips/S21570/S2010" >"$out" 2>&1
check "max_gap_ratio below its range: configuration error, exit 2" test $? -eq 2
# one decoding thread and two give the same bytes
printf '[series]\ndecode_threads = 1\n' >"$tmp/t1.ini"
printf '[series]\ndecode_threads = 2\n' >"$tmp/t2.ini"
"$mmsegd" inspect -c "$tmp/t1.ini" --nifti "$tmp/t1" "$qa/Philips/S21610/S2010" >/dev/null 2>&1
"$mmsegd" inspect -c "$tmp/t2.ini" --nifti "$tmp/t2" "$qa/Philips/S21610/S2010" >/dev/null 2>&1
nii=1.3.46.670589.33.1.7303547162003802183.31761132431540865648.nii.gz
check "S21610 decoded by 1 and by 2 threads: identical NIfTI" cmp "$tmp/t1/$nii" "$tmp/t2/$nii"
"$mmsegd" inspect --json "$qa" >"$out" 2>/dev/null
check "--json: one JSON object with 6 series, 3 of them volumes with 28, 28 and 54 slices" \
    python3 -c "
import json, sys
d = json.load(open(sys.argv[1]))
n = sorted(s['volume']['dims'][2] for s in d['series'] if 'volume' in s)
sys.exit(not (len(d['series']) == 6 and n == [28, 28, 54] and d['files'] == 126))" "$out"
"$mmsegd" inspect "$td/totalsegmentator/tests/reference_files/example_ct_dicom" >"$out" 2>&1
check "TotalSegmentator (empty SOP Class UIDs, file meta used): 20 slices at 2 mm, JPEG 2000" \
    bash -c "grep -q 'volume: 20 frames of 512x512, pixel 0.9766 x 0.9766 mm, slice step 2 mm' '$out' &&
             grep -q 'transfer syntax: 1.2.840.10008.1.2.4.90' '$out'"

"$mmsegd" inspect "$td/dcm_qa_ct/SOURCE.md" >"$out" 2>&1
rc=$?
check "a text file: 'not read' and exit 1" bash -c "[ $rc -eq 1 ] && grep -q '^not read: ' '$out'"
"$mmsegd" inspect /nonexistent/path >"$out" 2>&1
check "a missing path: exit 1" test $? -eq 1
"$mmsegd" inspect >"$out" 2>&1
check "no path: usage, exit 2" test $? -eq 2
"$mmsegd" inspect --help >"$out" 2>&1
check "--help: exit 0 with the usage" grep -q 'mmsegd inspect \[-c FILE\] \[--json\] \[--nifti DIR\] PATH' "$out"
exit $failed
