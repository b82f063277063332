/* infer: the building blocks of the pipeline (mmunet.md 5.4 and 5.6): new shape, separate
 * axis, resampling of orders 0, 1 and 3 one axis at a time, tile starts and the Gaussian map.
 *
 * Order 3 is scikit-image's resize(order=3, mode='edge', anti_aliasing=False): each line is
 * padded with 12 samples of edge replication, turned into cubic B-spline coefficients by the
 * causal and anti-causal recursive filter (pole sqrt(3) - 2) in double, and evaluated over 4
 * neighbours. The operator is separable, so one axis at a time gives the same result as the
 * 3D call; the clip to the input's range is applied once, by the last pass.
 * Threads: any; a pass uses OpenMP threads of its own. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "infer/pipeline-impl.h"

enum {
    PAD3 = 12, /* edge samples around a line before the order-3 prefilter */
    LANES = 16 /* lines filtered and evaluated together */
};

void
mms_pipe_new_shape(const int64_t shape[3], const double spacing[3], const double target[3],
                   int64_t out[3])
{
    for (int i = 0; i < 3; i++) {
        double v = rint(spacing[i] / target[i] * (double)shape[i]);        /* half to even */
        out[i] = !(v <= (double)MMS_PIPE_MAX_AXIS) ? MMS_PIPE_MAX_AXIS + 1 /* also NaN */
                 : v < 1.0                         ? 1
                                                   : (int64_t)v;
    }
}

int
mms_pipe_separate_axis(const double current[3], const double target[3], double threshold)
{
    const double *sp[2] = {current, target};
    for (int s = 0; s < 2; s++) {
        double mx = sp[s][0], mn = sp[s][0];
        for (int i = 1; i < 3; i++) {
            mx = sp[s][i] > mx ? sp[s][i] : mx;
            mn = sp[s][i] < mn ? sp[s][i] : mn;
        }
        if (!(mx / mn > threshold))
            continue;
        int axis = -1, count = 0;
        for (int i = 0; i < 3; i++)
            if (sp[s][i] == mx) {
                axis = i;
                count++;
            }
        return count == 1 ? axis : -1;
    }
    return -1;
}

void
mms__grid_coords(int64_t n_in, int64_t n_out, double *coord)
{
    double scale = (double)n_in / (double)n_out;
    for (int64_t j = 0; j < n_out; j++)
        coord[j] = ((double)j + 0.5) * scale - 0.5;
}

size_t
mms__pass_scratch(int64_t n_in, int64_t n_out)
{
    return (size_t)(n_in + 2 * PAD3) * LANES * sizeof(double) +
           (size_t)n_out * 4 * (sizeof(int32_t) + sizeof(double));
}

/* Tap rows (in the padded line buffer) and weights of every output index. */
static void
build_taps(int order, int64_t n_in, int64_t n_out, const double *coord, double shift, int32_t *tap,
           double *w)
{
    if (order == 3) {
        double hi = (double)(n_in + 2 * PAD3 - 3);
        for (int64_t j = 0; j < n_out; j++) {
            double x = coord[j] + shift + PAD3;
            x = x < 1.0 ? 1.0 : x > hi ? hi : x;
            double f = floor(x), t = x - f, u = 1.0 - t;
            int32_t i = (int32_t)f - 1;
            for (int q = 0; q < 4; q++)
                tap[4 * j + q] = i + q;
            /* 6 x the cubic B-spline (the prefilter's gain is folded in here) */
            w[4 * j + 0] = u * u * u;
            w[4 * j + 1] = 4.0 - 6.0 * t * t + 3.0 * t * t * t;
            w[4 * j + 2] = 4.0 - 6.0 * u * u + 3.0 * u * u * u;
            w[4 * j + 3] = t * t * t;
        }
    } else if (order == 1) {
        for (int64_t j = 0; j < n_out; j++) {
            double x = coord[j] + shift, f = floor(x);
            int64_t a = (int64_t)f, b = a + 1;
            a = a < 0 ? 0 : a > n_in - 1 ? n_in - 1 : a;
            b = b < 0 ? 0 : b > n_in - 1 ? n_in - 1 : b;
            tap[2 * j] = (int32_t)a;
            tap[2 * j + 1] = (int32_t)b;
            w[2 * j] = 1.0 - (x - f);
            w[2 * j + 1] = x - f;
        }
    } else {
        for (int64_t j = 0; j < n_out; j++) {
            double x = floor(coord[j] + shift + 0.5);
            int64_t a = x < 0.0 ? 0 : x > (double)(n_in - 1) ? n_in - 1 : (int64_t)x;
            tap[j] = (int32_t)a;
            w[j] = 1.0;
        }
    }
}

/* Cubic B-spline coefficients of LANES lines of m samples each (row-major [m][LANES]), in
 * place, divided by the gain 6. The ends start from the steady state of a constant signal:
 * the lines are edge-padded, so this is exact up to |z|^PAD3. */
static void
prefilter(double *c, int64_t m)
{
    const double z = sqrt(3.0) - 2.0;
    for (int l = 0; l < LANES; l++)
        c[l] /= 1.0 - z;
    for (int64_t i = 1; i < m; i++)
        for (int l = 0; l < LANES; l++)
            c[i * LANES + l] += z * c[(i - 1) * LANES + l];
    for (int l = 0; l < LANES; l++)
        c[(m - 1) * LANES + l] *= -z / (1.0 - z);
    for (int64_t i = m - 2; i >= 0; i--)
        for (int l = 0; l < LANES; l++)
            c[i * LANES + l] = z * (c[(i + 1) * LANES + l] - c[i * LANES + l]);
}

static inline float
normalise(const struct mms__norm *n, float v)
{
    v = v < n->lo ? n->lo : v > n->hi ? n->hi : v;
    return (v - n->mean) / n->std;
}

int
mms__resample_pass(const struct mms__view *src, struct mms__view *dst, int axis,
                   const double *src_coord, const double *shift, int order,
                   const struct mms__norm *norm, int clip_axis, const float *clip_lo,
                   const float *clip_hi, int threads)
{
    const int o1 = axis == 0 ? 1 : 0, o2 = axis == 2 ? 1 : 2;
    const int64_t n_in = src->n[axis], n_out = dst->n[axis];
    const int64_t n1 = src->n[o1], n2 = src->n[o2];
    const int64_t blocks = (n2 + LANES - 1) / LANES, jobs = n1 * blocks;
    const int pad = order == 3 ? PAD3 : 0, ntap = order == 3 ? 4 : order == 1 ? 2 : 1;
    const int64_t m = n_in + 2 * pad;
    int failed = 0;
    if (threads <= 0)
        threads = omp_get_max_threads();

#pragma omp parallel num_threads(threads)
    {
        double *buf = malloc((size_t)m * LANES * sizeof *buf);
        int32_t *tap = malloc((size_t)n_out * (size_t)ntap * sizeof *tap);
        double *w = malloc((size_t)n_out * (size_t)ntap * sizeof *w);
        bool have_taps = false;
        double tap_shift = 0.0;
        if (buf == NULL || tap == NULL || w == NULL) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t job = 0; job < jobs; job++) {
            if (buf == NULL || tap == NULL || w == NULL)
                continue;
            const int64_t i1 = job / blocks, l0 = job % blocks * LANES;
            const int lanes = n2 - l0 < LANES ? (int)(n2 - l0) : LANES;
            const double sh = shift != NULL ? shift[i1] : 0.0;
            if (!have_taps || sh != tap_shift) {
                build_taps(order, n_in, n_out, src_coord, sh, tap, w);
                have_taps = true;
                tap_shift = sh;
            }
            const float *sp = src->p + i1 * src->s[o1] + l0 * src->s[o2];
            for (int64_t i = 0; i < n_in; i++) {
                const float *row = sp + i * src->s[axis];
                double *b = buf + (i + pad) * LANES;
                for (int l = 0; l < lanes; l++) {
                    float v = row[l * src->s[o2]];
                    b[l] = norm != NULL && norm->on ? normalise(norm, v) : v;
                }
                for (int l = lanes; l < LANES; l++)
                    b[l] = 0.0;
            }
            if (order == 3) {
                for (int i = 0; i < pad; i++) {
                    memcpy(buf + i * LANES, buf + pad * LANES, LANES * sizeof *buf);
                    memcpy(buf + (pad + n_in + i) * LANES, buf + (pad + n_in - 1) * LANES,
                           LANES * sizeof *buf);
                }
                prefilter(buf, m);
            }
            float *dp = dst->p + i1 * dst->s[o1] + l0 * dst->s[o2];
            for (int64_t j = 0; j < n_out; j++) {
                double acc[LANES] = {0};
                for (int q = 0; q < ntap; q++) {
                    const double *b = buf + (int64_t)tap[j * ntap + q] * LANES;
                    const double wq = w[j * ntap + q];
                    for (int l = 0; l < LANES; l++)
                        acc[l] += wq * b[l];
                }
                float *row = dp + j * dst->s[axis];
                for (int l = 0; l < lanes; l++) {
                    float v = (float)acc[l];
                    if (clip_axis != -2) {
                        int64_t ci = clip_axis == -1 ? 0 : clip_axis == o1 ? i1 : l0 + l;
                        v = v < clip_lo[ci] ? clip_lo[ci] : v > clip_hi[ci] ? clip_hi[ci] : v;
                    }
                    row[l * dst->s[o2]] = v;
                }
            }
        }
        free(buf);
        free(tap);
        free(w);
    }
    return failed ? MMS_ENOMEM : 0;
}

/* ----------------------------------------------------------------------------- public */

static struct mms__view
dense_view(const float *p, const int64_t n[3])
{
    struct mms__view v = {(float *)p, {n[0], n[1], n[2]}, {n[1] * n[2], n[2], 1}};
    return v;
}

int
mms_pipe_resample(const float *in, const int64_t shape_in[3], float *out,
                  const int64_t shape_out[3], const double current[3], const double target[3],
                  int order, int order_z, double threshold, int sep_axis)
{
    if (in == NULL || out == NULL || (order != 0 && order != 1 && order != 3) ||
        (order_z != 0 && order_z != 1) || sep_axis < -2 || sep_axis > 2)
        return MMS_EINVAL;
    for (int a = 0; a < 3; a++)
        if (shape_in[a] < 1 || shape_out[a] < 1 || shape_in[a] > INT32_MAX / 2 ||
            shape_out[a] > INT32_MAX / 2)
            return MMS_EINVAL;
    int64_t n_in, n_out;
    if (__builtin_mul_overflow(shape_in[0], shape_in[1], &n_in) ||
        __builtin_mul_overflow(n_in, shape_in[2], &n_in) || n_in > MMS_PIPE_MAX_VOXELS ||
        __builtin_mul_overflow(shape_out[0], shape_out[1], &n_out) ||
        __builtin_mul_overflow(n_out, shape_out[2], &n_out) || n_out > MMS_PIPE_MAX_VOXELS)
        return MMS_EINVAL;
    if (memcmp(shape_in, shape_out, 3 * sizeof *shape_in) == 0) {
        memcpy(out, in, (size_t)n_in * sizeof *in);
        return 0;
    }
    int sep = sep_axis >= 0    ? sep_axis
              : sep_axis == -2 ? -1
                               : mms_pipe_separate_axis(current, target, threshold);

    /* The passes: the axes that change, separate axis last; the clip goes with the last
     * pass of the full path, or the last in-plane pass, per plane across the separate axis. */
    int axes[3], n_pass = 0, last_plane = -1;
    for (int a = 0; a < 3; a++)
        if (a != sep && shape_in[a] != shape_out[a])
            axes[n_pass++] = a;
    last_plane = n_pass - 1;
    if (sep >= 0 && shape_in[sep] != shape_out[sep])
        axes[n_pass++] = sep;

    int clip_n = sep >= 0 ? (int)shape_in[sep] : 1;
    float *lo = malloc((size_t)clip_n * sizeof *lo), *hi = malloc((size_t)clip_n * sizeof *hi);
    float *tmp[2] = {NULL, NULL};
    double *coord = NULL;
    int rc = MMS_ENOMEM;
    if (lo == NULL || hi == NULL)
        goto out;
    for (int i = 0; i < clip_n; i++) {
        lo[i] = INFINITY;
        hi[i] = -INFINITY;
    }
    for (int64_t i = 0; i < shape_in[0]; i++)
        for (int64_t j = 0; j < shape_in[1]; j++)
            for (int64_t k = 0; k < shape_in[2]; k++) {
                int64_t idx[3] = {i, j, k}, c = sep >= 0 ? idx[sep] : 0;
                float v = in[(i * shape_in[1] + j) * shape_in[2] + k];
                lo[c] = v < lo[c] ? v : lo[c];
                hi[c] = v > hi[c] ? v : hi[c];
            }
    /* two buffers take turns between passes, each as large as the largest it holds */
    int64_t big[2] = {0, 0}, cur[3] = {shape_in[0], shape_in[1], shape_in[2]}, max_n = 0;
    for (int p = 0; p < n_pass; p++) {
        cur[axes[p]] = shape_out[axes[p]];
        max_n = shape_out[axes[p]] > max_n ? shape_out[axes[p]] : max_n;
        if (p < n_pass - 1 && cur[0] * cur[1] * cur[2] > big[p % 2])
            big[p % 2] = cur[0] * cur[1] * cur[2];
    }
    for (int b = 0; b < 2; b++)
        if (big[b] > 0 && (tmp[b] = malloc((size_t)big[b] * sizeof(float))) == NULL)
            goto out;
    if ((coord = malloc((size_t)max_n * sizeof *coord)) == NULL)
        goto out;
    int64_t now[3] = {shape_in[0], shape_in[1], shape_in[2]};
    const float *from = in;
    for (int p = 0; p < n_pass; p++) {
        int a = axes[p];
        int64_t next[3] = {now[0], now[1], now[2]};
        next[a] = shape_out[a];
        float *to = p == n_pass - 1 ? out : tmp[p % 2];
        struct mms__view s = dense_view(from, now), d = dense_view(to, next);
        mms__grid_coords(now[a], next[a], coord);
        int clip_axis = -2;
        if (sep < 0 && p == n_pass - 1)
            clip_axis = -1;
        else if (sep >= 0 && p == last_plane)
            clip_axis = sep;
        rc = mms__resample_pass(&s, &d, a, coord, NULL, a == sep ? order_z : order, NULL, clip_axis,
                                lo, hi, 0);
        if (rc < 0)
            goto out;
        from = to;
        memcpy(now, next, sizeof now);
    }
    rc = 0;
out:
    free(lo);
    free(hi);
    free(tmp[0]);
    free(tmp[1]);
    free(coord);
    return rc;
}

int64_t
mms_pipe_tile_starts(int64_t len, int64_t patch, double step, int64_t *starts)
{
    if (len <= patch) {
        if (starts != NULL)
            starts[0] = 0;
        return 1;
    }
    int64_t n = (int64_t)ceil((double)(len - patch) / ((double)patch * step)) + 1;
    double stride = (double)(len - patch) / (double)(n - 1);
    if (starts != NULL)
        for (int64_t i = 0; i < n; i++)
            starts[i] = (int64_t)rint(stride * (double)i);
    return n;
}

void
mms_pipe_gaussian(const int64_t patch[3], double sigma_scale, double peak, float *g)
{
    int64_t c[3];
    double s[3];
    for (int d = 0; d < 3; d++) {
        c[d] = patch[d] / 2;
        s[d] = sigma_scale * (double)patch[d];
    }
    for (int64_t i = 0; i < patch[0]; i++) {
        double e0 = exp(-(double)((i - c[0]) * (i - c[0])) / (2.0 * s[0] * s[0]));
        for (int64_t j = 0; j < patch[1]; j++) {
            double e1 = exp(-(double)((j - c[1]) * (j - c[1])) / (2.0 * s[1] * s[1]));
            float *row = g + (i * patch[1] + j) * patch[2];
            for (int64_t k = 0; k < patch[2]; k++) {
                double e2 = exp(-(double)((k - c[2]) * (k - c[2])) / (2.0 * s[2] * s[2]));
                row[k] = (float)(peak * e0 * e1 * e2);
            }
        }
    }
}
