/* dicom: one series' main stack as a HU volume (design.md section 5). The geometry comes from
 * mms_stack_find(); the pixels are decoded file by file on a few threads.
 * Threads: reentrant; the decoding threads live only inside mms_volume_build(). */
#include "dicom/dicom.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/cpus.h"
#include "common/err.h"

#define SPACING_TOL 1e-4 /* relative: pixel spacings closer than this are one */

/* One frame that may go into the volume. */
struct cand {
    int file;
    int64_t frame;
    double ps[2]; /* pixel spacing: between rows, between columns */
};

/* The frames of one file that the volume needs: slices slice[0..n) are frames first.. of it. */
struct job {
    int file;
    int64_t first, count; /* frames decoded together */
    int n;
    int *slice;     /* (n) volume slice of frame first + k ... */
    int64_t *frame; /* (n) ... for frame[k] */
};

struct work {
    const char *const *paths;
    const struct mms_header *h;
    struct mms_volume *v;
    struct job *jobs;
    int n_jobs;
    int job_threads; /* of each job: the decoding threads over the jobs running at once */
    uint64_t max_voxels;
    void (*on_file)(void *arg, int file, bool done);
    void *on_file_arg;
    atomic_int next;
    atomic_bool failed;
    pthread_mutex_t lock;
    int rc;
    char why[512];
};

static bool
is_localizer(const struct mms_header *h)
{
    return strstr(h->image_type, "LOCALIZER") != NULL;
}

static bool
same_spacing(const double *a, const double *b)
{
    for (int i = 0; i < 2; i++)
        if (fabs(a[i] - b[i]) > SPACING_TOL * fabs(a[i]))
            return false;
    return true;
}

/* Room for n floats; a large volume on huge pages where the kernel allows it (a 300-slice
 * series is 300 MB: 75 000 page faults in 4 KiB pages, which the decoding threads would take
 * in turn). */
static float *
alloc_voxels(size_t n)
{
    const size_t huge = (size_t)2 << 20, bytes = n * sizeof(float);
    if (bytes < 4 * huge)
        return malloc(bytes);
    void *p = NULL;
    if (posix_memalign(&p, huge, bytes) != 0)
        return NULL;
    (void)madvise(p, bytes, MADV_HUGEPAGE); /* advice: without it, small pages */
    return p;
}

static int
decode_job(struct work *w, const struct job *j, float *tmp, char *why, size_t why_len)
{
    struct mms_volume *v = w->v;
    const size_t plane = (size_t)v->dims[0] * (size_t)v->dims[1];
    if (j->count == 1) /* straight into its slice */
        return mms_frames_decode(w->paths[j->file], &w->h[j->file], j->first, 1, w->max_voxels,
                                 w->job_threads, v->hu + (size_t)j->slice[0] * plane, why, why_len);
    int rc = mms_frames_decode(w->paths[j->file], &w->h[j->file], j->first, j->count, w->max_voxels,
                               w->job_threads, tmp, why, why_len);
    if (rc < 0)
        return rc;
    for (int k = 0; k < j->n; k++)
        memcpy(v->hu + (size_t)j->slice[k] * plane, tmp + (size_t)(j->frame[k] - j->first) * plane,
               plane * sizeof *tmp);
    return 0;
}

static void *
decode_thread(void *arg)
{
    struct work *w = arg;
    const size_t plane = (size_t)w->v->dims[0] * (size_t)w->v->dims[1];
    float *tmp = NULL;
    size_t tmp_cap = 0;
    int i;
    while (!atomic_load(&w->failed) && (i = atomic_fetch_add(&w->next, 1)) < w->n_jobs) {
        const struct job *j = &w->jobs[i];
        char why[512];
        int rc = 0;
        if (j->count > 1 && (size_t)j->count * plane > tmp_cap) {
            free(tmp);
            tmp_cap = (size_t)j->count * plane;
            if ((tmp = malloc(tmp_cap * sizeof *tmp)) == NULL) {
                tmp_cap = 0;
                rc = mms_why(why, sizeof why, MMS_ENOMEM, "%s: out of memory", w->paths[j->file]);
            }
        }
        if (rc == 0 && w->on_file != NULL)
            w->on_file(w->on_file_arg, j->file, false);
        if (rc == 0)
            rc = decode_job(w, j, tmp, why, sizeof why);
        if (rc == 0 && w->on_file != NULL)
            w->on_file(w->on_file_arg, j->file, true);
        if (rc < 0) {
            pthread_mutex_lock(&w->lock);
            if (w->rc == 0) {
                w->rc = rc;
                snprintf(w->why, sizeof w->why, "%s", why);
            }
            pthread_mutex_unlock(&w->lock);
            atomic_store(&w->failed, true);
        }
    }
    free(tmp);
    return NULL;
}

static int
cmp_job_slice(const void *a, const void *b)
{
    const int *x = a, *y = b;
    return (x[0] > y[0]) - (x[0] < y[0]);
}

/* Group the volume's slices by file into jobs (in file order). */
static int
make_jobs(const struct cand *c, const struct mms_stack *st, int n_files, struct job **out,
          int *n_out)
{
    int nz = st->n;
    int(*pairs)[2] = malloc((size_t)nz * sizeof *pairs); /* file, slice */
    struct job *jobs = calloc((size_t)nz, sizeof *jobs);
    int *slices = malloc((size_t)nz * sizeof *slices);
    int64_t *frames = malloc((size_t)nz * sizeof *frames);
    if (pairs == NULL || jobs == NULL || slices == NULL || frames == NULL) {
        free(pairs);
        free(jobs);
        free(slices);
        free(frames);
        return MMS_ENOMEM;
    }
    (void)n_files;
    for (int k = 0; k < nz; k++) {
        pairs[k][0] = c[st->order[k]].file;
        pairs[k][1] = k;
    }
    qsort(pairs, (size_t)nz, sizeof *pairs, cmp_job_slice); /* by file */
    int nj = 0;
    for (int a = 0; a < nz;) {
        int b = a;
        while (b < nz && pairs[b][0] == pairs[a][0])
            b++;
        struct job *j = &jobs[nj++];
        j->file = pairs[a][0];
        j->n = b - a;
        j->slice = slices + a;
        j->frame = frames + a;
        int64_t lo = INT64_MAX, hi = -1;
        for (int k = a; k < b; k++) {
            int64_t f = c[st->order[pairs[k][1]]].frame;
            slices[k] = pairs[k][1];
            frames[k] = f;
            lo = f < lo ? f : lo;
            hi = f > hi ? f : hi;
        }
        j->first = lo;
        j->count = hi - lo + 1;
        a = b;
    }
    free(pairs);
    *out = jobs;
    *n_out = nj;
    return 0;
}

static void
free_jobs(struct job *jobs, int n)
{
    if (jobs != NULL && n > 0) {
        free(jobs[0].slice); /* the jobs share two arrays, which start at job 0 */
        free(jobs[0].frame);
    }
    free(jobs);
}

static int
decode_all(const char *const *paths, const struct mms_header *h, struct mms_volume *v,
           struct job *jobs, int n_jobs, const struct mms_volume_opts *o, char *why, size_t why_len)
{
    struct work w = {.paths = paths,
                     .h = h,
                     .v = v,
                     .jobs = jobs,
                     .n_jobs = n_jobs,
                     .max_voxels = o->max_voxels,
                     .on_file = o->on_file,
                     .on_file_arg = o->on_file_arg};
    atomic_init(&w.next, 0);
    atomic_init(&w.failed, false);
    pthread_mutex_init(&w.lock, NULL);
    /* 0: one per CPU this thread may use ([infer] cpus: the others) */
    long nt = o->threads > 0 ? o->threads : mms_cpus_usable();
    if (nt < 1)
        nt = 1;
    /* one thread budget: a thread per file while there are more files than threads, the
     * threads of a file (its frames, a JPEG 2000 codestream's own) sharing the rest */
    w.job_threads = nt > n_jobs ? (int)(nt / n_jobs) : 1;
    if (nt > n_jobs)
        nt = n_jobs;
    pthread_t *t = malloc((size_t)nt * sizeof *t);
    if (t == NULL) {
        pthread_mutex_destroy(&w.lock);
        return mms_why(why, why_len, MMS_ENOMEM, "out of memory");
    }
    long started = 0;
    for (; started < nt - 1; started++)
        if (pthread_create(&t[started], NULL, decode_thread, &w) != 0)
            break; /* fewer threads: the calling one still does the rest */
    decode_thread(&w);
    for (long i = 0; i < started; i++)
        pthread_join(t[i], NULL);
    free(t);
    pthread_mutex_destroy(&w.lock);
    if (w.rc < 0)
        return mms_why(why, why_len, w.rc, "%s", w.why);
    return 0;
}

int
mms_rescale_check(double slope, double intercept, int bits_stored, int pixel_rep, char *why,
                  size_t why_len)
{
    if (!(fabs(slope) >= MMS_SLOPE_MIN && fabs(slope) <= MMS_SLOPE_MAX)) /* also NaN */
        return mms_why(why, why_len, MMS_EDICOM,
                       "Rescale Slope %g is outside %g..%g (in absolute value)", slope,
                       MMS_SLOPE_MIN, MMS_SLOPE_MAX);
    if (!(fabs(intercept) <= MMS_INTERCEPT_MAX))
        return mms_why(why, why_len, MMS_EDICOM, "Rescale Intercept %g is outside -%g..%g",
                       intercept, MMS_INTERCEPT_MAX, MMS_INTERCEPT_MAX);
    int b = bits_stored >= 1 && bits_stored <= 32 ? bits_stored : 16;
    double lo = pixel_rep == 1 ? -ldexp(1.0, b - 1) : 0.0;
    double hi = pixel_rep == 1 ? ldexp(1.0, b - 1) - 1.0 : ldexp(1.0, b) - 1.0;
    double a = lo * slope + intercept, z = hi * slope + intercept;
    if (!(fabs(a) <= MMS_HU_MAX && fabs(z) <= MMS_HU_MAX))
        return mms_why(why, why_len, MMS_EDICOM,
                       "Rescale Slope %g and Intercept %g map the %d-bit %s stored values to %g.."
                       "%g HU, beyond +-%g HU",
                       slope, intercept, b, pixel_rep == 1 ? "signed" : "unsigned", a < z ? a : z,
                       a < z ? z : a, MMS_HU_MAX);
    return 0;
}

/* Where a frame's values are outside the limits of dicom.h: "PATH: problem" (frame k of a
 * multi-frame file named). pos_only: only Image Position (Patient), which every frame with
 * geometry has; otherwise the pixel values of the file too. */
static int
check_frame(const char *path, const struct mms_header *h, int64_t frame, const double *p,
            const double *ps, bool pos_only, char *why, size_t why_len)
{
    char where[64] = "";
    if (h->frames > 1)
        snprintf(where, sizeof where, " of frame %lld", (long long)frame + 1);
    for (int i = 0; i < 3; i++)
        if (!(fabs(p[i]) <= MMS_POSITION_MAX_MM))
            return mms_why(why, why_len, MMS_EDICOM,
                           "%s: Image Position (Patient)%s (%g, %g, %g) mm is outside +-%g mm",
                           path, where, p[0], p[1], p[2], MMS_POSITION_MAX_MM);
    if (pos_only)
        return 0;
    if (!(ps[0] > 0.0 && ps[1] > 0.0))
        return mms_why(why, why_len, MMS_EDICOM,
                       "%s: Pixel Spacing%s missing, not two finite numbers, or not positive (%g "
                       "x %g mm)",
                       path, where, ps[0], ps[1]);
    for (int i = 0; i < 2; i++)
        if (!(ps[i] >= MMS_SPACING_MIN_MM && ps[i] <= MMS_SPACING_MAX_MM))
            return mms_why(why, why_len, MMS_EDICOM,
                           "%s: Pixel Spacing%s %g x %g mm is outside %g..%g mm", path, where,
                           ps[0], ps[1], MMS_SPACING_MIN_MM, MMS_SPACING_MAX_MM);
    double th = h->slice_thickness; /* 0: absent */
    if (th != 0.0 && !(th >= MMS_SPACING_MIN_MM && th <= MMS_SPACING_MAX_MM))
        return mms_why(why, why_len, MMS_EDICOM, "%s: Slice Thickness %g mm is outside %g..%g mm",
                       path, th, MMS_SPACING_MIN_MM, MMS_SPACING_MAX_MM);
    const struct mms_pixel_layout *lo = &h->pix;
    if (lo->has_slope || lo->has_intercept) {
        char r[256];
        int rc = mms_rescale_check(lo->has_slope ? lo->slope : 1.0,
                                   lo->has_intercept ? lo->intercept : 0.0, lo->bits_stored,
                                   lo->pixel_rep, r, sizeof r);
        if (rc < 0)
            return mms_why(why, why_len, rc, "%s: %s", path, r);
    }
    return 0;
}

/* The CT frames of the series with their geometry: c[m], s[m]. */
static int
collect(const char *const *paths, const struct mms_header *h, int n, uint64_t max_voxels,
        struct cand **c_out, struct mms_slice **s_out, int *m_out, char *why, size_t why_len)
{
    int64_t total = 0;
    int ct = 0, localizers = 0, no_geometry = -1;
    for (int i = 0; i < n; i++) {
        const struct mms_header *hi = &h[i];
        ct += mms_sop_class_is_ct(hi->sop_class);
        localizers += mms_sop_class_is_ct(hi->sop_class) && is_localizer(hi);
        if (!mms_sop_class_is_ct(hi->sop_class) || is_localizer(hi))
            continue;
        if (hi->frames > 1) {
            uint64_t vox;
            if (hi->slice.rows < 1 || hi->slice.cols < 1 ||
                __builtin_mul_overflow((uint64_t)hi->slice.rows, (uint64_t)hi->slice.cols, &vox) ||
                __builtin_mul_overflow(vox, (uint64_t)hi->frames, &vox) || vox > max_voxels)
                return mms_why(why, why_len, MMS_EDICOM,
                               "%s: %lld frames of %lld x %lld: more than the maximum of %llu "
                               "voxels",
                               paths[i], (long long)hi->frames, (long long)hi->slice.rows,
                               (long long)hi->slice.cols, (unsigned long long)max_voxels);
            total += hi->frames;
        } else if (hi->has_geometry) {
            total++;
        } else if (no_geometry < 0) {
            no_geometry = i;
        }
        if (total > INT32_MAX / 2)
            return mms_why(why, why_len, MMS_EDICOM, "more than %d frames", INT32_MAX / 2);
    }
    if (total == 0 && ct > localizers && no_geometry >= 0)
        return mms_why(why, why_len, MMS_EDICOM,
                       "no CT image with position and orientation (%s: Image Position (Patient) "
                       "not 3 finite numbers, Image Orientation (Patient) not 6, or no rows or "
                       "columns)",
                       paths[no_geometry]);
    if (total == 0)
        return mms_why(why, why_len, MMS_EDICOM, "%s",
                       ct == 0            ? "no CT image (CT, Enhanced CT or Legacy Converted "
                                            "Enhanced CT Image Storage)"
                       : ct == localizers ? "only localizers"
                                          : "no CT image with position and orientation");
    struct cand *c = malloc((size_t)total * sizeof *c);
    struct mms_slice *s = malloc((size_t)total * sizeof *s);
    if (c == NULL || s == NULL) {
        free(c);
        free(s);
        return mms_why(why, why_len, MMS_ENOMEM, "out of memory");
    }
    int m = 0;
    for (int i = 0; i < n; i++) {
        const struct mms_header *hi = &h[i];
        if (!mms_sop_class_is_ct(hi->sop_class) || is_localizer(hi))
            continue;
        if (hi->frames > 1) {
            double ps[2] = {0.0, 0.0};
            int rc = mms_frames_geometry(paths[i], hi->frames, s + m, ps, why, why_len);
            if (rc < 0) {
                free(c);
                free(s);
                return rc;
            }
            for (int64_t f = 0; f < hi->frames; f++, m++) {
                s[m].rows = hi->slice.rows; /* the pixel data's size, whatever the groups say */
                s[m].cols = hi->slice.cols;
                c[m] = (struct cand){.file = i, .frame = f, .ps = {ps[0], ps[1]}};
            }
        } else if (hi->has_geometry) {
            s[m] = hi->slice;
            c[m++] = (struct cand){
                .file = i, .frame = 0, .ps = {hi->pixel_spacing[0], hi->pixel_spacing[1]}};
        }
    }
    *c_out = c;
    *s_out = s;
    *m_out = m;
    return 0;
}

static int
build(const char *const *paths, const struct mms_header *h, int n, const struct mms_volume_opts *o,
      struct mms_volume **out, char *why, size_t why_len)
{
    if (paths == NULL || h == NULL || n < 1 || o == NULL || out == NULL)
        return mms_why(why, why_len, MMS_EINVAL, "no files");
    struct cand *c = NULL;
    struct mms_slice *s = NULL;
    struct mms_stack *st = NULL;
    struct mms_volume *v = NULL;
    struct job *jobs = NULL;
    int m = 0, n_jobs = 0;
    int rc = collect(paths, h, n, o->max_voxels, &c, &s, &m, why, why_len);
    if (rc < 0)
        return rc;
    for (int i = 0; i < m; i++) /* positions before any geometry is derived from them */
        if ((rc = check_frame(paths[c[i].file], &h[c[i].file], c[i].frame, s[i].ipp, c[i].ps, true,
                              why, why_len)) < 0)
            goto fail;
    if ((rc = mms_stack_find(s, m, &o->stack, &st, why, why_len)) == MMS_EINVAL && m > 0) {
        const double *r = s[0].iop; /* every frame refused: say what the first one has */
        rc = mms_why(why, why_len, MMS_EDICOM,
                     "no frame has a valid orientation (%s: Image Orientation (Patient) %g\\%g\\%g"
                     "\\%g\\%g\\%g is not two orthogonal unit vectors within 0.01)",
                     paths[c[0].file], r[0], r[1], r[2], r[3], r[4], r[5]);
        goto fail;
    }
    if (rc < 0)
        goto fail;
    const int nz = st->n;
    const struct cand *c0 = &c[st->order[0]];
    const int64_t rows = s[st->order[0]].rows, cols = s[st->order[0]].cols;
    for (int k = 0; k < nz; k++) {
        const struct cand *ck = &c[st->order[k]];
        if ((rc = check_frame(paths[ck->file], &h[ck->file], ck->frame, s[st->order[k]].ipp, ck->ps,
                              false, why, why_len)) < 0)
            goto fail;
        if (!same_spacing(ck->ps, c0->ps)) {
            rc = mms_why(why, why_len, MMS_EDICOM,
                         "pixel spacing differs between slices (%g x %g mm in %s, %g x %g mm in "
                         "%s)",
                         c0->ps[0], c0->ps[1], paths[c0->file], ck->ps[0], ck->ps[1],
                         paths[ck->file]);
            goto fail;
        }
    }
    uint64_t voxels;
    if (__builtin_mul_overflow((uint64_t)rows, (uint64_t)cols, &voxels) ||
        __builtin_mul_overflow(voxels, (uint64_t)nz, &voxels) || voxels > o->max_voxels ||
        voxels > SIZE_MAX / sizeof(float)) {
        rc = mms_why(why, why_len, MMS_EDICOM,
                     "%lld x %lld x %d voxels: more than the maximum of %llu", (long long)cols,
                     (long long)rows, nz, (unsigned long long)o->max_voxels);
        goto fail;
    }
    if ((v = calloc(1, sizeof *v)) == NULL ||
        (v->ipp = malloc((size_t)nz * sizeof *v->ipp)) == NULL ||
        (v->pos_mm = malloc((size_t)nz * sizeof *v->pos_mm)) == NULL ||
        (v->src = calloc((size_t)nz, sizeof *v->src)) == NULL) {
        rc = mms_why(why, why_len, MMS_ENOMEM, "out of memory for %llu voxels",
                     (unsigned long long)voxels);
        goto fail;
    }
    v->dims[0] = cols;
    v->dims[1] = rows;
    v->dims[2] = nz;
    v->spacing[0] = c0->ps[1];
    v->spacing[1] = c0->ps[0];
    v->spacing[2] = st->spacing_mm;
    if (nz == 1) /* one slice: its thickness, when known, is the best third axis */
        v->spacing[2] = h[c0->file].slice_thickness > 0.0 ? h[c0->file].slice_thickness : 1.0;
    for (int i = 0; i < 3; i++) {
        v->dir[i][0] = st->row[i];
        v->dir[i][1] = st->col[i];
        v->dir[i][2] = st->slice_dir[i];
        v->normal[i] = st->normal[i];
    }
    for (int k = 0; k < nz; k++) {
        const struct cand *ck = &c[st->order[k]];
        memcpy(v->ipp[k], s[st->order[k]].ipp, sizeof v->ipp[k]);
        v->pos_mm[k] = st->pos_mm[k];
        v->src[k].file = ck->file;
        v->src[k].frame = ck->frame;
        snprintf(v->src[k].sop_class, sizeof v->src[k].sop_class, "%s", h[ck->file].sop_class);
        snprintf(v->src[k].sop_instance, sizeof v->src[k].sop_instance, "%s",
                 h[ck->file].sop_instance);
    }
    memcpy(v->origin, v->ipp[0], sizeof v->origin);
    v->min_step_mm = st->min_step_mm;
    v->max_step_mm = st->max_step_mm;
    v->tilt_deg = st->tilt_deg;
    v->irregular = st->irregular;
    v->n_stacks = st->n_stacks;
    for (int k = 0; k < m; k++)
        if (st->reason[k] != MMS_STACK_MAIN)
            v->left_out[st->reason[k]]++;

    if (o->plan != NULL && (rc = o->plan(o->plan_arg, v, why, why_len)) < 0)
        goto fail;
    if ((v->hu = alloc_voxels(voxels)) == NULL) {
        rc = mms_why(why, why_len, MMS_ENOMEM, "out of memory for %llu voxels",
                     (unsigned long long)voxels);
        goto fail;
    }
    if ((rc = make_jobs(c, st, n, &jobs, &n_jobs)) < 0) {
        mms_why(why, why_len, rc, "out of memory");
        goto fail;
    }
    if ((rc = decode_all(paths, h, v, jobs, n_jobs, o, why, why_len)) < 0)
        goto fail;
    free_jobs(jobs, n_jobs);
    mms_stack_free(st);
    free(c);
    free(s);
    *out = v;
    return 0;
fail:
    free_jobs(jobs, n_jobs);
    mms_volume_free(v);
    mms_stack_free(st);
    free(c);
    free(s);
    return rc;
}

int
mms_volume_build(const char *const *paths, const struct mms_header *h, int n,
                 const struct mms_volume_opts *o, struct mms_volume **out, char *why,
                 size_t why_len)
{
    char reason[1024] = "";
    int rc = build(paths, h, n, o, out, reason, sizeof reason);
    if (rc < 0) /* the series first, then the problem */
        mms_why(why, why_len, rc, "series %s: %s",
                h != NULL && n > 0 && h[0].series_uid[0] != '\0' ? h[0].series_uid
                                                                 : "(no Series Instance UID)",
                reason);
    return rc;
}

void
mms_volume_free(struct mms_volume *v)
{
    if (v == NULL)
        return;
    free(v->hu);
    free(v->ipp);
    free(v->pos_mm);
    free(v->src);
    free(v);
}

void
mms_volume_range(const struct mms_volume *v, float *lo, float *hi)
{
    const size_t n = (size_t)v->dims[0] * (size_t)v->dims[1] * (size_t)v->dims[2];
    float a = INFINITY, b = -INFINITY;
    for (size_t i = 0; i < n; i++) { /* HU are never NaN */
        a = v->hu[i] < a ? v->hu[i] : a;
        b = v->hu[i] > b ? v->hu[i] : b;
    }
    *lo = a;
    *hi = b;
}
