/* daemon: the DICOM files under command-line paths, grouped into series. */
#include "daemon/files.h"

#include <errno.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/err.h"

struct list {
    char **paths;
    int n, cap;
};

static struct list *walk_list; /* nftw has no context argument */

static int
add_path(struct list *l, const char *p)
{
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 256;
        char **v = realloc(l->paths, (size_t)cap * sizeof *v);
        if (v == NULL)
            return MMS_ENOMEM;
        l->paths = v;
        l->cap = cap;
    }
    if ((l->paths[l->n] = strdup(p)) == NULL)
        return MMS_ENOMEM;
    l->n++;
    return 0;
}

static int
on_entry(const char *p, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    return type == FTW_F ? add_path(walk_list, p) : 0;
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Files of one series: the same Series Instance UID; without one (some exports leave it
 * empty), the same folder and frame of reference. */
static bool
same_series(const struct mms_file *a, const struct mms_file *b)
{
    if (strcmp(a->h.series_uid, b->h.series_uid) != 0)
        return false;
    if (a->h.series_uid[0] != '\0')
        return true;
    const char *sa = strrchr(a->path, '/'), *sb = strrchr(b->path, '/');
    size_t la = sa != NULL ? (size_t)(sa - a->path) : 0,
           lb = sb != NULL ? (size_t)(sb - b->path) : 0;
    return la == lb && strncmp(a->path, b->path, la) == 0 &&
           strcmp(a->h.slice.frame_of_ref, b->h.slice.frame_of_ref) == 0;
}

int
mms_fileset_read(const char *const *paths, int n, mms_file_note_fn note, void *arg,
                 struct mms_fileset *out, char *why, size_t why_len)
{
    struct list l = {0};
    struct mms_fileset *fs = out;
    bool *done = NULL;
    int rc = 0;
    memset(fs, 0, sizeof *fs);
    for (int i = 0; i < n && rc == 0; i++) {
        struct stat sb;
        if (stat(paths[i], &sb) != 0) {
            rc = mms_why(why, why_len, -errno, "%s: %s", paths[i], mms_strerror(-errno));
            goto out;
        }
        if (S_ISDIR(sb.st_mode)) {
            walk_list = &l;
            int w = nftw(paths[i], on_entry, 16, FTW_PHYS);
            walk_list = NULL;
            if (w != 0)
                rc = mms_why(why, why_len, w < 0 ? -errno : w, "%s: %s", paths[i],
                             mms_strerror(w < 0 ? -errno : w));
        } else {
            rc = add_path(&l, paths[i]);
        }
    }
    if (rc < 0)
        goto out;
    qsort(l.paths, (size_t)l.n, sizeof *l.paths, cmp_str);
    fs->listed = l.n;
    fs->f = calloc((size_t)(l.n ? l.n : 1), sizeof *fs->f);
    fs->idx = malloc((size_t)(l.n ? l.n : 1) * sizeof *fs->idx);
    fs->start = malloc((size_t)(l.n + 1) * sizeof *fs->start);
    done = calloc((size_t)(l.n ? l.n : 1), sizeof *done);
    if (fs->f == NULL || fs->idx == NULL || fs->start == NULL || done == NULL) {
        rc = MMS_ENOMEM;
        goto out;
    }
    for (int i = 0; i < l.n; i++) {
        char reason[512];
        struct mms_header h;
        if (mms_header_read(l.paths[i], &h, reason, sizeof reason) < 0) {
            if (note != NULL)
                note(arg, "not read", NULL, reason);
            continue;
        }
        fs->dicom++;
        const char *ignore = NULL;
        if (mms_sop_class_is_dicomdir(h.media_class) || mms_sop_class_is_dicomdir(h.sop_class))
            ignore = "DICOMDIR";
        else if (h.sop_class[0] == '\0')
            ignore = "no SOP Class UID (not an image)";
        if (ignore != NULL) {
            if (note != NULL)
                note(arg, "ignored", l.paths[i], ignore);
            fs->ignored++;
            continue;
        }
        fs->f[fs->n].path = l.paths[i];
        l.paths[i] = NULL;
        fs->f[fs->n++].h = h;
    }
    /* series in order of first appearance */
    int m = 0;
    for (int i = 0; i < fs->n; i++) {
        if (done[i])
            continue;
        fs->start[fs->n_series++] = m;
        for (int j = i; j < fs->n; j++)
            if (!done[j] && same_series(&fs->f[i], &fs->f[j])) {
                done[j] = true;
                fs->idx[m++] = j;
            }
    }
    fs->start[fs->n_series] = m;
out:
    for (int i = 0; i < l.n; i++)
        free(l.paths[i]);
    free(l.paths);
    free(done);
    return rc;
}

void
mms_fileset_free(struct mms_fileset *fs)
{
    for (int i = 0; i < fs->n; i++)
        free(fs->f[i].path);
    free(fs->f);
    free(fs->idx);
    free(fs->start);
    memset(fs, 0, sizeof *fs);
}

void
mms_series_nifti_path(const char *dir, const char *uid, int number, char *buf, size_t len)
{
    bool ok = uid[0] != '\0';
    for (const char *p = uid; *p != '\0'; p++)
        ok = ok && (*p == '.' || (*p >= '0' && *p <= '9'));
    if (ok)
        snprintf(buf, len, "%s/%s.nii.gz", dir, uid);
    else
        snprintf(buf, len, "%s/series-%03d.nii.gz", dir, number);
}
