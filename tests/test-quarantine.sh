#!/bin/bash
# Quarantine, not deletion, and crashes that leave a trace, end to end with the real daemon:
# a C-STORE refused for its content is kept with a .why naming the AE and host; a junk drop
# file with a newline and invalid UTF-8 in its name is kept with the name escaped (one line
# per field), the log escaped too; a drop folder on another file system (a tmpfs) works, and
# one whose file cannot be removed is logged once, not retried every poll; quarantine/ is kept
# within quarantine_max_mb and quarantine_max_days; `mmsegd status` lists it; and a fatal
# signal on the drop folder's thread while it reads a file is logged (signal, stage,
# backtrace), kills the process with that signal, and the file is quarantined at the next
# start instead of crashing the daemon again.
set -u
. "$(dirname "$0")/find-testdata.sh"
require_testdata
for t in echoscu storescu dcmodify; do
    if ! command -v $t >/dev/null; then
        echo "1..0 # SKIP $t is not installed (DCMTK tools)"
        exit 0
    fi
done
mmsegd=${MMSEGD:-./mmsegd}
python=${PYTHON3:-/usr/bin/python3}
tmp=$(mktemp -d)
pid=
mounted=
cleanup() {
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
    [ -n "$mounted" ] && umount "$mounted" 2>/dev/null
    [ -n "${KEEP:-}" ] && echo "# kept $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT
check() { # check DESCRIPTION COMMAND...
    if "${@:2}" >/dev/null 2>&1; then result OK "$1"; else result FAIL "$1"; fi
}
skip() { # skip REASON
    n=$((n + 1))
    echo "ok $n # SKIP $1"
}
. "$(dirname "$0")/serve-util.sh" # free_port
wait_for() { # wait_for SECONDS COMMAND...
    local end=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -ge $end ] && return 1
        sleep 0.1
    done
}
port=$(free_port)
state=$tmp/state
drop=$tmp/drop
q=$state/quarantine
config() { # config EXTRA-DAEMON-LINES
    cat >"$tmp/mmsegd.ini" <<EOF
[daemon]
state_dir = $state
log_level = info
$*
[scp]
ae_title = MMSEGD
bind = 127.0.0.1
port = $port
min_free_mb = 1
allowed_calling_aes = MODALITY1
allowed_hosts = 127.0.0.1/32
[drop]
dir = $drop
stable_s = 1
scan_s = 1
EOF
}
start() {
    "$mmsegd" serve -c "$tmp/mmsegd.ini" >>"$tmp/log" 2>&1 &
    pid=$!
    for _ in $(seq 150); do
        echoscu -to 2 -aet MODALITY1 -aec MMSEGD 127.0.0.1 "$port" >/dev/null 2>&1 && return 0
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
# why_with TEXT: the .why files that contain TEXT (fixed string)
why_with() { grep -l -F -- "$1" "$q"/*.why 2>/dev/null; }
ct=$td/dcm_qa_ct/In/GE/03.dcm
[ -f "$ct" ] || ct=$(find "$td/dcm_qa_ct/In" -type f -name '*.dcm' | head -1)

echo "1..18"
mkdir -p "$drop"
config
check "the daemon starts" start

# --- 1. A C-STORE refused for its content (no Series Instance UID) is quarantined.
cp "$ct" "$tmp/noseries.dcm"
dcmodify -nb -ea "(0020,000E)" "$tmp/noseries.dcm" >/dev/null 2>&1
storescu -v -aet MODALITY1 -aec MMSEGD 127.0.0.1 "$port" "$tmp/noseries.dcm" >"$tmp/out" 2>&1
check "C-STORE without a Series Instance UID is refused (0xC000)" grep -q -i 'c000\|CannotUnderstand' "$tmp/out"
f=$(why_with "origin: C-STORE from MODALITY1@127.0.0.1")
check "its data is in quarantine/ with a .why naming the AE and the host" \
    bash -c "[ -n '$f' ] && grep -q 'reason: .*Series Instance UID' $f && [ -s '${f%.why}' ] &&
        ! grep -q -F '$state/tmp' $f"

# --- 2. A junk drop file with a newline and invalid UTF-8 in its name.
bad=$(printf 'junk\nreason: forged\xff.dcm')
echo "not DICOM at all" >"$tmp/junk"
mv "$tmp/junk" "$drop/$bad"
wait_for 10 why_with 'junk\x0areason: forged\xff.dcm'
f=$(why_with 'junk\x0areason: forged\xff.dcm')
check "a junk drop file is quarantined and removed from the folder" \
    bash -c "[ -n '$f' ] && [ -z \"\$(ls -A '$drop')\" ]"
check "its .why: one line per field, the name escaped, the original path (not our temp path)" \
    bash -c "[ \$(wc -l <'$f') -eq 4 ] && [ \$(grep -c '^reason: ' '$f') -eq 1 ] &&
        grep -q -F 'origin: $drop/junk\\x0areason: forged\\xff.dcm' '$f' &&
        ! grep -q -F '$state/tmp' '$f' && cmp -s '${f%.why}' <(echo 'not DICOM at all')"
check "the log has the name escaped: no raw newline or invalid byte from it" \
    bash -c "grep -q -F 'junk reason: forged\\xff.dcm' '$tmp/log' && ! grep -q \$'\\xff' '$tmp/log' &&
        ! grep -q '^reason: forged' '$tmp/log'"

# --- 3. status lists the quarantine (text and JSON).
"$mmsegd" status -c "$tmp/mmsegd.ini" >"$tmp/status" 2>&1
"$mmsegd" status -c "$tmp/mmsegd.ini" --json >"$tmp/status.json" 2>&1
check "status lists the quarantine: count, bytes and the newest items with their reasons" \
    bash -c "grep -q '^quarantine: 2 items, [0-9]* bytes' '$tmp/status' &&
        grep -q -F 'forged\\xff.dcm' '$tmp/status' && grep -q 'C-STORE from MODALITY1' '$tmp/status'"
check "status --json has quarantine.items, bytes and newest[] with origin and reason" \
    "$python" -c "
import json, sys
d = json.load(open('$tmp/status.json'))['quarantine']
assert d['items'] == 2 and d['bytes'] > 0 and len(d['newest']) == 2
assert d['newest'][0]['origin'].endswith('forged\\\\xff.dcm'), d['newest'][0]
assert d['newest'][1]['origin'] == 'C-STORE from MODALITY1@127.0.0.1'
assert all(i['reason'] for i in d['newest'])
"
stop

# --- 4. The drop folder on another file system (a tmpfs).
mkdir -p "$tmp/other"
if [ "$(id -u)" -ne 0 ] || ! mount -t tmpfs -o size=16m tmpfs "$tmp/other" 2>"$tmp/mount.err"; then
    skip "cross-file-system quarantine: cannot mount a tmpfs here ($(id -u) $(cat "$tmp/mount.err" 2>/dev/null))"
    skip "cross-file-system quarantine: no tmpfs"
    skip "cross-file-system quarantine: no tmpfs"
    skip "cross-file-system quarantine: no tmpfs"
else
    mounted=$tmp/other
    drop=$tmp/other/drop
    mkdir -p "$drop"
    config
    # a marker as the crash handler leaves it, naming a file on the tmpfs: quarantined at
    # start through rename's EXDEV branch (copy, sync, rename, then unlink the original)
    echo "crashed us" >"$drop/j3.dcm"
    printf '%s\0SIGBUS\0' "$drop/j3.dcm" >"$q/.intake-inflight"
    start
    f=$(why_with "origin: $drop/j3.dcm")
    check "a file named by a crash marker, on another file system, is quarantined at start" \
        bash -c "[ -n '$f' ] && grep -q 'reason: the daemon crashed (SIGBUS) while reading this file' $f &&
            [ ! -e '$drop/j3.dcm' ] && cmp -s '${f%.why}' <(echo 'crashed us') && ! ls -A '$q' | grep -q part"
    echo "junk on another file system" >"$tmp/other/j1"
    mv "$tmp/other/j1" "$drop/j1.dcm"
    wait_for 10 why_with "origin: $drop/j1.dcm"
    check "a junk file on another file system is quarantined (copied, synced) and removed" \
        bash -c "[ -n \"\$(grep -l -F 'origin: $drop/j1.dcm' '$q'/*.why)\" ] && [ ! -e '$drop/j1.dcm' ]"
    # a file that is copied into quarantine but cannot be removed: logged once, not retried
    stop
    echo "junk that stays" >"$drop/j2.dcm"
    mount -o remount,ro "$tmp/other"
    : >"$tmp/log.2"
    "$mmsegd" serve -c "$tmp/mmsegd.ini" >>"$tmp/log.2" 2>&1 &
    pid=$!
    sleep 5 # the poll runs every 0.25 s, the scan every 1 s
    cat "$tmp/log.2" >>"$tmp/log"
    lines=$(grep -c -F "$drop/j2.dcm" "$tmp/log.2")
    check "a file that cannot be removed: one log line with the errno in 5 s, not a retry per poll ($lines)" \
        bash -c "[ $lines -eq 1 ] && grep -q 'cannot be removed from the folder: .*[Rr]ead-only file system' '$tmp/log.2'"
    check "and it was quarantined once, not once per scan" \
        bash -c "[ \$(grep -l -F 'origin: $drop/j2.dcm' '$q'/*.why | wc -l) -eq 1 ]"
    stop
    umount "$tmp/other" && mounted=
    drop=$tmp/drop
    config
fi

# --- 5. Bounds: quarantine_max_days, then quarantine_max_mb, oldest first.
mkitem() { # mkitem NAME BYTES AGE-DAYS
    head -c "$2" /dev/zero >"$q/$1"
    printf 'time: x\norigin: test\nreason: test item %s\nsize: %s\n' "$1" "$2" >"$q/$1.why"
    touch -d "@$(($(date +%s) - $3 * 86400))" "$q/$1.why"
}
mkitem q-00000000000000a1 1000 40
mkitem q-00000000000000b2 700000 3
mkitem q-00000000000000c3 100000 2
keep=$(ls "$q"/*.why | grep -v -e a1 -e b2 -e c3 | tr '\n' ' ')
config "quarantine_max_mb = 2
quarantine_max_days = 30"
start
check "quarantine_max_days: an item older than 30 days is removed at start" \
    bash -c "[ ! -e '$q/q-00000000000000a1' ] && [ ! -e '$q/q-00000000000000a1.why' ] &&
        [ -e '$q/q-00000000000000b2.why' ]"
stop
config "quarantine_max_mb = 1
quarantine_max_days = 30"
start
check "quarantine_max_mb: the oldest items go until it fits; the newest stay" \
    bash -c "[ ! -e '$q/q-00000000000000b2' ] && [ -e '$q/q-00000000000000c3' ] &&
        for k in $keep; do [ -e \$k ] || exit 1; done &&
        grep -q 'quarantine: removed the 1 oldest item' '$tmp/log'"
stop

# --- 6. A fatal signal while the drop folder's thread reads a file.
# A real signal (SIGSEGV, sent to that thread with tgkill while it copies a large file in),
# not a test hook: the handler, the marker and the next start are the daemon's own code.
start
head -c 1 /dev/zero >"$tmp/big" && truncate -s 600M "$tmp/big"
mv "$tmp/big" "$drop/big.dcm"
tid=$(grep -l '^mms-intake$' /proc/"$pid"/task/*/comm 2>/dev/null | head -1 | cut -d/ -f5)
wait_for 10 test -e "$q/.intake-inflight"
# tgkill(pid, tid, SIGSEGV); when it cannot be sent, SIGKILL (the checks below then fail)
"$python" -c "
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
sys.exit(1 if libc.tgkill($pid, int('${tid:-0}'), 11) != 0 else 0)
" 2>/dev/null || kill -9 "$pid"
{ wait "$pid"; } 2>/dev/null # no "Segmentation fault" job line from bash
st=$?
pid=
check "the process dies of the signal (exit status $st = 128 + 11)" [ "$st" -eq 139 ]
check "the log has the signal, the stage (the file being copied) and a backtrace" \
    bash -c "grep -q -F 'fatal signal SIGSEGV (11)' '$tmp/log' &&
        grep -q -E 'while (copying|reading) drop file $drop/big.dcm' '$tmp/log' &&
        grep -A3 'fatal signal SIGSEGV' '$tmp/log' | grep -q 'mmsegd\\|0x'"
check "the marker left behind names the file and the signal" \
    bash -c "tr '\\0' '\\n' <'$q/.intake-inflight' | grep -q -x SIGSEGV"
start
wait_for 10 why_with "origin: $drop/big.dcm"
f=$(why_with "origin: $drop/big.dcm")
check "at the next start that file is quarantined, not taken again, and the daemon serves" \
    bash -c "[ -n '$f' ] && grep -q -F 'reason: the daemon crashed (SIGSEGV) while reading this file' $f &&
        [ ! -e '$drop/big.dcm' ] && [ ! -e '$q/.intake-inflight' ] && kill -0 $pid &&
        echoscu -to 2 -aet MODALITY1 -aec MMSEGD 127.0.0.1 $port"
stop

echo "# log: $(wc -l <"$tmp/log") lines"
exit $failed
