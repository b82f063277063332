/* The end of a convolution on the device: bias, and for the skip projections the residual
 * sum and LReLU (mmunet.md 2.3), reading the convolution's output in its storage type. */
#include "kernels/kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common/err.h"
#include "common/log.h"
#include "kernels/eltwise-math.h"

static __device__ float
to_f32(float v)
{
    return v;
}
static __device__ float
to_f32(__nv_bfloat16 v)
{
    return __bfloat162float(v);
}
static __device__ float
to_f32(__half v)
{
    return __half2float(v);
}

/* y may alias dst (fp32 in place): no __restrict__ on them. I is the index type: 32-bit
 * unsigned when the tensor allows, as the channel modulo is much cheaper then. */
template <typename T, typename I>
static __global__ void
conv_epilogue_kernel(const T *y, float *dst, const float *__restrict__ bias, I count, I c,
                     bool accumulate, float slope)
{
    I step = (I)gridDim.x * blockDim.x;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += step) {
        float acc = accumulate ? dst[i] : 0.0f;
        dst[i] = mms_conv_epilogue(to_f32(y[i]), bias[i % c], acc, accumulate, slope);
    }
}

template <typename T>
static void
run(const T *y, const struct mms_k_conv_epilogue_args *a, int64_t count, unsigned blocks,
    cudaStream_t s)
{
    /* a grid-stride index stays below count + step, which must fit the type */
    if (count + (int64_t)blocks * 256 <= (int64_t)UINT32_MAX)
        conv_epilogue_kernel<T, uint32_t><<<blocks, 256, 0, s>>>(
            y, a->dst, a->bias, (uint32_t)count, (uint32_t)a->c, a->accumulate, a->slope);
    else
        conv_epilogue_kernel<T, int64_t>
            <<<blocks, 256, 0, s>>>(y, a->dst, a->bias, count, a->c, a->accumulate, a->slope);
}

static void
conv_epilogue_launch(const struct mms_k_conv_epilogue_args *a, cudaStream_t s)
{
    int64_t count = a->l * a->c, blocks = (count + 255) / 256;
    if (blocks > 8192)
        blocks = 8192; /* grid-stride loop covers the rest */
    if (a->ytype == MMS_K_F32)
        run<float>((const float *)a->y, a, count, (unsigned)blocks, s);
    else if (a->ytype == MMS_K_BF16)
        run<__nv_bfloat16>((const __nv_bfloat16 *)a->y, a, count, (unsigned)blocks, s);
    else
        run<__half>((const __half *)a->y, a, count, (unsigned)blocks, s);
}

extern "C" int
mms_k_conv_epilogue(const struct mms_k_conv_epilogue_args *a, cudaStream_t s)
{
    if (a == NULL || a->y == NULL || a->dst == NULL || a->bias == NULL || a->l < 1 || a->c < 1 ||
        (a->ytype != MMS_K_F32 && a->ytype != MMS_K_BF16 && a->ytype != MMS_K_F16) ||
        (a->ytype != MMS_K_F32 && a->y == (const void *)a->dst))
        return MMS_EINVAL;
    conv_epilogue_launch(a, s);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        mms_log(MMS_LOG_ERR, "mms_k_conv_epilogue: kernel launch failed: %s",
                cudaGetErrorString(e));
        return MMS_ECUDA;
    }
    return 0;
}
