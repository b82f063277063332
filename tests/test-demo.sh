#!/bin/bash
# README command 1 (tools/demo.sh) run to the point where it prints its results, with the
# mmsegd of this build (MMSEGD_DEMO_BUILD), in a scratch folder with free ports: it must print,
# for the phantom and for the TotalSegmentator example, an existing SEG, the organ volumes and
# the time per stage, and for the phantom a mean Dice of at least 0.9 against its truth.
# Then, while the demo keeps serving, its status page in a real browser (Debian's chromium,
# headless, driven by tests/browser.py): both series are rows, both previews loaded (natural
# width > 0), neither patient's name nor ID is on the page, and a screenshot is kept in the
# build tree (tests/status-page.png). Ctrl-C's signal then stops the demo with status 0.
set -u
. "$(dirname "$0")/find-testdata.sh"
require_testdata
python=${PYTHON3:-/usr/bin/python3}
require_python numpy scipy pydicom nibabel
for t in storescu dcmodify; do
    command -v $t >/dev/null || { echo "1..0 # SKIP $t is not installed (DCMTK tools)"; exit 0; }
done
src=${srcdir:-.}
build=${top_builddir:-.}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
free_port() {
    "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
browser=1
command -v chromium >/dev/null || browser=0
echo "1..12"
mport=$(free_port)
MMS_TESTDATA=$td MMSEGD_DEMO_BUILD=$build MMSEGD_DEMO_DIR=$tmp/demo \
    MMSEGD_DEMO_PORT=$(free_port) MMSEGD_DEMO_METRICS_PORT=$mport \
    timeout 900 bash "$src/tools/demo.sh" >"$tmp/out" 2>&1 &
demo=$!
trap 'kill -TERM $demo 2>/dev/null; wait $demo 2>/dev/null; rm -rf "$tmp"' EXIT
until grep -q "keeps serving" "$tmp/out" 2>/dev/null; do
    kill -0 $demo 2>/dev/null || break
    sleep 1
done
sleep 1 # the rest of its lines
sections=$(grep -c "^== " "$tmp/out")
[ "$sections" = 2 ] && result OK "two results: the phantom and the TotalSegmentator example" ||
    result FAIL "two results: the phantom and the TotalSegmentator example ($sections)"
segs_ok=1
for s in $(awk '$1 == "SEG:" {print $2}' "$tmp/out"); do [ -s "$s" ] || segs_ok=0; done
[ "$(grep -c "SEG: " "$tmp/out")" = 2 ] && [ $segs_ok = 1 ] &&
    result OK "each names a SEG that exists" || result FAIL "each names a SEG that exists"
[ "$(grep -c "organs (mL):" "$tmp/out")" = 2 ] && grep -q "Liver  *[0-9]" "$tmp/out" &&
    result OK "organ volumes printed" || result FAIL "organ volumes printed"
mean=$(awk '/Dice against the phantom/ {print $NF}' "$tmp/out")
"$python" -c "import sys; sys.exit(not float('${mean:-0}') >= 0.9)" 2>/dev/null &&
    result OK "the phantom's mean Dice $mean >= 0.9" ||
    result FAIL "the phantom's mean Dice '$mean' >= 0.9"
[ "$(grep -c "time per stage" "$tmp/out")" = 2 ] && grep -q "keeps serving" "$tmp/out" &&
    grep -q "http://127.0.0.1:$mport/ in a browser" "$tmp/out" &&
    result OK "time per stage for both, then how to send more and where the status page is" ||
    result FAIL "time per stage for both, then how to send more and where the status page is"

# ---------------------------------------------------------------------------- the status page
if [ $browser = 1 ]; then
    shot=$build/tests/status-page.png
    mkdir -p "$build/tests"
    rm -f "$shot"
    "$python" "$src/tests/browser.py" "http://127.0.0.1:$mport/" --screenshot "$shot" \
        --width 1280 --height 900 --full-page --timeout 60 \
        --eval "Array.from(document.querySelectorAll('tr.series')).map(r => r.textContent)" \
        --eval "Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])" \
        --eval "document.body.innerText" >"$tmp/page.json" 2>"$tmp/browser.err"
    brc=$?
    [ $brc = 0 ] && result OK "chromium loaded the status page (screenshot $shot)" ||
        result FAIL "chromium loaded the status page (exit $brc: $(head -3 "$tmp/browser.err"))"
    # the two series' UIDs, and the patients' names and IDs as sent
    ph_dir=$tmp/demo/demo-inputs/ph/regular/dicom
    ts_dir=$tmp/demo/demo-inputs/ts
    tag() { dcmdump +P "$1" "$(find "$2" -type f | head -1)" 2>/dev/null | sed -n 's/.*\[\(.*\)\].*/\1/p' | head -1; }
    uids="$(tag SeriesInstanceUID "$ph_dir") $(tag SeriesInstanceUID "$ts_dir")"
    phi="$(tag PatientName "$ph_dir")|$(tag PatientID "$ph_dir")|$(tag PatientName "$ts_dir")|$(tag PatientID "$ts_dir")"
    echo "# series: $uids; patient names and IDs sent: $phi"
    "$python" - "$tmp/page.json" "$uids" "$phi" "$shot" >"$tmp/judge" 2>&1 <<'PY'
import json, struct, sys
page = json.load(open(sys.argv[1]))
rows, images, text = page["eval"]
uids = sys.argv[2].split()
phi = [p for p in sys.argv[3].split("|") if p]
ok_rows = len(rows) == 2 and all(any(u in r for r in rows) for u in uids)
ok_images = len(images) == 2 and all(w > 0 for _, w in images)
leaked = [p for p in phi if p in text]
with open(sys.argv[4], "rb") as f:
    head = f.read(24)
png_ok = head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">I", head[16:20])[0] == 1280
print("rows %d: %s" % (len(rows), "ok" if ok_rows else rows))
print("images %s" % images)
print("phi on the page: %s (of %d values)" % (leaked, len(phi)))
print("screenshot %dx%d" % (page.get("png_width", 0), page.get("png_height", 0)))
print("ROWS", ok_rows, "IMAGES", ok_images, "PHI", len(phi) >= 2 and not leaked, "PNG", png_ok)
PY
    sed 's/^/# /' "$tmp/judge"
    grep -q "ROWS True" "$tmp/judge" && result OK "the page has both series as rows" ||
        result FAIL "the page has both series as rows"
    grep -q "IMAGES True" "$tmp/judge" && result OK "both previews loaded (natural width > 0)" ||
        result FAIL "both previews loaded (natural width > 0)"
    grep -q "PHI True" "$tmp/judge" && result OK "no patient name or ID on the page" ||
        result FAIL "no patient name or ID on the page"
    grep -q "PNG True" "$tmp/judge" && result OK "the screenshot is a PNG 1280 pixels wide" ||
        result FAIL "the screenshot is a PNG 1280 pixels wide"
    # a phone's width: the page itself does not scroll sideways (wide tables scroll in their
    # own box) and the previews fit the screen
    phone=$build/tests/status-page-phone.png
    wide=$("$python" "$src/tests/browser.py" "http://127.0.0.1:$mport/" --screenshot "$phone" \
        --width 390 --height 844 --timeout 60 \
        --eval "[document.documentElement.scrollWidth, innerWidth, Math.max(...Array.from(document.images).map(i => i.getBoundingClientRect().right))]" \
        2>"$tmp/browser.err" | "$python" -c 'import json, sys; print(*json.load(sys.stdin)["eval"][0])')
    read -r sw iw ir <<<"$wide"
    [ -n "$sw" ] && [ "$sw" -le "$iw" ] && [ "${ir%.*}" -le "$iw" ] &&
        result OK "at 390 pixels wide (a phone): no sideways scrolling, previews fit ($wide; $phone)" ||
        result FAIL "at 390 pixels wide: no sideways scrolling, previews fit (got '$wide'; $(head -1 "$tmp/browser.err"))"
else
    for _ in 1 2 3 4 5 6; do
        n=$((n + 1))
        echo "ok $n # SKIP the status page in a browser: chromium is not installed (Debian package chromium)"
    done
fi
kill -TERM $demo 2>/dev/null
wait $demo
rc=$?
[ $rc = 0 ] && result OK "tools/demo.sh exits 0 when stopped" ||
    result FAIL "tools/demo.sh exits 0 when stopped (got $rc)"
if [ $failed = 1 ]; then
    sed 's/^/# /' "$tmp/out"
    tail -20 "$tmp/demo/demo.log" | sed 's/^/# log: /'
fi
exit $failed
