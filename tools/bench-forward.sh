#!/bin/bash
# Forward-pass benchmark: mmsegd's CPU backend against the PyTorch reference, same machine,
# same thread count, same weights, in one run (make bench; BENCH_ARGS passes options).
#
#   tools/bench-forward.sh [--threads T] [--short]
#
# (a) the demo model (models/demo.safetensors) on its patch; unless --short, (b) an
# nnU-Net-size network (features 32..320, 6 stages, random weights) on a 64x128x128 tile, and
# (c) the same network without Mamba, which compares the convolution side alone.
# Peers: Debian's python3-torch and, when _build/venv-ref exists (tools/mmunet/nnunet_proof.sh
# makes it), torch 2.x. Each measurement runs in its own process, so peak RSS is its own.
# The reference's scan would hold (L, E, N) tensors of 4 GB each at 64x128x128; it runs with
# its token-group option (groups of 65536 tokens, state carried), which changes no result.
set -eu
cd "$(dirname "$0")/.."
threads=2
short=no
while [ $# -gt 0 ]; do
    case $1 in
    --threads) threads=$2; shift 2 ;;
    --short) short=yes; shift ;;
    *) echo "usage: $0 [--threads T] [--short]" >&2; exit 2 ;;
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
PY
