#!/bin/bash
# SIGHUP every second under load (design.md section 3): while eight storescu associations send
# sixteen phantom CT series (tools/mmunet/phantom_series.py, 16 slices of 64 x 64, two rounds
# of eight) and jobs run and sends go out to a DCMTK storescp archive, the daemon gets a SIGHUP
# every second, the configuration file switching log_level between info and debug each time.
# Every reload must be applied (one "configuration reloaded" line per signal), the daemon must
# keep serving, and afterwards nothing is lost or stuck: every acknowledged instance stored
# and indexed, every series done with exactly one SEG in the archive, no job running, no send
# pending, tmp/ and outbox/ empty.
set -u
. "$(dirname "$0")/find-testdata.sh"
. "$(dirname "$0")/serve-util.sh"
mmsegd=${MMSEGD:-./mmsegd}
python=${PYTHON3:-/usr/bin/python3}
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
hup=
trap '[ -n "$hup" ] && kill "$hup" 2>/dev/null; [ -n "$apid" ] && kill -9 "$apid" 2>/dev/null; serve_cleanup' EXIT
echo "1..7"

phantom_pool 16 3000 ||
    { result FAIL "phantom_series.py writes 16 series"; sed 's/^/# /' "$tmp/ph.log"; exit 1; }
result OK "16 phantom series of 16 slices"

port=$(free_port)
aport=$(free_port)
mkdir -p "$tmp/archive"
storescp -v -aet ARCHIVE -od "$tmp/archive" "$aport" >"$tmp/archive.log" 2>&1 &
apid=$!
config() { # LOG_LEVEL
    serve_config "$tmp/mmsegd.ini.new" "$tmp/state" "$port" "log_level = $1" "workers = 1" \
        "$(asan_isolation)" <<INI
max_associations_per_host = 0
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
    mv "$tmp/mmsegd.ini.new" "$tmp/mmsegd.ini"
}
config info
if start && wait_for 20 echoscu -to 2 -aec MMSEGD 127.0.0.1 "$port"; then
    result OK "the daemon starts"
else
    result FAIL "the daemon starts"
    exit 1
fi

# one SIGHUP a second, the log level switching, until $tmp/hup-stop exists (a file, not a
# signal: a kill between the SIGHUP and its count would make the count wrong)
(
    i=0
    while :; do
        sleep 1
        [ -e "$tmp/hup-stop" ] && exit 0
        if ((i % 2)); then config info; else config debug; fi
        kill -HUP "$pid" 2>/dev/null || exit 0
        echo >>"$tmp/hups"
        i=$((i + 1))
    done
) &
hup=$!
t0=$SECONDS
for round in 0 1; do
    scus=()
    for a in 0 1 2 3 4 5 6 7; do
        storescu -v -nh -to 10 -aec MMSEGD 127.0.0.1 "$port" +sd "${dirs[$((round * 8 + a))]}" \
            >"$tmp/scu-$round-$a.log" 2>&1 &
        scus+=($!)
    done
    wait "${scus[@]}"
done
settled() { "$mmsegd" status -c "$tmp/mmsegd.ini" --json 2>/dev/null |
    "$python" "$check" settled "$tmp/state" - >/dev/null 2>&1; }
wait_for 120 settled
ok_settle=$?
settle_s=$((SECONDS - t0))
echoed=0
echoscu -to 5 -aec MMSEGD 127.0.0.1 "$port" >/dev/null 2>&1 && echoed=1
# The load may settle within a few seconds: the signals go on until at least eight were sent,
# so that the count below means something however fast this machine is.
enough_hups() { [ "$(wc -l <"$tmp/hups" 2>/dev/null || echo 0)" -ge 8 ]; }
wait_for 30 enough_hups
touch "$tmp/hup-stop"
wait "$hup" 2>/dev/null
hup=
sleep 1.5 # the last signal's reload
hups=$(wc -l <"$tmp/hups")
reloads=$(grep -c "configuration reloaded from" "$tmp/log")
if [ $ok_settle = 0 ] && [ $echoed = 1 ]; then
    result OK "under a SIGHUP a second all settles in $settle_s s and the daemon answers C-ECHO"
else
    result FAIL "under SIGHUPs all settles and the daemon answers C-ECHO (settled: $ok_settle, echo: $echoed)"
    "$mmsegd" status -c "$tmp/mmsegd.ini" --json 2>&1 |
        "$python" "$check" settled "$tmp/state" - 2>&1 | sed 's/^/# /' | head -10
    grep -v "configuration reloaded\|log_level" "$tmp/log" | tail -40 | sed 's/^/# /'
    ps -o pid,stat,etime,wchan:24,args --ppid "$pid" 2>&1 | sed 's/^/# child: /'
fi
[ "$hups" -ge 8 ] && [ "$reloads" = "$hups" ] &&
    result OK "every SIGHUP was a reload ($reloads of $hups)" ||
    result FAIL "every SIGHUP was a reload ($reloads of $hups)"
stop
kill -TERM "$apid" 2>/dev/null
wait "$apid" 2>/dev/null
apid=

if out=$("$python" "$src/tests/intake_check.py" acked "$tmp/state" "$tmp"/scu-*.log 2>&1) &&
    st=$("$mmsegd" status -c "$tmp/mmsegd.ini" --json | "$python" "$check" settled "$tmp/state" - 2>&1); then
    result OK "nothing lost or stuck ($st)"
else
    result FAIL "nothing lost or stuck"
    printf '%s\n%s\n' "$out" "${st:-}" | sed 's/^/# /' | head -10
fi
if out=$("$python" "$check" segs "$tmp/archive" "${wants[@]}" 2>&1); then
    result OK "one SEG per series in the archive ($out)"
else
    result FAIL "one SEG per series in the archive"
    echo "$out" | sed 's/^/# /' | head -10
fi
grep -q "AddressSanitizer\|runtime error" "$tmp/log" &&
    result FAIL "the daemon's log has no sanitizer report" ||
    result OK "the daemon's log has no sanitizer report"
exit $failed
