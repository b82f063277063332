#!/bin/bash
# The DICOM SEG writer: tests/seg-write (dicom/seg.cc, DCMTK dcmseg) against highdicom's
# Segmentation constructor and save_as, on the same labels and the same source series, same
# machine, in one run. Then the other outputs on the same input: the label-map SEG
# (seg-write --labelmap) against highdicom's LABELMAP Segmentation, and the RT Structure Set
# (seg-write --rtstruct, dicom/rtstruct.cc) against rt-utils (PyPI, in the same virtual
# environment; its column is left out, with the reason, where it is not installed), with the
# file sizes of the binary and the label-map SEG, highdicom's reading of our label map, and
# both RT Structure Sets filled back by tests/rtstruct_check.py (Dice per ROI).
#
#   tools/bench-seg.sh [--runs R] [--slices N] [--labels L] [--short]
#
# Input: a 512x512xN phantom CT series (default N = 300; tools/mmunet/phantom.py --dicom, seed
# 1007, 0.78125 mm pixels, 1.25 mm slices, generated once into _build/bench/phantom-512x512xN
# as tools/bench-pipeline.sh does, and reused), a label volume on its grid with L (default 15)
# random ellipsoids labelled 1..L (tools/mmunet/bench_seg_highdicom.py labels, fixed seed),
# and a model file with the 15 AMOS labels and random weights for the segment descriptions
# (bench_seg_highdicom.py model; _build/bench/seg-amos15.safetensors). Both writers omit empty
# frames and write explicit VR little endian.
#
# Ours: `seg-write MODEL DICOM LABELS.raw OUT.dcm` (it reads and decodes the series, then
# writes; its "seconds" is the writing alone). highdicom: bench_seg_highdicom.py run in the
# virtual environment _build/venv-ref (pip install highdicom), which reads the series with
# pydicom, then times Segmentation(...) and save_as. Each runs R times (default 3, --short 1)
# after an untimed read of the input; the medians are shown. Wall time and peak RSS come from
# /usr/bin/time -f '%e %M' around each process (start-up, model card and label loading
# included). Then our SEG is checked: dciodvfy (its Error and Warning lines shown),
# highdicom's segread and masks per source instance (bench_seg_highdicom.py verify), and
# tests/seg_check.py against the labels and the card. Figures go to _build/bench/seg.json.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/find-testdata.sh
runs=3
slices=300
nlabels=15
while [ $# -gt 0 ]; do
    case $1 in
    --runs) runs=$2; shift 2 ;;
    --slices) slices=$2; shift 2 ;;
    --labels) nlabels=$2; shift 2 ;;
    --short) runs=1; shift ;;
    *) echo "usage: $0 [--runs R] [--slices N] [--labels L] [--short]" >&2; exit 2 ;;
    esac
done
segwrite=${SEG_WRITE:-_build/dev/tests/seg-write}
venv=${VENV:-_build/venv-ref}
py=${PYTHON3:-/usr/bin/python3}
vpy=$venv/bin/python
helper=tools/mmunet/bench_seg_highdicom.py
out=_build/bench
mkdir -p "$out"
die() { echo "bench-seg: $*" >&2; exit 1; }

[ -x "$segwrite" ] || die "$segwrite is not built (make -C _build/dev tests/seg-write)"
[ -x "$vpy" ] || die "$vpy is missing (the virtual environment of tools/mmunet/nnunet_proof.sh)"
"$vpy" -c 'import highdicom' 2>/dev/null ||
    die "highdicom is not installed in $venv ($vpy -m pip install highdicom)"
[ -x /usr/bin/time ] || die "/usr/bin/time is not installed (apt-get install time)"
dciodvfy=$(command -v dciodvfy || true)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

bench_phantom "$out" "$slices" "$py" || die "phantom.py failed (see $ph.log)"
dicom=$ph/dicom
model=$out/seg-amos15.safetensors
labels=$out/seg-labels-${slices}x$nlabels.raw
"$vpy" "$helper" model "$model" >"$tmp/model.json" || die "writing $model failed"
"$vpy" "$helper" labels "$dicom" "$labels" --labels "$nlabels" >"$tmp/labels.json" ||
    die "writing $labels failed"
cat "$dicom"/* "$labels" >/dev/null

# ours: R runs; the line "segments S frames F seconds T" and /usr/bin/time's "%e %M"
for ((r = 0; r < runs; r++)); do
    rm -f "$tmp/ours.dcm"
    /usr/bin/time -f '%e %M' -o "$tmp/ours-$r.time" "$segwrite" "$model" "$dicom" "$labels" \
        "$tmp/ours.dcm" >"$tmp/ours-$r.out" 2>"$tmp/ours-$r.err" ||
        { cat "$tmp/ours-$r.err" >&2; die "seg-write failed"; }
done
for ((r = 0; r < runs; r++)); do
    rm -f "$tmp/hd.dcm"
    /usr/bin/time -f '%e %M' -o "$tmp/hd-$r.time" "$vpy" "$helper" run "$model" "$dicom" \
        "$labels" "$tmp/hd.dcm" >"$tmp/hd-$r.out" 2>"$tmp/hd-$r.err" ||
        { tail -5 "$tmp/hd-$r.err" >&2; die "highdicom failed"; }
done

# the label map and the RT Structure Set: ours against highdicom's label map and rt-utils
# timed TAG CMD...: R runs of CMD, its stdout in TAG-r.out and /usr/bin/time's in TAG-r.time
timed() {
    local tag=$1 r
    shift
    for ((r = 0; r < runs; r++)); do
        /usr/bin/time -f '%e %M' -o "$tmp/$tag-$r.time" "$@" >"$tmp/$tag-$r.out" \
            2>"$tmp/$tag-$r.err" || { tail -5 "$tmp/$tag-$r.err" >&2; die "$tag failed"; }
    done
}
timed ours-lm "$segwrite" --labelmap "$model" "$dicom" "$labels" "$tmp/ours-lm.dcm"
timed ours-rt "$segwrite" --rtstruct "$model" "$dicom" "$labels" "$tmp/ours-rt.dcm"
timed hd-lm "$vpy" "$helper" run --labelmap "$model" "$dicom" "$labels" "$tmp/hd-lm.dcm"
if "$vpy" -c 'import rt_utils' 2>/dev/null; then
    timed rtu "$vpy" "$helper" rtutils "$model" "$dicom" "$labels" "$tmp/rtu.dcm"
    "$py" tests/rtstruct_check.py --json --model "$model" "$tmp/rtu.dcm" "$labels" "$dicom" \
        >"$tmp/rtu-check.json" 2>&1 || true
else
    echo "bench-seg: rt-utils is not installed in $venv ($vpy -m pip install rt-utils): its column is left out" >&2
fi
"$vpy" "$helper" verify "$tmp/ours-lm.dcm" "$dicom" "$labels" >"$tmp/verify-lm.json" 2>&1 || true
"$py" tests/seg_check.py --json --model "$model" "$tmp/ours-lm.dcm" "$labels" "$dicom" \
    >"$tmp/check-lm.json" 2>&1 || true
"$py" tests/rtstruct_check.py --json --model "$model" "$tmp/ours-rt.dcm" "$labels" "$dicom" \
    >"$tmp/rt-check.json" 2>&1 || true

# our SEG: dciodvfy, highdicom, seg_check.py
if [ -n "$dciodvfy" ]; then
    "$dciodvfy" "$tmp/ours.dcm" >"$tmp/vfy" 2>&1 || true
    "$dciodvfy" "$tmp/hd.dcm" >"$tmp/vfy-hd" 2>&1 || true
else
    echo "dciodvfy is not installed (dicom3tools)" >"$tmp/vfy"
    cp "$tmp/vfy" "$tmp/vfy-hd"
fi
"$vpy" "$helper" verify "$tmp/ours.dcm" "$dicom" "$labels" >"$tmp/verify.json" 2>"$tmp/verify.err" ||
    true
"$py" tests/seg_check.py --model "$model" "$tmp/ours.dcm" "$labels" "$dicom" >"$tmp/check" 2>&1 ||
    true

"$py" - "$tmp" "$runs" "$out/seg.json" "${dciodvfy:-}" <<'PY'
import json, os, platform, statistics, sys
tmp, runs, dest, vfy_tool = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

def tm(name):
    wall, kib = open(os.path.join(tmp, name)).read().split()[-2:]
    return float(wall), int(kib) / 1024.0

ours, hd = [], []
for r in range(runs):
    line = open(os.path.join(tmp, f"ours-{r}.out")).read().split()
    f = dict(zip(line[0::2], line[1::2]))
    wall, rss = tm(f"ours-{r}.time")
    ours.append({"wall_s": wall, "peak_rss_mib": rss, "write_s": float(f.get("seconds", "nan")),
                 "segments": int(f["segments"]), "frames": int(f["frames"])})
    j = json.loads(open(os.path.join(tmp, f"hd-{r}.out")).read().strip().splitlines()[-1])
    wall, rss = tm(f"hd-{r}.time")
    j.update(wall_s=wall, peak_rss_mib=rss)
    hd.append(j)
med = lambda xs, k: statistics.median(x[k] for x in xs)
vfy = open(os.path.join(tmp, "vfy")).read().splitlines()
vfy_hd = open(os.path.join(tmp, "vfy-hd")).read().splitlines()
errors = [l for l in vfy if l.startswith("Error")]
warnings = [l for l in vfy if l.startswith("Warning")]
try:
    verify = json.loads(open(os.path.join(tmp, "verify.json")).read().strip().splitlines()[-1])
except (OSError, ValueError, IndexError):
    verify = {"ok": False, "error": open(os.path.join(tmp, "verify.err")).read()[-500:]}
check = open(os.path.join(tmp, "check")).read().splitlines()
check_ok = bool(check) and not any(l.startswith("not ok") for l in check) \
    and any(l.startswith("# seg_check:") for l in check)
lab = json.loads(open(os.path.join(tmp, "labels.json")).read())
sizes = {"ours": os.path.getsize(os.path.join(tmp, "ours.dcm")),
         "highdicom": os.path.getsize(os.path.join(tmp, "hd.dcm"))}
res = {
    "input": {"shape": lab["shape"], "labels": lab["present"], "nonempty_frames":
              lab["nonempty_frames"], "voxels": lab["voxels"]},
    "runs": runs, "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
    "ours": {"wall_s": med(ours, "wall_s"), "write_s": med(ours, "write_s"),
             "peak_rss_mib": max(x["peak_rss_mib"] for x in ours),
             "segments": ours[0]["segments"], "frames": ours[0]["frames"],
             "bytes": sizes["ours"]},
    "highdicom": {"version": hd[0]["version"], "pydicom": hd[0]["pydicom"],
                  "wall_s": med(hd, "wall_s"), "read_s": med(hd, "read_s"),
                  "construct_s": med(hd, "construct_s"), "save_s": med(hd, "save_s"),
                  "write_s": med(hd, "write_s"),
                  "peak_rss_mib": max(x["peak_rss_mib"] for x in hd),
                  "segments": hd[0]["segments"], "frames": hd[0]["frames"],
                  "bytes": sizes["highdicom"]},
    "checks": {"dciodvfy": vfy_tool or None, "dciodvfy_errors": len(errors),
               "dciodvfy_warnings": len(warnings), "dciodvfy_lines": errors + warnings,
               "dciodvfy_highdicom_errors": sum(l.startswith("Error") for l in vfy_hd),
               "highdicom_verify": verify, "seg_check_ok": check_ok,
               "seg_check": [l for l in check if not l.startswith("ok - ")]},
}
o, h = res["ours"], res["highdicom"]
res["ratio"] = {"write": h["write_s"] / o["write_s"], "wall": h["wall_s"] / o["wall_s"],
                "peak_rss": h["peak_rss_mib"] / o["peak_rss_mib"]}

def last_json(name):
    try:
        return json.loads(open(os.path.join(tmp, name)).read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return {"ok": False, "error": "no result in " + name}

def timed(tag):
    out = []
    for r in range(runs):
        p = os.path.join(tmp, f"{tag}-{r}.out")
        if not os.path.exists(p):
            return None
        text = open(p).read().strip().splitlines()
        line = text[-1] if text else ""
        if line.startswith("{"):
            x = json.loads(line)
        else:
            w = line.split()
            x = {k: float(v) for k, v in zip(w[0::2], w[1::2])}
            x["write_s"] = x.pop("seconds", float("nan"))
        x["wall_s"], x["peak_rss_mib"] = tm(f"{tag}-{r}.time")
        out.append(x)
    return {"write_s": med(out, "write_s"), "wall_s": med(out, "wall_s"),
            "peak_rss_mib": max(x["peak_rss_mib"] for x in out), "first": out[0]}

lm = {"ours": timed("ours-lm"), "highdicom": timed("hd-lm")}
lm["ours"]["bytes"] = os.path.getsize(os.path.join(tmp, "ours-lm.dcm"))
lm["highdicom"]["bytes"] = os.path.getsize(os.path.join(tmp, "hd-lm.dcm"))
lm["checks"] = {"highdicom_verify": last_json("verify-lm.json"),
                "seg_check": last_json("check-lm.json")}
rt = {"ours": timed("ours-rt"), "rt-utils": timed("rtu")}
rt["ours"]["bytes"] = os.path.getsize(os.path.join(tmp, "ours-rt.dcm"))
rt["checks"] = {"ours": last_json("rt-check.json")}
if rt["rt-utils"] is not None:
    rt["rt-utils"]["bytes"] = os.path.getsize(os.path.join(tmp, "rtu.dcm"))
    rt["checks"]["rt-utils"] = last_json("rtu-check.json")
res["labelmap"], res["rtstruct"] = lm, rt
json.dump(res, open(dest, "w"), indent=1)

S, R, C = lab["shape"]
print(f"SEG writer: {C}x{R}x{S} CT, {len(lab['present'])} labels, {lab['nonempty_frames']} "
      f"non-empty frames; {runs} run(s) each, medians; {res['cpus']} CPUs")
print(f"{'':22}{'ours (seg-write)':>18}{'highdicom ' + h['version']:>18}{'ratio hd/ours':>15}")
print(f"{'SEG writing (s)':22}{o['write_s']:>18.3f}{h['write_s']:>18.3f}"
      f"{res['ratio']['write']:>15.2f}")
print(f"{'  construct / save':22}{'':>18}{h['construct_s']:>9.3f} /{h['save_s']:>6.3f}")
print(f"{'whole process (s)':22}{o['wall_s']:>18.2f}{h['wall_s']:>18.2f}"
      f"{res['ratio']['wall']:>15.2f}")
print(f"{'  of it, series read':22}{'(read + decode)':>18}{h['read_s']:>18.2f}")
print(f"{'peak RSS (MiB)':22}{o['peak_rss_mib']:>18.0f}{h['peak_rss_mib']:>18.0f}"
      f"{res['ratio']['peak_rss']:>15.2f}")
print(f"{'segments / frames':22}{str(o['segments']) + ' / ' + str(o['frames']):>18}"
      f"{str(h['segments']) + ' / ' + str(h['frames']):>18}")
print(f"{'file size (MB)':22}{o['bytes'] / 1e6:>18.1f}{h['bytes'] / 1e6:>18.1f}")
print(f"our SEG: dciodvfy {'not run' if not vfy_tool else '%d errors, %d warnings' % (len(errors), len(warnings))}"
      f" (highdicom's: {res['checks']['dciodvfy_highdicom_errors']} errors)")
for l in (errors + warnings)[:20]:
    print("  " + l)
v = verify
print(f"our SEG: highdicom segread {'ok' if v.get('segread') else 'FAILED'}"
      + (f", masks per source instance equal the labels on {v.get('slices_checked')} slices"
         if v.get("ok") else f", masks: {v.get('error') or 'differ on %s' % v.get('slices_differ')}")
      + ("; Spatial Locations Preserved absent: highdicom needed ignore_spatial_locations"
         if v.get("spatial_locations_preserved") is False else ""))
print(f"our SEG: tests/seg_check.py {'passes' if check_ok else 'FAILS'}"
      + "".join("\n  " + l for l in check if l.startswith("not ok")))

lo, lh = lm["ours"], lm["highdicom"]
print()
print(f"label-map SEG (one 8-bit frame per slice):")
print(f"{'':22}{'ours (seg-write)':>18}{'highdicom ' + h['version']:>18}{'ratio hd/ours':>15}")
print(f"{'writing (s)':22}{lo['write_s']:>18.3f}{lh['write_s']:>18.3f}"
      f"{lh['write_s'] / lo['write_s']:>15.2f}")
print(f"{'whole process (s)':22}{lo['wall_s']:>18.2f}{lh['wall_s']:>18.2f}"
      f"{lh['wall_s'] / lo['wall_s']:>15.2f}")
print(f"{'peak RSS (MiB)':22}{lo['peak_rss_mib']:>18.0f}{lh['peak_rss_mib']:>18.0f}")
print(f"{'file size (MB)':22}{lo['bytes'] / 1e6:>18.1f}{lh['bytes'] / 1e6:>18.1f}"
      f"   (binary SEG: ours {o['bytes'] / 1e6:.1f} MB)")
vl, cl = lm["checks"]["highdicom_verify"], lm["checks"]["seg_check"]
print(f"our label map: highdicom {'reads it, masks per source instance equal the labels' if vl.get('ok') else 'FAILED: %s' % (vl.get('error') or vl)}"
      f"; seg_check {'passes' if cl.get('ok') else 'FAILS'}")
ro, ru = rt["ours"], rt["rt-utils"]
print()
print("RT Structure Set:")
print(f"{'':22}{'ours (seg-write)':>18}{'rt-utils':>18}{'ratio rtu/ours':>15}")
if ru is None:
    print(f"{'writing (s)':22}{ro['write_s']:>18.3f}{'not installed':>18}")
else:
    print(f"{'writing (s)':22}{ro['write_s']:>18.3f}{ru['write_s']:>18.3f}"
          f"{ru['write_s'] / ro['write_s']:>15.2f}")
    print(f"{'whole process (s)':22}{ro['wall_s']:>18.2f}{ru['wall_s']:>18.2f}"
          f"{ru['wall_s'] / ro['wall_s']:>15.2f}")
    print(f"{'peak RSS (MiB)':22}{ro['peak_rss_mib']:>18.0f}{ru['peak_rss_mib']:>18.0f}")
    print(f"{'file size (MB)':22}{ro['bytes'] / 1e6:>18.1f}{ru['bytes'] / 1e6:>18.1f}")
for name in ("ours", "rt-utils"):
    c = rt["checks"].get(name)
    if c is None:
        continue
    d = c.get("dice") or {}
    print(f"{name}: filled back with scikit-image: Dice min {min(d.values()) if d else float('nan'):.6f}, "
          f"voxels differing {sum((c.get('voxels_differ') or {}).values())}; rtstruct_check "
          f"{'passes' if c.get('ok') else 'fails: ' + '; '.join(x['check'][:80] for x in c.get('results', []) if not x['ok'])}")
print(f"figures: {dest}")
PY
