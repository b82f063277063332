#!/bin/bash
# README command 1 (tools/demo.sh) run to the point where it prints its results, with the
# mmsegd of this build (MMSEGD_DEMO_BUILD), in a scratch folder with free ports, stopping
# after the results (MMSEGD_DEMO_ONCE=1): it must exit 0 and print, for the phantom and for
# the TotalSegmentator example, an existing SEG, the organ volumes and the time per stage,
# and for the phantom a mean Dice of at least 0.9 against its truth.
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
echo "1..6"
MMS_TESTDATA=$td MMSEGD_DEMO_BUILD=$build MMSEGD_DEMO_DIR=$tmp/demo \
    MMSEGD_DEMO_PORT=$(free_port) MMSEGD_DEMO_METRICS_PORT=$(free_port) MMSEGD_DEMO_ONCE=1 \
    timeout 900 bash "$src/tools/demo.sh" >"$tmp/out" 2>&1
rc=$?
[ $rc = 0 ] && result OK "tools/demo.sh exits 0 after the results" ||
    result FAIL "tools/demo.sh exits 0 after the results (got $rc)"
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
    result OK "time per stage for both, then how to send more" ||
    result FAIL "time per stage for both, then how to send more"
if [ $failed = 1 ]; then
    sed 's/^/# /' "$tmp/out"
    tail -20 "$tmp/demo/demo.log" | sed 's/^/# log: /'
fi
exit $failed
