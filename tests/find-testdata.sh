# Sourced by the shell tests and benchmarks. find_testdata sets td to the shared test data
# folder (MMS_TESTDATA, else $srcdir/../shared/testdata, ../shared/testdata, or
# /work/shared/testdata: the first that holds dcm_qa_ct/In); returns 1 when there is none.
find_testdata() {
    local d
    for d in "${MMS_TESTDATA:-}" "${srcdir:-.}/../shared/testdata" ../shared/testdata \
        /work/shared/testdata; do
        if [ -n "$d" ] && [ -d "$d/dcm_qa_ct/In" ]; then
            td=$d
            return 0
        fi
    done
    return 1
}

# For a TAP test: find_testdata, or print the plan that skips everything, with the reason,
# and exit.
require_testdata() {
    if ! find_testdata; then
        echo "1..0 # SKIP the shared test data is not here (set MMS_TESTDATA to its folder)"
        exit 0
    fi
}

# TAP results numbered in order: result OK|FAIL DESCRIPTION; failed is 1 once one failed.
n=0
failed=0
result() {
    n=$((n + 1))
    if [ "$1" = OK ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=1; fi
}

# For a TAP test: unless $python (default /usr/bin/python3) imports every module named, print
# the plan that skips everything, with the reason, and exit.
require_python() {
    local reason py=${python:-${PYTHON3:-/usr/bin/python3}}
    if ! reason=$("$py" -c "import $(IFS=,; echo "$*")" 2>&1); then
        echo "1..0 # SKIP $py cannot import $*: ${reason##*$'\n'}"
        exit 0
    fi
}

# For a TAP test: unless every program named is on the PATH, print the plan that skips
# everything, with the reason, and exit.
require_tools() {
    local t
    for t in "$@"; do
        if ! command -v "$t" >/dev/null; then
            echo "1..0 # SKIP $t is not installed (DCMTK tools, sqlite3 CLI)"
            exit 0
        fi
    done
}

# tap_lines WANT NAME COMMAND...: run COMMAND, which prints "ok - " and "not ok - " lines, and
# number them as results (other lines become comments). A result it did not print (fewer than
# WANT; none at all when WANT is 0) counts as a failure of NAME.
tap_lines() {
    local want=$1 name=$2 got=0 line out rc
    shift 2
    out=$("$@" 2>&1)
    rc=$?
    while IFS= read -r line; do
        case $line in
        "ok - "*) result OK "${line#ok - }"; got=$((got + 1)) ;;
        "not ok - "*) result FAIL "${line#not ok - }"; got=$((got + 1)) ;;
        "") ;;
        "#"*) echo "$line" ;;
        *) echo "# $line" ;;
        esac
    done <<<"$out"
    [ "$want" -gt 0 ] || [ $got -gt 0 ] || result FAIL "$name: no result (exit $rc)"
    while [ $got -lt "$want" ]; do
        result FAIL "$name: result $((got + 1)) of $want missing (exit $rc)"
        got=$((got + 1))
    done
}

# bench_phantom DIR SLICES PYTHON: the 512 x 512 x SLICES phantom series of the benchmarks
# (tools/mmunet/phantom.py, seed 1007, 0.78125 x 0.78125 x 1.25 mm) in DIR, made once; sets
# ph to DIR/phantom-512x512xSLICES. Returns 1 when phantom.py fails (see $ph.log).
bench_phantom() {
    ph=$1/phantom-512x512x$2
    [ -f "$ph/done" ] && return 0
    echo "== generating $ph (tools/mmunet/phantom.py, once)" >&2
    rm -rf "$ph"
    "$3" tools/mmunet/phantom.py --seed 1007 --shape "$2" 512 512 \
        --spacing 1.25 0.78125 0.78125 --out "$ph" --dicom >"$ph.log" 2>&1 || return 1
    touch "$ph/done"
}
