/* daemon/index: the instance and series index on SQLite (index.h).
 *
 * One connection per handle, opened with SQLITE_OPEN_FULLMUTEX, and our own mutex around
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

/* Schema migrations: migrations[v] takes user_version v to v + 1. Append only; a released
 * entry is never edited. */
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
    "state_since, reason"

#define JOB_COLUMNS                                                                                \
    "id, series_uid, run, state, stage, reason, started, finished, decode_s, wait_s, "             \
    "preprocess_s, network_s, export_s, write_s, total_s, segments, frames"

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
                        "study_uid = CASE WHEN ?2 <> '' THEN ?2 ELSE study_uid END, "
                        "state = 'receiving', reason = '', "
                        "state_since = CASE WHEN state <> 'receiving' THEN ?4 ELSE state_since "
                        "END, instances = instances + ?3, last_received = ?4, "
                        "modality = CASE WHEN ?5 <> '' THEN ?5 ELSE modality END, "
                        "series_description = CASE WHEN ?6 <> '' THEN ?6 ELSE series_description "
                        "END"},
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
                    "INSERT INTO sends (" SEND_COLUMNS ") VALUES (?1, ?2, ?3, 'pending', 0, ?4, "
                    "?4, 0, ?4, '') ON CONFLICT (job, destination) DO UPDATE SET "
                    "series_uid = ?3, state = 'pending', attempts = 0, queued = ?4, "
                    "next_attempt = ?4, state_since = ?4, reason = ''"},
    [S_SEND_UPDATE] = {"update send",
                       "UPDATE sends SET state = ?3, attempts = ?4, queued = ?5, next_attempt = "
                       "?6, last_attempt = ?7, state_since = ?8, reason = ?9 "
                       "WHERE job = ?1 AND destination = ?2"},
    [S_SENDS] = {"list sends", "SELECT " SEND_COLUMNS " FROM sends WHERE (?1 IS NULL OR state = "
                               "?1) AND (?2 < 0 OR job = ?2) ORDER BY next_attempt, job, "
                               "destination"},
    [S_COUNT_SENDS] = {"count sends", "SELECT state, count(*) FROM sends GROUP BY state"},
    [S_SERIES_RUN] = {"read run", "SELECT run FROM series WHERE series_uid = ?1"},
    [S_JOB_INSERT] = {"insert job", "INSERT INTO jobs (series_uid, run, state, started) VALUES "
                                    "(?1, ?2, 'running', ?3)"},
    [S_JOB_UPDATE] = {"update job",
                      "UPDATE jobs SET state = ?2, stage = ?3, reason = ?4, finished = ?5, "
                      "decode_s = ?6, wait_s = ?7, preprocess_s = ?8, network_s = ?9, export_s "
                      "= ?10, write_s = ?11, total_s = ?12, segments = ?13, frames = ?14 "
                      "WHERE id = ?1"},
    /* the end of a job sets its series' state unless a late instance re-opened it */
    [S_SERIES_FINISH] = {"set state", "UPDATE series SET state = ?2, reason = ?3, state_since = "
                                      "?4 WHERE series_uid = ?1 AND state = 'running'"},
    [S_JOBS] = {"list jobs",
                "SELECT " JOB_COLUMNS " FROM jobs WHERE (?1 IS NULL OR state = ?1) ORDER BY id"},
};

struct mms_index {
    pthread_mutex_t mu; /* error-checking; held for the whole of every call */
    sqlite3 *db;
    bool read_only;
    sqlite3_stmt *stmt[N_STMT];
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

/* ---------------------------------------------------------------------------- helpers */

static int
lock(struct mms_index *ix, char *why, size_t why_len)
{
    int e = pthread_mutex_lock(&ix->mu);
    if (e == EDEADLK)
        return mms_why(why, why_len, MMS_EINVAL,
                       "the index was called from inside one of its own callbacks");
    if (e != 0)
        return mms_why(why, why_len, -e, "pthread_mutex_lock: %s", mms_strerror(-e));
    return 0;
}

static void
unlock(struct mms_index *ix)
{
    pthread_mutex_unlock(&ix->mu);
}

/* Record SQLite's message for a failed step of `what` and return MMS_EIO. */
static int
db_fail(struct mms_index *ix, const char *what, char *why, size_t why_len)
{
    return mms_why(why, why_len, MMS_EIO, "%s: %s", what, sqlite3_errmsg(ix->db));
}

/* The prepared statement id, reset and without bindings; NULL with why on failure. */
static sqlite3_stmt *
stmt(struct mms_index *ix, enum stmt_id id, char *why, size_t why_len)
{
    sqlite3_stmt *st = ix->stmt[id];
    if (st == NULL) {
        if (sqlite3_prepare_v3(ix->db, stmt_sql[id].sql, -1, SQLITE_PREPARE_PERSISTENT, &st,
                               NULL) != SQLITE_OK) {
            mms_why(why, why_len, MMS_EIO, "prepare %s: %s", stmt_sql[id].what,
                    sqlite3_errmsg(ix->db));
            return NULL;
        }
        ix->stmt[id] = st;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return st;
}

/* Step st once. Returns SQLITE_ROW, SQLITE_DONE, or MMS_EIO with why. */
static int
step(struct mms_index *ix, sqlite3_stmt *st, const char *what, char *why, size_t why_len)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW || rc == SQLITE_DONE)
        return rc;
    db_fail(ix, what, why, why_len);
    sqlite3_reset(st);
    return MMS_EIO;
}

/* Run a statement that returns no rows. Returns 0 or MMS_EIO with why. */
static int
run(struct mms_index *ix, enum stmt_id id, char *why, size_t why_len)
{
    sqlite3_stmt *st = stmt(ix, id, why, why_len);
    if (st == NULL)
        return MMS_EIO;
    int rc = step(ix, st, stmt_sql[id].what, why, why_len);
    sqlite3_reset(st);
    return rc < 0 ? rc : 0;
}

/* Roll back the open transaction, if any (after a failure: why already says what failed). */
static void
rollback(struct mms_index *ix)
{
    if (sqlite3_get_autocommit(ix->db))
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
    sqlite3_stmt *st;
    int rc;
};

/* Bind a field of a fixed-size array: at most cap bytes, in case it lacks its NUL. */
static void
bind_text(struct binder *b, int i, const char *s, size_t cap)
{
    if (b->rc == SQLITE_OK)
        b->rc = sqlite3_bind_text(b->st, i, s, (int)strnlen(s, cap), SQLITE_STATIC);
}

#define BIND_FIELD(b, i, field) bind_text((b), (i), (field), sizeof(field))

/* Bind a caller's NUL-terminated string. */
static void
bind_cstr(struct binder *b, int i, const char *s)
{
    if (b->rc == SQLITE_OK)
        b->rc = sqlite3_bind_text(b->st, i, s, -1, SQLITE_STATIC);
}

static void
bind_int(struct binder *b, int i, int64_t v)
{
    if (b->rc == SQLITE_OK)
        b->rc = sqlite3_bind_int64(b->st, i, v);
}

static void
bind_real(struct binder *b, int i, double v)
{
    if (b->rc == SQLITE_OK)
        b->rc = sqlite3_bind_double(b->st, i, v);
}

static void
bind_null(struct binder *b, int i)
{
    if (b->rc == SQLITE_OK)
        b->rc = sqlite3_bind_null(b->st, i);
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
column_text(sqlite3_stmt *st, int col, char *dst, size_t cap)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    size_t n = t != NULL ? (size_t)sqlite3_column_bytes(st, col) : 0;
    if (n >= cap)
        n = cap - 1;
    if (n > 0)
        memcpy(dst, t, n);
    dst[n] = '\0';
}

#define COLUMN_FIELD(st, col, field) column_text((st), (col), (field), sizeof(field))

/* Read a row of INSTANCE_COLUMNS. */
static void
read_instance(sqlite3_stmt *st, struct mms_instance_row *r)
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
    r->has_geometry = sqlite3_column_int64(st, 10) != 0;
    for (int k = 0; k < 3; k++)
        r->ipp[k] = sqlite3_column_double(st, 11 + k);
    for (int k = 0; k < 6; k++)
        r->iop[k] = sqlite3_column_double(st, 14 + k);
    r->rows = sqlite3_column_int64(st, 20);
    r->cols = sqlite3_column_int64(st, 21);
    r->frames = sqlite3_column_int64(st, 22);
    r->acquisition = sqlite3_column_int64(st, 23);
    r->instance_number = sqlite3_column_int64(st, 24);
    r->images_in_acquisition = sqlite3_column_int64(st, 25);
    r->slice_thickness = sqlite3_column_double(st, 26);
    COLUMN_FIELD(st, 27, r->digest);
    COLUMN_FIELD(st, 28, r->path);
    r->size = sqlite3_column_int64(st, 29);
    r->received = sqlite3_column_double(st, 30);
    COLUMN_FIELD(st, 31, r->source);
}

/* Read a row of SERIES_COLUMNS. An unknown state name reads as -1. */
static void
read_series(sqlite3_stmt *st, struct mms_series_row *s)
{
    memset(s, 0, sizeof *s);
    COLUMN_FIELD(st, 0, s->series_uid);
    COLUMN_FIELD(st, 1, s->study_uid);
    s->state = state_parse((const char *)sqlite3_column_text(st, 2));
    COLUMN_FIELD(st, 3, s->reason);
    s->instances = sqlite3_column_int64(st, 4);
    s->first_received = sqlite3_column_double(st, 5);
    s->last_received = sqlite3_column_double(st, 6);
    s->state_since = sqlite3_column_double(st, 7);
    s->run = sqlite3_column_int64(st, 8);
    COLUMN_FIELD(st, 9, s->modality);
    COLUMN_FIELD(st, 10, s->series_description);
}

/* Read a row of SEND_COLUMNS. An unknown state name reads as -1. */
static void
read_send(sqlite3_stmt *st, struct mms_send_row *r)
{
    memset(r, 0, sizeof *r);
    r->job = sqlite3_column_int64(st, 0);
    COLUMN_FIELD(st, 1, r->destination);
    COLUMN_FIELD(st, 2, r->series_uid);
    r->state = send_state_parse((const char *)sqlite3_column_text(st, 3));
    r->attempts = sqlite3_column_int64(st, 4);
    r->queued = sqlite3_column_double(st, 5);
    r->next_attempt = sqlite3_column_double(st, 6);
    r->last_attempt = sqlite3_column_double(st, 7);
    r->state_since = sqlite3_column_double(st, 8);
    COLUMN_FIELD(st, 9, r->reason);
}

/* Read a row of JOB_COLUMNS. An unknown state name reads as -1. */
static void
read_job(sqlite3_stmt *st, struct mms_job_row *j)
{
    memset(j, 0, sizeof *j);
    j->id = sqlite3_column_int64(st, 0);
    COLUMN_FIELD(st, 1, j->series_uid);
    j->run = sqlite3_column_int64(st, 2);
    j->state = job_state_parse((const char *)sqlite3_column_text(st, 3));
    COLUMN_FIELD(st, 4, j->stage);
    COLUMN_FIELD(st, 5, j->reason);
    j->started = sqlite3_column_double(st, 6);
    j->finished = sqlite3_column_double(st, 7);
    double *times[] = {&j->decode_s, &j->wait_s,  &j->preprocess_s, &j->network_s,
                       &j->export_s, &j->write_s, &j->total_s};
    for (int i = 0; i < 7; i++)
        *times[i] = sqlite3_column_double(st, 8 + i);
    j->segments = sqlite3_column_int64(st, 15);
    j->frames = sqlite3_column_int64(st, 16);
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
    rc = sqlite3_step(st);
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

int
mms_index_open(const char *path, bool read_only, struct mms_index **out, char *why, size_t why_len)
{
    struct mms_index *ix = NULL;
    pthread_mutexattr_t attr;
    bool mutex_made = false;
    int rc;

    if (path == NULL || out == NULL)
        return mms_why(why, why_len, MMS_EINVAL, "no path");
    struct stat sb;
    if (read_only && stat(path, &sb) != 0) {
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
    if (ix->db != NULL)
        sqlite3_close(ix->db);
    if (mutex_made)
        pthread_mutex_destroy(&ix->mu);
    free(ix);
    return rc;
}

void
mms_index_close(struct mms_index *ix)
{
    if (ix == NULL)
        return;
    for (int i = 0; i < N_STMT; i++)
        sqlite3_finalize(ix->stmt[i]);
    if (sqlite3_close(ix->db) != SQLITE_OK) {
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
    sqlite3_stmt *st = stmt(ix, S_SERIES_ENTER, why, why_len);
    if (st == NULL)
        return MMS_EIO;
    struct binder b = {st, SQLITE_OK};
    BIND_FIELD(&b, 1, r->series_uid);
    BIND_FIELD(&b, 2, r->study_uid);
    bind_int(&b, 3, delta);
    bind_real(&b, 4, r->received);
    BIND_FIELD(&b, 5, r->modality);
    BIND_FIELD(&b, 6, r->series_description);
    if (b.rc != SQLITE_OK)
        return db_fail(ix, "bind series", why, why_len);
    int rc = step(ix, st, "update series", why, why_len);
    sqlite3_reset(st);
    return rc < 0 ? rc : 0;
}

/* Series uid lost an instance at time t: re-opened, or deleted when it is empty. */
static int
series_leave(struct mms_index *ix, const char *uid, double t, char *why, size_t why_len)
{
    sqlite3_stmt *st = stmt(ix, S_SERIES_LEAVE, why, why_len);
    if (st == NULL)
        return MMS_EIO;
    struct binder b = {st, SQLITE_OK};
    bind_cstr(&b, 1, uid);
    bind_real(&b, 2, t);
    if (b.rc != SQLITE_OK)
        return db_fail(ix, "bind series", why, why_len);
    int rc = step(ix, st, "update series", why, why_len);
    sqlite3_reset(st);
    if (rc < 0)
        return rc;
    if ((st = stmt(ix, S_SERIES_DROP_EMPTY, why, why_len)) == NULL)
        return MMS_EIO;
    b = (struct binder){st, SQLITE_OK};
    bind_cstr(&b, 1, uid);
    if (b.rc != SQLITE_OK)
        return db_fail(ix, "bind series", why, why_len);
    rc = step(ix, st, "delete series", why, why_len);
    sqlite3_reset(st);
    return rc < 0 ? rc : 0;
}

static int
write_instance(struct mms_index *ix, enum stmt_id id, const struct mms_instance_row *r, char *why,
               size_t why_len)
{
    sqlite3_stmt *st = stmt(ix, id, why, why_len);
    if (st == NULL)
        return MMS_EIO;
    struct binder b = {st, SQLITE_OK};
    bind_instance(&b, r);
    if (b.rc != SQLITE_OK)
        return db_fail(ix, "bind instance", why, why_len);
    int rc = step(ix, st, stmt_sql[id].what, why, why_len);
    sqlite3_reset(st);
    return rc < 0 ? rc : 0;
}

/* The body of mms_index_put(), inside the transaction. */
static int
put_locked(struct mms_index *ix, const struct mms_instance_row *r, enum mms_put_result *res,
           char *old_path, size_t old_path_len, char *why, size_t why_len)
{
    char old_digest[65], old_series[65];
    sqlite3_stmt *st = stmt(ix, S_INSTANCE_FIND, why, why_len);
    if (st == NULL)
        return MMS_EIO;
    struct binder b = {st, SQLITE_OK};
    BIND_FIELD(&b, 1, r->sop_instance);
    if (b.rc != SQLITE_OK)
        return db_fail(ix, "bind instance", why, why_len);
    int rc = step(ix, st, "find instance", why, why_len);
    if (rc < 0)
        return rc;
    bool found = rc == SQLITE_ROW;
    if (found) {
        COLUMN_FIELD(st, 0, old_digest);
        column_text(st, 1, old_path, old_path_len);
        COLUMN_FIELD(st, 2, old_series);
    }
    sqlite3_reset(st);

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
    sqlite3_stmt *st = stmt(ix, S_SET_STATE, why, why_len);
    if (st == NULL) {
        rc = MMS_EIO;
        goto out;
    }
    struct binder b = {st, SQLITE_OK};
    bind_cstr(&b, 1, series_uid);
    bind_cstr(&b, 2, name);
    bind_cstr(&b, 3, reason != NULL ? reason : "");
    bind_real(&b, 4, now);
    bind_int(&b, 5, state == MMS_SERIES_RUNNING);
    if (b.rc != SQLITE_OK) {
        rc = db_fail(ix, "bind series", why, why_len);
        goto out;
    }
    if ((rc = step(ix, st, "set state", why, why_len)) < 0)
        goto out;
    rc = sqlite3_changes(ix->db) == 0
             ? mms_why(why, why_len, MMS_ENOENT, "series %.64s is not in the index", series_uid)
             : 0;
    sqlite3_reset(st);
out:
    unlock(ix);
    return rc;
}

/* ---------------------------------------------------------------------------- reads */

int
mms_index_series(struct mms_index *ix, int (*fn)(void *ud, const struct mms_series_row *s),
                 void *ud, char *why, size_t why_len)
{
    if (ix == NULL || fn == NULL)
        return mms_why(why, why_len, MMS_EINVAL, "no index or callback");
    int rc = lock(ix, why, why_len);
    if (rc < 0)
        return rc;
    /* one statement, so one read transaction: a consistent list */
    sqlite3_stmt *st = stmt(ix, S_SERIES_ALL, why, why_len);
    if (st == NULL) {
        rc = MMS_EIO;
        goto out;
    }
    while ((rc = step(ix, st, "list series", why, why_len)) == SQLITE_ROW) {
        struct mms_series_row s;
        read_series(st, &s);
        if (fn(ud, &s) != 0)
            break;
    }
    rc = rc < 0 ? rc : 0;
    sqlite3_reset(st);
out:
    unlock(ix);
    return rc;
}

/* Lock ix and bind text as parameter 1 of statement which; *st is ready to step. On
 * failure ix is unlocked again. */
static int
lock_and_bind(struct mms_index *ix, enum stmt_id which, const char *text, sqlite3_stmt **st,
              char *why, size_t why_len)
{
    int rc = lock(ix, why, why_len);
    if (rc < 0)
        return rc;
    if ((*st = stmt(ix, which, why, why_len)) == NULL) {
        unlock(ix);
        return MMS_EIO;
    }
    struct binder b = {*st, SQLITE_OK};
    bind_cstr(&b, 1, text);
    if (b.rc != SQLITE_OK) {
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
    sqlite3_stmt *st;
    int rc = lock_and_bind(ix, S_INSTANCES_OF, series_uid, &st, why, why_len);
    if (rc < 0)
        return rc;
    while ((rc = step(ix, st, "list instances", why, why_len)) == SQLITE_ROW) {
        struct mms_instance_row r;
        read_instance(st, &r);
        if (fn(ud, &r) != 0)
            break;
    }
    rc = rc < 0 ? rc : 0;
    sqlite3_reset(st);
    unlock(ix);
    return rc;
}

int
mms_index_instance(struct mms_index *ix, const char *sop_instance, struct mms_instance_row *out,
                   char *why, size_t why_len)
{
    if (ix == NULL || sop_instance == NULL || out == NULL)
        return mms_why(why, why_len, MMS_EINVAL, "no index, UID or row");
    sqlite3_stmt *st;
    int rc = lock_and_bind(ix, S_INSTANCE_ONE, sop_instance, &st, why, why_len);
    if (rc < 0)
        return rc;
    if ((rc = step(ix, st, "read instance", why, why_len)) == SQLITE_ROW) {
        read_instance(st, out);
        rc = 0;
    } else if (rc == SQLITE_DONE) {
        rc = mms_why(why, why_len, MMS_ENOENT, "instance %.64s is not in the index", sop_instance);
    }
    sqlite3_reset(st);
    unlock(ix);
    return rc;
}

/* The body of mms_index_counts(), inside a read transaction. */
static int
counts_locked(struct mms_index *ix, int64_t *instances, int64_t *counts, char *why, size_t why_len)
{
    sqlite3_stmt *st = stmt(ix, S_COUNT_INSTANCES, why, why_len);
    if (st == NULL)
        return MMS_EIO;
    int rc = step(ix, st, "count instances", why, why_len);
    if (rc < 0)
        return rc;
    *instances = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    if ((st = stmt(ix, S_COUNT_STATES, why, why_len)) == NULL)
        return MMS_EIO;
    while ((rc = step(ix, st, "count series", why, why_len)) == SQLITE_ROW) {
        int state = state_parse((const char *)sqlite3_column_text(st, 0));
        if (state >= 0)
            counts[state] = sqlite3_column_int64(st, 1);
    }
    sqlite3_reset(st);
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

int
mms_index_sends_add(struct mms_index *ix, int64_t job, const char *series_uid,
                    const char *const *destinations, int n, double due, char *why, size_t why_len)
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
    for (int i = 0; i < n && rc == 0; i++) {
        sqlite3_stmt *st = stmt(ix, S_SEND_ADD, why, why_len);
        if (st == NULL) {
            rc = MMS_EIO;
            break;
        }
        struct binder b = {st, SQLITE_OK};
        bind_int(&b, 1, job);
        bind_cstr(&b, 2, destinations[i]);
        bind_cstr(&b, 3, series_uid != NULL ? series_uid : "");
        bind_real(&b, 4, due);
        if (b.rc != SQLITE_OK)
            rc = db_fail(ix, "bind send", why, why_len);
        else if ((rc = step(ix, st, "queue send", why, why_len)) > 0)
            rc = 0;
        sqlite3_reset(st);
    }
    return end_write(ix, rc, why, why_len);
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
    sqlite3_stmt *st = stmt(ix, S_SEND_UPDATE, why, why_len);
    if (st == NULL) {
        rc = MMS_EIO;
        goto out;
    }
    struct binder b = {st, SQLITE_OK};
    bind_int(&b, 1, r->job);
    BIND_FIELD(&b, 2, r->destination);
    bind_cstr(&b, 3, name);
    bind_int(&b, 4, r->attempts);
    bind_real(&b, 5, r->queued);
    bind_real(&b, 6, r->next_attempt);
    bind_real(&b, 7, r->last_attempt);
    bind_real(&b, 8, r->state_since);
    BIND_FIELD(&b, 9, r->reason);
    if (b.rc != SQLITE_OK) {
        rc = db_fail(ix, "bind send", why, why_len);
        goto out;
    }
    if ((rc = step(ix, st, "update send", why, why_len)) < 0)
        goto out;
    rc = sqlite3_changes(ix->db) == 0
             ? mms_why(why, why_len, MMS_ENOENT, "no send of job %lld to %.63s", (long long)r->job,
                       r->destination)
             : 0;
    sqlite3_reset(st);
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
    sqlite3_stmt *st = stmt(ix, S_SENDS, why, why_len);
    if (st == NULL) {
        rc = MMS_EIO;
        goto out;
    }
    struct binder b = {st, SQLITE_OK};
    if (state < 0)
        bind_null(&b, 1);
    else
        bind_cstr(&b, 1, mms_send_state_name(state));
    bind_int(&b, 2, job);
    if (b.rc != SQLITE_OK) {
        rc = db_fail(ix, "bind sends", why, why_len);
        goto out;
    }
    while ((rc = step(ix, st, "list sends", why, why_len)) == SQLITE_ROW) {
        struct mms_send_row r;
        read_send(st, &r);
        if (fn(ud, &r) != 0)
            break;
    }
    rc = rc < 0 ? rc : 0;
    sqlite3_reset(st);
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
    sqlite3_stmt *st = stmt(ix, S_COUNT_SENDS, why, why_len);
    if (st == NULL) {
        rc = MMS_EIO;
        goto out;
    }
    for (int i = 0; i < N_SEND_STATES; i++)
        counts[i] = 0;
    while ((rc = step(ix, st, "count sends", why, why_len)) == SQLITE_ROW) {
        int state = send_state_parse((const char *)sqlite3_column_text(st, 0));
        if (state >= 0)
            counts[state] = sqlite3_column_int64(st, 1);
    }
    rc = rc < 0 ? rc : 0;
    sqlite3_reset(st);
out:
    unlock(ix);
    return rc;
}

/* ---------------------------------------------------------------------------- jobs */

/* The body of mms_index_job_start(), inside the write transaction. */
static int
job_start_locked(struct mms_index *ix, const char *series_uid, double now, int64_t *id,
                 int64_t *run_no, char *why, size_t why_len)
{
    sqlite3_stmt *st = stmt(ix, S_SET_STATE, why, why_len);
    if (st == NULL)
        return MMS_EIO;
    struct binder b = {st, SQLITE_OK};
    bind_cstr(&b, 1, series_uid);
    bind_cstr(&b, 2, mms_series_state_name(MMS_SERIES_RUNNING));
    bind_cstr(&b, 3, "");
    bind_real(&b, 4, now);
    bind_int(&b, 5, 1);
    if (b.rc != SQLITE_OK)
        return db_fail(ix, "bind series", why, why_len);
    int rc = step(ix, st, "set state", why, why_len);
    sqlite3_reset(st);
    if (rc < 0)
        return rc;
    if (sqlite3_changes(ix->db) == 0)
        return mms_why(why, why_len, MMS_ENOENT, "series %.64s is not in the index", series_uid);
    if ((st = stmt(ix, S_SERIES_RUN, why, why_len)) == NULL)
        return MMS_EIO;
    b = (struct binder){st, SQLITE_OK};
    bind_cstr(&b, 1, series_uid);
    if (b.rc != SQLITE_OK)
        return db_fail(ix, "bind series", why, why_len);
    if ((rc = step(ix, st, "read run", why, why_len)) == SQLITE_ROW)
        *run_no = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (rc < 0)
        return rc;
    if ((st = stmt(ix, S_JOB_INSERT, why, why_len)) == NULL)
        return MMS_EIO;
    b = (struct binder){st, SQLITE_OK};
    bind_cstr(&b, 1, series_uid);
    bind_int(&b, 2, *run_no);
    bind_real(&b, 3, now);
    if (b.rc != SQLITE_OK)
        return db_fail(ix, "bind job", why, why_len);
    rc = step(ix, st, "insert job", why, why_len);
    sqlite3_reset(st);
    if (rc < 0)
        return rc;
    *id = sqlite3_last_insert_rowid(ix->db);
    return 0;
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
    rc = job_start_locked(ix, series_uid, now, id, run_no, why, why_len);
    return end_write(ix, rc, why, why_len);
}

/* The body of mms_index_job_finish(), inside the write transaction. */
static int
job_finish_locked(struct mms_index *ix, const struct mms_job_row *j, const char *state_name,
                  const char *series_state, const char *series_reason, double now, char *why,
                  size_t why_len)
{
    sqlite3_stmt *st = stmt(ix, S_JOB_UPDATE, why, why_len);
    if (st == NULL)
        return MMS_EIO;
    struct binder b = {st, SQLITE_OK};
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
    if (b.rc != SQLITE_OK)
        return db_fail(ix, "bind job", why, why_len);
    int rc = step(ix, st, "update job", why, why_len);
    sqlite3_reset(st);
    if (rc < 0)
        return rc;
    if (sqlite3_changes(ix->db) == 0)
        return mms_why(why, why_len, MMS_ENOENT, "job %lld is not in the index", (long long)j->id);
    if ((st = stmt(ix, S_SERIES_FINISH, why, why_len)) == NULL)
        return MMS_EIO;
    b = (struct binder){st, SQLITE_OK};
    bind_cstr(&b, 1, j->series_uid);
    bind_cstr(&b, 2, series_state);
    bind_cstr(&b, 3, series_reason != NULL ? series_reason : "");
    bind_real(&b, 4, now);
    if (b.rc != SQLITE_OK)
        return db_fail(ix, "bind series", why, why_len);
    rc = step(ix, st, "set state", why, why_len);
    sqlite3_reset(st);
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
mms_index_jobs(struct mms_index *ix, int state, int (*fn)(void *ud, const struct mms_job_row *j),
               void *ud, char *why, size_t why_len)
{
    if (ix == NULL || fn == NULL || (state != -1 && mms_job_state_name(state) == NULL))
        return mms_why(why, why_len, MMS_EINVAL, "no index or callback, or an unknown state");
    sqlite3_stmt *st;
    int rc =
        lock_and_bind(ix, S_JOBS, state < 0 ? NULL : mms_job_state_name(state), &st, why, why_len);
    if (rc < 0)
        return rc;
    while ((rc = step(ix, st, "list jobs", why, why_len)) == SQLITE_ROW) {
        struct mms_job_row j;
        read_job(st, &j);
        if (fn(ud, &j) != 0)
            break;
    }
    rc = rc < 0 ? rc : 0;
    sqlite3_reset(st);
    unlock(ix);
    return rc;
}
