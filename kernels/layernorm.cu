/* LN over the channels of each token (mmunet.md 2.3): one warp per token, in fp32. */
#include "kernels/kernels.h"

#include "common/err.h"
#include "common/log.h"

#define LN_WARPS 8 /* tokens per block */

static __device__ float
warp_sum(float v)
{
    for (int off = 16; off > 0; off >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

static __global__ void
__launch_bounds__(LN_WARPS * 32)
    layernorm_kernel(const float *__restrict__ x, float *__restrict__ u, int64_t m, int c,
                     const float *__restrict__ w, const float *__restrict__ b, float eps)
{
    int64_t t = (int64_t)blockIdx.x * LN_WARPS + threadIdx.y;
    if (t >= m)
        return; /* the whole warp leaves: the shuffles below see full warps only */
    const float *row = x + t * c;
    float *out = u + t * c;
    float s = 0.0f;
    for (int j = threadIdx.x; j < c; j += 32)
        s += row[j];
    float mean = warp_sum(s) / (float)c, q = 0.0f;
    for (int j = threadIdx.x; j < c; j += 32) {
        float v = row[j] - mean;
        q += v * v;
    }
    float inv = 1.0f / sqrtf(warp_sum(q) / (float)c + eps);
    for (int j = threadIdx.x; j < c; j += 32)
        out[j] = (row[j] - mean) * inv * w[j] + b[j];
}

static void
layernorm_launch(const struct mms_k_layernorm_args *a, cudaStream_t s)
{
    int64_t blocks = (a->m + LN_WARPS - 1) / LN_WARPS;
    layernorm_kernel<<<(unsigned)blocks, dim3(32, LN_WARPS), 0, s>>>(a->x, a->u, a->m, a->c, a->w,
                                                                     a->b, a->eps);
}

extern "C" int
mms_k_layernorm(const struct mms_k_layernorm_args *a, cudaStream_t s)
{
    if (a == NULL || a->m < 0 || a->c < 1 || (a->m + LN_WARPS - 1) / LN_WARPS > 0x7fffffff ||
        (a->m > 0 && (a->x == NULL || a->u == NULL || a->w == NULL || a->b == NULL)) ||
        !(a->eps >= 0.0f))
        return MMS_EINVAL;
    if (a->m == 0)
        return 0;
    layernorm_launch(a, s);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        mms_log(MMS_LOG_ERR, "mms_k_layernorm: kernel launch failed: %s", cudaGetErrorString(e));
        return MMS_ECUDA;
    }
    return 0;
}
