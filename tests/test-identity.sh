#!/bin/bash
# Acknowledged means intact (design.md section 3, "Duplicates"), with the real DCMTK tools
# against `mmsegd serve` on loopback: the same data set under other file meta never replaces
# the stored file (the same instance is acknowledged, another transfer syntax is refused), and
# SOP Instance UIDs that are not valid UIDs (over 64 characters, other characters) are refused
# over C-STORE (0xA900 with an Error Comment) and quarantined from the drop folder, never cut
# to 64 characters: the valid instance whose UID is their common prefix stays as it was.
set -u
. "$(dirname "$0")/find-testdata.sh"
require_testdata
for t in echoscu storescu dcmodify dcmdump sqlite3; do
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
check() { # check DESCRIPTION COMMAND...
    n=$((n + 1))
    if "${@:2}" >/dev/null 2>&1; then echo "ok $n - $1"; else echo "not ok $n - $1"; failed=1; fi
}
port=$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
state=$tmp/state
drop=$tmp/drop
mkdir -p "$drop"
cat >"$tmp/mmsegd.ini" <<EOF
[daemon]
state_dir = $state
log_level = info
[scp]
ae_title = MMSEGD
bind = 127.0.0.1
port = $port
allowed_hosts = 127.0.0.0/8
allowed_calling_aes = STORESCU, OTHERAE, ECHOSCU
min_free_mb = 1
[drop]
dir = $drop
stable_s = 1
scan_s = 1
[series]
stable_age_s = 600
min_slices = 10
EOF
"$mmsegd" serve -c "$tmp/mmsegd.ini" >>"$tmp/log" 2>&1 &
pid=$!
up=0
for _ in $(seq 100); do
    echoscu -to 2 -aec MMSEGD 127.0.0.1 "$port" >/dev/null 2>&1 && up=1 && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
echo "1..9"
n=0
failed=0
if [ $up != 1 ]; then
    echo "Bail out! the daemon did not start"
    cat "$tmp/log" >&2
    exit 1
fi
db() { sqlite3 "$state/state.db" "$1"; }
# stored_sum UID: the SHA-256 of the whole stored file of that instance ("" when none)
stored_sum() {
    local p
    p=$(db "select path from instances where sop_instance = '$1'")
    [ -n "$p" ] && sha256sum "$state/$p" | cut -d' ' -f1
}
# set_meta IN OUT TAG VALUE: OUT is IN with one file meta element (explicit VR little endian,
# group 0002) set to VALUE (padded to even length with NUL) and the group length recomputed;
# the data set bytes are untouched
set_meta() {
    "$python" - "$@" <<'PY'
import struct, sys
src, dst, tag, value = sys.argv[1], sys.argv[2], int(sys.argv[3], 16), sys.argv[4].encode()
b = open(src, "rb").read()
assert b[128:132] == b"DICM"
at, elems = 132, []
while at + 8 <= len(b) and struct.unpack_from("<H", b, at)[0] == 2:
    g, e = struct.unpack_from("<HH", b, at)
    vr = b[at + 4:at + 6]
    if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
        n, hl = struct.unpack_from("<I", b, at + 8)[0], 12
    else:
        n, hl = struct.unpack_from("<H", b, at + 6)[0], 8
    elems.append([(g << 16) | e, vr, b[at + hl:at + hl + n]])
    at += hl + n
for el in elems:
    if el[0] == tag:
        el[2] = value + (b"\0" if len(value) % 2 else b"")
def enc(t, vr, v):
    if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
        return struct.pack("<HH", t >> 16, t & 0xFFFF) + vr + b"\0\0" + struct.pack("<I", len(v)) + v
    return struct.pack("<HH", t >> 16, t & 0xFFFF) + vr + struct.pack("<H", len(v)) + v
body = b"".join(enc(*el) for el in elems if el[0] != 0x00020000)
meta = enc(0x00020000, b"UL", struct.pack("<I", len(body))) + body
open(dst, "wb").write(b[:132] + meta + b[at:])
PY
}
in_drop() { [ -e "$drop/$1" ]; }
gone_from_drop() {
    for _ in $(seq 50); do
        in_drop "$1" || return 0
        sleep 0.2
    done
    return 1
}
quarantined_for() { # NAME TEXT: a .why in quarantine/ names the file and says TEXT
    local w
    for w in "$state"/quarantine/*.why; do
        [ -f "$w" ] && grep -q "$drop/$1" "$w" && grep -q "$2" "$w" && return 0
    done
    return 1
}

# ---------------------------------------------------------------- the same data set again
src=$td/dcm_qa_ct/In/GE/01.dcm
uid=$(dcmdump +P 0008,0018 "$src" | sed 's/.*\[\(.*\)\].*/\1/')
storescu -xi -aet STORESCU -aec MMSEGD 127.0.0.1 "$port" "$src" >"$tmp/out" 2>&1
sum0=$(stored_sum "$uid")
ts0=$(db "select transfer_syntax from instances where sop_instance = '$uid'")
check "an instance is stored" test -n "$sum0"
# over C-STORE from another AE title: the same data set, a new file meta (its source AE)
storescu -xi -aet OTHERAE -aec MMSEGD 127.0.0.1 "$port" "$src" >"$tmp/out2" 2>&1
acked() { ! grep -qi "error\|fail" "$tmp/out2"; }
check "the same data set from another AE title is acknowledged as a duplicate" acked
check "... and the stored file is byte-identical" test "$(stored_sum "$uid")" = "$sum0"
# the stored file with another transfer syntax in its meta, through the drop folder
stored=$state/$(db "select path from instances where sop_instance = '$uid'")
set_meta "$stored" "$tmp/be.dcm" 00020010 1.2.840.10008.1.2.2
cp "$tmp/be.dcm" "$drop/be.dcm"
refused_be() {
    # refused by the pre-scan (the data set does not walk as explicit big endian) or by the
    # spool's identity check ("another transfer syntax"): either way kept apart, not stored
    gone_from_drop be.dcm && quarantined_for be.dcm "no valid VR\|another transfer syntax" &&
        [ "$(stored_sum "$uid")" = "$sum0" ] &&
        [ "$(db "select transfer_syntax from instances where sop_instance = '$uid'")" = "$ts0" ]
}
check "the same data set declared explicit big endian is quarantined; stored file and row intact" \
    refused_be
# the same meta values but another implementation version name: the same instance
set_meta "$stored" "$tmp/same.dcm" 00020013 OTHERIMPL
cp "$tmp/same.dcm" "$drop/same.dcm"
dup_same() {
    gone_from_drop same.dcm && ! quarantined_for same.dcm . &&
        [ "$(stored_sum "$uid")" = "$sum0" ] && grep -q "drop/same.dcm: duplicate" "$tmp/log"
}
check "the same data set, transfer syntax and UIDs under other meta: a duplicate, file kept" \
    dup_same

# ---------------------------------------------------------------- UIDs that are not valid
prefix=1.2.826.0.1.3680043.2.1143.5555555555555555555555555555555555555
[ ${#prefix} = 64 ] || echo "Bail out! the prefix must have 64 characters"
cp "$td/dcm_qa_ct/In/GE/02.dcm" "$tmp/p.dcm"
cp "$td/dcm_qa_ct/In/GE/02.dcm" "$tmp/l1.dcm"
cp "$td/dcm_qa_ct/In/GE/03.dcm" "$tmp/l2.dcm"
dcmodify -nb -i "(0008,0018)=$prefix" "$tmp/p.dcm" >/dev/null 2>&1
dcmodify -nb -i "(0008,0018)=${prefix}1111111" "$tmp/l1.dcm" >/dev/null 2>&1
dcmodify -nb -i "(0008,0018)=${prefix}2222222" "$tmp/l2.dcm" >/dev/null 2>&1
storescu -aet STORESCU -aec MMSEGD 127.0.0.1 "$port" "$tmp/p.dcm" >/dev/null 2>&1
psum=$(stored_sum "$prefix")
check "the instance whose UID is 64 characters is stored" test -n "$psum"
storescu -nh -d -aet STORESCU -aec MMSEGD 127.0.0.1 "$port" "$tmp/l1.dcm" "$tmp/l2.dcm" \
    >"$tmp/out3" 2>&1
both_refused() {
    [ "$(grep -c "DIMSE Status *: 0xa900" "$tmp/out3")" -eq 2 ] &&
        [ "$(grep -c "(0000,0902) LO \[SOP Instance UID (0008,0018) is not a valid UID" "$tmp/out3")" -eq 2 ] &&
        [ "$(grep -c "C-STORE .* answered 0xA900: SOP Instance UID (0008,0018) is not a valid UID: longer than 64" "$tmp/log")" -eq 2 ]
}
check "two SOP Instance UIDs of 71 characters with that prefix: both refused (0xA900, Error Comment)" both_refused
check "... the instance with the 64-character UID is byte-identical and still indexed" \
    test "$(stored_sum "$prefix")" = "$psum"
cp "$tmp/l1.dcm" "$drop/long.dcm"
cp "$tmp/p.dcm" "$tmp/bad.dcm"
dcmodify -nb -i "(0008,0018)=1.2.03.4" "$tmp/bad.dcm" >/dev/null 2>&1
cp "$tmp/bad.dcm" "$drop/zero.dcm"
quarantined_both() {
    gone_from_drop long.dcm && gone_from_drop zero.dcm &&
        quarantined_for long.dcm "longer than 64\|at most 64" &&
        quarantined_for zero.dcm "leading zero" &&
        [ "$(stored_sum "$prefix")" = "$psum" ]
}
check "from the drop folder, a long UID and one with a leading zero are quarantined" \
    quarantined_both
kill -0 "$pid" 2>/dev/null || failed=1
[ $failed = 0 ] || { echo "# log:"; sed 's/^/# /' "$tmp/log" | tail -40; }
exit $failed
