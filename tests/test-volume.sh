#!/bin/bash
# `mmsegd inspect --json --nifti DIR`: the volumes it rebuilds (HU voxels, geometry, NIfTI
# affines), checked against independent data. tests/volume_check.py does the comparing:
#  - dcm_qa_ct Philips S21570/S2010 (clean, 28 slices): voxels identical to dcm2niix's NIfTI
#    of the same folder and affines equal within 1e-3 mm once the two voxel grids are mapped
#    onto each other (the axis mapping is derived from the two affines: dcm2niix flips rows);
#    Where a file has a Pixel Padding Value (GE: -1500), those pixels are compared with -1024,
#    the HU mmsegd gives them (dicom/dicom.h, mms_frames_decode); dcm2niix keeps -1500;
#  - the tilted series (GE +18.5 deg with variable spacing, Philips S21610 -18.5 deg): voxels
#    identical to dcm2niix's UNcorrected file; each slice's ipp = the file's
#    ImagePositionPatient read with pydicom, slices ascending along the normal, and our sform
#    sheared (3rd column (ipp_last-ipp_first)/(n-1)) with a rigid qform. dcm2niix differs:
#    it writes the acquired voxels with a non-sheared affine that misplaces them (measured
#    in the TAP line, mm) and a _Tilt (GE: _Tilt_Eq) file resampled onto a taller rigid grid
#    whose 3rd axis is the normal, which is 18.5 deg from our sform's 3rd column;
#  - TotalSegmentator example_ct_dicom (J2K, empty UIDs): our grid = the label map's grid
#    under the mapping of SOURCE.md, HU identical to dcm2niix's, mean HU per label as listed;
#  - Enhanced and legacy-converted CT multi-frame files: each frame's ipp = its
#    PlanePositionSequence, dims, and the HU against pydicom (or DCMTK for the codecs pydicom
#    2.3 lacks);
#  - one CT slice in 16 transfer syntaxes: the lossless ones give exactly the voxels pydicom
#    decodes from the uncompressed CTImage.dcm, the lossy ones within the error measured
#    with GDCM and DCMTK (see TS_LOSSY below);
#  - every NIfTI written: where the JSON says, loads, sform_code = qform_code = 1.
# Results are numbered here; the plan comes last (the number of checks depends on the data).
set -u
. "$(dirname "$0")/find-testdata.sh"
require_testdata
mmsegd=${MMSEGD:-./mmsegd}
python=${PYTHON3:-/usr/bin/python3}
vc=$(dirname "$0")/volume_check.py
[ -f "$vc" ] || vc=${srcdir:-.}/tests/volume_check.py
if ! reason=$("$python" "$vc" deps 2>&1); then
    echo "1..0 # SKIP $python: ${reason:-cannot run $vc}"
    exit 0
fi
if ! command -v dcm2niix >/dev/null 2>&1; then
    echo "1..0 # SKIP dcm2niix is not on PATH (the reference converter)"
    exit 0
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/test-volume.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

# vcheck COUNT SUBCOMMAND ARGS...: volume_check.py prints COUNT results.
vcheck() {
    local want=$1
    shift
    tap_lines "$want" "volume_check.py $1" "$python" "$vc" "$@"
}
# inspect NAME PATH...: mmsegd inspect --json --nifti $tmp/NAME PATH... > $tmp/NAME.json
inspect() {
    local name=$1
    shift
    "$mmsegd" inspect --json --nifti "$tmp/$name" "$@" >"$tmp/$name.json" 2>"$tmp/$name.err"
    echo $? >"$tmp/$name.rc"
}
# ran NAME DESCRIPTION: one result for the run (exit 0 and one JSON object), stderr shown
ran() {
    local rc
    rc=$(cat "$tmp/$1.rc")
    vcheck 1 json-ok --json "$tmp/$1.json" --desc "$2 (exit $rc)" "${@:3}"
    [ "$rc" -eq 0 ] || { result FAIL "$2: mmsegd exited $rc"; sed 's/^/# /' "$tmp/$1.err" | head -20; }
}

qa=$td/dcm_qa_ct/In
ph=$qa/Philips/S21570/S2010
pt=$qa/Philips/S21610/S2010
ge=$qa/GE
tsd=$td/totalsegmentator/tests/reference_files
ct=$tsd/example_ct_dicom
mf=$td/dicomParser/testImages/encapsulated/multi-frame
cs=$td/cornerstoneWADOImageLoader/testImages

# dcm2niix of the same folders (-z n: the same data as -z y, ten times faster)
d2n() { mkdir -p "$tmp/d2n-$1" && dcm2niix -z n -b n -f d2n -o "$tmp/d2n-$1" "$2" >"$tmp/d2n-$1.log" 2>&1; }
(d2n ph "$ph"; d2n pt "$pt"; d2n ge "$ge"; d2n ts "$ct") &
j1=$!
(inspect qa "$ph" "$pt" "$ge") &
j2=$!
# Multi-frame files, one run each (the CT0012 variants share one SeriesInstanceUID):
# FILE|REFERENCE|TOLERANCE. REFERENCE is decoded with pydicom (default: the file itself);
# "dcmtk" = the file decoded by DCMTK (lossy codecs pydicom 2.3 cannot decode).
ref12=$mf/CT0012.explicit_little_endian.dcm
MF=(
    "$td/pydicom-data/data_store/data/eCT_Supplemental.dcm"
    "$ref12"
    "$mf/CT0012.not_fragmented_bot_rle.dcm"
    "$mf/CT0012.not_fragmented_no_bot_rle.dcm"
    "$mf/CT0012.fragmented_no_bot_jpeg_lossless.57.dcm|$ref12"
    "$mf/CT0012.fragmented_no_bot_jpeg_lossless.70.dcm|$ref12"
    "$mf/CT0012.fragmented_no_bot_jpeg_ls.80.dcm|$ref12"
    "$mf/CT0012.not_fragmented_bot_jpeg_ls.80.dcm|$ref12"
    "$mf/CT0012.not_fragmented_no_bot_jpeg_ls.80.dcm|$ref12"
    "$mf/CT0012.fragmented_no_bot_jpeg_ls.81.dcm|dcmtk|1"
    "$mf/CT0012.fragmented_no_bot_jpeg_baseline.51.dcm|dcmtk|1"
    "$cs/CT0012.fragmented_no_bot_jpeg_baseline.51.dcm|dcmtk|1"
    "$td/dcmqi/data/segmentations/24x38x3/multiframe/mf.dcm|$td/dcmqi/data/segmentations/24x38x3/image"
    "$td/dcmqi/data/segmentations/23x38x3/multiframe/mf.dcm|$td/dcmqi/data/segmentations/23x38x3/image"
)
# CTImage.dcm in each transfer syntax: FILE|TOLERANCE|WHY against pydicom(CTImage.dcm).
# Lossy errors measured with GDCM 3.0.21 (gdcmconv --raw) against CTImage.dcm: J2K .91 max 5 HU,
# JPEG-LS .81 (NEAR=1) max 1, JPEG 12-bit .51/.53/.55 max 35.63 (slope 1.0715), JPEG 8-bit
# .50 max 64.22 (slope 17.26).
TS=("$cs/CTImage.dcm")
for f in "$cs"/CTImage.dcm_*; do
    case $f in
    *_1.2.840.10008.1.2.4.91.dcm) TS+=("$f|5|J2K lossy, measured max 5") ;;
    *_1.2.840.10008.1.2.4.81.dcm) TS+=("$f|1|JPEG-LS near-lossless NEAR=1") ;;
    *_1.2.840.10008.1.2.4.5[135].dcm) TS+=("$f|36|JPEG 12-bit lossy, measured max 35.6") ;;
    *_1.2.840.10008.1.2.4.50.dcm) TS+=("$f|65|JPEG 8-bit lossy, measured max 64.2") ;;
    *) TS+=("$f") ;;
    esac
done
(
    inspect ts "$ct"
    mkdir -p "$tmp/mf" "$tmp/tsx"
    i=0
    for spec in "${MF[@]}"; do
        i=$((i + 1))
        "$mmsegd" inspect --json --nifti "$tmp/mf/$i" "${spec%%|*}" >"$tmp/mf/$i.json" 2>"$tmp/mf/$i.err"
    done
    i=0
    for spec in "${TS[@]}"; do
        i=$((i + 1))
        "$mmsegd" inspect --json --nifti "$tmp/tsx/$i" "${spec%%|*}" >"$tmp/tsx/$i.json" 2>"$tmp/tsx/$i.err"
    done
) &
j3=$!
wait $j1 $j2 $j3

# 1. the clean Philips series against dcm2niix
ran qa "dcm_qa_ct Philips S21570, S21610 and GE: inspect --json --nifti" --volume "$ph" --volume "$pt" --volume "$ge"
vcheck 2 dcm2niix --json "$tmp/qa.json" --series "$ph" --ref "$tmp/d2n-ph/d2n.nii" --affine-tol 1e-3 \
    --desc "Philips S21570/S2010 (28 slices, untilted)"
vcheck 2 geometry --json "$tmp/qa.json" --series "$ph" --tilt 0 --irregular no --affine \
    --desc "Philips S21570/S2010"

# 2. the tilted series: voxels as acquired (dcm2niix's uncorrected file), geometry from pydicom
for s in pt ge; do
    if [ $s = pt ]; then dir=$pt name="Philips S21610/S2010 (tilt -18.5)" irr=no; else dir=$ge name="GE (tilt +18.5, variable spacing)" irr=yes; fi
    vcheck 1 dcm2niix --json "$tmp/qa.json" --series "$dir" --ref "$tmp/d2n-$s/d2n.nii" --desc "$name"
    vcheck 2 geometry --json "$tmp/qa.json" --series "$dir" --tilt 18.5 --irregular $irr --affine --desc "$name"
    cor=$(ls "$tmp/d2n-$s"/d2n_Tilt*.nii 2>/dev/null | head -1)
    if [ -n "$cor" ]; then
        vcheck 1 tilt --json "$tmp/qa.json" --series "$dir" --uncorrected "$tmp/d2n-$s/d2n.nii" --corrected "$cor" \
            --tilt 18.5 --desc "$name: what dcm2niix does differently"
    else
        result FAIL "$name: dcm2niix wrote no _Tilt file: $(ls "$tmp/d2n-$s")"
    fi
done

# 3. TotalSegmentator: J2K, empty UIDs, the label map's grid and HU
ran ts "TotalSegmentator example_ct_dicom: inspect --json --nifti" --volume "$ct"
vcheck 3 totalseg --json "$tmp/ts.json" --series "$ct" --seg "$tsd/example_seg_dicom.nii.gz"
vcheck 1 dcm2niix --json "$tmp/ts.json" --series "$ct" --ref "$tmp/d2n-ts/d2n.nii" --desc "TotalSegmentator"
vcheck 1 geometry --json "$tmp/ts.json" --series "$ct" --tilt 0 --irregular no --desc "TotalSegmentator"

# 4. multi-frame files
vcheck ${#MF[@]} multiframe --outdir "$tmp/mf" --base "$td" "${MF[@]}"

# 5. transfer syntaxes
vcheck ${#TS[@]} tsyntax --outdir "$tmp/tsx" --ref "$cs/CTImage.dcm" "${TS[@]}"

# 6. the NIfTI files of every run
runs=("$tmp/qa.json|$tmp/qa" "$tmp/ts.json|$tmp/ts")
for i in $(seq ${#MF[@]}); do runs+=("$tmp/mf/$i.json|$tmp/mf/$i"); done
for i in $(seq ${#TS[@]}); do runs+=("$tmp/tsx/$i.json|$tmp/tsx/$i"); done
vcheck 1 niftis --desc "--nifti with --json: every volume's NIfTI exists, loads, sform_code = qform_code = 1" "${runs[@]}"

echo "1..$n"
exit $failed
