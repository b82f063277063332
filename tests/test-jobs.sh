#!/bin/bash
# The whole job in the daemon (design.md sections 1, 3, 6, 7, 8): C-STORE in, SEG in a real
# Orthanc and in a folder out.
#  a) two phantom series (tools/mmunet/phantom_series.py, seed 1000: regular and gantry-tilted)
#     sent at once on two associations: both become jobs, both SEGs reach Orthanc under their
#     study and the folder; each SEG encodes exactly the labels `mmsegd segment --nifti` gives
#     for its series (tests/seg_check.py, which also checks the references, positions and
#     codes), passes dciodvfy, and those labels reach a mean Dice of at least 0.9 against the
#     phantom's truth on the regular series;
#  b) a late instance (one slice sent again with other content) re-opens the regular series:
#     run 2 writes a superseding SEG (series number 9902), delivered beside the first;
#  c) the daemon killed (SIGKILL) while a job runs: after the restart the job is recorded as
#     interrupted, the series runs again, and Orthanc holds exactly one SEG of it;
#  d) a fourth series (irregular spacing) through the drop folder: its SEG has the same pixel
#     data and UIDs as the one `mmsegd segment -o` writes for the same files;
#  e) the daemon killed (SIGKILL) during a job, then crashed (SIGSEGV on the job's own
#     thread, mms-job0) during three jobs of one series in a row: after the kill the series runs
#     again; after the third crash it fails instead (an input that crashes the daemon must not
#     loop forever), and the jobs are recorded as interrupted, crashed, crashed, crashed;
#  f) SIGHUP: a model file that does not load is refused, another one takes over;
#  and the metrics endpoint moves as the series go through. With [seg] preview_sc = yes and
#  rtstruct = yes each job also delivers the preview as a Secondary Capture and an RT
#  Structure Set, in the series' study (a). The daemon runs two engines
#  ([infer] device = 0,0: two CPU engines); jobs take the first free one.
set -u
. "$(dirname "$0")/find-testdata.sh"
. "$(dirname "$0")/serve-util.sh"
orthanc=${ORTHANC:-$(command -v Orthanc || echo /usr/sbin/Orthanc)}
for t in "$orthanc" storescu dcmodify dcmdump curl sqlite3; do
    if ! command -v "$t" >/dev/null; then
        echo "1..0 # SKIP $t is not installed (Debian packages orthanc, dcmtk, curl, sqlite3)"
        exit 0
    fi
done
mmsegd=${MMSEGD:-./mmsegd}
python=${PYTHON3:-/usr/bin/python3}
require_python numpy scipy pydicom nibabel
src=${srcdir:-.}
model=$(cd "$src" && pwd)/models/demo.safetensors
dciodvfy=${DCIODVFY:-$(command -v dciodvfy || echo /usr/bin/dciodvfy)}
tmp=$(mktemp -d)
pid=
trap serve_cleanup EXIT
echo "1..35"

# ---------------------------------------------------------------------------- inputs
"$python" "$src/tools/mmunet/phantom_series.py" write --seed 1000 --out "$tmp/ph" \
    --variants regular,tilt,shear,irregular >"$tmp/ph.log" 2>&1 ||
    { result FAIL "phantom_series.py writes four series"; sed 's/^/# /' "$tmp/ph.log"; exit 1; }
uid_of() { "$python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["variants"][sys.argv[2]]["series_uid"])' "$tmp/ph/series.json" "$1"; }
dir_of() { "$python" -c 'import json,os,sys; m=json.load(open(sys.argv[1])); print(os.path.join(os.path.dirname(sys.argv[1]), m["variants"][sys.argv[2]]["dicom"]))' "$tmp/ph/series.json" "$1"; }
reg=$(uid_of regular) tilt=$(uid_of tilt) shear=$(uid_of shear) irr=$(uid_of irregular)
reg_dir=$(dir_of regular) tilt_dir=$(dir_of tilt) shear_dir=$(dir_of shear)
irr_dir=$(dir_of irregular)
"$mmsegd" segment --model "$model" --nifti "$tmp/nifti" "$reg_dir" "$tilt_dir" >"$tmp/segment.log" 2>&1
dice=$("$python" "$src/tools/mmunet/phantom_series.py" score --manifest "$tmp/ph/series.json" \
    --variant regular --pred "$tmp/nifti/$reg.nii.gz" 2>/dev/null |
    "$python" -c 'import json,sys; print(json.load(sys.stdin)["mean"])' 2>/dev/null)
"$python" -c "import sys; sys.exit(not float('${dice:-0}') >= 0.9)" 2>/dev/null &&
    result OK "the regular phantom's labels from mmsegd segment: mean Dice $dice >= 0.9" ||
    result FAIL "the regular phantom's labels from mmsegd segment: mean Dice '$dice' >= 0.9"

# ---------------------------------------------------------------------------- daemon
orthanc_config open ""
orthanc_start open && result OK "Orthanc listens (DICOM $dicom_open)" ||
    { result FAIL "Orthanc listens"; exit 1; }
port=$(free_port)
mport=$(free_port)
mkdir -p "$tmp/folder" "$tmp/drop"
serve_config "$tmp/mmsegd.ini" "$tmp/state" "$port" "workers = 2" \
    "metrics_listen = 127.0.0.1:$mport" <<INI
[drop]
dir = $tmp/drop
stable_s = 1
scan_s = 1
[series]
stable_age_s = 2
[seg]
preview_sc = yes
rtstruct = yes
[infer]
model = $model
threads = 1
device = 0,0
[destination pacs]
ae_title = ORTHANC
host = 127.0.0.1
port = $dicom_open
retry_initial_s = 1
[destination folder]
type = folder
path = $tmp/folder
INI
start && result OK "the daemon starts with the demo model" ||
    { result FAIL "the daemon starts"; sed 's/^/# /' "$tmp/log"; exit 1; }
grep -q 'sha256 [0-9a-f]*, on cpu, cpu; loaded' "$tmp/log" &&
    result OK "device = 0,0: two engines loaded ($(grep -o 'on cpu, cpu; loaded' "$tmp/log"))" ||
    { result FAIL "device = 0,0: two engines loaded"; grep 'sha256' "$tmp/log" | sed 's/^/# /'; }

series_state() {
    "$mmsegd" status -c "$tmp/mmsegd.ini" --json | "$python" -c '
import json, sys
for s in json.load(sys.stdin)["series"]:
    if s["series_uid"] == sys.argv[1]:
        print(s["state"], s["run"])' "$1"
}
sends_done() {
    "$mmsegd" status -c "$tmp/mmsegd.ini" --json | "$python" -c '
import json, sys
c = json.load(sys.stdin)["send_counts"]
sys.exit(not (c["pending"] == 0 and c["done"] == int(sys.argv[1])))' "$1"
}
# segs_of SERIES: the SOP Instance UIDs of the SEGs in Orthanc that refer to that series
segs_of() {
    orthanc_get open "/instances?expand" | "$python" -c '
import json, sys
for i in json.load(sys.stdin):
    print(i["MainDicomTags"]["SOPInstanceUID"])' | while read -r u; do
        id=$(orthanc_find open "$u")
        orthanc_get open "/instances/$id/file" >"$tmp/o.dcm"
        "$python" -c '
import pydicom, sys
d = pydicom.dcmread(sys.argv[1])
refs = [r.SeriesInstanceUID for r in d.get("ReferencedSeriesSequence", [])]
sys.exit(not (d.Modality == "SEG" and sys.argv[2] in refs))' "$tmp/o.dcm" "$1" && echo "$u"
    done
}

# seg_in_folder SERIES: a SEG in the folder destination that names that series (the RT
# Structure Set names it too)
seg_in_folder() {
    grep -l "$1" "$tmp"/folder/*.dcm 2>/dev/null | while read -r f; do
        dcmdump +P 0008,0060 "$f" 2>/dev/null | grep -q '\[SEG\]' && echo "$f"
    done | head -1
}

# metric NAME: its value in the Prometheus endpoint (NAME with its labels, as printed)
metric() {
    curl -sf "http://127.0.0.1:$mport/metrics" | awk -v m="$1" '$1 == m {print $2}'
}
before="$(metric mmsegd_instances_received_total) $(metric 'mmsegd_jobs{state="done"}') $(metric 'mmsegd_sends{state="done"}')"
[ "$before" = "0 0 0" ] && result OK "metrics: nothing received, no job, no send yet ($before)" ||
    result FAIL "metrics: nothing received, no job, no send yet ('$before')"

# ---------------------------------------------------------------------------- a) two at once
storescu -aec MMSEGD 127.0.0.1 "$port" +sd "$reg_dir" >"$tmp/scu1" 2>&1 &
s1=$!
storescu -aec MMSEGD 127.0.0.1 "$port" +sd "$tilt_dir" >"$tmp/scu2" 2>&1 &
s2=$!
wait $s1 && wait $s2 && result OK "a) both series sent at once on two associations" ||
    result FAIL "a) both series sent at once on two associations"
if wait_for 120 sends_done 4; then
    result OK "a) both series became jobs and their SEGs reached Orthanc and the folder"
else
    result FAIL "a) both series became jobs and their SEGs reached Orthanc and the folder"
    "$mmsegd" status -c "$tmp/mmsegd.ini" | sed 's/^/# /'
fi
[ "$(series_state "$reg")" = "done 1" ] && [ "$(series_state "$tilt")" = "done 1" ] &&
    result OK "a) both series are done, run 1" ||
    result FAIL "a) both series are done, run 1 ($(series_state "$reg"); $(series_state "$tilt"))"
for v in regular tilt; do
    u=$(uid_of $v)
    d=$(dir_of $v)
    seg=$(seg_in_folder "$u")
    if [ -n "$seg" ] && "$python" "$src/tests/seg_check.py" --model "$model" "$seg" \
        "$tmp/nifti/$u.nii.gz" "$d" >"$tmp/check.$v" 2>&1; then
        result OK "a) $v: the SEG in the folder encodes the labels of mmsegd segment (seg_check)"
    else
        result FAIL "a) $v: the SEG in the folder encodes the labels of mmsegd segment (seg_check)"
        grep -v "^ok" "$tmp/check.$v" | sed 's/^/# /' | head -20
    fi
    if [ -n "$seg" ] && [ -x "$dciodvfy" ]; then
        "$dciodvfy" "$seg" >"$tmp/vfy.$v" 2>&1
        grep -q "^Error" "$tmp/vfy.$v" && result FAIL "a) $v: dciodvfy reports no error" ||
            result OK "a) $v: dciodvfy reports no error ($(grep -c "^Warning" "$tmp/vfy.$v") warnings)"
    else
        result FAIL "a) $v: dciodvfy ran on the SEG"
    fi
    cnt=$(segs_of "$u" | wc -l)
    study=$(dcmdump +P 0020,000d "$(ls "$d"/* | head -1)" | sed 's/.*\[\(.*\)\].*/\1/')
    sstudy=$(dcmdump +P 0020,000d "$seg" 2>/dev/null | sed 's/.*\[\(.*\)\].*/\1/')
    [ "$cnt" = 1 ] && [ "$sstudy" = "$study" ] &&
        result OK "a) $v: Orthanc holds one SEG of it, in the series' study" ||
        result FAIL "a) $v: Orthanc holds one SEG of it, in the series' study ($cnt; '$sstudy' vs '$study')"
    # the preview as a Secondary Capture and the RT Structure Set: in Orthanc, in the folder
    for m in "1.2.840.10008.5.1.4.1.1.7:the preview as a Secondary Capture" \
        "1.2.840.10008.5.1.4.1.1.481.3:the RT Structure Set"; do
        cls=${m%%:*} what=${m#*:}
        f=$(for f in "$tmp"/folder/*.dcm; do
            "$python" -c '
import pydicom, sys
d = pydicom.dcmread(sys.argv[1], stop_before_pixels=True)
sys.exit(not (d.SOPClassUID == sys.argv[3] and d.StudyInstanceUID == sys.argv[2]))' \
                "$f" "$study" "$cls" && echo "$f"
        done | head -1)
        fu=$([ -n "$f" ] && dcmdump +P 0008,0018 "$f" | sed 's/.*\[\(.*\)\].*/\1/')
        if [ -n "$f" ] && [ -n "$(orthanc_find open "$fu")" ]; then
            result OK "a) $v: $what in the series' study, in Orthanc and the folder"
        else
            result FAIL "a) $v: $what in the series' study, in Orthanc and the folder ('$f', '$fu')"
        fi
    done
done

after="$(metric mmsegd_instances_received_total) $(metric 'mmsegd_jobs{state="done"}') $(metric 'mmsegd_sends{state="done"}') $(metric 'mmsegd_job_stage_seconds_count{stage="network"}') $(metric 'mmsegd_model_info{name="mmunet-demo-ct",version="0.2.0",sha256="'"$(sha256sum <"$model" | cut -c1-64)"'",backend="cpu"}')"
[ "$after" = "120 2 4 2 1" ] &&
    result OK "metrics: 120 instances, 2 jobs done, 4 sends done, 2 network timings, the model ($after)" ||
    result FAIL "metrics: 120 instances, 2 jobs done, 4 sends done, 2 network timings, the model ('$after')"
e1=$(metric 'mmsegd_engine_jobs_total{engine="1",backend="cpu"}')
e2=$(metric 'mmsegd_engine_jobs_total{engine="2",backend="cpu"}')
[ -n "$e1" ] && [ -n "$e2" ] && [ $((e1 + e2)) -eq 2 ] &&
    result OK "metrics: the two engines ran the two pipelines (engine 1: $e1, engine 2: $e2)" ||
    result FAIL "metrics: the two engines ran the two pipelines (engine 1: '$e1', engine 2: '$e2')"
bc=$(metric 'mmsegd_backend_jobs_total{backend="cpu"}')
bg=$(metric 'mmsegd_backend_jobs_total{backend="cuda"}')
gm=$(curl -sf "http://127.0.0.1:$mport/metrics" | grep -c '^mmsegd_gpu_memory_bytes{')
[ "$bc" = 2 ] && [ "$bg" = 0 ] && [ "$gm" = 0 ] &&
    result OK "metrics: 2 sliding windows on the CPU, none on a GPU, no GPU memory line" ||
    result FAIL "metrics: backend counts cpu '$bc', cuda '$bg', GPU memory lines '$gm'"

# ---------------------------------------------------------------------------- b) late instance
late=$(ls "$reg_dir"/* | head -1)
cp "$late" "$tmp/late.dcm"
dcmodify -nb -m "(0008,103E)=late correction" "$tmp/late.dcm" >/dev/null 2>&1
storescu -aec MMSEGD 127.0.0.1 "$port" "$tmp/late.dcm" >"$tmp/scu3" 2>&1
if wait_for 60 sends_done 6 && [ "$(series_state "$reg")" = "done 2" ]; then
    result OK "b) the late instance re-opened the series; run 2 delivered"
else
    result FAIL "b) the late instance re-opened the series; run 2 delivered ($(series_state "$reg"))"
fi
numbers=$(for u in $(segs_of "$reg"); do
    id=$(orthanc_find open "$u")
    orthanc_get open "/instances/$id/tags?simplify" |
        "$python" -c 'import json,sys; print(json.load(sys.stdin)["SeriesNumber"])'
done | sort | tr '\n' ' ')
[ "$numbers" = "9901 9902 " ] &&
    result OK "b) Orthanc holds the first SEG and the superseding one (series numbers $numbers)" ||
    result FAIL "b) Orthanc holds the first SEG and the superseding one (series numbers '$numbers')"

# ---------------------------------------------------------------------------- c) killed
storescu -aec MMSEGD 127.0.0.1 "$port" +sd "$shear_dir" >"$tmp/scu4" 2>&1
if wait_for 30 grep -q "job [0-9]*: series $shear, run 1" "$tmp/log"; then
    kill -9 "$pid"
    wait "$pid" 2>/dev/null
    pid=
    result OK "c) the daemon is killed while the job of the third series runs"
else
    result FAIL "c) the job of the third series starts"
fi
state=$(sqlite3 "$tmp/state/state.db" "SELECT state FROM jobs WHERE series_uid = '$shear'")
[ "$state" = running ] &&
    result OK "c) its job is left running, without a result" ||
    result FAIL "c) its job is left running, without a result (state '$state'; the kill came late)"
start
if wait_for 60 sends_done 8; then
    result OK "c) after the restart the series runs again and is delivered"
else
    result FAIL "c) after the restart the series runs again and is delivered"
fi
jobs=$(sqlite3 "$tmp/state/state.db" "SELECT state || ' ' || run FROM jobs WHERE series_uid = '$shear' ORDER BY id" | tr '\n' ',')
cnt=$(segs_of "$shear" | wc -l)
[ "$jobs" = "interrupted 1,done 2," ] && [ "$cnt" = 1 ] &&
    result OK "c) jobs: interrupted (run 1), done (run 2); Orthanc holds exactly one SEG of it" ||
    result FAIL "c) jobs '$jobs'; Orthanc holds $cnt SEGs of it"
# ---------------------------------------------------------------------------- d) drop folder
"$mmsegd" segment --model "$model" -o "$tmp/oneshot" "$irr_dir" >"$tmp/oneshot.log" 2>&1
cp -r "$irr_dir" "$tmp/drop/irregular"
if wait_for 60 sends_done 10; then
    result OK "d) the series put in the drop folder is segmented and delivered"
else
    result FAIL "d) the series put in the drop folder is segmented and delivered"
fi
daemon_seg=$(seg_in_folder "$irr")
"$python" -c '
import pydicom, sys
a, b = pydicom.dcmread(sys.argv[1]), pydicom.dcmread(sys.argv[2])
sys.exit(not (a.PixelData == b.PixelData and a.SOPInstanceUID == b.SOPInstanceUID and
              a.NumberOfFrames == b.NumberOfFrames))' "${daemon_seg:-/nonexistent}" \
    "$tmp/oneshot/$irr.seg.dcm" 2>/dev/null &&
    result OK "d) its SEG has the pixel data, frames and UIDs of mmsegd segment's" ||
    result FAIL "d) its SEG has the pixel data, frames and UIDs of mmsegd segment's"
# ---------------------------------------------------------------------------- e) crash loop
# the shear series re-opened; the daemon killed during one of its jobs, then crashed during
# three in a row: the series fails after the third crash instead of running (and crashing)
# again
kill_during_job() { # RUN [SIGNAL]: wait for the job of that run, then SIGKILL the daemon, or
    # send SIGNAL to the job's thread (tgkill), as a fault in the job's own code would raise it
    wait_for 30 grep -q "job [0-9]*: series $shear, run $1\$" "$tmp/log" || return 1
    if [ -n "${2:-}" ]; then
        "$python" -c '
import ctypes, os, sys
pid, sig = int(sys.argv[1]), int(sys.argv[2])
for tid in os.listdir("/proc/%d/task" % pid):
    if open("/proc/%d/task/%s/comm" % (pid, tid)).read().strip() == "mms-job0":
        sys.exit(ctypes.CDLL(None, use_errno=True).tgkill(pid, int(tid), sig) != 0)
sys.exit(1)' "$pid" "$(kill -l "$2")" || return 1
    else
        kill -9 "$pid"
    fi
    wait "$pid" 2>/dev/null
    pid=
}
cp "$(ls "$shear_dir"/* | head -1)" "$tmp/late2.dcm"
dcmodify -nb -m "(0008,103E)=re-opened" "$tmp/late2.dcm" >/dev/null 2>&1
storescu -aec MMSEGD 127.0.0.1 "$port" "$tmp/late2.dcm" >/dev/null 2>&1
looped=0
{ kill_during_job 3 && start && kill_during_job 4 SEGV && start && kill_during_job 5 SEGV &&
    start && kill_during_job 6 SEGV && start && looped=1; } 2>/dev/null
shear_state=$(series_state "$shear")
reason=$(sqlite3 "$tmp/state/state.db" "SELECT reason FROM series WHERE series_uid = '$shear'")
jobs=$(sqlite3 "$tmp/state/state.db" "SELECT group_concat(state, ',') FROM (SELECT state FROM jobs WHERE series_uid = '$shear' AND run >= 3 ORDER BY id)")
[ $looped = 1 ] && [ "$shear_state" = "failed 6" ] &&
    [ "$jobs" = "interrupted,crashed,crashed,crashed" ] &&
    case $reason in *"crashed in 3 jobs of this series in a row (last: SIGSEGV)"*) true ;; *) false ;; esac &&
    result OK "e) killed once, then crashed in three jobs of a series in a row: the series fails ($reason)" ||
    result FAIL "e) killed once, then crashed in three jobs in a row: the series fails ('$shear_state', '$jobs', '$reason')"
grep -q "fatal signal SIGSEGV (11) sent by pid [0-9]*, while job [0-9]* (series $shear, run 6)" "$tmp/log" &&
    result OK "e) the crash report names the signal and the job's stage" ||
    result FAIL "e) the crash report names the signal and the job's stage"
sleep 3
! grep -q "series $shear, run 7" "$tmp/log" && kill -0 "$pid" 2>/dev/null &&
    result OK "e) it is not run again, and the daemon keeps serving" ||
    result FAIL "e) it is not run again, and the daemon keeps serving"

# ---------------------------------------------------------------------------- f) SIGHUP
# a model file that does not load is refused; another valid model takes over
tiny=$(cd "$src" && pwd)/tests/fixtures/mmunet/tiny-shared.safetensors
sed -i "s|^model = .*|model = $tmp/broken.safetensors|" "$tmp/mmsegd.ini"
echo "not a model" >"$tmp/broken.safetensors"
kill -HUP "$pid"
wait_for 10 grep -q "reload: model $tmp/broken.safetensors: .*keeping the running model" "$tmp/log" &&
    result OK "f) SIGHUP with a model file that does not load: the running model stays" ||
    result FAIL "f) SIGHUP with a model file that does not load: the running model stays"
sed -i "s|^model = .*|model = $tiny|" "$tmp/mmsegd.ini"
kill -HUP "$pid"
tiny_sha=$(sha256sum <"$tiny" | cut -c1-64)
if wait_for 10 grep -q "reload: now using model .* sha256 $tiny_sha" "$tmp/log" &&
    curl -sf "http://127.0.0.1:$mport/metrics" | grep -q "sha256=\"$tiny_sha\""; then
    result OK "f) SIGHUP with another model: it takes over (metrics name its SHA-256)"
else
    result FAIL "f) SIGHUP with another model: it takes over"
fi
stop
grep -q "Sanitizer" "$tmp/log" &&
    result FAIL "the daemon's log has no sanitizer report" ||
    result OK "the daemon's log has no sanitizer report"
if [ $failed = 1 ]; then
    echo "# daemon log:"
    sed 's/^/# /' "$tmp/log" | tail -40
fi
exit $failed
