/* Per-element math of the Mamba path (mmunet.md 3.1, 3.2): exp, SiLU, softplus.
 *
 * Written with plain arithmetic and bit operations only, so that a loop over channels
 * vectorizes on the host (no libm call) and the same functions run on the device. Accuracy:
 * mms_expf within 2 ulp on [-87, 88]; softplus and SiLU within 4e-7 relative. */
#ifndef MMS_KERNELS_SSM_MATH_H
#define MMS_KERNELS_SSM_MATH_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "kernels/hd.h"

static inline MMS_HD float
mms_f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline MMS_HD uint32_t
mms_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* e^x: x = n ln2 + r with |r| <= ln2/2, e^r by a degree-6 polynomial, 2^n by the exponent
 * field. x is clamped to [-87, 88]: below, the result is ~1e-38 where e^x would be smaller
 * still (the scan's decays underflow harmlessly either way). */
static inline MMS_HD float
mms_expf(float x)
{
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    /* round-to-nearest of x/ln2 with the 1.5*2^23 trick (|x/ln2| < 2^22) */
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693145751953125f;
    r = r - n * 1.428606765330187e-06f;
    float p = 1.3888889e-3f;
    p = p * r + 8.3333333e-3f;
    p = p * r + 4.1666667e-2f;
    p = p * r + 1.6666667e-1f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    return p * mms_f32_from_bits((uint32_t)((int32_t)n + 127) << 23);
}

/* Natural logarithm of x > 0 (normal numbers): x = m 2^e with m in [sqrt(1/2), sqrt(2)),
 * log m = 2 atanh(s), s = (m - 1)/(m + 1), by its odd series to s^11. */
static inline MMS_HD float
mms_logf(float x)
{
    uint32_t u = mms_f32_bits(x);
    float e = (float)((int32_t)((u >> 23) & 0xff) - 127);
    float m = mms_f32_from_bits((u & 0x007fffffu) | 0x3f800000u); /* [1, 2) */
    bool big = m > 1.41421356f; /* selects, not branches: the loop stays vectorizable */
    m = big ? m * 0.5f : m;
    e = big ? e + 1.0f : e;
    float s = (m - 1.0f) / (m + 1.0f);
    float s2 = s * s;
    float p = 1.0f / 11.0f;
    p = p * s2 + 1.0f / 9.0f;
    p = p * s2 + 1.0f / 7.0f;
    p = p * s2 + 1.0f / 5.0f;
    p = p * s2 + 1.0f / 3.0f;
    p = p * s2 + 1.0f;
    return 2.0f * s * p + e * 0.693147180559945f;
}

/* softplus(v) = v for v > 20 (beta 1, threshold 20, as PyTorch), else log1p(e^v). log1p(y)
 * is computed as log(u) * y / (u - 1) with u = 1 + y, exact to rounding for small y. */
static inline MMS_HD float
mms_softplus(float v)
{
    float y = mms_expf(v);
    float u = 1.0f + y;
    float d = u - 1.0f;
    float l = mms_logf(u) * (y / (d == 0.0f ? 1.0f : d)); /* no conditional division */
    l = d == 0.0f ? y : l;
    return v > 20.0f ? v : l;
}

/* sigma(v) = 1 / (1 + e^-v), from e^-|v| so that nothing overflows. */
static inline MMS_HD float
mms_sigmoid(float v)
{
    float e = mms_expf(v < 0.0f ? v : -v);
    float s = 1.0f / (1.0f + e);
    return v < 0.0f ? e * s : s;
}

static inline MMS_HD float
mms_silu(float v)
{
    return v * mms_sigmoid(v);
}

#endif
