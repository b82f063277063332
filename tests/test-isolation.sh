#!/bin/bash
# A crash in the code that reads received data fails one instance or one job, and the daemon
# goes on serving (daemon/sandbox.c; isolate = yes, the default).
# The real crash classes of the readers are fixed at their root, so no input crashes them
# on purpose any more; the crash is made by the daemon's test hook instead: with the
# environment variable MMSEGD_TEST_CRASH_SOP=WHERE:UID, the isolated child that reads the
# header (WHERE header) or decodes the series (WHERE decode) of instance UID raises SIGSEGV
# right there, inside the child, as a reader crash would (the daemon logs a WARNING that the
# hook is set). What the test shows is what the daemon does with such a crash:
#  a) header: one association sends series A (12 instances) with the crashing instance (its
#     last slice) among them: that C-STORE is answered 0xC000, every other instance of the same association is
#     stored, the crashed file is in quarantine/ with a .why saying "header parser crashed
#     (SIGSEGV)", and the daemon is the same process;
#  b) series A (without the crashed instance) and series B then go through to finished jobs;
#  c) decode: with the hook on one instance of series C, C's job fails with the reason
#     "decoder crashed (SIGSEGV) on <its file>", series D sent after it still finishes, and
#     the daemon is still the same process, all without a restart.
set -u
. "$(dirname "$0")/find-testdata.sh"
require_testdata
for t in storescu echoscu; do
    if ! command -v $t >/dev/null; then
        echo "1..0 # SKIP $t is not installed (DCMTK tools)"
        exit 0
    fi
done
mmsegd=${MMSEGD:-./mmsegd}
python=${PYTHON3:-/usr/bin/python3}
src=${srcdir:-.}
require_python pydicom numpy
model=$(cd "$src" && pwd)/models/demo.safetensors
tmp=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill -9 $pid 2>/dev/null; [ -n "${KEEP:-}" ] && echo "# kept $tmp" || rm -rf "$tmp"' EXIT
echo "1..12"

for k in 1 2 3 4; do
    "$python" "$src/tools/mkseries.py" "$td/dcm_qa_ct/In/Philips/S21570/S2010" "$tmp/in$k" \
        --slices 12 --copy "$k" >/dev/null || { echo "Bail out! mkseries.py failed"; exit 1; }
done
sop_of() { "$python" -c 'import pydicom,sys; print(pydicom.dcmread(sys.argv[1], stop_before_pixels=True).SOPInstanceUID)' "$1"; }
series_of() { "$python" -c 'import pydicom,sys; print(pydicom.dcmread(sys.argv[1], stop_before_pixels=True).SeriesInstanceUID)' "$1"; }
first() { find "$1" -type f | sort | sed -n "${2:-1}p"; }
# the slice at one end of series A (one in the middle would leave a gap: "missing slices")
end_of() { "$python" -c '
import os, sys, pydicom
ds = [pydicom.dcmread(os.path.join(sys.argv[1], f), stop_before_pixels=True) for f in os.listdir(sys.argv[1])]
print(max(ds, key=lambda d: float(d.ImagePositionPatient[2])).SOPInstanceUID)' "$1"; }
crash_a=$(end_of "$tmp/in1")
crash_c=$(sop_of "$(first "$tmp/in3" 5)")
ser_a=$(series_of "$(first "$tmp/in1")") ser_b=$(series_of "$(first "$tmp/in2")")
ser_c=$(series_of "$(first "$tmp/in3")") ser_d=$(series_of "$(first "$tmp/in4")")

. "$(dirname "$0")/serve-util.sh" # free_port
wait_for() { # SECONDS COMMAND...
    local end=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -ge $end ] && return 1
        sleep 0.3
    done
}
port=$(free_port)
mkdir -p "$tmp/folder"
cat >"$tmp/mmsegd.ini" <<INI
[daemon]
state_dir = $tmp/state
[scp]
bind = 127.0.0.1
port = $port
min_free_mb = 1
allowed_hosts = 127.0.0.0/8
allowed_calling_aes = any
[series]
stable_age_s = 1
[infer]
model = $model
backend = cpu
threads = 1
[destination folder]
type = folder
path = $tmp/folder
INI
start() { # HOOK
    MMSEGD_TEST_CRASH_SOP=$1 "$mmsegd" serve -c "$tmp/mmsegd.ini" >>"$tmp/log" 2>&1 &
    pid=$!
    wait_for 30 grep -q "ready (pid $pid" "$tmp/log"
}
# field SERIES KEY: a field of that series in `mmsegd status --json`
field() {
    "$mmsegd" status -c "$tmp/mmsegd.ini" --json | "$python" -c '
import json, sys
for s in json.load(sys.stdin)["series"]:
    if s["series_uid"] == sys.argv[1]:
        print(s[sys.argv[2]])
' "$1" "$2"
}
finished() { case $(field "$1" state) in done | failed | skipped) return 0 ;; *) return 1 ;; esac; }

# ---------------------------------------------------------------------------- a) header
start "header:$crash_a" && result OK "the daemon starts (pid $pid)" ||
    { result FAIL "the daemon starts"; sed 's/^/# /' "$tmp/log"; exit 1; }
pid0=$pid
storescu -v --no-halt -aec MMSEGD 127.0.0.1 "$port" +sd "$tmp/in1" >"$tmp/scu-a.log" 2>&1
grep -q "C-STORE $crash_a from .* answered 0xC000" "$tmp/log" &&
    [ "$(grep "Received Store Response" "$tmp/scu-a.log" | grep -vc "(Success)")" -eq 1 ] &&
    result OK "the crashed instance is answered 0xC000 (a failure for storescu)" ||
    { result FAIL "the crashed instance is answered 0xC000 (a failure for storescu)";
      grep "Received Store Response" "$tmp/scu-a.log" | grep -v "(Success)" | sed 's/^/# /'; }
stored=$(find "$tmp/state/instances" -name "*.dcm" | wc -l)
[ "$stored" -eq 11 ] && result OK "the 11 other instances of the same association are stored" ||
    result FAIL "the 11 other instances of the same association are stored (got $stored)"
whys=$(ls "$tmp/state/quarantine/"*.why 2>/dev/null | wc -l)
[ "$whys" -eq 1 ] && grep -q "header parser crashed (SIGSEGV)" "$tmp/state/quarantine/"*.why &&
    [ "$(find "$tmp/state/quarantine" -type f ! -name '*.why' | wc -l)" -eq 1 ] &&
    result OK "the crashed file is in quarantine, its .why names the crash" ||
    { result FAIL "the crashed file is in quarantine, its .why names the crash";
      cat "$tmp/state/quarantine/"*.why 2>/dev/null | sed 's/^/# /'; }
qf=$(find "$tmp/state/quarantine" -type f ! -name '*.why' | head -1)
[ -n "$qf" ] && [ "$(sop_of "$qf")" = "$crash_a" ] &&
    result OK "the quarantined file is the instance sent" ||
    result FAIL "the quarantined file is the instance sent"
kill -0 "$pid0" 2>/dev/null && [ "$(grep -c 'ready (pid' "$tmp/log")" -eq 1 ] &&
    result OK "the daemon is the same process after the crash" ||
    result FAIL "the daemon is the same process after the crash"

# ---------------------------------------------------------------------------- b) jobs go on
storescu -aec MMSEGD 127.0.0.1 "$port" +sd "$tmp/in2" >"$tmp/scu-b.log" 2>&1
wait_for 600 finished "$ser_a"
wait_for 600 finished "$ser_b"
sa=$(field "$ser_a" state) sb=$(field "$ser_b" state)
[ "$sa" = done ] && [ "$sb" = done ] &&
    result OK "series A (11 instances) and series B finish their jobs" ||
    { result FAIL "series A and B finish their jobs (A: $sa, B: $sb)";
      grep -E "job|ERR|err" "$tmp/log" | tail -5 | sed 's/^/# /'; }
kill -TERM "$pid" && wait "$pid" 2>/dev/null
pid=

# ---------------------------------------------------------------------------- c) decode
start "decode:$crash_c" && result OK "the daemon starts with the decode hook (pid $pid)" ||
    { result FAIL "the daemon starts with the decode hook"; exit 1; }
pid1=$pid
storescu -aec MMSEGD 127.0.0.1 "$port" +sd "$tmp/in3" >"$tmp/scu-c.log" 2>&1
wait_for 300 finished "$ser_c"
reason=$(field "$ser_c" reason)
echo "# series C: $(field "$ser_c" state): $reason"
[ "$(field "$ser_c" state)" = failed ] &&
    echo "$reason" | grep -q "decoder crashed (SIGSEGV) on $tmp/state/instances/" &&
    result OK "series C's job fails: decoder crashed (SIGSEGV) on its file" ||
    result FAIL "series C's job fails: decoder crashed (SIGSEGV) on its file"
crashed_file=$(echo "$reason" | sed -n 's/.*crashed (SIGSEGV) on \([^ ]*\.dcm\).*/\1/p')
[ -n "$crashed_file" ] && [ "$(sop_of "$crashed_file")" = "$crash_c" ] &&
    result OK "the file named is the instance the decoder crashed on" ||
    result FAIL "the file named is the instance the decoder crashed on ('$crashed_file')"
storescu -aec MMSEGD 127.0.0.1 "$port" +sd "$tmp/in4" >"$tmp/scu-d.log" 2>&1
wait_for 600 finished "$ser_d"
[ "$(field "$ser_d" state)" = done ] &&
    result OK "series D, sent after the crash, finishes its job" ||
    result FAIL "series D, sent after the crash, finishes its job ($(field "$ser_d" state))"
kill -0 "$pid1" 2>/dev/null && [ "$(grep -c 'ready (pid' "$tmp/log")" -eq 2 ] &&
    result OK "the daemon is the same process after the decoder crash" ||
    result FAIL "the daemon is the same process after the decoder crash"
kill -TERM "$pid" && wait "$pid" 2>/dev/null
pid=
exit ${failed:-0}
