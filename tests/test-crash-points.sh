#!/bin/bash
# Nothing is lost at any crash point (design.md section 3; common/crashpoint.h). Needs a build
# configured with --enable-crash-points (`mmsegd --version` says "crash points: yes"); SKIPs
# otherwise. For each point the daemon starts with MMSEGD_CRASH_POINT naming it, a phantom CT
# series (tools/mmunet/phantom_series.py, seed 1000, regular, 16 slices of 64 x 64) is sent
# with storescu, and the daemon must die there by SIGKILL within 40 s (a point never reached
# fails). It restarts without the variable; the series is sent again when not every instance
# was acknowledged, as a modality would, and must then be segmented and delivered to a DCMTK
# storescp archive within 60 s. Then:
#   - every instance storescu saw acknowledged is stored under its digest and indexed once,
#     and instances/ holds exactly the indexed files (no orphan, nothing missing);
#   - the archive holds exactly one SEG of the series, received once; after
#     send.before-record it was received twice, with the same SOP Instance UID, and the
#     archive keeps one object (design.md section 3: a re-send after a crash is an exact
#     duplicate that the archive absorbs);
#   - nothing is stuck: every series is done, no job runs, no send is pending or dead, tmp/
#     and outbox/ are empty, and the log has no sanitizer report.
# The points, in the order a series meets them (README.md, "Developers"):
#   spool.after-tmp-write  daemon/spool.c ingest(): the received file synced in tmp/
#   spool.after-rename     daemon/spool.c ingest(): in instances/, its directory synced
#   index.before-commit    daemon/index.c mms_index_put(): the row written, no COMMIT
#   scp.before-response    dicom/scp.cc answer(): stored and indexed, no response sent
#   job.after-decode       daemon/work.c mms_work_series(): the volume decoded
#   job.after-infer        daemon/work.c mms_work_series(): the labels computed
#   job.after-seg-write    daemon/jobs.c run_job(): the SEG in tmp/, not in the outbox
#   outbox.before-sends    daemon/outbox.c mms_outbox_put(): the SEG in outbox/JOB, no send
#   job.after-outbox       daemon/jobs.c run_job(): the sends recorded, the job's end not
#   send.before-record     daemon/sender.c run_task(): delivered, not recorded
#   send.after-record      daemon/sender.c run_task(): recorded done, the outbox not released
# Also: the points run here are those of mms_crash_points[] (common/crashpoint.c), and a
# variable that names no point is a usage error. The four intake points are armed at their
# fifth hit (NAME:5), so that four instances were acknowledged before the crash; the others
# at their first.
set -u
. "$(dirname "$0")/find-testdata.sh"
. "$(dirname "$0")/serve-util.sh"
mmsegd=${MMSEGD:-./mmsegd}
python=${PYTHON3:-/usr/bin/python3}
if ! "$mmsegd" --version 2>/dev/null | grep -q '^crash points: yes'; then
    echo "1..0 # SKIP built without --enable-crash-points"
    exit 0
fi
for t in storescu storescp sqlite3; do
    if ! command -v $t >/dev/null; then
        echo "1..0 # SKIP $t is not installed (Debian packages dcmtk, sqlite3)"
        exit 0
    fi
done
require_python numpy scipy pydicom
src=${srcdir:-.}
model=$(cd "$src" && pwd)/models/demo.safetensors
points=(spool.after-tmp-write:5 spool.after-rename:5 index.before-commit:5 scp.before-response:5
    job.after-decode job.after-infer job.after-seg-write outbox.before-sends job.after-outbox
    send.before-record send.after-record)
tmp=$(mktemp -d)
pid=
apid=
# the archive (storescp) of the point under test; the daemon: serve-util.sh
stop_archive() {
    [ -n "$apid" ] && { kill -TERM "$apid"; wait "$apid"; } 2>/dev/null
    apid=
}
trap 'stop_archive; serve_cleanup' EXIT
echo "1..$((3 + 5 * ${#points[@]}))"
t0=$SECONDS

# every point of common/crashpoint.c is run here, and a name that is no point is refused
listed=$(sed -n '/^const char \*const mms_crash_points\[\] = {/,/^};/p' "$src/common/crashpoint.c" |
    sed -n 's/^ *"\([^"]*\)",.*/\1/p' | tr '\n' ' ')
tested=$(for p in "${points[@]}"; do printf '%s ' "${p%%:*}"; done)
[ "$listed" = "$tested" ] && result OK "the test runs every point of common/crashpoint.c, in order" ||
    result FAIL "the test runs every point of common/crashpoint.c ('$listed' vs '$tested')"
out=$(MMSEGD_CRASH_POINT=spool.no-such-point "$mmsegd" status -c /dev/null 2>&1)
rc=$?
[ $rc -eq 2 ] && [[ $out == *"'spool.no-such-point' names no crash point"* ]] &&
    result OK "MMSEGD_CRASH_POINT naming no point is a usage error (exit 2)" ||
    result FAIL "MMSEGD_CRASH_POINT naming no point is a usage error (exit $rc: $out)"

"$python" "$src/tools/mmunet/phantom_series.py" write --seed 1000 --out "$tmp/ph" \
    --variants regular --shape 16 64 64 --spacing 7.5 4 4 >"$tmp/ph.log" 2>&1 ||
    { result FAIL "phantom_series.py writes the series"; sed 's/^/# /' "$tmp/ph.log"; exit 1; }
series=$("$python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["variants"]["regular"]["series_uid"])' "$tmp/ph/series.json")
dir=$tmp/ph/regular/dicom
nfiles=$(ls "$dir" | wc -l)
result OK "the phantom series: $nfiles slices, series $series"

# complete: the series is done, no job runs and no send waits (mmsegd status --json)
complete() {
    "$mmsegd" status -c "$tmp/mmsegd.ini" --json | "$python" -c '
import json, sys
s = json.load(sys.stdin)
states = [x["state"] for x in s["series"] if x["series_uid"] == sys.argv[1]]
c, j = s["send_counts"], s["job_counts"]
sys.exit(not (states == ["done"] and c["pending"] == 0 and c["done"] >= 1 and
              j.get("running", 0) == 0))' "$series"
}
# not_stuck: what is left when nothing should be: the reasons, one per line; none: all clear
not_stuck() {
    "$mmsegd" status -c "$tmp/mmsegd.ini" --json | "$python" -c '
import json, os, sys
s, state = json.load(sys.stdin), sys.argv[1]
for x in s["series"]:
    if x["state"] != "done":
        print("series %s is %s" % (x["series_uid"], x["state"]))
for k, v in s["job_counts"].items():
    if k == "running" and v:
        print("%d job(s) running" % v)
for k in ("pending", "dead"):
    if s["send_counts"].get(k, 0):
        print("%d send(s) %s" % (s["send_counts"][k], k))
for d in ("tmp", "outbox"):
    p = os.path.join(state, d)
    left = sorted(os.listdir(p)) if os.path.isdir(p) else []
    if left:
        print("%s/ holds %s" % (d, " ".join(left)))' "$tmp/state"
}
# stored_once: instances/ holds exactly the indexed files, one row per file; prints the count
stored_once() {
    "$python" -c '
import os, sqlite3, sys
state, series, want = sys.argv[1], sys.argv[2], int(sys.argv[3])
db = sqlite3.connect("file:%s?mode=ro" % os.path.join(state, "state.db"), uri=True)
rows = [r[0] for r in db.execute("select path from instances")]
n = db.execute("select count(*) from instances where series_uid = ?", (series,)).fetchone()[0]
files = set()
for root, _, names in os.walk(os.path.join(state, "instances")):
    files |= {os.path.relpath(os.path.join(root, f), state) for f in names}
bad = []
if n != want:
    bad.append("the index holds %d instances of the series, not %d" % (n, want))
if len(rows) != len(set(rows)):
    bad.append("a file is indexed twice")
if files != set(rows):
    bad.append("on disk, not indexed: %s; indexed, not on disk: %s" %
               (sorted(files - set(rows))[:3], sorted(set(rows) - files)[:3]))
print("%d indexed, %d files" % (len(rows), len(files)))
if bad:
    sys.stderr.write("\n".join(bad) + "\n")
    sys.exit(1)' "$tmp/state" "$series" "$nfiles"
}
# archive_segs: the SEGs in the archive folder: "FILES UIDS REFERRING" (all files, distinct SOP
# Instance UIDs, those referring to the series)
archive_segs() {
    "$python" -c '
import os, sys, pydicom
d, series = sys.argv[1], sys.argv[2]
names = sorted(os.listdir(d))
uids, refer = set(), 0
for n in names:
    ds = pydicom.dcmread(os.path.join(d, n), stop_before_pixels=True)
    uids.add(str(ds.SOPInstanceUID))
    refer += ds.Modality == "SEG" and any(
        r.SeriesInstanceUID == series for r in ds.get("ReferencedSeriesSequence", []))
print(len(names), len(uids), refer)' "$tmp/archive" "$series"
}

for p in "${points[@]}"; do
    name=${p%%:*}
    tp=$SECONDS
    # a fresh state, archive and log for each point
    rm -rf "$tmp/state" "$tmp/archive" "$tmp"/scu-*.log "$tmp/log" "$tmp/archive.log"
    mkdir -p "$tmp/archive"
    port=$(free_port)
    aport=$(free_port)
    storescp -v -aet ARCHIVE -od "$tmp/archive" "$aport" >"$tmp/archive.log" 2>&1 &
    apid=$!
    serve_config "$tmp/mmsegd.ini" "$tmp/state" "$port" "workers = 1" <<INI
[series]
stable_age_s = 1
[infer]
model = $model
tta = no
[destination archive]
ae_title = ARCHIVE
host = 127.0.0.1
port = $aport
retry_initial_s = 1
INI
    # 1: the daemon dies at the point
    died=0
    td=$SECONDS
    if MMSEGD_CRASH_POINT=$p start; then
        # (stderr: bash's "Killed" notice of the daemon, wherever the shell reaps it)
        {
            storescu -v -nh -aec MMSEGD 127.0.0.1 "$port" +sd "$dir" >"$tmp/scu-1.log" 2>&1
            if wait_for 40 grep -q "crash point $name, hit [0-9]*: SIGKILL" "$tmp/log"; then
                wait "$pid"
                rc=$?
                [ $rc -eq 137 ] && died=1
            else
                rc="still running after 40 s"
                kill -9 "$pid"
                wait "$pid"
            fi
        } 2>/dev/null
    else
        rc="did not start"
        { kill -9 "$pid"; wait "$pid"; } 2>/dev/null
    fi
    pid=
    acked=$(grep -c 'Received Store Response (Success)' "$tmp/scu-1.log")
    [ $died = 1 ] &&
        result OK "$p: the daemon dies there by SIGKILL ($acked of $nfiles acknowledged)" ||
        result FAIL "$p: the daemon dies there by SIGKILL (exit: $rc)"

    td=$((SECONDS - td))
    # 2: restarted, the series is completed and delivered
    resent=
    tr=$SECONDS
    if start; then
        if [ "$acked" -lt "$nfiles" ]; then
            storescu -v -nh -aec MMSEGD 127.0.0.1 "$port" +sd "$dir" >"$tmp/scu-2.log" 2>&1
            resent="; the series sent again"
        fi
        if wait_for 60 complete; then
            result OK "$p: after the restart the series is done and delivered$resent"
        else
            result FAIL "$p: after the restart the series is done and delivered$resent"
            "$mmsegd" status -c "$tmp/mmsegd.ini" 2>&1 | sed 's/^/# /'
        fi
    else
        result FAIL "$p: the daemon restarts"
    fi

    tr=$((SECONDS - tr))
    # the checks on a state at rest; the log then also holds what a sanitizer says at exit
    [ -n "$pid" ] && stop
    stop_archive

    # 3: every acknowledged instance stored and indexed once; no orphan
    if a=$("$python" "$src/tests/intake_check.py" acked "$tmp/state" "$tmp"/scu-*.log 2>&1) &&
        o=$(stored_once 2>&1); then
        result OK "$p: every acknowledged instance is stored and indexed once (${a%% *} acknowledged; $o)"
    else
        result FAIL "$p: every acknowledged instance is stored and indexed once"
        printf '%s\n%s\n' "$a" "${o:-}" | sed 's/^/# /' | head -10
    fi

    # 4: one SEG of the series in the archive
    stores=$(grep -c 'Received Store Request' "$tmp/archive.log")
    segs=$(archive_segs 2>&1)
    # send.before-record: delivered, then sent again after the restart (design.md 3: the same
    # SOP Instance UID). job.after-outbox: the sends are recorded a moment before the point,
    # so the sender may have delivered one already; after the restart it is not sent again
    # unless it had not been recorded done, and then the re-send is the same object.
    case $name in
    send.before-record) want=2 ;;
    job.after-outbox) want="1 2" ;;
    *) want=1 ;;
    esac
    if [ "$segs" = "1 1 1" ] && [[ " $want " == *" $stores "* ]]; then
        result OK "$p: the archive holds one SEG of the series ($stores C-STORE$([ "$stores" = 1 ] || echo "s of the same SOP Instance UID"))"
    else
        result FAIL "$p: the archive holds one SEG of the series (files, UIDs, SEGs of the series: '$segs'; C-STOREs: $stores, want $want)"
    fi

    # 5: nothing stuck (and no sanitizer report in an --enable-asan build)
    left=$(not_stuck 2>&1; grep -A20 "Sanitizer" "$tmp/log" | head -30)
    [ -z "$left" ] && result OK "$p: nothing is stuck (no job running, no send pending, tmp/ and outbox/ empty)" ||
        { result FAIL "$p: nothing is stuck"; printf '%s\n' "$left" | sed 's/^/# /'; }
    echo "# $p: $((SECONDS - tp)) s (to the crash $td s, restart to delivery $tr s)"
    if [ $failed = 1 ] && [ -z "${shown:-}" ]; then
        shown=1
        echo "# daemon log of $p:"
        sed 's/^/# /' "$tmp/log" | tail -40
    fi
done
echo "# ${#points[@]} crash points in $((SECONDS - t0)) s"
exit $failed
