#!/bin/bash
# The sender end to end (design.md section 8): results put into the outbox as a job puts them
# (tests/outbox-put), delivered by the daemon to a real Orthanc (Debian's, started here on
# loopback with its own ports) and to a folder; transient and permanent failures; restarts.
#  a) delivered: the SEG (written by `mmsegd segment` from dcmqi's ct-3slice CT) is in
#     Orthanc under the CT's study, with the same pixel data; the folder holds an identical
#     copy and no temporary file; the outbox is gone;
#  b) permanent: an Orthanc that only knows another modality rejects our calling AE: dead at
#     once after one attempt, the reason names the rejection, the files and reason are in
#     dead/JOB-DEST/, and no further attempt follows;
#  c) outage: Orthanc stopped; attempts fail with connection refused and back off; the daemon
#     is stopped and started again during the retries; Orthanc comes back: the send is done
#     and Orthanc holds the SEG once;
#  d) the daemon killed (SIGKILL) during a send (Orthanc frozen with SIGSTOP mid-association),
#     started again: Orthanc ends with exactly one instance of that SEG;
#  e) retries exhausted: a folder that does not exist, retry_max_age_s 3: dead with "gave up
#     after"; the folder made, `mmsegd resend --dead` queues it again and it is delivered;
#  f) `mmsegd status` shows the dead send and the counts; usage errors of resend;
#  g) [destination] outputs: a folder that takes rtstruct and preview gets the RT Structure
#     Set and the PNG of a result that also holds a SEG and a Secondary Capture, nothing else;
#     a DICOM destination that takes seg stores only the SEG in Orthanc.
set -u
. "$(dirname "$0")/find-testdata.sh"
. "$(dirname "$0")/serve-util.sh"
require_testdata
orthanc=${ORTHANC:-$(command -v Orthanc || echo /usr/sbin/Orthanc)}
for t in "$orthanc" storescu dcmodify dcmdump curl; do
    if ! command -v "$t" >/dev/null; then
        echo "1..0 # SKIP $t is not installed (Debian packages orthanc, dcmtk, curl)"
        exit 0
    fi
done
mmsegd=${MMSEGD:-./mmsegd}
outbox_put=${OUTBOX_PUT:-${top_builddir:-.}/tests/outbox-put}
python=${PYTHON3:-/usr/bin/python3}
model=${srcdir:-.}/models/demo.safetensors
ct=$td/dcmqi/data/segmentations/ct-3slice
tmp=$(mktemp -d)
pid=
trap serve_cleanup EXIT
# ---------------------------------------------------------------------------- mmsegd
state=$tmp/state
config() {
    cat >"$tmp/mmsegd.ini" <<INI
[daemon]
state_dir = $state
log_level = info
[scp]
ae_title = MMSEGD
bind = 127.0.0.1
allowed_hosts = 127.0.0.0/8
allowed_calling_aes = any
port = $(free_port)
min_free_mb = 1
timeout_s = 5
[destination pacs]
type = dicom
ae_title = ORTHANC
host = 127.0.0.1
port = $dicom_open
retry_initial_s = 1
retry_multiplier = 2.0
retry_max_s = 2
[destination closed]
type = dicom
ae_title = ORTHANC
host = 127.0.0.1
port = $dicom_closed
[destination folder]
type = folder
path = $tmp/folder
[destination late]
type = folder
path = $tmp/late
retry_initial_s = 1
retry_max_s = 1
retry_max_age_s = 3
[destination picky]
type = folder
path = $tmp/picky
outputs = rtstruct, preview
[destination segs]
type = dicom
ae_title = ORTHANC
host = 127.0.0.1
port = $dicom_open
outputs = seg
[seg]
rtstruct = yes
preview_sc = yes
INI
}
put() { "$outbox_put" "$state" "$@"; }

# ---------------------------------------------------------------------------- the SEGs
echo "1..32"
if ! "$mmsegd" segment --model "$model" -o "$tmp/seg" "$ct" >"$tmp/segment.log" 2>&1; then
    result FAIL "mmsegd segment writes the SEG of ct-3slice"
    sed 's/^/# /' "$tmp/segment.log"
    exit 1
fi
seg=$(ls "$tmp"/seg/*.seg.dcm)
result OK "mmsegd segment writes the SEG of ct-3slice"
# variants with their own SOP Instance UIDs, one per job
uid_of() { dcmdump +P 0008,0018 "$1" | sed 's/.*\[\(.*\)\].*/\1/'; }
for j in 3 4; do
    mkdir -p "$tmp/seg$j"
    cp "$seg" "$tmp/seg$j/result.seg.dcm"
    dcmodify -nb -gin "$tmp/seg$j/result.seg.dcm" >/dev/null 2>&1
done
uid1=$(uid_of "$seg")
uid3=$(uid_of "$tmp/seg3/result.seg.dcm")
uid4=$(uid_of "$tmp/seg4/result.seg.dcm")
study=$(dcmdump +P 0020,000d "$ct/01.dcm" | sed 's/.*\[\(.*\)\].*/\1/')
ct_series=$(dcmdump +P 0020,000e "$ct/01.dcm" | sed 's/.*\[\(.*\)\].*/\1/')

orthanc_config open ""
orthanc_config closed ',
  "DicomAlwaysAllowEcho": false, "DicomAlwaysAllowStore": false,
  "DicomAlwaysAllowFind": false, "DicomAlwaysAllowFindWorklist": false,
  "DicomAlwaysAllowGet": false, "DicomAlwaysAllowMove": false,
  "DicomCheckModalityHost": true,
  "DicomModalities": { "known": [ "KNOWN", "127.0.0.1", 104 ] }'
if orthanc_start open && orthanc_start closed; then
    result OK "two Orthanc servers listen (DICOM $dicom_open, $dicom_closed)"
else
    result FAIL "two Orthanc servers listen"
    exit 1
fi
config
mkdir -p "$tmp/folder"
if start; then result OK "the daemon starts with six destinations"; else
    result FAIL "the daemon starts with six destinations"
    sed 's/^/# /' "$tmp/log"
    exit 1
fi

# ---------------------------------------------------------------------------- a) delivered
put 1 "$ct_series" pacs,folder "$seg"
if wait_for 20 send_is 1 pacs done && wait_for 20 send_is 1 folder done; then
    result OK "a) job 1 delivered to Orthanc and to the folder"
else
    result FAIL "a) job 1 delivered to Orthanc and to the folder ($(send_field 1 pacs reason))"
fi
id=$(orthanc_find open "$uid1")
got_study=$(orthanc_get open "/instances/$id/study" 2>/dev/null |
    "$python" -c 'import json,sys; print(json.load(sys.stdin)["MainDicomTags"]["StudyInstanceUID"])' 2>/dev/null)
[ -n "$id" ] && [ "$got_study" = "$study" ] &&
    result OK "a) Orthanc holds SEG $uid1 under the CT's study $study" ||
    result FAIL "a) Orthanc holds SEG $uid1 under the CT's study $study (found '$id', study '$got_study')"
orthanc_get open "/instances/$id/file" >"$tmp/from-orthanc.dcm" 2>/dev/null
pix() { dcmdump +P 7fe0,0010 +W "$tmp/pix" "$1" >/dev/null 2>&1 && md5sum <"$tmp/pix/$(ls "$tmp/pix" | head -1)" && rm -rf "$tmp/pix"/*; }
mkdir -p "$tmp/pix"
[ -n "$id" ] && [ "$(pix "$seg")" = "$(pix "$tmp/from-orthanc.dcm")" ] &&
    result OK "a) the SEG in Orthanc has the same pixel data" ||
    result FAIL "a) the SEG in Orthanc has the same pixel data"
base=$(basename "$seg")
cmp -s "$seg" "$tmp/folder/$base" && [ "$(ls -A "$tmp/folder")" = "$base" ] &&
    result OK "a) the folder holds an identical copy and nothing else" ||
    result FAIL "a) the folder holds an identical copy and nothing else ($(ls -A "$tmp/folder"))"
[ ! -e "$state/outbox/1" ] &&
    result OK "a) the outbox of job 1 is removed once every send is done" ||
    result FAIL "a) the outbox of job 1 is removed once every send is done"

# ---------------------------------------------------------------------------- b) permanent
put 2 "$ct_series" closed "$seg"
if wait_for 20 send_is 2 closed dead; then
    result OK "b) job 2 to the Orthanc that refuses us is dead"
else
    result FAIL "b) job 2 to the Orthanc that refuses us is dead ($(send_field 2 closed state))"
fi
reason=$(send_field 2 closed reason)
case $reason in
*rejected*permanent* | *A-ASSOCIATE-RJ*) result OK "b) the reason names the rejection: $reason" ;;
*) result FAIL "b) the reason names the rejection: '$reason'" ;;
esac
sleep 3
[ "$(send_field 2 closed attempts)" = 1 ] &&
    result OK "b) one attempt, no retry" ||
    result FAIL "b) one attempt, no retry ($(send_field 2 closed attempts))"
cmp -s "$seg" "$state/dead/2-closed/$base" && grep -q "rejected" "$state/dead/2-closed/why" &&
    [ ! -e "$state/outbox/2" ] &&
    result OK "b) dead/2-closed holds the SEG and why; the outbox is gone" ||
    result FAIL "b) dead/2-closed holds the SEG and why; the outbox is gone"

# ---------------------------------------------------------------------------- c) outage
orthanc_stop open
put 3 "$ct_series" pacs "$tmp/seg3/result.seg.dcm"
if wait_for 20 attempts_at_least 3 pacs 2 && send_is 3 pacs pending; then
    result OK "c) Orthanc down: job 3 is retried and stays pending"
else
    result FAIL "c) Orthanc down: job 3 is retried and stays pending ($(send_field 3 pacs state), $(send_field 3 pacs attempts))"
fi
reason=$(send_field 3 pacs reason)
gap=$(send_field 3 pacs next_attempt last_attempt |
    "$python" -c "import sys; n, l = map(float, sys.stdin.read().split()); print(n - l)")
case $reason in
*refused*) "$python" -c "import sys; sys.exit(not 0.9 <= $gap <= 2.1)" &&
    result OK "c) connection refused, next attempt ${gap} s later (backoff 1, 2, at most 2 s)" ||
    result FAIL "c) backoff between 1 and 2 s (got $gap)" ;;
*) result FAIL "c) the reason says connection refused: '$reason'" ;;
esac
stop
sleep 1
start
wait_for 10 attempts_at_least 3 pacs 3
result $( send_is 3 pacs pending && echo OK || echo FAIL) "c) after a daemon restart job 3 is still retried"
orthanc_start open
if wait_for 20 send_is 3 pacs done; then
    result OK "c) Orthanc back: job 3 delivered (after $(send_field 3 pacs attempts) attempts)"
else
    result FAIL "c) Orthanc back: job 3 delivered"
fi
[ "$(orthanc_find open "$uid3" | wc -l)" = 1 ] &&
    result OK "c) Orthanc holds SEG $uid3 once" ||
    result FAIL "c) Orthanc holds SEG $uid3 once"

# ---------------------------------------------------------------------------- d) killed
kill -STOP "${opid[open]}"
put 4 "$ct_series" pacs "$tmp/seg4/result.seg.dcm"
if wait_for 20 grep -q "job 4 to pacs: attempt 1" "$tmp/log"; then
    sleep 1
    kill -9 "$pid"
    wait "$pid" 2>/dev/null
    pid=
    result OK "d) the daemon is killed while the association with the frozen Orthanc is open"
else
    result FAIL "d) the daemon starts the send of job 4"
fi
kill -CONT "${opid[open]}"
send_is 4 pacs pending &&
    result OK "d) job 4 is pending after the kill" ||
    result FAIL "d) job 4 is pending after the kill ($(send_field 4 pacs state))"
start
if wait_for 30 send_is 4 pacs done; then
    result OK "d) after the restart job 4 is delivered"
else
    result FAIL "d) after the restart job 4 is delivered ($(send_field 4 pacs reason))"
fi
n4=$(orthanc_find open "$uid4" | wc -l)
total=$(orthanc_instances open)
[ "$n4" = 1 ] && [ "$total" = 3 ] &&
    result OK "d) Orthanc holds SEG $uid4 exactly once (3 instances in all)" ||
    result FAIL "d) Orthanc holds SEG $uid4 exactly once ($n4; $total instances in all)"

# ---------------------------------------------------------------------------- e) gave up
put 5 "$ct_series" late "$seg"
if wait_for 20 send_is 5 late dead; then
    result OK "e) job 5 to a missing folder is dead after retry_max_age_s"
else
    result FAIL "e) job 5 to a missing folder is dead after retry_max_age_s ($(send_field 5 late state))"
fi
reason=$(send_field 5 late reason)
case $reason in
*"gave up after"*) result OK "e) the reason: $reason" ;;
*) result FAIL "e) the reason says it gave up: '$reason'" ;;
esac
"$mmsegd" status -c "$tmp/mmsegd.ini" >"$tmp/status.txt" 2>&1
grep -q "^dead .* 5  late" "$tmp/status.txt" && grep -q "sends: pending 0, done 4, dead 2" "$tmp/status.txt" &&
    result OK "f) status shows the dead sends and the counts" ||
    { result FAIL "f) status shows the dead sends and the counts"; sed 's/^/# /' "$tmp/status.txt"; }
mkdir -p "$tmp/late"
out=$("$mmsegd" resend -c "$tmp/mmsegd.ini" 5 2>&1)
[ "$out" = "1 send queued again" ] && [ ! -e "$state/dead/5-late" ] && [ -e "$state/outbox/5/$base" ] &&
    result OK "e) resend 5: $out; the files are back in the outbox" ||
    result FAIL "e) resend 5: '$out'"
if wait_for 20 send_is 5 late done && cmp -s "$seg" "$tmp/late/$base"; then
    result OK "e) job 5 delivered to the folder once it exists"
else
    result FAIL "e) job 5 delivered to the folder once it exists"
fi
"$mmsegd" resend -c "$tmp/mmsegd.ini" 5 >/dev/null 2>"$tmp/err"; rc=$?
[ $rc = 1 ] && grep -q "no dead or pending send" "$tmp/err" &&
    result OK "f) resend of a delivered job: exit 1, nothing to queue" ||
    result FAIL "f) resend of a delivered job: exit 1 (got $rc: $(cat "$tmp/err"))"
"$mmsegd" resend -c "$tmp/mmsegd.ini" >/dev/null 2>&1; rc1=$?
"$mmsegd" resend -c "$tmp/mmsegd.ini" x1 >/dev/null 2>&1; rc2=$?
"$mmsegd" resend -c "$tmp/mmsegd.ini" --dead 3 >/dev/null 2>&1; rc3=$?
[ $rc1 = 2 ] && [ $rc2 = 2 ] && [ $rc3 = 2 ] &&
    result OK "f) resend usage errors exit 2" ||
    result FAIL "f) resend usage errors exit 2 (got $rc1 $rc2 $rc3)"

# ---------------------------------------------------------------------------- g) outputs
mkdir -p "$tmp/picky" "$tmp/g"
cp "$seg" "$tmp/g/job9.dcm"
dcmodify -nb -gin "$tmp/g/job9.dcm" >/dev/null 2>&1
cp "$seg" "$tmp/g/job9-other.sc.dcm" # stands for the Secondary Capture: only its name counts
dcmodify -nb -gin "$tmp/g/job9-other.sc.dcm" >/dev/null 2>&1
cp "$seg" "$tmp/g/job9-contours.rtstruct.dcm"
dcmodify -nb -gin "$tmp/g/job9-contours.rtstruct.dcm" >/dev/null 2>&1
printf 'png' >"$tmp/g/job9.png"
before=$(orthanc_instances open)
put 9 "$ct_series" picky,segs "$tmp/g/job9.dcm" "$tmp/g/job9.png" "$tmp/g/job9-other.sc.dcm" \
    "$tmp/g/job9-contours.rtstruct.dcm"
if wait_for 20 send_is 9 picky done && wait_for 20 send_is 9 segs done; then
    got=$(ls -A "$tmp/picky" | tr '\n' ' ')
    [ "$got" = "job9-contours.rtstruct.dcm job9.png " ] &&
        result OK "g) outputs = rtstruct, preview: the folder holds $got" ||
        result FAIL "g) outputs = rtstruct, preview: the folder holds '$got'"
    after=$(orthanc_instances open)
    [ -n "$(orthanc_find open "$(uid_of "$tmp/g/job9.dcm")")" ] && [ $((after - before)) = 1 ] &&
        result OK "g) outputs = seg: Orthanc got the SEG alone (1 instance more)" ||
        result FAIL "g) outputs = seg: Orthanc got the SEG alone ($before -> $after instances)"
else
    result FAIL "g) outputs: job 9 delivered ($(send_field 9 picky reason); $(send_field 9 segs reason))"
    result FAIL "g) outputs = seg"
fi
stop
grep -q "job 2 to closed: attempt 2" "$tmp/log" &&
    result FAIL "b) the refused send was never attempted twice" ||
    result OK "b) the refused send was never attempted twice"
grep -q "Sanitizer" "$tmp/log" &&
    result FAIL "the daemon's log has no sanitizer report" ||
    result OK "the daemon's log has no sanitizer report"
if [ $failed = 1 ]; then
    echo "# daemon log:"
    sed 's/^/# /' "$tmp/log" | tail -60
fi
exit $failed
