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
