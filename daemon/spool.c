/* daemon/spool: tmp/ -> instances/ with fsync, rename, directory fsync and index commit
 * (design.md section 3). The header of each file is read in a sandbox child (sandbox.h), so
 * that a reader crash on received data refuses that instance and nothing else.
 * Threads: reentrant; the index serializes its own calls. */
#include "daemon/spool.h"

#include <dirent.h>
#include <pthread.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/crash.h"
#include "common/crashpoint.h"
#include "common/err.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/sha256.h"
#include "daemon/quarantine.h"
#include "daemon/sandbox.h"
#include "dicom/dicom.h"

struct mms_spool {
    char *state_dir;
    char tmp_dir[4096], inst_dir[4096], quarantine_dir[4096];
    struct mms_index *ix;
    mms_spool_notify_fn notify;
    void *ud;
    struct mms_sandbox_limits lim; /* of the header reader's child */
    pthread_mutex_t pool_mu;
    struct mms_sandbox_pool *pool; /* the header readers, started on first use */
};

/* A header reader's shared area: the path in, the header out. */
struct header_io {
    char path[4096];
    int rc;
    struct mms_header h;
    char digest[65];
    char why[512];
};

/* Header readers: a fork per file costs about as much as reading the header (a process with
 * the toolkits' libraries mapped), so a few long-lived workers serve every file. */
#define HEADER_WORKERS 4
#define HEADER_REQUESTS 1000 /* per worker, then a fresh one */

#define HEADER_TIMEOUT_S 60

int
mms_spool_open(const char *state_dir, const char *node_dir, struct mms_index *ix,
               mms_spool_notify_fn notify, void *ud, struct mms_spool **out, char *why,
               size_t why_len)
{
    struct mms_spool *sp = calloc(1, sizeof *sp);
    if (sp == NULL || (sp->state_dir = strdup(state_dir)) == NULL) {
        free(sp);
        return mms_why(why, why_len, MMS_ENOMEM, "out of memory");
    }
    sp->ix = ix;
    sp->notify = notify;
    sp->ud = ud;
    pthread_mutex_init(&sp->pool_mu, NULL);
    sp->lim = (struct mms_sandbox_limits){.max_memory = (size_t)MMS_SPOOL_DEFAULT_MEMORY_MB << 20,
                                          .cpu_s = HEADER_TIMEOUT_S,
                                          .timeout_ms = HEADER_TIMEOUT_S * 1000};
    snprintf(sp->tmp_dir, sizeof sp->tmp_dir, "%s/tmp", node_dir);
    snprintf(sp->inst_dir, sizeof sp->inst_dir, "%s/instances", state_dir);
    snprintf(sp->quarantine_dir, sizeof sp->quarantine_dir, "%s/quarantine", state_dir);
    const char *dirs[3] = {sp->tmp_dir, sp->inst_dir, sp->quarantine_dir};
    for (int i = 0; i < 3; i++) {
        int rc = mms_fs_mkdir(dirs[i]);
        if (rc < 0) {
            mms_why(why, why_len, rc, "%s: %s", dirs[i], mms_strerror(rc)); /* dirs[] is sp's */
            mms_spool_close(sp);
            return rc;
        }
    }
    /* whatever a crash left in tmp/ was never acknowledged */
    DIR *d = opendir(sp->tmp_dir);
    int removed = 0;
    for (struct dirent *e; d != NULL && (e = readdir(d)) != NULL;)
        if (e->d_name[0] != '.' && unlinkat(dirfd(d), e->d_name, 0) == 0)
            removed++;
    if (d != NULL)
        closedir(d);
    if (removed > 0)
        mms_log(MMS_LOG_NOTICE, "%s: removed %d unfinished file%s", sp->tmp_dir, removed,
                removed == 1 ? "" : "s");
    *out = sp;
    return 0;
}

void
mms_spool_close(struct mms_spool *sp)
{
    if (sp == NULL)
        return;
    mms_sandbox_pool_free(sp->pool);
    pthread_mutex_destroy(&sp->pool_mu);
    free(sp->state_dir);
    free(sp);
}

const char *
mms_spool_tmp_dir(const struct mms_spool *sp)
{
    return sp->tmp_dir;
}

void
mms_spool_set_limits(struct mms_spool *sp, size_t max_memory, unsigned timeout_s)
{
    sp->lim.max_memory = max_memory;
    sp->lim.cpu_s = timeout_s;
    sp->lim.timeout_ms = timeout_s * 1000;
}

int64_t
mms_spool_free_bytes(const struct mms_spool *sp)
{
    struct statvfs v;
    if (statvfs(sp->state_dir, &v) != 0)
        return mms_err_errno();
    return (int64_t)v.f_bavail * (int64_t)v.f_frsize;
}

static void
fill_row(const struct mms_header *h, const char *digest, const char *rel, int64_t size,
         const char *source, struct mms_instance_row *r)
{
    memset(r, 0, sizeof *r);
    snprintf(r->sop_instance, sizeof r->sop_instance, "%s", h->sop_instance);
    snprintf(r->sop_class, sizeof r->sop_class, "%s", h->sop_class);
    snprintf(r->study_uid, sizeof r->study_uid, "%s", h->study_uid);
    snprintf(r->series_uid, sizeof r->series_uid, "%s", h->series_uid);
    snprintf(r->modality, sizeof r->modality, "%s", h->modality);
    snprintf(r->image_type, sizeof r->image_type, "%s", h->image_type);
    snprintf(r->series_description, sizeof r->series_description, "%s", h->series_description);
    snprintf(r->body_part, sizeof r->body_part, "%s", h->body_part);
    snprintf(r->frame_of_ref, sizeof r->frame_of_ref, "%s", h->slice.frame_of_ref);
    snprintf(r->transfer_syntax, sizeof r->transfer_syntax, "%s", h->transfer_syntax);
    memcpy(r->ipp, h->slice.ipp, sizeof r->ipp);
    memcpy(r->iop, h->slice.iop, sizeof r->iop);
    r->has_geometry = h->has_geometry;
    r->rows = h->slice.rows;
    r->cols = h->slice.cols;
    r->frames = h->frames;
    r->acquisition = h->slice.acquisition;
    r->instance_number = h->instance_number;
    r->images_in_acquisition = h->images_in_acquisition;
    r->slice_thickness = h->slice_thickness;
    snprintf(r->digest, sizeof r->digest, "%s", digest);
    snprintf(r->path, sizeof r->path, "%s", rel);
    r->size = size;
    r->received = mms_wall_s();
    snprintf(r->source, sizeof r->source, "%s", source);
}

/* Rename tmp_path to dest unless dest exists. Returns 0 (renamed), 1 (dest exists, nothing
 * done) or -errno. */
static int
place(const char *tmp_path, const char *dest)
{
    if (renameat2(AT_FDCWD, tmp_path, AT_FDCWD, dest, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno == EEXIST)
        return 1;
    if (errno != EINVAL && errno != ENOSYS)
        return mms_err_errno();
    /* a file system without RENAME_NOREPLACE: a hard link fails on an existing name too */
    if (link(tmp_path, dest) != 0)
        return errno == EEXIST ? 1 : mms_err_errno();
    unlink(tmp_path);
    return 0;
}

/* The file stored at dest should have the data set of h, whose SHA-256 is digest: is it the
 * same instance, that is, does its file meta give that data set the same transfer syntax and
 * UIDs? Returns 0 (the same), 1 (the stored file is damaged: unreadable, or its data set is
 * not the one its name says; damage says how), or MMS_EDICOM (another instance: refused, the
 * stored file kept). */
static int
same_instance(const char *dest, const struct mms_header *h, const char *digest, char *damage,
              size_t damage_len, char *why, size_t why_len)
{
    struct mms_header o;
    char stored[65];
    int rc = mms_header_read_digest(dest, &o, stored, damage, damage_len);
    if (rc < 0)
        return 1;
    if (strcmp(stored, digest) != 0) {
        snprintf(damage, damage_len, "its data set has SHA-256 %.12s..., not %.12s...", stored,
                 digest);
        return 1;
    }
    const char *what = strcmp(o.transfer_syntax, h->transfer_syntax) != 0 ? "transfer syntax"
                       : strcmp(o.sop_instance, h->sop_instance) != 0     ? "SOP Instance UID"
                       : strcmp(o.sop_class, h->sop_class) != 0           ? "SOP Class UID"
                                                                          : NULL;
    if (what == NULL)
        return 0;
    return mms_why(why, why_len, MMS_EDICOM,
                   "the same data set is stored with another %s in its file meta "
                   "(stored %s, transfer syntax %s; received %s, transfer syntax %s); the "
                   "stored instance is kept",
                   what, o.sop_instance, o.transfer_syntax, h->sop_instance, h->transfer_syntax);
}

/* In a worker: read the header and digest of the file named in the area. */
static int
header_child(void *arg, void *shm, size_t len)
{
    struct header_io *io = shm;
    (void)arg, (void)len;
    io->rc = mms_header_read_digest(io->path, &io->h, io->digest, io->why, sizeof io->why);
    if (io->rc == 0 && mms_sandbox_test_crash("header", io->h.sop_instance))
        mms_sandbox_crash_now();
    return io->rc;
}

/* mms_header_read_digest() in a sandbox worker. A worker that does not return (crash,
 * timeout, memory ceiling, blocked system call) refuses the instance (MMS_EDICOM); a file
 * received on the network is then quarantined here (the drop folder quarantines its
 * original). */
static int
read_header(struct mms_spool *sp, const char *tmp_path, const char *source, struct mms_header *h,
            char digest[65], char *why, size_t why_len)
{
    struct header_io *io = malloc(sizeof *io);
    if (io == NULL)
        return mms_why(why, why_len, MMS_ENOMEM, "header reader: out of memory");
    int rc = 0;
    pthread_mutex_lock(&sp->pool_mu);
    if (sp->pool == NULL)
        rc = mms_sandbox_pool_new(header_child, sizeof *io, HEADER_WORKERS, HEADER_REQUESTS,
                                  &sp->lim, &sp->pool);
    pthread_mutex_unlock(&sp->pool_mu);
    struct mms_sandbox_result res;
    if (rc == 0 && strlen(tmp_path) >= sizeof io->path)
        rc = MMS_ENAMETOOLONG;
    if (rc == 0) {
        snprintf(io->path, sizeof io->path, "%s", tmp_path);
        rc = mms_sandbox_pool_run(sp->pool, io, sizeof io->path, io, sizeof *io, &res);
    }
    if (rc < 0) {
        mms_why(why, why_len, rc, "header reader: %s", mms_strerror(rc));
    } else if (res.outcome == MMS_SANDBOX_NOTSTART) {
        rc = mms_why(why, why_len, res.fn_rc, "header reader: %s", res.what);
    } else if (res.outcome != MMS_SANDBOX_OK) {
        /* refused for its content: mms_spool_ingest() quarantines it */
        mms_log(MMS_LOG_ERR, "%s: header parser %s", source, res.what);
        rc = mms_why(why, why_len, MMS_EDICOM, "header parser %s", res.what);
    } else if ((rc = io->rc) < 0) {
        mms_why(why, why_len, rc, "%s", io->why);
    } else {
        *h = io->h;
        memcpy(digest, io->digest, 65);
        digest[64] = '\0';
    }
    free(io);
    return rc;
}

/* Everything but the removal of tmp_path on failure. */
static int
ingest(struct mms_spool *sp, const char *tmp_path, const char *source, bool derive,
       struct mms_ingest *res, char *why, size_t why_len)
{
    char reason[512];
    res->bad_identity = false;
    int rc = mms_fs_fsync(tmp_path);
    if (rc < 0)
        return mms_why(why, why_len, rc, "fsync: %s", mms_strerror(rc));
    /* a crash here leaves a file in tmp/ that mms_spool_open() removes: never acknowledged */
    MMS_CRASH_POINT("spool.after-tmp-write");
    char digest[65];
    struct mms_header h;
    if ((rc = read_header(sp, tmp_path, source, &h, digest, reason, sizeof reason)) < 0)
        return mms_why(why, why_len, rc, "%s", reason);
    if (mms_sop_class_is_dicomdir(h.media_class) || mms_sop_class_is_dicomdir(h.sop_class))
        return mms_why(why, why_len, MMS_EDICOM, "a DICOMDIR, not an instance");
    if (h.sop_class[0] == '\0' || h.sop_instance[0] == '\0')
        return mms_why(why, why_len, MMS_EDICOM, "no SOP %s UID",
                       h.sop_class[0] == '\0' ? "Class" : "Instance");
    /* never cut to fit: two long UIDs with one prefix would be one instance */
    if (h.bad_uid[0] != '\0') {
        res->bad_identity = true;
        return mms_why(why, why_len, MMS_EDICOM, "%s", h.bad_uid);
    }
    res->derived_uids = false;
    if (h.series_uid[0] == '\0' || h.study_uid[0] == '\0') {
        if (!derive)
            return mms_why(why, why_len, MMS_EDICOM, "no %s Instance UID",
                           h.series_uid[0] == '\0' ? "Series" : "Study");
        if (h.slice.frame_of_ref[0] == '\0')
            return mms_why(why, why_len, MMS_EDICOM,
                           "no Series Instance UID and no Frame of Reference UID to derive one");
        mms_header_derive_uids(&h);
        res->derived_uids = true;
    }

    /* instances/xx/yy/DIGEST.dcm */
    char rel[512], dir1[4200], dir2[4210], dest[4400];
    snprintf(rel, sizeof rel, "instances/%.2s/%.2s/%s.dcm", digest, digest + 2, digest);
    snprintf(dir1, sizeof dir1, "%s/%.2s", sp->inst_dir, digest);
    snprintf(dir2, sizeof dir2, "%s/%.2s", dir1, digest + 2);
    snprintf(dest, sizeof dest, "%s/%s", sp->state_dir, rel);
    struct stat sb;
    bool made1 = stat(dir1, &sb) != 0, made2 = made1 || stat(dir2, &sb) != 0;
    if ((made1 && (rc = mms_fs_mkdir(dir1)) < 0) || (made2 && (rc = mms_fs_mkdir(dir2)) < 0))
        return mms_why(why, why_len, rc, "mkdir: %s", mms_strerror(rc));
    /* a new directory is durable once its parent is synced */
    if ((made1 && (rc = mms_fs_fsync_dir(sp->inst_dir)) < 0) ||
        (made2 && (rc = mms_fs_fsync_dir(dir1)) < 0))
        return mms_why(why, why_len, rc, "fsync: %s", mms_strerror(rc));
    if (stat(tmp_path, &sb) != 0) {
        rc = mms_err_errno();
        return mms_why(why, why_len, rc, "stat: %s", mms_strerror(rc));
    }
    int64_t size = (int64_t)sb.st_size;
    /* a stored file is never replaced by a rename: the same data set may come with other
     * file meta, which would change what the stored bytes mean */
    bool existed = false, repaired = false;
    char damage[512] = "";
    if ((rc = place(tmp_path, dest)) == 1) {
        if ((rc = same_instance(dest, &h, digest, damage, sizeof damage, why, why_len)) < 0) {
            res->bad_identity = rc == MMS_EDICOM;
            return rc;
        }
        existed = true;
        if (rc == 1) {
            /* the instance received is what the stored file should hold: it takes its place */
            if (rename(tmp_path, dest) != 0 || (rc = mms_fs_fsync_dir(dir2)) < 0) {
                rc = rc < 0 ? rc : mms_err_errno();
                return mms_why(why, why_len, rc, "repairing %s: %s", rel, mms_strerror(rc));
            }
            repaired = true;
            mms_log(MMS_LOG_WARNING,
                    "%s: the stored file %s was damaged (%s); replaced by the "
                    "instance received",
                    source, rel, damage);
        } else {
            unlink(tmp_path);
        }
        if (stat(dest, &sb) == 0)
            size = (int64_t)sb.st_size;
    } else if (rc < 0) {
        return mms_why(why, why_len, rc, "rename: %s", mms_strerror(rc));
    }
    if (!existed && (rc = mms_fs_fsync_dir(dir2)) < 0) {
        unlink(dest);
        return mms_why(why, why_len, rc, "fsync: %s", mms_strerror(rc));
    }
    /* a crash here leaves a file in instances/ without its row: never acknowledged, and the
     * same data set sent again finds it in place (place() returns 1) and indexes it */
    MMS_CRASH_POINT("spool.after-rename");

    struct mms_instance_row row;
    fill_row(&h, digest, rel, size, source, &row);
    char old[512] = "";
    if ((rc = mms_index_put(sp->ix, &row, &res->put, old, sizeof old, reason, sizeof reason)) < 0) {
        if (!existed) /* not indexed, so never acknowledged: gone */
            unlink(dest);
        return mms_why(why, why_len, rc, "index: %s", reason);
    }
    /* a repaired file changes no row, but the work on its series is due again */
    if (repaired && res->put == MMS_PUT_DUPLICATE) {
        if ((rc = mms_index_reopen(sp->ix, &row, reason, sizeof reason)) < 0)
            return mms_why(why, why_len, rc, "index: %s", reason);
        res->put = MMS_PUT_REPLACED;
    }
    if (res->put == MMS_PUT_REPLACED && old[0] != '\0' && strcmp(old, rel) != 0) {
        char old_abs[4400];
        snprintf(old_abs, sizeof old_abs, "%s/%s", sp->state_dir, old);
        if (unlink(old_abs) != 0 && errno != ENOENT)
            mms_log(MMS_LOG_WARNING, "%s: cannot remove the replaced file: %s", old_abs,
                    mms_strerror(mms_err_errno()));
    }
    snprintf(res->sop_instance, sizeof res->sop_instance, "%s", h.sop_instance);
    snprintf(res->series_uid, sizeof res->series_uid, "%s", h.series_uid);
    if (res->derived_uids)
        mms_log(MMS_LOG_WARNING,
                "%s: no Study or Series Instance UID; derived series %s from the content", source,
                h.series_uid);
    if (res->put != MMS_PUT_DUPLICATE && sp->notify != NULL)
        sp->notify(sp->ud, res->series_uid);
    return 0;
}

/* What an operator knows a source by: the drop folder path, or "C-STORE from AE@IP". */
static void
origin_of(const char *source, char *out, size_t len)
{
    if (strncmp(source, "drop:", 5) == 0)
        snprintf(out, len, "%s", source + 5);
    else
        snprintf(out, len, "C-STORE from %s", source);
}

/* Replace every occurrence of from in text (len bytes) by to. */
static void
replace_all(char *text, size_t len, const char *from, const char *to)
{
    size_t nf = strlen(from), nt = strlen(to);
    char *p = text;
    if (nf == 0)
        return;
    while ((p = strstr(p, from)) != NULL) {
        size_t tail = strlen(p + nf), at = (size_t)(p - text);
        if (at + nt + tail >= len)
            return;
        memmove(p + nt, p + nf, tail + 1);
        memcpy(p, to, nt);
        p += nt;
    }
}

int
mms_spool_ingest(struct mms_spool *sp, const char *tmp_path, const char *source, bool derive_uids,
                 struct mms_ingest *res, char *why, size_t why_len)
{
    res->quarantined[0] = '\0';
    bool stage = strncmp(source, "drop:", 5) != 0; /* the drop folder sets its own */
    if (stage)
        mms_stage_set("storing C-STORE data from %s", source);
    int rc = ingest(sp, tmp_path, source, derive_uids, res, why, why_len);
    if (stage)
        mms_stage_clear();
    if (rc == MMS_EDICOM) {
        /* refused for its content: kept for an operator, under the name the sender used */
        char origin[4200], qwhy[1024];
        origin_of(source, origin, sizeof origin);
        size_t tl = strlen(tmp_path);
        if (why != NULL && strncmp(why, tmp_path, tl) == 0 && strncmp(why + tl, ": ", 2) == 0)
            memmove(why, why + tl + 2, strlen(why + tl + 2) + 1); /* the caller names it */
        if (why != NULL)
            replace_all(why, why_len, tmp_path, origin);
        int q =
            mms_quarantine_put(sp->quarantine_dir, tmp_path, origin, why != NULL ? why : "refused",
                               res->quarantined, sizeof res->quarantined, qwhy, sizeof qwhy);
        size_t n = why != NULL ? strlen(why) : 0;
        if (why != NULL && n < why_len)
            snprintf(why + n, why_len - n, "; %s%s", q == 0 ? "quarantined as " : "",
                     q == 0 ? res->quarantined : qwhy);
        if (q != 0 && q != MMS_EEXIST)
            res->quarantined[0] = '\0';
    }
    if (rc < 0)
        unlink(tmp_path); /* gone already when quarantined */
    return rc;
}

int
mms_spool_quarantine(struct mms_spool *sp, const char *path, const char *origin, const char *reason)
{
    char why[1024];
    if (strncmp(origin, "drop:", 5) == 0) /* a source as mms_spool_ingest() takes it */
        origin += 5;
    int rc = mms_quarantine_put(sp->quarantine_dir, path, origin, reason, NULL, 0, why, sizeof why);
    if (rc < 0)
        mms_log(MMS_LOG_WARNING, "quarantine: %s: %s", origin, why);
    return rc;
}

const char *
mms_spool_quarantine_dir(const struct mms_spool *sp)
{
    return sp->quarantine_dir;
}

int
mms_spool_copy_in(struct mms_spool *sp, const char *src, char *tmp_path, size_t len)
{
    char name[64];
    int rc = mms_fs_random_name("drop", name, sizeof name);
    if (rc < 0)
        return rc;
    snprintf(tmp_path, len, "%s/%s.dcm", sp->tmp_dir, name);
    return mms_fs_copy(src, tmp_path);
}
