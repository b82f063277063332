/* daemon/sender: attempts, backoff and dead letters (sender.h). */
#include "daemon/sender.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/crashpoint.h"
#include "common/err.h"
#include "common/fs.h"
#include "common/log.h"
#include "daemon/outbox.h"
#include "daemon/stow.h"
#include "dicom/scu.h"

/* The longest the loop waits before it reads the pending sends again. */
#define POLL_S 5.0

struct worker {
    struct mms_sender *s;
    const struct mms_dest_config *dest;
    pthread_t thread;
    bool started;
    bool busy;     /* loop thread: a send was handed over and its end not yet seen */
    bool has_task; /* under s->mu: task is waiting for the thread */
    bool finished; /* under s->mu: the thread ended task */
    pthread_cond_t wake;
    struct mms_send_row task;
};

struct mms_sender {
    struct mms_index *ix;
    char *state_dir;
    char node[65];
    double lease_s;
    bool idle;
    unsigned timeout_s, max_pdu;
    uv_timer_t timer;
    uv_async_t done;
    int open_handles;
    pthread_mutex_t mu; /* workers' has_task, finished; stopping */
    bool stopping;
    pthread_mutex_t release_mu; /* one job's outbox is released by one thread at a time */
    struct mms_tls *tls;        /* the client context for TLS destinations (under mu), or NULL */
    struct worker *w;
    size_t n_workers;
};

/* ---------------------------------------------------------------------------- attempts */

/* Copy every file into the folder: a hidden temporary name, fsync, rename, directory fsync,
 * so the folder never shows a partial file. */
static int
copy_to_folder(const char *folder, char **files, int n, char *why, size_t why_len)
{
    char tmp[4400], dst[4400], name[64];
    for (int i = 0; i < n; i++) {
        const char *base = strrchr(files[i], '/') + 1;
        int rc = mms_fs_random_name(".mmsegd", name, sizeof name);
        snprintf(tmp, sizeof tmp, "%s/%s.tmp", folder, name);
        snprintf(dst, sizeof dst, "%s/%s", folder, base);
        if (rc == 0)
            rc = mms_fs_copy(files[i], tmp);
        if (rc == 0 && rename(tmp, dst) != 0) {
            rc = mms_err_errno();
            unlink(tmp);
        }
        if (rc < 0)
            return mms_why(why, why_len, rc, "%s: %s", dst, mms_strerror(rc));
    }
    int rc = mms_fs_fsync_dir(folder);
    return rc < 0 ? mms_why(why, why_len, rc, "fsync %s: %s", folder, mms_strerror(rc)) : 0;
}

/* One attempt of send r to destination d; the outcome's class, and the reason in why.
 * *retry_after: the delay the peer asked for before the next attempt (0: none). */
static enum mms_scu_class
attempt(struct mms_sender *s, const struct mms_dest_config *d, const struct mms_send_row *r,
        int *n_files, double *retry_after, char *why, size_t why_len)
{
    char **files = NULL;
    bool dicom_only = d->type != MMS_DEST_FOLDER;
    int n = mms_outbox_list(s->state_dir, r->job, dicom_only ? ".dcm" : NULL, &files, why, why_len);
    *retry_after = 0.0;
    if (n <= 0) {
        *n_files = 0;
        if (n == 0 || n == MMS_ENOENT)
            mms_why(why, why_len, MMS_ENOENT, "nothing to send: outbox/%" PRId64 " has no %s",
                    r->job, dicom_only ? "DICOM file" : "file");
        return MMS_SCU_PERMANENT;
    }
    /* the outputs this destination takes ([destination] outputs) */
    int kept = 0;
    for (int i = 0; i < n; i++) {
        if ((mms_output_of(files[i]) & d->outputs_mask) != 0)
            files[kept++] = files[i];
        else
            free(files[i]);
    }
    *n_files = kept;
    if (kept == 0) {
        mms_log(MMS_LOG_NOTICE,
                "job %" PRId64 " to %s: the result holds none of its outputs (%s): nothing to "
                "send",
                r->job, d->name, d->outputs);
        mms_outbox_list_free(files, 0);
        return MMS_SCU_DELIVERED;
    }
    n = kept;
    enum mms_scu_class cls;
    if (d->type == MMS_DEST_DICOMWEB) {
        struct mms_stow_peer p = {
            .url = d->url,
            .auth = d->auth,
            .credentials_file = d->credentials_file,
            .ca_file = d->ca_file,
            .verify = d->verify_tls,
            .timeout_s = s->timeout_s,
            .max_request_mb = d->max_request_mb,
        };
        struct mms_stow_result res;
        int rc = mms_stow_send(&p, (const char *const *)files, n, &res, why, why_len);
        cls = rc < 0 ? MMS_SCU_TRANSIENT : res.cls;
        *retry_after = rc < 0 ? 0.0 : res.retry_after;
    } else if (d->type == MMS_DEST_FOLDER) {
        /* every failure here (missing or full folder, permissions) can be fixed by an operator */
        cls = copy_to_folder(d->path, files, n, why, why_len) == 0 ? MMS_SCU_DELIVERED
                                                                   : MMS_SCU_TRANSIENT;
    } else {
        /* the context of this attempt: a reload may put a new one in place meanwhile */
        pthread_mutex_lock(&s->mu);
        struct mms_tls *tls = d->tls ? mms_tls_ref(s->tls) : NULL;
        pthread_mutex_unlock(&s->mu);
        struct mms_scu_peer p = {
            .host = d->host,
            .port = d->port,
            .called_ae = d->ae_title,
            .calling_ae = d->calling_ae,
            .timeout_s = s->timeout_s,
            .max_pdu = s->max_pdu,
            .tls = tls,
        };
        struct mms_scu_result res = {0};
        int rc = d->tls && tls == NULL
                     ? mms_why(why, why_len, MMS_EINVAL, "TLS destination without [scp] tls_*")
                     : mms_scu_store(&p, (const char *const *)files, n, &res, why, why_len);
        mms_tls_unref(tls);
        cls = res.files != NULL  ? res.cls
              : rc == MMS_ENOMEM ? MMS_SCU_TRANSIENT
                                 : MMS_SCU_PERMANENT;
        mms_scu_result_fini(&res);
    }
    mms_outbox_list_free(files, n);
    return cls;
}

/* The delay before attempt number attempts + 1 (attempts >= 1 made). */
static double
backoff(const struct mms_dest_config *d, int64_t attempts)
{
    double delay = d->retry_initial_s * pow(d->retry_multiplier, (double)(attempts - 1));
    return delay < d->retry_max_s ? delay : d->retry_max_s;
}

/* Make one attempt of w->task and record its outcome. */
static void
run_task(struct worker *w, struct mms_send_row r)
{
    struct mms_sender *s = w->s;
    const struct mms_dest_config *d = w->dest;
    char reason[1024] = "", why[1024];
    int n_files;
    double retry_after;

    r.attempts++;
    mms_log(MMS_LOG_INFO, "job %" PRId64 " to %s: attempt %" PRId64, r.job, d->name, r.attempts);
    enum mms_scu_class cls = attempt(s, d, &r, &n_files, &retry_after, reason, sizeof reason);
    double now = mms_wall_s();
    r.last_attempt = now;
    if (cls == MMS_SCU_TRANSIENT && now - r.queued >= d->retry_max_age_s) {
        char last[520];
        snprintf(last, sizeof last, "%.500s", reason);
        snprintf(reason, sizeof reason,
                 "gave up after %" PRId64 " attempt%s in %.0f s (retry_max_age_s %u); last: %s",
                 r.attempts, r.attempts == 1 ? "" : "s", now - r.queued, d->retry_max_age_s, last);
        cls = MMS_SCU_PERMANENT;
    }
    snprintf(r.reason, sizeof r.reason, "%s", cls == MMS_SCU_DELIVERED ? "" : reason);
    if (cls == MMS_SCU_DELIVERED) {
        r.state = MMS_SEND_DONE;
        r.state_since = now;
        mms_log(MMS_LOG_NOTICE, "job %" PRId64 " delivered to %s (%d file%s, attempt %" PRId64 ")",
                r.job, d->name, n_files, n_files == 1 ? "" : "s", r.attempts);
    } else if (cls == MMS_SCU_TRANSIENT) {
        /* the delay the peer asked for (Retry-After), when longer than ours */
        double delay = backoff(d, r.attempts);
        double next = now + (retry_after > delay ? retry_after : delay);
        if (next > r.queued + d->retry_max_age_s)
            next = r.queued + d->retry_max_age_s;
        r.next_attempt = next;
        mms_log(MMS_LOG_WARNING,
                "job %" PRId64 " to %s: attempt %" PRId64 " failed, next in %.0f s: %s", r.job,
                d->name, r.attempts, next - now, reason);
    } else {
        char rel[256];
        mms_outbox_dead_name(r.job, d->name, rel, sizeof rel);
        if (mms_outbox_bury(s->state_dir, r.job, d->name, reason, why, sizeof why) == 0) {
            r.state = MMS_SEND_DEAD;
            r.state_since = now;
            mms_log(MMS_LOG_ERR, "job %" PRId64 " to %s: not delivered, kept in %s: %s", r.job,
                    d->name, rel, reason);
        } else {
            /* without its dead letter the outbox is the only copy: keep the send pending */
            r.next_attempt = now + backoff(d, r.attempts);
            mms_log(MMS_LOG_ERR,
                    "job %" PRId64 " to %s: not delivered (%s), and keeping the dead letter "
                    "failed (%s); the send stays pending",
                    r.job, d->name, reason, why);
        }
    }
    /* delivered but still pending in the index: the next start sends it again, the same SEG
     * with the same SOP Instance UID (design.md section 3), which the peer absorbs */
    if (cls == MMS_SCU_DELIVERED)
        MMS_CRASH_POINT("send.before-record");
    if (mms_index_send_update(s->ix, &r, why, sizeof why) < 0) {
        /* the row stays as it was: pending, so the attempt is made again (a duplicate the
         * peer absorbs) */
        mms_log(MMS_LOG_ERR, "job %" PRId64 " to %s: recording the outcome failed: %s", r.job,
                d->name, why);
        return;
    }
    if (cls == MMS_SCU_DELIVERED) /* recorded done; outbox/JOB not yet released */
        MMS_CRASH_POINT("send.after-record");
    if (r.state != MMS_SEND_PENDING) {
        pthread_mutex_lock(&s->release_mu);
        if (mms_outbox_release(s->state_dir, s->ix, r.job, why, sizeof why) < 0)
            mms_log(MMS_LOG_WARNING, "job %" PRId64 ": %s", r.job, why);
        pthread_mutex_unlock(&s->release_mu);
    }
}

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    struct mms_sender *s = w->s;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!w->has_task && !s->stopping)
            pthread_cond_wait(&w->wake, &s->mu);
        if (!w->has_task)
            break;
        struct mms_send_row task = w->task;
        w->has_task = false;
        pthread_mutex_unlock(&s->mu);
        run_task(w, task);
        pthread_mutex_lock(&s->mu);
        w->finished = true;
        uv_async_send(&s->done);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---------------------------------------------------------------------------- the loop */

static struct worker *
find_worker(struct mms_sender *s, const char *name)
{
    for (size_t i = 0; i < s->n_workers; i++)
        if (strcmp(s->w[i].dest->name, name) == 0)
            return &s->w[i];
    return NULL;
}

struct due {
    struct mms_sender *s;
    double now, next;       /* the earliest future attempt seen */
    struct worker **w;      /* free workers with a due send, one each */
    struct mms_send_row *r; /* those sends */
    size_t n;
};

/* For each pending send: note it when due and its destination's thread is free (one attempt
 * at a time per destination, the most overdue first). */
static int
consider(void *ud, const struct mms_send_row *r)
{
    struct due *du = ud;
    struct worker *w = find_worker(du->s, r->destination);
    if (w == NULL || w->busy)
        return 0;
    for (size_t i = 0; i < du->n; i++)
        if (du->w[i] == w)
            return 0;
    if (r->next_attempt > du->now) {
        if (r->next_attempt < du->next)
            du->next = r->next_attempt;
        return 0;
    }
    du->w[du->n] = w;
    du->r[du->n++] = *r;
    return 0;
}

/* Claim the send for this node (another node of a cluster may hold it) and hand it to w. */
static void
hand_over(struct mms_sender *s, struct worker *w, const struct mms_send_row *r, double now)
{
    char why[512];
    int rc = mms_index_send_claim(s->ix, r->job, r->destination, s->node, now, s->lease_s, why,
                                  sizeof why);
    if (rc == MMS_EAGAIN)
        return;
    if (rc < 0) {
        mms_log(MMS_LOG_ERR, "sender: %s", why);
        return;
    }
    w->busy = true;
    pthread_mutex_lock(&s->mu);
    w->task = *r;
    w->has_task = true;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&s->mu);
}

static void on_timer(uv_timer_t *t);

static void
dispatch(struct mms_sender *s)
{
    char why[1024];
    if (s->stopping || s->idle)
        return;
    struct worker **ws = calloc(s->n_workers + 1, sizeof *ws);
    struct mms_send_row *rs = calloc(s->n_workers + 1, sizeof *rs);
    struct due du = {s, mms_wall_s(), HUGE_VAL, ws, rs, 0};
    if (ws == NULL || rs == NULL)
        mms_log(MMS_LOG_ERR, "sender: out of memory");
    else if (mms_index_sends(s->ix, MMS_SEND_PENDING, -1, consider, &du, why, sizeof why) < 0)
        mms_log(MMS_LOG_ERR, "sender: %s", why);
    for (size_t i = 0; i < du.n; i++)
        hand_over(s, ws[i], &rs[i], du.now);
    free(ws);
    free(rs);
    double wait = du.next - du.now;
    if (wait > POLL_S)
        wait = POLL_S;
    if (wait < 0.01)
        wait = 0.01;
    uv_timer_start(&s->timer, on_timer, (uint64_t)(wait * 1000.0), 0);
}

static void
on_timer(uv_timer_t *t)
{
    dispatch(t->data);
}

static void
on_done(uv_async_t *a)
{
    struct mms_sender *s = a->data;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->n_workers; i++)
        if (s->w[i].finished) {
            s->w[i].finished = false;
            s->w[i].busy = false;
        }
    pthread_mutex_unlock(&s->mu);
    dispatch(s);
}

void
mms_sender_kick(struct mms_sender *s)
{
    if (s != NULL)
        dispatch(s);
}

/* ---------------------------------------------------------------------------- start, stop */

static int
warn_unknown(void *ud, const struct mms_send_row *r)
{
    struct mms_sender *s = ud;
    if (find_worker(s, r->destination) == NULL)
        mms_log(MMS_LOG_WARNING,
                "job %" PRId64 " to %s: no such destination is configured; the send stays "
                "pending (configure it, or leave it)",
                r->job, r->destination);
    return 0;
}

static void
free_sender(struct mms_sender *s)
{
    for (size_t i = 0; i < s->n_workers; i++)
        pthread_cond_destroy(&s->w[i].wake);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->release_mu);
    mms_tls_unref(s->tls);
    free(s->w);
    free(s->state_dir);
    free(s);
}

static void
on_closed(uv_handle_t *h)
{
    struct mms_sender *s = h->data;
    if (--s->open_handles == 0)
        free_sender(s);
}

/* Stop and join the threads started so far. */
static void
join_workers(struct mms_sender *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    for (size_t i = 0; i < s->n_workers; i++)
        pthread_cond_signal(&s->w[i].wake);
    pthread_mutex_unlock(&s->mu);
    for (size_t i = 0; i < s->n_workers; i++)
        if (s->w[i].started)
            pthread_join(s->w[i].thread, NULL);
}

int
mms_sender_start(uv_loop_t *loop, struct mms_index *ix, const struct mms_sender_opts *o,
                 struct mms_sender **out, char *why, size_t why_len)
{
    struct mms_sender *s = calloc(1, sizeof *s);
    if (s == NULL)
        return mms_why(why, why_len, MMS_ENOMEM, "out of memory");
    s->ix = ix;
    s->timeout_s = o->timeout_s;
    s->max_pdu = o->max_pdu;
    s->n_workers = o->n_dests;
    s->state_dir = strdup(o->state_dir);
    snprintf(s->node, sizeof s->node, "%s", o->node != NULL ? o->node : "");
    s->lease_s = o->lease_s > 0 ? o->lease_s : 30.0;
    s->idle = o->idle;
    s->w = calloc(o->n_dests > 0 ? o->n_dests : 1, sizeof *s->w);
    if (s->state_dir == NULL || s->w == NULL) {
        free(s->w);
        free(s->state_dir);
        free(s);
        return mms_why(why, why_len, MMS_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < o->n_dests; i++)
        if (o->dests[i].type == MMS_DEST_DICOMWEB && mms_stow_global_init() < 0) {
            free(s->w);
            free(s->state_dir);
            free(s);
            return mms_why(why, why_len, MMS_EIO, "libcurl: curl_global_init failed");
        }
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->release_mu, NULL);
    s->tls = mms_tls_ref(o->tls);
    for (size_t i = 0; i < s->n_workers; i++) {
        s->w[i].s = s;
        s->w[i].dest = &o->dests[i];
        pthread_cond_init(&s->w[i].wake, NULL);
    }
    uv_timer_init(loop, &s->timer); /* cannot fail on a live loop */
    s->timer.data = s;
    s->done.data = s;
    s->open_handles = 1;
    if (uv_async_init(loop, &s->done, on_done) < 0) {
        uv_close((uv_handle_t *)&s->timer, on_closed);
        return mms_why(why, why_len, MMS_EIO, "sender: uv_async_init failed");
    }
    s->open_handles = 2;
    int rc = 0;
    for (size_t i = 0; i < s->n_workers && rc == 0; i++) {
        int e = pthread_create(&s->w[i].thread, NULL, worker_main, &s->w[i]);
        if (e != 0)
            rc = mms_why(why, why_len, MMS_EIO, "sender thread: %s", mms_strerror(-e));
        else
            s->w[i].started = true;
    }
    if (rc < 0) {
        mms_sender_stop(s);
        return rc;
    }
    if (mms_index_sends(ix, MMS_SEND_PENDING, -1, warn_unknown, s, why, why_len) < 0)
        mms_log(MMS_LOG_ERR, "sender: %s", why);
    for (size_t i = 0; i < s->n_workers; i++) {
        const struct mms_dest_config *d = s->w[i].dest;
        if (d->type == MMS_DEST_DICOM)
            mms_log(MMS_LOG_INFO, "destination %s: DICOM %s@%s:%u as %s", d->name, d->ae_title,
                    d->host, d->port, d->calling_ae);
        else if (d->type == MMS_DEST_DICOMWEB)
            mms_log(MMS_LOG_INFO, "destination %s: DICOMweb STOW-RS %s (auth %s)", d->name, d->url,
                    d->auth == MMS_STOW_AUTH_BASIC    ? "basic"
                    : d->auth == MMS_STOW_AUTH_BEARER ? "bearer"
                                                      : "none");
        else
            mms_log(MMS_LOG_INFO, "destination %s: folder %s", d->name, d->path);
    }
    dispatch(s);
    *out = s;
    return 0;
}

int
mms_sender_set_tls(struct mms_sender *s, struct mms_tls *t)
{
    if (s == NULL || t == NULL)
        return MMS_EINVAL;
    pthread_mutex_lock(&s->mu);
    struct mms_tls *old = s->tls;
    if (old != NULL)
        s->tls = mms_tls_ref(t);
    pthread_mutex_unlock(&s->mu);
    if (old == NULL)
        return MMS_EINVAL;
    mms_tls_unref(old);
    return 0;
}

void
mms_sender_stop(struct mms_sender *s)
{
    if (s == NULL)
        return;
    join_workers(s);
    uv_close((uv_handle_t *)&s->timer, on_closed);
    uv_close((uv_handle_t *)&s->done, on_closed);
}
