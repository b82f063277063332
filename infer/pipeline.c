/* infer: the inference pipeline of mmunet.md section 5, from a CT volume in DICOM order to
 * its labels on the same grid.
 *
 * Everything before the network runs in the DICOM frame (k, r, c): crop, normalisation and
 * resampling commute with the flips and the permutation of section 5.1, so the large input is
 * never reoriented; the last resampling pass writes straight into the padded network-frame
 * volume. The sliding window accumulates channel-first fp32 logits at the target resolution;
 * the Gaussian weight sum is separable and is kept as three vectors. The way back (5.8)
 * interpolates the logits of every class only where the labels of the surrounding target
 * voxels differ: where they agree, every weighted mean of their logits has the same argmax,
 * so the result is the exact path's.
 * Threads: the network's thread; OpenMP threads for the passes and the export. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "infer/net-impl.h"
#include "infer/pipeline-impl.h"

/* Everything mms_pipe_plan() derives from the volume, the card and the options. */
struct job {
    const struct mms_ct *ct;
    const struct mms_card *card;
    int axis[3];                 /* network axis t comes from DICOM axis axis[t] (0 k, 1 r, 2 c) */
    bool flip[3];                /* ... read backwards */
    int inv[3];                  /* DICOM axis a is network axis inv[a] */
    int64_t lo[3], hi[3], nc[3]; /* crop box in DICOM order, and its shape */
    double sp[3], tg[3];         /* spacing and target spacing, DICOM order */
    int64_t tk[3];               /* target shape, DICOM order */
    int sep_in, sep_out;         /* separate axes (DICOM order) of 5.4 and 5.8, or -1 */
    bool irregular, tilted;
    double h;                    /* mean slice step over the crop */
    int passes[3], n_pass;       /* resampling passes in order */
    int last_plane;              /* index of the pass that clips, or -1 */
    int64_t tmp_n[2];            /* floats of the two buffers between passes */
    int64_t tn[3], pd[3], pb[3]; /* network order: target, padded shape, padding before */
    int64_t st[3];               /* strides of the padded volume */
    int64_t patch[3];
    int64_t *starts[3], n_starts[3];
    uint32_t mirrors[8];
    int n_mirror, batch, classes;
    int net_batch; /* samples per network call, across tiles (the window on the backend) */
    bool on_backend, on_device; /* the window in backend buffers; they are device memory */
    double step;
};

void
mms_pipe_opts_default(struct mms_pipe_opts *o)
{
    memset(o, 0, sizeof *o);
    o->tta = true;
    o->postprocess = true;
}

/* ----------------------------------------------------------------------------- 5.1 */

/* The closest orthogonal matrix (polar decomposition) by Newton's iteration
 * R <- (R + R^-T) / 2. Returns false for a singular matrix. */
static bool
polar(double m[3][3])
{
    for (int it = 0; it < 60; it++) {
        double c[3][3], det = 0.0, diff = 0.0;
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++) /* cofactors: inverse transpose = c / det */
                c[i][j] = m[(i + 1) % 3][(j + 1) % 3] * m[(i + 2) % 3][(j + 2) % 3] -
                          m[(i + 1) % 3][(j + 2) % 3] * m[(i + 2) % 3][(j + 1) % 3];
        for (int j = 0; j < 3; j++)
            det += m[0][j] * c[0][j];
        if (!(fabs(det) > 1e-9))
            return false;
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++) {
                double v = 0.5 * (m[i][j] + c[i][j] / det);
                diff += fabs(v - m[i][j]);
                m[i][j] = v;
            }
        if (diff < 1e-15)
            break;
    }
    return true;
}

static int
orient(struct job *j, char *why, size_t why_len)
{
    const struct mms_ct *ct = j->ct;
    double m[3][3]; /* m[world][nifti axis]: columns u_c, u_r, normal */
    for (int w = 0; w < 3; w++) {
        double s = j->card->pre.orientation == MMS_ORIENT_RAS && w < 2 ? -1.0 : 1.0;
        m[w][0] = s * ct->u_c[w];
        m[w][1] = s * ct->u_r[w];
        m[w][2] = s * ct->normal[w];
    }
    if (!polar(m))
        return mms_why(why, why_len, MMS_EINVAL, "the image orientation is degenerate");
    int world[3], sign[3];
    bool used[3] = {false, false, false};
    for (int a = 0; a < 3; a++) { /* nibabel's io_orientation: greedy, in axis order */
        int best = -1;
        for (int w = 0; w < 3; w++)
            if (!used[w] && (best < 0 || fabs(m[w][a]) > fabs(m[best][a])))
                best = w;
        used[best] = true;
        world[a] = best;
        sign[a] = m[best][a] < 0.0 ? -1 : 1;
    }
    for (int t = 0; t < 3; t++) {
        int w = 2 - j->card->pre.transpose_forward[t]; /* reversed world order, transposed */
        for (int a = 0; a < 3; a++)
            if (world[a] == w) {
                j->axis[t] = 2 - a; /* NIfTI (i, j, k) = (c, r, k) */
                j->flip[t] = sign[a] < 0;
            }
        j->inv[j->axis[t]] = t;
    }
    return 0;
}

/* ----------------------------------------------------------------------------- 5.2 */

static void
crop_box(struct job *j, int threads)
{
    const struct mms_ct *ct = j->ct;
    int64_t n[3] = {ct->slices, ct->rows, ct->cols};
    int64_t lo[3] = {n[0], n[1], n[2]}, hi[3] = {-1, -1, -1};
    if (ct->hu == NULL) { /* a plan from the headers: the whole volume, the largest crop */
        for (int a = 0; a < 3; a++) {
            j->lo[a] = 0;
            j->hi[a] = n[a];
            j->nc[a] = n[a];
        }
        return;
    }
#pragma omp parallel num_threads(threads)
    {
        int64_t l[3] = {n[0], n[1], n[2]}, h[3] = {-1, -1, -1};
#pragma omp for schedule(static)
        for (int64_t k = 0; k < n[0]; k++)
            for (int64_t r = 0; r < n[1]; r++) {
                const float *row = ct->hu + (k * n[1] + r) * n[2];
                int64_t c0 = 0, c1 = n[2] - 1;
                while (c0 < n[2] && row[c0] == 0.0f)
                    c0++;
                if (c0 == n[2])
                    continue;
                while (row[c1] == 0.0f)
                    c1--;
                l[0] = k < l[0] ? k : l[0];
                h[0] = k > h[0] ? k : h[0];
                l[1] = r < l[1] ? r : l[1];
                h[1] = r > h[1] ? r : h[1];
                l[2] = c0 < l[2] ? c0 : l[2];
                h[2] = c1 > h[2] ? c1 : h[2];
            }
#pragma omp critical
        for (int a = 0; a < 3; a++) {
            lo[a] = l[a] < lo[a] ? l[a] : lo[a];
            hi[a] = h[a] > hi[a] ? h[a] : hi[a];
        }
    }
    const bool all_zero = hi[0] < 0; /* tested once: the loop below changes hi[0] */
    for (int a = 0; a < 3; a++) {
        if (all_zero || !j->card->pre.crop_to_nonzero) { /* all zero: no crop */
            lo[a] = 0;
            hi[a] = n[a] - 1;
        }
        j->lo[a] = lo[a];
        j->hi[a] = hi[a] + 1;
        j->nc[a] = j->hi[a] - j->lo[a];
    }
}

/* ----------------------------------------------------------------------------- 5.4, 5.5 */

/* Offsets of a tilted stack: slice k's in-plane grid sits d[k] columns (rows) from the
 * reference grid, the mean position over the crop. Returns false when all are < 1e-3. */
static bool
tilt_offsets(const struct job *j, const double *u, double pixel_mm, double *d)
{
    const struct mms_ct *ct = j->ct;
    double mean = 0.0;
    bool any = false;
    for (int64_t k = j->lo[0]; k < j->hi[0]; k++)
        mean += ct->ipp[k][0] * u[0] + ct->ipp[k][1] * u[1] + ct->ipp[k][2] * u[2];
    mean /= (double)j->nc[0];
    for (int64_t k = j->lo[0]; k < j->hi[0]; k++) {
        double v = ct->ipp[k][0] * u[0] + ct->ipp[k][1] * u[1] + ct->ipp[k][2] * u[2];
        d[k - j->lo[0]] = (v - mean) / pixel_mm;
        any = any || fabs(d[k - j->lo[0]]) >= 1e-3;
    }
    return any;
}

/* Source slice coordinate of target slice i of n_out (forward) and target coordinate of crop
 * slice i (backward), from the true positions (mmunet.md 5.5). */
static double
slice_index_at(const struct job *j, double z)
{
    const double *pos = j->ct->pos_mm + j->lo[0];
    int64_t n = j->nc[0];
    if (n == 1 || z <= pos[0])
        return n == 1 ? 0.0 : (z - pos[0]) / j->h;
    if (z >= pos[n - 1])
        return (double)(n - 1) + (z - pos[n - 1]) / j->h;
    int64_t a = 0, b = n - 1;
    while (b - a > 1) {
        int64_t m = (a + b) / 2;
        if (pos[m] <= z)
            a = m;
        else
            b = m;
    }
    return (double)a + (z - pos[a]) / (pos[b] - pos[a]);
}

static void
slice_coords_forward(const struct job *j, double *coord)
{
    int64_t n_in = j->nc[0], n_out = j->tk[0];
    double z0 = j->ct->pos_mm[j->lo[0]];
    for (int64_t i = 0; i < n_out; i++)
        coord[i] = slice_index_at(j, z0 - j->h / 2 +
                                         ((double)i + 0.5) * (double)n_in * j->h / (double)n_out);
}

static void
slice_coords_backward(const struct job *j, double *coord)
{
    int64_t n_in = j->nc[0], n_out = j->tk[0];
    double z0 = j->ct->pos_mm[j->lo[0]];
    for (int64_t i = 0; i < n_in; i++) {
        double z = j->ct->pos_mm[j->lo[0] + i];
        coord[i] = (z - z0 + j->h / 2) * (double)n_out / ((double)n_in * j->h) - 0.5;
    }
}

/* ----------------------------------------------------------------------------- planning */

static void
job_free(struct job *j)
{
    for (int t = 0; t < 3; t++)
        free(j->starts[t]);
}

/* a * b and a + b, saturating at SIZE_MAX: an estimate that overflows exceeds every limit */
static size_t
sat_mul(size_t a, size_t b)
{
    size_t r;
    return __builtin_mul_overflow(a, b, &r) ? SIZE_MAX : r;
}

static size_t
sat_add(size_t a, size_t b)
{
    size_t r;
    return __builtin_add_overflow(a, b, &r) ? SIZE_MAX : r;
}

/* The product of three non-negative extents, or -1 when it exceeds MMS_PIPE_MAX_VOXELS. */
static int64_t
voxels3(const int64_t n[3])
{
    int64_t v;
    if (n[0] < 0 || n[1] < 0 || n[2] < 0 || __builtin_mul_overflow(n[0], n[1], &v) ||
        __builtin_mul_overflow(v, n[2], &v) || v > MMS_PIPE_MAX_VOXELS)
        return -1;
    return v;
}

/* Host bytes of the job; *device receives the device bytes. */
static size_t
estimate(const struct job *j, const struct mms_net *net, int threads, size_t *device)
{
    /* prepare() bounded every shape by MMS_PIPE_MAX_VOXELS; saturate anyway */
    const int64_t in[3] = {j->ct->slices, j->ct->rows, j->ct->cols};
    size_t pv = (size_t)voxels3(j->pd), pp = (size_t)voxels3(j->patch), nv = (size_t)voxels3(in);
    size_t c = (size_t)j->classes, b = (size_t)j->batch;
    int64_t longest = 0;
    for (int a = 0; a < 3; a++) {
        longest = j->nc[a] > longest ? j->nc[a] : longest;
        longest = j->tk[a] > longest ? j->tk[a] : longest;
    }
    size_t bytes = sat_mul((size_t)j->tmp_n[0] + (size_t)j->tmp_n[1], sizeof(float)); /* passes */
    bytes = sat_add(bytes, sat_mul(pv, sizeof(float)));                 /* network input */
    bytes = sat_add(bytes, sat_mul(sat_mul(c, pv), sizeof(float)));     /* logits */
    bytes = sat_add(bytes, pv);                                         /* target labels */
    bytes = sat_add(bytes, sat_mul(sat_mul(2 + b + b * c + c, pp), 4)); /* tiles, Gaussian */
    bytes = sat_add(bytes, sat_mul((size_t)threads, mms__pass_scratch(longest, longest)));
    bytes = sat_add(bytes, sat_mul(nv, 5)); /* input, labels */
    if (j->card->n_pp > 0)                  /* component numbers */
        bytes = sat_add(bytes, sat_mul(nv, sizeof(uint32_t)));
    bytes = sat_add(bytes, sat_mul((size_t)longest, 64)); /* tables */
    size_t backend = 0; /* the network's memory, and the window's volume, logits, Gaussian */
    if (net != NULL)
        backend = sat_add(mms_net_arena_bytes(net), mms_net_fixed_bytes(net));
    if (j->on_backend)
        backend = sat_add(backend, sat_mul(sat_add(sat_mul(1 + c, pv), pp), sizeof(float)));
    *device = j->on_device ? backend : 0;
    return j->on_device ? bytes : sat_add(bytes, backend);
}

/* The volume description, before anything is derived from it: sizes, spacings, directions
 * and slice positions finite and within the limits of pipeline.h. */
static int
check_ct(const struct mms_ct *ct, bool voxels, char *why, size_t why_len)
{
    if ((voxels && ct->hu == NULL) || ct->ipp == NULL || ct->pos_mm == NULL || ct->cols < 1 ||
        ct->rows < 1 || ct->slices < 1)
        return mms_why(why, why_len, MMS_EINVAL, "the volume description is incomplete");
    const int64_t n[3] = {ct->slices, ct->rows, ct->cols};
    if (voxels3(n) < 0 || ct->cols > INT32_MAX / 4 || ct->rows > INT32_MAX / 4 ||
        ct->slices > INT32_MAX / 4)
        return mms_why(why, why_len, MMS_ERANGE,
                       "the volume has %lld x %lld x %lld voxels, more than the maximum of %lld",
                       (long long)ct->cols, (long long)ct->rows, (long long)ct->slices,
                       (long long)MMS_PIPE_MAX_VOXELS);
    static const char *const name[3] = {"column", "row", "slice"};
    const double sp[3] = {ct->col_mm, ct->row_mm, ct->slice_mm};
    for (int a = 0; a < 3; a++)
        if (!(sp[a] >= MMS_PIPE_MIN_SPACING_MM && sp[a] <= MMS_PIPE_MAX_SPACING_MM))
            return mms_why(why, why_len, MMS_EINVAL, "the %s spacing %g mm is outside %g..%g mm",
                           name[a], sp[a], MMS_PIPE_MIN_SPACING_MM, MMS_PIPE_MAX_SPACING_MM);
    for (int i = 0; i < 3; i++)
        if (!isfinite(ct->u_c[i]) || !isfinite(ct->u_r[i]) || !isfinite(ct->normal[i]))
            return mms_why(why, why_len, MMS_EINVAL, "the image orientation is not finite");
    for (int64_t k = 0; k < ct->slices; k++) {
        const double *p = ct->ipp[k];
        if (!isfinite(p[0]) || !isfinite(p[1]) || !isfinite(p[2]) || !isfinite(ct->pos_mm[k]))
            return mms_why(why, why_len, MMS_EINVAL, "the position of slice %lld is not finite",
                           (long long)k);
        if (k > 0 && !(ct->pos_mm[k] > ct->pos_mm[k - 1]))
            return mms_why(why, why_len, MMS_EINVAL,
                           "slice positions not ascending along the normal (slice %lld at %g mm, "
                           "slice %lld at %g mm)",
                           (long long)k - 1, ct->pos_mm[k - 1], (long long)k, ct->pos_mm[k]);
    }
    return 0;
}

static int bind_net(struct job *j, const struct mms_net *net, const struct mms_pipe_opts *o,
                    char *why, size_t why_len);

static int
prepare(struct job *j, const struct mms_ct *ct, bool voxels, const struct mms_model *m,
        const struct mms_net *net, const struct mms_pipe_opts *o, int threads, char *why,
        size_t why_len)
{
    memset(j, 0, sizeof *j);
    j->ct = ct;
    j->card = mms_model_card(m);
    const struct mms_card *card = j->card;
    int rc = check_ct(ct, voxels, why, why_len);
    if (rc < 0)
        return rc;
    if (card->arch.in_channels != 1)
        return mms_why(why, why_len, MMS_ENOTSUP, "the model takes %d input channels, not 1",
                       card->arch.in_channels);
    j->classes = card->arch.num_classes;
    if (j->classes > 255)
        return mms_why(why, why_len, MMS_ENOTSUP, "%d classes do not fit in 8 bits", j->classes);
    if ((rc = orient(j, why, why_len)) < 0)
        return rc;
    crop_box(j, threads);

    j->h = j->nc[0] > 1 ? (ct->pos_mm[j->hi[0] - 1] - ct->pos_mm[j->lo[0]]) / (double)(j->nc[0] - 1)
                        : ct->slice_mm;
    for (int64_t k = j->lo[0]; k < j->hi[0]; k++) {
        double expect = ct->pos_mm[j->lo[0]] + (double)(k - j->lo[0]) * j->h;
        j->irregular = j->irregular || fabs(ct->pos_mm[k] - expect) > 1e-3 * j->h;
    }
    /* irregular slices: the mean step, so that the target slices (spread over the stack by
     * 5.5's map) lie at the target spacing */
    double sp[3] = {j->irregular ? j->h : ct->slice_mm, ct->row_mm, ct->col_mm};
    for (int t = 0; t < 3; t++) {
        j->tg[j->axis[t]] = card->pre.target_spacing_mm[t];
        j->patch[t] = card->inf.patch[t];
    }
    memcpy(j->sp, sp, sizeof sp);
    if (!(j->sp[0] >= MMS_PIPE_MIN_SPACING_MM && j->sp[0] <= MMS_PIPE_MAX_SPACING_MM))
        return mms_why(why, why_len, MMS_EINVAL,
                       "the mean slice step %g mm over the crop is outside %g..%g mm", j->sp[0],
                       MMS_PIPE_MIN_SPACING_MM, MMS_PIPE_MAX_SPACING_MM);
    mms_pipe_new_shape(j->nc, j->sp, j->tg, j->tk);
    for (int a = 0; a < 3; a++)
        if (j->tk[a] > MMS_PIPE_MAX_AXIS)
            return mms_why(why, why_len, MMS_ERANGE,
                           "resampling %lld voxels of %g mm to %g mm gives %.4g voxels along "
                           "DICOM axis %d, more than the maximum of %lld",
                           (long long)j->nc[a], j->sp[a], j->tg[a],
                           j->sp[a] / j->tg[a] * (double)j->nc[a], a, (long long)MMS_PIPE_MAX_AXIS);
    if (voxels3(j->tk) < 0)
        return mms_why(why, why_len, MMS_ERANGE,
                       "the target shape %lld x %lld x %lld (from %g x %g x %g mm to %g x %g x "
                       "%g mm) has more than the maximum of %lld voxels",
                       (long long)j->tk[0], (long long)j->tk[1], (long long)j->tk[2], j->sp[0],
                       j->sp[1], j->sp[2], j->tg[0], j->tg[1], j->tg[2],
                       (long long)MMS_PIPE_MAX_VOXELS);
    for (int64_t k = j->lo[0] + 1; k < j->hi[0] && !j->tilted; k++)
        for (int d = 0; d < 3; d++) {
            double step = ct->ipp[k][d] - ct->ipp[k - 1][d];
            double along = (ct->pos_mm[k] - ct->pos_mm[k - 1]) * ct->normal[d];
            j->tilted = j->tilted || fabs(step - along) > 1e-3 * ct->col_mm;
        }

    /* separate axes (5.4 going in; 5.8 coming back from the target to the original) */
    double th = card->pre.anisotropy_threshold;
    if (card->pre.force_separate_z == 0) {
        j->sep_in = j->sep_out = -1;
    } else if (card->pre.force_separate_z == 1) {
        j->sep_in = mms_pipe_separate_axis(j->sp, j->sp, 0.0);
        j->sep_out = j->sep_in;
    } else {
        j->sep_in = mms_pipe_separate_axis(j->sp, j->tg, th);
        j->sep_out = mms_pipe_separate_axis(j->tg, j->sp, th);
    }

    /* passes: in-plane (or all) axes, most shrinking first, the slice axis after the
     * in-plane ones when a tilt shifts them; then the separate axis */
    int cand[3], n = 0;
    for (int a = 0; a < 3; a++) {
        bool needed = j->nc[a] != j->tk[a] || (a == 0 && j->irregular) || (a > 0 && j->tilted);
        if (needed && a != j->sep_in)
            cand[n++] = a;
    }
    for (int x = 1; x < n; x++) /* insertion sort by out/in */
        for (int y = x; y > 0; y--) {
            int p = cand[y - 1], q = cand[y];
            if (!((double)j->tk[q] / (double)j->nc[q] < (double)j->tk[p] / (double)j->nc[p]))
                break;
            cand[y - 1] = q;
            cand[y] = p;
        }
    if (j->tilted && n > 1 && cand[0] == 0) { /* the shifts are per original slice */
        memmove(cand, cand + 1, (size_t)(n - 1) * sizeof *cand);
        cand[n - 1] = 0;
    } else if (j->tilted && n > 2 && cand[1] == 0) {
        cand[1] = cand[2];
        cand[2] = 0;
    }
    memcpy(j->passes, cand, sizeof cand);
    j->n_pass = n;
    j->last_plane = j->sep_in >= 0 ? n - 1 : -1;
    int s = j->sep_in;
    if (s >= 0 && (j->nc[s] != j->tk[s] || (s == 0 && j->irregular) || (s > 0 && j->tilted))) {
        if (s > 0 && j->tilted)
            return mms_why(why, why_len, MMS_ENOTSUP,
                           "gantry tilt with the separate resampling axis in the image plane");
        j->passes[j->n_pass++] = s;
    }
    if (j->sep_in < 0)
        j->last_plane = j->n_pass - 1;
    int64_t cur[3] = {j->nc[0], j->nc[1], j->nc[2]};
    for (int p = 0; p + 1 < j->n_pass; p++) {
        cur[j->passes[p]] = j->tk[j->passes[p]];
        int64_t v = cur[0] * cur[1] * cur[2];
        j->tmp_n[p % 2] = v > j->tmp_n[p % 2] ? v : j->tmp_n[p % 2];
    }

    /* network frame, padding, tiles (5.6) */
    j->step = o->tile_step > 0.0 ? o->tile_step : card->inf.tile_step;
    if (!(j->step > 0.0 && j->step <= 1.0))
        return mms_why(why, why_len, MMS_EINVAL, "tile step %g is not in (0, 1]", j->step);
    for (int t = 0; t < 3; t++) {
        j->tn[t] = j->tk[j->axis[t]];
        j->pd[t] = j->tn[t] > j->patch[t] ? j->tn[t] : j->patch[t];
        j->pb[t] = (j->pd[t] - j->tn[t]) / 2;
    }
    if (voxels3(j->pd) < 0 || voxels3(j->patch) < 0)
        return mms_why(why, why_len, MMS_ERANGE,
                       "the padded network input %lld x %lld x %lld (patch %lld x %lld x %lld) "
                       "has more than the maximum of %lld voxels",
                       (long long)j->pd[0], (long long)j->pd[1], (long long)j->pd[2],
                       (long long)j->patch[0], (long long)j->patch[1], (long long)j->patch[2],
                       (long long)MMS_PIPE_MAX_VOXELS);
    j->st[2] = 1;
    j->st[1] = j->pd[2];
    j->st[0] = j->pd[1] * j->pd[2];
    for (int t = 0; t < 3; t++) {
        /* more tiles than voxels along an axis: a step below one voxel (tile_step x patch) */
        double tiles =
            j->pd[t] <= j->patch[t]
                ? 1.0
                : ceil((double)(j->pd[t] - j->patch[t]) / ((double)j->patch[t] * j->step)) + 1.0;
        if (!(tiles <= (double)j->pd[t]))
            return mms_why(why, why_len, MMS_EINVAL,
                           "tile step %g of a %lld-voxel patch gives %.4g tiles over %lld "
                           "voxels along network axis %d",
                           j->step, (long long)j->patch[t], tiles, (long long)j->pd[t], t);
        j->n_starts[t] = mms_pipe_tile_starts(j->pd[t], j->patch[t], j->step, NULL);
        if ((j->starts[t] = malloc((size_t)j->n_starts[t] * sizeof(int64_t))) == NULL)
            return MMS_ENOMEM;
        mms_pipe_tile_starts(j->pd[t], j->patch[t], j->step, j->starts[t]);
    }
    uint32_t axes = o->tta ? card->inf.mirror_axes & 7u : 0u;
    for (uint32_t sub = 0; sub < 8; sub++)
        if ((sub & ~axes) == 0)
            j->mirrors[j->n_mirror++] = sub;
    return bind_net(j, net, o, why, why_len);
}

/* The batch sizes and the window's place for network net (NULL: a plan without one). */
static int
bind_net(struct job *j, const struct mms_net *net, const struct mms_pipe_opts *o, char *why,
         size_t why_len)
{
    int mb = net != NULL ? mms_net_max_batch(net) : 1;
    if (o->max_batch > 0 && o->max_batch < mb)
        mb = o->max_batch;
    j->batch = mb < j->n_mirror ? mb : j->n_mirror;
    j->net_batch = mb;
    bool slots = net != NULL && mms__net_has_window(net);
    j->on_device = net != NULL && mms__net_on_device(net);
    switch (o->window) {
    case MMS_PIPE_WINDOW_AUTO:
        j->on_backend = slots && j->on_device;
        break;
    case MMS_PIPE_WINDOW_HOST:
        j->on_backend = false;
        break;
    case MMS_PIPE_WINDOW_BACKEND:
        if (net != NULL && !slots)
            return mms_why(why, why_len, MMS_ENOTSUP,
                           "the backend has no sliding window of its own");
        j->on_backend = net != NULL;
        break;
    default:
        return mms_why(why, why_len, MMS_EINVAL, "unknown window mode %d", o->window);
    }
    return 0;
}

static void
fill_stats(const struct job *j, const struct mms_net *net, int threads, struct mms_pipe_stats *st)
{
    memset(st, 0, sizeof *st);
    for (int a = 0; a < 3; a++) {
        st->crop_lo[a] = j->lo[a];
        st->crop_hi[a] = j->hi[a];
    }
    for (int t = 0; t < 3; t++) {
        st->target[t] = j->tn[t];
        st->spacing_net[t] = j->sp[j->axis[t]];
    }
    st->sep_axis_in = j->sep_in < 0 ? -1 : j->inv[j->sep_in];
    st->sep_axis_out = j->sep_out < 0 ? -1 : j->inv[j->sep_out];
    st->tiles = j->n_starts[0] * j->n_starts[1] * j->n_starts[2];
    st->passes = st->tiles * j->n_mirror;
    st->memory_estimate = estimate(j, net, threads, &st->device_memory_estimate);
    st->window_on_backend = j->on_backend;
}

static int
within_limit(const struct mms_pipe_stats *st, const struct mms_pipe_opts *o, char *why,
             size_t why_len)
{
    if (o->max_memory != 0 && st->memory_estimate > o->max_memory)
        return mms_why(why, why_len, MMS_ENOMEM,
                       "the job needs an estimated %zu MiB of memory, more than the limit of %zu "
                       "MiB",
                       (st->memory_estimate + (1u << 20) - 1) >> 20, o->max_memory >> 20);
    if (o->max_device_memory != 0 && st->device_memory_estimate > o->max_device_memory)
        return mms_why(why, why_len, MMS_ENOMEM,
                       "the job needs an estimated %zu MiB of device memory, more than the limit "
                       "of %zu MiB",
                       (st->device_memory_estimate + (1u << 20) - 1) >> 20,
                       o->max_device_memory >> 20);
    return 0;
}

int
mms_pipe_plan(const struct mms_ct *ct, const struct mms_model *m, const struct mms_net *net,
              const struct mms_pipe_opts *o, struct mms_pipe_stats *stats, char *why,
              size_t why_len)
{
    if (ct == NULL || m == NULL || o == NULL || stats == NULL)
        return MMS_EINVAL;
    int threads = o->threads > 0 ? o->threads : omp_get_max_threads();
    struct job j;
    int rc = prepare(&j, ct, false, m, net, o, threads, why, why_len);
    if (rc == 0) {
        fill_stats(&j, net, threads, stats);
        rc = within_limit(stats, o, why, why_len);
    }
    job_free(&j);
    return rc;
}

/* ----------------------------------------------------------------------------- running */

/* Resample the cropped, normalised volume into the interior of the padded network input x. */
static int
preprocess(const struct job *j, float *x, int threads)
{
    const struct mms_ct *ct = j->ct;
    const struct mms_card *card = j->card;
    struct mms__norm norm = {true, (float)card->pre.clip_low, (float)card->pre.clip_high,
                             (float)card->pre.mean,
                             (float)(card->pre.std > 1e-8 ? card->pre.std : 1e-8)};
    int64_t longest = 0;
    for (int a = 0; a < 3; a++)
        longest = j->tk[a] > longest ? j->tk[a] : longest;
    int n_clip = j->sep_in >= 0 ? (int)j->nc[j->sep_in] : 1;
    float *tmp[2] = {NULL, NULL}, *lo = calloc((size_t)n_clip, sizeof *lo),
          *hi = calloc((size_t)n_clip, sizeof *hi);
    double *coord = malloc((size_t)longest * sizeof *coord);
    double *shift[3] = {NULL, NULL, NULL};
    int rc = MMS_ENOMEM;
    if (lo == NULL || hi == NULL || coord == NULL)
        goto out;
    for (int b = 0; b < 2; b++)
        if (j->tmp_n[b] > 0 && (tmp[b] = malloc((size_t)j->tmp_n[b] * sizeof(float))) == NULL)
            goto out;
    if (j->tilted) {
        const double *u[3] = {NULL, ct->u_r, ct->u_c};
        const double mm[3] = {0.0, ct->row_mm, ct->col_mm};
        for (int a = 1; a < 3; a++) {
            if ((shift[a] = malloc((size_t)j->nc[0] * sizeof(double))) == NULL)
                goto out;
            tilt_offsets(j, u[a], mm[a], shift[a]);
            for (int64_t k = 0; k < j->nc[0]; k++)
                shift[a][k] = -shift[a][k];
        }
    }

    /* clip ranges: the normalised minimum and maximum of the whole crop or of each plane */
    for (int i = 0; i < n_clip; i++) {
        lo[i] = INFINITY;
        hi[i] = -INFINITY;
    }
    const int sep = j->sep_in;
#pragma omp parallel num_threads(threads)
    {
        float *l = malloc((size_t)n_clip * sizeof *l), *h = malloc((size_t)n_clip * sizeof *h);
        if (l != NULL && h != NULL) {
            for (int i = 0; i < n_clip; i++) {
                l[i] = INFINITY;
                h[i] = -INFINITY;
            }
#pragma omp for schedule(static)
            for (int64_t k = 0; k < j->nc[0]; k++)
                for (int64_t r = 0; r < j->nc[1]; r++) {
                    const float *row =
                        ct->hu + ((k + j->lo[0]) * ct->rows + r + j->lo[1]) * ct->cols + j->lo[2];
                    for (int64_t c = 0; c < j->nc[2]; c++) {
                        int64_t i = sep == 0 ? k : sep == 1 ? r : sep == 2 ? c : 0;
                        l[i] = row[c] < l[i] ? row[c] : l[i];
                        h[i] = row[c] > h[i] ? row[c] : h[i];
                    }
                }
#pragma omp critical
            for (int i = 0; i < n_clip; i++) {
                lo[i] = l[i] < lo[i] ? l[i] : lo[i];
                hi[i] = h[i] > hi[i] ? h[i] : hi[i];
            }
        }
        free(l);
        free(h);
    }
    for (int i = 0; i < n_clip; i++) {
        if (lo[i] > hi[i]) /* a thread could not allocate */
            goto out;
        lo[i] = (lo[i] < norm.lo ? norm.lo : lo[i] > norm.hi ? norm.hi : lo[i]);
        hi[i] = (hi[i] < norm.lo ? norm.lo : hi[i] > norm.hi ? norm.hi : hi[i]);
        lo[i] = (lo[i] - norm.mean) / norm.std;
        hi[i] = (hi[i] - norm.mean) / norm.std;
    }

    /* the crop of the input, and the interior of x seen in DICOM order */
    struct mms__view in = {(float *)ct->hu + (j->lo[0] * ct->rows + j->lo[1]) * ct->cols + j->lo[2],
                           {j->nc[0], j->nc[1], j->nc[2]},
                           {ct->rows * ct->cols, ct->cols, 1}};
    struct mms__view out = {x, {j->tk[0], j->tk[1], j->tk[2]}, {0, 0, 0}};
    for (int t = 0; t < 3; t++) {
        int a = j->axis[t];
        out.p += (j->flip[t] ? j->pb[t] + j->tn[t] - 1 : j->pb[t]) * j->st[t];
        out.s[a] = j->flip[t] ? -j->st[t] : j->st[t];
    }
    if (j->n_pass == 0) { /* nothing to resample: copy, normalising */
        mms__grid_coords(j->nc[2], j->nc[2], coord);
        rc = mms__resample_pass(&in, &out, 2, coord, NULL, 0, &norm, -2, NULL, NULL, threads);
        goto out;
    }
    struct mms__view from = in;
    for (int p = 0; p < j->n_pass; p++) {
        int a = j->passes[p];
        struct mms__view to;
        if (p == j->n_pass - 1) {
            to = out;
        } else {
            to.p = tmp[p % 2];
            memcpy(to.n, from.n, sizeof to.n);
            to.n[a] = j->tk[a];
            to.s[2] = 1;
            to.s[1] = to.n[2];
            to.s[0] = to.n[1] * to.n[2];
        }
        if (a == 0 && j->irregular)
            slice_coords_forward(j, coord);
        else
            mms__grid_coords(j->nc[a], j->tk[a], coord);
        int clip_axis = p == j->last_plane ? (sep >= 0 ? sep : -1) : -2;
        rc = mms__resample_pass(&from, &to, a, coord, a > 0 ? shift[a] : NULL,
                                a == sep ? card->pre.data_order_z : card->pre.data_order,
                                p == 0 ? &norm : NULL, clip_axis, lo, hi, threads);
        if (rc < 0)
            goto out;
        from = to;
    }
    rc = 0;
out:
    free(tmp[0]);
    free(tmp[1]);
    free(lo);
    free(hi);
    free(coord);
    free(shift[1]);
    free(shift[2]);
    return rc;
}

/* dst = src mirrored along the network axes in mask (bit t: axis t), channels volumes of
 * shape p; dst += ... when accumulate. */
static void
mirror(const float *src, float *dst, const int64_t p[3], uint32_t mask, int channels,
       bool accumulate)
{
    for (int ch = 0; ch < channels; ch++)
        for (int64_t z = 0; z < p[0]; z++)
            for (int64_t y = 0; y < p[1]; y++) {
                int64_t sz = mask & 1u ? p[0] - 1 - z : z, sy = mask & 2u ? p[1] - 1 - y : y;
                const float *s = src + ((ch * p[0] + sz) * p[1] + sy) * p[2];
                float *d = dst + ((ch * p[0] + z) * p[1] + y) * p[2];
                if (mask & 4u) {
                    for (int64_t x = 0; x < p[2]; x++)
                        d[x] = accumulate ? d[x] + s[p[2] - 1 - x] : s[p[2] - 1 - x];
                } else if (accumulate) {
                    for (int64_t x = 0; x < p[2]; x++)
                        d[x] += s[x];
                } else {
                    memcpy(d, s, (size_t)p[2] * sizeof *d);
                }
            }
}

/* The sliding window of 5.6 and 5.7: acc (classes x padded volume) receives the weighted
 * sums of the mirrored averages. */
static int
sliding_window(const struct job *j, struct mms_net *net, const float *x, float *acc,
               const struct mms_pipe_opts *o, char *why, size_t why_len)
{
    const int64_t *P = j->patch;
    const size_t pp = (size_t)(P[0] * P[1] * P[2]), c = (size_t)j->classes;
    float *g = malloc(pp * sizeof *g), *tile = malloc(pp * sizeof *tile),
          *in = malloc((size_t)j->batch * pp * sizeof *in),
          *lg = malloc((size_t)j->batch * c * pp * sizeof *lg), *sum = malloc(c * pp * sizeof *sum);
    int rc = MMS_ENOMEM;
    if (g == NULL || tile == NULL || in == NULL || lg == NULL || sum == NULL)
        goto out;
    const struct mms_card *card = j->card;
    mms_pipe_gaussian(P, card->inf.sigma_scale, card->inf.peak, g);
    const float scale = 1.0f / (float)j->n_mirror;
    const int64_t pv = j->pd[0] * j->pd[1] * j->pd[2];
    const int64_t total = j->n_starts[0] * j->n_starts[1] * j->n_starts[2];
    int64_t done = 0;
    for (int64_t a = 0; a < j->n_starts[0]; a++)
        for (int64_t b = 0; b < j->n_starts[1]; b++)
            for (int64_t d = 0; d < j->n_starts[2]; d++) {
                const int64_t s0 = j->starts[0][a], s1 = j->starts[1][b], s2 = j->starts[2][d];
                const int64_t base = s0 * j->st[0] + s1 * j->st[1] + s2;
                for (int64_t z = 0; z < P[0]; z++)
                    for (int64_t y = 0; y < P[1]; y++)
                        memcpy(tile + (z * P[1] + y) * P[2], x + base + z * j->st[0] + y * j->st[1],
                               (size_t)P[2] * sizeof *tile);
                memset(sum, 0, c * pp * sizeof *sum);
                for (int m0 = 0; m0 < j->n_mirror; m0 += j->batch) {
                    int nb = j->n_mirror - m0 < j->batch ? j->n_mirror - m0 : j->batch;
                    for (int i = 0; i < nb; i++)
                        mirror(tile, in + (size_t)i * pp, P, j->mirrors[m0 + i], 1, false);
                    if ((rc = mms_net_forward(net, in, nb, lg)) < 0) {
                        mms_why(why, why_len, rc, "the network failed on tile (%lld, %lld, %lld)",
                                (long long)s0, (long long)s1, (long long)s2);
                        goto out;
                    }
                    for (int i = 0; i < nb; i++)
                        mirror(lg + (size_t)i * c * pp, sum, P, j->mirrors[m0 + i], (int)c, true);
                }
                for (size_t ch = 0; ch < c; ch++)
                    for (int64_t z = 0; z < P[0]; z++)
                        for (int64_t y = 0; y < P[1]; y++) {
                            float *dst =
                                acc + (int64_t)ch * pv + base + z * j->st[0] + y * j->st[1];
                            const float *s = sum + (ch * pp) + (size_t)((z * P[1] + y) * P[2]);
                            const float *gw = g + (z * P[1] + y) * P[2];
                            for (int64_t i = 0; i < P[2]; i++)
                                dst[i] += gw[i] * (s[i] * scale);
                        }
                if (o->progress != NULL)
                    o->progress(o->progress_arg, ++done, total);
            }
    rc = 0;
out:
    free(g);
    free(tile);
    free(in);
    free(lg);
    free(sum);
    return rc;
}

/* The sliding window of 5.6 and 5.7 in the backend's buffers: the padded volume and the
 * Gaussian go up once, batches of up to net_batch (tile, mirroring) pairs run across tiles
 * (gathered and mirrored into the network's input, added back into the accumulator in the
 * order they were queued), and only the accumulator comes back into acc. Each logit is
 * scaled and weighted on its own instead of after the mirrorings' sum: the host path's
 * terms, added in another order (a rounding apart). */
static int
window_on_backend(const struct job *j, struct mms_net *net, const float *x, float *acc,
                  const struct mms_pipe_opts *o, char *why, size_t why_len)
{
    struct mms_backend *be = mms__net_backend(net);
    const struct mms_backend_ops *ops = be->ops;
    const int64_t *P = j->patch;
    const int64_t pp = P[0] * P[1] * P[2], pv = j->pd[0] * j->pd[1] * j->pd[2];
    const int c = j->classes;
    struct mms_buffer vol = {0}, gs = {0}, ac = {0};
    struct mms_k_window *w = calloc((size_t)j->net_batch, sizeof *w);
    int64_t *tile_of = calloc((size_t)j->net_batch, sizeof *tile_of);
    float *g = malloc((size_t)pp * sizeof *g);
    int rc = MMS_ENOMEM;
    if (w == NULL || tile_of == NULL || g == NULL) {
        mms_why(why, why_len, rc, "out of memory for the sliding window");
        goto out;
    }
    mms_pipe_gaussian(P, j->card->inf.sigma_scale, j->card->inf.peak, g);
    if ((rc = ops->buffer_alloc(be, (size_t)pv * sizeof(float), &vol)) < 0 ||
        (rc = ops->buffer_alloc(be, (size_t)pp * sizeof(float), &gs)) < 0 ||
        (rc = ops->buffer_alloc(be, (size_t)c * (size_t)pv * sizeof(float), &ac)) < 0) {
        mms_why(why, why_len, rc, "%s: no room for the sliding window's %lld x %d logits",
                ops->name, (long long)pv, c);
        goto out;
    }
    if ((rc = ops->upload(be, &vol, 0, x, (size_t)pv * sizeof(float))) < 0 ||
        (rc = ops->upload(be, &gs, 0, g, (size_t)pp * sizeof(float))) < 0 ||
        (rc = ops->buffer_zero(be, &ac)) < 0) {
        mms_why(why, why_len, rc, "%s: the sliding window's buffers: %s", ops->name,
                mms_strerror(rc));
        goto out;
    }
    struct mms_buffer *arena = mms__net_arena(net);
    const int members = mms_net_members(net);
    const float scale = 1.0f / (float)(j->n_mirror * members);
    const int64_t n1 = j->n_starts[1], n2 = j->n_starts[2];
    const int64_t total = j->n_starts[0] * n1 * n2;
    int nb = 0;
    for (int64_t t = 0; t < total; t++) {
        const int64_t s0 = j->starts[0][t / (n1 * n2)], s1 = j->starts[1][t / n2 % n1],
                      s2 = j->starts[2][t % n2];
        for (int m = 0; m < j->n_mirror; m++) {
            w[nb] = (struct mms_k_window){.p = {P[0], P[1], P[2]},
                                          .st = {j->st[0], j->st[1], j->st[2]},
                                          .base = s0 * j->st[0] + s1 * j->st[1] + s2,
                                          .mask = j->mirrors[m]};
            tile_of[nb] = t;
            if (++nb < j->net_batch && !(t == total - 1 && m == j->n_mirror - 1))
                continue;
            /* each member on the batch: gathered again, as a run may reuse its input's memory;
               the members' terms are added like the mirrorings' (nnU-Net's mean over both) */
            for (int k = 0; k < members; k++) {
                for (int i = 0; i < nb; i++) {
                    rc = ops->window_gather(be, &vol, &w[i], arena, mms__net_input_offset(net, i));
                    if (rc < 0) {
                        mms_why(why, why_len, rc, "%s: gathering tile %lld: %s", ops->name,
                                (long long)tile_of[i], mms_strerror(rc));
                        goto out;
                    }
                }
                if ((rc = mms__net_compute(net, k, nb)) < 0) {
                    mms_why(why, why_len, rc, "the network failed on tile (%lld, %lld, %lld)",
                            (long long)s0, (long long)s1, (long long)s2);
                    goto out;
                }
                for (int i = 0; i < nb; i++) {
                    rc = ops->window_scatter(be, arena, mms__net_output_offset(net, i), c, &gs,
                                             scale, &w[i], pv, &ac);
                    if (rc < 0) {
                        mms_why(why, why_len, rc, "%s: adding back tile %lld: %s", ops->name,
                                (long long)tile_of[i], mms_strerror(rc));
                        goto out;
                    }
                }
            }
            /* tiles whose every mirroring has been added */
            int64_t done = m == j->n_mirror - 1 ? t + 1 : t;
            if (o->progress != NULL && done > 0)
                o->progress(o->progress_arg, done, total);
            nb = 0;
        }
    }
    if ((rc = mms__backend_synchronize(be)) < 0 ||
        (rc = ops->download(be, acc, &ac, 0, (size_t)c * (size_t)pv * sizeof(float))) < 0)
        mms_why(why, why_len, rc, "%s: bringing the logits back: %s", ops->name, mms_strerror(rc));
out:
    if (ac.host != NULL || ac.device != NULL)
        ops->buffer_free(be, &ac);
    if (gs.host != NULL || gs.device != NULL)
        ops->buffer_free(be, &gs);
    if (vol.host != NULL || vol.device != NULL)
        ops->buffer_free(be, &vol);
    free(w);
    free(tile_of);
    free(g);
    return rc;
}

/* Acc / Wt over the interior, with Wt = peak * w0 * w1 * w2 (the Gaussian and the tile grid
 * are both products over the axes); then the argmax at the target resolution. */
static int
finalise(const struct job *j, float *acc, uint8_t *lab, int threads, char *why, size_t why_len)
{
    double *w[3] = {NULL, NULL, NULL};
    int rc = MMS_ENOMEM;
    for (int t = 0; t < 3; t++) {
        if ((w[t] = calloc((size_t)j->pd[t], sizeof(double))) == NULL)
            goto out;
        double c = (double)(j->patch[t] / 2), s = j->card->inf.sigma_scale * (double)j->patch[t];
        for (int64_t i = 0; i < j->n_starts[t]; i++)
            for (int64_t q = 0; q < j->patch[t]; q++)
                w[t][j->starts[t][i] + q] += exp(-((double)q - c) * ((double)q - c) / (2 * s * s));
    }
    const int64_t pv = j->pd[0] * j->pd[1] * j->pd[2];
    const double peak = j->card->inf.peak;
    int bad = 0;
#pragma omp parallel for num_threads(threads) collapse(2) schedule(static) reduction(| : bad)
    for (int64_t z = j->pb[0]; z < j->pb[0] + j->tn[0]; z++)
        for (int64_t y = j->pb[1]; y < j->pb[1] + j->tn[1]; y++)
            for (int64_t x = j->pb[2]; x < j->pb[2] + j->tn[2]; x++) {
                int64_t v = z * j->st[0] + y * j->st[1] + x;
                double inv = 1.0 / (peak * w[0][z] * w[1][y] * w[2][x]);
                float best = 0.0f;
                int arg = 0;
                for (int c = 0; c < j->classes; c++) {
                    float l = (float)(acc[c * pv + v] * inv);
                    acc[c * pv + v] = l;
                    bad |= !isfinite(l);
                    if (c == 0 || l > best) {
                        best = l;
                        arg = c;
                    }
                }
                lab[v] = (uint8_t)arg;
            }
    rc = bad ? mms_why(why, why_len, MMS_EMODEL, "the network gave non-finite logits") : 0;
out:
    for (int t = 0; t < 3; t++)
        free(w[t]);
    return rc;
}

/* Target coordinate of every crop index along DICOM axis a (5.8), as the two neighbours'
 * offsets in the padded network volume and the weight of the second. */
struct taps {
    int64_t *o0, *o1;
    double *w;
};

static void
back_taps(const struct job *j, int a, const double *coord, int order, struct taps *tp)
{
    int t = j->inv[a];
    int64_t n = j->tk[a];
    for (int64_t i = 0; i < j->nc[a]; i++) {
        double x = coord[i], f = floor(x);
        int64_t i0, i1;
        double w = 0.0;
        if (order == 0) {
            double r = floor(x + 0.5);
            i0 = i1 = r < 0.0 ? 0 : r > (double)(n - 1) ? n - 1 : (int64_t)r;
        } else {
            i0 = (int64_t)f;
            i1 = i0 + 1;
            w = x - f;
            i0 = i0 < 0 ? 0 : i0 > n - 1 ? n - 1 : i0;
            i1 = i1 < 0 ? 0 : i1 > n - 1 ? n - 1 : i1;
            if (i0 == i1)
                w = 0.0;
        }
        int64_t p0 = j->flip[t] ? n - 1 - i0 : i0, p1 = j->flip[t] ? n - 1 - i1 : i1;
        tp->o0[i] = (j->pb[t] + p0) * j->st[t];
        tp->o1[i] = (j->pb[t] + p1) * j->st[t];
        tp->w[i] = w;
    }
}

static int
export_labels(const struct job *j, const float *logits, const uint8_t *lab, uint8_t *labels,
              int threads, int64_t *mixed_out)
{
    const struct mms_ct *ct = j->ct;
    const struct mms_card *card = j->card;
    const int64_t pv = j->pd[0] * j->pd[1] * j->pd[2];
    int order[3];
    for (int a = 0; a < 3; a++)
        order[a] = a == j->sep_out ? card->pre.logits_order_z : card->pre.logits_order;
    int64_t longest = j->nc[0] > j->nc[1] ? j->nc[0] : j->nc[1];
    longest = j->nc[2] > longest ? j->nc[2] : longest;
    double *coord = malloc((size_t)longest * sizeof *coord);
    double *d[3] = {NULL, NULL, NULL};
    struct taps tk = {0};
    int rc = MMS_ENOMEM, failed = 0;
    int64_t mixed = 0;
    if (coord == NULL)
        goto out;
    tk.o0 = malloc((size_t)j->nc[0] * sizeof(int64_t));
    tk.o1 = malloc((size_t)j->nc[0] * sizeof(int64_t));
    tk.w = malloc((size_t)j->nc[0] * sizeof(double));
    if (tk.o0 == NULL || tk.o1 == NULL || tk.w == NULL)
        goto out;
    if (j->irregular)
        slice_coords_backward(j, coord);
    else
        mms__grid_coords(j->tk[0], j->nc[0], coord);
    back_taps(j, 0, coord, order[0], &tk);
    if (j->tilted) {
        const double *u[3] = {NULL, ct->u_r, ct->u_c};
        const double mm[3] = {0.0, ct->row_mm, ct->col_mm};
        for (int a = 1; a < 3; a++) {
            if ((d[a] = malloc((size_t)j->nc[0] * sizeof(double))) == NULL)
                goto out;
            tilt_offsets(j, u[a], mm[a], d[a]);
        }
    }
    memset(labels, 0, (size_t)(ct->slices * ct->rows * ct->cols));

#pragma omp parallel num_threads(threads) reduction(+ : mixed)
    {
        struct taps tr, tc;
        double *cr = malloc((size_t)j->nc[1] * sizeof *cr),
               *cc = malloc((size_t)j->nc[2] * sizeof *cc);
        double *v = malloc((size_t)j->classes * sizeof *v);
        tr.o0 = malloc((size_t)j->nc[1] * sizeof(int64_t));
        tr.o1 = malloc((size_t)j->nc[1] * sizeof(int64_t));
        tr.w = malloc((size_t)j->nc[1] * sizeof(double));
        tc.o0 = malloc((size_t)j->nc[2] * sizeof(int64_t));
        tc.o1 = malloc((size_t)j->nc[2] * sizeof(int64_t));
        tc.w = malloc((size_t)j->nc[2] * sizeof(double));
        bool ok = cr != NULL && cc != NULL && v != NULL && tr.o0 != NULL && tr.o1 != NULL &&
                  tr.w != NULL && tc.o0 != NULL && tc.o1 != NULL && tc.w != NULL;
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
        bool have = false;
#pragma omp for schedule(dynamic, 1)
        for (int64_t k = 0; k < j->nc[0]; k++) {
            if (!ok)
                continue;
            if (!have || j->tilted) {
                mms__grid_coords(j->tk[1], j->nc[1], cr);
                mms__grid_coords(j->tk[2], j->nc[2], cc);
                if (j->tilted) {
                    double f1 = (double)j->tk[1] / (double)j->nc[1];
                    double f2 = (double)j->tk[2] / (double)j->nc[2];
                    for (int64_t i = 0; i < j->nc[1]; i++)
                        cr[i] += d[1][k] * f1;
                    for (int64_t i = 0; i < j->nc[2]; i++)
                        cc[i] += d[2][k] * f2;
                }
                back_taps(j, 1, cr, order[1], &tr);
                back_taps(j, 2, cc, order[2], &tc);
                have = true;
            }
            const int64_t k0 = tk.o0[k], k1 = tk.o1[k];
            const double wk = tk.w[k];
            uint8_t *out = labels + ((k + j->lo[0]) * ct->rows + j->lo[1]) * ct->cols + j->lo[2];
            for (int64_t r = 0; r < j->nc[1]; r++, out += ct->cols) {
                const int64_t r0 = tr.o0[r], r1 = tr.o1[r];
                const double wr = tr.w[r];
                for (int64_t c = 0; c < j->nc[2]; c++) {
                    const int64_t c0 = tc.o0[c], c1 = tc.o1[c];
                    const int64_t off[8] = {k0 + r0 + c0, k0 + r0 + c1, k0 + r1 + c0, k0 + r1 + c1,
                                            k1 + r0 + c0, k1 + r0 + c1, k1 + r1 + c0, k1 + r1 + c1};
                    const uint8_t l = lab[off[0]];
                    bool same = true;
                    for (int q = 1; q < 8; q++)
                        same = same && lab[off[q]] == l;
                    if (same) {
                        out[c] = l;
                        continue;
                    }
                    mixed++;
                    const double wc = tc.w[c];
                    const double wq[8] = {(1 - wk) * (1 - wr) * (1 - wc),
                                          (1 - wk) * (1 - wr) * wc,
                                          (1 - wk) * wr * (1 - wc),
                                          (1 - wk) * wr * wc,
                                          wk * (1 - wr) * (1 - wc),
                                          wk * (1 - wr) * wc,
                                          wk * wr * (1 - wc),
                                          wk * wr * wc};
                    int best = 0;
                    for (int ch = 0; ch < j->classes; ch++) {
                        const float *p = logits + (int64_t)ch * pv;
                        double s = 0.0;
                        for (int q = 0; q < 8; q++)
                            s += wq[q] * (double)p[off[q]];
                        v[ch] = s;
                        if (s > v[best])
                            best = ch;
                    }
                    out[c] = (uint8_t)best;
                }
            }
        }
        free(cr);
        free(cc);
        free(v);
        free(tr.o0);
        free(tr.o1);
        free(tr.w);
        free(tc.o0);
        free(tc.o1);
        free(tc.w);
    }
    rc = failed ? MMS_ENOMEM : 0;
    *mixed_out = mixed;
out:
    free(coord);
    free(d[1]);
    free(d[2]);
    free(tk.o0);
    free(tk.o1);
    free(tk.w);
    return rc;
}

struct mms_pipe_job {
    struct job j;
    struct mms_pipe_opts o;
    int threads;
    float *x, *acc; /* the network input (freed once the window has run), the logits */
    uint8_t *lab;   /* labels at the target resolution */
    bool inferred;
};

void
mms_pipe_job_free(struct mms_pipe_job *pj)
{
    if (pj == NULL)
        return;
    free(pj->x);
    free(pj->acc);
    free(pj->lab);
    job_free(&pj->j);
    free(pj);
}

int
mms_pipe_prepare(const struct mms_ct *ct, const struct mms_model *m, const struct mms_net *net,
                 const struct mms_pipe_opts *o, struct mms_pipe_job **out,
                 struct mms_pipe_stats *stats, char *why, size_t why_len)
{
    if (ct == NULL || m == NULL || o == NULL || out == NULL || stats == NULL)
        return MMS_EINVAL;
    *out = NULL;
    double t0 = mms_mono_s();
    struct mms_pipe_job *pj = calloc(1, sizeof *pj);
    if (pj == NULL)
        return mms_why(why, why_len, MMS_ENOMEM, "out of memory");
    pj->o = *o;
    pj->threads = o->threads > 0 ? o->threads : omp_get_max_threads();
    struct job *j = &pj->j;
    int rc = prepare(j, ct, true, m, net, o, pj->threads, why, why_len);
    if (rc < 0)
        goto fail;
    fill_stats(j, net, pj->threads, stats);
    if ((rc = within_limit(stats, o, why, why_len)) < 0)
        goto fail;
    const size_t pv = (size_t)(j->pd[0] * j->pd[1] * j->pd[2]);
    pj->x = malloc(pv * sizeof *pj->x);
    pj->acc = malloc((size_t)j->classes * pv * sizeof *pj->acc);
    pj->lab = calloc(pv, 1);
    if (pj->x == NULL || pj->acc == NULL || pj->lab == NULL) {
        rc = mms_why(why, why_len, MMS_ENOMEM, "out of memory for the target volume");
        goto fail;
    }
    const float pad = (float)j->card->inf.pad_value;
    for (size_t i = 0; i < pv; i++)
        pj->x[i] = pad;
    if ((rc = preprocess(j, pj->x, pj->threads)) < 0) {
        mms_why(why, why_len, rc, "resampling %lld x %lld x %lld voxels to %lld x %lld x %lld: %s",
                (long long)j->nc[0], (long long)j->nc[1], (long long)j->nc[2], (long long)j->tk[0],
                (long long)j->tk[1], (long long)j->tk[2], mms_strerror(rc));
        goto fail;
    }
    stats->preprocess_s = mms_mono_s() - t0;
    *out = pj;
    return 0;
fail:
    mms_pipe_job_free(pj);
    return rc;
}

int
mms_pipe_infer(struct mms_pipe_job *pj, struct mms_net *net, struct mms_pipe_stats *stats,
               char *why, size_t why_len)
{
    if (pj == NULL || net == NULL || stats == NULL || pj->x == NULL)
        return MMS_EINVAL;
    double t0 = mms_mono_s();
    struct job *j = &pj->j;
    int rc = bind_net(j, net, &pj->o, why, why_len);
    if (rc < 0)
        return rc;
    struct mms_pipe_stats now; /* this network's figures; the preprocessing's time stays */
    fill_stats(j, net, pj->threads, &now);
    stats->memory_estimate = now.memory_estimate;
    stats->device_memory_estimate = now.device_memory_estimate;
    stats->window_on_backend = now.window_on_backend;
    if ((rc = within_limit(stats, &pj->o, why, why_len)) < 0)
        return rc;
    memset(pj->acc, 0,
           (size_t)j->classes * (size_t)(j->pd[0] * j->pd[1] * j->pd[2]) * sizeof *pj->acc);
    rc = j->on_backend ? window_on_backend(j, net, pj->x, pj->acc, &pj->o, why, why_len)
                       : sliding_window(j, net, pj->x, pj->acc, &pj->o, why, why_len);
    if (rc < 0)
        return rc; /* x stays: another network may run the job */
    free(pj->x);
    pj->x = NULL;
    pj->inferred = true;
    stats->network_s = mms_mono_s() - t0;
    return 0;
}

int
mms_pipe_finish(struct mms_pipe_job *pj, uint8_t *labels, struct mms_pipe_stats *stats, char *why,
                size_t why_len)
{
    if (pj == NULL || labels == NULL || stats == NULL || !pj->inferred)
        return MMS_EINVAL;
    double t0 = mms_mono_s();
    int rc = finalise(&pj->j, pj->acc, pj->lab, pj->threads, why, why_len);
    if (rc < 0)
        return rc;
    if ((rc = export_labels(&pj->j, pj->acc, pj->lab, labels, pj->threads, &stats->mixed_voxels)) <
        0)
        return mms_why(why, why_len, rc, "out of memory in the export");
    pj->inferred = false; /* acc holds the normalised logits: not twice */
    free(pj->acc);        /* the postprocessing's memory in their place */
    free(pj->lab);
    pj->acc = NULL;
    pj->lab = NULL;
    const struct mms_ct *ct = pj->j.ct;
    const int64_t n[3] = {ct->slices, ct->rows, ct->cols};
    stats->postprocessed_voxels = 0;
    if (pj->o.postprocess &&
        (rc = mms_pipe_postprocess(pj->j.card, labels, n, &stats->postprocessed_voxels)) < 0)
        return mms_why(why, why_len, rc, "the postprocessing: %s", mms_strerror(rc));
    stats->export_s = mms_mono_s() - t0;
    return 0;
}

int
mms_pipe_run(const struct mms_ct *ct, const struct mms_model *m, struct mms_net *net,
             const struct mms_pipe_opts *o, uint8_t *labels, struct mms_pipe_stats *stats,
             char *why, size_t why_len)
{
    if (ct == NULL || m == NULL || net == NULL || o == NULL || labels == NULL || stats == NULL)
        return MMS_EINVAL;
    struct mms_pipe_job *pj;
    int rc = mms_pipe_prepare(ct, m, net, o, &pj, stats, why, why_len);
    if (rc < 0)
        return rc;
    if ((rc = mms_pipe_infer(pj, net, stats, why, why_len)) == 0)
        rc = mms_pipe_finish(pj, labels, stats, why, why_len);
    mms_pipe_job_free(pj);
    return rc;
}
