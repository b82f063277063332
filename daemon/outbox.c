/* daemon/outbox: outbox/JOB/ and dead/JOB-DESTINATION/ on disk, sends in the index
 * (outbox.h). */
#include "daemon/outbox.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/crashpoint.h"
#include "common/err.h"
#include "common/fs.h"
#include "common/grow.h"

#define PATH_CAP 4400
/* The longest state_dir: with a job number, a destination name (64) and a file name (255)
 * every path here fits PATH_CAP. */
#define STATE_DIR_MAX 4000

/* snprintf for paths; they fit (STATE_DIR_MAX is checked on entry). */
static void __attribute__((format(printf, 3, 4)))
path_fmt(char *out, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, len, fmt, ap);
    va_end(ap);
}

static int
check_state_dir(const char *state_dir, char *why, size_t why_len)
{
    if (state_dir == NULL || strlen(state_dir) > STATE_DIR_MAX)
        return mms_why(why, why_len, MMS_ENAMETOOLONG, "no state_dir, or one too long");
    return 0;
}

static void
job_dir(const char *state_dir, int64_t job, char *out, size_t len)
{
    path_fmt(out, len, "%s/outbox/%" PRId64, state_dir, job);
}

void
mms_outbox_dead_name(int64_t job, const char *destination, char *out, size_t len)
{
    snprintf(out, len, "dead/%" PRId64 "-%s", job, destination);
}

/* Make state_dir/SUB (and fsync state_dir when it is new). */
static int
sub_dir(const char *state_dir, const char *sub, char *out, size_t len)
{
    path_fmt(out, len, "%s/%s", state_dir, sub);
    if (access(out, F_OK) == 0)
        return 0;
    int rc = mms_fs_mkdir(out);
    return rc < 0 ? rc : mms_fs_fsync_dir(state_dir);
}

int
mms_outbox_put(const char *state_dir, struct mms_index *ix, int64_t job, const char *series_uid,
               const char *const *paths, int n, const char *const *destinations, int n_dests,
               double now, char *why, size_t why_len)
{
    char outbox[PATH_CAP], dir[PATH_CAP], dst[PATH_CAP];
    int rc;
    if ((rc = check_state_dir(state_dir, why, why_len)) < 0)
        return rc;
    if (ix == NULL || paths == NULL || n < 1 || job < 0)
        return mms_why(why, why_len, MMS_EINVAL, "no index, job or files");
    for (int i = 0; i < n; i++) {
        const char *base = strrchr(paths[i], '/');
        base = base != NULL ? base + 1 : paths[i];
        if (base[0] == '\0' || base[0] == '.' || strcmp(base, "why") == 0)
            return mms_why(why, why_len, MMS_EINVAL, "%s: not a name for the outbox", paths[i]);
    }
    if ((rc = sub_dir(state_dir, "outbox", outbox, sizeof outbox)) < 0)
        return mms_why(why, why_len, rc, "%s: %s", outbox, mms_strerror(rc));
    job_dir(state_dir, job, dir, sizeof dir);
    if ((rc = mms_fs_remove_dir(dir)) < 0 || (rc = mms_fs_mkdir(dir)) < 0)
        return mms_why(why, why_len, rc, "%s: %s", dir, mms_strerror(rc));
    for (int i = 0; i < n; i++) {
        const char *base = strrchr(paths[i], '/');
        path_fmt(dst, sizeof dst, "%s/%s", dir, base != NULL ? base + 1 : paths[i]);
        if ((rc = mms_fs_fsync(paths[i])) < 0 ||
            (rename(paths[i], dst) != 0 && (rc = mms_err_errno()) < 0))
            return mms_why(why, why_len, rc, "%s -> %s: %s", paths[i], dst, mms_strerror(rc));
    }
    if ((rc = mms_fs_fsync_dir(dir)) < 0 || (rc = mms_fs_fsync_dir(outbox)) < 0)
        return mms_why(why, why_len, rc, "fsync %s: %s", dir, mms_strerror(rc));
    if (n_dests < 1) /* nowhere to send it: nothing pending, nothing to keep */
        return mms_outbox_release(state_dir, ix, job, why, why_len);
    /* the files are in outbox/JOB, no send names them yet: the job runs again */
    MMS_CRASH_POINT("outbox.before-sends");
    return mms_index_result_sends(ix, job, series_uid, destinations, n_dests, now, why, why_len);
}

static int
by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void
mms_outbox_list_free(char **list, int n)
{
    for (int i = 0; list != NULL && i < n; i++)
        free(list[i]);
    free(list);
}

/* The plain files of dir, except `skip` (NULL: none), ending with suffix (NULL: all), sorted,
 * as paths. */
static int
list_dir(const char *dir, const char *suffix, const char *skip, char ***out, char *why,
         size_t why_len)
{
    *out = NULL;
    DIR *d = opendir(dir);
    if (d == NULL) {
        int rc = mms_err_errno();
        return mms_why(why, why_len, rc, "%s: %s", dir, mms_strerror(rc));
    }
    char **list = NULL;
    int n = 0, cap = 0, rc = 0;
    size_t sl = suffix != NULL ? strlen(suffix) : 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        size_t l = strlen(e->d_name);
        if (e->d_name[0] == '.' || (skip != NULL && strcmp(e->d_name, skip) == 0) || l < sl ||
            (sl > 0 && strcmp(e->d_name + l - sl, suffix) != 0))
            continue;
        void *grown = mms_grow(list, &cap, n, sizeof *list, 8);
        if (grown == NULL) {
            rc = MMS_ENOMEM;
            break;
        }
        list = grown;
        size_t len = strlen(dir) + l + 2;
        if ((list[n] = malloc(len)) == NULL) {
            rc = MMS_ENOMEM;
            break;
        }
        snprintf(list[n++], len, "%s/%s", dir, e->d_name);
    }
    closedir(d);
    if (rc < 0) {
        mms_outbox_list_free(list, n);
        return mms_why(why, why_len, rc, "out of memory");
    }
    if (n > 1)
        qsort(list, (size_t)n, sizeof *list, by_name);
    *out = list;
    return n;
}

int
mms_outbox_list(const char *state_dir, int64_t job, const char *suffix, char ***out, char *why,
                size_t why_len)
{
    char dir[PATH_CAP];
    int rc = check_state_dir(state_dir, why, why_len);
    if (rc < 0)
        return rc;
    job_dir(state_dir, job, dir, sizeof dir);
    return list_dir(dir, suffix, NULL, out, why, why_len);
}

/* Hard-link (or copy, across file systems) every file of list into dir. */
static int
link_into(char **list, int n, const char *dir, char *why, size_t why_len)
{
    char dst[PATH_CAP];
    for (int i = 0; i < n; i++) {
        path_fmt(dst, sizeof dst, "%s/%s", dir, strrchr(list[i], '/') + 1);
        unlink(dst);
        if (link(list[i], dst) == 0)
            continue;
        int rc = errno == EXDEV || errno == EPERM ? mms_fs_copy(list[i], dst) : mms_err_errno();
        if (rc < 0)
            return mms_why(why, why_len, rc, "%s -> %s: %s", list[i], dst, mms_strerror(rc));
    }
    int rc = mms_fs_fsync_dir(dir);
    return rc < 0 ? mms_why(why, why_len, rc, "fsync %s: %s", dir, mms_strerror(rc)) : 0;
}

int
mms_outbox_bury(const char *state_dir, int64_t job, const char *destination, const char *reason,
                char *why, size_t why_len)
{
    char dead[PATH_CAP], tmp[PATH_CAP], name[64], final[PATH_CAP], rel[PATH_CAP];
    char **list = NULL;
    int n = 0, rc;
    if ((rc = check_state_dir(state_dir, why, why_len)) < 0)
        return rc;
    if ((rc = sub_dir(state_dir, "dead", dead, sizeof dead)) < 0)
        return mms_why(why, why_len, rc, "%s: %s", dead, mms_strerror(rc));
    if ((rc = mms_fs_random_name(".new", name, sizeof name)) < 0)
        return mms_why(why, why_len, rc, "getrandom: %s", mms_strerror(rc));
    path_fmt(tmp, sizeof tmp, "%s/%s", dead, name);
    if ((rc = mms_fs_mkdir(tmp)) < 0)
        return mms_why(why, why_len, rc, "%s: %s", tmp, mms_strerror(rc));
    if ((n = mms_outbox_list(state_dir, job, NULL, &list, why, why_len)) < 0 && n != MMS_ENOENT) {
        rc = n;
        goto fail;
    }
    if (n > 0 && (rc = link_into(list, n, tmp, why, why_len)) < 0)
        goto fail;
    char note[PATH_CAP];
    path_fmt(note, sizeof note, "%s/why", tmp);
    FILE *f = fopen(note, "wex");
    if (f == NULL ||
        fprintf(f, "job %" PRId64 " to destination %s: %s\n", job, destination, reason) < 0 ||
        fflush(f) != 0 || fsync(fileno(f)) != 0) {
        rc = mms_err_errno();
        if (f != NULL)
            fclose(f);
        mms_why(why, why_len, rc, "%s: %s", note, mms_strerror(rc));
        goto fail;
    }
    fclose(f);
    mms_outbox_dead_name(job, destination, rel, sizeof rel);
    path_fmt(final, sizeof final, "%s/%s", state_dir, rel);
    if ((rc = mms_fs_fsync_dir(tmp)) < 0 || (rc = mms_fs_remove_dir(final)) < 0 ||
        (rename(tmp, final) != 0 && (rc = mms_err_errno()) < 0) ||
        (rc = mms_fs_fsync_dir(dead)) < 0) {
        mms_why(why, why_len, rc, "%s: %s", final, mms_strerror(rc));
        goto fail;
    }
    mms_outbox_list_free(list, n);
    return 0;
fail:
    mms_outbox_list_free(list, n > 0 ? n : 0);
    mms_fs_remove_dir(tmp);
    return rc;
}

static int
note_pending(void *ud, const struct mms_send_row *r)
{
    (void)r;
    *(int *)ud = 1;
    return 1;
}

int
mms_outbox_release(const char *state_dir, struct mms_index *ix, int64_t job, char *why,
                   size_t why_len)
{
    int pending = 0;
    int rc = check_state_dir(state_dir, why, why_len);
    if (rc == 0)
        rc = mms_index_sends(ix, MMS_SEND_PENDING, job, note_pending, &pending, why, why_len);
    if (rc < 0 || pending)
        return rc;
    char dir[PATH_CAP], outbox[PATH_CAP];
    job_dir(state_dir, job, dir, sizeof dir);
    path_fmt(outbox, sizeof outbox, "%s/outbox", state_dir);
    if ((rc = mms_fs_remove_dir(dir)) < 0 || (rc = mms_fs_fsync_dir(outbox)) < 0)
        return mms_why(why, why_len, rc, "remove %s: %s", dir, mms_strerror(rc));
    return 0;
}

/* The running jobs' numbers. */
struct running {
    int64_t *ids;
    int n, cap;
    bool no_memory;
};

static int
note_running(void *ud, const struct mms_job_row *j)
{
    struct running *r = ud;
    void *grown = mms_grow(r->ids, &r->cap, r->n, sizeof *r->ids, 8);
    if (grown == NULL) {
        r->no_memory = true; /* then every folder counts as running: none is swept */
        return 1;
    }
    r->ids = grown;
    r->ids[r->n++] = j->id;
    return 0;
}

static bool
is_running(const struct running *r, int64_t job)
{
    for (int i = 0; i < r->n; i++)
        if (r->ids[i] == job)
            return true;
    return r->no_memory;
}

int
mms_outbox_sweep(const char *state_dir, struct mms_index *ix, int *removed, char *why,
                 size_t why_len)
{
    char outbox[PATH_CAP];
    *removed = 0;
    int rc = check_state_dir(state_dir, why, why_len);
    if (rc < 0)
        return rc;
    path_fmt(outbox, sizeof outbox, "%s/outbox", state_dir);
    DIR *d = opendir(outbox);
    if (d == NULL) {
        rc = mms_err_errno();
        return rc == MMS_ENOENT ? 0 : mms_why(why, why_len, rc, "%s: %s", outbox, mms_strerror(rc));
    }
    /* a job running here or on another node may be writing its folder: never swept */
    struct running run = {0};
    if ((rc = mms_index_jobs(ix, MMS_JOB_RUNNING, note_running, &run, why, why_len)) < 0) {
        closedir(d);
        free(run.ids);
        return rc;
    }
    /* the numbers first: the release removes entries while the directory is read */
    int64_t *jobs = NULL;
    int n = 0, cap = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        char *end;
        errno = 0;
        long long job = strtoll(e->d_name, &end, 10);
        if (e->d_name[0] < '0' || e->d_name[0] > '9' || *end != '\0' || errno != 0)
            continue; /* not a job's folder: never ours to remove */
        if (is_running(&run, (int64_t)job))
            continue;
        void *grown = mms_grow(jobs, &cap, n, sizeof *jobs, 16);
        if (grown == NULL) {
            rc = mms_why(why, why_len, MMS_ENOMEM, "out of memory");
            break;
        }
        jobs = grown;
        jobs[n++] = (int64_t)job;
    }
    closedir(d);
    free(run.ids);
    for (int i = 0; rc == 0 && i < n; i++) {
        char dir[PATH_CAP];
        job_dir(state_dir, jobs[i], dir, sizeof dir);
        if ((rc = mms_outbox_release(state_dir, ix, jobs[i], why, why_len)) == 0 &&
            access(dir, F_OK) != 0)
            ++*removed;
    }
    free(jobs);
    return rc;
}

struct collect {
    struct mms_send_row *rows;
    int n, cap;
    bool no_memory;
};

static int
collect_send(void *ud, const struct mms_send_row *r)
{
    struct collect *c = ud;
    if (r->state == MMS_SEND_DONE)
        return 0;
    void *grown = mms_grow(c->rows, &c->cap, c->n, sizeof *c->rows, 16);
    if (grown == NULL) {
        c->no_memory = true;
        return 1;
    }
    c->rows = grown;
    c->rows[c->n++] = *r;
    return 0;
}

/* Put the files of a dead send back into its job's outbox unless the outbox has files. */
static int
restore(const char *state_dir, const struct mms_send_row *r, char *why, size_t why_len)
{
    char **list = NULL, rel[PATH_CAP], dead[PATH_CAP], dir[PATH_CAP], outbox[PATH_CAP];
    int n = mms_outbox_list(state_dir, r->job, NULL, &list, why, why_len);
    mms_outbox_list_free(list, n > 0 ? n : 0);
    if (n > 0)
        return 0;
    mms_outbox_dead_name(r->job, r->destination, rel, sizeof rel);
    path_fmt(dead, sizeof dead, "%s/%s", state_dir, rel);
    if ((n = list_dir(dead, NULL, "why", &list, why, why_len)) <= 0)
        return mms_why(why, why_len, MMS_ENOENT,
                       "job %" PRId64 " to %s: its files are neither in the outbox nor in %s",
                       r->job, r->destination, rel);
    int rc = sub_dir(state_dir, "outbox", outbox, sizeof outbox);
    job_dir(state_dir, r->job, dir, sizeof dir);
    if (rc == 0)
        rc = mms_fs_mkdir(dir);
    if (rc < 0)
        mms_why(why, why_len, rc, "%s: %s", dir, mms_strerror(rc));
    else if ((rc = link_into(list, n, dir, why, why_len)) == 0 &&
             (rc = mms_fs_fsync_dir(outbox)) < 0)
        mms_why(why, why_len, rc, "fsync %s: %s", outbox, mms_strerror(rc));
    mms_outbox_list_free(list, n);
    return rc;
}

int
mms_outbox_resend(const char *state_dir, struct mms_index *ix, int64_t job, double now, int *count,
                  char *why, size_t why_len)
{
    struct collect c = {0};
    *count = 0;
    int rc = check_state_dir(state_dir, why, why_len);
    if (rc < 0)
        return rc;
    rc = mms_index_sends(ix, job < 0 ? MMS_SEND_DEAD : -1, job, collect_send, &c, why, why_len);
    if (rc == 0 && c.no_memory)
        rc = mms_why(why, why_len, MMS_ENOMEM, "out of memory");
    int first = 0;
    for (int i = 0; rc == 0 && i < c.n; i++) {
        const struct mms_send_row *r = &c.rows[i];
        const char *dest = r->destination;
        char local[512];
        int e = r->state == MMS_SEND_DEAD ? restore(state_dir, r, local, sizeof local) : 0;
        if (e == 0)
            e = mms_index_sends_add(ix, r->job, r->series_uid, &dest, 1, now, local, sizeof local);
        if (e == 0 && r->state == MMS_SEND_DEAD) {
            char rel[PATH_CAP], dead[PATH_CAP];
            mms_outbox_dead_name(r->job, dest, rel, sizeof rel);
            path_fmt(dead, sizeof dead, "%s/%s", state_dir, rel);
            mms_fs_remove_dir(dead); /* a leftover is harmless: the next bury replaces it */
        }
        if (e == 0)
            (*count)++;
        else if (first == 0) {
            first = e;
            mms_why(why, why_len, e, "%s", local);
        }
        if (e == MMS_EIO) /* the index failed: stop */
            rc = e;
    }
    free(c.rows);
    return rc < 0 ? rc : first;
}
