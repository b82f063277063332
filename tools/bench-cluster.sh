#!/bin/bash
# A cluster of `mmsegd serve` nodes (docs/cluster.md) on one PostgreSQL database and one
# state_dir, with 1, 2 and 3 nodes, against the single node on SQLite (the default), all on
# this machine and in one run. (make bench-cluster; BENCH_ARGS passes options.)
#
#   tools/bench-cluster.sh [--slices N] [--runs R] [--series K] [--series-slices N] [--short]
#
# 1. Intake: instances per second stored and acknowledged. Twelve synthetic series of N slices
#    (default 40) made by tools/mkseries.py from the clean Philips series, each sent on its
#    own association, all twelve at once; with several nodes the series are dealt out over
#    them (12, 6 or 4 associations per node). The cluster's nodes have roles = intake only,
#    so that nothing else competes; the SQLite node (all roles) and they have
#    stable_age_s = 86400, so no series completes during the timing. Median of R runs
#    (default 3), the configurations interleaved.
# 2. End to end: K series (default 12) of N slices (default 20; mkseries.py, other copies)
#    sent the same way to nodes with all roles, the demo model (models/demo.safetensors,
#    [infer] threads = 1, [daemon] workers = 1 per node), stable_age_s = 1 and a folder
#    destination; the time from the first C-STORE until every series is done in the index.
#    Median of R runs.
# 3. The database's time: the throw-away PostgreSQL of tests/pg-util.sh, restarted with
#    shared_preload_libraries = pg_stat_statements and track_wal_io_timing = on (ALTER
#    SYSTEM; pg_start takes no server options). For each intake configuration, after a first
#    node has made the schema and stopped: pg_stat_database (active time, which includes the
#    WAL flush of each COMMIT, and the time in open transactions between statements),
#    pg_stat_statements (execution time of the statements; a COMMIT's flush is not in it) and
#    pg_stat_wal, read after the nodes stopped (their sessions' counters are written then).
# 4. For the capacity estimate: rows and bytes per instance and per series of the tables
#    instances, series, jobs and sends after the end-to-end run with 3 nodes, and the time a
#    put holds its transaction (and so the row lock on its series) open.
# Every process runs on this machine's cores: the nodes, PostgreSQL and storescu compete
# for them, which the figures include. --short: R = 1, N = 20 for the intake. KEEP=1 keeps
# the scratch folder (the nodes' logs n1.log..n3.log, all configurations appended).
set -eu
cd "$(dirname "$0")/.."
slices=40
runs=3
e2e_series=12
e2e_slices=20
while [ $# -gt 0 ]; do
    case $1 in
    --slices) slices=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --series) e2e_series=$2; shift 2 ;;
    --series-slices) e2e_slices=$2; shift 2 ;;
    --short) runs=1; slices=20; shift ;;
    *) echo "usage: $0 [--slices N] [--runs R] [--series K] [--series-slices N] [--short]" >&2
       exit 2 ;;
    esac
done
mmsegd=${MMSEGD:-_build/dev/mmsegd}
py=${PYTHON3:-/usr/bin/python3}
python=$py # serve-util.sh
model=$PWD/models/demo.safetensors
. tests/find-testdata.sh
. tests/serve-util.sh
. tests/pg-util.sh
die() { echo "bench-cluster: $*" >&2; exit 1; }
find_testdata || die "the shared test data is not here (set MMS_TESTDATA to its folder)"
for t in storescu echoscu psql sqlite3 bc; do
    command -v $t >/dev/null || die "$t is not installed (DCMTK, postgresql-client, sqlite3, bc)"
done
[ -x "$mmsegd" ] || die "$mmsegd is not built"
why=$(pg_available) || die "$why"
[ -f "$model" ] || die "$model is missing"
printf '[daemon]\nstate_dir = /tmp/bench-cluster-none\ndatabase = host=/nonexistent dbname=x\nnode = n1\nroles = intake\n' \
    >"${TMPDIR:-/tmp}/bench-cluster-check.$$.ini"
if ! "$mmsegd" check-config -c "${TMPDIR:-/tmp}/bench-cluster-check.$$.ini" >/dev/null 2>&1; then
    rm -f "${TMPDIR:-/tmp}/bench-cluster-check.$$.ini"
    die "$mmsegd does not take [daemon] database = a PostgreSQL connection string (no cluster)"
fi
rm -f "${TMPDIR:-/tmp}/bench-cluster-check.$$.ini"

work=$(mktemp -d "$PWD/_build/bench-cluster.XXXXXX") # on the disk, not a tmpfs
tmp=$work # serve-util.sh
declare -A npid nport
cleanup() {
    local k
    for k in "${!npid[@]}"; do
        if [ -n "${npid[$k]}" ]; then
            kill -9 "${npid[$k]}" 2>/dev/null || true
            wait "${npid[$k]}" 2>/dev/null || true
        fi
    done
    pg_cleanup >/dev/null 2>&1 || true
    if [ -n "${KEEP:-}" ]; then echo "# kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
export LC_ALL=C

# ---------------------------------------------------------------------------- inputs
# series COPY SLICES: the folder of mkseries.py's copy COPY with SLICES slices (made once)
series() {
    local d=$work/in/s$2-$1
    if [ ! -d "$d" ]; then
        "$py" tools/mkseries.py "$td/dcm_qa_ct/In/Philips/S21570/S2010" "$d" --slices "$2" \
            --copy "$1" >/dev/null || die "mkseries.py failed"
    fi
    echo "$d"
}
intake_dirs=()
for k in $(seq 12); do intake_dirs+=("$(series "$k" "$slices")"); done
e2e_dirs=()
for k in $(seq "$e2e_series"); do e2e_dirs+=("$(series $((100 + k)) "$e2e_slices")"); done
total=$((12 * slices))
e2e_total=$((e2e_series * e2e_slices))

# ---------------------------------------------------------------------------- PostgreSQL
pg_start "$work/pg" >"$work/pg-start.log" 2>&1 || { cat "$work/pg-start.log" >&2; die "PostgreSQL does not start"; }
pgs() { pg_psql_db postgres "$@"; } # the statistics are read from the database postgres
pgss=no
if [ -f "$PG_BIN/../lib/pg_stat_statements.so" ] ||
    [ -f "$(dirname "$PG_BIN")/lib/pg_stat_statements.so" ]; then
    if pgs "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'" \
        "ALTER SYSTEM SET track_wal_io_timing = on" >>"$work/pg-start.log" 2>&1 &&
        pg_stop >>"$work/pg-start.log" && pg_start_again >>"$work/pg-start.log" &&
        pgs "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >>"$work/pg-start.log" 2>&1; then
        pgss=yes
    else
        pg_start_again >/dev/null 2>&1 || true
    fi
fi
pg_version=$(pgs "SHOW server_version" | cut -d' ' -f1)
pg_settings=$(pgs "SELECT string_agg(name || ' ' || current_setting(name), ', ' ORDER BY name) FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'shared_buffers')")
# a new, empty database mmsegd for a configuration
pg_fresh() {
    pgs "DROP DATABASE IF EXISTS mmsegd WITH (FORCE)" "CREATE DATABASE mmsegd" >/dev/null
}
# until no session is connected to mmsegd (a session's counters reach pg_stat_database when
# it ends)
pg_quiet() {
    local _
    for _ in $(seq 100); do
        [ "$(pgs "SELECT count(*) FROM pg_stat_activity WHERE datname = 'mmsegd'")" = 0 ] && { sleep 0.2; return 0; }
        sleep 0.1
    done
    return 1
}
# pg_counters: active ms, idle-in-transaction ms, commits, rollbacks, WAL bytes, WAL syncs,
# WAL sync ms, statement calls, statement ms (pg_stat_statements; without it 0 0)
pg_counters() {
    local ss="'0 0'"
    if [ $pgss = yes ]; then
        ss="(SELECT coalesce(sum(calls), 0) || ' ' || coalesce(sum(total_exec_time), 0) FROM $ss_mine)"
    fi
    pgs "SELECT d.active_time || ' ' || d.idle_in_transaction_time || ' ' || d.xact_commit || ' ' || d.xact_rollback || ' ' || w.wal_bytes || ' ' || w.wal_sync || ' ' || w.wal_sync_time || ' ' || $ss FROM pg_stat_database d, pg_stat_wal w WHERE d.datname = 'mmsegd'" | tr '|' ' '
}
pg_reset() {
    pgs "SELECT pg_stat_reset_shared('wal')" >/dev/null
    [ $pgss = no ] || pgs "SELECT pg_stat_statements_reset()" >/dev/null
}
q() { pg_psql "$@"; } # on mmsegd
# the rows of pg_stat_statements for the daemon's statements on mmsegd (ours are marked)
ss_mine="pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'mmsegd') AND query NOT LIKE '%bench-cluster%'"

# ---------------------------------------------------------------------------- nodes
wait_echo() { # PORT
    for _ in $(seq 150); do
        echoscu -to 2 -aec MMSEGD 127.0.0.1 "$1" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}
# node_ini NAME DB PART STATE: DB sqlite or pg, PART intake or e2e
node_ini() {
    local name=$1 db=$2 part=$3 state=$4 lines=("log_level = warning")
    nport[$name]=$(free_port)
    [ "$db" = pg ] && lines+=("database = $PG_CONNINFO" "node = $name")
    [ "$db" = pg ] && [ "$part" = intake ] && lines+=("roles = intake")
    [ "$part" = e2e ] && lines+=("workers = 1")
    {
        echo "max_associations_per_host = 0"
        if [ "$part" = intake ]; then
            printf '[series]\nstable_age_s = 86400\n[infer]\nmodel = %s\n' "$model"
        else
            printf '[series]\nstable_age_s = 1\n[infer]\nmodel = %s\nthreads = 1\n' "$model"
            printf '[destination out]\ntype = folder\npath = %s/out\n' "$state"
        fi
    } | serve_config "$work/$name.ini" "$state" "${nport[$name]}" "${lines[@]}"
}
# nodes_start DB PART STATE N: N nodes (n1..nN; one for sqlite), each answering C-ECHO
nodes_start() {
    local k
    [ "$2" = e2e ] && mkdir -p "$3/out"
    for k in $(seq "$4"); do
        node_ini "n$k" "$1" "$2" "$3"
        "$mmsegd" serve -c "$work/n$k.ini" >>"$work/n$k.log" 2>&1 &
        npid[n$k]=$!
    done
    for k in $(seq "$4"); do
        wait_echo "${nport[n$k]}" || { tail -5 "$work/n$k.log" >&2; die "node n$k does not answer C-ECHO"; }
    done
}
nodes_stop() {
    local k
    for k in "${!npid[@]}"; do
        if [ -n "${npid[$k]}" ]; then kill -TERM "${npid[$k]}" 2>/dev/null || true; fi
    done
    for k in "${!npid[@]}"; do
        [ -n "${npid[$k]}" ] && { wait "${npid[$k]}" 2>/dev/null || true; }
        npid[$k]=
    done
}
# send_dealt N DIR...: each folder on its own association, all at once, dealt out over the
# nodes n1..nN; prints the seconds from the first start to the last end
send_dealt() {
    local n=$1 t0 t1 j=0 pids=() d
    shift
    t0=$EPOCHREALTIME
    for d in "$@"; do
        storescu -aec MMSEGD 127.0.0.1 "${nport[n$((j % n + 1))]}" +sd "$d" >"$work/scu$j.log" 2>&1 &
        pids+=($!)
        j=$((j + 1))
    done
    for d in "${pids[@]}"; do wait "$d" || true; done
    t1=$EPOCHREALTIME
    for ((j = 0; j < ${#pids[@]}; j++)); do
        if grep -q "E:" "$work/scu$j.log"; then
            echo "bench-cluster: storescu $j reported errors:" >&2
            head -5 "$work/scu$j.log" >&2
            exit 1
        fi
    done
    echo "$t1 - $t0" | bc -l
}
# indexed DB STATE: instances in the index
indexed() {
    if [ "$1" = pg ]; then q "SELECT /* bench-cluster */ count(*) FROM instances"
    else sqlite3 -readonly "$2/state.db" "SELECT count(*) FROM instances"; fi
}
# settled DB STATE: "done other" series counts
settled() {
    local sql="SELECT /* bench-cluster */ count(*) FILTER (WHERE state = 'done') || ' ' || count(*) FILTER (WHERE state IN ('failed', 'skipped')) FROM series"
    if [ "$1" = pg ]; then q "$sql" 2>/dev/null
    else sqlite3 -readonly "$2/state.db" "SELECT sum(state = 'done') || ' ' || sum(state IN ('failed', 'skipped')) FROM series" 2>/dev/null; fi
}

configs=(sqlite-1 pg-1 pg-2 pg-3)
declare -A secs e2e_s e2e_db dbv
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
f() { awk "BEGIN {printf \"$1\", ($2)}"; } # f FORMAT EXPRESSION

# ---------------------------------------------------------------------------- 1. intake
for r in $(seq "$runs"); do
    for c in "${configs[@]}"; do
        db=${c%-*} n=${c#*-}
        state=$work/state-$c
        rm -rf "$state"
        if [ "$db" = pg ]; then
            pg_fresh
            nodes_start pg intake "$state" 1 # the schema, made before the timing
            nodes_stop
            pg_quiet || die "sessions left on the database"
            pg_reset
            before=$(pg_counters)
        fi
        nodes_start "$db" intake "$state" "$n"
        secs[$c]="${secs[$c]:-} $(send_dealt "$n" "${intake_dirs[@]}")"
        nodes_stop
        if [ "$db" = pg ]; then
            pg_quiet || true
            dbv[$c]=$(paste -d' ' <(echo "$before" | tr ' ' '\n') <(pg_counters | tr ' ' '\n') |
                awk '{printf "%s ", $2 - $1}')
            if [ $pgss = yes ] && [ "$r" = "$runs" ]; then
                pgs "SELECT round(total_exec_time::numeric, 1) || '|' || calls || '|' || rows || '|' || round(mean_exec_time::numeric, 3) || '|' || regexp_replace(left(query, 64), '\s+', ' ', 'g') FROM $ss_mine ORDER BY total_exec_time DESC LIMIT 8" >"$work/top-$c"
                # the statements of a put: mean execution time, calls per instance
                pgs "SELECT string_agg(k || ' ' || round(m::numeric, 3) || ' ms x' || round(n::numeric / $total, 2), ', ' ORDER BY k) || '|' || coalesce(sum(m) FILTER (WHERE k IN ('series upsert', 'instance insert', 'commit')), 0) FROM (SELECT CASE WHEN query LIKE 'SELECT digest, path, series_uid FROM instances%' THEN 'find' WHEN query LIKE 'INSERT INTO series%' THEN 'series upsert' WHEN query LIKE 'INSERT INTO instances%' THEN 'instance insert' WHEN query = 'BEGIN' THEN 'begin' WHEN query = 'COMMIT' THEN 'commit' END k, sum(total_exec_time) / sum(calls) m, sum(calls) n FROM $ss_mine GROUP BY 1) s WHERE k IS NOT NULL" >"$work/put-$c"
            fi
        fi
        stored=$(indexed "$db" "$state")
        if [ "$stored" -ne "$total" ]; then
            grep -hE " (err|warning): " "$work"/n*.log | tail -5 >&2
            die "$c indexed $stored of $total instances"
        fi
    done
done

# ---------------------------------------------------------------------------- 2. end to end
for r in $(seq "$runs"); do
    for c in "${configs[@]}"; do
        db=${c%-*} n=${c#*-}
        state=$work/e2e-$c
        rm -rf "$state"
        [ "$db" = pg ] && { pg_fresh; pg_reset; }
        nodes_start "$db" e2e "$state" "$n"
        t0=$EPOCHREALTIME
        send_dealt "$n" "${e2e_dirs[@]}" >/dev/null
        end=$((SECONDS + 60 + 30 * e2e_series))
        while :; do
            read -r ndone nother < <(settled "$db" "$state" || echo "0 0")
            [ "${ndone:-0}" -ge "$e2e_series" ] && break
            [ $((${ndone:-0} + ${nother:-0})) -ge "$e2e_series" ] &&
                die "$c: ${nother} series failed or skipped ($(grep -h ' err: ' "$work"/n*.log | tail -3))"
            [ $SECONDS -ge $end ] && die "$c: ${ndone:-0} of $e2e_series series done after $((SECONDS - end + 60 + 30 * e2e_series)) s"
            sleep 0.2
        done
        t1=$EPOCHREALTIME
        e2e_s[$c]="${e2e_s[$c]:-} $(echo "$t1 - $t0" | bc -l)"
        if [ "$db" = pg ] && [ $pgss = yes ]; then
            e2e_db[$c]=$(pgs "SELECT coalesce(sum(total_exec_time), 0) FROM $ss_mine")
        fi
        if [ "$c" = pg-3 ] && [ "$r" = "$runs" ]; then # 4. rows and bytes, once the sends are through too
            for _ in $(seq 100); do
                [ "$(q "SELECT /* bench-cluster */ count(*) FROM sends WHERE state <> 'done'")" = 0 ] && break
                sleep 0.2
            done
            for t in instances series jobs sends; do
                q "SELECT /* bench-cluster */ '$t', count(*), pg_total_relation_size('$t'), coalesce(round(avg(pg_column_size(x.*))), 0) FROM $t x"
            done >"$work/sizes"
        fi
        nodes_stop
    done
done

# ---------------------------------------------------------------------------- output
cores=$(nproc)
printf 'machine: %d cores (nproc), shared by the nodes, PostgreSQL and storescu; file system: %s\n' \
    "$cores" "$(df --output=fstype "$work" | tail -1)"
printf 'PostgreSQL %s (%s), pg_stat_statements: %s; isolate: yes (default)\n' "$pg_version" \
    "$pg_settings" "$pgss"
printf 'intake: %d instances (12 series x %d, 12 associations at once dealt out over the nodes), cluster roles = intake, runs: %d (median)\n' \
    "$total" "$slices" "$runs"
printf 'end to end: %d series x %d slices, demo model, per node workers = 1, threads = 1, stable_age_s = 1, folder destination, runs: %d (median)\n' \
    "$e2e_series" "$e2e_slices" "$runs"
printf '%-12s %12s %12s %12s %10s %10s\n' config instances/s series/min "DB ms/inst" "ratio in" "ratio e2e"
declare -A ips spm
for c in "${configs[@]}"; do
    # shellcheck disable=SC2086
    m=$(median ${secs[$c]})
    ips[$c]=$(echo "$total / $m" | bc -l)
    # shellcheck disable=SC2086
    spm[$c]=$(echo "$e2e_series * 60 / $(median ${e2e_s[$c]})" | bc -l)
done
for c in "${configs[@]}"; do
    dbms=-
    if [ -n "${dbv[$c]:-}" ]; then
        read -r act _ <<<"${dbv[$c]}"
        dbms=$(f %.3f "$act / $total")
    fi
    printf '%-12s %12.1f %12.1f %12s %10.2f %10.2f\n' "$c" "${ips[$c]}" "${spm[$c]}" "$dbms" \
        "$(echo "${ips[$c]} / ${ips[sqlite-1]}" | bc -l)" "$(echo "${spm[$c]} / ${spm[sqlite-1]}" | bc -l)"
done
echo "(sqlite-1: one node on state.db; pg-N: N nodes on one PostgreSQL database and one state_dir;"
echo " DB ms/inst: pg_stat_database active time of the intake / instances, the COMMITs' WAL flush included;"
echo " ratio: instances/s, series/min against sqlite-1)"

echo
echo "3. database time per instance in the intake (last run of each configuration):"
printf '%-8s %12s %10s %10s %12s %10s %10s %10s %12s\n' config "wall ms/inst" "active ms" "stmt ms" \
    "in-xact ms" "xacts" "WAL B" "WAL syncs" "conn busy"
for c in pg-1 pg-2 pg-3; do
    n=${c#*-}
    read -r act idle com rb walb wals _ _ stms <<<"${dbv[$c]}"
    # shellcheck disable=SC2086
    last=$(echo ${secs[$c]} | awk '{print $NF}')
    printf '%-8s %12.3f %10.3f %10s %12.3f %10.2f %10.0f %10.2f %11.0f%%\n' "$c" \
        "$(f %f "$last * 1000 * $n / $total")" "$(f %f "$act / $total")" \
        "$([ $pgss = yes ] && f %.3f "$stms / $total" || echo -)" "$(f %f "$idle / $total")" \
        "$(f %f "($com + $rb) / $total")" "$(f %f "$walb / $total")" "$(f %f "$wals / $total")" \
        "$(f %f "100 * ($act + $idle) / ($n * $last * 1000)")"
done
echo "(per instance: wall ms/inst = wall time x nodes / instances, what one node spends per instance;"
echo " active = server time in statements, COMMIT's WAL flush included; stmt = pg_stat_statements'"
echo " execution time, without the flush; in-xact = time transactions stood open between statements"
echo " (round trips, the daemon's own work); xacts = transactions; WAL B = WAL bytes; conn busy ="
echo " (active + in-xact) / (nodes x wall): how much of the time each node's one connection, and the"
echo " index mutex around it, is taken)"
if [ $pgss = yes ]; then
    for c in pg-1 pg-3; do
        echo "top statements, $c intake (total ms | calls | rows | mean ms | text):"
        sed 's/^/  /' "$work/top-$c"
    done
fi

echo
echo "4. capacity figures (tables after the end-to-end run with 3 nodes, $e2e_series series, $e2e_total instances):"
printf '%-10s %8s %12s %12s %12s %12s\n' table rows "per series" "total B" "B/row" "tuple B/row"
while IFS='|' read -r t rows tb tup; do
    printf '%-10s %8d %12.2f %12d %12.0f %12d\n' "$t" "$rows" "$(f %f "$rows / $e2e_series")" "$tb" \
        "$(f %f "$rows ? $tb / $rows : 0")" "$tup"
done <"$work/sizes"
echo "(B/row: pg_total_relation_size (heap, indexes, TOAST) / rows: at these row counts the 8 kB"
echo " pages, and the free space in them, weigh in; tuple B/row: pg_column_size of the row)"
if [ $pgss = yes ]; then
    read -r act idle com rb walb wals walst _ <<<"${dbv[pg-3]}"
    IFS='|' read -r put upsert <"$work/put-pg-3" || true
    echo "the statements of a put, pg-3 intake (mean execution, calls per instance):"
    echo "  ${put:-(not found in pg_stat_statements: the texts of the index changed?)}"
    printf 'WAL flush: %.2f syncs per instance, %.3f ms each (pg_stat_wal, track_wal_io_timing)\n' \
        "$(f %f "$wals / $total")" "$(f %f "$wals > 0 ? $walst / $wals : 0")"
    printf 'lock hold per put on its series row (from the upsert to the end of the COMMIT): statements %.3f ms + WAL flush %.3f ms + round trips;\n' \
        "${upsert:-0}" "$(f %f "$wals > 0 ? $walst / $wals : 0")"
    printf '  upper bound, all time in transactions per instance ((active + in-xact) / instances): pg-1 %.3f ms, pg-3 %.3f ms\n' \
        "$(read -r a i _ <<<"${dbv[pg-1]}"; f %f "($a + $i) / $total")" "$(f %f "($act + $idle) / $total")"
    printf '  so the lock on a series row holds one series back only above ~%.0f instances/s (all nodes together, pg-3),\n' \
        "$(f %f "1000 * $total / ($act + $idle)")"
    printf '  and the database alone would let one node (one connection behind the index mutex) take ~%.0f instances/s (pg-1)\n' \
        "$(read -r a i _ <<<"${dbv[pg-1]}"; f %f "1000 * $total / ($a + $i)")"
    e2edb=${e2e_db[pg-3]:-0}
    printf 'end to end, pg-3: DB statement time %.1f ms per series, %.3f ms per instance (everything: intake, scheduler, jobs, sends, heartbeats)\n' \
        "$(f %f "$e2edb / $e2e_series")" "$(f %f "$e2edb / $e2e_total")"
fi
# the nodes' errors and warnings, but those of the configuration itself (SCP policy, no
# destination in the intake)
grep -hE " (err|warning): " "$work"/n*.log | grep -v "Store SCP policy\|no \[destination\]" |
    sed -E 's/^[^ ]* //' >"$work/problems" || true
echo "node logs (all configurations): $(grep -c '^err' "$work/problems") error and $(grep -c '^warning' "$work/problems") warning lines"
sort "$work/problems" | uniq -c | sort -rn | head -3 | cut -c1-160
