# Sourced by the tests and benchmarks that run the daemon, some beside a real Orthanc (Debian's,
# on loopback with its own ports). Needs $tmp (a scratch folder), $python, $orthanc (the server
# binary) and $mmsegd, each where it is used; serve_config writes a daemon's configuration, and
# the daemon of start/stop runs with $tmp/mmsegd.ini and logs to $tmp/log, its PID in pid.
# Declares opid (the Orthanc PIDs by name); serve_cleanup (for `trap serve_cleanup EXIT`)
# kills the daemon and the Orthanc servers (stopped ones too) and removes $tmp unless KEEP
# is set; also under set -e, where a step that fails (a process gone already, the status of
# one killed) must not end it before the removal.
declare -A opid
pid=
serve_cleanup() {
    if [ -n "$pid" ]; then kill -9 "$pid" 2>/dev/null || true; fi
    for k in "${!opid[@]}"; do
        kill -CONT "${opid[$k]}" 2>/dev/null || true
        kill -9 "${opid[$k]}" 2>/dev/null || true
        wait "${opid[$k]}" 2>/dev/null || true
    done
    [ -n "${KEEP:-}" ] && echo "# kept $tmp" || rm -rf "$tmp"
}
free_port() {
    "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
# wait_for SECONDS COMMAND...: poll every 0.2 s until the command succeeds
wait_for() {
    local end=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -ge $end ] && return 1
        sleep 0.2
    done
}

# ---------------------------------------------------------------------------- Orthanc
# orthanc_config NAME EXTRA_JSON [PLUGINS [AUTH]]: its folder, ports and configuration;
# PLUGINS: the JSON strings of its "Plugins" list; AUTH "true": HTTP basic authentication on
orthanc_config() {
    local d=$tmp/$1
    mkdir -p "$d"
    eval "http_$1=$(free_port) dicom_$1=$(free_port)"
    local http dicom
    eval "http=\$http_$1 dicom=\$dicom_$1"
    cat >"$d/orthanc.json" <<JSON
{
  "Name": "$1",
  "StorageDirectory": "$d/db",
  "IndexDirectory": "$d/db",
  "HttpPort": $http,
  "DicomPort": $dicom,
  "DicomAet": "ORTHANC",
  "DicomCheckCalledAet": true,
  "RemoteAccessAllowed": false,
  "AuthenticationEnabled": ${4:-false},
  "Plugins": [${3:-}],
  "LuaScripts": [],
  "StableAge": 1$2
}
JSON
}
orthanc_start() { # NAME [USER:PASSWORD (of an Orthanc with authentication)]
    local http
    eval "http=\$http_$1"
    "$orthanc" "$tmp/$1/orthanc.json" >>"$tmp/$1/log" 2>&1 &
    opid[$1]=$!
    wait_for 30 curl -sf ${2:+-u "$2"} "http://127.0.0.1:$http/system"
}
orthanc_stop() { # NAME
    kill -TERM "${opid[$1]}" 2>/dev/null
    wait "${opid[$1]}" 2>/dev/null
    unset "opid[$1]"
}
# orthanc_get NAME PATH: the REST answer on stdout
orthanc_get() {
    local http
    eval "http=\$http_$1"
    curl -sf "http://127.0.0.1:$http$2"
}
# orthanc_find NAME SOP_UID: the Orthanc IDs of the instances with that UID, one per line
orthanc_find() {
    local http
    eval "http=\$http_$1"
    curl -sf -d "{\"Level\":\"Instance\",\"Query\":{\"SOPInstanceUID\":\"$2\"}}" \
        "http://127.0.0.1:$http/tools/find" |
        "$python" -c 'import json,sys; [print(i) for i in json.load(sys.stdin)]'
}
# orthanc_instances NAME: how many instances it stores
orthanc_instances() {
    orthanc_get "$1" /instances | "$python" -c 'import json,sys; print(len(json.load(sys.stdin)))'
}


# ---------------------------------------------------------------------------- mmsegd
# serve_config FILE STATE PORT [DAEMON_LINE...]: writes FILE, the mmsegd.ini of `mmsegd serve`
# with its state in STATE and its SCP on 127.0.0.1:PORT open to any calling AE from loopback;
# each DAEMON_LINE ("key = value") goes into [daemon], and the sections on stdin follow [scp]
# (give it </dev/null when there are none). [scp] min_free_mb is $min_free_mb, 1 when unset.
serve_config() {
    local file=$1 state=$2 port=$3
    shift 3
    {
        printf '[daemon]\nstate_dir = %s\n' "$state"
        if [ $# -gt 0 ]; then printf '%s\n' "$@"; fi
        cat <<INI
[scp]
bind = 127.0.0.1
allowed_hosts = 127.0.0.0/8
allowed_calling_aes = any
port = $port
min_free_mb = ${min_free_mb:-1}
INI
        cat
    } >"$file"
}
# GCC 12's AddressSanitizer runtime (libasan) does not lock its allocator around fork(): a
# sandbox child forked while another thread allocates can hang in it (seen: a job's header
# read stuck in SizeClassAllocator64::GetFromAllocator until the job's deadline). The load
# tests, which fork under concurrent allocation all the time, run such a build with isolate =
# no, decoding in the daemon's own threads under the sanitizer: asan_isolation prints that
# line for serve_config (nothing for other builds).
asan_isolation() {
    if ldd "$mmsegd" 2>/dev/null | grep -q libasan; then echo "isolate = no"; fi
    return 0
}
start() {
    "$mmsegd" serve -c "$tmp/mmsegd.ini" >>"$tmp/log" 2>&1 &
    pid=$!
    wait_for 20 grep -q "mmsegd .* ready (pid $pid" "$tmp/log"
}
stop() {
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    pid=
}
# send_field JOB DEST FIELD [FIELD...]: fields of that send in one `mmsegd status --json`,
# separated by blanks (one snapshot, so that two fields belong to the same attempt)
send_field() {
    "$mmsegd" status -c "$tmp/mmsegd.ini" --json | "$python" -c '
import json, sys
for s in json.load(sys.stdin)["sends"]:
    if s["job"] == int(sys.argv[1]) and s["destination"] == sys.argv[2]:
        print(" ".join(str(s[f]) for f in sys.argv[3:]))
' "$@"
}
send_is() { [ "$(send_field "$1" "$2" state)" = "$3" ]; }
attempts_at_least() { [ "$(send_field "$1" "$2" attempts)" -ge "$3" ] 2>/dev/null; }

# phantom_pool COUNT FIRST_SEED: COUNT phantom CT series (tools/mmunet/phantom_series.py,
# 16 slices of 64 x 64, seeds FIRST_SEED on) under $tmp; fills dirs (their DICOM folders) and
# wants ("SERIES_UID=SLICES", for tests/state_check.py segs). Needs $src. Fails with the
# generator's output in $tmp/ph.log.
phantom_pool() {
    "$python" -c '
import os, sys
sys.path.insert(0, sys.argv[1])
import phantom_series as ps
out, count, seed = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
for i in range(count):
    d = os.path.join(out, "ph%d" % i)
    e = ps.write_variant(seed + i, "regular", d, (16, 64, 64), (7.5, 4, 4), 0.0)
    print(os.path.join(d, "dicom"), e["series_uid"], e["dims"][2])
' "$src/tools/mmunet" "$tmp" "$1" "$2" >"$tmp/series.txt" 2>"$tmp/ph.log" || return 1
    dirs=()
    wants=()
    local d uid count
    while read -r d uid count; do
        dirs+=("$d")
        wants+=("$uid=$count")
    done <"$tmp/series.txt"
}
