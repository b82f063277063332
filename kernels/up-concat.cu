/* Nearest upsampling of the lower level concatenated with the skip connection, on the
 * device (mmunet.md 2.3, channels-last): the upsampled channels first, then the skip's. */
#include "kernels/kernels.h"

#include "common/err.h"
#include "common/log.h"

static __global__ void
up_concat_kernel(struct mms_k_up_concat_args a)
{
    int64_t oc = a.flo + a.fskip, count = a.d * a.h * a.w * oc;
    const float *lo = a.lo + (size_t)blockIdx.y * a.stride;
    const float *skip = a.skip + (size_t)blockIdx.y * a.stride;
    float *dst = a.dst + (size_t)blockIdx.y * a.stride;
    int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += step) {
        int64_t ch = i % oc, v = i / oc;
        int64_t x = v % a.w, y = (v / a.w) % a.h, z = v / (a.w * a.h);
        float r;
        if (ch < a.flo)
            r = lo[(((z / a.up[0]) * a.lh + y / a.up[1]) * a.lw + x / a.up[2]) * a.flo + ch];
        else
            r = skip[v * a.fskip + (ch - a.flo)];
        dst[i] = r;
    }
}

static void
up_concat_launch(const struct mms_k_up_concat_args *a, cudaStream_t s)
{
    int64_t count = a->d * a->h * a->w * (a->flo + a->fskip), blocks = (count + 255) / 256;
    if (blocks > 8192)
        blocks = 8192; /* grid-stride loop covers the rest */
    up_concat_kernel<<<dim3((unsigned)blocks, (unsigned)a->n), 256, 0, s>>>(*a);
}

extern "C" int
mms_k_up_concat(const struct mms_k_up_concat_args *a, cudaStream_t s)
{
    if (a == NULL || a->lo == NULL || a->skip == NULL || a->dst == NULL || a->n < 1 ||
        a->n > 65535 || a->d < 1 || a->h < 1 || a->w < 1 || a->flo < 1 || a->fskip < 1)
        return MMS_EINVAL;
    for (int i = 0; i < 3; i++)
        if (a->up[i] < 1)
            return MMS_EINVAL;
    if (a->ld * a->up[0] < a->d || a->lh * a->up[1] < a->h || a->lw * a->up[2] < a->w)
        return MMS_EINVAL;
    up_concat_launch(a, s);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        mms_log(MMS_LOG_ERR, "mms_k_up_concat: kernel launch failed: %s", cudaGetErrorString(e));
        return MMS_ECUDA;
    }
    return 0;
}
