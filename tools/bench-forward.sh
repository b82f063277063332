#!/bin/bash
# Forward-pass benchmark: mmsegd's CPU backend against the PyTorch reference, same machine,
# same thread count, same weights, in one run (make bench; BENCH_ARGS passes options).
#
#   tools/bench-forward.sh [--threads T] [--short] [--sweep-max N]
#
# (a) the demo model (models/demo.safetensors) on its patch; unless --short, (b) an
# nnU-Net-size network (features 32..320, 6 stages, random weights) on a 64x128x128 tile, and
# (c) the same network without Mamba, which compares the convolution side alone.
# Peers: Debian's python3-torch and, when _build/venv-ref exists (tools/mmunet/nnunet_proof.sh
# makes it), torch 2.x. Each measurement runs in its own process, so peak RSS is its own.
# The reference's scan would hold (L, E, N) tensors of 4 GB each at 64x128x128; it runs with
# its token-group option (groups of 65536 tokens, state carried), which changes no result.
# Unless --short, (d) a thread sweep of ours on (b) and (c): 1, 2, 4, ... threads up to the
# CPUs this process may use (or N), in fp32 and, where the CPU runs it, bf16; per row the
# speed-up over 1 thread, bf16 over fp32, the convolutions' GFLOP/s in the pass against
# oneDNN alone on the same shapes and against the machine's peak (cores x clock x FLOP per
# cycle of the ISA /proc/cpuinfo reports; the assumptions are printed).
set -eu
cd "$(dirname "$0")/.."
threads=2
short=no
sweep_max=$(nproc)
while [ $# -gt 0 ]; do
    case $1 in
    --threads) threads=$2; shift 2 ;;
    --short) short=yes; shift ;;
    --sweep-max) sweep_max=$2; shift 2 ;;
    *) echo "usage: $0 [--threads T] [--short] [--sweep-max N]" >&2; exit 2 ;;
    esac
done
bench=${BENCH_FORWARD:-_build/dev/bench/bench-forward}
py=${PYTHON3:-/usr/bin/python3}
out=_build/bench
mkdir -p "$out"
pythons=("$py")
[ -x _build/venv-ref/bin/python ] && pythons+=(_build/venv-ref/bin/python)

run_case() { # run_case NAME MODEL D H W RUNS_OURS RUNS_TORCH GROUP
    local name=$1 model=$2 d=$3 h=$4 w=$5 ro=$6 rt=$7 group=$8 f=$out/$1.jsonl
    : >"$f"
    echo "== $name: tile ${d}x${h}x${w}, $threads threads" >&2
    "$bench" "$model" --tile "$d" "$h" "$w" --threads "$threads" --runs "$ro" >>"$f"
    for p in "${pythons[@]}"; do
        "$p" tools/mmunet/bench_forward.py "$model" --tile "$d" "$h" "$w" --threads "$threads" \
            --runs "$rt" ${group:+--group $group} >>"$f"
    done
}

patch=$("$py" -c 'import json,struct,sys
d=open(sys.argv[1],"rb").read(); n=struct.unpack("<Q",d[:8])[0]
c=json.loads(json.loads(d[8:8+n])["__metadata__"]["mmsegd.model"])
print(*c["inference"]["patch_size"])' models/demo.safetensors)
# shellcheck disable=SC2086
run_case demo models/demo.safetensors $patch 5 5 ""
if [ $short = no ]; then
    [ -f $out/nnunet.safetensors ] || "$py" tools/mmunet/bench_model.py $out/nnunet.safetensors
    run_case nnunet $out/nnunet.safetensors 64 128 128 3 1 65536
    [ -f $out/nnunet-cnn.safetensors ] ||
        "$py" tools/mmunet/bench_model.py $out/nnunet-cnn.safetensors --preset nnunet-cnn
    run_case nnunet-cnn $out/nnunet-cnn.safetensors 64 128 128 3 2 ""
    counts=1
    for ((t = 2; t < sweep_max; t *= 2)); do counts="$counts $t"; done
    [ "$sweep_max" -gt 1 ] && counts="$counts $sweep_max"
    precs=fp32
    if "$bench" models/demo.safetensors --runs 1 --precision bf16 >/dev/null 2>"$out/bf16.err"
    then precs="fp32 bf16"
    else echo "== sweep: no bf16 column: $(tail -1 "$out/bf16.err")" >&2
    fi
    : >"$out/sweep.jsonl"
    for c in nnunet nnunet-cnn; do
        for p in $precs; do
            for t in $counts; do
                echo "== sweep: $c, $p, $t threads" >&2
                "$bench" "$out/$c.safetensors" --tile 64 128 128 --threads "$t" --runs 3 \
                    --precision "$p" | sed "s/^{/{\"case\": \"$c\", /" >>"$out/sweep.jsonl"
            done
        done
    done
fi

"$py" - "$out" $short <<'PY'
import json, os, sys
out, short = sys.argv[1], sys.argv[2] == "yes"
cases = ["demo"] + ([] if short else ["nnunet", "nnunet-cnn"])
print(f"{'case':10} {'implementation':22} {'median ms':>10} {'speed-up':>9} {'peak RSS MB':>12}"
      f" {'RSS-base MB':>12}")
for c in cases:
    rows = [json.loads(l) for l in open(os.path.join(out, c + ".jsonl")) if l.strip()]
    ours = rows[0]
    for r in rows:
        name = "mmsegd cpu" if r["impl"] != "pytorch" else "pytorch " + r["torch"].split("+")[0]
        ratio = r["median_ms"] / ours["median_ms"]
        print(f"{c:10} {name:22} {r['median_ms']:10.1f} {ratio:8.2f}x {r['peak_rss_mb']:12.0f}"
              f" {r['peak_rss_mb'] - r['baseline_rss_mb']:12.0f}")
    p = ours["profile_ms"]
    print(f"{'':10} ours: arena {ours['arena_mb']:.1f} MB (without reuse "
          f"{ours['arena_unplanned_mb']:.1f}), fixed {ours['fixed_mb']:.1f} MB; "
          f"conv {p['conv']:.0f} ms, norm {p['norm']:.0f}, mixer {p['mixer']:.0f}, "
          f"other {p['other']:.0f}")
    print(f"{'':10} convolutions: {ours['conv_gflop']:.1f} GFLOP, "
          f"{ours['conv_gflops_in_pass']:.0f} GFLOP/s in the pass, "
          f"{ours['conv_gflops_onednn_alone']:.0f} GFLOP/s for oneDNN alone on the same shapes; "
          f"oneDNN prefers ndhwc: {ours['onednn_prefers_ndhwc']}")
print("speed-up = PyTorch median / ours (above 1: we are faster); RSS-base = peak RSS minus "
      "the RSS before the network ran")
if short:
    sys.exit(0)

# The thread sweep, and the machine's peak from what /proc/cpuinfo reports.
info = open("/proc/cpuinfo").read()
flags = set(next((l.split(":", 1)[1].split() for l in info.splitlines()
                  if l.startswith("flags")), []))
mhz = max((float(l.split(":")[1]) for l in info.splitlines() if l.startswith("cpu MHz")),
          default=0.0)
if "avx512f" in flags:
    isa, f32 = "AVX-512, 2 FMA units", 64
elif "avx2" in flags and "fma" in flags:
    isa, f32 = "AVX2, 2 FMA units", 32
else:
    isa, f32 = "SSE", 8
b16, b16isa = (1024, "AMX-BF16") if "amx_bf16" in flags else \
    ((2 * f32, "AVX512-BF16") if "avx512_bf16" in flags else (f32, "none"))
print(f"\nthread sweep ({os.cpu_count()} CPUs online, {len(os.sched_getaffinity(0))} usable, "
      f"{mhz:.0f} MHz reported; peak per core and cycle assumed: fp32 {f32} FLOP ({isa}), "
      f"bf16 {b16} FLOP ({b16isa}))")
rows = [json.loads(l) for l in open(os.path.join(out, "sweep.jsonl")) if l.strip()]
one = {(r["case"], r["precision"]): r["median_ms"] for r in rows if r["threads"] == 1}
mix1 = {(r["case"], r["precision"]): r["profile_ms"]["mixer"] for r in rows if r["threads"] == 1}
fp32 = {(r["case"], r["threads"]): r["median_ms"] for r in rows if r["precision"] == "fp32"}
print(f"{'case':10} {'prec':5} {'threads':>7} {'median s':>9} {'x 1 thr':>8} {'x fp32':>7}"
      f" {'conv GF/s':>10} {'alone':>7} {'% peak':>7} {'mixer s':>8} {'x 1 thr':>8}")
for r in rows:
    k = (r["case"], r["precision"])
    peak = r["threads"] * mhz * 1e-3 * (b16 if r["precision"] == "bf16" else f32)
    mixer = r["profile_ms"]["mixer"]
    vs32 = fp32.get((r["case"], r["threads"]), 0) / r["median_ms"]
    print(f"{r['case']:10} {r['precision']:5} {r['threads']:7d} {r['median_ms'] / 1e3:9.2f}"
          f" {one.get(k, 0) / r['median_ms']:7.2f}x {vs32:6.2f}x"
          f" {r['conv_gflops_in_pass']:10.0f} {r['conv_gflops_onednn_alone']:7.0f}"
          f" {100 * r['conv_gflops_in_pass'] / peak if peak else 0:6.1f}%"
          + (f" {mixer / 1e3:8.2f} {mix1.get(k, 0) / mixer:7.2f}x" if mixer else
             f" {'-':>8} {'-':>8}"))
print("x 1 thr: speed-up over 1 thread; x fp32: fp32 median / this one; conv GF/s: the "
      "convolutions' rate in the pass, alone: oneDNN's on the same shapes alone; % peak: "
      "in the pass against the assumed peak")
PY
