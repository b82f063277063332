/* daemon/jobs: the job runner (jobs.h). */
#include "daemon/jobs.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/crash.h"
#include "common/crashpoint.h"
#include "common/err.h"
#include "common/grow.h"
#include "common/log.h"
#include "daemon/outbox.h"
#include "daemon/work.h"

struct jworker {
    struct mms_jobs *J;
    pthread_t thread;
    bool started;
    bool busy;     /* loop thread: a job was handed over and its end not yet seen */
    bool has_task; /* under J->mu */
    bool finished; /* under J->mu */
    int64_t job, run;
    char series[65];
};

struct mms_jobs {
    struct mms_index *ix;
    struct mms_sender *sender;
    char *state_dir, *description;
    char *node_dir; /* this node's own: tmp/ and the job markers */
    char node[65];
    double lease_s;
    bool infer; /* [daemon] roles has infer: this node runs jobs */
    char **dests;
    int n_dests;
    struct mms_work_opts wo;
    /* one engine per entry of [infer] device; a job takes the first free one once its volume
       is decoded */
    struct mms_engine engine[MMS_MAX_ENGINES];
    bool engine_busy[MMS_MAX_ENGINES];    /* under mu */
    int64_t engine_jobs[MMS_MAX_ENGINES]; /* pipelines run on each, under mu */
    int64_t backend_jobs[2]; /* sliding windows finished on the CPU, on a GPU; under mu */
    int n_engines;
    bool engine_ok;
    pthread_cond_t engine_free;
    /* the model file and how to open it again on SIGHUP */
    char *model_path;
    const char *backend;
    struct mms_devices devices;
    int precision, threads;
    struct stat model_st;                    /* of the file the engines were loaded from */
    struct mms_engine next[MMS_MAX_ENGINES]; /* loaded on SIGHUP, waiting for the running jobs */
    int n_next;
    bool swap_pending;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    bool stopping;
    uv_async_t done;
    struct jworker *w;
    size_t n_workers;
};

/* ---------------------------------------------------------------------------- recovery */

struct recover {
    struct mms_job_row *rows;
    int n, cap;
    bool no_memory;
};

static int
collect_running(void *ud, const struct mms_job_row *j)
{
    struct recover *r = ud;
    void *grown = mms_grow(r->rows, &r->cap, r->n, sizeof *r->rows, 8);
    if (grown == NULL) {
        r->no_memory = true;
        return 1;
    }
    r->rows = grown;
    r->rows[r->n++] = *j;
    return 0;
}

/* A series is failed instead of queued again when the daemon crashed on its job's thread this
 * many times in a row (an input that crashes the daemon must not make it crash forever), or
 * stopped during its job this many times in a row for any reason (SIGKILL from the kernel's
 * out-of-memory killer on a series too large for the machine must not loop forever either,
 * while an operator's or a power cut's kills are rare enough to stay below it). */
#define MAX_CRASHED 3
#define MAX_STOPPED 10

struct streak {
    const char *series;
    int crashed, stopped; /* the series' crashed, and ended, jobs since its last finished one */
};

static int
count_streak(void *ud, const struct mms_job_row *j)
{
    struct streak *k = ud;
    if (strcmp(j->series_uid, k->series) != 0 || j->state == MMS_JOB_RUNNING)
        return 0;
    if (j->state == MMS_JOB_DONE || j->state == MMS_JOB_FAILED) {
        k->crashed = k->stopped = 0;
    } else {
        k->stopped++;
        k->crashed += j->state == MMS_JOB_CRASHED;
    }
    return 0;
}

/* The marker of a job in progress (common/crash.h): STATE_DIR/.job-inflight-W for worker W
 * holds the job's id and a NUL; the crash handler appends the signal's name when the worker's
 * thread crashes. */
#define MARKER_PREFIX ".job-inflight-"

struct marker {
    int64_t job;
    char signal[16]; /* "" when the process ended otherwise */
};

/* The markers left in state_dir, removed once read; *n of them in *out (free()). */
static int
take_markers(const char *state_dir, struct marker **out, int *n)
{
    *out = NULL;
    *n = 0;
    int cap = 0;
    DIR *d = opendir(state_dir);
    if (d == NULL)
        return mms_err_errno();
    struct dirent *e;
    char path[4200], buf[64];
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, MARKER_PREFIX, strlen(MARKER_PREFIX)) != 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", state_dir, e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t len = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
        if (fd >= 0)
            close(fd);
        unlink(path);
        if (len <= 0)
            continue;
        buf[len] = '\0';
        void *grown = mms_grow(*out, &cap, *n, sizeof **out, 4);
        if (grown == NULL)
            break; /* a marker less: that job counts as stopped, not crashed */
        *out = grown;
        struct marker *m = &(*out)[(*n)++];
        m->job = strtoll(buf, NULL, 10);
        size_t id_len = strlen(buf);
        snprintf(m->signal, sizeof m->signal, "%s",
                 (ssize_t)id_len + 1 < len ? buf + id_len + 1 : "");
    }
    closedir(d);
    return 0;
}

/* The signal that a marker says job died of, or NULL. */
static const char *
crashed_by(const struct marker *m, int n, int64_t job)
{
    for (int i = 0; i < n; i++)
        if (m[i].job == job && m[i].signal[0] != '\0')
            return m[i].signal;
    return NULL;
}

/* Write the calling worker's marker for job and arm it; a marker that cannot be written only
 * costs the distinction between a crash and a kill. */
static void
marker_set(const char *path, int64_t job)
{
    char text[32];
    int len = snprintf(text, sizeof text, "%" PRId64, job) + 1; /* with its NUL */
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0)
        return;
    bool ok = write(fd, text, (size_t)len) == len;
    close(fd);
    if (ok)
        mms_crash_marker_arm(path);
    else
        unlink(path);
}

/* End the running jobs that no process runs any more: those of node (the caller, just
 * started; on an index nobody shares, every running job), or with their lease run out (on a
 * shared index: their node stopped renewing it). markers: those of node_dir. */
static int
recover(struct mms_index *ix, const char *node, bool at_start, double now,
        const struct marker *markers, int n_markers)
{
    struct recover r = {0};
    char why[1024];
    bool shared = mms_index_shared(ix);
    int rc = mms_index_jobs(ix, MMS_JOB_RUNNING, collect_running, &r, why, sizeof why);
    if (rc == 0 && r.no_memory)
        rc = mms_why(why, sizeof why, MMS_ENOMEM, "out of memory");
    for (int i = 0; rc == 0 && i < r.n; i++) {
        struct mms_job_row *j = &r.rows[i];
        bool mine = !shared || strcmp(j->node, node) == 0;
        bool expired = shared && !mine && j->lease_until < now;
        if (!(at_start && mine) && !expired)
            continue; /* running here, or on a node that renews its lease */
        /* the streak of ended jobs, in case its result is not in the outbox */
        struct streak k = {j->series_uid, 0, 0};
        if ((rc = mms_index_jobs(ix, -1, count_streak, &k, why, sizeof why)) < 0)
            break;
        const char *sig = crashed_by(markers, n_markers, j->id);
        char series_reason[256] = "";
        j->finished = now;
        if (sig != NULL) {
            j->state = MMS_JOB_CRASHED;
            snprintf(j->reason, sizeof j->reason, "the daemon crashed (%s) in this job", sig);
        } else if (expired) {
            j->state = MMS_JOB_INTERRUPTED;
            snprintf(j->reason, sizeof j->reason,
                     "node %.64s stopped renewing its lease during the job", j->node);
        } else {
            j->state = MMS_JOB_INTERRUPTED;
            snprintf(j->reason, sizeof j->reason, "the daemon stopped during the job");
        }
        bool give_up = false;
        if (sig != NULL && k.crashed + 1 >= MAX_CRASHED) {
            give_up = true;
            snprintf(series_reason, sizeof series_reason,
                     "the daemon crashed in %d jobs of this series in a row (last: %s); not run "
                     "again",
                     k.crashed + 1, sig);
        } else if (k.stopped + 1 >= MAX_STOPPED) {
            give_up = true;
            snprintf(series_reason, sizeof series_reason,
                     "the daemon stopped during %d jobs of this series in a row (killed for "
                     "memory?); not run again",
                     k.stopped + 1);
        }
        /* done instead when its sends exist: decided with the job's row locked */
        bool sent = false;
        rc = mms_index_job_abandon(ix, j, give_up ? MMS_SERIES_FAILED : MMS_SERIES_QUEUED,
                                   series_reason, now, &sent, why, sizeof why);
        if (rc == MMS_ENOENT) { /* another node ended it first */
            rc = 0;
            continue;
        }
        if (rc < 0)
            break;
        give_up = give_up && !sent;
        mms_log(give_up ? MMS_LOG_ERR : MMS_LOG_NOTICE,
                "job %" PRId64 " (series %s, run %" PRId64 "): %s; %s", j->id, j->series_uid,
                j->run, j->reason,
                sent      ? "its sends go on"
                : give_up ? series_reason
                          : "the series is queued again");
    }
    free(r.rows);
    if (rc < 0)
        mms_log(MMS_LOG_ERR, "job recovery: %s", why);
    return rc;
}

int
mms_jobs_recover(struct mms_index *ix, const char *node_dir, const char *node, double now)
{
    struct marker *markers;
    int n_markers;
    if (take_markers(node_dir, &markers, &n_markers) < 0)
        mms_log(MMS_LOG_WARNING,
                "job recovery: cannot read %s; an interrupted job counts as "
                "stopped, not crashed",
                node_dir);
    int rc = recover(ix, node, true, now, markers, n_markers);
    free(markers);
    return rc;
}

int
mms_jobs_take_over(struct mms_index *ix, const char *node, double now)
{
    return mms_index_shared(ix) ? recover(ix, node, false, now, NULL, 0) : 0;
}

/* ---------------------------------------------------------------------------- one job */

struct files {
    const char *state_dir;
    char **paths;
    int n, cap;
    bool no_memory;
};

static int
collect_file(void *ud, const struct mms_instance_row *r)
{
    struct files *f = ud;
    void *grown = mms_grow(f->paths, &f->cap, f->n, sizeof *f->paths, 64);
    if (grown == NULL) {
        f->no_memory = true;
        return 1;
    }
    f->paths = grown;
    size_t len = strlen(f->state_dir) + strlen(r->path) + 2;
    if ((f->paths[f->n] = malloc(len)) == NULL) {
        f->no_memory = true;
        return 1;
    }
    snprintf(f->paths[f->n++], len, "%s/%s", f->state_dir, r->path);
    return 0;
}

/* The files of the series and their headers. */
static int
read_series(struct mms_jobs *J, const char *series, struct files *f, struct mms_header **hdr,
            char *why, size_t why_len)
{
    f->state_dir = J->state_dir;
    int rc = mms_index_instances(J->ix, series, collect_file, f, why, why_len);
    if (rc == 0 && f->no_memory)
        rc = mms_why(why, why_len, MMS_ENOMEM, "out of memory");
    if (rc == 0 && f->n == 0)
        rc = mms_why(why, why_len, MMS_ENOENT, "the series has no instance in the index");
    if (rc < 0)
        return rc;
    if ((*hdr = calloc((size_t)f->n, sizeof **hdr)) == NULL)
        return mms_why(why, why_len, MMS_ENOMEM, "out of memory");
    /* in a sandbox child, as every reading of received data */
    return mms_work_headers((const char *const *)f->paths, f->n, &J->wo.decode_lim, *hdr, why,
                            why_len);
}

/* The engine the job of this worker thread took last (its index), for the log. */
static __thread int taken_engine = -1;

/* mms_work_opts.take_engine: the first free engine, waiting for one. */
static const struct mms_engine *
take_engine(void *arg)
{
    struct mms_jobs *J = arg;
    pthread_mutex_lock(&J->mu);
    for (;;) {
        for (int i = 0; i < J->n_engines; i++)
            if (!J->engine_busy[i]) {
                J->engine_busy[i] = true;
                taken_engine = i;
                pthread_mutex_unlock(&J->mu);
                return &J->engine[i];
            }
        pthread_cond_wait(&J->engine_free, &J->mu);
    }
}

static void
give_engine(void *arg, const struct mms_engine *e)
{
    struct mms_jobs *J = arg;
    pthread_mutex_lock(&J->mu);
    J->engine_busy[e - J->engine] = false;
    J->engine_jobs[e - J->engine]++;
    pthread_cond_broadcast(&J->engine_free);
    pthread_mutex_unlock(&J->mu);
}

/* Open the engines of J->devices for model into e[] (*n of them). With "all", one per device
 * until one does not exist (one on the CPU backend); with a list, every one must open. Every
 * engine after the first runs on the first one's backend (auto never mixes in the CPU). CPU
 * threads 0 with several engines: the cores divided among them. */
static int
open_engines(const struct mms_jobs *J, const char *model, struct mms_engine *e, int *n, char *why,
             size_t why_len)
{
    const struct mms_devices *d = &J->devices;
    int want = d->all ? MMS_MAX_ENGINES : d->n, rc = 0;
    long cpus = mms_work_infer_cpu_count();
    int threads = J->threads;
    if (threads == 0 && !d->all && d->n > 1)
        threads = cpus / d->n > 1 ? (int)(cpus / d->n) : 1;
    *n = 0;
    for (int i = 0; i < want; i++) {
        const char *backend = i == 0 ? J->backend : mms_backend_name(e[0].be);
        int device = d->all ? i : (int)d->id[i];
        if ((rc = mms_engine_open(model, backend, device, J->precision, threads, &e[i], why,
                                  why_len)) < 0) {
            mms_engine_close(&e[i]);
            if (d->all && i > 0 && rc == MMS_ENODEV)
                return 0; /* every device has its engine */
            while (*n > 0)
                mms_engine_close(&e[--*n]);
            return rc;
        }
        ++*n;
        if (d->all && strcmp(mms_backend_name(e[0].be), "cpu") == 0)
            break;
    }
    return 0;
}

static void
close_engines(struct mms_engine *e, int *n)
{
    while (*n > 0)
        mms_engine_close(&e[--*n]);
}

/* "cpu", "cuda:0", "cuda:0, cuda:1": the engines, for the log. */
static void
describe_engines(const struct mms_engine *e, int n, char *out, size_t len)
{
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; i < n && used < len; i++) {
        char one[32];
        mms_engine_describe(&e[i], one, sizeof one);
        used += (size_t)snprintf(out + used, len - used, "%s%s", i > 0 ? ", " : "", one);
    }
}

static void
run_job(struct jworker *w)
{
    struct mms_jobs *J = w->J;
    struct mms_job_row j = {.id = w->job, .run = w->run};
    snprintf(j.series_uid, sizeof j.series_uid, "%s", w->series);
    struct files f = {0};
    struct mms_header *hdr = NULL;
    struct mms_work_result wr;
    char why[1024] = "", seg_series[65], sop[65], tmp[4400] = "", png[4400] = "", sc[4400] = "",
         rt[4400] = "";
    memset(&wr, 0, sizeof wr);

    mms_log(MMS_LOG_INFO, "job %" PRId64 ": series %s, run %" PRId64, j.id, j.series_uid, j.run);
    taken_engine = -1;
    int rc = read_series(J, j.series_uid, &f, &hdr, why, sizeof why);
    if (rc == 0) {
        struct mms_work_opts wo = J->wo;
        wo.run = (int)j.run;
        wo.take_engine = take_engine;
        wo.give_engine = give_engine;
        wo.engine_arg = J;
        mms_work_output_uids("seg", J->engine[0].sha256, j.series_uid, (int)j.run, seg_series, sop);
        snprintf(tmp, sizeof tmp, "%s/tmp/%s.dcm", J->node_dir, sop);
        snprintf(png, sizeof png, "%s/tmp/%s.png", J->node_dir, sop);
        wo.seg_path = tmp;
        wo.preview_path = png;
        if (wo.preview_sc) {
            char sc_series[65], sc_sop[65];
            mms_work_output_uids("sc", J->engine[0].sha256, j.series_uid, (int)j.run, sc_series,
                                 sc_sop);
            snprintf(sc, sizeof sc, "%s/tmp/%s.sc.dcm", J->node_dir, sc_sop);
            wo.sc_path = sc;
        }
        if (wo.rtstruct) {
            char rt_series[65], rt_sop[65];
            mms_work_output_uids("rtstruct", J->engine[0].sha256, j.series_uid, (int)j.run,
                                 rt_series, rt_sop);
            snprintf(rt, sizeof rt, "%s/tmp/%s.rtstruct.dcm", J->node_dir, rt_sop);
            wo.rtstruct_path = rt;
        }
        rc = mms_work_series(&J->engine[0], (const char *const *)f.paths, hdr, f.n, &wo, &wr, why,
                             sizeof why);
    }
    int sent_to = 0;
    if (rc == 0 && wr.seg_written) {
        const char *files[4] = {tmp};
        int n_files = 1;
        if (wr.rtstruct_written)
            files[n_files++] = rt;
        if (wr.preview_written)
            files[n_files++] = png;
        if (wr.sc_written)
            files[n_files++] = sc;
        /* the SEG is in tmp/, which the next start empties: the job runs again */
        MMS_CRASH_POINT("job.after-seg-write");
        rc = mms_outbox_put(J->state_dir, J->ix, j.id, j.series_uid, files, n_files,
                            (const char *const *)J->dests, J->n_dests, mms_wall_s(), why,
                            sizeof why);
        if (rc == MMS_ENOENT) { /* another node took the job over: its run delivers */
            char ignored[256];
            mms_outbox_release(J->state_dir, J->ix, j.id, ignored, sizeof ignored);
        }
        if (rc < 0)
            wr.stage = MMS_STAGE_OUTPUT;
        else
            mms_log(MMS_LOG_INFO, "job %" PRId64 ": SEG %s/outbox/%" PRId64 "/%s.dcm%s%s%s%s", j.id,
                    J->state_dir, j.id, sop, wr.preview_written ? ", preview " : "",
                    wr.preview_written ? strrchr(png, '/') + 1 : "",
                    wr.sc_written ? ", Secondary Capture " : "",
                    wr.sc_written ? strrchr(sc, '/') + 1 : "");
        sent_to = J->n_dests;
    }
    if (tmp[0] != '\0' && (rc < 0 || !wr.seg_written)) {
        unlink(tmp);
        unlink(png);
        if (sc[0] != '\0')
            unlink(sc);
        if (rt[0] != '\0')
            unlink(rt);
    }

    if (wr.st.network_s > 0.0) { /* the sliding window finished: count it by backend */
        pthread_mutex_lock(&J->mu);
        J->backend_jobs[strncmp(wr.engine, "cpu", 3) == 0 ? 0 : 1]++;
        pthread_mutex_unlock(&J->mu);
    }
    double now = mms_wall_s();
    j.finished = now;
    j.decode_s = wr.decode_s;
    j.wait_s = wr.wait_s;
    j.preprocess_s = wr.st.preprocess_s;
    j.network_s = wr.st.network_s;
    j.export_s = wr.st.export_s;
    j.write_s = wr.write_s;
    j.total_s = wr.total_s;
    j.segments = wr.seg.segments;
    j.frames = wr.seg.frames;
    snprintf(j.stage, sizeof j.stage, "%s", mms_stage_name(wr.stage));
    char reason[600] = "";
    if (rc < 0) {
        j.state = MMS_JOB_FAILED;
        snprintf(j.reason, sizeof j.reason, "%s", why[0] ? why : mms_strerror(rc));
        snprintf(reason, sizeof reason, "%s: %s", j.stage, j.reason);
        mms_log(MMS_LOG_ERR, "job %" PRId64 " failed at %s: %s", j.id, j.stage, j.reason);
    } else {
        j.state = MMS_JOB_DONE;
        /* what the memory limit made the job give up (mms_work_plan), on its row */
        const char *given_up = (wr.degraded & MMS_DEGRADE_NO_TTA) != 0
                                   ? "one tile per network call and no mirroring (no TTA)"
                               : (wr.degraded & MMS_DEGRADE_BATCH) != 0
                                   ? "one tile per network call"
                                   : NULL;
        char cpu[600] = "";
        if (wr.fallback[0] != '\0')
            snprintf(cpu, sizeof cpu, "ran on the CPU: %s", wr.fallback);
        snprintf(j.reason, sizeof j.reason, "%s%s%s%s%s%s",
                 wr.seg_written ? "" : "no organ found: no SEG",
                 given_up != NULL && !wr.seg_written ? "; " : "",
                 given_up != NULL ? "within the memory limits only with " : "",
                 given_up != NULL ? given_up : "",
                 cpu[0] != '\0' && (given_up != NULL || !wr.seg_written) ? "; " : "", cpu);
        snprintf(reason, sizeof reason, "%s", j.reason);
        mms_log(MMS_LOG_NOTICE,
                "job %" PRId64 " done in %.2f s on engine %d of %d (%s; decode %.2f, wait %.2f, "
                "preprocess %.2f, network %.2f, export %.2f, SEG %.2f s); %s%" PRId64
                " segments, %" PRId64 " frames, to %d destination%s",
                j.id, j.total_s, taken_engine + 1, J->n_engines, wr.engine, j.decode_s, j.wait_s,
                j.preprocess_s, j.network_s, j.export_s, j.write_s,
                wr.seg_written ? "" : "no SEG: ", j.segments, j.frames, sent_to,
                sent_to == 1 ? "" : "s");
    }
    /* the sends are recorded, the job's end is not: mms_jobs_recover() finishes it */
    if (rc == 0 && sent_to > 0)
        MMS_CRASH_POINT("job.after-outbox");
    if (mms_index_job_finish(J->ix, &j, rc < 0 ? MMS_SERIES_FAILED : MMS_SERIES_DONE, reason, now,
                             why, sizeof why) < 0)
        mms_log(MMS_LOG_ERR, "job %" PRId64 ": recording its end failed: %s", j.id, why);
    for (int i = 0; i < f.n; i++)
        free(f.paths[i]);
    free(f.paths);
    free(hdr);
}

static void *
worker_main(void *arg)
{
    struct jworker *w = arg;
    struct mms_jobs *J = w->J;
    char name[16];
    snprintf(name, sizeof name, "mms-job%zu", (size_t)(w - J->w));
    pthread_setname_np(pthread_self(), name); /* what a crash report and ps -L show */
    mms_crash_thread_init(); /* a stack overflow in a job still reaches the handler */
    pthread_mutex_lock(&J->mu);
    for (;;) {
        while (!w->has_task && !J->stopping)
            pthread_cond_wait(&J->wake, &J->mu);
        if (!w->has_task)
            break;
        w->has_task = false;
        pthread_mutex_unlock(&J->mu);
        char marker[4200];
        snprintf(marker, sizeof marker, "%s/" MARKER_PREFIX "%zu", J->node_dir, (size_t)(w - J->w));
        marker_set(marker, w->job);
        mms_stage_set("job %" PRId64 " (series %s, run %" PRId64 ")", w->job, w->series, w->run);
        run_job(w);
        mms_stage_clear();
        mms_crash_marker_disarm();
        unlink(marker);
        pthread_mutex_lock(&J->mu);
        w->finished = true;
        uv_async_send(&J->done);
    }
    pthread_mutex_unlock(&J->mu);
    mms_crash_thread_fini();
    return NULL;
}

/* ---------------------------------------------------------------------------- the loop */

/* Put the engine loaded on SIGHUP in place once no job uses the old one. */
static void
try_swap(struct mms_jobs *J)
{
    if (!J->swap_pending || mms_jobs_running(J) > 0)
        return;
    close_engines(J->engine, &J->n_engines);
    memcpy(J->engine, J->next, sizeof J->next);
    J->n_engines = J->n_next;
    memset(J->engine_jobs, 0, sizeof J->engine_jobs);
    memset(J->next, 0, sizeof J->next);
    J->n_next = 0;
    J->engine_ok = true;
    J->swap_pending = false;
    const struct mms_card *card = mms_engine_card(&J->engine[0]);
    mms_log(MMS_LOG_NOTICE, "reload: now using model %s %s, sha256 %s", card->name, card->version,
            J->engine[0].sha256);
}

void
mms_jobs_kick(struct mms_jobs *J)
{
    char why[1024], series[65];
    if (J == NULL || J->stopping)
        return;
    try_swap(J);
    if (!J->engine_ok || J->swap_pending) /* no model, or a new one waiting to take over */
        return;
    for (size_t i = 0; i < J->n_workers; i++) {
        struct jworker *w = &J->w[i];
        if (w->busy)
            continue;
        int64_t id, run;
        int rc = mms_index_job_claim(J->ix, J->node, mms_wall_s(), J->lease_s, series, &id, &run,
                                     why, sizeof why);
        if (rc == MMS_ENOENT) /* nothing queued */
            return;
        if (rc < 0) {
            mms_log(MMS_LOG_ERR, "the next job could not start: %s", why);
            return;
        }
        w->busy = true;
        pthread_mutex_lock(&J->mu);
        w->job = id;
        w->run = run;
        snprintf(w->series, sizeof w->series, "%s", series);
        w->has_task = true;
        pthread_cond_broadcast(&J->wake);
        pthread_mutex_unlock(&J->mu);
    }
}

static void
on_done(uv_async_t *a)
{
    struct mms_jobs *J = a->data;
    pthread_mutex_lock(&J->mu);
    for (size_t i = 0; i < J->n_workers; i++)
        if (J->w[i].finished) {
            J->w[i].finished = false;
            J->w[i].busy = false;
        }
    pthread_mutex_unlock(&J->mu);
    mms_sender_kick(J->sender);
    mms_jobs_kick(J);
}

const struct mms_engine *
mms_jobs_engine(const struct mms_jobs *J)
{
    return J != NULL && J->engine_ok ? &J->engine[0] : NULL;
}

void
mms_jobs_engines(struct mms_jobs *J, char names[][32], int64_t *jobs, int *n)
{
    *n = 0;
    if (J == NULL || !J->engine_ok)
        return;
    pthread_mutex_lock(&J->mu);
    for (int i = 0; i < J->n_engines; i++) {
        mms_engine_describe(&J->engine[i], names[i], 32);
        jobs[i] = J->engine_jobs[i];
    }
    *n = J->n_engines;
    pthread_mutex_unlock(&J->mu);
}

void
mms_jobs_backend_counts(struct mms_jobs *J, int64_t counts[2])
{
    counts[0] = counts[1] = 0;
    if (J == NULL)
        return;
    pthread_mutex_lock(&J->mu);
    counts[0] = J->backend_jobs[0];
    counts[1] = J->backend_jobs[1];
    pthread_mutex_unlock(&J->mu);
}

int
mms_jobs_gpu_memory(struct mms_jobs *J, int *device, size_t *used, size_t *total)
{
    int n = 0;
    if (J == NULL || !J->engine_ok)
        return 0;
    pthread_mutex_lock(&J->mu);
    for (int i = 0; i < J->n_engines; i++) {
        size_t fr, tot;
        bool seen = false;
        for (int k = 0; k < n; k++)
            seen |= device[k] == J->engine[i].device;
        if (seen || J->engine[i].device_free == 0 ||
            mms_backend_memory(J->engine[i].be, &fr, &tot) < 0)
            continue;
        device[n] = J->engine[i].device;
        used[n] = tot - fr;
        total[n] = tot;
        n++;
    }
    pthread_mutex_unlock(&J->mu);
    return n;
}

size_t
mms_jobs_running(const struct mms_jobs *J)
{
    size_t n = 0;
    for (size_t i = 0; J != NULL && i < J->n_workers; i++)
        n += J->w[i].busy;
    return n;
}

/* ---------------------------------------------------------------------------- start, stop */

static bool
same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

void
mms_jobs_reload_model(struct mms_jobs *J, const char *model)
{
    struct stat st;
    char why[1024];
    if (J == NULL || J->stopping || !J->infer)
        return;
    bool same_path = strcmp(model, J->model_path) == 0;
    /* a model set (a list) is loaded again and compared by its digest */
    bool set = strchr(model, ',') != NULL;
    memset(&st, 0, sizeof st);
    if (!set && stat(model, &st) != 0) {
        mms_log(MMS_LOG_ERR, "reload: model %s: %s; keeping the running model", model,
                mms_strerror(mms_err_errno()));
        return;
    }
    if (!set && same_path && same_file(&st, &J->model_st) && J->engine_ok)
        return; /* unchanged */
    struct mms_engine e[MMS_MAX_ENGINES];
    int n = 0;
    if (open_engines(J, model, e, &n, why, sizeof why) < 0) {
        mms_log(MMS_LOG_ERR, "reload: %s; keeping the %s", why,
                J->engine_ok ? "running model" : "queue waiting");
        return;
    }
    char *path = strdup(model);
    if (path == NULL) {
        close_engines(e, &n);
        mms_log(MMS_LOG_ERR, "reload: out of memory; keeping the running model");
        return;
    }
    free(J->model_path);
    J->model_path = path;
    J->model_st = st;
    if (J->engine_ok && strcmp(e[0].sha256, J->engine[0].sha256) == 0) {
        close_engines(e, &n);
        mms_log(MMS_LOG_INFO, "reload: model %s has the same SHA-256; nothing changes", model);
        return;
    }
    if (J->swap_pending)
        close_engines(J->next, &J->n_next);
    memcpy(J->next, e, sizeof e);
    J->n_next = n;
    J->swap_pending = true;
    if (mms_jobs_running(J) > 0)
        mms_log(MMS_LOG_NOTICE,
                "reload: model %s loaded; it takes over when the %zu running "
                "job%s end",
                model, mms_jobs_running(J), mms_jobs_running(J) == 1 ? "s" : "");
    mms_jobs_kick(J);
}

static void
free_jobs(struct mms_jobs *J)
{
    close_engines(J->engine, &J->n_engines);
    close_engines(J->next, &J->n_next);
    free(J->model_path);
    for (int i = 0; i < J->n_dests; i++)
        free(J->dests[i]);
    free(J->dests);
    free(J->w);
    free(J->state_dir);
    free(J->node_dir);
    free(J->description);
    pthread_cond_destroy(&J->engine_free);
    pthread_mutex_destroy(&J->mu);
    pthread_cond_destroy(&J->wake);
    free(J);
}

static void
on_closed(uv_handle_t *h)
{
    free_jobs(h->data);
}

int
mms_jobs_start(uv_loop_t *loop, struct mms_index *ix, struct mms_sender *sender,
               const struct mms_config *cfg, struct mms_jobs **out, char *why, size_t why_len)
{
    struct mms_jobs *J = calloc(1, sizeof *J);
    if (J == NULL)
        return mms_why(why, why_len, MMS_ENOMEM, "out of memory");
    pthread_cond_init(&J->engine_free, NULL);
    pthread_mutex_init(&J->mu, NULL);
    pthread_cond_init(&J->wake, NULL);
    J->ix = ix;
    J->sender = sender;
    char node_dir[4200];
    mms_config_node_dir(cfg, node_dir, sizeof node_dir);
    J->node_dir = strdup(node_dir);
    snprintf(J->node, sizeof J->node, "%s", cfg->daemon.node);
    J->lease_s = cfg->daemon.lease_s;
    J->infer = (cfg->daemon.roles_mask & MMS_ROLE_INFER) != 0;
    const char *backend;
    mms_work_opts_from_config(cfg, &J->wo, &backend);
    J->n_workers = cfg->daemon.workers > 0 ? cfg->daemon.workers : 1;
    J->state_dir = strdup(cfg->daemon.state_dir);
    J->description = strdup(cfg->seg.series_description != NULL ? cfg->seg.series_description : "");
    J->dests = calloc(cfg->n_dests + 1, sizeof *J->dests);
    J->w = calloc(J->n_workers, sizeof *J->w);
    bool ok = J->state_dir != NULL && J->node_dir != NULL && J->description != NULL &&
              J->dests != NULL && J->w != NULL;
    for (size_t i = 0; ok && i < cfg->n_dests; i++)
        ok = (J->dests[J->n_dests++] = strdup(cfg->dests[i].name)) != NULL;
    if (!ok) {
        free_jobs(J);
        return mms_why(why, why_len, MMS_ENOMEM, "out of memory");
    }
    J->wo.seg_description = J->description;
    J->backend = backend; /* a static string */
    J->devices = cfg->infer.devices;
    J->precision = (int)cfg->infer.precision;
    J->threads = (int)cfg->infer.threads;
    if ((J->model_path = strdup(cfg->infer.model)) == NULL) {
        free_jobs(J);
        return mms_why(why, why_len, MMS_ENOMEM, "out of memory");
    }
    if (stat(J->model_path, &J->model_st) != 0)
        memset(&J->model_st, 0, sizeof J->model_st);

    char ewhy[1024];
    double t0 = mms_mono_s();
    if (!J->infer) {
        mms_log(MMS_LOG_NOTICE, "node %s runs no jobs (roles = %s): other nodes take its series",
                cfg->daemon.node, cfg->daemon.roles);
    } else if (open_engines(J, cfg->infer.model, J->engine, &J->n_engines, ewhy, sizeof ewhy) ==
               0) {
        J->engine_ok = true;
        const struct mms_card *card = mms_engine_card(&J->engine[0]);
        char on[256];
        describe_engines(J->engine, J->n_engines, on, sizeof on);
        mms_log(MMS_LOG_NOTICE, "model %s %s (%s), sha256 %s, on %s; loaded in %.2f s", card->name,
                card->version, cfg->infer.model, J->engine[0].sha256, on, mms_mono_s() - t0);
        if (J->n_engines > 1 && J->wo.pipe.threads == 0) { /* the pipelines share the cores */
            long cpus = mms_work_infer_cpu_count();
            J->wo.pipe.threads = cpus / J->n_engines > 1 ? (int)(cpus / J->n_engines) : 1;
        }
    } else {
        mms_log(MMS_LOG_ERR,
                "%s; series stay queued until the daemon is restarted with a valid [infer] model",
                ewhy);
    }

    if (uv_async_init(loop, &J->done, on_done) < 0) {
        free_jobs(J);
        return mms_why(why, why_len, MMS_EIO, "jobs: uv_async_init failed");
    }
    J->done.data = J;
    for (size_t i = 0; i < J->n_workers; i++) {
        J->w[i].J = J;
        int e = pthread_create(&J->w[i].thread, NULL, worker_main, &J->w[i]);
        if (e != 0) {
            mms_why(why, why_len, MMS_EIO, "job thread: %s", mms_strerror(-e));
            mms_jobs_stop(J);
            return MMS_EIO;
        }
        J->w[i].started = true;
    }
    *out = J;
    mms_jobs_kick(J);
    return 0;
}

void
mms_jobs_stop(struct mms_jobs *J)
{
    if (J == NULL)
        return;
    pthread_mutex_lock(&J->mu);
    J->stopping = true;
    pthread_cond_broadcast(&J->wake);
    pthread_mutex_unlock(&J->mu);
    size_t running = mms_jobs_running(J);
    if (running > 0)
        mms_log(MMS_LOG_NOTICE, "waiting for %zu running job%s to finish", running,
                running == 1 ? "" : "s");
    for (size_t i = 0; i < J->n_workers; i++)
        if (J->w[i].started)
            pthread_join(J->w[i].thread, NULL);
    uv_close((uv_handle_t *)&J->done, on_closed);
}
