#!/bin/bash
# Bad input, table-driven: every class of the robustness review (tests/badinput.py makes each
# case from a valid phantom series at test time) over C-STORE, through the drop folder and as
# whole series. Each case has its outcome; throughout, the daemon stays up with the same PID,
# every instance it acknowledged stays byte-identical, and C-ECHO is answered within 1 s at
# the end.
#   instance cases, C-STORE: one association per case, the bad instance then a valid one:
#     "refused" gets a failure status (0xA9xx, 0xC0xx, 0xA7xx), "any" any status; the valid
#     one after it is stored (the association goes on).
#   instance cases, drop folder: "refused" ends in quarantine/ with a .why naming the file.
#   series cases: "failed" ends failed (its reason naming the value where the case says
#     which), "done" ends done.
set -u
for t in echoscu storescu sqlite3; do
    if ! command -v $t >/dev/null; then
        echo "1..0 # SKIP $t is not installed (DCMTK tools, sqlite3 CLI)"
        exit 0
    fi
done
mmsegd=${MMSEGD:-./mmsegd}
python=${PYTHON3:-/usr/bin/python3}
srcdir=$(cd "${srcdir:-.}" && pwd)
. "$srcdir/tests/find-testdata.sh" # result()
if ! "$python" -c 'import pydicom, numpy, scipy' 2>/dev/null; then
    echo "1..0 # SKIP $python lacks pydicom, numpy or scipy (the generator needs them)"
    exit 0
fi
tmp=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
    [ -n "${KEEP:-}" ] && echo "# kept $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT
. "$srcdir/tests/serve-util.sh" # free_port
port=$(free_port)
state=$tmp/state
drop=$tmp/drop
mkdir -p "$drop"
cat >"$tmp/mmsegd.ini" <<EOF
[daemon]
state_dir = $state
log_level = info
workers = 1
[scp]
ae_title = MMSEGD
bind = 127.0.0.1
port = $port
min_free_mb = 1
allowed_hosts = 127.0.0.0/8
allowed_calling_aes = BADSCU,ECHOSCU,STORESCU
[drop]
dir = $drop
stable_s = 1
scan_s = 1
[series]
stable_age_s = 2
min_slices = 10
[infer]
model = $srcdir/models/demo.safetensors
threads = 2
tta = no
EOF

# ---------------------------------------------------------------------------- the cases
"$python" "$srcdir/tools/mmunet/phantom_series.py" write --seed 1001 --out "$tmp/base" \
    --variants regular --shape 16 64 64 --spacing 3 3 3 >/dev/null 2>"$tmp/gen.err" &&
    "$python" "$srcdir/tests/badinput.py" make --base "$tmp/base/regular/dicom" \
        --out "$tmp/cases" >>"$tmp/gen.err" 2>&1
if [ ! -f "$tmp/cases/cases.json" ]; then
    echo "1..1"
    echo "not ok 1 - the bad-input cases were generated"
    sed 's/^/# /' "$tmp/gen.err"
    exit 1
fi
cases=$tmp/cases
# field NAME KEY: a field of a case
field() {
    "$python" -c 'import json,sys
c = {x["name"]: x for x in json.load(open(sys.argv[1]))}[sys.argv[2]]
print(c.get(sys.argv[3]) or "")' "$cases/cases.json" "$1" "$2"
}
# names KIND ROUTE: the names of the cases of that kind going that route (both counts)
names() {
    "$python" -c 'import json,sys
for c in json.load(open(sys.argv[1])):
    if c["kind"] == sys.argv[2] and c.get("route", "both") in (sys.argv[3], "both") \
            and not c["name"].startswith("after-"):
        print(c["name"])' "$cases/cases.json" "$1" "$2"
}

"$mmsegd" serve -c "$tmp/mmsegd.ini" >>"$tmp/log" 2>&1 &
pid=$!
alive() { kill -0 "$pid" 2>/dev/null; }
echo_ok() { echoscu -to 5 -aec MMSEGD 127.0.0.1 "$port"; }
for _ in $(seq 100); do
    echo_ok >/dev/null 2>&1 && break
    sleep 0.1
done
result "$(echo_ok >/dev/null 2>&1 && echo OK)" "the daemon answers C-ECHO"

# acked FILE: the raw-sent data set that was acknowledged, for the byte check at the end
: >"$tmp/acked"

# ---------------------------------------------------------------------------- C-STORE
for name in $(names instance store); do
    follow=
    [ -f "$cases/after-$name.ds" ] && follow=$cases/after-$name.ds
    out=$("$python" "$srcdir/tests/badinput.py" store 127.0.0.1 "$port" MMSEGD BADSCU \
        "$cases/$name.ds" $follow 2>&1)
    st=$(echo "$out" | awk -v n="$name" '$1 == n {print $2}')
    after=$(echo "$out" | awk -v n="after-$name" '$1 == n {print $2}')
    expect=$(field "$name" expect)
    case $expect in
    refused) [[ $st =~ ^0x(A9|C|A7) ]] && good=OK || good= ;;
    stored) [[ $st =~ ^0x(0000|B0) ]] && good=OK || good= ;;
    *) [[ $st =~ ^0x ]] && good=OK || good= ;;
    esac
    [[ $st =~ ^0x(0000|B0) ]] && echo "$cases/$name.ds" >>"$tmp/acked"
    [ "$after" = 0x0000 ] && echo "$cases/after-$name.ds" >>"$tmp/acked"
    result "$good" "C-STORE $name ($(field "$name" finding)): $expect, got ${st:-nothing}"
    [ -z "$follow" ] && after=0x0000
    result "$([ "$after" = 0x0000 ] && alive && echo OK)" \
        "C-STORE $name: the association goes on (next instance ${after:-not answered}), daemon up"
done

# ---------------------------------------------------------------------------- drop folder
for name in $(names instance drop); do
    cp "$cases/$name.dcm" "$drop/$name.dcm"
done
# a symbolic link in the drop folder pointing outside it
mkdir -p "$tmp/outside"
cp "$cases/valid-implicit.dcm" "$tmp/outside/secret.dcm"
ln -s "$tmp/outside/secret.dcm" "$drop/link-outside.dcm"
outside_sum=$(sha256sum <"$tmp/outside/secret.dcm")
left() { find "$drop" -name '*.dcm' -type f | wc -l; }
for _ in $(seq 300); do
    [ "$(left)" -eq 0 ] && break
    sleep 0.2
done
result "$([ "$(left)" -eq 0 ] && echo OK)" "drop folder: every regular file taken ($(left) left)"
for name in $(names instance drop); do
    expect=$(field "$name" expect)
    why=$(grep -l -F "$name.dcm" "$state"/quarantine/*.why 2>/dev/null | head -1)
    case $expect in
    refused) good=$([ -n "$why" ] && echo OK) ;;
    stored) good=$([ -z "$why" ] && echo OK) ;;
    *) good=OK ;;
    esac
    result "$good" "drop $name ($(field "$name" finding)): $expect${why:+, quarantined}"
done
result "$([ "$(sha256sum <"$tmp/outside/secret.dcm")" = "$outside_sum" ] && echo OK)" \
    "drop: the file a symbolic link points to outside the folder is untouched"
result "$(alive && echo OK)" "drop folder: the daemon is up"

# ---------------------------------------------------------------------------- series
for name in $(names series store); do
    storescu -aet STORESCU -aec MMSEGD +sd 127.0.0.1 "$port" "$cases/$name" >"$tmp/$name.out" 2>&1
done
series_state() { # UID: state and reason
    "$mmsegd" status -c "$tmp/mmsegd.ini" --json | "$python" -c 'import json,sys
for s in json.load(sys.stdin)["series"]:
    if s["series_uid"] == sys.argv[1]:
        print(s["state"], s.get("reason") or "")' "$1"
}
for name in $(names series store); do
    uid=$(field "$name" series_uid)
    expect=$(field "$name" expect)
    got=
    for i in $(seq 600); do
        got=$(series_state "$uid")
        case ${got%% *} in done | failed | skipped) break ;; esac
        alive || break
        [ -z "$got" ] && [ "$i" -gt 100 ] && break # never arrived
        sleep 0.2
    done
    st=${got%% *}
    why=$(field "$name" reason)
    case $expect in
    failed) [ "$st" = failed ] || [ "$st" = skipped ] && good=OK || good= ;;
    *) [ "$st" = "$expect" ] && good=OK || good= ;;
    esac
    if [ -n "$good" ] && [ -n "$why" ] && ! echo "$got" | grep -qi "$why"; then
        good=
    fi
    result "$good" "series $name ($(field "$name" finding)): $expect${why:+ naming $why}; got: ${got:-nothing}"
done
result "$(alive && echo OK)" "series: the daemon is up"

# ---------------------------------------------------------------------------- the end
"$python" - "$state" "$tmp/acked" <<'PY' >"$tmp/bytes.out" 2>&1
import os, sys
state, acked = sys.argv[1], sys.argv[2]
stored = []
for root, _, files in os.walk(os.path.join(state, "instances")):
    for f in files:
        with open(os.path.join(root, f), "rb") as fh:
            stored.append(fh.read())
bad = 0
for line in open(acked):
    path = line.strip()
    with open(path, "rb") as fh:
        want = fh.read()
    if not any(s.endswith(want) for s in stored):
        print("not kept byte for byte:", os.path.basename(path))
        bad += 1
print("checked", sum(1 for _ in open(acked)), "acknowledged instances,", bad, "not intact")
sys.exit(1 if bad else 0)
PY
result "$([ $? -eq 0 ] && echo OK)" "every acknowledged instance is stored byte for byte: $(tail -1 "$tmp/bytes.out")"
t0=$(date +%s%N)
echo_ok >/dev/null 2>&1
rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
result "$([ $rc -eq 0 ] && [ $ms -lt 1000 ] && echo OK)" "C-ECHO answered at the end in $ms ms"
result "$(alive && echo OK)" "the daemon ran throughout with the same PID ($pid)"
result "$(! grep -qE 'AddressSanitizer|runtime error:|LeakSanitizer' "$tmp/log" && echo OK)" \
    "no sanitizer report in the daemon's log"
[ $failed -eq 0 ] || sed 's/^/# /' "$tmp/log" | grep -iE 'error|crash|signal|quarantin' | head -40
echo "1..$n"
exit $failed
