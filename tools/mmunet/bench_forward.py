"""Forward-pass timing of the PyTorch reference (the peer of bench/bench-forward.c).

    python3 tools/mmunet/bench_forward.py MODEL --tile D H W --threads T --runs R \
        [--group G] [--seed N] [--json]
    python3 tools/mmunet/bench_forward.py MODEL --device cuda --tile D H W --runs R \
        [--precision fp32,tf32,bf16,fp16] [--batch 1,8] [--group G] [--seed N] [--json]

CPU (the default): loads MODEL with export.load_network (fp32), sets T intra-op threads and
flush-to-zero, and times R forward passes of one random tile (1, in_channels, D, H, W) under
torch.inference_mode() after one warm-up pass.  --group G runs the selective scan on groups of
G tokens (MMUNet.set_scan_group; same result, O(G) scan workspace instead of O(L)).

stdout gets exactly one JSON object: impl, torch, threads, tile, group, runs_ms, median_ms,
min_ms, peak_rss_mb (ru_maxrss at the end), baseline_rss_mb (ru_maxrss after imports, model
load and input, before the first pass) and params.  Everything else goes to stderr: warnings,
one line per pass, and a summary line unless --json.

--device cuda: the fp32 weights on the first GPU, cudnn.benchmark on, and for each precision
and batch of the comma lists (default fp32 and 1) R passes of a random (B, in_channels, D, H,
W) input timed with CUDA events after two warm-up passes (the first one picks the cuDNN
algorithms).  fp32 is true fp32 (TF32 off in matmul and cuDNN), tf32 turns TF32 on, bf16 and
fp16 run under torch.autocast.  stdout gets one JSON object per precision and batch: impl,
torch, device, gpu, precision, batch, tile, group, runs_ms, median_ms, min_ms, peak_gpu_mb
(torch.cuda.max_memory_allocated during those passes) and params, or error instead of the
times when that case failed (out of memory, ...); the other cases still run.
"""

import argparse
import contextlib
import json
import os
import resource
import statistics
import sys
import time


def rss_mb():
    """Peak resident set of this process in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


PRECISIONS = ("fp32", "tf32", "bf16", "fp16")


def bench_cuda(args, torch, export, precisions, batches, json_fd):
    """The --device cuda timings: one JSON line per (precision, batch) on json_fd."""
    if not torch.cuda.is_available():
        print("bench_forward: no CUDA device", file=sys.stderr)
        return 1
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    net, card, _ = export.load_network(args.model)
    if args.group is not None:
        net.set_scan_group(args.group)
    net = net.to(dev)
    params = sum(p.numel() for p in net.parameters())
    gpu = torch.cuda.get_device_name(dev)
    cin = card["architecture"]["in_channels"]
    for batch in batches:
        g = torch.Generator().manual_seed(args.seed)
        x = torch.randn(batch, cin, *args.tile, generator=g).to(dev)
        for prec in precisions:
            tf32 = prec == "tf32"
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(prec)
            result = {"impl": "pytorch", "torch": torch.__version__, "device": "cuda",
                      "gpu": gpu, "precision": prec, "batch": batch, "tile": list(args.tile),
                      "group": args.group, "params": params}
            times = []
            try:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats(dev)
                cast = (torch.autocast("cuda", dtype=dtype) if dtype is not None
                        else contextlib.nullcontext())
                with torch.inference_mode(), cast:
                    for i in range(2 + args.runs):
                        start = torch.cuda.Event(enable_timing=True)
                        end = torch.cuda.Event(enable_timing=True)
                        start.record()
                        out = net(x)
                        end.record()
                        torch.cuda.synchronize()
                        del out
                        ms = start.elapsed_time(end)
                        if i >= 2:
                            times.append(ms)
                        print(f"bench_forward: {prec} batch {batch} "
                              f"{'warm-up' if i < 2 else 'pass'} {ms:.1f} ms",
                              file=sys.stderr, flush=True)
                result.update({
                    "runs_ms": [round(t, 3) for t in times],
                    "median_ms": round(statistics.median(times), 3),
                    "min_ms": round(min(times), 3),
                    "peak_gpu_mb": round(torch.cuda.max_memory_allocated(dev) / 1048576.0, 1)})
                if not args.json:
                    print(f"pytorch {torch.__version__} {gpu}: {os.path.basename(args.model)} "
                          f"{prec} batch {batch} tile {'x'.join(map(str, args.tile))}: median "
                          f"{result['median_ms']:.1f} ms, min {result['min_ms']:.1f} ms, peak "
                          f"{result['peak_gpu_mb']:.0f} MB", file=sys.stderr)
            except (RuntimeError, MemoryError) as e:
                result["error"] = str(e).splitlines()[0][:300]
                print(f"bench_forward: {prec} batch {batch}: {result['error']}", file=sys.stderr)
                torch.cuda.empty_cache()
            sys.stderr.flush()
            os.write(json_fd, (json.dumps(result) + "\n").encode())
        del x
        torch.cuda.empty_cache()
    os.close(json_fd)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--tile", type=int, nargs=3, metavar=("D", "H", "W"), required=True)
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads (required with --device cpu)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--precision", default="fp32",
                    help="cuda: comma list of fp32, tf32, bf16, fp16 (default fp32)")
    ap.add_argument("--batch", default="1", help="cuda: comma list of batch sizes (default 1)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--group", type=int, default=None,
                    help="tokens per group of the selective scan (default: whole sequence)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the random input")
    ap.add_argument("--json", action="store_true", help="no summary line on stderr")
    args = ap.parse_args(argv)
    if args.device == "cpu" and args.threads is None:
        ap.error("--threads is required with --device cpu")
    if (args.threads is not None and args.threads < 1) or args.runs < 1 or min(args.tile) < 1:
        ap.error("--threads, --runs and --tile need positive values")
    precisions = args.precision.split(",")
    if any(p not in PRECISIONS for p in precisions):
        ap.error(f"--precision takes a comma list of {', '.join(PRECISIONS)}")
    try:
        batches = [int(b) for b in args.batch.split(",")]
    except ValueError:
        batches = [0]
    if min(batches) < 1:
        ap.error("--batch takes a comma list of positive integers")
    if args.device == "cpu" and (precisions != ["fp32"] or batches != [1]):
        ap.error("--precision and --batch are for --device cuda")

    # Keep stdout for the JSON line alone: whatever the libraries print goes to stderr.
    json_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    import torch
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from mmunet import export

    if args.device == "cuda":
        return bench_cuda(args, torch, export, precisions, batches, json_fd)
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
