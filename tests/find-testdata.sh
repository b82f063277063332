# Sourced by the shell tests and benchmarks: find_testdata sets td to the shared test data
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
