/* daemon/intake: the drop folder thread (intake.h). Threads: the intake thread, started and
 * stopped from the loop thread. */
#include "daemon/intake.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/crash.h"
#include "common/err.h"
#include "common/log.h"
#include "daemon/quarantine.h"

/* A file seen in the folder and not taken yet. */
struct cand {
    char *path;
    int64_t size;
    struct timespec mtime;
    double since;    /* when size and mtime were last seen to change */
    double retry_at; /* after a failed take: not before this (monotonic seconds) */
    bool moved_in;   /* renamed into the tree: take at once */
    bool seen;       /* found by the current scan */
};

/* A watched directory. */
struct watch {
    int wd;
    char *path;
};

/* A file that could be neither stored nor quarantined (or removed after quarantine): left
 * alone, without a retry or a log line each scan, until it changes. */
struct fkey {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
};

/* Remembered files at most; the oldest is forgotten first (and retried once). */
#define MAX_REMEMBERED 4096

struct mms_intake {
    struct mms_intake_opts o;
    char *dir;
    struct mms_spool *sp;
    pthread_t thread;
    int ino, stop_fd;
    struct cand *c;
    size_t nc, capc;
    struct watch *w;
    size_t nw, capw;
    double last_scan;
    struct fkey *failed; /* a ring of MAX_REMEMBERED */
    size_t nfailed, next_failed;
    char marker[4200]; /* quarantine/.intake-inflight: the file being taken (crash.h) */
};

static bool
hidden(const char *path)
{
    const char *base = strrchr(path, '/');
    return (base != NULL ? base[1] : path[0]) == '.';
}

static bool
is_dicomdir_name(const char *path)
{
    const char *base = strrchr(path, '/');
    return strcmp(base != NULL ? base + 1 : path, "DICOMDIR") == 0;
}

static void
add_watch(struct mms_intake *in, const char *path)
{
    int wd = inotify_add_watch(in->ino, path,
                               IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE | IN_MODIFY | IN_ONLYDIR |
                                   IN_EXCL_UNLINK);
    if (wd < 0) {
        mms_log(MMS_LOG_WARNING, "drop folder: cannot watch %s: %s", path,
                mms_strerror(mms_err_errno()));
        return;
    }
    for (size_t i = 0; i < in->nw; i++)
        if (in->w[i].wd == wd)
            return; /* watched already */
    if (in->nw == in->capw) {
        size_t cap = in->capw ? 2 * in->capw : 16;
        void *p = realloc(in->w, cap * sizeof *in->w);
        if (p == NULL)
            return;
        in->w = p;
        in->capw = cap;
    }
    char *copy = strdup(path);
    if (copy == NULL)
        return;
    in->w[in->nw++] = (struct watch){.wd = wd, .path = copy};
}

static struct cand *
find(struct mms_intake *in, const char *path)
{
    for (size_t i = 0; i < in->nc; i++)
        if (strcmp(in->c[i].path, path) == 0)
            return &in->c[i];
    return NULL;
}

/* Note a regular file: a new candidate, or one whose size or time changed. */
static void
note_file(struct mms_intake *in, const char *path, const struct stat *sb, bool moved_in)
{
    if (hidden(path) || is_dicomdir_name(path))
        return;
    struct cand *c = find(in, path);
    if (c == NULL) {
        if (in->nc == in->capc) {
            size_t cap = in->capc ? 2 * in->capc : 64;
            void *p = realloc(in->c, cap * sizeof *in->c);
            if (p == NULL)
                return;
            in->c = p;
            in->capc = cap;
        }
        char *copy = strdup(path);
        if (copy == NULL)
            return;
        c = &in->c[in->nc++];
        *c = (struct cand){.path = copy, .size = -1, .since = mms_mono_s()};
    }
    if (c->size != (int64_t)sb->st_size || c->mtime.tv_sec != sb->st_mtim.tv_sec ||
        c->mtime.tv_nsec != sb->st_mtim.tv_nsec) {
        c->size = (int64_t)sb->st_size;
        c->mtime = sb->st_mtim;
        c->since = mms_mono_s();
    }
    c->moved_in = c->moved_in || moved_in;
    c->seen = true;
}

static void
drop_cand(struct mms_intake *in, size_t i)
{
    free(in->c[i].path);
    in->c[i] = in->c[--in->nc];
}

/* nftw has no context argument; only the intake thread scans. */
static struct mms_intake *scanning;

static int
on_scan(const char *p, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)ftw;
    if (type == FTW_D && !(hidden(p) && strcmp(p, scanning->dir) != 0))
        add_watch(scanning, p);
    else if (type == FTW_F && S_ISREG(sb->st_mode))
        note_file(scanning, p, sb, false);
    return 0;
}

static void
scan(struct mms_intake *in)
{
    for (size_t i = 0; i < in->nc; i++)
        in->c[i].seen = false;
    scanning = in;
    nftw(in->dir, on_scan, 16, FTW_PHYS);
    scanning = NULL;
    for (size_t i = 0; i < in->nc;) /* gone from the folder */
        if (!in->c[i].seen)
            drop_cand(in, i);
        else
            i++;
    in->last_scan = mms_mono_s();
}

static bool
same_key(const struct fkey *k, const struct stat *sb)
{
    return k->dev == sb->st_dev && k->ino == sb->st_ino && k->size == sb->st_size &&
           k->mtime.tv_sec == sb->st_mtim.tv_sec && k->mtime.tv_nsec == sb->st_mtim.tv_nsec;
}

static bool
remembered(const struct mms_intake *in, const struct stat *sb)
{
    for (size_t i = 0; i < in->nfailed; i++)
        if (same_key(&in->failed[i], sb))
            return true;
    return false;
}

static void
remember(struct mms_intake *in, const struct stat *sb)
{
    if (in->failed == NULL && (in->failed = calloc(MAX_REMEMBERED, sizeof *in->failed)) == NULL)
        return;
    in->failed[in->next_failed] = (struct fkey){
        .dev = sb->st_dev, .ino = sb->st_ino, .size = sb->st_size, .mtime = sb->st_mtim};
    in->next_failed = (in->next_failed + 1) % MAX_REMEMBERED;
    if (in->nfailed < MAX_REMEMBERED)
        in->nfailed++;
}

/* Write the marker naming path (with its NUL) and arm it for the crash handler. A process
 * crash keeps the page cache, so no fsync: the marker only has to outlive the process. */
static void
marker_set(struct mms_intake *in, const char *path)
{
    int fd = open(in->marker, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0)
        return;
    size_t len = strlen(path) + 1;
    bool ok = write(fd, path, len) == (ssize_t)len;
    close(fd);
    if (ok)
        mms_crash_marker_arm(in->marker);
    else
        unlink(in->marker);
}

static void
marker_clear(struct mms_intake *in)
{
    mms_crash_marker_disarm();
    unlink(in->marker);
    mms_stage_clear();
}

/* Whether a failure to copy a file in is the daemon's want of resources (the file waits and
 * is tried again) rather than the file's own (it is remembered and left alone). */
static bool
resource_error(int rc)
{
    return rc == MMS_ENOSPC || rc == -EDQUOT || rc == MMS_EIO || rc == MMS_ENOMEM ||
           rc == -EMFILE || rc == -ENFILE || rc == MMS_EROFS;
}

/* Take one file: copy it into the spool, ingest it, then remove it from the folder. Returns
 * true when the candidate is finished with (stored, quarantined or vanished). */
static bool
take(struct mms_intake *in, const char *path)
{
    struct stat sb;
    if (lstat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
        return true;
    if (remembered(in, &sb))
        return false; /* logged once already; waits until it changes */
    int64_t free_b = mms_spool_free_bytes(in->sp);
    if (free_b >= 0 && (uint64_t)free_b < in->o.min_free_bytes) {
        mms_log(MMS_LOG_WARNING, "drop folder: %s waits: free space under min_free_mb", path);
        return false;
    }
    char tmp[4200], why[1024], source[4200];
    bool done = false;
    marker_set(in, path);
    mms_stage_set("copying drop file %s", path);
    int rc = mms_spool_copy_in(in->sp, path, tmp, sizeof tmp);
    if (rc < 0) {
        if (resource_error(rc)) {
            mms_log(MMS_LOG_WARNING, "drop folder: %s: cannot copy it in: %s (tried again later)",
                    path, mms_strerror(rc));
        } else {
            remember(in, &sb);
            mms_log(MMS_LOG_WARNING,
                    "drop folder: %s: cannot read it: %s; left in place until it changes", path,
                    mms_strerror(rc));
        }
        goto out;
    }
    mms_stage_set("reading drop file %s", path);
    snprintf(source, sizeof source, "drop:%s", path);
    struct mms_ingest res;
    rc = mms_spool_ingest(in->sp, tmp, source, true, &res, why, sizeof why);
    if (rc == MMS_EDICOM) {
        /* its copy is in quarantine (why says as what); the original goes */
        if (res.quarantined[0] == '\0') {
            remember(in, &sb);
            mms_log(MMS_LOG_WARNING, "drop folder: %s: %s; left in place until it changes", path,
                    why);
        } else if (unlink(path) != 0) {
            rc = mms_err_errno();
            remember(in, &sb);
            mms_log(MMS_LOG_WARNING,
                    "drop folder: %s: %s; but it cannot be removed from the folder: %s; left in "
                    "place until it changes",
                    path, why, mms_strerror(rc));
        } else {
            mms_log(MMS_LOG_WARNING, "drop folder: %s: %s", path, why);
            done = true;
        }
        goto out;
    }
    if (rc < 0) {
        mms_log(MMS_LOG_WARNING, "drop folder: %s: %s (tried again later)", path, why);
        goto out;
    }
    if (unlink(path) != 0)
        mms_log(MMS_LOG_WARNING, "drop folder: %s stored, but cannot be removed: %s", path,
                mms_strerror(mms_err_errno()));
    mms_log(MMS_LOG_INFO, "drop folder: %s: %s instance of series %s", path,
            res.put == MMS_PUT_NEW        ? "new"
            : res.put == MMS_PUT_REPLACED ? "replaced"
                                          : "duplicate",
            res.series_uid);
    done = true;
out:
    marker_clear(in);
    return done;
}

/* At start: a marker left behind names the file being taken when the process ended. When
 * the crash handler appended a signal, that file crashed the daemon: it is quarantined
 * instead of being taken again (which would crash it again at every restart). */
static void
recover_marker(struct mms_intake *in)
{
    char buf[4200 + 32];
    int fd = open(in->marker, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    unlink(in->marker);
    if (n <= 0)
        return;
    buf[n] = '\0';
    const char *path = buf;
    size_t plen = strlen(path);
    const char *sig = (size_t)n > plen + 1 ? buf + plen + 1 : NULL;
    size_t dlen = strlen(in->dir);
    if (plen == 0 || strncmp(path, in->dir, dlen) != 0 || path[dlen] != '/')
        return; /* not ours */
    static const int fatal[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
    bool crashed = false;
    for (size_t i = 0; sig != NULL && i < sizeof fatal / sizeof fatal[0]; i++)
        crashed = crashed || strcmp(sig, mms_crash_signal_name(fatal[i])) == 0;
    if (!crashed) {
        mms_log(MMS_LOG_NOTICE,
                "drop folder: the daemon stopped while taking %s, not by a crash there; it is "
                "taken again",
                path);
        return;
    }
    struct stat sb;
    if (lstat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        mms_log(MMS_LOG_WARNING,
                "drop folder: the daemon crashed (%s) while reading %s, which is gone now", sig,
                path);
        return;
    }
    char reason[128], name[32], why[1024];
    snprintf(reason, sizeof reason, "the daemon crashed (%s) while reading this file", sig);
    int rc = mms_quarantine_put(mms_spool_quarantine_dir(in->sp), path, path, reason, name,
                                sizeof name, why, sizeof why);
    if (rc == 0) {
        mms_log(MMS_LOG_WARNING, "drop folder: %s: %s; quarantined as %s", path, reason, name);
        return;
    }
    remember(in, &sb);
    mms_log(MMS_LOG_ERR, "drop folder: %s: %s; %s; left in place until it changes", path, reason,
            why);
}

/* Take every candidate that is ready. */
static void
take_ready(struct mms_intake *in)
{
    double now = mms_mono_s();
    for (size_t i = 0; i < in->nc;) {
        struct cand *c = &in->c[i];
        struct stat sb;
        if (stat(c->path, &sb) != 0) {
            drop_cand(in, i);
            continue;
        }
        note_file(in, c->path, &sb, false);
        c = &in->c[i];
        if (now < c->retry_at) {
            i++;
            continue;
        }
        bool ready = c->moved_in || now - c->since >= in->o.stable_s;
        if (ready && take(in, c->path)) {
            drop_cand(in, i);
            continue;
        }
        c = &in->c[i];
        if (ready) /* a failed take waits for the next scan, not the next poll */
            c->retry_at = now + in->o.scan_s;
        c->moved_in = false;
        i++;
    }
}

static void
read_events(struct mms_intake *in)
{
    char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
    ssize_t n;
    while ((n = read(in->ino, buf, sizeof buf)) > 0) {
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *e = (const struct inotify_event *)p;
            p += sizeof *e + e->len;
            if (e->mask & IN_Q_OVERFLOW) {
                scan(in);
                continue;
            }
            const char *dir = NULL;
            for (size_t i = 0; i < in->nw && dir == NULL; i++)
                if (in->w[i].wd == e->wd)
                    dir = in->w[i].path;
            if (dir == NULL || e->len == 0)
                continue;
            char path[PATH_MAX];
            snprintf(path, sizeof path, "%s/%s", dir, e->name);
            struct stat sb;
            if (lstat(path, &sb) != 0)
                continue;
            if (S_ISDIR(sb.st_mode)) {
                if (!hidden(path)) { /* a new folder: watch it, and take what is in it */
                    scanning = in;
                    nftw(path, on_scan, 16, FTW_PHYS);
                    scanning = NULL;
                }
            } else if (S_ISREG(sb.st_mode)) {
                note_file(in, path, &sb, (e->mask & IN_MOVED_TO) != 0);
            }
        }
    }
}

static void *
run(void *arg)
{
    struct mms_intake *in = arg;
    pthread_setname_np(pthread_self(), "mms-intake");
    if (mms_crash_thread_init() < 0)
        mms_log(MMS_LOG_WARNING, "drop folder: no alternate signal stack for its thread");
    scan(in);
    for (;;) {
        struct pollfd p[2] = {{.fd = in->ino, .events = POLLIN},
                              {.fd = in->stop_fd, .events = POLLIN}};
        int r = poll(p, 2, 250);
        if (r < 0 && errno != EINTR)
            break;
        if (p[1].revents & POLLIN)
            break;
        if (p[0].revents & POLLIN)
            read_events(in);
        if (mms_mono_s() - in->last_scan >= in->o.scan_s)
            scan(in);
        take_ready(in);
    }
    mms_crash_thread_fini();
    return NULL;
}

int
mms_intake_start(const struct mms_intake_opts *o, struct mms_spool *sp, struct mms_intake **out,
                 char *why, size_t why_len)
{
    struct mms_intake *in = calloc(1, sizeof *in);
    if (in == NULL || (in->dir = strdup(o->dir)) == NULL) {
        free(in);
        return mms_why(why, why_len, MMS_ENOMEM, "out of memory");
    }
    in->o = *o;
    in->o.dir = in->dir;
    in->sp = sp;
    in->ino = in->stop_fd = -1;
    int rc = 0;
    size_t len = strlen(in->dir);
    while (len > 1 && in->dir[len - 1] == '/')
        in->dir[--len] = '\0';
    snprintf(in->marker, sizeof in->marker, "%s/.intake-inflight", mms_spool_quarantine_dir(sp));
    recover_marker(in);
    if (mkdir(in->dir, 0750) != 0 && errno != EEXIST)
        rc = mms_err_errno();
    else if ((in->ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) < 0 ||
             (in->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
        rc = mms_err_errno();
    else if ((rc = -pthread_create(&in->thread, NULL, run, in)) != 0)
        rc = rc < 0 ? rc : MMS_EIO;
    if (rc < 0) {
        if (in->ino >= 0)
            close(in->ino);
        if (in->stop_fd >= 0)
            close(in->stop_fd);
        free(in->dir);
        free(in);
        return mms_why(why, why_len, rc, "drop folder %s: %s", o->dir, mms_strerror(rc));
    }
    mms_log(MMS_LOG_INFO, "drop folder %s: watching (stable_s %g, scan_s %g)", in->dir, o->stable_s,
            o->scan_s);
    *out = in;
    return 0;
}

void
mms_intake_stop(struct mms_intake *in)
{
    if (in == NULL)
        return;
    uint64_t one = 1;
    if (write(in->stop_fd, &one, sizeof one) != (ssize_t)sizeof one)
        mms_log(MMS_LOG_WARNING, "drop folder: cannot signal its thread to stop");
    pthread_join(in->thread, NULL);
    close(in->ino);
    close(in->stop_fd);
    for (size_t i = 0; i < in->nc; i++)
        free(in->c[i].path);
    for (size_t i = 0; i < in->nw; i++)
        free(in->w[i].path);
    free(in->c);
    free(in->w);
    free(in->failed);
    free(in->dir);
    free(in);
}
