# Sourced by the tests that need a real PostgreSQL server (the cluster index, docs/cluster.md):
# a throw-away cluster of Debian's server binaries (/usr/lib/postgresql/VERSION/bin, the newest
# installed), reachable only through a Unix socket in its own folder, with trust authentication
# for the database user postgres and one database, mmsegd. fsync stays on: the tests that kill
# or restart the server count on committed rows surviving.
#  pg_available            0 when the server binaries (and, as root, the postgres user) are
#                          there; otherwise prints why on stdout and returns 1
#  pg_start DIR            a new cluster in DIR/data, its socket in DIR/sock, started; sets
#                          PG_DIR, PG_PORT, PG_SOCK, PG_CONNINFO (libpq key=value)
#  pg_stop                 fast shutdown (sessions are cut), waits until the server is gone
#  pg_start_again          starts the stopped cluster again: same data, socket and port
#  pg_restart_after SECS   pg_stop now, pg_start_again SECS seconds later in the background
#                          (the test goes on meanwhile; pg_wait_started waits for it)
#  pg_restart_script FILE  writes FILE, a shell script that restarts the cluster (fast), for a
#                          program under test to call (system()); it prints nothing
#  pg_psql SQL...          each SQL through psql -X -A -t -q on PG_CONNINFO: rows on stdout,
#                          fields separated by |; fails at the first error
#  pg_cleanup              stops the server if it runs and removes PG_DIR (unless KEEP is set);
#                          for the test's EXIT trap, also under set -e
# One cluster per shell (the PG_* variables); two tests may each run their own at once: the
# port is chosen free and the socket, whose name carries the port, lies in each one's folder.
# The server refuses to run as root (CI runs the tests as root): then the server binaries run
# as the system user postgres (runuser), and PG_DIR belongs to it. psql needs no such care:
# the database user is in PG_CONNINFO, and trust over the socket accepts any system user who
# can reach the socket.
PG_BIN=
PG_DIR=
PG_PORT=
PG_SOCK=
PG_CONNINFO=
pg_restart_pid=

# pg_available: the newest /usr/lib/postgresql/*/bin with initdb and pg_ctl in PG_BIN
pg_available() {
    local d
    PG_BIN=
    for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V); do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then PG_BIN=$d; fi
    done
    if [ -z "$PG_BIN" ]; then
        echo "postgresql 15 server binaries not installed (/usr/lib/postgresql/*/bin/initdb)"
        return 1
    fi
    if ! command -v psql >/dev/null; then
        echo "psql is not installed (Debian package postgresql-client-15)"
        return 1
    fi
    if [ "$(id -u)" = 0 ]; then
        if ! id -u postgres >/dev/null 2>&1; then
            echo "running as root, and there is no postgres user to run the server as"
            return 1
        fi
        if ! command -v runuser >/dev/null; then
            echo "running as root, and runuser (util-linux) is not installed"
            return 1
        fi
    fi
    return 0
}

# pg__as COMMAND...: run it as the server's user (postgres when we are root), from / (a
# working directory it may not enter would make the server binaries complain)
pg__as() {
    if [ "$(id -u)" = 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

# pg__reachable: whether the server's user may enter and write PG_DIR
pg__reachable() {
    pg__as test -x "$PG_DIR" -a -w "$PG_DIR" 2>/dev/null
}

# pg__free_port: a port with nothing listening on it on loopback and no socket of that
# number in /tmp (a server elsewhere with its default socket); the socket of our server lies in
# PG_SOCK anyway, so this only keeps two clusters (and other servers) from sharing a number
pg__free_port() {
    local port _
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 40000))
        [ -e "/tmp/.s.PGSQL.$port" ] && continue
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
        echo "$port"
        return 0
    done
    return 1
}

pg__ctl() { # ARG...: pg_ctl on the cluster, its words appended to PG_DIR/pg_ctl.log
    pg__as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" "$@" >>"$PG_DIR/pg_ctl.log" 2>&1
}

# pg__fail WHAT LOG: say that WHAT failed, with the end of LOG (as TAP comments), return 1
pg__fail() {
    echo "# pg-util: $1 failed:"
    [ -f "$2" ] && tail -n 20 "$2" | sed 's/^/#   /'
    return 1
}

pg_start() { # DIR
    [ -n "$PG_BIN" ] || pg_available >/dev/null || {
        echo "# pg-util: $(pg_available)"
        return 1
    }
    mkdir -p "$1" || return 1
    PG_DIR=$(cd "$1" && pwd) || return 1
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$PG_DIR" || return 1
        # The server's user must reach PG_DIR. A test's scratch folder (mktemp -d, the usual
        # parent of DIR) is 0700 root: it gets o+x, search without read, so that the
        # postgres user can enter it by name but not list it. When a folder further up is
        # closed too (TMPDIR under /root), nothing above the test's own folder is changed:
        # the cluster goes into a folder that postgres makes itself under /tmp, and PG_DIR
        # names that folder instead of DIR (pg_cleanup removes it).
        if ! pg__reachable; then
            local parent
            parent=$(dirname "$PG_DIR")
            if [ "$(stat -c %u "$parent")" = 0 ]; then chmod o+x "$parent" || true; fi
        fi
        if ! pg__reachable; then
            PG_DIR=$(cd / && runuser -u postgres -- mktemp -d /tmp/mmsegd-pg.XXXXXX) || return 1
            echo "# pg-util: postgres cannot reach $1; the cluster is in $PG_DIR"
        fi
    fi
    PG_PORT=$(pg__free_port) || {
        echo "# pg-util: no free port found"
        return 1
    }
    PG_SOCK=$PG_DIR/sock
    # a Unix socket's path holds at most 107 bytes
    if [ $((${#PG_SOCK} + 12 + ${#PG_PORT})) -gt 107 ]; then
        echo "# pg-util: the socket path $PG_SOCK/.s.PGSQL.$PG_PORT is too long"
        return 1
    fi
    # shellcheck disable=SC2034 # read by the test that sources this file
    PG_CONNINFO="host=$PG_SOCK port=$PG_PORT dbname=mmsegd user=postgres"
    pg__as mkdir -p "$PG_SOCK" || return 1
    # --no-sync: initdb's own final flush only; the server runs with fsync = on
    pg__as "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U postgres -E UTF8 --locale=C \
        --no-sync >"$PG_DIR/initdb.log" 2>&1 || pg__fail initdb "$PG_DIR/initdb.log" || return 1
    # the later of two settings wins: these override initdb's
    pg__as tee -a "$PG_DIR/data/postgresql.conf" >/dev/null <<CONF || return 1
# pg-util.sh (tests): a throw-away cluster reachable through its socket only
listen_addresses = ''
unix_socket_directories = '$PG_SOCK'
port = $PG_PORT
fsync = on
synchronous_commit = on
full_page_writes = on
max_connections = 40
shared_buffers = 16MB
log_min_messages = warning
CONF
    pg_start_again || return 1
    pg_psql_db postgres "CREATE DATABASE mmsegd" >/dev/null ||
        pg__fail "CREATE DATABASE mmsegd" "$PG_DIR/log"
}

pg_start_again() {
    pg__ctl -l "$PG_DIR/log" -w -t 60 start || pg__fail "pg_ctl start" "$PG_DIR/log"
}

pg_stop() {
    pg__ctl -m fast -w -t 60 stop || pg__fail "pg_ctl stop" "$PG_DIR/pg_ctl.log"
}

# pg_restart_after SECONDS: the stop happens before it returns; the start runs in a
# background subshell (PID in pg_restart_pid), output in PG_DIR/pg_ctl.log and PG_DIR/log
pg_restart_after() {
    pg_stop || return 1
    (
        sleep "$1" &
        echo $! >"$PG_DIR/restart.sleep"
        wait $!
        [ -e "$PG_DIR/restart.cancel" ] || pg_start_again
    ) </dev/null >/dev/null 2>&1 &
    pg_restart_pid=$!
}

# pg_wait_started: waits for the background start of pg_restart_after; its status
pg_wait_started() {
    [ -n "$pg_restart_pid" ] || return 0
    local rc=0
    wait "$pg_restart_pid" || rc=$?
    pg_restart_pid=
    [ $rc = 0 ] && pg__ctl status
}

pg_restart_script() { # FILE
    local as=
    [ "$(id -u)" = 0 ] && as="runuser -u postgres -- "
    cat >"$1" <<SCRIPT || return 1
#!/bin/sh
# Restarts the test cluster in $PG_DIR (fast: open sessions are cut). Written by pg-util.sh.
cd / && exec $as'$PG_BIN/pg_ctl' -D '$PG_DIR/data' -l '$PG_DIR/log' -m fast -w -t 60 restart \\
    </dev/null >>'$PG_DIR/pg_ctl.log' 2>&1
SCRIPT
    chmod +x "$1"
}

pg_psql_db() { # DATABASE SQL...: pg_psql on another database of the cluster
    local db=$1 sql
    shift
    for sql in "$@"; do
        PGCONNECT_TIMEOUT=10 psql -X -A -t -q -v ON_ERROR_STOP=1 \
            -d "host=$PG_SOCK port=$PG_PORT dbname=$db user=postgres" -c "$sql" || return 1
    done
}

pg_psql() { # SQL...
    pg_psql_db mmsegd "$@"
}

pg_cleanup() {
    [ -n "$PG_DIR" ] && [ -d "$PG_DIR" ] || return 0
    # a start still pending (pg_restart_after): cancelled while it sleeps, else waited for
    if [ -n "$pg_restart_pid" ]; then
        touch "$PG_DIR/restart.cancel" 2>/dev/null || true
        if [ -f "$PG_DIR/restart.sleep" ]; then
            kill "$(cat "$PG_DIR/restart.sleep")" 2>/dev/null || true
        fi
        wait "$pg_restart_pid" 2>/dev/null || true
        pg_restart_pid=
    fi
    if [ -d "$PG_DIR/data" ] && pg__ctl status; then
        pg__ctl -m fast -w -t 30 stop || pg__ctl -m immediate -w -t 30 stop || true
    fi
    if [ -n "${KEEP:-}" ]; then
        echo "# kept $PG_DIR"
    else
        rm -rf "$PG_DIR"
    fi
    return 0
}
