/* Per-element math of the CUDA backend's element-wise ops (mmunet.md 2.3): LReLU, the
 * instance norm's affine step and the convolution epilogue (bias, residual sum, LReLU), in
 * the order of operations the CPU backend uses, so that both round alike. */
#ifndef MMS_KERNELS_ELTWISE_MATH_H
#define MMS_KERNELS_ELTWISE_MATH_H

#include <math.h>
#include <stdbool.h>

#include "kernels/hd.h"

static inline MMS_HD float
mms_lrelu(float v, float slope)
{
    return v < 0.0f ? v * slope : v;
}

/* IN after the statistics: v * scale + shift, then LReLU when lrelu. */
static inline MMS_HD float
mms_norm_apply(float v, float scale, float shift, bool lrelu, float slope)
{
    float r = v * scale + shift;
    return lrelu ? mms_lrelu(r, slope) : r;
}

/* Convolution output y plus bias b; with accumulate, LReLU(y + b + acc). */
static inline MMS_HD float
mms_conv_epilogue(float y, float b, float acc, bool accumulate, float slope)
{
    float v = y + b;
    return accumulate ? mms_lrelu(v + acc, slope) : v;
}

/* Scale and shift of IN from fp64 sums over l values (biased variance). */
static inline MMS_HD void
mms_norm_coef(double sum, double sq, double l, float gamma, float beta, float eps, float *scale,
              float *shift)
{
    double mean = sum / l;
    double var = sq / l - mean * mean;
    if (var < 0.0)
        var = 0.0;
    double sc = (double)gamma / sqrt(var + (double)eps);
    *scale = (float)sc;
    *shift = (float)((double)beta - mean * sc);
}

#endif
