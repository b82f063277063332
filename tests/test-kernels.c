/* Tests of the CUDA kernels on a GPU: each kernel against the host math of kernels/<op>-math.h
 * or a host loop written from the CPU backend's definition (infer/ops-cpu/, or for DECONV and
 * AVGPOOL infer/graph-impl.h's).
 * Built only with CUDA; prints a TAP SKIP line with the reason when no device is usable. */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "kernels/eltwise-math.h"
#include "kernels/kernels.h"
#include "kernels/rescale-math.h"
#include "tests/tap.h"

/* A device copy of n floats of host (NULL: zeroed), or NULL on failure. */
static void *
dev_of(const void *host, size_t nbytes)
{
    void *d = NULL;
    if (cudaMalloc(&d, nbytes) != cudaSuccess)
        return NULL;
    if ((host != NULL ? cudaMemcpy(d, host, nbytes, cudaMemcpyHostToDevice)
                      : cudaMemset(d, 0, nbytes)) != cudaSuccess) {
        cudaFree(d);
        return NULL;
    }
    return d;
}

static bool
back(void *host, const void *dev, size_t nbytes, cudaStream_t s)
{
    return cudaStreamSynchronize(s) == cudaSuccess &&
           cudaMemcpy(host, dev, nbytes, cudaMemcpyDeviceToHost) == cudaSuccess;
}

static float
rnd(uint64_t *st)
{
    *st = *st * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(*st >> 11) / 9007199254740992.0 * 4.0 - 2.0);
}

static float
from_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static float
from_f16(uint16_t h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    float v = e == 0 ? ldexpf((float)m, -24) : ldexpf((float)(m | 1024), e - 25);
    return (h & 0x8000) ? -v : v;
}

/* The CUDA backend's element-wise ops, 2 samples at a stride larger than a sample. */
static void
test_ops(cudaStream_t s)
{
    enum { L = 3000, C = 5, NS = 2, STRIDE = L * C + 77 };
    size_t tot = (size_t)NS * STRIDE;
    float *x = malloc(tot * sizeof(float)), *y = malloc(tot * sizeof(float));
    float *got = malloc(tot * sizeof(float)), *want = malloc(tot * sizeof(float));
    float gamma[C], beta[C];
    uint64_t st = 42;
    for (size_t i = 0; i < tot; i++) {
        x[i] = rnd(&st) * 3.0f + 1.0f;
        y[i] = rnd(&st);
    }
    for (int c = 0; c < C; c++) {
        gamma[c] = 0.5f + 0.1f * (float)c;
        beta[c] = 0.2f * (float)c - 0.3f;
    }

    /* instance norm + LReLU against fp64 statistics on the host */
    float *dx = dev_of(x, tot * sizeof(float)), *dg = dev_of(gamma, sizeof gamma),
          *db = dev_of(beta, sizeof beta);
    void *ws = dev_of(NULL, mms_k_instnorm_ws_bytes(C, NS));
    struct mms_k_instnorm_args ia = {.x = dx,
                                     .l = L,
                                     .c = C,
                                     .n = NS,
                                     .stride = STRIDE,
                                     .gamma = dg,
                                     .beta = db,
                                     .eps = 1e-5f,
                                     .lrelu = true,
                                     .slope = 0.01f,
                                     .ws = ws};
    int rc = dx && dg && db && ws ? mms_k_instnorm(&ia, s) : MMS_ENOMEM;
    double worst = INFINITY;
    if (rc == 0 && back(got, dx, tot * sizeof(float), s)) {
        worst = 0.0;
        for (int n = 0; n < NS; n++) {
            for (int c = 0; c < C; c++) {
                double sum = 0.0, sq = 0.0;
                for (int t = 0; t < L; t++) {
                    double v = x[n * STRIDE + t * C + c];
                    sum += v;
                    sq += v * v;
                }
                float sc, sh;
                mms_norm_coef(sum, sq, L, gamma[c], beta[c], 1e-5f, &sc, &sh);
                for (int t = 0; t < L; t++) {
                    size_t i = (size_t)n * STRIDE + (size_t)t * C + c;
                    float w = mms_norm_apply(x[i], sc, sh, true, 0.01f);
                    double d = fabs((double)got[i] - w) / (1.0 + fabs(w));
                    worst = d > worst ? d : worst;
                }
            }
            for (int i = L * C; i < STRIDE; i++) /* the gap between samples is untouched */
                if (got[n * STRIDE + i] != x[n * STRIDE + i])
                    worst = INFINITY;
        }
    }
    ok(rc == 0 && worst <= 1e-6, "mms_k_instnorm: 2 samples, fp64 statistics (worst %.3g)", worst);

    /* add + LReLU, bit for bit */
    float *dy = dev_of(y, tot * sizeof(float));
    cudaFree(dx);
    dx = dev_of(x, tot * sizeof(float));
    struct mms_k_add_lrelu_args aa = {
        .x = dx, .y = dy, .count = L * C, .n = NS, .stride = STRIDE, .slope = 0.01f};
    rc = dx && dy ? mms_k_add_lrelu(&aa, s) : MMS_ENOMEM;
    int wrong = -1;
    if (rc == 0 && back(got, dx, tot * sizeof(float), s)) {
        wrong = 0;
        for (size_t i = 0; i < tot; i++) {
            bool in = (i % STRIDE) < (size_t)(L * C);
            if (got[i] != (in ? mms_lrelu(x[i] + y[i], 0.01f) : x[i]))
                wrong++;
        }
    }
    is_int(wrong, 0, "mms_k_add_lrelu: bit for bit, the gap untouched");

    /* transpose (L, C) -> (C, L) and back */
    float *dt = dev_of(NULL, tot * sizeof(float)), *dt2 = dev_of(NULL, tot * sizeof(float));
    cudaFree(dx);
    dx = dev_of(x, tot * sizeof(float));
    struct mms_k_transpose_args ta = {
        .src = dx, .dst = dt, .rows = L, .cols = C, .n = NS, .stride = STRIDE};
    struct mms_k_transpose_args tb = {
        .src = dt, .dst = dt2, .rows = C, .cols = L, .n = NS, .stride = STRIDE};
    rc = dx && dt && dt2 ? mms_k_transpose(&ta, s) : MMS_ENOMEM;
    if (rc == 0)
        rc = mms_k_transpose(&tb, s);
    wrong = -1;
    if (rc == 0 && back(got, dt, tot * sizeof(float), s) &&
        back(want, dt2, tot * sizeof(float), s)) {
        wrong = 0;
        for (int n = 0; n < NS; n++)
            for (int t = 0; t < L; t++)
                for (int c = 0; c < C; c++) {
                    size_t o = (size_t)n * STRIDE;
                    if (got[o + (size_t)c * L + t] != x[o + (size_t)t * C + c] ||
                        want[o + (size_t)t * C + c] != x[o + (size_t)t * C + c])
                        wrong++;
                }
    }
    is_int(wrong, 0, "mms_k_transpose: (L, C) -> (C, L) -> (L, C), 2 samples");

    /* up + concat: lo (2, 3, 5, 3 channels) up by (2, 2, 1) beside skip (4, 6, 5, 2 channels) */
    {
        enum { LD = 2, LH = 3, LW = 5, FL = 3, D = 4, H = 6, W = 5, FS = 2, OC = FL + FS };
        float *dlo = dev_of(x, tot * sizeof(float)), *dsk = dev_of(y, tot * sizeof(float));
        float *dd = dev_of(NULL, tot * sizeof(float));
        struct mms_k_up_concat_args ua = {.lo = dlo,
                                          .skip = dsk,
                                          .dst = dd,
                                          .ld = LD,
                                          .lh = LH,
                                          .lw = LW,
                                          .flo = FL,
                                          .d = D,
                                          .h = H,
                                          .w = W,
                                          .fskip = FS,
                                          .up = {2, 2, 1},
                                          .n = NS,
                                          .stride = STRIDE};
        rc = dlo && dsk && dd ? mms_k_up_concat(&ua, s) : MMS_ENOMEM;
        wrong = -1;
        if (rc == 0 && back(got, dd, tot * sizeof(float), s)) {
            wrong = 0;
            for (int n = 0; n < NS; n++)
                for (int z = 0; z < D; z++)
                    for (int h = 0; h < H; h++)
                        for (int w = 0; w < W; w++)
                            for (int c = 0; c < OC; c++) {
                                size_t o = (size_t)n * STRIDE, v = ((size_t)z * H + h) * W + w;
                                float e =
                                    c < FL
                                        ? x[o + (((size_t)(z / 2) * LH + h / 2) * LW + w) * FL + c]
                                        : y[o + v * FS + (c - FL)];
                                if (got[o + v * OC + c] != e)
                                    wrong++;
                            }
        }
        is_int(wrong, 0, "mms_k_up_concat: nearest up by (2, 2, 1), concat, 2 samples");
        cudaFree(dlo);
        cudaFree(dsk);
        cudaFree(dd);
    }

    /* casts and the epilogue from each type; y = x rounded */
    static const enum mms_k_ftype types[3] = {MMS_K_F32, MMS_K_BF16, MMS_K_F16};
    static const char *const tname[3] = {"fp32", "bf16", "fp16"};
    uint16_t *h16 = malloc((size_t)L * C * sizeof(uint16_t));
    for (int k = 0; k < 3; k++) {
        void *dh = dev_of(NULL, (size_t)L * C * sizeof(float));
        float *dacc = dev_of(y, (size_t)L * C * sizeof(float)), *dbias = dev_of(beta, sizeof beta);
        cudaFree(dx);
        dx = dev_of(x, (size_t)L * C * sizeof(float));
        rc = dh && dacc && dbias && dx ? 0 : MMS_ENOMEM;
        double cast_err = 0.0;
        if (rc == 0 && k > 0) {
            struct mms_k_cast_args ca = {.src = dx, .dst = dh, .count = L * C, .to = types[k]};
            rc = mms_k_cast(&ca, s);
            if (rc == 0 && back(h16, dh, (size_t)L * C * 2, s)) {
                for (int i = 0; i < L * C; i++) {
                    float r = k == 1 ? from_bf16(h16[i]) : from_f16(h16[i]);
                    double d = fabs((double)r - x[i]) / fmax(fabs((double)x[i]), 1e-4);
                    cast_err = d > cast_err ? d : cast_err;
                }
            } else {
                cast_err = INFINITY;
            }
        }
        struct mms_k_conv_epilogue_args ea = {.y = k == 0 ? (const void *)dx : dh,
                                              .ytype = types[k],
                                              .dst = dacc,
                                              .bias = dbias,
                                              .l = L,
                                              .c = C,
                                              .accumulate = true,
                                              .slope = 0.01f};
        if (rc == 0)
            rc = mms_k_conv_epilogue(&ea, s);
        wrong = -1;
        if (rc == 0 && back(got, dacc, (size_t)L * C * sizeof(float), s)) {
            wrong = 0;
            for (int i = 0; i < L * C; i++) {
                float yv = k == 0 ? x[i] : k == 1 ? from_bf16(h16[i]) : from_f16(h16[i]);
                if (got[i] != mms_conv_epilogue(yv, beta[i % C], y[i], true, 0.01f))
                    wrong++;
            }
        }
        /* round to nearest: half an ulp, 2^-8 for bf16 and 2^-11 for fp16 (relative to
         * max(|x|, 1e-4), which covers fp16 subnormals) */
        double bound = k == 1 ? 1.0 / 256 : 1.0 / 2048;
        ok(rc == 0 && wrong == 0 && (k == 0 || cast_err <= bound),
           "%s: cast within half an ulp (worst %.3g), epilogue (bias, + dst, LReLU) bit for bit "
           "(%d wrong)",
           tname[k], cast_err, wrong);
        cudaFree(dh);
        cudaFree(dacc);
        cudaFree(dbias);
    }
    free(h16);
    cudaFree(dx);
    cudaFree(dy);
    cudaFree(dt);
    cudaFree(dt2);
    cudaFree(dg);
    cudaFree(db);
    cudaFree(ws);
    free(x);
    free(y);
    free(got);
    free(want);
}

/* The sliding window's kernels against the map of kernels/window-math.h: every mirroring of
 * a tile inside a larger volume, gathered bit for bit, and 2 channels of logits added back
 * (an FMA may round the sum differently from the host's multiply and add). */
static void
test_window(cudaStream_t s)
{
    enum { D = 11, H = 13, W = 17, PV = D * H * W, PD = 4, PH = 5, PW = 6, PP = PD * PH * PW };
    enum { C = 2 };
    float *vol = malloc(PV * sizeof(float)), *acc = malloc(C * PV * sizeof(float));
    float *want = malloc(C * PV * sizeof(float)), *got = malloc(C * PV * sizeof(float));
    float g[PP], lg[C * PP], tile[PP];
    uint64_t st = 7;
    for (int i = 0; i < PV; i++)
        vol[i] = rnd(&st);
    for (int i = 0; i < C * PV; i++)
        acc[i] = want[i] = rnd(&st);
    for (int i = 0; i < PP; i++)
        g[i] = 1.0f + rnd(&st);
    for (int i = 0; i < C * PP; i++)
        lg[i] = rnd(&st) * 10.0f;
    float *dv = dev_of(vol, PV * sizeof(float)), *da = dev_of(acc, C * PV * sizeof(float));
    float *dg = dev_of(g, sizeof g), *dl = dev_of(lg, sizeof lg), *dt = dev_of(NULL, sizeof tile);
    int gathered = 0, rc = dv && da && dg && dl && dt ? 0 : MMS_ENOMEM;
    double worst = 0.0;
    for (uint32_t mask = 0; mask < 8 && rc == 0; mask++) {
        struct mms_k_window w = {.p = {PD, PH, PW}, .st = {H * W, W, 1}, .mask = mask};
        w.base = (int64_t)(2 + mask % 3) * H * W + 3 * W + 4 + mask;
        if ((rc = mms_k_window_gather(dv, &w, dt, s)) < 0 || !back(tile, dt, sizeof tile, s))
            break;
        int same = 1;
        for (int i = 0; i < PP; i++) {
            int64_t at;
            (void)mms_k_window_map(&w, i, &at);
            same &= tile[i] == vol[at];
        }
        gathered += same;
        if ((rc = mms_k_window_scatter(dl, C, dg, 0.125f, &w, PV, da, s)) < 0)
            break;
        for (int ch = 0; ch < C; ch++)
            for (int i = 0; i < PP; i++) {
                int64_t at, l = mms_k_window_map(&w, i, &at);
                want[ch * PV + at] += mms_k_window_term(g[l], lg[ch * PP + i], 0.125f);
            }
    }
    if (rc == 0 && back(got, da, C * PV * sizeof(float), s))
        for (int i = 0; i < C * PV; i++) {
            double d = fabs((double)got[i] - want[i]) / (1.0 + fabs((double)want[i]));
            worst = d > worst ? d : worst;
        }
    else
        worst = INFINITY;
    is_int(gathered, 8, "mms_k_window_gather: 8 mirrorings equal the host map bit for bit");
    ok(worst <= 1e-6, "mms_k_window_scatter: 8 mirrorings x 2 channels added back (worst %.3g)",
       worst);
    cudaFree(dv);
    cudaFree(da);
    cudaFree(dg);
    cudaFree(dl);
    cudaFree(dt);
    free(vol);
    free(acc);
    free(want);
    free(got);
}

/* The transposed convolution with kernel = stride against a host loop over PyTorch's weight
 * layout (cin, cout, t0, t1, t2), which the test reorders to the kernel's (t0, t1, t2, cin,
 * cout) as the backend does: 2 samples at a stride larger than either tensor, each output
 * element within 1e-5 of the fp64 sum relative to the sum of its terms' magnitudes (fp32
 * accumulation over 37 channels), the gap after each output untouched. */
static void
test_deconv(cudaStream_t s, const int t[3], bool with_bias)
{
    enum { D = 3, H = 4, W = 5, CI = 37, CO = 6, NS = 2 };
    int64_t kv = (int64_t)t[0] * t[1] * t[2];
    int64_t od = D * t[0], oh = H * t[1], ow = W * t[2];
    size_t in_n = (size_t)D * H * W * CI, out_n = (size_t)(od * oh * ow) * CO;
    size_t stride = (in_n > out_n ? in_n : out_n) + 51, tot = NS * stride;
    size_t wn = (size_t)(CI * CO * kv);
    float *xs = malloc(tot * sizeof(float)), *fill = malloc(tot * sizeof(float));
    float *got = malloc(tot * sizeof(float)), *wt = malloc(wn * sizeof(float));
    float *wr = malloc(wn * sizeof(float)), b[CO];
    uint64_t st = 1234 + (uint64_t)kv * 2 + with_bias;
    for (size_t i = 0; i < tot; i++) {
        xs[i] = rnd(&st);
        fill[i] = rnd(&st);
    }
    for (size_t i = 0; i < wn; i++)
        wt[i] = rnd(&st) * 0.5f;
    for (int o = 0; o < CO; o++)
        b[o] = rnd(&st);
    for (int c = 0; c < CI; c++)
        for (int o = 0; o < CO; o++)
            for (int64_t k = 0; k < kv; k++)
                wr[(k * CI + c) * CO + o] = wt[(c * CO + o) * kv + k];
    float *dx = dev_of(xs, tot * sizeof(float)), *dd = dev_of(fill, tot * sizeof(float));
    float *dw = dev_of(wr, wn * sizeof(float)), *db = with_bias ? dev_of(b, sizeof b) : NULL;
    struct mms_k_deconv_args a = {.src = dx,
                                  .dst = dd,
                                  .wei = dw,
                                  .bias = db,
                                  .d = D,
                                  .h = H,
                                  .w = W,
                                  .cin = CI,
                                  .cout = CO,
                                  .t = {t[0], t[1], t[2]},
                                  .n = NS,
                                  .stride = stride};
    int rc = dx && dd && dw && (!with_bias || db) ? mms_k_deconv(&a, s) : MMS_ENOMEM;
    double worst = INFINITY;
    if (rc == 0 && back(got, dd, tot * sizeof(float), s)) {
        worst = 0.0;
        for (int n = 0; n < NS; n++) {
            for (int64_t z = 0; z < od; z++)
                for (int64_t y = 0; y < oh; y++)
                    for (int64_t x = 0; x < ow; x++)
                        for (int o = 0; o < CO; o++) {
                            const float *in = xs + (size_t)n * stride +
                                              (((z / t[0]) * H + y / t[1]) * W + x / t[2]) * CI;
                            int64_t k = ((z % t[0]) * t[1] + y % t[1]) * t[2] + x % t[2];
                            double sum = with_bias ? b[o] : 0.0, mag = fabs(sum);
                            for (int c = 0; c < CI; c++) {
                                double term = (double)in[c] * wt[(c * CO + o) * kv + k];
                                sum += term;
                                mag += fabs(term);
                            }
                            size_t i = (size_t)n * stride + (((z * oh + y) * ow + x) * CO + o);
                            double d = fabs((double)got[i] - sum) / (mag + 1e-30);
                            worst = d > worst ? d : worst;
                        }
            for (size_t i = out_n; i < stride; i++)
                if (got[n * stride + i] != fill[n * stride + i])
                    worst = INFINITY;
        }
    }
    ok(rc == 0 && worst <= 1e-5,
       "mms_k_deconv: stride (%d, %d, %d), %s, 37 -> 6 channels, 2 samples (worst %.3g)", t[0],
       t[1], t[2], with_bias ? "bias" : "no bias", worst);
    cudaFree(dx);
    cudaFree(dd);
    cudaFree(dw);
    cudaFree(db);
    free(xs);
    free(fill);
    free(got);
    free(wt);
    free(wr);
}

/* Average pooling with kernel = stride against a host loop (the fp32 sum in window order,
 * divided by the window's size), 2 samples, the gap after each output untouched. */
static void
test_avgpool(cudaStream_t s, const int t[3])
{
    enum { D = 4, H = 6, W = 10, C = 5, NS = 2 };
    int64_t od = D / t[0], oh = H / t[1], ow = W / t[2];
    size_t in_n = (size_t)D * H * W * C, out_n = (size_t)(od * oh * ow) * C;
    size_t stride = in_n + 33, tot = NS * stride;
    float *xs = malloc(tot * sizeof(float)), *fill = malloc(tot * sizeof(float));
    float *got = malloc(tot * sizeof(float));
    uint64_t st = 99 + (uint64_t)t[0];
    for (size_t i = 0; i < tot; i++) {
        xs[i] = rnd(&st) * 3.0f;
        fill[i] = rnd(&st);
    }
    float *dx = dev_of(xs, tot * sizeof(float)), *dd = dev_of(fill, tot * sizeof(float));
    struct mms_k_avgpool_args a = {.src = dx,
                                   .dst = dd,
                                   .d = D,
                                   .h = H,
                                   .w = W,
                                   .c = C,
                                   .t = {t[0], t[1], t[2]},
                                   .n = NS,
                                   .stride = stride};
    int rc = dx && dd ? mms_k_avgpool(&a, s) : MMS_ENOMEM;
    double worst = INFINITY;
    if (rc == 0 && back(got, dd, tot * sizeof(float), s)) {
        worst = 0.0;
        for (int n = 0; n < NS; n++) {
            const float *in = xs + (size_t)n * stride;
            for (int64_t z = 0; z < od; z++)
                for (int64_t y = 0; y < oh; y++)
                    for (int64_t x = 0; x < ow; x++)
                        for (int ch = 0; ch < C; ch++) {
                            const float *p =
                                in + ((z * t[0] * H + y * t[1]) * W + x * t[2]) * C + ch;
                            float sum = 0.0f;
                            for (int i0 = 0; i0 < t[0]; i0++)
                                for (int i1 = 0; i1 < t[1]; i1++)
                                    for (int i2 = 0; i2 < t[2]; i2++)
                                        sum += p[((i0 * H + i1) * W + i2) * C];
                            float want = sum / (float)(t[0] * t[1] * t[2]);
                            size_t i = (size_t)n * stride + (((z * oh + y) * ow + x) * C + ch);
                            double d = fabs((double)got[i] - want) / (1.0 + fabs(want));
                            worst = d > worst ? d : worst;
                        }
            for (size_t i = out_n; i < stride; i++)
                if (got[n * stride + i] != fill[n * stride + i])
                    worst = INFINITY;
        }
    }
    ok(rc == 0 && worst <= 1e-6, "mms_k_avgpool: window (%d, %d, %d), 2 samples (worst %.3g)", t[0],
       t[1], t[2], worst);
    cudaFree(dx);
    cudaFree(dd);
    free(xs);
    free(fill);
    free(got);
}

/* Arguments both entries refuse: a zero stride, a window that does not divide the input, a
 * sample stride smaller than a tensor. */
static void
test_resample_args(cudaStream_t s)
{
    float *d = dev_of(NULL, 4096 * sizeof(float));
    struct mms_k_deconv_args da = {.src = d,
                                   .dst = d + 2048,
                                   .wei = d,
                                   .d = 2,
                                   .h = 2,
                                   .w = 2,
                                   .cin = 1,
                                   .cout = 1,
                                   .t = {1, 0, 2},
                                   .n = 1};
    struct mms_k_avgpool_args pa = {
        .src = d, .dst = d + 2048, .d = 3, .h = 2, .w = 2, .c = 1, .t = {2, 2, 2}, .n = 1};
    int r1 = mms_k_deconv(&da, s), r2 = mms_k_avgpool(&pa, s);
    da.t[1] = 2;
    da.n = 2;
    da.stride = 32; /* the output has 2 * 4 * 4 = 32 elements: fits */
    int r3 = d != NULL ? mms_k_deconv(&da, s) : MMS_ENOMEM;
    da.stride = 31;
    int r4 = mms_k_deconv(&da, s);
    ok(d != NULL && r1 == MMS_EINVAL && r2 == MMS_EINVAL && r3 == 0 && r4 == MMS_EINVAL &&
           cudaStreamSynchronize(s) == cudaSuccess,
       "mms_k_deconv, mms_k_avgpool: bad strides and windows refused (%d %d %d %d)", r1, r2, r3,
       r4);
    cudaFree(d);
}

#define N 1000003 /* not a multiple of the block size */

int
main(void)
{
    int count = 0, wrong = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    int16_t *hx;
    float *hy;
    void *dx = NULL;
    float *dy = NULL;
    struct mms_k_rescale_args a;
    cudaStream_t s;
    char why[256];

    if (e != cudaSuccess || count == 0) {
        snprintf(why, sizeof why, "no usable CUDA device (cudaGetDeviceCount: %s)",
                 e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        skip_all(why);
    }
    plan(4 + 7 + 2 + 4 + 2 + 1, 60);
    hx = malloc(N * sizeof *hx);
    hy = malloc(N * sizeof *hy);
    if (hx == NULL || hy == NULL)
        return 1;
    for (int i = 0; i < N; i++)
        hx[i] = (int16_t)((int64_t)i * 7919 % 65536 - 32768);
    ok(cudaStreamCreate(&s) == cudaSuccess && cudaMalloc(&dx, N * sizeof *hx) == cudaSuccess &&
           cudaMalloc((void **)&dy, N * sizeof *hy) == cudaSuccess &&
           cudaMemcpy(dx, hx, N * sizeof *hx, cudaMemcpyHostToDevice) == cudaSuccess,
       "device buffers");
    a = (struct mms_k_rescale_args){
        .x = dx, .y = dy, .n = N, .dtype = MMS_K_I16, .slope = 0.3f, .intercept = -1000.25f};
    is_int(mms_k_rescale(&a, s), 0, "mms_k_rescale launches");
    ok(cudaStreamSynchronize(s) == cudaSuccess &&
           cudaMemcpy(hy, dy, N * sizeof *hy, cudaMemcpyDeviceToHost) == cudaSuccess,
       "results copied back");
    for (int i = 0; i < N; i++)
        if (hy[i] != mms_rescale_1((float)hx[i], 0.3f, -1000.25f))
            wrong++;
    is_int(wrong, 0, "device results equal the host math bit for bit");
    test_ops(s);
    test_window(s);
    static const int t122[3] = {1, 2, 2}, t222[3] = {2, 2, 2};
    test_deconv(s, t122, true);
    test_deconv(s, t122, false);
    test_deconv(s, t222, true);
    test_deconv(s, t222, false);
    test_avgpool(s, t222);
    test_avgpool(s, t122);
    test_resample_args(s);
    cudaFree(dx);
    cudaFree(dy);
    cudaStreamDestroy(s);
    free(hx);
    free(hy);
    return done_testing();
}
