/* Tests of the per-element kernel math (kernels/<op>-math.h) on the host: the same functions the
 * CUDA kernels run, so the math is tested in every build, GPU or not. */
#include <math.h>
#include <stdint.h>

#include "kernels/rescale-math.h"
#include "tests/tap.h"

int
main(void)
{
    int wrong = 0;

    plan(4, 10);
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
    return done_testing();
}
