#!/bin/bash
# Nothing acknowledged is lost: the daemon is killed (SIGKILL) at random moments while four
# storescu associations send at once; after a restart every instance that any storescu saw
# acknowledged is on disk under its digest, with the data set it was sent with, and indexed
# once. Three rounds.
set -u
. "$(dirname "$0")/find-testdata.sh"
require_testdata
for t in echoscu storescu; do
    if ! command -v $t >/dev/null; then
        echo "1..0 # SKIP $t is not installed (DCMTK tools)"
        exit 0
    fi
done
. "$(dirname "$0")/serve-util.sh"
mmsegd=${MMSEGD:-./mmsegd}
python=${PYTHON3:-/usr/bin/python3}
check_py=$(dirname "$0")/intake_check.py
tmp=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill -9 $pid 2>/dev/null; rm -rf "$tmp"' EXIT
port=$(free_port)
serve_config "$tmp/mmsegd.ini" "$tmp/state" "$port" <<INI
[series]
stable_age_s = 1
INI
start() {
    "$mmsegd" serve -c "$tmp/mmsegd.ini" >>"$tmp/log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        echoscu -to 2 -aec MMSEGD 127.0.0.1 "$port" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}
qa=$td/dcm_qa_ct/In
# four associations, the last two sending the same series (duplicates arriving at once)
sources=("$qa/Philips/S21570/S2010" "$qa/GE" "$qa/Philips/S21610/S2010" "$qa/Philips/S21610/S2010")
n=0
failed=0
echo "1..6"
for round in 1 2 3; do
    start || { echo "Bail out! the daemon did not start"; exit 1; }
    rm -f "$tmp"/scu-*.log
    for i in 0 1 2 3; do
        storescu -v -nh -aec MMSEGD 127.0.0.1 "$port" +sd "${sources[$i]}" >"$tmp/scu-$i.log" 2>&1 &
    done
    # a random moment within the first 1.5 s of sending
    sleep "0.$((RANDOM % 15 + 1))"
    kill -9 "$pid"
    wait "$pid" 2>/dev/null
    pid=
    wait
    cat "$tmp"/scu-*.log >>"$tmp/all-scu.log"
    n=$((n + 1))
    if start; then echo "ok $n - round $round: killed while receiving; restarts"; else
        echo "not ok $n - round $round: restart"
        failed=1
        continue
    fi
    n=$((n + 1))
    if out=$("$python" "$check_py" acked "$tmp/state" "$tmp/all-scu.log" 2>&1); then
        echo "ok $n - round $round: every acknowledged instance stored and indexed ($out)"
    else
        echo "not ok $n - round $round: acknowledged instances missing"
        echo "$out" | sed 's/^/# /' | head -20
        failed=1
    fi
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null
    pid=
done
exit $failed
