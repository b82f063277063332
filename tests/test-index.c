/* The instance and series index (daemon/index.c) on a real database in a temporary folder:
 * put results, series states and counts, re-opening, moves, persistence, read-only handles,
 * schema versions, four threads on two connections, and every SQLite allocation failing in
 * turn. */
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "daemon/index.h"
#include "tests/tap.h"
#include "tests/index-util.h"

#define CT "1.2.840.10008.5.1.4.1.1.2"
#define T0 1.8e9
#define THREADS 4
#define PER_THREAD 200
#define SCHEMA "4" /* the schema version of this code */

static char dir[64], db_path[128];

static void
bail_out(const char *what, const char *why)
{
    printf("Bail out! %s: %s\n", what, why);
    exit(1);
}

/* An instance row: uid in series, digest and path from tag, received at t. */
static struct mms_instance_row
row(const char *uid, const char *series, const char *tag, int64_t number, double t)
{
    struct mms_instance_row r;
    memset(&r, 0, sizeof r);
    snprintf(r.sop_instance, sizeof r.sop_instance, "%s", uid);
    snprintf(r.sop_class, sizeof r.sop_class, CT);
    snprintf(r.study_uid, sizeof r.study_uid, "1.2.9");
    snprintf(r.series_uid, sizeof r.series_uid, "%s", series);
    snprintf(r.modality, sizeof r.modality, "CT");
    snprintf(r.image_type, sizeof r.image_type, "ORIGINAL\\PRIMARY\\AXIAL");
    snprintf(r.series_description, sizeof r.series_description, "ABDOMEN 1.5 B30f");
    snprintf(r.body_part, sizeof r.body_part, "ABDOMEN");
    snprintf(r.frame_of_ref, sizeof r.frame_of_ref, "1.2.9.7");
    snprintf(r.transfer_syntax, sizeof r.transfer_syntax, "1.2.840.10008.1.2.1");
    r.has_geometry = true;
    r.ipp[0] = -250.5;
    r.ipp[1] = -230.25;
    r.ipp[2] = 1.5 * (double)number;
    r.iop[0] = r.iop[4] = 1.0;
    r.rows = r.cols = 512;
    r.frames = 1;
    r.acquisition = 2;
    r.instance_number = number;
    r.images_in_acquisition = -1;
    r.slice_thickness = 1.5;
    memset(r.digest, '0', 64); /* tag, padded to 64 characters */
    memcpy(r.digest, tag, strnlen(tag, 64));
    snprintf(r.path, sizeof r.path, "instances/%.2s/%.2s/%s.dcm", r.digest, r.digest + 2, r.digest);
    r.size = 123456;
    r.received = t;
    snprintf(r.source, sizeof r.source, "SCANNER1@10.0.0.7");
    return r;
}

static int
put(struct mms_index *ix, const struct mms_instance_row *r, enum mms_put_result *res, char *old)
{
    char why[256], tmp[512];
    int rc = mms_index_put(ix, r, res, old != NULL ? old : tmp, 512, why, sizeof why);
    if (rc < 0)
        diag("put %s: %s", r->sop_instance, why);
    return rc;
}

struct listing {
    char text[1024];
};

static int
list_series(void *ud, const struct mms_series_row *s)
{
    struct listing *l = ud;
    size_t n = strlen(l->text);
    snprintf(l->text + n, sizeof l->text - n, "%s%s", n ? " " : "", s->series_uid);
    return 0;
}

static int
list_instances(void *ud, const struct mms_instance_row *r)
{
    struct listing *l = ud;
    size_t n = strlen(l->text);
    snprintf(l->text + n, sizeof l->text - n, "%s%s", n ? " " : "", r->sop_instance);
    return 0;
}

static bool
same_instance(const struct mms_instance_row *a, const struct mms_instance_row *b)
{
    bool same =
        strcmp(a->sop_instance, b->sop_instance) == 0 && strcmp(a->sop_class, b->sop_class) == 0 &&
        strcmp(a->study_uid, b->study_uid) == 0 && strcmp(a->series_uid, b->series_uid) == 0 &&
        strcmp(a->modality, b->modality) == 0 && strcmp(a->image_type, b->image_type) == 0 &&
        strcmp(a->series_description, b->series_description) == 0 &&
        strcmp(a->body_part, b->body_part) == 0 && strcmp(a->frame_of_ref, b->frame_of_ref) == 0 &&
        strcmp(a->transfer_syntax, b->transfer_syntax) == 0 && a->has_geometry == b->has_geometry &&
        a->rows == b->rows && a->cols == b->cols && a->frames == b->frames &&
        a->acquisition == b->acquisition && a->instance_number == b->instance_number &&
        a->images_in_acquisition == b->images_in_acquisition &&
        a->slice_thickness == b->slice_thickness && strcmp(a->digest, b->digest) == 0 &&
        strcmp(a->path, b->path) == 0 && a->size == b->size && a->received == b->received &&
        strcmp(a->source, b->source) == 0;
    for (int k = 0; k < 3; k++)
        same = same && a->ipp[k] == b->ipp[k];
    for (int k = 0; k < 6; k++)
        same = same && a->iop[k] == b->iop[k];
    return same;
}

/* Run sql on the database file directly, as another program would. */
static void
raw_exec(const char *path, const char *sql)
{
    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK || sqlite3_exec(db, sql, NULL, NULL, NULL) != 0)
        bail_out(sql, sqlite3_errmsg(db));
    sqlite3_close(db);
}

/* The first column of the first row of sql, as text ("" when there is none). */
static const char *
raw_text(const char *path, const char *sql)
{
    static char text[64];
    sqlite3 *db;
    sqlite3_stmt *st;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        bail_out(sql, sqlite3_errmsg(db));
    text[0] = '\0';
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0) != NULL)
        snprintf(text, sizeof text, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(db);
    return text;
}

/* ---------------------------------------------------------------------------- allocations */

/* SQLite's allocator, wrapped so that allocation number fail_at fails (0: none fails). Only
 * changed while one thread uses SQLite. */
static sqlite3_mem_methods base_mem;
static int fail_at, n_alloc;

static void *
test_malloc(int n)
{
    if (fail_at > 0 && ++n_alloc == fail_at)
        return NULL;
    return base_mem.xMalloc(n);
}

static void *
test_realloc(void *p, int n)
{
    if (fail_at > 0 && ++n_alloc == fail_at)
        return NULL;
    return base_mem.xRealloc(p, n);
}

static void
install_allocator(void)
{
    sqlite3_mem_methods m;
    if (sqlite3_config(SQLITE_CONFIG_GETMALLOC, &base_mem) != SQLITE_OK)
        bail_out("sqlite3_config", "GETMALLOC");
    m = base_mem;
    m.xMalloc = test_malloc;
    m.xRealloc = test_realloc;
    if (sqlite3_config(SQLITE_CONFIG_MALLOC, &m) != SQLITE_OK)
        bail_out("sqlite3_config", "MALLOC");
}

static void
remove_db(const char *path)
{
    char side[200];
    unlink(path);
    for (int i = 0; i < 2; i++) {
        snprintf(side, sizeof side, "%s-%s", path, i ? "shm" : "wal");
        unlink(side);
    }
}

/* Create a database at path while SQLite's allocation number k fails: an error or success,
 * and afterwards an open without failures finds (or makes) a complete schema. Returns
 * whether allocation k was reached; *bad counts broken promises. */
static bool
fail_open(int k, const char *path, int *bad)
{
    char why[512];
    struct mms_index *ix;
    remove_db(path);
    n_alloc = 0;
    fail_at = k;
    int rc = mms_index_open(path, false, &ix, why, sizeof why);
    if (rc == 0)
        mms_index_close(ix);
    bool reached = n_alloc >= k;
    fail_at = 0;
    if (rc != 0 && rc != MMS_EIO && rc != MMS_ENOMEM)
        ++*bad, diag("allocation %d: open returned %d", k, rc);
    if ((rc = mms_index_open(path, false, &ix, why, sizeof why)) == 0)
        mms_index_close(ix);
    if (rc != 0 || strcmp(raw_text(path, "PRAGMA user_version"), SCHEMA) != 0)
        ++*bad, diag("allocation %d: then open returned %d: %s", k, rc, why);
    return reached;
}

/* Put instance k into series S.OOM of the database at path (new handle, so statements are
 * prepared too) while allocation number k fails: the instance is there exactly when the put
 * said so, the handle still works, and the series counts *stored instances. */
static bool
fail_put(int k, const char *path, int64_t *stored, int *bad)
{
    char why[512], old[512], uid[64], tag[64];
    struct mms_index *ix;
    struct mms_instance_row got;
    enum mms_put_result res;
    if (mms_index_open(path, false, &ix, why, sizeof why) < 0)
        bail_out("open", why);
    snprintf(uid, sizeof uid, "1.2.7.%d", k);
    snprintf(tag, sizeof tag, "%08d", k);
    struct mms_instance_row r = row(uid, "S.OOM", tag, k, T0 + k);
    n_alloc = 0;
    fail_at = k;
    int rc = mms_index_put(ix, &r, &res, old, sizeof old, why, sizeof why);
    bool reached = n_alloc >= k;
    fail_at = 0;
    if (rc != 0 && rc != MMS_EIO)
        ++*bad, diag("allocation %d: put returned %d", k, rc);
    bool found = mms_index_instance(ix, uid, &got, why, sizeof why) == 0;
    if (found != (rc == 0))
        ++*bad, diag("allocation %d: put returned %d, then found %d", k, rc, found);
    rc = mms_index_put(ix, &r, &res, old, sizeof old, why, sizeof why);
    if (rc != 0 || res != (found ? MMS_PUT_DUPLICATE : MMS_PUT_NEW))
        ++*bad, diag("allocation %d: the next put returned %d: %s", k, rc, why);
    if (rc == 0)
        ++*stored;
    if (series(ix, "S.OOM").instances != *stored)
        ++*bad, diag("allocation %d: S.OOM counts %lld, not %lld", k,
                     (long long)series(ix, "S.OOM").instances, (long long)*stored);
    mms_index_close(ix);
    return reached;
}

/* ---------------------------------------------------------------------------- threads */

struct worker {
    struct mms_index *ix;
    int id, failures;
};

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        char uid[64], series_uid[64], tag[64];
        snprintf(uid, sizeof uid, "1.2.5.%d.%d", w->id, i);
        snprintf(series_uid, sizeof series_uid, "1.2.5.%d", i % 3); /* shared by the threads */
        snprintf(tag, sizeof tag, "%02x%02x%056d", w->id, i & 0xff, i);
        struct mms_instance_row r = row(uid, series_uid, tag, i, T0 + 100 + i);
        enum mms_put_result res;
        if (put(w->ix, &r, &res, NULL) < 0 || res != MMS_PUT_NEW)
            w->failures++;
    }
    return NULL;
}

struct reenter {
    struct mms_index *ix;
    int rc;
};

static int
call_back_in(void *ud, const struct mms_series_row *s)
{
    struct reenter *re = ud;
    char why[256];
    re->rc = mms_index_set_state(re->ix, s->series_uid, MMS_SERIES_DONE, NULL, T0, why, sizeof why);
    return 1;
}

struct send_list {
    char text[512];
    int n;
};

static int
list_sends(void *ud, const struct mms_send_row *r)
{
    struct send_list *l = ud;
    size_t len = strlen(l->text);
    snprintf(l->text + len, sizeof l->text - len, "%s%lld:%s:%s", len ? " " : "", (long long)r->job,
             r->destination, mms_send_state_name(r->state));
    l->n++;
    return 0;
}

/* The send rows: queued, updated, listed by state and job, counted, re-queued. */
static void
test_sends(struct mms_index *ix)
{
    char why[512];
    const char *both[] = {"pacs", "folder"}, *one[] = {"pacs"};
    struct send_list l = {"", 0};
    int64_t c[MMS_SEND_DEAD + 1];

    ok(mms_index_sends_add(ix, 7, "S.A", both, 2, T0 + 100, why, sizeof why) == 0 &&
           mms_index_sends_add(ix, 8, "S.C", one, 1, T0 + 90, why, sizeof why) == 0,
       "sends queued for jobs 7 (two destinations) and 8");
    ok(mms_index_sends(ix, MMS_SEND_PENDING, -1, list_sends, &l, why, sizeof why) == 0 &&
           strcmp(l.text, "8:pacs:pending 7:folder:pending 7:pacs:pending") == 0,
       "pending sends by next attempt, then job and destination: %s", l.text);
    struct mms_send_row r = {.job = 7,
                             .state = MMS_SEND_DEAD,
                             .attempts = 3,
                             .queued = T0 + 100,
                             .next_attempt = T0 + 100,
                             .last_attempt = T0 + 130,
                             .state_since = T0 + 130};
    snprintf(r.destination, sizeof r.destination, "pacs");
    snprintf(r.reason, sizeof r.reason, "status 0xa900");
    ok(mms_index_send_update(ix, &r, why, sizeof why) == 0, "a send updated to dead");
    r.state = MMS_SEND_DONE;
    snprintf(r.destination, sizeof r.destination, "folder");
    ok(mms_index_send_update(ix, &r, why, sizeof why) == 0, "another to done");
    snprintf(r.destination, sizeof r.destination, "nowhere");
    is_int(mms_index_send_update(ix, &r, why, sizeof why), MMS_ENOENT,
           "updating a send that does not exist: MMS_ENOENT");
    l = (struct send_list){"", 0};
    ok(mms_index_sends(ix, -1, 7, list_sends, &l, why, sizeof why) == 0 &&
           strcmp(l.text, "7:folder:done 7:pacs:dead") == 0,
       "the sends of job 7: %s", l.text);
    l = (struct send_list){"", 0};
    ok(mms_index_sends(ix, MMS_SEND_DEAD, -1, list_sends, &l, why, sizeof why) == 0 &&
           strcmp(l.text, "7:pacs:dead") == 0,
       "dead sends: %s", l.text);
    ok(mms_index_send_counts(ix, c, why, sizeof why) == 0 && c[MMS_SEND_PENDING] == 1 &&
           c[MMS_SEND_DONE] == 1 && c[MMS_SEND_DEAD] == 1,
       "send counts: pending 1, done 1, dead 1");
    ok(mms_index_sends_add(ix, 7, "S.A", one, 1, T0 + 200, why, sizeof why) == 0 &&
           mms_index_send_counts(ix, c, why, sizeof why) == 0 && c[MMS_SEND_PENDING] == 2 &&
           c[MMS_SEND_DEAD] == 0,
       "queuing an existing send again makes it pending");
    const char *bad[] = {""};
    is_int(mms_index_sends_add(ix, 9, "S.A", bad, 1, T0, why, sizeof why), MMS_EINVAL,
           "an empty destination name: MMS_EINVAL");
    is_int(mms_index_sends(ix, 17, -1, list_sends, &l, why, sizeof why), MMS_EINVAL,
           "an unknown state: MMS_EINVAL");
}

static int
list_jobs(void *ud, const struct mms_job_row *j)
{
    struct send_list *l = ud;
    size_t len = strlen(l->text);
    snprintf(l->text + len, sizeof l->text - len, "%s%lld:%s:%lld:%s", len ? " " : "",
             (long long)j->id, j->series_uid, (long long)j->run, mms_job_state_name(j->state));
    l->n++;
    return 0;
}

/* Jobs: start (the series running, its run counted), finish (job and series in one
 * transaction; a series re-opened meanwhile stays receiving), listing. */
static void
test_jobs(struct mms_index *ix)
{
    char why[512];
    int64_t id1, id2, run1, run2;
    int64_t before = series(ix, "S.C").run;
    ok(mms_index_job_start(ix, "S.C", T0 + 300, &id1, &run1, why, sizeof why) == 0 &&
           run1 == before + 1 && series(ix, "S.C").state == MMS_SERIES_RUNNING,
       "a job starts: the series is running, run %lld", (long long)run1);
    struct mms_job_row j = {.id = id1,
                            .run = run1,
                            .state = MMS_JOB_FAILED,
                            .finished = T0 + 301,
                            .network_s = 1.5,
                            .segments = 0};
    snprintf(j.series_uid, sizeof j.series_uid, "S.C");
    snprintf(j.stage, sizeof j.stage, "decode");
    snprintf(j.reason, sizeof j.reason, "no slices");
    ok(mms_index_job_finish(ix, &j, MMS_SERIES_FAILED, "decode: no slices", T0 + 301, why,
                            sizeof why) == 0 &&
           series(ix, "S.C").state == MMS_SERIES_FAILED &&
           strcmp(series(ix, "S.C").reason, "decode: no slices") == 0,
       "a failed job fails its series with the stage and reason");
    ok(mms_index_job_start(ix, "S.C", T0 + 400, &id2, &run2, why, sizeof why) == 0 && id2 > id1 &&
           run2 == run1 + 1,
       "the next job has a new number and the next run");
    struct mms_instance_row late = row("1.2.3.77", "S.C", "late", 9, T0 + 401);
    enum mms_put_result res;
    char old[512];
    put(ix, &late, &res, old);
    j.id = id2;
    j.state = MMS_JOB_DONE;
    ok(mms_index_job_finish(ix, &j, MMS_SERIES_DONE, NULL, T0 + 402, why, sizeof why) == 0 &&
           series(ix, "S.C").state == MMS_SERIES_RECEIVING,
       "a series re-opened during its job stays receiving when the job ends");
    struct send_list l = {"", 0};
    ok(mms_index_jobs(ix, -1, list_jobs, &l, why, sizeof why) == 0 && l.n == 2, "two jobs: %s",
       l.text);
    l = (struct send_list){"", 0};
    ok(mms_index_jobs(ix, MMS_JOB_RUNNING, list_jobs, &l, why, sizeof why) == 0 && l.n == 0,
       "none running");
    j.id = 999;
    is_int(mms_index_job_finish(ix, &j, MMS_SERIES_DONE, NULL, T0, why, sizeof why), MMS_ENOENT,
           "finishing an unknown job: MMS_ENOENT");
    is_int(mms_index_job_start(ix, "S.NONE", T0, &id1, &run1, why, sizeof why), MMS_ENOENT,
           "a job for an unknown series: MMS_ENOENT");
}

int
main(void)
{
    plan(71, 60);
    mms_log_set_level(MMS_LOG_ERR);
    install_allocator();
    /* synchronous=FULL makes every commit an fdatasync: on tmpfs when there is one, since
     * the allocation-failure loops below commit thousands of times */
    const char *tmp = getenv("TMPDIR");
    if (tmp == NULL || *tmp == '\0')
        tmp = access("/dev/shm", W_OK | X_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(dir, sizeof dir, "%s/mmsegd-test-index-XXXXXX", tmp);
    if (mkdtemp(dir) == NULL)
        bail_out("mkdtemp", dir);
    snprintf(db_path, sizeof db_path, "%s/state.db", dir);

    struct mms_index *ix, *ro;
    enum mms_put_result res;
    char why[512], old[512];
    int rc;

    /* ---- names */
    ok(strcmp(mms_series_state_name(MMS_SERIES_RECEIVING), "receiving") == 0 &&
           strcmp(mms_series_state_name(MMS_SERIES_SKIPPED), "skipped") == 0 &&
           mms_series_state_name(-1) == NULL && mms_series_state_name(7) == NULL,
       "state names, NULL out of range");

    /* ---- read-only open of a missing database */
    rc = mms_index_open(db_path, true, &ro, why, sizeof why);
    is_int(rc, MMS_ENOENT, "read-only open of a missing database: MMS_ENOENT");

    /* ---- create */
    rc = mms_index_open(db_path, false, &ix, why, sizeof why);
    if (rc < 0)
        bail_out("open", why);
    ok(rc == 0, "a new database is created");
    is_str(raw_text(db_path, "PRAGMA user_version"), SCHEMA, "schema version " SCHEMA);
    is_str(raw_text(db_path, "PRAGMA journal_mode"), "wal", "WAL mode");

    /* ---- put */
    struct mms_instance_row a1 = row("1.2.3.1", "S.A", "a1", 2, T0);
    struct mms_instance_row a2 = row("1.2.3.2", "S.A", "a2", 1, T0 + 1);
    snprintf(old, sizeof old, "junk");
    ok(put(ix, &a1, &res, old) == 0 && res == MMS_PUT_NEW && old[0] == '\0',
       "a new instance: NEW, no old path");
    ok(put(ix, &a2, &res, old) == 0 && res == MMS_PUT_NEW, "a second instance: NEW");
    ok(put(ix, &a1, &res, old) == 0 && res == MMS_PUT_DUPLICATE && old[0] == '\0',
       "the same instance again: DUPLICATE");

    struct mms_series_row s = series(ix, "S.A");
    ok(s.state == MMS_SERIES_RECEIVING && s.instances == 2 && s.first_received == T0 &&
           s.last_received == T0 + 1 && s.state_since == T0 && s.run == 0 &&
           strcmp(s.study_uid, "1.2.9") == 0 && strcmp(s.modality, "CT") == 0 &&
           strcmp(s.series_description, "ABDOMEN 1.5 B30f") == 0 && s.reason[0] == '\0',
       "series: receiving, 2 instances, first and last received, study, modality, description");

    struct mms_instance_row got;
    ok(mms_index_instance(ix, "1.2.3.1", &got, why, sizeof why) == 0 && same_instance(&got, &a1),
       "every field of the instance row reads back");
    is_int(mms_index_instance(ix, "1.2.3.404", &got, why, sizeof why), MMS_ENOENT,
           "an unknown instance: MMS_ENOENT");

    struct mms_instance_row a1b = row("1.2.3.1", "S.A", "a1b", 2, T0 + 2);
    a1b.has_geometry = false;
    memset(a1b.ipp, 0, sizeof a1b.ipp);
    memset(a1b.iop, 0, sizeof a1b.iop);
    snprintf(a1b.series_description, sizeof a1b.series_description, "it's \"x\"; DROP TABLE x;--");
    ok(put(ix, &a1b, &res, old) == 0 && res == MMS_PUT_REPLACED && strcmp(old, a1.path) == 0,
       "the same UID with other content: REPLACED, old path returned");
    ok(mms_index_instance(ix, "1.2.3.1", &got, why, sizeof why) == 0 && same_instance(&got, &a1b),
       "the row now names the new file (no geometry, quotes kept as text)");
    s = series(ix, "S.A");
    ok(s.instances == 2 && s.last_received == T0 + 2 &&
           strcmp(s.series_description, a1b.series_description) == 0,
       "a replacement keeps the count; description from the latest instance");

    /* ---- persistence */
    mms_index_close(ix);
    rc = mms_index_open(db_path, false, &ix, why, sizeof why);
    if (rc < 0)
        bail_out("reopen", why);
    int64_t n, counts[MMS_SERIES_SKIPPED + 1];
    ok(mms_index_counts(ix, &n, counts, why, sizeof why) == 0 && n == 2 &&
           counts[MMS_SERIES_RECEIVING] == 1 && series(ix, "S.A").instances == 2,
       "after close and open the rows are there");

    /* ---- states */
    ok(mms_index_set_state(ix, "S.A", MMS_SERIES_RUNNING, NULL, T0 + 10, why, sizeof why) == 0,
       "set_state running");
    s = series(ix, "S.A");
    ok(s.state == MMS_SERIES_RUNNING && s.run == 1 && s.state_since == T0 + 10,
       "running: run 1, state_since now");
    ok(mms_index_set_state(ix, "S.A", MMS_SERIES_DONE, NULL, T0 + 11, why, sizeof why) == 0 &&
           series(ix, "S.A").run == 1,
       "done: run unchanged");
    is_int(mms_index_set_state(ix, "S.none", MMS_SERIES_DONE, NULL, T0, why, sizeof why),
           MMS_ENOENT, "set_state of an unknown series: MMS_ENOENT");
    is_int(mms_index_set_state(ix, "S.A", 42, NULL, T0, why, sizeof why), MMS_EINVAL,
           "set_state to an unknown state: MMS_EINVAL");

    /* a late instance re-opens a done series */
    struct mms_instance_row a3 = row("1.2.3.3", "S.A", "a3", 3, T0 + 20);
    ok(put(ix, &a3, &res, old) == 0 && res == MMS_PUT_NEW, "a late instance: NEW");
    s = series(ix, "S.A");
    ok(s.state == MMS_SERIES_RECEIVING && s.instances == 3 && s.state_since == T0 + 20 &&
           s.last_received == T0 + 20 && s.first_received == T0 && s.run == 1,
       "the done series is receiving again (state_since, last_received; run kept)");
    ok(mms_index_set_state(ix, "S.A", MMS_SERIES_RUNNING, NULL, T0 + 30, why, sizeof why) == 0 &&
           series(ix, "S.A").run == 2,
       "its second job: run 2");

    /* a replacement re-opens a skipped series and clears the reason */
    ok(mms_index_set_state(ix, "S.A", MMS_SERIES_SKIPPED, "5 slices, fewer than min_slices 10",
                           T0 + 31, why, sizeof why) == 0 &&
           strcmp(series(ix, "S.A").reason, "5 slices, fewer than min_slices 10") == 0,
       "skipped with its reason");
    struct mms_instance_row a3b = row("1.2.3.3", "S.A", "a3b", 3, T0 + 40);
    ok(put(ix, &a3b, &res, old) == 0 && res == MMS_PUT_REPLACED, "a replacement: REPLACED");
    s = series(ix, "S.A");
    ok(s.state == MMS_SERIES_RECEIVING && s.reason[0] == '\0' && s.instances == 3,
       "the skipped series is receiving again, reason cleared");
    ok(mms_index_set_state(ix, "S.A", MMS_SERIES_DONE, NULL, T0 + 41, why, sizeof why) == 0 &&
           put(ix, &a3b, &res, old) == 0 && res == MMS_PUT_DUPLICATE &&
           series(ix, "S.A").state == MMS_SERIES_DONE,
       "a duplicate leaves a done series done");

    /* ---- ordering */
    struct mms_instance_row a0 = row("1.2.3.0", "S.A", "a0", -1, T0 + 42);
    put(ix, &a0, &res, old);
    struct mms_instance_row a9 = row("1.2.3.9", "S.A", "a9", 1, T0 + 43);
    put(ix, &a9, &res, old);
    struct listing l = {""};
    ok(mms_index_instances(ix, "S.A", list_instances, &l, why, sizeof why) == 0 &&
           strcmp(l.text, "1.2.3.0 1.2.3.2 1.2.3.9 1.2.3.1 1.2.3.3") == 0,
       "instances by instance number, then UID");
    if (strcmp(l.text, "1.2.3.0 1.2.3.2 1.2.3.9 1.2.3.1 1.2.3.3") != 0)
        diag("got %s", l.text);
    struct mms_instance_row b1 = row("1.2.4.1", "S.B", "b1", 1, T0 - 5);
    struct mms_instance_row c1 = row("1.2.4.2", "S.C", "c1", 1, T0 + 50);
    put(ix, &c1, &res, old);
    put(ix, &b1, &res, old);
    l.text[0] = '\0';
    ok(mms_index_series(ix, list_series, &l, why, sizeof why) == 0 &&
           strcmp(l.text, "S.B S.A S.C") == 0,
       "series by first received");

    /* ---- moves */
    struct mms_instance_row m = row("1.2.3.9", "S.C", "a9moved", 1, T0 + 60);
    ok(put(ix, &m, &res, old) == 0 && res == MMS_PUT_REPLACED && strcmp(old, a9.path) == 0,
       "an instance moved to another series: REPLACED");
    ok(series(ix, "S.A").instances == 4 && series(ix, "S.A").state == MMS_SERIES_RECEIVING &&
           series(ix, "S.C").instances == 2,
       "the old series has one fewer and is receiving, the new one has one more");
    struct mms_instance_row mb = row("1.2.4.1", "S.C", "b1moved", 1, T0 + 61);
    ok(put(ix, &mb, &res, old) == 0 && res == MMS_PUT_REPLACED && series(ix, "S.B").state == -1 &&
           series(ix, "S.C").instances == 3,
       "a series whose last instance moved away is gone");
    l.text[0] = '\0';
    ok(mms_index_instances(ix, "S.C", list_instances, &l, why, sizeof why) == 0 &&
           strcmp(l.text, "1.2.3.9 1.2.4.1 1.2.4.2") == 0,
       "the moved instances are listed in their new series");

    ok(mms_index_counts(ix, &n, counts, why, sizeof why) == 0 && n == 7 &&
           counts[MMS_SERIES_RECEIVING] == 2 && counts[MMS_SERIES_DONE] == 0,
       "counts: 7 instances, 2 series receiving");

    /* ---- arguments */
    struct mms_instance_row bad = row("", "S.A", "bad", 1, T0);
    is_int(mms_index_put(ix, &bad, &res, old, sizeof old, why, sizeof why), MMS_EINVAL,
           "a row without SOP Instance UID: MMS_EINVAL");
    is_int(mms_index_put(ix, &a1, &res, old, 16, why, sizeof why), MMS_EINVAL,
           "an old_path buffer shorter than a path: MMS_EINVAL");
    struct reenter re = {ix, 0};
    ok(mms_index_series(ix, call_back_in, &re, why, sizeof why) == 0 && re.rc == MMS_EINVAL,
       "a callback that calls the index gets MMS_EINVAL, not a deadlock");

    /* ---- read-only beside the writer */
    rc = mms_index_open(db_path, true, &ro, why, sizeof why);
    ok(rc == 0, "read-only open while a writable handle is open");
    if (rc < 0)
        bail_out("read-only open", why);
    ok(mms_index_counts(ro, &n, counts, why, sizeof why) == 0 && n == 7,
       "the read-only handle sees the committed rows");
    struct mms_instance_row d1 = row("1.2.6.1", "S.D", "d1", 1, T0 + 70);
    put(ix, &d1, &res, old);
    ok(series(ro, "S.D").instances == 1 && mms_index_counts(ro, &n, counts, why, sizeof why) == 0 &&
           n == 8,
       "and a row committed after it was opened");
    is_int(mms_index_put(ro, &d1, &res, old, sizeof old, why, sizeof why), MMS_EINVAL,
           "a read-only handle does not write");
    mms_index_close(ro);

    /* ---- sends, jobs */
    test_sends(ix);
    test_jobs(ix);

    /* ---- concurrency */
    /* two threads share ix, two a second writable connection to the same file */
    struct mms_index *ix2;
    if (mms_index_open(db_path, false, &ix2, why, sizeof why) < 0)
        bail_out("second writable open", why);
    pthread_t th[THREADS];
    struct worker w[THREADS];
    int started = 0, failures = 0;
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){i % 2 ? ix2 : ix, i, 0};
        if (pthread_create(&th[i], NULL, worker_main, &w[i]) == 0)
            started++;
    }
    for (int i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
        failures += w[i].failures;
    }
    mms_index_close(ix2);
    ok(started == THREADS && failures == 0,
       "%d threads on two connections put %d instances each without error", THREADS, PER_THREAD);
    int64_t shared = series(ix, "1.2.5.0").instances + series(ix, "1.2.5.1").instances +
                     series(ix, "1.2.5.2").instances;
    /* 8 instances before, the late one of test_jobs(), and the threads' */
    ok(mms_index_counts(ix, &n, counts, why, sizeof why) == 0 && n == 9 + THREADS * PER_THREAD &&
           shared == THREADS * PER_THREAD,
       "%d rows, and the shared series count them all", THREADS * PER_THREAD);
    mms_index_close(ix);

    /* ---- reopen after the threads, read-only without the writer */
    rc = mms_index_open(db_path, true, &ro, why, sizeof why);
    ok(rc == 0 && mms_index_counts(ro, &n, counts, why, sizeof why) == 0 &&
           n == 9 + THREADS * PER_THREAD,
       "read-only open without a writer sees everything");
    if (rc == 0)
        mms_index_close(ro);

    /* ---- schema versions */
    raw_exec(db_path, "PRAGMA user_version = 99");
    rc = mms_index_open(db_path, false, &ix, why, sizeof why);
    ok(rc == MMS_EIO && strstr(why, "newer") != NULL, "a newer schema is refused");
    diag("%s", why);
    rc = mms_index_open(db_path, true, &ro, why, sizeof why);
    ok(rc == MMS_EIO && strstr(why, "newer") != NULL, "also read-only");
    raw_exec(db_path, "PRAGMA user_version = " SCHEMA);

    char other[160];
    snprintf(other, sizeof other, "%s/other.db", dir);
    raw_exec(other, "CREATE TABLE t (x); PRAGMA user_version = 3");
    rc = mms_index_open(other, false, &ix, why, sizeof why);
    ok(rc == MMS_EIO && strstr(why, "not an mmsegd state database") != NULL,
       "another program's database is refused");
    raw_exec(other, "PRAGMA user_version = 0");
    rc = mms_index_open(other, true, &ro, why, sizeof why);
    ok(rc == MMS_EIO && strstr(why, "older") != NULL,
       "read-only open of an unmigrated database is refused");

    /* an empty file (version 0) is migrated */
    snprintf(other, sizeof other, "%s/empty.db", dir);
    FILE *f = fopen(other, "w");
    if (f != NULL)
        fclose(f);
    rc = mms_index_open(other, false, &ix, why, sizeof why);
    ok(rc == 0 && strcmp(raw_text(other, "PRAGMA user_version"), SCHEMA) == 0,
       "an empty file is migrated to " SCHEMA);
    if (rc == 0)
        mms_index_close(ix);

    /* a version 1 database (instances and series, no sends) keeps its rows */
    snprintf(other, sizeof other, "%s/v1.db", dir);
    raw_exec(other, "CREATE TABLE series (series_uid TEXT PRIMARY KEY NOT NULL, study_uid TEXT "
                    "NOT NULL DEFAULT '', state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', "
                    "instances INTEGER NOT NULL DEFAULT 0, first_received REAL NOT NULL, "
                    "last_received REAL NOT NULL, state_since REAL NOT NULL, run INTEGER NOT "
                    "NULL DEFAULT 0, modality TEXT NOT NULL DEFAULT '', series_description TEXT "
                    "NOT NULL DEFAULT '');"
                    "INSERT INTO series (series_uid, state, first_received, last_received, "
                    "state_since) VALUES ('S.V1', 'done', 1, 2, 3);"
                    "PRAGMA application_id = 1835889511; PRAGMA user_version = 1");
    rc = mms_index_open(other, false, &ix, why, sizeof why);
    ok(rc == 0 && strcmp(raw_text(other, "PRAGMA user_version"), SCHEMA) == 0 &&
           series(ix, "S.V1").state == MMS_SERIES_DONE &&
           strcmp(raw_text(other, "SELECT count(*) FROM sends"), "0") == 0,
       "a version 1 database is migrated to " SCHEMA " with its series kept (%s)",
       rc == 0 ? "ok" : why);
    if (rc == 0)
        mms_index_close(ix);

    /* ---- every SQLite allocation of open, then of put, failing in turn */
    snprintf(other, sizeof other, "%s/oom.db", dir);
    int k = 1, broken = 0;
    while (k < 5000 && fail_open(k, other, &broken))
        k++;
    ok(k < 5000 && broken == 0,
       "open: each of %d SQLite allocations failing gives an error, "
       "and the next open completes the schema",
       k - 1);
    int64_t stored = 0;
    broken = 0;
    for (k = 1; k < 5000 && fail_put(k, other, &stored, &broken);)
        k++;
    ok(k < 5000 && broken == 0,
       "put: each of %d SQLite allocations failing gives MMS_EIO or "
       "success, all or nothing, and the handle still works",
       k - 1);

    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        diag("could not remove %s", dir);
    return done_testing();
}
