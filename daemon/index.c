/* daemon/index: the instance and series index on SQLite or PostgreSQL (index.h).
 *
 * The logic is written once, over a small statement layer (struct st: bind, step, read a
 * column) that runs each statement on SQLite's prepared statements or through libpq's
 * PQexecParams, with ?N turned into $N. Where the engines' SQL differs (types in the schema,
 * BEGIN IMMEDIATE, FOR UPDATE SKIP LOCKED) each has its own text.
 *
 * One connection per handle (SQLite's opened with SQLITE_OPEN_FULLMUTEX), and our own mutex around
 * every call, so a multi-statement transaction is never interleaved with another thread's
 * statements and the cached prepared statements are used by one caller at a time. The mutex
 * is error-checking: a callback of mms_index_series() or mms_index_instances() that calls
 * back into the index gets MMS_EINVAL instead of a deadlock.
 *
 * Received text (UIDs, descriptions, AE titles, paths) only ever reaches SQLite as bound
 * parameters. Series states are stored by name ("receiving", ...), so the enum may gain
 * values without a migration and the database reads well in the sqlite3 shell.
 * Threads: any; see index.h. */
#include "daemon/index.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/crashpoint.h"
#include "common/err.h"
#include "common/log.h"

#define BUSY_TIMEOUT_MS 5000
#define APPLICATION_ID 0x6d6d7367 /* "mmsg": this is an mmsegd state database */

/* Schema migrations: migrations[v] takes the schema version v to v + 1, on SQLite as written,
 * on PostgreSQL through pg_ddl(). Append only; a released entry is never edited. */
static const char *const migrations[] = {
    /* 0 -> 1: instances and series */
    "CREATE TABLE series ("
    " series_uid TEXT PRIMARY KEY NOT NULL,"
    " study_uid TEXT NOT NULL DEFAULT '',"
    " state TEXT NOT NULL,"
    " reason TEXT NOT NULL DEFAULT '',"
    " instances INTEGER NOT NULL DEFAULT 0,"
    " first_received REAL NOT NULL,"
    " last_received REAL NOT NULL,"
    " state_since REAL NOT NULL,"
    " run INTEGER NOT NULL DEFAULT 0,"
    " modality TEXT NOT NULL DEFAULT '',"
    " series_description TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX series_by_first ON series (first_received, series_uid);"
    "CREATE TABLE instances ("
    " sop_instance TEXT PRIMARY KEY NOT NULL,"
    " sop_class TEXT NOT NULL,"
    " study_uid TEXT NOT NULL,"
    " series_uid TEXT NOT NULL REFERENCES series (series_uid),"
    " modality TEXT NOT NULL,"
    " image_type TEXT NOT NULL,"
    " series_description TEXT NOT NULL,"
    " body_part TEXT NOT NULL,"
    " frame_of_ref TEXT NOT NULL,"
    " transfer_syntax TEXT NOT NULL,"
    " has_geometry INTEGER NOT NULL,"
    " ipp_x REAL, ipp_y REAL, ipp_z REAL," /* NULL without geometry */
    " iop_rx REAL, iop_ry REAL, iop_rz REAL, iop_cx REAL, iop_cy REAL, iop_cz REAL,"
    " rows INTEGER NOT NULL,"
    " cols INTEGER NOT NULL,"
    " frames INTEGER NOT NULL,"
    " acquisition INTEGER NOT NULL,"
    " instance_number INTEGER NOT NULL,"
    " images_in_acquisition INTEGER NOT NULL,"
    " slice_thickness REAL NOT NULL,"
    " digest TEXT NOT NULL,"
    " path TEXT NOT NULL,"
    " size INTEGER NOT NULL,"
    " received REAL NOT NULL,"
    " source TEXT NOT NULL);"
    "CREATE INDEX instances_by_series ON instances (series_uid, instance_number, sop_instance);",
    /* 1 -> 2: sends */
    "CREATE TABLE sends ("
    " job INTEGER NOT NULL,"
    " destination TEXT NOT NULL,"
    " series_uid TEXT NOT NULL DEFAULT '',"
    " state TEXT NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " queued REAL NOT NULL,"
    " next_attempt REAL NOT NULL,"
    " last_attempt REAL NOT NULL DEFAULT 0,"
    " state_since REAL NOT NULL,"
    " reason TEXT NOT NULL DEFAULT '',"
    " PRIMARY KEY (job, destination));"
    "CREATE INDEX sends_by_state ON sends (state, next_attempt);",
    /* 2 -> 3: jobs */
    "CREATE TABLE jobs ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " series_uid TEXT NOT NULL,"
    " run INTEGER NOT NULL,"
    " state TEXT NOT NULL,"
    " stage TEXT NOT NULL DEFAULT '',"
    " reason TEXT NOT NULL DEFAULT '',"
    " started REAL NOT NULL,"
    " finished REAL NOT NULL DEFAULT 0,"
    " decode_s REAL NOT NULL DEFAULT 0,"
    " wait_s REAL NOT NULL DEFAULT 0,"
    " preprocess_s REAL NOT NULL DEFAULT 0,"
    " network_s REAL NOT NULL DEFAULT 0,"
    " export_s REAL NOT NULL DEFAULT 0,"
    " write_s REAL NOT NULL DEFAULT 0,"
    " total_s REAL NOT NULL DEFAULT 0,"
    " segments INTEGER NOT NULL DEFAULT 0,"
    " frames INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX jobs_by_state ON jobs (state, id);",
    /* 3 -> 4: nodes, and the leases of jobs and sends (clusters) */
    "CREATE TABLE nodes ("
    " name TEXT PRIMARY KEY NOT NULL,"
    " roles TEXT NOT NULL DEFAULT '',"
    " pid INTEGER NOT NULL DEFAULT 0,"
    " started REAL NOT NULL DEFAULT 0,"
    " heartbeat REAL NOT NULL DEFAULT 0);"
    "ALTER TABLE jobs ADD COLUMN node TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE jobs ADD COLUMN lease_until REAL NOT NULL DEFAULT 0;"
    "ALTER TABLE sends ADD COLUMN node TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE sends ADD COLUMN lease_until REAL NOT NULL DEFAULT 0;"
    "CREATE INDEX series_by_state ON series (state, state_since, series_uid);",
};

#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

/* The columns of an instance row, in the order read_instance() reads them and the parameters
 * ?1 to ?32 of INSERT and UPDATE bind them. */
#define INSTANCE_COLUMNS                                                                           \
    "sop_instance, sop_class, study_uid, series_uid, modality, image_type, series_description, "   \
    "body_part, frame_of_ref, transfer_syntax, has_geometry, ipp_x, ipp_y, ipp_z, iop_rx, "        \
    "iop_ry, iop_rz, iop_cx, iop_cy, iop_cz, rows, cols, frames, acquisition, instance_number, "   \
    "images_in_acquisition, slice_thickness, digest, path, size, received, source"

#define SEND_COLUMNS                                                                               \
    "job, destination, series_uid, state, attempts, queued, next_attempt, last_attempt, "          \
    "state_since, reason, node, lease_until"

#define JOB_COLUMNS                                                                                \
    "id, series_uid, run, state, stage, reason, started, finished, decode_s, wait_s, "             \
    "preprocess_s, network_s, export_s, write_s, total_s, segments, frames, node, lease_until"

#define SERIES_COLUMNS                                                                             \
    "series_uid, study_uid, state, reason, instances, first_received, last_received, "             \
    "state_since, run, modality, series_description"

/* The prepared statements of a handle, prepared on first use. */
enum stmt_id {
    S_BEGIN_WRITE,
    S_BEGIN_READ,
    S_COMMIT,
    S_ROLLBACK,
    S_INSTANCE_FIND,
    S_INSTANCE_INSERT,
    S_INSTANCE_UPDATE,
    S_SERIES_ENTER,
    S_SERIES_LEAVE,
    S_SERIES_DROP_EMPTY,
    S_SET_STATE,
    S_SERIES_ALL,
    S_INSTANCES_OF,
    S_INSTANCE_ONE,
    S_COUNT_INSTANCES,
    S_COUNT_STATES,
    S_SEND_ADD,
    S_SEND_UPDATE,
    S_SENDS,
    S_COUNT_SENDS,
    S_SERIES_RUN,
    S_JOB_INSERT,
    S_JOB_UPDATE,
    S_SERIES_FINISH,
    S_JOBS,
    S_SETTLE,
    S_QUEUED_OLDEST,
    S_SEND_CLAIM,
    S_NODE_PUT,
    S_NODE_RENEW_JOBS,
    S_NODE_RENEW_SENDS,
    S_NODES,
    S_JOB_LOCK,
    S_JOB_HAS_SENDS,
    S_QUEUE_COUNTS,
    S_SERIES_ACTIVE,
    N_STMT
};

static const struct {
    const char *what; /* for messages */
    const char *sql;
} stmt_sql[N_STMT] = {
    [S_BEGIN_WRITE] = {"begin", "BEGIN IMMEDIATE"},
    [S_BEGIN_READ] = {"begin", "BEGIN"},
    [S_COMMIT] = {"commit", "COMMIT"},
    [S_ROLLBACK] = {"rollback", "ROLLBACK"},
    [S_INSTANCE_FIND] = {"find instance",
                         "SELECT digest, path, series_uid FROM instances WHERE sop_instance = ?1"},
    [S_INSTANCE_INSERT] = {"insert instance",
                           "INSERT INTO instances (" INSTANCE_COLUMNS ") VALUES (?1, ?2, ?3, ?4, "
                           "?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, "
                           "?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32)"},
    [S_INSTANCE_UPDATE] = {"update instance",
                           "UPDATE instances SET sop_class = ?2, study_uid = ?3, series_uid = ?4, "
                           "modality = ?5, image_type = ?6, series_description = ?7, body_part = "
                           "?8, frame_of_ref = ?9, transfer_syntax = ?10, has_geometry = ?11, "
                           "ipp_x = ?12, ipp_y = ?13, ipp_z = ?14, iop_rx = ?15, iop_ry = ?16, "
                           "iop_rz = ?17, iop_cx = ?18, iop_cy = ?19, iop_cz = ?20, rows = ?21, "
                           "cols = ?22, frames = ?23, acquisition = ?24, instance_number = ?25, "
                           "images_in_acquisition = ?26, slice_thickness = ?27, digest = ?28, "
                           "path = ?29, size = ?30, received = ?31, source = ?32 "
                           "WHERE sop_instance = ?1"},
    /* An instance enters series ?1 (?3: 1 when it adds to the count, 0 when it replaces one
     * already counted): create the series, or re-open it. Study, modality and description
     * follow the latest instance that has them. */
    [S_SERIES_ENTER] = {"update series",
                        "INSERT INTO series (" SERIES_COLUMNS ") VALUES (?1, ?2, 'receiving', '', "
                        "?3, ?4, ?4, ?4, 0, ?5, ?6) ON CONFLICT (series_uid) DO UPDATE SET "
                        "study_uid = CASE WHEN ?2 <> '' THEN ?2 ELSE series.study_uid END, "
                        "state = 'receiving', reason = '', "
                        "state_since = CASE WHEN series.state <> 'receiving' THEN ?4 ELSE "
                        "series.state_since END, instances = series.instances + ?3, "
                        "last_received = ?4, "
                        "modality = CASE WHEN ?5 <> '' THEN ?5 ELSE series.modality END, "
                        "series_description = CASE WHEN ?6 <> '' THEN ?6 ELSE "
                        "series.series_description END"},
    /* An instance left series ?1 at time ?2: one fewer, and re-opened (its content changed). */
    [S_SERIES_LEAVE] = {"update series",
                        "UPDATE series SET instances = instances - 1, state = 'receiving', "
                        "reason = '', state_since = CASE WHEN state <> 'receiving' THEN ?2 ELSE "
                        "state_since END, last_received = ?2 WHERE series_uid = ?1"},
    [S_SERIES_DROP_EMPTY] = {"delete series",
                             "DELETE FROM series WHERE series_uid = ?1 AND instances <= 0"},
    [S_SET_STATE] = {"set state", "UPDATE series SET state = ?2, reason = ?3, state_since = ?4, "
                                  "run = run + ?5 WHERE series_uid = ?1"},
    [S_SERIES_ALL] = {"list series",
                      "SELECT " SERIES_COLUMNS " FROM series ORDER BY first_received, series_uid"},
    [S_INSTANCES_OF] = {"list instances",
                        "SELECT " INSTANCE_COLUMNS " FROM instances WHERE series_uid = ?1 "
                        "ORDER BY instance_number, sop_instance"},
    [S_INSTANCE_ONE] = {"read instance",
                        "SELECT " INSTANCE_COLUMNS " FROM instances WHERE sop_instance = ?1"},
    [S_COUNT_INSTANCES] = {"count instances", "SELECT count(*) FROM instances"},
    [S_COUNT_STATES] = {"count series", "SELECT state, count(*) FROM series GROUP BY state"},
    [S_SEND_ADD] = {"queue send",
                    "INSERT INTO sends (job, destination, series_uid, state, attempts, queued, "
                    "next_attempt, last_attempt, state_since, reason) VALUES (?1, ?2, ?3, "
                    "'pending', 0, ?4, ?4, 0, ?4, '') ON CONFLICT (job, destination) DO UPDATE SET "
                    "series_uid = ?3, state = 'pending', attempts = 0, queued = ?4, "
                    "next_attempt = ?4, state_since = ?4, reason = ''"},
    /* an update ends the claim of the node that made the attempt */
    [S_SEND_UPDATE] = {"update send",
                       "UPDATE sends SET state = ?3, attempts = ?4, queued = ?5, next_attempt = "
                       "?6, last_attempt = ?7, state_since = ?8, reason = ?9, node = '', "
                       "lease_until = 0 "
                       "WHERE job = ?1 AND destination = ?2"},
    [S_SENDS] = {"list sends",
                 "SELECT " SEND_COLUMNS " FROM sends WHERE (CAST(?1 AS TEXT) IS NULL OR state = "
                 "?1) AND (?2 < 0 OR job = ?2) ORDER BY next_attempt, job, "
                 "destination"},
    [S_COUNT_SENDS] = {"count sends", "SELECT state, count(*) FROM sends GROUP BY state"},
    [S_SERIES_RUN] = {"read run", "SELECT run FROM series WHERE series_uid = ?1"},
    [S_JOB_INSERT] = {"insert job", "INSERT INTO jobs (series_uid, run, state, started, node, "
                                    "lease_until) VALUES (?1, ?2, 'running', ?3, ?4, ?5) "
                                    "RETURNING id"},
    [S_JOB_UPDATE] = {"update job",
                      "UPDATE jobs SET state = ?2, stage = ?3, reason = ?4, finished = ?5, "
                      "decode_s = ?6, wait_s = ?7, preprocess_s = ?8, network_s = ?9, export_s "
                      "= ?10, write_s = ?11, total_s = ?12, segments = ?13, frames = ?14 "
                      "WHERE id = ?1 AND state = 'running'"},
    /* the end of a job sets its series' state unless a late instance re-opened it */
    [S_SERIES_FINISH] = {"set state", "UPDATE series SET state = ?2, reason = ?3, state_since = "
                                      "?4 WHERE series_uid = ?1 AND state = 'running'"},
    [S_JOBS] = {"list jobs",
                "SELECT " JOB_COLUMNS
                " FROM jobs WHERE (CAST(?1 AS TEXT) IS NULL OR state = ?1) ORDER BY id"},
    /* the decision that a series is complete, taken by one node: the row lock of the UPDATE
     * orders two nodes, and the second finds the series no longer receiving */
    [S_SETTLE] = {"settle series", "UPDATE series SET state = 'stable', reason = '', state_since "
                                   "= ?3 WHERE series_uid = ?1 AND state = 'receiving' AND "
                                   "last_received = ?2"},
    [S_QUEUED_OLDEST] = {"find queued series",
                         "SELECT series_uid FROM series WHERE state = 'queued' ORDER BY "
                         "state_since, series_uid LIMIT 1"},
    [S_SEND_CLAIM] = {"claim send", "UPDATE sends SET node = ?3, lease_until = ?5 WHERE job = ?1 "
                                    "AND destination = ?2 AND state = 'pending' AND next_attempt "
                                    "<= ?4 AND (node = '' OR node = ?3 OR lease_until < ?4)"},
    [S_NODE_PUT] = {"write node", "INSERT INTO nodes (name, roles, pid, started, heartbeat) VALUES "
                                  "(?1, ?2, ?3, ?4, ?5) ON CONFLICT (name) DO UPDATE SET roles = "
                                  "?2, pid = ?3, started = ?4, heartbeat = ?5"},
    [S_NODE_RENEW_JOBS] = {"renew leases", "UPDATE jobs SET lease_until = ?2 WHERE node = ?1 AND "
                                           "state = 'running'"},
    [S_NODE_RENEW_SENDS] = {"renew leases", "UPDATE sends SET lease_until = ?2 WHERE node = ?1 "
                                            "AND state = 'pending'"},
    [S_NODES] = {"list nodes",
                 "SELECT n.name, n.roles, n.pid, n.started, n.heartbeat, (SELECT count(*) FROM "
                 "jobs j WHERE j.state = 'running' AND j.node = n.name), (SELECT count(*) FROM "
                 "sends s WHERE s.state = 'pending' AND s.node = n.name) FROM nodes n ORDER BY "
                 "n.name"},
    [S_JOB_LOCK] = {"lock job", "SELECT state FROM jobs WHERE id = ?1"},
    [S_JOB_HAS_SENDS] = {"read sends", "SELECT count(*) FROM sends WHERE job = ?1"},
    /* by the indexes on state: cheap however many rows the tables hold */
    [S_QUEUE_COUNTS] = {"count the queue",
                        "SELECT (SELECT count(*) FROM series WHERE state = 'queued'), (SELECT "
                        "count(*) FROM sends WHERE state = 'pending'), (SELECT count(*) FROM "
                        "sends WHERE state = 'dead')"},
    [S_SERIES_ACTIVE] = {"list series", "SELECT " SERIES_COLUMNS " FROM series WHERE state IN "
                                        "('receiving', 'stable') ORDER BY first_received, "
                                        "series_uid"},
};

/* PostgreSQL's text where it differs from SQLite's; NULL: stmt_sql with $N for ?N. The row
 * locks that order two nodes: SKIP LOCKED lets a second claimer take the next series. */
static const char *const pg_sql_text[N_STMT] = {
    [S_BEGIN_WRITE] = "BEGIN",
    [S_QUEUED_OLDEST] = "SELECT series_uid FROM series WHERE state = 'queued' ORDER BY "
                        "state_since, series_uid LIMIT 1 FOR UPDATE SKIP LOCKED",
    [S_JOB_LOCK] = "SELECT state FROM jobs WHERE id = $1 FOR UPDATE",
};

static const char *const state_names[] = {
    [MMS_SERIES_RECEIVING] = "receiving", [MMS_SERIES_STABLE] = "stable",
    [MMS_SERIES_QUEUED] = "queued",       [MMS_SERIES_RUNNING] = "running",
    [MMS_SERIES_DONE] = "done",           [MMS_SERIES_FAILED] = "failed",
    [MMS_SERIES_SKIPPED] = "skipped",
};

#define N_STATES ((int)(sizeof state_names / sizeof state_names[0]))
_Static_assert(N_STATES == MMS_SERIES_SKIPPED + 1, "a name for every series state");

/* names[v] for 0 <= v < n, else NULL. */
static const char *
name_in(const char *const *names, int n, int v)
{
    return v >= 0 && v < n ? names[v] : NULL;
}

/* The index of text in names[0..n), or -1. */
static int
parse_in(const char *const *names, int n, const char *text)
{
    for (int i = 0; text != NULL && i < n; i++)
        if (strcmp(names[i], text) == 0)
            return i;
    return -1;
}

const char *
mms_series_state_name(int state)
{
    return name_in(state_names, N_STATES, state);
}

/* The state named by text, or -1. */
static int
state_parse(const char *text)
{
    return parse_in(state_names, N_STATES, text);
}

static const char *const send_state_names[] = {
    [MMS_SEND_PENDING] = "pending",
    [MMS_SEND_DONE] = "done",
    [MMS_SEND_DEAD] = "dead",
};

#define N_SEND_STATES ((int)(sizeof send_state_names / sizeof send_state_names[0]))
_Static_assert(N_SEND_STATES == MMS_SEND_DEAD + 1, "a name for every send state");

const char *
mms_send_state_name(int state)
{
    return name_in(send_state_names, N_SEND_STATES, state);
}

static const char *const job_state_names[] = {
    [MMS_JOB_RUNNING] = "running", [MMS_JOB_DONE] = "done",
    [MMS_JOB_FAILED] = "failed",   [MMS_JOB_INTERRUPTED] = "interrupted",
    [MMS_JOB_CRASHED] = "crashed",
};

#define N_JOB_STATES ((int)(sizeof job_state_names / sizeof job_state_names[0]))
_Static_assert(N_JOB_STATES == MMS_JOB_STATE_N, "a name for every job state");

const char *
mms_job_state_name(int state)
{
    return name_in(job_state_names, N_JOB_STATES, state);
}

static int
job_state_parse(const char *text)
{
    return parse_in(job_state_names, N_JOB_STATES, text);
}

static int
send_state_parse(const char *text)
{
    return parse_in(send_state_names, N_SEND_STATES, text);
}

/* ---------------------------------------------------------------------------- engines */

/* What step() returns besides an error. */
#define ROW 1
#define DONE 2

#define MAX_PARAMS 40 /* the most parameters a statement binds */

/* A statement of a handle, on either engine. SQLite: its prepared statement. PostgreSQL: the
 * parameters bound (as text, with their types), run by the first step() with PQexecParams,
 * and the rows of its result, one per step(). */
struct st {
    enum stmt_id id;
    sqlite3_stmt *lite;
    char *val[MAX_PARAMS + 1]; /* val[i] for ?i; NULL: SQL NULL */
    Oid type[MAX_PARAMS + 1];
    int n_params; /* the highest ? bound */
    PGresult *res;
    int row, rows; /* the row the last step() gave, and how many there are */
    bool ran;
};

struct mms_index {
    pthread_mutex_t mu; /* error-checking; held for the whole of every call */
    bool read_only;
    sqlite3 *db;          /* SQLite, or NULL */
    PGconn *pg;           /* PostgreSQL, or NULL */
    char *pg_sql[N_STMT]; /* the statements with $N for ?N */
    int64_t pg_changes;   /* rows changed by the last statement */
    struct st st[N_STMT];
};

/* libpq's message without its trailing newline (a buffer of the calling thread). */
static const char *
pg_message(const char *m)
{
    static _Thread_local char buf[512];
    snprintf(buf, sizeof buf, "%s", m != NULL && *m != '\0' ? m : "unknown error");
    for (size_t n = strlen(buf); n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ');)
        buf[--n] = '\0';
    return buf;
}

/* PostgreSQL's types of the parameters we bind (pg_type.h, stable across versions) */
#define INT8OID 20
#define TEXTOID 25
#define FLOAT8OID 701

static int
lock(struct mms_index *ix, char *why, size_t why_len)
{
    int e = pthread_mutex_lock(&ix->mu);
    if (e == EDEADLK)
        return mms_why(why, why_len, MMS_EINVAL,
                       "the index was called from inside one of its own callbacks");
    if (e != 0)
        return mms_why(why, why_len, -e, "pthread_mutex_lock: %s", mms_strerror(-e));
    /* a PostgreSQL connection found broken by an earlier call is made again here: the
     * server restarted, or the network between came back */
    if (ix->pg != NULL && PQstatus(ix->pg) != CONNECTION_OK) {
        PQreset(ix->pg);
        if (PQstatus(ix->pg) != CONNECTION_OK) {
            mms_why(why, why_len, MMS_EIO, "PostgreSQL: %s", pg_message(PQerrorMessage(ix->pg)));
            pthread_mutex_unlock(&ix->mu);
            return MMS_EIO;
        }
        mms_log(MMS_LOG_NOTICE, "index: connected to PostgreSQL again");
    }
    return 0;
}

static void
unlock(struct mms_index *ix)
{
    pthread_mutex_unlock(&ix->mu);
}

/* Record the engine's message for a failed `what` and return MMS_EIO. */
static int
db_fail(struct mms_index *ix, const char *what, char *why, size_t why_len)
{
    if (ix->pg != NULL)
        return mms_why(why, why_len, MMS_EIO, "%s: %s", what, pg_message(PQerrorMessage(ix->pg)));
    return mms_why(why, why_len, MMS_EIO, "%s: %s", what, sqlite3_errmsg(ix->db));
}

/* Forget st's parameters and result. */
static void
st_reset(struct st *st)
{
    if (st->lite != NULL) {
        sqlite3_reset(st->lite);
        return;
    }
    PQclear(st->res);
    st->res = NULL;
    for (int i = 1; i <= st->n_params; i++) {
        free(st->val[i]);
        st->val[i] = NULL;
    }
    st->n_params = 0;
    st->ran = false;
    st->row = -1;
    st->rows = 0;
}

/* The statement id, reset and without bindings; NULL with why on failure. */
static struct st *
stmt(struct mms_index *ix, enum stmt_id id, char *why, size_t why_len)
{
    struct st *st = &ix->st[id];
    st->id = id;
    if (ix->pg != NULL) {
        st_reset(st);
        return st;
    }
    if (st->lite == NULL) {
        if (sqlite3_prepare_v3(ix->db, stmt_sql[id].sql, -1, SQLITE_PREPARE_PERSISTENT, &st->lite,
                               NULL) != SQLITE_OK) {
            mms_why(why, why_len, MMS_EIO, "prepare %s: %s", stmt_sql[id].what,
                    sqlite3_errmsg(ix->db));
            return NULL;
        }
    }
    sqlite3_reset(st->lite);
    sqlite3_clear_bindings(st->lite);
    return st;
}

/* Step st once. Returns ROW, DONE, or MMS_EIO with why. */
static int
step(struct mms_index *ix, struct st *st, const char *what, char *why, size_t why_len)
{
    if (ix->pg == NULL) {
        int rc = sqlite3_step(st->lite);
        if (rc == SQLITE_ROW || rc == SQLITE_DONE)
            return rc == SQLITE_ROW ? ROW : DONE;
        db_fail(ix, what, why, why_len);
        sqlite3_reset(st->lite);
        return MMS_EIO;
    }
    if (!st->ran) {
        st->ran = true;
        st->res = PQexecParams(ix->pg, ix->pg_sql[st->id], st->n_params, st->type + 1,
                               (const char *const *)st->val + 1, NULL, NULL, 0);
        ExecStatusType s = PQresultStatus(st->res);
        if (s != PGRES_TUPLES_OK && s != PGRES_COMMAND_OK) {
            mms_why(why, why_len, MMS_EIO, "%s: %s", what,
                    pg_message(st->res != NULL ? PQresultErrorMessage(st->res)
                                               : PQerrorMessage(ix->pg)));
            return MMS_EIO;
        }
        st->rows = s == PGRES_TUPLES_OK ? PQntuples(st->res) : 0;
        const char *n = PQcmdTuples(st->res);
        ix->pg_changes = n != NULL && *n != '\0' ? strtoll(n, NULL, 10) : 0;
    }
    return ++st->row < st->rows ? ROW : DONE;
}

/* Rows changed by the statement stepped last. */
static int64_t
changes(struct mms_index *ix)
{
    return ix->pg != NULL ? ix->pg_changes : sqlite3_changes(ix->db);
}

/* Run a statement that returns no rows. Returns 0 or MMS_EIO with why. */
static int
run(struct mms_index *ix, enum stmt_id id, char *why, size_t why_len)
{
    struct st *st = stmt(ix, id, why, why_len);
    if (st == NULL)
        return MMS_EIO;
    int rc = step(ix, st, stmt_sql[id].what, why, why_len);
    st_reset(st);
    return rc < 0 ? rc : 0;
}

static bool
in_transaction(struct mms_index *ix)
{
    if (ix->pg != NULL)
        return PQtransactionStatus(ix->pg) == PQTRANS_INTRANS ||
               PQtransactionStatus(ix->pg) == PQTRANS_INERROR;
    return !sqlite3_get_autocommit(ix->db);
}

/* Roll back the open transaction, if any (after a failure: why already says what failed). */
static void
rollback(struct mms_index *ix)
{
    if (!in_transaction(ix))
        return;
    char ignored[256];
    if (run(ix, S_ROLLBACK, ignored, sizeof ignored) < 0)
        mms_log(MMS_LOG_ERR, "index: %s", ignored);
}

/* Lock ix and begin a write transaction; on failure ix is unlocked again. */
static int
begin_write(struct mms_index *ix, char *why, size_t why_len)
{
    int rc = lock(ix, why, why_len);
    if (rc < 0)
        return rc;
    if ((rc = run(ix, S_BEGIN_WRITE, why, why_len)) < 0)
        unlock(ix);
    return rc;
}

/* End what begin_write() began: commit when rc is 0, roll back otherwise; unlock. Returns
 * rc, or the commit's failure. */
static int
end_write(struct mms_index *ix, int rc, char *why, size_t why_len)
{
    if (rc >= 0 && (rc = run(ix, S_COMMIT, why, why_len)) >= 0)
        rc = 0;
    if (rc < 0)
        rollback(ix);
    unlock(ix);
    return rc;
}

/* Bindings that remember the first failure, so a row binds without a check per column. */
struct binder {
    struct mms_index *ix;
    struct st *st;
    int rc;
};

/* PostgreSQL: keep text (len bytes; NULL for SQL NULL) as parameter i of type t. */
static void
pg_bind(struct binder *b, int i, const char *text, size_t len, Oid t)
{
    struct st *st = b->st;
    if (i < 1 || i > MAX_PARAMS) {
        b->rc = MMS_EINVAL;
        return;
    }
    free(st->val[i]);
    st->val[i] = NULL;
    if (text != NULL && (st->val[i] = strndup(text, len)) == NULL) {
        b->rc = MMS_ENOMEM;
        return;
    }
    st->type[i] = t;
    for (int k = st->n_params + 1; k < i; k++) /* a gap: NULL of no type */
        st->val[k] = NULL, st->type[k] = 0;
    if (i > st->n_params)
        st->n_params = i;
}

/* Bind len bytes of s as text. */
static void
bind_bytes(struct binder *b, int i, const char *s, size_t len)
{
    if (b->rc != 0)
        return;
    if (b->ix->pg != NULL)
        pg_bind(b, i, s, len, TEXTOID);
    else if (sqlite3_bind_text(b->st->lite, i, s, (int)len, SQLITE_STATIC) != SQLITE_OK)
        b->rc = MMS_EIO;
}

/* Bind a field of a fixed-size array: at most cap bytes, in case it lacks its NUL. */
static void
bind_text(struct binder *b, int i, const char *s, size_t cap)
{
    bind_bytes(b, i, s, strnlen(s, cap));
}

#define BIND_FIELD(b, i, field) bind_text((b), (i), (field), sizeof(field))

static void bind_null(struct binder *b, int i);

/* Bind a caller's NUL-terminated string; NULL binds SQL NULL. */
static void
bind_cstr(struct binder *b, int i, const char *s)
{
    if (s == NULL)
        bind_null(b, i);
    else
        bind_bytes(b, i, s, strlen(s));
}

static void
bind_int(struct binder *b, int i, int64_t v)
{
    if (b->rc != 0)
        return;
    if (b->ix->pg != NULL) {
        char text[32];
        pg_bind(b, i, text, (size_t)snprintf(text, sizeof text, "%" PRId64, v), INT8OID);
    } else if (sqlite3_bind_int64(b->st->lite, i, v) != SQLITE_OK) {
        b->rc = MMS_EIO;
    }
}

static void
bind_real(struct binder *b, int i, double v)
{
    if (b->rc != 0)
        return;
    if (b->ix->pg != NULL) {
        char text[40]; /* %.17g: the same double when read back */
        pg_bind(b, i, text, (size_t)snprintf(text, sizeof text, "%.17g", v), FLOAT8OID);
    } else if (sqlite3_bind_double(b->st->lite, i, v) != SQLITE_OK) {
        b->rc = MMS_EIO;
    }
}

static void
bind_null(struct binder *b, int i)
{
    if (b->rc != 0)
        return;
    if (b->ix->pg != NULL)
        pg_bind(b, i, NULL, 0, 0);
    else if (sqlite3_bind_null(b->st->lite, i) != SQLITE_OK)
        b->rc = MMS_EIO;
}

/* Column col of the current row: text (NULL for SQL NULL), integer, real (0 for NULL). */
static const char *
col_text(struct st *st, int col)
{
    if (st->lite != NULL)
        return (const char *)sqlite3_column_text(st->lite, col);
    return PQgetisnull(st->res, st->row, col) ? NULL : PQgetvalue(st->res, st->row, col);
}

static int64_t
col_int(struct st *st, int col)
{
    if (st->lite != NULL)
        return sqlite3_column_int64(st->lite, col);
    const char *t = col_text(st, col);
    return t != NULL ? strtoll(t, NULL, 10) : 0;
}

static double
col_real(struct st *st, int col)
{
    if (st->lite != NULL)
        return sqlite3_column_double(st->lite, col);
    const char *t = col_text(st, col);
    return t != NULL ? strtod(t, NULL) : 0.0;
}

/* Bind r as ?1 ... ?32, in the order of INSTANCE_COLUMNS. */
static void
bind_instance(struct binder *b, const struct mms_instance_row *r)
{
    BIND_FIELD(b, 1, r->sop_instance);
    BIND_FIELD(b, 2, r->sop_class);
    BIND_FIELD(b, 3, r->study_uid);
    BIND_FIELD(b, 4, r->series_uid);
    BIND_FIELD(b, 5, r->modality);
    BIND_FIELD(b, 6, r->image_type);
    BIND_FIELD(b, 7, r->series_description);
    BIND_FIELD(b, 8, r->body_part);
    BIND_FIELD(b, 9, r->frame_of_ref);
    BIND_FIELD(b, 10, r->transfer_syntax);
    bind_int(b, 11, r->has_geometry);
    for (int k = 0; k < 3; k++)
        r->has_geometry ? bind_real(b, 12 + k, r->ipp[k]) : bind_null(b, 12 + k);
    for (int k = 0; k < 6; k++)
        r->has_geometry ? bind_real(b, 15 + k, r->iop[k]) : bind_null(b, 15 + k);
    bind_int(b, 21, r->rows);
    bind_int(b, 22, r->cols);
    bind_int(b, 23, r->frames);
    bind_int(b, 24, r->acquisition);
    bind_int(b, 25, r->instance_number);
    bind_int(b, 26, r->images_in_acquisition);
    bind_real(b, 27, r->slice_thickness);
    BIND_FIELD(b, 28, r->digest);
    BIND_FIELD(b, 29, r->path);
    bind_int(b, 30, r->size);
    bind_real(b, 31, r->received);
    BIND_FIELD(b, 32, r->source);
}

/* Copy text column col into dst (cap bytes), truncated if it must be. */
static void
column_text(struct st *st, int col, char *dst, size_t cap)
{
    const char *t = col_text(st, col);
    size_t n = t != NULL ? strlen(t) : 0;
    if (n >= cap)
        n = cap - 1;
    if (n > 0)
        memcpy(dst, t, n);
    dst[n] = '\0';
}

#define COLUMN_FIELD(st, col, field) column_text((st), (col), (field), sizeof(field))

/* Read a row of INSTANCE_COLUMNS. */
static void
read_instance(struct st *st, struct mms_instance_row *r)
{
    memset(r, 0, sizeof *r);
    COLUMN_FIELD(st, 0, r->sop_instance);
    COLUMN_FIELD(st, 1, r->sop_class);
    COLUMN_FIELD(st, 2, r->study_uid);
    COLUMN_FIELD(st, 3, r->series_uid);
    COLUMN_FIELD(st, 4, r->modality);
    COLUMN_FIELD(st, 5, r->image_type);
    COLUMN_FIELD(st, 6, r->series_description);
    COLUMN_FIELD(st, 7, r->body_part);
    COLUMN_FIELD(st, 8, r->frame_of_ref);
    COLUMN_FIELD(st, 9, r->transfer_syntax);
    r->has_geometry = col_int(st, 10) != 0;
    for (int k = 0; k < 3; k++)
        r->ipp[k] = col_real(st, 11 + k);
    for (int k = 0; k < 6; k++)
        r->iop[k] = col_real(st, 14 + k);
    r->rows = col_int(st, 20);
    r->cols = col_int(st, 21);
    r->frames = col_int(st, 22);
    r->acquisition = col_int(st, 23);
    r->instance_number = col_int(st, 24);
    r->images_in_acquisition = col_int(st, 25);
    r->slice_thickness = col_real(st, 26);
    COLUMN_FIELD(st, 27, r->digest);
    COLUMN_FIELD(st, 28, r->path);
    r->size = col_int(st, 29);
    r->received = col_real(st, 30);
    COLUMN_FIELD(st, 31, r->source);
}

/* Read a row of SERIES_COLUMNS. An unknown state name reads as -1. */
static void
read_series(struct st *st, struct mms_series_row *s)
{
    memset(s, 0, sizeof *s);
    COLUMN_FIELD(st, 0, s->series_uid);
    COLUMN_FIELD(st, 1, s->study_uid);
    s->state = state_parse(col_text(st, 2));
    COLUMN_FIELD(st, 3, s->reason);
    s->instances = col_int(st, 4);
    s->first_received = col_real(st, 5);
    s->last_received = col_real(st, 6);
    s->state_since = col_real(st, 7);
    s->run = col_int(st, 8);
    COLUMN_FIELD(st, 9, s->modality);
    COLUMN_FIELD(st, 10, s->series_description);
}

/* Read a row of SEND_COLUMNS. An unknown state name reads as -1. */
static void
read_send(struct st *st, struct mms_send_row *r)
{
    memset(r, 0, sizeof *r);
    r->job = col_int(st, 0);
    COLUMN_FIELD(st, 1, r->destination);
    COLUMN_FIELD(st, 2, r->series_uid);
    r->state = send_state_parse(col_text(st, 3));
    r->attempts = col_int(st, 4);
    r->queued = col_real(st, 5);
    r->next_attempt = col_real(st, 6);
    r->last_attempt = col_real(st, 7);
    r->state_since = col_real(st, 8);
    COLUMN_FIELD(st, 9, r->reason);
    COLUMN_FIELD(st, 10, r->node);
    r->lease_until = col_real(st, 11);
}

/* Read a row of JOB_COLUMNS. An unknown state name reads as -1. */
static void
read_job(struct st *st, struct mms_job_row *j)
{
    memset(j, 0, sizeof *j);
    j->id = col_int(st, 0);
    COLUMN_FIELD(st, 1, j->series_uid);
    j->run = col_int(st, 2);
    j->state = job_state_parse(col_text(st, 3));
    COLUMN_FIELD(st, 4, j->stage);
    COLUMN_FIELD(st, 5, j->reason);
    j->started = col_real(st, 6);
    j->finished = col_real(st, 7);
    double *times[] = {&j->decode_s, &j->wait_s,  &j->preprocess_s, &j->network_s,
                       &j->export_s, &j->write_s, &j->total_s};
    for (int i = 0; i < 7; i++)
        *times[i] = col_real(st, 8 + i);
    j->segments = col_int(st, 15);
    j->frames = col_int(st, 16);
    COLUMN_FIELD(st, 17, j->node);
    j->lease_until = col_real(st, 18);
}

/* ---------------------------------------------------------------------------- open */

/* Run a pragma (our own text, never received text) and read its single integer result. */
static int
pragma_int(sqlite3 *db, const char *sql, int64_t *out, char *why, size_t why_len)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return mms_why(why, why_len, MMS_EIO, "%s: %s", sql, sqlite3_errmsg(db));
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(st, 0);
    else
        mms_why(why, why_len, MMS_EIO, "%s: %s", sql,
                rc == SQLITE_DONE ? "no result" : sqlite3_errmsg(db));
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : MMS_EIO;
}

static int
exec(sqlite3 *db, const char *sql, const char *what, char *why, size_t why_len)
{
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return mms_why(why, why_len, MMS_EIO, "%s: %s", what, sqlite3_errmsg(db));
    return 0;
}

/* Check that the database is ours and not newer than this code; *version receives its
 * schema version. */
static int
check_version(sqlite3 *db, int64_t *version, char *why, size_t why_len)
{
    int64_t v, app;
    int rc;
    if ((rc = pragma_int(db, "PRAGMA user_version", &v, why, why_len)) < 0 ||
        (rc = pragma_int(db, "PRAGMA application_id", &app, why, why_len)) < 0)
        return rc;
    if ((app != 0 && app != APPLICATION_ID) || (app == 0 && v != 0))
        return mms_why(why, why_len, MMS_EIO,
                       "not an mmsegd state database (application_id %lld, user_version %lld)",
                       (long long)app, (long long)v);
    if (v > SCHEMA_VERSION)
        return mms_why(why, why_len, MMS_EIO,
                       "the database has schema version %lld, newer than this mmsegd knows (%d): "
                       "it was written by a newer mmsegd; run that one, or move the database "
                       "aside",
                       (long long)v, SCHEMA_VERSION);
    *version = v;
    return 0;
}

/* Bring the schema to SCHEMA_VERSION in one transaction. */
static int
migrate(sqlite3 *db, const char *path, char *why, size_t why_len)
{
    int64_t v;
    int rc;
    /* another process may migrate at the same time: the version is read inside the lock */
    if ((rc = exec(db, "BEGIN IMMEDIATE", "begin migration", why, why_len)) < 0)
        return rc;
    if ((rc = check_version(db, &v, why, why_len)) < 0)
        goto fail;
    for (int64_t i = v; i < SCHEMA_VERSION; i++) {
        char what[64];
        snprintf(what, sizeof what, "migration %lld to %lld", (long long)i, (long long)i + 1);
        if ((rc = exec(db, migrations[i], what, why, why_len)) < 0)
            goto fail;
    }
    if (v < SCHEMA_VERSION) {
        char sql[96];
        snprintf(sql, sizeof sql, "PRAGMA application_id = %d; PRAGMA user_version = %d",
                 APPLICATION_ID, SCHEMA_VERSION);
        if ((rc = exec(db, sql, "set user_version", why, why_len)) < 0)
            goto fail;
    }
    if ((rc = exec(db, "COMMIT", "commit migration", why, why_len)) < 0)
        goto fail;
    if (v == 0)
        mms_log(MMS_LOG_INFO, "%s: created (schema version %d)", path, SCHEMA_VERSION);
    else if (v < SCHEMA_VERSION)
        mms_log(MMS_LOG_NOTICE, "%s: schema migrated from version %lld to %d", path, (long long)v,
                SCHEMA_VERSION);
    return 0;

fail:
    if (!sqlite3_get_autocommit(db))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* Settings of a writable connection. */
static int
configure_writable(sqlite3 *db, char *why, size_t why_len)
{
    sqlite3_stmt *st;
    int rc;
    if (sqlite3_prepare_v2(db, "PRAGMA journal_mode = WAL", -1, &st, NULL) != SQLITE_OK)
        return mms_why(why, why_len, MMS_EIO, "journal_mode: %s", sqlite3_errmsg(db));
    /* the change to WAL answers SQLITE_BUSY at once, without the busy handler, while another
     * connection opens a new database: wait as the busy timeout would */
    for (int waited_ms = 0; (rc = sqlite3_step(st)) == SQLITE_BUSY && waited_ms < BUSY_TIMEOUT_MS;
         waited_ms += 10) {
        sqlite3_reset(st);
        sqlite3_sleep(10);
    }
    const char *mode = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
    bool wal = mode != NULL && strcmp(mode, "wal") == 0;
    if (!wal)
        mms_why(why, why_len, MMS_EIO, "journal_mode WAL: %s",
                rc == SQLITE_ROW ? "refused" : sqlite3_errmsg(db));
    sqlite3_finalize(st);
    if (!wal)
        return MMS_EIO;
    if ((rc = exec(db, "PRAGMA synchronous = FULL", "synchronous", why, why_len)) < 0 ||
        (rc = exec(db, "PRAGMA foreign_keys = ON", "foreign_keys", why, why_len)) < 0)
        return rc;
    return 0;
}

/* Open the connection *db (left set on failure when SQLite allocated it, for its message).
 * immutable: read the file as it is, without the -shm wal-index (see no_wal_index()). */
static int
connect_db(const char *path, bool read_only, bool immutable, sqlite3 **db, char *why,
           size_t why_len)
{
    int flags = SQLITE_OPEN_FULLMUTEX |
                (read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    char *uri = NULL;
    if (immutable) {
        /* file:PATH?immutable=1, with every byte of PATH but the safe ones percent-encoded */
        size_t n = strlen(path);
        if ((uri = malloc(3 * n + 32)) == NULL)
            return mms_why(why, why_len, MMS_ENOMEM, "out of memory");
        char *u = uri + sprintf(uri, "file:");
        for (const unsigned char *c = (const unsigned char *)path; *c != '\0'; c++)
            u += strchr("/._-", *c) != NULL || (*c >= '0' && *c <= '9') ||
                         ((*c | 0x20) >= 'a' && (*c | 0x20) <= 'z')
                     ? sprintf(u, "%c", *c)
                     : sprintf(u, "%%%02X", *c);
        strcpy(u, "?immutable=1");
        flags |= SQLITE_OPEN_URI;
    }
    int src = sqlite3_open_v2(uri != NULL ? uri : path, db, flags, NULL);
    free(uri);
    if (src == SQLITE_OK) {
        sqlite3_busy_timeout(*db, BUSY_TIMEOUT_MS);
        return 0;
    }
    if (*db == NULL)
        return mms_why(why, why_len, MMS_ENOMEM, "sqlite3_open_v2: out of memory");
    return mms_why(why, why_len, MMS_EIO, "sqlite3_open_v2: %s", sqlite3_errmsg(*db));
}

/* A read-only connection failed because it could not create the -shm wal-index (a reader
 * that may not write in the state directory, while the daemon is stopped). With no -wal file
 * every committed row is in the database file itself, so it can be read as immutable. */
static bool
no_wal_index(sqlite3 *db, const char *path)
{
    int code = sqlite3_errcode(db) & 0xff;
    if (code != SQLITE_READONLY && code != SQLITE_CANTOPEN)
        return false;
    char wal[4200];
    struct stat sb;
    if ((size_t)snprintf(wal, sizeof wal, "%s-wal", path) >= sizeof wal)
        return false;
    return stat(wal, &sb) != 0 && errno == ENOENT;
}

/* ---------------------------------------------------------------------------- PostgreSQL */

bool
mms_index_shared(const struct mms_index *ix)
{
    return ix != NULL && ix->pg != NULL;
}

/* Run sql (our own text, one or more statements) on PostgreSQL; rows, if any, go to *res
 * when res is not NULL (PQclear() it). */
static int
pg_exec(PGconn *pg, const char *sql, const char *what, PGresult **res, char *why, size_t why_len)
{
    PGresult *r = PQexec(pg, sql);
    ExecStatusType s = PQresultStatus(r);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
        mms_why(why, why_len, MMS_EIO, "%s: %s", what,
                pg_message(r != NULL ? PQresultErrorMessage(r) : PQerrorMessage(pg)));
        PQclear(r);
        return MMS_EIO;
    }
    if (res != NULL)
        *res = r;
    else
        PQclear(r);
    return 0;
}

/* A migration in PostgreSQL's words (free() it; NULL when out of memory): its types are
 * SQLite's type names, written DOUBLE PRECISION for REAL (PostgreSQL's REAL has 24 bits, too
 * few for a time in seconds), BIGINT for INTEGER, and an identity column for INTEGER PRIMARY
 * KEY AUTOINCREMENT; our migrations write type names in capitals and nothing else so. */
static char *
pg_ddl(const char *sql)
{
    static const struct {
        const char *from, *to;
    } words[] = {
        {"INTEGER PRIMARY KEY AUTOINCREMENT",
         "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"},
        {"INTEGER", "BIGINT"},
        {"REAL", "DOUBLE PRECISION"},
    };
    char *out = malloc(3 * strlen(sql) + 1), *o = out;
    if (out == NULL)
        return NULL;
    for (const char *c = sql; *c != '\0';) {
        size_t k = 0;
        for (; k < sizeof words / sizeof words[0]; k++) {
            size_t n = strlen(words[k].from);
            bool word = (c == sql || c[-1] == ' ') && strncmp(c, words[k].from, n) == 0 &&
                        (c[n] == ' ' || c[n] == ',' || c[n] == ')');
            if (word) {
                o = stpcpy(o, words[k].to);
                c += n;
                break;
            }
        }
        if (k == sizeof words / sizeof words[0])
            *o++ = *c++;
    }
    *o = '\0';
    return out;
}

/* Key of the advisory lock that orders the nodes migrating one database at the same time. */
#define PG_MIGRATION_LOCK "7236228394562875751"

/* Read (and when writable, bring to SCHEMA_VERSION) the schema version of a PostgreSQL
 * database, in one transaction under the advisory lock. */
static int
pg_migrate(PGconn *pg, bool read_only, char *why, size_t why_len)
{
    int rc;
    PGresult *r = NULL;
    if (read_only) {
        rc = pg_exec(pg, "SELECT version FROM mmsegd_schema", "read schema version", &r, why,
                     why_len);
        if (rc < 0)
            return mms_why(why, why_len, MMS_ENOENT,
                           "no mmsegd schema in this database (the daemon has not run yet): %s",
                           why);
        int64_t v = PQntuples(r) == 1 ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : -1;
        PQclear(r);
        if (v != SCHEMA_VERSION)
            return mms_why(why, why_len, MMS_EIO,
                           "the database has schema version %lld, this mmsegd reads %d: start "
                           "the daemon of this version once to migrate it",
                           (long long)v, SCHEMA_VERSION);
        return 0;
    }
    if ((rc = pg_exec(pg,
                      "BEGIN; SELECT pg_advisory_xact_lock(" PG_MIGRATION_LOCK ");"
                      "CREATE TABLE IF NOT EXISTS mmsegd_schema (version BIGINT NOT NULL)",
                      "begin migration", NULL, why, why_len)) < 0)
        goto fail;
    if ((rc = pg_exec(pg, "SELECT version FROM mmsegd_schema", "read schema version", &r, why,
                      why_len)) < 0)
        goto fail;
    int64_t v = PQntuples(r) == 1 ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : 0;
    PQclear(r);
    if (v > SCHEMA_VERSION) {
        rc = mms_why(why, why_len, MMS_EIO,
                     "the database has schema version %lld, newer than this mmsegd knows (%d): "
                     "it was written by a newer mmsegd",
                     (long long)v, SCHEMA_VERSION);
        goto fail;
    }
    for (int64_t i = v; i < SCHEMA_VERSION; i++) {
        char what[64];
        snprintf(what, sizeof what, "migration %lld to %lld", (long long)i, (long long)i + 1);
        char *ddl = pg_ddl(migrations[i]);
        rc = ddl != NULL ? pg_exec(pg, ddl, what, NULL, why, why_len)
                         : mms_why(why, why_len, MMS_ENOMEM, "out of memory");
        free(ddl);
        if (rc < 0)
            goto fail;
    }
    if (v < SCHEMA_VERSION) {
        char sql[128];
        snprintf(sql, sizeof sql,
                 "DELETE FROM mmsegd_schema; INSERT INTO mmsegd_schema VALUES (%d)",
                 SCHEMA_VERSION);
        if ((rc = pg_exec(pg, sql, "set schema version", NULL, why, why_len)) < 0)
            goto fail;
    }
    if ((rc = pg_exec(pg, "COMMIT", "commit migration", NULL, why, why_len)) < 0)
        goto fail;
    if (v == 0)
        mms_log(MMS_LOG_INFO, "PostgreSQL: schema created (version %d)", SCHEMA_VERSION);
    else if (v < SCHEMA_VERSION)
        mms_log(MMS_LOG_NOTICE, "PostgreSQL: schema migrated from version %lld to %d", (long long)v,
                SCHEMA_VERSION);
    return 0;
fail:
    if (PQtransactionStatus(pg) != PQTRANS_IDLE)
        PQclear(PQexec(pg, "ROLLBACK"));
    return rc;
}

/* The statements in PostgreSQL's words: its own text, or ?N written $N. */
static int
pg_statements(struct mms_index *ix)
{
    for (int i = 0; i < N_STMT; i++) {
        const char *src = pg_sql_text[i] != NULL ? pg_sql_text[i] : stmt_sql[i].sql;
        char *d = malloc(strlen(src) + 1);
        if (d == NULL)
            return MMS_ENOMEM;
        ix->pg_sql[i] = d;
        for (const char *c = src; *c != '\0'; c++)
            *d++ = *c == '?' ? '$' : *c;
        *d = '\0';
        ix->st[i].row = -1;
    }
    return 0;
}

/* The server's notices (CREATE TABLE IF NOT EXISTS ... skipping) go to the log at debug
 * level, not to stderr. */
static void
pg_notice(void *arg, const char *message)
{
    (void)arg;
    mms_log(MMS_LOG_DEBUG, "PostgreSQL: %s", pg_message(message));
}

static int
pg_open(const char *conninfo, bool read_only, struct mms_index *ix, char *why, size_t why_len)
{
    /* connect_timeout first: the connection string may set its own; the application name
     * shows in pg_stat_activity */
    const char *keys[] = {"connect_timeout", "fallback_application_name", "dbname", NULL};
    const char *values[] = {"10", "mmsegd", conninfo, NULL};
    ix->pg = PQconnectdbParams(keys, values, 1);
    if (ix->pg == NULL)
        return mms_why(why, why_len, MMS_ENOMEM, "PostgreSQL: out of memory");
    if (PQstatus(ix->pg) != CONNECTION_OK)
        return mms_why(why, why_len, MMS_EIO, "PostgreSQL: %s", pg_message(PQerrorMessage(ix->pg)));
    PQsetNoticeProcessor(ix->pg, pg_notice, NULL);
    /* times are doubles, written by PostgreSQL 12 and later with the digits that read back
     * the same double (extra_float_digits 1, the default) */
    int rc = pg_migrate(ix->pg, read_only, why, why_len);
    if (rc == 0 && pg_statements(ix) < 0)
        rc = mms_why(why, why_len, MMS_ENOMEM, "out of memory");
    return rc;
}

int
mms_index_open(const char *path, bool read_only, struct mms_index **out, char *why, size_t why_len)
{
    if (mms_index_is_postgres(path))
        return mms_why(why, why_len, MMS_EINVAL, "a PostgreSQL connection string, not a path");
    return mms_index_connect(path, read_only, out, why, why_len);
}

int
mms_index_connect(const char *path, bool read_only, struct mms_index **out, char *why,
                  size_t why_len)
{
    struct mms_index *ix = NULL;
    pthread_mutexattr_t attr;
    bool mutex_made = false;
    int rc;

    if (path == NULL || out == NULL)
        return mms_why(why, why_len, MMS_EINVAL, "no path");
    bool pg = mms_index_is_postgres(path);
    struct stat sb;
    if (read_only && !pg && stat(path, &sb) != 0) {
        rc = mms_err_errno();
        return mms_why(why, why_len, rc, "%s", mms_strerror(rc));
    }
    if ((ix = calloc(1, sizeof *ix)) == NULL)
        return mms_why(why, why_len, MMS_ENOMEM, "out of memory");
    ix->read_only = read_only;
    if ((rc = -pthread_mutexattr_init(&attr)) < 0)
        goto fail_errno;
    if ((rc = -pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK)) == 0)
        rc = -pthread_mutex_init(&ix->mu, &attr);
    pthread_mutexattr_destroy(&attr);
    if (rc < 0)
        goto fail_errno;
    mutex_made = true;
    for (int i = 0; i < N_STMT; i++)
        ix->st[i].id = (enum stmt_id)i;
    if (pg) {
        if ((rc = pg_open(path, read_only, ix, why, why_len)) < 0)
            goto fail;
        *out = ix;
        return 0;
    }

    int64_t version;
    if ((rc = connect_db(path, read_only, false, &ix->db, why, why_len)) == 0)
        rc = check_version(ix->db, &version, why, why_len);
    if (rc < 0 && read_only && ix->db != NULL && no_wal_index(ix->db, path)) {
        sqlite3_close(ix->db);
        ix->db = NULL;
        if ((rc = connect_db(path, true, true, &ix->db, why, why_len)) == 0)
            rc = check_version(ix->db, &version, why, why_len);
    }
    if (rc < 0)
        goto fail;
    if (read_only) {
        if (version < SCHEMA_VERSION) {
            rc = mms_why(why, why_len, MMS_EIO,
                         "the database has schema version %lld, older than this mmsegd's (%d): "
                         "start the daemon once to migrate it",
                         (long long)version, SCHEMA_VERSION);
            goto fail;
        }
    } else if ((rc = configure_writable(ix->db, why, why_len)) < 0 ||
               (rc = migrate(ix->db, path, why, why_len)) < 0) {
        goto fail;
    }
    *out = ix;
    return 0;

fail_errno:
    mms_why(why, why_len, rc, "pthread mutex: %s", mms_strerror(rc));
fail:
    if (mutex_made) {
        mms_index_close(ix);
        return rc;
    }
    free(ix);
    return rc;
}

void
mms_index_close(struct mms_index *ix)
{
    if (ix == NULL)
        return;
    for (int i = 0; i < N_STMT; i++) {
        if (ix->pg != NULL)
            st_reset(&ix->st[i]);
        sqlite3_finalize(ix->st[i].lite);
        free(ix->pg_sql[i]);
    }
    if (ix->pg != NULL)
        PQfinish(ix->pg);
    if (ix->db != NULL && sqlite3_close(ix->db) != SQLITE_OK) {
        mms_log(MMS_LOG_WARNING, "index: sqlite3_close: %s", sqlite3_errmsg(ix->db));
        sqlite3_close_v2(ix->db);
    }
    pthread_mutex_destroy(&ix->mu);
    free(ix);
}

/* ---------------------------------------------------------------------------- writes */

/* Series r->series_uid gains an instance (delta 1) or has one replaced (delta 0). */
static int
series_enter(struct mms_index *ix, const struct mms_instance_row *r, int delta, char *why,
             size_t why_len)
{
    struct st *st = stmt(ix, S_SERIES_ENTER, why, why_len);
    if (st == NULL)
        return MMS_EIO;
    struct binder b = {ix, st, 0};
    BIND_FIELD(&b, 1, r->series_uid);
    BIND_FIELD(&b, 2, r->study_uid);
    bind_int(&b, 3, delta);
    bind_real(&b, 4, r->received);
    BIND_FIELD(&b, 5, r->modality);
    BIND_FIELD(&b, 6, r->series_description);
    if (b.rc != 0)
        return db_fail(ix, "bind series", why, why_len);
    int rc = step(ix, st, "update series", why, why_len);
    st_reset(st);
    return rc < 0 ? rc : 0;
}

/* Series uid lost an instance at time t: re-opened, or deleted when it is empty. */
static int
series_leave(struct mms_index *ix, const char *uid, double t, char *why, size_t why_len)
{
    struct st *st = stmt(ix, S_SERIES_LEAVE, why, why_len);
    if (st == NULL)
        return MMS_EIO;
    struct binder b = {ix, st, 0};
    bind_cstr(&b, 1, uid);
    bind_real(&b, 2, t);
    if (b.rc != 0)
        return db_fail(ix, "bind series", why, why_len);
    int rc = step(ix, st, "update series", why, why_len);
    st_reset(st);
    if (rc < 0)
        return rc;
    if ((st = stmt(ix, S_SERIES_DROP_EMPTY, why, why_len)) == NULL)
        return MMS_EIO;
    b = (struct binder){ix, st, 0};
    bind_cstr(&b, 1, uid);
    if (b.rc != 0)
        return db_fail(ix, "bind series", why, why_len);
    rc = step(ix, st, "delete series", why, why_len);
    st_reset(st);
    return rc < 0 ? rc : 0;
}

static int
write_instance(struct mms_index *ix, enum stmt_id id, const struct mms_instance_row *r, char *why,
               size_t why_len)
{
    struct st *st = stmt(ix, id, why, why_len);
    if (st == NULL)
        return MMS_EIO;
    struct binder b = {ix, st, 0};
    bind_instance(&b, r);
    if (b.rc != 0)
        return db_fail(ix, "bind instance", why, why_len);
    int rc = step(ix, st, stmt_sql[id].what, why, why_len);
    st_reset(st);
    return rc < 0 ? rc : 0;
}

/* The body of mms_index_put(), inside the transaction. */
static int
put_locked(struct mms_index *ix, const struct mms_instance_row *r, enum mms_put_result *res,
           char *old_path, size_t old_path_len, char *why, size_t why_len)
{
    char old_digest[65], old_series[65];
    struct st *st = stmt(ix, S_INSTANCE_FIND, why, why_len);
    if (st == NULL)
        return MMS_EIO;
    struct binder b = {ix, st, 0};
    BIND_FIELD(&b, 1, r->sop_instance);
    if (b.rc != 0)
        return db_fail(ix, "bind instance", why, why_len);
    int rc = step(ix, st, "find instance", why, why_len);
    if (rc < 0)
        return rc;
    bool found = rc == ROW;
    if (found) {
        COLUMN_FIELD(st, 0, old_digest);
        column_text(st, 1, old_path, old_path_len);
        COLUMN_FIELD(st, 2, old_series);
    }
    st_reset(st);

    if (!found) {
        *res = MMS_PUT_NEW;
        old_path[0] = '\0';
        if ((rc = series_enter(ix, r, 1, why, why_len)) < 0 ||
            (rc = write_instance(ix, S_INSTANCE_INSERT, r, why, why_len)) < 0)
            return rc;
        return 0;
    }
    if (strncmp(old_digest, r->digest, sizeof r->digest) == 0) {
        *res = MMS_PUT_DUPLICATE;
        old_path[0] = '\0';
        return 0;
    }
    *res = MMS_PUT_REPLACED;
    bool moved = strncmp(old_series, r->series_uid, sizeof r->series_uid) != 0;
    /* the new series first: the instance row refers to it */
    if ((rc = series_enter(ix, r, moved ? 1 : 0, why, why_len)) < 0 ||
        (rc = write_instance(ix, S_INSTANCE_UPDATE, r, why, why_len)) < 0)
        return rc;
    if (moved && (rc = series_leave(ix, old_series, r->received, why, why_len)) < 0)
        return rc;
    return 0;
}

int
mms_index_put(struct mms_index *ix, const struct mms_instance_row *r, enum mms_put_result *res,
              char *old_path, size_t old_path_len, char *why, size_t why_len)
{
    char old[sizeof r->path];
    enum mms_put_result result = MMS_PUT_DUPLICATE;
    int rc;

    if (ix == NULL || r == NULL || res == NULL)
        return mms_why(why, why_len, MMS_EINVAL, "no index, row or result");
    if (old_path != NULL && old_path_len < sizeof r->path)
        return mms_why(why, why_len, MMS_EINVAL, "old_path has %zu bytes, fewer than %zu",
                       old_path_len, sizeof r->path);
    if (r->sop_instance[0] == '\0' || r->series_uid[0] == '\0')
        return mms_why(why, why_len, MMS_EINVAL, "no SOP Instance UID or Series Instance UID");
    if (ix->read_only)
        return mms_why(why, why_len, MMS_EINVAL, "the index is open read-only");
    if ((rc = begin_write(ix, why, why_len)) < 0)
        return rc;
    rc = put_locked(ix, r, &result, old, sizeof old, why, why_len);
    /* a crash here: SQLite rolls the transaction back at the next open; the instance's file
     * is in place without its row, as at spool.after-rename */
    if (rc == 0)
        MMS_CRASH_POINT("index.before-commit");
    if ((rc = end_write(ix, rc, why, why_len)) < 0)
        return rc;
    *res = result;
    if (old_path != NULL)
        snprintf(old_path, old_path_len, "%s", old);
    return 0;
}

int
mms_index_reopen(struct mms_index *ix, const struct mms_instance_row *r, char *why, size_t why_len)
{
    if (ix == NULL || r == NULL || r->series_uid[0] == '\0')
        return mms_why(why, why_len, MMS_EINVAL, "no index or series");
    if (ix->read_only)
        return mms_why(why, why_len, MMS_EINVAL, "the index is open read-only");
    int rc = begin_write(ix, why, why_len);
    if (rc < 0)
        return rc;
    rc = series_enter(ix, r, 0, why, why_len);
    return end_write(ix, rc, why, why_len);
}

int
mms_index_set_state(struct mms_index *ix, const char *series_uid, int state, const char *reason,
                    double now, char *why, size_t why_len)
{
    const char *name = mms_series_state_name(state);
    if (ix == NULL || series_uid == NULL || name == NULL)
        return mms_why(why, why_len, MMS_EINVAL, "no index or series, or state %d unknown", state);
    if (ix->read_only)
        return mms_why(why, why_len, MMS_EINVAL, "the index is open read-only");
    int rc = lock(ix, why, why_len);
    if (rc < 0)
        return rc;
    struct st *st = stmt(ix, S_SET_STATE, why, why_len);
    if (st == NULL) {
        rc = MMS_EIO;
        goto out;
    }
    struct binder b = {ix, st, 0};
    bind_cstr(&b, 1, series_uid);
    bind_cstr(&b, 2, name);
    bind_cstr(&b, 3, reason != NULL ? reason : "");
    bind_real(&b, 4, now);
    bind_int(&b, 5, state == MMS_SERIES_RUNNING);
    if (b.rc != 0) {
        rc = db_fail(ix, "bind series", why, why_len);
        goto out;
    }
    if ((rc = step(ix, st, "set state", why, why_len)) < 0)
        goto out;
    rc = changes(ix) == 0
             ? mms_why(why, why_len, MMS_ENOENT, "series %.64s is not in the index", series_uid)
             : 0;
    st_reset(st);
out:
    unlock(ix);
    return rc;
}

/* ---------------------------------------------------------------------------- reads */

/* mms_index_series() with statement which. */
static int
list_series(struct mms_index *ix, enum stmt_id which,
            int (*fn)(void *ud, const struct mms_series_row *s), void *ud, char *why,
            size_t why_len)
{
    if (ix == NULL || fn == NULL)
        return mms_why(why, why_len, MMS_EINVAL, "no index or callback");
    int rc = lock(ix, why, why_len);
    if (rc < 0)
        return rc;
    /* one statement, so one read transaction: a consistent list */
    struct st *st = stmt(ix, which, why, why_len);
    if (st == NULL) {
        rc = MMS_EIO;
        goto out;
    }
    while ((rc = step(ix, st, "list series", why, why_len)) == ROW) {
        struct mms_series_row s;
        read_series(st, &s);
        if (fn(ud, &s) != 0)
            break;
    }
    rc = rc < 0 ? rc : 0;
    st_reset(st);
out:
    unlock(ix);
    return rc;
}

int
mms_index_series(struct mms_index *ix, int (*fn)(void *ud, const struct mms_series_row *s),
                 void *ud, char *why, size_t why_len)
{
    return list_series(ix, S_SERIES_ALL, fn, ud, why, why_len);
}

int
mms_index_series_active(struct mms_index *ix, int (*fn)(void *ud, const struct mms_series_row *s),
                        void *ud, char *why, size_t why_len)
{
    return list_series(ix, S_SERIES_ACTIVE, fn, ud, why, why_len);
}

int
mms_index_queue_counts(struct mms_index *ix, int64_t *queued, int64_t *pending, int64_t *dead,
                       char *why, size_t why_len)
{
    if (ix == NULL || queued == NULL || pending == NULL || dead == NULL)
        return mms_why(why, why_len, MMS_EINVAL, "no index or counts");
    int rc = lock(ix, why, why_len);
    if (rc < 0)
        return rc;
    struct st *st = stmt(ix, S_QUEUE_COUNTS, why, why_len);
    if (st == NULL) {
        unlock(ix);
        return MMS_EIO;
    }
    if ((rc = step(ix, st, "count the queue", why, why_len)) == ROW) {
        *queued = col_int(st, 0);
        *pending = col_int(st, 1);
        *dead = col_int(st, 2);
    }
    st_reset(st);
    unlock(ix);
    return rc < 0 ? rc : 0;
}

/* Lock ix and bind text as parameter 1 of statement which; *st is ready to step. On
 * failure ix is unlocked again. */
static int
lock_and_bind(struct mms_index *ix, enum stmt_id which, const char *text, struct st **st, char *why,
              size_t why_len)
{
    int rc = lock(ix, why, why_len);
    if (rc < 0)
        return rc;
    if ((*st = stmt(ix, which, why, why_len)) == NULL) {
        unlock(ix);
        return MMS_EIO;
    }
    struct binder b = {ix, *st, 0};
    bind_cstr(&b, 1, text);
    if (b.rc != 0) {
        rc = db_fail(ix, "bind a UID", why, why_len);
        unlock(ix);
        return rc;
    }
    return 0;
}

int
mms_index_instances(struct mms_index *ix, const char *series_uid,
                    int (*fn)(void *ud, const struct mms_instance_row *r), void *ud, char *why,
                    size_t why_len)
{
    if (ix == NULL || series_uid == NULL || fn == NULL)
        return mms_why(why, why_len, MMS_EINVAL, "no index, series or callback");
    struct st *st;
    int rc = lock_and_bind(ix, S_INSTANCES_OF, series_uid, &st, why, why_len);
    if (rc < 0)
        return rc;
    while ((rc = step(ix, st, "list instances", why, why_len)) == ROW) {
        struct mms_instance_row r;
        read_instance(st, &r);
        if (fn(ud, &r) != 0)
            break;
    }
    rc = rc < 0 ? rc : 0;
    st_reset(st);
    unlock(ix);
    return rc;
}

int
mms_index_instance(struct mms_index *ix, const char *sop_instance, struct mms_instance_row *out,
                   char *why, size_t why_len)
{
    if (ix == NULL || sop_instance == NULL || out == NULL)
        return mms_why(why, why_len, MMS_EINVAL, "no index, UID or row");
    struct st *st;
    int rc = lock_and_bind(ix, S_INSTANCE_ONE, sop_instance, &st, why, why_len);
    if (rc < 0)
        return rc;
    if ((rc = step(ix, st, "read instance", why, why_len)) == ROW) {
        read_instance(st, out);
        rc = 0;
    } else if (rc == DONE) {
        rc = mms_why(why, why_len, MMS_ENOENT, "instance %.64s is not in the index", sop_instance);
    }
    st_reset(st);
    unlock(ix);
    return rc;
}

/* The body of mms_index_counts(), inside a read transaction. */
static int
counts_locked(struct mms_index *ix, int64_t *instances, int64_t *counts, char *why, size_t why_len)
{
    struct st *st = stmt(ix, S_COUNT_INSTANCES, why, why_len);
    if (st == NULL)
        return MMS_EIO;
    int rc = step(ix, st, "count instances", why, why_len);
    if (rc < 0)
        return rc;
    *instances = rc == ROW ? col_int(st, 0) : 0;
    st_reset(st);
    if ((st = stmt(ix, S_COUNT_STATES, why, why_len)) == NULL)
        return MMS_EIO;
    while ((rc = step(ix, st, "count series", why, why_len)) == ROW) {
        int state = state_parse(col_text(st, 0));
        if (state >= 0)
            counts[state] = col_int(st, 1);
    }
    st_reset(st);
    return rc < 0 ? rc : 0;
}

int
mms_index_counts(struct mms_index *ix, int64_t *instances, int64_t counts[MMS_SERIES_SKIPPED + 1],
                 char *why, size_t why_len)
{
    int64_t n = 0, c[MMS_SERIES_SKIPPED + 1] = {0};
    if (ix == NULL || instances == NULL || counts == NULL)
        return mms_why(why, why_len, MMS_EINVAL, "no index or counts");
    int rc = lock(ix, why, why_len);
    if (rc < 0)
        return rc;
    if ((rc = run(ix, S_BEGIN_READ, why, why_len)) < 0)
        goto out;
    if ((rc = counts_locked(ix, &n, c, why, why_len)) < 0 ||
        (rc = run(ix, S_COMMIT, why, why_len)) < 0) {
        rollback(ix);
        goto out;
    }
    *instances = n;
    memcpy(counts, c, sizeof c);
out:
    unlock(ix);
    return rc;
}

/* ---------------------------------------------------------------------------- sends */

/* The state of job `job`, its row locked until the end of the transaction (FOR UPDATE on
 * PostgreSQL; SQLite's write transaction holds the whole database): 0 and *state, or
 * MMS_ENOENT when there is no such job. */
static int
lock_job(struct mms_index *ix, int64_t job, int *state, char *why, size_t why_len)
{
    struct st *st = stmt(ix, S_JOB_LOCK, why, why_len);
    if (st == NULL)
        return MMS_EIO;
    struct binder b = {ix, st, 0};
    bind_int(&b, 1, job);
    int rc =
        b.rc != 0 ? db_fail(ix, "bind job", why, why_len) : step(ix, st, "lock job", why, why_len);
    if (rc == ROW)
        *state = job_state_parse(col_text(st, 0));
    st_reset(st);
    return rc == ROW ? 0 : rc == DONE ? MMS_ENOENT : rc;
}

/* mms_index_sends_add(); result: only while the index does not know job as ended. */
static int
sends_add(struct mms_index *ix, int64_t job, const char *series_uid,
          const char *const *destinations, int n, double due, bool result, char *why,
          size_t why_len)
{
    if (ix == NULL || destinations == NULL || n < 1)
        return mms_why(why, why_len, MMS_EINVAL, "no index or destinations");
    if (ix->read_only)
        return mms_why(why, why_len, MMS_EINVAL, "the index is open read-only");
    for (int i = 0; i < n; i++)
        if (destinations[i] == NULL || destinations[i][0] == '\0' ||
            strlen(destinations[i]) >= sizeof((struct mms_send_row *)0)->destination)
            return mms_why(why, why_len, MMS_EINVAL, "destination %d: empty or too long name", i);
    int rc = begin_write(ix, why, why_len);
    if (rc < 0)
        return rc;
    int state = MMS_JOB_RUNNING;
    if (result && (rc = lock_job(ix, job, &state, why, why_len)) == MMS_ENOENT)
        rc = 0; /* a result the index has no job for (tests/outbox-put.c) */
    if (rc == 0 && state != MMS_JOB_RUNNING)
        rc = mms_why(why, why_len, MMS_ENOENT,
                     "job %lld is no longer running (its lease ran out and another node ended "
                     "it): its result is not sent",
                     (long long)job);
    for (int i = 0; i < n && rc == 0; i++) {
        struct st *st = stmt(ix, S_SEND_ADD, why, why_len);
        if (st == NULL) {
            rc = MMS_EIO;
            break;
        }
        struct binder b = {ix, st, 0};
        bind_int(&b, 1, job);
        bind_cstr(&b, 2, destinations[i]);
        bind_cstr(&b, 3, series_uid != NULL ? series_uid : "");
        bind_real(&b, 4, due);
        if (b.rc != 0)
            rc = db_fail(ix, "bind send", why, why_len);
        else if ((rc = step(ix, st, "queue send", why, why_len)) > 0)
            rc = 0;
        st_reset(st);
    }
    return end_write(ix, rc, why, why_len);
}

int
mms_index_sends_add(struct mms_index *ix, int64_t job, const char *series_uid,
                    const char *const *destinations, int n, double due, char *why, size_t why_len)
{
    return sends_add(ix, job, series_uid, destinations, n, due, false, why, why_len);
}

int
mms_index_result_sends(struct mms_index *ix, int64_t job, const char *series_uid,
                       const char *const *destinations, int n, double due, char *why,
                       size_t why_len)
{
    return sends_add(ix, job, series_uid, destinations, n, due, true, why, why_len);
}

int
mms_index_send_update(struct mms_index *ix, const struct mms_send_row *r, char *why, size_t why_len)
{
    const char *name = r != NULL ? mms_send_state_name(r->state) : NULL;
    if (ix == NULL || name == NULL)
        return mms_why(why, why_len, MMS_EINVAL, "no index or row, or an unknown state");
    if (ix->read_only)
        return mms_why(why, why_len, MMS_EINVAL, "the index is open read-only");
    int rc = lock(ix, why, why_len);
    if (rc < 0)
        return rc;
    struct st *st = stmt(ix, S_SEND_UPDATE, why, why_len);
    if (st == NULL) {
        rc = MMS_EIO;
        goto out;
    }
    struct binder b = {ix, st, 0};
    bind_int(&b, 1, r->job);
    BIND_FIELD(&b, 2, r->destination);
    bind_cstr(&b, 3, name);
    bind_int(&b, 4, r->attempts);
    bind_real(&b, 5, r->queued);
    bind_real(&b, 6, r->next_attempt);
    bind_real(&b, 7, r->last_attempt);
    bind_real(&b, 8, r->state_since);
    BIND_FIELD(&b, 9, r->reason);
    if (b.rc != 0) {
        rc = db_fail(ix, "bind send", why, why_len);
        goto out;
    }
    if ((rc = step(ix, st, "update send", why, why_len)) < 0)
        goto out;
    rc = changes(ix) == 0 ? mms_why(why, why_len, MMS_ENOENT, "no send of job %lld to %.63s",
                                    (long long)r->job, r->destination)
                          : 0;
    st_reset(st);
out:
    unlock(ix);
    return rc;
}

int
mms_index_sends(struct mms_index *ix, int state, int64_t job,
                int (*fn)(void *ud, const struct mms_send_row *r), void *ud, char *why,
                size_t why_len)
{
    if (ix == NULL || fn == NULL || (state != -1 && mms_send_state_name(state) == NULL))
        return mms_why(why, why_len, MMS_EINVAL, "no index or callback, or an unknown state");
    int rc = lock(ix, why, why_len);
    if (rc < 0)
        return rc;
    struct st *st = stmt(ix, S_SENDS, why, why_len);
    if (st == NULL) {
        rc = MMS_EIO;
        goto out;
    }
    struct binder b = {ix, st, 0};
    if (state < 0)
        bind_null(&b, 1);
    else
        bind_cstr(&b, 1, mms_send_state_name(state));
    bind_int(&b, 2, job);
    if (b.rc != 0) {
        rc = db_fail(ix, "bind sends", why, why_len);
        goto out;
    }
    while ((rc = step(ix, st, "list sends", why, why_len)) == ROW) {
        struct mms_send_row r;
        read_send(st, &r);
        if (fn(ud, &r) != 0)
            break;
    }
    rc = rc < 0 ? rc : 0;
    st_reset(st);
out:
    unlock(ix);
    return rc;
}

int
mms_index_send_counts(struct mms_index *ix, int64_t counts[MMS_SEND_DEAD + 1], char *why,
                      size_t why_len)
{
    if (ix == NULL || counts == NULL)
        return mms_why(why, why_len, MMS_EINVAL, "no index or counts");
    int rc = lock(ix, why, why_len);
    if (rc < 0)
        return rc;
    struct st *st = stmt(ix, S_COUNT_SENDS, why, why_len);
    if (st == NULL) {
        rc = MMS_EIO;
        goto out;
    }
    for (int i = 0; i < N_SEND_STATES; i++)
        counts[i] = 0;
    while ((rc = step(ix, st, "count sends", why, why_len)) == ROW) {
        int state = send_state_parse(col_text(st, 0));
        if (state >= 0)
            counts[state] = col_int(st, 1);
    }
    rc = rc < 0 ? rc : 0;
    st_reset(st);
out:
    unlock(ix);
    return rc;
}

/* ---------------------------------------------------------------------------- jobs */

/* The body of mms_index_job_start(), inside the write transaction. */
static int
job_start_locked(struct mms_index *ix, const char *series_uid, const char *node, double now,
                 double lease_until, int64_t *id, int64_t *run_no, char *why, size_t why_len)
{
    struct st *st = stmt(ix, S_SET_STATE, why, why_len);
    if (st == NULL)
        return MMS_EIO;
    struct binder b = {ix, st, 0};
    bind_cstr(&b, 1, series_uid);
    bind_cstr(&b, 2, mms_series_state_name(MMS_SERIES_RUNNING));
    bind_cstr(&b, 3, "");
    bind_real(&b, 4, now);
    bind_int(&b, 5, 1);
    if (b.rc != 0)
        return db_fail(ix, "bind series", why, why_len);
    int rc = step(ix, st, "set state", why, why_len);
    st_reset(st);
    if (rc < 0)
        return rc;
    if (changes(ix) == 0)
        return mms_why(why, why_len, MMS_ENOENT, "series %.64s is not in the index", series_uid);
    if ((st = stmt(ix, S_SERIES_RUN, why, why_len)) == NULL)
        return MMS_EIO;
    b = (struct binder){ix, st, 0};
    bind_cstr(&b, 1, series_uid);
    if (b.rc != 0)
        return db_fail(ix, "bind series", why, why_len);
    if ((rc = step(ix, st, "read run", why, why_len)) == ROW)
        *run_no = col_int(st, 0);
    st_reset(st);
    if (rc < 0)
        return rc;
    if ((st = stmt(ix, S_JOB_INSERT, why, why_len)) == NULL)
        return MMS_EIO;
    b = (struct binder){ix, st, 0};
    bind_cstr(&b, 1, series_uid);
    bind_int(&b, 2, *run_no);
    bind_real(&b, 3, now);
    bind_cstr(&b, 4, node);
    bind_real(&b, 5, lease_until);
    if (b.rc != 0)
        return db_fail(ix, "bind job", why, why_len);
    if ((rc = step(ix, st, "insert job", why, why_len)) == ROW)
        *id = col_int(st, 0);
    st_reset(st);
    if (rc == DONE)
        return mms_why(why, why_len, MMS_EIO, "insert job: no id returned");
    return rc < 0 ? rc : 0;
}

int
mms_index_job_start(struct mms_index *ix, const char *series_uid, double now, int64_t *id,
                    int64_t *run_no, char *why, size_t why_len)
{
    if (ix == NULL || series_uid == NULL || id == NULL || run_no == NULL)
        return mms_why(why, why_len, MMS_EINVAL, "no index, series or output");
    if (ix->read_only)
        return mms_why(why, why_len, MMS_EINVAL, "the index is open read-only");
    int rc = begin_write(ix, why, why_len);
    if (rc < 0)
        return rc;
    rc = job_start_locked(ix, series_uid, "", now, 0, id, run_no, why, why_len);
    return end_write(ix, rc, why, why_len);
}

int
mms_index_job_claim(struct mms_index *ix, const char *node, double now, double lease_s,
                    char series_uid[65], int64_t *id, int64_t *run_no, char *why, size_t why_len)
{
    if (ix == NULL || node == NULL || series_uid == NULL || id == NULL || run_no == NULL)
        return mms_why(why, why_len, MMS_EINVAL, "no index, node or output");
    if (ix->read_only)
        return mms_why(why, why_len, MMS_EINVAL, "the index is open read-only");
    int rc = begin_write(ix, why, why_len);
    if (rc < 0)
        return rc;
    struct st *st = stmt(ix, S_QUEUED_OLDEST, why, why_len);
    if (st == NULL) {
        rc = MMS_EIO;
    } else {
        if ((rc = step(ix, st, "find queued series", why, why_len)) == ROW)
            column_text(st, 0, series_uid, 65);
        st_reset(st);
        if (rc == DONE)
            rc = MMS_ENOENT; /* not an error: nothing to roll back, and no why */
        else if (rc == ROW)
            rc = job_start_locked(ix, series_uid, node, now, now + lease_s, id, run_no, why,
                                  why_len);
    }
    if (rc == MMS_ENOENT) {
        end_write(ix, 0, why, why_len);
        return mms_why(why, why_len, MMS_ENOENT, "no series is queued");
    }
    return end_write(ix, rc, why, why_len);
}

/* The body of mms_index_job_finish(), inside the write transaction. */
static int
job_finish_locked(struct mms_index *ix, const struct mms_job_row *j, const char *state_name,
                  const char *series_state, const char *series_reason, double now, char *why,
                  size_t why_len)
{
    struct st *st = stmt(ix, S_JOB_UPDATE, why, why_len);
    if (st == NULL)
        return MMS_EIO;
    struct binder b = {ix, st, 0};
    bind_int(&b, 1, j->id);
    bind_cstr(&b, 2, state_name);
    BIND_FIELD(&b, 3, j->stage);
    BIND_FIELD(&b, 4, j->reason);
    bind_real(&b, 5, j->finished);
    const double times[] = {j->decode_s, j->wait_s,  j->preprocess_s, j->network_s,
                            j->export_s, j->write_s, j->total_s};
    for (int i = 0; i < 7; i++)
        bind_real(&b, 6 + i, times[i]);
    bind_int(&b, 13, j->segments);
    bind_int(&b, 14, j->frames);
    if (b.rc != 0)
        return db_fail(ix, "bind job", why, why_len);
    int rc = step(ix, st, "update job", why, why_len);
    st_reset(st);
    if (rc < 0)
        return rc;
    if (changes(ix) == 0)
        return mms_why(why, why_len, MMS_ENOENT,
                       "job %lld is not running in the index (on a shared index: its lease ran "
                       "out and another node ended it)",
                       (long long)j->id);
    if ((st = stmt(ix, S_SERIES_FINISH, why, why_len)) == NULL)
        return MMS_EIO;
    b = (struct binder){ix, st, 0};
    bind_cstr(&b, 1, j->series_uid);
    bind_cstr(&b, 2, series_state);
    bind_cstr(&b, 3, series_reason != NULL ? series_reason : "");
    bind_real(&b, 4, now);
    if (b.rc != 0)
        return db_fail(ix, "bind series", why, why_len);
    rc = step(ix, st, "set state", why, why_len);
    st_reset(st);
    return rc < 0 ? rc : 0;
}

int
mms_index_job_finish(struct mms_index *ix, const struct mms_job_row *j, int series_state,
                     const char *series_reason, double now, char *why, size_t why_len)
{
    const char *name = j != NULL ? mms_job_state_name(j->state) : NULL;
    const char *sname = mms_series_state_name(series_state);
    if (ix == NULL || name == NULL || sname == NULL)
        return mms_why(why, why_len, MMS_EINVAL, "no index or job, or an unknown state");
    if (ix->read_only)
        return mms_why(why, why_len, MMS_EINVAL, "the index is open read-only");
    int rc = begin_write(ix, why, why_len);
    if (rc < 0)
        return rc;
    rc = job_finish_locked(ix, j, name, sname, series_reason, now, why, why_len);
    return end_write(ix, rc, why, why_len);
}

int
mms_index_job_abandon(struct mms_index *ix, struct mms_job_row *j, int series_state,
                      const char *series_reason, double now, bool *sent, char *why, size_t why_len)
{
    const char *sname = mms_series_state_name(series_state);
    if (ix == NULL || j == NULL || mms_job_state_name(j->state) == NULL || sname == NULL ||
        sent == NULL)
        return mms_why(why, why_len, MMS_EINVAL, "no index or job, or an unknown state");
    if (ix->read_only)
        return mms_why(why, why_len, MMS_EINVAL, "the index is open read-only");
    int rc = begin_write(ix, why, why_len);
    if (rc < 0)
        return rc;
    int state = -1;
    if ((rc = lock_job(ix, j->id, &state, why, why_len)) == 0 && state != MMS_JOB_RUNNING)
        rc = mms_why(why, why_len, MMS_ENOENT, "job %lld was ended meanwhile", (long long)j->id);
    struct st *st = rc == 0 ? stmt(ix, S_JOB_HAS_SENDS, why, why_len) : NULL;
    if (rc == 0 && st == NULL)
        rc = MMS_EIO;
    if (st != NULL) {
        struct binder b = {ix, st, 0};
        bind_int(&b, 1, j->id);
        rc = b.rc != 0 ? db_fail(ix, "bind job", why, why_len)
                       : step(ix, st, "read sends", why, why_len);
        *sent = rc == ROW && col_int(st, 0) > 0;
        st_reset(st);
        rc = rc < 0 ? rc : 0;
    }
    if (rc == 0 && *sent) { /* the result was in the outbox: the job had done its work */
        j->state = MMS_JOB_DONE;
        snprintf(j->reason, sizeof j->reason,
                 "its result was in the outbox before its node stopped");
        series_state = MMS_SERIES_DONE;
        series_reason = "";
        sname = mms_series_state_name(series_state);
    }
    if (rc == 0)
        rc = job_finish_locked(ix, j, mms_job_state_name(j->state), sname, series_reason, now, why,
                               why_len);
    return end_write(ix, rc, why, why_len);
}

int
mms_index_jobs(struct mms_index *ix, int state, int (*fn)(void *ud, const struct mms_job_row *j),
               void *ud, char *why, size_t why_len)
{
    if (ix == NULL || fn == NULL || (state != -1 && mms_job_state_name(state) == NULL))
        return mms_why(why, why_len, MMS_EINVAL, "no index or callback, or an unknown state");
    struct st *st;
    int rc =
        lock_and_bind(ix, S_JOBS, state < 0 ? NULL : mms_job_state_name(state), &st, why, why_len);
    if (rc < 0)
        return rc;
    while ((rc = step(ix, st, "list jobs", why, why_len)) == ROW) {
        struct mms_job_row j;
        read_job(st, &j);
        if (fn(ud, &j) != 0)
            break;
    }
    rc = rc < 0 ? rc : 0;
    st_reset(st);
    unlock(ix);
    return rc;
}

/* ---------------------------------------------------------------------------- clusters */

/* Run statement which, bound by bind(b, arg), in one locked call; *n receives the rows it
 * changed. */
static int
write_one(struct mms_index *ix, enum stmt_id which, void (*bind)(struct binder *, const void *),
          const void *arg, int64_t *n, char *why, size_t why_len)
{
    if (ix->read_only)
        return mms_why(why, why_len, MMS_EINVAL, "the index is open read-only");
    int rc = lock(ix, why, why_len);
    if (rc < 0)
        return rc;
    struct st *st = stmt(ix, which, why, why_len);
    if (st == NULL) {
        rc = MMS_EIO;
    } else {
        struct binder b = {ix, st, 0};
        bind(&b, arg);
        if (b.rc != 0)
            rc = db_fail(ix, stmt_sql[which].what, why, why_len);
        else if ((rc = step(ix, st, stmt_sql[which].what, why, why_len)) > 0)
            rc = 0;
        if (rc == 0)
            *n = changes(ix);
        st_reset(st);
    }
    unlock(ix);
    return rc;
}

struct settle_args {
    const char *series;
    double last, now;
};

static void
bind_settle(struct binder *b, const void *arg)
{
    const struct settle_args *a = arg;
    bind_cstr(b, 1, a->series);
    bind_real(b, 2, a->last);
    bind_real(b, 3, a->now);
}

int
mms_index_settle(struct mms_index *ix, const char *series_uid, double last_received, double now,
                 char *why, size_t why_len)
{
    if (ix == NULL || series_uid == NULL)
        return mms_why(why, why_len, MMS_EINVAL, "no index or series");
    struct settle_args a = {series_uid, last_received, now};
    int64_t n = 0;
    int rc = write_one(ix, S_SETTLE, bind_settle, &a, &n, why, why_len);
    if (rc == 0 && n == 0)
        rc = mms_why(why, why_len, MMS_EAGAIN,
                     "series %.64s changed since it was read (an instance arrived, or another "
                     "node judged it)",
                     series_uid);
    return rc;
}

struct claim_args {
    int64_t job;
    const char *destination, *node;
    double now, until;
};

static void
bind_claim(struct binder *b, const void *arg)
{
    const struct claim_args *a = arg;
    bind_int(b, 1, a->job);
    bind_cstr(b, 2, a->destination);
    bind_cstr(b, 3, a->node);
    bind_real(b, 4, a->now);
    bind_real(b, 5, a->until);
}

int
mms_index_send_claim(struct mms_index *ix, int64_t job, const char *destination, const char *node,
                     double now, double lease_s, char *why, size_t why_len)
{
    if (ix == NULL || destination == NULL || node == NULL)
        return mms_why(why, why_len, MMS_EINVAL, "no index, destination or node");
    struct claim_args a = {job, destination, node, now, now + lease_s};
    int64_t n = 0;
    int rc = write_one(ix, S_SEND_CLAIM, bind_claim, &a, &n, why, why_len);
    if (rc == 0 && n == 0)
        rc = mms_why(why, why_len, MMS_EAGAIN,
                     "send of job %lld to %.64s: another node holds it, or it is not pending and "
                     "due",
                     (long long)job, destination);
    return rc;
}

int
mms_index_node_beat(struct mms_index *ix, const struct mms_node_row *n, double now, double lease_s,
                    char *why, size_t why_len)
{
    if (ix == NULL || n == NULL || n->name[0] == '\0')
        return mms_why(why, why_len, MMS_EINVAL, "no index or node");
    if (ix->read_only)
        return mms_why(why, why_len, MMS_EINVAL, "the index is open read-only");
    int rc = begin_write(ix, why, why_len);
    if (rc < 0)
        return rc;
    struct st *st = stmt(ix, S_NODE_PUT, why, why_len);
    if (st == NULL) {
        rc = MMS_EIO;
        goto out;
    }
    struct binder b = {ix, st, 0};
    BIND_FIELD(&b, 1, n->name);
    BIND_FIELD(&b, 2, n->roles);
    bind_int(&b, 3, n->pid);
    bind_real(&b, 4, n->started);
    bind_real(&b, 5, now);
    if (b.rc != 0 || (rc = step(ix, st, "write node", why, why_len)) < 0) {
        rc = rc < 0 ? rc : db_fail(ix, "bind node", why, why_len);
        st_reset(st);
        goto out;
    }
    st_reset(st);
    static const enum stmt_id renew[] = {S_NODE_RENEW_JOBS, S_NODE_RENEW_SENDS};
    for (int i = 0; i < 2 && rc >= 0; i++) {
        if ((st = stmt(ix, renew[i], why, why_len)) == NULL) {
            rc = MMS_EIO;
            break;
        }
        b = (struct binder){ix, st, 0};
        BIND_FIELD(&b, 1, n->name);
        bind_real(&b, 2, now + lease_s);
        rc = b.rc != 0 ? db_fail(ix, "bind lease", why, why_len)
                       : step(ix, st, "renew leases", why, why_len);
        st_reset(st);
    }
out:
    return end_write(ix, rc < 0 ? rc : 0, why, why_len);
}

int
mms_index_nodes(struct mms_index *ix, int (*fn)(void *ud, const struct mms_node_row *n), void *ud,
                char *why, size_t why_len)
{
    if (ix == NULL || fn == NULL)
        return mms_why(why, why_len, MMS_EINVAL, "no index or callback");
    int rc = lock(ix, why, why_len);
    if (rc < 0)
        return rc;
    struct st *st = stmt(ix, S_NODES, why, why_len);
    if (st == NULL) {
        unlock(ix);
        return MMS_EIO;
    }
    while ((rc = step(ix, st, "list nodes", why, why_len)) == ROW) {
        struct mms_node_row n = {0};
        COLUMN_FIELD(st, 0, n.name);
        COLUMN_FIELD(st, 1, n.roles);
        n.pid = col_int(st, 2);
        n.started = col_real(st, 3);
        n.heartbeat = col_real(st, 4);
        n.jobs = col_int(st, 5);
        n.sends = col_int(st, 6);
        if (fn(ud, &n) != 0)
            break;
    }
    st_reset(st);
    unlock(ix);
    return rc < 0 ? rc : 0;
}
