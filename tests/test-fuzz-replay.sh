#!/bin/bash
# The fuzz targets as regression tests: each tests/fuzz/fuzz-NAME replays its seed corpus
# (tests/fuzz/seed-NAME.sh, from the shared test data and the crafted cases of
# tests/test-badfiles) and the inputs in tests/fuzz/regress/NAME/ (synthetic inputs that once
# crashed); a crash, an abort or a sanitizer report fails the target's result.
set -u
srcdir=${srcdir:-.}
top_builddir=${top_builddir:-.}
export top_builddir
. "$srcdir/tests/find-testdata.sh"
find_testdata || td=
export td
names=()
for c in "$srcdir"/tests/fuzz/fuzz-*.c; do names+=("$(basename "$c" .c)"); done
echo "1..${#names[@]}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for t in "${names[@]}"; do
    name=${t#fuzz-}
    prog=$top_builddir/tests/fuzz/$t
    if [ ! -x "$prog" ]; then
        result FAIL "$t: not built (add it to FUZZ_PROGS in Makefile.am)"
        continue
    fi
    files=()
    if [ -n "$td" ] && [ -f "$srcdir/tests/fuzz/seed-$name.sh" ]; then
        bash "$srcdir/tests/fuzz/seed-$name.sh" "$tmp/$name"
    fi
    mkdir -p "$tmp/$name"
    while IFS= read -r -d '' f; do files+=("$f"); done < <(find "$tmp/$name" \
        "$srcdir/tests/fuzz/regress/$name" -type f -print0 2>/dev/null | sort -z)
    if [ ${#files[@]} = 0 ]; then
        n=$((n + 1))
        echo "ok $n - $t # SKIP no inputs (no test data, no regress/$name)"
        continue
    fi
    if out=$(ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} "$prog" "${files[@]}" 2>&1); then
        result OK "$t: ${#files[@]} inputs replayed"
    else
        result FAIL "$t: replaying ${#files[@]} inputs"
        printf '%s\n' "$out" | grep -v '^Running: \|^Executed ' | tail -30 | sed 's/^/# /'
    fi
done
exit $failed
