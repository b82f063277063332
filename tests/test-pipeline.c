/* The building blocks of infer/pipeline.h against scipy and scikit-image (mmunet.md 5.4, 5.6
 * and 7, V2): new shape, separate axis, resampling, tile starts and the Gaussian map, from the
 * goldens of tools/mmunet/pipeline_fixtures.py (tests/fixtures/pipeline), and properties that
 * need no fixture: identity, order 0 values, flip equivariance, Gaussian positivity and
 * symmetry, tile coverage, argument checks. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "common/err.h"
#include "infer/infer.h"
#include "infer/model-impl.h"
#include "infer/pipeline.h"
#include "tests/tap.h"
#include "tests/tol.h"

#define TOL 1e-5
#define FIXDIR "tests/fixtures/pipeline"

static const double iso[3] = {1.0, 1.0, 1.0};

/* ----------------------------------------------------------------------------- helpers */

/* The source folder: $srcdir, else the current folder or ../.. (a build folder such as
 * _build/dev), whichever holds the fixtures. */
static const char *
source_dir(void)
{
    static const char *const cand[] = {".", "../.."};
    const char *env = getenv("srcdir");
    if (env != NULL)
        return env;
    for (size_t i = 0; i < sizeof cand / sizeof cand[0]; i++) {
        char probe[512];
        snprintf(probe, sizeof probe, "%s/" FIXDIR "/resample.safetensors", cand[i]);
        if (access(probe, R_OK) == 0)
            return cand[i];
    }
    return ".";
}

static struct mms_st *
open_fixture(const char *dir, const char *file, bool required)
{
    char path[4096], why[512] = "";
    struct mms_st *st = NULL;
    snprintf(path, sizeof path, "%s/" FIXDIR "/%s", dir, file);
    int rc = mms__st_open(path, &st, why, sizeof why);
    if (rc < 0 && required) {
        printf("Bail out! %s (is $srcdir set?)\n", why);
        exit(1);
    }
    return rc < 0 ? NULL : st;
}

static const struct mms_tensor *
need(const struct mms_st *st, const char *name)
{
    const struct mms_tensor *t = mms__st_find(st, name);
    if (t == NULL) {
        printf("Bail out! fixture tensor %s missing\n", name);
        exit(1);
    }
    return t;
}

static size_t
vol(const int64_t s[3])
{
    return (size_t)(s[0] * s[1] * s[2]);
}

/* tol of mmunet.md 7, and where the largest difference is */
static double
tol_at(const float *got, const float *want, size_t n, size_t *at)
{
    double worst = -1.0, scale = 1.0;
    *at = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (isnan(d))
            d = INFINITY;
        if (d > worst) {
            worst = d;
            *at = i;
        }
        if (fabs((double)want[i]) > scale)
            scale = fabs((double)want[i]);
    }
    return n == 0 ? 0.0 : worst / scale;
}

static void
diag_worst(const char *what, const int64_t s[3], const float *got, const float *want, size_t at)
{
    int64_t k = (int64_t)at % s[2], j = (int64_t)at / s[2] % s[1], i = (int64_t)at / s[2] / s[1];
    diag("%s: worst at (%lld, %lld, %lld): got %.9g, want %.9g", what, (long long)i, (long long)j,
         (long long)k, (double)got[at], (double)want[at]);
}

/* A deterministic pseudo-random field in [-1, 1). */
static void
fill(float *a, size_t n, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1u;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        a[i] = (float)((double)x / 2147483648.0 - 1.0);
    }
}

/* out = in reversed along axis */
static void
flip3(const float *in, const int64_t s[3], int axis, float *out)
{
    for (int64_t i = 0; i < s[0]; i++)
        for (int64_t j = 0; j < s[1]; j++)
            for (int64_t k = 0; k < s[2]; k++) {
                int64_t p[3] = {i, j, k};
                p[axis] = s[axis] - 1 - p[axis];
                out[(i * s[1] + j) * s[2] + k] = in[(p[0] * s[1] + p[1]) * s[2] + p[2]];
            }
}

static int
cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* ----------------------------------------------------------------------------- fixtures */

static void
test_new_shape(const struct mms_st *bl)
{
    const struct mms_tensor *t = need(bl, "new_shape");
    for (int64_t r = 0; r < t->shape[0]; r++) {
        const float *p = t->data + r * 12;
        int64_t shape[3], want[3], got[3] = {-7, -7, -7};
        double sp[3], tg[3];
        for (int d = 0; d < 3; d++) {
            shape[d] = (int64_t)p[d];
            sp[d] = p[3 + d];
            tg[d] = p[6 + d];
            want[d] = (int64_t)p[9 + d];
        }
        mms_pipe_new_shape(shape, sp, tg, got);
        bool eq = memcmp(got, want, sizeof got) == 0;
        ok(eq, "new shape of (%lld, %lld, %lld) from (%g, %g, %g) mm to (%g, %g, %g) mm",
           (long long)shape[0], (long long)shape[1], (long long)shape[2], sp[0], sp[1], sp[2],
           tg[0], tg[1], tg[2]);
        if (!eq)
            diag("got (%lld, %lld, %lld), want (%lld, %lld, %lld)", (long long)got[0],
                 (long long)got[1], (long long)got[2], (long long)want[0], (long long)want[1],
                 (long long)want[2]);
    }
}

static void
test_separate_axis(const struct mms_st *bl)
{
    const struct mms_tensor *t = need(bl, "separate_axis");
    for (int64_t r = 0; r < t->shape[0]; r++) {
        const float *p = t->data + r * 8;
        double cur[3] = {p[0], p[1], p[2]}, tgt[3] = {p[3], p[4], p[5]};
        is_int(mms_pipe_separate_axis(cur, tgt, p[6]), (int)p[7],
               "separate axis of (%g, %g, %g) -> (%g, %g, %g), threshold %g", cur[0], cur[1],
               cur[2], tgt[0], tgt[1], tgt[2], (double)p[6]);
    }
}

/* One row of a tiles table, (len, patch, step, count), against want[0..count). */
static bool
check_tile_row(const float *row, const float *want, const char *src)
{
    int64_t len = (int64_t)row[0], patch = (int64_t)row[1], n_want = (int64_t)row[3];
    double step = row[2];
    int64_t n = mms_pipe_tile_starts(len, patch, step, NULL);
    int64_t *got = calloc((size_t)(n > n_want ? n : n_want) + 1, sizeof *got);
    int64_t n2 = got != NULL ? mms_pipe_tile_starts(len, patch, step, got) : -1;
    bool good = n == n_want && n2 == n_want;
    for (int64_t i = 0; good && i < n_want; i++)
        good = got[i] == (int64_t)want[i];
    if (!good) {
        char g[512] = "", w[512] = "";
        size_t gl = 0, wl = 0;
        for (int64_t i = 0; got != NULL && i < n2 && gl < sizeof g - 24; i++)
            gl += (size_t)snprintf(g + gl, sizeof g - gl, " %lld", (long long)got[i]);
        for (int64_t i = 0; i < n_want && wl < sizeof w - 24; i++)
            wl += (size_t)snprintf(w + wl, sizeof w - wl, " %lld", (long long)want[i]);
        diag("%s: len %lld, patch %lld, step %.9g: got %lld starts (%lld when counting):%s; "
             "want %lld:%s",
             src, (long long)len, (long long)patch, step, (long long)n2, (long long)n, g,
             (long long)n_want, w);
    }
    free(got);
    return good;
}

/* Rows of (len, patch, step, count) and their starts, concatenated. */
static void
check_tiles(const struct mms_tensor *params, const struct mms_tensor *starts, const char *src,
            int *failed, int *rows)
{
    int64_t off = 0;
    for (int64_t r = 0; r < params->shape[0]; r++) {
        const float *row = params->data + r * 4;
        if (off + (int64_t)row[3] > starts->count) {
            printf("Bail out! %s: tiles.starts is too short\n", src);
            exit(1);
        }
        *failed += !check_tile_row(row, starts->data + off, src);
        (*rows)++;
        off += (int64_t)row[3];
    }
}

static void
test_tiles(const struct mms_st *bl)
{
    const struct mms_tensor *params = need(bl, "tiles.params"), *starts = need(bl, "tiles.starts");
    int64_t off = 0;
    for (int64_t r = 0; r < params->shape[0]; r++) {
        const float *row = params->data + r * 4;
        if (off + (int64_t)row[3] > starts->count) {
            printf("Bail out! tiles.starts is too short\n");
            exit(1);
        }
        ok(check_tile_row(row, starts->data + off, "mmunet.md 5.6"),
           "tile starts: len %lld, patch %lld, step %.9g -> %lld tiles", (long long)row[0],
           (long long)row[1], (double)row[2], (long long)row[3]);
        off += (int64_t)row[3];
    }
}

static void
test_gaussian_fixture(const struct mms_st *bl)
{
    for (int i = 0; i < mms__st_count(bl); i++) {
        const struct mms_tensor *t = mms__st_tensor(bl, i);
        if (strncmp(t->name, "gaussian.", 9) != 0)
            continue;
        int64_t patch[3] = {t->shape[0], t->shape[1], t->shape[2]};
        float *g = malloc(vol(patch) * sizeof *g);
        mms_pipe_gaussian(patch, 0.125, 10.0, g);
        size_t at;
        double tl = tol_at(g, t->data, vol(patch), &at);
        if (!ok(tl <= TOL, "Gaussian %s against the closed form in float64: tol %.2g", t->name, tl))
            diag_worst(t->name, patch, g, t->data, at);
        free(g);
    }
}

/* nnunetv2's own compute_gaussian and compute_steps_for_sliding_window (3 tests). */
static void
test_nnunet(const struct mms_st *nn)
{
    if (nn == NULL) {
        skip("no " FIXDIR "/nnunet.safetensors");
        skip("no " FIXDIR "/nnunet.safetensors");
        skip("no " FIXDIR "/nnunet.safetensors");
        return;
    }
    int failed = 0, rows = 0;
    check_tiles(need(nn, "tiles.params"), need(nn, "tiles.starts"), "nnunetv2", &failed, &rows);
    ok(failed == 0 && rows > 0,
       "tile starts equal nnunetv2's compute_steps_for_sliding_window (%d rows)", rows);
    static const char *const tags[] = {"f64", "f16"};
    static const double bounds[] = {TOL, 1e-3};
    for (int k = 0; k < 2; k++) {
        double worst = 0.0;
        int n = 0;
        for (int i = 0; i < mms__st_count(nn); i++) {
            const struct mms_tensor *t = mms__st_tensor(nn, i);
            size_t len = strlen(t->name);
            if (strncmp(t->name, "gaussian.", 9) != 0 || len < 4 ||
                strcmp(t->name + len - 3, tags[k]) != 0)
                continue;
            int64_t patch[3] = {t->shape[0], t->shape[1], t->shape[2]};
            size_t v = vol(patch);
            float *g = malloc(v * sizeof *g), *ref = malloc(v * sizeof *ref);
            mms_pipe_gaussian(patch, 0.125, 10.0, g);
            float gmax = 0.0f, rmax = 0.0f;
            for (size_t j = 0; j < v; j++) {
                gmax = g[j] > gmax ? g[j] : gmax;
                rmax = t->data[j] > rmax ? t->data[j] : rmax;
            }
            for (size_t j = 0; j < v; j++) {
                g[j] = (float)((double)g[j] / gmax);
                ref[j] = (float)((double)t->data[j] / rmax);
            }
            size_t at;
            double tl = tol_at(g, ref, v, &at);
            diag("nnunetv2 %s: tol %.2g after dividing by the maximum", t->name, tl);
            if (tl > bounds[k])
                diag_worst(t->name, patch, g, ref, at);
            worst = tl > worst ? tl : worst;
            n++;
            free(g);
            free(ref);
        }
        ok(n > 0 && worst <= bounds[k],
           "Gaussian equals nnunetv2's compute_gaussian (%s) over %d patches: worst tol %.2g "
           "(bound %g)",
           tags[k], n, worst, bounds[k]);
    }
}

static int
count_resample(const struct mms_st *rs)
{
    int n = 0;
    for (int i = 0; i < mms__st_count(rs); i++) {
        const char *name = mms__st_tensor(rs, i)->name;
        size_t len = strlen(name);
        n += len > 3 && strcmp(name + len - 3, ".in") == 0;
    }
    return n;
}

/* One test per case, and one for the separate axes the cases imply. */
static void
test_resample_fixture(const struct mms_st *rs)
{
    int axis_bad = 0, axis_n = 0;
    for (int i = 0; i < mms__st_count(rs); i++) {
        const struct mms_tensor *in = mms__st_tensor(rs, i);
        size_t len = strlen(in->name);
        if (len <= 3 || strcmp(in->name + len - 3, ".in") != 0)
            continue;
        char base[256], name[300];
        snprintf(base, sizeof base, "%.*s", (int)(len - 3), in->name);
        snprintf(name, sizeof name, "%s.out", base);
        const struct mms_tensor *want = need(rs, name);
        snprintf(name, sizeof name, "%s.p", base);
        const float *p = need(rs, name)->data;
        int order = (int)p[0], order_z = (int)p[1], sep = (int)p[2], axis_used = (int)p[10];
        double th = p[3], cur[3] = {p[4], p[5], p[6]}, tgt[3] = {p[7], p[8], p[9]};
        int64_t si[3] = {in->shape[0], in->shape[1], in->shape[2]};
        int64_t so[3] = {want->shape[0], want->shape[1], want->shape[2]};
        float *got = malloc(vol(so) * sizeof *got);
        for (size_t j = 0; j < vol(so); j++)
            got[j] = NAN;
        int rc = mms_pipe_resample(in->data, si, got, so, cur, tgt, order, order_z, th, sep);
        size_t at = 0;
        double tl = rc == 0 ? tol_at(got, want->data, vol(so), &at) : INFINITY;
        if (!ok(rc == 0 && tl <= TOL,
                "resample %s: (%lld, %lld, %lld) -> (%lld, %lld, %lld), order %d, order_z %d, "
                "sep_axis %d (axis %d): tol %.2g",
                base, (long long)si[0], (long long)si[1], (long long)si[2], (long long)so[0],
                (long long)so[1], (long long)so[2], order, order_z, sep, axis_used, tl)) {
            if (rc < 0)
                diag("%s: mms_pipe_resample: %s", base, mms_strerror(rc));
            else
                diag_worst(base, so, got, want->data, at);
        }
        if (sep == -1) {
            int a = mms_pipe_separate_axis(cur, tgt, th);
            if (a != axis_used) {
                diag("%s: mms_pipe_separate_axis gives %d, the golden used %d", base, a, axis_used);
                axis_bad++;
            }
            axis_n++;
        }
        free(got);
    }
    ok(axis_bad == 0, "the separate axis of the %d resample cases that let spacings decide",
       axis_n);
}

/* ----------------------------------------------------------------------------- properties */

/* Resampling to the same shape returns the input unchanged (nnU-Net skips it). 4 tests. */
static void
test_identity(void)
{
    static const int orders[] = {0, 1, 3};
    int64_t s[3] = {5, 8, 7};
    size_t n = vol(s);
    float *in = malloc(n * sizeof *in), *out = malloc(n * sizeof *out);
    fill(in, n, 1);
    for (int i = 0; i < 3; i++) {
        memset(out, 0, n * sizeof *out);
        int rc = mms_pipe_resample(in, s, out, s, iso, iso, orders[i], 0, 3.0, -1);
        ok(rc == 0 && memcmp(in, out, n * sizeof *in) == 0,
           "order %d to the same shape is the identity", orders[i]);
    }
    double cur[3] = {5.0, 0.8, 0.8}, tgt[3] = {1.5, 1.5, 1.5};
    memset(out, 0, n * sizeof *out);
    int rc = mms_pipe_resample(in, s, out, s, cur, tgt, 3, 0, 3.0, -1);
    ok(rc == 0 && memcmp(in, out, n * sizeof *in) == 0,
       "order 3 to the same shape with a separate axis is the identity");
    free(in);
    free(out);
}

/* How many of out[0..n_out) are not in sorted[0..n_in). */
static size_t
not_from(const float *out, size_t n_out, const float *sorted, size_t n_in)
{
    size_t bad = 0;
    for (size_t i = 0; i < n_out; i++)
        bad += bsearch(&out[i], sorted, n_in, sizeof *sorted, cmp_float) == NULL;
    return bad;
}

/* Order 0 only copies input values: whole array, and planes plus the separate axis. 2 tests. */
static void
test_order0_values(void)
{
    int64_t si[3] = {6, 9, 10}, so[3] = {11, 4, 15};
    size_t ni = vol(si), no = vol(so);
    float *in = malloc(ni * sizeof *in), *sorted = malloc(ni * sizeof *sorted);
    float *out = malloc(no * sizeof *out);
    fill(in, ni, 2);
    memcpy(sorted, in, ni * sizeof *in);
    qsort(sorted, ni, sizeof *sorted, cmp_float);
    int rc = mms_pipe_resample(in, si, out, so, iso, iso, 0, 0, 3.0, -2);
    size_t bad = rc == 0 ? not_from(out, no, sorted, ni) : no;
    ok(rc == 0 && bad == 0, "order 0, full 3D: every output value is an input value (%zu are not)",
       bad);
    double cur[3] = {5.0, 0.8, 0.8}, tgt[3] = {1.5, 1.5, 1.5};
    rc = mms_pipe_resample(in, si, out, so, cur, tgt, 0, 0, 3.0, -1);
    bad = rc == 0 ? not_from(out, no, sorted, ni) : no;
    ok(rc == 0 && bad == 0,
       "order 0 in the planes and along the separate axis: every output value is an input "
       "value (%zu are not)",
       bad);
    free(in);
    free(sorted);
    free(out);
}

/* resample(flip(x)) = flip(resample(x)) along each axis. Order 0 rounds exact .5 coordinates
 * up, which breaks the symmetry there; odd input lengths have none. 5 tests. */
static void
test_flip(void)
{
    static const struct {
        const char *what;
        int order, order_z, sep;
        double cur[3], tgt[3];
    } cfg[] = {
        {"order 0, full 3D", 0, 0, -2, {1, 1, 1}, {1, 1, 1}},
        {"order 1, full 3D", 1, 0, -2, {1, 1, 1}, {1, 1, 1}},
        {"order 3, full 3D", 3, 0, -2, {1, 1, 1}, {1, 1, 1}},
        {"order 3 in the planes, order 0 along axis 0", 3, 0, -1, {5, 0.8, 0.8}, {1.5, 1.5, 1.5}},
        {"order 1 in the planes, order 0 along axis 2", 1, 0, -1, {0.7, 0.7, 3}, {1.2, 1.2, 1.2}},
    };
    int64_t si[3] = {7, 9, 5}, so[3] = {12, 5, 8};
    size_t ni = vol(si), no = vol(so);
    float *in = malloc(ni * sizeof *in), *fin = malloc(ni * sizeof *fin);
    float *out = malloc(no * sizeof *out), *fout = malloc(no * sizeof *fout);
    float *back = malloc(no * sizeof *back);
    fill(in, ni, 3);
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        double worst = 0.0;
        int rc = mms_pipe_resample(in, si, out, so, cfg[c].cur, cfg[c].tgt, cfg[c].order,
                                   cfg[c].order_z, 3.0, cfg[c].sep);
        for (int axis = 0; rc == 0 && axis < 3; axis++) {
            flip3(in, si, axis, fin);
            rc = mms_pipe_resample(fin, si, fout, so, cfg[c].cur, cfg[c].tgt, cfg[c].order,
                                   cfg[c].order_z, 3.0, cfg[c].sep);
            flip3(fout, so, axis, back);
            size_t at;
            double tl = rc == 0 ? tol_at(back, out, no, &at) : INFINITY;
            if (tl > TOL) {
                diag("%s, flip of axis %d: tol %.2g", cfg[c].what, axis, tl);
                if (rc == 0)
                    diag_worst("flipped", so, back, out, at);
            }
            worst = tl > worst ? tl : worst;
        }
        ok(rc == 0 && worst <= TOL, "%s: flipping the input flips the output (tol %.2g)",
           cfg[c].what, worst);
    }
    free(in);
    free(fin);
    free(out);
    free(fout);
    free(back);
}

/* Positive everywhere, the peak at P//2, symmetric about it. 5 tests. */
static void
test_gaussian_props(void)
{
    static const int64_t patches[][3] = {
        {8, 16, 16}, {5, 7, 9}, {64, 128, 128}, {1, 2, 3}, {3, 3, 3}};
    for (size_t p = 0; p < sizeof patches / sizeof patches[0]; p++) {
        const int64_t *P = patches[p];
        size_t n = vol(P);
        float *g = malloc(n * sizeof *g);
        mms_pipe_gaussian(P, 0.125, 10.0, g);
        float gmin = INFINITY, gmax = -INFINITY;
        size_t at_max = 0;
        double asym = 0.0;
        for (int64_t i = 0; i < P[0]; i++)
            for (int64_t j = 0; j < P[1]; j++)
                for (int64_t k = 0; k < P[2]; k++) {
                    size_t v = (size_t)((i * P[1] + j) * P[2] + k);
                    if (!(g[v] >= gmin))
                        gmin = isnan(g[v]) ? -INFINITY : g[v];
                    if (g[v] > gmax) {
                        gmax = g[v];
                        at_max = v;
                    }
                    /* the mirror about c = P//2, where it lies inside the patch */
                    int64_t m[3] = {2 * (P[0] / 2) - i, 2 * (P[1] / 2) - j, 2 * (P[2] / 2) - k};
                    if (m[0] < P[0] && m[1] < P[1] && m[2] < P[2]) {
                        float w = g[(m[0] * P[1] + m[1]) * P[2] + m[2]];
                        double d = fabs((double)g[v] - (double)w) / 10.0;
                        asym = d > asym || isnan(d) ? (isnan(d) ? INFINITY : d) : asym;
                    }
                }
        size_t centre = (size_t)(((P[0] / 2) * P[1] + P[1] / 2) * P[2] + P[2] / 2);
        bool good =
            gmin > 0.0f && fabs((double)gmax - 10.0) <= 1e-5 && at_max == centre && asym <= 1e-6;
        ok(good, "Gaussian (%lld, %lld, %lld): min %.3g > 0, max %.7g at P//2, asymmetry %.2g",
           (long long)P[0], (long long)P[1], (long long)P[2], (double)gmin, (double)gmax, asym);
        if (!good && at_max != centre)
            diag("maximum at index %zu, P//2 is %zu", at_max, centre);
        free(g);
    }
}

/* Starts begin at 0, end at len - patch, increase, and leave no gap between tiles. 1 test. */
static void
test_tile_props(void)
{
    static const int64_t patches[] = {1, 5, 8, 63, 64, 128};
    static const double steps[] = {0.5, 0.33, 0.25, 1.0, 0.1};
    int64_t buf[4096];
    int bad = 0, cases = 0;
    for (size_t p = 0; p < sizeof patches / sizeof patches[0]; p++)
        for (size_t s = 0; s < sizeof steps / sizeof steps[0]; s++)
            for (int64_t len = 1; len <= 400; len++) {
                int64_t P = patches[p], n = mms_pipe_tile_starts(len, P, steps[s], NULL);
                bool good = n >= 1 && n <= 4096;
                if (good)
                    good = mms_pipe_tile_starts(len, P, steps[s], buf) == n && buf[0] == 0;
                if (good && len <= P)
                    good = n == 1;
                if (good && len > P)
                    good = buf[n - 1] == len - P;
                /* strictly increasing once the stride is at least 1 (P * step >= 1) */
                bool strict = (double)P * steps[s] >= 1.0;
                for (int64_t i = 1; good && i < n; i++)
                    good = (strict ? buf[i] > buf[i - 1] : buf[i] >= buf[i - 1]) &&
                           buf[i] - buf[i - 1] <= P;
                if (!good && bad++ < 5)
                    diag("len %lld, patch %lld, step %g: %lld starts", (long long)len, (long long)P,
                         steps[s], (long long)n);
                cases++;
            }
    ok(bad == 0, "tile starts: 0 first, len - patch last, increasing, no gap (%d of %d bad)", bad,
       cases);
}

/* Bad arguments are refused. 2 tests. */
static void
test_errors(void)
{
    int64_t s[3] = {4, 4, 4}, so[3] = {5, 5, 5}, zero[3] = {4, 0, 4};
    float in[64] = {0}, out[125];
    is_int(mms_pipe_resample(in, s, out, so, iso, iso, 2, 0, 3.0, -1), MMS_EINVAL,
           "order 2 is refused");
    is_int(mms_pipe_resample(in, s, out, zero, iso, iso, 3, 0, 3.0, -1), MMS_EINVAL,
           "an output axis of length 0 is refused");
}
/* ----------------------------------------------------------------------------- orientation */

/* One volume seen in the 24 ways a DICOM stack can lie (any row and column direction along
 * the patient axes, slices along their cross product): the network sees the same input every
 * time, so the labels, mapped back, must be the same (mmunet.md 5.1 and 5.8). */
struct phys {
    int64_t n[3]; /* along z, y, x (LPS) */
    double sp[3];
    float *hu;
};

static void
orient_case(const struct phys *b, int pc, int sc, int pr, int sr, struct mms_ct *ct, float *hu,
            double (*ipp)[3], double *pos, int64_t map[3][2])
{
    static const double e[3][3] = {{0, 0, 1}, {0, 1, 0}, {1, 0, 0}}; /* physical axis -> LPS */
    int pk = 3 - pc - pr;
    double uc[3], ur[3], nk[3];
    for (int i = 0; i < 3; i++) {
        uc[i] = sc * e[pc][i];
        ur[i] = sr * e[pr][i];
    }
    nk[0] = uc[1] * ur[2] - uc[2] * ur[1];
    nk[1] = uc[2] * ur[0] - uc[0] * ur[2];
    nk[2] = uc[0] * ur[1] - uc[1] * ur[0];
    int sk = nk[0] * e[pk][0] + nk[1] * e[pk][1] + nk[2] * e[pk][2] > 0 ? 1 : -1;
    int64_t nk_ = b->n[pk], nr = b->n[pr], nc = b->n[pc];
    /* map[a] = {physical axis, sign} of new axis a (0 k, 1 r, 2 c) */
    map[0][0] = pk, map[0][1] = sk, map[1][0] = pr, map[1][1] = sr, map[2][0] = pc, map[2][1] = sc;
    for (int64_t k = 0; k < nk_; k++)
        for (int64_t r = 0; r < nr; r++)
            for (int64_t c = 0; c < nc; c++) {
                int64_t nw[3] = {k, r, c}, ph[3];
                for (int a = 0; a < 3; a++) {
                    int64_t p = map[a][0], n = b->n[p];
                    ph[p] = map[a][1] > 0 ? nw[a] : n - 1 - nw[a];
                }
                hu[(k * nr + r) * nc + c] = b->hu[(ph[0] * b->n[1] + ph[1]) * b->n[2] + ph[2]];
            }
    memset(ct, 0, sizeof *ct);
    ct->cols = nc;
    ct->rows = nr;
    ct->slices = nk_;
    ct->hu = hu;
    ct->col_mm = b->sp[pc];
    ct->row_mm = b->sp[pr];
    ct->slice_mm = b->sp[pk];
    memcpy(ct->u_c, uc, sizeof uc);
    memcpy(ct->u_r, ur, sizeof ur);
    memcpy(ct->normal, nk, sizeof nk);
    for (int64_t k = 0; k < nk_; k++) {
        for (int i = 0; i < 3; i++)
            ipp[k][i] = 10.0 + (double)k * ct->slice_mm * nk[i];
        pos[k] = ipp[k][0] * nk[0] + ipp[k][1] * nk[1] + ipp[k][2] * nk[2];
    }
    ct->ipp = (const double(*)[3])ipp;
    ct->pos_mm = pos;
}

/* tests/fixtures/mmunet/FILE and its network on the CPU backend *be (opened, 2 threads, when
 * NULL). Returns 0 or the first error, with why. */
static int
open_net(const char *dir, const char *file, struct mms_backend **be, struct mms_model **m,
         struct mms_net **net, char *why, size_t why_len)
{
    char path[4096];
    struct mms_backend_params bp = {.threads = 2};
    snprintf(path, sizeof path, "%s/tests/fixtures/mmunet/%s", dir, file);
    int rc = mms_model_load(path, m, why, why_len);
    if (rc == 0 && *be == NULL)
        rc = mms_backend_open("cpu", &bp, be);
    if (rc == 0)
        rc = mms_net_new(*m, *be, mms_model_card(*m)->inf.patch, 0, net);
    return rc;
}

static void
test_orientations(const char *dir)
{
    char why[512] = "";
    struct mms_model *m = NULL;
    struct mms_backend *be = NULL;
    struct mms_net *net = NULL;
    int rc = open_net(dir, "tiny-separate.safetensors", &be, &m, &net, why, sizeof why);
    if (!ok(rc == 0, "tiny model on the CPU backend")) {
        diag("%s %s", mms_strerror(rc), why);
        skip("no network");
        skip("no network");
        skip("no network");
        goto out;
    }
    struct phys b = {{14, 30, 36}, {2.5, 1.2, 0.9}, NULL};
    int64_t nv = b.n[0] * b.n[1] * b.n[2];
    b.hu = malloc((size_t)nv * sizeof *b.hu);
    float *hu = malloc((size_t)nv * sizeof *hu);
    uint8_t *ref = malloc((size_t)nv), *lab = malloc((size_t)nv);
    double(*ipp)[3] = malloc(64 * sizeof *ipp);
    double *pos = malloc(64 * sizeof *pos);
    uint64_t seed = 12345;
    for (int64_t i = 0; i < nv; i++) {
        int64_t z = i / (b.n[1] * b.n[2]), y = i / b.n[2] % b.n[1], x = i % b.n[2];
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        double noise = (double)(seed >> 40) / (double)(1u << 24) - 0.5;
        b.hu[i] = (float)(300.0 * sin(0.7 * (double)z + 0.3 * (double)y) * cos(0.25 * (double)x) +
                          200.0 * noise - 100.0);
        b.hu[i] = b.hu[i] == 0.0f ? 1.0f : b.hu[i];
    }
    struct mms_pipe_opts o;
    mms_pipe_opts_default(&o);
    o.threads = 2;
    o.tta = false; /* the network frame is the same in every case; mirroring adds nothing */
    struct mms_pipe_stats st;
    struct mms_ct ct;
    int64_t map[3][2];
    orient_case(&b, 2, 1, 1, 1, &ct, hu, ipp, pos, map); /* axial: the reference */
    rc = mms_pipe_run(&ct, m, net, &o, ref, &st, why, sizeof why);
    if (!ok(rc == 0, "pipeline on the axial reference (%lld tiles, %lld mixed voxels)",
            (long long)st.tiles, (long long)st.mixed_voxels))
        diag("%s", why);
    int cases = 0, same = 0;
    int64_t worst = 0;
    for (int pc = 0; pc < 3 && rc == 0; pc++)
        for (int pr = 0; pr < 3; pr++)
            for (int s = 0; s < 4 && pr != pc; s++) {
                int sc = s & 1 ? -1 : 1, sr = s & 2 ? -1 : 1;
                orient_case(&b, pc, sc, pr, sr, &ct, hu, ipp, pos, map);
                if (mms_pipe_run(&ct, m, net, &o, lab, &st, why, sizeof why) < 0) {
                    diag("case %d: %s", cases, why);
                    worst = nv;
                    cases++;
                    continue;
                }
                int64_t diff = 0;
                for (int64_t k = 0; k < ct.slices; k++)
                    for (int64_t r = 0; r < ct.rows; r++)
                        for (int64_t c = 0; c < ct.cols; c++) {
                            int64_t nw[3] = {k, r, c}, ph[3];
                            for (int a = 0; a < 3; a++) {
                                int64_t p = map[a][0];
                                ph[p] = map[a][1] > 0 ? nw[a] : b.n[p] - 1 - nw[a];
                            }
                            diff += lab[(k * ct.rows + r) * ct.cols + c] !=
                                    ref[(ph[0] * b.n[1] + ph[1]) * b.n[2] + ph[2]];
                        }
                worst = diff > worst ? diff : worst;
                same += diff == 0;
                cases++;
            }
    ok(cases == 24, "24 orientations of a stack");
    /* The passes add the taps of a reversed axis in the other order: rounding may move a
     * near-tie, never more. */
    if (!ok(worst * 1000 <= nv,
            "labels mapped back agree (%d of %d identical, worst %lld of "
            "%lld voxels differ)",
            same, cases, (long long)worst, (long long)nv))
        diag("worst case: %lld voxels differ", (long long)worst);
    free(b.hu);
    free(hu);
    free(ref);
    free(lab);
    free(ipp);
    free(pos);
out:
    mms_net_free(net);
    mms_backend_free(be);
    mms_model_free(m);
}

/* The sliding window in the backend's buffers (the slots a GPU backend runs) against the
 * host's, on the CPU backend with mirroring: the same labels but for near-ties, and AUTO keeps
 * the host path for a backend whose memory is the host's. */
static void
test_backend_window(const char *dir)
{
    char why[512] = "";
    struct mms_model *m = NULL;
    struct mms_backend *be = NULL;
    struct mms_net *net = NULL;
    int rc = open_net(dir, "tiny-separate.safetensors", &be, &m, &net, why, sizeof why);
    if (!ok(rc == 0, "tiny model on the CPU backend")) {
        diag("%s %s", mms_strerror(rc), why);
        for (int i = 0; i < 4; i++)
            skip("no network");
        goto out;
    }
    struct phys b = {{14, 30, 36}, {2.5, 1.2, 0.9}, NULL};
    int64_t nv = b.n[0] * b.n[1] * b.n[2];
    b.hu = malloc((size_t)nv * sizeof *b.hu);
    float *hu = malloc((size_t)nv * sizeof *hu);
    uint8_t *ref = malloc((size_t)nv), *lab = malloc((size_t)nv);
    double(*ipp)[3] = malloc(64 * sizeof *ipp);
    double *pos = malloc(64 * sizeof *pos);
    for (int64_t i = 0; i < nv; i++) {
        int64_t z = i / (b.n[1] * b.n[2]), y = i / b.n[2] % b.n[1], x = i % b.n[2];
        b.hu[i] = (float)(400.0 * sin(0.5 * (double)z + 0.2 * (double)y) * cos(0.3 * (double)x));
    }
    struct mms_pipe_opts o;
    mms_pipe_opts_default(&o);
    o.threads = 2;
    struct mms_pipe_stats st, sb;
    struct mms_ct ct;
    int64_t map[3][2];
    orient_case(&b, 2, -1, 1, 1, &ct, hu, ipp, pos, map);
    o.window = MMS_PIPE_WINDOW_AUTO;
    rc = mms_pipe_run(&ct, m, net, &o, ref, &st, why, sizeof why);
    if (!ok(rc == 0 && !st.window_on_backend && st.passes == 8 * st.tiles && st.tiles > 4,
            "AUTO runs the host window on the CPU backend (%lld tiles x 8 mirrorings)",
            (long long)st.tiles))
        diag("%s", why);
    o.window = MMS_PIPE_WINDOW_BACKEND;
    rc = mms_pipe_run(&ct, m, net, &o, lab, &sb, why, sizeof why);
    int64_t diff = 0;
    for (int64_t i = 0; i < nv; i++)
        diff += lab[i] != ref[i];
    if (!ok(rc == 0 && sb.window_on_backend && sb.passes == st.passes && diff * 1000 <= nv,
            "the window on the backend's slots gives the host's labels (%lld of %lld voxels "
            "differ)",
            (long long)diff, (long long)nv))
        diag("%s", why);
    ok(sb.memory_estimate > st.memory_estimate && sb.device_memory_estimate == 0,
       "its buffers count as host memory on the CPU (%zu > %zu bytes)", sb.memory_estimate,
       st.memory_estimate);
    /* a fold ensemble: every member on each batch, both ways */
    struct mms_model *me = NULL;
    struct mms_net *ne = NULL;
    rc = open_net(dir, "tiny-ensemble.safetensors", &be, &me, &ne, why, sizeof why);
    if (rc == 0) {
        o.window = MMS_PIPE_WINDOW_HOST;
        rc = mms_pipe_run(&ct, me, ne, &o, ref, &st, why, sizeof why);
    }
    if (rc == 0) {
        o.window = MMS_PIPE_WINDOW_BACKEND;
        rc = mms_pipe_run(&ct, me, ne, &o, lab, &sb, why, sizeof why);
    }
    int64_t de = 0;
    for (int64_t i = 0; i < nv; i++)
        de += lab[i] != ref[i];
    if (!ok(rc == 0 && de * 1000 <= nv && sb.passes == st.passes,
            "a fold ensemble: the same labels both ways (%lld of %lld voxels differ)",
            (long long)de, (long long)nv))
        diag("%s", why);
    mms_net_free(ne);
    mms_model_free(me);
    free(b.hu);
    free(hu);
    free(ref);
    free(lab);
    free(ipp);
    free(pos);
out:
    mms_net_free(net);
    mms_backend_free(be);
    mms_model_free(m);
}

/* The card's postprocessing against the goldens of tools/mmunet/pipeline.py (scipy, full
 * connectivity) on generated label volumes, and those goldens against nnunetv2's own
 * apply_postprocessing (the differences it recorded in nnunet.safetensors). */
static void
test_postprocess(const struct mms_st *pp, const struct mms_st *nn)
{
    const char *steps_json = mms__st_meta(pp, "steps");
    cJSON *steps = steps_json != NULL ? cJSON_Parse(steps_json) : NULL, *c;
    int cases = 0, same = 0;
    char bad[256] = "";
    cJSON_ArrayForEach(c, steps)
    {
        char name[128];
        snprintf(name, sizeof name, "%s.in", c->string);
        const struct mms_tensor *in = need(pp, name);
        snprintf(name, sizeof name, "%s.out", c->string);
        const struct mms_tensor *want = need(pp, name);
        struct mms_card card;
        memset(&card, 0, sizeof card);
        card.n_pp = cJSON_GetArraySize(c);
        card.pp = calloc((size_t)card.n_pp, sizeof *card.pp);
        const cJSON *st, *l;
        int i = 0;
        cJSON_ArrayForEach(st, c)
        {
            cJSON_ArrayForEach(l, cJSON_GetObjectItem(st, "keep_largest_component"))
            {
                int v = l->valueint;
                card.pp[i].labels[v / 64] |= (uint64_t)1 << (v % 64);
            }
            i++;
        }
        uint8_t *lab = malloc((size_t)in->count);
        for (int64_t v = 0; v < in->count; v++)
            lab[v] = (uint8_t)in->data[v];
        int64_t n[3] = {in->shape[0], in->shape[1], in->shape[2]}, changed = -1, diff = 0,
                removed = 0;
        int rc = mms_pipe_postprocess(&card, lab, n, &changed);
        for (int64_t v = 0; v < in->count; v++) {
            diff += lab[v] != (uint8_t)want->data[v];
            removed += in->data[v] != want->data[v];
        }
        if (rc == 0 && diff == 0 && changed == removed)
            same++;
        else
            snprintf(bad, sizeof bad, "%s: rc %d, %lld voxels differ, %lld changed for %lld",
                     c->string, rc, (long long)diff, (long long)changed, (long long)removed);
        cases++;
        free(lab);
        free(card.pp);
    }
    if (!ok(cases >= 6 && same == cases,
            "postprocessing: %d of %d label volumes equal the goldens (corners, ties, absent "
            "labels, unions, borders, random blobs)",
            same, cases))
        diag("%s", bad);
    cJSON_Delete(steps);
    const char *d = nn != NULL ? mms__st_meta(nn, "postprocess_differences") : NULL;
    cJSON *dj = d != NULL ? cJSON_Parse(d) : NULL;
    int n_zero = 0, n_all = 0;
    cJSON_ArrayForEach(c, dj)
    {
        n_all++;
        n_zero += cJSON_IsNumber(c) && c->valuedouble == 0.0;
    }
    if (nn == NULL)
        skip("no " FIXDIR "/nnunet.safetensors");
    else
        ok(n_all == cases && n_zero == n_all,
           "nnunetv2's apply_postprocessing gives the goldens on %d of %d volumes", n_zero, n_all);
    cJSON_Delete(dj);
}

/* A job over max_memory is refused by the plan and by the run, before anything is written. */
static void
test_memory_limit(const char *dir)
{
    char path[4096], why[512] = "";
    struct mms_model *m = NULL;
    snprintf(path, sizeof path, "%s/tests/fixtures/mmunet/tiny-separate.safetensors", dir);
    if (mms_model_load(path, &m, why, sizeof why) < 0) {
        ok(false, "load %s: %s", path, why);
        skip("no model");
        return;
    }
    int64_t n = 40 * 200 * 200;
    float *hu = malloc((size_t)n * sizeof *hu);
    uint8_t *lab = malloc((size_t)n);
    double ipp[40][3], pos[40];
    for (int64_t i = 0; i < n; i++)
        hu[i] = 100.0f;
    for (int k = 0; k < 40; k++) {
        ipp[k][0] = ipp[k][1] = 0.0;
        ipp[k][2] = pos[k] = 2.0 * k;
    }
    struct mms_ct ct = {.cols = 200,
                        .rows = 200,
                        .slices = 40,
                        .hu = hu,
                        .col_mm = 0.8,
                        .row_mm = 0.8,
                        .slice_mm = 2.0,
                        .u_c = {1, 0, 0},
                        .u_r = {0, 1, 0},
                        .normal = {0, 0, 1},
                        .ipp = (const double(*)[3])ipp,
                        .pos_mm = pos};
    struct mms_pipe_opts o;
    mms_pipe_opts_default(&o);
    o.max_memory = 1u << 20;
    struct mms_pipe_stats st;
    int rc = mms_pipe_plan(&ct, m, NULL, &o, &st, why, sizeof why);
    ok(rc == MMS_ENOMEM && strstr(why, "MiB") != NULL, "plan over 1 MiB refused: %s", why);
    memset(lab, 0xee, (size_t)n);
    /* the run needs a network, but must refuse before using it */
    struct mms_backend *be = NULL;
    struct mms_net *net = NULL;
    struct mms_backend_params bp = {.threads = 1};
    if (mms_backend_open("cpu", &bp, &be) == 0 &&
        mms_net_new(m, be, mms_model_card(m)->inf.patch, 0, &net) == 0) {
        rc = mms_pipe_run(&ct, m, net, &o, lab, &st, why, sizeof why);
        ok(rc == MMS_ENOMEM && lab[0] == 0xee && lab[n - 1] == 0xee,
           "run over 1 MiB refused, labels untouched");
    } else {
        ok(false, "CPU backend for the tiny model");
    }
    mms_net_free(net);
    mms_backend_free(be);
    free(hu);
    free(lab);
    mms_model_free(m);
}

/* Values a broken or hostile series can carry: each is refused by the plan with a reason that
 * names it and its figure, before anything is allocated, and the memory estimate grows with
 * the spacing instead of wrapping. A constant volume, all zero included, is segmented. */
enum { BAD_CASES = 12 };

static void
test_bad_values(const char *dir)
{
    char path[4096], why[512] = "";
    struct mms_model *m = NULL;
    snprintf(path, sizeof path, "%s/tests/fixtures/mmunet/tiny-separate.safetensors", dir);
    if (mms_model_load(path, &m, why, sizeof why) < 0) {
        ok(false, "load %s: %s", path, why);
        for (int i = 1; i < BAD_CASES; i++)
            skip("no model");
        return;
    }
    enum { C = 24, R = 20, K = 8 };
    static float hu[K * R * C];
    static uint8_t lab[K * R * C];
    double ipp[K][3], pos[K];
    for (int k = 0; k < K; k++) {
        ipp[k][0] = ipp[k][1] = 0.0;
        ipp[k][2] = pos[k] = 2.0 * k;
    }
    const struct mms_ct base = {.cols = C,
                                .rows = R,
                                .slices = K,
                                .hu = hu,
                                .col_mm = 0.8,
                                .row_mm = 0.8,
                                .slice_mm = 2.0,
                                .u_c = {1, 0, 0},
                                .u_r = {0, 1, 0},
                                .normal = {0, 0, 1},
                                .ipp = (const double(*)[3])ipp,
                                .pos_mm = pos};
    struct mms_pipe_opts o;
    mms_pipe_opts_default(&o);
    struct mms_pipe_stats st;
    static const struct {
        double col_mm, slice_mm;
        const char *want;
    } sp[] = {
        {1e30, 2.0, "column spacing 1e+30 mm is outside 0.001..1000 mm"},
        {1e10, 2.0, "column spacing 1e+10 mm is outside"},
        {1e-30, 2.0, "column spacing 1e-30 mm is outside"},
        {NAN, 2.0, "column spacing nan mm is outside"},
        {0.0, 2.0, "column spacing 0 mm is outside"},
        {-0.8, 2.0, "column spacing -0.8 mm is outside"},
        {0.8, INFINITY, "slice spacing inf mm is outside"},
    };
    for (size_t i = 0; i < sizeof sp / sizeof sp[0]; i++) {
        struct mms_ct ct = base;
        ct.col_mm = sp[i].col_mm;
        ct.slice_mm = sp[i].slice_mm;
        why[0] = '\0';
        int rc = mms_pipe_plan(&ct, m, NULL, &o, &st, why, sizeof why);
        ok(rc == MMS_EINVAL && strstr(why, sp[i].want) != NULL, "spacing %g x %g mm refused: %s",
           sp[i].col_mm, sp[i].slice_mm, why);
    }
    {
        struct mms_ct ct = base;
        pos[3] = NAN;
        int rc = mms_pipe_plan(&ct, m, NULL, &o, &st, why, sizeof why);
        pos[3] = 6.0;
        double keep = pos[5];
        pos[5] = pos[4];
        int rc2 = mms_pipe_plan(&ct, m, NULL, &o, &st, why + 256, sizeof why - 256);
        pos[5] = keep;
        ok(rc == MMS_EINVAL && strstr(why, "position of slice 3 is not finite") != NULL &&
               rc2 == MMS_EINVAL && strstr(why + 256, "not ascending") != NULL,
           "a NaN position and a zero step refused: %s; %s", why, why + 256);
    }
    { /* within the spacing limits, but the target shape is over the hard maximum */
        static float big[K * 64 * 64];
        struct mms_ct ct = base;
        ct.hu = big;
        ct.cols = ct.rows = 64;
        ct.col_mm = ct.row_mm = 1000.0;
        why[0] = '\0';
        int rc = mms_pipe_plan(&ct, m, NULL, &o, &st, why, sizeof why);
        ok(rc == MMS_ERANGE && strstr(why, "maximum of 4294967296 voxels") != NULL,
           "1000 mm pixels: the target refused with its figures: %s", why);
    }
    { /* the estimate grows with the spacing (it wrapped around 1e8 mm) */
        size_t last = 0;
        bool grows = true;
        static const double mm[] = {0.8, 8.0, 80.0, 200.0};
        for (size_t i = 0; i < sizeof mm / sizeof mm[0]; i++) {
            struct mms_ct ct = base;
            ct.col_mm = ct.row_mm = mm[i];
            int rc = mms_pipe_plan(&ct, m, NULL, &o, &st, why, sizeof why);
            grows = grows && rc == 0 && st.memory_estimate > last;
            last = st.memory_estimate;
        }
        ok(grows, "the memory estimate grows with the spacing (%zu MiB at 200 mm)", last >> 20);
    }
    /* constant volumes: all zero (no crop) and all 40 HU */
    struct mms_backend *be = NULL;
    struct mms_net *net = NULL;
    struct mms_backend_params bp = {.threads = 1};
    if (mms_backend_open("cpu", &bp, &be) == 0 &&
        mms_net_new(m, be, mms_model_card(m)->inf.patch, 0, &net) == 0) {
        static const float value[2] = {0.0f, 40.0f};
        for (int v = 0; v < 2; v++) {
            for (size_t i = 0; i < sizeof hu / sizeof hu[0]; i++)
                hu[i] = value[v];
            memset(lab, 0xee, sizeof lab);
            why[0] = '\0';
            int rc = mms_pipe_run(&base, m, net, &o, lab, &st, why, sizeof why);
            int bad = 0;
            for (size_t i = 0; i < sizeof lab; i++)
                bad += lab[i] >= mms_model_card(m)->arch.num_classes;
            ok(rc == 0 && bad == 0 && st.crop_hi[1] == R && st.crop_hi[2] == C,
               "a constant volume of %g HU is segmented (crop %lld..%lld x %lld..%lld): %s",
               (double)value[v], (long long)st.crop_lo[1], (long long)st.crop_hi[1],
               (long long)st.crop_lo[2], (long long)st.crop_hi[2], rc < 0 ? why : "ok");
        }
    } else {
        ok(false, "CPU backend for the tiny model");
        skip("no backend");
    }
    mms_net_free(net);
    mms_backend_free(be);
    mms_model_free(m);
}

int
main(void)
{
    const char *dir = source_dir();
    struct mms_st *bl = open_fixture(dir, "blocks.safetensors", true);
    struct mms_st *rs = open_fixture(dir, "resample.safetensors", true);
    struct mms_st *nn = open_fixture(dir, "nnunet.safetensors", false);
    struct mms_st *pp = open_fixture(dir, "postprocess.safetensors", true);
    int n_gauss = 0;
    for (int i = 0; i < mms__st_count(bl); i++)
        n_gauss += strncmp(mms__st_tensor(bl, i)->name, "gaussian.", 9) == 0;
    int n = (int)(need(bl, "new_shape")->shape[0] + need(bl, "separate_axis")->shape[0] +
                  need(bl, "tiles.params")->shape[0]) +
            n_gauss + 3 + count_resample(rs) + 1 + 4 + 2 + 5 + 5 + 1 + 2 + 4 + 5 + 2 + 2 +
            BAD_CASES;
    plan(n, 180); /* a hang guard: the AddressSanitizer build takes about 50 s on 2 busy cores */
    test_new_shape(bl);
    test_separate_axis(bl);
    test_tiles(bl);
    test_gaussian_fixture(bl);
    test_nnunet(nn);
    test_resample_fixture(rs);
    test_identity();
    test_order0_values();
    test_flip();
    test_gaussian_props();
    test_tile_props();
    test_errors();
    test_orientations(dir);
    test_backend_window(dir);
    test_postprocess(pp, nn);
    test_memory_limit(dir);
    test_bad_values(dir);
    mms__st_close(pp);
    mms__st_close(nn);
    mms__st_close(rs);
    mms__st_close(bl);
    return done_testing();
}
