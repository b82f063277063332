/* daemon/spool: tmp/ -> instances/ with fsync, rename, directory fsync and index commit
 * (design.md section 3). The header of each file is read in a sandbox child (sandbox.h), so
 * that a reader crash on received data refuses that instance and nothing else.
 * Threads: reentrant; the index serializes its own calls. */
#include "daemon/spool.h"

#include <dirent.h>
#include <pthread.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/sha256.h"
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
mms_spool_open(const char *state_dir, struct mms_index *ix, mms_spool_notify_fn notify, void *ud,
               struct mms_spool **out, char *why, size_t why_len)
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
    snprintf(sp->tmp_dir, sizeof sp->tmp_dir, "%s/tmp", state_dir);
    snprintf(sp->inst_dir, sizeof sp->inst_dir, "%s/instances", state_dir);
    snprintf(sp->quarantine_dir, sizeof sp->quarantine_dir, "%s/quarantine", state_dir);
    const char *dirs[3] = {sp->tmp_dir, sp->inst_dir, sp->quarantine_dir};
    for (int i = 0; i < 3; i++) {
        int rc = mms_fs_mkdir(dirs[i]);
        if (rc < 0) {
            mms_spool_close(sp);
            return mms_why(why, why_len, rc, "%s: %s", dirs[i], mms_strerror(rc));
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
        char reason[256];
        snprintf(reason, sizeof reason, "header parser %s", res.what);
        int q = 0;
        if (strncmp(source, "drop:", 5) != 0)
            q = mms_spool_quarantine(sp, tmp_path, source, reason);
        mms_log(MMS_LOG_ERR, "%s: %s%s", source, reason,
                strncmp(source, "drop:", 5) == 0 ? ""
                : q == 0                         ? "; the file is quarantined"
                                                 : "; the file could not be quarantined");
        rc = mms_why(why, why_len, MMS_EDICOM, "%s", reason);
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
    int rc = mms_fs_fsync(tmp_path);
    if (rc < 0)
        return mms_why(why, why_len, rc, "fsync: %s", mms_strerror(rc));
    char digest[65];
    struct mms_header h;
    if ((rc = read_header(sp, tmp_path, source, &h, digest, reason, sizeof reason)) < 0)
        return mms_why(why, why_len, rc, "%s", reason);
    if (mms_sop_class_is_dicomdir(h.media_class) || mms_sop_class_is_dicomdir(h.sop_class))
        return mms_why(why, why_len, MMS_EDICOM, "a DICOMDIR, not an instance");
    if (h.sop_class[0] == '\0' || h.sop_instance[0] == '\0')
        return mms_why(why, why_len, MMS_EDICOM, "no SOP %s UID",
                       h.sop_class[0] == '\0' ? "Class" : "Instance");
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
    bool existed = stat(dest, &sb) == 0;
    if (stat(tmp_path, &sb) != 0 || rename(tmp_path, dest) != 0) {
        rc = mms_err_errno();
        return mms_why(why, why_len, rc, "rename: %s", mms_strerror(rc));
    }
    int64_t size = (int64_t)sb.st_size;
    if ((rc = mms_fs_fsync_dir(dir2)) < 0) {
        if (!existed)
            unlink(dest);
        return mms_why(why, why_len, rc, "fsync: %s", mms_strerror(rc));
    }

    struct mms_instance_row row;
    fill_row(&h, digest, rel, size, source, &row);
    char old[512] = "";
    if ((rc = mms_index_put(sp->ix, &row, &res->put, old, sizeof old, reason, sizeof reason)) < 0) {
        if (!existed) /* not indexed, so never acknowledged: gone */
            unlink(dest);
        return mms_why(why, why_len, rc, "index: %s", reason);
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

int
mms_spool_ingest(struct mms_spool *sp, const char *tmp_path, const char *source, bool derive_uids,
                 struct mms_ingest *res, char *why, size_t why_len)
{
    int rc = ingest(sp, tmp_path, source, derive_uids, res, why, why_len);
    if (rc < 0)
        unlink(tmp_path);
    return rc;
}

int
mms_spool_quarantine(struct mms_spool *sp, const char *path, const char *origin, const char *reason)
{
    char name[64], dest[4400], note[4400];
    int rc = mms_fs_random_name("q", name, sizeof name);
    if (rc < 0)
        return rc;
    snprintf(dest, sizeof dest, "%s/%s", sp->quarantine_dir, name);
    snprintf(note, sizeof note, "%s/%s.why", sp->quarantine_dir, name);
    FILE *f = fopen(note, "we");
    if (f == NULL)
        return mms_err_errno();
    fprintf(f, "origin: %s\nreason: %s\n", origin, reason);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        rc = mms_err_errno();
        fclose(f);
        unlink(note);
        return rc;
    }
    fclose(f);
    if (rename(path, dest) != 0) {
        rc = mms_err_errno();
        unlink(note);
        return rc;
    }
    return mms_fs_fsync_dir(sp->quarantine_dir);
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
