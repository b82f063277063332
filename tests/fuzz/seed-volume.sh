#!/bin/bash
# tests/fuzz/seed-volume.sh OUT: the seed corpus of fuzz-volume: 2 to 4 small files of one
# series from the shared test data, joined with the separator fuzz-volume splits at.
set -u
out=$1
mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)
if [ -z "${td:-}" ]; then
    # shellcheck source=../find-testdata.sh
    . "$here/../find-testdata.sh"
    find_testdata || exit 0
fi
sep=$'\nMMS-FUZZ-NEXT-FILE\n'
join() { # join NAME FILE...: the files of one series, separated
    local name=$1 first=1 f
    shift
    for f in "$@"; do [ -f "$f" ] || return 0; done
    {
        for f in "$@"; do
            [ $first = 1 ] || printf '%s' "$sep"
            first=0
            cat "$f"
        done
    } >"$out/$name"
}
for s in 24x38x3 23x38x3; do
    d=$td/dcmqi/data/segmentations/$s/image
    join "$s-3" "$d/IMG0001.dcm" "$d/IMG0002.dcm" "$d/IMG0003.dcm"
    join "$s-2" "$d/IMG0003.dcm" "$d/IMG0001.dcm"
    join "$s-4" "$d/IMG0001.dcm" "$d/IMG0002.dcm" "$d/IMG0003.dcm" "$d/IMG0002.dcm"
done
exit 0
