#!/bin/bash
# Latency of the whole job (the benchmark of the "whole job" issue): from the last C-STORE
# response of a series sent with storescu (the time its instance was stored, which the
# response follows at once) to its SEG stored in a real Orthanc, with
# stable_age_s subtracted, split by stage; CPU backend, the demo model, one series at a time.
#
#   tools/bench-latency.sh [--runs R]
#
# Series: the phantom (tools/mmunet/phantom_series.py, seed 1000, 60 x 128 x 128, 3 mm) and the
# TotalSegmentator example CT (20 x 512 x 512, JPEG 2000; given UIDs as tools/demo.sh does).
# Each is sent R times (default 1); every run after the first uses a copy with new UIDs, so
# it is a new series. Stages: complete = from the last response to the job's start, less
# stable_age_s when the series was complete by quiet time (a series whose Images in
# Acquisition says all slices are there is complete at once, and nothing is subtracted);
# decode, wait (for the engine), preprocess, network, export and SEG from the job's row;
# send = from the job's end to Orthanc's success answer to the C-STORE (the send row's time).
# The SEG is then looked up in Orthanc's REST API. Figures go to _build/bench/latency.json.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
. tests/find-testdata.sh
runs=1
while [ $# -gt 0 ]; do
    case $1 in
    --runs) runs=$2; shift 2 ;;
    *) echo "usage: $0 [--runs R]" >&2; exit 2 ;;
    esac
done
mmsegd=${MMSEGD:-_build/dev/mmsegd}
mmsegd=$(cd "$(dirname "$mmsegd")" && pwd)/$(basename "$mmsegd")
python=${PYTHON3:-/usr/bin/python3}
orthanc=${ORTHANC:-$(command -v Orthanc || echo /usr/sbin/Orthanc)}
find_testdata || { echo "bench-latency: the shared test data is not here" >&2; exit 1; }
for t in "$orthanc" storescu dcmodify curl; do
    command -v "$t" >/dev/null || { echo "bench-latency: $t is missing" >&2; exit 1; }
done
tmp=$(mktemp -d)
pid=
. tests/serve-util.sh
trap serve_cleanup EXIT
stable=2

"$python" tools/mmunet/phantom_series.py write --seed 1000 --out "$tmp/ph" --variants regular \
    >/dev/null
ts=$td/totalsegmentator/tests/reference_files/example_ct_dicom
orthanc_config open ""
orthanc_start open
port=$(free_port)
serve_config "$tmp/mmsegd.ini" "$tmp/state" "$port" "log_level = info" <<INI
[series]
stable_age_s = $stable
[infer]
model = $top/models/demo.safetensors
backend = cpu
[destination pacs]
ae_title = ORTHANC
host = 127.0.0.1
port = $dicom_open
INI
start

# copy NAME SRC N: the series in SRC with new Study/Series/SOP UIDs (run N), in $tmp/NAME-N
copy() {
    local d=$tmp/$1-$3
    mkdir -p "$d"
    cp "$2"/* "$d/"
    dcmodify -nb -i "(0008,0016)=1.2.840.10008.5.1.4.1.1.2" \
        -m "(0020,000D)=2.25.77$3$RANDOM$RANDOM" -m "(0020,000E)=2.25.78$3$RANDOM$RANDOM" \
        -gin "$d"/* >/dev/null 2>&1 || dcmodify -nb -i "(0020,000D)=2.25.77$3$RANDOM" \
        -i "(0020,000E)=2.25.78$3$RANDOM" -gin "$d"/* >/dev/null
    # new SOP Instance UIDs, so no instance is a duplicate of an earlier run's
    for f in "$d"/*; do dcmodify -nb -m "(0008,0018)=2.25.79$3$RANDOM$RANDOM$RANDOM" "$f" >/dev/null; done
    echo "$d"
}
series_of() { dcmdump +P 0020,000e "$(ls "$1"/* | head -1)" | sed 's/.*\[\(.*\)\].*/\1/'; }
seg_in_orthanc() { # SERIES: true when a SEG referring to it is stored
    for id in $(orthanc_get open /instances | "$python" -c 'import json,sys; print(" ".join(json.load(sys.stdin)))'); do
        orthanc_get open "/instances/$id/file" >"$tmp/o.dcm"
        "$python" -c '
import pydicom, sys
d = pydicom.dcmread(sys.argv[1], stop_before_pixels=True)
sys.exit(not (d.Modality == "SEG" and d.ReferencedSeriesSequence[0].SeriesInstanceUID == sys.argv[2]))' "$tmp/o.dcm" "$1" && return 0
    done
    return 1
}
delivered() { # SERIES: its last job done and all its sends done (status in $tmp/status.json)
    "$mmsegd" status -c "$tmp/mmsegd.ini" --json >"$tmp/status.json" 2>/dev/null || return 1
    "$python" - "$tmp/status.json" "$1" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
jobs = [j for j in s["jobs"] if j["series_uid"] == sys.argv[2] and j["state"] == "done"]
sends = [x for x in s["sends"] if jobs and x["job"] == jobs[-1]["job"]]
sys.exit(not (sends and all(x["state"] == "done" for x in sends)))
PY
}
now() { "$python" -c 'import time; print("%.3f" % time.time())'; }

rows=()
for name in phantom ts; do
    src=$tmp/ph/regular/dicom
    opts=""
    [ $name = ts ] && src=$ts && opts=-xv
    for r in $(seq "$runs"); do
        d=$(copy $name "$src" "$r")
        uid=$(series_of "$d")
        storescu $opts -aec MMSEGD 127.0.0.1 "$port" +sd "$d" >/dev/null
        t0=$(now)
        until delivered "$uid"; do sleep 0.1; done
        seg_in_orthanc "$uid" || { echo "bench-latency: no SEG of $uid in Orthanc" >&2; exit 1; }
        quiet=0
        grep -q "series $uid: complete (quiet)" "$tmp/log" && quiet=$stable
        rows+=("$("$python" - "$tmp/status.json" "$uid" "$t0" "$quiet" "$name" <<'PY'
import json, sys
st, uid, t0, stable, name = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
s = json.load(open(st))
j = [x for x in s["jobs"] if x["series_uid"] == uid and x["state"] == "done"][-1]
# the last instance's stored time: its C-STORE response follows it at once
t0 = [x for x in s["series"] if x["series_uid"] == uid][0]["last_received"]
t1 = max(x["state_since"] for x in s["sends"] if x["job"] == j["job"])
t = j["times"]
print(json.dumps({"series": name, "quiet_wait_s": stable, "latency_s": t1 - t0 - stable,
                  "complete_s": j["started"] - t0 - stable, "decode_s": t["decode_s"],
                  "wait_s": t["wait_s"], "preprocess_s": t["preprocess_s"],
                  "network_s": t["network_s"], "export_s": t["export_s"], "seg_s": t["write_s"],
                  "send_s": t1 - j["finished"]}))
PY
)")
    done
done
stop
mkdir -p _build/bench
printf '%s\n' "${rows[@]}" | "$python" -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.strip()]
json.dump({"stable_age_s": '"$stable"', "runs": rows}, open("_build/bench/latency.json", "w"), indent=1)
cols = ["latency_s", "complete_s", "decode_s", "wait_s", "preprocess_s", "network_s",
        "export_s", "seg_s", "send_s"]
print("last C-STORE response -> SEG stored in Orthanc; stable_age_s (%s s) subtracted where the"
      " series waited for it (quiet); CPU, demo model" % '"$stable"')
print("%-8s %6s" % ("series", "quiet") + "".join("%11s" % c[:-2] for c in cols))
for r in rows:
    print("%-8s %5.0fs" % (r["series"], r["quiet_wait_s"]) +
          "".join("%10.2fs" % r[c] for c in cols))
'
