#!/bin/bash
# Faults of the state directory, end to end with the real daemon, storescu and two CT series
# of the shared test data (dcm_qa_ct: Philips S21570 and GE, 28 images of 512 x 512 each).
#  a) Disk full (design.md section 3): state_dir is a tmpfs of 40 MiB, filled by a filler file
#     while the daemon runs ([scp] min_free_mb = 0, so that the writes themselves meet ENOSPC).
#     - 256 KiB left, no image fits: each is answered 0xA700 ("writing the file failed"), the
#       daemon answers C-ECHO, and neither tmp/ nor instances/ keeps a file.
#     - The pages of one image left: its file fits, the index's commit does not ("not stored
#       (0xA700 ... index: ..."); each image is answered 0xA700, its file is removed again
#       and instances/ holds exactly the indexed files.
#     - The filler removed, the series sent again is acknowledged image by image, becomes a
#       job and its SEG is delivered.
#     - 256 KiB left between the second series' last instance and its SEG: the job ends
#       without a SEG (the log names ENOSPC), nothing partial stays in tmp/ or outbox/, and
#       the daemon answers C-ECHO.
#     At rest: PRAGMA integrity_check says ok, tmp/ is empty, every instance any storescu saw
#     acknowledged is stored under its digest with its data set and indexed once, instances/
#     holds exactly the indexed files; restarted, the daemon finds nothing unfinished in tmp/
#     and the first series stays done. Part a needs root for the tmpfs and SKIPs, with the
#     reason, where it cannot be mounted.
#  b) A damaged spool file: both series are acknowledged; before their quiet time
#     (stable_age_s = 8) ends, one stored file of the first is cut to half its size. Its job
#     fails at decoding with a reason that names the file, in the log and in
#     `mmsegd status --json`, and no SEG of it appears; the other series is done and its SEG
#     delivered; the daemon keeps serving. The first series sent again: every instance is
#     acknowledged, the damaged file is replaced by the instance received, and the series runs
#     again and is delivered.
set -u
. "$(dirname "$0")/find-testdata.sh"
require_testdata
. "$(dirname "$0")/serve-util.sh"
for t in storescu echoscu dcmdump sqlite3; do
    if ! command -v $t >/dev/null; then
        echo "1..0 # SKIP $t is not installed (Debian packages dcmtk, sqlite3)"
        exit 0
    fi
done
mmsegd=${MMSEGD:-./mmsegd}
python=${PYTHON3:-/usr/bin/python3}
src=${srcdir:-.}
model=$(cd "$src" && pwd)/models/demo.safetensors
qa=$td/dcm_qa_ct/In
tmp=$(mktemp -d)
pid=
state=$tmp/state
mounted=
cleanup() {
    if [ -n "$pid" ]; then
        { kill -9 "$pid"; wait "$pid"; } 2>/dev/null
        pid=
    fi
    # the daemon's sandbox children may still hold a file there for a moment
    [ -n "$mounted" ] && { umount "$mounted" 2>/dev/null || umount -l "$mounted"; }
    serve_cleanup
}
trap cleanup EXIT
echo "1..21"

uid_of() { dcmdump +P 0020,000e "$1" | sed 's/.*\[\(.*\)\].*/\1/'; }
images_a=("$qa"/Philips/S21570/S2010/I*) # without its DICOMDIR
images_b=("$qa"/GE/*.dcm)
series_a=$(uid_of "${images_a[0]}")
series_b=$(uid_of "${images_b[0]}")
# responses LOG: "SUCCESS OUT_OF_RESOURCES OTHER" answers that storescu -v logged
responses() {
    local ok oor all
    ok=$(grep -c 'Received Store Response (Success)' "$1")
    oor=$(grep -c 'Received Store Response (Refused: OutOfResources)' "$1")
    all=$(grep -c 'Received Store Response' "$1")
    echo "$ok $oor $((all - ok - oor))"
}
# fill_leaving PAGES: the filler grows until the file system is full, then gives back PAGES
# pages of 4 KiB (the filler grows by whole pages, so exactly that much is free)
fill_leaving() {
    dd if=/dev/zero of="$state/filler" bs=4k oflag=append conv=notrunc 2>/dev/null
    truncate -s "-$(($1 * 4096))" "$state/filler"
}
free_bytes() { df --output=avail -B1 "$state" | tail -1 | tr -d ' '; }
# files DIR: the plain files under DIR, one per line (none: nothing)
files() { find "$1" -type f 2>/dev/null; }
# in_index_only STATE: "ROWS FILES" when instances/ holds exactly the indexed files, each
# indexed once; the difference on standard error and exit 1 otherwise
in_index_only() {
    "$python" -c '
import os, sqlite3, sys
state = sys.argv[1]
db = sqlite3.connect("file:%s?mode=ro" % os.path.join(state, "state.db"), uri=True)
rows = [r[0] for r in db.execute("select path from instances")]
found = set()
for root, _, names in os.walk(os.path.join(state, "instances")):
    found |= {os.path.relpath(os.path.join(root, f), state) for f in names}
print(len(rows), len(found))
if len(rows) != len(set(rows)) or found != set(rows):
    sys.stderr.write("on disk, not indexed: %s; indexed, not on disk: %s; %d rows, %d distinct\n"
                     % (sorted(found - set(rows))[:3], sorted(set(rows) - found)[:3],
                        len(rows), len(set(rows))))
    sys.exit(1)' "$1"
}
# status_of SERIES: "SERIES_STATE JOB_STATE JOB_STAGE" of the series and its last job
status_of() {
    "$mmsegd" status -c "$tmp/mmsegd.ini" --json | "$python" -c '
import json, sys
s, uid = json.load(sys.stdin), sys.argv[1]
series = [x["state"] for x in s["series"] if x["series_uid"] == uid] or ["none"]
jobs = [j for j in s["jobs"] if j["series_uid"] == uid]
j = max(jobs, key=lambda j: j["job"]) if jobs else {"state": "none", "stage": ""}
print(series[0], j["state"], j["stage"] or "-")' "$1"
}
job_reason() {
    "$mmsegd" status -c "$tmp/mmsegd.ini" --json | "$python" -c '
import json, sys
jobs = [j for j in json.load(sys.stdin)["jobs"] if j["series_uid"] == sys.argv[1]]
print(max(jobs, key=lambda j: j["job"])["reason"] if jobs else "")' "$1"
}
is_status() { [ "$(status_of "$1")" = "$2" ]; }
seg_of() { grep -l "$1" "$2"/*.dcm 2>/dev/null | head -1; }
delivered() { # SERIES DIR: its last job done and its SEG in the folder
    [ "$(status_of "$1")" = "done done output" ] && [ -n "$(seg_of "$1" "$2")" ]
}

# ---------------------------------------------------------------------------- a) disk full
mkdir -p "$state" "$tmp/out-a"
why=
if [ "$(id -u)" -ne 0 ]; then
    why="a tmpfs for state_dir needs root (uid $(id -u))"
elif ! mount -t tmpfs -o size=40m tmpfs "$state" 2>"$tmp/mount.err"; then
    why="mount -t tmpfs failed: $(head -1 "$tmp/mount.err")"
fi
if [ -n "$why" ]; then
    for _ in $(seq 13); do
        n=$((n + 1))
        echo "ok $n - a) disk full # SKIP $why"
    done
    skip_a=1
else
    mounted=$state
    skip_a=
fi
if [ -z "$skip_a" ]; then
    port=$(free_port)
    min_free_mb=0 serve_config "$tmp/mmsegd.ini" "$state" "$port" "workers = 1" <<INI
[series]
stable_age_s = 2
[infer]
model = $model
tta = no
[destination out]
type = folder
path = $tmp/out-a
INI
    start && result OK "a) the daemon starts, state_dir on a 40 MiB tmpfs ($(du -sk "$state" | cut -f1) KiB)" ||
        { result FAIL "a) the daemon starts"; sed 's/^/# /' "$tmp/log"; exit 1; }

    # 1: no image fits
    fill_leaving 64
    left=$(free_bytes)
    storescu -v -nh -aec MMSEGD 127.0.0.1 "$port" "${images_a[@]}" >"$tmp/scu-full.log" 2>&1
    r=$(responses "$tmp/scu-full.log")
    nwr=$(grep -c 'answered 0xA700: writing the file failed' "$tmp/log")
    what="a) $left bytes free: each of the ${#images_a[@]} images is answered 0xA700"
    [ "$r" = "0 ${#images_a[@]} 0" ] && [ "$nwr" = ${#images_a[@]} ] &&
        result OK "$what (writing the file failed)" ||
        result FAIL "$what (success, 0xA700, other: $r; 'writing the file failed' $nwr times)"
    echoscu -aec MMSEGD 127.0.0.1 "$port" >/dev/null 2>&1 && kill -0 "$pid" &&
        result OK "a) the daemon keeps serving: C-ECHO answered" ||
        result FAIL "a) the daemon keeps serving: C-ECHO answered"
    left=$(files "$state/tmp"; files "$state/instances")
    [ -z "$left" ] && result OK "a) no file is left in tmp/ or instances/" ||
        { result FAIL "a) no file is left in tmp/ or instances/"; echo "$left" | sed 's/^/# /'; }

    # 2: the file fits, the index's commit does not: as many pages as the largest image takes
    # (its received file is a few bytes longer than the sent one, still within them)
    big=$(stat -c %s "${images_a[@]}" | sort -n | tail -1)
    fill_leaving $(((big + 4095) / 4096))
    left=$(free_bytes)
    storescu -v -nh -aec MMSEGD 127.0.0.1 "$port" "${images_a[@]}" >"$tmp/scu-index.log" 2>&1
    r=$(responses "$tmp/scu-index.log")
    nidx=$(grep -c 'not stored (0xA700, out of resources): index: ' "$tmp/log")
    what="a) $left bytes free: the index's commit fails, each image is answered 0xA700"
    [ "$r" = "0 ${#images_a[@]} 0" ] && [ "$nidx" -ge 1 ] &&
        result OK "$what ($nidx commits failed)" ||
        result FAIL "$what (success, 0xA700, other: $r; $nidx commits failed)"
    echoscu -aec MMSEGD 127.0.0.1 "$port" >/dev/null 2>&1 && kill -0 "$pid" &&
        result OK "a) the daemon keeps serving: C-ECHO answered" ||
        result FAIL "a) the daemon keeps serving: C-ECHO answered"
    if c=$(in_index_only "$state" 2>"$tmp/why") && [ -z "$(files "$state/tmp")" ]; then
        result OK "a) after the failed commits instances/ holds exactly the indexed files ($c) and tmp/ none"
    else
        result FAIL "a) after the failed commits instances/ holds exactly the indexed files and tmp/ none"
        { cat "$tmp/why"; files "$state/tmp"; } | sed 's/^/# /'
    fi

    # 3: room again
    rm -f "$state/filler"
    storescu -v -nh -aec MMSEGD 127.0.0.1 "$port" "${images_a[@]}" >"$tmp/scu-room.log" 2>&1
    r=$(responses "$tmp/scu-room.log")
    what="a) the filler removed, the series sent again: each image acknowledged"
    [ "$r" = "${#images_a[@]} 0 0" ] && result OK "$what" ||
        result FAIL "$what (success, 0xA700, other: $r)"
    wait_for 60 delivered "$series_a" "$tmp/out-a" &&
        result OK "a) the series is done and its SEG delivered" ||
        result FAIL "a) the series is done and its SEG delivered ($(status_of "$series_a"))"

    # 4: the disk fills between a second series' last instance and its SEG
    mark=$(wc -l <"$tmp/log")
    storescu -v -nh -aec MMSEGD 127.0.0.1 "$port" "${images_b[@]}" >"$tmp/scu-b.log" 2>&1
    fill_leaving 64
    r=$(responses "$tmp/scu-b.log")
    wait_for 30 grep -q "job [0-9]* failed at output: .*no space left on device" "$tmp/log"
    got=$(tail -n +"$mark" "$tmp/log" | grep -o "job [0-9]* failed at output: .*" | head -1)
    left=$(files "$state/tmp"; files "$state/outbox")
    what="a) full while the second series' SEG is written: its job ends without a SEG, nothing"
    what+=" partial in tmp/ or outbox/, C-ECHO answered"
    if [ "$r" = "${#images_b[@]} 0 0" ] && [ -n "$got" ] && [ -z "$left" ] &&
        [ -z "$(seg_of "$series_b" "$tmp/out-a")" ] &&
        echoscu -aec MMSEGD 127.0.0.1 "$port" >/dev/null 2>&1; then
        result OK "$what (${got%%: *}: ...${got##*: })"
    else
        result FAIL "$what (success, 0xA700, other: $r; '$got')"
        echo "$left" | sed 's/^/# /'
    fi
    rm -f "$state/filler"
    stop
    ic=$(sqlite3 "$state/state.db" 'PRAGMA integrity_check' 2>&1)
    [ "$ic" = ok ] && result OK "a) PRAGMA integrity_check: ok" ||
        result FAIL "a) PRAGMA integrity_check: $ic"
    rows() { sqlite3 "$state/state.db" "select count(*) from instances where series_uid = '$1'"; }
    if out=$("$python" "$src/tests/intake_check.py" acked "$state" "$tmp"/scu-*.log 2>&1) &&
        c=$(in_index_only "$state" 2>&1) && [ -z "$(files "$state/tmp")" ] &&
        [ "$(rows "$series_a") $(rows "$series_b")" = "${#images_a[@]} ${#images_b[@]}" ]; then
        result OK "a) at rest: $out, stored once; instances/ holds the indexed files ($c); tmp/ is empty"
    else
        result FAIL "a) at rest: every acknowledged instance stored once, nothing else"
        echo "$out $c" | sed 's/^/# /'
    fi
    mark=$(wc -l <"$tmp/log")
    what="a) restarted: nothing unfinished in tmp/ to remove, the first series stays done"
    if start && wait_for 10 is_status "$series_a" "done done output" &&
        ! tail -n +"$mark" "$tmp/log" | grep -q 'unfinished file'; then
        result OK "$what"
    else
        result FAIL "$what ($(status_of "$series_a"))"
        tail -n +"$mark" "$tmp/log" | sed 's/^/# /'
    fi
    stop
    umount "$state" && mounted=
fi
mv "$tmp/log" "$tmp/log-a" 2>/dev/null

# ---------------------------------------------------------------------------- b) damaged file
state=$tmp/state-b
mkdir -p "$tmp/out-b"
port=$(free_port)
serve_config "$tmp/mmsegd.ini" "$state" "$port" "workers = 1" <<INI
[series]
stable_age_s = 8
[infer]
model = $model
tta = no
[destination out]
type = folder
path = $tmp/out-b
INI
start || { result FAIL "b) the daemon starts"; sed 's/^/# /' "$tmp/log"; exit 1; }
storescu -v -nh -aec MMSEGD 127.0.0.1 "$port" "${images_a[@]}" >"$tmp/scu-a.log" 2>&1 &
sa=$!
storescu -v -nh -aec MMSEGD 127.0.0.1 "$port" "${images_b[@]}" >"$tmp/scu-b.log" 2>&1
wait $sa
ra=$(responses "$tmp/scu-a.log") rb=$(responses "$tmp/scu-b.log")
victim=$(sqlite3 -readonly "$state/state.db" "select path from instances
    where series_uid = '$series_a' order by instance_number limit 1 offset 10")
size=$(stat -c %s "$state/$victim" 2>/dev/null || echo 0)
truncate -s $((size / 2)) "$state/$victim"
before=$(status_of "$series_a")
[ "$ra $rb" = "${#images_a[@]} 0 0 ${#images_b[@]} 0 0" ] && [ "$size" -gt 0 ] &&
    [ "$before" = "receiving none -" ] &&
    result OK "b) both series acknowledged; $victim of the first cut to $((size / 2)) bytes" ||
    result FAIL "b) both series acknowledged, a file of the first cut before its job (success," \
        "0xA700, other: $ra; $rb; '$victim' $size bytes; $before)"
wait_for 60 delivered "$series_b" "$tmp/out-b" &&
    result OK "b) the other series is done and its SEG delivered" ||
    result FAIL "b) the other series is done and its SEG delivered ($(status_of "$series_b"))"
wait_for 30 is_status "$series_a" "failed failed decode"
got=$(status_of "$series_a")
reason=$(job_reason "$series_a")
name=$(basename "$victim")
if [ "$got" = "failed failed decode" ] && [[ $reason == *"$name"* ]] &&
    grep -q "job [0-9]* failed at decode: .*$name" "$tmp/log"; then
    result OK "b) the damaged series' job fails at decode, the reason names the file: ${reason##*: }"
else
    result FAIL "b) the damaged series' job fails at decode, the reason names the file ($got: $reason)"
fi
[ -z "$(seg_of "$series_a" "$tmp/out-b")" ] && result OK "b) no SEG of the damaged series" ||
    result FAIL "b) no SEG of the damaged series"
echoscu -aec MMSEGD 127.0.0.1 "$port" >/dev/null 2>&1 && kill -0 "$pid" &&
    result OK "b) the daemon keeps serving: C-ECHO answered" ||
    result FAIL "b) the daemon keeps serving: C-ECHO answered"
# the series sent again: the damaged file is replaced by the instance received, and the
# series runs again
storescu -v -nh -aec MMSEGD 127.0.0.1 "$port" "${images_a[@]}" >"$tmp/scu-a2.log" 2>&1
ra=$(responses "$tmp/scu-a2.log")
grep -q "the stored file $victim was damaged (.*); replaced by the instance received" "$tmp/log" &&
    [ "$ra" = "${#images_a[@]} 0 0" ] && [ "$(stat -c %s "$state/$victim")" = "$size" ] &&
    result OK "b) sent again: every instance acknowledged, the damaged file replaced ($size bytes)" ||
    result FAIL "b) sent again: every instance acknowledged, the damaged file replaced ($ra; $(stat -c %s "$state/$victim") bytes)"
wait_for 60 delivered "$series_a" "$tmp/out-b" &&
    result OK "b) the repaired series runs again: done, its SEG delivered" ||
    result FAIL "b) the repaired series runs again: done, its SEG delivered ($(status_of "$series_a"))"
stop
cat "$tmp/log-a" "$tmp/log" 2>/dev/null | grep -q "Sanitizer" &&
    result FAIL "the daemon's logs have no sanitizer report" ||
    result OK "the daemon's logs have no sanitizer report"
if [ $failed = 1 ]; then
    for l in log-a log; do
        [ -f "$tmp/$l" ] || continue
        echo "# $l:"
        grep -v 'association\|C-STORE' "$tmp/$l" | tail -30 | sed 's/^/# /' 
    done
fi
exit $failed
