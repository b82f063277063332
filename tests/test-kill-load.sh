#!/bin/bash
# Nothing is lost under random SIGKILL while everything runs at once (design.md section 3).
# Phantom CT series (tools/mmunet/phantom_series.py, 16 slices of 64 x 64): eight are sent in
# every round, and FRESH (default 1) new ones per round, so that every round brings new work.
# The archive is a DCMTK storescp that takes 1 s to answer each C-STORE. Each round starts the
# daemon, eight storescu associations each send a series (the first FRESH a new one), and
# after a random 0.2 to 3 s (every fifth round after 3 s and the end of a job, so that work gets
# done between kills however slow the build) the daemon is killed with SIGKILL. What was in flight at the kill is sampled just
# before it (storescu still sending; jobs running and sends pending per `mmsegd status`) and
# printed. After KILLS rounds (30; `make soak`: 500) the daemon starts once more, every series
# is sent once more, as a modality would after its failures, and everything must settle
# within 300 s:
#   lost instances  every instance any storescu saw acknowledged is stored and indexed;
#   lost series     every series is done;
#   duplicate SEGs  the archive holds exactly one SEG (one SOP Instance UID) per series that
#                   refers to all its instances; a SEG of an earlier, partial version of a
#                   series (judged complete after stable_age_s without its missing slices)
#                   is counted and printed, as it is what the design promises for such a
#                   series;
#   stuck work      no job running, no send pending or dead, tmp/ and outbox/ empty,
#                   instances/ holds exactly the indexed files.
set -u
. "$(dirname "$0")/find-testdata.sh"
. "$(dirname "$0")/serve-util.sh"
mmsegd=${MMSEGD:-./mmsegd}
python=${PYTHON3:-/usr/bin/python3}
kills=${KILLS:-30}
fresh=${FRESH:-1}
for t in storescu storescp echoscu; do
    if ! command -v $t >/dev/null; then
        echo "1..0 # SKIP $t is not installed (Debian package dcmtk)"
        exit 0
    fi
done
require_python numpy scipy pydicom
src=${srcdir:-.}
model=$(cd "$src" && pwd)/models/demo.safetensors
check=$src/tests/state_check.py
tmp=$(mktemp -d)
pid=
apid=
trap '[ -n "$apid" ] && kill -9 "$apid" 2>/dev/null; serve_cleanup' EXIT
echo "1..7"

# ---------------------------------------------------------------------------- the series
# eight to send again and again, and FRESH new ones for each round
total=$((8 + kills * fresh))
phantom_pool $total 1000 ||
    { result FAIL "phantom_series.py writes $total series"; sed 's/^/# /' "$tmp/ph.log"; exit 1; }
result OK "$total phantom series of 16 slices (8 sent in every round, $fresh new per round)"

port=$(free_port)
aport=$(free_port)
mkdir -p "$tmp/archive"
storescp -v --sleep-after 1 -aet ARCHIVE -od "$tmp/archive" "$aport" >"$tmp/archive.log" 2>&1 &
apid=$!
serve_config "$tmp/mmsegd.ini" "$tmp/state" "$port" "workers = 1" "$(asan_isolation)" <<INI
max_associations_per_host = 0
[series]
stable_age_s = 2
[infer]
model = $model
tta = no
[destination archive]
ae_title = ARCHIVE
host = 127.0.0.1
port = $aport
retry_initial_s = 1
retry_max_s = 2
INI
up() { # start the daemon; wait until it answers C-ECHO
    "$mmsegd" serve -c "$tmp/mmsegd.ini" >>"$tmp/log" 2>&1 &
    pid=$!
    wait_for 20 echoscu -to 2 -aec MMSEGD 127.0.0.1 "$port"
}
status_json() { "$mmsegd" status -c "$tmp/mmsegd.ini" --json 2>/dev/null; }
jobs_done() { status_json | "$python" -c 'import json, sys; print(json.load(sys.stdin)["job_counts"].get("done", 0))' 2>/dev/null || echo 0; }
# job_finished N: more than N jobs done, or none running and none queued
job_finished() {
    status_json | "$python" -c '
import json, sys
s = json.load(sys.stdin)
queued = sum(1 for x in s["series"] if x["state"] in ("queued", "running"))
sys.exit(not (s["job_counts"].get("done", 0) > int(sys.argv[1]) or
              (s["job_counts"].get("running", 0) == 0 and queued == 0)))' "$1"
}

# ---------------------------------------------------------------------------- the kills
t0=$SECONDS
hit_rx=0 hit_job=0 hit_send=0 hit_idle=0 started=0
for ((k = 0; k < kills; k++)); do
    if ! up; then
        result FAIL "round $k: the daemon starts"
        sed 's/^/# /' "$tmp/log" | tail -20
        exit 1
    fi
    started=$((started + 1))
    scus=()
    for a in 0 1 2 3 4 5 6 7; do
        if ((a < fresh)); then d=${dirs[$((8 + k * fresh + a))]}; else d=${dirs[$(((a + k) % 8))]}; fi
        storescu -v -nh -to 5 -aec MMSEGD 127.0.0.1 "$port" +sd "$d" >"$tmp/scu-$k-$a.log" 2>&1 &
        scus+=($!)
    done
    if ((k % 5 == 4)); then
        # a job finishes before this kill, however slow the build (a sanitizer, a loaded
        # machine): the crash guard fails a series after ten ended jobs in a row, and the
        # kills must not be what stops all work
        sleep 3
        done0=$(jobs_done)
        wait_for 60 job_finished "$done0"
    else
        sleep "$((RANDOM % 29 / 10 + 0)).$((RANDOM % 10))"
    fi
    # what is in flight now
    rx=0
    for s in "${scus[@]}"; do kill -0 "$s" 2>/dev/null && rx=1; done
    inflight=$(status_json | "$python" -c '
import json, sys
s = json.load(sys.stdin)
print(s["job_counts"].get("running", 0), s["send_counts"].get("pending", 0))' 2>/dev/null || echo "0 0")
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    pid=
    wait "${scus[@]}" 2>/dev/null
    read -r jobs sends <<<"$inflight"
    [ "$rx" = 1 ] && hit_rx=$((hit_rx + 1))
    [ "${jobs:-0}" -gt 0 ] && hit_job=$((hit_job + 1))
    [ "${sends:-0}" -gt 0 ] && hit_send=$((hit_send + 1))
    [ "$rx" = 0 ] && [ "${jobs:-0}" = 0 ] && [ "${sends:-0}" = 0 ] && hit_idle=$((hit_idle + 1))
done
t_kill=$((SECONDS - t0))
result OK "$kills kills in $t_kill s; in flight at the kill: C-STOREs $hit_rx, jobs $hit_job, sends $hit_send, nothing $hit_idle"

# ---------------------------------------------------------------------------- settle
if ! up; then
    result FAIL "the daemon starts after the last kill"
    exit 1
fi
for ((i = 0; i < total; i += 8)); do
    scus=()
    for ((a = i; a < i + 8 && a < total; a++)); do
        storescu -v -nh -to 5 -aec MMSEGD 127.0.0.1 "$port" +sd "${dirs[$a]}" >"$tmp/scu-final-$a.log" 2>&1 &
        scus+=($!)
    done
    wait "${scus[@]}"
done
settled() { status_json | "$python" "$check" settled "$tmp/state" - >/dev/null 2>&1; }
t0=$SECONDS
if wait_for 300 settled; then
    result OK "after the last start and one more sending of every series, all settles in $((SECONDS - t0)) s"
else
    result FAIL "all settles within 300 s"
    grep -E "job|series|err|crash" "$tmp/log" | tail -40 | sed 's/^/# /' 
fi
stop
kill -TERM "$apid" 2>/dev/null
wait "$apid" 2>/dev/null
apid=

acked=$(cat "$tmp"/scu-*.log | grep -c 'Received Store Response (Success)')
if out=$("$python" "$src/tests/intake_check.py" acked "$tmp/state" "$tmp"/scu-*.log 2>&1); then
    result OK "lost instances: 0 (every one of $acked acknowledgements is stored and indexed)"
else
    result FAIL "lost instances: acknowledged instances missing"
    echo "$out" | sed 's/^/# /' | head -10
fi
if out=$(status_json | "$python" "$check" settled "$tmp/state" - 2>&1); then
    result OK "lost series and stuck work: 0 ($out)"
else
    result FAIL "lost series and stuck work"
    echo "$out" | sed 's/^/# /' | head -10
fi
if out=$("$python" "$check" segs "$tmp/archive" "${wants[@]}" 2>&1); then
    result OK "duplicate SEGs: 0 ($out; $(grep -c 'Received Store Request' "$tmp/archive.log") C-STOREs received)"
else
    result FAIL "duplicate SEGs"
    echo "$out" | sed 's/^/# /' | head -10
fi
grep -q "AddressSanitizer\|runtime error" "$tmp/log" &&
    result FAIL "the daemon's log has no sanitizer report" ||
    result OK "the daemon's log has no sanitizer report"
exit $failed
