#!/bin/bash
# DICOM folder to volume: mmsegd's reader (bench/bench-volume: headers of every file, then
# mms_volume_build) against dcm2niix on the same folders, same machine, in one run
# (make bench-volume; BENCH_ARGS passes options).
#
#   tools/bench-volume.sh [--threads T] [--runs R] [--slices N] [--short]
#
# Cases, from the shared test data: (a) the largest real series, Philips S21610 (54 slices,
# 18.5 degree gantry tilt), (b) TotalSegmentator's example CT (20 slices, JPEG 2000
# lossless), (c) the clean Philips S21570 (28 slices), (d) a synthetic series of N slices
# (default 300) that tools/mkseries.py makes from (c) in a temporary folder, and (e) the
# slices of (b) as one Enhanced CT multi-frame file (tools/mkmultiframe.py: the same
# codestreams), where the threads share the frames of one file.
# Ours runs on 1 and 2 threads (and T); dcm2niix (-z n, single-threaded) writes to a tmpfs
# when there is one, its output removed after every run. Both take the median of R runs
# (default 5) after one untimed run, so both read files from the page cache. --short: R = 3
# and no synthetic series. The target is ours at least 2x faster than dcm2niix.
set -eu
cd "$(dirname "$0")/.."
threads=1,2
runs=5
slices=300
short=no
while [ $# -gt 0 ]; do
    case $1 in
    --threads) case ,$threads, in *,$2,*) ;; *) threads=$threads,$2 ;; esac; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --slices) slices=$2; shift 2 ;;
    --short) short=yes; runs=3; shift ;;
    *) echo "usage: $0 [--threads T] [--runs R] [--slices N] [--short]" >&2; exit 2 ;;
    esac
done
bench=${BENCH_VOLUME:-_build/dev/bench/bench-volume}
py=${PYTHON3:-/usr/bin/python3}
out=_build/bench
mkdir -p "$out"
export LC_ALL=C # EPOCHREALTIME with a decimal point

. tests/find-testdata.sh
if ! find_testdata; then
    echo "bench-volume: the shared test data is not here (set MMS_TESTDATA to its folder)" >&2
    exit 1
fi
if [ ! -x "$bench" ]; then
    echo "bench-volume: $bench is not built (make bench/bench-volume)" >&2
    exit 1
fi

tmp=$(mktemp -d)
shm=
if [ -d /dev/shm ] && [ -w /dev/shm ]; then shm=$(mktemp -d -p /dev/shm); fi
trap 'rm -rf "$tmp" ${shm:+"$shm"}' EXIT
nii_out=${shm:-$tmp}/dcm2niix
nii_fs=$([ -n "$shm" ] && echo "tmpfs /dev/shm" || echo "$(dirname "$tmp") (no tmpfs)")

dcm2niix=$(command -v dcm2niix || true)
[ -n "$dcm2niix" ] || echo "bench-volume: dcm2niix is not installed (apt-get install dcm2niix):" \
    "ours is timed alone, without a ratio" >&2

# time_dcm2niix DIR FILE: one untimed run, then R timed ones; FILE gets one JSON line
time_dcm2niix() {
    local dir=$1 f=$2 r t0 t1 ms=() n
    rm -rf "$nii_out" && mkdir -p "$nii_out"
    if ! "$dcm2niix" -z n -o "$nii_out" "$dir" >"$tmp/dcm2niix.log" 2>&1; then
        echo "bench-volume: dcm2niix failed on $dir (see below); no ratio" >&2
        tail -3 "$tmp/dcm2niix.log" >&2
        return 0
    fi
    n=$(find "$nii_out" -name '*.nii' | wc -l)
    if [ "$n" -eq 0 ]; then
        echo "bench-volume: dcm2niix wrote no NIfTI for $dir; no ratio" >&2
        return 0
    fi
    for ((r = 0; r < runs; r++)); do
        rm -rf "$nii_out" && mkdir -p "$nii_out"
        t0=$EPOCHREALTIME
        "$dcm2niix" -z n -o "$nii_out" "$dir" >/dev/null 2>&1
        t1=$EPOCHREALTIME
        ms+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", (b - a) * 1e3 }')")
    done
    rm -rf "$nii_out"
    "$py" - "$n" "${ms[@]}" >"$f" <<'PY'
import json, statistics, sys
ms = [float(x) for x in sys.argv[2:]]
print(json.dumps({"impl": "dcm2niix", "niftis": int(sys.argv[1]), "runs_ms": ms,
                  "median_ms": statistics.median(ms), "min_ms": min(ms)}))
PY
}

run_case() { # run_case NAME DIR NOTE
    local name=$1 dir=$2 note=$3
    rm -f "$out/volume-$name.jsonl" "$out/volume-$name.dcm2niix.json" "$out/volume-$name.note"
    if [ ! -d "$dir" ]; then
        echo "bench-volume: $name: $dir is not here; skipped" >&2
        return 0
    fi
    echo "== $name: $dir" >&2
    echo "$note" >"$out/volume-$name.note"
    if ! "$bench" "$dir" --threads "$threads" --runs "$runs" >"$out/volume-$name.jsonl"; then
        echo "bench-volume: $name: bench-volume failed" >&2
        rm -f "$out/volume-$name.jsonl"
    fi
    [ -z "$dcm2niix" ] || time_dcm2niix "$dir" "$out/volume-$name.dcm2niix.json"
}

qa=$td/dcm_qa_ct/In/Philips
cases=(philips-tilt ts-j2k philips)
run_case philips-tilt "$qa/S21610/S2010" "gantry tilt 18.5 deg: dcm2niix also writes a \
tilt-corrected resampled copy (a second NIfTI), work ours does not do"
run_case ts-j2k "$td/totalsegmentator/tests/reference_files/example_ct_dicom" \
    "JPEG 2000 lossless"
run_case philips "$qa/S21570/S2010" "clean series, uncompressed"
if [ $short = no ]; then
    if "$py" -c 'import pydicom, numpy' 2>/dev/null; then
        "$py" tools/mkseries.py "$qa/S21570/S2010" "$tmp/synthetic" --slices "$slices" >&2
        cases+=(synthetic)
        run_case synthetic "$tmp/synthetic" "made by tools/mkseries.py from S21570 (a \
temporary folder), uncompressed"
        mkdir -p "$tmp/multiframe"
        "$py" tools/mkmultiframe.py "$td/totalsegmentator/tests/reference_files/example_ct_dicom" \
            "$tmp/multiframe/ts-j2k-multiframe.dcm" >&2
        cases+=(ts-j2k-mf)
        run_case ts-j2k-mf "$tmp/multiframe" "the JPEG 2000 slices of ts-j2k in one Enhanced CT \
file (tools/mkmultiframe.py)"
    else
        echo "bench-volume: $py has no pydicom or numpy (apt-get install python3-pydicom):" \
            "the synthetic $slices-slice and multi-frame cases are skipped" >&2
    fi
fi

"$py" - "$out" "$nii_fs" "${cases[@]}" <<'PY'
import json, os, sys
out, nii_fs, cases = sys.argv[1], sys.argv[2], sys.argv[3:]
print(f"{'case':13} {'slices':>6} {'dims':>12} {'MB':>6} {'impl':10} {'thr':>3} "
      f"{'median ms':>10} {'min ms':>8} {'MB/s':>7} {'ratio':>7}  target")
worst = None
for c in cases:
    p = os.path.join(out, f"volume-{c}.jsonl")
    if not os.path.exists(p):
        print(f"{c:13} no figures (skipped or failed, see above)")
        continue
    ours = [json.loads(l) for l in open(p) if l.strip()]
    q = os.path.join(out, f"volume-{c}.dcm2niix.json")
    peer = json.load(open(q)) if os.path.exists(q) else None
    o0 = ours[0]
    dims = "x".join(str(d) for d in o0["dims"])
    head = f"{c:13} {o0['slices']:6d} {dims:>12} {o0['input_mb']:6.1f}"
    for o in ours:
        ratio = peer["median_ms"] / o["median_ms"] if peer else None
        meets = "" if ratio is None else ("meets 2x" if ratio >= 2.0 else "MISSES 2x")
        rs = f"{ratio:6.2f}x" if ratio is not None else "      -"
        print(f"{head} {'mmsegd':10} {o['threads']:3d} {o['median_ms']:10.1f} "
              f"{o['min_ms']:8.1f} {o['mb_per_s']:7.0f} {rs}  {meets}")
        head = " " * len(head)
        if ratio is not None and (worst is None or ratio < worst[0]):
            worst = (ratio, c, o["threads"])
    if peer:
        print(f"{head} {'dcm2niix':10} {1:3d} {peer['median_ms']:10.1f} {peer['min_ms']:8.1f} "
              f"{o0['input_mb'] / (peer['median_ms'] * 1e-3):7.0f}")
    else:
        print(f"{head} dcm2niix: no figures (not installed or failed)")
    parts = ", ".join(f"{o['threads']} thr: headers {o['walk_headers_median_ms']:.1f} ms + "
                      f"build {o['build_median_ms']:.1f} ms" for o in ours)
    print(f"{'':13} ours: {parts}; HU sum {o0['hu_sum']:.6g}; {o0['files']} files, "
          f"{o0['files_used']} used, tilt {o0['tilt_deg']:.2f} deg"
          + (f"; dcm2niix wrote {peer['niftis']} NIfTI" if peer else ""))
    note = open(os.path.join(out, f"volume-{c}.note")).read().strip()
    print(f"{'':13} note: {note}")
print(f"ratio = dcm2niix median / ours (above 1: we are faster). Ours: walk, headers and volume "
      f"in memory, in-process; dcm2niix: a process that also writes the NIfTI (-z n) and a JSON "
      f"sidecar to {nii_fs}. Both after one untimed run (page cache warm).")
if worst is None:
    print("worst ratio: none (no dcm2niix figures)")
else:
    r, c, t = worst
    print(f"worst ratio: {r:.2f}x ({c}, {t} threads): target ours >= 2x faster than dcm2niix "
          + ("met in every case" if r >= 2.0 else "NOT met"))
PY
