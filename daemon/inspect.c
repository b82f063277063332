/* daemon: `mmsegd inspect` (design.md section 5): headers, series, stacks and reasons.
 * Threads: the main thread of the command. */
#include "daemon/inspect.h"

#include <errno.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/err.h"
#include "dicom/dicom.h"

struct file {
    char *path;
    struct mms_header h;
};

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

static const char *
reason_name(enum mms_stack_reason r)
{
    switch (r) {
    case MMS_STACK_MAIN:
        return "in the volume";
    case MMS_STACK_BAD_ORIENTATION:
        return "invalid orientation or position";
    case MMS_STACK_FRAME_OF_REF:
        return "other frame of reference";
    case MMS_STACK_ORIENTATION:
        return "other orientation";
    case MMS_STACK_SIZE:
        return "other rows or columns";
    case MMS_STACK_ACQUISITION:
        return "other acquisition or temporal position";
    }
    return "?";
}

static bool
is_localizer(const struct mms_header *h)
{
    return strstr(h->image_type, "LOCALIZER") != NULL;
}

/* One series: files f[idx[0..n)]. */
static void
report_series(const struct file *f, const int *idx, int n, FILE *out)
{
    const struct mms_header *h0 = &f[idx[0]].h;
    fprintf(out, "series %s: modality %s, %d file%s, first %s\n",
            h0->series_uid[0] ? h0->series_uid : "(no Series Instance UID)",
            h0->modality[0] ? h0->modality : "-", n, n == 1 ? "" : "s", f[idx[0]].path);
    struct mms_slice *s = malloc((size_t)n * sizeof *s);
    int *src = malloc((size_t)n * sizeof *src);
    int ns = 0, not_ct = 0, localizer = 0, multi = 0, no_geom = 0;
    const char *other_class = NULL;
    if (s == NULL || src == NULL) {
        fprintf(out, "  error: %s\n", mms_strerror(MMS_ENOMEM));
        goto out;
    }
    for (int j = 0; j < n; j++) {
        const struct mms_header *h = &f[idx[j]].h;
        if (!mms_sop_class_is_ct(h->sop_class)) {
            not_ct++;
            other_class = h->sop_class;
        } else if (is_localizer(h)) {
            localizer++;
        } else if (h->frames > 1) {
            multi++;
        } else if (!h->has_geometry) {
            no_geom++;
        } else {
            src[ns] = idx[j];
            s[ns++] = h->slice;
        }
    }
    if (not_ct > 0)
        fprintf(out, "  left out: %d file%s of SOP class %s (not a CT image)\n", not_ct,
                not_ct == 1 ? "" : "s", other_class);
    if (localizer > 0)
        fprintf(out, "  left out: %d localizer%s (ImageType LOCALIZER)\n", localizer,
                localizer == 1 ? "" : "s");
    if (multi > 0)
        fprintf(out, "  left out: %d multi-frame file%s (functional groups are not read yet)\n",
                multi, multi == 1 ? "" : "s");
    if (no_geom > 0)
        fprintf(out, "  left out: %d file%s without orientation, position or size\n", no_geom,
                no_geom == 1 ? "" : "s");
    if (ns == 0) {
        fprintf(out, "  no volume: no single-frame CT image with geometry\n");
        goto out;
    }
    struct mms_stack_opts o = {.max_gap_ratio = 2.0, .allow_gaps = false};
    struct mms_stack *st = NULL;
    char why[512];
    int rc = mms_stack_find(s, ns, &o, &st, why, sizeof why);
    if (rc < 0) {
        fprintf(out, "  no volume: %s\n", why);
        goto out;
    }
    const struct mms_header *hm = &f[src[st->order[0]]].h;
    fprintf(out,
            "  volume: %d frames of %lldx%lld, pixel %.4g x %.4g mm, slice step %.4g mm "
            "(min %.4g, max %.4g)%s, tilt %.2f deg\n",
            st->n, (long long)hm->slice.rows, (long long)hm->slice.cols, hm->pixel_spacing[0],
            hm->pixel_spacing[1], st->spacing_mm, st->min_step_mm, st->max_step_mm,
            st->irregular ? ", irregular" : "", st->tilt_deg);
    fprintf(out, "  normal (%.4f, %.4f, %.4f), positions %.2f .. %.2f mm along it\n", st->normal[0],
            st->normal[1], st->normal[2], st->pos_mm[0], st->pos_mm[st->n - 1]);
    int counts[MMS_STACK_ACQUISITION + 1] = {0};
    for (int j = 0; j < ns; j++)
        counts[st->reason[j]]++;
    for (int r = MMS_STACK_BAD_ORIENTATION; r <= MMS_STACK_ACQUISITION; r++)
        if (counts[r] > 0)
            fprintf(out, "  left out: %d frame%s, %s\n", counts[r], counts[r] == 1 ? "" : "s",
                    reason_name(r));
    mms_stack_free(st);
out:
    free(s);
    free(src);
}

int
mms_inspect(const char *const *paths, int n, FILE *out)
{
    struct list l = {0};
    struct file *f = NULL;
    int rc = 0, nf = 0, n_dicom = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        struct stat sb;
        if (stat(paths[i], &sb) != 0) {
            rc = -errno;
            fprintf(out, "%s: %s\n", paths[i], mms_strerror(rc));
            goto done;
        }
        if (S_ISDIR(sb.st_mode)) {
            walk_list = &l;
            int w = nftw(paths[i], on_entry, 16, FTW_PHYS);
            walk_list = NULL;
            if (w != 0)
                rc = w < 0 ? -errno : w;
        } else {
            rc = add_path(&l, paths[i]);
        }
    }
    if (rc < 0)
        goto done;
    qsort(l.paths, (size_t)l.n, sizeof *l.paths, cmp_str);
    if ((f = calloc((size_t)(l.n ? l.n : 1), sizeof *f)) == NULL) {
        rc = MMS_ENOMEM;
        goto done;
    }
    int ignored = 0;
    for (int i = 0; i < l.n; i++) {
        char why[512];
        struct mms_header h;
        int r = mms_header_read(l.paths[i], &h, why, sizeof why);
        if (r < 0) {
            fprintf(out, "not read: %s\n", why);
            continue;
        }
        n_dicom++;
        if (mms_sop_class_is_dicomdir(h.media_class) || mms_sop_class_is_dicomdir(h.sop_class)) {
            fprintf(out, "ignored: %s: DICOMDIR\n", l.paths[i]);
            ignored++;
            continue;
        }
        if (h.sop_class[0] == '\0') {
            fprintf(out, "ignored: %s: no SOP Class UID (not an image)\n", l.paths[i]);
            ignored++;
            continue;
        }
        f[nf].path = l.paths[i];
        f[nf++].h = h;
    }
    /* series in order of first appearance (paths sorted) */
    int *idx = malloc((size_t)(nf ? nf : 1) * sizeof *idx);
    bool *done = calloc((size_t)(nf ? nf : 1), sizeof *done);
    if (idx == NULL || done == NULL) {
        free(idx);
        free(done);
        rc = MMS_ENOMEM;
        goto done;
    }
    int n_series = 0;
    for (int i = 0; i < nf; i++) {
        if (done[i])
            continue;
        int m = 0;
        for (int j = i; j < nf; j++) {
            if (!done[j] && strcmp(f[j].h.series_uid, f[i].h.series_uid) == 0) {
                done[j] = true;
                idx[m++] = j;
            }
        }
        report_series(f, idx, m, out);
        n_series++;
    }
    fprintf(out, "%d file%s, %d DICOM, %d ignored, %d series\n", l.n, l.n == 1 ? "" : "s", n_dicom,
            ignored, n_series);
    free(idx);
    free(done);
    rc = n_dicom > 0 ? 0 : MMS_ENOENT;
done:
    for (int i = 0; i < l.n; i++)
        free(l.paths[i]);
    free(l.paths);
    free(f);
    return rc;
}
