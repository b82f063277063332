#!/bin/bash
# Every malformed or unusual file of the shared test data, table-driven, through the drop
# folder of a running daemon: each file has its documented outcome (the table below, also in
# docs/verification.md), checked with its reason:
#   quarantined REGEX  refused at intake: the file is in quarantine/ and its .why matches
#   skipped REGEX      stored, its series not selected (design.md 4) with that reason
#   failed REGEX       stored, its series' job failed with that reason
#   done               stored and segmented
#   duplicate          stored earlier under the same SOP Instance UID (the first copy stays)
# Then series made at test time (tests/bad_streams.py): a real JPEG 2000 series and a JPEG-LS
# series (dcmcjpls) with one codestream cut short inside a well-formed file, and with one file
# cut in its pixel data; and the phantom with Modality MR in CT Image Storage.
# [series] min_slices = 1 sends every single CT slice through decoding. Throughout, the daemon
# stays up with the same PID, and at the end it answers C-ECHO and its index is intact.
set -u
mmsegd=${MMSEGD:-./mmsegd}
python=${PYTHON3:-/usr/bin/python3}
src=$(cd "${srcdir:-.}" && pwd)
. "$src/tests/find-testdata.sh"
require_tools echoscu sqlite3 dcmcjpls
require_testdata
require_python pydicom numpy
. "$src/tests/serve-util.sh" # pid, opid, serve_cleanup, free_port
tmp=$(mktemp -d)
trap serve_cleanup EXIT
port=$(free_port)
state=$tmp/state
drop=$tmp/drop
mkdir -p "$drop"
serve_config "$tmp/mmsegd.ini" "$state" "$port" "workers = 1" "log_level = info" <<EOF
[drop]
dir = $drop
stable_s = 1
scan_s = 1
[series]
stable_age_s = 2
min_slices = 1
[infer]
model = $src/models/demo.safetensors
threads = 2
tta = no
EOF

# ---------------------------------------------------------------------------- the table
# outcome | reason (extended regex, case-insensitive) | file under the test data
table=$(
    cat <<'EOF'
quarantined|not DICOM \(no DICM prefix, and not a data set|pydicom/src/pydicom/data/test_files/no_meta.dcm
quarantined|no Series Instance UID and no Frame of Reference UID|pydicom/src/pydicom/data/test_files/no_meta_group_length.dcm
quarantined|first element is in group 0000|pydicom/src/pydicom/data/test_files/meta_missing_tsyntax.dcm
skipped|no CT image \(SOP class 1\.2\.840\.10008\.5\.1\.4\.1\.1\.4\)|pydicom/src/pydicom/data/test_files/MR_truncated.dcm
quarantined|\(300A,00B0\) at byte 1410 declares 976 bytes, 711 remain|pydicom/src/pydicom/data/test_files/rtplan_truncated.dcm
skipped|no CT image|pydicom/src/pydicom/data/test_files/badVR.dcm
skipped|no CT image|pydicom/src/pydicom/data/test_files/JPEG2000-embedded-sequence-delimiter.dcm
quarantined|no Series Instance UID and no Frame of Reference UID|pydicom/src/pydicom/data/test_files/UN_sequence.dcm
quarantined|no SOP Class UID|pydicom/src/pydicom/data/test_files/nested_priv_SQ.dcm
skipped|no CT image|pydicom/src/pydicom/data/test_files/ExplVR_BigEnd.dcm
quarantined|not DICOM \(no DICM prefix, and not a data set|pydicom/src/pydicom/data/test_files/ExplVR_BigEndNoMeta.dcm
skipped|no CT image|pydicom/src/pydicom/data/test_files/ExplVR_LitEndNoMeta.dcm
skipped|no CT image|pydicom/src/pydicom/data/test_files/image_dfl.dcm
quarantined|no SOP Class UID|pydicom/src/pydicom/data/test_files/empty_charset_LEI.dcm
done||pydicom/src/pydicom/data/test_files/J2K_pixelrep_mismatch.dcm
done||pydicom-data/data_store/data/693_J2KR.dcm
done||pydicom-data/data_store/data/explicit_VR-UN.dcm
quarantined|SOP Instance UID is not a valid UID|pydicom-data/data_store/data/bad_sequence.dcm
skipped|no CT image|pydicom-data/data_store/data/emri_small_jpeg_2k_lossless_too_short.dcm
quarantined|UN holding items in a big endian data set|fo-dicom/Tests/FO-DICOM.Tests/Test Data/GH177_D_CLUNIE_CT1_IVRLE_BigEndian_undefined_length.dcm
done||fo-dicom/Tests/FO-DICOM.Tests/Test Data/GH1376.dcm
skipped|no CT image|fo-dicom/Tests/FO-DICOM.Tests/Test Data/CT-MONO2-16-ankle
skipped|only localizers|fo-dicom/Tests/FO-DICOM.Tests/Test Data/GH342.dcm
done||pylibjpeg-data/ljdata/ds/JPEGLossless/JPEGLossless_1s_1f_i_16_16_bad.dcm
skipped|no CT image|pylibjpeg-data/ljdata/ds/JPEGLossless/JPEGLossless_1s_1f_u_16_12.dcm
done||pylibjpeg-data/ljdata/ds/JPEG2000Lossless/TOSHIBA_J2K_SIZ1_PixRep0.dcm
duplicate||pylibjpeg-data/ljdata/ds/JPEG2000Lossless/TOSHIBA_J2K_SIZ0_PixRep1.dcm
done||pylibjpeg-data/ljdata/ds/JPEG2000/ELSCINT1_JP2vsJ2K.dcm
skipped|no CT image|orthanc-tests/Database/2017-06-27-XSSInjection.dcm
failed|pixel data shorter than declared \(524288 bytes needed, 0 in the file\)|orthanc-tests/Database/2020-09-12-ELSCINT1-PMSCT_RLE1.dcm
skipped|no CT image|orthanc-tests/Database/2021-02-19-MalaterreCP246.dcm
skipped|no CT image|orthanc-tests/Database/2026-03-16-OD-OF-OL.dcm
quarantined|sequences nested deeper than 128 levels|orthanc-tests/Database/2026-05-06-Deeply-Nested-Sequence.dcm
skipped|no CT image|orthanc-tests/Database/2026-05-26-oob-monochrome-46341.dcm
skipped|no CT image|orthanc-tests/Database/2026-05-26-oob-monochrome-65535.dcm
skipped|no CT image|orthanc-tests/Database/Issue111.dcm
skipped|no CT image|orthanc-tests/Database/Issue137.dcm
skipped|no CT image|orthanc-tests/Database/Issue140.dcm
skipped|no CT image|orthanc-tests/Database/Issue146.dcm
skipped|no CT image|orthanc-tests/Database/Issue195-bis.dcm
skipped|no CT image|orthanc-tests/Database/Issue195.dcm
quarantined|no Series Instance UID and no Frame of Reference UID|orthanc-tests/Database/Issue196.dcm
skipped|no CT image|orthanc-tests/Database/Issue22-NoPixelData.dcm
skipped|no CT image|orthanc-tests/Database/Issue56-NoPixelData.dcm
done||orthanc-tests/Database/SignedCT.dcm
skipped|no CT image|cornerstoneWADOImageLoader/testImages/no-pixel-data.dcm
EOF
)

# ---------------------------------------------------------------------------- the made series
"$python" "$src/tools/mmunet/phantom_series.py" write --seed 1201 --out "$tmp/ph" \
    --variants regular --shape 12 48 48 --spacing 3 3 3 >/dev/null 2>"$tmp/gen.err"
ph=$tmp/ph/regular/dicom
mkdir -p "$ph.jls"
for f in "$ph"/*.dcm; do
    dcmcjpls "$f" "$ph.jls/$(basename "$f")" 2>>"$tmp/gen.err"
done
"$python" "$src/tests/bad_streams.py" "$td/totalsegmentator/tests/reference_files/example_ct_dicom" \
    "$ph" "$tmp/made" >"$tmp/made.txt" 2>>"$tmp/gen.err"
if [ "$(wc -l <"$tmp/made.txt")" -ne 5 ]; then
    echo "1..1"
    echo "not ok 1 - the broken series were made"
    sed 's/^/# /' "$tmp/gen.err"
    exit 1
fi

start
result "$([ -n "$pid" ] && kill -0 "$pid" && echo OK)" "the daemon started"
alive() { kill -0 "$pid" 2>/dev/null; }

# ---------------------------------------------------------------------------- drop
i=0
while IFS='|' read -r expect why rel; do
    [ -z "$rel" ] && continue
    i=$((i + 1))
    cp "$td/$rel" "$drop/$(printf 'f%03d' $i)-$(basename "$rel")"
done <<<"$table"
while read -r name uid broken; do
    mkdir -p "$drop/$name"
    cp "$tmp/made/$name"/* "$drop/$name/"
done <"$tmp/made.txt"
left() { find "$drop" -type f | wc -l; }
drop_empty() { [ "$(left)" -eq 0 ]; }
wait_for 120 drop_empty
result "$([ "$(left)" -eq 0 ] && echo OK)" "every file taken from the drop folder ($(left) left)"

q() { sqlite3 -readonly "$state/state.db" "$1" 2>/dev/null; }
# series_of DROPPED_PATH: the series UID of the instance stored from that file
series_of() {
    q "SELECT series_uid FROM instances WHERE source = 'drop:$1';"
}
series_state() { # UID: "state|reason"
    q "SELECT state || '|' || reason FROM series WHERE series_uid = '$1';"
}
settled() { # UID: the series has reached a final state
    case $(series_state "$1") in done\|* | failed\|* | skipped\|*) return 0 ;; esac
    return 1
}

# ---------------------------------------------------------------------------- outcomes
i=0
while IFS='|' read -r expect why rel; do
    [ -z "$rel" ] && continue
    i=$((i + 1))
    dropped=$drop/$(printf 'f%03d' $i)-$(basename "$rel")
    qwhy=$(grep -l -F "$(basename "$dropped")" "$state"/quarantine/*.why 2>/dev/null | head -1)
    uid=$(series_of "$dropped")
    got=
    if [ -n "$qwhy" ]; then
        got="quarantined|$(grep -v '^#' "$qwhy" | tr '\n' ' ')"
    elif [ -n "$uid" ]; then
        wait_for 300 settled "$uid"
        got=$(series_state "$uid")
    else
        got="duplicate|"
    fi
    good=
    if [ "${got%%|*}" = "$expect" ] && { [ -z "$why" ] || echo "${got#*|}" | grep -qiE -- "$why"; }; then
        good=OK
    fi
    result "$good" "$rel: $expect${why:+ ($why)}; got ${got:-nothing}"
done <<<"$table"

# outcome | reason | made series
made_table=$(
    cat <<'EOF'
failed|decoder failed on frame 1 \(transfer syntax 1\.2\.840\.10008\.1\.2\.4\.90\)|j2k-cut-stream
failed|pixel data fragments shorter than declared, or not ended by a sequence delimiter|j2k-cut-file
failed|decoder failed on frame 1 \(transfer syntax 1\.2\.840\.10008\.1\.2\.4\.80\)|jls-cut-stream
failed|pixel data fragments shorter than declared, or not ended by a sequence delimiter|jls-cut-file
skipped|modality 'MR', not CT|mr-in-ct-class
EOF
)
while IFS='|' read -r expect why name; do
    read -r _ uid broken < <(grep "^$name " "$tmp/made.txt")
    wait_for 300 settled "$uid"
    got=$(series_state "$uid")
    good=
    if [ "${got%%|*}" = "$expect" ] && echo "${got#*|}" | grep -qiE -- "$why"; then
        good=OK
    fi
    # a failure names the stored file of the broken instance
    if [ "$expect" = failed ] && [ -n "$good" ]; then
        stored=$(q "SELECT path FROM instances WHERE source = 'drop:$drop/$name/$(basename "$broken")';")
        echo "${got#*|}" | grep -qF -- "${stored:-none}" || good=
    fi
    result "$good" "series $name: $expect ($why); got ${got:-nothing}"
done <<<"$made_table"

result "$(alive && echo OK)" "the daemon ran throughout with the same PID ($pid)"
result "$(echoscu -to 5 -aec MMSEGD 127.0.0.1 "$port" >/dev/null 2>&1 && echo OK)" \
    "C-ECHO is answered at the end"
result "$([ "$(q 'PRAGMA integrity_check;')" = ok ] && echo OK)" "the index passes integrity_check"
result "$(! grep -qE 'AddressSanitizer|runtime error:|LeakSanitizer' "$tmp/log" && echo OK)" \
    "no sanitizer report in the daemon's log"
echo "1..$n"
exit $failed
