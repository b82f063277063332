#!/bin/bash
# Receiving with durability: instances per second that mmsegd stores (fsync, rename,
# directory fsync, index commit before each success) against DCMTK's storescp (which writes
# without fsync), the same files sent over 4 parallel associations to each, in one run, both
# writing to the same file system. (make bench-intake; BENCH_ARGS passes options.)
#
#   tools/bench-intake.sh [--slices N] [--runs R] [--isolate yes|no]
#
# --isolate sets [daemon] isolate (default yes: each header is read in a sandbox child), to
# measure what the isolation costs per instance.
# Four synthetic series of N slices (default 100) are made by tools/mkseries.py from the
# clean Philips series in a temporary folder; each association sends one. storescp runs with
# --fork (a process per association) so that it receives in parallel too. The target is
# mmsegd / storescp >= 0.8.
set -eu
cd "$(dirname "$0")/.."
slices=100
runs=3
isolate=yes
while [ $# -gt 0 ]; do
    case $1 in
    --slices) slices=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --short) runs=1; slices=40; shift ;;
    --isolate) isolate=$2; shift 2 ;;
    *) echo "usage: $0 [--slices N] [--runs R] [--short] [--isolate yes|no]" >&2; exit 2 ;;
    esac
done
mmsegd=${MMSEGD:-_build/dev/mmsegd}
py=${PYTHON3:-/usr/bin/python3}
. tests/find-testdata.sh
. tests/serve-util.sh
if ! find_testdata; then
    echo "bench-intake: the shared test data is not here (set MMS_TESTDATA to its folder)" >&2
    exit 1
fi
for t in storescp storescu echoscu; do
    command -v $t >/dev/null || { echo "bench-intake: $t is not installed (DCMTK)" >&2; exit 1; }
done
work=$(mktemp -d "$PWD/_build/bench-intake.XXXXXX") # on the disk, not a tmpfs
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$work"' EXIT
for k in 1 2 3 4; do
    "$py" tools/mkseries.py "$td/dcm_qa_ct/In/Philips/S21570/S2010" "$work/in$k" \
        --slices "$slices" --copy "$k" >/dev/null
done
total=$((4 * slices))
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_echo() { # AE PORT
    for _ in $(seq 100); do
        echoscu -to 2 -aec "$1" 127.0.0.1 "$2" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}
send_all() { # AE PORT: 4 associations at once; prints seconds
    local t0 t1
    t0=$EPOCHREALTIME
    for k in 1 2 3 4; do
        storescu -aec "$1" 127.0.0.1 "$2" +sd "$work/in$k" >"$work/scu$k.log" 2>&1 &
    done
    wait
    t1=$EPOCHREALTIME
    for k in 1 2 3 4; do
        if grep -q "E:" "$work/scu$k.log"; then
            echo "bench-intake: storescu $k reported errors:" >&2
            head -5 "$work/scu$k.log" >&2
            exit 1
        fi
    done
    echo "$t1 - $t0" | bc -l
}
export LC_ALL=C
ours=()
theirs=()
for r in $(seq "$runs"); do
    # storescp
    port=$(free_port)
    rm -rf "$work/scp" && mkdir "$work/scp"
    storescp --fork -aet STORESCP -od "$work/scp" +xa "$port" >/dev/null 2>&1 &
    pid=$!
    wait_echo STORESCP "$port"
    theirs+=("$(send_all STORESCP "$port")")
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    pid=
    # mmsegd
    port=$(free_port)
    rm -rf "$work/state"
    serve_config "$work/mmsegd.ini" "$work/state" "$port" "log_level = warning" \
        "isolate = $isolate" </dev/null
    "$mmsegd" serve -c "$work/mmsegd.ini" >>"$work/mmsegd.log" 2>&1 &
    pid=$!
    wait_echo MMSEGD "$port"
    ours+=("$(send_all MMSEGD "$port")")
    stored=$(find "$work/state/instances" -name '*.dcm' | wc -l)
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    pid=
    if [ "$stored" -ne "$total" ]; then
        echo "bench-intake: mmsegd stored $stored of $total instances" >&2
        grep -E " (err|warning): " "$work/mmsegd.log" | tail -5 >&2
        exit 1
    fi
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
mo=$(median "${ours[@]}")
mt=$(median "${theirs[@]}")
printf 'instances: %d (4 associations x %d), runs: %d, isolate: %s, file system: %s\n' "$total" \
    "$slices" "$runs" "$isolate" "$(df --output=fstype "$work" | tail -1)"
printf '%-10s %10s %14s\n' impl "median s" "instances/s"
printf '%-10s %10.3f %14.1f\n' storescp "$mt" "$(echo "$total / $mt" | bc -l)"
printf '%-10s %10.3f %14.1f\n' mmsegd "$mo" "$(echo "$total / $mo" | bc -l)"
ratio=$(echo "$mt / $mo" | bc -l)
printf 'ratio mmsegd/storescp (instances/s): %.2f (target >= 0.8: %s)\n' "$ratio" \
    "$(echo "$ratio >= 0.8" | bc -l | sed 's/1/met/; s/0/NOT met/')"
