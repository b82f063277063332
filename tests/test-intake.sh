#!/bin/bash
# The daemon's intake end to end, with the real DCMTK tools on loopback and the shared test
# data: C-ECHO, C-STORE of three series (uncompressed, tilted, JPEG 2000) that become queued
# with the right slice counts, the mixed Philips study through the drop folder (only the
# axial series queued), association policy (calling AE, host), low disk (0xA700, nothing
# left behind), duplicates and replaced content, the drop folder's rules (slow writer,
# rename, garbage), and the queue after a restart. tests/test-crash.sh kills the daemon
# while it receives.
set -u
. "$(dirname "$0")/find-testdata.sh"
require_testdata
for t in echoscu storescu dcmodify sqlite3; do
    if ! command -v $t >/dev/null; then
        echo "1..0 # SKIP $t is not installed (DCMTK tools, sqlite3 CLI)"
        exit 0
    fi
done
mmsegd=${MMSEGD:-./mmsegd}
python=${PYTHON3:-/usr/bin/python3}
tmp=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
    [ -n "${KEEP:-}" ] && echo "# kept $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT
n=0
failed=0
check() { # check DESCRIPTION COMMAND...
    n=$((n + 1))
    if "${@:2}" >/dev/null 2>&1; then echo "ok $n - $1"; else echo "not ok $n - $1"; failed=1; fi
}
. "$(dirname "$0")/serve-util.sh" # free_port
port=$(free_port)
state=$tmp/state
drop=$tmp/drop
# config EXTRA...: write the configuration with extra lines appended to [scp]
config() {
    cat >"$tmp/mmsegd.ini" <<EOF
[daemon]
state_dir = $state
log_level = info
[scp]
ae_title = MMSEGD
bind = 127.0.0.1
port = $port
allowed_hosts = ${ALLOW_HOSTS:-127.0.0.0/8}
allowed_calling_aes = ${ALLOW_AES:-any}
min_free_mb = ${MIN_FREE_MB:-1}
$*
[drop]
dir = $drop
stable_s = 2
scan_s = 2
[series]
stable_age_s = 2
min_slices = 10
EOF
}
start() {
    "$mmsegd" serve -c "$tmp/mmsegd.ini" >>"$tmp/log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        echoscu -to 2 -aec MMSEGD 127.0.0.1 "$port" >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
stop() {
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    pid=
}
status_json() { "$mmsegd" status -c "$tmp/mmsegd.ini" --json; }
# series_field UID-PREFIX FIELD: a field of the first series whose UID starts with the prefix
series_field() {
    status_json | "$python" -c '
import json, sys
d = json.load(sys.stdin)
for s in d["series"]:
    if s["series_uid"].startswith(sys.argv[1]):
        print(s[sys.argv[2]]); break' "$1" "$2"
}
# wait_state UID-PREFIX STATE: up to 15 s
wait_state() {
    for _ in $(seq 150); do
        [ "$(series_field "$1" state 2>/dev/null)" = "$2" ] && return 0
        sleep 0.1
    done
    return 1
}
db() { sqlite3 -readonly "$state/state.db" "$1"; }

qa=$td/dcm_qa_ct/In
s2010=1.3.46.670589.33.1.6002432791750815306.26862469513794233732
ge=1.2.826.0.1.3680043.9.4245.3115138630835728997848661150714813892
ts_dir=$td/totalsegmentator/tests/reference_files/example_ct_dicom
echo "1..29"
mkdir -p "$drop"
config
check "the daemon starts and answers C-ECHO" start

storescu -aec MMSEGD 127.0.0.1 "$port" "$qa/Philips/S21570/S2010"/I* >"$tmp/out" 2>&1
check "C-STORE of Philips S2010 (28 files, explicit LE)" test $? -eq 0
storescu -aec MMSEGD 127.0.0.1 "$port" +sd "$qa/GE" >"$tmp/out" 2>&1
check "C-STORE of the GE series (28 files, gantry tilt)" test $? -eq 0
# the TotalSegmentator files have empty UIDs: over the network they are refused ...
storescu -aec MMSEGD 127.0.0.1 "$port" "$ts_dir"/CT.*16573 >"$tmp/out" 2>&1
refused_no_uid() { ! grep -q 'Success' "$tmp/out" && [ "$(db 'select count(*) from instances')" -eq 56 ]; }
check "a file with an empty SOP Instance UID is refused over the network" refused_no_uid
# ... so the test gives them UIDs, as a sender would have to
mkdir "$tmp/ts"
cp "$ts_dir"/CT.* "$tmp/ts/"
dcmodify -nb -i "(0008,0016)=1.2.840.10008.5.1.4.1.1.2" -i "(0020,000D)=2.25.1001" \
    -i "(0020,000E)=2.25.1002" -gin "$tmp/ts"/CT.* >/dev/null 2>&1
storescu -xv -aec MMSEGD 127.0.0.1 "$port" +sd "$tmp/ts" >"$tmp/out" 2>&1
check "C-STORE of the TotalSegmentator series (20 files, JPEG 2000) with UIDs given" test $? -eq 0
queued_with() { wait_state "$1" queued && [ "$(series_field "$1" instances)" = "$2" ]; }
check "S2010: queued with 28 instances" queued_with $s2010 28
check "GE: queued with 28 instances" queued_with $ge 28
check "TotalSegmentator: queued with 20 instances" queued_with 2.25.1002 20
header_values() {
    [ "$(db "select rows, cols, transfer_syntax from instances where series_uid = '2.25.1002' limit 1")" = '512|512|1.2.840.10008.1.2.4.90' ] &&
        "$mmsegd" status -c "$tmp/mmsegd.ini" --json >/dev/null &&
        "$python" "$(dirname "$0")/intake_check.py" ipp "$state/state.db" "$qa/Philips/S21570/S2010"
}
check "the index holds the header values (size, transfer syntax kept, IPP of every S2010 slice)" header_values
check "every stored file has its digest as name and the data set of its source" \
    "$python" "$(dirname "$0")/intake_check.py" stored "$state" "$qa/Philips/S21570/S2010" "$qa/GE"

# duplicates and replaced content
storescu -aec MMSEGD 127.0.0.1 "$port" "$qa/Philips/S21570/S2010"/I* >"$tmp/out" 2>&1
counts_are() { # ROWS FILES
    [ "$(db 'select count(*) from instances')" -eq "$1" ] &&
        [ "$(find "$state/instances" -name '*.dcm' | wc -l)" -eq "$2" ]
}
check "sending S2010 again: acknowledged, no new row, no new file" counts_are 76 76
cp "$qa/Philips/S21570/S2010/I10" "$tmp/changed.dcm"
dcmodify -nb -i "(0008,103E)=changed description" "$tmp/changed.dcm" >/dev/null 2>&1
storescu -aec MMSEGD 127.0.0.1 "$port" "$tmp/changed.dcm" >"$tmp/out" 2>&1
replaced() {
    counts_are 76 76 &&
        [ "$(db "select count(*) from instances where series_description = 'changed description'")" -eq 1 ] &&
        grep -q "series $s2010: complete (quiet), 28 slices, queued" "$tmp/log" &&
        wait_state $s2010 queued
}
check "other content under the same SOP Instance UID replaces the old file; the series is judged again" replaced

# the mixed Philips study through the drop folder: localizer, secondary capture, axial
cp -r "$qa/Philips/S21570" "$drop/"
loc=1.3.46.670589.33.1.17491953482334658115
sc=1.3.46.670589.33.1.22100348011750129999
skipped_for() { wait_state "$1" skipped && series_field "$1" reason | grep -q "$2"; }
check "mixed study: the localizer series is skipped" skipped_for $loc "only localizers"
check "mixed study: the exam summary (secondary capture) is skipped" skipped_for $sc "no CT image"
check "mixed study: the axial series is queued" wait_state $s2010 queued
drained() {
    for _ in $(seq 100); do
        [ "$(find "$drop" -type f | wc -l)" -eq 0 ] && break
        sleep 0.1
    done
    [ "$(find "$drop" -type f | wc -l)" -eq 0 ] &&
        [ "$(grep -l "a DICOMDIR" "$state"/quarantine/*.why | wc -l)" -eq 4 ]
}
check "mixed study: the drop folder is drained; the 4 directory files are quarantined" drained
"$mmsegd" status -c "$tmp/mmsegd.ini" >"$tmp/status.txt" 2>&1
check "mmsegd status prints the table" grep -q "skipped" "$tmp/status.txt"

# the TotalSegmentator files as they are (empty Study/Series/SOP UIDs) through the drop
# folder: SOP Instance UIDs from the file meta, Study and Series UIDs derived, a warning
mkdir "$tmp/ts-drop"
cp "$ts_dir"/CT.* "$tmp/ts-drop/"
mv "$tmp/ts-drop" "$drop/ts"
derived() {
    for _ in $(seq 150); do
        grep -q "no Study or Series Instance UID; derived series" "$tmp/log" && break
        sleep 0.1
    done
    local uid
    uid=$(grep -o "derived series 2\.25\.[0-9]*" "$tmp/log" | head -1 | cut -d' ' -f3)
    [ -n "$uid" ] && wait_state "$uid" queued && [ "$(series_field "$uid" instances)" = 20 ] &&
        [ "$(grep -o "derived series 2\.25\.[0-9]*" "$tmp/log" | sort -u | wc -l)" -eq 1 ]
}
check "drop folder: the series without UIDs is stored under one derived series, 20 instances, queued" derived

# the drop folder's rules
head -c 300000 "$qa/GE/01.dcm" >"$drop/slow.dcm"
sleep 1
check "a file being written is not taken" test -f "$drop/slow.dcm"
sleep 1
tail -c +300001 "$qa/GE/01.dcm" >>"$drop/slow.dcm"
sleep 4
check "taken once complete and quiet for stable_s" test ! -e "$drop/slow.dcm"
cp "$qa/GE/02.dcm" "$tmp/moved.dcm"
mv "$tmp/moved.dcm" "$drop/moved.dcm"
sleep 1
check "a file renamed in is taken at once (before stable_s)" test ! -e "$drop/moved.dcm"
echo "not DICOM at all" >"$tmp/garbage.dcm"
mv "$tmp/garbage.dcm" "$drop/garbage.dcm"
sleep 1
check "garbage goes to quarantine with a .why file" \
    bash -c "[ ! -e '$drop/garbage.dcm' ] && grep -l 'garbage.dcm' '$state'/quarantine/*.why | grep -q ."

# association policy
stop
ALLOW_AES=GOODAE config
start
echoscu -aet BADAE -aec MMSEGD 127.0.0.1 "$port" >"$tmp/out" 2>&1
check "a calling AE not allowed is refused at association" test $? -ne 0
echoscu -aet GOODAE -aec OTHER 127.0.0.1 "$port" >"$tmp/out" 2>&1
check "a called AE title other than ours is refused" test $? -ne 0
stop
ALLOW_HOSTS=10.0.0.0/8 config
start
echoscu -aec MMSEGD 127.0.0.1 "$port" >"$tmp/out" 2>&1
check "a host outside allowed_hosts is refused" test $? -ne 0
stop

# low disk: 0xA700, nothing partial left
MIN_FREE_MB=4000000000 config
start
storescu -v -aec MMSEGD 127.0.0.1 "$port" "$qa/GE/03.dcm" >"$tmp/out" 2>&1
check "under min_free_mb: C-STORE answered 0xA700, nothing left in tmp/" \
    bash -c "grep -qi 'a700\|out of resources\|Refused' '$tmp/out' && [ -z \"\$(ls -A '$state/tmp')\" ]"
stop

# restart: a series left stable is queued, exactly once
config
sqlite3 "$state/state.db" "update series set state = 'stable' where series_uid = '$ge'"
start
check "a series that was stable before the restart is queued after it" wait_state $ge queued
check "... exactly once (the recovery says one series judged)" \
    grep -q "1 complete series judged" "$tmp/log"
stop
check "no patient data in the log at info level (no patient names)" \
    bash -c "! grep -qi 'PHANTOM\|^.*PatientName' '$tmp/log'"
exit $failed
