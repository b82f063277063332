/* daemon/quarantine: items kept for an operator, bounded in bytes and age (quarantine.h).
 * Threads: any; no shared state. */
#include "daemon/quarantine.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "common/fs.h"
#include "common/log.h"

/* Leftovers of an interrupted cross-file-system copy (".q-....part") older than this go. */
#define PART_MAX_AGE_S 3600.0

/* Write "key: VALUE\n" with value escaped. */
static void
put_field(FILE *f, const char *key, const char *value)
{
    char esc[4096];
    mms_text_escape(value, MMS_ESCAPE_BACKSLASH, esc, sizeof esc, NULL);
    fprintf(f, "%s: %s\n", key, esc);
}

static int
write_note(const char *note, const char *origin, const char *reason, int64_t size)
{
    int fd = open(note, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (f == NULL) {
        int rc = mms_err_errno();
        if (fd >= 0) {
            close(fd);
            unlink(note);
        }
        return rc;
    }
    char stamp[32];
    struct tm tm;
    time_t now = time(NULL);
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    fprintf(f, "time: %s\n", stamp);
    put_field(f, "origin", origin);
    put_field(f, "reason", reason);
    fprintf(f, "size: %lld\n", (long long)size);
    int rc = 0;
    if (fflush(f) != 0 || ferror(f) || fsync(fileno(f)) != 0)
        rc = mms_err_errno();
    if (fclose(f) != 0 && rc == 0)
        rc = mms_err_errno();
    if (rc < 0)
        unlink(note);
    return rc;
}

int
mms_quarantine_put(const char *qdir, const char *path, const char *origin, const char *reason,
                   char *name_out, size_t name_len, char *why, size_t why_len)
{
    char name[32], dest[4200], note[4200], part[4200];
    int rc;
    struct stat sb;

    if (lstat(path, &sb) != 0) {
        rc = mms_err_errno();
        return mms_why(why, why_len, rc, "cannot quarantine it: stat: %s", mms_strerror(rc));
    }
    if ((rc = mms_fs_random_name("q", name, sizeof name)) < 0)
        return mms_why(why, why_len, rc, "cannot quarantine it: %s", mms_strerror(rc));
    if ((size_t)snprintf(dest, sizeof dest, "%s/%s", qdir, name) >= sizeof dest)
        return mms_why(why, why_len, MMS_ENAMETOOLONG, "cannot quarantine it: %s: too long", qdir);
    snprintf(note, sizeof note, "%s/%s.why", qdir, name);
    snprintf(part, sizeof part, "%s/.%s.part", qdir, name);
    if ((rc = write_note(note, origin, reason, (int64_t)sb.st_size)) < 0)
        return mms_why(why, why_len, rc, "cannot quarantine it: writing %s: %s", note,
                       mms_strerror(rc));

    bool copied = false;
    if (rename(path, dest) != 0) {
        rc = mms_err_errno();
        if (rc != -EXDEV) {
            unlink(note);
            return mms_why(why, why_len, rc, "cannot quarantine it: rename into %s: %s", qdir,
                           mms_strerror(rc));
        }
        /* another file system: copy, sync, rename into place; the source goes last */
        if ((rc = mms_fs_copy(path, part)) < 0 ||
            (rename(part, dest) != 0 && (rc = mms_err_errno()) < 0)) {
            unlink(part);
            unlink(note);
            return mms_why(why, why_len, rc,
                           "cannot quarantine it: copy into %s (another file system): %s", qdir,
                           mms_strerror(rc));
        }
        copied = true;
    }
    if ((rc = mms_fs_fsync_dir(qdir)) < 0)
        mms_log(MMS_LOG_WARNING, "quarantine: %s: fsync: %s", qdir, mms_strerror(rc));
    if (name_out != NULL)
        snprintf(name_out, name_len, "%s", name);
    if (copied && unlink(path) != 0) {
        rc = mms_err_errno();
        return mms_why(why, why_len, MMS_EEXIST,
                       "copied into quarantine as %s, but cannot remove the original: %s", name,
                       mms_strerror(rc));
    }
    return 0;
}

/* ---------------------------------------------------------------------------- reading */

/* One item found by a walk. */
struct entry {
    char name[32];
    double time;
    int64_t bytes; /* data and .why */
};

static int
by_time(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    return x->time < y->time ? -1 : x->time > y->time ? 1 : strcmp(x->name, y->name);
}

/* Whether d_name is "q-" + 16 hex digits + ".why"; name receives "q-...". */
static bool
is_note(const char *d_name, char *name, size_t len)
{
    size_t n = strlen(d_name);
    if (n != 2 + 16 + 4 || strncmp(d_name, "q-", 2) != 0 || strcmp(d_name + 18, ".why") != 0)
        return false;
    for (size_t i = 2; i < 18; i++)
        if (strchr("0123456789abcdef", d_name[i]) == NULL)
            return false;
    snprintf(name, len, "%.*s", 18, d_name);
    return true;
}

/* Every item of qdir into *out (*n of them), sorted oldest first; and leftovers of an
 * interrupted copy older than PART_MAX_AGE_S removed when prune_parts. */
static int
walk(const char *qdir, bool prune_parts, double now, struct entry **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(qdir);
    if (d == NULL)
        return errno == ENOENT ? 0 : mms_err_errno();
    struct entry *v = NULL;
    size_t cap = 0;
    int rc = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        struct stat sb;
        char name[32];
        if (prune_parts && e->d_name[0] == '.' && strncmp(e->d_name, ".q-", 3) == 0 &&
            fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) == 0 &&
            now - (double)sb.st_mtime > PART_MAX_AGE_S) {
            unlinkat(dirfd(d), e->d_name, 0);
            continue;
        }
        if (!is_note(e->d_name, name, sizeof name) ||
            fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0)
            continue;
        if (*n == cap) {
            size_t c = cap ? 2 * cap : 64;
            void *p = realloc(v, c * sizeof *v);
            if (p == NULL) {
                rc = MMS_ENOMEM;
                break;
            }
            v = p;
            cap = c;
        }
        struct entry *it = &v[(*n)++];
        snprintf(it->name, sizeof it->name, "%s", name);
        it->time = (double)sb.st_mtim.tv_sec + (double)sb.st_mtim.tv_nsec * 1e-9;
        it->bytes = (int64_t)sb.st_size;
        if (fstatat(dirfd(d), name, &sb, AT_SYMLINK_NOFOLLOW) == 0)
            it->bytes += (int64_t)sb.st_size;
    }
    closedir(d);
    if (rc < 0) {
        free(v);
        *n = 0;
        return rc;
    }
    if (*n > 1)
        qsort(v, *n, sizeof *v, by_time);
    *out = v;
    return 0;
}

/* src into dst (len bytes), cut when longer. */
static void
copy_cut(char *dst, size_t len, const char *src)
{
    size_t n = strlen(src);
    if (n >= len)
        n = len - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* The fields of NAME.why into it (escaped already). */
static void
read_note(const char *qdir, const struct entry *e, struct mms_quarantine_item *it)
{
    memset(it, 0, sizeof *it);
    snprintf(it->name, sizeof it->name, "%s", e->name);
    it->time = e->time;
    it->size = -1;
    char path[4200], line[4200];
    snprintf(path, sizeof path, "%s/%s", qdir, e->name);
    struct stat sb;
    if (stat(path, &sb) == 0)
        it->size = (int64_t)sb.st_size;
    snprintf(path, sizeof path, "%s/%s.why", qdir, e->name);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return;
    while (fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "origin: ", 8) == 0)
            copy_cut(it->origin, sizeof it->origin, line + 8);
        else if (strncmp(line, "reason: ", 8) == 0)
            copy_cut(it->reason, sizeof it->reason, line + 8);
    }
    fclose(f);
}

int
mms_quarantine_scan(const char *qdir, struct mms_quarantine_item *newest, size_t max_newest,
                    size_t *n_newest, int64_t *count, int64_t *bytes, char *why, size_t why_len)
{
    struct entry *v;
    size_t n;
    *n_newest = 0;
    *count = *bytes = 0;
    int rc = walk(qdir, false, 0.0, &v, &n);
    if (rc < 0)
        return mms_why(why, why_len, rc, "%s: %s", qdir, mms_strerror(rc));
    for (size_t i = 0; i < n; i++)
        *bytes += v[i].bytes;
    *count = (int64_t)n;
    for (size_t i = 0; i < n && i < max_newest; i++)
        read_note(qdir, &v[n - 1 - i], &newest[(*n_newest)++]);
    free(v);
    return 0;
}

int
mms_quarantine_prune(const char *qdir, int64_t max_bytes, double max_age_s, double now,
                     int *removed, int64_t *freed, char *why, size_t why_len)
{
    struct entry *v;
    size_t n;
    int gone = 0;
    int64_t total = 0, away = 0;
    int rc = walk(qdir, true, now, &v, &n);
    if (removed != NULL)
        *removed = 0;
    if (freed != NULL)
        *freed = 0;
    if (rc < 0)
        return mms_why(why, why_len, rc, "%s: %s", qdir, mms_strerror(rc));
    for (size_t i = 0; i < n; i++)
        total += v[i].bytes;
    int failed = 0;
    for (size_t i = 0; i < n; i++) { /* oldest first */
        bool old = max_age_s > 0.0 && now - v[i].time > max_age_s;
        bool over = max_bytes > 0 && total - away > max_bytes;
        if (!old && !over)
            break;
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", qdir, v[i].name);
        if (unlink(path) != 0 && errno != ENOENT) {
            failed = mms_err_errno();
            continue;
        }
        snprintf(path, sizeof path, "%s/%s.why", qdir, v[i].name);
        if (unlink(path) != 0 && errno != ENOENT) {
            failed = mms_err_errno();
            continue;
        }
        gone++;
        away += v[i].bytes;
    }
    free(v);
    if (gone > 0)
        mms_fs_fsync_dir(qdir);
    if (removed != NULL)
        *removed = gone;
    if (freed != NULL)
        *freed = away;
    if (failed < 0)
        return mms_why(why, why_len, failed, "%s: cannot remove an item: %s", qdir,
                       mms_strerror(failed));
    return 0;
}
