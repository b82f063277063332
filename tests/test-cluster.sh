#!/bin/bash
# A cluster of three `mmsegd serve` nodes (n1, n2, n3; docs/cluster.md) on one PostgreSQL
# database (tests/pg-util.sh, a throw-away server) and one state_dir, with the demo model and a
# real Orthanc (Debian's, on loopback) as the destination; lease_s = 3.
#  a) spread: four phantom series (tools/mmunet/phantom_series.py, 16 slices of 64 x 64) sent
#     to n1, n2, n3, n1 at once, and a fifth split between two nodes (its first half to n1,
#     the rest to n2, at once): each series is one series row (the split one with all its
#     instances), run 1, with exactly one job done; every job names its node (the spread over
#     the nodes is printed); `mmsegd status --node NAME` shows NAME's jobs and sends only;
#     every send is done, and Orthanc holds exactly one SEG per series, referring to all its
#     instances; every instance that storescu saw acknowledged is stored and indexed;
#  b) kill: CLUSTER_KILL_ROUNDS rounds (default 20): a new series (24 slices, so that its job
#     is caught running) sent to n1, n2, n3 in turn; the node whose job for it runs is killed
#     (SIGKILL); another
#     node takes the job over when the lease runs out (the time from the kill to the series
#     done is printed); Orthanc holds exactly one SEG of it (the SEG's UIDs are deterministic:
#     a second delivery would be the same instance); the instances acknowledged before the
#     kill are indexed; the node is started again before the next round;
#  c) database restart: while a 40-slice series goes to n2 (one C-STORE association per
#     instance, so that the intake spans the outage), PostgreSQL is stopped for 3 s and
#     started again; C-STOREs during the outage may fail (0xA700, out of resources); the
#     series is sent once more after the restart, as a modality would; every instance
#     acknowledged is indexed, the series is done and segmented once, and the three nodes
#     still answer C-ECHO and beat their heartbeat: they reconnected by themselves;
#  and the nodes stop on SIGTERM; then no job runs, no send is pending, instances/ holds exactly
#  the indexed files, outbox/ and the nodes' tmp/ are empty, and the nodes' logs hold no
#  sanitizer report.
# Skips (1..0 # SKIP) without PostgreSQL's server binaries, Orthanc or DCMTK.
set -u
. "$(dirname "$0")/find-testdata.sh"
. "$(dirname "$0")/serve-util.sh"
. "$(dirname "$0")/pg-util.sh"
orthanc=${ORTHANC:-$(command -v Orthanc || echo /usr/sbin/Orthanc)}
for t in "$orthanc" storescu echoscu curl; do
    if ! command -v "$t" >/dev/null; then
        echo "1..0 # SKIP $t is not installed (Debian packages orthanc, dcmtk, curl)"
        exit 0
    fi
done
if ! why=$(pg_available); then
    echo "1..0 # SKIP $why"
    exit 0
fi
mmsegd=${MMSEGD:-./mmsegd}
python=${PYTHON3:-/usr/bin/python3}
require_python numpy scipy pydicom
src=${srcdir:-.}
model=$(cd "$src" && pwd)/models/demo.safetensors
check=$src/tests/cluster_check.py
rounds=${CLUSTER_KILL_ROUNDS:-20}
lease_s=3
nodes=(n1 n2 n3)
tmp=$(mktemp -d)
declare -A npid nport
# The nodes first (they hold connections to the database), then the database, then Orthanc
# and the scratch folder (serve_cleanup); pg_cleanup before serve_cleanup, as the cluster's
# folder may lie in $tmp.
cleanup() {
    local k
    for k in "${!npid[@]}"; do
        [ -n "${npid[$k]}" ] && kill -9 "${npid[$k]}" 2>/dev/null
        [ -n "${npid[$k]}" ] && wait "${npid[$k]}" 2>/dev/null
    done
    [ -n "${scu_loop:-}" ] && kill "$scu_loop" 2>/dev/null
    pg_cleanup
    serve_cleanup
}
trap cleanup EXIT
echo "1..$((22 + 3 * rounds))"

# ---------------------------------------------------------------------------- helpers
q() { pg_psql "$@" 2>>"$tmp/psql.err"; } # rows of a query, fields separated by |
now() { echo "$EPOCHREALTIME"; }
since() { "$python" -c 'import sys; print("%.1f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$1" "$(now)"; }
status_json() { "$mmsegd" status -c "$tmp/n1.ini" --json "$@" 2>>"$tmp/status.err"; }

# node_ini NAME STABLE_AGE_S: the node's configuration; all share state_dir and database
node_ini() {
    serve_config "$tmp/$1.ini" "$tmp/state" "${nport[$1]}" "workers = 1" "$(asan_isolation)" \
        "database = $PG_CONNINFO" "node = $1" "lease_s = $lease_s" <<INI
max_associations_per_host = 0
[series]
stable_age_s = $2
[infer]
model = $model
threads = 1
[destination pacs]
ae_title = ORTHANC
host = 127.0.0.1
port = $dicom_pacs
retry_initial_s = 1
retry_max_s = 2
INI
}
# node_start NAME: start it (its log: $tmp/NAME.log); wait until it answers C-ECHO (fails
# at once when it exits)
node_start() {
    "$mmsegd" serve -c "$tmp/$1.ini" >>"$tmp/$1.log" 2>&1 &
    npid[$1]=$!
    wait_for 30 sh -c "echoscu -to 2 -aec MMSEGD 127.0.0.1 ${nport[$1]} || ! kill -0 ${npid[$1]}" &&
        kill -0 "${npid[$1]}" 2>/dev/null
}
node_kill() { # NAME: SIGKILL, as a machine that dies
    kill -9 "${npid[$1]}" 2>/dev/null
    wait "${npid[$1]}" 2>/dev/null
    npid[$1]=
}
node_stop() { # NAME: SIGTERM; its exit status (SIGKILL after 30 s: 137)
    local rc=0 dog
    kill -TERM "${npid[$1]}" 2>/dev/null
    (sleep 30 && kill -9 "${npid[$1]}") </dev/null >/dev/null 2>&1 &
    dog=$!
    wait "${npid[$1]}" 2>/dev/null || rc=$?
    kill "$dog" 2>/dev/null
    wait "$dog" 2>/dev/null
    npid[$1]=
    return $rc
}
echo_all() { # every node answers C-ECHO
    local k
    for k in "${nodes[@]}"; do echoscu -to 5 -aec MMSEGD 127.0.0.1 "${nport[$k]}" || return 1; done
}
# send NAME LOG FILE_OR_DIR...: storescu -v of those files (folders scanned) to node NAME
send() {
    local k=$1 log=$2
    shift 2
    storescu -v -nh -to 10 -aec MMSEGD +sd 127.0.0.1 "${nport[$k]}" "$@" >"$log" 2>&1
}
acks() { cat "$@" 2>/dev/null | grep -c 'Received Store Response (Success)'; }
# series_done UID...: every one of them done in the series table
series_done() {
    local u
    for u in "$@"; do [ "$(q "SELECT state FROM series WHERE series_uid = '$u'")" = "done" ] || return 1; done
}
# sends_settled UID...: each series has its sends (one per job done), all done
sends_settled() {
    local u
    for u in "$@"; do
        [ "$(q "SELECT count(*) FROM sends s JOIN jobs j ON j.id = s.job WHERE j.series_uid = '$u' AND s.state = 'done'")" -ge 1 ] &&
            [ "$(q "SELECT count(*) FROM sends s JOIN jobs j ON j.id = s.job WHERE j.series_uid = '$u' AND s.state <> 'done'")" = 0 ] ||
            return 1
    done 2>/dev/null
}
# jobs_of UID: its jobs, "node state run" each, in order
jobs_of() { q "SELECT node || ' ' || state || ' ' || run FROM jobs WHERE series_uid = '$1' ORDER BY id" | tr '\n' ',' | sed 's/,$//'; }
# acked_ok LOG...: every instance those storescu -v logs show acknowledged is stored and
# indexed (tests/cluster_check.py acked against the instances table); the summary on stdout,
# the problems on $tmp/acked.err
acked_ok() {
    q "SELECT sop_instance || '|' || digest FROM instances" >"$tmp/rows" &&
        "$python" "$check" acked "$tmp/state" "$tmp/rows" "$@" 2>"$tmp/acked.err"
}
segs_ok() { "$python" "$check" segs "http://127.0.0.1:$http_pacs" "$@" 2>"$tmp/segs.err"; }
show() { sed 's/^/# /' "$@" | head -20; }

# ---------------------------------------------------------------------------- the cluster
if pg_start "$tmp/pg" >"$tmp/pg-start.out"; then
    result OK "PostgreSQL runs ($PG_CONNINFO)"
else
    result FAIL "PostgreSQL starts"
    show "$tmp/pg-start.out"
    exit 1
fi
orthanc_config pacs ""
orthanc_start pacs && result OK "Orthanc listens (DICOM $dicom_pacs)" ||
    { result FAIL "Orthanc listens"; exit 1; }
ok=1
for k in "${nodes[@]}"; do
    nport[$k]=$(free_port)
    node_ini "$k" 2
    node_start "$k" || { ok=0; echo "# $k does not answer C-ECHO"; tail -n 30 "$tmp/$k.log" | show; }
done
[ $ok = 1 ] && result OK "three nodes serve (ports ${nport[n1]}, ${nport[n2]}, ${nport[n3]}), one state_dir, one database" ||
    { result FAIL "three nodes serve"; exit 1; }
# every node writes its row at its first heartbeat
if wait_for 10 sh -c "'$mmsegd' status -c '$tmp/n1.ini' --json | '$python' '$check' nodes - n1 n2 n3" &&
    out=$(status_json | "$python" "$check" nodes - n1 n2 n3 2>&1); then
    result OK "mmsegd status lists the nodes ($out)"
else
    result FAIL "mmsegd status lists the nodes n1, n2, n3"
    status_json | "$python" "$check" nodes - n1 n2 n3 2>&1 | show
fi

# ---------------------------------------------------------------------------- a) spread
# four whole series to n1, n2, n3, n1, and ph4 split: its first half to n1, the rest to n2,
# all seven associations at once
phantom_pool 5 1000 ||
    { result FAIL "phantom_series.py writes 5 series"; show "$tmp/ph.log"; exit 1; }
spread_uids=()
for w in "${wants[@]}"; do spread_uids+=("${w%%=*}"); done
split=${spread_uids[4]}
split_files=("${dirs[4]}"/*)
half=$((${#split_files[@]} / 2))
scus=()
targets=(n1 n2 n3 n1)
for i in 0 1 2 3; do
    send "${targets[$i]}" "$tmp/scu-a$i.log" "${dirs[$i]}" &
    scus+=($!)
done
send n1 "$tmp/scu-split1.log" "${split_files[@]:0:$half}" &
scus+=($!)
send n2 "$tmp/scu-split2.log" "${split_files[@]:$half}" &
scus+=($!)
ok=1
for s in "${scus[@]}"; do wait "$s" || ok=0; done
a_logs=("$tmp"/scu-a*.log "$tmp"/scu-split*.log)
[ $ok = 1 ] && [ "$(acks "${a_logs[@]}")" = 80 ] &&
    result OK "five series sent at once: four to n1, n2, n3, n1, one split between n1 and n2 ($half + $((${#split_files[@]} - half)) instances)" ||
    result FAIL "five series sent at once: all 80 instances acknowledged ($(acks "${a_logs[@]}"))"

t0=$(now)
if wait_for 180 series_done "${spread_uids[@]}" && wait_for 60 sends_settled "${spread_uids[@]}"; then
    result OK "every series is done and delivered (after $(since "$t0") s)"
else
    result FAIL "every series is done and delivered within 240 s"
    q "SELECT series_uid, state, run, instances FROM series" | show
fi
bad=
for u in "${spread_uids[@]}"; do
    d=$(q "SELECT count(*) FROM jobs WHERE series_uid = '$u' AND state = 'done'")
    r=$(q "SELECT run FROM series WHERE series_uid = '$u'")
    [ "$d $r" = "1 1" ] || bad="$bad $u: $d done, run $r ($(jobs_of "$u"));"
done
[ -z "$bad" ] && result OK "each series has exactly one job done, run 1" ||
    result FAIL "each series has exactly one job done, run 1:$bad"
rows=$(q "SELECT count(*) FROM series WHERE series_uid = '$split'")
inst=$(q "SELECT count(*) FROM instances WHERE series_uid = '$split'")
sinst=$(q "SELECT instances FROM series WHERE series_uid = '$split'")
[ "$rows $inst $sinst" = "1 ${#split_files[@]} ${#split_files[@]}" ] &&
    result OK "the split series is one series row with all its ${#split_files[@]} instances" ||
    result FAIL "the split series is one series row with all its ${#split_files[@]} instances ($rows rows, $inst indexed, series.instances '$sinst')"
dist=$(q "SELECT node || ': ' || count(*) FROM jobs GROUP BY node ORDER BY node" | tr '\n' ' ')
echo "# jobs per node: $dist"
nnodes=$(q "SELECT count(DISTINCT node) FROM jobs")
[ "${nnodes:-0}" -gt 1 ] || echo "# (all jobs ran on one node: the spread is printed, not required)"
empty=$(q "SELECT count(*) FROM jobs WHERE node IS NULL OR node = ''")
[ "$empty" = 0 ] && [ -n "$dist" ] && result OK "every job names its node ($dist)" ||
    result FAIL "every job names its node ('$empty' without; $dist)"
bad=
for k in "${nodes[@]}"; do
    out=$(status_json --node "$k" | "$python" "$check" only-node - "$k" 2>&1) || bad="$bad $out;"
    want=$(q "SELECT count(*) FROM jobs WHERE node = '$k'")
    case $out in "$want jobs,"*) ;; *) bad="$bad $k: '$out', $want jobs in the table;" ;; esac
done
[ -z "$bad" ] && result OK "mmsegd status --node NAME shows NAME's jobs and sends only" ||
    result FAIL "mmsegd status --node NAME shows NAME's jobs and sends only:$bad"
sd=$(q "SELECT count(*) FROM sends WHERE state = 'done'")
sn=$(q "SELECT count(*) FROM sends WHERE state <> 'done'")
jd=$(q "SELECT count(*) FROM jobs WHERE state = 'done'")
[ "$sd" = "$jd" ] && [ "$sn" = 0 ] && [ "$jd" = 5 ] &&
    result OK "every send is done: one per job ($sd)" ||
    result FAIL "every send is done: one per job ($sd done, $sn other, $jd jobs done)"
out=$(segs_ok "${wants[@]}") && result OK "Orthanc holds exactly one SEG per series ($out)" ||
    { result FAIL "Orthanc holds exactly one SEG per series"; show "$tmp/segs.err"; }
out=$(acked_ok "${a_logs[@]}") && result OK "every acknowledged instance is stored and indexed ($out)" ||
    { result FAIL "every acknowledged instance is stored and indexed"; show "$tmp/acked.err"; }

# ---------------------------------------------------------------------------- b) kill
# The job must be caught running: 24 slices (a few seconds of the demo model on one thread
# under the sanitizers), polled every 0.1 s. There is no test hook that slows a job
# (grep MMS_TEST_ daemon/*.c: none); were the job too fast to catch, a round fails with "not
# caught running" and says so.
"$python" "$check" phantoms "$tmp/kill" 2000 "$rounds" 24 >"$tmp/kill.txt" 2>"$tmp/kill.log" ||
    { show "$tmp/kill.log"; }
takeovers=
for ((r = 1; r <= rounds; r++)); do
    read -r kdir kuid kn < <(sed -n "${r}p" "$tmp/kill.txt")
    # to n1, n2, n3 in turn: the node that receives a series tends to be the one that claims
    # its job, so that each node is killed and started again in turn
    to=${nodes[$(((r - 1) % 3))]}
    send "$to" "$tmp/scu-k$r.log" "$kdir"
    victim=
    end=$((SECONDS + 60))
    while [ $SECONDS -lt $end ]; do
        victim=$(q "SELECT node FROM jobs WHERE series_uid = '$kuid' AND state = 'running'")
        [ -n "$victim" ] && break
        [ "$(q "SELECT count(*) FROM jobs WHERE series_uid = '$kuid' AND state <> 'running'")" != 0 ] && break
        sleep 0.1
    done
    if [ -z "$victim" ] || [ -z "${npid[$victim]:-}" ]; then
        result FAIL "round $r: the job of the series is caught running (jobs: $(jobs_of "$kuid"))"
        result FAIL "round $r: Orthanc holds one SEG of it (not run)"
        result FAIL "round $r: the node is started again (not run)"
        continue
    fi
    node_kill "$victim"
    t0=$(now)
    # until the series is done; the first job of another node is the takeover
    taken='' took='' by=''
    end=$((SECONDS + 90))
    while [ $SECONDS -lt $end ]; do
        if [ -z "$by" ]; then
            by=$(q "SELECT node FROM jobs WHERE series_uid = '$kuid' AND node <> '$victim' ORDER BY id LIMIT 1")
            [ -n "$by" ] && taken=$(since "$t0")
        fi
        series_done "$kuid" && { took=$(since "$t0"); break; }
        sleep 0.2
    done
    done_by=$(q "SELECT node FROM jobs WHERE series_uid = '$kuid' AND state = 'done'" | tr '\n' ' ')
    done_by=${done_by% }
    echo "# round $r: sent to $to; $victim killed while it ran the job; taken over after ${took:-?} s (the series done; ${by:-no other node} started its job ${taken:-?} s after the kill; jobs: $(jobs_of "$kuid"))"
    [ -n "$took" ] && takeovers="$takeovers $took"
    [ -n "$took" ] && [ -n "$done_by" ] && [ "$done_by" != "$victim" ] && [ "$(echo "$done_by" | wc -w)" = 1 ] &&
        result OK "round $r: $victim killed during the job; $done_by took it over, done after $took s" ||
        result FAIL "round $r: $victim killed during the job; another node has it done within 90 s (done by '$done_by'; jobs: $(jobs_of "$kuid"))"
    wait_for 60 sends_settled "$kuid"
    out=$(segs_ok "$kuid=$kn") && out2=$(acked_ok "$tmp/scu-k$r.log") &&
        result OK "round $r: Orthanc holds one SEG of it; the acknowledged instances are indexed ($out2)" ||
        { result FAIL "round $r: Orthanc holds one SEG of it; the acknowledged instances are indexed"; show "$tmp/segs.err" "$tmp/acked.err"; }
    node_start "$victim" && result OK "round $r: $victim starts again" ||
        { result FAIL "round $r: $victim starts again"; tail -n 30 "$tmp/$victim.log" | show; }
done
echo "# from the kill to the series done on another node (s):$takeovers"

# ---------------------------------------------------------------------------- c) database restart
# No instance can be recorded while the database is down, so the series looks as if its
# sending paused for the outage (3 s and the stop and start): with stable_age_s = 2 it would
# be judged complete then, and a partial version segmented. The nodes start again with
# stable_age_s = 6 for this part, longer than the outage.
ok=1
for k in "${nodes[@]}"; do
    node_stop "$k" || { rc=$?; ok=0; echo "# $k: exit status $rc on SIGTERM"; }
    node_ini "$k" 6
    node_start "$k" || { ok=0; echo "# $k does not start again"; }
done
[ $ok = 1 ] && result OK "the nodes stop on SIGTERM and start again with stable_age_s = 6" ||
    result FAIL "the nodes stop on SIGTERM and start again with stable_age_s = 6"
"$python" "$check" phantoms "$tmp/pgr" 3000 1 40 >"$tmp/pgr.txt" 2>"$tmp/pgr.log" || show "$tmp/pgr.log"
read -r pdir puid pn <"$tmp/pgr.txt"
# One association per instance, 0.1 s apart: the intake spans the outage. The last ten wait
# for the database to be back ($tmp/pg-back), so that instances are still arriving after it.
(
    i=0
    for f in "$pdir"/*; do
        i=$((i + 1))
        if [ $i -gt $((pn - 10)) ]; then
            until [ -e "$tmp/pg-back" ]; do sleep 0.1; done
        fi
        send n2 "$tmp/scu-p1.$i.log" "$f"
        sleep 0.1
    done
) &
scu_loop=$!
wait_for 30 sh -c "[ \$(cat '$tmp'/scu-p1.*.log 2>/dev/null | grep -c 'Received Store Response (Success)') -ge 5 ]"
t0=$(now)
pg_stop && sleep 3 && pg_start_again
pg_rc=$?
touch "$tmp/pg-back"
outage=$(since "$t0")
wait "$scu_loop"
scu_loop=
send n2 "$tmp/scu-p2.log" "$pdir"
p1=$(acks "$tmp"/scu-p1.*.log)
p1_fail=$(cat "$tmp"/scu-p1.*.log | grep 'Received Store Response' | grep -vc Success)
p1_none=$((pn - p1 - p1_fail))
echo "# first sending: $p1 acknowledged, $p1_fail refused ($(cat "$tmp"/scu-p1.*.log | grep 'Received Store Response' | grep -v Success | sed 's/.*Response //' | sort | uniq -c | tr -s ' ' | tr '\n' ';')), $p1_none without a response"
[ $pg_rc = 0 ] && [ "$(acks "$tmp/scu-p2.log")" = "$pn" ] &&
    result OK "PostgreSQL stopped and started again during the intake ($outage s); the series sent once more: all $pn acknowledged" ||
    result FAIL "PostgreSQL stopped and started again during the intake (status $pg_rc); the series sent once more: $(acks "$tmp/scu-p2.log") of $pn acknowledged"
out=$(acked_ok "$tmp"/scu-p1.*.log "$tmp/scu-p2.log") &&
    result OK "every instance acknowledged, before, during and after the outage, is stored and indexed ($out)" ||
    { result FAIL "every instance acknowledged is stored and indexed"; show "$tmp/acked.err"; }
t0=$(now)
if wait_for 120 series_done "$puid" && wait_for 60 sends_settled "$puid"; then
    result OK "the series is done and delivered ($(since "$t0") s after the last sending)"
else
    result FAIL "the series is done and delivered within 180 s ($(q "SELECT state || ' run ' || run FROM series WHERE series_uid = '$puid'"))"
fi
d=$(q "SELECT count(*) FROM jobs WHERE series_uid = '$puid' AND state = 'done'")
r=$(q "SELECT run FROM series WHERE series_uid = '$puid'")
out=$(segs_ok "$puid=$pn")
segs_rc=$?
[ "$d $r" = "1 1" ] && [ $segs_rc = 0 ] &&
    result OK "it is segmented once: one job done, run 1, one SEG in Orthanc with all $pn instances" ||
    { result FAIL "it is segmented once (jobs: $(jobs_of "$puid"); run $r)"; show "$tmp/segs.err"; }
fresh() { # SINCE: every node's heartbeat (seconds since the epoch, or ISO 8601) is later
    status_json | "$python" -c '
import datetime, json, sys
def t(v):
    if isinstance(v, (int, float)):
        return float(v)
    return datetime.datetime.fromisoformat(str(v).replace("Z", "+00:00")).timestamp()
n = {x["name"]: x.get("heartbeat") for x in json.load(sys.stdin)["nodes"]}
sys.exit(not all(k in n and t(n[k]) > float(sys.argv[1]) for k in sys.argv[2:]))' "$1" "${nodes[@]}"
}
alive=
for k in "${nodes[@]}"; do kill -0 "${npid[$k]}" 2>/dev/null && alive="$alive $k"; done
back=$(date +%s)
if [ "$alive" = " n1 n2 n3" ] && echo_all >/dev/null 2>&1 && wait_for $((3 * lease_s)) fresh "$back"; then
    result OK "the three nodes still run, answer C-ECHO and beat their heartbeat: they reconnected"
else
    result FAIL "the three nodes still run (alive:$alive), answer C-ECHO and beat their heartbeat"
    status_json | "$python" "$check" nodes - 2>&1 | show
fi

# ---------------------------------------------------------------------------- the end
ok=1
for k in "${nodes[@]}"; do node_stop "$k" || { rc=$?; ok=0; echo "# $k: exit status $rc on SIGTERM"; }; done
[ $ok = 1 ] && result OK "the nodes stop on SIGTERM" || result FAIL "the nodes stop on SIGTERM"
# nothing is stuck or left over once the nodes stopped
running=$(q "SELECT count(*) FROM jobs WHERE state = 'running'")
pending=$(q "SELECT count(*) FROM sends WHERE state <> 'done'")
q "SELECT path FROM instances" >"$tmp/paths"
if out=$("$python" "$check" settled "$tmp/state" "$tmp/paths" 2>&1) && [ "$running $pending" = "0 0" ]; then
    result OK "nothing stuck: no job running, every send done, $out"
else
    result FAIL "nothing stuck: $running job(s) running, $pending send(s) not done; $out"
fi
reports=$(grep -l "Sanitizer\|runtime error" "$tmp"/n[123].log 2>/dev/null | tr '\n' ' ')
[ -z "$reports" ] && result OK "the nodes' logs have no sanitizer report" ||
    result FAIL "the nodes' logs have no sanitizer report (in $reports)"
if [ $failed = 1 ]; then
    for k in "${nodes[@]}"; do
        echo "# ---- the end of $k's log:"
        tail -n 30 "$tmp/$k.log" | sed 's/^/# /'
    done
    [ -s "$tmp/psql.err" ] && { echo "# ---- psql errors:"; sort "$tmp/psql.err" | uniq -c | head -10 | sed 's/^/# /'; }
fi
exit $failed
