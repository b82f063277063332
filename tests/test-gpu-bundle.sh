#!/bin/bash
# tools/gpu-bundle.sh in a CUDA build (make gpu-bundle's packing), on tests/test-kernels alone
# and at xz level 0: the archive unpacks to bundle/ with the program, a MANIFEST that names
# the CUDA runtime as expected from the GPU machine, no glibc, C++ runtime or CUDA library in
# lib/, the fixtures and tools/mmunet; and the script refuses a missing program.
set -u
srcdir=${srcdir:-.}
top_builddir=${top_builddir:-.}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/test-gpu-bundle.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

n=0
failed=0
ok() { # ok STATUS DESCRIPTION
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=1; fi
}
diag() { printf '%s\n' "$1" | sed 's/^/# /'; }

if [ ! -x "$top_builddir/tests/test-kernels" ]; then
    echo "1..0 # SKIP tests/test-kernels is not built (a CUDA build is needed)"
    exit 0
fi
echo "1..6"

bash "$srcdir/tools/gpu-bundle.sh" --builddir "$top_builddir" --out "$tmp/b.tar.xz" --level 0 \
    tests/test-kernels >"$tmp/out" 2>&1
rc=$?
[ $rc -eq 0 ] && [ -s "$tmp/b.tar.xz" ] && grep -q "wrote $tmp/b.tar.xz: [0-9]* bytes" "$tmp/out"
ok $? "gpu-bundle.sh packs tests/test-kernels (exit $rc) and prints the archive's size"
[ $rc -eq 0 ] || diag "$(cat "$tmp/out")"

tar -C "$tmp" -xJf "$tmp/b.tar.xz" 2>/dev/null
b=$tmp/bundle
[ -x "$b/tests/test-kernels" ] && grep -qx "programs: tests/test-kernels" "$b/MANIFEST"
ok $? "the archive holds bundle/tests/test-kernels and its MANIFEST"

grep -q '^target-libs: .*libcudart\.so' "$b/MANIFEST"
ok $? "MANIFEST expects the CUDA runtime from the GPU machine: $(grep '^target-libs' "$b/MANIFEST")"

bad=
for f in "$b"/lib/*; do
    [[ ${f##*/} =~ ^(libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas|libcudnn)[.-] ]] &&
        bad="$bad ${f##*/}"
done
[ -z "$bad" ]; ok $? "lib/ holds no library the GPU machine brings${bad:+: $bad}"

[ -f "$b/tests/fixtures/mmunet/micro.safetensors" ] && [ -f "$b/models/demo.safetensors" ] &&
    [ -f "$b/tools/mmunet/bench_model.py" ] && [ -f "$b/tools/mmunet/bench_forward.py" ]
ok $? "fixtures, the demo model and tools/mmunet are in the archive"

bash "$srcdir/tools/gpu-bundle.sh" --builddir "$top_builddir" --out "$tmp/c.tar.xz" --level 0 \
    tests/no-such-program >"$tmp/out" 2>&1
rc=$?
[ $rc -ne 0 ] && [ ! -e "$tmp/c.tar.xz" ] && grep -q "tests/no-such-program is not built" "$tmp/out"
ok $? "a program that is not built: exit $rc, no archive, the reason"
exit $failed
