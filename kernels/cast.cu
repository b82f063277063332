/* fp32 -> bf16 or fp16 on the device (round to nearest even): the inputs and weights of the
 * reduced-precision convolutions. */
#include "kernels/kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common/err.h"
#include "common/log.h"

template <typename T> static __device__ T cvt(float v);
template <>
__device__ __nv_bfloat16
cvt<__nv_bfloat16>(float v)
{
    return __float2bfloat16_rn(v);
}
template <>
__device__ __half
cvt<__half>(float v)
{
    return __float2half_rn(v);
}

template <typename T>
static __global__ void
cast_kernel(const float *__restrict__ src, T *__restrict__ dst, int64_t count)
{
    int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += step)
        dst[i] = cvt<T>(src[i]);
}

static void
cast_launch(const struct mms_k_cast_args *a, cudaStream_t s)
{
    int64_t blocks = (a->count + 255) / 256;
    if (blocks > 8192)
        blocks = 8192; /* grid-stride loop covers the rest */
    if (a->to == MMS_K_BF16)
        cast_kernel<<<(unsigned)blocks, 256, 0, s>>>(a->src, (__nv_bfloat16 *)a->dst, a->count);
    else
        cast_kernel<<<(unsigned)blocks, 256, 0, s>>>(a->src, (__half *)a->dst, a->count);
}

extern "C" int
mms_k_cast(const struct mms_k_cast_args *a, cudaStream_t s)
{
    if (a == NULL || a->src == NULL || a->dst == NULL || a->count < 0 ||
        (a->to != MMS_K_BF16 && a->to != MMS_K_F16))
        return MMS_EINVAL;
    if (a->count == 0)
        return 0;
    cast_launch(a, s);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        mms_log(MMS_LOG_ERR, "mms_k_cast: kernel launch failed: %s", cudaGetErrorString(e));
        return MMS_ECUDA;
    }
    return 0;
}
