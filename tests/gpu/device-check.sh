#!/bin/bash
# The GPU machine's check, in one command from the source tree's root:
#
#   bash tests/gpu/device-check.sh OUTDIR
#
# Unpacks .gpu/gpu-bundle.tar.xz (make gpu-bundle; DEVICE_CHECK_BUNDLE=FILE for another) into
# a temporary folder, prints a probe of the machine (GPUs, driver, where the CUDA runtime,
# cuBLAS and cuDNN the bundle expects from the machine are), then runs:
#   1. the libraries: every bundled program resolves all it needs;
#   2. every GPU test program in the bundle (TAP), each with its timeout, with srcdir=bundle
#      (fixtures) and LD_LIBRARY_PATH=bundle/lib; then mmsegd --version, model-info --backend
#      cuda, and mmsegd segment of a phantom CT (bundled) on the CPU and on CUDA: the CUDA
#      labels must agree with the CPU's on 99.5% of the voxels without mirroring, 99.9% with
#      (every label's Dice against the CPU's at least 0.999), mean Dice against the truth
#      within 0.01; then with a 1 MiB device memory limit, the CPU's labels exactly;
#   3. the benchmarks, last, while time is left: test-mixer-cuda --bench (the scan), then
#      bench-forward on the CUDA backend at batch 1 and 8 in fp32, bf16 and fp16 and the
#      PyTorch reference (tools/mmunet/bench_forward.py --device cuda, fp32, tf32, bf16, fp16)
#      on the same file, for the nnU-Net-size model and the same network without Mamba; the
#      model files are made here from their seed (tools/mmunet/bench_model.py, while the tests
#      run), as they are too large to carry.
# Every step is recorded, none stops the run, and the run ends within DEVICE_CHECK_BUDGET_S
# seconds (default 400): a step gets at most the time left, and steps with no time left are
# reported as skipped. OUTDIR receives (8 files at most):
#   probe.txt      the probe
#   summary.tap    one TAP line per step and a last line "N passed, N failed, N skipped"
#   summary.txt    the same with figures and the first failures of each step
#   summary.json   the steps as JSON, with the benchmark rows
#   bench.jsonl    one JSON object per benchmark measurement
#   logs.tar.gz    the full output of every step
# stdout stays short: the probe, one line per step, the benchmark table, the totals.
# Exit status: 0 when no step failed, 1 otherwise, 2 for a usage error.
set -u
if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
mkdir -p "$1" || exit 2
out=$(cd "$1" && pwd)
src=$(cd "$(dirname "$0")/../.." && pwd)
bundle_xz=${DEVICE_CHECK_BUNDLE:-$src/.gpu/gpu-bundle.tar.xz}
budget=${DEVICE_CHECK_BUDGET_S:-400}
tests_until=$((budget * 6 / 10)) # the tests end by then; the benchmarks take the rest
t0=$(date +%s)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/device-check.XXXXXX") || exit 2
logs=$tmp/logs
mkdir -p "$logs"
py=$(command -v python3 || echo python3)

elapsed() { echo $(($(date +%s) - t0)); }

# ---------------------------------------------------------------------------- recording
names=()
states=() # ok, fail or skip
details=()
secs=()
record() { # record NAME STATE SECONDS DETAIL
    names+=("$1")
    states+=("$2")
    secs+=("$3")
    details+=("$4")
    local n=${#names[@]} word=ok sfx=
    [ "$2" = fail ] && word="not ok"
    [ "$2" = skip ] && sfx=" # SKIP"
    printf '%s %d - %s (%s s)%s %s\n' "$word" "$n" "$1" "$3" "$sfx" "$4" | cut -c1-200
}

# run_step NAME TIMEOUT UNTIL LOG KIND CMD...: run CMD in bundle/, stdout and stderr to LOG,
# for at most TIMEOUT seconds and not past UNTIL (seconds from the start). KIND tap: passes
# when the exit status is 0 and the TAP output has no "not ok" and as many results as its
# plan; KIND rc: passes on exit status 0.
run_step() {
    local name=$1 to=$2 until=$3 log=$4 kind=$5
    shift 5
    local left=$((until - $(elapsed)))
    [ "$left" -lt "$to" ] && to=$left
    if [ "$to" -lt 5 ]; then
        record "$name" skip 0 "no time left (budget ${budget} s)"
        return 0
    fi
    local s rc
    s=$(date +%s)
    (cd "$b" && timeout -k 5 "$to" "$@") >"$log" 2>&1
    rc=$?
    local d detail
    d=$(($(date +%s) - s))
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        record "$name" fail "$d" "timed out after ${to} s"
        return 1
    fi
    if [ "$kind" = tap ]; then
        local nok nnot nskip plan
        nok=$(grep -c '^ok ' "$log")
        nnot=$(grep -c '^not ok ' "$log")
        nskip=$(grep -c '^ok .*# *[Ss][Kk][Ii][Pp]' "$log")
        plan=$(sed -n 's/^1\.\.\([0-9][0-9]*\).*/\1/p' "$log" | head -1)
        detail="$nok/${plan:-?} ok, $nskip skipped, exit $rc"
        if [ $rc -eq 0 ] && [ "$nnot" -eq 0 ] && [ -n "$plan" ] &&
            [ $((nok + nnot)) -eq "$plan" ]; then
            if [ "$plan" -eq 0 ]; then
                record "$name" skip "$d" "$(grep -m1 '^1\.\.0' "$log" | cut -c1-160)"
            else
                record "$name" ok "$d" "$detail"
            fi
            return 0
        fi
        detail="$detail; $(grep -m3 -e '^not ok ' -e '^Bail out' "$log" | tr '\n' ';' | cut -c1-300)"
        record "$name" fail "$d" "$detail"
        return 1
    fi
    if [ $rc -eq 0 ] && grep -q '^1\.\.0' "$log"; then
        record "$name" skip "$d" "$(grep -m1 '^1\.\.0' "$log" | cut -c1-160)"
        return 0
    fi
    if [ $rc -eq 0 ]; then
        record "$name" ok "$d" "$(tail -1 "$log" | cut -c1-160)"
        return 0
    fi
    record "$name" fail "$d" "exit $rc: $(grep -v '^\s*$' "$log" | tail -2 | tr '\n' ';' | cut -c1-300)"
    return 1
}

# ---------------------------------------------------------------------------- the end
finish() {
    trap - EXIT
    [ -n "${gen_pid:-}" ] && kill "$gen_pid" 2>/dev/null
    local i np=0 nf=0 ns=0
    {
        for i in "${!names[@]}"; do
            case ${states[$i]} in
            ok) echo "ok $((i + 1)) - ${names[$i]}"; np=$((np + 1)) ;;
            skip) echo "ok $((i + 1)) - ${names[$i]} # SKIP ${details[$i]}"; ns=$((ns + 1)) ;;
            *) echo "not ok $((i + 1)) - ${names[$i]}"; nf=$((nf + 1)) ;;
            esac
        done
        echo "1..${#names[@]}"
        echo "$np passed, $nf failed, $ns skipped"
    } >"$out/summary.tap"
    {
        echo "device-check: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(elapsed) s of ${budget} s"
        echo "bundle: $(head -3 "$b/MANIFEST" 2>/dev/null | tail -2 | tr '\n' ' ')"
        for i in "${!names[@]}"; do
            printf '%-4s %3d %-46s %4s s  %s\n' "${states[$i]}" $((i + 1)) "${names[$i]}" \
                "${secs[$i]}" "${details[$i]}"
        done
        [ -s "$tmp/table.txt" ] && cat "$tmp/table.txt"
        [ -s "$logs/scan-bench.log" ] && { echo "scan benchmark (last lines):"; tail -8 "$logs/scan-bench.log"; }
        echo "$np passed, $nf failed, $ns skipped"
    } >"$out/summary.txt"
    for i in "${!names[@]}"; do
        printf '%s\t%s\t%s\t%s\n' "${names[$i]}" "${states[$i]}" "${secs[$i]}" "${details[$i]}"
    done >"$tmp/steps.tsv"
    "$py" - "$tmp/steps.tsv" "$out/bench.jsonl" "$out/summary.json" "$(elapsed)" "$budget" <<'PY' ||
import json, os, sys
steps_tsv, bench, dest, el, budget = sys.argv[1:6]
steps = []
for line in open(steps_tsv, encoding="utf-8", errors="replace"):
    n, st, s, d = (line.rstrip("\n").split("\t") + ["", "", "", ""])[:4]
    steps.append({"name": n, "state": st, "seconds": int(s or 0), "detail": d})
rows = []
if os.path.exists(bench):
    for line in open(bench):
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass
count = {k: sum(1 for s in steps if s["state"] == k) for k in ("ok", "fail", "skip")}
json.dump({"elapsed_s": int(el), "budget_s": int(budget), "passed": count["ok"],
           "failed": count["fail"], "skipped": count["skip"], "steps": steps, "bench": rows},
          open(dest, "w"), indent=1)
PY
        echo "device-check: summary.json not written (python3 failed)"
    tar -C "$tmp" -czf "$out/logs.tar.gz" logs 2>/dev/null
    rm -rf "$tmp"
    echo "summary: $np passed, $nf failed, $ns skipped ($(elapsed) s; details in $out)"
    [ $nf -eq 0 ] && exit 0
    exit 1
}
trap finish EXIT
trap 'exit 1' INT TERM

# ---------------------------------------------------------------------------- unpack, probe
b=$tmp/bundle
s=$(date +%s)
if [ -f "$bundle_xz" ] && tar -C "$tmp" -xJf "$bundle_xz" 2>"$logs/unpack.log" && [ -f "$b/MANIFEST" ]; then
    record "unpack $(basename "$bundle_xz")" ok $(($(date +%s) - s)) \
        "$(stat -c %s "$bundle_xz") bytes; $(sed -n 's/^revision: //p' "$b/MANIFEST")"
else
    record "unpack $bundle_xz" fail 0 "missing or unreadable (make gpu-bundle)"
    exit 1
fi
progs=$(sed -n 's/^programs: //p' "$b/MANIFEST")
target_libs=$(sed -n 's/^target-libs: //p' "$b/MANIFEST")

# Where the machine keeps a library: ldconfig's cache first, then the usual CUDA folders and
# the NVIDIA wheels of the Python installation.
extra_dirs=()
find_lib() { # find_lib SONAME: its path, or nothing
    local p d
    p=$(ldconfig -p 2>/dev/null | awk -v n="$1" '$1 == n && /x86-64/ { print $NF; exit }')
    if [ -n "$p" ]; then echo "$p"; return; fi
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
        /usr/lib/x86_64-linux-gnu $("$py" -c 'import glob, site
for s in site.getsitepackages(): print(*glob.glob(s + "/nvidia/*/lib"))' 2>/dev/null); do
        [ -e "$d/$1" ] && { echo "$d/$1"; return; }
    done
}
{
    echo "== probe $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
    command -v nvidia-smi >/dev/null || echo "nvidia-smi: not found"
    nvidia-smi -L 2>&1 | head -8
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1 |
        head -1 | sed 's/^/gpu: /'
    echo "cuda (driver API): $(nvidia-smi 2>/dev/null | grep -o 'CUDA Version: [0-9.]*' | head -1)"
    echo "glibc: $(ldd --version 2>&1 | head -1)"
    for l in $target_libs; do
        p=$(find_lib "$l")
        if [ -z "$p" ]; then
            echo "$l: NOT FOUND"
        else
            echo "$l: $p -> $(basename "$(readlink -f "$p")")"
            case $(ldconfig -p 2>/dev/null | awk -v n="$l" '$1 == n' | head -1) in
            '') extra_dirs+=("$(dirname "$p")") ;;
            esac
        fi
    done
    echo "bundle: $(sed -n 's/^\(revision\|built\|needs\): //p' "$b/MANIFEST" | tr '\n' ' ')"
    echo "python: $("$py" -c 'import torch, numpy; print("torch", torch.__version__, "cuda", torch.version.cuda,
"available", torch.cuda.is_available(), "cudnn", torch.backends.cudnn.version(), "numpy", numpy.__version__)' 2>&1 | tail -1)"
} >"$out/probe.txt" 2>&1
libpath=$b/lib
for d in "${extra_dirs[@]}"; do libpath=$libpath:$d; done
export LD_LIBRARY_PATH=$libpath${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export srcdir=$b
cat "$out/probe.txt"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" | sed "s|$tmp|\$TMP|g" >>"$out/probe.txt"

# The benchmark models, from their seed, on the CPU while the tests use the GPU.
mkdir -p "$tmp/models"
(cd "$b" && for preset in nnunet nnunet-cnn; do
    timeout 120 "$py" tools/mmunet/bench_model.py "$tmp/models/$preset.safetensors" \
        --preset "$preset" --seed 1 || exit 1
done) >"$logs/bench-model.log" 2>&1 &
gen_pid=$!

# ---------------------------------------------------------------------------- 1. libraries
missing=
for p in $progs; do
    m=$(ldd "$b/$p" 2>&1 | awk '/not found/ { print $1 }' | tr '\n' ' ')
    [ -n "$m" ] && missing="$missing $p: $m;"
done
if [ -z "$missing" ]; then
    record "libraries resolve for: $progs" ok 0 ""
else
    record "libraries resolve" fail 0 "$missing"
fi

# ---------------------------------------------------------------------------- 2. tests
have() { [ -x "$b/$1" ]; }
for t in tests/test-kernels:60 tests/test-backend-ops:150 tests/test-mixer-cuda:120 \
    tests/test-forward:90; do
    p=${t%%:*}
    have "$p" || continue
    run_step "$p" "${t##*:}" $tests_until "$logs/$(basename "$p").log" tap "./$p"
done
if have mmsegd; then
    run_step "mmsegd --version" 10 $tests_until "$logs/mmsegd-version.log" rc ./mmsegd --version
    run_step "mmsegd model-info --backend cuda" 30 $tests_until "$logs/mmsegd-model-info.log" \
        rc ./mmsegd model-info --backend cuda models/demo.safetensors
    if [ "${states[-1]}" = ok ] && ! grep -q '^backend: cuda' "$logs/mmsegd-model-info.log"; then
        states[-1]=fail
        details[-1]="no 'backend: cuda' line: $(grep '^backend' "$logs/mmsegd-model-info.log")"
        echo "not ok ${#names[@]} - ${details[-1]}"
    fi
fi

# The whole job on a phantom CT (tools/mmunet/phantom_series.py, seed 1000, regular; made at
# bundle time): labels from the CUDA backend (its sliding window on the device) against the
# CPU's and against the truth, without and with mirroring; then a device memory limit of
# 1 MiB, which sends the job to the CPU: the CPU's labels exactly.
compare_labels() { # compare_labels NAME CPU-DIR CUDA-DIR MIN-AGREEMENT MIN-LABEL-DICE
    run_step "$1" 30 $tests_until "$logs/compare-$(echo "$1" | tr -c 'a-z0-9\n' '-').log" rc \
        "$py" tests/label_agreement.py "$2" "$3" --truth phantom/regular/truth.nii.gz \
        --min-agree "$4" --min-dice "$5" --names cpu,cuda
}
if have mmsegd && [ -d "$b/phantom/regular/dicom" ]; then
    for be in cpu cuda; do
        run_step "mmsegd segment --backend $be (phantom, no TTA)" 120 $tests_until \
            "$logs/segment-$be.log" rc ./mmsegd segment --model models/demo.safetensors \
            --backend $be --tta no --nifti "$tmp/seg-$be" phantom/regular/dicom
    done
    compare_labels "segment: cuda labels against cpu's and the truth" "$tmp/seg-cpu" \
        "$tmp/seg-cuda" 0.995 0.99
    for be in cpu cuda; do
        run_step "mmsegd segment --backend $be (phantom, TTA)" 120 $tests_until \
            "$logs/segment-tta-$be.log" rc ./mmsegd segment --model models/demo.safetensors \
            --backend $be --json --nifti "$tmp/seg-tta-$be" phantom/regular/dicom
    done
    compare_labels "segment with TTA: cuda labels against cpu's (99.9 %, Dice 0.999)" \
        "$tmp/seg-tta-cpu" "$tmp/seg-tta-cuda" 0.999 0.999
    run_step "segment --backend cuda: the sliding window ran on the device" 10 $tests_until \
        "$logs/segment-window.log" rc grep -q '"window_on_backend":[[:space:]]*true' \
        "$logs/segment-tta-cuda.log"
    run_step "mmsegd segment --backend cuda --max-device-memory-mb 1 (to the CPU)" 120 \
        $tests_until "$logs/segment-fallback.log" rc ./mmsegd segment \
        --model models/demo.safetensors --backend cuda --tta no --max-device-memory-mb 1 \
        --json --nifti "$tmp/seg-fallback" phantom/regular/dicom
    run_step "the 1 MiB device limit ran the job on the CPU, with the reason" 10 $tests_until \
        "$logs/segment-fallback-why.log" rc grep -q '"cpu_fallback":.*device memory' \
        "$logs/segment-fallback.log"
    compare_labels "the CPU's labels exactly after the fallback" "$tmp/seg-cpu" \
        "$tmp/seg-fallback" 1.0 1.0
fi

# ---------------------------------------------------------------------------- 3. benchmarks
if have tests/test-mixer-cuda; then
    run_step "scan benchmark (test-mixer-cuda --bench)" 60 "$budget" "$logs/scan-bench.log" rc \
        ./tests/test-mixer-cuda --bench
fi
s=$(date +%s)
left=$((budget - $(elapsed)))
[ $left -gt 150 ] && left=150
if [ $left -gt 0 ] && timeout "$left" tail --pid="$gen_pid" -f /dev/null; then
    wait "$gen_pid"
    rc=$?
else
    rc=124
fi
gen_pid=
models=()
if [ $rc -eq 0 ]; then
    record "benchmark models from seed 1 (bench_model.py)" ok $(($(date +%s) - s)) \
        "$(grep -o 'sha256 [0-9a-f]\{12\}' "$logs/bench-model.log" | tr '\n' ' ')"
    models=(nnunet nnunet-cnn)
else
    record "benchmark models from seed 1 (bench_model.py)" fail $(($(date +%s) - s)) \
        "exit $rc: $(tail -2 "$logs/bench-model.log" | tr '\n' ';' | cut -c1-200)"
fi

# bench_row LOG KEY=VALUE...: append the JSON lines of LOG, with the keys, to bench.jsonl
bench_row() {
    "$py" - "$@" >>"$out/bench.jsonl" <<'PY' 2>>"$logs/bench-rows.log"
import json, sys
rows = [l for l in open(sys.argv[1]) if l.lstrip().startswith("{")]
for l in rows:
    r = json.loads(l)
    for kv in sys.argv[2:]:
        k, v = kv.split("=", 1)
        r[k] = int(v) if v.isdigit() else v
    print(json.dumps(r))
PY
}
: >"$out/bench.jsonl"
for batch in 1 8; do
    for m in "${models[@]}"; do
        f=$tmp/models/$m.safetensors
        group=
        [ "$m" = nnunet ] && group="--group 65536"
        runs=5
        [ $batch -gt 1 ] && runs=3
        if have bench/bench-forward; then
            for prec in fp32 bf16 fp16; do
                log=$logs/bench-$m-b$batch-$prec.log
                run_step "bench-forward cuda $m batch $batch $prec" 60 "$budget" "$log" rc \
                    ./bench/bench-forward "$f" --backend cuda \
                    --precision $prec --batch $batch --tile 64 128 128 --runs $runs
                bench_row "$log" case=$m impl=mmsegd backend=cuda precision=$prec batch=$batch
            done
        fi
        log=$logs/bench-$m-b$batch-pytorch.log
        # shellcheck disable=SC2086
        run_step "pytorch cuda $m batch $batch fp32,tf32,bf16,fp16" 120 "$budget" "$log" rc \
            "$py" tools/mmunet/bench_forward.py "$f" --device cuda --tile 64 128 128 \
            --precision fp32,tf32,bf16,fp16 --batch $batch --runs $runs $group --json
        bench_row "$log" case=$m # the cases done before a timeout count
    done
done

# The CPU engine on the host's cores, last and as the budget allows (the CPU issue's sweep):
# 2, 8 and all threads, fp32 and bf16, one timed pass each.
if have bench/bench-forward; then
    all=$(nproc)
    for m in "${models[@]}"; do
        f=$tmp/models/$m.safetensors
        for prec in fp32 bf16; do
            for t in 2 8 "$all"; do
                log=$logs/bench-cpu-$m-$prec-t$t.log
                run_step "bench-forward cpu $m $prec $t threads" 90 "$budget" "$log" rc \
                    ./bench/bench-forward "$f" --backend cpu --precision $prec --threads "$t" \
                    --tile 64 128 128 --runs 1
                bench_row "$log" case=$m backend=cpu
            done
        done
    done
fi

# The table: per case, batch and precision, ours against PyTorch's (fp32 also against tf32).
if [ -s "$out/bench.jsonl" ]; then
    "$py" - "$out/bench.jsonl" >"$tmp/table.txt" 2>>"$logs/bench-rows.log" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def get(case, impl, prec, batch):
    for r in rows:
        if (r.get("case"), r.get("impl"), r.get("precision"), int(r.get("batch", 1))) == \
                (case, impl, prec, batch):
            return r.get("median_ms")
    return None
def fmt(v):
    return f"{v:10.1f}" if isinstance(v, (int, float)) else f"{'-':>10}"
print(f"{'case':10} {'batch':>5} {'prec':5} {'mmsegd ms':>10} {'pytorch ms':>10} {'ratio':>6}"
      f"  (median per pass; ratio = pytorch / mmsegd; fp32 also vs pytorch tf32)")
keys = sorted({(r.get("case"), int(r.get("batch", 1))) for r in rows}, key=lambda k: (k[1], k[0]))
for case, batch in keys:
    for prec in ("fp32", "tf32", "bf16", "fp16"):
        ours = get(case, "mmsegd", "fp32" if prec == "tf32" else prec, batch)
        peer = get(case, "pytorch", prec, batch)
        if ours is None and peer is None:
            continue
        ratio = f"{peer / ours:6.2f}" if ours and peer else f"{'-':>6}"
        print(f"{case:10} {batch:5d} {prec:5} {fmt(ours if prec != 'tf32' else None)} "
              f"{fmt(peer)} {ratio}")
cpu = [r for r in rows if r.get("backend") == "cpu" and "median_ms" in r]
if cpu:
    print(f"\nCPU engine: {'case':10} {'prec':5} {'threads':>7} {'median s':>9} {'conv GF/s':>10}"
          f" {'alone':>7} {'norm s':>7} {'mixer s':>8}")
for r in cpu:
    p = r["profile_ms"]
    print(f"            {r['case']:10} {r['precision']:5} {r['threads']:7d} "
          f"{r['median_ms'] / 1e3:9.2f} {r['conv_gflops_in_pass']:10.0f} "
          f"{r['conv_gflops_onednn_alone']:7.0f} {p['norm'] / 1e3:7.2f} {p['mixer'] / 1e3:8.2f}")
PY
    cat "$tmp/table.txt"
fi
[ "$(elapsed)" -ge "$budget" ] && echo "device-check: the budget of ${budget} s ran out; later steps were skipped"
exit 0
