"""Forward-pass timing of the PyTorch reference (the peer of bench/bench-forward.c).

    python3 tools/mmunet/bench_forward.py MODEL --tile D H W --threads T --runs R \
        [--group G] [--seed N] [--json]

Loads MODEL with export.load_network (fp32, CPU), sets T intra-op threads and flush-to-zero,
and times R forward passes of one random tile (1, in_channels, D, H, W) under
torch.inference_mode() after one warm-up pass.  --group G runs the selective scan on groups of
G tokens (MMUNet.set_scan_group; same result, O(G) scan workspace instead of O(L)).

stdout gets exactly one JSON object: impl, torch, threads, tile, group, runs_ms, median_ms,
min_ms, peak_rss_mb (ru_maxrss at the end), baseline_rss_mb (ru_maxrss after imports, model
load and input, before the first pass) and params.  Everything else goes to stderr: warnings,
one line per pass, and a summary line unless --json.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time


def rss_mb():
    """Peak resident set of this process in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--tile", type=int, nargs=3, metavar=("D", "H", "W"), required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--group", type=int, default=None,
                    help="tokens per group of the selective scan (default: whole sequence)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the random input")
    ap.add_argument("--json", action="store_true", help="no summary line on stderr")
    args = ap.parse_args(argv)
    if args.threads < 1 or args.runs < 1 or min(args.tile) < 1:
        ap.error("--threads, --runs and --tile need positive values")

    # Keep stdout for the JSON line alone: whatever the libraries print goes to stderr.
    json_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    import torch
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from mmunet import export

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    net, card, _ = export.load_network(args.model)
    if args.group is not None:
        net.set_scan_group(args.group)
    params = sum(p.numel() for p in net.parameters())
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(1, card["architecture"]["in_channels"], *args.tile, generator=g)
    baseline = rss_mb()

    times = []
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = net(x)                                   # warm-up
        del out
        print(f"bench_forward: warm-up pass {(time.perf_counter() - t0) * 1000.0:.1f} ms",
              file=sys.stderr, flush=True)
        for i in range(args.runs):
            t0 = time.perf_counter()
            out = net(x)
            times.append((time.perf_counter() - t0) * 1000.0)
            del out
            print(f"bench_forward: pass {i + 1}/{args.runs} {times[-1]:.1f} ms",
                  file=sys.stderr, flush=True)
    result = {
        "impl": "pytorch",
        "torch": torch.__version__,
        "threads": args.threads,
        "tile": list(args.tile),
        "group": args.group,
        "runs_ms": [round(t, 3) for t in times],
        "median_ms": round(statistics.median(times), 3),
        "min_ms": round(min(times), 3),
        "peak_rss_mb": round(rss_mb(), 1),
        "baseline_rss_mb": round(baseline, 1),
        "params": params,
    }
    if not args.json:
        print(f"pytorch {torch.__version__}: {os.path.basename(args.model)} tile "
              f"{'x'.join(map(str, args.tile))}, {args.threads} threads: median "
              f"{result['median_ms']:.1f} ms, min {result['min_ms']:.1f} ms, peak RSS "
              f"{result['peak_rss_mb']:.0f} MB (before the passes {baseline:.0f} MB)",
              file=sys.stderr)
    sys.stderr.flush()
    os.write(json_fd, (json.dumps(result) + "\n").encode())
    os.close(json_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
