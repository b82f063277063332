#!/bin/bash
# Load: ASSOCIATIONS (32) storescu processes send to one `mmsegd serve` at once, for SECONDS
# (20 here; `make soak` runs 300), each its own series of 200 small slices (a phantom series
# copied by tools/mkseries.py), sent again and again until the time is up (the second and
# later rounds are duplicates, which the daemon checks byte for byte and stores once). Every
# C-STORE's response time is taken from storescu's own log (the time between "Sending Store
# Request" and "Received Store Response"), and the figures are printed: instances per second,
# the median, 99th percentile and worst C-STORE response time, the number of associations
# refused.
# Checks: every C-STORE answered success, no association refused or aborted, every distinct
# instance sent stored once (the index and the files agree), C-ECHO answered within 5 s while
# the load runs (a new association among the busy ones; each echoscu process timed whole),
# the daemon up throughout.
set -u
mmsegd=${MMSEGD:-./mmsegd}
python=${PYTHON3:-/usr/bin/python3}
src=$(cd "${srcdir:-.}" && pwd)
assocs=${ASSOCIATIONS:-32}
seconds=${LOAD_SECONDS:-20}
slices=200
. "$src/tests/find-testdata.sh"
require_tools storescu echoscu sqlite3
require_python pydicom numpy
. "$src/tests/serve-util.sh" # pid, opid, serve_cleanup, free_port
tmp=$(mktemp -d)
trap serve_cleanup EXIT
port=$(free_port)
serve_config "$tmp/mmsegd.ini" "$tmp/state" "$port" "log_level = warning" "$(asan_isolation)" <<EOF
max_associations = $((assocs + 4))
max_associations_per_host = $((assocs + 4))
EOF

"$python" "$src/tools/mmunet/phantom_series.py" write --seed 1301 --out "$tmp/ph" \
    --variants regular --shape 16 64 64 --spacing 3 3 3 >/dev/null 2>"$tmp/gen.err"
for k in $(seq "$assocs"); do
    "$python" "$src/tools/mkseries.py" "$tmp/ph/regular/dicom" "$tmp/in$k" --slices $slices \
        --copy "$k" >/dev/null 2>>"$tmp/gen.err" || break
done
if [ "$(find "$tmp"/in* -name '*.dcm' | wc -l)" -ne $((assocs * slices)) ]; then
    echo "1..1"
    echo "not ok 1 - $assocs series of $slices slices were made"
    sed 's/^/# /' "$tmp/gen.err"
    exit 1
fi
cat >"$tmp/log.cfg" <<'EOF'
log4cplus.rootLogger = INFO, console
log4cplus.appender.console = log4cplus::ConsoleAppender
log4cplus.appender.console.layout = log4cplus::PatternLayout
log4cplus.appender.console.layout.ConversionPattern = %D{%s.%Q} %m%n
EOF

start
result "$([ -n "$pid" ] && echo OK)" "the daemon started"
# sender K: sends its series until the time is up, one association per round
sender() {
    local k=$1 end=$2 r=0
    while [ "$(date +%s)" -lt "$end" ]; do
        r=$((r + 1))
        storescu --log-config "$tmp/log.cfg" -aet "LOAD$k" -aec MMSEGD -to 30 -ta 30 -td 60 \
            127.0.0.1 "$port" +sd "$tmp/in$k" >"$tmp/scu$k.$r.log" 2>&1
        echo "$?" >"$tmp/scu$k.$r.rc"
    done
}
t0=$(date +%s.%N)
end=$(($(date +%s) + seconds))
spids=()
for k in $(seq "$assocs"); do
    sender "$k" "$end" &
    spids+=($!)
done
# C-ECHO while the load runs
worst_echo=0
while [ "$(date +%s)" -lt "$end" ]; do
    e0=$(date +%s%N)
    echoscu -to 5 -aec MMSEGD 127.0.0.1 "$port" >/dev/null 2>&1 || worst_echo=99999
    ms=$((($(date +%s%N) - e0) / 1000000))
    [ "$ms" -gt "$worst_echo" ] && worst_echo=$ms
    sleep 1
done
wait "${spids[@]}"
t1=$(date +%s.%N)

"$python" - "$tmp" "$t0" "$t1" >"$tmp/figures" <<'PY'
import glob, sys
tmp, t0, t1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
def ts(tok):
    a, b, c = tok.split(".")
    return int(a) + int(b) / 1e3 + int(c) / 1e6
lat, ok, bad, refused = [], 0, 0, 0
first = last = None
for log in glob.glob(tmp + "/scu*.log"):
    sent = None
    for line in open(log, errors="replace"):
        parts = line.split(" ", 1)
        if len(parts) < 2:
            continue
        try:
            t = ts(parts[0])
        except ValueError:
            continue
        msg = parts[1]
        if msg.startswith("Sending Store Request"):
            sent = t
        elif msg.startswith("Received Store Response"):
            if "(Success)" in msg:
                ok += 1
            else:
                bad += 1
            if sent is not None:
                lat.append(t - sent)
                first = t if first is None else min(first, t)
                last = t if last is None else max(last, t)
            sent = None
        elif "Association Rejected" in msg or "Association Request Failed" in msg:
            refused += 1
lat.sort()
n = len(lat)
pct = lambda p: lat[min(n - 1, int(p * n))] * 1000 if n else float("nan")
print("responses %d success %d failed %d refused %d" % (n, ok, bad, refused))
print("rate %.1f" % (n / (t1 - t0)))
print("latency_ms median %.1f p99 %.1f worst %.1f" % (pct(0.5), pct(0.99), lat[-1] * 1000 if n else float("nan")))
PY
figures=$(tr '\n' ' ' <"$tmp/figures")
echo "# $assocs associations for $seconds s: $figures; worst C-ECHO during the load $worst_echo ms"
read -r _ responses _ success _ fails _ refused <"$tmp/figures"
rcs=$(cat "$tmp"/scu*.rc | sort | uniq -c | tr '\n' ' ')
result "$([ "${responses:-0}" -gt 0 ] && [ "$responses" = "$success" ] && [ "$fails" = 0 ] && echo OK)" \
    "every C-STORE answered success ($success of $responses)"
result "$([ "$refused" = 0 ] && [ -z "$(grep -lv '^0$' "$tmp"/scu*.rc)" ] && echo OK)" \
    "no association refused or failed (storescu exit codes: $rcs)"
result "$([ "$worst_echo" -lt 5000 ] && echo OK)" "C-ECHO answered within 5 s during the load (worst $worst_echo ms)"
# the distinct instances sent in the whole first rounds, or in part when the time ran out
stored=$(sqlite3 -readonly "$tmp/state/state.db" 'SELECT count(*) FROM instances;')
files=$(find "$tmp/state/instances" -name '*.dcm' | wc -l)
distinct=$(grep -h '^[0-9.]* Received Store Response (Success)' "$tmp"/scu*.1.log | wc -l)
result "$([ "$stored" = "$files" ] && [ "$stored" -ge "$distinct" ] &&
    [ "$stored" -le $((assocs * slices)) ] && echo OK)" \
    "distinct instances stored once: $stored in the index, $files files, $distinct acknowledged in the first rounds"
result "$(kill -0 "$pid" 2>/dev/null && echo OK)" "the daemon ran throughout with the same PID ($pid)"
echo "1..$n"
exit $failed
