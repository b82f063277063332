#!/bin/bash
# README command 2: install, build and run the whole test suite, twice:
#   1. the normal build, with CUDA where nvcc is present (--with-cuda=yes), else without;
#   2. --with-cuda=no with AddressSanitizer and UndefinedBehaviorSanitizer, and the crash
#      points of tests/test-crash-points.sh (--enable-crash-points);
# then every libFuzzer target for FUZZ_SECONDS (30) each, make distcheck-short (the release
# tarball builds and passes make check without the long suites, which ran in full above, and
# holds every file git tracks), the Debian packages in their short form (tests/test-deb.sh),
# the formatting check, and that make distclean leaves nothing in a build that ran the whole
# suite and that nothing was written into the source tree. Ends with one line
# "check: N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
tools/install-deps.sh || exit 1
autoreconf -fi || exit 1
# what git sees of the source tree before the builds (ignored files included): compared at the end
tree_state() { git status --porcelain --ignored 2>/dev/null | grep -v '^!! _build/$'; }
tree_before=$(tree_state)
# Out-of-tree builds need a source tree that is not configured in place.
if [ -f config.status ]; then
    echo "check: the source tree was configured in place; running make distclean first"
    make distclean >/dev/null || exit 1
fi

cuda_home=${CUDA_HOME:-/usr/local/cuda}
if [ -x "$cuda_home/bin/nvcc" ] || command -v nvcc >/dev/null; then
    cuda=yes
else
    cuda=no
    echo "check: no nvcc under $cuda_home or on PATH: the CUDA build is skipped"
fi

pass=0 fail=0 skip=0 status=0
# build NAME CONFIGURE-ARGS...: an out-of-tree build and its make check; adds up the counts.
build() {
    local name=$1 dir=$top/_build/$1 log
    shift
    echo "=== build $name: configure $*"
    rm -rf "$dir" && mkdir -p "$dir" || return 1
    log=$dir/check.out
    if ! (cd "$dir" && "$top/configure" --enable-werror "$@" >configure.out 2>&1); then
        tail -30 "$dir/configure.out"
        echo "check: configure failed for build $name"
        fail=$((fail + 1)); status=1
        return
    fi
    sed -n '/^mmsegd .* configured/,$p' "$dir/configure.out"
    (cd "$dir" && make -j"$(nproc)" >make.out 2>&1 && make check 2>&1) | tee "$log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
    local p f s e
    p=$(sed -n 's/^# PASS: *\([0-9]*\)/\1/p' "$log" | tail -1)
    f=$(sed -n 's/^# FAIL: *\([0-9]*\)/\1/p' "$log" | tail -1)
    s=$(sed -n 's/^# SKIP: *\([0-9]*\)/\1/p' "$log" | tail -1)
    e=$(sed -n 's/^# ERROR: *\([0-9]*\)/\1/p' "$log" | tail -1)
    if [ -z "$p" ]; then
        tail -30 "$dir/make.out"
        echo "check: build $name did not reach its tests"
        fail=$((fail + 1)); status=1
        return
    fi
    pass=$((pass + p)); fail=$((fail + ${f:-0} + ${e:-0})); skip=$((skip + ${s:-0}))
    for t in "$dir"/tests/*.log; do # print skip reasons: never a silent skip
        grep -H 'SKIP' "$t" 2>/dev/null | sed "s|^$dir/||"
    done
}

build cuda-$cuda --with-cuda=$cuda
build asan --with-cuda=no --enable-asan --enable-crash-points

echo "=== check-python: the PyTorch reference, model file, fixtures and demo model"
if (cd "$top/_build/cuda-$cuda" && make check-python) >"$top/_build/python.out" 2>&1; then :; else status=1; fi
grep -E '^(test_|Ran |OK|FAILED)|skipped' "$top/_build/python.out"
ran=$(sed -n 's/^Ran \([0-9]*\) tests\{0,1\}.*/\1/p' "$top/_build/python.out")
pskip=$(grep -c '\.\.\. skipped' "$top/_build/python.out")
pfail=$(grep -cE '\.\.\. (FAIL|ERROR)$' "$top/_build/python.out")
if [ -z "$ran" ]; then
    tail -30 "$top/_build/python.out"
    fail=$((fail + 1)); status=1
else
    pass=$((pass + ran - pskip - pfail)); skip=$((skip + pskip)); fail=$((fail + pfail))
fi

echo "=== fuzz: every libFuzzer target for ${FUZZ_SECONDS:-30} s (clang, ASan, UBSan)"
fdir=$top/_build/fuzz
rm -rf "$fdir" && mkdir -p "$fdir"
if (cd "$fdir" && "$top/configure" --enable-fuzz --with-cuda=no CC=clang CXX=clang++ \
    >configure.out 2>&1 && make -j"$(nproc)" fuzz FUZZ_SECONDS="${FUZZ_SECONDS:-30}" \
    >fuzz.out 2>&1); then
    sed -n '/^target /,$p' "$fdir/fuzz.out"
    pass=$((pass + 1))
else
    tail -30 "$fdir/fuzz.out" "$fdir/configure.out" 2>/dev/null
    echo "fuzz: a target found something or did not run"
    fail=$((fail + 1)); status=1
fi

echo "=== distcheck: the release tarball builds and passes make check on its own (without the long suites)"
if (cd "$top/_build/cuda-$cuda" && make distcheck-short >distcheck.out 2>&1); then
    grep -E '^# (TOTAL|PASS|SKIP):' "$top/_build/cuda-$cuda/distcheck.out" | tr '\n' ' '
    echo
    echo "distcheck: ok"
    pass=$((pass + 1))
    # every file git tracks is in the tarball, but .gitignore
    tarball=$(ls "$top/_build/cuda-$cuda"/mmsegd-*.tar.gz 2>/dev/null | head -1)
    if [ ! -d "$top/.git" ]; then
        echo "ok # SKIP the tarball's contents: this source tree is not a git clone"
        skip=$((skip + 1))
    elif missing=$(comm -23 <(git ls-files | grep -vx '.gitignore' | sort) \
        <(tar tzf "$tarball" | sed 's|^[^/]*/||' | sort)) && [ -z "$missing" ]; then
        echo "distcheck: $(basename "$tarball") holds every file git tracks"
        pass=$((pass + 1))
    else
        echo "distcheck: tracked files missing from $(basename "$tarball") (EXTRA_DIST):"
        echo "$missing" | head -20
        fail=$((fail + 1)); status=1
    fi
else
    grep -E '^(FAIL|ERROR|XPASS): ' "$top/_build/cuda-$cuda/distcheck.out"
    for t in $(sed -n 's/^\(FAIL\|ERROR\): \([^ ]*\).*/\2/p' "$top/_build/cuda-$cuda/distcheck.out" | sort -u); do
        f=$(find "$top/_build/cuda-$cuda" -path "*/_build/sub/$t.log" 2>/dev/null | head -1)
        [ -n "$f" ] && { echo "--- $t.log (end)"; tail -40 "$f"; }
    done
    tail -30 "$top/_build/cuda-$cuda/distcheck.out"
    fail=$((fail + 1)); status=1
fi

echo "=== deb: the Debian packages, short form (tests/test-deb.sh with DEB_SHORT=1)"
# Built from a clone without CUDA and without build-time tests, checked by lintian, and (as
# root) installed, checked and purged; the full form, with mmsegd-cuda, is `make deb`.
dlog=$top/_build/deb.out
if (cd "$top/_build/cuda-$cuda" && make deb DEB_SHORT=1 >"$dlog" 2>&1); then
    if grep -q '^1\.\.0 # SKIP' "$dlog"; then
        skip=$((skip + 1))
    else
        pass=$((pass + 1))
    fi
    grep -E 'SKIP|^# (build time|mmsegd.*\.deb):' "$dlog"
    echo "deb: ok"
else
    grep -E '^(not ok|Bail out!)' "$dlog"
    tail -40 "$dlog"
    fail=$((fail + 1)); status=1
fi

echo "=== format-check"
if (cd "$top/_build/asan" && make format-check); then
    pass=$((pass + 1))
else
    fail=$((fail + 1)); status=1
fi

echo "=== clean: make distclean in the ASan build leaves nothing; the source tree is as it was"
left=$(cd "$top/_build/asan" && make distclean >/dev/null 2>&1 &&
    find . -type f ! -name configure.out ! -name make.out ! -name check.out) ||
    left="make distclean failed"
if [ -z "$left" ]; then
    echo "clean: make distclean left nothing in _build/asan"
    pass=$((pass + 1))
else
    echo "clean: make distclean left in _build/asan (CLEANFILES, DISTCLEANFILES):"
    echo "$left" | head -20
    fail=$((fail + 1)); status=1
fi
if [ ! -d "$top/.git" ]; then
    echo "ok # SKIP the source tree's state: not a git clone"
    skip=$((skip + 1))
elif [ "$(tree_state)" = "$tree_before" ]; then
    echo "clean: the checks wrote nothing into the source tree"
    pass=$((pass + 1))
else
    echo "clean: the checks changed the source tree (git status --ignored, before and after):"
    diff <(echo "$tree_before") <(tree_state) | head -20
    fail=$((fail + 1)); status=1
fi

echo "check: $pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ] || status=1
exit $status
