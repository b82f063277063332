#!/bin/bash
# tests/fuzz/seed-prescan.sh OUT: the seed corpus of fuzz-prescan in the folder OUT, made from
# the shared test data at run time (nothing of it is committed): every file of 64 KiB or less,
# the first 16 KiB of the larger DICOM files (their headers), and the crafted cases of
# tests/test-badfiles (--write), each cut to 64 KiB. Environment: td (the test data folder, else
# found as the tests find it), top_builddir (where tests/test-badfiles is, when built).
# A seed script (tests/fuzz/seed-NAME.sh OUT) exits 0 and leaves OUT empty when it has no data.
set -u
out=$1
mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)
if [ -z "${td:-}" ]; then
    # shellcheck source=../find-testdata.sh
    . "$here/../find-testdata.sh"
    find_testdata || exit 0
fi
add() { # add FILE [BYTES]: one seed named by its content
    local sum
    sum=$(head -c "${2:-65536}" "$1" | sha1sum) || return 0
    head -c "${2:-65536}" "$1" >"$out/${sum%% *}"
}
while IFS= read -r -d '' f; do
    size=$(stat -c %s "$f")
    if [ "$size" -le 65536 ]; then
        add "$f"
    elif [ "$(head -c 132 "$f" | tail -c 4 | tr -d '\0')" = DICM ]; then
        add "$f" 16384
    fi
done < <(find "$td" -type f ! -name '*.json' ! -name '*.nii*' ! -name '*.png' -print0 | sort -z)
bad=${top_builddir:-.}/tests/test-badfiles
if [ -x "$bad" ]; then
    tmp=$(mktemp -d)
    MMS_TESTDATA=$td "$bad" --write "$tmp" >/dev/null 2>&1
    for f in "$tmp"/*; do [ -f "$f" ] && add "$f"; done
    rm -rf "$tmp"
fi
exit 0
