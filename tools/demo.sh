#!/bin/bash
# README command 1: install, build, start the daemon with the demo configuration
# (etc/demo.ini: the bundled demo model, C-STORE on 127.0.0.1:11112 AE MMSEGD, a drop folder,
# every result copied to demo-out/, the status page and metrics on 127.0.0.1:9411), send it
# two CT series over C-STORE with DCMTK's storescu (a synthetic phantom whose truth is known,
# and the real TotalSegmentator example CT), wait for their SEGs to reach demo-out/, print for
# each where the SEG and its preview are, the organ volumes, the Dice against the phantom's
# truth and the time per stage, then keep serving until Ctrl-C.
#
# Environment (for tests and for trying it beside another mmsegd):
#   MMSEGD_DEMO_BUILD=DIR   use the mmsegd built in DIR; install and build nothing
#   MMSEGD_DEMO_DIR=DIR     state, drop, inputs and results under DIR (default: the source
#                           tree's demo-state/, demo-drop/, demo-inputs/, demo-out/), with
#                           MMSEGD_DEMO_PORT and MMSEGD_DEMO_METRICS_PORT for the ports
#   MMSEGD_DEMO_ONCE=1      stop the daemon and exit 0 once the results are printed
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
py=/usr/bin/python3
if [ -n "${MMSEGD_DEMO_BUILD:-}" ]; then
    mmsegd=$(cd "$MMSEGD_DEMO_BUILD" && pwd)/mmsegd
else
    tools/install-deps.sh
    autoreconf -fi
    mkdir -p _build/demo
    (cd _build/demo && { [ -f Makefile ] || ../../configure --with-cuda=auto; } &&
        make -j"$(nproc)")
    mmsegd=$top/_build/demo/mmsegd
fi
work=$top
config=$top/etc/demo.ini
port=11112
mport=9411
if [ -n "${MMSEGD_DEMO_DIR:-}" ]; then
    mkdir -p "$MMSEGD_DEMO_DIR"
    work=$(cd "$MMSEGD_DEMO_DIR" && pwd)
    port=${MMSEGD_DEMO_PORT:-$port}
    mport=${MMSEGD_DEMO_METRICS_PORT:-$mport}
    config=$work/demo.ini
    sed -e "s|= \.\./demo-|= $work/demo-|" -e "s|= \.\./models/|= $top/models/|" \
        -e "s|^port = 11112|port = $port|" -e "s|127\.0\.0\.1:9411|127.0.0.1:$mport|" \
        etc/demo.ini >"$config"
fi
inputs=$work/demo-inputs
out=$work/demo-out
mkdir -p "$inputs" "$out" "$work/demo-drop"

# ---------------------------------------------------------------------------- the inputs
echo "demo: preparing the inputs in $inputs"
[ -f "$inputs/ph/series.json" ] ||
    "$py" tools/mmunet/phantom_series.py write --seed 1000 --out "$inputs/ph" \
        --variants regular >/dev/null
ph_uid=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["variants"]["regular"]["series_uid"])' "$inputs/ph/series.json")
ts_src=""
for d in "${MMS_TESTDATA:-}" ../shared/testdata /work/shared/testdata; do
    if [ -n "$d" ] && [ -d "$d/totalsegmentator/tests/reference_files/example_ct_dicom" ]; then
        ts_src=$d/totalsegmentator/tests/reference_files/example_ct_dicom
        break
    fi
done
ts_uid=2.25.311204811963540591306151726473402946105
if [ -n "$ts_src" ] && [ ! -d "$inputs/ts" ]; then
    # Its files carry empty SOP Class, Study and Series UIDs; a C-STORE needs them, so the
    # demo gives them UIDs as a sending system would have to (the drop folder derives them).
    mkdir -p "$inputs/ts"
    cp "$ts_src"/CT.* "$inputs/ts/"
    dcmodify -nb -i "(0008,0016)=1.2.840.10008.5.1.4.1.1.2" \
        -i "(0020,000D)=2.25.311204811963540591306151726473402946104" \
        -i "(0020,000E)=$ts_uid" -gin "$inputs/ts"/CT.* >/dev/null
fi

# ---------------------------------------------------------------------------- the daemon
log=$work/demo.log
: >"$log"
"$mmsegd" serve -c "$config" >>"$log" 2>&1 &
pid=$!
stop_daemon() {
    if [ -n "${pid:-}" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=
    fi
}
trap 'stop_daemon; exit 0' INT TERM
trap stop_daemon EXIT
for _ in $(seq 300); do
    grep -q "mmsegd .* ready (pid $pid" "$log" && break
    kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "demo: mmsegd did not start" >&2; exit 1; }
    sleep 0.1
done
echo "demo: mmsegd is running (pid $pid, config $config, log $log)"

echo "demo: sending the phantom series (60 slices) with storescu"
storescu -aec MMSEGD 127.0.0.1 "$port" +sd "$inputs/ph/regular/dicom" >/dev/null
series=("$ph_uid")
if [ -n "$ts_src" ]; then
    echo "demo: sending the TotalSegmentator example (20 slices, JPEG 2000) with storescu"
    storescu -xv -aec MMSEGD 127.0.0.1 "$port" +sd "$inputs/ts" >/dev/null
    series+=("$ts_uid")
else
    echo "demo: the TotalSegmentator example is not here (set MMS_TESTDATA); the phantom only"
fi

# ---------------------------------------------------------------------------- the results
echo "demo: waiting for the SEGs (series complete after stable_age_s, then a job each)"
status=$work/demo-status.json
finished() {
    "$mmsegd" status -c "$config" --json >"$status" 2>/dev/null || return 1
    "$py" - "$status" "${series[@]}" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
state = {x["series_uid"]: x["state"] for x in s["series"]}
todo = [u for u in sys.argv[2:] if state.get(u) not in ("done", "failed", "skipped")]
sys.exit(1 if todo or s["send_counts"]["pending"] else 0)
PY
}
for _ in $(seq 1200); do
    finished && break
    kill -0 "$pid" 2>/dev/null || { tail -20 "$log"; echo "demo: mmsegd stopped" >&2; exit 1; }
    sleep 0.5
done
finished || { echo "demo: no result after 10 minutes; see $log" >&2; exit 1; }
"$mmsegd" model-info "$top/models/demo.safetensors" >"$work/demo-card.txt"
echo
"$py" tools/demo_report.py --seg "$out" --series "$ph_uid" --dicom "$inputs/ph/regular/dicom" \
    --manifest "$inputs/ph/series.json" --variant regular --card "$work/demo-card.txt" \
    --status "$status" --name "phantom (synthetic, truth known)"
if [ -n "$ts_src" ]; then
    echo
    "$py" tools/demo_report.py --seg "$out" --series "$ts_uid" --dicom "$inputs/ts" \
        --status "$status" --name "TotalSegmentator example CT (real)"
fi
echo
echo "demo: mmsegd keeps serving (Ctrl-C stops it). Send more with"
echo "        storescu -aec MMSEGD 127.0.0.1 $port +sd FOLDER"
echo "      or copy files into $work/demo-drop/; results appear in $out/."
echo "      mmsegd status -c $config    shows series, jobs and sends;"
echo "      http://127.0.0.1:$mport/ in a browser: the status page, with the previews;"
echo "      curl http://127.0.0.1:$mport/metrics    the Prometheus figures."
if [ "${MMSEGD_DEMO_ONCE:-}" = 1 ]; then
    stop_daemon
    exit 0
fi
wait "$pid" || true
