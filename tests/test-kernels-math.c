/* Tests of the per-element kernel math (kernels/<op>-math.h) on the host: the same functions the
 * CUDA kernels run, so the math is tested in every build, GPU or not. */
#include <math.h>
#include <stdint.h>

#include "kernels/eltwise-math.h"
#include "kernels/rescale-math.h"
#include "kernels/ssm-math.h"
#include "kernels/ssm-scan-math.h"
#include "tests/tap.h"

int
main(void)
{
    int wrong = 0;

    plan(16, 10);
    is_int((int)mms_rescale_1(0.0f, 1.0f, -1024.0f), -1024, "stored 0 with intercept -1024");
    ok(mms_rescale_1(1000.0f, 0.5f, -1024.0f) == -524.0f, "slope 0.5");
    /* Every int16 value with slope 1 is exact. */
    for (int32_t x = INT16_MIN; x <= INT16_MAX; x++)
        if (mms_rescale_1((float)x, 1.0f, -1024.0f) != (float)(x - 1024))
            wrong++;
    is_int(wrong, 0, "every int16 value, slope 1, intercept -1024, is exact");
    /* One rounding (fused): equal to the double-precision result rounded once to float. */
    wrong = 0;
    for (int32_t x = 0; x <= UINT16_MAX; x += 7) {
        float want = (float)((double)x * (double)0.3f + (double)-1000.25f);
        if (mms_rescale_1((float)x, 0.3f, -1000.25f) != want)
            wrong++;
    }
    is_int(wrong, 0, "a non-trivial slope rounds once, like the device's fmaf");

    /* The Mamba math against libm in double, over the ranges the scan sees. */
    double worst = 0.0;
    for (float x = -87.0f; x <= 88.0f; x += 0.0013f) {
        double want = exp((double)x), rel = fabs(mms_expf(x) - want) / want;
        worst = rel > worst ? rel : worst;
    }
    ok(worst < 3e-7, "mms_expf on [-87, 88] within 3e-7 relative (worst %.3g)", worst);
    ok(mms_expf(-1000.0f) >= 0.0f && mms_expf(-1000.0f) < 1e-37f && mms_expf(0.0f) == 1.0f,
       "mms_expf: deep negative underflows to ~0, e^0 = 1");
    worst = 0.0;
    for (float x = 1e-30f; x < 1e30f; x *= 1.0137f) {
        double want = log((double)x), err = fabs(mms_logf(x) - want) / fmax(1.0, fabs(want));
        worst = err > worst ? err : worst;
    }
    ok(worst < 3e-7, "mms_logf on [1e-30, 1e30] within 3e-7 (worst %.3g)", worst);
    worst = 0.0;
    for (float v = -60.0f; v <= 60.0f; v += 0.00097f) {
        double want = v > 20.0f ? v : log1p(exp((double)v));
        double rel = fabs(mms_softplus(v) - want) / want;
        worst = rel > worst ? rel : worst;
    }
    ok(worst < 1e-6, "mms_softplus on [-60, 60] within 1e-6 relative (worst %.3g)", worst);
    worst = 0.0;
    for (float v = -90.0f; v <= 90.0f; v += 0.00113f) {
        double want = v / (1.0 + exp(-(double)v));
        double err = fabs(mms_silu(v) - want) / fmax(1e-30, fabs(want));
        if (fabs(want) > 1e-30)
            worst = err > worst ? err : worst;
    }
    ok(worst < 1e-6, "mms_silu on [-90, 90] within 1e-6 relative (worst %.3g)", worst);
    /* The element-wise ops of the CUDA backend against the CPU backend's formulas. */
    ok(mms_lrelu(-2.0f, 0.01f) == -0.02f && mms_lrelu(3.0f, 0.01f) == 3.0f &&
           mms_lrelu(0.0f, 0.01f) == 0.0f,
       "LReLU scales negatives only");
    wrong = 0;
    for (int i = -1000; i <= 1000; i++) {
        float y = (float)i * 0.37f, b = 0.25f, acc = (float)(i % 7) - 3.0f;
        float v = y + b, want = v + acc < 0.0f ? (v + acc) * 0.01f : v + acc;
        if (mms_conv_epilogue(y, b, acc, true, 0.01f) != want ||
            mms_conv_epilogue(y, b, acc, false, 0.01f) != v)
            wrong++;
    }
    is_int(wrong, 0, "conv epilogue: (y + bias), then + dst and LReLU, in the CPU's order");
    float sc, sh;
    /* values 1, 2, 3, 4: mean 2.5, biased variance 1.25 */
    mms_norm_coef(10.0, 30.0, 4.0, 2.0f, 0.5f, 1e-5f, &sc, &sh);
    double want_sc = 2.0 / sqrt(1.25 + (double)1e-5f);
    ok(sc == (float)want_sc && sh == (float)(0.5 - 2.5 * want_sc),
       "IN coefficients: biased variance, fp64, gamma / sqrt(var + eps)");
    ok(mms_norm_apply(-1.0f, 2.0f, 0.5f, true, 0.01f) == -0.015f &&
           mms_norm_apply(-1.0f, 2.0f, 0.5f, false, 0.01f) == -1.5f,
       "IN apply: scale, shift, optional LReLU");

    /* The scan step against the recurrence in double, one state over 5000 steps. */
    enum { STEPS = 5000, SEGS = 13 };
    static float dts[STEPS], xs[STEPS], bs[STEPS];
    unsigned long long r = 0x9e3779b97f4a7c15ull;
    for (int t = 0; t < STEPS; t++) {
        float u[3];
        for (int j = 0; j < 3; j++) {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            u[j] = (float)((double)(r >> 11) / 9007199254740992.0 * 2.0 - 1.0);
        }
        dts[t] = mms_softplus(-3.0f + 2.0f * u[0]);
        xs[t] = u[1];
        bs[t] = u[2];
    }
    const float a = -0.75f;
    float h = 0.5f;
    double hd = 0.5, scale = 0.0;
    worst = 0.0;
    for (int t = 0; t < STEPS; t++) {
        h = mms_ssm_step(h, dts[t], a, dts[t] * xs[t], bs[t]);
        hd = exp((double)dts[t] * a) * hd + (double)dts[t] * xs[t] * bs[t];
        scale = fabs(hd) > scale ? fabs(hd) : scale;
        worst = fabs(h - hd) > worst ? fabs(h - hd) : worst;
    }
    ok(worst / scale < 1e-5, "mms_ssm_step follows the recurrence in double (%.3g)", worst / scale);
    /* Segments summarized from 0 and carried give the sequential state at every segment end
     * (mmunet.md 3.4), with uneven segments as the last one of a chunk is. */
    float hseq = 0.5f, hcar = 0.5f;
    float seg_h[SEGS], seg_s[SEGS];
    int bound[SEGS + 1];
    for (int k = 0; k <= SEGS; k++)
        bound[k] = (int)((long)STEPS * k * k / (SEGS * SEGS));
    worst = 0.0;
    for (int k = 0; k < SEGS; k++) {
        float hs = 0.0f, ds = 0.0f;
        for (int t = bound[k]; t < bound[k + 1]; t++) {
            hseq = mms_ssm_step(hseq, dts[t], a, dts[t] * xs[t], bs[t]);
            hs = mms_ssm_step(hs, dts[t], a, dts[t] * xs[t], bs[t]);
            ds += dts[t];
        }
        seg_h[k] = hs;
        seg_s[k] = ds;
        hcar = mms_ssm_carry(hcar, a, ds, hs);
        double d = fabs((double)hcar - hseq) / fmax(1e-3, fabs((double)hseq));
        worst = d > worst ? d : worst;
    }
    ok(worst < 1e-5, "segment summaries carried equal the sequential scan (%.3g)", worst);
    /* Two levels, as the carry kernel: spans of segments folded, then the spans carried. */
    float hspan = 0.5f;
    for (int p0 = 0; p0 < SEGS; p0 += 4) {
        float g = 0.0f, hs = 0.0f;
        for (int k = p0; k < p0 + 4 && k < SEGS; k++) {
            hs = mms_ssm_carry(hs, a, seg_s[k], seg_h[k]);
            g += seg_s[k];
        }
        hspan = mms_ssm_carry(hspan, a, g, hs);
    }
    ok(fabs((double)hspan - hseq) <= 1e-5 * fmax(1e-3, fabs((double)hseq)),
       "spans of segments folded then carried give the same end state (%g vs %g)", hspan, hseq);
    return done_testing();
}
