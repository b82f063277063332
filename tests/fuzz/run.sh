#!/bin/bash
# tests/fuzz/run.sh: `make fuzz`. Runs every fuzz target of FUZZ_PROGS (built with
# --enable-fuzz) for FUZZ_RUNS executions each (10^7), or for FUZZ_SECONDS each where that is
# set (the short form in CI), one after the other, on its corpus
# tests/fuzz/corpus/NAME (kept between runs) seeded by tests/fuzz/seed-NAME.sh, with
# FUZZ_ARGS added to libFuzzer's; crashes go to tests/fuzz/findings/NAME/. Prints a table:
# executions, executions per second, findings. Exits 1 when a target found something or
# failed to run, or stopped short of FUZZ_RUNS. Environment: FUZZ_PROGS, FUZZ_RUNS (10000000),
# FUZZ_SECONDS (unset), FUZZ_RSS_MB (2048), srcdir.
set -u
seconds=${FUZZ_SECONDS:-}
runs=${FUZZ_RUNS:-10000000}
if [ -n "$seconds" ]; then
    limit=(-max_total_time="$seconds")
    what="$seconds s"
else
    limit=(-runs="$runs")
    what="$runs executions"
fi
srcdir=${srcdir:-.}
top_builddir=$(pwd)
export top_builddir
status=0
rows=()
# every tests/fuzz/fuzz-NAME.c must be a target of the Makefile
for c in "$srcdir"/tests/fuzz/fuzz-*.c; do
    n=$(basename "$c" .c)
    case " ${FUZZ_PROGS} " in
    *" tests/fuzz/$n "*) ;;
    *) echo "make fuzz: $c is not in FUZZ_PROGS of Makefile.am" >&2; status=1 ;;
    esac
done
for prog in ${FUZZ_PROGS}; do
    name=${prog##*/fuzz-}
    corpus=tests/fuzz/corpus/$name
    seeds=tests/fuzz/seeds/$name
    findings=tests/fuzz/findings/$name
    log=tests/fuzz/$name.log
    mkdir -p "$corpus" "$findings"
    if [ ! -d "$seeds" ] && [ -f "$srcdir/tests/fuzz/seed-$name.sh" ]; then
        bash "$srcdir/tests/fuzz/seed-$name.sh" "$seeds.tmp" && mv "$seeds.tmp" "$seeds"
    fi
    mkdir -p "$seeds"
    dict=()
    [ -f "$srcdir/tests/fuzz/fuzz-$name.dict" ] && dict=(-dict="$srcdir/tests/fuzz/fuzz-$name.dict")
    # a target's own libFuzzer options, one line (tests/fuzz/fuzz-NAME.args; its .c says why)
    [ -f "$srcdir/tests/fuzz/fuzz-$name.args" ] && read -r -a own <"$srcdir/tests/fuzz/fuzz-$name.args" &&
        dict+=("${own[@]}")
    echo "== fuzz-$name: $what ($(find "$seeds" -type f | wc -l) seeds, $(find "$corpus" -type f | wc -l) in the corpus)" >&2
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:allocator_may_return_null=1} \
        UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
        "./$prog" "${limit[@]}" -rss_limit_mb="${FUZZ_RSS_MB:-2048}" \
        -timeout=25 -max_len=1048576 -print_final_stats=1 -artifact_prefix="$findings/" \
        "${dict[@]}" ${FUZZ_ARGS:-} "$corpus" "$seeds" >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    found=$(find "$findings" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
    rows+=("$(printf '%-14s %12s %8s %9s %5s' "fuzz-$name" "${execs:-?}" "${rate:-?}" "$found" "$rc")")
    if [ -z "$seconds" ] && [ "${execs:-0}" -lt "$runs" ]; then
        echo "fuzz-$name: stopped after ${execs:-0} of $runs executions" >&2
        status=1
    fi
    if [ "$rc" != 0 ] || [ "$found" != 0 ]; then
        status=1
        grep -m1 -A12 'ERROR: \|==ERROR\|deadly signal\|check failed' "$log" >&2
    fi
done
printf '%-14s %12s %8s %9s %5s\n' target executions exec/s findings exit
printf '%s\n' "${rows[@]}"
echo "(logs: tests/fuzz/NAME.log; findings: tests/fuzz/findings/NAME/)"
exit $status
