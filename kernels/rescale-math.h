/* HU rescale, per element: y = x * slope + intercept (DICOM Rescale Slope/Intercept).
 * One fused multiply-add, so host and device round identically. */
#ifndef MMS_KERNELS_RESCALE_MATH_H
#define MMS_KERNELS_RESCALE_MATH_H

#include <math.h>

#include "kernels/hd.h"

static inline MMS_HD float
mms_rescale_1(float x, float slope, float intercept)
{
    return fmaf(x, slope, intercept);
}

#endif
