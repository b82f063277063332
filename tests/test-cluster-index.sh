#!/bin/bash
# The cluster functions of the index (tests/test-cluster-index.c) on both engines: SQLite, and
# PostgreSQL on a throw-away server of Debian's postgresql-15 (tests/pg-util.sh) started here
# for this run only, so that the test meets an empty database. The test gets its connection
# string in MMS_TEST_PG and, in MMS_TEST_PG_RESTART, a script that restarts the server under
# its open handles. Without the server binaries the PostgreSQL part is skipped, with the
# reason, and the SQLite part runs alone. The TAP lines and the exit status are the program's.
set -u
srcdir=${srcdir:-.}
top_builddir=${top_builddir:-.}
. "$srcdir/tests/pg-util.sh"
prog=$top_builddir/tests/test-cluster-index
if [ ! -x "$prog" ]; then
    echo "Bail out! $prog is not built (make tests/test-cluster-index)"
    exit 1
fi
unset MMS_TEST_PG MMS_TEST_PG_RESTART
if ! reason=$(pg_available); then
    echo "# SKIP: $reason"
    "$prog"
    exit
fi
tmp=$(mktemp -d)
trap 'pg_cleanup; [ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT
if ! pg_start "$tmp/pg"; then
    echo "Bail out! could not start a PostgreSQL server (see above)"
    exit 1
fi
pg_restart_script "$tmp/pg-restart" || exit 1
MMS_TEST_PG=$PG_CONNINFO MMS_TEST_PG_RESTART=$tmp/pg-restart "$prog"
