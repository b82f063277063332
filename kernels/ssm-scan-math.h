/* The selective scan's step and the combine of consecutive token segments (mmunet.md 3.1,
 * 3.4), shared by the CUDA scan and the host tests.
 *
 * Per channel e and state n the scan is the linear recurrence h = exp(delta A) h + delta x B.
 * A segment of steps started from h = 0 ends in a state H and has a step-size sum S; the
 * state after it, started from h_in, is exp(A S) h_in + H (A is constant along the tokens). */
#ifndef MMS_KERNELS_SSM_SCAN_MATH_H
#define MMS_KERNELS_SSM_SCAN_MATH_H

#include "kernels/hd.h"
#include "kernels/ssm-math.h"

/* One step: h' = exp(delta a) h + dx b, with dx = delta x (as the CPU scan computes it). */
static inline MMS_HD float
mms_ssm_step(float h, float delta, float a, float dx, float b)
{
    return mms_expf(delta * a) * h + dx * b;
}

/* The state after a segment with summary (dsum, hseg), entered with state h_in. */
static inline MMS_HD float
mms_ssm_carry(float h_in, float a, float dsum, float hseg)
{
    return mms_expf(a * dsum) * h_in + hseg;
}

#endif
