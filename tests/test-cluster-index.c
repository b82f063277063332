/* The cluster functions of the index (daemon/index.h, docs/cluster.md) on both engines: on
 * SQLite (a file in a temporary folder) always, and on PostgreSQL when MMS_TEST_PG holds the
 * connection string of an empty database (tests/test-cluster-index.sh starts a throw-away
 * server for it). Which strings name PostgreSQL; two handles migrating a fresh database at
 * once; the completeness decision (settle) taken once; job claims, oldest queued first, by
 * four threads on four handles, each series once; a job ended twice; send claims and their
 * leases; node heartbeats. On PostgreSQL also the recovery after the server restarted under
 * an open handle (MMS_TEST_PG_RESTART: a shell command that restarts it). The times are made
 * up (T0 on), passed as `now`: leases run out when the test says so. */
#include <math.h>
#include <pthread.h>
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
#define K 40        /* series claimed by the threads */
#define CLAIMERS 4  /* threads, each with its own handle */
#define LEASE 30.0  /* of the job claims */
#define MAX_ROWS 64 /* jobs, sends or nodes listed at once */

/* TAP lines of suite(), per engine, and of the PostgreSQL restart part */
#define SUITE_TESTS 38
#define RESTART_TESTS 4
#define IS_PG_TESTS 6

static const char *eng; /* "sqlite" or "postgresql", the prefix of the descriptions */

static void
bail_out(const char *what, const char *why)
{
    printf("Bail out! %s: %s: %s\n", eng != NULL ? eng : "", what, why);
    exit(1);
}

/* The name of an error code, "?" for one outside the list. */
static const char *
ename(int rc)
{
    const char *name = mms_err_name(rc);
    return name != NULL ? name : "?";
}

static bool
near(double a, double b)
{
    return fabs(a - b) < 1e-3; /* a time stored as microseconds reads back within this */
}

/* An instance row: uid in series, received at t, a digest and path of its own. */
static struct mms_instance_row
row(const char *uid, const char *series_uid, double t)
{
    static int n;
    struct mms_instance_row r;
    memset(&r, 0, sizeof r);
    snprintf(r.sop_instance, sizeof r.sop_instance, "%s", uid);
    snprintf(r.sop_class, sizeof r.sop_class, CT);
    snprintf(r.study_uid, sizeof r.study_uid, "1.2.9");
    snprintf(r.series_uid, sizeof r.series_uid, "%s", series_uid);
    snprintf(r.modality, sizeof r.modality, "CT");
    snprintf(r.series_description, sizeof r.series_description, "cluster test");
    snprintf(r.transfer_syntax, sizeof r.transfer_syntax, "1.2.840.10008.1.2.1");
    r.rows = r.cols = 512;
    r.frames = 1;
    r.acquisition = r.instance_number = r.images_in_acquisition = -1;
    snprintf(r.digest, sizeof r.digest, "%064d", ++n);
    snprintf(r.path, sizeof r.path, "instances/%.2s/%.2s/%s.dcm", r.digest, r.digest + 2, r.digest);
    r.size = 1000;
    r.received = t;
    snprintf(r.source, sizeof r.source, "CLUSTER@10.0.0.1");
    return r;
}

/* Put one instance uid into series_uid, received at t: 0 or the error (with a diag). */
static int
put(struct mms_index *ix, const char *uid, const char *series_uid, double t)
{
    char why[512], old[512];
    enum mms_put_result res;
    struct mms_instance_row r = row(uid, series_uid, t);
    int rc = mms_index_put(ix, &r, &res, old, sizeof old, why, sizeof why);
    if (rc < 0)
        diag("put %s: %s: %s", uid, ename(rc), why);
    return rc;
}

/* Set a series' state or bail out. */
static void
set_state(struct mms_index *ix, const char *series_uid, int state, double now)
{
    char why[512];
    if (mms_index_set_state(ix, series_uid, state, NULL, now, why, sizeof why) < 0)
        bail_out("set_state", why);
}

/* ---------------------------------------------------------------------------- listings */

struct jobs {
    struct mms_job_row j[MAX_ROWS];
    int n;
};

static int
collect_job(void *ud, const struct mms_job_row *j)
{
    struct jobs *l = ud;
    if (l->n < MAX_ROWS)
        l->j[l->n++] = *j;
    return 0;
}

/* The job row of id; id -1 when there is none. */
static struct mms_job_row
job(struct mms_index *ix, int64_t id)
{
    static struct jobs l;
    char why[512];
    l.n = 0;
    if (mms_index_jobs(ix, -1, collect_job, &l, why, sizeof why) < 0)
        diag("jobs: %s", why);
    for (int i = 0; i < l.n; i++)
        if (l.j[i].id == id)
            return l.j[i];
    return (struct mms_job_row){.id = -1};
}

struct sends {
    struct mms_send_row s[MAX_ROWS];
    int n;
};

static int
collect_send(void *ud, const struct mms_send_row *r)
{
    struct sends *l = ud;
    if (l->n < MAX_ROWS)
        l->s[l->n++] = *r;
    return 0;
}

/* The send row (job, destination), read back with mms_index_sends; job -1 when there is
 * none. */
static struct mms_send_row
send_row(struct mms_index *ix, int64_t job_id, const char *destination)
{
    static struct sends l;
    char why[512];
    l.n = 0;
    if (mms_index_sends(ix, -1, job_id, collect_send, &l, why, sizeof why) < 0)
        diag("sends: %s", why);
    for (int i = 0; i < l.n; i++)
        if (strcmp(l.s[i].destination, destination) == 0)
            return l.s[i];
    return (struct mms_send_row){.job = -1};
}

struct nodes {
    struct mms_node_row n[MAX_ROWS];
    int count;
    char names[256];
};

static int
collect_node(void *ud, const struct mms_node_row *n)
{
    struct nodes *l = ud;
    size_t len = strlen(l->names);
    if (l->count < MAX_ROWS)
        l->n[l->count++] = *n;
    snprintf(l->names + len, sizeof l->names - len, "%s%s", len ? " " : "", n->name);
    return 0;
}

/* The node rows, by name in l->names; *found receives the row of name (name "" when none). */
static void
nodes(struct mms_index *ix, struct nodes *l, const char *name, struct mms_node_row *found)
{
    char why[512];
    memset(l, 0, sizeof *l);
    memset(found, 0, sizeof *found);
    if (mms_index_nodes(ix, collect_node, l, why, sizeof why) < 0)
        diag("nodes: %s", why);
    for (int i = 0; i < l->count; i++)
        if (strcmp(l->n[i].name, name) == 0)
            *found = l->n[i];
}

/* ---------------------------------------------------------------------------- threads */

/* Two handles connecting at the same moment to a fresh database: both migrate it. */
struct connector {
    const char *where;
    pthread_barrier_t *start;
    struct mms_index *ix;
    int rc;
    char why[512];
};

static void *
connect_main(void *arg)
{
    struct connector *c = arg;
    pthread_barrier_wait(c->start);
    c->rc = mms_index_connect(c->where, false, &c->ix, c->why, sizeof c->why);
    return NULL;
}

/* A node claiming jobs on its own handle until nothing is queued. */
struct claimer {
    const char *where;
    pthread_barrier_t *start;
    char node[16];
    int64_t ids[K + 1];
    char uids[K + 1][65];
    int n, errors;
    char why[512];
};

static void *
claim_main(void *arg)
{
    struct claimer *c = arg;
    struct mms_index *ix = NULL;
    int rc = mms_index_connect(c->where, false, &ix, c->why, sizeof c->why);
    pthread_barrier_wait(c->start);
    if (rc < 0) {
        c->errors++;
        return NULL;
    }
    for (;;) {
        char uid[65];
        int64_t id, run;
        rc = mms_index_job_claim(ix, c->node, T0 + 300, LEASE, uid, &id, &run, c->why,
                                 sizeof c->why);
        if (rc == MMS_ENOENT)
            break;
        if (rc < 0 || c->n > K) { /* an error, or more claims than series */
            c->errors++;
            break;
        }
        c->ids[c->n] = id;
        snprintf(c->uids[c->n], sizeof c->uids[c->n], "%s", uid);
        c->n++;
        usleep(1000); /* a node's work between claims: the threads' claims interleave */
    }
    mms_index_close(ix);
    return NULL;
}

/* ---------------------------------------------------------------------------- the suite */

/* Restart the PostgreSQL server under the open handle ix (MMS_TEST_PG_RESTART): the handle
 * reconnects, the rows are still there, a write commits. RESTART_TESTS lines. */
static void
restart_part(struct mms_index *ix, const char *where)
{
    const char *cmd = getenv("MMS_TEST_PG_RESTART");
    char why[512];
    int64_t n0, c0[MMS_SERIES_SKIPPED + 1], n1, c1[MMS_SERIES_SKIPPED + 1];
    if (cmd == NULL || *cmd == '\0') {
        for (int i = 0; i < RESTART_TESTS; i++)
            skip("postgresql restart: MMS_TEST_PG_RESTART is not set "
                 "(tests/test-cluster-index.sh sets it)");
        return;
    }
    if (mms_index_counts(ix, &n0, c0, why, sizeof why) < 0)
        bail_out("counts before the restart", why);

    int rc = system(cmd);
    ok(rc == 0, "%s: the restart command (MMS_TEST_PG_RESTART) exits 0", eng);
    if (rc != 0)
        diag("system(\"%s\") returned %d", cmd, rc);

    /* the first call finds the connection broken (MMS_EIO), a later one makes it again */
    int tries = 0, other = 0, first = 1;
    for (tries = 1; tries <= 10; tries++) {
        rc = mms_index_counts(ix, &n1, c1, why, sizeof why);
        if (tries == 1)
            first = rc;
        if (rc == 0)
            break;
        if (rc != MMS_EIO)
            other++;
        diag("call %d after the restart: %s: %s", tries, ename(rc), why);
        usleep(500 * 1000);
    }
    ok(rc == 0 && other == 0,
       "%s: after the restart the handle works again within 10 calls (%d; the first returned "
       "%s), the ones before fail with MMS_EIO",
       eng, tries, first == 0 ? "0" : ename(first));

    bool same = rc == 0 && n1 == n0;
    for (int s = 0; s <= MMS_SERIES_SKIPPED; s++)
        same = same && c1[s] == c0[s];
    struct nodes l;
    struct mms_node_row a;
    nodes(ix, &l, "nodeA", &a);
    ok(same && strcmp(a.name, "nodeA") == 0 && a.pid == 4242,
       "%s: the rows are still there (%lld instances, series per state, node A)", eng,
       (long long)n0);

    struct mms_index *fresh;
    rc = put(ix, "1.2.8.1", "S.AFTER", T0 + 900);
    bool seen = false;
    if (mms_index_connect(where, true, &fresh, why, sizeof why) == 0) {
        seen = series(fresh, "S.AFTER").instances == 1;
        mms_index_close(fresh);
    } else {
        diag("read-only connect: %s", why);
    }
    ok(rc == 0 && seen, "%s: a put after the reconnection commits (a new handle sees it)", eng);
}

/* The checks on one engine: where is a SQLite path or a PostgreSQL connection string of a
 * fresh database. SUITE_TESTS lines, then on PostgreSQL restart_part(). */
static void
suite(const char *where, bool pg)
{
    char why[512];
    int rc;
    int first = tap_n;
    eng = pg ? "postgresql" : "sqlite";

    /* ---- connect: two handles at once on the fresh database, a third afterwards */
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 2);
    struct connector con[2] = {{.where = where, .start = &start},
                               {.where = where, .start = &start}};
    pthread_t th[CLAIMERS];
    for (int i = 0; i < 2; i++)
        if (pthread_create(&th[i], NULL, connect_main, &con[i]) != 0)
            bail_out("pthread_create", "connect");
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);
    ok(con[0].rc == 0 && con[1].rc == 0,
       "%s: two handles connect at the same moment to a fresh database (both migrate it)", eng);
    for (int i = 0; i < 2; i++)
        if (con[i].rc < 0)
            diag("handle %d: %s: %s", i + 1, ename(con[i].rc), con[i].why);
    struct mms_index *ix = con[0].ix, *ix2 = con[1].ix;
    if (con[0].rc < 0 && mms_index_connect(where, false, &ix, why, sizeof why) < 0)
        bail_out("connect", why);
    if (con[1].rc < 0 && mms_index_connect(where, false, &ix2, why, sizeof why) < 0)
        bail_out("second connect", why);

    int64_t n = -1, n2 = -1, counts[MMS_SERIES_SKIPPED + 1];
    if (mms_index_counts(ix, &n, counts, why, sizeof why) < 0 ||
        mms_index_counts(ix2, &n2, counts, why, sizeof why) < 0)
        bail_out("counts", why);
    if (n != 0)
        bail_out("the database is not empty", "give the test a fresh one "
                                              "(tests/test-cluster-index.sh makes one per run)");
    ok(n == 0 && n2 == 0, "%s: the migrated database is empty and answers on both handles", eng);

    struct mms_index *ix3;
    rc = mms_index_connect(where, false, &ix3, why, sizeof why);
    ok(rc == 0, "%s: a third handle connects to the migrated database", eng);
    if (rc == 0)
        mms_index_close(ix3);
    else
        diag("%s: %s", ename(rc), why);
    ok(mms_index_shared(ix) == pg, "%s: mms_index_shared says %s", eng, pg ? "true" : "false");

    /* ---- settle */
    put(ix, "1.2.1.1", "S.SET.1", T0 + 1);
    double lr = series(ix, "S.SET.1").last_received;
    rc = mms_index_settle(ix, "S.SET.1", lr, T0 + 10, why, sizeof why);
    ok(rc == 0 && series(ix, "S.SET.1").state == MMS_SERIES_STABLE,
       "%s: settle with the last_received read: 0, the series is stable", eng);
    if (rc != 0)
        diag("settle: %d: %s", rc, why);
    rc = mms_index_settle(ix2, "S.SET.1", lr, T0 + 11, why, sizeof why);
    ok(rc == MMS_EAGAIN && series(ix, "S.SET.1").state == MMS_SERIES_STABLE,
       "%s: a second settle (another handle, as another node): MMS_EAGAIN, still stable", eng);
    if (rc != MMS_EAGAIN)
        diag("got %d", rc);

    put(ix, "1.2.1.2", "S.SET.2", T0 + 20);
    lr = series(ix, "S.SET.2").last_received;
    put(ix2, "1.2.1.3", "S.SET.2", T0 + 21); /* arrives at another node meanwhile */
    rc = mms_index_settle(ix, "S.SET.2", lr, T0 + 30, why, sizeof why);
    ok(rc == MMS_EAGAIN && series(ix, "S.SET.2").state == MMS_SERIES_RECEIVING,
       "%s: an instance put after last_received was read: settle returns MMS_EAGAIN, the "
       "series stays receiving",
       eng);
    if (rc != MMS_EAGAIN)
        diag("got %d", rc);
    lr = series(ix2, "S.SET.2").last_received;
    rc = mms_index_settle(ix2, "S.SET.2", lr, T0 + 31, why, sizeof why);
    ok(near(lr, T0 + 21) && rc == 0 && series(ix, "S.SET.2").state == MMS_SERIES_STABLE,
       "%s: settling with the new last_received then succeeds", eng);

    /* ---- job claims on one handle: the series queued longest first */
    const char *order[] = {"S.Q.B", "S.Q.C", "S.Q.A"}; /* queued in this order */
    put(ix, "1.2.2.1", "S.Q.A", T0 + 40);
    put(ix, "1.2.2.2", "S.Q.B", T0 + 41);
    put(ix, "1.2.2.3", "S.Q.C", T0 + 42);
    for (int i = 0; i < 3; i++)
        set_state(ix, order[i], MMS_SERIES_QUEUED, T0 + 100 + i);
    char got[3][65], got_text[256] = "";
    int64_t ids[3], runs[3];
    bool claimed = true;
    for (int i = 0; i < 3; i++) {
        rc = mms_index_job_claim(ix, "nodeA", T0 + 110 + i, LEASE, got[i], &ids[i], &runs[i], why,
                                 sizeof why);
        if (rc < 0) {
            diag("claim %d: %s: %s", i + 1, ename(rc), why);
            claimed = false;
            snprintf(got[i], sizeof got[i], "-");
            ids[i] = runs[i] = -1;
        }
        size_t len = strlen(got_text);
        snprintf(got_text + len, sizeof got_text - len, "%s%s", i ? " " : "", got[i]);
    }
    ok(claimed && strcmp(got_text, "S.Q.B S.Q.C S.Q.A") == 0,
       "%s: claims take the series queued longest first: %s", eng, got_text);
    char nothing[65];
    int64_t id, run;
    rc = mms_index_job_claim(ix, "nodeA", T0 + 120, LEASE, nothing, &id, &run, why, sizeof why);
    is_int(rc, MMS_ENOENT, "%s: nothing queued: a claim returns MMS_ENOENT", eng);
    bool running = claimed;
    for (int i = 0; claimed && i < 3; i++) {
        struct mms_series_row s = series(ix, got[i]);
        running = running && runs[i] == 1 && s.state == MMS_SERIES_RUNNING && s.run == 1;
    }
    ok(running, "%s: a claimed series is running, its run 1 (as the claim said)", eng);
    bool rows = claimed && ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2];
    for (int i = 0; claimed && i < 3; i++) {
        struct mms_job_row j = job(ix, ids[i]);
        rows = rows && j.id == ids[i] && strcmp(j.series_uid, got[i]) == 0 && j.run == 1 &&
               j.state == MMS_JOB_RUNNING && strcmp(j.node, "nodeA") == 0 &&
               near(j.lease_until, T0 + 110 + i + LEASE) && near(j.started, T0 + 110 + i);
        if (!rows && j.id == ids[i])
            diag("job %lld: %s run %lld %s node '%s' started %.3f lease_until %.3f",
                 (long long)j.id, j.series_uid, (long long)j.run, mms_job_state_name(j.state),
                 j.node, j.started - T0, j.lease_until - T0);
    }
    ok(rows,
       "%s: their job rows: distinct numbers, the series and run, running, node nodeA, "
       "started now, lease_until = now + lease_s",
       eng);

    /* ---- a job ended twice: by one node, then by another that still held it */
    struct mms_job_row j = {.id = ids[0], .run = 1, .state = MMS_JOB_DONE, .finished = T0 + 130};
    snprintf(j.series_uid, sizeof j.series_uid, "%s", got[0]);
    snprintf(j.node, sizeof j.node, "nodeA");
    rc = mms_index_job_finish(ix2, &j, MMS_SERIES_DONE, NULL, T0 + 130, why, sizeof why);
    ok(rc == 0 && series(ix, got[0]).state == MMS_SERIES_DONE &&
           job(ix, ids[0]).state == MMS_JOB_DONE,
       "%s: a job finished (through another handle): 0, job and series done", eng);
    j.state = MMS_JOB_FAILED;
    snprintf(j.stage, sizeof j.stage, "decode");
    snprintf(j.reason, sizeof j.reason, "late");
    rc = mms_index_job_finish(ix, &j, MMS_SERIES_FAILED, "late", T0 + 131, why, sizeof why);
    ok(rc == MMS_ENOENT && series(ix, got[0]).state == MMS_SERIES_DONE &&
           job(ix, ids[0]).state == MMS_JOB_DONE,
       "%s: finishing it again (ended by someone else meanwhile): MMS_ENOENT, nothing changed",
       eng);
    if (rc != MMS_ENOENT)
        diag("got %d", rc);

    /* ---- K series claimed by CLAIMERS threads, each on its own handle */
    for (int i = 0; i < K; i++) {
        char uid[64], series_uid[64];
        snprintf(uid, sizeof uid, "1.2.3.%d", i);
        snprintf(series_uid, sizeof series_uid, "S.K.%02d", i);
        put(ix, uid, series_uid, T0 + 150 + i);
        set_state(ix, series_uid, MMS_SERIES_QUEUED, T0 + 200 + i);
    }
    static struct claimer cl[CLAIMERS];
    pthread_barrier_init(&start, NULL, CLAIMERS);
    for (int i = 0; i < CLAIMERS; i++) {
        memset(&cl[i], 0, sizeof cl[i]);
        cl[i].where = where;
        cl[i].start = &start;
        snprintf(cl[i].node, sizeof cl[i].node, "node%d", i);
        if (pthread_create(&th[i], NULL, claim_main, &cl[i]) != 0)
            bail_out("pthread_create", "claim");
    }
    int errors = 0, total = 0;
    char per[64] = "";
    for (int i = 0; i < CLAIMERS; i++) {
        pthread_join(th[i], NULL);
        errors += cl[i].errors;
        total += cl[i].n;
        size_t len = strlen(per);
        snprintf(per + len, sizeof per - len, "%s%d", i ? " " : "", cl[i].n);
        if (cl[i].errors)
            diag("%s: %s", cl[i].node, cl[i].why);
    }
    pthread_barrier_destroy(&start);
    ok(errors == 0,
       "%s: %d threads, each on its own handle, claim until MMS_ENOENT without an error", eng,
       CLAIMERS);
    int times[K] = {0}, strays = 0;
    for (int i = 0; i < CLAIMERS; i++)
        for (int k = 0; k < cl[i].n; k++) {
            int x = -1;
            if (sscanf(cl[i].uids[k], "S.K.%d", &x) == 1 && x >= 0 && x < K)
                times[x]++;
            else
                strays++, diag("%s claimed %s", cl[i].node, cl[i].uids[k]);
        }
    int once = 0;
    for (int x = 0; x < K; x++) {
        once += times[x] == 1;
        if (times[x] != 1)
            diag("S.K.%02d claimed %d times", x, times[x]);
    }
    ok(once == K && strays == 0 && total == K,
       "%s: each of the %d series claimed exactly once (claims per thread: %s)", eng, K, per);
    bool good = total == K;
    int shown = 0; /* bad rows described, the first few only */
    for (int i = 0; i < CLAIMERS; i++)
        for (int k = 0; k < cl[i].n; k++) {
            struct mms_job_row r = job(ix, cl[i].ids[k]);
            bool g = r.id == cl[i].ids[k] && strcmp(r.series_uid, cl[i].uids[k]) == 0 &&
                     r.state == MMS_JOB_RUNNING && strcmp(r.node, cl[i].node) == 0 &&
                     near(r.lease_until, T0 + 300 + LEASE) && r.run == 1;
            if (!g && shown++ < 3)
                diag("job %lld: %s '%s' lease_until %.3f, want %s %s", (long long)r.id,
                     r.series_uid, r.node, r.lease_until - T0, cl[i].uids[k], cl[i].node);
            good = good && g;
        }
    ok(good,
       "%s: %d job rows, running, each with its series, the claiming node and lease_until = "
       "now + lease_s",
       eng, K);
    bool all_running = true;
    for (int x = 0; x < K; x++) {
        char series_uid[64];
        snprintf(series_uid, sizeof series_uid, "S.K.%02d", x);
        struct mms_series_row s = series(ix, series_uid);
        all_running = all_running && s.state == MMS_SERIES_RUNNING && s.run == 1;
    }
    ok(all_running, "%s: every claimed series is running, run 1", eng);

    /* ---- send claims: the job of S.Q.C (nodeA's, running) */
    int64_t jc = ids[1];
    const char *dests[] = {"pacs", "folder"};
    rc = mms_index_sends_add(ix, jc, got[1], dests, 2, T0 + 400, why, sizeof why);
    struct mms_send_row sp = send_row(ix, jc, "pacs"), sf = send_row(ix, jc, "folder");
    ok(rc == 0 && sp.job == jc && sf.job == jc && sp.state == MMS_SEND_PENDING &&
           sp.node[0] == '\0' && sf.node[0] == '\0',
       "%s: sends for a job to two destinations: pending, held by no node", eng);
    rc = mms_index_send_claim(ix, jc, "pacs", "nodeA", T0 + 400, 5, why, sizeof why);
    sp = send_row(ix, jc, "pacs");
    ok(rc == 0 && strcmp(sp.node, "nodeA") == 0 && near(sp.lease_until, T0 + 405),
       "%s: node A claims a due send: 0, the row names nodeA until now + lease_s", eng);
    if (rc != 0 || strcmp(sp.node, "nodeA") != 0)
        diag("rc %d node '%s' lease_until %.3f: %s", rc, sp.node, sp.lease_until - T0, why);
    rc = mms_index_send_claim(ix2, jc, "pacs", "nodeB", T0 + 401, 5, why, sizeof why);
    is_int(rc, MMS_EAGAIN, "%s: node B's claim while A's lease runs: MMS_EAGAIN", eng);
    rc = mms_index_send_claim(ix2, jc, "pacs", "nodeB", T0 + 406, 5, why, sizeof why);
    sp = send_row(ix, jc, "pacs");
    ok(rc == 0 && strcmp(sp.node, "nodeB") == 0 && near(sp.lease_until, T0 + 411),
       "%s: after A's lease ran out (lease 5, now + 6) node B gets it", eng);
    if (rc != 0 || strcmp(sp.node, "nodeB") != 0)
        diag("rc %d node '%s' lease_until %.3f: %s", rc, sp.node, sp.lease_until - T0, why);
    sp.attempts = 1;
    sp.last_attempt = T0 + 407;
    sp.next_attempt = T0 + 500;
    sp.state_since = T0 + 407;
    snprintf(sp.reason, sizeof sp.reason, "connection refused");
    rc = mms_index_send_update(ix2, &sp, why, sizeof why);
    sp = send_row(ix, jc, "pacs");
    ok(rc == 0 && sp.node[0] == '\0' && sp.state == MMS_SEND_PENDING && sp.attempts == 1 &&
           near(sp.next_attempt, T0 + 500),
       "%s: mms_index_send_update releases the claim: node '' afterwards, pending", eng);
    if (sp.node[0] != '\0')
        diag("node '%s'", sp.node);
    rc = mms_index_send_claim(ix, jc, "pacs", "nodeA", T0 + 420, 5, why, sizeof why);
    is_int(rc, MMS_EAGAIN, "%s: a send not yet due (next_attempt > now): MMS_EAGAIN", eng);
    sf.state = MMS_SEND_DONE;
    sf.attempts = 1;
    sf.last_attempt = sf.state_since = T0 + 410;
    if (mms_index_send_update(ix, &sf, why, sizeof why) < 0)
        diag("update folder: %s", why);
    rc = mms_index_send_claim(ix, jc, "folder", "nodeA", T0 + 420, 5, why, sizeof why);
    is_int(rc, MMS_EAGAIN, "%s: a send no longer pending (done): MMS_EAGAIN", eng);
    rc = mms_index_send_claim(ix, jc, "pacs", "nodeA", T0 + 500, 5, why, sizeof why);
    sp = send_row(ix, jc, "pacs");
    ok(rc == 0 && strcmp(sp.node, "nodeA") == 0 && near(sp.lease_until, T0 + 505),
       "%s: once due, the released send is claimed again (node A)", eng);
    rc = mms_index_send_claim(ix, jc, "pacs", "nodeA", T0 + 501, 5, why, sizeof why);
    sp = send_row(ix, jc, "pacs");
    ok(rc == 0 && strcmp(sp.node, "nodeA") == 0 && near(sp.lease_until, T0 + 506),
       "%s: the node holding a claim may claim it again (its lease renewed)", eng);
    if (rc != 0)
        diag("got %d: %s", rc, why);

    /* ---- heartbeats: nodeA runs the jobs of S.Q.C and S.Q.A and holds the pacs send */
    double t = T0 + 600;
    struct mms_node_row beat = {.pid = 4242, .started = T0, .heartbeat = t};
    snprintf(beat.name, sizeof beat.name, "nodeA");
    snprintf(beat.roles, sizeof beat.roles, "intake,infer,send");
    rc = mms_index_node_beat(ix, &beat, t, 10, why, sizeof why);
    ok(rc == 0 && near(job(ix, ids[1]).lease_until, t + 10) &&
           near(job(ix, ids[2]).lease_until, t + 10),
       "%s: node A's heartbeat (lease 10): 0, its running jobs' lease_until = now + 10", eng);
    if (rc != 0)
        diag("beat: %d: %s", rc, why);
    sp = send_row(ix, jc, "pacs");
    ok(strcmp(sp.node, "nodeA") == 0 && near(sp.lease_until, t + 10),
       "%s: and its claimed send's lease_until", eng);
    int busy = 0; /* a thread that claimed something */
    while (busy < CLAIMERS - 1 && cl[busy].n == 0)
        busy++;
    struct mms_job_row other = job(ix, cl[busy].n > 0 ? cl[busy].ids[0] : -1);
    ok(near(other.lease_until, T0 + 300 + LEASE) && strcmp(other.node, cl[busy].node) == 0,
       "%s: another node's job keeps its lease", eng);
    struct nodes l;
    struct mms_node_row a;
    nodes(ix, &l, "nodeA", &a);
    ok(strcmp(a.name, "nodeA") == 0 && near(a.heartbeat, t) && a.pid == 4242 &&
           strcmp(a.roles, "intake,infer,send") == 0 && near(a.started, T0) && a.jobs == 2 &&
           a.sends == 1,
       "%s: mms_index_nodes lists node A: heartbeat, pid, roles, started, 2 jobs, 1 send", eng);
    if (strcmp(a.name, "nodeA") == 0)
        diag("nodeA: heartbeat %.3f pid %lld roles '%s' started %.3f jobs %lld sends %lld",
             a.heartbeat - T0, (long long)a.pid, a.roles, a.started - T0, (long long)a.jobs,
             (long long)a.sends);
    beat.heartbeat = t + 5;
    rc = mms_index_node_beat(ix2, &beat, t + 5, 10, why, sizeof why);
    nodes(ix, &l, "nodeA", &a);
    ok(rc == 0 && near(job(ix, ids[1]).lease_until, t + 15) &&
           near(job(ix, ids[2]).lease_until, t + 15) &&
           near(send_row(ix, jc, "pacs").lease_until, t + 15) && near(a.heartbeat, t + 5),
       "%s: the next beat, 5 s later: leases now + 10 again, heartbeat updated", eng);
    struct mms_node_row b = {.pid = 7, .started = T0 + 1, .heartbeat = t + 6};
    snprintf(b.name, sizeof b.name, "nodeB");
    snprintf(b.roles, sizeof b.roles, "send");
    rc = mms_index_node_beat(ix2, &b, t + 6, 10, why, sizeof why);
    struct mms_node_row bb;
    nodes(ix, &l, "nodeB", &bb);
    ok(rc == 0 && strcmp(l.names, "nodeA nodeB") == 0 && bb.jobs == 0 && bb.sends == 0 &&
           strcmp(bb.roles, "send") == 0,
       "%s: a second node: the nodes listed by name (%s), node B holds nothing", eng, l.names);
    struct mms_node_row nameless = beat;
    nameless.name[0] = '\0';
    is_int(mms_index_node_beat(ix, &nameless, t + 7, 10, why, sizeof why), MMS_EINVAL,
           "%s: a beat without a node name: MMS_EINVAL", eng);

    /* ---- a job's result is sent, or the job runs again: never both. Node A's job of S.R1
     * is ended by node B (A stopped renewing its lease) before A's result is ready: A's sends
     * are refused. Node A's job of S.R2 has its sends queued before node B looks: B finds
     * them and ends the job done. */
    const char *both[] = {"pacs", "folder"};
    char uid1[65], uid2[65];
    int64_t r1, r2, run_no;
    put(ix, "1.2.9.1", "S.R1", t + 20);
    set_state(ix, "S.R1", MMS_SERIES_QUEUED, t + 21);
    rc = mms_index_job_claim(ix, "nodeA", t + 22, 10, uid1, &r1, &run_no, why, sizeof why);
    struct mms_job_row ab = job(ix, r1);
    ab.state = MMS_JOB_INTERRUPTED;
    ab.finished = t + 40;
    snprintf(ab.reason, sizeof ab.reason, "node nodeA stopped renewing its lease");
    bool sent = true;
    int rc2 =
        mms_index_job_abandon(ix2, &ab, MMS_SERIES_QUEUED, "", t + 40, &sent, why, sizeof why);
    int rc3 = mms_index_result_sends(ix, r1, "S.R1", both, 2, t + 41, why, sizeof why);
    ok(rc == 0 && strcmp(uid1, "S.R1") == 0 && rc2 == 0 && !sent &&
           job(ix, r1).state == MMS_JOB_INTERRUPTED &&
           series(ix, "S.R1").state == MMS_SERIES_QUEUED,
       "%s: node B ends node A's job (no sends yet): interrupted, the series queued again", eng);
    ok(rc3 == MMS_ENOENT && send_row(ix, r1, "pacs").job != r1,
       "%s: node A's result of that job afterwards: MMS_ENOENT, no send queued (%s)", eng,
       ename(rc3));
    set_state(ix, "S.R1", MMS_SERIES_DONE, t + 42); /* out of the queue */
    put(ix, "1.2.9.2", "S.R2", t + 50);
    set_state(ix, "S.R2", MMS_SERIES_QUEUED, t + 51);
    rc = mms_index_job_claim(ix, "nodeA", t + 52, 10, uid2, &r2, &run_no, why, sizeof why);
    rc3 = mms_index_result_sends(ix, r2, "S.R2", both, 2, t + 60, why, sizeof why);
    ab = job(ix, r2);
    ab.state = MMS_JOB_INTERRUPTED;
    ab.finished = t + 70;
    sent = false;
    rc2 = mms_index_job_abandon(ix2, &ab, MMS_SERIES_QUEUED, "", t + 70, &sent, why, sizeof why);
    ok(rc == 0 && strcmp(uid2, "S.R2") == 0 && rc3 == 0 && rc2 == 0 && sent &&
           job(ix, r2).state == MMS_JOB_DONE && series(ix, "S.R2").state == MMS_SERIES_DONE &&
           send_row(ix, r2, "folder").state == MMS_SEND_PENDING,
       "%s: node A's sends first, then node B: the job ends done, the series done, the sends "
       "stay pending",
       eng);

    rc = mms_index_result_sends(ix, 987654, "S.X", both, 1, t + 80, why, sizeof why);
    ok(rc == 0 && send_row(ix, 987654, "pacs").state == MMS_SEND_PENDING,
       "%s: a result of a job the index has no row for is queued (as before clusters)", eng);

    if (tap_n - first != SUITE_TESTS)
        diag("suite ran %d tests, SUITE_TESTS says %d", tap_n - first, SUITE_TESTS);
    mms_index_close(ix2);
    if (pg)
        restart_part(ix, where);
    mms_index_close(ix);
}

int
main(void)
{
    plan(IS_PG_TESTS + 2 * SUITE_TESTS + RESTART_TESTS, 240);
    mms_log_set_level(MMS_LOG_ERR);

    /* ---- names */
    const char *pg_names[] = {"postgresql://x", "postgres://u@h/db", "host=/tmp dbname=x"};
    const char *paths[] = {"/var/lib/mmsegd/state.db", "state.db", "sqlite"};
    for (int i = 0; i < 3; i++)
        ok(mms_index_is_postgres(pg_names[i]), "mms_index_is_postgres(\"%s\"): true", pg_names[i]);
    for (int i = 0; i < 3; i++)
        ok(!mms_index_is_postgres(paths[i]), "mms_index_is_postgres(\"%s\"): false", paths[i]);

    /* ---- SQLite, on tmpfs when there is one (synchronous=FULL syncs every commit) */
    char dir[128], db_path[192];
    const char *tmp = getenv("TMPDIR");
    if (tmp == NULL || *tmp == '\0')
        tmp = access("/dev/shm", W_OK | X_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(dir, sizeof dir, "%s/mmsegd-test-cluster-XXXXXX", tmp);
    if (mkdtemp(dir) == NULL)
        bail_out("mkdtemp", dir);
    snprintf(db_path, sizeof db_path, "%s/state.db", dir);
    suite(db_path, false);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        diag("could not remove %s", dir);

    /* ---- PostgreSQL */
    const char *pg = getenv("MMS_TEST_PG");
    if (pg != NULL && *pg != '\0') {
        if (!mms_index_is_postgres(pg))
            bail_out("MMS_TEST_PG", "not a PostgreSQL connection string");
        suite(pg, true);
    } else {
        static const char why[] =
            "PostgreSQL part: MMS_TEST_PG is not set (tests/test-cluster-index.sh sets it)";
        diag("SKIP %s", why);
        for (int i = 0; i < SUITE_TESTS + RESTART_TESTS; i++)
            skip(why);
    }
    return done_testing();
}
